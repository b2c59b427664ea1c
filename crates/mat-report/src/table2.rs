//! Table 2: clean accuracy, PGD accuracy, and the mean L2 norm of the C&W
//! and DDN perturbations, per method, CIFAR-10 / MNIST.
//!
//! Reads, for each method key of [`crate::paper::TABLE2`], the
//! `summary.parquet` that `mat-attack` wrote under
//! `<runs>/<dataset>/{pgd,cw,ddn}/<key>/`, and beside each PGD cell the
//! model's AutoAttack accuracy and audit verdict ([`crate::robustness`]).
//! A dataset folder that is absent gives "not run in this profile" cells,
//! never a number.

use std::path::Path;

use mat_core::artifact::Table;
use mat_core::attacks::spec::AttackSpec;
use mat_core::attacks::{CarliniWagner, Ddn};

use crate::paper::TABLE2;

/// One measured cell, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Value(f64),
    Missing(String),
}

/// One column of a `summary.parquet` (at the row of budget `eps`, or the
/// first row); a missing file is a `Missing` cell naming it.
pub(crate) fn summary_value(path: &Path, column: &str, eps: Option<f64>) -> crate::Result<Cell> {
    if !path.exists() {
        return Ok(Cell::Missing(format!("no {}", path.display())));
    }
    let t = Table::read(path)?;
    let values = t.f64s(column)?;
    let row = match eps {
        None => 0,
        Some(e) => t
            .f64s("eps")?
            .iter()
            .position(|x| (x - e).abs() < 1e-9)
            .ok_or_else(|| crate::Error::content(path, format!("no row for eps {e}")))?,
    };
    Ok(Cell::Value(values[row]))
}

/// One line on an attack's settings, from its summary's config.
fn describe(t: &Table) -> crate::Result<String> {
    let spec: AttackSpec = serde_yaml::from_str(t.meta("config")?)
        .map_err(|e| crate::Error::content(&t.path, format!("metadata `config`: {e}")))?;
    let n = spec.limit.map_or("the whole test split".to_string(), |l| {
        format!("{l} seeded test samples")
    });
    let section =
        |e: mat_core::Error| crate::Error::content(&t.path, format!("metadata `config`: {e}"));
    Ok(match spec.attack.as_str() {
        "cw" => {
            let cw: CarliniWagner = spec.section("cw").map_err(section)?;
            format!(
                "C&W-L2, {} binary-search steps x {} Adam steps of {}, initial constant {}, on {n}",
                cw.binary_search_steps, cw.steps, cw.step_size, cw.initial_const
            )
        }
        "ddn" => {
            let ddn: Ddn = spec.section("ddn").map_err(section)?;
            format!(
                "DDN, {} steps, initial norm {}, gamma {}, on {n}",
                ddn.steps, ddn.init_norm, ddn.gamma
            )
        }
        k => format!(
            "{}, eps {:?}, {} steps of {}, on {n}",
            k,
            spec.eps,
            spec.steps,
            spec.step_size
                .map_or("eps/30".to_string(), |s| s.to_string())
        ),
    })
}

/// A method's cells of one dataset: clean %, PGD %, C&W L2, DDN L2, and
/// the AutoAttack and audit cells beside PGD.
pub type Cells = ([Cell; 4], [String; 2]);

pub struct Table2 {
    /// Per method: MNIST then CIFAR-10 cells.
    pub rows: Vec<(&'static str, Cells, Cells)>,
    /// The attack settings read from the summaries' metadata.
    pub settings: Vec<String>,
}

/// Collects Table 2 from `runs` (`runs/mnist/...`, `runs/cifar10/...`).
pub fn collect(runs: &Path, pgd_eps: [f64; 2]) -> crate::Result<Table2> {
    let mut rows = Vec::new();
    let mut settings = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for r in &TABLE2 {
        let mut per = Vec::new();
        for (ds, eps) in [("mnist", pgd_eps[0]), ("cifar10", pgd_eps[1])] {
            let dir = runs.join(ds);
            if !dir.exists() {
                let m = || Cell::Missing("not run in this profile".into());
                per.push((
                    [m(), m(), m(), m()],
                    crate::robustness::beside_pgd(runs, ds, r.key, eps)?,
                ));
                continue;
            }
            let pgd = dir.join("pgd").join(r.key).join("summary.parquet");
            let cw = dir.join("cw").join(r.key).join("summary.parquet");
            let ddn = dir.join("ddn").join(r.key).join("summary.parquet");
            let pct = |c: Cell| match c {
                Cell::Value(v) => Cell::Value(100.0 * v),
                m => m,
            };
            per.push((
                [
                    pct(summary_value(&pgd, "clean_accuracy", Some(eps))?),
                    pct(summary_value(&pgd, "robust_accuracy", Some(eps))?),
                    summary_value(&cw, "mean_l2", None)?,
                    summary_value(&ddn, "mean_l2", None)?,
                ],
                crate::robustness::beside_pgd(runs, ds, r.key, eps)?,
            ));
            // The settings of each attack, from the first method run with it.
            for (name, p) in [("pgd", &pgd), ("cw", &cw), ("ddn", &ddn)] {
                let tag = format!("{ds}/{name}");
                if p.exists() && !seen.contains(&tag) {
                    settings.push(format!("{ds}: {}", describe(&Table::read(p)?)?));
                    seen.push(tag);
                }
            }
        }
        let cifar = per.pop().expect("two datasets");
        let mnist = per.pop().expect("two datasets");
        rows.push((r.key, mnist, cifar));
    }
    Ok(Table2 { rows, settings })
}

fn fmt(c: &Cell, paper: f64, digits: usize) -> String {
    match c {
        // A mean over no successful perturbation.
        Cell::Value(v) if v.is_nan() => format!("none found ({paper:.digits$})"),
        Cell::Value(v) => format!("{v:.digits$} ({paper:.digits$})"),
        Cell::Missing(why) => format!("{why} ({paper:.digits$})"),
    }
}

impl Table2 {
    /// Markdown in the paper's layout: CIFAR-10 / MNIST per measure.
    pub fn markdown(&self, title_note: &str) -> String {
        let mut s = String::new();
        s.push_str("# Table 2: accuracy (%) and mean L2 norm of the perturbations found\n\n");
        s.push_str(title_note);
        s.push_str("\n\nEach cell: ours (paper).\n\n");
        s.push_str("| method | CIFAR-10 clean | CIFAR-10 PGD | CIFAR-10 AutoAttack | CIFAR-10 audit | CIFAR-10 C&W L2 | CIFAR-10 DDN L2 | MNIST clean | MNIST PGD | MNIST AutoAttack | MNIST audit | MNIST C&W L2 | MNIST DDN L2 |\n");
        s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for ((key, mnist, cifar), p) in self.rows.iter().zip(&TABLE2) {
            debug_assert_eq!(*key, p.key);
            let digits = [2, 2, 3, 3];
            // clean, PGD, then AutoAttack and the audit beside PGD, then
            // the two norms.
            let cells = |(c, beside): &Cells, paper: [f64; 4]| -> Vec<String> {
                let f: Vec<String> = (0..4).map(|i| fmt(&c[i], paper[i], digits[i])).collect();
                vec![
                    f[0].clone(),
                    f[1].clone(),
                    beside[0].clone(),
                    beside[1].clone(),
                    f[2].clone(),
                    f[3].clone(),
                ]
            };
            let c = cells(cifar, p.cifar10);
            let m = cells(mnist, p.mnist);
            s.push_str(&format!(
                "| {} | {} | {} |\n",
                p.label,
                c.join(" | "),
                m.join(" | ")
            ));
        }
        s.push_str(&format!("\n{}\n", crate::robustness::BESIDE_PGD_NOTE));
        s.push_str("\nSettings:\n\n");
        for line in &self.settings {
            s.push_str(&format!("- {line}\n"));
        }
        s
    }

    /// CSV: one row per method and measure.
    pub fn csv(&self) -> String {
        let names = [
            "clean_accuracy",
            "pgd_accuracy",
            "cw_mean_l2",
            "ddn_mean_l2",
        ];
        let mut s = String::from("method,dataset,measure,ours,paper\n");
        for ((_, mnist, cifar), p) in self.rows.iter().zip(&TABLE2) {
            for (ds, (cells, beside), paper) in
                [("cifar10", cifar, p.cifar10), ("mnist", mnist, p.mnist)]
            {
                for i in 0..4 {
                    // Empty where nothing was measured (or nothing was found).
                    let ours = match &cells[i] {
                        Cell::Value(v) if v.is_finite() => format!("{}", (v * 1e6).round() / 1e6),
                        _ => String::new(),
                    };
                    s.push_str(&format!(
                        "{},{ds},{},{ours},{}\n",
                        p.label, names[i], paper[i]
                    ));
                }
                // Text cells; the paper has neither.
                for (name, text) in ["autoattack", "audit"].iter().zip(beside) {
                    s.push_str(&format!("{},{ds},{name},\"{text}\",\n", p.label));
                }
            }
        }
        s
    }
}
