//! Max-Mahalanobis center loss (Pang et al., 2020), clean or adversarial.

use candle_core::Tensor;

use super::inner::{Adversary, Start};
use super::objective::{scalar, HeadKind, Loss, MethodRegistration, Objective};
use crate::attacks::pgd::random_wrong_classes;
use crate::losses::{cross_entropy_sum, mmc_loss};
use crate::models::Classifier;
use crate::rng::SeededRng;

pub const METHOD: MethodRegistration = MethodRegistration {
    name: "mmc",
    summary: "1/2 |z - mu_y|^2 on clean or targeted PGD examples (Pang et al.)",
    head: HeadKind::Mmc,
    needs_adversary: |spec| spec.mmc.adversarial.then_some("mmc.adversarial is true"),
    build: |spec| {
        let adversary = match spec.mmc.adversarial {
            true => Some(spec.adversary(Start::Uniform)?),
            false => None,
        };
        Ok(Box::new(Mmc::new(adversary, spec.seed)))
    },
};

/// MMC (Pang et al., 2020): `1/2 |z - mu_y|^2` on the model's features,
/// on clean inputs or, with an adversary, on targeted PGD examples pushed
/// towards a uniformly drawn wrong class (MMC's adversarial variant).
pub struct Mmc {
    pub adversary: Option<Adversary>,
    pub seed: u64,
    targets: SeededRng,
}

impl Mmc {
    pub fn new(adversary: Option<Adversary>, seed: u64) -> Self {
        Self {
            adversary,
            seed,
            targets: SeededRng::for_purpose(seed, "mmc-targets/1"),
        }
    }

    fn centers(model: &Classifier) -> crate::Result<&Tensor> {
        model.head.centers().ok_or_else(|| {
            crate::Error::field("head", "centers (MMC trains against fixed centers)", "none")
        })
    }
}

impl Objective for Mmc {
    fn loss(&mut self, model: &Classifier, x: &Tensor, y: &Tensor) -> crate::Result<Loss> {
        let mu = Self::centers(model)?;
        let x = match &mut self.adversary {
            None => x.clone(),
            Some(adv) => {
                let t = random_wrong_classes(y, model.num_classes, &mut self.targets)?;
                // Targeted: descend the cross-entropy of the target class.
                adv.maximise(x, |v| {
                    cross_entropy_sum(&model.logits_t(v, false)?, &t)?.neg()
                })?
            }
        };
        let loss = mmc_loss(&model.features_t(&x, true)?, mu, y)?;
        let v = scalar(&loss)?;
        Ok((loss, vec![("mmc".into(), v)]))
    }

    fn start_epoch(&mut self, epoch: usize) {
        if let Some(a) = &mut self.adversary {
            a.start_epoch(epoch)
        }
        self.targets = SeededRng::for_purpose(self.seed, &format!("mmc-targets/{epoch}"));
    }
}
