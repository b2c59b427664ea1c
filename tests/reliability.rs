//! `mat repro` never removes what it does not own, keeps one writer per
//! run folder, takes its stages with it when it is killed, and finds the
//! project root wherever it is started. Toy pipelines of shell commands.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{mat_in, running, text};

fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `mat repro FILE --profile default` in `d`, in a process group of its
/// own, its output discarded.
fn spawn_repro(d: &Path, file: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mat"))
        .args(["repro", file, "--profile", "default"])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap()
}

/// Regression: `outs: [""]` removed the checkout (`.git` included) and
/// `outs: ["../sibling"]` a folder outside it; now both are refused when
/// the pipeline loads, `--dry-run` too, and nothing is removed.
#[test]
fn repro_never_removes_what_it_does_not_own() {
    let top = tempfile::tempdir().unwrap();
    let project = top.path().join("project");
    let sibling = top.path().join("sibling");
    std::fs::create_dir_all(project.join(".git")).unwrap();
    std::fs::create_dir_all(&sibling).unwrap();
    std::fs::write(sibling.join("keep.txt"), "mine").unwrap();
    std::fs::write(project.join(".git/HEAD"), "ref").unwrap();
    for (name, out) in [
        ("empty", "\"\""),
        ("up", "../sibling"),
        ("runs", "runs"),
        ("git", ".git"),
    ] {
        std::fs::write(
            project.join(format!("{name}.yaml")),
            format!("stages:\n  wipe:\n    cmd: \"true\"\n    outs: [{out}]\n"),
        )
        .unwrap();
        for dry in [false, true] {
            let file = format!("{name}.yaml");
            let mut a = vec!["repro", file.as_str(), "--profile", "default"];
            if dry {
                a.push("--dry-run");
            }
            let o = mat_in(&project, &a);
            assert_eq!(o.status.code(), Some(1), "{}", text(&o));
            assert!(text(&o).contains(&format!("{name}.yaml:")), "{}", text(&o));
            assert!(text(&o).contains("stage `wipe`: output"), "{}", text(&o));
        }
    }
    assert_eq!(
        std::fs::read_to_string(sibling.join("keep.txt")).unwrap(),
        "mine"
    );
    assert!(project.join(".git/HEAD").exists());
    assert!(project.join("empty.yaml").exists());
}

const SLOW: &str = "stages:\n  slow:\n    cmd: echo $$ > started.txt; sleep 3; echo done > ${out}/slow.txt\n    outs: [\"${out}/slow.txt\"]\n";

/// Regression: two runs of one pipeline in one folder both ran. The second
/// now says who holds the folder and stops; with `--wait` it queues.
#[test]
fn a_second_run_of_one_pipeline_waits_or_stops() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("slow.yaml"), SLOW).unwrap();
    let first = spawn_repro(d, "slow.yaml");
    wait_for(&d.join("started.txt"));
    let o = mat_in(d, &["repro", "slow.yaml", "--profile", "default"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let msg = text(&o);
    assert!(
        msg.contains("runs/slow/default is in use by another `mat repro` (pid ")
            && msg.contains(&format!("pid {} since", first.id())),
        "{msg}"
    );
    assert!(msg.contains("--wait"), "{msg}");
    // Queued behind the first: it waits, then finds the stage up to date.
    let o = mat_in(d, &["repro", "slow.yaml", "--profile", "default", "--wait"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("slow: up to date"), "{}", text(&o));
    assert!(first.wait_with_output().unwrap().status.success());
}

/// Regression: SIGKILL of `mat repro` left the running stage alive (14 of
/// 16 tries). Now the stage dies with the runner.
#[test]
fn a_killed_runner_takes_its_stage_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("long.yaml"),
        "stages:\n  long:\n    cmd: echo $$ > pid.txt; exec sleep 60\n    outs: [\"${out}/x\"]\n",
    )
    .unwrap();
    for _ in 0..4 {
        let _ = std::fs::remove_file(d.join("pid.txt"));
        let mut runner = spawn_repro(d, "long.yaml");
        wait_for(&d.join("pid.txt"));
        std::thread::sleep(Duration::from_millis(50));
        let pid = std::fs::read_to_string(d.join("pid.txt"))
            .unwrap()
            .trim()
            .to_string();
        assert!(running(&pid));
        runner.kill().unwrap();
        runner.wait().unwrap();
        let start = Instant::now();
        while running(&pid) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "stage {pid} outlived its runner"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Regression: a restart started a second copy beside a survivor. A
/// process a stage left behind (here a background `sleep`) keeps the run
/// folder locked, so the restart refuses and names it.
#[test]
fn a_restart_does_not_run_beside_a_surviving_stage() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("fork.yaml"),
        "stages:\n  fork:\n    cmd: sleep 30 & echo $! > survivor.txt; wait\n    outs: [\"${out}/x\"]\n",
    )
    .unwrap();
    let mut runner = spawn_repro(d, "fork.yaml");
    wait_for(&d.join("survivor.txt"));
    std::thread::sleep(Duration::from_millis(50));
    let survivor = std::fs::read_to_string(d.join("survivor.txt"))
        .unwrap()
        .trim()
        .to_string();
    runner.kill().unwrap();
    runner.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(running(&survivor), "the test needs a survivor");
    let o = mat_in(d, &["repro", "fork.yaml", "--profile", "default"]);
    let msg = text(&o);
    assert_eq!(o.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains("a stage still running from an earlier run whose runner has ended"),
        "{msg}"
    );
    let _ = Command::new("kill").args(["-KILL", &survivor]).status();
}

/// Regression: `mat repro` from another folder wrote `runs/` there and
/// failed later; it now works from the project root wherever it starts,
/// and refuses a pipeline outside the project at once.
#[test]
fn repro_runs_in_the_project_root_wherever_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("pipelines/sub")).unwrap();
    std::fs::write(d.join("input.txt"), "7").unwrap();
    std::fs::write(
        d.join("pipelines/copy.yaml"),
        "stages:\n  copy:\n    cmd: cp input.txt ${out}/copy.txt\n    deps: [input.txt]\n    outs: [\"${out}/copy.txt\"]\n",
    )
    .unwrap();
    let o = mat_in(
        &d.join("pipelines/sub"),
        &["repro", "../copy.yaml", "--profile", "default"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(d.join("runs/copy/default/copy.txt").exists());
    assert!(!d.join("pipelines/sub/runs").exists());

    let elsewhere = tempfile::tempdir().unwrap();
    let file = d.join("pipelines/copy.yaml");
    let o = mat_in(
        elsewhere.path(),
        &["repro", file.to_str().unwrap(), "--profile", "default"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("outside the project root"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}

/// Regression: a truncated `mat.lock` was refused with no hint.
#[test]
fn a_truncated_lock_file_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("one.yaml"),
        "stages:\n  one:\n    cmd: echo 1 > ${out}/one.txt\n    outs: [\"${out}/one.txt\"]\n",
    )
    .unwrap();
    let o = mat_in(d, &["repro", "one.yaml", "--profile", "default"]);
    assert!(o.status.success(), "{}", text(&o));
    let lock = d.join("runs/one/default/mat.lock");
    let full = std::fs::read(&lock).unwrap();
    std::fs::write(&lock, &full[..full.len() / 2]).unwrap();
    let o = mat_in(d, &["repro", "one.yaml", "--profile", "default"]);
    assert_eq!(o.status.code(), Some(1));
    let msg = text(&o);
    assert!(msg.contains("mat.lock: not a lock file"), "{msg}");
    assert!(msg.contains("Remove it"), "{msg}");
}

/// A killed run's temp files (atomic writes, the lock file's) are removed
/// by the next run, which holds the folder.
#[test]
fn the_next_run_removes_what_a_killed_run_left() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("one.yaml"),
        "stages:\n  one:\n    cmd: echo 1 > ${out}/one.txt\n    outs: [\"${out}/one.txt\"]\n",
    )
    .unwrap();
    let run = d.join("runs/one/default");
    std::fs::create_dir_all(run.join("sub")).unwrap();
    for f in [
        ".mat.lock.tmp",
        "sub/.model.safetensors.abc123.tmp",
        "sub/.figure2.tmp.png",
    ] {
        std::fs::write(run.join(f), "half").unwrap();
    }
    std::fs::write(run.join("sub/keep.txt"), "mine").unwrap();
    let o = mat_in(d, &["repro", "one.yaml", "--profile", "default"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("removed 3 temporary file(s)"),
        "{}",
        text(&o)
    );
    assert!(run.join("sub/keep.txt").exists());
    assert!(!run.join("sub/.figure2.tmp.png").exists());
}

/// Regression: `mat-report table2 --runs /no/such/dir` exited 0.
#[test]
fn a_report_of_a_missing_run_folder_fails() {
    let report = Path::new(env!("CARGO_BIN_EXE_mat")).with_file_name("mat-report");
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(&report)
        .args(["table2", "--runs", "/no/such/dir", "--out"])
        .arg(dir.path().join("t"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("--runs /no/such/dir: no such folder"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // Regression: an output that cannot be written names its path.
    std::fs::create_dir_all(dir.path().join("runs")).unwrap();
    std::fs::write(dir.path().join("file"), "x").unwrap();
    for out in [
        dir.path().join("file/t"),
        Path::new("/proc/mat-report/t").to_path_buf(),
    ] {
        let o = Command::new(&report)
            .args(["table2", "--runs"])
            .arg(dir.path().join("runs"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(
            text(&o).contains(out.parent().unwrap().to_str().unwrap()),
            "the path is not named: {}",
            text(&o)
        );
    }
}
