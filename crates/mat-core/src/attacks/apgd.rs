//! Auto-PGD (Croce & Hein, 2020): PGD with momentum whose step size starts
//! at 2·eps and is halved, per sample, at checkpoints where the loss has
//! stopped rising; after a halving the sample restarts from its best point.
//! Losses: cross-entropy (APGD-CE), the difference of logits ratio
//! (APGD-DLR), and its targeted form (APGD-T, run once per target class:
//! the 2nd, 3rd, … most likely clean classes, as AutoAttack does).
//!
//! Distance: `norm`. Arguments: steps, rho (the fraction of rising steps
//! below which a checkpoint halves the step; 0.75), restarts (untargeted) or
//! target classes (targeted). Every run starts uniformly in the eps-ball; a
//! sample keeps the first run that misclassifies it.

use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use super::pgd::{normalize, random_start};
use super::spec::{at_least_one, bad, AttackSpec, Budget, Registration};
use super::{
    gradient_at, misclassified, per_sample, project, put_samples, still_robust, where_samples,
    Attack, Logits, Norm, Problem,
};
use crate::rng::SeededRng;

/// APGD's config section `apgd:` (AutoAttack's defaults); `steps` and
/// `restarts` are the shared keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApgdSpec {
    /// The fraction of rising steps below which a checkpoint halves the step.
    pub rho: f64,
    /// Targeted: the number of target classes, from the 2nd most likely on.
    pub target_classes: usize,
}

impl Default for ApgdSpec {
    fn default() -> Self {
        Self {
            rho: 0.75,
            target_classes: 9,
        }
    }
}

fn check(spec: &AttackSpec) -> crate::Result<()> {
    let a: ApgdSpec = spec.section("apgd")?;
    if !(a.rho > 0.0 && a.rho < 1.0) {
        return Err(bad("apgd.rho", "a number in (0, 1)", a.rho));
    }
    at_least_one("apgd.target_classes", a.target_classes)
}

fn build(spec: &AttackSpec, loss: ApgdLoss) -> crate::Result<Box<dyn Attack>> {
    let a: ApgdSpec = spec.section("apgd")?;
    Ok(Box::new(Apgd {
        norm: spec.norm(),
        steps: spec.steps,
        loss,
        rho: a.rho,
        restarts: spec.restarts,
        target_classes: a.target_classes,
    }))
}

const APGD_EXAMPLES: &[&str] = &[
    "eps: [0.3]\nsteps: 10\nrestarts: 2",
    "eps: [1.0]\nnorm: l2\nsteps: 10",
];

pub const APGD_CE: Registration = Registration {
    name: "apgd-ce",
    summary: "Auto-PGD on the cross-entropy (Croce & Hein)",
    budget: Budget::Bounded,
    norms: &[Norm::Linf, Norm::L2],
    iterative: true,
    needs_objective: false,
    section: Some("apgd"),
    check,
    build: |spec, _, _| build(spec, ApgdLoss::Ce),
    examples: APGD_EXAMPLES,
};

pub const APGD_DLR: Registration = Registration {
    name: "apgd-dlr",
    summary: "Auto-PGD on the difference of logits ratio, scale-invariant",
    build: |spec, _, _| build(spec, ApgdLoss::Dlr),
    examples: &["eps: [0.05]\nsteps: 10\nrestarts: 2"],
    ..APGD_CE
};

pub const APGD_T: Registration = Registration {
    name: "apgd-t",
    summary: "targeted Auto-PGD-DLR over the most likely wrong classes",
    build: |spec, _, _| build(spec, ApgdLoss::DlrTargeted),
    examples: &["eps: [0.05]\nsteps: 5\napgd: {target_classes: 3}"],
    ..APGD_CE
};

/// The loss an APGD run ascends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApgdLoss {
    /// Cross-entropy of the true class.
    Ce,
    /// `-(z_y - max_{i≠y} z_i) / (z_π1 - z_π3)`: invariant to shifting and
    /// scaling the logits, so a model cannot mask it by saturating softmax.
    Dlr,
    /// `-(z_y - z_t) / (z_π1 - (z_π3 + z_π4)/2)` for a target class t.
    DlrTargeted,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Apgd {
    pub norm: Norm,
    pub steps: usize,
    pub loss: ApgdLoss,
    /// Checkpoint threshold: halve the step where fewer than rho of the
    /// steps since the last checkpoint raised the loss.
    pub rho: f64,
    /// Untargeted runs in total (at least 1).
    pub restarts: usize,
    /// Targeted: how many target classes, from the 2nd most likely on.
    pub target_classes: usize,
}

impl Apgd {
    /// AutoAttack's settings for a loss: 100 steps, rho 0.75, one run, and
    /// for the targeted loss the 9 most likely wrong classes.
    pub fn new(norm: Norm, loss: ApgdLoss, steps: usize) -> Self {
        Self {
            norm,
            steps,
            loss,
            rho: 0.75,
            restarts: 1,
            target_classes: 9,
        }
    }
}

/// The iterations at which APGD checks its progress:
/// `p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`,
/// as lengths of the periods between checks, in steps.
fn period_lengths(steps: usize) -> (usize, usize, usize) {
    let first = ((0.22 * steps as f64) as usize).max(1);
    let shrink = ((0.03 * steps as f64) as usize).max(1);
    let min = ((0.06 * steps as f64) as usize).max(1);
    (first, shrink, min)
}

/// The per-sample loss `[N]` of `loss` at `logits` for labels `y` and,
/// targeted, targets `t`.
fn sample_losses(
    loss: ApgdLoss,
    logits: &Tensor,
    y: &Tensor,
    t: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let y2 = y.to_dtype(DType::U32)?.unsqueeze(1)?;
    match loss {
        ApgdLoss::Ce => {
            let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
            log_p.gather(&y2, 1)?.squeeze(1)?.neg()
        }
        ApgdLoss::Dlr | ApgdLoss::DlrTargeted => {
            // Sorting indices are constants; gathering through them keeps
            // the gradient.
            let order = logits.detach().arg_sort_last_dim(false)?;
            let kth = |k: usize| -> candle_core::Result<Tensor> {
                logits
                    .gather(&order.narrow(1, k, 1)?.contiguous()?, 1)?
                    .squeeze(1)
            };
            let z_y = logits.gather(&y2, 1)?.squeeze(1)?;
            if loss == ApgdLoss::Dlr {
                let top_is_y = order.narrow(1, 0, 1)?.squeeze(1)?.eq(&y2.squeeze(1)?)?;
                let other = top_is_y.where_cond(&kth(1)?, &kth(0)?)?;
                let scale = ((kth(0)? - kth(2)?)? + 1e-12)?;
                ((z_y - other)? / scale)?.neg()
            } else {
                let t =
                    t.ok_or_else(|| candle_core::Error::Msg("targeted DLR needs targets".into()))?;
                let z_t = logits
                    .gather(&t.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?
                    .squeeze(1)?;
                let scale = ((kth(0)? - ((kth(2)? + kth(3)?)? * 0.5)?)? + 1e-12)?;
                ((z_y - z_t)? / scale)?.neg()
            }
        }
    }
}

/// A uniform start in the eps-ball (L∞), or on its sphere along a normal
/// direction (L2, as AutoAttack starts).
fn start(x: &Tensor, eps: f64, norm: Norm, rng: &mut SeededRng) -> crate::Result<Tensor> {
    let delta = match norm {
        Norm::Linf => random_start(x, eps, norm, rng)?,
        Norm::L2 => (normalize(&rng.normal(x.shape(), 0.0, 1.0, x.device())?, Norm::L2)? * eps)?,
    };
    Ok(project(x, &(x + delta)?, eps, norm)?)
}

/// Loss `[N]` (host), its input gradient and the misclassified flags.
struct Probe {
    loss: Vec<f32>,
    grad: Tensor,
    fooled: Tensor,
}

impl Apgd {
    fn probe(
        &self,
        model: &dyn Logits,
        x: &Tensor,
        y: &Tensor,
        t: Option<&Tensor>,
    ) -> candle_core::Result<Probe> {
        let (grad, (logits, losses)) = gradient_at(x, |v| {
            let logits = model.logits(v)?;
            let losses = sample_losses(self.loss, &logits, y, t)?;
            Ok((losses.sum_all()?, (logits, losses)))
        })?;
        let fooled = logits
            .detach()
            .argmax(D::Minus1)?
            .ne(&y.to_dtype(DType::U32)?)?;
        Ok(Probe {
            loss: losses.to_dtype(DType::F32)?.to_vec1()?,
            grad,
            fooled,
        })
    }

    /// One APGD run; returns each sample's first misclassified iterate, or
    /// its highest-loss iterate where none was.
    fn one_run(
        &self,
        model: &dyn Logits,
        x: &Tensor,
        y: &Tensor,
        t: Option<&Tensor>,
        eps: f64,
        rng: &mut SeededRng,
    ) -> crate::Result<Tensor> {
        let n = x.dim(0)?;
        let dev = x.device();
        let mut adv = start(x, eps, self.norm, rng)?;
        let p = self.probe(model, &adv, y, t)?;
        let mut grad = p.grad;
        let mut fooled = p.fooled.clone();
        let mut first_fooled = adv.clone();
        let (mut best, mut best_grad, mut best_loss) = (adv.clone(), grad.clone(), p.loss.clone());
        let mut history = vec![p.loss];
        let mut step = vec![(2.0 * eps) as f32; n];
        let (mut period, shrink, min_period) = period_lengths(self.steps);
        let mut since_check = 0;
        let mut halved_last = vec![true; n];
        let mut best_at_last = best_loss.clone();
        let mut prev = adv.clone();
        for i in 0..self.steps {
            let momentum = (&adv - &prev)?;
            prev = adv.clone();
            let a = if i == 0 { 1.0 } else { 0.75 };
            let eta = Tensor::from_vec(step.clone(), n, dev)?.reshape(per_sample(x)?)?;
            let z = project(
                x,
                &(&adv + normalize(&grad, self.norm)?.broadcast_mul(&eta)?)?,
                eps,
                self.norm,
            )?;
            adv = project(
                x,
                &((&adv + ((z - &adv)? * a)?)? + (momentum * (1.0 - a))?)?,
                eps,
                self.norm,
            )?;
            // A sample's result is fixed once it is fooled (its first
            // misclassified iterate), so only the others are probed.
            let still: Vec<u32> = fooled
                .to_vec1::<u8>()?
                .iter()
                .enumerate()
                .filter(|(_, &f)| f == 0)
                .map(|(i, _)| i as u32)
                .collect();
            if still.is_empty() {
                break;
            }
            let p = if still.len() == n {
                self.probe(model, &adv, y, t)?
            } else {
                let idx = Tensor::new(still.as_slice(), dev)?;
                let pick = |v: &Tensor| v.index_select(&idx, 0);
                let sub = self.probe(
                    model,
                    &pick(&adv)?,
                    &pick(y)?,
                    t.map(pick).transpose()?.as_ref(),
                )?;
                // The fooled keep their last loss, no gradient, and their flag.
                let mut loss = history[history.len() - 1].clone();
                for (&i, &l) in still.iter().zip(&sub.loss) {
                    loss[i as usize] = l;
                }
                Probe {
                    loss,
                    grad: put_samples(&adv.zeros_like()?, &still, &sub.grad)?,
                    fooled: put_samples(&fooled, &still, &sub.fooled)?,
                }
            };
            grad = p.grad;
            // Keep each sample's first misclassified iterate.
            let newly = p.fooled.gt(&fooled)?;
            first_fooled = where_samples(&newly, &adv, &first_fooled)?;
            fooled = fooled.maximum(&p.fooled)?;
            let improved: Vec<u8> = p
                .loss
                .iter()
                .zip(&best_loss)
                .map(|(l, b)| u8::from(l > b))
                .collect();
            let improved_t = Tensor::from_vec(improved.clone(), n, dev)?;
            best = where_samples(&improved_t, &adv, &best)?;
            best_grad = where_samples(&improved_t, &grad, &best_grad)?;
            for (b, (&l, &m)) in best_loss.iter_mut().zip(p.loss.iter().zip(&improved)) {
                if m == 1 {
                    *b = l;
                }
            }
            history.push(p.loss);
            since_check += 1;
            if since_check == period && i + 1 < self.steps {
                // Checkpoint: halve where the loss rose in at most rho of
                // the period's steps, or where it did not improve since the
                // previous checkpoint and the step was not halved there.
                let last = history.len() - 1;
                let halve: Vec<u8> = (0..n)
                    .map(|s| {
                        let rises = (0..period)
                            .filter(|&j| {
                                last > j && history[last - j][s] > history[last - j - 1][s]
                            })
                            .count();
                        let oscillating = rises as f64 <= self.rho * period as f64;
                        let stalled = !halved_last[s] && best_at_last[s] >= best_loss[s];
                        u8::from(oscillating || stalled)
                    })
                    .collect();
                for s in 0..n {
                    halved_last[s] = halve[s] == 1;
                    if halved_last[s] {
                        step[s] /= 2.0;
                    }
                }
                best_at_last = best_loss.clone();
                let halve_t = Tensor::from_vec(halve, n, dev)?;
                adv = where_samples(&halve_t, &best, &adv)?;
                grad = where_samples(&halve_t, &best_grad, &grad)?;
                period = period.saturating_sub(shrink).max(min_period);
                since_check = 0;
            }
        }
        Ok(where_samples(&fooled, &first_fooled, &best)?)
    }
}

/// Runs `run` on the samples of `x` not yet fooled (per `fooled` `[N]`,
/// u8) and merges the points that fool the model into `best`.
pub(crate) fn on_robust(
    model: &dyn Logits,
    x: &Tensor,
    y: &Tensor,
    best: &Tensor,
    run: &mut dyn FnMut(&Tensor, &Tensor, &Tensor) -> crate::Result<Tensor>,
) -> crate::Result<Tensor> {
    let Some((robust, idx)) = still_robust(model, best, y)? else {
        return Ok(best.clone());
    };
    let (xs, ys) = (x.index_select(&idx, 0)?, y.index_select(&idx, 0)?);
    let proposal = run(&xs, &ys, &idx)?;
    // Only the points that fool the model replace the current ones.
    let now = best.index_select(&idx, 0)?;
    let merged = where_samples(&misclassified(model, &proposal, &ys)?, &proposal, &now)?;
    Ok(put_samples(best, &robust, &merged)?)
}

impl Attack for Apgd {
    fn settings(&self) -> Option<String> {
        Some(format!("{}: {self:?}", self.name()))
    }

    fn name(&self) -> &'static str {
        match self.loss {
            ApgdLoss::Ce => "apgd-ce",
            ApgdLoss::Dlr => "apgd-dlr",
            ApgdLoss::DlrTargeted => "apgd-t",
        }
    }

    fn norm(&self) -> Norm {
        self.norm
    }

    fn propose(&self, p: &Problem, rng: &mut SeededRng) -> crate::Result<Tensor> {
        let Problem { model, x, y, eps } = *p;
        if self.loss != ApgdLoss::DlrTargeted {
            let mut best = self.one_run(model, x, y, None, eps, rng)?;
            for _ in 1..self.restarts {
                best = on_robust(model, x, y, &best, &mut |xs, ys, _| {
                    self.one_run(model, xs, ys, None, eps, rng)
                })?;
            }
            return Ok(best);
        }
        // The clean logits' ranking picks the targets: the 2nd most likely
        // class first.
        let order = model.logits(x)?.detach().arg_sort_last_dim(false)?;
        let classes = order.dim(1)?;
        if classes < 4 {
            return Err(crate::Error::field(
                "attack",
                "a model of at least 4 classes for apgd-t (its targeted DLR loss)",
                format!("{classes} classes"),
            ));
        }
        let mut best = x.clone();
        for k in 1..=self.target_classes.min(classes - 1) {
            let targets = order.narrow(1, k, 1)?.squeeze(1)?.contiguous()?;
            best = on_robust(model, x, y, &best, &mut |xs, ys, idx| {
                let t = targets.index_select(idx, 0)?;
                self.one_run(model, xs, ys, Some(&t), eps, rng)
            })?;
        }
        Ok(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn dlr_matches_its_definition_on_a_hand_example() {
        // z = (3, 1, 2, 0), y = 1: max other 3, z_π1 - z_π3 = 3 - 1 = 2,
        // DLR = -(1 - 3)/2 = 1. Targeted at t = 2: -(1 - 2)/(3 - (1 + 0)/2).
        let z = Tensor::new(&[[3f32, 1., 2., 0.]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[1u32], &Device::Cpu).unwrap();
        let dlr = sample_losses(ApgdLoss::Dlr, &z, &y, None).unwrap();
        assert!((dlr.to_vec1::<f32>().unwrap()[0] - 1.0).abs() < 1e-6);
        let t = Tensor::new(&[2u32], &Device::Cpu).unwrap();
        let dt = sample_losses(ApgdLoss::DlrTargeted, &z, &y, Some(&t)).unwrap();
        assert!((dt.to_vec1::<f32>().unwrap()[0] - 1.0 / 2.5).abs() < 1e-6);
        // The true class on top: the runner-up is the other logit.
        let y0 = Tensor::new(&[0u32], &Device::Cpu).unwrap();
        let d0 = sample_losses(ApgdLoss::Dlr, &z, &y0, None).unwrap();
        assert!((d0.to_vec1::<f32>().unwrap()[0] + 0.5).abs() < 1e-6);
    }

    #[test]
    fn checkpoint_periods_follow_autoattack() {
        assert_eq!(period_lengths(100), (22, 3, 6));
        assert_eq!(period_lengths(10), (2, 1, 1));
    }
}
