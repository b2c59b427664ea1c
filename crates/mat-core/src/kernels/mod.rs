//! Fast CPU kernels with their own backward passes, used by the models on
//! the CPU (CUDA keeps candle's kernels). Each public function falls back to
//! candle's op on other devices and dtypes.

pub mod conv2d;
pub mod gemm;
pub mod max_pool;
pub mod relu;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout};

pub use conv2d::{conv2d, conv2d_relu};
pub use max_pool::max_pool2d;
pub use relu::relu;

/// The f32 data of a contiguous CPU tensor, or an error naming the operand.
pub(crate) fn f32_slice<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{what} must be f32, got {:?}", s.dtype())
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}
