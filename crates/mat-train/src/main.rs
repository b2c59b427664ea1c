//! `mat-train`: trains one model (natural, AT, TRADES, MMC or MAT) from a
//! YAML config and writes `model.safetensors`, `train_log.parquet` and a
//! checkpoint after every epoch into `--out`.
//!
//! Every check on the config, the data and the centers runs before the
//! first batch; a killed run leaves the last complete checkpoint, which
//! `--resume` continues from.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mat_core::cli;
use mat_core::data::DataDir;
use mat_core::train::run::{prepare, Event};
use mat_core::train::spec::TrainSpec;
use mat_core::DeviceSpec;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mat-train",
    version,
    about = "Train a model (natural | at | trades | mmc | mat) from a YAML config"
)]
struct Args {
    /// The stage config (see pipelines/train/*.yaml).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Output directory: model.safetensors, train_log.parquet, checkpoint.safetensors.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Override a config value, e.g. `--set mat.beta=2 --set optim.epochs=5` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Continue from DIR/checkpoint.safetensors (written by the same config).
    #[arg(long)]
    resume: bool,
    /// auto | cpu | cuda | cuda:N
    #[arg(long, default_value = "auto")]
    device: DeviceSpec,
    /// No progress bar: one line per epoch (for logs).
    #[arg(long, short)]
    quiet: bool,
}

fn run(args: Args) -> anyhow::Result<()> {
    let spec = TrainSpec::load(&args.config, &args.sets)?;
    let device = args.device.open()?;
    let prepared = prepare(spec, &DataDir::locate(), &device)?;
    let spec = &prepared.spec;
    eprintln!(
        "mat-train: {} {} on {} ({} training images), {} epochs, device {:?}",
        spec.method.name(),
        prepared.arch,
        spec.dataset,
        prepared.train.len(),
        spec.optim.epochs,
        device
    );
    let bar = cli::progress_bar(
        args.quiet,
        "epoch {prefix} [{bar:30}] {pos}/{len} batches, loss {msg} ({elapsed} elapsed, ETA {eta})",
    );
    let say = |line: String| cli::say(&bar, line);
    let epochs = spec.optim.epochs;
    let logs = prepared.run(&args.out, args.resume, &mut |event| match event {
        Event::Resumed { epoch } => say(format!("resumed after epoch {epoch} from the checkpoint")),
        Event::EpochStart { epoch, batches } => {
            bar.reset();
            bar.set_length(batches as u64);
            bar.set_prefix(format!("{epoch}/{epochs}"));
        }
        Event::Batch { done, loss } => {
            bar.set_position(done as u64);
            bar.set_message(format!("{loss:.4}"));
        }
        Event::Epoch(l) => {
            let terms: Vec<String> = l.terms.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
            let pgd = l
                .pgd_accuracy
                .map(|a| format!(", PGD {:.2}%", 100.0 * a))
                .unwrap_or_default();
            let line = format!(
                "epoch {}/{epochs}: {} | lr {} | clean {:.2}%{pgd} | {:.1} s",
                l.epoch,
                terms.join(", "),
                l.lr as f32,
                100.0 * l.clean_accuracy,
                l.seconds
            );
            say(line)
        }
    })?;
    bar.finish_and_clear();
    let last = logs.last();
    eprintln!(
        "mat-train: wrote {} (clean accuracy {})",
        args.out.join(mat_core::train::run::MODEL).display(),
        last.map(|l| format!("{:.2}%", 100.0 * l.clean_accuracy))
            .unwrap_or_else(|| "n/a".into())
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::main(|| run(args))
}
