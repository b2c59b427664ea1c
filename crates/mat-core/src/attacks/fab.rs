//! FAB-T (Croce & Hein, 2020), targeted, L∞: a minimum-norm attack that
//! linearises the boundary between the true class y and a target class t
//! at the current iterate, `(z_t - z_y)(x1) + ∇(z_t - z_y)·(z - x1) = 0`,
//! projects both the iterate and the clean point onto that hyperplane
//! within [0, 1] (the smallest L∞ step), and moves to a convex combination
//! of the two projections, biased towards the clean point (weight at most
//! `alpha_max`) and overshooting by `eta`. Once misclassified, it records
//! the point if it is the closest yet and steps back towards the clean
//! point by `beta`. Targets are the 2nd, 3rd, … most likely clean classes,
//! each run on the points still robust, as AutoAttack runs it.
//!
//! Distance: L∞. Arguments: steps (100), fab.target_classes (9),
//! fab.alpha_max (0.1), fab.eta (1.05), fab.beta (0.9): AutoAttack's.
//! The runner judges its point within the eps-ball: FAB's minimum-norm
//! point counts only if it lies within the budget.

use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use super::apgd::on_robust;
use super::spec::{at_least_one, bad, AttackSpec, Budget, Registration};
use super::{gradient_at, Attack, Logits, Norm, Problem};
use crate::rng::SeededRng;

/// The config section `fab:` (AutoAttack's settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FabSpec {
    /// Target classes, from the 2nd most likely on.
    pub target_classes: usize,
    /// The largest weight of the clean point's projection.
    pub alpha_max: f64,
    /// Overshoot past the linearised boundary.
    pub eta: f64,
    /// Backward step towards the clean point after a success.
    pub beta: f64,
}

impl Default for FabSpec {
    fn default() -> Self {
        Self {
            target_classes: 9,
            alpha_max: 0.1,
            eta: 1.05,
            beta: 0.9,
        }
    }
}

pub const FAB_T: Registration = Registration {
    name: "fab-t",
    summary: "targeted FAB: projections onto the linearised boundary (Croce & Hein)",
    budget: Budget::Bounded,
    norms: &[Norm::Linf],
    iterative: true,
    needs_objective: false,
    section: Some("fab"),
    check: |spec| {
        let f: FabSpec = spec.section("fab")?;
        at_least_one("fab.target_classes", f.target_classes)?;
        if !(f.alpha_max >= 0.0 && f.alpha_max <= 1.0) {
            return Err(bad("fab.alpha_max", "a number in [0, 1]", f.alpha_max));
        }
        if !(f.eta.is_finite() && f.eta >= 1.0) {
            return Err(bad("fab.eta", "a number >= 1", f.eta));
        }
        if !(f.beta > 0.0 && f.beta <= 1.0) {
            return Err(bad("fab.beta", "a number in (0, 1]", f.beta));
        }
        Ok(())
    },
    build: |spec: &AttackSpec, _, _| {
        let f: FabSpec = spec.section("fab")?;
        Ok(Box::new(FabT {
            steps: spec.steps,
            target_classes: f.target_classes,
            alpha_max: f.alpha_max as f32,
            eta: f.eta as f32,
            beta: f.beta as f32,
        }))
    },
    examples: &["eps: [0.3]\nsteps: 10\nfab: {target_classes: 3}"],
};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FabT {
    pub steps: usize,
    pub target_classes: usize,
    pub alpha_max: f32,
    pub eta: f32,
    pub beta: f32,
}

impl Default for FabT {
    fn default() -> Self {
        let f = FabSpec::default();
        Self {
            steps: 100,
            target_classes: f.target_classes,
            alpha_max: f.alpha_max as f32,
            eta: f.eta as f32,
            beta: f.beta as f32,
        }
    }
}

fn linf(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, a| m.max(a.abs()))
}

/// The smallest L∞ step `d` that takes `t` (in [0, 1]) onto the hyperplane
/// `w·z = b` while `t + d` stays in [0, 1]; where no such step exists, the
/// step to the box corner that gets closest.
///
/// With `c = |w·t - b|` to cover, moving coordinate i by up to λ (and by at
/// most its room to the box face the move heads for) covers
/// `f(λ) = Σ |w_i| min(λ, room_i)`, increasing and piecewise linear in λ;
/// the rooms in increasing order are its breakpoints, so one sort finds the
/// smallest λ with f(λ) = c.
pub fn project_linf(t: &[f32], w: &[f32], b: f32) -> Vec<f32> {
    let gap: f64 = t
        .iter()
        .zip(w)
        .map(|(a, c)| (*a as f64) * (*c as f64))
        .sum::<f64>()
        - b as f64;
    // Each coordinate moves against w's sign where the point is above the
    // hyperplane, with it where below.
    let down = gap >= 0.0;
    let need = gap.abs();
    let moves: Vec<(usize, f64, f64, f32)> = w
        .iter()
        .enumerate()
        .filter(|(_, c)| **c != 0.0)
        .map(|(i, &c)| {
            // Lowering w·z: decrease z_i where w_i > 0, increase where < 0.
            let towards_zero = (c > 0.0) == down;
            let room = if towards_zero { t[i] } else { 1.0 - t[i] } as f64;
            (
                i,
                room.max(0.0),
                (c as f64).abs(),
                if towards_zero { -1.0 } else { 1.0 },
            )
        })
        .collect();
    let mut order: Vec<usize> = (0..moves.len()).collect();
    order.sort_by(|&a, &b| moves[a].1.total_cmp(&moves[b].1));
    let mut weight_left: f64 = moves.iter().map(|m| m.2).sum();
    let mut covered = 0f64;
    let mut lambda = f64::INFINITY;
    for &k in &order {
        let (_, room, wk, _) = moves[k];
        // On [previous room, room]: f(λ) = covered + λ·weight_left.
        if covered + room * weight_left >= need {
            lambda = if weight_left > 0.0 {
                (need - covered) / weight_left
            } else {
                room
            };
            break;
        }
        covered += room * wk;
        weight_left -= wk;
    }
    let mut d = vec![0f32; t.len()];
    for &(i, room, _, dir) in &moves {
        d[i] = dir * room.min(lambda.max(0.0)) as f32;
    }
    d
}

impl FabT {
    /// One targeted run on `x` (labels `y`, targets `t`); each point's
    /// closest misclassified iterate, or itself where none was found.
    fn one_run(
        &self,
        model: &dyn Logits,
        x: &Tensor,
        y: &Tensor,
        t: &Tensor,
    ) -> crate::Result<Tensor> {
        let shape = x.shape().clone();
        let n = x.dim(0)?;
        let clean: Vec<Vec<f32>> = x.flatten_from(1)?.to_vec2::<f32>()?;
        let labels = y.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let (y2, t2) = (
            y.to_dtype(DType::U32)?.unsqueeze(1)?,
            t.to_dtype(DType::U32)?.unsqueeze(1)?,
        );
        let mut x1 = clean.clone();
        let mut best = clean.clone();
        let mut best_norm = vec![f32::INFINITY; n];
        let to_tensor = |rows: &[Vec<f32>]| -> crate::Result<Tensor> {
            Ok(Tensor::from_vec(rows.concat(), shape.clone(), x.device())?)
        };
        for _ in 0..self.steps {
            // f = z_t - z_y, negative while the point is classified y.
            let (grad, diff) = gradient_at(&to_tensor(&x1)?, |v| {
                let z = model.logits(v)?;
                let f = (z.gather(&t2, 1)? - z.gather(&y2, 1)?)?.squeeze(1)?;
                Ok((f.sum_all()?, f))
            })?;
            let grad = grad.flatten_from(1)?.to_vec2::<f32>()?;
            let diff = diff.to_vec1::<f32>()?;
            for i in 0..n {
                let w = &grad[i];
                let b = -diff[i] + w.iter().zip(&x1[i]).map(|(a, c)| a * c).sum::<f32>();
                let d1 = project_linf(&x1[i], w, b);
                let d2 = project_linf(&clean[i], w, b);
                let (a1, a2) = (linf(&d1).max(1e-8), linf(&d2).max(1e-8));
                let alpha = (a1 / (a1 + a2)).clamp(0.0, self.alpha_max);
                for k in 0..x1[i].len() {
                    let moved = (x1[i][k] + self.eta * d1[k]) * (1.0 - alpha)
                        + (clean[i][k] + self.eta * d2[k]) * alpha;
                    x1[i][k] = moved.clamp(0.0, 1.0);
                }
            }
            let pred = model
                .logits(&to_tensor(&x1)?)?
                .argmax(D::Minus1)?
                .to_vec1::<u32>()?;
            for i in 0..n {
                if pred[i] == labels[i] {
                    continue;
                }
                let dist = x1[i]
                    .iter()
                    .zip(&clean[i])
                    .fold(0f32, |m, (a, c)| m.max((a - c).abs()));
                if dist < best_norm[i] {
                    best_norm[i] = dist;
                    best[i] = x1[i].clone();
                }
                // Back towards the clean point, to find a closer one.
                for k in 0..x1[i].len() {
                    x1[i][k] = clean[i][k] + (x1[i][k] - clean[i][k]) * self.beta;
                }
            }
        }
        to_tensor(&best)
    }
}

impl Attack for FabT {
    fn settings(&self) -> Option<String> {
        Some(format!("{}: {self:?}", self.name()))
    }

    fn name(&self) -> &'static str {
        "fab-t"
    }

    fn norm(&self) -> Norm {
        Norm::Linf
    }

    fn propose(&self, p: &Problem, _rng: &mut SeededRng) -> crate::Result<Tensor> {
        let Problem { model, x, y, .. } = *p;
        let order = model.logits(x)?.detach().arg_sort_last_dim(false)?;
        let classes = order.dim(1)?;
        let mut best = x.clone();
        for k in 1..=self.target_classes.min(classes.saturating_sub(1)) {
            let targets = order.narrow(1, k, 1)?.squeeze(1)?.contiguous()?;
            best = on_robust(model, x, y, &best, &mut |xs, ys, idx| {
                let t = targets.index_select(idx, 0)?;
                // Only the points within the budget replace the current
                // ones (on_robust keeps those that fool the model).
                super::project(xs, &self.one_run(model, xs, ys, &t)?, p.eps, Norm::Linf)
                    .map_err(Into::into)
            })?;
        }
        Ok(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The projection of t = (0.5, 0.5) onto z_0 + z_1 = 0.6 moves each
    /// coordinate by -0.2: the smallest L∞ step; onto z_0 = 0.9 (w = (1,
    /// 0)) only the first, by 0.4; and where the box forbids the plane
    /// (z_0 + z_1 = 3), it goes to the corner (1, 1).
    #[test]
    fn linf_projection_by_hand() {
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        let d = project_linf(&[0.5, 0.5], &[1.0, 1.0], 0.6);
        assert!(close(&d, &[-0.2, -0.2]), "{d:?}");
        let d = project_linf(&[0.5, 0.5], &[1.0, 0.0], 0.9);
        assert!(close(&d, &[0.4, 0.0]), "{d:?}");
        let d = project_linf(&[0.5, 0.5], &[1.0, 1.0], 3.0);
        assert!(close(&d, &[0.5, 0.5]), "{d:?}");
        // A coordinate against the box: z_0 + z_1 = 0.2 from (0.1, 0.9)
        // lowers the first by at most 0.1, so the second goes down 0.6.
        let d = project_linf(&[0.1, 0.9], &[1.0, 1.0], 0.2);
        assert!(close(&d, &[-0.1, -0.7]), "{d:?}");
    }
}
