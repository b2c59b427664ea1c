//! `mat-cluster`: the features of a model on clean and adversarial inputs
//! (from `mat-attack`'s `adv.parquet`), Ward clusters and match rates
//! (Table 1), cosine similarity to the predicted class's center (Table 5)
//! and a t-SNE map (Figure 1). Writes `features.parquet`,
//! `clusters.parquet`, `cluster_summary.parquet` and `tsne.parquet`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use mat_core::analysis::run::{
    check_memory, prepare, run as analyse, ClusterSpec, Event, FitSet, SUMMARY,
};
use mat_core::cli;
use mat_core::data::DataDir;
use mat_core::{DeviceSpec, Error};

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

fn run(args: Args) -> anyhow::Result<()> {
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
    // The spec's fields are this program's flags.
    spec.validate().map_err(|e| match e {
        Error::Field {
            field,
            expected,
            found,
        } => anyhow::anyhow!(
            "--{}: expected {expected}, found {found}",
            field.replace('_', "-")
        ),
        e => e.into(),
    })?;
    // Refused before any file is read when the machine cannot hold it.
    let need = check_memory(spec.fit_points)?;
    eprintln!(
        "mat-cluster: Ward on at most {} points needs {:.1} MB",
        spec.fit_points,
        need as f64 / 1e6
    );
    let device = args.device.open()?;
    let p = prepare(&spec, &args.model, &args.adv, &DataDir::locate(), &device)?;
    if p.transferred {
        eprintln!(
            "mat-cluster: warning: {} was made against another model than {} (transferred examples)",
            args.adv.display(),
            args.model.display()
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let bar = cli::progress_bar(
        args.quiet,
        "{prefix:>8} [{bar:30}] {pos}/{len} ({elapsed}, ETA {eta})",
    );
    let summary = analyse(
        &spec,
        &p.model,
        &p.sets,
        &args.out,
        p.metadata,
        &mut |e| match e {
            Event::Stage(name, len) => {
                bar.reset();
                bar.set_prefix(name);
                bar.set_length(len);
            }
            Event::Advance(d) => bar.inc(d),
        },
    )?;
    bar.finish_and_clear();
    for s in &summary {
        let eps = s.eps.map_or(String::new(), |e| format!(" eps {e}"));
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
    let args = Args::parse();
    cli::main(|| run(args))
}
