//! Adaptive PGD (Section 4.4): L∞ PGD that ascends the defence's own
//! training objective instead of the cross-entropy, so a defence whose
//! objective differs from CE cannot hide behind it.
//! - MAT: `FTC(phi(x'), mu_y) + alpha·SO(phi(x'), mu_y) + beta·CD(phi(x), phi(x'))`
//!   (Eq. 9 with BIBO's inner max simplified to the attacked point itself);
//! - TRADES: `CE(f(x'), y) + beta·KL(f(x) || f(x'))`.
//!
//! alpha, beta and the centers come from the model file, so the attack
//! always matches the weights the model was trained with.
//!
//! Distance: L∞. Arguments: steps, step size; a uniform random start.

use candle_core::Tensor;

use super::pgd::random_start;
use super::spec::{no_check, Budget, Registration};
use super::{project, Ascent, Attack, Logits, Norm, Problem};
use crate::artifact::TensorFile;
use crate::losses::{mat_objective, trades_objective};
use crate::rng::SeededRng;
use crate::{Error, Result};

pub const ADAPTIVE: Registration = Registration {
    name: "adaptive",
    summary: "PGD on the model's own training objective, MAT's Eq. 9 or TRADES' (Section 4.4)",
    budget: Budget::Bounded,
    norms: &[Norm::Linf],
    iterative: true,
    needs_objective: true,
    section: None,
    check: no_check,
    build: |spec, eps, ctx| {
        Ok(Box::new(AdaptivePgd {
            steps: spec.steps,
            step_size: spec.pgd_step(eps),
            objective: ctx
                .objective
                .ok_or_else(|| {
                    Error::field(
                        "model",
                        "a model file with its training objective (MAT or TRADES)",
                        "none given",
                    )
                })?
                .clone(),
        }))
    },
    examples: &["eps: [0.1]\nsteps: 5\nstep_size: 0.05"],
};

/// The training objective an adaptive attack ascends.
#[derive(Debug, Clone)]
pub enum AdaptiveObjective {
    Mat {
        alpha: f64,
        beta: f64,
        centers: Tensor,
    },
    Trades {
        beta: f64,
    },
}

impl AdaptiveObjective {
    /// Reads the objective from a model file written by `mat-train`: its
    /// `method`, `alpha` and `beta` (MAT), `trades_beta` (TRADES), and the
    /// centers of its head.
    pub fn from_model_file(file: &TensorFile) -> Result<Self> {
        let number = |key: &str| -> Result<f64> {
            let v = file.meta(key)?;
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| Error::Metadata {
                    path: file.path.clone(),
                    key: key.into(),
                    expected: "a number >= 0".into(),
                    found: v.into(),
                })
        };
        match file.meta("method")? {
            "mat" => Ok(Self::Mat {
                alpha: number("alpha")?,
                beta: number("beta")?,
                centers: file.tensors.get("head.weight").cloned().ok_or_else(|| {
                    Error::Metadata {
                        path: file.path.clone(),
                        key: "head.weight".into(),
                        expected: "the MAT centers tensor".into(),
                        found: "no such tensor".into(),
                    }
                })?,
            }),
            "trades" => Ok(Self::Trades {
                beta: number("trades_beta")?,
            }),
            other => Err(Error::Metadata {
                path: file.path.clone(),
                key: "method".into(),
                expected: "mat or trades (the adaptive attack ascends their training objective)"
                    .into(),
                found: other.into(),
            }),
        }
    }

    /// The objective at `x_adv` for clean `x`, batch mean: the loss the
    /// model was trained to minimise, from the one definition training uses.
    fn value(
        &self,
        model: &dyn Logits,
        x_adv: &Tensor,
        clean: &Tensor,
        y: &Tensor,
    ) -> candle_core::Result<Tensor> {
        match self {
            Self::Mat {
                alpha,
                beta,
                centers,
            } => {
                let phi_adv = model.features(x_adv)?.ok_or_else(|| {
                    candle_core::Error::Msg(
                        "the adaptive MAT attack needs a model with a feature layer".into(),
                    )
                })?;
                // Eq. 9 at x': FTC and SO of phi(x'), BIBO between phi(x)
                // and phi(x').
                let terms = mat_objective(
                    &phi_adv,
                    centers,
                    y,
                    (*alpha != 0.0).then_some(*alpha),
                    (*beta != 0.0).then_some((*beta, clean, &phi_adv)),
                )?;
                Ok(terms.total)
            }
            Self::Trades { beta } => {
                let logits = model.logits(x_adv)?;
                Ok(trades_objective(&logits, y, clean, &logits, *beta)?.total)
            }
        }
    }

    /// What the objective compares `x_adv` with: phi(x) (MAT) or f(x)
    /// (TRADES), fixed during the attack.
    fn clean_reference(&self, model: &dyn Logits, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Mat { .. } => model.features(x)?.map(|t| t.detach()).ok_or_else(|| {
                candle_core::Error::Msg(
                    "the adaptive MAT attack needs a model with a feature layer".into(),
                )
            }),
            Self::Trades { .. } => Ok(model.logits(x)?.detach()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdaptivePgd {
    pub steps: usize,
    pub step_size: f64,
    pub objective: AdaptiveObjective,
}

impl Attack for AdaptivePgd {
    fn name(&self) -> &'static str {
        "adaptive-pgd"
    }

    fn norm(&self) -> Norm {
        Norm::Linf
    }

    fn propose(&self, p: &Problem, rng: &mut SeededRng) -> crate::Result<Tensor> {
        let Problem { model, x, y, eps } = *p;
        let clean = self.objective.clean_reference(model, x)?;
        let start = project(
            x,
            &(x + random_start(x, eps, Norm::Linf, rng)?)?,
            eps,
            Norm::Linf,
        )?;
        let ascent = Ascent {
            norm: Norm::Linf,
            eps,
            steps: self.steps,
            step_size: self.step_size,
        };
        ascent.run(x, start, |v| self.objective.value(model, v, &clean, y))
    }
}
