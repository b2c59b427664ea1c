//! Carlini & Wagner's L2 attack (2017) with foolbox 3's semantics: the
//! image is optimised in tanh space (`x = tanh(w)/2 + 1/2`, so it always
//! stays in [0, 1]) by Adam on
//! `sum |x' - x|^2 + c · max(0, z_y - max_{i≠y} z_i + confidence)`,
//! with a binary search over the constant c per sample (×10 until a first
//! success, then bisection), early abort when the loss stops falling, and
//! each sample keeping its smallest successful perturbation; samples never
//! fooled keep x.
//!
//! Distance: L2. Arguments: binary_search_steps (9), steps (10,000),
//! step_size (0.01), confidence (0), initial_const (0.001), abort_early.

use candle_core::{DType, Tensor, Var, D};

use serde::{Deserialize, Serialize};

use super::spec::{at_least_one, AttackSpec, Budget, Registration};
use super::{norms, where_samples, Attack, Norm, Problem};
use crate::rng::SeededRng;

pub const CW: Registration = Registration {
    name: "cw",
    summary: "Carlini & Wagner's L2 attack, foolbox 3's semantics",
    budget: Budget::MinimumNorm,
    norms: &[Norm::L2],
    iterative: false,
    needs_objective: false,
    section: Some("cw"),
    check: |spec| {
        let cw: CarliniWagner = spec.section("cw")?;
        at_least_one("cw.steps", cw.steps)?;
        at_least_one("cw.binary_search_steps", cw.binary_search_steps)
    },
    build: |spec: &AttackSpec, _, _| Ok(Box::new(spec.section::<CarliniWagner>("cw")?)),
    examples: &["norm: l2\ncw: {binary_search_steps: 2, steps: 10}"],
};

/// The attack and its config section `cw:` (foolbox 3's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CarliniWagner {
    pub binary_search_steps: usize,
    pub steps: usize,
    pub step_size: f64,
    pub confidence: f64,
    pub initial_const: f64,
    pub abort_early: bool,
}

impl Default for CarliniWagner {
    /// foolbox 3's defaults.
    fn default() -> Self {
        Self {
            binary_search_steps: 9,
            steps: 10_000,
            step_size: 0.01,
            confidence: 0.0,
            initial_const: 1e-3,
            abort_early: true,
        }
    }
}

/// `atanh` of `t` in (-1, 1), elementwise.
fn atanh(t: &Tensor) -> candle_core::Result<Tensor> {
    // 0.5·ln((1 + t) / (1 - t))
    (t.affine(1.0, 1.0)? / t.affine(-1.0, 1.0)?)?.log()? * 0.5
}

impl CarliniWagner {
    /// The margin term `max(0, z_y - max_{i≠y} z_i + confidence)` per sample.
    fn margin(
        &self,
        logits: &Tensor,
        y: &Tensor,
        others_mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let z_y = logits.gather(&y.unsqueeze(1)?, 1)?.squeeze(1)?;
        // Push the true class far down before taking the max of the others.
        let best_other = (logits - (others_mask * 1e9)?)?.max(D::Minus1)?;
        ((z_y - best_other)? + self.confidence)?.relu()
    }
}

impl Attack for CarliniWagner {
    fn name(&self) -> &'static str {
        "cw"
    }

    fn norm(&self) -> Norm {
        Norm::L2
    }

    fn minimum_norm(&self) -> bool {
        true
    }

    fn propose(&self, p: &Problem, _rng: &mut SeededRng) -> crate::Result<Tensor> {
        let Problem { model, x, y, .. } = *p;
        let dev = x.device();
        let n = x.dim(0)?;
        let y = y.to_dtype(DType::U32)?;
        let classes = model.logits(&x.narrow(0, 0, 1)?)?.dim(1)?;
        let labels = y.to_vec1::<u32>()?;
        let mut onehot = vec![0f32; n * classes];
        for (i, &l) in labels.iter().enumerate() {
            onehot[i * classes + l as usize] = 1.0;
        }
        let onehot = Tensor::from_vec(onehot, (n, classes), dev)?;
        // foolbox's attack space: w = atanh((2x - 1)·0.999999).
        let w = atanh(&(x.affine(2.0, -1.0)?.clamp(-1f32, 1f32)? * 0.999999)?)?;
        let to_model = |w: &Tensor| -> candle_core::Result<Tensor> { w.tanh()?.affine(0.5, 0.5) };
        let reconstructed = to_model(&w)?;

        let mut consts = vec![self.initial_const; n];
        let mut lower = vec![0f64; n];
        let mut upper = vec![f64::INFINITY; n];
        let mut best = x.clone();
        let mut best_norm = Tensor::full(f32::INFINITY, n, dev)?;
        let check_every = self.steps.div_ceil(10).max(1);
        for _ in 0..self.binary_search_steps {
            let c = Tensor::from_vec(consts.iter().map(|&c| c as f32).collect::<Vec<_>>(), n, dev)?;
            let delta = Var::zeros(x.shape(), DType::F32, dev)?;
            let (mut m, mut v) = (x.zeros_like()?, x.zeros_like()?);
            let mut found = Tensor::zeros(n, DType::U8, dev)?;
            let mut previous = f64::INFINITY;
            for step in 0..self.steps {
                let perturbed = to_model(&(&w + delta.as_tensor())?)?;
                let logits = model.logits(&perturbed)?;
                let dist = (&perturbed - &reconstructed)?
                    .sqr()?
                    .flatten_from(1)?
                    .sum(1)?;
                let loss =
                    ((self.margin(&logits, &y, &onehot)? * &c)?.sum_all()? + dist.sum_all()?)?;
                let g = loss.backward()?.remove(&delta).ok_or_else(|| {
                    candle_core::Error::Msg("C&W: the loss does not depend on the input".into())
                })?;
                // Adam (beta1 0.9, beta2 0.999, eps 1e-8), as foolbox's.
                let t = (step + 1) as i32;
                m = ((m * 0.9)? + (&g * 0.1)?)?;
                v = ((v * 0.999)? + (g.sqr()? * 0.001)?)?;
                let m_hat = (&m / (1.0 - 0.9f64.powi(t)))?;
                let v_hat = (&v / (1.0 - 0.999f64.powi(t)))?;
                let update = (m_hat / (v_hat.sqrt()? + 1e-8)?)?;
                delta.set(&(delta.as_tensor() - (update * self.step_size)?)?)?;

                if self.abort_early && step % check_every == 0 {
                    let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                    if l > 0.9999 * previous {
                        break;
                    }
                    previous = l;
                }
                let perturbed = perturbed.detach();
                // Adversarial with the confidence margin added to the true
                // class's logit (foolbox's criterion for confidence > 0).
                let is_adv = (logits.detach() + (&onehot * self.confidence)?)?
                    .argmax(D::Minus1)?
                    .ne(&y)?;
                found = found.maximum(&is_adv)?;
                let d = norms(&(&perturbed - x)?, Norm::L2)?;
                let better = is_adv.mul(&d.lt(&best_norm)?)?;
                best = where_samples(&better, &perturbed, &best)?;
                best_norm = better.where_cond(&d, &best_norm)?;
            }
            // Binary search over the constant, per sample.
            for (i, f) in found.to_vec1::<u8>()?.into_iter().enumerate() {
                if f == 1 {
                    upper[i] = consts[i];
                } else {
                    lower[i] = consts[i];
                }
                consts[i] = if upper[i].is_infinite() {
                    consts[i] * 10.0
                } else {
                    (lower[i] + upper[i]) / 2.0
                };
            }
        }
        Ok(best)
    }
}
