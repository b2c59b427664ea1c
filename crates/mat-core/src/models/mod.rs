//! The networks of the paper and its baselines, and the classifier (network
//! plus head) that every stage exchanges as a model file.

pub mod classifier;
pub mod small_cnn;
pub mod vgg;
pub mod wide_resnet;

pub use classifier::{Arch, Classifier, Family, Head, Network};
pub use small_cnn::{small_cnn, Output, SmallCnn};
pub use vgg::{vgg_mnist, Vgg};
pub use wide_resnet::{resnet_v2, wide_resnet, WideResNet};

/// Every architecture `mat-train` can build; a new one is a model file
/// (its network, [`Network`] impl and [`Family`]) plus one line here.
pub const ARCHITECTURES: &[&Family] = &[
    &small_cnn::SMALL_CNN,
    &vgg::VGG_MNIST,
    &wide_resnet::WRN,
    &wide_resnet::RESNET_V2,
];
