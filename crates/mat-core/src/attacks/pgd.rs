//! Projected gradient descent (Madry et al., 2018) under L∞ or L2, with
//! an optional random start; FGSM (Goodfellow et al., 2015) is one step of
//! size eps from the clean point. Maximises cross-entropy (untargeted).
//!
//! Distance: `norm`. Arguments: steps, step size (absolute), random start.

use candle_core::Tensor;

use super::{input_gradient, norms, per_sample, project, Attack, Logits, Norm};
use crate::rng::SeededRng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pgd {
    pub norm: Norm,
    pub steps: usize,
    pub step_size: f64,
    pub random_start: bool,
}

impl Pgd {
    /// L∞ PGD with a uniform random start, as Madry et al. and TRADES evaluate.
    pub fn linf(steps: usize, step_size: f64) -> Self {
        Self {
            norm: Norm::Linf,
            steps,
            step_size,
            random_start: true,
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
        }
    }

    fn is_fgsm(&self) -> bool {
        self.step_size.is_nan()
    }
}

/// A point drawn uniformly from the eps-ball (L∞: per-coordinate uniform;
/// L2: uniform direction, radius eps·u^(1/d)).
fn random_start(x: &Tensor, eps: f64, norm: Norm, rng: &mut SeededRng) -> crate::Result<Tensor> {
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
fn normalize(g: &Tensor, norm: Norm) -> candle_core::Result<Tensor> {
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
            let g = input_gradient(model, &adv, y)?;
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
