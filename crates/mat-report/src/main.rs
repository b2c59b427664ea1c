//! `mat-report`: the paper's tables from stage outputs, as Markdown and CSV,
//! each cell "ours (paper)", and its figures as SVG and PNG.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mat-report",
    version,
    about = "Tables and figures of the paper from the stage outputs"
)]
struct Cli {
    #[command(subcommand)]
    table: TableCmd,
}

/// What every table takes.
#[derive(clap::Args)]
struct TableArgs {
    /// The run folder holding the stage outputs (the paths each table reads
    /// are in its help).
    #[arg(long, value_name = "DIR")]
    runs: PathBuf,
    /// Writes <out>.md and <out>.csv.
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// A line about the run under the title (profile, budgets).
    #[arg(long, default_value = "")]
    note: String,
}

impl TableArgs {
    /// The note with the date and the run folder appended.
    fn note_line(&self) -> String {
        mat_report::output::note_line(&self.note, &self.runs)
    }
}

/// The PGD budgets a table reads from the summaries.
#[derive(clap::Args)]
struct Budgets {
    #[arg(long, default_value = "0.3")]
    mnist_eps: f64,
    #[arg(long, default_value_t = 8.0 / 255.0)]
    cifar_eps: f64,
}

#[derive(Subcommand)]
enum TableCmd {
    /// Table 1: match rate of Ward clusters (natural and TRADES models),
    /// from <runs>/<dataset>/cluster-{pgd,ddn}/<model>/cluster_summary.parquet.
    Table1 {
        #[command(flatten)]
        args: TableArgs,
    },
    /// Table 2: clean and PGD accuracy, mean L2 of C&W and DDN, from
    /// <runs>/<dataset>/{pgd,cw,ddn}/<method>/summary.parquet.
    Table2 {
        #[command(flatten)]
        args: TableArgs,
        #[command(flatten)]
        eps: Budgets,
    },
    /// Table 3: targeted and untargeted PGD (natural, AT, MMC, MAT), from
    /// <runs>/{mnist,cifar10}/{pgd10-targeted,pgd10,pgd50-targeted,pgd50}/<method>/
    /// (MNIST at eps 0.2 and 0.3, CIFAR-10 at 8/255 and 16/255).
    Table3 {
        #[command(flatten)]
        args: TableArgs,
    },
    /// Table 4: accuracy under PGD and adaptive PGD (TRADES, MAT variants),
    /// from <runs>/<dataset>/{pgd,adaptive}/<method>/summary.parquet.
    Table4 {
        #[command(flatten)]
        args: TableArgs,
        #[command(flatten)]
        eps: Budgets,
    },
    /// Table 5: cosine similarity to the predicted center (MAT variants),
    /// from <runs>/<dataset>/cluster-pgd/<model>/cluster_summary.parquet.
    Table5 {
        #[command(flatten)]
        args: TableArgs,
    },
    /// Robust accuracy under PGD and AutoAttack (each member in turn), and
    /// the audit's verdict, per model, from
    /// <runs>/<dataset>/{pgd,autoattack,audit}/<method>/.
    Robustness {
        #[command(flatten)]
        args: TableArgs,
        /// The dataset folder under --runs.
        #[arg(long, default_value = "mnist")]
        dataset: String,
        /// The budget the table reads.
        #[arg(long, default_value = "0.3")]
        eps: f64,
    },
    /// Robust accuracy against eps under PGD-40 (dashed) and AutoAttack
    /// (solid), per method, from <runs>/<dataset>/{pgd-curve,autoattack,
    /// autoattack-curve}/<method>/summary.parquet.
    FigureRobustness {
        #[arg(long, value_name = "DIR")]
        runs: PathBuf,
        #[arg(long, default_value = "mnist")]
        dataset: String,
        /// Writes <out>.svg, <out>.png and <out>.csv.
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        #[arg(long, default_value = "Robust accuracy under PGD-40 and AutoAttack")]
        title: String,
    },
    /// Figure 1: t-SNE of clean and adversarial features (SVG and PNG).
    Figure1 {
        /// tsne.parquet written by mat-cluster.
        #[arg(long, value_name = "FILE")]
        tsne: PathBuf,
        /// Writes <out>.svg and <out>.png.
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        #[arg(long, default_value = "t-SNE of the features")]
        title: String,
    },
    /// Figure 2: robust accuracy against the PGD budget, per method.
    Figure2 {
        /// The run folder: <runs>/mnist/pgd-curve/<method>/summary.parquet.
        #[arg(long, value_name = "DIR")]
        runs: PathBuf,
        /// Writes <out>.svg, <out>.png and <out>.csv.
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        #[arg(long, default_value = "Robust accuracy under PGD-40")]
        title: String,
    },
}

/// `--runs DIR` must be a folder.
fn runs_folder(runs: &std::path::Path) -> anyhow::Result<()> {
    mat_report::output::existing_folder(runs).map_err(|e| anyhow::anyhow!("--runs {e}"))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    use mat_report::{cluster_tables, table2, table3, table4};
    match &cli.table {
        TableCmd::Table1 { args }
        | TableCmd::Table2 { args, .. }
        | TableCmd::Table3 { args }
        | TableCmd::Table4 { args, .. }
        | TableCmd::Table5 { args }
        | TableCmd::Robustness { args, .. } => runs_folder(&args.runs)?,
        TableCmd::Figure2 { runs, .. } | TableCmd::FigureRobustness { runs, .. } => {
            runs_folder(runs)?
        }
        TableCmd::Figure1 { .. } => {}
    }
    let (args, (md, csv)) = match cli.table {
        TableCmd::Table1 { args } => {
            let t = cluster_tables::table1(&args.runs, &args.note_line())?;
            (args, t)
        }
        TableCmd::Table2 { args, eps } => {
            let t = table2::collect(&args.runs, [eps.mnist_eps, eps.cifar_eps])?;
            let pair = (t.markdown(&args.note_line()), t.csv());
            (args, pair)
        }
        TableCmd::Table3 { args } => {
            let t = table3::table3(&args.runs, &args.note_line())?;
            (args, t)
        }
        TableCmd::Table4 { args, eps } => {
            let t = table4::table4(
                &args.runs,
                [eps.mnist_eps, eps.cifar_eps],
                &args.note_line(),
            )?;
            (args, t)
        }
        TableCmd::Table5 { args } => {
            let t = cluster_tables::table5(&args.runs, &args.note_line())?;
            (args, t)
        }
        TableCmd::Robustness { args, dataset, eps } => {
            let t = mat_report::robustness::table(&args.runs, &dataset, eps, &args.note_line())?;
            (args, t)
        }
        TableCmd::FigureRobustness {
            runs,
            dataset,
            out,
            title,
        } => {
            mat_report::figures::robustness(&runs, &dataset, &out, &title)?;
            eprintln!("mat-report: wrote {}", out.with_extension("png").display());
            return Ok(());
        }
        TableCmd::Figure1 { tsne, out, title } => {
            mat_report::figures::figure1(&tsne, &out, &title)?;
            eprintln!("mat-report: wrote {}", out.with_extension("png").display());
            return Ok(());
        }
        TableCmd::Figure2 { runs, out, title } => {
            mat_report::figures::figure2(&runs, &out, &title)?;
            eprintln!("mat-report: wrote {}", out.with_extension("png").display());
            return Ok(());
        }
    };
    mat_report::output::write_table(&args.out, &md, &csv)?;
    eprintln!(
        "mat-report: wrote {}",
        args.out.with_extension("md").display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    mat_core::cli::main(|| run(cli))
}
