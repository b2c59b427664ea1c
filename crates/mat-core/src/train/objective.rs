//! Training objectives: how a batch becomes a loss, one per method, and the
//! registry of methods ([`METHODS`]): a new method is one file (its
//! objective and its [`MethodRegistration`]) plus one line there.
//!
//! Every objective trains a [`Classifier`]; its forward passes for the loss
//! run in train mode (dropout, batch statistics), its inner maximisations in
//! eval mode with frozen weights, as TRADES' reference code does.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::spec::TrainSpec;
use super::{at, mat, mmc, natural, trades};
use crate::models::Classifier;
use crate::{Error, Result};

/// A loss and its named terms (batch means, for the log).
pub type Loss = (Tensor, Vec<(String, f64)>);

/// A training method.
pub trait Objective {
    /// The scalar loss to minimise on one batch and its named terms.
    fn loss(&mut self, model: &Classifier, x: &Tensor, y: &Tensor) -> crate::Result<Loss>;

    /// Called before each epoch (1-based): re-keys random streams, moves
    /// an eps warm-up.
    fn start_epoch(&mut self, _epoch: usize) {}
}

pub(crate) fn scalar(t: &Tensor) -> crate::Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

pub(crate) fn ce(logits: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, y)
}

/// The head a method's model carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// The network outputs logits.
    Logits,
    /// Section 3.3's linear head over fixed centers (MAT).
    Centers,
    /// MMC's `-|z - mu_k|^2` over fixed centers.
    Mmc,
}

/// One training method of the registry.
pub struct MethodRegistration {
    /// The name in configs (`method:`) and in model files.
    pub name: &'static str,
    pub summary: &'static str,
    pub head: HeadKind,
    /// Why this config needs an `adversary:` section; `None`: it does not.
    pub needs_adversary: fn(&TrainSpec) -> Option<&'static str>,
    /// The objective of a checked config.
    pub build: fn(&TrainSpec) -> Result<Box<dyn Objective>>,
}

/// Every method `mat-train` can train (Tables 2 and 3).
pub const METHODS: &[&MethodRegistration] = &[
    &natural::METHOD,
    &at::METHOD,
    &trades::METHOD,
    &mmc::METHOD,
    &mat::METHOD,
];

/// A registered method, as a config names it (`method: mat`).
#[derive(Clone, Copy)]
pub struct Method(&'static MethodRegistration);

impl Method {
    pub fn name(self) -> &'static str {
        self.0.name
    }

    pub fn registration(self) -> &'static MethodRegistration {
        self.0
    }

    /// MAT and MMC train a feature layer against fixed class centers.
    pub fn uses_centers(self) -> bool {
        self.0.head != HeadKind::Logits
    }
}

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name)
    }
}

impl PartialEq for Method {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for Method {}

impl std::str::FromStr for Method {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        METHODS
            .iter()
            .find(|m| m.name == s)
            .map(|m| Method(m))
            .ok_or_else(|| {
                let names: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
                Error::Invalid(format!(
                    "unknown variant `{s}`, expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

impl Serialize for Method {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name)
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
