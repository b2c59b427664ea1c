//! `mat`: the command that ties the stages together: the pipeline runner
//! (`mat repro`, `status`, `dag`, `gc`), the data commands and `mat inspect`.

use std::path::PathBuf;
use std::process::ExitCode;

use args::{Cli, Command};
use clap::Parser;
use mat_core::data::DataDir;
use mat_pipeline::project;

mod args;
mod audit_command;
mod data_commands;

fn load_pipeline(path: &std::path::Path, profile: &str) -> anyhow::Result<mat_pipeline::Pipeline> {
    Ok(mat_pipeline::Pipeline::load(
        path,
        profile,
        std::path::Path::new(project::RUNS),
    )?)
}

fn pipeline_options() -> mat_pipeline::Options {
    mat_pipeline::Options {
        cache: Some(project::cache_dir()),
        ..mat_pipeline::Options::default()
    }
}

/// Runs `file`: one pipeline, or each pipeline of a suite in turn.
fn repro(
    file: PathBuf,
    profile: &str,
    opts: mat_pipeline::Options,
    wait: bool,
) -> anyhow::Result<()> {
    project::put_stage_programs_on_path();
    mat_pipeline::interrupt::install();
    let file = project::enter(&file)?;
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
        let (held, left) =
            mat_pipeline::runlock::RunLock::take_over(&p.out_dir, opts.cache.as_deref(), wait)?;
        if left > 0 {
            eprintln!("removed {left} temporary file(s) left by an interrupted run");
        }
        opts.inherit_fd = Some(held.fd());
        Some(held)
    };
    let opts = &opts;
    let start = std::time::Instant::now();
    let parallel = match (opts.jobs, opts.cores) {
        (1, _) => String::new(),
        (j, Some(c)) => format!("; up to {j} stages at once, sharing {c} cores"),
        (j, None) => format!("; up to {j} stages at once"),
    };
    eprintln!(
        "{}: {} stages, profile {profile}, outputs in {}{parallel}",
        pipeline.display(),
        p.stages.len(),
        p.out_dir.display()
    );
    // Each stage's wall time, so that a run says where its time went.
    let results = mat_pipeline::repro(&p, opts, &mut |name, o, took| match took {
        Some(t) => eprintln!("  {name}: {o}, {:.1} s", t.as_secs_f64()),
        None => eprintln!("  {name}: {o}"),
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
    std::env::set_current_dir(project::root()?)?;
    let (removed, kept) = project::gc()?;
    println!("mat gc: removed {removed} run-cache entries, kept {kept}");
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Data(data_commands::DataCommand::List) => data_commands::list(&DataDir::locate()),
        Command::Data(data_commands::DataCommand::Fetch { name, from }) => {
            data_commands::fetch(&DataDir::locate(), &name, from)
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
            executor,
        } => {
            let mut opts = pipeline_options();
            opts.executor = executor.executor()?;
            opts.dry_run = dry_run;
            opts.force = force.into_iter().collect();
            opts.jobs = jobs as usize;
            // Parallel local stages split the cores, unless the user chose
            // the threads.
            if jobs > 1
                && opts.executor == mat_pipeline::Executor::Local
                && std::env::var_os("RAYON_NUM_THREADS").is_none()
            {
                opts.cores = std::thread::available_parallelism().ok().map(|n| n.get());
            }
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
            let pipeline = project::enter(&pipeline)?;
            let mut text = String::new();
            for file in mat_pipeline::pipelines_of(&pipeline)? {
                text.push_str(&format!("# {}\n", file.display()));
                text.push_str(&load_pipeline(&file, &run.profile)?.dag());
            }
            // A closed pipe (`mat dag ... | head`) is not an error.
            match std::io::stdout().lock().write_all(text.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
        Command::Gc => gc(),
        Command::Audit(a) => audit_command::run(a),
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
    mat_core::cli::main(|| run(cli))
}
