//! The YAML config of `mat-train` (see `pipelines/train/*.yaml`): what to
//! train, how, and how to evaluate each epoch. Unknown keys are errors;
//! every value is checked before any work starts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use super::objective::Method;
use super::{Adversary, Augment, InnerMax, Objective, Start, TrainConfig};
use crate::attacks::Pgd;
use crate::models::Arch;
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSpec {
    pub epochs: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    pub lr: f64,
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default)]
    pub nesterov: bool,
    /// Epochs after which the learning rate is multiplied by `lr_gamma`.
    #[serde(default)]
    pub lr_milestones: Vec<usize>,
    #[serde(default = "default_gamma")]
    pub lr_gamma: f64,
}

fn default_batch() -> usize {
    128
}
fn default_momentum() -> f64 {
    0.9
}
fn default_gamma() -> f64 {
    0.1
}

/// The inner maximisation of AT, TRADES, adversarial MMC and BIBO (L∞).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdversarySpec {
    pub eps: f64,
    pub steps: usize,
    pub step_size: f64,
    /// Grow eps linearly over the first epochs (0: off).
    #[serde(default)]
    pub warmup_epochs: usize,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatSpec {
    /// Weight of the SO loss (Eq. 9); 0 turns it off.
    #[serde(default)]
    pub alpha: f64,
    /// Weight of the BIBO loss (Eq. 9); 0 turns it off.
    #[serde(default)]
    pub beta: f64,
    /// Ramp alpha and beta linearly from 0 (epoch 1: FTC alone) to their
    /// values (epoch W + 1).
    #[serde(default)]
    pub warmup_epochs: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TradesSpec {
    #[serde(default = "default_trades_beta")]
    pub beta: f64,
}

fn default_trades_beta() -> f64 {
    6.0
}

impl Default for TradesSpec {
    fn default() -> Self {
        Self {
            beta: default_trades_beta(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmcSpec {
    /// Train on targeted PGD examples (needs `adversary`).
    #[serde(default)]
    pub adversarial: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentSpec {
    #[serde(default)]
    pub crop_padding: usize,
    #[serde(default)]
    pub flip: bool,
}

/// The PGD-L∞ run on a fixed evaluation subset after every `every`-th
/// epoch (a function of the epoch alone, so that a resumed run that raised
/// `optim.epochs` logs what an uninterrupted one does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalPgdSpec {
    pub eps: f64,
    pub steps: usize,
    pub step_size: f64,
    /// How many evaluation samples PGD runs on.
    pub limit: usize,
    /// Run it after every `every`-th epoch:
    /// the per-epoch figure only watches training, and on the quick MNIST
    /// schedule PGD-40 on 200 evaluation digits costs as much as a natural
    /// epoch.
    #[serde(default = "every_epoch")]
    pub every: usize,
}

fn every_epoch() -> usize {
    1
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// Test samples for the clean accuracy (a seeded subset); all if absent.
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub pgd: Option<EvalPgdSpec>,
}

/// A `mat-train` config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    pub method: Method,
    /// `small-cnn` or `wrn-DEPTH-WIDEN`.
    pub arch: String,
    /// A dataset of `data/datasets.yaml`.
    pub dataset: String,
    #[serde(default)]
    pub seed: u64,
    /// Train on a seeded subset of this many images; all if absent.
    #[serde(default)]
    pub train_limit: Option<usize>,
    /// The class centers file (from `mat-centers`) for MAT and MMC.
    #[serde(default)]
    pub centers: Option<PathBuf>,
    pub optim: OptimSpec,
    #[serde(default)]
    pub adversary: Option<AdversarySpec>,
    #[serde(default)]
    pub mat: MatSpec,
    #[serde(default)]
    pub trades: TradesSpec,
    #[serde(default)]
    pub mmc: MmcSpec,
    #[serde(default)]
    pub augment: AugmentSpec,
    #[serde(default)]
    pub eval: EvalSpec,
}

fn bad(field: &str, expected: &str, found: impl std::fmt::Display) -> Error {
    Error::field(field, expected, found)
}

fn positive(field: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(bad(field, "a number > 0", v))
    }
}

/// An L∞ budget: pixels lie in [0, 1], so a budget above 1 adds nothing.
fn unit(field: &str, v: f64) -> Result<()> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(bad(field, "a number in [0, 1] (pixels lie in [0, 1])", v))
    }
}

fn non_negative(field: &str, v: f64) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(bad(field, "a number >= 0", v))
    }
}

impl TrainSpec {
    /// Reads a config file with its `--set` overrides and checks every
    /// value; a problem names the file.
    pub fn load(path: &std::path::Path, sets: &[String]) -> Result<Self> {
        crate::config::load_checked(path, sets, Self::validate)
    }

    /// Checks every value; the first problem is the error.
    pub fn validate(&self) -> Result<Arch> {
        let arch: Arch = self.arch.parse().map_err(|e: Error| Error::In {
            field: "arch".into(),
            source: Box::new(e),
        })?;
        let o = &self.optim;
        if o.epochs == 0 {
            return Err(bad("optim.epochs", "at least 1", 0));
        }
        if o.batch_size == 0 {
            return Err(bad("optim.batch_size", "at least 1", 0));
        }
        if self.train_limit == Some(0) {
            return Err(bad(
                "train_limit",
                "at least 1 (or no train_limit: the whole split)",
                0,
            ));
        }
        if self.eval.limit == Some(0) {
            return Err(bad(
                "eval.limit",
                "at least 1 (or no eval.limit: the whole test split)",
                0,
            ));
        }
        positive("optim.lr", o.lr)?;
        non_negative("optim.momentum", o.momentum)?;
        non_negative("optim.weight_decay", o.weight_decay)?;
        non_negative("optim.lr_gamma", o.lr_gamma)?;
        if let Some(a) = &self.adversary {
            unit("adversary.eps", a.eps)?;
            positive("adversary.step_size", a.step_size)?;
            if a.steps == 0 {
                return Err(bad("adversary.steps", "at least 1", 0));
            }
        }
        non_negative("mat.alpha", self.mat.alpha)?;
        non_negative("mat.beta", self.mat.beta)?;
        non_negative("trades.beta", self.trades.beta)?;
        if let Some(p) = &self.eval.pgd {
            unit("eval.pgd.eps", p.eps)?;
            positive("eval.pgd.step_size", p.step_size)?;
            if p.steps == 0 {
                return Err(bad("eval.pgd.steps", "at least 1", 0));
            }
            if p.limit == 0 {
                return Err(bad("eval.pgd.limit", "at least 1", 0));
            }
            if p.every == 0 {
                return Err(bad("eval.pgd.every", "at least 1 (epochs)", 0));
            }
        }
        let m = self.method;
        if let Some(why) = (m.registration().needs_adversary)(self) {
            if self.adversary.is_none() {
                return Err(bad(
                    "adversary",
                    &format!(
                        "an `adversary:` section (eps, steps, step_size): method `{}` needs one because {why}",
                        m.name()
                    ),
                    "none",
                ));
            }
        }
        if m.uses_centers() && self.centers.is_none() {
            return Err(bad(
                "centers",
                &format!(
                    "a centers file for method `{}` (write one with `mat-centers`)",
                    m.name()
                ),
                "none",
            ));
        }
        if !m.uses_centers() && self.centers.is_some() {
            return Err(bad(
                "centers",
                &format!(
                    "no centers for method `{}` (only mat and mmc use them)",
                    m.name()
                ),
                "a centers file",
            ));
        }
        Ok(arch)
    }

    /// The inner maximisation of `adversary:`, started as the method starts
    /// it (AT and adversarial MMC: uniformly in the ball; TRADES and BIBO: at
    /// `x + 0.001·N(0, 1)`, TRADES' code).
    pub(crate) fn adversary(&self, start: Start) -> Result<Adversary> {
        let a = self
            .adversary
            .as_ref()
            .ok_or_else(|| bad("adversary", "an `adversary:` section", "none"))?;
        Ok(Adversary::new(
            InnerMax {
                eps: a.eps,
                steps: a.steps,
                step_size: a.step_size,
                start,
                warmup_epochs: a.warmup_epochs,
            },
            self.seed,
        ))
    }

    /// The objective of the method (its registration builds it).
    pub fn objective(&self) -> Result<Box<dyn Objective>> {
        (self.method.registration().build)(self)
    }

    pub fn train_config(&self) -> TrainConfig {
        let o = &self.optim;
        TrainConfig {
            epochs: o.epochs,
            batch_size: o.batch_size,
            lr: o.lr,
            momentum: o.momentum,
            weight_decay: o.weight_decay,
            nesterov: o.nesterov,
            lr_milestones: o.lr_milestones.clone(),
            lr_gamma: o.lr_gamma,
            seed: self.seed,
            augment: Augment {
                crop_padding: self.augment.crop_padding,
                flip: self.augment.flip,
            },
        }
    }

    /// The evaluation PGD and its eps.
    pub fn eval_pgd(&self) -> Option<(Pgd, f64)> {
        self.eval
            .pgd
            .as_ref()
            .map(|p| (Pgd::linf(p.steps, p.step_size), p.eps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> TrainSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    const BASE: &str =
        "method: natural\narch: small-cnn\ndataset: mnist-10k\noptim: {epochs: 1, lr: 0.01}\n";

    #[test]
    fn defaults_follow_trades() {
        let s = spec(BASE);
        assert_eq!(s.optim.batch_size, 128);
        assert_eq!(s.optim.momentum, 0.9);
        assert_eq!(s.trades.beta, 6.0);
        assert_eq!(s.validate().unwrap(), "small-cnn".parse::<Arch>().unwrap());
    }

    #[test]
    fn bad_values_are_refused_with_their_field() {
        let cases = [
            ("optim.lr", "optim: {epochs: 1, lr: -0.1}"),
            ("optim.epochs", "optim: {epochs: 0, lr: 0.1}"),
            (
                "adversary.eps",
                "adversary: {eps: -0.3, steps: 1, step_size: 0.1}",
            ),
            ("arch", "arch: resnet-9"),
            ("mat.beta", "mat: {beta: -1}"),
        ];
        for (field, patch) in cases {
            let mut v: serde_yaml::Value = serde_yaml::from_str(BASE).unwrap();
            let p: serde_yaml::Value = serde_yaml::from_str(patch).unwrap();
            for (k, val) in p.as_mapping().unwrap() {
                v.as_mapping_mut().unwrap().insert(k.clone(), val.clone());
            }
            let s: TrainSpec = serde_yaml::from_value(v).unwrap();
            let e = s.validate().unwrap_err().to_string();
            assert!(e.starts_with(field), "{field}: {e}");
        }
        let e = serde_yaml::from_str::<TrainSpec>(&BASE.replace("natural", "madry"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `madry`"), "{e}");
        let mut at = spec(&BASE.replace("natural", "at"));
        assert!(at.validate().unwrap_err().to_string().contains("adversary"));
        at.adversary = Some(AdversarySpec {
            eps: 0.3,
            steps: 10,
            step_size: 0.03,
            warmup_epochs: 0,
        });
        at.validate().unwrap();
        let mat = spec(&BASE.replace("natural", "mat"));
        assert!(mat
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("centers"));
    }
}
