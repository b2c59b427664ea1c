//! Layers in candle-nn's style: one per file, free constructors taking a
//! `VarBuilder`, PyTorch weight names and initialisation, and seeded
//! randomness throughout.

pub mod batch_norm;
pub mod conv2d;
pub mod dropout;
pub mod linear;
pub mod params;

pub use batch_norm::{batch_norm, BatchNorm};
pub use conv2d::{conv2d, conv2d_no_bias, Conv2d, Conv2dParams};
pub use dropout::Dropout;
pub use linear::linear;
pub use params::ParamStore;

use std::cell::Cell;

thread_local! {
    static FROZEN: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every layer's weights detached from the graph: a backward
/// pass inside then computes input gradients only. The inner maximisations
/// of adversarial training (AT, TRADES, BIBO) need the gradient with
/// respect to the input alone; without this, each of their steps would
/// also pay for the weight gradients of every convolution.
pub fn frozen<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            FROZEN.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(FROZEN.with(|c| c.replace(true)));
    f()
}

/// `t` itself, or a detached copy inside [`frozen`].
pub(crate) fn maybe_frozen(t: &candle_core::Tensor) -> candle_core::Tensor {
    if FROZEN.with(|c| c.get()) {
        t.detach()
    } else {
        t.clone()
    }
}
