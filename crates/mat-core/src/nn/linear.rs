//! `nn.Linear` with PyTorch's default initialisation.

use candle_nn::{Init, Linear, VarBuilder};

use super::params::{torch_default_bias, torch_default_weight};

/// `y = x Wᵀ + b`, W `[out, in]`; `init` `None` is PyTorch's default for
/// both weight and bias, `Some(i)` uses `i` for the weight and zero bias.
pub fn linear(
    in_dim: usize,
    out_dim: usize,
    init: Option<Init>,
    vb: VarBuilder,
) -> candle_core::Result<Linear> {
    let shape = (out_dim, in_dim).into();
    let (w_init, b_init) = match init {
        Some(i) => (i, Init::Const(0.0)),
        None => (torch_default_weight(&shape), torch_default_bias(in_dim)),
    };
    let weight = vb.get_with_hints(shape, "weight", w_init)?;
    let bias = vb.get_with_hints(out_dim, "bias", b_init)?;
    Ok(Linear::new(weight, Some(bias)))
}
