//! Natural training: the cross-entropy on clean inputs.

use candle_core::Tensor;

use super::objective::{ce, scalar, HeadKind, Loss, MethodRegistration, Objective};
use crate::models::Classifier;

pub const METHOD: MethodRegistration = MethodRegistration {
    name: "natural",
    summary: "cross-entropy on clean inputs",
    head: HeadKind::Logits,
    needs_adversary: |_| None,
    build: |_| Ok(Box::new(Natural)),
};

/// Natural training: cross-entropy on clean inputs.
pub struct Natural;

impl Objective for Natural {
    fn loss(&mut self, model: &Classifier, x: &Tensor, y: &Tensor) -> crate::Result<Loss> {
        let loss = ce(&model.logits_t(x, true)?, y)?;
        let v = scalar(&loss)?;
        Ok((loss, vec![("ce".into(), v)]))
    }
}
