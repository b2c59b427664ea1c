//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's `data/` folder (manifest and embedded MNIST subset).
pub fn data_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// `../shared/datasets/NAME` beside the repository, where CI and developer
/// machines keep offline copies; `None` (and a printed reason) when absent.
pub fn shared_dataset(name: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/datasets")
        .join(name);
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: no offline copy of `{name}` at {}", dir.display());
        None
    }
}

/// The embedded MNIST subset, loaded through a private cache (kept alive by
/// the returned guard).
pub fn mnist_10k() -> (mat_core::data::Dataset, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let dir = mat_core::data::DataDir::new(data_root(), cache.path());
    (mat_core::data::load(&dir, "mnist-10k").unwrap(), cache)
}

/// Runs the `mat` binary with a private cache.
pub fn mat(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mat"))
        .args(args)
        .env("MAT_DATA_DIR", data_root())
        .env("MAT_CACHE_DIR", cache)
        .output()
        .expect("run mat")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a clean failure: non-zero exit, an `error:` line, no panic.
pub fn assert_clean_failure(o: &Output) -> String {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr:\n{err}"
    );
    assert_eq!(o.status.code(), Some(1), "stderr:\n{err}");
    assert!(err.contains("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Every file under `dir`, relative, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

/// Runs the `mat` binary in the folder `dir`.
pub fn mat_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mat"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run mat")
}

/// A program's standard output and error, together.
pub fn text(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// Copies the folder `from` to `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// `true` while process `pid` runs (a zombie waiting for its reaper has
/// ended).
pub fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").split_whitespace().next();
            !matches!(state, Some("Z" | "X"))
        })
        .unwrap_or(false)
}

/// Trains as `mat-train` does, through the one training loop (config →
/// `prepare` → `Prepared::run`, with its checkpoint and log), into a
/// temporary folder that the returned guard keeps. `yaml` is a `mat-train`
/// config; MAT and MMC configs get a 10x10 center file (|mu| = 10) there.
pub fn train(
    yaml: &str,
    mut on_epoch: impl FnMut(&mat_core::train::EpochLog),
) -> (
    mat_core::train::run::Prepared,
    Vec<mat_core::train::EpochLog>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut spec: mat_core::train::spec::TrainSpec = serde_yaml::from_str(yaml).unwrap();
    if spec.method.uses_centers() {
        let path = dir.path().join("centers.safetensors");
        mat_core::centers::Centers::new(10, 10, 10.0)
            .unwrap()
            .write(&path)
            .unwrap();
        spec.centers = Some(path);
    }
    let data = mat_core::data::DataDir::new(data_root(), dir.path().join("cache"));
    let prepared = mat_core::train::run::prepare(spec, &data, &candle_core::Device::Cpu).unwrap();
    let logs = prepared
        .run(&dir.path().join("out"), false, &mut |e| {
            if let mat_core::train::run::Event::Epoch(l) = e {
                on_epoch(l)
            }
        })
        .unwrap();
    (prepared, logs, dir)
}
