//! The networks of the paper and its baselines.

pub mod small_cnn;
pub mod wide_resnet;

pub use small_cnn::{small_cnn, Output, SmallCnn};
pub use wide_resnet::{wide_resnet, WideResNet};
