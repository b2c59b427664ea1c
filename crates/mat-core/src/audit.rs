//! The checks of Carlini et al. (2019), "On Evaluating Adversarial
//! Robustness", that a machine can run, on one model at one budget: each
//! gives a measured value, the value it is compared with, a threshold and
//! pass/fail, and the verdict names every check that failed. A robust
//! accuracy from PGD alone is an upper bound; these checks say when it is a
//! loose one (gradient masking).
//!
//! - `zero_gradient_ce`, `zero_gradient_margin`: the share of points whose
//!   input gradient of the cross-entropy (of the margin `z_y - max z_j`) is
//!   exactly zero or not finite: PGD cannot move them.
//! - `logit_margin`: the median logit margin of the correctly classified
//!   points: a saturated softmax (margins past ~88 underflow exp in f32).
//! - `more_iterations`: PGD-200 with 5 restarts is not lower than PGD-40.
//! - `large_eps`: accuracy under PGD at eps 1 (the whole box) falls to 0.
//! - `black_box`: Square (score-based) is not stronger than white-box PGD
//!   on the cross-entropy (the best of the two PGD runs above).
//! - `transfer`: PGD examples crafted on a surrogate (the pipeline's
//!   natural model) are not stronger than white-box PGD.
//! - `dlr_vs_ce`: APGD on the scale-invariant DLR loss is not stronger than
//!   APGD on the cross-entropy.
//! - `adaptive`: for MAT and TRADES models, PGD on the model's own
//!   training objective (Section 4.4) is not stronger than PGD on CE.
//!
//! "Stronger by more than the threshold" means a lower robust accuracy by
//! more than `threshold` (a fraction of the points).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::attacks::apgd::{Apgd, ApgdLoss};
use crate::attacks::square::Square;
use crate::attacks::{
    input_gradient, norms, run_attack, AdaptiveObjective, AdaptivePgd, Attack, Logits, Norm, Pgd,
    Problem,
};
use crate::data::Split;
use crate::losses::logit_margin;
use crate::rng::SeededRng;
use crate::{Error, Result};

/// The thresholds of the checks (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Largest share of points with a zero or non-finite gradient.
    pub zero_gradient: f64,
    /// Largest median logit margin of the correct points.
    pub logit_margin: f64,
    /// Largest drop of robust accuracy from PGD-40 to PGD-200 x 5.
    pub more_iterations: f64,
    /// Largest accuracy under PGD at eps 1.
    pub large_eps: f64,
    /// Largest drop from white-box PGD to Square.
    pub black_box: f64,
    /// Largest drop from white-box PGD to transferred PGD.
    pub transfer: f64,
    /// Largest drop from APGD-CE to APGD-DLR.
    pub dlr_vs_ce: f64,
    /// Largest drop from PGD to the adaptive attack.
    pub adaptive: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            zero_gradient: 0.05,
            logit_margin: 50.0,
            more_iterations: 0.02,
            large_eps: 0.1,
            black_box: 0.02,
            transfer: 0.02,
            dlr_vs_ce: 0.05,
            adaptive: 0.02,
        }
    }
}

/// What an audit runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSpec {
    /// The L∞ budget of the attacks.
    pub eps: f64,
    /// Steps of the short PGD (the one a paper reports).
    pub steps: usize,
    /// Steps and restarts of the long PGD.
    pub long_steps: usize,
    pub long_restarts: usize,
    /// Steps of APGD-CE and APGD-DLR.
    pub apgd_steps: usize,
    /// Queries of Square.
    pub square_queries: usize,
    pub seed: u64,
    pub batch_size: usize,
    pub thresholds: Thresholds,
}

impl Default for AuditSpec {
    fn default() -> Self {
        Self {
            eps: 0.3,
            steps: 40,
            long_steps: 200,
            long_restarts: 5,
            apgd_steps: 100,
            square_queries: 5000,
            seed: 0,
            batch_size: 250,
            thresholds: Thresholds::default(),
        }
    }
}

impl AuditSpec {
    pub fn validate(&self) -> Result<()> {
        if !(self.eps.is_finite() && self.eps > 0.0 && self.eps <= 1.0) {
            return Err(Error::field("eps", "an L∞ budget in (0, 1]", self.eps));
        }
        for (field, v) in [
            ("steps", self.steps),
            ("long_steps", self.long_steps),
            ("long_restarts", self.long_restarts),
            ("apgd_steps", self.apgd_steps),
            ("square_queries", self.square_queries),
            ("batch_size", self.batch_size),
        ] {
            if v == 0 {
                return Err(Error::field(field, "at least 1", 0));
            }
        }
        Ok(())
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: &'static str,
    /// What was measured (a share, a margin, a robust accuracy).
    pub value: f64,
    /// What it was compared with (NaN where the threshold alone decides).
    pub reference: f64,
    pub threshold: f64,
    pub pass: bool,
    /// One line on what was measured, or why the check did not run.
    pub detail: String,
}

/// `ok`, or `suspect: ` and the failed checks' names.
pub fn verdict(checks: &[Check]) -> String {
    let failed: Vec<&str> = checks.iter().filter(|c| !c.pass).map(|c| c.name).collect();
    if failed.is_empty() {
        "ok".into()
    } else {
        format!("suspect: {}", failed.join(", "))
    }
}

/// The models an audit attacks.
pub struct Models<'a> {
    pub model: &'a dyn Logits,
    /// The model's training objective (MAT, TRADES), for the adaptive check.
    pub objective: Option<&'a AdaptiveObjective>,
    /// A surrogate to transfer examples from (a natural model).
    pub surrogate: Option<&'a dyn Logits>,
}

/// Robust accuracy (correct clean and adversarial) of `attack` on `split`.
fn robust(
    attack: &dyn Attack,
    model: &dyn Logits,
    split: &Split,
    eps: f64,
    spec: &AuditSpec,
    purpose: &str,
) -> Result<f64> {
    let mut rng = SeededRng::for_purpose(spec.seed, purpose);
    let mut kept = 0usize;
    for start in (0..split.len()).step_by(spec.batch_size) {
        let n = spec.batch_size.min(split.len() - start);
        let (x, y) = (
            split.images.narrow(0, start, n)?,
            split.labels.narrow(0, start, n)?,
        );
        let o = run_attack(attack, model, &x, &y, eps, &mut rng)?;
        let labels = y.to_vec1::<u32>()?;
        kept += (0..n)
            .filter(|&i| o.clean_pred[i] == labels[i] && o.adv_pred[i] == labels[i])
            .count();
    }
    Ok(kept as f64 / split.len().max(1) as f64)
}

/// Per point: its input gradient of `loss` is all zeros or not finite.
fn dead_gradients(
    model: &dyn Logits,
    split: &Split,
    spec: &AuditSpec,
    margin: bool,
) -> Result<Vec<bool>> {
    let mut dead = Vec::with_capacity(split.len());
    for start in (0..split.len()).step_by(spec.batch_size) {
        let n = spec.batch_size.min(split.len() - start);
        let (x, y) = (
            split.images.narrow(0, start, n)?,
            split.labels.narrow(0, start, n)?,
        );
        let g = if margin {
            let (g, ()) = crate::attacks::gradient_at(&x, |v| {
                Ok((logit_margin(&model.logits(v)?, &y)?.sum_all()?, ()))
            })?;
            g
        } else {
            input_gradient(model, &x, &y)?
        };
        let size = norms(&g, Norm::Linf)?.to_vec1::<f32>()?;
        dead.extend(size.iter().map(|s| !s.is_finite() || *s == 0.0));
    }
    Ok(dead)
}

fn share(flags: &[bool]) -> f64 {
    flags.iter().filter(|f| **f).count() as f64 / flags.len().max(1) as f64
}

/// Runs every check on `split` (a seeded sample of the test set).
pub fn run(models: &Models, split: &Split, spec: &AuditSpec) -> Result<Vec<Check>> {
    run_with_progress(models, split, spec, &mut |_| {})
}

/// The checks so far; `progress` hears of each as it is made (an audit
/// takes minutes per check on a CPU).
struct Made<'a> {
    checks: Vec<Check>,
    progress: &'a mut dyn FnMut(&Check),
}

impl Made<'_> {
    fn push(&mut self, c: Check) {
        (self.progress)(&c);
        self.checks.push(c);
    }
}

/// [`run`], calling `progress` with each check when it is made.
pub fn run_with_progress(
    models: &Models,
    split: &Split,
    spec: &AuditSpec,
    progress: &mut dyn FnMut(&Check),
) -> Result<Vec<Check>> {
    spec.validate()?;
    let t = &spec.thresholds;
    let model = models.model;
    let eps = spec.eps;
    let mut checks = Made {
        checks: Vec::new(),
        progress,
    };
    let at_most = |name, value: f64, threshold: f64, detail: String| Check {
        name,
        value,
        reference: f64::NAN,
        threshold,
        pass: value <= threshold,
        detail,
    };
    // Not lower than the reference by more than the threshold.
    let not_below = |name, value: f64, reference: f64, threshold: f64, detail: String| Check {
        name,
        value,
        reference,
        threshold,
        pass: value >= reference - threshold,
        detail,
    };

    for (name, margin) in [("zero_gradient_ce", false), ("zero_gradient_margin", true)] {
        let s = share(&dead_gradients(model, split, spec, margin)?);
        checks.push(at_most(
            name,
            s,
            t.zero_gradient,
            format!(
                "share of {} points whose input gradient is zero or not finite",
                split.len()
            ),
        ));
    }
    let mut margins = Vec::new();
    for start in (0..split.len()).step_by(spec.batch_size) {
        let n = spec.batch_size.min(split.len() - start);
        let (x, y) = (
            split.images.narrow(0, start, n)?,
            split.labels.narrow(0, start, n)?,
        );
        let m = logit_margin(&model.logits(&x)?, &y)?.to_vec1::<f32>()?;
        margins.extend(m.into_iter().filter(|v| *v > 0.0).map(f64::from));
    }
    margins.sort_by(f64::total_cmp);
    let median = margins.get(margins.len() / 2).copied().unwrap_or(f64::NAN);
    checks.push(Check {
        // No correct point: nothing saturates.
        pass: median.is_nan() || median <= t.logit_margin,
        ..at_most(
            "logit_margin",
            median,
            t.logit_margin,
            format!(
                "median logit margin of the {} correct points",
                margins.len()
            ),
        )
    });

    let pgd = Pgd::linf(spec.steps, eps / 4.0);
    let pgd_acc = robust(&pgd, model, split, eps, spec, "audit/pgd")?;
    let long = Pgd {
        restarts: spec.long_restarts,
        ..Pgd::linf(spec.long_steps, eps / 10.0)
    };
    let long_acc = robust(&long, model, split, eps, spec, "audit/pgd-long")?;
    checks.push(not_below(
        "more_iterations",
        long_acc,
        pgd_acc,
        t.more_iterations,
        format!(
            "robust accuracy under PGD-{} x {} restarts vs PGD-{} ({:.4})",
            spec.long_steps, spec.long_restarts, spec.steps, pgd_acc
        ),
    ));
    let big = robust(
        &Pgd::linf(spec.steps, 0.1),
        model,
        split,
        1.0,
        spec,
        "audit/eps1",
    )?;
    checks.push(at_most(
        "large_eps",
        big,
        t.large_eps,
        format!("accuracy under PGD-{} at eps 1 (the whole box)", spec.steps),
    ));
    let ce = robust(
        &Apgd::new(Norm::Linf, ApgdLoss::Ce, spec.apgd_steps),
        model,
        split,
        eps,
        spec,
        "audit/apgd-ce",
    )?;
    let dlr = robust(
        &Apgd::new(Norm::Linf, ApgdLoss::Dlr, spec.apgd_steps),
        model,
        split,
        eps,
        spec,
        "audit/apgd-dlr",
    )?;
    checks.push(not_below(
        "dlr_vs_ce",
        dlr,
        ce,
        t.dlr_vs_ce,
        format!("robust accuracy under APGD-DLR vs APGD-CE ({ce:.4})"),
    ));
    // The gradient attacks on the cross-entropy: what a PGD number reports.
    let white_box = pgd_acc.min(long_acc);
    let square = Square {
        norm: Norm::Linf,
        queries: spec.square_queries,
        p_init: 0.8,
        restarts: 1,
    };
    let sq = robust(&square, model, split, eps, spec, "audit/square")?;
    checks.push(not_below(
        "black_box",
        sq,
        white_box,
        t.black_box,
        format!(
            "robust accuracy under Square ({} queries) vs white-box PGD on CE ({white_box:.4})",
            spec.square_queries
        ),
    ));
    checks.push(match models.surrogate {
        None => Check {
            name: "transfer",
            value: f64::NAN,
            reference: white_box,
            threshold: t.transfer,
            pass: true,
            detail: "not run: no surrogate model given".into(),
        },
        Some(s) => {
            let attack = Transfer {
                surrogate: s,
                pgd: Pgd::linf(spec.long_steps, eps / 10.0),
            };
            let acc = robust(&attack, model, split, eps, spec, "audit/transfer")?;
            not_below(
                "transfer",
                acc,
                white_box,
                t.transfer,
                format!(
                    "accuracy on PGD-{} examples crafted on the surrogate vs white-box PGD on CE ({white_box:.4})",
                    spec.long_steps
                ),
            )
        }
    });
    checks.push(match models.objective {
        None => Check {
            name: "adaptive",
            value: f64::NAN,
            reference: pgd_acc,
            threshold: t.adaptive,
            pass: true,
            detail: "not run: the model has no MAT or TRADES objective".into(),
        },
        Some(o) => {
            let adaptive = AdaptivePgd {
                steps: spec.steps,
                step_size: eps / 4.0,
                objective: o.clone(),
            };
            let acc = robust(&adaptive, model, split, eps, spec, "audit/adaptive")?;
            not_below(
                "adaptive",
                acc,
                pgd_acc,
                t.adaptive,
                format!(
                    "robust accuracy under PGD on the training objective vs PGD-{} on CE",
                    spec.steps
                ),
            )
        }
    });
    Ok(checks.checks)
}

/// PGD on a surrogate model: its examples, judged on the audited model.
struct Transfer<'a> {
    surrogate: &'a dyn Logits,
    pgd: Pgd,
}

impl Attack for Transfer<'_> {
    fn name(&self) -> &'static str {
        "transfer-pgd"
    }

    fn norm(&self) -> Norm {
        Norm::Linf
    }

    fn propose(&self, p: &Problem, rng: &mut SeededRng) -> Result<Tensor> {
        self.pgd.propose(
            &Problem {
                model: self.surrogate,
                ..*p
            },
            rng,
        )
    }
}

pub const AUDIT: &str = "audit.parquet";

/// Writes `audit.parquet` into `out`: one row per check (check, value,
/// reference, threshold, pass, detail); the verdict and `metadata` in its
/// metadata.
pub fn write(
    out: &std::path::Path,
    checks: &[Check],
    mut metadata: crate::artifact::Metadata,
) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    metadata.insert("kind".into(), "audit".into());
    metadata.insert("verdict".into(), verdict(checks));
    let cols = crate::artifact::Columns::new()
        .string("check", checks.iter().map(|c| c.name.to_string()).collect())
        .f64("value", checks.iter().map(|c| c.value).collect())
        .f64("reference", checks.iter().map(|c| c.reference).collect())
        .f64("threshold", checks.iter().map(|c| c.threshold).collect())
        .bool("pass", checks.iter().map(|c| c.pass).collect())
        .string("detail", checks.iter().map(|c| c.detail.clone()).collect());
    crate::artifact::write_table(&out.join(AUDIT), cols, metadata)
}
