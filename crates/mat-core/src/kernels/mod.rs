//! Fast CPU kernels with their own backward passes, used by the models on
//! the CPU (CUDA keeps candle's kernels).

pub mod conv2d;
pub mod gemm;
