//! Trainable parameters with seeded initialisation.
//!
//! candle-nn's `VarMap` draws initial values from candle's CPU generator,
//! which cannot be seeded. [`ParamStore`] is a `VarBuilder` backend that
//! draws each parameter from a stream keyed by (seed, parameter name), so
//! the same seed gives the same model on every machine, and adding a layer
//! never changes another layer's initial values.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::rng::SeededRng;

/// The named variables of one model.
#[derive(Clone)]
pub struct ParamStore {
    vars: Arc<Mutex<BTreeMap<String, Var>>>,
    seed: u64,
}

impl ParamStore {
    pub fn new(seed: u64) -> Self {
        Self {
            vars: Arc::new(Mutex::new(BTreeMap::new())),
            seed,
        }
    }

    /// A `VarBuilder` whose `get` creates (or returns) variables here.
    pub fn var_builder(&self, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, device.clone())
    }

    /// Every variable, sorted by name.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let vars = self.vars.lock().expect("not poisoned");
        vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Writes every variable under its (PyTorch) name, with `metadata`.
    pub fn save(
        &self,
        path: &std::path::Path,
        metadata: &crate::artifact::Metadata,
    ) -> crate::Result<()> {
        let vars = self.vars();
        let named = vars.iter().map(|(n, v)| (n.as_str(), v.as_tensor()));
        crate::artifact::write_tensors(path, named, metadata)
    }

    fn draw(
        &self,
        shape: &Shape,
        name: &str,
        init: Init,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut rng = SeededRng::for_purpose(self.seed, &format!("init:{name}"));
        match init {
            Init::Const(v) => Tensor::full(v as f32, shape, device),
            Init::Randn { mean, stdev } => rng
                .normal(shape, mean as f32, stdev as f32, device)
                .map_err(into_candle),
            Init::Uniform { lo, up } => rng
                .uniform(shape, lo as f32, up as f32, device)
                .map_err(into_candle),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let fan = fan.for_shape(shape) as f64;
                let std = non_linearity.gain() / fan.sqrt();
                match dist {
                    NormalOrUniform::Normal => rng.normal(shape, 0.0, std as f32, device),
                    NormalOrUniform::Uniform => {
                        let bound = (3f64.sqrt() * std) as f32;
                        rng.uniform(shape, -bound, bound, device)
                    }
                }
                .map_err(into_candle)
            }
        }
    }
}

fn into_candle(e: crate::Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

impl SimpleBackend for ParamStore {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut vars = self.vars.lock().expect("not poisoned");
        if let Some(v) = vars.get(name) {
            if v.shape() != &s {
                candle_core::bail!(
                    "parameter `{name}`: asked for shape {s:?}, it exists with {:?}",
                    v.shape()
                )
            }
            return Ok(v.as_tensor().clone());
        }
        let t = self.draw(&s, name, h, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let vars = self.vars.lock().expect("not poisoned");
        match vars.get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => candle_core::bail!("no parameter `{name}`"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.vars.lock().expect("not poisoned").contains_key(name)
    }
}

/// PyTorch's default for `nn.Conv2d` and `nn.Linear` weights,
/// `kaiming_uniform_(a=sqrt(5))`: U(-b, b) with b = 1/sqrt(fan_in).
pub fn torch_default_weight(shape: &Shape) -> Init {
    let b = 1.0 / (FanInOut::FanIn.for_shape(shape) as f64).sqrt();
    Init::Uniform { lo: -b, up: b }
}

/// PyTorch's default bias: U(-b, b) with b = 1/sqrt(fan_in) of the weight.
pub fn torch_default_bias(fan_in: usize) -> Init {
    let b = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform { lo: -b, up: b }
}

/// `nn.init.kaiming_normal_` with its defaults (fan_in, gain sqrt(2)).
pub const KAIMING_NORMAL: Init = Init::Kaiming {
    dist: NormalOrUniform::Normal,
    fan: FanInOut::FanIn,
    non_linearity: candle_nn::init::NonLinearity::ReLU,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_parameters_independent_of_order() {
        let d = Device::Cpu;
        let a = ParamStore::new(5);
        let vb = a.var_builder(&d);
        let wa = vb
            .get_with_hints(
                (3, 4),
                "l1.weight",
                Init::Randn {
                    mean: 0.,
                    stdev: 1.,
                },
            )
            .unwrap();
        let _ = vb.get_with_hints(7, "l0.bias", Init::Const(0.)).unwrap();
        let b = ParamStore::new(5);
        let vb = b.var_builder(&d);
        let _ = vb.get_with_hints(7, "l0.bias", Init::Const(0.)).unwrap();
        let wb = vb
            .get_with_hints(
                (3, 4),
                "l1.weight",
                Init::Randn {
                    mean: 0.,
                    stdev: 1.,
                },
            )
            .unwrap();
        assert_eq!(wa.to_vec2::<f32>().unwrap(), wb.to_vec2::<f32>().unwrap());
        assert_eq!(a.vars().len(), 2);
        let names: Vec<_> = a.vars().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["l0.bias", "l1.weight"]);
    }

    #[test]
    fn kaiming_normal_has_the_pytorch_std() {
        let p = ParamStore::new(1);
        let w = p
            .var_builder(&Device::Cpu)
            .get_with_hints((64, 32, 3, 3), "w", KAIMING_NORMAL)
            .unwrap();
        let v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let var = v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32;
        let want = (2.0f32 / 288.0).sqrt();
        assert!(
            (var.sqrt() / want - 1.0).abs() < 0.02,
            "std {} vs {want}",
            var.sqrt()
        );
    }
}
