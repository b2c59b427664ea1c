//! `mat-centers`: writes the Max-Mahalanobis class centers of MAT (paper
//! Eq. 3) to a safetensors file (tensor `centers` [L, D]; metadata L, D, C).
//!
//! The centers are computed on the CPU in f64; no device is involved.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mat_core::centers::Centers;

#[derive(Parser)]
#[command(
    name = "mat-centers",
    version,
    about = "Write Max-Mahalanobis (MMD) class centers"
)]
struct Args {
    /// Number of classes L (at least 2).
    #[arg(long, value_name = "L")]
    classes: usize,
    /// Feature dimension D (at least L - 1).
    #[arg(long, value_name = "D")]
    dim: usize,
    /// Norm C of every center (MMC uses 10).
    #[arg(long, value_name = "C", default_value_t = 10.0)]
    norm: f64,
    /// Output file (safetensors), written atomically.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Print nothing on success.
    #[arg(long, short)]
    quiet: bool,
}

fn run(args: Args) -> anyhow::Result<()> {
    let centers = Centers::new(args.classes, args.dim, args.norm)?;
    centers.write(&args.out)?;
    if !args.quiet {
        println!(
            "{}: {} centers of dimension {}, norm {}, pairwise cosine {:.6}",
            args.out.display(),
            args.classes,
            args.dim,
            args.norm,
            -1.0 / (args.classes as f64 - 1.0)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    mat_core::cli::main(|| run(args))
}
