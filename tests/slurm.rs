//! `mat repro --executor slurm` against a real Slurm (a single-node cluster
//! that `.ci/run` starts; `.ci/start-slurm` starts one on a developer
//! machine): the smoke table2 pipeline gives the same artifacts as the
//! local executor, a failing stage is reported with its job id, and SIGINT
//! leaves no job in the queue. Where no Slurm answers, the tests print why
//! and pass, unless MAT_REQUIRE_SLURM=1 (CI sets it).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{copy_dir, listing};

/// The tests share one small cluster: one at a time, so each job starts at
/// once.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `true` where `sinfo` reports a node ready for jobs.
fn slurm_up() -> bool {
    let up = Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| matches!(l.trim(), "idle" | "mixed" | "allocated"))
        });
    if !up {
        assert!(
            std::env::var("MAT_REQUIRE_SLURM").as_deref() != Ok("1"),
            "MAT_REQUIRE_SLURM=1 but no Slurm node answers `sinfo` (start one with .ci/start-slurm)"
        );
        eprintln!("skipped: no Slurm node answers `sinfo` (start one with .ci/start-slurm)");
    }
    up
}

/// A scratch project with the repository's pipelines.
fn project() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root.join("pipelines"), &dir.path().join("pipelines"));
    dir
}

fn mat(dir: &Path, args: &[&str]) -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut c = Command::new(env!("CARGO_BIN_EXE_mat"));
    c.args(args)
        .current_dir(dir)
        .env("MAT_DATA_DIR", root.join("data"))
        .env("MAT_CACHE_DIR", dir.join("cache"))
        .env("MAT_SLURM_POLL_MS", "200")
        .env("SOURCE_DATE_EPOCH", "1764547200");
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    mat(dir, args).output().unwrap()
}

/// Every artifact (tables, tensors, reports) under `dir`, without logs and
/// job scripts.
fn artifacts(dir: &Path) -> Vec<(String, Vec<u8>)> {
    listing(dir)
        .into_iter()
        .filter(|f| !f.starts_with("logs/") && !f.starts_with(".") && !f.contains("/."))
        .map(|f| {
            let bytes = std::fs::read(dir.join(&f)).unwrap();
            (f, bytes)
        })
        .collect()
}

fn queue() -> String {
    let o = Command::new("squeue")
        .args(["-h", "-o", "%i %j %T"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn smoke_table2_through_slurm_gives_the_local_artifacts() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !slurm_up() {
        return;
    }
    let dir = project();
    let d = dir.path();
    let smoke = ["repro", "pipelines/table2.yaml", "--profile", "smoke"];
    let t = Instant::now();
    let local = run(d, &[&smoke[..], &["--no-cache"]].concat());
    assert!(local.status.success(), "{}", common::stderr(&local));
    let local_s = t.elapsed().as_secs_f64();
    let local_runs = d.join("runs/table2/smoke");
    let want = artifacts(&local_runs);
    std::fs::rename(&local_runs, d.join("local")).unwrap();

    let t = Instant::now();
    let args = [
        &smoke[..],
        &["--no-cache", "--executor", "slurm", "--jobs", "4"],
    ]
    .concat();
    let o = run(d, &args);
    let log = common::stderr(&o);
    assert!(o.status.success(), "{log}");
    eprintln!(
        "smoke table2: local {local_s:.1} s, slurm {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert!(log.contains("44 of 44 stages ran"), "{log}");
    let got = artifacts(&local_runs);
    let names = |a: &[(String, Vec<u8>)]| a.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want));
    for ((name, a), (_, b)) in got.iter().zip(&want) {
        assert!(a == b, "{name} differs between the executors");
    }
    // Each stage's job script and log sit in the run's logs/.
    let logs = local_runs.join("logs");
    assert!(logs.join("train_mat-full.sbatch").exists());
    let script = std::fs::read_to_string(logs.join("train_mat-full.sbatch")).unwrap();
    assert!(
        script.contains("#SBATCH --job-name=mat:train@mat-full"),
        "{script}"
    );
    assert!(
        std::fs::read_to_string(logs.join("train_mat-full.log"))
            .unwrap()
            .contains("mat-train"),
        "the job's output goes to the stage log"
    );
    // A rerun submits nothing.
    let o = run(d, &args);
    assert!(common::stderr(&o).contains("0 of 44 stages ran"));
}

/// Writes a one-stage pipeline running `cmd` into the project `d`.
fn one_stage(d: &Path, name: &str, cmd: &str) -> PathBuf {
    let p = d.join(format!("pipelines/{name}.yaml"));
    std::fs::write(
        &p,
        format!("stages:\n  only:\n    cmd: {cmd}\n    outs: [\"${{out}}/done\"]\n"),
    )
    .unwrap();
    p
}

#[test]
fn a_failing_job_is_reported_with_its_id_and_log() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !slurm_up() {
        return;
    }
    let dir = project();
    let d = dir.path();
    one_stage(d, "fails", "echo about to fail; exit 3");
    let o = run(
        d,
        &[
            "repro",
            "pipelines/fails.yaml",
            "--profile",
            "default",
            "--executor",
            "slurm",
        ],
    );
    let err = common::assert_clean_failure(&o);
    let id = err
        .split("Slurm job ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no job id in:\n{err}"));
    assert!(id.chars().all(|c| c.is_ascii_digit()), "{err}");
    assert!(err.contains("FAILED (exit 3:0)"), "{err}");
    assert!(err.contains("runs/fails/default/logs/only.log"), "{err}");
    assert!(err.contains("about to fail"), "the log's tail:\n{err}");
}

#[test]
fn sigint_cancels_every_submitted_job() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !slurm_up() {
        return;
    }
    let dir = project();
    let d = dir.path();
    one_stage(d, "slow", "sleep 600");
    let child = mat(
        d,
        &[
            "repro",
            "pipelines/slow.yaml",
            "--profile",
            "default",
            "--executor",
            "slurm",
        ],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Wait until the job is in the queue.
    let start = Instant::now();
    while !queue().contains("mat:only") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the job never reached the queue: {}",
            queue()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("stopped by SIGINT"), "{err}");
    assert!(
        !queue().contains("mat:only"),
        "a job outlived the runner: {}",
        queue()
    );
    assert!(!d.join("runs/slow/default/done").exists());
}
