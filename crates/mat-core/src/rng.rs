//! Seeded randomness.
//!
//! candle's CPU generator cannot be seeded (`Device::set_seed` errors on CPU),
//! so every random tensor of the project (initialisation, dropout masks,
//! random starts, shuffles, augmentation) is drawn here from a ChaCha8 stream
//! and copied into a tensor. The same seed gives the same numbers on every
//! device and platform.
//!
//! ```
//! use mat_core::rng::SeededRng;
//! let mut a = SeededRng::new(7);
//! let mut b = SeededRng::new(7);
//! assert_eq!(a.permutation(10), b.permutation(10));
//! ```

use candle_core::{Device, Shape, Tensor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::Result;

/// A seeded generator that builds candle tensors.
#[derive(Debug, Clone)]
pub struct SeededRng {
    rng: ChaCha8Rng,
}

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// An independent stream for one purpose (`"init"`, `"shuffle"`, ...)
    /// derived from a config seed, so adding draws to one purpose never shifts
    /// the numbers another purpose sees.
    pub fn for_purpose(seed: u64, purpose: &str) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&seed.to_le_bytes());
        hasher.update(purpose.as_bytes());
        let digest = hasher.finalize();
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_bytes());
        Self {
            rng: ChaCha8Rng::from_seed(key),
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.rng.random()
    }

    /// Uniform in `[lo, hi)`; all `lo` when the range is empty (an eps-ball
    /// of radius 0 is the point itself, a legal budget). Draws nothing
    /// then, so the stream stays where it was.
    pub fn uniform_vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        if lo.partial_cmp(&hi) != Some(std::cmp::Ordering::Less) {
            return vec![lo; n];
        }
        (0..n).map(|_| self.rng.random_range(lo..hi)).collect()
    }

    pub fn normal_vec(&mut self, n: usize, mean: f32, std: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let z: f32 = StandardNormal.sample(&mut self.rng);
                mean + std * z
            })
            .collect()
    }

    /// An f32 tensor with entries uniform in `[lo, hi)`.
    pub fn uniform<S: Into<Shape>>(
        &mut self,
        shape: S,
        lo: f32,
        hi: f32,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let data = self.uniform_vec(shape.elem_count(), lo, hi);
        Ok(Tensor::from_vec(data, shape, device)?)
    }

    /// An f32 tensor with entries drawn from N(mean, std^2).
    pub fn normal<S: Into<Shape>>(
        &mut self,
        shape: S,
        mean: f32,
        std: f32,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let data = self.normal_vec(shape.elem_count(), mean, std);
        Ok(Tensor::from_vec(data, shape, device)?)
    }

    /// An f32 mask of 0s and `1/keep`s with P(keep) = `keep`: inverted
    /// dropout, as PyTorch's `F.dropout` scales at training time.
    pub fn dropout_mask<S: Into<Shape>>(
        &mut self,
        shape: S,
        keep: f32,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let scale = if keep > 0.0 { 1.0 / keep } else { 0.0 };
        let data: Vec<f32> = (0..shape.elem_count())
            .map(|_| {
                if self.rng.random::<f32>() < keep {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        Ok(Tensor::from_vec(data, shape, device)?)
    }

    /// A uniformly random permutation of `0..n` (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..n).collect();
        idx.shuffle(&mut self.rng);
        idx
    }

    /// An index in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.rng.random()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_tensors() {
        let d = Device::Cpu;
        let a = SeededRng::new(1).normal((3, 4), 0.0, 1.0, &d).unwrap();
        let b = SeededRng::new(1).normal((3, 4), 0.0, 1.0, &d).unwrap();
        let c = SeededRng::new(2).normal((3, 4), 0.0, 1.0, &d).unwrap();
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v(&a), v(&b));
        assert_ne!(v(&a), v(&c));
    }

    #[test]
    fn purposes_are_independent_streams() {
        let mut a = SeededRng::for_purpose(5, "init");
        let mut b = SeededRng::for_purpose(5, "shuffle");
        let mut a2 = SeededRng::for_purpose(5, "init");
        let x = a.next_u64();
        assert_eq!(x, a2.next_u64());
        assert_ne!(x, b.next_u64());
    }

    #[test]
    fn uniform_stays_in_range_and_normal_has_its_moments() {
        let mut r = SeededRng::new(3);
        let u = r.uniform_vec(10_000, -0.3, 0.3);
        assert!(u.iter().all(|&x| (-0.3..0.3).contains(&x)));
        let n = r.normal_vec(100_000, 2.0, 0.5);
        let mean = n.iter().sum::<f32>() / n.len() as f32;
        let var = n.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n.len() as f32;
        assert!((mean - 2.0).abs() < 0.01, "mean {mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.01, "std {}", var.sqrt());
    }

    #[test]
    fn dropout_mask_keeps_the_expected_fraction_and_scale() {
        let mask = SeededRng::new(4)
            .dropout_mask(20_000, 0.5, &Device::Cpu)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let kept = mask.iter().filter(|&&m| m > 0.0).count() as f32 / mask.len() as f32;
        assert!((kept - 0.5).abs() < 0.02, "kept {kept}");
        assert!(mask.iter().all(|&m| m == 0.0 || m == 2.0));
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = SeededRng::new(9).permutation(1000);
        assert_ne!(p, (0..1000).collect::<Vec<_>>());
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
    }
}
