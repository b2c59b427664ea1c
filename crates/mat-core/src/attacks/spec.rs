//! The config of `mat-attack`: which attack, its parameters, the budgets
//! (`eps`, a list), the data and the seed. Unknown keys are errors; every
//! value is checked before any work starts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Attack, CarliniWagner, Ddn, Norm, Pgd, Target};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttackKind {
    Fgsm,
    Pgd,
    Cw,
    Ddn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormSpec {
    Linf,
    L2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetSpec {
    None,
    Random,
    LeastLikely,
}

/// C&W-L2 (foolbox 3's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CwSpec {
    #[serde(default = "cw_bs")]
    pub binary_search_steps: usize,
    #[serde(default = "cw_steps")]
    pub steps: usize,
    #[serde(default = "cw_step")]
    pub step_size: f64,
    #[serde(default)]
    pub confidence: f64,
    #[serde(default = "cw_c")]
    pub initial_const: f64,
    #[serde(default = "yes")]
    pub abort_early: bool,
}

fn cw_bs() -> usize {
    9
}
fn cw_steps() -> usize {
    10_000
}
fn cw_step() -> f64 {
    0.01
}
fn cw_c() -> f64 {
    1e-3
}
fn yes() -> bool {
    true
}

impl Default for CwSpec {
    fn default() -> Self {
        Self {
            binary_search_steps: cw_bs(),
            steps: cw_steps(),
            step_size: cw_step(),
            confidence: 0.0,
            initial_const: cw_c(),
            abort_early: true,
        }
    }
}

/// DDN (foolbox 3.3's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DdnSpec {
    #[serde(default = "ddn_steps")]
    pub steps: usize,
    #[serde(default = "one")]
    pub init_norm: f64,
    #[serde(default = "ddn_gamma")]
    pub gamma: f64,
}

fn ddn_steps() -> usize {
    100
}
fn one() -> f64 {
    1.0
}
fn ddn_gamma() -> f64 {
    0.05
}

impl Default for DdnSpec {
    fn default() -> Self {
        Self {
            steps: ddn_steps(),
            init_norm: 1.0,
            gamma: ddn_gamma(),
        }
    }
}

/// A `mat-attack` config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackSpec {
    /// A model file written by `mat-train`.
    pub model: PathBuf,
    /// A dataset of `data/datasets.yaml`.
    pub data: String,
    /// `test` or `train`.
    #[serde(default = "test_split")]
    pub split: String,
    pub attack: AttackKind,
    /// Budgets, each run in turn (bounded attacks); for C&W and DDN the
    /// budgets at which robust accuracy is computed from the norms found.
    #[serde(default)]
    pub eps: Vec<f64>,
    #[serde(default = "linf")]
    pub norm: NormSpec,
    /// PGD steps.
    #[serde(default = "pgd_steps")]
    pub steps: usize,
    /// PGD step size; absent: eps·0.01/0.3 (foolbox's LinfPGD relative step).
    #[serde(default)]
    pub step_size: Option<f64>,
    #[serde(default = "yes")]
    pub random_start: bool,
    #[serde(default = "one_usize")]
    pub restarts: usize,
    #[serde(default = "no_target")]
    pub target: TargetSpec,
    #[serde(default)]
    pub cw: CwSpec,
    #[serde(default)]
    pub ddn: DdnSpec,
    /// Attack a seeded subset of this many samples; all if absent.
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "batch")]
    pub batch_size: usize,
}

fn test_split() -> String {
    "test".into()
}
fn linf() -> NormSpec {
    NormSpec::Linf
}
fn pgd_steps() -> usize {
    40
}
fn one_usize() -> usize {
    1
}
fn no_target() -> TargetSpec {
    TargetSpec::None
}
fn batch() -> usize {
    250
}

fn bad(field: &str, expected: &str, found: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{field}: expected {expected}, found {found}"))
}

impl AttackSpec {
    /// Checks every value; the first problem is the error.
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.split.as_str(), "test" | "train") {
            return Err(bad("split", "`test` or `train`", &self.split));
        }
        if self.eps.is_empty() && !self.minimum_norm() {
            return Err(bad("eps", "at least one budget (e.g. --eps 0.3)", "none"));
        }
        if let Some(e) = self.eps.iter().find(|e| !(e.is_finite() && **e >= 0.0)) {
            return Err(bad("eps", "numbers >= 0", e));
        }
        if self.attack == AttackKind::Pgd {
            if self.steps == 0 {
                return Err(bad("steps", "at least 1", 0));
            }
            if let Some(s) = self.step_size {
                if !(s.is_finite() && s > 0.0) {
                    return Err(bad("step_size", "a number > 0", s));
                }
            }
        }
        if self.restarts == 0 {
            return Err(bad("restarts", "at least 1", 0));
        }
        if self.batch_size == 0 {
            return Err(bad("batch_size", "at least 1", 0));
        }
        if self.attack == AttackKind::Cw && (self.cw.steps == 0 || self.cw.binary_search_steps == 0)
        {
            return Err(bad("cw.steps / cw.binary_search_steps", "at least 1", 0));
        }
        if self.attack == AttackKind::Ddn && self.ddn.steps == 0 {
            return Err(bad("ddn.steps", "at least 1", 0));
        }
        if self.attack == AttackKind::Fgsm && self.norm == NormSpec::L2 {
            return Err(bad("norm", "linf for FGSM", "l2"));
        }
        Ok(())
    }

    pub fn minimum_norm(&self) -> bool {
        matches!(self.attack, AttackKind::Cw | AttackKind::Ddn)
    }

    /// The attack for budget `eps`.
    pub fn build(&self, eps: f64) -> Box<dyn Attack> {
        match self.attack {
            AttackKind::Fgsm => Box::new(Pgd::fgsm()),
            AttackKind::Pgd => Box::new(Pgd {
                norm: match self.norm {
                    NormSpec::Linf => Norm::Linf,
                    NormSpec::L2 => Norm::L2,
                },
                steps: self.steps,
                step_size: self.step_size.unwrap_or(eps * 0.01 / 0.3),
                random_start: self.random_start,
                restarts: self.restarts,
                target: match self.target {
                    TargetSpec::None => Target::Untargeted,
                    TargetSpec::Random => Target::Random,
                    TargetSpec::LeastLikely => Target::LeastLikely,
                },
            }),
            AttackKind::Cw => Box::new(CarliniWagner {
                binary_search_steps: self.cw.binary_search_steps,
                steps: self.cw.steps,
                step_size: self.cw.step_size,
                confidence: self.cw.confidence,
                initial_const: self.cw.initial_const,
                abort_early: self.cw.abort_early,
            }),
            AttackKind::Ddn => Box::new(Ddn {
                steps: self.ddn.steps,
                init_norm: self.ddn.init_norm,
                gamma: self.ddn.gamma,
            }),
        }
    }
}
