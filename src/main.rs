//! `mat`: the command that ties the stages together. For now it holds the
//! data commands and `mat inspect`; the pipeline runner (`mat repro`) builds
//! on the same binary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mat_core::data::{self, DataDir, Source, Status};

#[derive(Parser)]
#[command(
    name = "mat",
    version,
    about = "Reproduce and stress-test Manifold-Aware Training"
)]
struct Cli {
    /// Print only warnings and errors.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List, fetch and verify datasets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Print an artifact's schema, metadata and summary (Parquet or safetensors).
    Inspect {
        /// The artifact to read.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Show every dataset of data/datasets.yaml and whether it is in the cache.
    List,
    /// Bring a dataset into the cache from its official URLs, or from a local
    /// folder, and verify every checksum.
    Fetch {
        /// Dataset name from data/datasets.yaml (`mat data list`).
        name: String,
        /// Copy from this folder (files as published, gzipped or not, or the
        /// archive) instead of downloading.
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
    },
}

fn data_list(dir: &DataDir) -> anyhow::Result<()> {
    let manifest = dir.manifest()?;
    println!("manifest: {}", dir.manifest_path().display());
    println!("cache:    {}", dir.cache.display());
    println!();
    println!(
        "{:<15} {:<13} {:<12} {:>7} {:>7}  status",
        "name", "format", "image", "train", "test"
    );
    for (name, spec) in &manifest.datasets {
        let status = match data::status(dir, name, spec) {
            Status::Present => "present".to_string(),
            Status::Embedded => "embedded (unpacked on first use)".to_string(),
            Status::Missing(files) => {
                format!("missing {} file(s): `mat data fetch {name}`", files.len())
            }
        };
        let [c, h, w] = spec.image_shape;
        println!(
            "{:<15} {:<13} {:<12} {:>7} {:>7}  {status}",
            name,
            spec.format.to_string(),
            format!("{c}x{h}x{w}"),
            spec.train_size,
            spec.test_size
        );
    }
    Ok(())
}

fn data_fetch(dir: &DataDir, name: &str, from: Option<PathBuf>) -> anyhow::Result<()> {
    let source = match from {
        Some(d) => {
            anyhow::ensure!(d.is_dir(), "--from {}: not a folder", d.display());
            Source::Dir(d)
        }
        None => Source::Official,
    };
    let fetched = data::fetch(dir, name, &source)?;
    for f in &fetched {
        println!("{:<28} {}", f.file, f.from);
    }
    // Loading proves the files are complete and in range, not just present.
    let ds = data::load(dir, name)
        .with_context(|| format!("dataset `{name}` was fetched but does not load"))?;
    println!(
        "{name}: ok, {} train + {} test images of {:?}, {} classes, in {}",
        ds.train.len(),
        ds.test.len(),
        ds.image_shape(),
        ds.num_classes(),
        dir.cache_dir(name).display()
    );
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Data(DataCommand::List) => data_list(&DataDir::locate()),
        Command::Data(DataCommand::Fetch { name, from }) => {
            data_fetch(&DataDir::locate(), &name, from)
        }
        Command::Inspect { file } => {
            print!("{}", mat_core::artifact::inspect(&file)?);
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if cli.quiet { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
