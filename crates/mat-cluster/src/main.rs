//! `mat-cluster`: the features of a model on clean and adversarial inputs
//! (from `mat-attack`'s `adv.parquet`), Ward clusters and match rates
//! (Table 1), cosine similarity to the predicted class's center (Table 5)
//! and a t-SNE map (Figure 1). Writes `features.parquet`,
//! `clusters.parquet`, `cluster_summary.parquet` and `tsne.parquet`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use candle_core::Tensor;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use mat_core::analysis::memory_estimate;
use mat_core::analysis::run::{run, ClusterSpec, Event, FitSet, InputSet, SUMMARY};
use mat_core::artifact::{hash_file, Metadata, Table};
use mat_core::attacks::run::images;
use mat_core::data::{self, DataDir};
use mat_core::models::Classifier;
use mat_core::DeviceSpec;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mat-cluster",
    version,
    about = "Features, Ward clusters and match rate, cosine similarity to centers, t-SNE"
)]
struct Args {
    /// A model file written by mat-train.
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// adv.parquet written by mat-attack (its clean inputs are read from
    /// the dataset it names).
    #[arg(long, value_name = "FILE")]
    adv: PathBuf,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Number of Ward clusters (default: the number of classes).
    #[arg(long)]
    clusters: Option<usize>,
    /// Fit Ward on the clean features or on all features.
    #[arg(long, value_enum, default_value = "clean")]
    fit: Fit,
    /// Fit Ward on a seeded sample of at most this many points (memory
    /// grows with its square: 2000 points need 16 MB).
    #[arg(long, default_value_t = 2000)]
    fit_points: usize,
    /// Clean samples in the t-SNE map (each with its adversarial versions);
    /// 0 skips t-SNE.
    #[arg(long, default_value_t = 500)]
    tsne_points: usize,
    #[arg(long, default_value_t = 1000)]
    tsne_iterations: usize,
    #[arg(long, default_value_t = 30.0)]
    perplexity: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// auto | cpu | cuda | cuda:N
    #[arg(long, default_value = "auto")]
    device: DeviceSpec,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Fit {
    Clean,
    All,
}

fn main_run(args: Args) -> anyhow::Result<()> {
    let spec = ClusterSpec {
        clusters: args.clusters,
        fit: match args.fit {
            Fit::Clean => FitSet::Clean,
            Fit::All => FitSet::All,
        },
        fit_points: args.fit_points,
        tsne_points: args.tsne_points,
        tsne_iterations: args.tsne_iterations,
        perplexity: args.perplexity,
        seed: args.seed,
        ..ClusterSpec::default()
    };
    if spec.clusters == Some(0) {
        anyhow::bail!("--clusters: expected at least 1, found 0");
    }
    if spec.fit_points < 2 {
        anyhow::bail!(
            "--fit-points: expected at least 2, found {}",
            spec.fit_points
        );
    }
    if !(spec.perplexity.is_finite() && spec.perplexity > 0.0) {
        anyhow::bail!(
            "--perplexity: expected a number > 0, found {}",
            spec.perplexity
        );
    }
    // Refused before any file is read when the machine cannot hold it.
    let need = mat_core::analysis::run::check_memory(spec.fit_points)?;
    eprintln!(
        "mat-cluster: Ward on at most {} points needs {:.1} MB",
        spec.fit_points,
        need as f64 / 1e6
    );
    debug_assert_eq!(need, memory_estimate(spec.fit_points));

    let device = args.device.open()?;
    let model = Classifier::load(&args.model, &device)?;
    let adv = Table::read(&args.adv)?;
    let data_name = adv.meta("data")?.to_string();
    let split_name = adv.meta("split").unwrap_or("test").to_string();
    let ds = data::load(&DataDir::locate(), &data_name)
        .with_context(|| format!("{}: its dataset `{data_name}`", args.adv.display()))?;
    let split = if split_name == "train" {
        &ds.train
    } else {
        &ds.test
    };
    if let Ok(h) = adv.meta("model_hash") {
        if h != hash_file(&args.model)? {
            eprintln!(
                "mat-cluster: warning: {} was made against another model than {} (transferred examples)",
                args.adv.display(),
                args.model.display()
            );
        }
    }

    let index = adv.u32s("index")?;
    let eps = adv.f64s("eps")?;
    let labels = adv.u32s("label")?;
    let adv_images = images(&adv, &device)?;
    model
        .check_input(adv_images.dims())
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.adv.display()))?;
    let n = split.len() as u32;
    if let Some(bad) = index.iter().find(|&&i| i >= n) {
        anyhow::bail!(
            "{}: column `index`: {bad} is outside the {split_name} split of `{data_name}` ({n} samples)",
            args.adv.display()
        );
    }

    // The clean set: each attacked sample once, in first-appearance order.
    let mut seen = std::collections::HashSet::new();
    let clean_rows: Vec<usize> = (0..index.len())
        .filter(|&r| seen.insert(index[r]))
        .collect();
    let clean_index: Vec<u32> = clean_rows.iter().map(|&r| index[r]).collect();
    let idx = Tensor::new(clean_index.as_slice(), &device)?;
    let mut sets = vec![InputSet {
        kind: "clean",
        eps: f64::NAN,
        index: clean_index.clone(),
        labels: clean_rows.iter().map(|&r| labels[r]).collect(),
        images: split.images.to_device(&device)?.index_select(&idx, 0)?,
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
        let r = Tensor::new(rows.as_slice(), &device)?;
        sets.push(InputSet {
            kind: "adversarial",
            eps: b,
            index: rows.iter().map(|&r| index[r as usize]).collect(),
            labels: rows.iter().map(|&r| labels[r as usize]).collect(),
            images: adv_images.index_select(&r, 0)?,
        });
    }

    let mut meta = Metadata::new();
    meta.insert("model_hash".into(), hash_file(&args.model)?);
    meta.insert("adv_hash".into(), hash_file(&args.adv)?);
    meta.insert(
        "attack".into(),
        adv.meta("attack").unwrap_or("unknown").into(),
    );
    meta.insert("data".into(), data_name);
    meta.insert("seed".into(), spec.seed.to_string());
    meta.insert(
        "producer".into(),
        format!("mat-cluster {}", env!("CARGO_PKG_VERSION")),
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} ({elapsed}, ETA {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let summary = run(&spec, &model, &sets, &args.out, meta, &mut |e| match e {
        Event::Stage(name, len) => {
            bar.reset();
            bar.set_prefix(name);
            bar.set_length(len);
        }
        Event::Advance(d) => bar.inc(d),
    })?;
    bar.finish_and_clear();
    for s in &summary {
        let eps = if s.eps.is_nan() {
            String::new()
        } else {
            format!(" eps {}", s.eps)
        };
        eprintln!(
            "{}{eps} ({} samples): match rate {:.2}%, cosine to predicted center {:.3} ± {:.3}",
            s.kind,
            s.samples,
            100.0 * s.match_rate,
            s.cos_mean,
            s.cos_std
        );
    }
    eprintln!("mat-cluster: wrote {}", args.out.join(SUMMARY).display());
    Ok(())
}

fn main() -> ExitCode {
    mat_core::alloc::keep_freed_memory();
    match main_run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
