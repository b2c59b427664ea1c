//! The networks of the paper and its baselines, and the classifier (network
//! plus head) that every stage exchanges as a model file.

pub mod classifier;
pub mod small_cnn;
pub mod wide_resnet;

pub use classifier::{Arch, Classifier, Head, Network};
pub use small_cnn::{small_cnn, Output, SmallCnn};
pub use wide_resnet::{wide_resnet, WideResNet};
