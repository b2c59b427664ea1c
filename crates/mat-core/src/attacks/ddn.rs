//! Decoupled Direction and Norm (Rony et al., 2019), a minimum-L2 attack,
//! with foolbox 3's semantics: from delta = 0 and a norm budget of
//! `init_norm`, each step ascends the cross-entropy along the normalised
//! gradient with a cosine-annealed step size (from 1 down to 0.01), then
//! shrinks the budget by (1 - gamma) where the current point is already
//! adversarial and grows it by (1 + gamma) where it is not, rescales delta
//! to the budget and clips x + delta to [0, 1]. Each sample keeps its
//! smallest adversarial point; samples never fooled keep x.
//!
//! Distance: L2. Arguments: steps, init_norm (1), gamma (0.05).

use candle_core::{DType, Tensor};

use serde::{Deserialize, Serialize};

use super::spec::{at_least_one, AttackSpec, Budget, Registration};
use super::{
    input_gradient, misclassified, norms, per_sample, where_samples, Attack, Norm, Problem,
};
use crate::rng::SeededRng;

pub const DDN: Registration = Registration {
    name: "ddn",
    summary: "Decoupled Direction and Norm, foolbox 3's semantics",
    budget: Budget::MinimumNorm,
    norms: &[Norm::L2],
    iterative: false,
    needs_objective: false,
    section: Some("ddn"),
    check: |spec| at_least_one("ddn.steps", spec.section::<Ddn>("ddn")?.steps),
    build: |spec: &AttackSpec, _, _| Ok(Box::new(spec.section::<Ddn>("ddn")?)),
    examples: &["norm: l2\nddn: {steps: 10}"],
};

/// The attack and its config section `ddn:`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ddn {
    pub steps: usize,
    pub init_norm: f64,
    pub gamma: f64,
}

impl Default for Ddn {
    /// foolbox 3.3's defaults (100 steps; foolbox up to 3.2 used 10).
    fn default() -> Self {
        Self {
            steps: 100,
            init_norm: 1.0,
            gamma: 0.05,
        }
    }
}

impl Attack for Ddn {
    fn name(&self) -> &'static str {
        "ddn"
    }

    fn norm(&self) -> Norm {
        Norm::L2
    }

    fn minimum_norm(&self) -> bool {
        true
    }

    fn propose(&self, p: &Problem, rng: &mut SeededRng) -> crate::Result<Tensor> {
        let Problem { model, x, y, .. } = *p;
        let n = x.dim(0)?;
        let shape = per_sample(x)?;
        // The largest L2 distance from x inside [0, 1]: the budget's cap.
        let worst = norms(&x.maximum(&x.affine(-1.0, 1.0)?)?, Norm::L2)?;
        let mut eps = (Tensor::ones(n, DType::F32, x.device())? * self.init_norm)?;
        let mut delta = x.zeros_like()?;
        let mut best = x.clone();
        let mut best_norm = Tensor::full(f32::INFINITY, n, x.device())?;
        for i in 0..self.steps {
            let step = 0.01
                + (1.0 - 0.01)
                    * (1.0 + (std::f64::consts::PI * i as f64 / self.steps as f64).cos())
                    / 2.0;
            let adv = (x + &delta)?;
            let g = input_gradient(model, &adv, y)?;
            let is_adv = misclassified(model, &adv, y)?;
            let d_norm = norms(&delta, Norm::L2)?;
            let better = is_adv.mul(&d_norm.lt(&best_norm)?)?;
            best = where_samples(&better, &adv, &best)?;
            best_norm = better.where_cond(&d_norm, &best_norm)?;
            // A zero gradient (a saturated model) gets a random direction.
            let g_norm = norms(&g, Norm::L2)?;
            let zero = g_norm.eq(0f32)?;
            let g = where_samples(&zero, &rng.normal(x.shape(), 0.0, 1.0, x.device())?, &g)?;
            let g_norm = norms(&g, Norm::L2)?.clamp(1e-12, f64::MAX)?;
            delta = (delta
                + g.broadcast_div(&g_norm.reshape(shape.as_slice())?)?
                    .affine(step, 0.0)?)?;
            let factor = is_adv.where_cond(
                &Tensor::full((1.0 - self.gamma) as f32, n, x.device())?,
                &Tensor::full((1.0 + self.gamma) as f32, n, x.device())?,
            )?;
            eps = (eps * factor)?.minimum(&worst)?;
            let d_norm = norms(&delta, Norm::L2)?.clamp(1e-12, f64::MAX)?;
            delta = delta.broadcast_mul(&(&eps / d_norm)?.reshape(shape.as_slice())?)?;
            delta = ((x + delta)?.clamp(0f32, 1f32)? - x)?;
        }
        // The last point counts too.
        let adv = (x + &delta)?;
        let is_adv = misclassified(model, &adv, y)?;
        let better = is_adv.mul(&norms(&delta, Norm::L2)?.lt(&best_norm)?)?;
        Ok(where_samples(&better, &adv, &best)?)
    }
}
