//! A whole `mat-train` run: config → data, centers and model (every check
//! before any training), epochs with a checkpoint and a log after each,
//! resume, and the final model file.
//!
//! Files in the output directory, each written atomically:
//! - `checkpoint.safetensors`: weights, momentum buffers (`momentum/NAME`),
//!   the epoch and the log so far (metadata), after every epoch;
//! - `train_log.parquet`: one row per epoch (each loss term as `loss_TERM`,
//!   lr, clean and PGD accuracy), after every epoch (wall-clock seconds go
//!   to the stage log only: same seed, same bytes);
//! - `model.safetensors`: weights, head and provenance, at the end.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::objective::HeadKind;
use super::spec::TrainSpec;
use super::{EpochLog, Evaluation, Trainer};
use crate::artifact::{hash_file, write_table, write_tensors, Columns, Metadata, TensorFile};
use crate::centers::Centers;
use crate::data::{self, DataDir, Split};
use crate::models::{Arch, Classifier, Head};
use crate::nn::ParamStore;
use crate::{Error, Result};

/// What a run reports while it works.
pub enum Event<'a> {
    /// Training continues after this epoch of a checkpoint.
    Resumed {
        epoch: usize,
    },
    /// An epoch begins.
    EpochStart {
        epoch: usize,
        batches: usize,
    },
    Batch {
        done: usize,
        loss: f64,
    },
    Epoch(&'a EpochLog),
}

/// Everything a run needs, loaded and checked.
pub struct Prepared {
    pub spec: TrainSpec,
    pub arch: Arch,
    pub train: Split,
    pub eval: Evaluation,
    pub store: ParamStore,
    pub model: Classifier,
    pub dataset_hash: String,
    pub centers_hash: Option<String>,
}

pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const TRAIN_LOG: &str = "train_log.parquet";
pub const MODEL: &str = "model.safetensors";

/// Loads the data and the centers and builds the model; every problem with
/// the config, the data or the centers is an error here, before training.
pub fn prepare(spec: TrainSpec, data_dir: &DataDir, device: &Device) -> Result<Prepared> {
    let arch = spec.validate()?;
    let ds = data::load(data_dir, &spec.dataset)?;
    let image = ds.image_shape();
    if image != arch.input_shape() {
        let want = arch.input_shape();
        return Err(Error::Shape {
            what: arch.to_string(),
            expected: format!("{want:?}"),
            found: format!(
                "{image:?}, the images of dataset `{}` (pick an architecture for this dataset)",
                spec.dataset
            ),
        });
    }
    let classes = ds.num_classes();
    let (head, centers_hash) = match &spec.centers {
        None => (Head::Identity, None),
        Some(path) => {
            let c = Centers::read(path, None)?;
            if c.classes != classes {
                return Err(Error::Metadata {
                    path: path.clone(),
                    key: "num_classes".into(),
                    expected: format!("{classes} (the classes of dataset `{}`)", spec.dataset),
                    found: c.classes.to_string(),
                });
            }
            if c.dim + 1 < c.classes {
                return Err(Error::Metadata {
                    path: path.clone(),
                    key: "feature_dim".into(),
                    expected: format!("at least {} for {} classes", c.classes - 1, c.classes),
                    found: c.dim.to_string(),
                });
            }
            let head = match spec.method.registration().head {
                HeadKind::Mmc => Head::Mmc(c.centers.to_device(device)?),
                _ => Head::Centers(c.centers.to_device(device)?),
            };
            (head, Some(hash_file(path)?))
        }
    };
    let store = ParamStore::new(spec.seed);
    let model = Classifier::build(arch, head, classes, spec.seed, store.var_builder(device))?;
    let train = ds
        .train
        .subset(spec.train_limit, spec.train_limit.map(|_| spec.seed))?
        .to_device(device)?;
    let eval_split = ds
        .test
        .subset(spec.eval.limit, spec.eval.limit.map(|_| spec.seed))?
        .to_device(device)?;
    let eval = Evaluation {
        pgd: spec.eval_pgd(),
        pgd_limit: spec.eval.pgd.as_ref().map_or(0, |p| p.limit),
        pgd_every: spec.eval.pgd.as_ref().map_or(1, |p| p.every),
        seed: spec.seed,
        split: eval_split,
    };
    let dataset_hash = train.hash()?;
    Ok(Prepared {
        spec,
        arch,
        train,
        eval,
        store,
        model,
        dataset_hash,
        centers_hash,
    })
}

impl Prepared {
    /// Provenance every output carries.
    pub fn metadata(&self) -> Result<Metadata> {
        let mut m = self.model.metadata();
        let spec = &self.spec;
        let yaml = serde_yaml::to_string(spec)
            .map_err(|e| Error::Invalid(format!("cannot serialise the config: {e}")))?;
        m.insert("method".into(), spec.method.name().into());
        m.insert("dataset".into(), spec.dataset.clone());
        m.insert("dataset_hash".into(), self.dataset_hash.clone());
        m.insert(
            "centers_hash".into(),
            self.centers_hash.clone().unwrap_or_default(),
        );
        m.insert("config".into(), yaml);
        m.insert("config_hash".into(), crate::config::hash(spec)?);
        m.insert("seed".into(), spec.seed.to_string());
        m.insert("alpha".into(), spec.mat.alpha.to_string());
        m.insert("beta".into(), spec.mat.beta.to_string());
        m.insert("trades_beta".into(), spec.trades.beta.to_string());
        if let Some(a) = &spec.adversary {
            m.insert("train_eps".into(), a.eps.to_string());
        }
        m.insert(
            "producer".into(),
            format!("mat-core {}", env!("CARGO_PKG_VERSION")),
        );
        Ok(m)
    }

    /// The config's hash without `optim.epochs`: a run may be resumed to
    /// train for more epochs than it first asked for, nothing else may change.
    fn resume_hash(&self) -> Result<String> {
        let mut spec = self.spec.clone();
        spec.optim.epochs = 0;
        crate::config::hash(&spec)
    }

    fn write_checkpoint(&self, path: &Path, trainer: &Trainer, logs: &[EpochLog]) -> Result<()> {
        let vars = self.store.vars();
        let mut tensors: Vec<(String, Tensor)> = vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        for ((n, _), b) in vars.iter().zip(trainer.opt.buffers()) {
            if let Some(b) = b {
                tensors.push((format!("momentum/{n}"), b.clone()));
            }
        }
        let mut meta = self.metadata()?;
        meta.insert("kind".into(), "checkpoint".into());
        meta.insert("resume_hash".into(), self.resume_hash()?);
        meta.insert("epoch".into(), logs.len().to_string());
        meta.insert("train_log".into(), log_json(logs));
        write_tensors(path, tensors.iter().map(|(n, t)| (n.as_str(), t)), &meta)
    }

    /// Restores weights, momentum and the log from a checkpoint of this
    /// same config; returns the log so far.
    fn resume(&self, path: &Path, trainer: &mut Trainer) -> Result<Vec<EpochLog>> {
        let device = self.train.images.device();
        let file = TensorFile::read(path, device)?;
        let want = self.resume_hash()?;
        if file.meta("resume_hash")? != want {
            return Err(Error::Metadata {
                path: path.to_path_buf(),
                key: "resume_hash".into(),
                expected: format!("{want} (this config, whatever its optim.epochs)"),
                found: format!(
                    "{} (the checkpoint was written with another config; remove it or run without --resume)",
                    file.meta("resume_hash")?
                ),
            });
        }
        let vars = self.store.vars();
        let mut buffers = Vec::with_capacity(vars.len());
        for (name, var) in &vars {
            let t = file.expect(
                name,
                DType::F32,
                &var.dims().iter().map(|&d| Some(d)).collect::<Vec<_>>(),
            )?;
            var.set(t)?;
            buffers.push(file.tensors.get(&format!("momentum/{name}")).cloned());
        }
        trainer.opt.set_buffers(buffers)?;
        parse_log_json(file.meta("train_log")?).map_err(|what| Error::Metadata {
            path: path.to_path_buf(),
            key: "train_log".into(),
            expected: "the JSON log rows".into(),
            found: what,
        })
    }

    /// Trains (or resumes) into `out` and writes the model file.
    pub fn run(
        &self,
        out: &Path,
        resume: bool,
        events: &mut dyn FnMut(Event),
    ) -> Result<Vec<EpochLog>> {
        std::fs::create_dir_all(out).map_err(|e| Error::Io {
            path: out.to_path_buf(),
            source: e,
        })?;
        let mut objective = self.spec.objective()?;
        let cfg = self.spec.train_config();
        let mut trainer = Trainer::new(&self.model, &self.store, objective.as_mut(), cfg.clone());
        let checkpoint = out.join(CHECKPOINT);
        let mut logs = Vec::new();
        if resume && checkpoint.exists() {
            logs = self.resume(&checkpoint, &mut trainer)?;
            if logs.len() > cfg.epochs {
                return Err(Error::Metadata {
                    path: checkpoint,
                    key: "epoch".into(),
                    expected: format!(
                        "at most optim.epochs = {} (raise optim.epochs or start without --resume)",
                        cfg.epochs
                    ),
                    found: logs.len().to_string(),
                });
            }
            // A kill between the checkpoint and the log leaves the log one
            // row short: the checkpoint's rows are the truth.
            if !logs.is_empty() {
                self.write_log(&out.join(TRAIN_LOG), &logs)?;
            }
            events(Event::Resumed { epoch: logs.len() });
        }
        let batches = self.train.len().div_ceil(cfg.batch_size);
        for epoch in logs.len() + 1..=cfg.epochs {
            let start = Instant::now();
            events(Event::EpochStart { epoch, batches });
            let terms = trainer.epoch(epoch, &self.train, &mut |done, _, loss| {
                events(Event::Batch { done, loss })
            })?;
            let (clean_accuracy, pgd_accuracy) = self.eval.run_after(&self.model, epoch)?;
            logs.push(EpochLog {
                epoch,
                lr: cfg.lr_at(epoch),
                terms,
                clean_accuracy,
                pgd_accuracy,
                seconds: start.elapsed().as_secs_f64(),
            });
            self.write_checkpoint(&checkpoint, &trainer, &logs)?;
            self.write_log(&out.join(TRAIN_LOG), &logs)?;
            events(Event::Epoch(logs.last().expect("just pushed")));
        }
        self.write_model(&out.join(MODEL), &logs)?;
        Ok(logs)
    }

    fn write_log(&self, path: &Path, logs: &[EpochLog]) -> Result<()> {
        let mut cols = Columns::new()
            .u32("epoch", logs.iter().map(|l| l.epoch as u32).collect())
            .f64("lr", logs.iter().map(|l| l.lr).collect());
        let names: Vec<String> = logs
            .first()
            .map(|l| l.terms.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default();
        for (i, n) in names.iter().enumerate() {
            cols = cols.f64(
                &format!("loss_{n}"),
                logs.iter().map(|l| canonical(l.terms[i].1)).collect(),
            );
        }
        let cols = cols
            .f64(
                "clean_accuracy",
                logs.iter().map(|l| canonical(l.clean_accuracy)).collect(),
            )
            .f64(
                "pgd_accuracy",
                logs.iter()
                    .map(|l| canonical(l.pgd_accuracy.unwrap_or(f64::NAN)))
                    .collect(),
            );
        let mut meta = self.metadata()?;
        meta.insert("kind".into(), "train_log".into());
        meta.insert(
            "pgd_accuracy".into(),
            match &self.spec.eval.pgd {
                Some(p) => format!(
                    "PGD-L∞ eps {} {} steps of {} on {} evaluation samples drawn with the seed, after every {} epoch(s) (NaN: not run)",
                    p.eps, p.steps, p.step_size, p.limit, p.every
                ),
                None => "not run (no eval.pgd in the config): NaN".into(),
            },
        );
        write_table(path, cols, meta)
    }

    fn write_model(&self, path: &Path, logs: &[EpochLog]) -> Result<()> {
        let mut meta = self.metadata()?;
        meta.insert("epochs".into(), logs.len().to_string());
        if let Some(last) = logs.last() {
            meta.insert("clean_accuracy".into(), last.clean_accuracy.to_string());
        }
        let batches = self.train.len().div_ceil(self.spec.optim.batch_size) * logs.len();
        self.model.save(path, &self.store, &meta, batches)
    }
}

/// One NaN for all: an arithmetic NaN (0/0 on x86 sets the sign bit) and
/// `f64::NAN` differ in their bits, so a log resumed from JSON would not
/// have the bytes of the uninterrupted one.
fn canonical(x: f64) -> f64 {
    if x.is_nan() {
        f64::NAN
    } else {
        x
    }
}

/// A float as JSON: its shortest exact decimal as a string (`"0.05"`,
/// `"NaN"`, `"inf"`). JSON numbers hold no NaN (MAT's warm-up epoch logs
/// BIBO as NaN), and serde_json's default parser may miss the last bit of
/// a number, so a resumed log would not have the uninterrupted bytes.
fn float_json(x: f64) -> serde_json::Value {
    format!("{:?}", canonical(x)).into()
}

/// The inverse of [`float_json`]; also reads plain numbers and `null`
/// (how older checkpoints wrote a NaN).
fn json_float(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Null => Some(f64::NAN),
        serde_json::Value::String(s) => s.parse().ok(),
        other => other.as_f64(),
    }
}

/// The log rows as JSON (kept in the checkpoint's metadata). Wall-clock
/// seconds stay out: same seed, same bytes.
fn log_json(logs: &[EpochLog]) -> String {
    let rows: Vec<serde_json::Value> = logs
        .iter()
        .map(|l| {
            let terms: Vec<serde_json::Value> = l
                .terms
                .iter()
                .map(|(n, v)| serde_json::json!([n, float_json(*v)]))
                .collect();
            serde_json::json!({
                "epoch": l.epoch,
                "lr": float_json(l.lr),
                "terms": terms,
                "clean_accuracy": float_json(l.clean_accuracy),
                "pgd_accuracy": l.pgd_accuracy.map(float_json),
            })
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

fn parse_log_json(text: &str) -> std::result::Result<Vec<EpochLog>, String> {
    let rows: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            let f = |k: &str| {
                r.get(k)
                    .and_then(json_float)
                    .ok_or(format!("row {i}: `{k}` is not a number"))
            };
            let terms = r
                .get("terms")
                .and_then(|t| t.as_array())
                .ok_or(format!("row {i}: `terms` is not a list"))?
                .iter()
                .map(|t| match t.as_array().map(Vec::as_slice) {
                    Some([serde_json::Value::String(n), v]) => json_float(v)
                        .map(|v| (n.clone(), v))
                        .ok_or(format!("row {i}: loss term `{n}` is not a number")),
                    _ => Err(format!("row {i}: a loss term is not [name, value]")),
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let epoch = f("epoch")?;
            if epoch != (i + 1) as f64 {
                return Err(format!("row {i}: epoch {epoch}, expected {}", i + 1));
            }
            Ok(EpochLog {
                epoch: i + 1,
                lr: f("lr")?,
                terms,
                clean_accuracy: f("clean_accuracy")?,
                pgd_accuracy: match r.get("pgd_accuracy") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(v) => Some(
                        json_float(v).ok_or(format!("row {i}: `pgd_accuracy` is not a number"))?,
                    ),
                },
                // Not kept: the log of this run's own epochs prints them.
                seconds: 0.0,
            })
        })
        .collect()
}

/// The default output file names inside `dir`.
pub fn outputs(dir: &Path) -> [PathBuf; 3] {
    [dir.join(MODEL), dir.join(TRAIN_LOG), dir.join(CHECKPOINT)]
}
