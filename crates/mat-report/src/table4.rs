//! Table 4: accuracy under PGD and under adaptive PGD (Section 4.4), read
//! from `<runs>/<dataset>/{pgd,adaptive}/<method>/summary.parquet`.

use std::path::Path;

use crate::paper::TABLE4;
use crate::table2::{summary_value, Cell};

/// Markdown and CSV of Table 4 at budgets `eps` (MNIST, CIFAR-10); beside
/// each PGD cell, the model's AutoAttack accuracy and audit verdict.
pub fn table4(runs: &Path, eps: [f64; 2], note: &str) -> crate::Result<(String, String)> {
    // (dataset, budget, its paper columns PGD and adaptive)
    let datasets = [
        ("CIFAR-10", "cifar10", eps[1], 0),
        ("MNIST", "mnist", eps[0], 2),
    ];
    let mut head = Vec::new();
    for (name, ..) in &datasets {
        for col in ["PGD", "AutoAttack", "audit", "adaptive"] {
            head.push(format!("{name} {col}"));
        }
    }
    let mut md = format!(
        "# Table 4: accuracy (%) under PGD and adaptive PGD\n\n{note}\n\nEach cell: ours (paper).\n\n| method | {} |\n|{}\n",
        head.join(" | "),
        "---|".repeat(head.len() + 1)
    );
    let mut csv = String::from("method,column,ours,paper\n");
    for (key, label, paper) in TABLE4.iter() {
        let mut cells = Vec::new();
        for (name, ds, e, first) in datasets {
            let ran = runs.join(ds).exists();
            for (k, attack) in ["pgd", "adaptive"].into_iter().enumerate() {
                let col = format!("{name} {}", if k == 0 { "PGD" } else { "adaptive" });
                let cell = if ran {
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
                cells.push(format!("{text} ({:.2})", paper[first + k]));
                csv.push_str(&format!("{label},{col},{value},{}\n", paper[first + k]));
                if k == 0 {
                    // AutoAttack and the audit beside PGD (no paper value).
                    let beside = crate::robustness::beside_pgd(runs, ds, key, e)?;
                    for (what, text) in ["AutoAttack", "audit"].iter().zip(beside) {
                        csv.push_str(&format!("{label},{name} {what},\"{text}\",\n"));
                        cells.push(text);
                    }
                }
            }
        }
        md.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
    }
    md.push_str(&format!("\n{}\n", crate::robustness::BESIDE_PGD_NOTE));
    Ok((md, csv))
}
