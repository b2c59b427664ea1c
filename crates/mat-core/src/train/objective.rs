//! Training objectives: how a batch becomes a loss.

use candle_core::{ModuleT, Tensor};

use crate::losses::{ftc_loss, so_loss};

/// A training method.
pub trait Objective<M: ModuleT> {
    /// The scalar loss to minimise and its named terms (batch means).
    fn loss(
        &self,
        model: &M,
        x: &Tensor,
        y: &Tensor,
    ) -> candle_core::Result<(Tensor, Vec<(String, f64)>)>;

    /// Eval-mode class scores (argmax = prediction).
    fn logits(&self, model: &M, x: &Tensor) -> candle_core::Result<Tensor>;
}

fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()
}

/// Natural training: cross-entropy on clean inputs.
pub struct Natural;

impl<M: ModuleT> Objective<M> for Natural {
    fn loss(
        &self,
        model: &M,
        x: &Tensor,
        y: &Tensor,
    ) -> candle_core::Result<(Tensor, Vec<(String, f64)>)> {
        let ce = candle_nn::loss::cross_entropy(&model.forward_t(x, true)?, y)?;
        let v = scalar(&ce)?;
        Ok((ce, vec![("ce".into(), v)]))
    }

    fn logits(&self, model: &M, x: &Tensor) -> candle_core::Result<Tensor> {
        model.forward_t(x, false)
    }
}

/// MAT without BIBO: FTC + alpha·SO (Eq. 9 with beta = 0) on the model's
/// feature output `phi`, against fixed centers `mu` `[L, D]`. The logits are
/// the Section 3.3 head `phi · muᵀ`.
pub struct MatObjective {
    pub centers: Tensor,
    pub alpha: f64,
}

impl<M: ModuleT> Objective<M> for MatObjective {
    fn loss(
        &self,
        model: &M,
        x: &Tensor,
        y: &Tensor,
    ) -> candle_core::Result<(Tensor, Vec<(String, f64)>)> {
        let phi = model.forward_t(x, true)?;
        let ftc = ftc_loss(&phi, &self.centers, y)?;
        let mut terms = vec![("ftc".to_string(), scalar(&ftc)?)];
        let loss = if self.alpha != 0.0 {
            let so = so_loss(&phi, &self.centers, y)?;
            terms.push(("so".into(), scalar(&so)?));
            (ftc + (so * self.alpha)?)?
        } else {
            ftc
        };
        Ok((loss, terms))
    }

    fn logits(&self, model: &M, x: &Tensor) -> candle_core::Result<Tensor> {
        model.forward_t(x, false)?.matmul(&self.centers.t()?)
    }
}
