//! WideResNet (Zagoruyko & Komodakis, 2016) as in TRADES' reference code:
//! pre-activation basic blocks, widths 16, 16k, 32k, 64k for widen factor k,
//! `(depth - 4) / 6` blocks per group, strides 1/2/2, a 1x1 shortcut
//! convolution where the width changes, then BN, ReLU, 8x8 average pooling
//! and a linear layer. WRN-34-10 is the paper's CIFAR-10 model; WRN-16-4 is
//! the CPU-sized one.
//!
//! Parameter names follow the reference module, including its `sub_block1`,
//! which the reference builds but never calls: its parameters exist so that a
//! saved file loads with `load_state_dict(strict=True)`; they get no gradient.

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Init, Linear, VarBuilder};

use super::classifier::{Family, Network};
use crate::nn::params::torch_default_weight;
use crate::nn::{batch_norm, conv2d_no_bias, linear, BatchNorm, Conv2d, Conv2dParams};

/// `normal(0, sqrt(2 / (k·k·out_channels)))`, the reference's conv init.
const CONV_INIT: Init = Init::Kaiming {
    dist: NormalOrUniform::Normal,
    fan: FanInOut::FanOut,
    non_linearity: NonLinearity::ReLU,
};

#[derive(Debug)]
struct BasicBlock {
    bn1: BatchNorm,
    conv1: Conv2d,
    bn2: BatchNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

fn basic_block(
    in_c: usize,
    out_c: usize,
    stride: usize,
    vb: VarBuilder,
) -> candle_core::Result<BasicBlock> {
    let p3 = |stride| Conv2dParams { stride, padding: 1 };
    Ok(BasicBlock {
        bn1: batch_norm(in_c, 1e-5, vb.pp("bn1"))?,
        conv1: conv2d_no_bias(in_c, out_c, 3, p3(stride), CONV_INIT, vb.pp("conv1"))?,
        bn2: batch_norm(out_c, 1e-5, vb.pp("bn2"))?,
        conv2: conv2d_no_bias(out_c, out_c, 3, p3(1), CONV_INIT, vb.pp("conv2"))?,
        shortcut: if in_c == out_c {
            None
        } else {
            let p = Conv2dParams { stride, padding: 0 };
            Some(conv2d_no_bias(
                in_c,
                out_c,
                1,
                p,
                CONV_INIT,
                vb.pp("convShortcut"),
            )?)
        },
    })
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let o = self.bn1.forward_relu_t(xs, train)?;
        let out = self.bn2.forward_relu_t(&self.conv1.forward(&o)?, train)?;
        let out = self.conv2.forward(&out)?;
        match &self.shortcut {
            // Where the width changes, the shortcut sees the activated input.
            Some(s) => s.forward(&o)? + out,
            None => xs + out,
        }
    }
}

fn network_block(
    n: usize,
    in_c: usize,
    out_c: usize,
    stride: usize,
    vb: VarBuilder,
) -> candle_core::Result<Vec<BasicBlock>> {
    let vb = vb.pp("layer");
    (0..n)
        .map(|i| {
            let (i_c, s) = if i == 0 { (in_c, stride) } else { (out_c, 1) };
            basic_block(i_c, out_c, s, vb.pp(i))
        })
        .collect()
}

pub const WRN: Family = Family {
    pattern: "wrn-DEPTH-WIDEN",
    summary: "WideResNet, e.g. `wrn-34-10` (the paper's CIFAR-10 model) or `wrn-16-4`",
    input_shape: [3, 32, 32],
    check: |n| match n {
        [depth, widen] if *depth >= 10 && (depth - 4) % 6 == 0 && *widen >= 1 => Ok(()),
        _ => Err("a WideResNet depth of 6n+4 >= 10 and a widen >= 1".into()),
    },
    build: |n, output, _, vb| Ok(Box::new(wide_resnet(n[0], n[1], output.dim(), vb)?)),
};

pub const RESNET_V2: Family = Family {
    pattern: "resnet-v2-DEPTH",
    summary: "MMC's ResNet-v2, e.g. `resnet-v2-32`",
    input_shape: [3, 32, 32],
    check: |n| match n {
        [depth] if *depth >= 8 && (depth - 2) % 6 == 0 => Ok(()),
        _ => Err("a ResNet-v2 depth of 6n+2 >= 8 (e.g. 32)".into()),
    },
    build: |n, output, _, vb| Ok(Box::new(resnet_v2(n[0], output.dim(), vb)?)),
};

impl Network for WideResNet {
    fn penultimate_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        WideResNet::penultimate_t(self, xs, train)
    }
}

#[derive(Debug)]
pub struct WideResNet {
    conv1: Conv2d,
    groups: [Vec<BasicBlock>; 3],
    bn1: BatchNorm,
    fc: Linear,
}

/// WRN-`depth`-`widen` for 3x32x32 inputs with `out_dim` outputs.
pub fn wide_resnet(
    depth: usize,
    widen: usize,
    out_dim: usize,
    vb: VarBuilder,
) -> candle_core::Result<WideResNet> {
    if depth < 10 || !(depth - 4).is_multiple_of(6) {
        candle_core::bail!(
            "WideResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, ...), got {depth}"
        )
    }
    let n = (depth - 4) / 6;
    pre_activation_resnet(
        n,
        [16, 16 * widen, 32 * widen, 64 * widen],
        true,
        out_dim,
        vb,
    )
}

/// ResNet-`depth` v2 (He et al., 2016, pre-activation; MMC's CIFAR-10
/// network): `(depth - 2) / 6` basic blocks per group, widths 16, 32, 64.
/// It is this module's network with widen factor 1, without the unused
/// `sub_block1`, so a saved file loads into TRADES' WideResNet module
/// built with that many blocks and `sub_block1` removed.
pub fn resnet_v2(depth: usize, out_dim: usize, vb: VarBuilder) -> candle_core::Result<WideResNet> {
    if depth < 8 || !(depth - 2).is_multiple_of(6) {
        candle_core::bail!(
            "ResNet-v2 depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), got {depth}"
        )
    }
    pre_activation_resnet((depth - 2) / 6, [16, 16, 32, 64], false, out_dim, vb)
}

fn pre_activation_resnet(
    n: usize,
    ch: [usize; 4],
    with_sub_block: bool,
    out_dim: usize,
    vb: VarBuilder,
) -> candle_core::Result<WideResNet> {
    let conv1 = conv2d_no_bias(
        3,
        ch[0],
        3,
        Conv2dParams {
            stride: 1,
            padding: 1,
        },
        CONV_INIT,
        vb.pp("conv1"),
    )?;
    let block1 = network_block(n, ch[0], ch[1], 1, vb.pp("block1"))?;
    if with_sub_block {
        // Built for its parameter names only (see the module docs).
        network_block(n, ch[0], ch[1], 1, vb.pp("sub_block1"))?;
    }
    let block2 = network_block(n, ch[1], ch[2], 2, vb.pp("block2"))?;
    let block3 = network_block(n, ch[2], ch[3], 2, vb.pp("block3"))?;
    let fc_shape = (out_dim, ch[3]).into();
    Ok(WideResNet {
        conv1,
        groups: [block1, block2, block3],
        bn1: batch_norm(ch[3], 1e-5, vb.pp("bn1"))?,
        // The reference keeps PyTorch's default weight and zeroes the bias.
        fc: linear(
            ch[3],
            out_dim,
            Some(torch_default_weight(&fc_shape)),
            vb.pp("fc"),
        )?,
    })
}

impl WideResNet {
    /// The pooled `64·widen`-d features before the last layer.
    pub fn penultimate_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut xs = self.conv1.forward(xs)?; // [N, 16, 32, 32]
        for block in self.groups.iter().flatten() {
            xs = block.forward_t(&xs, train)?;
        } // [N, 64k, 8, 8]
        let xs = self.bn1.forward_relu_t(&xs, train)?;
        xs.avg_pool2d(8)?.flatten_from(1) // [N, 64k]
    }
}

impl ModuleT for WideResNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.fc.forward(&self.penultimate_t(xs, train)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ParamStore;
    use candle_core::{DType, Device};

    #[test]
    fn wrn_16_4_shapes_and_names() {
        let store = ParamStore::new(0);
        let m = wide_resnet(16, 4, 10, store.var_builder(&Device::Cpu)).unwrap();
        let x = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(m.forward_t(&x, true).unwrap().dims(), &[2, 10]);
        assert_eq!(m.penultimate_t(&x, false).unwrap().dims(), &[2, 256]);
        let names: Vec<String> = store.vars().into_iter().map(|(n, _)| n).collect();
        for want in [
            "conv1.weight",
            "block1.layer.0.bn1.running_mean",
            "block1.layer.0.convShortcut.weight",
            "block2.layer.1.conv2.weight",
            "sub_block1.layer.1.bn2.weight",
            "bn1.running_var",
            "fc.bias",
        ] {
            assert!(names.iter().any(|n| n == want), "missing {want}");
        }
        assert!(!names
            .iter()
            .any(|n| n == "block2.layer.1.convShortcut.weight"));
        assert!(wide_resnet(15, 4, 10, store.var_builder(&Device::Cpu)).is_err());
    }

    #[test]
    fn resnet_v2_32_has_five_blocks_per_group_and_no_sub_block() {
        let store = ParamStore::new(0);
        let m = resnet_v2(32, 256, store.var_builder(&Device::Cpu)).unwrap();
        let x = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(m.forward_t(&x, false).unwrap().dims(), &[2, 256]);
        let names: Vec<String> = store.vars().into_iter().map(|(n, _)| n).collect();
        assert!(names.iter().any(|n| n == "block3.layer.4.conv2.weight"));
        assert!(!names.iter().any(|n| n.starts_with("block3.layer.5")));
        assert!(!names.iter().any(|n| n.starts_with("sub_block1")));
        assert!(resnet_v2(30, 10, store.var_builder(&Device::Cpu)).is_err());
    }
}
