//! TRADES (Zhang et al., 2019).

use candle_core::Tensor;

use super::inner::{Adversary, Start};
use super::objective::{scalar, HeadKind, Loss, MethodRegistration, Objective};
use crate::losses::{kl_divergence, trades_objective};
use crate::models::Classifier;

pub const METHOD: MethodRegistration = MethodRegistration {
    name: "trades",
    summary: "CE + beta·KL on examples that maximise the KL (Zhang et al.)",
    head: HeadKind::Logits,
    needs_adversary: |_| Some("the method trains on adversarial examples"),
    // TRADES' code starts its inner PGD at x + 0.001·N(0, 1).
    build: |spec| {
        Ok(Box::new(Trades {
            beta: spec.trades.beta,
            adversary: spec.adversary(Start::Gaussian(0.001))?,
        }))
    },
};

/// TRADES: `CE(f(x), y) + beta · KL(f(x) || f(x'))`, x' maximising the KL
/// from `x + 0.001·N(0, 1)`; gradients flow through both branches.
pub struct Trades {
    pub beta: f64,
    pub adversary: Adversary,
}

impl Objective for Trades {
    fn loss(&mut self, model: &Classifier, x: &Tensor, y: &Tensor) -> crate::Result<Loss> {
        let clean = model.logits_t(x, false)?.detach();
        let x_adv = self.adversary.maximise(x, |t| {
            kl_divergence(&clean, &model.logits_t(t, false)?)?.sum_all()
        })?;
        let logits = model.logits_t(x, true)?;
        let t = trades_objective(
            &logits,
            y,
            &logits,
            &model.logits_t(&x_adv, true)?,
            self.beta,
        )?;
        let terms = vec![("ce".into(), scalar(&t.ce)?), ("kl".into(), scalar(&t.kl)?)];
        Ok((t.total, terms))
    }

    fn start_epoch(&mut self, epoch: usize) {
        self.adversary.start_epoch(epoch)
    }
}
