//! Bounded, seeded fuzzing of every reader: IDX, CIFAR-10 batches, Parquet,
//! safetensors, YAML configs and pipelines, and command-line values.
//! A mutated input gives an error naming its file, or is accepted only when
//! what was read is valid; nothing panics.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use mat_core::artifact::{write_table, write_tensors, Columns, Table, TensorFile};
use mat_core::SeededRng;

/// One seeded mutation of `bytes`: flipped bits, an overwritten run of
/// bytes, a cut, an insertion, or a duplicated slice.
fn mutate(bytes: &[u8], rng: &mut SeededRng) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let n = b.len().max(1);
    match rng.below(5) {
        0 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(n).min(b.len().saturating_sub(1));
                if let Some(x) = b.get_mut(i) {
                    *x ^= 1 << rng.below(8);
                }
            }
        }
        1 => {
            let i = rng.below(n);
            for j in i..(i + 1 + rng.below(16)).min(b.len()) {
                b[j] = rng.next_u64() as u8;
            }
        }
        2 => b.truncate(rng.below(n)),
        3 => {
            let i = rng.below(n).min(b.len());
            let extra: Vec<u8> = (0..1 + rng.below(8))
                .map(|_| rng.next_u64() as u8)
                .collect();
            b.splice(i..i, extra);
        }
        _ => {
            let i = rng.below(n).min(b.len());
            let j = (i + rng.below(64)).min(b.len());
            let copy = b[i..j].to_vec();
            b.extend(copy);
        }
    }
    b
}

/// Runs `read` on `rounds` mutations of `original` written to `path`;
/// `check` says whether an accepted value is valid. Returns how many
/// mutations were refused.
fn fuzz<T>(
    path: &Path,
    original: &[u8],
    rounds: usize,
    seed: u64,
    read: impl Fn(&Path) -> mat_core::Result<T>,
    check: impl Fn(&T) -> Result<(), String>,
) -> usize {
    let mut rng = SeededRng::new(seed);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut refused = 0;
    for round in 0..rounds {
        let bytes = mutate(original, &mut rng);
        std::fs::write(path, &bytes).unwrap();
        match catch_unwind(AssertUnwindSafe(|| read(path))) {
            Err(_) => panic!("{name}: mutation {round} panicked the reader"),
            Ok(Err(e)) => {
                refused += 1;
                let msg = e.to_string();
                assert!(
                    msg.contains(&name)
                        || msg.contains(&path.parent().unwrap().display().to_string()),
                    "{name}: mutation {round}: the error does not name the file: {msg}"
                );
            }
            Ok(Ok(v)) => {
                if let Err(why) = check(&v) {
                    panic!("{name}: mutation {round} was accepted but is invalid: {why}");
                }
            }
        }
    }
    refused
}

#[test]
fn parquet_reader_refuses_damaged_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("summary.parquet");
    let cols = || {
        Columns::new()
            .f64("eps", vec![0.1, 0.3])
            .u32("samples", vec![1000, 1000])
            .f64("robust_accuracy", vec![0.723, 0.5])
            .string("attack", vec!["pgd".into(), "pgd".into()])
            .bool("ok", vec![true, false])
            .f32_list("image", vec![0.25; 8], &[1, 2, 2])
    };
    let meta: mat_core::artifact::Metadata =
        [("kind".to_string(), "attack_summary".to_string())].into();
    write_table(&path, cols(), meta).unwrap();
    let original = std::fs::read(&path).unwrap();
    let good = Table::read(&path).unwrap();
    let values = |t: &Table| {
        (
            t.f64s("eps").ok(),
            t.u32s("samples").ok(),
            t.f64s("robust_accuracy").ok(),
            t.strings("attack").ok(),
            t.bools("ok").ok(),
            t.f32_list("image", 4).ok(),
            t.metadata.clone(),
        )
    };
    let want = values(&good);
    let refused = fuzz(&path, &original, 300, 1, Table::read, |t| {
        // Accepted means unchanged: a flipped bit never changes a cell.
        if values(t) == want {
            Ok(())
        } else {
            Err(format!("read different values: {:?}", values(t)))
        }
    });
    assert!(refused > 200, "only {refused} of 300 refused");
}

/// Regression: one flipped bit in a `summary.parquet` changed a Table 2
/// cell with exit 0. Every single-bit flip of the data pages is refused.
#[test]
fn a_flipped_bit_in_a_summary_never_changes_a_cell() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("summary.parquet");
    let meta: mat_core::artifact::Metadata =
        [("kind".to_string(), "attack_summary".to_string())].into();
    write_table(
        &path,
        Columns::new()
            .f64("eps", vec![0.3])
            .f64("robust_accuracy", vec![0.723]),
        meta,
    )
    .unwrap();
    let original = std::fs::read(&path).unwrap();
    for byte in 0..original.len() {
        for bit in 0..8 {
            let mut b = original.clone();
            b[byte] ^= 1 << bit;
            std::fs::write(&path, &b).unwrap();
            if let Ok(t) = Table::read(&path) {
                assert_eq!(
                    t.f64s("robust_accuracy").ok(),
                    Some(vec![0.723]),
                    "byte {byte} bit {bit}"
                );
                assert_eq!(t.f64s("eps").ok(), Some(vec![0.3]), "byte {byte} bit {bit}");
            }
        }
    }
}

#[test]
fn safetensors_reader_refuses_damaged_and_non_finite_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let w = Tensor::arange(0f32, 24., &Device::Cpu)
        .unwrap()
        .reshape((4, 6))
        .unwrap();
    let b = Tensor::new(&[1f32, 2.], &Device::Cpu).unwrap();
    let meta: mat_core::artifact::Metadata = [
        ("kind".to_string(), "model".to_string()),
        ("arch".to_string(), "small-cnn".to_string()),
    ]
    .into();
    write_tensors(&path, [("w", &w), ("b", &b)], &meta).unwrap();
    let original = std::fs::read(&path).unwrap();
    let refused = fuzz(
        &path,
        &original,
        300,
        2,
        |p| TensorFile::read(p, &Device::Cpu),
        |f| {
            for (n, t) in &f.tensors {
                let v = t
                    .flatten_all()
                    .unwrap()
                    .to_dtype(candle_core::DType::F32)
                    .unwrap();
                if v.to_vec1::<f32>().unwrap().iter().any(|x| !x.is_finite()) {
                    return Err(format!("tensor {n} holds a non-finite value"));
                }
            }
            Ok(())
        },
    );
    assert!(refused > 50, "only {refused} of 300 refused");

    // Regression: a model with NaN weights was attacked and reported.
    let nan = Tensor::new(&[1f32, f32::NAN, 3.], &Device::Cpu).unwrap();
    write_tensors(&path, [("conv1.weight", &nan), ("b", &b)], &meta).unwrap();
    let e = TensorFile::read(&path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.safetensors")
            && e.contains("conv1.weight")
            && e.contains("1 NaN or infinite"),
        "{e}"
    );
}

/// Regression: the metadata came out in a random order, so identical
/// weights got new bytes and every stage downstream ran again.
#[test]
fn identical_tensors_and_metadata_give_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let w = Tensor::arange(0f32, 6., &Device::Cpu).unwrap();
    let meta: mat_core::artifact::Metadata = (0..40)
        .map(|i| (format!("key{i}"), format!("value {i}")))
        .collect();
    let mut seen = Vec::new();
    for i in 0..8 {
        let p = dir.path().join(format!("{i}.safetensors"));
        write_tensors(&p, [("w", &w)], &meta).unwrap();
        seen.push(std::fs::read(&p).unwrap());
        assert_eq!(TensorFile::read(&p, &Device::Cpu).unwrap().metadata, meta);
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]));
}

/// The embedded subset's IDX files, unpacked into a cache kept alive by
/// the returned guard.
fn unpacked_mnist() -> (tempfile::TempDir, PathBuf) {
    let (_, cache) = common::mnist_10k();
    let dir =
        mat_core::data::DataDir::new(common::data_root(), cache.path()).cache_dir("mnist-10k");
    (cache, dir)
}

#[test]
fn idx_reader_refuses_damaged_files() {
    let (_cache, src) = unpacked_mnist();
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let p = f.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let classes: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    let load = |_: &Path| {
        mat_core::data::idx::load_idx_dir(dir.path(), "mnist-10k", [1, 28, 28], &classes)
    };
    let valid = |ds: &mat_core::data::Dataset| {
        for split in [&ds.train, &ds.test] {
            let labels = split.labels.to_vec1::<u32>().unwrap();
            if let Some(l) = labels.iter().find(|l| **l >= 10) {
                return Err(format!("label {l} of 10 classes"));
            }
        }
        Ok(())
    };
    for (file, rounds) in [
        ("t10k-labels-idx1-ubyte", 60),
        ("t10k-images-idx3-ubyte", 30),
    ] {
        let path = dir.path().join(file);
        let original = std::fs::read(&path).unwrap();
        fuzz(&path, &original, rounds, 3, load, valid);
        std::fs::write(&path, &original).unwrap();
    }
}

#[test]
fn cifar_reader_refuses_damaged_batches() {
    use mat_core::data::cifar::{load_cifar_dir, RECORDS_PER_FILE, RECORD_BYTES};
    use mat_core::data::manifest::CIFAR_FILES;
    let dir = tempfile::tempdir().unwrap();
    let mut record = vec![0u8; RECORD_BYTES as usize];
    let mut batch = Vec::with_capacity((RECORD_BYTES * RECORDS_PER_FILE) as usize);
    for i in 0..RECORDS_PER_FILE as usize {
        record[0] = (i % 10) as u8;
        record[1..].fill((i % 251) as u8);
        batch.extend_from_slice(&record);
    }
    for f in CIFAR_FILES {
        std::fs::write(dir.path().join(f), &batch).unwrap();
    }
    let classes: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    let path = dir.path().join(CIFAR_FILES[5]);
    let load = |_: &Path| load_cifar_dir(dir.path(), "cifar10", &classes);
    fuzz(&path, &batch, 6, 4, load, |ds| {
        let labels = ds.test.labels.to_vec1::<u32>().unwrap();
        match labels.iter().find(|l| **l >= 10) {
            Some(l) => Err(format!("label {l} of 10 classes")),
            None => Ok(()),
        }
    });
}

#[test]
fn yaml_readers_refuse_damaged_configs_and_pipelines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mat.yaml");
    let original = std::fs::read(root.join("pipelines/train/mnist/mat.yaml")).unwrap();
    fuzz(
        &config,
        &original,
        300,
        5,
        |p| mat_core::train::spec::TrainSpec::load(p, &[]),
        |_| Ok(()),
    );
    let pipeline = dir.path().join("table2.yaml");
    let original = std::fs::read(root.join("pipelines/table2.yaml")).unwrap();
    std::fs::create_dir_all(dir.path().join("common")).unwrap();
    std::fs::copy(
        root.join("pipelines/common/models.yaml"),
        dir.path().join("common/models.yaml"),
    )
    .unwrap();
    let mut rng = SeededRng::new(6);
    for round in 0..300 {
        std::fs::write(&pipeline, mutate(&original, &mut rng)).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            mat_pipeline::Pipeline::load(&pipeline, "smoke", Path::new("runs"))
        }));
        match r {
            Err(_) => panic!("pipeline mutation {round} panicked"),
            Ok(Err(e)) => {
                let msg = e.to_string();
                assert!(msg.contains(".yaml"), "mutation {round}: {msg}");
            }
            Ok(Ok(p)) => {
                for s in &p.stages {
                    for o in &s.outs {
                        assert!(
                            o.starts_with("runs/table2/smoke/"),
                            "mutation {round}: output {} accepted",
                            o.display()
                        );
                    }
                }
            }
        }
    }
}

/// Odd command-line values: each is refused with a message and exit 1 or 2
/// (clap), never a panic.
#[test]
fn stage_programs_refuse_odd_values_without_panicking() {
    let bin = |name: &str| Path::new(env!("CARGO_BIN_EXE_mat")).with_file_name(name);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cache = d.join("cache");
    let run = |name: &str, args: &[&str]| {
        let o = Command::new(bin(name))
            .args(args)
            .current_dir(d)
            .env("MAT_DATA_DIR", common::data_root())
            .env("MAT_CACHE_DIR", &cache)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            !err.contains("panicked"),
            "{name} {args:?} panicked:\n{err}"
        );
        (o.status.code(), err)
    };
    let (code, err) = run(
        "mat-centers",
        &[
            "--classes",
            "100000",
            "--dim",
            "100000",
            "--out",
            "c.safetensors",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("need") && err.contains("GB"), "{err}");
    for args in [
        &["--classes", "0", "--dim", "4", "--out", "c.safetensors"][..],
        &[
            "--classes",
            "10",
            "--dim",
            "10",
            "--norm",
            "nan",
            "--out",
            "c.safetensors",
        ],
        &[
            "--classes",
            "10",
            "--dim",
            "10",
            "--norm",
            "-1",
            "--out",
            "c.safetensors",
        ],
        &["--classes", "-3", "--dim", "10", "--out", "c.safetensors"],
    ] {
        let (code, err) = run("mat-centers", args);
        assert!(matches!(code, Some(1 | 2)), "{args:?}: {err}");
    }
    let natural = common::data_root().join("../pipelines/train/mnist/natural.yaml");
    let natural = natural.to_str().unwrap();
    let (code, err) = run(
        "mat-train",
        &[
            "--quiet",
            "--config",
            natural,
            "--out",
            "m",
            "--set",
            "train_limit=64",
            "--set",
            "optim.epochs=1",
            "--set",
            "eval.limit=32",
            "--set",
            "eval.pgd.limit=8",
            "--set",
            "eval.pgd.steps=1",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    for set in [
        "optim.epochs=-1",
        "optim.lr=.nan",
        "optim.lr=1e999",
        "train_limit=0",
        "optim.batch_size=0",
        "seed=abc",
        "eval.pgd.eps=1e308",
        "eval.pgd.limit=0",
        "no.such.key=1",
    ] {
        let (code, err) = run(
            "mat-train",
            &["--config", natural, "--out", "x", "--set", set],
        );
        assert_eq!(code, Some(1), "--set {set}: {err}");
        assert!(
            !d.join("x/model.safetensors").exists(),
            "--set {set} wrote a model"
        );
    }
    // mat-attack on the model just trained, 2 steps on 20 digits.
    let attack = |extra: &[&str]| {
        let mut a = vec![
            "--quiet",
            "--model",
            "m/model.safetensors",
            "--data",
            "mnist-10k",
            "--steps",
            "2",
            "--limit",
            "20",
        ];
        a.extend_from_slice(extra);
        run("mat-attack", &a)
    };
    for (args, ok) in [
        (&["--eps", "0"][..], true),
        (&["--eps", "1e308"], true),
        (&["--eps", "nan"], false),
        (&["--eps", "-1"], false),
        (&["--eps", "0.3", "--steps", "0"], false),
        (
            &["--eps", "0.3", "--steps", "99999999999999999999999"],
            false,
        ),
        (&["--eps", "0.3", "--limit", "0"], false),
        (&["--eps", "0.3", "--restarts", "0"], false),
        (&["--eps", "0.3", "--norm", "l7"], false),
        (&["--eps", "0.3", "--set", "steps=abc"], false),
        (&["--eps", "0.3", "--step-size", "-0.1"], false),
    ] {
        let mut a = vec!["--attack", "pgd", "--out", "adv"];
        a.extend_from_slice(args);
        let (code, err) = attack(&a);
        if ok {
            assert_eq!(code, Some(0), "{args:?}: {err}");
        } else {
            assert!(matches!(code, Some(1 | 2)), "{args:?}: {err}");
        }
    }
    // eps 0 is a budget: robust accuracy equals clean accuracy.
    let (code, err) = attack(&["--attack", "apgd-ce", "--eps", "0", "--out", "zero"]);
    assert_eq!(code, Some(0), "{err}");
    let t = Table::read(&d.join("zero/summary.parquet")).unwrap();
    assert_eq!(
        t.f64s("robust_accuracy").unwrap(),
        t.f64s("clean_accuracy").unwrap()
    );
}
