//! Every method and ablation of Table 2 (and MMC) resumes after a kill:
//! `mat-train --resume` killed with SIGKILL at seeded moments, then run to
//! the end, writes the same bytes as an uninterrupted run (weights, log,
//! checkpoint). Tiny budgets: 128 digits, 3 epochs, 2 inner steps.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mat_core::centers::Centers;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shipped quick config of `method` with the pipeline's ablation
/// options, shrunk to seconds.
fn args(config: &str, sets: &[&str], centers: &Path, out: &Path, epochs: usize) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--quiet".into(),
        "--resume".into(),
        "--config".into(),
        root()
            .join("pipelines/train/mnist")
            .join(config)
            .display()
            .to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    let mut all: Vec<String> = [
        "train_limit=128",
        "optim.batch_size=32",
        "eval.limit=64",
        "eval.pgd.limit=16",
        "eval.pgd.steps=2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if config != "natural.yaml" {
        all.push("adversary.steps=2".into());
    }
    all.push(format!("optim.epochs={epochs}"));
    if config != "natural.yaml" && config != "at.yaml" && config != "trades.yaml" {
        all.push(format!("centers={}", centers.display()));
    }
    all.extend(sets.iter().map(|s| s.to_string()));
    for s in all {
        a.push("--set".into());
        a.push(s);
    }
    a
}

fn command(a: &[String], cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mat-train"));
    c.args(a)
        .env("MAT_DATA_DIR", root().join("data"))
        .env("MAT_CACHE_DIR", cache)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn run_to_end(a: &[String], cache: &Path) {
    let o = command(a, cache).output().unwrap();
    assert!(
        o.status.success(),
        "mat-train {a:?}:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

const FILES: [&str; 3] = [
    "model.safetensors",
    "train_log.parquet",
    "checkpoint.safetensors",
];

fn bytes(dir: &Path) -> Vec<Vec<u8>> {
    FILES
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}")))
        .collect()
}

/// A seeded stream of kill delays (splitmix64).
struct Delays(u64);

impl Delays {
    fn next(&mut self, max: Duration) -> Duration {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        max.mul_f64((z >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// Regression: one epoch, then `--resume` to three with SIGKILLs at seeded
/// points; the same bytes as one uninterrupted run.
fn resumes_exactly(config: &str, sets: &[&str], seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cache = d.join("cache");
    let centers = d.join("centers.safetensors");
    Centers::new(10, 10, 10.0).unwrap().write(&centers).unwrap();

    let whole = d.join("whole");
    let start = Instant::now();
    run_to_end(&args(config, sets, &centers, &whole, 3), &cache);
    let full_time = start.elapsed();
    let want = bytes(&whole);

    let cut = d.join("cut");
    // The reported case: MAT with BIBO logs NaN for BIBO in its FTC-only
    // warm-up epoch, and that checkpoint could not be resumed.
    run_to_end(&args(config, sets, &centers, &cut, 1), &cache);
    let a = args(config, sets, &centers, &cut, 3);
    let mut delays = Delays(seed);
    let mut kills = 0;
    for _ in 0..3 {
        let mut child = command(&a, &cache).spawn().unwrap();
        let wait = delays.next(full_time);
        std::thread::sleep(wait);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
    }
    run_to_end(&a, &cache);
    let got = bytes(&cut);
    for (i, f) in FILES.iter().enumerate() {
        assert!(
            got[i] == want[i],
            "{config} {sets:?}: {f} differs from the uninterrupted run after {kills} kills"
        );
    }
    let leftovers: Vec<String> = std::fs::read_dir(&cut)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !FILES.contains(&n.as_str()))
        .collect();
    // A SIGKILL mid-write may leave a hidden temp file (the runner removes
    // those); never a damaged artifact under its own name.
    assert!(
        leftovers
            .iter()
            .all(|n| n.starts_with('.') && n.ends_with(".tmp")),
        "{leftovers:?}"
    );
}

/// Regression: a kill just after the last epoch's checkpoint (before the
/// log and the model file) lost a log row, and resume exited 0. The resume
/// now writes the log from the checkpoint and the model file.
#[test]
fn a_kill_after_the_last_checkpoint_loses_no_log_row() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cache = d.join("cache");
    let centers = d.join("centers.safetensors");
    Centers::new(10, 10, 10.0).unwrap().write(&centers).unwrap();
    let sets = ["mat.alpha=0"];
    let (whole, short) = (d.join("whole"), d.join("short"));
    let a = args("mat.yaml", &sets, &centers, &whole, 3);
    run_to_end(&a, &cache);
    let want = bytes(&whole);
    run_to_end(&args("mat.yaml", &sets, &centers, &short, 2), &cache);
    // What the kill leaves: the last checkpoint, the log one row short, no
    // model file.
    std::fs::copy(
        short.join("train_log.parquet"),
        whole.join("train_log.parquet"),
    )
    .unwrap();
    std::fs::remove_file(whole.join("model.safetensors")).unwrap();
    run_to_end(&a, &cache);
    assert!(
        bytes(&whole) == want,
        "the log row lost after the last checkpoint was not restored"
    );
}

/// Regression: `eval.pgd.eps=0` panicked after a whole epoch (an empty
/// uniform range for the random start). eps 0 is a legal budget.
#[test]
fn training_with_an_eval_pgd_budget_of_zero_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let centers = d.join("centers.safetensors");
    let mut a = args(
        "at.yaml",
        // PGD after this one epoch (the config runs it every 5th).
        &["eval.pgd.eps=0", "adversary.eps=0", "eval.pgd.every=1"],
        &centers,
        &d.join("m"),
        1,
    );
    a.retain(|s| s != "--resume");
    run_to_end(&a, &d.join("cache"));
    let log = mat_core::artifact::Table::read(&d.join("m/train_log.parquet")).unwrap();
    assert!(log.f64s("pgd_accuracy").unwrap()[0].is_finite());
}

#[test]
fn natural_resumes_after_a_kill() {
    resumes_exactly("natural.yaml", &[], 1);
}

#[test]
fn at_resumes_after_a_kill() {
    resumes_exactly("at.yaml", &[], 2);
}

#[test]
fn trades_resumes_after_a_kill() {
    resumes_exactly("trades.yaml", &[], 3);
}

#[test]
fn mat_so_and_bibo_resumes_after_a_kill() {
    resumes_exactly("mat.yaml", &[], 4);
}

#[test]
fn mat_bibo_resumes_after_its_warm_up_epoch() {
    resumes_exactly("mat.yaml", &["mat.alpha=0"], 5);
}

#[test]
fn mat_so_resumes_after_a_kill() {
    resumes_exactly("mat.yaml", &["mat.beta=0"], 6);
}

#[test]
fn mat_ftc_resumes_after_a_kill() {
    resumes_exactly("mat.yaml", &["mat.alpha=0", "mat.beta=0"], 7);
}

#[test]
fn adversarial_mmc_resumes_after_a_kill() {
    resumes_exactly("mmc.yaml", &["mmc.adversarial=true"], 8);
}
