//! Table 4: accuracy under PGD and under adaptive PGD (Section 4.4), read
//! from `<runs>/<dataset>/{pgd,adaptive}/<method>/summary.parquet`.

use std::path::Path;

use crate::paper::TABLE4;
use crate::table2::{summary_value, Cell};

/// Markdown and CSV of Table 4 at budgets `eps` (MNIST, CIFAR-10).
pub fn table4(runs: &Path, eps: [f64; 2], note: &str) -> crate::Result<(String, String)> {
    let cols = [
        "CIFAR-10 PGD",
        "CIFAR-10 adaptive",
        "MNIST PGD",
        "MNIST adaptive",
    ];
    let mut md = format!(
        "# Table 4: accuracy (%) under PGD and adaptive PGD\n\n{note}\n\nEach cell: ours (paper).\n\n| method | {} |\n|---|---|---|---|---|\n",
        cols.join(" | ")
    );
    let mut csv = String::from("method,column,ours,paper\n");
    for (key, label, paper) in TABLE4.iter() {
        let mut cells = Vec::new();
        for (c, col) in cols.iter().enumerate() {
            let (ds, e) = if c < 2 {
                ("cifar10", eps[1])
            } else {
                ("mnist", eps[0])
            };
            let attack = if c % 2 == 0 { "pgd" } else { "adaptive" };
            let cell = if runs.join(ds).exists() {
                let p = runs.join(ds).join(attack).join(key).join("summary.parquet");
                summary_value(&p, "robust_accuracy", Some(e))?
            } else {
                Cell::Missing("not run in this profile".into())
            };
            let (text, value) = match cell {
                Cell::Value(v) => (
                    format!("{:.2}", 100.0 * v),
                    format!("{}", (1e4 * v).round() / 1e2),
                ),
                Cell::Missing(why) => (why, String::new()),
            };
            cells.push(format!("{text} ({:.2})", paper[c]));
            csv.push_str(&format!("{label},{col},{value},{}\n", paper[c]));
        }
        md.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
    }
    Ok((md, csv))
}
