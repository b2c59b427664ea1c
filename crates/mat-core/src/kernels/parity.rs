//! A row split into its even and odd columns, and put back together: the
//! Winograd transforms' stride-2 tiles read and write the planes this way
//! (`winograd::split_plane`, `merge_plane` and the output transforms).
//!
//! Element by element, these loops did not vectorise: with AVX-512 they
//! take 32 floats at a time through two permutes, with masked loads and
//! stores for the rows' ends (SmallCNN's rows are 8 to 26 floats).
//! Elsewhere, the plain loops. Both move the same values: the results do
//! not depend on the path.

use std::mem::MaybeUninit;

/// `even[k] = src[2k]` and `odd[k] = src[2k + 1]` for every `k` inside
/// `src`; the entries of `even` and `odd` past those are left as they are.
///
/// # Panics
/// If `even` is shorter than `⌈len / 2⌉` or `odd` than `⌊len / 2⌋`.
#[inline(always)]
pub(crate) fn split(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let n = src.len();
    let (even, odd) = (&mut even[..n.div_ceil(2)], &mut odd[..n / 2]);
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: AVX-512F (checked); `even` and `odd` hold the lengths the
        // kernel writes (sliced above).
        unsafe { avx512::split(src.as_ptr(), n, even.as_mut_ptr(), odd.as_mut_ptr()) };
        return;
    }
    split_plain(src, even, odd)
}

/// [`split`] element by element, into `even` and `odd` of exactly the
/// lengths written.
#[inline(always)]
fn split_plain(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let n = src.len();
    let mut pairs = src.chunks_exact(2);
    for ((pair, e), o) in (&mut pairs).zip(even.iter_mut()).zip(odd.iter_mut()) {
        *e = pair[0];
        *o = pair[1];
    }
    if let [last] = pairs.remainder() {
        even[n / 2] = *last;
    }
}

/// `dst[2k] = even[k]` and `dst[2k + 1] = odd[k]`: every element of `dst`.
///
/// # Panics
/// If `even` is shorter than `⌈len / 2⌉` or `odd` than `⌊len / 2⌋`.
#[inline(always)]
pub(crate) fn merge_uninit(even: &[f32], odd: &[f32], dst: &mut [MaybeUninit<f32>]) {
    let n = dst.len();
    let (even, odd) = (&even[..n.div_ceil(2)], &odd[..n / 2]);
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: AVX-512F (checked); `even` and `odd` hold the lengths the
        // kernel reads (sliced above), and it writes `n` floats into `dst`.
        unsafe { avx512::merge(even.as_ptr(), odd.as_ptr(), n, dst.as_mut_ptr().cast()) };
        return;
    }
    merge_plain(even, odd, dst)
}

/// [`merge_uninit`] element by element.
#[inline(always)]
fn merge_plain(even: &[f32], odd: &[f32], dst: &mut [MaybeUninit<f32>]) {
    let n = dst.len();
    let mut pairs = dst.chunks_exact_mut(2);
    for ((pair, e), o) in (&mut pairs).zip(even).zip(odd) {
        pair[0] = MaybeUninit::new(*e);
        pair[1] = MaybeUninit::new(*o);
    }
    if let [last] = pairs.into_remainder() {
        *last = MaybeUninit::new(even[n / 2]);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Whether this CPU runs the kernels below (the standard library caches
    /// the answer).
    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// The first `k` lanes (`k` up to 16).
    #[inline(always)]
    fn first(k: usize) -> __mmask16 {
        ((1u32 << k.min(16)) - 1) as __mmask16
    }

    /// A row of `n` floats in blocks of 32 (two registers): each block's
    /// start (even) and length.
    #[inline(always)]
    fn blocks(n: usize) -> impl Iterator<Item = (usize, usize)> {
        (0..n).step_by(32).map(move |s| (s, (n - s).min(32)))
    }

    /// See [`super::split`].
    ///
    /// # Safety
    /// AVX-512F; `src` holds `n` floats, `even` `⌈n / 2⌉` and `odd` `⌊n / 2⌋`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn split(src: *const f32, n: usize, even: *mut f32, odd: *mut f32) {
        // Lanes 0-15 of the pair (a, b) are a's, 16-31 b's.
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        for (s, m) in blocks(n) {
            // SAFETY: the masks cover `src[s..s + m]`, `even[s/2..][..⌈m/2⌉]`
            // and `odd[s/2..][..⌊m/2⌋]` (`s` is even), inside the stated
            // lengths; masked-off lanes are neither read nor written.
            unsafe {
                let a = _mm512_maskz_loadu_ps(first(m), src.wrapping_add(s));
                let b =
                    _mm512_maskz_loadu_ps(first(m.saturating_sub(16)), src.wrapping_add(s + 16));
                let e = _mm512_permutex2var_ps(a, evens, b);
                let o = _mm512_permutex2var_ps(a, odds, b);
                _mm512_mask_storeu_ps(even.wrapping_add(s / 2), first(m.div_ceil(2)), e);
                _mm512_mask_storeu_ps(odd.wrapping_add(s / 2), first(m / 2), o);
            }
        }
    }

    /// See [`super::merge_uninit`].
    ///
    /// # Safety
    /// AVX-512F; `dst` holds `n` floats, `even` `⌈n / 2⌉` and `odd` `⌊n / 2⌋`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn merge(even: *const f32, odd: *const f32, n: usize, dst: *mut f32) {
        // Lanes 0-15 of the pair (e, o) are e's, 16-31 o's.
        let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        for (s, m) in blocks(n) {
            // SAFETY: as in `split`, the masks keep every access inside
            // `dst[s..s + m]`, `even[s/2..][..⌈m/2⌉]` and `odd[s/2..][..⌊m/2⌋]`.
            unsafe {
                let e = _mm512_maskz_loadu_ps(first(m.div_ceil(2)), even.wrapping_add(s / 2));
                let o = _mm512_maskz_loadu_ps(first(m / 2), odd.wrapping_add(s / 2));
                _mm512_mask_storeu_ps(
                    dst.wrapping_add(s),
                    first(m),
                    _mm512_permutex2var_ps(e, low, o),
                );
                let rest = first(m.saturating_sub(16));
                _mm512_mask_storeu_ps(
                    dst.wrapping_add(s + 16),
                    rest,
                    _mm512_permutex2var_ps(e, high, o),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length from 0 to 70 (two whole blocks of 32, and every
    /// remainder), against the definition, through the path this CPU takes
    /// and the plain loops; the entries past the written ones keep their
    /// sentinel.
    #[test]
    fn split_and_merge_move_every_column_and_nothing_else() {
        for n in 0..=70 {
            let src: Vec<f32> = (0..n).map(|i| i as f32 + 0.5).collect();
            let (mut even, mut odd) = (vec![-1.0; n / 2 + 3], vec![-1.0; n / 2 + 3]);
            split(&src, &mut even, &mut odd);
            let (mut even_plain, mut odd_plain) = (even.clone(), odd.clone());
            even_plain[..n.div_ceil(2)].fill(-1.0);
            odd_plain[..n / 2].fill(-1.0);
            let (e, o) = (n.div_ceil(2), n / 2);
            split_plain(&src, &mut even_plain[..e], &mut odd_plain[..o]);
            assert_eq!(
                (&even_plain, &odd_plain),
                (&even, &odd),
                "plain split, length {n}"
            );
            for k in 0..n / 2 + 3 {
                let e = if 2 * k < n { src[2 * k] } else { -1.0 };
                let o = if 2 * k + 1 < n { src[2 * k + 1] } else { -1.0 };
                assert_eq!(
                    (even[k], odd[k]),
                    (e, o),
                    "split, length {n}, column pair {k}"
                );
            }
            let mut back = vec![-1.0; n + 3];
            // SAFETY: `merge_uninit` writes only floats.
            merge_uninit(&even, &odd, unsafe {
                crate::kernels::as_uninit(&mut back[..n])
            });
            assert_eq!(&back[..n], &src[..], "merge, length {n}");
            assert_eq!(&back[n..], &[-1.0; 3], "merge wrote past length {n}");
            let mut plain = vec![-1.0; n];
            // SAFETY: `merge_plain` writes only floats.
            merge_plain(&even, &odd, unsafe {
                crate::kernels::as_uninit(&mut plain)
            });
            assert_eq!(plain, src, "plain merge, length {n}");
        }
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn split_refuses_a_short_odd_half() {
        split(&[1.0; 8], &mut [0.0; 4], &mut [0.0; 3]);
    }
}
