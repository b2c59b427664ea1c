//! Max-Mahalanobis (MMD) class centers (Pang et al., ICML 2018), the fixed
//! targets of MAT's FTC loss (paper Eq. 3-4) and of the MMC loss.
//!
//! The L centers are vertices of a regular simplex: every center has norm C
//! and every pair has cosine -1/(L-1), the smallest possible maximum
//! similarity (Eq. 3). Only the first L-1 coordinates are non-zero, so the
//! feature dimension must be at least L-1.
//!
//! ```
//! let mu = mat_core::centers::mmd_centers(3, 2, 1.0).unwrap();
//! // three unit vectors 120 degrees apart
//! let dot: f64 = mu[1].iter().zip(&mu[2]).map(|(a, b)| a * b).sum();
//! assert!((dot + 0.5).abs() < 1e-12);
//! ```

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::artifact::{write_tensors, Metadata, TensorFile};
use crate::error::{Error, Result};

/// The `classes` x `dim` MMD centers of norm `norm`, row k the center of class k.
///
/// The recursion of REFERENCE.md (MMC's `craft_MMcenters`), in f64:
/// `mu_0 = e_1`; for k >= 1 and j < k,
/// `mu_k[j] = -(1/(L-1) + mu_k·mu_j) / mu_j[j]`, then
/// `mu_k[k] = sqrt(|1 - |mu_k|^2|)` (0 for the last center); finally every
/// row is scaled by C.
pub fn mmd_centers(classes: usize, dim: usize, norm: f64) -> Result<Vec<Vec<f64>>> {
    if classes < 2 {
        return Err(Error::Invalid(format!(
            "MMD centers need at least 2 classes, got {classes}"
        )));
    }
    if dim + 1 < classes {
        return Err(Error::Invalid(format!(
            "feature dimension {dim} is too small for {classes} classes: MMD centers need a dimension of at least L - 1 = {}",
            classes - 1
        )));
    }
    if !(norm.is_finite() && norm > 0.0) {
        return Err(Error::Invalid(format!(
            "the center norm C must be a positive number, got {norm}"
        )));
    }
    // L·D f64 rows plus their f32 copy, checked before any allocation.
    let need = (classes as u128) * (dim as u128) * 12;
    let have = crate::analysis::run::available_memory().map_or(u64::MAX as u128, u128::from);
    if need > have || need > isize::MAX as u128 {
        return Err(Error::Invalid(format!(
            "{classes} centers of dimension {dim} need {:.1} GB, this machine has {:.1} GB available; lower --classes or --dim",
            need as f64 / 1e9,
            have as f64 / 1e9
        )));
    }
    let l = classes as f64;
    let mut mu = vec![vec![0f64; dim]; classes];
    mu[0][0] = 1.0;
    for k in 1..classes {
        for j in 0..k {
            let dot: f64 = mu[k].iter().zip(&mu[j]).map(|(a, b)| a * b).sum();
            mu[k][j] = -(1.0 / (l - 1.0) + dot) / mu[j][j];
        }
        // The last center is determined by the others (L points span L-1
        // dimensions): its own coordinate is 0 exactly, not sqrt(rounding).
        if k + 1 < classes {
            let sq: f64 = mu[k].iter().map(|a| a * a).sum();
            mu[k][k] = (1.0 - sq).abs().sqrt();
        }
    }
    for row in &mut mu {
        row.iter_mut().for_each(|a| *a *= norm);
    }
    Ok(mu)
}

/// Centers as stored in `centers.safetensors`.
#[derive(Debug, Clone)]
pub struct Centers {
    /// `[L, D]` f32.
    pub centers: Tensor,
    pub classes: usize,
    pub dim: usize,
    pub norm: f64,
}

impl Centers {
    pub fn new(classes: usize, dim: usize, norm: f64) -> Result<Self> {
        let rows = mmd_centers(classes, dim, norm)?;
        let flat: Vec<f32> = rows.iter().flatten().map(|&a| a as f32).collect();
        Ok(Self {
            centers: Tensor::from_vec(flat, (classes, dim), &Device::Cpu)?,
            classes,
            dim,
            norm,
        })
    }

    /// Writes tensor `centers` with metadata kind, num_classes, feature_dim, norm.
    pub fn write(&self, path: &Path) -> Result<()> {
        let meta: Metadata = [
            ("kind", "centers".to_string()),
            ("method", "mmd".to_string()),
            ("num_classes", self.classes.to_string()),
            ("feature_dim", self.dim.to_string()),
            ("norm", self.norm.to_string()),
            (
                "producer",
                format!("mat-core {}", env!("CARGO_PKG_VERSION")),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        write_tensors(path, [("centers", &self.centers)], &meta)
    }

    /// Reads and checks a centers file: the tensor's shape must agree with
    /// the metadata, and `expect` (L, D), when given, with both.
    pub fn read(path: &Path, expect: Option<(usize, usize)>) -> Result<Self> {
        let f = TensorFile::read(path, &Device::Cpu)?;
        let num = |key: &str| -> Result<f64> {
            let v = f.meta(key)?;
            v.parse().map_err(|_| Error::Metadata {
                path: PathBuf::from(path),
                key: key.to_string(),
                expected: "a number".into(),
                found: format!("`{v}`"),
            })
        };
        let (classes, dim, norm) = (
            num("num_classes")? as usize,
            num("feature_dim")? as usize,
            num("norm")?,
        );
        let want = expect.unwrap_or((classes, dim));
        let centers = f
            .expect("centers", DType::F32, &[Some(want.0), Some(want.1)])?
            .clone();
        if (classes, dim) != want {
            return Err(Error::Metadata {
                path: path.to_path_buf(),
                key: "num_classes/feature_dim".into(),
                expected: format!("{} classes of dimension {}", want.0, want.1),
                found: format!("{classes} classes of dimension {dim}"),
            });
        }
        Ok(Self {
            centers,
            classes,
            dim,
            norm,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_simplex(l: usize, d: usize, c: f64) {
        let mu = mmd_centers(l, d, c).unwrap();
        assert_eq!((mu.len(), mu[0].len()), (l, d));
        let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
        for i in 0..l {
            assert!(
                (norm(&mu[i]) - c).abs() < 1e-6 * c,
                "L={l} D={d}: |mu_{i}| = {}",
                norm(&mu[i])
            );
            for j in 0..i {
                let cos = mu[i].iter().zip(&mu[j]).map(|(a, b)| a * b).sum::<f64>()
                    / (norm(&mu[i]) * norm(&mu[j]));
                let want = -1.0 / (l as f64 - 1.0);
                assert!(
                    (cos - want).abs() < 1e-6,
                    "L={l} D={d}: cos(mu_{i}, mu_{j}) = {cos}"
                );
            }
        }
        // Only the first L-1 coordinates are used.
        assert!(mu.iter().all(|r| r[l - 1..].iter().all(|&a| a == 0.0)));
    }

    #[test]
    fn every_norm_is_c_and_every_cosine_is_minus_one_over_l_minus_one() {
        check_simplex(10, 10, 1.0);
        check_simplex(10, 256, 10.0);
        check_simplex(100, 256, 10.0);
        check_simplex(2, 1, 3.0);
        check_simplex(10, 9, 1.0);
    }

    /// REFERENCE.md, L=10, C=1: mu_1 = (-0.1111, 0.9938, 0, ...),
    /// mu_2 = (-0.1111, -0.1242, 0.9860, 0, ...), after mu_0 = e_1.
    #[test]
    fn first_rows_match_the_reference() {
        let mu = mmd_centers(10, 10, 1.0).unwrap();
        let close = |row: &[f64], want: &[f64]| {
            row.iter().zip(want).all(|(a, b)| (a - b).abs() < 5e-5)
                && row[want.len()..].iter().all(|&a| a == 0.0)
        };
        assert!(close(&mu[0], &[1.0]));
        assert!(close(&mu[1], &[-0.1111, 0.9938]), "{:?}", &mu[1][..3]);
        assert!(
            close(&mu[2], &[-0.1111, -0.1242, 0.9860]),
            "{:?}",
            &mu[2][..4]
        );
    }

    #[test]
    fn too_small_a_dimension_names_the_smallest_that_works() {
        let e = mmd_centers(10, 8, 1.0).unwrap_err().to_string();
        assert!(
            e.contains("feature dimension 8 is too small for 10 classes"),
            "{e}"
        );
        assert!(e.contains("at least L - 1 = 9"), "{e}");
        assert!(mmd_centers(1, 4, 1.0).is_err());
        assert!(mmd_centers(10, 10, 0.0).is_err());
    }

    #[test]
    fn file_round_trip_and_shape_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("centers.safetensors");
        Centers::new(10, 16, 10.0).unwrap().write(&path).unwrap();
        let c = Centers::read(&path, Some((10, 16))).unwrap();
        assert_eq!((c.classes, c.dim, c.norm), (10, 16, 10.0));
        let e = Centers::read(&path, Some((10, 256)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tensor `centers`: expected F32 [10, 256], found F32 [10, 16]"),
            "{e}"
        );
    }
}
