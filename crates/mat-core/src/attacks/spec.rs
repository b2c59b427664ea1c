//! The config of `mat-attack`: which attack, its parameters, the budgets
//! (`eps`, a list), the data and the seed. Unknown keys are errors; every
//! value is checked before any work starts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{
    AdaptiveObjective, AdaptivePgd, Apgd, ApgdLoss, Attack, CarliniWagner, Composite, Ddn, Norm,
    Pgd, Target,
};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttackKind {
    Fgsm,
    Pgd,
    Cw,
    Ddn,
    /// APGD on the cross-entropy.
    ApgdCe,
    /// APGD on the difference of logits ratio.
    ApgdDlr,
    /// Targeted APGD-DLR over the most likely wrong classes.
    ApgdT,
    /// The attacks of `composite.attacks` in turn, each on the points
    /// still robust (AutoAttack's standard version without FAB and Square).
    Composite,
    /// PGD on the model's own training objective (MAT or TRADES).
    Adaptive,
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

impl AttackKind {
    /// The name in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fgsm => "fgsm",
            Self::Pgd => "pgd",
            Self::Cw => "cw",
            Self::Ddn => "ddn",
            Self::ApgdCe => "apgd-ce",
            Self::ApgdDlr => "apgd-dlr",
            Self::ApgdT => "apgd-t",
            Self::Composite => "composite",
            Self::Adaptive => "adaptive",
        }
    }
}

/// APGD (AutoAttack's defaults; `steps` is the shared `steps` key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApgdSpec {
    #[serde(default = "rho")]
    pub rho: f64,
    /// Targeted: the number of target classes, from the 2nd most likely on.
    #[serde(default = "target_classes")]
    pub target_classes: usize,
}

fn rho() -> f64 {
    0.75
}
fn target_classes() -> usize {
    9
}

impl Default for ApgdSpec {
    fn default() -> Self {
        Self {
            rho: rho(),
            target_classes: target_classes(),
        }
    }
}

/// The members of a composite attack, in the order they run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompositeSpec {
    #[serde(default = "composite_attacks")]
    pub attacks: Vec<AttackKind>,
}

fn composite_attacks() -> Vec<AttackKind> {
    vec![AttackKind::ApgdCe, AttackKind::ApgdT]
}

impl Default for CompositeSpec {
    fn default() -> Self {
        Self {
            attacks: composite_attacks(),
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
    #[serde(default)]
    pub apgd: ApgdSpec,
    #[serde(default)]
    pub composite: CompositeSpec,
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
        if self.iterative() {
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
        if !(self.apgd.rho > 0.0 && self.apgd.rho < 1.0) {
            return Err(bad("apgd.rho", "a number in (0, 1)", self.apgd.rho));
        }
        if self.apgd.target_classes == 0 {
            return Err(bad("apgd.target_classes", "at least 1", 0));
        }
        if self.attack == AttackKind::Composite {
            if self.composite.attacks.is_empty() {
                return Err(bad(
                    "composite.attacks",
                    "at least one attack",
                    "an empty list",
                ));
            }
            if let Some(k) = self.composite.attacks.iter().find(|k| {
                matches!(
                    k,
                    AttackKind::Cw | AttackKind::Ddn | AttackKind::Composite | AttackKind::Adaptive
                )
            }) {
                return Err(bad(
                    "composite.attacks",
                    "bounded attacks (fgsm, pgd, apgd-ce, apgd-dlr, apgd-t)",
                    k.name(),
                ));
            }
        }
        if self.attack == AttackKind::Adaptive && self.norm == NormSpec::L2 {
            return Err(bad("norm", "linf for the adaptive attack", "l2"));
        }
        if self.attack == AttackKind::Fgsm && self.norm == NormSpec::L2 {
            return Err(bad("norm", "linf for FGSM", "l2"));
        }
        Ok(())
    }

    pub fn minimum_norm(&self) -> bool {
        matches!(self.attack, AttackKind::Cw | AttackKind::Ddn)
    }

    /// The attack takes `steps` and `step_size`.
    fn iterative(&self) -> bool {
        matches!(
            self.attack,
            AttackKind::Pgd
                | AttackKind::ApgdCe
                | AttackKind::ApgdDlr
                | AttackKind::ApgdT
                | AttackKind::Composite
                | AttackKind::Adaptive
        )
    }

    fn norm(&self) -> Norm {
        match self.norm {
            NormSpec::Linf => Norm::Linf,
            NormSpec::L2 => Norm::L2,
        }
    }

    /// PGD's step for budget `eps`: `step_size`, or eps·0.01/0.3.
    fn pgd_step(&self, eps: f64) -> f64 {
        self.step_size.unwrap_or(eps * 0.01 / 0.3)
    }

    /// The attack for budget `eps`. The adaptive attack needs the model's
    /// training objective (read from its file by
    /// [`AdaptiveObjective::from_model_file`]).
    pub fn build(
        &self,
        eps: f64,
        objective: Option<&AdaptiveObjective>,
    ) -> Result<Box<dyn Attack>> {
        if self.attack == AttackKind::Composite {
            let members = self
                .composite
                .attacks
                .iter()
                .map(|&k| self.build_one(k, eps, objective))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Box::new(Composite::new(members)?));
        }
        self.build_one(self.attack, eps, objective)
    }

    fn build_one(
        &self,
        kind: AttackKind,
        eps: f64,
        objective: Option<&AdaptiveObjective>,
    ) -> Result<Box<dyn Attack>> {
        let apgd = |loss| {
            Box::new(Apgd {
                norm: self.norm(),
                steps: self.steps,
                loss,
                rho: self.apgd.rho,
                restarts: self.restarts,
                target_classes: self.apgd.target_classes,
            })
        };
        Ok(match kind {
            AttackKind::Composite => {
                return Err(bad("composite.attacks", "bounded attacks", "composite"))
            }
            AttackKind::Adaptive => Box::new(AdaptivePgd {
                steps: self.steps,
                step_size: self.pgd_step(eps),
                objective: objective
                    .ok_or_else(|| {
                        Error::Invalid(
                            "the adaptive attack needs the model's training objective".into(),
                        )
                    })?
                    .clone(),
            }),
            AttackKind::ApgdCe => apgd(ApgdLoss::Ce),
            AttackKind::ApgdDlr => apgd(ApgdLoss::Dlr),
            AttackKind::ApgdT => apgd(ApgdLoss::DlrTargeted),
            AttackKind::Fgsm => Box::new(Pgd::fgsm()),
            AttackKind::Pgd => Box::new(Pgd {
                norm: self.norm(),
                steps: self.steps,
                step_size: self.pgd_step(eps),
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
        })
    }
}
