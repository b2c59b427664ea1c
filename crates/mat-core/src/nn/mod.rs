//! Layers in candle-nn's style: one per file, free constructors taking a
//! `VarBuilder`, PyTorch weight names and initialisation, and seeded
//! randomness throughout.

pub mod conv2d;
pub mod dropout;
pub mod linear;
pub mod params;

pub use conv2d::{conv2d, conv2d_no_bias, Conv2d, Conv2dParams};
pub use dropout::Dropout;
pub use linear::linear;
pub use params::ParamStore;
