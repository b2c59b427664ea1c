//! The library behind the `mat` stage binaries: devices, seeded randomness,
//! datasets and the artifact contract (safetensors and Parquet).
//!
//! Reproduces and stress-tests "Manifold-aware Training: Increase Adversarial
//! Robustness with Feature Clustering" (MAT, ICLR 2021 submission).

pub mod alloc;
pub mod analysis;
pub mod artifact;
pub mod attacks;
pub mod audit;
pub mod centers;
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod kernels;
pub mod losses;
pub mod models;
pub mod nn;
pub mod optim;
pub mod rng;
pub mod train;

pub use device::DeviceSpec;
pub use error::{Error, Result};
pub use rng::SeededRng;
