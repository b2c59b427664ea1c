//! Crash consistency of `mat repro` on the smoke profile of Table 2: the
//! runner's process group is killed with SIGKILL at seeded moments, the run
//! is restarted each time and finally run to the end; its artifacts are
//! byte for byte those of an uninterrupted run in another folder, no stage
//! process is left, and no temp file.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{copy_dir, running};

fn repro(project: &Path) -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut c = Command::new(env!("CARGO_BIN_EXE_mat"));
    c.args([
        "repro",
        "pipelines/table2.yaml",
        "--profile",
        "smoke",
        "--jobs",
        "2",
        // Regression: a killed stage gives up its cwd before the kernel
        // releases its files (the final close runs last in its exit), so
        // for a moment it is gone from /proc yet still holds the run
        // folder's lock; a restart in that moment was refused as "in use".
        // The restart queues behind the lock instead, as a user would.
        "--wait",
    ])
    .current_dir(project)
    .env("MAT_DATA_DIR", root.join("data"))
    .env("MAT_CACHE_DIR", project.join("cache"))
    // The report's date: the same bytes on both sides of midnight.
    .env("SOURCE_DATE_EPOCH", "1796083200")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

/// Every file under `dir` with its bytes, minus the stage logs and the run
/// lock (which name pids and times).
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if rel.starts_with("logs") || rel.ends_with(".mat-run.lock") {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with(".tmp-")
                || (name.starts_with('.') && (name.ends_with(".tmp") || name.contains(".tmp.")))
                || name.ends_with(".mat-tmp")
            {
                found.push(p.clone());
            }
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    found
}

/// Processes whose working folder is inside `dir` (every stage runs there).
fn processes_in(dir: &Path) -> Vec<String> {
    let canon = std::fs::canonicalize(dir).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.parse::<u32>().ok()?;
            let cwd = std::fs::read_link(format!("/proc/{name}/cwd")).ok()?;
            (cwd.starts_with(&canon) && running(&name)).then_some(name)
        })
        .collect()
}

#[test]
fn sigkill_at_seeded_points_then_restart_gives_the_uninterrupted_bytes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let top = tempfile::tempdir().unwrap();
    let (whole, killed) = (top.path().join("whole"), top.path().join("killed"));
    for p in [&whole, &killed] {
        copy_dir(&root.join("pipelines"), &p.join("pipelines"));
    }

    let start = Instant::now();
    let o = repro(&whole).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let full = start.elapsed();

    // Seeded kill moments spread over the run (splitmix64 of 13).
    let mut state = 13u64;
    let mut kills = 0;
    for _ in 0..4 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let at = full.mul_f64(0.05 + 0.2 * ((z >> 11) as f64 / (1u64 << 53) as f64));
        let mut runner = repro(&killed).process_group(0).spawn().unwrap();
        std::thread::sleep(at);
        if runner.try_wait().unwrap().is_none() {
            let pgid = runner.id().to_string();
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
            kills += 1;
            runner.wait().unwrap();
        } else {
            // It ended before the kill: then it must have succeeded.
            let o = runner.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        // The stages die with the runner.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !processes_in(&killed).is_empty() {
            assert!(
                Instant::now() < deadline,
                "orphans: {:?}",
                processes_in(&killed)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(kills >= 3, "only {kills} kills landed before the run ended");
    let o = repro(&killed).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let (a, b) = (
        files(&whole.join("runs/table2/smoke")),
        files(&killed.join("runs/table2/smoke")),
    );
    let names = |v: &[(PathBuf, Vec<u8>)]| v.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "different files after {kills} kills");
    for ((p, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{} differs after {kills} kills", p.display());
    }
    assert!(a.len() > 30, "{} files", a.len());
    assert_eq!(temp_files(&killed.join("runs")), Vec::<PathBuf>::new());
    assert!(processes_in(&killed).is_empty());
}
