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
//!
//! Only the work that can change a result is done: a restart runs on the
//! samples no earlier run fooled, and a sample whose gradient is exactly
//! zero (a saturated softmax) stops being differentiated, since its zero
//! step leaves it where it is. Results are those of the full computation
//! up to rounding: a smaller batch can take another path through the
//! linear layers' matrix products.

use candle_core::{DType, Tensor, D};

use super::spec::{no_check, AttackSpec, Budget, Registration, TargetSpec};
use super::{
    gradient_at, norms, per_sample, project, where_samples, Attack, Logits, Norm, Problem,
};
use crate::losses::cross_entropy_sum;
use crate::rng::SeededRng;

pub const FGSM: Registration = Registration {
    name: "fgsm",
    summary: "one signed-gradient step of size eps (Goodfellow et al.)",
    budget: Budget::Bounded,
    norms: &[Norm::Linf],
    iterative: false,
    needs_objective: false,
    section: None,
    check: no_check,
    build: |_, _, _| Ok(Box::new(Pgd::fgsm())),
    examples: &["eps: [0.3]"],
};

pub const PGD: Registration = Registration {
    name: "pgd",
    summary: "projected gradient descent on the cross-entropy, optionally targeted (`target`) with restarts (Madry et al.)",
    budget: Budget::Bounded,
    norms: &[Norm::Linf, Norm::L2],
    iterative: true,
    needs_objective: false,
    section: None,
    check: no_check,
    build: |spec: &AttackSpec, eps, _| {
        Ok(Box::new(Pgd {
            norm: spec.norm(),
            steps: spec.steps,
            step: Step::Absolute(spec.pgd_step(eps)),
            random_start: spec.random_start,
            restarts: spec.restarts,
            target: match spec.target {
                TargetSpec::None => Target::Untargeted,
                TargetSpec::Random => Target::Random,
                TargetSpec::LeastLikely => Target::LeastLikely,
            },
        }))
    },
    examples: &[
        "eps: [0.3]\nsteps: 10\nstep_size: 0.05",
        "eps: [2.0]\nnorm: l2\nsteps: 10\nstep_size: 0.5\nrestarts: 2",
        "eps: [0.1]\nsteps: 3\nstep_size: 0.5\nrandom_start: false\ntarget: least-likely",
        "eps: [0.1]\nsteps: 5\nstep_size: 0.05\nrestarts: 3\ntarget: random",
    ],
};

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

/// How far one PGD step goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// A fixed length in the attack's norm.
    Absolute(f64),
    /// The whole budget eps (FGSM's single step).
    Eps,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pgd {
    pub norm: Norm,
    pub steps: usize,
    pub step: Step,
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
            step: Step::Absolute(step_size),
            random_start: true,
            restarts: 1,
            target: Target::Untargeted,
        }
    }

    /// FGSM: one signed-gradient step of size eps, no random start.
    pub fn fgsm() -> Self {
        Self {
            norm: Norm::Linf,
            steps: 1,
            step: Step::Eps,
            random_start: false,
            restarts: 1,
            target: Target::Untargeted,
        }
    }

    fn is_fgsm(&self) -> bool {
        self.step == Step::Eps
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

/// A class drawn uniformly from the `classes - 1` wrong ones, per label of
/// `y` `[N]`: the targets of targeted PGD and of adversarial MMC training.
pub(crate) fn random_wrong_classes(
    y: &Tensor,
    classes: usize,
    rng: &mut SeededRng,
) -> crate::Result<Tensor> {
    let t: Vec<u32> = y
        .to_dtype(DType::U32)?
        .to_vec1::<u32>()?
        .iter()
        .map(|&l| (l + 1 + rng.below(classes - 1) as u32) % classes as u32)
        .collect();
    Ok(Tensor::new(t.as_slice(), y.device())?)
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

/// Steepest ascent of a gain in the eps-ball: `steps` steps of
/// `step_size` along the gain's normalised input gradient (its sign in L∞,
/// Madry et al.'s Eq. 2), each projected into the ball and [0, 1]. The one
/// ascent behind PGD, the adaptive attack (Section 4.4) and the inner
/// maximisation of adversarial training, so an attack and a training
/// objective move points the same way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ascent {
    pub norm: Norm,
    pub eps: f64,
    pub steps: usize,
    pub step_size: f64,
}

impl Ascent {
    /// Ascends `gain` (a scalar, summed or averaged over the batch) from
    /// `start`, staying within the ball around `x`.
    pub fn run(
        &self,
        x: &Tensor,
        start: Tensor,
        mut gain: impl FnMut(&Tensor) -> candle_core::Result<Tensor>,
    ) -> crate::Result<Tensor> {
        let mut adv = start;
        for _ in 0..self.steps {
            let (g, ()) = gradient_at(&adv, |v| Ok((gain(v)?, ())))?;
            let moved = (&adv + (normalize(&g, self.norm)? * self.step_size)?)?;
            adv = project(x, &moved, self.eps, self.norm)?;
        }
        Ok(adv)
    }

    /// [`Ascent::run`] for an attack's gain, a sum of independent
    /// per-sample terms: `gain(v, idx)` gets the points still moving and,
    /// once some have stopped, their indices into the batch (to pick their
    /// labels; `None`: every sample). A sample whose gradient is exactly
    /// zero takes a zero step (sign(0) = 0 in L∞, and L2 normalises 0 to
    /// 0), so its point, and with it its gradient, stays as it is for every
    /// later step: it leaves the batch, and later steps differentiate only
    /// the samples still moving. On a saturated model (MAT's: the audit's
    /// `zero_gradient_ce`) that is most of them from the first step on.
    pub fn run_per_sample(
        &self,
        x: &Tensor,
        start: Tensor,
        mut gain: impl FnMut(&Tensor, Option<&Tensor>) -> candle_core::Result<Tensor>,
    ) -> crate::Result<Tensor> {
        let mut adv = start;
        let n = x.dim(0)?;
        // The samples still moving; the whole batch needs no selection.
        let mut moving: Vec<u32> = (0..n as u32).collect();
        for _ in 0..self.steps {
            if moving.is_empty() {
                break;
            }
            let idx = (moving.len() < n)
                .then(|| Tensor::new(moving.as_slice(), x.device()))
                .transpose()?;
            let (xs, vs) = match &idx {
                None => (x.clone(), adv.clone()),
                Some(i) => (x.index_select(i, 0)?, adv.index_select(i, 0)?),
            };
            let (g, ()) = gradient_at(&vs, |v| Ok((gain(v, idx.as_ref())?, ())))?;
            let moved = (&vs + (normalize(&g, self.norm)? * self.step_size)?)?;
            let stepped = project(&xs, &moved, self.eps, self.norm)?;
            let live: Vec<u8> = norms(&g, Norm::Linf)?
                .to_vec1::<f32>()?
                .iter()
                .map(|s| u8::from(*s != 0.0))
                .collect();
            // A zero step keeps the point bit for bit (re-projecting it
            // could round it).
            let stepped = where_samples(
                &Tensor::from_vec(live.clone(), live.len(), x.device())?,
                &stepped,
                &vs,
            )?;
            adv = match idx {
                None => stepped,
                Some(_) => super::put_samples(&adv, &moving, &stepped)?,
            };
            moving = moving
                .iter()
                .zip(&live)
                .filter(|(_, &l)| l == 1)
                .map(|(&i, _)| i)
                .collect();
        }
        Ok(adv)
    }
}

impl Attack for Pgd {
    fn settings(&self) -> Option<String> {
        Some(format!("{}: {self:?}", self.name()))
    }

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

    fn propose(&self, p: &Problem, rng: &mut SeededRng) -> crate::Result<Tensor> {
        let Problem { model, x, y, eps } = *p;
        let target = self.targets(model, x, y, rng)?;
        let start = self.start(x, eps, rng)?;
        let mut best = self.one_run(model, x, y, target.as_ref(), eps, start)?;
        for _ in 1..self.restarts {
            // Samples already misclassified keep their point; the others
            // take the new run's. Only they run, from their rows of a start
            // drawn for the whole batch (the same draws as if all ran).
            let start = self.start(x, eps, rng)?;
            let Some((robust, idx)) = super::still_robust(model, &best, y)? else {
                continue;
            };
            let pick = |t: &Tensor| t.index_select(&idx, 0);
            let run = self.one_run(
                model,
                &pick(x)?,
                &pick(y)?,
                target.as_ref().map(pick).transpose()?.as_ref(),
                eps,
                pick(&start)?,
            )?;
            best = super::put_samples(&best, &robust, &run)?;
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
    ) -> crate::Result<Option<Tensor>> {
        Ok(match self.target {
            Target::Untargeted => None,
            Target::LeastLikely => Some(model.logits(x)?.argmin(D::Minus1)?),
            Target::Random => {
                let classes = model.logits(&x.narrow(0, 0, 1)?)?.dim(1)?;
                Some(random_wrong_classes(y, classes, rng)?)
            }
        })
    }

    /// A run's first point: uniform in the ball, or the clean point.
    fn start(&self, x: &Tensor, eps: f64, rng: &mut SeededRng) -> crate::Result<Tensor> {
        Ok(if self.random_start {
            project(
                x,
                &(x + random_start(x, eps, self.norm, rng)?)?,
                eps,
                self.norm,
            )?
        } else {
            x.clone()
        })
    }

    fn one_run(
        &self,
        model: &dyn Logits,
        x: &Tensor,
        y: &Tensor,
        target: Option<&Tensor>,
        eps: f64,
        start: Tensor,
    ) -> crate::Result<Tensor> {
        let step = match self.step {
            Step::Eps => eps,
            Step::Absolute(s) => s,
        };
        let ascent = Ascent {
            norm: self.norm,
            eps,
            steps: self.steps,
            step_size: step,
        };
        ascent.run_per_sample(x, start, |v, idx| {
            let pick = |t: &Tensor| match idx {
                Some(i) => t.index_select(i, 0),
                None => Ok(t.clone()),
            };
            match target {
                None => cross_entropy_sum(&model.logits(v)?, &pick(y)?),
                // Targeted: descend the target's cross-entropy.
                Some(t) => cross_entropy_sum(&model.logits(v)?, &pick(t)?)?.neg(),
            }
        })
    }
}
