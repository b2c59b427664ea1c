//! A network plus the head that turns its output into class logits, and
//! the model file every stage exchanges.
//!
//! Section 3.3 of the paper: all MMD centers have the same norm, so
//! `argmax_k cos(phi, mu_k) = argmax_k phi · mu_k`; a MAT model therefore
//! carries a fixed linear head `W = centers`, bias 0, and outputs ordinary
//! logits, so every logit-based attack applies to it unchanged. An MMC
//! model's logits are `-|z - mu_k|^2` (Pang et al., 2020). The feature
//! layer stays reachable through [`Classifier::features_t`].

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::VarBuilder;

use super::Output;
use crate::artifact::{Metadata, TensorFile};
use crate::losses::mmc_logits;
use crate::{Error, Result};

/// What every network offers besides its forward pass.
pub trait Network: ModuleT + Send + Sync {
    /// The activations before the last layer (the features analysed for
    /// models without centers).
    fn penultimate_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor>;

    /// Re-keys the network's own random streams (dropout) for `epoch`.
    fn start_epoch(&self, _epoch: usize) {}
}

/// A family of architectures in the registry ([`super::ARCHITECTURES`]):
/// one name (`small-cnn`), or a pattern whose upper-case parts are numbers
/// (`wrn-DEPTH-WIDEN`).
#[derive(Debug)]
pub struct Family {
    pub pattern: &'static str,
    /// One line for the error that lists the architectures.
    pub summary: &'static str,
    /// `[C, H, W]` of the images it takes.
    pub input_shape: [usize; 3],
    /// Checks the numbers of a name; the error says what is expected.
    pub check: fn(&[usize]) -> std::result::Result<(), String>,
    /// Builds the network with `output` as its last layer; `seed` keys dropout.
    pub build: BuildNetwork,
}

/// How a [`Family`] builds a network from the numbers of its name.
pub type BuildNetwork =
    fn(&[usize], Output, u64, VarBuilder) -> candle_core::Result<Box<dyn Network>>;

/// A family without numbers in its name.
pub(crate) fn no_numbers(_: &[usize]) -> std::result::Result<(), String> {
    Ok(())
}

/// An architecture: a registered family and the numbers of its name
/// (`wrn-34-10`: depth 34, widen 10).
#[derive(Debug, Clone, Copy)]
pub struct Arch {
    pub family: &'static Family,
    numbers: [usize; 4],
    count: usize,
}

impl PartialEq for Arch {
    fn eq(&self, other: &Self) -> bool {
        self.family.pattern == other.family.pattern && self.numbers() == other.numbers()
    }
}

impl Eq for Arch {}

impl Arch {
    /// The numbers of the name, in the pattern's order.
    pub fn numbers(&self) -> &[usize] {
        &self.numbers[..self.count]
    }

    /// `[C, H, W]` of the images the architecture takes.
    pub fn input_shape(self) -> [usize; 3] {
        self.family.input_shape
    }

    /// Builds the network with `output` as its last layer; `seed` keys dropout.
    pub fn build(self, output: Output, seed: u64, vb: VarBuilder) -> Result<Box<dyn Network>> {
        Ok((self.family.build)(self.numbers(), output, seed, vb)?)
    }

    /// The architecture of `family` if `name` follows its pattern; `None`
    /// when it does not, an error when a number is out of range.
    fn matching(family: &'static Family, name: &str) -> Option<Result<Self>> {
        let parts: Vec<&str> = family.pattern.split('-').collect();
        let given: Vec<&str> = name.split('-').collect();
        if parts.len() != given.len() {
            return None;
        }
        let mut arch = Arch {
            family,
            numbers: [0; 4],
            count: 0,
        };
        for (p, g) in parts.iter().zip(&given) {
            if p.chars().all(|c| c.is_ascii_uppercase()) {
                arch.numbers[arch.count] = g.parse().ok()?;
                arch.count += 1;
            } else if p != g {
                return None;
            }
        }
        Some(
            (family.check)(arch.numbers())
                .map(|()| arch)
                .map_err(|why| Error::UnknownName {
                    kind: "architecture",
                    name: name.to_string(),
                    expected: why,
                }),
        )
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut numbers = self.numbers().iter();
        let parts: Vec<String> = self
            .family
            .pattern
            .split('-')
            .map(|p| match p.chars().all(|c| c.is_ascii_uppercase()) {
                true => numbers.next().map_or(p.to_string(), |n| n.to_string()),
                false => p.to_string(),
            })
            .collect();
        write!(f, "{}", parts.join("-"))
    }
}

impl FromStr for Arch {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        super::ARCHITECTURES
            .iter()
            .find_map(|f| Arch::matching(f, s))
            .unwrap_or_else(|| {
                let known: Vec<String> = super::ARCHITECTURES
                    .iter()
                    .map(|f| format!("`{}` ({})", f.pattern, f.summary))
                    .collect();
                Err(Error::UnknownName {
                    kind: "architecture",
                    name: s.to_string(),
                    expected: known.join(", "),
                })
            })
    }
}

/// How a network's output becomes class logits.
#[derive(Debug, Clone)]
pub enum Head {
    /// The network outputs logits (natural, AT, TRADES).
    Identity,
    /// Section 3.3: `logits = phi · centersᵀ` (MAT).
    Centers(Tensor),
    /// `logits_k = -|z - mu_k|^2` (MMC).
    Mmc(Tensor),
}

impl Head {
    fn name(&self) -> &'static str {
        match self {
            Head::Identity => "identity",
            Head::Centers(_) => "centers",
            Head::Mmc(_) => "mmc",
        }
    }

    /// The class centers, where the head has them.
    pub fn centers(&self) -> Option<&Tensor> {
        match self {
            Head::Identity => None,
            Head::Centers(c) | Head::Mmc(c) => Some(c),
        }
    }
}

/// A network and its head: the unit every stage trains, attacks and analyses.
pub struct Classifier {
    pub arch: Arch,
    pub net: Box<dyn Network>,
    pub head: Head,
    pub num_classes: usize,
}

impl Classifier {
    /// A new classifier: `arch` ending in `num_classes` logits for the
    /// identity head, or in a feature layer of the centers' dimension.
    pub fn build(
        arch: Arch,
        head: Head,
        num_classes: usize,
        seed: u64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let output = match head.centers() {
            None => Output::Logits(num_classes),
            Some(c) => Output::Features(c.dims()[1]),
        };
        Ok(Self {
            arch,
            net: arch.build(output, seed, vb)?,
            head,
            num_classes,
        })
    }

    /// The network's output: the feature phi for MAT/MMC, logits otherwise.
    pub fn features_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.net.forward_t(xs, train)
    }

    /// The features of the analysis (Tables 1 and 5, Figure 1), in eval
    /// mode: phi(x) for models with centers (MAT, MMC), the penultimate
    /// layer for the rest.
    pub fn analysis_features(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self.head {
            Head::Identity => self.net.penultimate_t(xs, false),
            Head::Centers(_) | Head::Mmc(_) => self.features_t(xs, false),
        }
    }

    /// Class logits.
    pub fn logits_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let z = self.features_t(xs, train)?;
        self.head_logits(&z)
    }

    /// Applies the head to a network output.
    pub fn head_logits(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        match &self.head {
            Head::Identity => Ok(z.clone()),
            Head::Centers(c) => z.matmul(&c.t()?),
            Head::Mmc(c) => mmc_logits(z, c),
        }
    }

    /// Checks that a batch of images `[N, C, H, W]` fits the architecture.
    pub fn check_input(&self, dims: &[usize]) -> Result<()> {
        let want = self.arch.input_shape();
        if dims.len() != 4 || dims[1..] != want {
            return Err(Error::Shape {
                what: self.arch.to_string(),
                expected: format!("images of shape [N, {}, {}, {}]", want[0], want[1], want[2]),
                found: format!("{dims:?}"),
            });
        }
        Ok(())
    }

    /// The metadata a model file carries about its shape and head.
    pub fn metadata(&self) -> Metadata {
        let feature_dim = self.head.centers().map(|c| c.dims()[1]);
        let mut m = Metadata::new();
        m.insert("kind".into(), "model".into());
        m.insert("arch".into(), self.arch.to_string());
        m.insert("num_classes".into(), self.num_classes.to_string());
        m.insert(
            "feature_dim".into(),
            feature_dim.map(|d| d.to_string()).unwrap_or_default(),
        );
        m.insert("head".into(), self.head.name().into());
        m
    }

    /// The head's tensors as saved: `head.weight` = the centers, and for the
    /// linear head of Section 3.3 also `head.bias` = 0, so the file loads
    /// into a PyTorch module that ends in `nn.Linear`.
    pub fn head_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(match &self.head {
            Head::Identity => vec![],
            Head::Centers(c) => vec![
                ("head.weight".into(), c.clone()),
                (
                    "head.bias".into(),
                    Tensor::zeros(c.dims()[0], DType::F32, c.device())?,
                ),
            ],
            Head::Mmc(c) => vec![("head.weight".into(), c.clone())],
        })
    }

    /// Writes the model file: every parameter of `store` under its PyTorch
    /// name, the head's tensors, and for each BatchNorm the
    /// `num_batches_tracked` buffer PyTorch's state dict carries (so the
    /// file passes `load_state_dict(strict=True)`), set to `batches_trained`.
    pub fn save(
        &self,
        path: &Path,
        store: &crate::nn::ParamStore,
        metadata: &Metadata,
        batches_trained: usize,
    ) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (name, var) in store.vars() {
            if let Some(prefix) = name.strip_suffix(".running_mean") {
                tensors.push((
                    format!("{prefix}.num_batches_tracked"),
                    Tensor::new(batches_trained as i64, &Device::Cpu)?,
                ));
            }
            tensors.push((name, var.as_tensor().clone()));
        }
        tensors.extend(self.head_tensors()?);
        crate::artifact::write_tensors(path, tensors.iter().map(|(n, t)| (n.as_str(), t)), metadata)
    }

    /// Loads a model file written by `mat-train`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let file = TensorFile::read(path, device)?;
        Self::from_file(&file)
    }

    /// Builds the classifier a model file describes.
    pub fn from_file(file: &TensorFile) -> Result<Self> {
        let path = &file.path;
        let meta_err = |key: &str, expected: &str, found: &str| Error::Metadata {
            path: path.clone(),
            key: key.into(),
            expected: expected.into(),
            found: found.into(),
        };
        let arch: Arch = file
            .meta("arch")?
            .parse()
            .map_err(|e: Error| meta_err("arch", "a known architecture", &e.to_string()))?;
        let num_classes: usize = file.meta("num_classes")?.parse().map_err(|_| {
            meta_err(
                "num_classes",
                "an integer",
                file.meta("num_classes").unwrap(),
            )
        })?;
        let head_name = file.meta("head")?;
        let head = match head_name {
            "identity" => Head::Identity,
            "centers" | "mmc" => {
                let c = file
                    .expect("head.weight", DType::F32, &[Some(num_classes), None])?
                    .clone();
                if head_name == "centers" {
                    Head::Centers(c)
                } else {
                    Head::Mmc(c)
                }
            }
            other => return Err(meta_err("head", "identity, centers or mmc", other)),
        };
        let output = match head.centers() {
            None => Output::Logits(num_classes),
            Some(c) => Output::Features(c.dims()[1]),
        };
        let tensors: HashMap<String, Tensor> = file
            .tensors
            .iter()
            .filter(|(n, _)| !n.starts_with("head.") && !n.ends_with(".num_batches_tracked"))
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        let device = file
            .tensors
            .values()
            .next()
            .map(|t| t.device().clone())
            .unwrap_or(Device::Cpu);
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let net = arch.build(output, 0, vb).map_err(|e| {
            Error::format(
                path,
                format!("does not hold a {arch} with {num_classes} classes: {e}"),
            )
        })?;
        Ok(Self {
            arch,
            net,
            head,
            num_classes,
        })
    }
}

impl crate::attacks::Logits for Classifier {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.logits_t(x, false)
    }

    fn features(&self, x: &Tensor) -> candle_core::Result<Option<Tensor>> {
        match self.head {
            Head::Identity => Ok(None),
            Head::Centers(_) | Head::Mmc(_) => self.features_t(x, false).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_round_trip_and_bad_names_are_explained() {
        for s in [
            "small-cnn",
            "vgg-mnist",
            "wrn-34-10",
            "wrn-16-4",
            "resnet-v2-32",
        ] {
            assert_eq!(s.parse::<Arch>().unwrap().to_string(), s);
        }
        for bad in [
            "resnet",
            "wrn-15-4",
            "wrn-16",
            "wrn-a-b",
            "wrn-16-0",
            "resnet-v2-30",
        ] {
            let e = bad.parse::<Arch>().unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
