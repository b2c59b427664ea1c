//! `mat-attack`: attacks a saved model on a dataset with FGSM, PGD (L∞/L2,
//! targeted, restarts), C&W-L2, DDN, APGD (CE, DLR, targeted DLR), a
//! composite of bounded attacks, or adaptive PGD on the model's own training
//! objective, for one or more budgets, and writes
//! `adv.parquet` (one row per sample and budget, streamed) and
//! `summary.parquet` (one row per budget) into `--out`.
//!
//! Every parameter comes from `--config FILE` (YAML), the flags below, or
//! `--set key=value`, applied in that order; everything is checked before
//! the first batch.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use mat_core::artifact::{hash_file, Metadata, TensorFile};
use mat_core::attacks::run::{run, Event, SUMMARY};
use mat_core::attacks::spec::{AttackKind, AttackSpec};
use mat_core::attacks::AdaptiveObjective;
use mat_core::data::{self, DataDir};
use mat_core::models::Classifier;
use mat_core::DeviceSpec;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mat-attack",
    version,
    about = "Attack a saved model (fgsm | pgd | cw | ddn | apgd-ce | apgd-dlr | apgd-t | composite | adaptive) and write per-sample results"
)]
struct Args {
    /// A YAML config with any of the keys below (see README).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Output directory: adv.parquet, summary.parquet.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A model file written by mat-train.
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// A dataset of data/datasets.yaml (its test split unless --set split=train).
    #[arg(long, value_name = "NAME")]
    data: Option<String>,
    /// fgsm | pgd | cw | ddn | apgd-ce | apgd-dlr | apgd-t | composite | adaptive
    #[arg(long)]
    attack: Option<String>,
    /// Budgets, comma-separated (e.g. 0.1,0.2,0.3).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    eps: Vec<f64>,
    /// linf | l2 (PGD).
    #[arg(long)]
    norm: Option<String>,
    /// Steps of PGD, APGD and the adaptive attack.
    #[arg(long)]
    steps: Option<usize>,
    /// PGD step size (default eps·0.01/0.3, foolbox's relative step).
    #[arg(long)]
    step_size: Option<f64>,
    /// PGD / APGD runs from fresh random starts (a sample keeps the first success).
    #[arg(long)]
    restarts: Option<usize>,
    /// none | random | least-likely (targeted PGD).
    #[arg(long)]
    target: Option<String>,
    /// Attack a seeded subset of this many samples.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Override a config value, e.g. `--set cw.steps=100` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// auto | cpu | cuda | cuda:N
    #[arg(long, default_value = "auto")]
    device: DeviceSpec,
    /// No progress bar: one line per budget.
    #[arg(long, short)]
    quiet: bool,
}

/// The config: file, then flags, then `--set`, as one YAML mapping.
fn spec(args: &Args) -> anyhow::Result<AttackSpec> {
    let mut sets = Vec::new();
    let mut flag = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            sets.push(format!("{k}={v}"));
        }
    };
    flag(
        "model",
        args.model.as_ref().map(|p| p.display().to_string()),
    );
    flag("data", args.data.clone());
    flag("attack", args.attack.clone());
    if !args.eps.is_empty() {
        let e: Vec<String> = args.eps.iter().map(|e| e.to_string()).collect();
        flag("eps", Some(format!("[{}]", e.join(", "))));
    }
    flag("norm", args.norm.clone());
    flag("steps", args.steps.map(|v| v.to_string()));
    flag("step_size", args.step_size.map(|v| v.to_string()));
    flag("restarts", args.restarts.map(|v| v.to_string()));
    flag("target", args.target.clone());
    flag("limit", args.limit.map(|v| v.to_string()));
    flag("seed", args.seed.map(|v| v.to_string()));
    sets.extend(args.sets.iter().cloned());
    let spec: AttackSpec = match &args.config {
        Some(path) => mat_core::config::load(path, &sets)?,
        None => {
            let mut v = serde_yaml::Value::Mapping(Default::default());
            for s in &sets {
                mat_core::config::apply_set(&mut v, s).map_err(|e| anyhow::anyhow!("{s}: {e}"))?;
            }
            serde_yaml::from_value(v).map_err(|e| anyhow::anyhow!("the attack's options: {e}"))?
        }
    };
    spec.validate()?;
    Ok(spec)
}

fn main_run(args: Args) -> anyhow::Result<()> {
    let spec = spec(&args)?;
    let device = args.device.open()?;
    let file = TensorFile::read(&spec.model, &device)?;
    let model = Classifier::from_file(&file)?;
    // The adaptive attack's objective comes from the model file; a file
    // without it is refused here, before any data is read.
    let objective = match spec.attack {
        AttackKind::Adaptive => Some(AdaptiveObjective::from_model_file(&file)?),
        _ => None,
    };
    drop(file);
    let ds = data::load(&DataDir::locate(), &spec.data)?;
    let full = if spec.split == "test" {
        &ds.test
    } else {
        &ds.train
    };
    model
        .check_input(full.images.dims())
        .map_err(|e| anyhow::anyhow!("{}: {e} (dataset `{}`)", spec.model.display(), spec.data))?;
    if ds.num_classes() != model.num_classes {
        anyhow::bail!(
            "{}: the model has {} classes, dataset `{}` has {}",
            spec.model.display(),
            model.num_classes,
            spec.data,
            ds.num_classes()
        );
    }
    let seed = spec.limit.map(|_| spec.seed);
    let indices = full.subset_indices(spec.limit, seed);
    let split = full.subset(spec.limit, seed)?.to_device(&device)?;

    let mut meta = Metadata::new();
    meta.insert("attack".into(), spec.attack.name().into());
    meta.insert(
        "config".into(),
        serde_yaml::to_string(&spec).map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    meta.insert("seed".into(), spec.seed.to_string());
    meta.insert("model_hash".into(), hash_file(&spec.model)?);
    meta.insert("data".into(), spec.data.clone());
    meta.insert("data_hash".into(), split.hash()?);
    meta.insert("split".into(), spec.split.clone());
    meta.insert(
        "producer".into(),
        format!("mat-attack {}", env!("CARGO_PKG_VERSION")),
    );
    eprintln!(
        "mat-attack: {:?} on {} ({} {} samples), eps {:?}",
        spec.attack,
        spec.model.display(),
        split.len(),
        spec.split,
        spec.eps
    );

    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} samples, robust {msg} ({elapsed} elapsed, ETA {eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let summary = run(
        &spec,
        &model,
        objective.as_ref(),
        &split,
        &indices,
        &args.out,
        meta,
        &mut |event| match event {
            Event::Start { eps, samples } => {
                bar.reset();
                bar.set_length(samples as u64);
                bar.set_prefix(if eps.is_nan() {
                    "minimum norm".to_string()
                } else {
                    format!("eps {eps}")
                });
            }
            Event::Batch { done, robust } => {
                bar.set_position(done as u64);
                bar.set_message(format!("{:.2}%", 100.0 * robust as f64 / done as f64));
            }
        },
    )?;
    bar.finish_and_clear();
    for r in &summary {
        let eps = if r.eps.is_nan() {
            "-".to_string()
        } else {
            r.eps.to_string()
        };
        eprintln!(
            "eps {eps}: clean {:.2}%, robust {:.2}%, success {:.2}% of correct, L2 mean {:.4} median {:.4}",
            100.0 * r.clean_accuracy,
            100.0 * r.robust_accuracy,
            100.0 * r.success_rate,
            r.mean_l2,
            r.median_l2
        );
    }
    eprintln!("mat-attack: wrote {}", args.out.join(SUMMARY).display());
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
