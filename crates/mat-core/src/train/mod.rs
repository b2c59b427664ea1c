//! One training loop for every method: epochs, seeded per-epoch shuffle,
//! piecewise learning rate, SGD, and a log row per epoch. A method is an
//! [`Objective`]: it turns a batch into a loss and its named terms.

pub mod objective;

use std::time::Instant;

use candle_core::{ModuleT, Tensor, Var, D};

pub use objective::{MatObjective, Natural, Objective};

use crate::data::Split;
use crate::nn::ParamStore;
use crate::optim::{Sgd, SgdConfig};
use crate::rng::SeededRng;

/// What every method shares.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    /// Epochs (1-based) after which the learning rate is multiplied by `lr_gamma`.
    pub lr_milestones: Vec<usize>,
    pub lr_gamma: f64,
    pub seed: u64,
}

impl TrainConfig {
    /// The learning rate of `epoch` (1-based): `lr · gamma^(milestones passed)`.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let passed = self.lr_milestones.iter().filter(|&&m| epoch > m).count();
        self.lr * self.lr_gamma.powi(passed as i32)
    }
}

/// One row of the training log.
#[derive(Debug, Clone)]
pub struct EpochLog {
    pub epoch: usize,
    pub lr: f64,
    /// Batch means of each loss term, averaged over the epoch.
    pub terms: Vec<(String, f64)>,
    pub clean_accuracy: f64,
    pub seconds: f64,
}

/// Accuracy of `logits(x)` on a split, in eval mode, in batches.
pub fn accuracy(
    logits: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    split: &Split,
    batch: usize,
) -> candle_core::Result<f64> {
    let mut correct = 0usize;
    for start in (0..split.len()).step_by(batch) {
        let n = batch.min(split.len() - start);
        let pred = logits(&split.images.narrow(0, start, n)?)?.argmax(D::Minus1)?;
        let y = split.labels.narrow(0, start, n)?;
        correct += pred
            .eq(&y)?
            .to_dtype(candle_core::DType::U32)?
            .sum_all()?
            .to_scalar::<u32>()? as usize;
    }
    Ok(correct as f64 / split.len().max(1) as f64)
}

/// Trains `model`'s parameters in `store` on `train` with `objective`,
/// evaluating clean accuracy on `eval` after every epoch; `on_epoch` sees
/// each log row as it is made (progress, checkpoints).
pub fn fit<M: ModuleT, O: Objective<M>>(
    model: &M,
    store: &ParamStore,
    objective: &O,
    train: &Split,
    eval: &Split,
    cfg: &TrainConfig,
    mut on_epoch: impl FnMut(&EpochLog) -> crate::Result<()>,
) -> crate::Result<Vec<EpochLog>> {
    let vars: Vec<Var> = store.vars().into_iter().map(|(_, v)| v).collect();
    let mut opt = Sgd::new(
        vars,
        SgdConfig {
            lr: cfg.lr,
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
            nesterov: cfg.nesterov,
        },
    );
    let mut shuffle = SeededRng::for_purpose(cfg.seed, "shuffle");
    let mut logs = Vec::new();
    for epoch in 1..=cfg.epochs {
        let start = Instant::now();
        let lr = cfg.lr_at(epoch);
        opt.set_lr(lr);
        let order: Vec<u32> = shuffle
            .permutation(train.len())
            .into_iter()
            .map(|i| i as u32)
            .collect();
        let mut sums: Vec<(String, f64)> = Vec::new();
        let mut batches = 0usize;
        for chunk in order.chunks(cfg.batch_size) {
            let idx = Tensor::new(chunk, train.images.device())?;
            let x = train.images.index_select(&idx, 0)?;
            let y = train.labels.index_select(&idx, 0)?;
            let (loss, terms) = objective.loss(model, &x, &y)?;
            opt.step(&loss.backward()?)?;
            if sums.is_empty() {
                sums = terms.iter().map(|(n, _)| (n.clone(), 0.0)).collect();
            }
            for (s, (_, v)) in sums.iter_mut().zip(&terms) {
                s.1 += v;
            }
            batches += 1;
        }
        let clean_accuracy = accuracy(|x| objective.logits(model, x), eval, 500)?;
        let log = EpochLog {
            epoch,
            lr,
            terms: sums
                .into_iter()
                .map(|(n, s)| (n, s / batches.max(1) as f64))
                .collect(),
            clean_accuracy,
            seconds: start.elapsed().as_secs_f64(),
        };
        on_epoch(&log)?;
        logs.push(log);
    }
    Ok(logs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piecewise_learning_rate() {
        let cfg = TrainConfig {
            epochs: 100,
            batch_size: 128,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
            lr_milestones: vec![55, 75, 90],
            lr_gamma: 0.1,
            seed: 0,
        };
        assert_eq!(cfg.lr_at(1), 0.01);
        assert_eq!(cfg.lr_at(55), 0.01);
        assert!((cfg.lr_at(56) - 0.001).abs() < 1e-12);
        assert!((cfg.lr_at(91) - 0.00001).abs() < 1e-12);
    }
}
