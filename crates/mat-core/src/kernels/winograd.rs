//! Winograd's minimal filtering F(2x2, 3x3) for the 3x3, stride-1
//! convolutions (Lavin & Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016): each 2x2 output tile is
//!
//! `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A`
//!
//! for a 4x4 input tile `d` and a 3x3 filter `g`, which takes 16
//! multiplications where the direct sum takes 36. Summed over the input
//! channels, the 16 products of a tile become 16 matrix products, one per
//! position ξ of the 4x4 transformed tile:
//!
//! - forward:         `M_ξ = U_ξ · V_ξ`         `[OC, T] = [OC, C]·[C, T]`
//! - weight gradient: `dU_ξ = Σ dM_ξ · V_ξᵀ`    `[OC, C] = [OC, T]·[T, C]`
//! - input gradient:  `dV_ξ = U_ξᵀ · dM_ξ`      `[C, T] = [C, OC]·[OC, T]`
//!
//! with `U = G g Gᵀ` (the filters), `V = Bᵀ d B` (the input tiles), `T`
//! tiles and `dM = A dY Aᵀ`. The gradients are those of the transformed
//! computation, the adjoint of each transform in turn (`dg = Gᵀ dU G`,
//! `dd = B dV Bᵀ`), which equal the convolution's. The products have 2.25x
//! fewer multiply-adds than im2col's, and the transformed input (16 values
//! per 4 outputs) is 2.25x smaller than the column matrix (36 per 4).
//!
//! Rounding differs from the direct sum (the transforms add and subtract
//! before the products); the tests hold both paths to the same tolerance
//! against candle.

use std::mem::MaybeUninit;

use super::conv2d::Geom;
use super::gemm::{sgemm_abt, sgemm_rows, Mat};
use super::parity;

/// Tiles per product: images are grouped until a group holds about this
/// many, so that SmallCNN's later layers (25 and 16 tiles an image) still
/// get products wide enough to run near the GEMM's rate, while a group's
/// transformed input and products stay within a core's L2.
const TILES_PER_GROUP: usize = 128;

/// Positions of a transformed tile.
const XI: usize = 16;

/// Floats between one position's matrix and the next in `V`, `M` and
/// their gradients, past the matrix itself. The transforms read or write
/// all 16 positions of a channel's tiles at once: with `C·T` floats a
/// multiple of 1024 (4 KB; all three of SmallCNN's Winograd layers, 32 x
/// 160, 32 x 128 and 64 x 160), their 16 runs fell into the same sets of
/// the L1 cache and evicted each other, and the input transform took
/// longer than one of the products it feeds. One cache line more puts
/// them in 16 sets.
const SKEW: usize = 16;

/// A group's tile count is a multiple of this: the products' kernels
/// ([`sgemm_rows`], [`sgemm_abt`]) then run whole 16-lane registers along
/// the tiles. With the `gemm` crate, measured on one core (AVX-512), `[32,
/// 32]·[32, T]` ran at 90 GFLOP/s for T = 156 (SmallCNN's second layer, one
/// image) and 129 for T = 160; `[64, 32]·[32, T]` at 109 for T = 120 and 144
/// for T = 128.
const TILE_ROUND: usize = 16;

/// Whether a convolution runs here: 3x3, stride 1, padding 0 or 1 (the
/// models' and the tests'), and enough input channels for the products to
/// pay for the transforms (a one-channel first layer would multiply
/// 1-wide matrices).
pub(super) fn applies(g: &Geom) -> bool {
    g.kh == 3 && g.kw == 3 && g.stride == 1 && g.pad <= 1 && g.c >= 8
}

fn prev_power_of_two(k: usize) -> usize {
    1 << k.ilog2()
}

/// The tiling of one convolution.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    pub g: Geom,
    /// Tile rows and columns of an output plane (the last may be partial).
    /// A tile row holds `tw + 1` tiles: the last, past the plane's edge,
    /// makes every entry of the windows a run at a fixed offset into the
    /// plane's quarters (see [`input_transform`]); its products are
    /// computed and dropped.
    th: usize,
    tw: usize,
    /// Images per group: the unit of the products and of a parallel task
    /// in the forward pass. Fixed by the layer's shape alone, so that an
    /// image's result does not depend on the thread count.
    pub per_group: usize,
}

impl Plan {
    pub fn new(g: Geom) -> Self {
        let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
        Self {
            g,
            th,
            tw,
            // A power of two up to 16, so that the backward pass's tasks
            // of 16 images split into whole groups.
            per_group: prev_power_of_two((TILES_PER_GROUP / (th * tw)).clamp(1, 16)),
        }
    }

    /// Tiles per image, the extra one of each row included.
    fn tpi(&self) -> usize {
        self.th * self.cols()
    }

    /// Tiles per tile row, the extra one included; also the row length
    /// of a quarter plane.
    fn cols(&self) -> usize {
        self.tw + 1
    }

    /// Floats of the transformed filters `U` (`[16, OC, C]`).
    pub fn u_len(&self) -> usize {
        XI * self.g.oc * self.g.c
    }

    /// Tiles in a group of `imgs` images, rounded up to a multiple of
    /// [`TILE_ROUND`]; the tiles past the images' are zero in `V` and
    /// `dM`.
    pub fn tiles(&self, imgs: usize) -> usize {
        (imgs * self.tpi()).next_multiple_of(TILE_ROUND)
    }

    /// Floats from one position's matrix to the next in a group's `V` or
    /// `dV` (`[16, C, T]`, each `[C, T]` row-major) for `imgs` images:
    /// `C·T` and [`SKEW`].
    fn v_stride(&self, imgs: usize) -> usize {
        self.g.c * self.tiles(imgs) + SKEW
    }

    /// [`Plan::v_stride`] of a group's products `M` or `dM` (`[16, OC, T]`).
    fn m_stride(&self, imgs: usize) -> usize {
        self.g.oc * self.tiles(imgs) + SKEW
    }

    /// Floats of a group's `V` or `dV` for `imgs` images.
    fn v_len(&self, imgs: usize) -> usize {
        XI * self.v_stride(imgs)
    }

    /// Floats of a group's `M` or `dM`.
    fn m_len(&self, imgs: usize) -> usize {
        XI * self.m_stride(imgs)
    }

    /// Floats of the scratch one forward task needs.
    pub fn forward_scratch(&self) -> usize {
        self.v_len(self.per_group) + self.m_len(self.per_group) + self.work_len()
    }

    /// Floats of the scratch one backward task needs: `V`, `dM`, `dV`,
    /// one group's masked output gradient and the row buffers.
    pub fn backward_scratch(&self) -> usize {
        2 * self.v_len(self.per_group)
            + self.m_len(self.per_group)
            + self.per_group * self.g.out_len()
            + self.work_len()
    }

    /// The transforms' work space: a plane's four quarters and 16 runs
    /// of one value per tile (the output transforms need 12 runs); the weight
    /// gradient's products use it after them, for one `V_ξ` transposed.
    fn work_len(&self) -> usize {
        let t = self.tiles(self.per_group);
        (4 * self.quarter() + XI * t).max(self.g.c * t)
    }

    /// Floats of one quarter of a plane (see [`split_plane`]): `th + 2`
    /// rows of `tw + 1`, enough for the extra tiles' windows too.
    fn quarter(&self) -> usize {
        (self.th + 2) * self.cols()
    }
}

/// `U = G g Gᵀ` for every filter into `u` (every entry), laid out
/// `[16, OC, C]` (one `[OC, C]` matrix per position ξ), from `w`
/// `[OC, C, 3, 3]`.
///
/// `G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]]`.
// The index runs over the columns of several arrays at once.
#[allow(clippy::needless_range_loop)]
pub(super) fn filter_transform(g: &Geom, w: &[f32], u: &mut [f32]) {
    let (oc, c) = (g.oc, g.c);
    let u = &mut u[..XI * oc * c];
    for o in 0..oc {
        for i in 0..c {
            let f = &w[(o * c + i) * 9..][..9];
            // G·g: rows of 3.
            let mut q = [[0f32; 3]; 4];
            for b in 0..3 {
                let (g0, g1, g2) = (f[b], f[3 + b], f[6 + b]);
                q[0][b] = g0;
                q[1][b] = 0.5 * (g0 + g1 + g2);
                q[2][b] = 0.5 * (g0 - g1 + g2);
                q[3][b] = g2;
            }
            // (G·g)·Gᵀ.
            for (r, qr) in q.iter().enumerate() {
                let t = [
                    qr[0],
                    0.5 * (qr[0] + qr[1] + qr[2]),
                    0.5 * (qr[0] - qr[1] + qr[2]),
                    qr[2],
                ];
                for (s, v) in t.into_iter().enumerate() {
                    u[((r * 4 + s) * oc + o) * c + i] = v;
                }
            }
        }
    }
}

/// `dg = Gᵀ dU G` for every filter: `dU` `[16, OC, C]` into `dw` `[OC, C, 3, 3]`.
// The index runs over the columns of several 4x4 and 3x3 arrays at once.
#[allow(clippy::needless_range_loop)]
pub(super) fn filter_transform_adjoint(g: &Geom, du: &[f32], dw: &mut [f32]) {
    let (oc, c) = (g.oc, g.c);
    for o in 0..oc {
        for i in 0..c {
            let at = |xi: usize| du[(xi * oc + o) * c + i];
            // Gᵀ·dU: 3 rows of 4.
            let mut h = [[0f32; 4]; 3];
            for s in 0..4 {
                let (u0, u1, u2, u3) = (at(s), at(4 + s), at(8 + s), at(12 + s));
                h[0][s] = u0 + 0.5 * (u1 + u2);
                h[1][s] = 0.5 * (u1 - u2);
                h[2][s] = 0.5 * (u1 + u2) + u3;
            }
            // (Gᵀ·dU)·G.
            let f = &mut dw[(o * c + i) * 9..][..9];
            for (a, hr) in h.iter().enumerate() {
                f[a * 3] = hr[0] + 0.5 * (hr[1] + hr[2]);
                f[a * 3 + 1] = 0.5 * (hr[1] - hr[2]);
                f[a * 3 + 2] = 0.5 * (hr[1] + hr[2]) + hr[3];
            }
        }
    }
}

/// `K` consecutive slices of `len` floats at the start of `buf`.
#[inline(always)]
fn split<const K: usize>(buf: &mut [f32], len: usize) -> [&mut [f32]; K] {
    let mut parts = buf[..K * len].chunks_exact_mut(len);
    std::array::from_fn(|_| parts.next().expect("K parts"))
}

/// The 16 runs of one plane in a `[16, planes, T]` array: position ξ's
/// `len` values from `at` on, ξ's block `stride` floats long.
#[inline(always)]
fn runs_mut(a: &mut [f32], stride: usize, at: usize, len: usize) -> [&mut [f32]; XI] {
    let mut parts = a[..XI * stride].chunks_exact_mut(stride);
    std::array::from_fn(|_| &mut parts.next().expect("16 parts")[at..at + len])
}

/// [`runs_mut`], read only.
#[inline(always)]
fn runs(a: &[f32], stride: usize, at: usize, len: usize) -> [&[f32]; XI] {
    let mut parts = a[..XI * stride].chunks_exact(stride);
    std::array::from_fn(|_| &parts.next().expect("16 parts")[at..at + len])
}

/// Which quarter and offset the columns of an input row go to: the
/// quarters' columns `k` hold padded column `2k` (`b = 0`) or `2k + 1`
/// (`b = 1`), i.e. input column `2k + b - pad`. Input column `2m` lands in
/// `first` at `m + f0`, `2m + 1` in `second` at `m + s0`.
#[inline(always)]
fn parity_sides<'a>(
    p: &Plan,
    even: &'a mut [f32],
    odd: &'a mut [f32],
) -> (&'a mut [f32], &'a mut [f32], usize, usize) {
    let pad = p.g.pad;
    if pad.is_multiple_of(2) {
        (even, odd, pad / 2, pad / 2)
    } else {
        (odd, even, pad / 2, pad.div_ceil(2))
    }
}

/// The two quarters of row parity `a` (`[4, quarter]`, see [`split_plane`]).
#[inline(always)]
fn quarter_pair<'a>(p: &Plan, quarters: &'a mut [f32], a: usize) -> (&'a mut [f32], &'a mut [f32]) {
    let q = p.quarter();
    quarters[2 * a * q..][..2 * q].split_at_mut(q)
}

/// Fills the four quarters of one input plane, with the padding: quarter
/// `2a + b` holds the padded plane's rows of parity `a` and columns of
/// parity `b`, padded pixel `(2r + a, 2k + b)` at `r · (tw + 1) + k`. Entry
/// `(i, j)` of tile `(ty, tx)`'s window, padded pixel `(2ty + i, 2tx + j)`,
/// is then in quarter `2(i % 2) + j % 2` at `t + (i / 2)·(tw + 1) + j / 2`
/// for the tile's index `t = ty·(tw + 1) + tx`: over all tiles, a run at a
/// fixed offset. The entries of the padding are left as they are (zero).
#[inline(always)]
fn split_plane(p: &Plan, x: &[f32], quarters: &mut [f32]) {
    let g = &p.g;
    let cols = p.cols();
    for iy in 0..g.h {
        let r = iy + g.pad;
        let (even, odd) = quarter_pair(p, quarters, r % 2);
        let (first, second, f0, s0) = parity_sides(p, even, odd);
        let at = (r / 2) * cols;
        let src = &x[iy * g.w..][..g.w];
        parity::split(
            src,
            &mut first[at + f0..at + cols],
            &mut second[at + s0..at + cols],
        );
    }
}

/// Writes the four quarters (see [`split_plane`]) into one input gradient
/// plane, every element, leaving out the padding: the plane needs no
/// zeroing first.
#[inline(always)]
fn merge_plane(p: &Plan, quarters: &mut [f32], dx: &mut [MaybeUninit<f32>]) {
    let g = &p.g;
    let cols = p.cols();
    for iy in 0..g.h {
        let r = iy + g.pad;
        let (even, odd) = quarter_pair(p, quarters, r % 2);
        let (first, second, f0, s0) = parity_sides(p, even, odd);
        let at = (r / 2) * cols;
        let dst = &mut dx[iy * g.w..][..g.w];
        parity::merge_uninit(&first[at + f0..at + cols], &second[at + s0..at + cols], dst);
    }
}

/// Where entry `(i, j)` of every tile's window starts in the quarters
/// (see [`split_plane`]).
#[inline(always)]
fn window_run(p: &Plan, i: usize, j: usize) -> usize {
    (2 * (i % 2) + j % 2) * p.quarter() + (i / 2) * p.cols() + j / 2
}

/// `dst[o][t] = f(a[t], b[t], c[t], d[t])[o]` for `t < len`: four runs in,
/// `O` out, in blocks of [`BLOCK`] on local arrays, which vectorise (each
/// transform is a few of these over a channel's tiles, which stay in L1).
///
/// A run whose length is not a multiple of the block ends with one more
/// block that overlaps the one before: it writes some entries twice, with
/// the same values, where a scalar remainder loop took as long as the
/// blocks (SmallCNN's images have 156, 30 and 20 tiles). The outputs must
/// not overlap the inputs.
#[inline(always)]
fn map4<const O: usize>(
    src: [&[f32]; 4],
    dst: [&mut [f32]; O],
    len: usize,
    f: impl Fn([f32; 4]) -> [f32; O],
) {
    let src = src.map(|s| &s[..len]);
    let dst = dst.map(|s| &mut s[..len]);
    if len < BLOCK {
        for t in 0..len {
            let y = f(src.map(|s| s[t]));
            for o in 0..O {
                dst[o][t] = y[o];
            }
        }
        return;
    }
    let mut at = 0;
    loop {
        let x: [[f32; BLOCK]; 4] = src.map(|s| s[at..at + BLOCK].try_into().expect("a block"));
        let mut y = [[0f32; BLOCK]; O];
        for l in 0..BLOCK {
            let v = f([x[0][l], x[1][l], x[2][l], x[3][l]]);
            for o in 0..O {
                y[o][l] = v[o];
            }
        }
        for o in 0..O {
            dst[o][at..at + BLOCK].copy_from_slice(&y[o]);
        }
        if at + BLOCK == len {
            return;
        }
        at = (at + BLOCK).min(len - BLOCK);
    }
}

/// Floats per block of [`map4`]: one AVX-512 register.
const BLOCK: usize = 16;

/// [`map4`] writing back into its four runs.
#[inline(always)]
fn map4_in_place(runs: [&mut [f32]; 4], len: usize, f: impl Fn([f32; 4]) -> [f32; 4]) {
    let [a, b, c, d] = runs.map(|s| &mut s[..len]);
    for t in 0..len {
        let y = f([a[t], b[t], c[t], d[t]]);
        a[t] = y[0];
        b[t] = y[1];
        c[t] = y[2];
        d[t] = y[3];
    }
}

/// Runs `i, i + step, i + 2·step, i + 3·step` of `runs`.
#[inline(always)]
fn four<'a, T: ?Sized>(runs: &'a [&'a T], i: usize, step: usize) -> [&'a T; 4] {
    std::array::from_fn(|k| runs[i + k * step])
}

/// `Bᵀ x` for one column of a 4x4 window (or `x B` for one row):
/// `Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`.
#[inline(always)]
fn bt([d0, d1, d2, d3]: [f32; 4]) -> [f32; 4] {
    [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
}

/// `B x` for one column of a 4x4 transformed tile (or `x Bᵀ` for one row).
#[inline(always)]
fn b([v0, v1, v2, v3]: [f32; 4]) -> [f32; 4] {
    [v0, v1 - v2 + v3, v1 + v2 - v0, -v3]
}

/// `V = Bᵀ d B` of every tile of `imgs` images `x` (`[imgs, C, H, W]`) into
/// `v` (`[16, C, T]`, `T = imgs · tiles`); additions only.
///
/// A channel at a time: each image's plane is split into quarters, where
/// the 16 entries of the windows are 16 runs over the image's tiles
/// (see [`split_plane`]); `Bᵀ·` down the windows' columns reads them
/// there, then `·B` along the rows runs over the channel's tiles of all
/// images.
#[inline(always)]
pub(super) fn input_transform(p: &Plan, x: &[f32], imgs: usize, v: &mut [f32], work: &mut [f32]) {
    let g = &p.g;
    let (tpi, t_all) = (p.tpi(), p.tiles(imgs));
    let (quarters, rest) = work.split_at_mut(4 * p.quarter());
    let d = &mut rest[..XI * t_all];
    // `split_plane` writes the same entries for every plane: the others
    // (the padding) stay zero. So do the runs' entries past the images'
    // tiles, and `V`'s with them.
    quarters.fill(0.0);
    for run in d.chunks_exact_mut(t_all) {
        run[imgs * tpi..].fill(0.0);
    }
    for c in 0..g.c {
        let mut rs: [&mut [f32]; XI] = split::<XI>(d, t_all);
        for n in 0..imgs {
            split_plane(p, &x[(n * g.c + c) * g.h * g.w..][..g.h * g.w], quarters);
            let q = &*quarters;
            for j in 0..4 {
                let src: [&[f32]; 4] = std::array::from_fn(|i| &q[window_run(p, i, j)..][..tpi]);
                let dst = rs_column(&mut rs, j).map(|r| &mut r[n * tpi..][..tpi]);
                map4(src, dst, tpi, bt);
            }
        }
        let rs: [&[f32]; XI] = rs.map(|r| &*r);
        let mut out = runs_mut(v, p.v_stride(imgs), c * t_all, t_all).into_iter();
        for i in 0..4 {
            let dst: [&mut [f32]; 4] = std::array::from_fn(|_| out.next().expect("16 runs"));
            map4(four(&rs, 4 * i, 1), dst, t_all, bt);
        }
    }
}

/// Runs `j, 4 + j, 8 + j, 12 + j` (a column of the 4x4 window) of 16.
#[inline(always)]
fn rs_column<'a>(rs: &'a mut [&mut [f32]; XI], j: usize) -> [&'a mut [f32]; 4] {
    let [r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, r13, r14, r15] = rs;
    match j {
        0 => [r0, r4, r8, r12],
        1 => [r1, r5, r9, r13],
        2 => [r2, r6, r10, r14],
        _ => [r3, r7, r11, r15],
    }
    .map(|r| &mut **r)
}

/// `dd = B dV Bᵀ` of every tile, written into the input gradient `dx`
/// (`[imgs, C, H, W]`, every element) where it falls inside the image.
/// Neighbouring windows overlap by two rows and two columns; their
/// entries add up in the plane's quarters (see [`split_plane`]).
#[inline(always)]
pub(super) fn input_transform_adjoint(
    p: &Plan,
    dv: &[f32],
    imgs: usize,
    dx: &mut [MaybeUninit<f32>],
    work: &mut [f32],
) {
    let g = &p.g;
    let (tpi, t_all) = (p.tpi(), p.tiles(imgs));
    let (quarters, rest) = work.split_at_mut(4 * p.quarter());
    let dd = &mut rest[..XI * t_all];
    for c in 0..g.c {
        {
            let src = runs(dv, p.v_stride(imgs), c * t_all, t_all);
            let mut out: [&mut [f32]; XI] = split::<XI>(dd, t_all);
            // B· down each column, from dV into dd, then ·Bᵀ along each row in place.
            for j in 0..4 {
                map4(four(&src, j, 4), rs_column(&mut out, j), t_all, b);
            }
            for i in 0..4 {
                let [r0, r1, r2, r3, ..] = &mut out[4 * i..] else {
                    unreachable!("16 runs")
                };
                map4_in_place([&mut **r0, &mut **r1, &mut **r2, &mut **r3], t_all, b);
            }
        }
        for n in 0..imgs {
            for (q, quarter) in quarters.chunks_exact_mut(p.quarter()).enumerate() {
                // The entries (i, j) of the windows that land in quarter
                // `2a + b` (see `window_run`), at offsets 0, 1, cols, cols + 1.
                let (a, b) = (q / 2, q % 2);
                let runs = [(a, b), (a, b + 2), (a + 2, b), (a + 2, b + 2)]
                    .map(|(i, j)| &dd[(4 * i + j) * t_all + n * tpi..][..tpi]);
                sum_shifted(runs, p.cols(), quarter);
            }
            merge_plane(
                p,
                quarters,
                &mut dx[(n * g.c + c) * g.h * g.w..][..g.h * g.w],
            );
        }
    }
}

/// `out[k] = r0[k] + r1[k - 1] + r2[k - cols] + r3[k - cols - 1]`, each
/// term where its index falls inside the runs (`tpi` long), else left out:
/// one quarter of an image's input gradient plane from the four entries
/// of the windows that land in it (neighbouring windows overlap by two
/// rows and two columns). Every entry of `out` is written, the sums in
/// that order from zero.
///
/// The runs' extra tiles (the last of each tile row) are zero, so a shift
/// by one that wraps into the row before adds nothing. The first `cols +
/// 1` entries and the last `2·cols` miss terms and go piece by piece;
/// the rest, most of the quarter, is one 4-run [`map4`].
#[inline(always)]
fn sum_shifted([r0, r1, r2, r3]: [&[f32]; 4], cols: usize, out: &mut [f32]) {
    let tpi = r0.len();
    if tpi < cols + 1 || out.len() < tpi + cols + 1 {
        // A single tile row: every entry term by term.
        for (k, o) in out.iter_mut().enumerate() {
            let mut acc = 0f32;
            for (r, shift) in [(r0, 0), (r1, 1), (r2, cols), (r3, cols + 1)] {
                if k >= shift && k - shift < tpi {
                    acc += r[k - shift];
                }
            }
            *o = acc;
        }
        return;
    }
    let (m, e) = (tpi - cols - 1, tpi - cols);
    // Before the third and fourth runs start.
    out[0] = 0.0 + r0[0];
    for k in 1..cols {
        out[k] = (0.0 + r0[k]) + r1[k - 1];
    }
    out[cols] = ((0.0 + r0[cols]) + r1[cols - 1]) + r2[0];
    let (body, tail) = out[cols + 1..].split_at_mut(m);
    map4(
        [&r0[cols + 1..], &r1[cols..], &r2[1..], &r3[..m]],
        [body],
        m,
        |[a, b, c, d]| [(((0.0 + a) + b) + c) + d],
    );
    // After the first and second runs end.
    tail[0] = ((0.0 + r1[tpi - 1]) + r2[e]) + r3[m];
    for k in 1..cols {
        tail[k] = (0.0 + r2[e + k]) + r3[m + k];
    }
    tail[cols] = 0.0 + r3[tpi - 1];
    tail[cols + 1..].fill(0.0);
}

/// `Y = Aᵀ M A` of every tile plus the bias (and ReLU), into `y`
/// (`[imgs, OC, OH, OW]`).
///
/// `Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]`.
#[inline(always)]
pub(super) fn output_transform(
    p: &Plan,
    m: &[f32],
    imgs: usize,
    bias: &[f32],
    relu: bool,
    y: &mut [MaybeUninit<f32>],
    work: &mut [f32],
) {
    let g = &p.g;
    let (tpi, tw, t_all) = (p.tpi(), p.tw, p.tiles(imgs));
    // Runs 0-7: Aᵀ·M (2 rows of 4); then the outputs (0, 0), (0, 1),
    // (1, 0), (1, 1) of every tile.
    let (s, rest) = work.split_at_mut(8 * t_all);
    let quad = &mut rest[..4 * t_all];
    for (o, &bo) in bias.iter().enumerate() {
        {
            let src = runs(m, p.m_stride(imgs), o * t_all, t_all);
            let [s00, s01, s02, s03, s10, s11, s12, s13] = split::<8>(s, t_all);
            for (j, [top, bottom]) in [[s00, s10], [s01, s11], [s02, s12], [s03, s13]]
                .into_iter()
                .enumerate()
            {
                map4(four(&src, j, 4), [top, bottom], t_all, |[m0, m1, m2, m3]| {
                    [m0 + m1 + m2, m1 - m2 - m3]
                });
            }
            let [y00, y01, y10, y11] = split::<4>(quad, t_all);
            let act = |v: f32| if relu { (v + bo).max(0.0) } else { v + bo };
            for (r, [left, right]) in [[y00, y01], [y10, y11]].into_iter().enumerate() {
                let sr: [&[f32]; 4] = std::array::from_fn(|j| &s[(4 * r + j) * t_all..][..t_all]);
                map4(sr, [left, right], t_all, |[s0, s1, s2, s3]| {
                    [act(s0 + s1 + s2), act(s1 - s2 - s3)]
                });
            }
        }
        for n in 0..imgs {
            let plane = &mut y[(n * g.oc + o) * g.oh * g.ow..][..g.oh * g.ow];
            for oy in 0..g.oh {
                let (ty, r) = (oy / 2, oy % 2);
                let at = n * tpi + ty * p.cols();
                let left = &quad[2 * r * t_all + at..][..tw];
                let right = &quad[(2 * r + 1) * t_all + at..][..tw];
                parity::merge_uninit(left, right, &mut plane[oy * g.ow..][..g.ow]);
            }
        }
    }
}

/// `dM = A dY Aᵀ` of every tile of `imgs` images' output gradient `dy`
/// (`[imgs, OC, OH, OW]`, zero past the plane's edge) into `dm` (`[16, OC, T]`).
#[inline(always)]
pub(super) fn output_transform_adjoint(
    p: &Plan,
    dy: &[f32],
    imgs: usize,
    dm: &mut [f32],
    work: &mut [f32],
) {
    let g = &p.g;
    let (tpi, tw, t_all) = (p.tpi(), p.tw, p.tiles(imgs));
    // Runs 2r and 2r + 1: the tiles' entries (r, 0) and (r, 1). The
    // entries past the plane's edge and the extra tiles' are never written: zero.
    let quad = &mut work[..4 * t_all];
    quad.fill(0.0);
    for o in 0..g.oc {
        for n in 0..imgs {
            let plane = &dy[(n * g.oc + o) * g.oh * g.ow..][..g.oh * g.ow];
            for oy in 0..g.oh {
                let (ty, r) = (oy / 2, oy % 2);
                let at = n * tpi + ty * p.cols();
                let (left, right) = quad[2 * r * t_all..].split_at_mut(t_all);
                parity::split(
                    &plane[oy * g.ow..][..g.ow],
                    &mut left[at..][..tw],
                    &mut right[at..][..tw],
                );
            }
        }
        let src: [&[f32]; 4] = std::array::from_fn(|s| &quad[s * t_all..][..t_all]);
        let mut out = runs_mut(dm, p.m_stride(imgs), o * t_all, t_all).into_iter();
        // A·dY has rows (a0, b0), (a0 + a1, b0 + b1), (a0 - a1, b0 - b1),
        // (-a1, -b1); ·Aᵀ takes each row (p, q) to (p, p + q, p - q, -q).
        for i in 0..4 {
            let dst: [&mut [f32]; 4] = std::array::from_fn(|_| out.next().expect("16 runs"));
            map4(src, dst, t_all, |[a0, b0, a1, b1]| {
                let (pp, q) = match i {
                    0 => (a0, b0),
                    1 => (a0 + a1, b0 + b1),
                    2 => (a0 - a1, b0 - b1),
                    _ => (-a1, -b1),
                };
                [pp, pp + q, pp - q, -q]
            });
        }
    }
}

/// The 16 products `M_ξ = U_ξ · V_ξ` of one group of `imgs` images.
#[inline(always)]
pub(super) fn products(p: &Plan, u: &[f32], v: &[f32], m: &mut [f32], imgs: usize) {
    let (oc, c, t) = (p.g.oc, p.g.c, p.tiles(imgs));
    let (vs, ms) = (p.v_stride(imgs), p.m_stride(imgs));
    for (xi, m) in m[..XI * ms].chunks_exact_mut(ms).enumerate() {
        let u = Mat::rows(&u[xi * oc * c..][..oc * c], c);
        let v = Mat::rows(&v[xi * vs..][..c * t], t);
        sgemm_rows(oc, t, c, u, v, &mut m[..oc * t], false);
    }
}

/// `dU_ξ += dM_ξ · V_ξᵀ` for one group of `imgs` images, into `du` `[16,
/// OC, C]`; the tiles, the reduction axis, are contiguous in both operands
/// (see [`sgemm_abt`], which may use `work`).
#[inline(always)]
pub(super) fn filter_gradient(
    p: &Plan,
    dm: &[f32],
    v: &[f32],
    du: &mut [f32],
    imgs: usize,
    work: &mut [f32],
) {
    let (oc, c, t) = (p.g.oc, p.g.c, p.tiles(imgs));
    let (vs, ms) = (p.v_stride(imgs), p.m_stride(imgs));
    for (xi, du) in du[..XI * oc * c].chunks_exact_mut(oc * c).enumerate() {
        let v = &v[xi * vs..][..c * t];
        let dm = &dm[xi * ms..][..oc * t];
        sgemm_abt((oc, c, t), dm, v, du, true, work);
    }
}

/// `dV_ξ = U_ξᵀ · dM_ξ` for one group of `imgs` images.
#[inline(always)]
pub(super) fn input_gradient(p: &Plan, u: &[f32], dm: &[f32], dv: &mut [f32], imgs: usize) {
    let (oc, c, t) = (p.g.oc, p.g.c, p.tiles(imgs));
    let (vs, ms) = (p.v_stride(imgs), p.m_stride(imgs));
    for (xi, dv) in dv[..XI * vs].chunks_exact_mut(vs).enumerate() {
        let ut = Mat::transposed(&u[xi * oc * c..][..oc * c], c);
        let dm = Mat::rows(&dm[xi * ms..][..oc * t], t);
        sgemm_rows(c, t, oc, ut, dm, &mut dv[..c * t], false);
    }
}

/// A task's scratch, split: `V`, `M`/`dM`, `dV`, the masked output
/// gradient and the transforms' work space.
type Scratch<'a> = (
    &'a mut [f32],
    &'a mut [f32],
    &'a mut [f32],
    &'a mut [f32],
    &'a mut [f32],
);

/// Splits one task's scratch; `dV` and the masked output gradient are
/// empty in the forward pass.
pub(super) fn split_scratch<'a>(p: &Plan, buf: &'a mut [f32], backward: bool) -> Scratch<'a> {
    let k = p.per_group;
    let (v, rest) = buf.split_at_mut(p.v_len(k));
    let (m, rest) = rest.split_at_mut(p.m_len(k));
    let (dv, rest) = rest.split_at_mut(if backward { p.v_len(k) } else { 0 });
    let (masked, rest) = rest.split_at_mut(if backward { k * p.g.out_len() } else { 0 });
    (v, m, dv, masked, &mut rest[..p.work_len()])
}
