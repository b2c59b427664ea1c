//! Adversarial attacks over one shared runner that enforces what every
//! attack must satisfy (foolbox 3's design): the runner projects each
//! proposal into the eps-ball of its norm, clips it to [0, 1], and decides
//! success; an attack only proposes points.

pub mod adaptive;
pub mod apgd;
pub mod composite;
pub mod cw;
pub mod ddn;
pub mod fab;
pub mod pgd;
pub mod run;
pub mod spec;
pub mod square;

use candle_core::{DType, Tensor, Var, D};

pub use adaptive::{AdaptiveObjective, AdaptivePgd};
pub use apgd::{Apgd, ApgdLoss};
pub use composite::Composite;
pub use cw::CarliniWagner;
pub use ddn::Ddn;
pub use pgd::{Ascent, Pgd, Step, Target};

use crate::rng::SeededRng;

/// Anything that maps a batch of images to class logits, in eval mode.
pub trait Logits {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor>;

    /// The feature phi(x) under the logits, for models with a center head
    /// (MAT, MMC); `None` for the rest. Adaptive attacks need it.
    fn features(&self, _x: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(None)
    }
}

impl<F: Fn(&Tensor) -> candle_core::Result<Tensor>> Logits for F {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self(x)
    }
}

/// The distance an attack's budget is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    Linf,
    L2,
}

impl Norm {
    /// The name in configs: `linf` or `l2`.
    pub fn name(self) -> &'static str {
        match self {
            Norm::Linf => "linf",
            Norm::L2 => "l2",
        }
    }
}

/// Per-sample norms of `d` `[N, ...]` → `[N]`.
pub fn norms(d: &Tensor, norm: Norm) -> candle_core::Result<Tensor> {
    let flat = d.flatten_from(1)?;
    match norm {
        Norm::Linf => flat.abs()?.max(D::Minus1),
        Norm::L2 => flat.sqr()?.sum(D::Minus1)?.sqrt(),
    }
}

/// `[N, 1, 1, ...]` for a batch `t`: the shape that broadcasts one value
/// per sample over the sample's other dimensions.
pub(crate) fn per_sample(t: &Tensor) -> candle_core::Result<Vec<usize>> {
    Ok(std::iter::once(t.dim(0)?)
        .chain(std::iter::repeat_n(1, t.rank() - 1))
        .collect())
}

/// Projects `x_adv` into the eps-ball around `x` and into [0, 1].
pub fn project(x: &Tensor, x_adv: &Tensor, eps: f64, norm: Norm) -> candle_core::Result<Tensor> {
    if eps == f64::INFINITY {
        return x_adv.clamp(0f32, 1f32);
    }
    let delta = (x_adv - x)?;
    let delta = match norm {
        Norm::Linf => delta.clamp(-eps, eps)?,
        Norm::L2 => {
            // Scale rows whose norm exceeds eps down to eps.
            let n = norms(&delta, Norm::L2)?.clamp(1e-12, f64::MAX)?;
            let factor = (n.recip()? * eps)?.clamp(0.0, 1.0)?;
            delta.broadcast_mul(&factor.reshape(per_sample(&delta)?)?)?
        }
    };
    (x + delta)?.clamp(0f32, 1f32)
}

/// The gradient of the summed cross-entropy with respect to the input.
/// Summed, not averaged, so each sample's gradient does not depend on the
/// batch size.
pub fn input_gradient(model: &dyn Logits, x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    gradient_at(x, |v| {
        Ok((crate::losses::cross_entropy_sum(&model.logits(v)?, y)?, ()))
    })
    .map(|(g, ())| g)
}

/// The gradient of the scalar `loss` computes at `x` with respect to `x`,
/// and whatever else `loss` returns beside it: the one place every attack
/// differentiates through the model.
pub(crate) fn gradient_at<T>(
    x: &Tensor,
    loss: impl FnOnce(&Tensor) -> candle_core::Result<(Tensor, T)>,
) -> candle_core::Result<(Tensor, T)> {
    let v = Var::from_tensor(&x.detach())?;
    let (value, extra) = loss(v.as_tensor())?;
    let grad = value.backward()?.get(&v).cloned().ok_or_else(|| {
        candle_core::Error::Msg("the model's output does not depend on its input".into())
    })?;
    Ok((grad, extra))
}

/// `a` where `mask` `[N]` (u8) is 1, else `b`, per sample.
pub(crate) fn where_samples(mask: &Tensor, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    mask.reshape(per_sample(a)?)?
        .broadcast_as(a.shape())?
        .where_cond(a, b)
}

/// `into` `[N, ...]` with its samples at `idx` `[M]` (u32) replaced by
/// `rows` `[M, ...]`: a bitwise copy, gathered from both.
pub(crate) fn put_samples(
    into: &Tensor,
    idx: &[u32],
    rows: &Tensor,
) -> candle_core::Result<Tensor> {
    let n = into.dim(0)?;
    let mut src: Vec<u32> = (0..n as u32).collect();
    for (j, &i) in idx.iter().enumerate() {
        src[i as usize] = (n + j) as u32;
    }
    Tensor::cat(&[into, rows], 0)?.index_select(&Tensor::new(src.as_slice(), into.device())?, 0)
}

/// The samples `adv` does not fool yet: their indices, as a list and as a
/// tensor for `index_select`; `None` when every sample is fooled.
pub(crate) fn still_robust(
    model: &dyn Logits,
    adv: &Tensor,
    y: &Tensor,
) -> candle_core::Result<Option<(Vec<u32>, Tensor)>> {
    let fooled = misclassified(model, adv, y)?.to_vec1::<u8>()?;
    let robust: Vec<u32> = (0..fooled.len() as u32)
        .filter(|&i| fooled[i as usize] == 0)
        .collect();
    if robust.is_empty() {
        return Ok(None);
    }
    let idx = Tensor::new(robust.as_slice(), adv.device())?;
    Ok(Some((robust, idx)))
}

/// The per-sample flag `[N]` (u8): the model misclassifies `x`.
pub(crate) fn misclassified(
    model: &dyn Logits,
    x: &Tensor,
    y: &Tensor,
) -> candle_core::Result<Tensor> {
    model
        .logits(x)?
        .argmax(D::Minus1)?
        .ne(&y.to_dtype(DType::U32)?)
}

/// One batch under attack: the model, the clean points `x` `[N, ...]`, their
/// labels `y` `[N]` and the budget `eps` (infinite for minimum-norm attacks).
#[derive(Clone, Copy)]
pub struct Problem<'a> {
    pub model: &'a dyn Logits,
    pub x: &'a Tensor,
    pub y: &'a Tensor,
    pub eps: f64,
}

impl<'a> Problem<'a> {
    /// The same model and budget over other points (a subset of the batch).
    pub fn on<'b>(&self, x: &'b Tensor, y: &'b Tensor) -> Problem<'b>
    where
        'a: 'b,
    {
        Problem { x, y, ..*self }
    }
}

/// An attack: proposes adversarial points for a batch at budget `eps`.
pub trait Attack {
    fn name(&self) -> &'static str;
    fn norm(&self) -> Norm;
    /// Minimum-norm attacks (C&W, DDN) search for the smallest perturbation
    /// that misclassifies; they take no eps, and their robust accuracy at an
    /// eps is computed from the norms they found.
    fn minimum_norm(&self) -> bool {
        false
    }
    fn propose(&self, p: &Problem, rng: &mut SeededRng) -> crate::Result<Tensor>;

    /// [`Attack::propose`], and for attacks made of several (composites),
    /// per point the member whose point first fooled the model (`clean`:
    /// misclassified to begin with; empty: none).
    fn propose_attributed(
        &self,
        p: &Problem,
        rng: &mut SeededRng,
    ) -> crate::Result<(Tensor, Option<Vec<String>>)> {
        Ok((self.propose(p, rng)?, None))
    }

    /// The settings of every part, for the files' metadata (composites).
    fn settings(&self) -> Option<String> {
        None
    }
}

/// What an attack did to one batch.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub adv: Tensor,
    pub clean_pred: Vec<u32>,
    pub adv_pred: Vec<u32>,
    /// The adversarial point is misclassified.
    pub success: Vec<bool>,
    pub l2: Vec<f32>,
    pub linf: Vec<f32>,
    /// Composites: per point, the member that broke it (see
    /// [`Attack::propose_attributed`]).
    pub broken_by: Option<Vec<String>>,
}

/// Runs `attack` on one batch and enforces the invariants every attack
/// shares: the result lies in the eps-ball of the attack's norm and in
/// [0, 1], whatever the attack proposed.
pub fn run_attack(
    attack: &dyn Attack,
    model: &dyn Logits,
    x: &Tensor,
    y: &Tensor,
    eps: f64,
    rng: &mut SeededRng,
) -> crate::Result<Outcome> {
    let valid_eps = eps.is_finite() && eps >= 0.0;
    if !attack.minimum_norm() && !valid_eps {
        return Err(crate::Error::Invalid(format!(
            "{}: eps must be a number >= 0, got {eps}",
            attack.name()
        )));
    }
    let eps = if attack.minimum_norm() {
        f64::INFINITY
    } else {
        // Pixels lie in [0, 1]: an L∞ budget above 1, or an L2 budget above
        // the box's diagonal, reaches every image and is the same attack as
        // that bound (and stays representable in f32).
        let dims = x.elem_count() / x.dim(0)?.max(1);
        let reach = match attack.norm() {
            Norm::Linf => 1.0,
            Norm::L2 => (dims as f64).sqrt(),
        };
        eps.min(reach)
    };
    // eps 0: the ball is the point; robust accuracy equals clean accuracy.
    let (proposal, broken_by) = if eps == 0.0 {
        (x.clone(), None)
    } else {
        attack.propose_attributed(&Problem { model, x, y, eps }, rng)?
    };
    let adv = project(x, &proposal, eps, attack.norm())?;
    let pred = |t: &Tensor| -> candle_core::Result<Vec<u32>> {
        model.logits(t)?.argmax(D::Minus1)?.to_vec1::<u32>()
    };
    let (clean_pred, adv_pred) = (pred(x)?, pred(&adv)?);
    let labels = y.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    let delta = (&adv - x)?;
    Ok(Outcome {
        success: adv_pred.iter().zip(&labels).map(|(p, l)| p != l).collect(),
        clean_pred,
        adv_pred,
        l2: norms(&delta, Norm::L2)?.to_vec1()?,
        linf: norms(&delta, Norm::Linf)?.to_vec1()?,
        adv,
        broken_by,
    })
}
