//! Table 3: CIFAR-10 accuracy under targeted and untargeted PGD (10 and 50
//! steps) at eps 8/255 and 16/255, natural, AT, MMC and MAT. Read from
//! `<runs>/cifar10/{pgd10-targeted,pgd10,pgd50-targeted,pgd50}/<method>/summary.parquet`
//! (each with both budgets); without a CIFAR-10 run folder every cell is
//! "not run in this profile".

use std::path::Path;

use crate::paper::{table3_at_most, TABLE3};
use crate::table2::{summary_value, Cell};

const ATTACKS: [&str; 4] = ["pgd10-targeted", "pgd10", "pgd50-targeted", "pgd50"];

pub fn table3(runs: &Path, note: &str) -> anyhow::Result<(String, String)> {
    let cols = [
        "clean",
        "8/255 PGD10 T",
        "8/255 PGD10 U",
        "8/255 PGD50 T",
        "8/255 PGD50 U",
        "16/255 PGD10 T",
        "16/255 PGD10 U",
        "16/255 PGD50 T",
        "16/255 PGD50 U",
    ];
    let dir = runs.join("cifar10");
    let mut md = format!(
        "# Table 3: CIFAR-10 accuracy (%) under targeted (T) and untargeted (U) PGD\n\n{note}\n\nEach cell: ours (paper).\n\n| method | {} |\n|{}\n",
        cols.join(" | "),
        "---|".repeat(cols.len() + 1)
    );
    let mut csv = String::from("method,column,ours,paper\n");
    for (r, (key, label, paper)) in TABLE3.iter().enumerate() {
        let mut cells = Vec::new();
        for (c, col) in cols.iter().enumerate() {
            let cell = if !dir.exists() {
                Cell::Missing("not run in this profile".into())
            } else if c == 0 {
                let p = dir.join("pgd10").join(key).join("summary.parquet");
                summary_value(&p, "clean_accuracy", Some(8.0 / 255.0))?
            } else {
                let eps = if c <= 4 { 8.0 / 255.0 } else { 16.0 / 255.0 };
                let p = dir
                    .join(ATTACKS[(c - 1) % 4])
                    .join(key)
                    .join("summary.parquet");
                summary_value(&p, "robust_accuracy", Some(eps))?
            };
            let paper_text = if table3_at_most(r, c) {
                "<=1".to_string()
            } else {
                format!("{:.1}", paper[c])
            };
            let (text, value) = match cell {
                Cell::Value(v) => (
                    format!("{:.1}", 100.0 * v),
                    format!("{}", (1e4 * v).round() / 1e2),
                ),
                Cell::Missing(why) => (why, String::new()),
            };
            cells.push(format!("{text} ({paper_text})"));
            csv.push_str(&format!("{label},{col},{value},{paper_text}\n"));
        }
        md.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
    }
    Ok((md, csv))
}
