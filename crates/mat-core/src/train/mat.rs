//! MAT (the paper's Eq. 9): FTC, SO and BIBO against fixed centers.

use candle_core::Tensor;

use super::inner::{Adversary, Start};
use super::objective::{scalar, HeadKind, Loss, MethodRegistration, Objective};
use crate::losses::mat_objective;
use crate::models::Classifier;

pub const METHOD: MethodRegistration = MethodRegistration {
    name: "mat",
    summary: "FTC + alpha·SO + beta·BIBO against fixed centers (Eq. 9)",
    head: HeadKind::Centers,
    needs_adversary: |spec| (spec.mat.beta > 0.0).then_some("mat.beta > 0 (BIBO)"),
    // BIBO's inner PGD starts at x + 0.001·N(0, 1), as TRADES' does.
    build: |spec| {
        let adversary = match spec.mat.beta > 0.0 {
            true => Some(spec.adversary(Start::Gaussian(0.001))?),
            false => None,
        };
        Ok(Box::new(
            Mat::new(spec.mat.alpha, spec.mat.beta, adversary).with_warmup(spec.mat.warmup_epochs),
        ))
    },
};

/// MAT (Eq. 9): `FTC + alpha·SO + beta·BIBO` on the feature phi against the
/// model's fixed centers. SO is the closed form of Eq. 7; BIBO's maximiser
/// comes from PGD on CD(phi(x), phi(x')) started at `x + 0.001·N(0, 1)`.
/// Each of the four SO/BIBO combinations of Table 2 is alpha or beta = 0.
///
/// `warmup_epochs` W > 0 ramps alpha and beta linearly from 0 in epoch 1
/// to their full values in epoch W + 1, so the first epoch is FTC alone.
/// Measured on the MNIST subset: from random features, BIBO (beta 1) is
/// minimised by a network that ignores its input, and SO (alpha 0.1) by
/// growing |phi|, which shrinks FTC's gradient (it scales with 1/|phi|);
/// either kept training at chance where FTC alone reached 85% in two epochs.
pub struct Mat {
    pub alpha: f64,
    pub beta: f64,
    /// Needed when beta > 0.
    pub adversary: Option<Adversary>,
    pub warmup_epochs: usize,
    /// (alpha, beta) of the current epoch.
    current: (f64, f64),
}

impl Mat {
    pub fn new(alpha: f64, beta: f64, adversary: Option<Adversary>) -> Self {
        Self {
            alpha,
            beta,
            adversary,
            warmup_epochs: 0,
            current: (alpha, beta),
        }
    }

    pub fn with_warmup(mut self, epochs: usize) -> Self {
        self.warmup_epochs = epochs;
        self.current = self.weights_at(1);
        self
    }

    /// (alpha, beta) of `epoch` (1-based).
    pub fn weights_at(&self, epoch: usize) -> (f64, f64) {
        if self.warmup_epochs == 0 {
            return (self.alpha, self.beta);
        }
        let f = (epoch.max(1) - 1).min(self.warmup_epochs) as f64 / self.warmup_epochs as f64;
        (self.alpha * f, self.beta * f)
    }
}

impl Objective for Mat {
    fn loss(&mut self, model: &Classifier, x: &Tensor, y: &Tensor) -> crate::Result<Loss> {
        let mu = model.head.centers().ok_or_else(|| {
            crate::Error::field("head", "centers (MAT trains against fixed centers)", "none")
        })?;
        let phi = model.features_t(x, true)?;
        let (alpha, beta) = self.current;
        // A term whose weight is 0 only during the warm-up is still logged
        // (SO) or logged as "not computed" (BIBO: its inner PGD is skipped).
        let so = (self.alpha != 0.0).then_some(alpha);
        let phi_adv = if self.beta != 0.0 && beta != 0.0 {
            let adversary = self.adversary.as_mut().ok_or_else(|| {
                crate::Error::field(
                    "adversary",
                    "an inner maximisation for BIBO (beta > 0)",
                    "none",
                )
            })?;
            let clean = model.features_t(x, false)?.detach();
            let x_adv = adversary.maximise(x, |t| {
                crate::losses::cosine_distance(&clean, &model.features_t(t, false)?)?.sum_all()
            })?;
            Some(model.features_t(&x_adv, true)?)
        } else {
            None
        };
        let t = mat_objective(&phi, mu, y, so, phi_adv.as_ref().map(|a| (beta, &phi, a)))?;
        let mut terms = vec![("ftc".to_string(), scalar(&t.ftc)?)];
        if let Some(so) = &t.so {
            terms.push(("so".into(), scalar(so)?));
        }
        if let Some(bibo) = &t.bibo {
            terms.push(("bibo".into(), scalar(bibo)?));
        } else if self.beta != 0.0 {
            terms.push(("bibo".into(), f64::NAN));
        }
        Ok((t.total, terms))
    }

    fn start_epoch(&mut self, epoch: usize) {
        if let Some(a) = &mut self.adversary {
            a.start_epoch(epoch)
        }
        self.current = self.weights_at(epoch);
    }
}
