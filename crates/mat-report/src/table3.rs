//! Table 3: accuracy under targeted and untargeted PGD (10 and 50 steps) at
//! two budgets, natural, AT, MMC and MAT. Two blocks, each only where it was
//! measured:
//! - MNIST (the quick and smoke profiles' analogue, at eps 0.2 and 0.3),
//!   from `<runs>/mnist/{pgd10-targeted,pgd10,pgd50-targeted,pgd50}/<method>/summary.parquet`:
//!   measured cells only (the paper has no MNIST Table 3);
//! - CIFAR-10 at 8/255 and 16/255, from `<runs>/cifar10/...`: "ours (paper)"
//!   cells when a CIFAR-10 run exists, else the paper's numbers on their
//!   own, so a CPU profile's table is not a grid of "not run" cells.

use std::path::Path;

use crate::paper::{table3_at_most, TABLE3};
use crate::table2::{summary_value, Cell};

const ATTACKS: [&str; 4] = ["pgd10-targeted", "pgd10", "pgd50-targeted", "pgd50"];

/// The column labels for the budgets `eps` as written (`8/255`, `0.2`).
fn columns(eps: [&str; 2]) -> Vec<String> {
    let mut cols = vec!["clean".to_string()];
    for e in eps {
        for a in ["PGD10 T", "PGD10 U", "PGD50 T", "PGD50 U"] {
            cols.push(format!("{e} {a}"));
        }
    }
    cols
}

/// The measured cell of `method`, column `c`, under `dir` (a dataset's
/// folder of the run) at budgets `eps`.
fn measured(dir: &Path, method: &str, c: usize, eps: [f64; 2]) -> crate::Result<Cell> {
    if c == 0 {
        let p = dir.join("pgd10").join(method).join("summary.parquet");
        return summary_value(&p, "clean_accuracy", Some(eps[0]));
    }
    let e = if c <= 4 { eps[0] } else { eps[1] };
    let p = dir
        .join(ATTACKS[(c - 1) % 4])
        .join(method)
        .join("summary.parquet");
    summary_value(&p, "robust_accuracy", Some(e))
}

fn header(cols: &[String]) -> String {
    format!(
        "| method | {} |\n|{}\n",
        cols.join(" | "),
        "---|".repeat(cols.len() + 1)
    )
}

fn text_of(cell: Cell) -> (String, String) {
    match cell {
        Cell::Value(v) => (
            format!("{:.1}", 100.0 * v),
            format!("{}", (1e4 * v).round() / 1e2),
        ),
        Cell::Missing(why) => (why, String::new()),
    }
}

pub fn table3(runs: &Path, note: &str) -> crate::Result<(String, String)> {
    let mut md =
        format!("# Table 3: accuracy (%) under targeted (T) and untargeted (U) PGD\n\n{note}\n\n");
    let mut csv = String::from("dataset,method,column,ours,paper\n");

    let mnist = runs.join("mnist");
    if ATTACKS.iter().any(|a| mnist.join(a).exists()) {
        let cols = columns(["0.2", "0.3"]);
        md.push_str(
            "## MNIST (SmallCNN, measured in this profile)\n\n\
             eps 0.2 and 0.3, the MNIST analogue of the paper's CIFAR-10 budgets \
             8/255 and 16/255; the paper has no MNIST Table 3, so each cell is ours alone.\n\n",
        );
        md.push_str(&header(&cols));
        for (key, label, _) in TABLE3.iter() {
            let mut cells = Vec::new();
            for (c, col) in cols.iter().enumerate() {
                let (text, value) = text_of(measured(&mnist, key, c, [0.2, 0.3])?);
                csv.push_str(&format!("mnist,{label},{col},{value},\n"));
                cells.push(text);
            }
            md.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
        }
        md.push('\n');
    }

    let cifar = runs.join("cifar10");
    let cols = columns(["8/255", "16/255"]);
    let ran = cifar.exists();
    md.push_str(if ran {
        "## CIFAR-10\n\nEach cell: ours (paper).\n\n"
    } else {
        "## CIFAR-10: the paper's numbers\n\nThis profile does not run CIFAR-10 (the paper profile does); these are the paper's numbers alone.\n\n"
    });
    md.push_str(&header(&cols));
    for (r, (key, label, paper)) in TABLE3.iter().enumerate() {
        let mut cells = Vec::new();
        for (c, col) in cols.iter().enumerate() {
            let paper_text = if table3_at_most(r, c) {
                "<=1".to_string()
            } else {
                format!("{:.1}", paper[c])
            };
            if ran {
                let (text, value) = text_of(measured(&cifar, key, c, [8.0 / 255.0, 16.0 / 255.0])?);
                cells.push(format!("{text} ({paper_text})"));
                csv.push_str(&format!("cifar10,{label},{col},{value},{paper_text}\n"));
            } else {
                cells.push(paper_text.clone());
                csv.push_str(&format!("cifar10,{label},{col},,{paper_text}\n"));
            }
        }
        md.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
    }
    Ok((md, csv))
}
