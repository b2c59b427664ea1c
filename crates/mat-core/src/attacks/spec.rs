//! The config of `mat-attack` and the registry of attacks.
//!
//! A config names its attack, the budgets (`eps`, a list), the data, the
//! seed and the keys every gradient attack shares (`steps`, `step_size`,
//! `restarts`, …). An attack with settings of its own reads them from its
//! section (`cw:`, `ddn:`, `apgd:`, `composite:`), a type its module owns
//! (serde, `Default` = the reference's defaults). [`REGISTRY`] is the one
//! list of attacks: configs, `mat-attack --help`, composites and the
//! invariant test all read it, so a new attack is one file plus one line
//! there. Unknown keys are errors; every value is checked before any work
//! starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{
    adaptive, apgd, composite, cw, ddn, fab, pgd, square, AdaptiveObjective, Attack, Norm,
};
use crate::{Error, Result};

/// Whether an attack works within a budget or searches for the smallest
/// perturbation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Within the eps-ball of each `eps` of the config.
    Bounded,
    /// Minimum-norm (C&W, DDN): runs once; its robust accuracy at an eps
    /// comes from the norms it found.
    MinimumNorm,
}

/// What building an attack may need beside its config.
#[derive(Default, Clone, Copy)]
pub struct Context<'a> {
    /// The attacked model's training objective (read from its file by
    /// [`AdaptiveObjective::from_model_file`]): the adaptive attack's loss.
    pub objective: Option<&'a AdaptiveObjective>,
}

/// One attack of the registry.
pub struct Registration {
    /// The name in configs and on the command line.
    pub name: &'static str,
    /// One line for `mat-attack --help`.
    pub summary: &'static str,
    pub budget: Budget,
    /// The norms it attacks in; the first is its default.
    pub norms: &'static [Norm],
    /// Reads the shared `steps` and `step_size` keys.
    pub iterative: bool,
    /// Needs [`Context::objective`].
    pub needs_objective: bool,
    /// Its own config section, if it has settings beyond the shared keys.
    pub section: Option<&'static str>,
    /// Checks its section and the shared values it reads.
    pub check: fn(&AttackSpec) -> Result<()>,
    /// The attack for budget `eps`.
    pub build: fn(&AttackSpec, f64, Context) -> Result<Box<dyn Attack>>,
    /// Configs with small budgets (YAML keys over a base config, each with
    /// its `eps`): the invariant test runs every one.
    pub examples: &'static [&'static str],
}

/// Every attack `mat-attack` can run, in the order `--help` lists them.
pub const REGISTRY: &[&Registration] = &[
    &pgd::FGSM,
    &pgd::PGD,
    &cw::CW,
    &ddn::DDN,
    &apgd::APGD_CE,
    &apgd::APGD_DLR,
    &apgd::APGD_T,
    &fab::FAB_T,
    &square::SQUARE,
    &composite::COMPOSITE,
    &composite::AUTOATTACK,
    &adaptive::ADAPTIVE,
];

/// The registered attack called `name`.
pub fn find(name: &str) -> Result<&'static Registration> {
    REGISTRY
        .iter()
        .copied()
        .find(|r| r.name == name)
        .ok_or_else(|| {
            bad(
                "attack",
                &format!("one of {}", names(|_| true)),
                format!("unknown variant `{name}`"),
            )
        })
}

/// The names of the registered attacks that satisfy `keep`, comma-separated.
pub fn names(keep: impl Fn(&Registration) -> bool) -> String {
    REGISTRY
        .iter()
        .filter(|r| keep(r))
        .map(|r| r.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The attacks as `mat-attack --help` lists them.
pub fn help() -> String {
    let mut s = String::from("Attacks (--attack):\n");
    for r in REGISTRY {
        let norms: Vec<&str> = r.norms.iter().map(|n| n.name()).collect();
        let budget = match r.budget {
            Budget::Bounded => "bounded",
            Budget::MinimumNorm => "minimum norm",
        };
        s.push_str(&format!(
            "  {:<10} {} ({budget}; {}{})\n",
            r.name,
            r.summary,
            norms.join(", "),
            r.section
                .map(|k| format!("; settings under `{k}:`"))
                .unwrap_or_default()
        ));
    }
    s
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

/// A `mat-attack` config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackSpec {
    /// A model file written by `mat-train`.
    pub model: PathBuf,
    /// A dataset of `data/datasets.yaml`.
    pub data: String,
    /// `test` or `train`.
    #[serde(default = "test_split")]
    pub split: String,
    /// A name of [`REGISTRY`].
    pub attack: String,
    /// Budgets, each run in turn (bounded attacks); for C&W and DDN the
    /// budgets at which robust accuracy is computed from the norms found.
    #[serde(default)]
    pub eps: Vec<f64>,
    /// The attack's norm; absent: its first (L∞ where it has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm: Option<NormSpec>,
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
    /// Attack a seeded subset of this many samples; all if absent.
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "batch")]
    pub batch_size: usize,
    /// The attacks' own sections (`cw:`, `apgd:`, …), each read by the
    /// module that owns it; any other key is refused by [`Self::validate`].
    #[serde(flatten)]
    pub sections: BTreeMap<String, serde_yaml::Value>,
}

fn test_split() -> String {
    "test".into()
}
fn pgd_steps() -> usize {
    40
}
fn yes() -> bool {
    true
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

/// `field: expected …, found …`.
pub(crate) fn bad(field: &str, expected: &str, found: impl std::fmt::Display) -> Error {
    Error::field(field, expected, found)
}

/// Refuses 0 for a count.
pub(crate) fn at_least_one(field: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(bad(field, "at least 1", 0));
    }
    Ok(())
}

/// The check of an attack without settings of its own.
pub(crate) fn no_check(_: &AttackSpec) -> Result<()> {
    Ok(())
}

impl AttackSpec {
    /// Reads a config file with its `--set` overrides and checks every
    /// value; a problem names the file.
    pub fn load(path: &Path, sets: &[String]) -> Result<Self> {
        crate::config::load_checked(path, sets, Self::validate)
    }

    /// The registered attack of this config.
    pub fn registration(&self) -> Result<&'static Registration> {
        find(&self.attack)
    }

    /// The section `key` as its owner's type; its defaults when absent.
    pub fn section<T: DeserializeOwned + Default>(&self, key: &str) -> Result<T> {
        match self.sections.get(key) {
            None => Ok(T::default()),
            Some(v) => serde_yaml::from_value(v.clone()).map_err(|e| bad(key, "its settings", e)),
        }
    }

    /// Checks every value; the first problem is the error.
    pub fn validate(&self) -> Result<()> {
        let reg = self.registration()?;
        if !matches!(self.split.as_str(), "test" | "train") {
            return Err(bad("split", "`test` or `train`", &self.split));
        }
        if self.eps.is_empty() && !self.minimum_norm() {
            return Err(bad("eps", "at least one budget (e.g. --eps 0.3)", "none"));
        }
        if let Some(e) = self.eps.iter().find(|e| !(e.is_finite() && **e >= 0.0)) {
            return Err(bad("eps", "numbers >= 0", e));
        }
        if reg.iterative {
            at_least_one("steps", self.steps)?;
            if let Some(s) = self.step_size {
                if !(s.is_finite() && s > 0.0) {
                    return Err(bad("step_size", "a number > 0", s));
                }
            }
        }
        at_least_one("restarts", self.restarts)?;
        at_least_one("batch_size", self.batch_size)?;
        for key in self.sections.keys() {
            let owner = REGISTRY
                .iter()
                .find(|r| r.section == Some(key.as_str()))
                .ok_or_else(|| {
                    let sections: Vec<&str> = REGISTRY.iter().filter_map(|r| r.section).collect();
                    bad(
                        key,
                        &format!(
                            "a key of the attack config or an attack's section ({})",
                            sections.join(", ")
                        ),
                        format!("unknown field `{key}`"),
                    )
                })?;
            (owner.check)(self)?;
        }
        (reg.check)(self)?;
        if !reg.norms.contains(&self.norm()) {
            let norms: Vec<&str> = reg.norms.iter().map(|n| n.name()).collect();
            return Err(bad(
                "norm",
                &format!("{} for {}", norms.join(" or "), reg.name),
                self.norm().name(),
            ));
        }
        Ok(())
    }

    pub fn minimum_norm(&self) -> bool {
        self.registration()
            .is_ok_and(|r| r.budget == Budget::MinimumNorm)
    }

    pub fn norm(&self) -> Norm {
        match self.norm {
            Some(NormSpec::Linf) => Norm::Linf,
            Some(NormSpec::L2) => Norm::L2,
            None => self.registration().map_or(Norm::Linf, |r| r.norms[0]),
        }
    }

    /// PGD's step for budget `eps`: `step_size`, or eps·0.01/0.3.
    pub(crate) fn pgd_step(&self, eps: f64) -> f64 {
        self.step_size.unwrap_or(eps * 0.01 / 0.3)
    }

    /// The attack for budget `eps`.
    pub fn build(&self, eps: f64, ctx: Context) -> Result<Box<dyn Attack>> {
        (self.registration()?.build)(self, eps, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> AttackSpec {
        serde_yaml::from_str(&format!(
            "model: m.safetensors\ndata: mnist-10k\neps: [0.3]\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn every_registered_name_is_unique() {
        for (i, a) in REGISTRY.iter().enumerate() {
            for b in &REGISTRY[i + 1..] {
                assert_ne!(a.name, b.name);
            }
            assert!(!a.norms.is_empty() && !a.examples.is_empty(), "{}", a.name);
        }
    }

    #[test]
    fn unknown_keys_attacks_and_sections_are_refused_with_their_field() {
        for (extra, want) in [
            ("attack: madry", "attack: expected one of fgsm, pgd"),
            (
                "attack: pgd\nstepz: 3",
                "stepz: expected a key of the attack config",
            ),
            ("attack: cw\ncw: {steps: 0}", "cw.steps"),
            ("attack: pgd\ncw: {stepz: 1}", "cw: expected its settings"),
            ("attack: fgsm\nnorm: l2", "norm: expected linf for fgsm"),
            ("attack: apgd-ce\napgd: {rho: 1.5}", "apgd.rho"),
        ] {
            let e = spec(extra).validate().unwrap_err().to_string();
            assert!(e.starts_with(want), "{extra}: {e}");
        }
        spec("attack: cw\ncw: {steps: 10}").validate().unwrap();
    }
}
