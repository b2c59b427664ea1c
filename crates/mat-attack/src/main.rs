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

use clap::{CommandFactory, FromArgMatches, Parser};
use mat_core::attacks::run::{prepare, Event, SUMMARY};
use mat_core::attacks::spec::{help, names, AttackSpec};
use mat_core::cli;
use mat_core::data::DataDir;
use mat_core::DeviceSpec;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mat-attack",
    version,
    about = "Attack a saved model with a registered attack and write per-sample results"
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
    /// A registered attack (listed below).
    #[arg(long)]
    attack: Option<String>,
    /// Budgets, comma-separated (e.g. 0.1,0.2,0.3).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    eps: Vec<f64>,
    /// linf | l2 (default: the attack's first norm).
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
        Some(path) => AttackSpec::load(path, &sets)?,
        None => {
            let mut v = serde_yaml::Value::Mapping(Default::default());
            for s in &sets {
                mat_core::config::apply_set(&mut v, s).map_err(|e| anyhow::anyhow!("{s}: {e}"))?;
            }
            let spec: AttackSpec = serde_yaml::from_value(v)
                .map_err(|e| anyhow::anyhow!("the attack's options: {e}"))?;
            spec.validate()?;
            spec
        }
    };
    Ok(spec)
}

fn run(args: Args) -> anyhow::Result<()> {
    let device = args.device.open()?;
    let prepared = prepare(spec(&args)?, &DataDir::locate(), &device)?;
    let spec = &prepared.spec;
    eprintln!(
        "mat-attack: {} on {} ({} {} samples), eps {:?}",
        spec.attack,
        spec.model.display(),
        prepared.split.len(),
        spec.split,
        spec.eps
    );
    let bar = cli::progress_bar(
        args.quiet,
        "{prefix} [{bar:30}] {pos}/{len} samples, robust {msg} ({elapsed} elapsed, ETA {eta})",
    );
    let summary = prepared.run(&args.out, &mut |event| match event {
        Event::Start { eps, samples } => {
            bar.reset();
            bar.set_length(samples as u64);
            bar.set_prefix(eps.map_or("minimum norm".to_string(), |e| format!("eps {e}")));
        }
        Event::Batch { done, robust } => {
            bar.set_position(done as u64);
            bar.set_message(format!("{:.2}%", 100.0 * robust as f64 / done as f64));
        }
    })?;
    bar.finish_and_clear();
    for r in &summary {
        let eps = r.eps.map_or("-".to_string(), |e| e.to_string());
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
    // `--help` lists the registry, so a new attack appears there by itself.
    let command = Args::command()
        .after_help(help())
        .mut_arg("attack", |a| a.help(format!("One of: {}", names(|_| true))));
    let args = Args::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    cli::main(|| run(args))
}
