//! Datasets end to end: the embedded MNIST subset, Fetch from a local folder,
//! CIFAR-10's binary format, and every kind of bad input.

mod common;

use std::io::{Read, Write};
use std::path::Path;

use common::*;
use mat_core::data::{self, DataDir, Source};

fn data_dir(cache: &Path) -> DataDir {
    DataDir::new(data_root(), cache)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn embedded_mnist_subset_loads_as_real_digits() {
    let cache = tempfile::tempdir().unwrap();
    let ds = data::load(&data_dir(cache.path()), "mnist-10k").unwrap();
    assert_eq!(ds.train.images.dims(), &[7996, 1, 28, 28]);
    assert_eq!(ds.test.images.dims(), &[2004, 1, 28, 28]);
    assert_eq!(ds.num_classes(), 10);
    let px = ds
        .train
        .images
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let (lo, hi) = px
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    assert_eq!((lo, hi), (0.0, 1.0));
    // Real MNIST: about 19% of pixels are ink, and every class has ~800 training digits.
    let ink = px.iter().filter(|&&x| x > 0.5).count() as f64 / px.len() as f64;
    assert!((0.10..0.20).contains(&ink), "ink fraction {ink}");
    let mut counts = [0usize; 10];
    for l in ds.train.labels.to_vec1::<u32>().unwrap() {
        counts[l as usize] += 1;
    }
    assert!(
        counts.iter().all(|&c| (650..1000).contains(&c)),
        "{counts:?}"
    );
    // Unpacked once into the cache, then loaded from there.
    assert_eq!(listing(&cache.path().join("mnist-10k")).len(), 4);
    let again = data::load(&data_dir(cache.path()), "mnist-10k").unwrap();
    assert_eq!(
        again.test.labels.to_vec1::<u32>().unwrap(),
        ds.test.labels.to_vec1::<u32>().unwrap()
    );
}

#[test]
fn fashion_mnist_fetches_from_the_offline_copy() {
    let Some(src) = shared_dataset("fashion-mnist") else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let out = mat(
        cache.path(),
        &[
            "data",
            "fetch",
            "fashion-mnist",
            "--from",
            src.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(
            "fashion-mnist: ok, 60000 train + 10000 test images of [1, 28, 28], 10 classes"
        ),
        "{}",
        stdout(&out)
    );
    let list = stdout(&mat(cache.path(), &["data", "list"]));
    let line = list
        .lines()
        .find(|l| l.starts_with("fashion-mnist"))
        .unwrap();
    assert!(line.ends_with("present"), "{list}");
    // A second fetch finds everything in the cache.
    let again = mat(
        cache.path(),
        &[
            "data",
            "fetch",
            "fashion-mnist",
            "--from",
            src.to_str().unwrap(),
        ],
    );
    assert!(
        stdout(&again).lines().take(4).all(|l| l.ends_with("cache")),
        "{}",
        stdout(&again)
    );
}

#[test]
fn data_list_names_every_dataset() {
    let cache = tempfile::tempdir().unwrap();
    let out = mat(cache.path(), &["data", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = stdout(&out);
    for want in [
        "mnist ",
        "mnist-10k",
        "fashion-mnist",
        "cifar10",
        "embedded (unpacked on first use)",
        "missing 6 file(s): `mat data fetch cifar10`",
    ] {
        assert!(s.contains(want), "missing {want:?} in\n{s}");
    }
}

/// Copies the embedded subset's `.gz` files into a folder, replacing one.
fn source_with(dir: &Path, file: &str, replacement: Option<&[u8]>) {
    for f in std::fs::read_dir(data_root().join("mnist-10k")).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "gz") {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    let gz = dir.join(format!("{file}.gz"));
    match replacement {
        Some(bytes) => std::fs::write(gz, bytes).unwrap(),
        None => std::fs::remove_file(gz).unwrap(),
    }
}

/// `mat data fetch mnist-10k --from SRC` with a private cache.
fn fetch_mnist_10k_from(cache: &Path, src: &Path) -> std::process::Output {
    mat(
        cache,
        &[
            "data",
            "fetch",
            "mnist-10k",
            "--from",
            src.to_str().unwrap(),
        ],
    )
}

#[test]
fn sha256_mismatch_is_refused_and_the_cache_is_untouched() {
    let cache = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    // A well-formed IDX labels file, but not the published bytes.
    let mut forged = vec![0, 0, 8, 1, 0, 0, 0x1f, 0x3c];
    forged.extend(std::iter::repeat_n(3u8, 7996));
    source_with(src.path(), "train-labels-idx1-ubyte", Some(&gzip(&forged)));
    // The fetch runs against a cache that already holds one good file.
    let cache_ds = cache.path().join("mnist-10k");
    std::fs::create_dir_all(&cache_ds).unwrap();
    let good = data_root().join("mnist-10k/t10k-labels-idx1-ubyte.gz");
    let unpacked = gunzip(&good);
    std::fs::write(cache_ds.join("t10k-labels-idx1-ubyte"), &unpacked).unwrap();

    let out = fetch_mnist_10k_from(cache.path(), src.path());
    let err = assert_clean_failure(&out);
    assert!(
        err.contains("could not fetch `train-labels-idx1-ubyte` of dataset `mnist-10k`"),
        "{err}"
    );
    assert!(
        err.contains("train-labels-idx1-ubyte.gz: sha256 mismatch: expected 9040b398"),
        "{err}"
    );
    assert!(
        err.contains("official URLs not tried because --from was given"),
        "{err}"
    );
    // The good file is as it was; the bad one never reached the cache; no temp files.
    assert_eq!(
        std::fs::read(cache_ds.join("t10k-labels-idx1-ubyte")).unwrap(),
        unpacked
    );
    let files = listing(&cache_ds);
    assert!(
        !files
            .iter()
            .any(|f| f.contains("train-labels") || f.contains(".tmp")),
        "{files:?}"
    );
}

#[test]
fn missing_file_names_both_sources_and_what_to_do() {
    let cache = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    source_with(src.path(), "t10k-images-idx3-ubyte", None);
    let out = fetch_mnist_10k_from(cache.path(), src.path());
    let err = assert_clean_failure(&out);
    assert!(
        err.contains("no `t10k-images-idx3-ubyte.gz` or `t10k-images-idx3-ubyte` there"),
        "{err}"
    );
    assert!(err.contains("To fix:"), "{err}");

    // A dataset that was never fetched says how to fetch it.
    let e = data::load(&data_dir(cache.path()), "fashion-mnist")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("dataset `fashion-mnist` is not in the cache"),
        "{e}"
    );
    assert!(e.contains("run `mat data fetch fashion-mnist`"), "{e}");
    assert!(e.contains("--from DIR"), "{e}");

    let out = mat(cache.path(), &["data", "fetch", "imagenet"]);
    let err = assert_clean_failure(&out);
    assert!(err.contains("unknown dataset `imagenet`"), "{err}");
}

#[test]
fn corrupt_cache_files_are_named_by_the_loader() {
    let cache = tempfile::tempdir().unwrap();
    let dd = data_dir(cache.path());
    data::load(&dd, "mnist-10k").unwrap();
    let imgs = cache.path().join("mnist-10k/train-images-idx3-ubyte");
    let bytes = std::fs::read(&imgs).unwrap();

    // Truncated: the header promises more than the file holds.
    std::fs::write(&imgs, &bytes[..bytes.len() - 100]).unwrap();
    let e = data::load(&dd, "mnist-10k").unwrap_err().to_string();
    assert!(e.contains("train-images-idx3-ubyte: truncated IDX file: header says 7996 images (6268880 bytes), file has 6268780 bytes"), "{e}");

    // Wrong magic: a labels header on an images file.
    let mut wrong = bytes.clone();
    wrong[3] = 0x01;
    std::fs::write(&imgs, &wrong).unwrap();
    let e = data::load(&dd, "mnist-10k").unwrap_err().to_string();
    assert!(
        e.contains("wrong IDX magic number: expected 0x00000803 (images), found 0x00000801"),
        "{e}"
    );
}

/// Writes a CIFAR-10 binary batch: `n` records with label `i % 10` and
/// channel-major pixels derived from the record index.
fn write_cifar_batch(path: &Path, n: usize, offset: usize) {
    let mut b = Vec::with_capacity(n * 3073);
    for i in 0..n {
        let k = i + offset;
        b.push((k % 10) as u8);
        for c in 0..3 {
            b.extend(std::iter::repeat_n(((k * 7 + c * 50) % 256) as u8, 1024));
        }
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn cifar10_binary_format_loads_and_bad_sizes_are_named() {
    use mat_core::data::cifar::load_cifar_dir;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (i, f) in data::manifest::CIFAR_FILES.iter().enumerate() {
        write_cifar_batch(&d.join(f), 10_000, i * 10_000);
    }
    let names: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    let ds = load_cifar_dir(d, "cifar10", &names).unwrap();
    assert_eq!(ds.train.images.dims(), &[50_000, 3, 32, 32]);
    assert_eq!(ds.test.images.dims(), &[10_000, 3, 32, 32]);
    // Record 12,345 is the 2,345th of data_batch_2: label 5, channel c = (k*7 + 50c) % 256.
    let k = 12_345usize;
    assert_eq!(
        ds.train.labels.get(k).unwrap().to_scalar::<u32>().unwrap(),
        5
    );
    let img = ds.train.images.get(k).unwrap();
    for c in 0..3 {
        let v = img
            .get(c)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = ((k * 7 + c * 50) % 256) as f32 / 255.0;
        assert!(v.iter().all(|&x| (x - want).abs() < 1e-6), "channel {c}");
    }

    // A file whose size is not a multiple of 3073 bytes.
    let p = d.join("test_batch.bin");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.truncate(bytes.len() - 10);
    std::fs::write(&p, &bytes).unwrap();
    let e = load_cifar_dir(d, "cifar10", &names)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("test_batch.bin: size 30729990 bytes is not a multiple of 3073"),
        "{e}"
    );

    // Whole records, but not a full batch.
    write_cifar_batch(&p, 100, 0);
    let e = load_cifar_dir(d, "cifar10", &names)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("test_batch.bin: 100 records; a CIFAR-10 batch file has 10000"),
        "{e}"
    );
}

#[test]
fn cifar10_fetch_from_extracted_files_checks_sizes() {
    let cache = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let bin = src.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (i, f) in data::manifest::CIFAR_FILES.iter().enumerate() {
        write_cifar_batch(&bin.join(f), 10_000, i);
    }
    let dd = data_dir(cache.path());
    let fetched = data::fetch(&dd, "cifar10", &Source::Dir(src.path().to_path_buf())).unwrap();
    assert_eq!(fetched.len(), 6);
    let ds = data::load(&dd, "cifar10").unwrap();
    assert_eq!(ds.class_names[0], "airplane");
    assert_eq!(ds.train.len(), 50_000);

    // A short batch is refused before anything is copied.
    let cache2 = tempfile::tempdir().unwrap();
    write_cifar_batch(&bin.join("data_batch_3.bin"), 9_999, 0);
    let e = data::fetch(
        &data_dir(cache2.path()),
        "cifar10",
        &Source::Dir(src.path().to_path_buf()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("data_batch_3.bin: expected 30730000 bytes, found 30726927"),
        "{e}"
    );
}
