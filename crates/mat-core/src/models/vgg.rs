//! A VGG-style network for 28x28 inputs: the paper's MNIST model is "a VGG
//! net" without further detail, so this is the usual small VGG for MNIST,
//! stated here and in the README: three blocks of two 3x3 convolutions
//! (padding 1) with ReLU and a 2x2 max-pool, widths 32, 64, 128, then
//! fc 1152 → 256, ReLU, dropout 0.5, fc 256 → `out_dim`.
//!
//! `[N,1,28,28]` → 28 → 14 → 7 → 3 (floor) → `[N, 128·3·3]`.
//!
//! Names follow a PyTorch `nn.Sequential` (`features.0.weight`,
//! `classifier.3.bias`, ...) with PyTorch's default initialisation.

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::classifier::{no_numbers, Family, Network};
use crate::kernels::relu;
use crate::nn::{conv2d, linear, Conv2d, Conv2dParams, Dropout};

pub const VGG_MNIST: Family = Family {
    pattern: "vgg-mnist",
    summary: "the paper's MNIST model",
    input_shape: [1, 28, 28],
    check: no_numbers,
    build: |_, output, seed, vb| Ok(Box::new(vgg_mnist(output.dim(), seed, vb)?)),
};

impl Network for Vgg {
    fn penultimate_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Vgg::penultimate_t(self, xs, train)
    }

    fn start_epoch(&self, epoch: usize) {
        Vgg::start_epoch(self, epoch)
    }
}

#[derive(Debug)]
pub struct Vgg {
    convs: Vec<Conv2d>,
    fc1: Linear,
    drop: Dropout,
    fc2: Linear,
}

/// Indices of the convolutions in the PyTorch `features` Sequential
/// (conv, ReLU, conv, ReLU, pool per block).
const CONV_INDICES: [usize; 6] = [0, 2, 5, 7, 10, 12];
const WIDTHS: [usize; 6] = [32, 32, 64, 64, 128, 128];

/// Builds the VGG-style MNIST network; `seed` keys dropout.
pub fn vgg_mnist(out_dim: usize, seed: u64, vb: VarBuilder) -> candle_core::Result<Vgg> {
    let p = Conv2dParams {
        stride: 1,
        padding: 1,
    };
    let fe = vb.pp("features");
    let mut convs = Vec::new();
    let mut in_c = 1;
    for (i, &w) in CONV_INDICES.iter().zip(&WIDTHS) {
        convs.push(conv2d(in_c, w, 3, p, None, fe.pp(i))?);
        in_c = w;
    }
    let cl = vb.pp("classifier");
    Ok(Vgg {
        convs,
        fc1: linear(128 * 3 * 3, 256, None, cl.pp(0))?,
        drop: Dropout::new(0.5, seed),
        fc2: linear(256, out_dim, None, cl.pp(3))?,
    })
}

impl Vgg {
    /// The 256-d activations before the last layer.
    pub fn penultimate_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut xs = xs.clone();
        for pair in self.convs.chunks(2) {
            xs = pair[1].forward_relu_pool(&pair[0].forward_relu(&xs)?, 2)?;
        }
        let xs = relu(&self.fc1.forward(&xs.flatten_from(1)?)?)?;
        self.drop.forward_t(&xs, train)
    }

    /// Re-keys dropout for `epoch`.
    pub fn start_epoch(&self, epoch: usize) {
        self.drop.start_epoch(epoch)
    }
}

impl ModuleT for Vgg {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.fc2.forward(&self.penultimate_t(xs, train)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::max_pool2d;
    use crate::nn::ParamStore;
    use crate::rng::SeededRng;
    use candle_core::{DType, Device};

    #[test]
    fn shapes_and_names() {
        let store = ParamStore::new(0);
        let m = vgg_mnist(10, 0, store.var_builder(&Device::Cpu)).unwrap();
        let x = Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(m.forward_t(&x, true).unwrap().dims(), &[2, 10]);
        assert_eq!(m.penultimate_t(&x, false).unwrap().dims(), &[2, 256]);
        let names: Vec<String> = store.vars().into_iter().map(|(n, _)| n).collect();
        for want in [
            "features.0.weight",
            "features.12.bias",
            "classifier.0.weight",
            "classifier.3.bias",
        ] {
            assert!(names.iter().any(|n| n == want), "missing {want}: {names:?}");
        }
        assert_eq!(names.len(), 16);
    }

    /// The last pool sees 7x7 maps: our kernel must floor as PyTorch does.
    #[test]
    fn pooling_an_odd_map_floors_like_candle() {
        let x = SeededRng::new(2)
            .uniform((2, 3, 7, 7), 0.0, 1.0, &Device::Cpu)
            .unwrap();
        let ours = max_pool2d(&x, 2).unwrap();
        let theirs = x.max_pool2d(2).unwrap();
        assert_eq!(ours.dims(), &[2, 3, 3, 3]);
        let d = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
    }
}
