//! Tables 1 and 5 from `mat-cluster`'s `cluster_summary.parquet`, read
//! from `<runs>/<dataset>/cluster-<attack>/<model>/`. A dataset folder that
//! is absent gives "not run in this profile" cells.

use std::path::Path;

use mat_core::artifact::Table;

use crate::paper::{TABLE1, TABLE5};

/// (clean row, adversarial row) of a summary: (match rate, cos mean, cos std).
type Rows = ((f64, f64, f64), (f64, f64, f64));

fn summary(path: &Path) -> crate::Result<Option<Rows>> {
    if !path.exists() {
        return Ok(None);
    }
    let t = Table::read(path)?;
    let kind = t.strings("kind")?;
    let m = t.f64s("match_rate")?;
    let cm = t.f64s("cos_mean")?;
    let cs = t.f64s("cos_std")?;
    let row = |k: &str| -> crate::Result<(f64, f64, f64)> {
        let i = kind
            .iter()
            .position(|x| x == k)
            .ok_or_else(|| crate::Error::content(path, format!("no `{k}` row")))?;
        Ok((m[i], cm[i], cs[i]))
    };
    Ok(Some((row("clean")?, row("adversarial")?)))
}

fn cell(v: Option<f64>, paper: f64, missing: &str) -> String {
    match v {
        Some(x) => format!("{:.2} ({paper:.2})", 100.0 * x),
        None => format!("{missing} ({paper:.2})"),
    }
}

fn write_md_csv(
    title: &str,
    note: &str,
    header: &[&str],
    rows: &[(String, Vec<String>)],
    csv: String,
) -> (String, String) {
    let mut s = format!(
        "# {title}\n\n{note}\n\nEach cell: ours (paper).\n\n| {} |\n",
        header.join(" | ")
    );
    s.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    for (label, cells) in rows {
        s.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
    }
    (s, csv)
}

/// Table 1: match rate (%) for natural (N) and TRADES (T) models.
pub fn table1(runs: &Path, note: &str) -> crate::Result<(String, String)> {
    let mut measured = [[None::<f64>; 4]; 3];
    for (col, (ds, model)) in [
        ("mnist", "natural"),
        ("cifar10", "natural"),
        ("mnist", "trades"),
        ("cifar10", "trades"),
    ]
    .iter()
    .enumerate()
    {
        let base = runs.join(ds);
        if let Some((clean, pgd)) = summary(
            &base
                .join("cluster-pgd")
                .join(model)
                .join("cluster_summary.parquet"),
        )? {
            measured[0][col] = Some(clean.0);
            measured[1][col] = Some(pgd.0);
        }
        if let Some((_, ddn)) = summary(
            &base
                .join("cluster-ddn")
                .join(model)
                .join("cluster_summary.parquet"),
        )? {
            measured[2][col] = Some(ddn.0);
        }
    }
    let cols = ["MNIST-N", "CIFAR10-N", "MNIST-T", "CIFAR10-T"];
    let mut rows = Vec::new();
    let mut csv = String::from("input,model,ours,paper\n");
    for (r, (label, paper)) in TABLE1.iter().enumerate() {
        let cells: Vec<String> = (0..4)
            .map(|c| {
                let missing = if runs
                    .join(if c % 2 == 0 { "mnist" } else { "cifar10" })
                    .exists()
                {
                    "no run"
                } else {
                    "not run in this profile"
                };
                cell(measured[r][c], paper[c], missing)
            })
            .collect();
        for c in 0..4 {
            csv.push_str(&format!(
                "{label},{},{},{}\n",
                cols[c],
                measured[r][c].map_or(String::new(), |v| format!("{}", 100.0 * v)),
                paper[c]
            ));
        }
        rows.push((label.to_string(), cells));
    }
    let mut header = vec!["input"];
    header.extend(cols);
    Ok(write_md_csv(
        "Table 1: match rate (%) of Ward clusters of the features",
        note,
        &header,
        &rows,
        csv,
    ))
}

/// Table 5: cosine similarity to the predicted center, mean ± std.
pub fn table5(runs: &Path, note: &str) -> crate::Result<(String, String)> {
    let cols = ["CIFAR-10 clean", "CIFAR-10 PGD", "MNIST clean", "MNIST PGD"];
    let mut rows = Vec::new();
    let mut csv = String::from("method,input,ours_mean,ours_std,paper_mean,paper_std\n");
    for row in TABLE5.iter() {
        let (key, label, paper) = (row.key, row.label, row.cells);
        let mut cells = Vec::new();
        for (c, ds) in ["cifar10", "cifar10", "mnist", "mnist"].iter().enumerate() {
            let s = summary(
                &runs
                    .join(ds)
                    .join("cluster-pgd")
                    .join(key)
                    .join("cluster_summary.parquet"),
            )?;
            let ours = s.map(|(clean, adv)| {
                if c % 2 == 0 {
                    (clean.1, clean.2)
                } else {
                    (adv.1, adv.2)
                }
            });
            let (pm, ps) = paper[c];
            cells.push(match ours {
                Some((m, sd)) => format!("{m:.3}±{sd:.3} ({pm:.3}±{ps:.3})"),
                None if runs.join(ds).exists() => format!("no run ({pm:.3}±{ps:.3})"),
                None => format!("not run in this profile ({pm:.3}±{ps:.3})"),
            });
            csv.push_str(&format!(
                "{label},{},{},{},{pm},{ps}\n",
                cols[c],
                ours.map_or(String::new(), |o| o.0.to_string()),
                ours.map_or(String::new(), |o| o.1.to_string()),
            ));
        }
        rows.push((label.to_string(), cells));
    }
    let mut header = vec!["method"];
    header.extend(cols);
    Ok(write_md_csv(
        "Table 5: cosine similarity of the features to the predicted class's center",
        &format!("{note} Mean per predicted class, then mean ± population std over the classes."),
        &header,
        &rows,
        csv,
    ))
}
