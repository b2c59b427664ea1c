//! The command line of `mat`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::data_commands;

#[derive(Parser)]
#[command(
    name = "mat",
    version,
    about = "Reproduce and stress-test Manifold-Aware Training"
)]
pub struct Cli {
    /// Print only warnings and errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// List, fetch and verify datasets.
    #[command(subcommand)]
    Data(data_commands::DataCommand),
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
        /// Independent stages to run at once. Locally they share the
        /// machine's cores: each gets RAYON_NUM_THREADS = cores / the stages
        /// running at once (unless RAYON_NUM_THREADS is set already). The
        /// last --jobs given wins.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), overrides_with = "jobs")]
        jobs: u32,
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
        #[command(flatten)]
        executor: ExecutorArgs,
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
    /// Check a model for gradient masking (Carlini et al. 2019): writes
    /// audit.parquet (one row per check) and prints a verdict.
    Audit(crate::audit_command::AuditArgs),
}

/// Who runs the stages.
#[derive(clap::Args)]
pub struct ExecutorArgs {
    /// `local` (child processes) or `slurm` (one batch job per stage, up to
    /// --jobs at once; the project folder must be on a file system the
    /// compute nodes share).
    #[arg(long, value_enum, default_value = "local")]
    pub executor: ExecutorKind,
    /// Slurm partition of the jobs.
    #[arg(long, value_name = "P")]
    pub slurm_partition: Option<String>,
    /// Slurm account charged for the jobs.
    #[arg(long, value_name = "A")]
    pub slurm_account: Option<String>,
    /// More sbatch options, e.g. "--qos=long --constraint=a100".
    #[arg(long, value_name = "OPTIONS", allow_hyphen_values = true)]
    pub slurm_extra: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    Local,
    Slurm,
}

impl ExecutorArgs {
    /// The runner's executor; Slurm's options without `--executor slurm`
    /// are a mistake, not silently ignored.
    pub fn executor(&self) -> anyhow::Result<mat_pipeline::Executor> {
        let slurm_flags = self.slurm_partition.is_some()
            || self.slurm_account.is_some()
            || self.slurm_extra.is_some();
        match self.executor {
            ExecutorKind::Local if slurm_flags => anyhow::bail!(
                "--slurm-partition, --slurm-account and --slurm-extra go with --executor slurm"
            ),
            ExecutorKind::Local => Ok(mat_pipeline::Executor::Local),
            ExecutorKind::Slurm => {
                mat_pipeline::slurm::check_available()?;
                Ok(mat_pipeline::Executor::Slurm(mat_pipeline::SlurmOptions {
                    partition: self.slurm_partition.clone(),
                    account: self.slurm_account.clone(),
                    extra: self
                        .slurm_extra
                        .as_deref()
                        .unwrap_or("")
                        .split_whitespace()
                        .map(str::to_string)
                        .collect(),
                }))
            }
        }
    }
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// A profile of the pipeline (`profiles:`).
    #[arg(long, default_value = "quick")]
    pub profile: String,
}
