//! The quick profile's adversarial budgets hold what they promise: AT,
//! TRADES and MAT with SO and BIBO, trained by `mat-train` from the shipped
//! configs (`pipelines/train/mnist/`) on the MNIST subset, keep at least 60%
//! accuracy under PGD-40 at eps 0.3 (step 0.01, random start) on 1,000 test
//! digits. About 15 minutes on 2 cores, so ignored by `cargo test`:
//! `just test-robust` runs it.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use mat_core::attacks::{run_attack, Pgd};
use mat_core::centers::Centers;
use mat_core::data::{self, DataDir};
use mat_core::models::Classifier;
use mat_core::SeededRng;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn train_and_attack(config: &str, sets: &[&str]) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let centers = dir.path().join("centers.safetensors");
    Centers::new(10, 10, 10.0).unwrap().write(&centers).unwrap();
    let out = dir.path().join("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mat-train"));
    cmd.arg("--config")
        .arg(root().join("pipelines/train/mnist").join(config))
        .arg("--out")
        .arg(&out)
        .arg("--quiet")
        .env("MAT_DATA_DIR", root().join("data"))
        .env("MAT_CACHE_DIR", dir.path().join("cache"));
    if config == "mat.yaml" {
        cmd.arg("--set")
            .arg(format!("centers={}", centers.display()));
    }
    for s in sets {
        cmd.args(["--set", s]);
    }
    let o = cmd.output().unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{config}: {log}");
    eprintln!("{log}");

    let model = Classifier::load(&out.join("model.safetensors"), &Device::Cpu).unwrap();
    let ds = data::load(
        &DataDir::new(root().join("data"), dir.path().join("cache")),
        "mnist-10k",
    )
    .unwrap();
    let test = ds.test.subset(Some(1000), Some(11)).unwrap();
    let (mut clean, mut robust) = (0usize, 0usize);
    let mut rng = SeededRng::new(12);
    for start in (0..test.len()).step_by(250) {
        let n = 250.min(test.len() - start);
        let x = test.images.narrow(0, start, n).unwrap();
        let y = test.labels.narrow(0, start, n).unwrap();
        let o = run_attack(&Pgd::linf(40, 0.01), &model, &x, &y, 0.3, &mut rng).unwrap();
        let labels = y.to_vec1::<u32>().unwrap();
        clean += o
            .clean_pred
            .iter()
            .zip(&labels)
            .filter(|(p, l)| p == l)
            .count();
        robust += o.success.iter().filter(|s| !**s).count();
    }
    let n = test.len() as f64;
    (clean as f64 / n, robust as f64 / n)
}

fn check(name: &str, config: &str, sets: &[&str]) {
    let (clean, pgd) = train_and_attack(config, sets);
    eprintln!(
        "{name}: clean {:.2}%, PGD-40 (eps 0.3) {:.2}%",
        100.0 * clean,
        100.0 * pgd
    );
    assert!(
        pgd >= 0.60,
        "{name}: PGD-40 accuracy {:.2}% < 60%",
        100.0 * pgd
    );
}

#[test]
#[ignore = "trains three adversarial models (about 15 min); run with `just test-robust`"]
fn at_keeps_60_percent_under_pgd40() {
    check("AT", "at.yaml", &[]);
}

#[test]
#[ignore = "trains three adversarial models (about 15 min); run with `just test-robust`"]
fn trades_keeps_60_percent_under_pgd40() {
    check("TRADES", "trades.yaml", &[]);
}

#[test]
#[ignore = "trains three adversarial models (about 15 min); run with `just test-robust`"]
fn mat_with_so_and_bibo_keeps_60_percent_under_pgd40() {
    check("MAT (SO, BIBO)", "mat.yaml", &[]);
}
