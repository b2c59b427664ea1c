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

    #[test]
    #[should_panic(expected = "overruns")]
    fn refuses_a_short_buffer() {
        let a = vec![0.0; 5];
        let mut c = vec![0.0; 4];
        sgemm(2, 2, 3, Mat::rows(&a, 3), Mat::rows(&a, 2), &mut c, false);
    }
}
