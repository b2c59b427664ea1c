//! `nn.Conv2d` with the fast CPU kernel of [`crate::kernels::conv2d`].

use candle_core::{Module, Tensor};

use candle_nn::{Init, VarBuilder};

pub use crate::kernels::conv2d::Conv2dParams;

use super::params::{torch_default_bias, torch_default_weight};

#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    params: Conv2dParams,
}

impl Conv2d {
    pub fn new(weight: Tensor, bias: Option<Tensor>, params: Conv2dParams) -> Self {
        Self {
            weight,
            bias,
            params,
        }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    fn frozen_params(&self) -> (Tensor, Option<Tensor>) {
        (
            super::maybe_frozen(&self.weight),
            self.bias.as_ref().map(super::maybe_frozen),
        )
    }
}

impl Conv2d {
    /// `relu(self.forward(xs))` as one op (see [`crate::kernels::conv2d_relu`]).
    pub fn forward_relu(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (w, b) = self.frozen_params();
        crate::kernels::conv2d_relu(xs, &w, b.as_ref(), self.params)
    }

    /// `max_pool2d(relu(self.forward(xs)), k)` as one op (see
    /// [`crate::kernels::conv2d_relu_pool`]).
    pub fn forward_relu_pool(&self, xs: &Tensor, k: usize) -> candle_core::Result<Tensor> {
        let (w, b) = self.frozen_params();
        crate::kernels::conv2d_relu_pool(xs, &w, b.as_ref(), self.params, k)
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (w, b) = self.frozen_params();
        crate::kernels::conv2d::conv2d(xs, &w, b.as_ref(), self.params)
    }
}

/// A square-kernel convolution with bias; `weight_init` `None` is PyTorch's default.
pub fn conv2d(
    in_c: usize,
    out_c: usize,
    kernel: usize,
    params: Conv2dParams,
    weight_init: Option<Init>,
    vb: VarBuilder,
) -> candle_core::Result<Conv2d> {
    let shape = (out_c, in_c, kernel, kernel).into();
    let init = weight_init.unwrap_or_else(|| torch_default_weight(&shape));
    let weight = vb.get_with_hints(shape, "weight", init)?;
    let bias_init = match weight_init {
        // Reference models that override the weight init zero the bias.
        Some(_) => Init::Const(0.0),
        None => torch_default_bias(in_c * kernel * kernel),
    };
    let bias = vb.get_with_hints(out_c, "bias", bias_init)?;
    Ok(Conv2d::new(weight, Some(bias), params))
}

/// A convolution without bias (the WideResNet convention).
pub fn conv2d_no_bias(
    in_c: usize,
    out_c: usize,
    kernel: usize,
    params: Conv2dParams,
    weight_init: Init,
    vb: VarBuilder,
) -> candle_core::Result<Conv2d> {
    let weight = vb.get_with_hints((out_c, in_c, kernel, kernel), "weight", weight_init)?;
    Ok(Conv2d::new(weight, None, params))
}
