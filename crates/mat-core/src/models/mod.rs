//! The networks of the paper and its baselines.

pub mod small_cnn;

pub use small_cnn::{small_cnn, SmallCnn};
