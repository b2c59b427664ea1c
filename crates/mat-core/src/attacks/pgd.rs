//! Projected gradient descent (Madry et al., 2018) under L∞ or L2, with
//! an optional random start and restarts; FGSM (Goodfellow et al., 2015) is
//! one step of size eps from the clean point. Untargeted PGD ascends the
//! cross-entropy of the true class; targeted PGD descends that of a target
//! class (a uniformly drawn wrong class, or the clean point's least likely
//! class), as MMC's evaluation does.
//!
//! Distance: `norm`. Arguments: steps, step size (absolute), random start,
//! restarts (each from a new random start; a sample keeps the first restart
//! that misclassifies it), target.

use candle_core::{DType, Tensor, D};

use super::{input_gradient, norms, per_sample, project, Attack, Logits, Norm};
use crate::rng::SeededRng;

/// Which class a PGD step moves towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Away from the true class.
    Untargeted,
    /// Towards a class drawn uniformly from the wrong ones, per sample.
    Random,
    /// Towards the class with the smallest clean logit.
    LeastLikely,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pgd {
    pub norm: Norm,
    pub steps: usize,
    pub step_size: f64,
    pub random_start: bool,
    /// Runs in total (at least 1).
    pub restarts: usize,
    pub target: Target,
}

impl Pgd {
    /// L∞ PGD with a uniform random start, as Madry et al. and TRADES evaluate.
    pub fn linf(steps: usize, step_size: f64) -> Self {
        Self {
            norm: Norm::Linf,
            steps,
            step_size,
            random_start: true,
            restarts: 1,
            target: Target::Untargeted,
        }
    }

    /// FGSM: one signed-gradient step of size eps, no random start; its
    /// `step_size` is ignored and eps used instead.
    pub fn fgsm() -> Self {
        Self {
            norm: Norm::Linf,
            steps: 1,
            step_size: f64::NAN,
            random_start: false,
            restarts: 1,
            target: Target::Untargeted,
        }
    }

    fn is_fgsm(&self) -> bool {
        self.step_size.is_nan()
    }
}

/// A point drawn uniformly from the eps-ball (L∞: per-coordinate uniform;
/// L2: uniform direction, radius eps·u^(1/d)).
pub(crate) fn random_start(
    x: &Tensor,
    eps: f64,
    norm: Norm,
    rng: &mut SeededRng,
) -> crate::Result<Tensor> {
    let dev = x.device();
    Ok(match norm {
        Norm::Linf => rng.uniform(x.shape(), -eps as f32, eps as f32, dev)?,
        Norm::L2 => {
            let n = x.dim(0)?;
            let d = x.elem_count() / n.max(1);
            let dir = rng.normal(x.shape(), 0.0, 1.0, dev)?;
            let len = norms(&dir, Norm::L2)?.clamp(1e-12, f64::MAX)?;
            let radius: Vec<f32> = rng
                .uniform_vec(n, 0.0, 1.0)
                .iter()
                .map(|u| eps as f32 * u.powf(1.0 / d as f32))
                .collect();
            let scale = (Tensor::from_vec(radius, n, dev)? / len)?;
            dir.broadcast_mul(&scale.reshape(per_sample(x)?)?)?
        }
    })
}

/// The steepest-ascent direction of a norm: sign for L∞, unit L2 per sample.
pub(crate) fn normalize(g: &Tensor, norm: Norm) -> candle_core::Result<Tensor> {
    match norm {
        Norm::Linf => g.sign(),
        Norm::L2 => {
            let n = norms(g, Norm::L2)?.clamp(1e-12, f64::MAX)?;
            g.broadcast_div(&n.reshape(per_sample(g)?)?)
        }
    }
}

impl Attack for Pgd {
    fn name(&self) -> &'static str {
        if self.is_fgsm() {
            "fgsm"
        } else {
            "pgd"
        }
    }

    fn norm(&self) -> Norm {
        self.norm
    }

    fn propose(
        &self,
        model: &dyn Logits,
        x: &Tensor,
        y: &Tensor,
        eps: f64,
        rng: &mut SeededRng,
    ) -> candle_core::Result<Tensor> {
        let target = self.targets(model, x, y, rng)?;
        let mut best = self.one_run(model, x, y, target.as_ref(), eps, rng)?;
        for _ in 1..self.restarts {
            // Samples already misclassified keep their point.
            let fooled = model
                .logits(&best)?
                .argmax(D::Minus1)?
                .ne(&y.to_dtype(DType::U32)?)?;
            let run = self.one_run(model, x, y, target.as_ref(), eps, rng)?;
            let keep = fooled.reshape(per_sample(x)?)?.broadcast_as(x.shape())?;
            best = keep.where_cond(&best, &run)?;
        }
        Ok(best)
    }
}

impl Pgd {
    /// The target class of each sample, for targeted attacks.
    fn targets(
        &self,
        model: &dyn Logits,
        x: &Tensor,
        y: &Tensor,
        rng: &mut SeededRng,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(match self.target {
            Target::Untargeted => None,
            Target::LeastLikely => Some(model.logits(x)?.argmin(D::Minus1)?),
            Target::Random => {
                let classes = model.logits(&x.narrow(0, 0, 1)?)?.dim(1)?;
                let labels = y.to_dtype(DType::U32)?.to_vec1::<u32>()?;
                let t: Vec<u32> = labels
                    .iter()
                    .map(|&l| (l + 1 + rng.below(classes - 1) as u32) % classes as u32)
                    .collect();
                Some(Tensor::new(t.as_slice(), x.device())?)
            }
        })
    }

    fn one_run(
        &self,
        model: &dyn Logits,
        x: &Tensor,
        y: &Tensor,
        target: Option<&Tensor>,
        eps: f64,
        rng: &mut SeededRng,
    ) -> candle_core::Result<Tensor> {
        let to_candle = |e: crate::Error| candle_core::Error::Msg(e.to_string());
        let step = if self.is_fgsm() { eps } else { self.step_size };
        let mut adv = if self.random_start {
            project(
                x,
                &(x + random_start(x, eps, self.norm, rng).map_err(to_candle)?)?,
                eps,
                self.norm,
            )?
        } else {
            x.clone()
        };
        for _ in 0..self.steps {
            // Targeted: descend the target's cross-entropy.
            let g = match target {
                None => input_gradient(model, &adv, y)?,
                Some(t) => input_gradient(model, &adv, t)?.neg()?,
            };
            adv = project(
                x,
                &(adv + (normalize(&g, self.norm)? * step)?)?,
                eps,
                self.norm,
            )?;
        }
        Ok(adv)
    }
}
