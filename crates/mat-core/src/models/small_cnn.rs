//! SmallCNN, the MNIST network of TRADES (Zhang et al., 2019), with the
//! reference implementation's parameter names and initialisation, so a saved
//! file loads into its PyTorch module with `load_state_dict(strict=True)`.
//!
//! `[N,1,28,28]` → conv3 32, ReLU → conv3 32, ReLU → maxpool 2 → conv3 64,
//! ReLU → conv3 64, ReLU → maxpool 2 → `[N,1024]` → fc 200, ReLU, dropout →
//! fc 200, ReLU → fc `out_dim`.

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::{Init, Linear, VarBuilder};

use super::classifier::{no_numbers, Family, Network};
use crate::kernels::relu;
use crate::nn::{conv2d, linear, params::KAIMING_NORMAL, Conv2d, Conv2dParams, Dropout};

pub const SMALL_CNN: Family = Family {
    pattern: "small-cnn",
    summary: "TRADES' MNIST net",
    input_shape: [1, 28, 28],
    check: no_numbers,
    build: |_, output, seed, vb| Ok(Box::new(small_cnn(output, seed, vb)?)),
};

impl Network for SmallCnn {
    fn penultimate_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        SmallCnn::penultimate_t(self, xs, train)
    }

    fn start_epoch(&self, epoch: usize) {
        SmallCnn::start_epoch(self, epoch)
    }
}

#[derive(Debug)]
pub struct SmallCnn {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    conv4: Conv2d,
    fc1: Linear,
    drop: Dropout,
    fc2: Linear,
    fc3: Linear,
}

/// What the last layer of a network produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Class logits (natural, AT, TRADES).
    Logits(usize),
    /// A D-dimensional feature vector phi (MAT, MMC), compared with class centers.
    Features(usize),
}

impl Output {
    pub fn dim(self) -> usize {
        match self {
            Output::Logits(d) | Output::Features(d) => d,
        }
    }
}

/// Builds SmallCNN whose last layer gives `output`. `seed` drives dropout.
///
/// TRADES zero-initialises the last layer, which suits logits; a feature
/// layer keeps PyTorch's default instead, since cosine losses are undefined
/// at a zero feature.
pub fn small_cnn(output: Output, seed: u64, vb: VarBuilder) -> candle_core::Result<SmallCnn> {
    let fe = vb.pp("feature_extractor");
    let cl = vb.pp("classifier");
    let p = Conv2dParams::default();
    // TRADES: kaiming_normal_ conv weights, zero conv biases, zero fc3;
    // fc1 and fc2 keep PyTorch's default.
    let conv = |i, o, name| conv2d(i, o, 3, p, Some(KAIMING_NORMAL), fe.pp(name));
    Ok(SmallCnn {
        conv1: conv(1, 32, "conv1")?,
        conv2: conv(32, 32, "conv2")?,
        conv3: conv(32, 64, "conv3")?,
        conv4: conv(64, 64, "conv4")?,
        fc1: linear(64 * 4 * 4, 200, None, cl.pp("fc1"))?,
        drop: Dropout::new(0.5, seed),
        fc2: linear(200, 200, None, cl.pp("fc2"))?,
        fc3: match output {
            Output::Logits(d) => linear(200, d, Some(Init::Const(0.0)), cl.pp("fc3"))?,
            Output::Features(d) => linear(200, d, None, cl.pp("fc3"))?,
        },
    })
}

impl SmallCnn {
    /// Re-keys dropout for `epoch` (see [`Dropout::start_epoch`]).
    pub fn start_epoch(&self, epoch: usize) {
        self.drop.start_epoch(epoch)
    }

    /// The 200-d activations before the last layer (the "penultimate layer"
    /// features used for models without centers).
    pub fn penultimate_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let xs = self.conv1.forward_relu(xs)?; // [N, 32, 26, 26]
        let xs = self.conv2.forward_relu_pool(&xs, 2)?; // [N, 32, 12, 12]
        let xs = self.conv3.forward_relu(&xs)?; // [N, 64, 10, 10]
        let xs = self.conv4.forward_relu_pool(&xs, 2)?; // [N, 64, 4, 4]
        let xs = xs.flatten_from(1)?; // [N, 1024]
        let xs = relu(&self.fc1.forward(&xs)?)?;
        let xs = self.drop.forward_t(&xs, train)?;
        relu(&self.fc2.forward(&xs)?) // [N, 200]
    }
}

impl ModuleT for SmallCnn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.fc3.forward(&self.penultimate_t(xs, train)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ParamStore;
    use candle_core::{DType, Device};

    #[test]
    fn shapes_and_pytorch_names() {
        let store = ParamStore::new(0);
        let m = small_cnn(Output::Logits(10), 0, store.var_builder(&Device::Cpu)).unwrap();
        let x = Tensor::zeros((3, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(m.forward_t(&x, false).unwrap().dims(), &[3, 10]);
        let names: Vec<String> = store.vars().into_iter().map(|(n, _)| n).collect();
        let want = [
            "classifier.fc1.bias",
            "classifier.fc1.weight",
            "classifier.fc2.bias",
            "classifier.fc2.weight",
            "classifier.fc3.bias",
            "classifier.fc3.weight",
            "feature_extractor.conv1.bias",
            "feature_extractor.conv1.weight",
            "feature_extractor.conv2.bias",
            "feature_extractor.conv2.weight",
            "feature_extractor.conv3.bias",
            "feature_extractor.conv3.weight",
            "feature_extractor.conv4.bias",
            "feature_extractor.conv4.weight",
        ];
        assert_eq!(names, want);
    }
}
