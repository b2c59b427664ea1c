//! A checked f32 GEMM over the `gemm` crate (the one candle uses), for the
//! convolution kernels: strides let one routine serve `A·B`, `Aᵀ·B` and `A·Bᵀ`
//! without copies.

/// A matrix view: a slice and its (row, column) strides in elements.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows × cols` matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: cols,
        }
    }
}

fn check(what: &str, len: usize, rows: usize, cols: usize, rs: usize, cs: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    let last = (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        last < len,
        "sgemm: {what} of {rows}x{cols} (strides {rs},{cs}) overruns its {len} elements"
    );
}

/// `c (+)= a · b` with `a` m×k, `b` k×n and `c` m×n row-major; adds to `c`
/// when `accumulate`, else overwrites it. Single-threaded: callers
/// parallelise over images, which keeps each image's data in one core's cache.
pub fn sgemm(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: &mut [f32], accumulate: bool) {
    check("a", a.data.len(), m, k, a.rs, a.cs);
    check("b", b.data.len(), k, n, b.rs, b.cs);
    check("c", c.len(), m, n, n, 1);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: every index the kernel touches, (i·rs + j·cs) for i, j inside
    // the stated sizes, was bounds-checked above; `c` does not alias `a`/`b`
    // because it is borrowed mutably.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// `c (+)= a · b` for the Winograd products: `b` row-major (`b.cs == 1`)
/// with `n` a multiple of 16 (a group's tile count, or its channels).
///
/// On AVX-512 a kernel of our own: 6 rows of `c` by 64 columns (4
/// registers) at a time, `a`'s entries broadcast from wherever its strides
/// put them, `b`'s rows read in place. The `gemm` crate packs `a` per call
/// and its 64x6 tiles leave part-tiles on these shapes (`[32, 32]·[32,
/// 160]`); measured on one core, SmallCNN's three Winograd layers ran their
/// forward products at 134-149 GFLOP/s against 113-138 and their input
/// gradients at 138-150 against 105-138. Each entry of `c` is one chain of
/// multiply-adds over `k` in order, as in the `gemm` crate's kernels.
/// Elsewhere, [`sgemm`].
pub fn sgemm_rows(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: &mut [f32], accumulate: bool) {
    assert!(
        b.cs == 1 && n.is_multiple_of(LANES),
        "sgemm_rows: b must be row-major with a multiple of {LANES} columns, got {n} (strides {},{})",
        b.rs,
        b.cs
    );
    check("a", a.data.len(), m, k, a.rs, a.cs);
    check("b", b.data.len(), k, n, b.rs, b.cs);
    check("c", c.len(), m, n, n, 1);
    #[cfg(target_arch = "x86_64")]
    if m > 0 && n > 0 && k > 0 && avx512::available() {
        // SAFETY: the CPU has AVX-512F (checked), and every index the kernel
        // reads or writes lies inside the sizes checked above.
        unsafe {
            let b = (b.data.as_ptr(), b.rs);
            avx512::rows((m, n, k), a, b, c.as_mut_ptr(), accumulate);
        }
        return;
    }
    sgemm(m, n, k, a, b, c, accumulate)
}

/// `c (+)= a · bᵀ` where both `a` (`m×k`) and `b` (`n×k`) are row-major
/// and `k` is a multiple of 16: the Winograd weight gradient `dU = dM·Vᵀ`,
/// whose operands both hold the tiles, its reduction axis, contiguous.
/// `scratch` holds at least `n·k` floats.
///
/// On AVX-512, with `n` a multiple of 16 (the layer's input channels:
/// every model's Winograd layers), `b` is transposed into `scratch`, 16x16
/// blocks in registers, and [`sgemm_rows`]' kernel runs. The `gemm` crate
/// packs `b` per call, and its packing reads it across the rows. Measured
/// on one core on SmallCNN's three Winograd layers (16 products each): the
/// transposed path ran at 111-130 GFLOP/s, the `gemm` crate at 72-76,
/// 82-86 and 109-112; the transposes took 7-18% of the first. Elsewhere,
/// [`sgemm`].
pub fn sgemm_abt(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
    scratch: &mut [f32],
) {
    assert!(
        k.is_multiple_of(LANES),
        "sgemm_abt: the reduction axis must be a multiple of {LANES}, got {k}"
    );
    check("a", a.len(), m, k, k, 1);
    check("b", b.len(), n, k, k, 1);
    check("c", c.len(), m, n, n, 1);
    assert!(
        scratch.len() >= n * k,
        "sgemm_abt: {} floats of scratch for a {n}x{k} operand",
        scratch.len()
    );
    #[cfg(target_arch = "x86_64")]
    if m > 0 && n.is_multiple_of(LANES) && n > 0 && k > 0 && avx512::available() {
        let bt = &mut scratch[..n * k];
        // SAFETY: AVX-512F (checked); `b` and `bt` hold `n·k` floats
        // (checked above and just taken), both sides multiples of 16.
        unsafe { avx512::transpose(b.as_ptr(), n, k, bt.as_mut_ptr()) };
        return sgemm_rows(m, n, k, Mat::rows(a, k), Mat::rows(bt, n), c, accumulate);
    }
    sgemm(
        m,
        n,
        k,
        Mat::rows(a, k),
        Mat::transposed(b, k),
        c,
        accumulate,
    )
}

/// Floats per AVX-512 register.
const LANES: usize = 16;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Mat, LANES};

    /// Whether this CPU runs the kernels below (the standard library caches
    /// the answer).
    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// See [`super::sgemm_rows`]: column blocks of 64, then 32, then 16.
    /// `b` comes with the length of its rows, `c` is `m×n`, row-major.
    ///
    /// # Safety
    /// AVX-512F, and every index of `a` (through its strides), `b` and `c`
    /// inside the `m×k`, `k×n` and `m×n` sizes.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn rows(
        (m, n, k): (usize, usize, usize),
        a: Mat,
        (b, ldb): (*const f32, usize),
        c: *mut f32,
        accumulate: bool,
    ) {
        let mut j = 0;
        let block = |j: usize| unsafe { ((b.add(j), ldb), (c.add(j), n)) };
        while j + 4 * LANES <= n {
            let (b, c) = block(j);
            unsafe { row_blocks::<4>(m, k, a, b, c, accumulate) };
            j += 4 * LANES;
        }
        if j + 2 * LANES <= n {
            let (b, c) = block(j);
            unsafe { row_blocks::<2>(m, k, a, b, c, accumulate) };
            j += 2 * LANES;
        }
        if j < n {
            let (b, c) = block(j);
            unsafe { row_blocks::<1>(m, k, a, b, c, accumulate) };
        }
    }

    /// One column block of `NB` registers, every row: 6 at a time, then 4, 2, 1.
    #[inline(always)]
    unsafe fn row_blocks<const NB: usize>(
        m: usize,
        k: usize,
        a: Mat,
        b: (*const f32, usize),
        (c, ldc): (*mut f32, usize),
        accumulate: bool,
    ) {
        let (a_at, rs, cs) = (a.data.as_ptr(), a.rs, a.cs);
        let mut i = 0;
        while i + 6 <= m {
            let (a, c) = unsafe { (a_at.add(i * rs), c.add(i * ldc)) };
            unsafe { rows_tile::<6, NB>(k, (a, rs, cs), b, (c, ldc), accumulate) };
            i += 6;
        }
        // The rest in 4, 2 and 1: single rows, each a chain of `NB`
        // dependent multiply-adds, would wait on the adds' latency.
        if i + 4 <= m {
            let (a, c) = unsafe { (a_at.add(i * rs), c.add(i * ldc)) };
            unsafe { rows_tile::<4, NB>(k, (a, rs, cs), b, (c, ldc), accumulate) };
            i += 4;
        }
        if i + 2 <= m {
            let (a, c) = unsafe { (a_at.add(i * rs), c.add(i * ldc)) };
            unsafe { rows_tile::<2, NB>(k, (a, rs, cs), b, (c, ldc), accumulate) };
            i += 2;
        }
        if i < m {
            let (a, c) = unsafe { (a_at.add(i * rs), c.add(i * ldc)) };
            unsafe { rows_tile::<1, NB>(k, (a, rs, cs), b, (c, ldc), accumulate) };
        }
    }

    /// `MR` rows by `NB` registers of `c`: one chain of multiply-adds per
    /// entry over `k` in order, `a`'s entries broadcast. `a` comes with its
    /// row and column strides, `b` and `c` with the length of their rows.
    #[inline(always)]
    unsafe fn rows_tile<const MR: usize, const NB: usize>(
        k: usize,
        (a, ars, acs): (*const f32, usize, usize),
        (b, ldb): (*const f32, usize),
        (c, ldc): (*mut f32, usize),
        accumulate: bool,
    ) {
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); NB]; MR];
            for p in 0..k {
                let bv: [__m512; NB] =
                    std::array::from_fn(|q| _mm512_loadu_ps(b.add(p * ldb + q * LANES)));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let s = _mm512_set1_ps(*a.add(r * ars + p * acs));
                    for q in 0..NB {
                        acc[q] = _mm512_fmadd_ps(s, bv[q], acc[q]);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (q, &v) in acc.iter().enumerate() {
                    let dst = c.add(r * ldc + q * LANES);
                    let v = if accumulate {
                        _mm512_add_ps(_mm512_loadu_ps(dst), v)
                    } else {
                        v
                    };
                    _mm512_storeu_ps(dst, v);
                }
            }
        }
    }

    /// `dst` (`cols×rows`) = `src` (`rows×cols`)ᵀ, both row-major, in
    /// 16x16 blocks: 16 rows loaded, pairs of floats, then of pairs, then
    /// of 128-bit quarters interleaved (64 shuffles), 16 columns stored.
    ///
    /// # Safety
    /// AVX-512F; `rows` and `cols` multiples of 16; `src` and `dst` hold
    /// `rows·cols` floats.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn transpose(src: *const f32, rows: usize, cols: usize, dst: *mut f32) {
        for i0 in (0..rows).step_by(LANES) {
            for j0 in (0..cols).step_by(LANES) {
                unsafe {
                    let r: [__m512; 16] =
                        std::array::from_fn(|i| _mm512_loadu_ps(src.add((i0 + i) * cols + j0)));
                    // t[2i], t[2i + 1]: rows 2i and 2i + 1 interleaved by float.
                    let t: [__m512; 16] = std::array::from_fn(|i| {
                        let (x, y) = (r[i & !1], r[i | 1]);
                        if i % 2 == 0 {
                            _mm512_unpacklo_ps(x, y)
                        } else {
                            _mm512_unpackhi_ps(x, y)
                        }
                    });
                    // Then by pairs of floats, within groups of four rows.
                    let u: [__m512; 16] = std::array::from_fn(|i| {
                        let g = i / 4 * 4;
                        let (x, y) = match i % 4 {
                            0 | 1 => (t[g], t[g + 2]),
                            _ => (t[g + 1], t[g + 3]),
                        };
                        let (x, y) = (_mm512_castps_pd(x), _mm512_castps_pd(y));
                        _mm512_castpd_ps(if i % 2 == 0 {
                            _mm512_unpacklo_pd(x, y)
                        } else {
                            _mm512_unpackhi_pd(x, y)
                        })
                    });
                    // Then by quarters, within groups of eight rows, and
                    // across the two groups of eight.
                    let v: [__m512; 16] = std::array::from_fn(|i| {
                        let h = i / 8 * 8;
                        let (x, y) = (u[h + i % 4], u[h + 4 + i % 4]);
                        if i % 8 < 4 {
                            _mm512_shuffle_f32x4::<0x88>(x, y)
                        } else {
                            _mm512_shuffle_f32x4::<0xDD>(x, y)
                        }
                    });
                    for i in 0..16 {
                        let (x, y) = (v[i % 8], v[8 + i % 8]);
                        let column = if i < 8 {
                            _mm512_shuffle_f32x4::<0x88>(x, y)
                        } else {
                            _mm512_shuffle_f32x4::<0xDD>(x, y)
                        };
                        _mm512_storeu_ps(dst.add((j0 + i) * rows + i0), column);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: Mat, b: Mat) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    c[i * n + j] += a.data[i * a.rs + p * a.cs] * b.data[p * b.rs + j * b.cs];
                }
            }
        }
        c
    }

    #[test]
    fn matches_a_naive_product_in_every_orientation() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        for (am, bm) in [
            (Mat::rows(&a, k), Mat::rows(&b, n)),
            (Mat::transposed(&a, m), Mat::rows(&b, n)),
            (Mat::rows(&a, k), Mat::transposed(&b, k)),
        ] {
            let want = naive(m, n, k, am, bm);
            let mut c = vec![1.0; m * n];
            sgemm(m, n, k, am, bm, &mut c, false);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-5);
            }
            sgemm(m, n, k, am, bm, &mut c, true);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - 2.0 * y).abs() < 1e-5);
            }
        }
    }

    /// Every block size of the Winograd kernels (column blocks of 64, 32
    /// and 16, row blocks of 6, 4, 2 and 1, `a` read through either layout),
    /// overwriting and accumulating, against the naive product; `sgemm_abt`
    /// on both of its paths.
    #[test]
    fn winograd_kernels_match_a_naive_product() {
        let data =
            |len: usize, f: f32| -> Vec<f32> { (0..len).map(|i| (i as f32 * f).sin()).collect() };
        for (m, n, k) in [
            (32, 160, 32),
            (64, 128, 64),
            (7, 48, 5),
            (13, 80, 9),
            (1, 16, 1),
        ] {
            let a = data(m * k, 0.37);
            let b = data(k * n, 0.11);
            for am in [Mat::rows(&a, k), Mat::transposed(&a, m)] {
                let want = naive(m, n, k, am, Mat::rows(&b, n));
                overwrite_then_accumulate(&format!("sgemm_rows {m}x{n}x{k}"), &want, |c, acc| {
                    sgemm_rows(m, n, k, am, Mat::rows(&b, n), c, acc)
                });
            }
        }
        // Transposed (n a multiple of 16), or `sgemm`.
        for (m, n, k) in [
            (32, 32, 160),
            (64, 32, 128),
            (16, 48, 32),
            (8, 12, 48),
            (32, 4, 16),
            (6, 10, 16),
        ] {
            let a = data(m * k, 0.23);
            let b = data(n * k, 0.19);
            let want = naive(m, n, k, Mat::rows(&a, k), Mat::transposed(&b, k));
            let mut scratch = vec![f32::NAN; n * k];
            overwrite_then_accumulate(&format!("sgemm_abt {m}x{n}x{k}"), &want, |c, acc| {
                sgemm_abt((m, n, k), &a, &b, c, acc, &mut scratch)
            });
        }
    }

    /// `run` into a buffer of 7s, overwriting, must give `want`; run again,
    /// accumulating, twice `want`.
    fn overwrite_then_accumulate(what: &str, want: &[f32], mut run: impl FnMut(&mut [f32], bool)) {
        let mut c = vec![7.0; want.len()];
        for (accumulate, scale) in [(false, 1.0), (true, 2.0)] {
            run(&mut c, accumulate);
            for (i, (x, y)) in c.iter().zip(want).enumerate() {
                assert!(
                    (x - scale * y).abs() <= 1e-4 * (1.0 + y.abs()),
                    "{what} (accumulate: {accumulate}): entry {i} is {x}, expected {}",
                    scale * y
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "multiple of 16")]
    fn winograd_kernels_refuse_a_ragged_tile_count() {
        let a = vec![0.0; 4 * 20];
        let mut c = vec![0.0; 16];
        sgemm_abt((4, 4, 20), &a, &a, &mut c, false, &mut vec![0.0; 80]);
    }

    #[test]
    #[should_panic(expected = "overruns")]
    fn refuses_a_short_buffer() {
        let a = vec![0.0; 5];
        let mut c = vec![0.0; 4];
        sgemm(2, 2, 3, Mat::rows(&a, 3), Mat::rows(&a, 2), &mut c, false);
    }
}
