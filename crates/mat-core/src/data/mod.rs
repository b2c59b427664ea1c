//! Datasets: the manifest, the cache, loading and fetching.
//!
//! Every dataset loads as images `(N, C, H, W)` f32 in [0, 1] and labels
//! `(N,)` u32, plus class names. Loading goes through candle-datasets'
//! vision loaders on unpacked files in the cache (`data/cache/NAME/`);
//! `mnist-10k` ships with the repository and is unpacked on first use.

pub mod cifar;
pub mod fetch;
pub mod idx;
pub mod manifest;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

pub use fetch::{fetch, Source};
pub use manifest::{DatasetSpec, Format, Manifest};

use crate::error::{Error, Result};
use crate::rng::SeededRng;

/// The dataset every stage uses unless told otherwise: it ships with the
/// repository, so a fresh clone runs offline.
pub const DEFAULT_DATASET: &str = "mnist-10k";

/// Where the manifest, the embedded data and the cache are.
#[derive(Debug, Clone)]
pub struct DataDir {
    /// Holds `datasets.yaml` and the embedded dataset folders.
    pub root: PathBuf,
    /// Holds one folder of unpacked files per dataset (git-ignored).
    pub cache: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>, cache: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            cache: cache.into(),
        }
    }

    /// `$MAT_DATA_DIR`, else `./data` when it holds a manifest, else the
    /// `data/` folder of the workspace this binary was built from. The cache
    /// is `$MAT_CACHE_DIR`, else `ROOT/cache`.
    pub fn locate() -> Self {
        let root = std::env::var_os("MAT_DATA_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                let here = PathBuf::from("data");
                here.join("datasets.yaml").is_file().then_some(here)
            })
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data"));
        let cache = std::env::var_os("MAT_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("cache"));
        Self { root, cache }
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.root.join("datasets.yaml")
    }

    pub fn manifest(&self) -> Result<Manifest> {
        Manifest::read(&self.manifest_path())
    }

    /// The cache folder of one dataset.
    pub fn cache_dir(&self, name: &str) -> PathBuf {
        self.cache.join(name)
    }
}

/// Whether a dataset can be loaded now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Every file is unpacked in the cache.
    Present,
    /// Ships with the repository; unpacked on first use.
    Embedded,
    /// These files are missing from the cache.
    Missing(Vec<String>),
}

pub fn status(dir: &DataDir, name: &str, spec: &DatasetSpec) -> Status {
    let cache = dir.cache_dir(name);
    let missing: Vec<String> = spec
        .files
        .iter()
        .filter(|f| !cache.join(&f.name).is_file())
        .map(|f| f.name.clone())
        .collect();
    match (missing.is_empty(), &spec.embedded) {
        (true, _) => Status::Present,
        (false, Some(_)) => Status::Embedded,
        (false, None) => Status::Missing(missing),
    }
}

/// Images and labels of one split.
#[derive(Debug, Clone)]
pub struct Split {
    /// `(N, C, H, W)` f32 in [0, 1].
    pub images: Tensor,
    /// `(N,)` u32.
    pub labels: Tensor,
}

impl Split {
    pub fn new(images: Tensor, labels: Tensor) -> Result<Self> {
        if images.rank() != 4 || labels.rank() != 1 || images.dim(0)? != labels.dim(0)? {
            return Err(Error::Shape {
                what: "a split".into(),
                expected: "images (N, C, H, W) and labels (N,)".into(),
                found: format!("{:?} and {:?}", images.dims(), labels.dims()),
            });
        }
        Ok(Self { images, labels })
    }

    pub fn len(&self) -> usize {
        self.labels.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A deterministic subset: the first `limit` samples after a shuffle
    /// seeded by `seed` (no shuffle when `seed` is `None`). The shipped MNIST
    /// subset is grouped by class, so a quick run should pass a seed.
    pub fn subset(&self, limit: Option<usize>, seed: Option<u64>) -> Result<Split> {
        let order = self.subset_indices(limit, seed);
        let idx = Tensor::from_vec(order.clone(), order.len(), self.images.device())?;
        Split::new(
            self.images.index_select(&idx, 0)?,
            self.labels.index_select(&idx, 0)?,
        )
    }

    /// The indices (into this split) of [`Split::subset`]'s samples, in order.
    pub fn subset_indices(&self, limit: Option<usize>, seed: Option<u64>) -> Vec<u32> {
        let n = self.len();
        let take = limit.unwrap_or(n).min(n);
        match seed {
            Some(s) => SeededRng::for_purpose(s, "subset").permutation(n),
            None => (0..n).collect(),
        }
        .into_iter()
        .take(take)
        .map(|i| i as u32)
        .collect()
    }

    /// blake3 of the images (f32, little-endian) and labels: the identity
    /// of exactly the data a stage used.
    pub fn hash(&self) -> Result<String> {
        let mut h = blake3::Hasher::new();
        for v in self.images.flatten_all()?.to_vec1::<f32>()? {
            h.update(&v.to_le_bytes());
        }
        for v in self.labels.to_vec1::<u32>()? {
            h.update(&v.to_le_bytes());
        }
        Ok(h.finalize().to_hex().to_string())
    }

    pub fn to_device(&self, device: &Device) -> Result<Split> {
        Split::new(
            self.images.to_device(device)?,
            self.labels.to_device(device)?,
        )
    }
}

/// A loaded dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub train: Split,
    pub test: Split,
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Checks what every stage relies on: f32 images in [0, 1], u32 labels
    /// below the number of classes.
    pub(crate) fn new(
        name: &str,
        train: Split,
        test: Split,
        class_names: Vec<String>,
        from: &Path,
    ) -> Result<Self> {
        for (which, split) in [("train", &train), ("test", &test)] {
            if split.images.dtype() != DType::F32 || split.labels.dtype() != DType::U32 {
                return Err(Error::format(
                    from,
                    format!(
                        "{which} split has dtypes {:?}/{:?}",
                        split.images.dtype(),
                        split.labels.dtype()
                    ),
                ));
            }
            let labels = split.labels.to_vec1::<u32>()?;
            if let Some((i, &l)) = labels
                .iter()
                .enumerate()
                .find(|(_, &l)| l as usize >= class_names.len())
            {
                return Err(Error::format(
                    from,
                    format!(
                        "{which} label {l} at index {i} is out of range for {} classes",
                        class_names.len()
                    ),
                ));
            }
        }
        Ok(Self {
            name: name.to_string(),
            train,
            test,
            class_names,
        })
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// `[C, H, W]` of one image.
    pub fn image_shape(&self) -> [usize; 3] {
        let d = self.train.images.dims();
        [d[1], d[2], d[3]]
    }
}

/// Loads a dataset named in the manifest from the cache, unpacking the
/// embedded copy first where the dataset ships with the repository.
pub fn load(dir: &DataDir, name: &str) -> Result<Dataset> {
    let manifest = dir.manifest()?;
    let spec = manifest.get(name)?;
    match status(dir, name, spec) {
        Status::Present => {}
        Status::Embedded => {
            let embedded = dir.root.join(spec.embedded.as_deref().expect("embedded"));
            fetch::fetch_spec(dir, name, spec, &Source::Dir(embedded))?;
        }
        Status::Missing(missing) => {
            return Err(Error::DatasetMissing {
                name: name.to_string(),
                dir: dir.cache_dir(name),
                missing: missing.join(", "),
            })
        }
    }
    let cache = dir.cache_dir(name);
    let ds = match spec.format {
        Format::Idx => idx::load_idx_dir(&cache, name, spec.image_shape, &spec.classes)?,
        Format::CifarBinary => cifar::load_cifar_dir(&cache, name, &spec.classes)?,
    };
    for (which, split, want) in [
        ("train", &ds.train, spec.train_size),
        ("test", &ds.test, spec.test_size),
    ] {
        if split.len() != want {
            return Err(Error::format(
                &cache,
                format!(
                    "{which} split has {} samples, the manifest says {want}",
                    split.len()
                ),
            ));
        }
    }
    Ok(ds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(n: usize) -> Split {
        let images = Tensor::arange(0f32, n as f32, &Device::Cpu)
            .unwrap()
            .reshape((n, 1, 1, 1))
            .unwrap();
        let labels = Tensor::arange(0u32, n as u32, &Device::Cpu).unwrap();
        Split::new(images, labels).unwrap()
    }

    #[test]
    fn subsets_are_deterministic_and_consistent() {
        let s = split(100);
        let a = s.subset(Some(10), Some(3)).unwrap();
        let b = s.subset(Some(10), Some(3)).unwrap();
        let c = s.subset(Some(10), Some(4)).unwrap();
        let labels = |x: &Split| x.labels.to_vec1::<u32>().unwrap();
        assert_eq!(labels(&a), labels(&b));
        assert_ne!(labels(&a), labels(&c));
        // images move with their labels
        let imgs = a.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want: Vec<f32> = labels(&a).iter().map(|&l| l as f32).collect();
        assert_eq!(imgs, want);
        assert_eq!(labels(&s.subset(Some(3), None).unwrap()), vec![0, 1, 2]);
        assert_eq!(s.subset(Some(1000), None).unwrap().len(), 100);
    }
}
