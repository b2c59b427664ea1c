//! IDX files (MNIST, Fashion-MNIST): header checks with precise messages,
//! then loading straight into the tensors the models read.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::{Dataset, Split};
use crate::error::{Error, IoContext, Result};

pub const IMAGES_MAGIC: u32 = 0x0000_0803;
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Header bytes of an images file (magic, count, rows, columns) and of a
/// labels file (magic, count).
const IMAGES_HEADER: usize = 16;
const LABELS_HEADER: usize = 8;

/// Checks an IDX file's magic, dimensions and length; returns its item count.
///
/// candle-datasets reports a bad magic without the file name and a short
/// file as "failed to fill whole buffer"; this says which file and why.
pub fn check_idx(path: &Path, magic: u32, image_hw: Option<(usize, usize)>) -> Result<usize> {
    let mut f = std::fs::File::open(path).at(path)?;
    let len = f.metadata().at(path)?.len();
    let header_len = if image_hw.is_some() {
        IMAGES_HEADER
    } else {
        LABELS_HEADER
    };
    let mut header = Vec::with_capacity(header_len);
    (&mut f)
        .take(header_len as u64)
        .read_to_end(&mut header)
        .at(path)?;
    let kind = if image_hw.is_some() {
        "images"
    } else {
        "labels"
    };
    let truncated_header = || {
        Error::format(
            path,
            format!("truncated IDX file: {len} bytes, shorter than its {header_len}-byte header"),
        )
    };
    if header.len() < 4 {
        return Err(truncated_header());
    }
    let word = |i: usize| u32::from_be_bytes(header[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    // The magic first: a wrong file type is the likelier mistake than a cut one.
    if word(0) != magic {
        return Err(Error::format(
            path,
            format!(
                "wrong IDX magic number: expected {magic:#010x} ({kind}), found {:#010x}",
                word(0)
            ),
        ));
    }
    if header.len() < header_len {
        return Err(truncated_header());
    }
    let count = word(1) as usize;
    let item = match image_hw {
        Some((h, w)) => {
            let (rows, cols) = (word(2) as usize, word(3) as usize);
            if (rows, cols) != (h, w) {
                return Err(Error::format(
                    path,
                    format!("expected {h}x{w} images, found {rows}x{cols}"),
                ));
            }
            rows * cols
        }
        None => 1,
    };
    let want = (header_len + count * item) as u64;
    if len != want {
        let what = if len < want {
            "truncated IDX file"
        } else {
            "IDX file longer than its header says"
        };
        return Err(Error::format(
            path,
            format!("{what}: header says {count} {kind} ({want} bytes), file has {len} bytes"),
        ));
    }
    Ok(count)
}

/// Loads the four unpacked IDX files in `dir` as `(N, 1, H, W)` images.
pub fn load_idx_dir(
    dir: &Path,
    name: &str,
    image_shape: [usize; 3],
    class_names: &[String],
) -> Result<Dataset> {
    let [_, h, w] = image_shape;
    // Every file is checked before any is read.
    let train = checked_split(dir, "train", h, w)?;
    let test = checked_split(dir, "t10k", h, w)?;
    let split = |(images, labels, n): (PathBuf, PathBuf, usize)| -> Result<Split> {
        Split::new(read_images(&images, n, h, w)?, read_labels(&labels, n)?)
    };
    Dataset::new(name, split(train)?, split(test)?, class_names.to_vec(), dir)
}

/// The images and labels files of split `prefix` (`train`, `t10k`) in
/// `dir`, their headers and lengths checked and their counts equal, and
/// that count.
fn checked_split(
    dir: &Path,
    prefix: &str,
    h: usize,
    w: usize,
) -> Result<(PathBuf, PathBuf, usize)> {
    let images = dir.join(format!("{prefix}-images-idx3-ubyte"));
    let labels = dir.join(format!("{prefix}-labels-idx1-ubyte"));
    let n_images = check_idx(&images, IMAGES_MAGIC, Some((h, w)))?;
    let n_labels = check_idx(&labels, LABELS_MAGIC, None)?;
    if n_images != n_labels {
        return Err(Error::format(
            &labels,
            format!("{n_labels} labels for {n_images} images in {prefix}-images-idx3-ubyte"),
        ));
    }
    Ok((images, labels, n_images))
}

/// The `len` bytes after a checked IDX file's `header_len`-byte header,
/// each mapped through `f`, read in blocks: no copy of the whole payload.
fn payload<T>(path: &Path, header_len: usize, len: usize, f: impl Fn(u8) -> T) -> Result<Vec<T>> {
    let mut file = std::fs::File::open(path).at(path)?;
    file.seek(SeekFrom::Start(header_len as u64)).at(path)?;
    let mut out = Vec::with_capacity(len);
    let mut block = vec![0u8; 1 << 16];
    while out.len() < len {
        let block = &mut block[..(len - out.len()).min(1 << 16)];
        file.read_exact(block).at(path)?;
        out.extend(block.iter().map(|&b| f(b)));
    }
    Ok(out)
}

/// `n` checked `h`x`w` images as `(N, 1, H, W)` f32 in [0, 1], in one pass
/// over the bytes. candle-datasets' loader converts to f32 and then
/// scales: two full-size f32 copies, one freed at once (25 MB for
/// `mnist-10k`'s training split, 188 MB for MNIST's), which the allocator
/// keeps mapped (`alloc::keep_freed_memory`). The values are its:
/// `v · (1/255 as f32)`, its `affine` (a test compares the bytes).
fn read_images(path: &Path, n: usize, h: usize, w: usize) -> Result<Tensor> {
    let scale = (1.0f64 / 255.0) as f32;
    let pixels = payload(path, IMAGES_HEADER, n * h * w, |b| f32::from(b) * scale)?;
    Ok(Tensor::from_vec(pixels, (n, 1, h, w), &Device::Cpu)?)
}

/// `n` checked labels as u32.
fn read_labels(path: &Path, n: usize) -> Result<Tensor> {
    let labels = payload(path, LABELS_HEADER, n, u32::from)?;
    Ok(Tensor::from_vec(labels, n, &Device::Cpu)?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes a valid IDX images file of `n` `h`x`w` images.
    pub(crate) fn write_images(path: &Path, pixels: &[u8], n: usize, h: usize, w: usize) {
        let mut b = Vec::new();
        for v in [IMAGES_MAGIC, n as u32, h as u32, w as u32] {
            b.extend(v.to_be_bytes());
        }
        b.extend(pixels);
        std::fs::write(path, b).unwrap();
    }

    pub(crate) fn write_labels(path: &Path, labels: &[u8]) {
        let mut b = Vec::new();
        for v in [LABELS_MAGIC, labels.len() as u32] {
            b.extend(v.to_be_bytes());
        }
        b.extend(labels);
        std::fs::write(path, b).unwrap();
    }

    #[test]
    fn wrong_magic_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train-images-idx3-ubyte");
        write_labels(&p, &[1, 2, 3]);
        let err = check_idx(&p, IMAGES_MAGIC, Some((28, 28)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("train-images-idx3-ubyte: wrong IDX magic number: expected 0x00000803 (images), found 0x00000801"), "{err}");
    }

    #[test]
    fn truncated_file_is_named_with_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("imgs");
        write_images(&p, &vec![0u8; 2 * 784 - 5], 2, 28, 28);
        let err = check_idx(&p, IMAGES_MAGIC, Some((28, 28)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "truncated IDX file: header says 2 images (1584 bytes), file has 1579 bytes"
            ),
            "{err}"
        );
        std::fs::write(&p, [0u8, 0, 8]).unwrap();
        let err = check_idx(&p, IMAGES_MAGIC, Some((28, 28)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("shorter than its 16-byte header"), "{err}");
    }

    #[test]
    fn loads_as_nchw() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let px: Vec<u8> = (0..3 * 4).map(|i| (i * 20) as u8).collect();
        write_images(&d.join("train-images-idx3-ubyte"), &px, 3, 2, 2);
        write_labels(&d.join("train-labels-idx1-ubyte"), &[0, 1, 1]);
        write_images(&d.join("t10k-images-idx3-ubyte"), &px[..4], 1, 2, 2);
        write_labels(&d.join("t10k-labels-idx1-ubyte"), &[1]);
        let names = vec!["a".to_string(), "b".to_string()];
        let ds = load_idx_dir(d, "tiny", [1, 2, 2], &names).unwrap();
        assert_eq!(ds.train.images.dims(), &[3, 1, 2, 2]);
        assert_eq!(ds.train.labels.to_vec1::<u32>().unwrap(), vec![0, 1, 1]);
        let v = ds
            .train
            .images
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!((v[1] - 20.0 / 255.0).abs() < 1e-6);
        assert_eq!(ds.test.images.dims(), &[1, 1, 2, 2]);

        // A label outside the class list is refused.
        write_labels(&d.join("t10k-labels-idx1-ubyte"), &[5]);
        let err = load_idx_dir(d, "tiny", [1, 2, 2], &names)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("test label 5 at index 0 is out of range for 2 classes"),
            "{err}"
        );

        // Labels that do not match the images in number are refused,
        // naming the labels file.
        write_labels(&d.join("t10k-labels-idx1-ubyte"), &[1, 0]);
        let err = load_idx_dir(d, "tiny", [1, 2, 2], &names)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t10k-labels-idx1-ubyte")
                && err.contains("2 labels for 1 images in t10k-images-idx3-ubyte"),
            "{err}"
        );
    }

    #[test]
    fn same_bytes_as_candle_datasets_on_the_embedded_subset() {
        let dd = crate::data::DataDir::locate();
        let ds = crate::data::load(&dd, "mnist-10k").unwrap();
        let theirs = candle_datasets::vision::mnist::load_dir(dd.cache_dir("mnist-10k")).unwrap();
        for (ours, images, labels) in [
            (&ds.train, &theirs.train_images, &theirs.train_labels),
            (&ds.test, &theirs.test_images, &theirs.test_labels),
        ] {
            let bits = |t: &Tensor| -> Vec<u32> {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                v.into_iter().map(f32::to_bits).collect()
            };
            assert_eq!(bits(&ours.images), bits(images));
            assert_eq!(
                ours.labels.to_vec1::<u32>().unwrap(),
                labels
                    .to_dtype(candle_core::DType::U32)
                    .unwrap()
                    .to_vec1::<u32>()
                    .unwrap()
            );
        }
    }
}
