//! `mat-report`: the paper's tables from stage outputs, as Markdown and CSV,
//! each cell "ours (paper)".

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mat-report",
    version,
    about = "Tables of the paper from the stage outputs"
)]
struct Cli {
    #[command(subcommand)]
    table: TableCmd,
}

#[derive(Subcommand)]
enum TableCmd {
    /// Table 2: clean and PGD accuracy, mean L2 of C&W and DDN.
    Table2 {
        /// The run folder: <runs>/<dataset>/{pgd,cw,ddn}/<method>/summary.parquet.
        #[arg(long, value_name = "DIR")]
        runs: PathBuf,
        /// Writes <out>.md and <out>.csv.
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        /// PGD budgets read from the summaries (MNIST, CIFAR-10).
        #[arg(long, default_value = "0.3")]
        mnist_eps: f64,
        #[arg(long, default_value_t = 8.0 / 255.0)]
        cifar_eps: f64,
        /// A line about the run under the title (profile, budgets).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Table 1: match rate of Ward clusters (natural and TRADES models).
    Table1 {
        /// The run folder: <runs>/<dataset>/cluster-{pgd,ddn}/<model>/cluster_summary.parquet.
        #[arg(long, value_name = "DIR")]
        runs: PathBuf,
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        #[arg(long, default_value = "")]
        note: String,
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
    /// Table 3: CIFAR-10 under targeted and untargeted PGD (natural, AT, MMC, MAT).
    Table3 {
        /// The run folder: <runs>/cifar10/{pgd10-targeted,pgd10,pgd50-targeted,pgd50}/<method>/.
        #[arg(long, value_name = "DIR")]
        runs: PathBuf,
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Table 4: accuracy under PGD and adaptive PGD (TRADES, MAT variants).
    Table4 {
        /// The run folder: <runs>/<dataset>/{pgd,adaptive}/<method>/summary.parquet.
        #[arg(long, value_name = "DIR")]
        runs: PathBuf,
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        #[arg(long, default_value = "0.3")]
        mnist_eps: f64,
        #[arg(long, default_value_t = 8.0 / 255.0)]
        cifar_eps: f64,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Table 5: cosine similarity to the predicted center (MAT variants).
    Table5 {
        /// The run folder: <runs>/<dataset>/cluster-pgd/<model>/cluster_summary.parquet.
        #[arg(long, value_name = "DIR")]
        runs: PathBuf,
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        #[arg(long, default_value = "")]
        note: String,
    },
}

/// Writes `<out>.md` and `<out>.csv`.
fn write_pair(out: &std::path::Path, md: &str, csv: &str) -> anyhow::Result<()> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    write_atomic(&out.with_extension("md"), md)?;
    write_atomic(&out.with_extension("csv"), csv)?;
    eprintln!("mat-report: wrote {}", out.with_extension("md").display());
    Ok(())
}

/// Today's UTC date, YYYY-MM-DD (Howard Hinnant's civil-from-days).
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn write_atomic(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.table {
        TableCmd::Table2 {
            runs,
            out,
            mnist_eps,
            cifar_eps,
            note,
        } => {
            let t = mat_report::table2::collect(&runs, [mnist_eps, cifar_eps])?;
            let date = today();
            let note = format!("{note} Generated {date} from {}.", runs.display());
            write_pair(&out, &t.markdown(note.trim()), &t.csv())
        }
        TableCmd::Table1 { runs, out, note } => {
            let note = format!("{note} Generated {} from {}.", today(), runs.display());
            let (md, csv) = mat_report::cluster_tables::table1(&runs, note.trim())?;
            write_pair(&out, &md, &csv)
        }
        TableCmd::Figure1 { tsne, out, title } => {
            mat_report::figures::figure1(&tsne, &out, &title)?;
            eprintln!("mat-report: wrote {}", out.with_extension("png").display());
            Ok(())
        }
        TableCmd::Figure2 { runs, out, title } => {
            mat_report::figures::figure2(&runs, &out, &title)?;
            eprintln!("mat-report: wrote {}", out.with_extension("png").display());
            Ok(())
        }
        TableCmd::Table3 { runs, out, note } => {
            let note = format!("{note} Generated {} from {}.", today(), runs.display());
            let (md, csv) = mat_report::table3::table3(&runs, note.trim())?;
            write_pair(&out, &md, &csv)
        }
        TableCmd::Table4 {
            runs,
            out,
            mnist_eps,
            cifar_eps,
            note,
        } => {
            let note = format!("{note} Generated {} from {}.", today(), runs.display());
            let (md, csv) = mat_report::table4::table4(&runs, [mnist_eps, cifar_eps], note.trim())?;
            write_pair(&out, &md, &csv)
        }
        TableCmd::Table5 { runs, out, note } => {
            let note = format!("{note} Generated {} from {}.", today(), runs.display());
            let (md, csv) = mat_report::cluster_tables::table5(&runs, note.trim())?;
            write_pair(&out, &md, &csv)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
