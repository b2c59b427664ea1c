//! Fast CPU kernels with their own backward passes, used by the models on
//! the CPU (CUDA keeps candle's kernels). Each public function falls back to
//! candle's op on other devices and dtypes.

pub mod batch_norm;
pub mod conv2d;
pub mod gemm;
pub mod max_pool;
mod parity;
pub mod relu;
mod winograd;

use std::mem::MaybeUninit;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout};
use rayon::prelude::*;

pub use conv2d::{conv2d, conv2d_relu, conv2d_relu_pool};
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

/// Runs `f` compiled for the widest vector extension this CPU has (AVX-512,
/// else AVX2 with FMA, else the baseline), chosen at run time as the `gemm`
/// crate chooses its microkernels. The kernels' loops are written to
/// auto-vectorise, and the crate is built for baseline x86-64, where they
/// ran four lanes wide. `f` and everything it calls that should benefit
/// must be inlined: `#[inline(always)]` on the functions, and on `f`
/// itself and on closures passed as arguments within it (a closure's body
/// is a function of its own, compiled for the baseline unless inlined). Results do not depend on the choice: the loops
/// never contract a multiply and an add into one rounding, and their sums
/// keep their written order.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// `dst[i] = src[i]` into a buffer's spare capacity (every element of
/// `dst`), for the short segments of im2col, col2im and the max-pool (an
/// output row, 8 to 26 floats in SmallCNN), eight lanes at a time:
/// `copy_from_slice` calls `memmove`, whose call and size dispatch cost
/// more than the copy at these lengths.
#[inline(always)]
pub(crate) fn write_short(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    let src = &src[..dst.len()];
    // Blocks of 8 read whole into locals before the write: element by
    // element, the compiler could not rule out that `dst` overlaps `src`
    // (inlined, they lose their `&mut`/`&` distinction) and copied one
    // float at a time.
    let mut d8 = dst.chunks_exact_mut(8);
    let mut s8 = src.chunks_exact(8);
    for (d, s) in (&mut d8).zip(&mut s8) {
        let v: [f32; 8] = s.try_into().expect("a block of 8");
        let d: &mut [MaybeUninit<f32>; 8] = d.try_into().expect("a block of 8");
        *d = v.map(MaybeUninit::new);
    }
    for (d, s) in d8.into_remainder().iter_mut().zip(s8.remainder()) {
        *d = MaybeUninit::new(*s);
    }
}

/// `dst.copy_from_slice(&src[..dst.len()])` for short runs (see
/// [`write_short`]).
#[inline(always)]
pub(crate) fn copy_short(dst: &mut [f32], src: &[f32]) {
    // SAFETY: `write_short` writes only floats.
    write_short(unsafe { as_uninit(dst) }, src)
}

/// `dst[i] += src[i]` for short runs (blocks of 8, as [`write_short`]),
/// and for the longer ones of the backward's partial sums, which the same
/// blocks serve.
#[inline(always)]
pub(crate) fn add_short(dst: &mut [f32], src: &[f32]) {
    let src = &src[..dst.len()];
    let mut d8 = dst.chunks_exact_mut(8);
    let mut s8 = src.chunks_exact(8);
    for (d, s) in (&mut d8).zip(&mut s8) {
        let v: [f32; 8] = s.try_into().expect("a block of 8");
        let d: &mut [f32; 8] = d.try_into().expect("a block of 8");
        let mut a: [f32; 8] = *d;
        for j in 0..8 {
            a[j] += v[j];
        }
        *d = a;
    }
    for (d, s) in d8.into_remainder().iter_mut().zip(s8.remainder()) {
        *d += s;
    }
}

/// Initialised floats seen as a buffer for the kernels that write into
/// spare capacity ([`write_short`], `mask_by_output`, the max-pool's
/// backward).
///
/// # Safety
/// Only initialised floats may be written through the view (the slice is
/// read as floats afterwards); `MaybeUninit<f32>` has the layout of `f32`.
pub(crate) unsafe fn as_uninit(s: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: same layout; the caller keeps every element initialised.
    unsafe { &mut *(s as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// Independent partial sums per block: a plain `f32` sum is sequential
/// (IEEE order), so the compiler cannot vectorise it; 16 lanes can.
pub(crate) const LANES: usize = 16;

/// `Σ f(v)` over `block`, in [`LANES`] partial sums (the bias gradient of
/// the convolution, the batch norm's statistics).
#[inline(always)]
pub(crate) fn lane_sum(block: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = block.chunks_exact(LANES);
    for c in &mut chunks {
        let c: &[f32; LANES] = c.try_into().expect("exact chunks");
        for l in 0..LANES {
            acc[l] += f(c[l]);
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().map(|&v| f(v)).sum::<f32>()
}

/// A buffer of `len` floats filled in parallel: `fill(i, part)` gets the
/// `i`-th part of `chunk` elements (the last may be shorter), from the
/// buffer's spare capacity, and writes every element of it.
///
/// Each task writes its own part, in its core's cache: `vec![0.0; len]`
/// zeroes the whole buffer on the calling thread first, a serial pass over
/// every activation and gradient while the other cores wait. Zeroing each
/// part in its task before the kernel overwrote it whole was still 5% of a
/// SmallCNN training epoch (the convolutions' outputs and the max-pool's
/// input gradients, mostly), so no part is zeroed.
///
/// In this crate's tests every part is filled with a marker first, and a
/// marker left anywhere panics, naming the element: the kernel tests check
/// the contract below on their shapes.
///
/// # Safety
/// `fill(i, part)` must write every element of `part`.
pub(crate) unsafe fn par_buffer(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    let mut buf = Vec::with_capacity(len);
    buf.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, part)| {
            #[cfg(test)]
            part.fill(MaybeUninit::new(UNWRITTEN));
            fill(i, part)
        });
    // SAFETY: the caller's `fill` wrote every element.
    unsafe { buf.set_len(len) };
    #[cfg(test)]
    if let Some(i) = buf.iter().position(|v| v.to_bits() == UNWRITTEN.to_bits()) {
        panic!("par_buffer: element {i} of {len} was not written");
    }
    buf
}

/// The marker of [`par_buffer`]'s check: a signalling NaN, which no
/// arithmetic returns (it gives quiet NaNs).
#[cfg(test)]
const UNWRITTEN: f32 = f32::from_bits(0x7fa5_a5a5);

/// Zeroes `part` of a buffer's spare capacity and returns it as floats;
/// the caller sets the length once every part went through here.
pub(crate) fn zeroed(part: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    part.fill(MaybeUninit::new(0.0));
    // SAFETY: every element was just written, and MaybeUninit<f32> has the
    // layout of f32.
    unsafe { &mut *(part as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// A parameter's gradient, `like`'s shape from element `at` of a backward
/// pass's flat output (`[dx..., dw..., db...]`), copied into a storage of
/// its own. A view would share the whole output's storage, the input
/// gradient included, for as long as anyone holds the parameter's
/// gradient. SGD's first momentum buffer is that gradient, so on a fresh
/// optimizer each convolution's input gradient of one step (10.6 MB for
/// SmallCNN's second layer) stayed allocated through the next step: the
/// bench's 5-epoch SmallCNN run peaked at 114 MB of allocations, 92 MB
/// with the copies (a few kB each).
pub(crate) fn parameter_gradient(
    flat: &candle_core::Tensor,
    at: usize,
    like: &candle_core::Tensor,
) -> candle_core::Result<candle_core::Tensor> {
    flat.narrow(0, at, like.elem_count())?
        .reshape(like.shape())?
        .force_contiguous()
}

/// The number of floats in `t`'s storage (tests: whether `t` shares it).
#[cfg(test)]
pub(crate) fn storage_len(t: &candle_core::Tensor) -> usize {
    let (storage, _) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(CpuStorage::F32(v)) => v.len(),
        _ => panic!("not an f32 CPU tensor"),
    }
}

/// `Σ y·r` in f64: the scalar loss of the kernels' finite-difference tests
/// (a random projection `r` of the output `y`).
#[cfg(test)]
pub(crate) fn weighted_sum(y: &candle_core::Tensor, r: &candle_core::Tensor) -> f64 {
    (y * r)
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}
