//! A whole `mat-attack` run: every budget over every batch, rows streamed
//! to `adv.parquet`, and `summary.parquet` at the end.
//!
//! Definitions (also written into the files' metadata):
//! - clean accuracy: the model's accuracy on the unperturbed samples;
//! - robust accuracy at eps: the fraction of samples classified correctly
//!   both clean and at their adversarial point (bounded attacks; a sample
//!   misclassified clean is not robust, so robust <= clean); for minimum-
//!   norm attacks (C&W, DDN), the fraction not fooled by a perturbation of
//!   L2 norm <= eps (a sample misclassified to begin with counts as fooled
//!   at norm 0);
//! - success rate: over the correctly classified samples, the fraction the
//!   attack fooled;
//! - mean and median L2: over the correctly classified samples the attack
//!   fooled (Table 2's "mean L2 norm of the perturbations found").

use std::path::Path;

use candle_core::{Device, Tensor};

use super::spec::{AttackSpec, Context};
use super::{run_attack, AdaptiveObjective, Logits};
use crate::artifact::{hash_file, write_table, Columns, Metadata, TableWriter, TensorFile};
use crate::data::{self, DataDir, Split};
use crate::models::Classifier;
use crate::rng::SeededRng;
use crate::{Error, Result};

pub const ADV: &str = "adv.parquet";
pub const SUMMARY: &str = "summary.parquet";

pub const DEFINITIONS: &str = "clean_accuracy: accuracy on the unperturbed samples; robust_accuracy: fraction classified correctly both clean and at the adversarial point, so never above clean_accuracy (minimum-norm attacks: fraction not fooled within L2 <= eps, a misclassified sample counting as fooled at norm 0); success_rate: over correctly classified samples, the fraction fooled; mean_l2/median_l2: over correctly classified samples that were fooled";

/// One row of the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    /// `None` for a minimum-norm attack run without budgets (written as
    /// NaN in `summary.parquet`).
    pub eps: Option<f64>,
    pub samples: usize,
    pub clean_accuracy: f64,
    pub robust_accuracy: f64,
    pub success_rate: f64,
    pub mean_l2: f64,
    pub median_l2: f64,
}

/// What a run reports while it works.
pub enum Event {
    /// A budget begins (`None`: the one run of a minimum-norm attack).
    Start { eps: Option<f64>, samples: usize },
    /// After each batch: samples done, robust so far among them.
    Batch { done: usize, robust: usize },
}

/// Per-sample results kept for the summary (no images).
#[derive(Default)]
struct Record {
    correct: Vec<bool>,
    still_correct: Vec<bool>,
    success: Vec<bool>,
    l2: Vec<f32>,
}

fn summarise(rec: &Record, eps: Option<f64>, minimum_norm: bool) -> SummaryRow {
    let n = rec.correct.len().max(1) as f64;
    let count = |it: &mut dyn Iterator<Item = bool>| it.filter(|b| *b).count() as f64;
    let clean = count(&mut rec.correct.iter().copied());
    let robust = if minimum_norm {
        let fooled = |i: usize| rec.success[i] && eps.is_none_or(|e| rec.l2[i] as f64 <= e);
        count(&mut (0..rec.correct.len()).map(|i| !fooled(i)))
    } else {
        count(&mut rec.still_correct.iter().copied())
    };
    let mut found: Vec<f64> = (0..rec.correct.len())
        .filter(|&i| rec.correct[i] && rec.success[i])
        .map(|i| rec.l2[i] as f64)
        .collect();
    found.sort_by(f64::total_cmp);
    let (mean, median) = if found.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        let m = found.len();
        let median = if m % 2 == 1 {
            found[m / 2]
        } else {
            (found[m / 2 - 1] + found[m / 2]) / 2.0
        };
        (found.iter().sum::<f64>() / m as f64, median)
    };
    SummaryRow {
        eps,
        samples: rec.correct.len(),
        clean_accuracy: clean / n,
        robust_accuracy: robust / n,
        success_rate: found.len() as f64 / clean.max(1.0),
        mean_l2: mean,
        median_l2: median,
    }
}

/// Everything an attack run needs, loaded and checked before the first
/// batch: the config, the model (and its training objective where the
/// attack ascends it), the attacked samples and the provenance of the
/// outputs.
pub struct Prepared {
    pub spec: AttackSpec,
    pub model: Classifier,
    pub objective: Option<AdaptiveObjective>,
    /// The attacked samples, on the device.
    pub split: Split,
    /// Their indices in the dataset's split.
    pub indices: Vec<u32>,
    pub metadata: Metadata,
}

/// Checks `spec`, reads the model and the dataset and checks that they fit
/// each other; every problem is an error here, naming the file at fault.
pub fn prepare(spec: AttackSpec, data_dir: &DataDir, device: &Device) -> Result<Prepared> {
    spec.validate()?;
    let file = TensorFile::read(&spec.model, device)?;
    let model = Classifier::from_file(&file)?;
    // The adaptive attack's objective comes from the model file; a file
    // without it is refused here, before any data is read.
    let objective = if spec.registration()?.needs_objective {
        Some(AdaptiveObjective::from_model_file(&file)?)
    } else {
        None
    };
    drop(file);
    let ds = data::load(data_dir, &spec.data)?;
    let full = if spec.split == "test" {
        &ds.test
    } else {
        &ds.train
    };
    model
        .check_input(full.images.dims())
        .map_err(|e| Error::format(&spec.model, format!("{e} (dataset `{}`)", spec.data)))?;
    if ds.num_classes() != model.num_classes {
        return Err(Error::Metadata {
            path: spec.model.clone(),
            key: "num_classes".into(),
            expected: format!(
                "{} (the classes of dataset `{}`)",
                ds.num_classes(),
                spec.data
            ),
            found: model.num_classes.to_string(),
        });
    }
    let seed = spec.limit.map(|_| spec.seed);
    let indices = full.subset_indices(spec.limit, seed);
    let split = full.subset(spec.limit, seed)?.to_device(device)?;
    let mut metadata = Metadata::new();
    metadata.insert("attack".into(), spec.attack.clone());
    metadata.insert(
        "config".into(),
        serde_yaml::to_string(&spec)
            .map_err(|e| Error::Invalid(format!("cannot serialise the config: {e}")))?,
    );
    metadata.insert("seed".into(), spec.seed.to_string());
    metadata.insert("model_hash".into(), hash_file(&spec.model)?);
    metadata.insert("data".into(), spec.data.clone());
    metadata.insert("data_hash".into(), split.hash()?);
    metadata.insert("split".into(), spec.split.clone());
    metadata.insert(
        "producer".into(),
        format!("mat-attack {}", env!("CARGO_PKG_VERSION")),
    );
    Ok(Prepared {
        spec,
        model,
        objective,
        split,
        indices,
        metadata,
    })
}

impl Prepared {
    /// Runs every budget into `out` (see [`run`]).
    pub fn run(&self, out: &Path, events: &mut dyn FnMut(Event)) -> Result<Vec<SummaryRow>> {
        run(
            &self.spec,
            &self.model,
            self.objective.as_ref(),
            &self.split,
            &self.indices,
            out,
            self.metadata.clone(),
            events,
        )
    }
}

/// Attacks `split` (whose samples are `indices` of the dataset split) with
/// every budget of `spec`, writing `adv.parquet` and `summary.parquet` into
/// `out`; `metadata` is provenance added to both files. `objective` is
/// the model's training objective, needed by the adaptive attack only.
#[allow(clippy::too_many_arguments)]
pub fn run(
    spec: &AttackSpec,
    model: &dyn Logits,
    objective: Option<&AdaptiveObjective>,
    split: &Split,
    indices: &[u32],
    out: &Path,
    mut metadata: Metadata,
    events: &mut dyn FnMut(Event),
) -> Result<Vec<SummaryRow>> {
    spec.validate()?;
    metadata.insert("definitions".into(), DEFINITIONS.into());
    // A composite's members and each one's settings, defaults included.
    let first = spec.eps.first().copied().unwrap_or(f64::NAN);
    if let Some(s) = spec.build(first, Context { objective })?.settings() {
        metadata.insert("settings".into(), s);
    }
    let image_shape: Vec<usize> = split.images.dims()[1..].to_vec();
    let mut adv_meta = metadata.clone();
    adv_meta.insert("kind".into(), "adversarial".into());
    let mut writer = TableWriter::create(&out.join(ADV), adv_meta)?;
    let minimum_norm = spec.minimum_norm();
    // A minimum-norm attack runs once; its budgets only cut its norms.
    let runs: Vec<Option<f64>> = if minimum_norm {
        vec![None]
    } else {
        spec.eps.iter().copied().map(Some).collect()
    };
    let mut summary = Vec::new();
    for &budget in &runs {
        // A minimum-norm attack takes no eps; NaN in its rows and its
        // random stream's name.
        let eps = budget.unwrap_or(f64::NAN);
        let attack = spec.build(eps, Context { objective })?;
        let mut rng = SeededRng::for_purpose(spec.seed, &format!("{}/{eps}", attack.name()));
        let mut rec = Record::default();
        events(Event::Start {
            eps: budget,
            samples: split.len(),
        });
        for start in (0..split.len()).step_by(spec.batch_size) {
            let n = spec.batch_size.min(split.len() - start);
            let x = split.images.narrow(0, start, n)?;
            let y = split.labels.narrow(0, start, n)?;
            let o = run_attack(attack.as_ref(), model, &x, &y, eps, &mut rng)?;
            let labels = y.to_vec1::<u32>()?;
            let cols = Columns::new()
                .u32("index", indices[start..start + n].to_vec())
                .f64("eps", vec![eps; n])
                .u32("label", labels.clone())
                .u32("clean_prediction", o.clean_pred.clone())
                .u32("adversarial_prediction", o.adv_pred.clone())
                .bool("success", o.success.clone())
                .f32("l2", o.l2.clone())
                .f32("linf", o.linf.clone());
            // Composites say which member broke each point.
            let cols = match &o.broken_by {
                Some(by) => cols.string("broken_by", by.clone()),
                None => cols,
            };
            let cols = cols.f32_list(
                "image",
                o.adv.flatten_all()?.to_vec1::<f32>()?,
                &image_shape,
            );
            writer.write(cols)?;
            for (i, l) in labels.iter().enumerate() {
                // A point the model misclassifies clean is not robust,
                // whatever the attack made of it: robust <= clean.
                let correct = o.clean_pred[i] == *l;
                rec.correct.push(correct);
                rec.still_correct.push(correct && o.adv_pred[i] == *l);
            }
            rec.success.extend(&o.success);
            rec.l2.extend(&o.l2);
            let robust = if minimum_norm {
                rec.success.iter().filter(|s| !**s).count()
            } else {
                rec.still_correct.iter().filter(|s| **s).count()
            };
            events(Event::Batch {
                done: start + n,
                robust,
            });
        }
        if minimum_norm {
            if spec.eps.is_empty() {
                summary.push(summarise(&rec, None, true));
            }
            for &e in &spec.eps {
                summary.push(summarise(&rec, Some(e), true));
            }
        } else {
            summary.push(summarise(&rec, budget, false));
        }
    }
    writer.finish()?;
    let col = |f: fn(&SummaryRow) -> f64| summary.iter().map(f).collect::<Vec<f64>>();
    let cols = Columns::new()
        .f64("eps", col(|r| r.eps.unwrap_or(f64::NAN)))
        .u32(
            "samples",
            summary.iter().map(|r| r.samples as u32).collect(),
        )
        .f64("clean_accuracy", col(|r| r.clean_accuracy))
        .f64("robust_accuracy", col(|r| r.robust_accuracy))
        .f64("success_rate", col(|r| r.success_rate))
        .f64("mean_l2", col(|r| r.mean_l2))
        .f64("median_l2", col(|r| r.median_l2));
    metadata.insert("kind".into(), "attack_summary".into());
    write_table(&out.join(SUMMARY), cols, metadata)?;
    Ok(summary)
}

/// The images of `adv.parquet` rows back as a tensor `[N, C, H, W]`.
pub fn images(table: &crate::artifact::Table, device: &candle_core::Device) -> Result<Tensor> {
    let shape = table
        .shape_of("image")
        .ok_or_else(|| crate::Error::Metadata {
            path: table.path.clone(),
            key: crate::artifact::table::shape_key("image"),
            expected: "the image shape".into(),
            found: "none".into(),
        })?;
    let width: usize = shape.iter().product();
    let flat = table.f32_list("image", width)?;
    let mut dims = vec![table.num_rows()];
    dims.extend(shape);
    Ok(Tensor::from_vec(flat, dims, device)?)
}
