//! `mat-cluster`'s work: features of clean and adversarial inputs, Ward
//! clusters and match rates (Table 1), cosine similarity to the predicted
//! center (Table 5), and a t-SNE map (Figure 1).

use std::path::Path;

use candle_core::{Device, Tensor, D};
use serde::{Deserialize, Serialize};

use super::match_rate::{cosine_summary, match_rate, Clusters};
use super::tsne::Tsne;
use super::ward::{cut, memory_estimate, ward};
use crate::artifact::{hash_file, write_table, Columns, Metadata, Table};
use crate::attacks::run::images;
use crate::data::{self, DataDir};
use crate::losses::cosine;
use crate::models::Classifier;
use crate::rng::SeededRng;
use crate::{Error, Result};

pub const FEATURES: &str = "features.parquet";
pub const CLUSTERS: &str = "clusters.parquet";
pub const SUMMARY: &str = "cluster_summary.parquet";
pub const TSNE: &str = "tsne.parquet";

/// Which points Ward is fit on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FitSet {
    /// The clean features (the default).
    Clean,
    /// Clean and adversarial features together.
    All,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// k; absent: the number of classes.
    pub clusters: Option<usize>,
    pub fit: FitSet,
    /// Ward's fit set is a seeded sample of at most this many points
    /// (its memory grows with the square).
    pub fit_points: usize,
    /// Clean samples in the t-SNE map, each with its adversarial versions; 0
    /// skips t-SNE.
    pub tsne_points: usize,
    pub tsne_iterations: usize,
    pub perplexity: f64,
    pub seed: u64,
    pub batch_size: usize,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            clusters: None,
            fit: FitSet::Clean,
            fit_points: 2000,
            tsne_points: 500,
            tsne_iterations: 1000,
            perplexity: 30.0,
            seed: 0,
            batch_size: 250,
        }
    }
}

/// One set of inputs: the clean images, or the adversarial ones of a budget.
pub struct InputSet {
    /// `clean` or `adversarial`.
    pub kind: &'static str,
    /// The budget; `None` for clean inputs and minimum-norm attacks (NaN
    /// in the tables).
    pub eps: Option<f64>,
    /// Indices into the dataset split.
    pub index: Vec<u32>,
    pub labels: Vec<u32>,
    pub images: Tensor,
}

/// The features of a set.
struct Extracted {
    features: Vec<Vec<f32>>,
    predictions: Vec<u32>,
    /// Cosine similarity to each class center `[N][L]` (models with centers).
    cos_centers: Option<Vec<Vec<f32>>>,
}

/// Progress of the long parts.
pub enum Event {
    Stage(&'static str, u64),
    Advance(u64),
}

fn extract(
    model: &Classifier,
    images: &Tensor,
    batch: usize,
    events: &mut dyn FnMut(Event),
) -> Result<Extracted> {
    let n = images.dim(0)?;
    let mut out = Extracted {
        features: Vec::with_capacity(n),
        predictions: Vec::with_capacity(n),
        cos_centers: model.head.centers().map(|_| Vec::with_capacity(n)),
    };
    for start in (0..n).step_by(batch) {
        let len = batch.min(n - start);
        let x = images.narrow(0, start, len)?;
        let phi = model.analysis_features(&x)?;
        let logits = model.logits_t(&x, false)?;
        out.predictions
            .extend(logits.argmax(D::Minus1)?.to_vec1::<u32>()?);
        out.features.extend(phi.to_vec2::<f32>()?);
        if let (Some(c), Some(acc)) = (model.head.centers(), out.cos_centers.as_mut()) {
            // cos(phi_i, mu_k) for every k: [len, L].
            let (l, d) = c.dims2()?;
            let a = phi.unsqueeze(1)?.broadcast_as((len, l, d))?;
            let b = c.unsqueeze(0)?.broadcast_as((len, l, d))?;
            acc.extend(cosine(&a.contiguous()?, &b.contiguous()?)?.to_vec2::<f32>()?);
        }
        events(Event::Advance(len as u64));
    }
    Ok(out)
}

/// What `run` computed for one set.
#[derive(Debug, Clone, PartialEq)]
pub struct SetSummary {
    pub kind: String,
    pub eps: Option<f64>,
    pub samples: usize,
    pub match_rate: f64,
    pub cos_mean: f64,
    pub cos_std: f64,
}

/// The bytes this machine can spare (MemAvailable), where known.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Checks Ward's memory for the fit set before any work.
pub fn check_memory(fit_points: usize) -> Result<u64> {
    let need = memory_estimate(fit_points);
    if let Some(have) = available_memory() {
        if need > have {
            return Err(Error::Invalid(format!(
                "fit_points: Ward on {fit_points} points needs {:.2} GB for its distance matrix, \
                 this machine has {:.2} GB available; lower --fit-points",
                need as f64 / 1e9,
                have as f64 / 1e9
            )));
        }
    }
    Ok(need)
}

impl ClusterSpec {
    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if self.clusters == Some(0) {
            return Err(Error::field("clusters", "at least 1", 0));
        }
        if self.fit_points < 2 {
            return Err(Error::field("fit_points", "at least 2", self.fit_points));
        }
        if !(self.perplexity.is_finite() && self.perplexity > 0.0) {
            return Err(Error::field("perplexity", "a number > 0", self.perplexity));
        }
        if self.batch_size == 0 {
            return Err(Error::field("batch_size", "at least 1", 0));
        }
        Ok(())
    }
}

/// Everything an analysis needs, read and checked before any feature is
/// computed: the model, the input sets (the clean samples an
/// `adv.parquet` attacked, then its adversarial images, one set per
/// budget) and the provenance of the outputs.
pub struct Prepared {
    pub model: Classifier,
    pub sets: Vec<InputSet>,
    pub metadata: Metadata,
    /// The adversarial examples were made against another model (transfer).
    pub transferred: bool,
}

/// Reads `model` and `adv` (an `adv.parquet` of `mat-attack`) and the
/// dataset it names, and builds the input sets.
pub fn prepare(
    spec: &ClusterSpec,
    model_path: &Path,
    adv_path: &Path,
    data_dir: &DataDir,
    device: &Device,
) -> Result<Prepared> {
    spec.validate()?;
    let model = Classifier::load(model_path, device)?;
    let adv = Table::read(adv_path)?;
    let data_name = adv.meta("data")?.to_string();
    let split_name = adv.meta("split").unwrap_or("test").to_string();
    let ds = data::load(data_dir, &data_name)?;
    let split = if split_name == "train" {
        &ds.train
    } else {
        &ds.test
    };
    let model_hash = hash_file(model_path)?;
    let transferred = adv.meta("model_hash").is_ok_and(|h| h != model_hash);

    let index = adv.u32s("index")?;
    let eps = adv.f64s("eps")?;
    let labels = adv.u32s("label")?;
    let adv_images = images(&adv, device)?;
    model
        .check_input(adv_images.dims())
        .map_err(|e| Error::format(adv_path, e.to_string()))?;
    let n = split.len() as u32;
    if let Some(bad) = index.iter().find(|&&i| i >= n) {
        return Err(Error::Column {
            path: adv_path.to_path_buf(),
            column: "index".into(),
            expected: format!("indices of the {split_name} split of `{data_name}` ({n} samples)"),
            found: bad.to_string(),
        });
    }

    // The clean set: each attacked sample once, in first-appearance order.
    let mut seen = std::collections::HashSet::new();
    let clean_rows: Vec<usize> = (0..index.len())
        .filter(|&r| seen.insert(index[r]))
        .collect();
    let clean_index: Vec<u32> = clean_rows.iter().map(|&r| index[r]).collect();
    let idx = Tensor::new(clean_index.as_slice(), device)?;
    let mut sets = vec![InputSet {
        kind: "clean",
        eps: None,
        index: clean_index.clone(),
        labels: clean_rows.iter().map(|&r| labels[r]).collect(),
        images: split.images.to_device(device)?.index_select(&idx, 0)?,
    }];
    // One adversarial set per budget (NaN: a minimum-norm attack).
    let mut budgets: Vec<f64> = Vec::new();
    for &e in &eps {
        if !budgets.iter().any(|b| b.to_bits() == e.to_bits()) {
            budgets.push(e);
        }
    }
    for b in budgets {
        let rows: Vec<u32> = (0..eps.len() as u32)
            .filter(|&r| eps[r as usize].to_bits() == b.to_bits())
            .collect();
        let r = Tensor::new(rows.as_slice(), device)?;
        sets.push(InputSet {
            kind: "adversarial",
            eps: (!b.is_nan()).then_some(b),
            index: rows.iter().map(|&r| index[r as usize]).collect(),
            labels: rows.iter().map(|&r| labels[r as usize]).collect(),
            images: adv_images.index_select(&r, 0)?,
        });
    }

    let mut metadata = Metadata::new();
    metadata.insert("model_hash".into(), model_hash);
    metadata.insert("adv_hash".into(), hash_file(adv_path)?);
    metadata.insert(
        "attack".into(),
        adv.meta("attack").unwrap_or("unknown").into(),
    );
    metadata.insert("data".into(), data_name);
    metadata.insert("seed".into(), spec.seed.to_string());
    metadata.insert(
        "producer".into(),
        format!("mat-cluster {}", env!("CARGO_PKG_VERSION")),
    );
    Ok(Prepared {
        model,
        sets,
        metadata,
        transferred,
    })
}

/// Runs the analysis of `sets` (the first is the clean set) and writes
/// features, clusters, summary and t-SNE tables into `out`.
pub fn run(
    spec: &ClusterSpec,
    model: &Classifier,
    sets: &[InputSet],
    out: &Path,
    metadata: Metadata,
    events: &mut dyn FnMut(Event),
) -> Result<Vec<SetSummary>> {
    if spec.batch_size == 0 || spec.fit_points < 2 {
        return Err(Error::field(
            "batch_size, fit_points",
            "at least 1 and at least 2",
            format!("{} and {}", spec.batch_size, spec.fit_points),
        ));
    }
    let k = spec.clusters.unwrap_or(model.num_classes);
    if k == 0 {
        return Err(Error::field("clusters", "at least 1", 0));
    }
    check_memory(spec.fit_points)?;
    let total: usize = sets.iter().map(|s| s.index.len()).sum();
    events(Event::Stage("features", total as u64));
    let extracted: Vec<Extracted> = sets
        .iter()
        .map(|s| extract(model, &s.images, spec.batch_size, events))
        .collect::<Result<_>>()?;

    // features.parquet
    let dim = extracted[0].features.first().map_or(0, Vec::len);
    let mut cols = Columns::new();
    let mut index = Vec::new();
    let mut kind = Vec::new();
    let mut eps = Vec::new();
    let mut label = Vec::new();
    let mut prediction = Vec::new();
    let mut feature = Vec::new();
    let mut cos_all = Vec::new();
    let mut cos_pred = Vec::new();
    for (s, e) in sets.iter().zip(&extracted) {
        index.extend(&s.index);
        kind.extend(std::iter::repeat_n(s.kind.to_string(), s.index.len()));
        eps.extend(std::iter::repeat_n(
            s.eps.unwrap_or(f64::NAN),
            s.index.len(),
        ));
        label.extend(&s.labels);
        prediction.extend(&e.predictions);
        for f in &e.features {
            feature.extend(f);
        }
        if let Some(c) = &e.cos_centers {
            for (row, &p) in c.iter().zip(&e.predictions) {
                cos_all.extend(row);
                cos_pred.push(row[p as usize]);
            }
        }
    }
    cols = cols
        .u32("index", index.clone())
        .string("kind", kind.clone())
        .f64("eps", eps.clone())
        .u32("label", label.clone())
        .u32("prediction", prediction.clone())
        .f32_list("feature", feature, &[dim]);
    let has_centers = model.head.centers().is_some();
    if has_centers {
        cols = cols
            .f32_list("cos_centers", cos_all, &[model.num_classes])
            .f32("cos_predicted", cos_pred.clone());
    }
    let mut meta = metadata.clone();
    meta.insert("kind".into(), "features".into());
    meta.insert(
        "feature_layer".into(),
        if has_centers {
            "phi (the center layer)"
        } else {
            "penultimate"
        }
        .into(),
    );
    write_table(&out.join(FEATURES), cols, meta)?;

    // Ward on a seeded sample of the fit set.
    let fit_pool: Vec<(usize, usize)> = extracted
        .iter()
        .enumerate()
        .filter(|(i, _)| spec.fit == FitSet::All || *i == 0)
        .flat_map(|(i, e)| (0..e.features.len()).map(move |j| (i, j)))
        .collect();
    let mut rng = SeededRng::for_purpose(spec.seed, "cluster/fit");
    let mut chosen: Vec<usize> = rng.permutation(fit_pool.len());
    chosen.truncate(spec.fit_points);
    chosen.sort_unstable();
    let fit: Vec<(usize, usize)> = chosen.iter().map(|&c| fit_pool[c]).collect();
    let fit_points: Vec<Vec<f32>> = fit
        .iter()
        .map(|&(i, j)| extracted[i].features[j].clone())
        .collect();
    let fit_preds: Vec<u32> = fit
        .iter()
        .map(|&(i, j)| extracted[i].predictions[j])
        .collect();
    events(Event::Stage("ward", 100));
    let mut last = 0u64;
    let dendrogram = ward(&fit_points, &mut |f| {
        let now = (f * 100.0) as u64;
        if now > last {
            events(Event::Advance(now - last));
            last = now;
        }
    });
    let labels = cut(&dendrogram, k);
    let clusters = Clusters::fit(&fit_points, &labels, &fit_preds);
    let ward_label: std::collections::HashMap<(usize, usize), usize> =
        fit.iter().copied().zip(labels.iter().copied()).collect();

    // clusters.parquet and the summary.
    let mut c_cluster = Vec::new();
    let mut c_nearest = Vec::new();
    let mut c_dom = Vec::new();
    let mut c_match = Vec::new();
    let mut summary = Vec::new();
    for (i, (s, e)) in sets.iter().zip(&extracted).enumerate() {
        let assigned = clusters.assign(&e.features, &e.predictions);
        for (j, (c, m)) in assigned.iter().enumerate() {
            c_cluster.push(ward_label.get(&(i, j)).map_or(-1, |&l| l as i64));
            c_nearest.push(*c as u32);
            c_dom.push(clusters.dominant[*c]);
            c_match.push(*m);
        }
        let flags: Vec<bool> = assigned.iter().map(|a| a.1).collect();
        let (cos_mean, cos_std) = match &e.cos_centers {
            Some(c) => {
                let cp: Vec<f32> = c
                    .iter()
                    .zip(&e.predictions)
                    .map(|(r, &p)| r[p as usize])
                    .collect();
                cosine_summary(&cp, &e.predictions)
            }
            None => (f64::NAN, f64::NAN),
        };
        summary.push(SetSummary {
            kind: s.kind.to_string(),
            eps: s.eps,
            samples: s.index.len(),
            match_rate: match_rate(&flags),
            cos_mean,
            cos_std,
        });
    }
    let mut meta = metadata.clone();
    meta.insert("kind".into(), "clusters".into());
    meta.insert("clusters".into(), k.to_string());
    meta.insert(
        "fit".into(),
        format!("{:?} ({} points, seed {})", spec.fit, fit.len(), spec.seed).to_lowercase(),
    );
    meta.insert(
        "definitions".into(),
        "cluster: the Ward cluster of a fit point (-1: not in the fit sample); nearest_cluster: \
         the cluster whose centroid is nearest; dominant_class: the most common prediction among \
         that cluster's fit members; match: dominant_class == prediction"
            .into(),
    );
    write_table(
        &out.join(CLUSTERS),
        Columns::new()
            .u32("index", index.clone())
            .string("kind", kind.clone())
            .f64("eps", eps.clone())
            .i64("cluster", c_cluster)
            .u32("nearest_cluster", c_nearest)
            .u32("dominant_class", c_dom)
            .bool("match", c_match),
        meta.clone(),
    )?;
    meta.insert("kind".into(), "cluster_summary".into());
    meta.insert(
        "cosine_definition".into(),
        "cos(phi(x), mu_pred): mean per predicted class, then mean and population std of those \
         class means over the classes (NaN for models without centers)"
            .into(),
    );
    write_table(
        &out.join(SUMMARY),
        Columns::new()
            .string("kind", summary.iter().map(|s| s.kind.clone()).collect())
            .f64(
                "eps",
                summary.iter().map(|s| s.eps.unwrap_or(f64::NAN)).collect(),
            )
            .u32(
                "samples",
                summary.iter().map(|s| s.samples as u32).collect(),
            )
            .f64("match_rate", summary.iter().map(|s| s.match_rate).collect())
            .f64("cos_mean", summary.iter().map(|s| s.cos_mean).collect())
            .f64("cos_std", summary.iter().map(|s| s.cos_std).collect()),
        meta,
    )?;

    // t-SNE of a seeded sample of clean points and their adversarial
    // versions, embedded together.
    if spec.tsne_points > 0 {
        let clean = &sets[0];
        let mut rng = SeededRng::for_purpose(spec.seed, "cluster/tsne-sample");
        let mut take: Vec<usize> = rng.permutation(clean.index.len());
        take.truncate(spec.tsne_points);
        take.sort_unstable();
        let wanted: std::collections::HashSet<u32> = take.iter().map(|&j| clean.index[j]).collect();
        let mut pts = Vec::new();
        let (mut t_index, mut t_kind, mut t_eps, mut t_label, mut t_pred) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (s, e) in sets.iter().zip(&extracted) {
            for j in 0..s.index.len() {
                if wanted.contains(&s.index[j]) {
                    pts.push(e.features[j].clone());
                    t_index.push(s.index[j]);
                    t_kind.push(s.kind.to_string());
                    t_eps.push(s.eps.unwrap_or(f64::NAN));
                    t_label.push(s.labels[j]);
                    t_pred.push(e.predictions[j]);
                }
            }
        }
        let tsne = Tsne {
            perplexity: spec.perplexity,
            iterations: spec.tsne_iterations,
            seed: spec.seed,
            ..Tsne::default()
        };
        events(Event::Stage("t-SNE", spec.tsne_iterations as u64));
        let y = tsne.embed(&pts, &mut |_, _| events(Event::Advance(1)));
        let mut meta = metadata;
        meta.insert("kind".into(), "tsne".into());
        meta.insert(
            "tsne".into(),
            format!(
                "exact t-SNE, perplexity {}, {} iterations, seed {}, {} points",
                tsne.perplexity.min((pts.len().max(2) - 1) as f64 / 3.0),
                tsne.iterations,
                tsne.seed,
                pts.len()
            ),
        );
        write_table(
            &out.join(TSNE),
            Columns::new()
                .u32("index", t_index)
                .string("kind", t_kind)
                .f64("eps", t_eps)
                .f64("x", y.iter().map(|p| p[0]).collect())
                .f64("y", y.iter().map(|p| p[1]).collect())
                .u32("label", t_label)
                .u32("prediction", t_pred),
            meta,
        )?;
    }
    Ok(summary)
}
