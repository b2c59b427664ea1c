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
    /// Run a pipeline's stages whose inputs changed, in dependency order.
    Repro {
        /// A pipeline file (pipelines/NAME.yaml).
        pipeline: PathBuf,
        #[command(flatten)]
        run: RunArgs,
        /// Say for each stage whether it would run and why; run nothing.
        #[arg(long)]
        dry_run: bool,
        /// Run this stage even if it is up to date (repeatable).
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        /// Independent stages to run at once.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// After a failure, go on with the stages that do not depend on it.
        #[arg(long)]
        keep_going: bool,
        /// Do not reuse or fill the run cache.
        #[arg(long)]
        no_cache: bool,
        /// When another run holds the run folder, wait for it instead of
        /// stopping.
        #[arg(long)]
        wait: bool,
    },
    /// For each stage of a pipeline: up to date, or why it would run.
    Status {
        pipeline: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
    /// The stages of a pipeline in dependency order, with what each reads.
    Dag {
        pipeline: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Remove run-cache entries that no lock file under runs/ refers to.
    Gc,
}

#[derive(clap::Args)]
struct RunArgs {
    /// A profile of the pipeline (`profiles:`).
    #[arg(long, default_value = "quick")]
    profile: String,
}

/// Where runs and the run cache live.
const RUNS: &str = "runs";

/// The nearest folder, from the working folder up, that holds a
/// `pipelines/` folder; else the working folder.
fn project_root() -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir().context("the working folder")?;
    Ok(cwd
        .ancestors()
        .find(|d| d.join("pipelines").is_dir())
        .unwrap_or(&cwd)
        .to_path_buf())
}

/// The project root: the nearest folder, from the working folder up, that
/// holds a `pipelines/` folder (else the working folder). Stage commands
/// name paths relative to it, so `mat` works there whatever folder it was
/// started in; `file` comes back relative to it, and a pipeline outside it
/// is refused before anything is written.
fn enter_project_root(file: &std::path::Path) -> anyhow::Result<PathBuf> {
    let root = project_root()?;
    let full = std::fs::canonicalize(file)
        .with_context(|| format!("{}: cannot read the pipeline file", file.display()))?;
    let canon_root = std::fs::canonicalize(&root).context("the project root")?;
    let rel = full.strip_prefix(&canon_root).map_err(|_| {
        anyhow::anyhow!(
            "{}: the pipeline is outside the project root {} (the nearest folder up from here with a `pipelines/` folder, else this one); run mat from inside the project that holds it",
            file.display(),
            root.display()
        )
    })?;
    std::env::set_current_dir(&root)
        .with_context(|| format!("{}: cannot enter the project root", root.display()))?;
    Ok(rel.to_path_buf())
}

fn load_pipeline(path: &std::path::Path, profile: &str) -> anyhow::Result<mat_pipeline::Pipeline> {
    Ok(mat_pipeline::Pipeline::load(
        path,
        profile,
        std::path::Path::new(RUNS),
    )?)
}

fn pipeline_options() -> mat_pipeline::Options {
    mat_pipeline::Options {
        cache: Some(PathBuf::from(RUNS).join(".cache")),
        ..mat_pipeline::Options::default()
    }
}

/// Stage commands name the stage programs (`mat-train`, ...): the ones
/// built beside this binary come first on PATH.
fn put_stage_programs_on_path() {
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
    {
        let mut paths = vec![dir];
        if let Some(old) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&old));
        }
        if let Ok(joined) = std::env::join_paths(paths) {
            std::env::set_var("PATH", joined);
        }
    }
}

fn describe(o: &mat_pipeline::Outcome) -> String {
    use mat_pipeline::Outcome::*;
    match o {
        UpToDate => "up to date, skipped".into(),
        Ran(r) => format!("ran ({r})"),
        Restored(r) => format!("restored from the run cache ({r})"),
        WouldRun(r) => format!("would run: {r}"),
        Failed(e) => format!("FAILED: {e}"),
        NotRun => "not run (an upstream stage failed)".into(),
    }
}

/// Runs `file`: one pipeline, or each pipeline of a suite in turn.
fn repro(
    file: PathBuf,
    profile: &str,
    opts: mat_pipeline::Options,
    wait: bool,
) -> anyhow::Result<()> {
    put_stage_programs_on_path();
    mat_pipeline::interrupt::install();
    let file = enter_project_root(&file)?;
    for pipeline in mat_pipeline::pipelines_of(&file)? {
        repro_one(pipeline, profile, &opts, wait)?;
    }
    Ok(())
}

fn repro_one(
    pipeline: PathBuf,
    profile: &str,
    opts: &mat_pipeline::Options,
    wait: bool,
) -> anyhow::Result<()> {
    let p = load_pipeline(&pipeline, profile)?;
    let mut opts = opts.clone();
    // One writer per run folder; a dry run only reads.
    let _held = if opts.dry_run {
        None
    } else {
        let held = mat_pipeline::runlock::RunLock::acquire(&p.out_dir, wait)?;
        let left = mat_pipeline::runlock::remove_leftovers(&p.out_dir)?
            + match &opts.cache {
                Some(c) => mat_pipeline::runlock::remove_dead_cache_temps(c)?,
                None => 0,
            };
        if left > 0 {
            eprintln!("removed {left} temporary file(s) left by an interrupted run");
        }
        opts.inherit_fd = Some(held.fd());
        Some(held)
    };
    let opts = &opts;
    let start = std::time::Instant::now();
    eprintln!(
        "{}: {} stages, profile {profile}, outputs in {}",
        pipeline.display(),
        p.stages.len(),
        p.out_dir.display()
    );
    let results = mat_pipeline::repro(&p, opts, &mut |name, o| {
        eprintln!("  {name}: {}", describe(o));
    })?;
    if !opts.dry_run {
        let ran = results
            .iter()
            .filter(|(_, o)| !matches!(o, mat_pipeline::Outcome::UpToDate))
            .count();
        eprintln!(
            "{}: {ran} of {} stages ran or were restored, {:.1} s",
            pipeline.display(),
            results.len(),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn gc() -> anyhow::Result<()> {
    fn locks(
        dir: &std::path::Path,
        keep: &mut std::collections::BTreeSet<String>,
    ) -> anyhow::Result<()> {
        if !dir.is_dir() {
            return Ok(());
        }
        for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
            let p = entry.with_context(|| dir.display().to_string())?.path();
            if p.is_dir() && p.file_name().is_some_and(|n| n != ".cache") {
                locks(&p, keep)?;
            } else if p
                .file_name()
                .is_some_and(|n| n == mat_pipeline::lock::LOCK_FILE)
            {
                let lock = mat_pipeline::lock::Lock::read(p.parent().expect("a folder"))?;
                keep.extend(lock.stages.into_values().map(|s| s.cache_key));
            }
        }
        Ok(())
    }
    std::env::set_current_dir(project_root()?)?;
    let mut keep = std::collections::BTreeSet::new();
    locks(std::path::Path::new(RUNS), &mut keep)?;
    let cache = mat_pipeline::cache::RunCache::new(PathBuf::from(RUNS).join(".cache"));
    let removed = cache.gc(&keep)? + mat_pipeline::runlock::remove_dead_cache_temps(&cache.root)?;
    println!(
        "mat gc: removed {removed} run-cache entries, kept {}",
        keep.len()
    );
    Ok(())
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
        Command::Repro {
            pipeline,
            run,
            dry_run,
            force,
            jobs,
            keep_going,
            no_cache,
            wait,
        } => {
            let mut opts = pipeline_options();
            opts.dry_run = dry_run;
            opts.force = force.into_iter().collect();
            opts.jobs = jobs;
            opts.keep_going = keep_going;
            if no_cache {
                opts.cache = None;
            }
            repro(pipeline, &run.profile, opts, wait)
        }
        Command::Status { pipeline, run } => {
            let opts = mat_pipeline::Options {
                dry_run: true,
                ..pipeline_options()
            };
            repro(pipeline, &run.profile, opts, false)
        }
        Command::Dag { pipeline, run } => {
            use std::io::Write as _;
            let mut text = String::new();
            let pipeline = enter_project_root(&pipeline)?;
            for file in mat_pipeline::pipelines_of(&pipeline)? {
                let p = load_pipeline(&file, &run.profile)?;
                text.push_str(&format!("# {}\n", file.display()));
                for s in &p.stages {
                    if s.upstream.is_empty() {
                        text.push_str(&format!("{}\n", s.name));
                    } else {
                        text.push_str(&format!("{} <- {}\n", s.name, s.upstream.join(", ")));
                    }
                }
            }
            // A closed pipe (`mat dag ... | head`) is not an error.
            match std::io::stdout().lock().write_all(text.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
        Command::Gc => gc(),
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
