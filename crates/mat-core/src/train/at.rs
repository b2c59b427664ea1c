//! Adversarial training (Madry et al., 2018).

use candle_core::Tensor;

use super::inner::{Adversary, Start};
use super::objective::{ce, scalar, HeadKind, Loss, MethodRegistration, Objective};
use crate::losses::cross_entropy_sum;
use crate::models::Classifier;

pub const METHOD: MethodRegistration = MethodRegistration {
    name: "at",
    summary: "cross-entropy on PGD examples (Madry et al.)",
    head: HeadKind::Logits,
    needs_adversary: |_| Some("the method trains on adversarial examples"),
    // Madry et al. start the inner PGD uniformly in the ball.
    build: |spec| {
        Ok(Box::new(AdversarialCe {
            adversary: spec.adversary(Start::Uniform)?,
        }))
    },
};

/// Adversarial training (Madry et al.): cross-entropy on PGD examples that
/// maximise cross-entropy.
pub struct AdversarialCe {
    pub adversary: Adversary,
}

impl Objective for AdversarialCe {
    fn loss(&mut self, model: &Classifier, x: &Tensor, y: &Tensor) -> crate::Result<Loss> {
        let x_adv = self
            .adversary
            .maximise(x, |t| cross_entropy_sum(&model.logits_t(t, false)?, y))?;
        let loss = ce(&model.logits_t(&x_adv, true)?, y)?;
        let v = scalar(&loss)?;
        Ok((loss, vec![("ce_adv".into(), v)]))
    }

    fn start_epoch(&mut self, epoch: usize) {
        self.adversary.start_epoch(epoch)
    }
}
