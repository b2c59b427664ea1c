//! Optimisers.

pub mod sgd;

pub use sgd::{Sgd, SgdConfig};
