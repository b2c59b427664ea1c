//! How far a model's PGD number is from its robust accuracy: AutoAttack's
//! members in turn, PGD on the same points, and the audit's verdict, read
//! from `<runs>/<dataset>/{pgd,autoattack,audit}/<method>/`.
//!
//! AutoAttack attacks a prefix of PGD's seeded sample (the same seed), so
//! PGD is also read on exactly AutoAttack's points (its `adv.parquet`, by
//! test index): the two numbers differ by the attack, not by the sample.
//! The member columns are cumulative, as AutoAttack reports them: robust
//! accuracy after APGD-CE, after APGD-T on what APGD-CE left, and so on;
//! the last is AutoAttack's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use mat_core::artifact::Table;
use mat_core::attacks::composite::AUTOATTACK_MEMBERS;

use crate::paper::TABLE2;

/// The attacks' folders under `<runs>/<dataset>/`.
pub const PGD: &str = "pgd";
pub const AUTOATTACK: &str = "autoattack";
pub const AUDIT: &str = "audit";
/// AutoAttack at the budgets of the accuracy-vs-eps figure other than the
/// tables' (robustness.yaml).
pub const AUTOATTACK_CURVE: &str = "autoattack-curve";
/// PGD-40 at the figure's budgets (Figure 2's curves).
pub const PGD_CURVE: &str = "pgd-curve";

/// The members' labels, in AutoAttack's order.
pub const MEMBER_LABELS: [&str; 4] = ["APGD-CE", "APGD-T", "FAB-T", "Square"];

/// One model under AutoAttack at one budget.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoAttackResult {
    /// The points attacked.
    pub points: usize,
    /// Clean accuracy on them.
    pub clean: f64,
    /// Robust accuracy after each member (cumulative); the last is
    /// AutoAttack's.
    pub after_member: [f64; 4],
    /// PGD's robust accuracy on the same points, where PGD ran at this
    /// budget on a sample that holds them.
    pub pgd_same_points: Option<f64>,
    /// The per-point worst case of PGD and AutoAttack: a point counts as
    /// robust only if neither broke it.
    pub worst_case: Option<f64>,
}

impl AutoAttackResult {
    pub fn autoattack(&self) -> f64 {
        self.after_member[3]
    }
}

fn adv(dir: &Path) -> PathBuf {
    dir.join("adv.parquet")
}

/// The rows of `adv.parquet` at budget `eps`.
fn rows_at(t: &Table, eps: f64) -> crate::Result<Vec<usize>> {
    let rows: Vec<usize> = t
        .f64s("eps")?
        .iter()
        .enumerate()
        .filter(|(_, e)| (**e - eps).abs() < 1e-9)
        .map(|(i, _)| i)
        .collect();
    if rows.is_empty() {
        return Err(crate::Error::content(
            &t.path,
            format!("no rows for eps {eps}"),
        ));
    }
    Ok(rows)
}

/// AutoAttack's result at `eps` from `<dir>/adv.parquet`, with PGD on the
/// same points from `<pgd_dir>/adv.parquet` where that exists. `None`
/// where AutoAttack did not run.
pub fn autoattack_at(
    dir: &Path,
    pgd_dir: &Path,
    eps: f64,
) -> crate::Result<Option<AutoAttackResult>> {
    let path = adv(dir);
    if !path.exists() {
        return Ok(None);
    }
    let t = Table::read(&path)?;
    let rows = rows_at(&t, eps)?;
    let by = t.strings("broken_by")?;
    let index = t.u32s("index")?;
    let n = rows.len() as f64;
    let correct = rows.iter().filter(|&&r| by[r] != "clean").count();
    let mut after_member = [0.0; 4];
    let mut left = correct;
    for (k, member) in AUTOATTACK_MEMBERS.iter().enumerate() {
        left -= rows.iter().filter(|&&r| by[r] == *member).count();
        after_member[k] = left as f64 / n;
    }
    // Anything but a member, `clean` or "" is not AutoAttack's output.
    if let Some(r) = rows.iter().find(|&&r| {
        !(by[r].is_empty() || by[r] == "clean" || AUTOATTACK_MEMBERS.contains(&by[r].as_str()))
    }) {
        return Err(crate::Error::content(
            &path,
            format!(
                "`broken_by` is `{}`: expected one of clean, {}, or empty",
                by[*r],
                AUTOATTACK_MEMBERS.join(", ")
            ),
        ));
    }
    let robust: BTreeSet<u32> = rows
        .iter()
        .filter(|&&r| by[r].is_empty())
        .map(|&r| index[r])
        .collect();
    let points: BTreeSet<u32> = rows.iter().map(|&r| index[r]).collect();
    let pgd = pgd_on(&adv(pgd_dir), eps, &points)?;
    Ok(Some(AutoAttackResult {
        points: rows.len(),
        clean: correct as f64 / n,
        after_member,
        pgd_same_points: pgd.as_ref().map(|p| p.len() as f64 / n),
        worst_case: pgd.map(|p| p.intersection(&robust).count() as f64 / n),
    }))
}

/// The test points among `points` that PGD left robust (correct clean and
/// after the attack); `None` where PGD did not run at `eps` or its sample
/// lacks one of them.
fn pgd_on(path: &Path, eps: f64, points: &BTreeSet<u32>) -> crate::Result<Option<BTreeSet<u32>>> {
    if !path.exists() {
        return Ok(None);
    }
    let t = Table::read(path)?;
    let Ok(rows) = rows_at(&t, eps) else {
        return Ok(None);
    };
    let (index, label, clean, advp) = (
        t.u32s("index")?,
        t.u32s("label")?,
        t.u32s("clean_prediction")?,
        t.u32s("adversarial_prediction")?,
    );
    let ours: Vec<usize> = rows
        .into_iter()
        .filter(|&r| points.contains(&index[r]))
        .collect();
    if ours.len() != points.len() {
        return Ok(None);
    }
    Ok(Some(
        ours.iter()
            .filter(|&&r| clean[r] == label[r] && advp[r] == label[r])
            .map(|&r| index[r])
            .collect(),
    ))
}

/// An audit's verdict and its failed checks, from `<dir>/audit.parquet`;
/// `None` where no audit ran.
pub fn verdict(dir: &Path) -> crate::Result<Option<String>> {
    let path = dir.join(mat_core::audit::AUDIT);
    if !path.exists() {
        return Ok(None);
    }
    let t = Table::read(&path)?;
    Ok(Some(t.meta("verdict")?.to_string()))
}

/// The two cells a table puts beside a PGD cell: AutoAttack (with PGD on
/// the same points) and the audit's verdict.
/// Both read "not run in this profile" where the run has no `dataset`
/// folder.
pub fn beside_pgd(runs: &Path, dataset: &str, key: &str, eps: f64) -> crate::Result<[String; 2]> {
    let d = runs.join(dataset);
    if !d.exists() {
        let n = || "not run in this profile".to_string();
        return Ok([n(), n()]);
    }
    let aa = match autoattack_at(&d.join(AUTOATTACK).join(key), &d.join(PGD).join(key), eps)? {
        Some(r) => match r.pgd_same_points {
            Some(p) => format!(
                "{:.2} [PGD {:.2}, n={}]",
                100.0 * r.autoattack(),
                100.0 * p,
                r.points
            ),
            None => format!("{:.2} [n={}]", 100.0 * r.autoattack(), r.points),
        },
        None => "not run".into(),
    };
    let v = verdict(&d.join(AUDIT).join(key))?.unwrap_or_else(|| "not run".into());
    Ok([aa, v])
}

/// The note under a table with AutoAttack and audit columns.
pub const BESIDE_PGD_NOTE: &str = "AutoAttack: robust accuracy under AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square) on the first n of PGD's seeded test points; in brackets PGD on the same n points. Audit: `ok`, or `suspect:` and the checks of Carlini et al. (2019) that failed (`mat audit`; README, \"Reading the robustness numbers\"). A PGD cell beside a `suspect` verdict is an upper bound.";

/// One row of the robustness table.
pub struct Row {
    pub label: &'static str,
    pub pgd: Option<f64>,
    pub autoattack: Option<AutoAttackResult>,
    pub verdict: Option<String>,
}

/// The robustness table of `dataset` at `eps`: every Table 2 model that
/// has an AutoAttack run or an audit.
pub fn collect(runs: &Path, dataset: &str, eps: f64) -> crate::Result<Vec<Row>> {
    let d = runs.join(dataset);
    let mut rows = Vec::new();
    for r in &TABLE2 {
        let autoattack = autoattack_at(
            &d.join(AUTOATTACK).join(r.key),
            &d.join(PGD).join(r.key),
            eps,
        )?;
        let verdict = verdict(&d.join(AUDIT).join(r.key))?;
        if autoattack.is_none() && verdict.is_none() {
            continue;
        }
        let pgd_summary = d.join(PGD).join(r.key).join("summary.parquet");
        let pgd = match crate::table2::summary_value(&pgd_summary, "robust_accuracy", Some(eps))? {
            crate::table2::Cell::Value(v) => Some(v),
            crate::table2::Cell::Missing(_) => None,
        };
        rows.push(Row {
            label: r.label,
            pgd,
            autoattack,
            verdict,
        });
    }
    if rows.is_empty() {
        return Err(crate::Error::content(
            &d,
            "no autoattack/<method>/adv.parquet or audit/<method>/audit.parquet to report",
        ));
    }
    Ok(rows)
}

fn pct(v: Option<f64>) -> String {
    v.map_or("not run".into(), |v| format!("{:.2}", 100.0 * v))
}

/// Markdown and CSV of the robustness table.
pub fn table(runs: &Path, dataset: &str, eps: f64, note: &str) -> crate::Result<(String, String)> {
    let rows = collect(runs, dataset, eps)?;
    let mut md = format!(
        "# Robust accuracy (%) under PGD and AutoAttack, with the audit's verdict\n\n{note}\n\n\
         {dataset}, L∞ eps {eps}. PGD-40: on PGD's whole sample; PGD-40 (same points): on AutoAttack's points. \
         The member columns are cumulative, as AutoAttack reports them: each attacks only the points every \
         earlier one left robust, so the last is AutoAttack's robust accuracy.\n\n\
         | model | n | clean | PGD-40 | PGD-40 (same points) | APGD-CE | +APGD-T | +FAB-T | +Square = AutoAttack | worst case | verdict |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    let mut csv = String::from("model,points,clean,pgd40,pgd40_same_points,apgd_ce,apgd_t,fab_t,square_autoattack,worst_case,verdict\n");
    let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{}", (1e4 * v).round() / 1e2));
    for r in &rows {
        let aa = r.autoattack.as_ref();
        // clean, PGD-40, PGD-40 on the same points, the four members in
        // turn, the worst case: one list for both outputs.
        let mut values = vec![
            aa.map(|a| a.clean),
            r.pgd,
            aa.and_then(|a| a.pgd_same_points),
        ];
        values.extend((0..4).map(|k| aa.map(|a| a.after_member[k])));
        values.push(aa.and_then(|a| a.worst_case));
        let points = aa.map(|a| a.points.to_string());
        let mut cells = vec![points.clone().unwrap_or_else(|| "not run".into())];
        cells.extend(values.iter().map(|v| pct(*v)));
        cells.push(r.verdict.clone().unwrap_or_else(|| "not run".into()));
        md.push_str(&format!("| {} | {} |\n", r.label, cells.join(" | ")));
        let mut fields = vec![r.label.to_string(), points.unwrap_or_default()];
        fields.extend(values.iter().map(|v| num(*v)));
        fields.push(format!("\"{}\"", r.verdict.clone().unwrap_or_default()));
        csv.push_str(&fields.join(","));
        csv.push('\n');
    }
    md.push_str(
        "\nA gap between PGD-40 (same points) and AutoAttack is accuracy that PGD credits and a stronger \
         attack takes away: the PGD number was an upper bound. Worst case: a point is robust only if \
         neither PGD-40 nor AutoAttack broke it, the number to report. The audit's checks, their values and \
         thresholds are in each model's audit/<model>/audit.parquet (`mat inspect`).\n",
    );
    Ok((md, csv))
}

/// The accuracy-vs-eps figure's data: per model, PGD-40's curve (from
/// `pgd-curve`) and AutoAttack's (from `autoattack` at the tables' budget
/// and `autoattack-curve` at the others).
pub fn curves(runs: &Path, dataset: &str) -> crate::Result<Vec<crate::figures::Curve>> {
    let d = runs.join(dataset);
    let mut out = Vec::new();
    for r in &TABLE2 {
        let pgd_summary = d.join(PGD_CURVE).join(r.key).join("summary.parquet");
        if pgd_summary.exists() {
            out.push((
                format!("{} PGD-40", r.label),
                crate::figures::accuracy_points(&pgd_summary)?,
            ));
        }
        let mut pts = Vec::new();
        for folder in [AUTOATTACK, AUTOATTACK_CURVE] {
            let p = d.join(folder).join(r.key).join("summary.parquet");
            if p.exists() {
                pts.extend(crate::figures::accuracy_points(&p)?);
            }
        }
        if !pts.is_empty() {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            pts.dedup_by(|a, b| (a.0 - b.0).abs() < 1e-9);
            out.push((format!("{} AutoAttack", r.label), pts));
        }
    }
    if out.is_empty() {
        return Err(crate::Error::content(
            &d,
            "no pgd-curve, autoattack or autoattack-curve summaries to draw",
        ));
    }
    Ok(out)
}
