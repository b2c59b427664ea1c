//! One training loop for every method ([`run::Prepared::run`], burn's
//! Learner is the model): epochs, seeded per-epoch shuffle and augmentation,
//! piecewise learning rate, SGD, evaluation, a log row and a checkpoint per
//! epoch, resume. A method is an [`Objective`]: it turns a batch into a
//! loss and its named terms.
//!
//! Every random stream is keyed by (seed, purpose, epoch), so a run resumed
//! from the checkpoint after epoch k continues exactly as the uninterrupted
//! run would have.

pub mod at;
pub mod augment;
pub mod inner;
pub mod mat;
pub mod mmc;
pub mod natural;
pub mod objective;
pub mod run;
pub mod spec;
pub mod trades;

use candle_core::{Tensor, Var, D};

pub use at::AdversarialCe;
pub use augment::Augment;
pub use inner::{Adversary, InnerMax, Start};
pub use mat::Mat;
pub use mmc::Mmc;
pub use natural::Natural;
pub use objective::{Method, MethodRegistration, Objective, METHODS};
pub use trades::Trades;

use crate::attacks::{run_attack, Pgd};
use crate::data::Split;
use crate::models::Classifier;
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
    pub augment: Augment,
}

impl TrainConfig {
    /// The learning rate of `epoch` (1-based): `lr · gamma^(milestones passed)`.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let passed = self.lr_milestones.iter().filter(|&&m| epoch > m).count();
        self.lr * self.lr_gamma.powi(passed as i32)
    }
}

/// One row of the training log.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochLog {
    pub epoch: usize,
    pub lr: f64,
    /// Batch means of each loss term, averaged over the epoch.
    pub terms: Vec<(String, f64)>,
    pub clean_accuracy: f64,
    /// Accuracy under the evaluation PGD, where one is configured.
    pub pgd_accuracy: Option<f64>,
    pub seconds: f64,
}

/// Accuracy of `logits(x)` on a split, in batches.
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

/// Accuracy under `pgd` at `eps` on a split, in batches, with a random start
/// keyed by `seed` (the same points every epoch).
pub fn pgd_accuracy(
    model: &Classifier,
    split: &Split,
    pgd: &Pgd,
    eps: f64,
    seed: u64,
    batch: usize,
) -> crate::Result<f64> {
    let mut rng = SeededRng::for_purpose(seed, "eval-pgd");
    let mut robust = 0usize;
    for start in (0..split.len()).step_by(batch) {
        let n = batch.min(split.len() - start);
        let x = split.images.narrow(0, start, n)?;
        let y = split.labels.narrow(0, start, n)?;
        let out = run_attack(pgd, model, &x, &y, eps, &mut rng)?;
        robust += out.success.iter().filter(|s| !**s).count();
    }
    Ok(robust as f64 / split.len().max(1) as f64)
}

/// How each epoch is evaluated.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub split: Split,
    /// PGD and its eps, run on `pgd_limit` samples of `split` drawn with `seed`.
    pub pgd: Option<(Pgd, f64)>,
    pub pgd_limit: usize,
    /// PGD runs after every `pgd_every`-th epoch.
    pub pgd_every: usize,
    pub seed: u64,
}

impl Evaluation {
    pub fn clean(split: Split) -> Self {
        Self {
            split,
            pgd: None,
            pgd_limit: 0,
            pgd_every: 1,
            seed: 0,
        }
    }

    /// (clean accuracy, PGD accuracy) of `model` in eval mode after `epoch`:
    /// PGD only after every `pgd_every`-th epoch. A function of the epoch
    /// alone, not of the last one: `--resume` may raise `optim.epochs`, and
    /// the resumed log must equal an uninterrupted run's.
    pub fn run_after(&self, model: &Classifier, epoch: usize) -> crate::Result<(f64, Option<f64>)> {
        let clean = accuracy(|x| model.logits_t(x, false), &self.split, 500)?;
        let due = epoch.is_multiple_of(self.pgd_every.max(1));
        let pgd = match &self.pgd {
            Some(_) if !due => None,
            None => None,
            Some((pgd, eps)) => {
                // A seeded sample: test splits may be sorted by class.
                let sub = self.split.subset(Some(self.pgd_limit), Some(self.seed))?;
                Some(pgd_accuracy(model, &sub, pgd, *eps, self.seed, 250)?)
            }
        };
        Ok((clean, pgd))
    }
}

/// The optimiser and the loop over batches of one model.
pub struct Trainer<'a> {
    pub model: &'a Classifier,
    pub objective: &'a mut dyn Objective,
    pub opt: Sgd,
    pub cfg: TrainConfig,
}

impl<'a> Trainer<'a> {
    pub fn new(
        model: &'a Classifier,
        store: &ParamStore,
        objective: &'a mut dyn Objective,
        cfg: TrainConfig,
    ) -> Self {
        let vars: Vec<Var> = store.vars().into_iter().map(|(_, v)| v).collect();
        let opt = Sgd::new(
            vars,
            SgdConfig {
                lr: cfg.lr,
                momentum: cfg.momentum,
                weight_decay: cfg.weight_decay,
                nesterov: cfg.nesterov,
            },
        );
        Self {
            model,
            objective,
            opt,
            cfg,
        }
    }

    /// Trains one epoch (1-based) and returns the epoch means of the loss
    /// terms; `progress(batches done, batches, running loss)` is called
    /// after every batch.
    pub fn epoch(
        &mut self,
        epoch: usize,
        train: &Split,
        progress: &mut dyn FnMut(usize, usize, f64),
    ) -> crate::Result<Vec<(String, f64)>> {
        let seed = self.cfg.seed;
        self.opt.set_lr(self.cfg.lr_at(epoch));
        self.model.net.start_epoch(epoch);
        self.objective.start_epoch(epoch);
        let order: Vec<u32> = SeededRng::for_purpose(seed, &format!("shuffle/{epoch}"))
            .permutation(train.len())
            .into_iter()
            .map(|i| i as u32)
            .collect();
        let mut augment_rng = SeededRng::for_purpose(seed, &format!("augment/{epoch}"));
        let batches = order.len().div_ceil(self.cfg.batch_size);
        let mut sums: Vec<(String, f64)> = Vec::new();
        let mut total = 0.0;
        for (b, chunk) in order.chunks(self.cfg.batch_size).enumerate() {
            let idx = Tensor::new(chunk, train.images.device())?;
            let x = self
                .cfg
                .augment
                .apply(&train.images.index_select(&idx, 0)?, &mut augment_rng)?;
            let y = train.labels.index_select(&idx, 0)?;
            let (loss, terms) = self.objective.loss(self.model, &x, &y)?;
            let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                return Err(crate::Error::Diverged {
                    epoch,
                    batch: b + 1,
                    value,
                    terms: format!("{terms:?}"),
                });
            }
            self.opt.step(&loss.backward()?)?;
            if sums.is_empty() {
                sums = terms.iter().map(|(n, _)| (n.clone(), 0.0)).collect();
            }
            for (s, (_, v)) in sums.iter_mut().zip(&terms) {
                s.1 += v;
            }
            total += value;
            progress(b + 1, batches, total / (b + 1) as f64);
        }
        Ok(sums
            .into_iter()
            .map(|(n, s)| (n, s / batches.max(1) as f64))
            .collect())
    }
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
            augment: Augment::default(),
        };
        assert_eq!(cfg.lr_at(1), 0.01);
        assert_eq!(cfg.lr_at(55), 0.01);
        assert!((cfg.lr_at(56) - 0.001).abs() < 1e-12);
        assert!((cfg.lr_at(91) - 0.00001).abs() < 1e-12);
    }
}
