//! `mat repro`, `mat status`, `mat dag` and `mat gc` on a toy pipeline of
//! shell commands, run in a scratch folder.

mod common;

use std::process::{Command, Output};

use common::{mat_in, text};

#[test]
fn repro_runs_then_skips_and_gc_keeps_what_locks_use() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("in.txt"), "3").unwrap();
    std::fs::write(
        d.join("toy.yaml"),
        r#"
params: {k: 2}
profiles:
  quick: {params: {k: 5}}
stages:
  times:
    cmd: echo $(( $(cat in.txt) * ${params.k} )) > ${out}/times.txt
    deps: [in.txt]
    params: [k]
    outs: ["${out}/times.txt"]
  show:
    cmd: cat ${out}/times.txt > ${out}/show.txt
    deps: ["${out}/times.txt"]
    outs: ["${out}/show.txt"]
"#,
    )
    .unwrap();
    let o = mat_in(d, &["repro", "toy.yaml"]);
    assert!(o.status.success(), "{}", text(&o));
    // A stage that ran is reported with its wall time.
    let line = text(&o)
        .lines()
        .find(|l| l.contains("times: ran (not in the lock file)"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{}", text(&o)));
    let secs = line.rsplit(", ").next().unwrap();
    assert!(
        secs.ends_with(" s") && secs.trim_end_matches(" s").parse::<f64>().is_ok(),
        "{line}"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("runs/toy/quick/show.txt"))
            .unwrap()
            .trim(),
        "15"
    );
    let o = mat_in(d, &["repro", "toy.yaml"]);
    assert!(
        text(&o).contains("times: up to date, skipped"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("0 of 2 stages ran"), "{}", text(&o));

    let o = mat_in(d, &["dag", "toy.yaml"]);
    assert!(text(&o).contains("show <- times"), "{}", text(&o));

    std::fs::write(d.join("in.txt"), "4").unwrap();
    let o = mat_in(d, &["status", "toy.yaml"]);
    assert!(
        text(&o).contains("times: would run: in.txt changed"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("show: would run: upstream stage `times` runs first"));

    // Two cache entries per run; after the rerun the first two are stale.
    let o = mat_in(d, &["repro", "toy.yaml"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = mat_in(d, &["gc"]);
    assert!(
        text(&o).contains("removed 2 run-cache entries, kept 2"),
        "{}",
        text(&o)
    );

    let o = mat_in(d, &["repro", "toy.yaml", "--profile", "paper"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("profile `paper` is not defined"),
        "{}",
        text(&o)
    );
}

/// Runs `mat repro FILE` in `d`, waits until its stage has written
/// `pid.txt` (its shell's pid), sends SIGTERM to the runner alone, and
/// returns the runner's output, the stage shell's pid and the seconds from
/// the signal to the runner's exit.
fn repro_then_sigterm(d: &std::path::Path, file: &str) -> (Output, String, f64) {
    let child = Command::new(env!("CARGO_BIN_EXE_mat"))
        .args(["repro", file])
        .current_dir(d)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !d.join("pid.txt").exists() {
        assert!(start.elapsed().as_secs() < 30, "the stage never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = std::fs::read_to_string(d.join("pid.txt")).unwrap();
    let sent = std::time::Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    (out, pid.trim().to_string(), sent.elapsed().as_secs_f64())
}

/// SIGTERM to `mat repro` alone (not its process group): the stage running
/// gets it too, its half-written output is removed, nothing of it is in the
/// lock file, the stage after it never starts, and the runner exits non-zero.
#[test]
fn a_signal_stops_the_running_stage_and_leaves_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("stop.yaml"),
        r#"
profiles:
  quick: {params: {}}
stages:
  first:
    cmd: echo done > ${out}/first.txt
    outs: ["${out}/first.txt"]
  slow:
    cmd: echo half > ${out}/slow.txt && echo $$ > pid.txt && sleep 60 && echo rest >> ${out}/slow.txt
    deps: ["${out}/first.txt"]
    outs: ["${out}/slow.txt"]
  after:
    cmd: cp ${out}/slow.txt ${out}/after.txt
    deps: ["${out}/slow.txt"]
    outs: ["${out}/after.txt"]
"#,
    )
    .unwrap();
    let (out, pid, waited) = repro_then_sigterm(d, "stop.yaml");
    let msg = text(&out);
    assert!(!out.status.success(), "{msg}");
    assert!(waited < 5.0, "the runner took {waited:.1} s to stop");
    assert!(msg.contains("stopped by SIGTERM"), "{msg}");
    let run = d.join("runs/stop/quick");
    assert!(run.join("first.txt").exists());
    assert!(!run.join("slow.txt").exists(), "half-written output left");
    assert!(!run.join("after.txt").exists());
    let lock = std::fs::read_to_string(run.join("mat.lock")).unwrap();
    assert!(lock.contains("first"), "{lock}");
    assert!(!lock.contains("slow"), "{lock}");
    // The stage's shell is gone, not orphaned.
    let alive = std::path::Path::new("/proc").join(&pid).exists();
    assert!(!alive, "stage process {pid} still running");
}

/// A stage that ignores the signal the runner passes on is killed after the
/// grace period; the runner still exits non-zero and records nothing of it.
#[test]
fn a_stage_ignoring_the_signal_is_killed_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("stubborn.yaml"),
        r#"
profiles:
  quick: {params: {}}
stages:
  stubborn:
    cmd: trap '' TERM; echo half > ${out}/s.txt; echo $$ > pid.txt; sleep 120; echo rest >> ${out}/s.txt
    outs: ["${out}/s.txt"]
"#,
    )
    .unwrap();
    let (out, pid, waited) = repro_then_sigterm(d, "stubborn.yaml");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        (9.0..40.0).contains(&waited),
        "exited {waited:.1} s after the signal"
    );
    assert!(!d.join("runs/stubborn/quick/s.txt").exists());
    assert!(!std::path::Path::new("/proc").join(&pid).exists());
}

/// `--jobs 2` locally: two stages that start together share the cores
/// (RAYON_NUM_THREADS = cores / 2, at least 1), a stage that starts alone
/// gets them all, and a RAYON_NUM_THREADS the user set is left alone.
#[test]
fn parallel_stages_share_the_cores() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("par.yaml"),
        r#"
profiles: {quick: {}}
stages:
  a:
    cmd: echo $RAYON_NUM_THREADS > ${out}/a.txt
    outs: ["${out}/a.txt"]
  b:
    cmd: echo $RAYON_NUM_THREADS > ${out}/b.txt
    outs: ["${out}/b.txt"]
  c:
    cmd: echo $RAYON_NUM_THREADS > ${out}/c.txt
    deps: ["${out}/a.txt", "${out}/b.txt"]
    outs: ["${out}/c.txt"]
"#,
    )
    .unwrap();
    let threads = |name: &str| {
        std::fs::read_to_string(d.join("runs/par/quick").join(name))
            .unwrap()
            .trim()
            .to_string()
    };
    let cores = std::thread::available_parallelism().unwrap().get();
    let run = |env: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mat"));
        c.args([
            "repro",
            "par.yaml",
            "--jobs",
            "2",
            "--no-cache",
            "--force",
            "a",
        ])
        .args(["--force", "b", "--force", "c"])
        .current_dir(d)
        .env_remove("RAYON_NUM_THREADS");
        if let Some(v) = env {
            c.env("RAYON_NUM_THREADS", v);
        }
        let o = c.output().expect("run mat");
        assert!(o.status.success(), "{}", text(&o));
        o
    };
    let o = run(None);
    assert!(
        text(&o).contains(&format!("up to 2 stages at once, sharing {cores} cores")),
        "{}",
        text(&o)
    );
    let half = (cores / 2).max(1).to_string();
    assert_eq!((threads("a.txt"), threads("b.txt")), (half.clone(), half));
    assert_eq!(threads("c.txt"), cores.to_string());

    run(Some("3"));
    for f in ["a.txt", "b.txt", "c.txt"] {
        assert_eq!(threads(f), "3", "{f}");
    }
}

/// `--jobs 0` would run nothing: it is refused.
#[test]
fn zero_jobs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), "stages: {}\n").unwrap();
    let o = mat_in(dir.path(), &["repro", "p.yaml", "--jobs", "0"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--jobs"), "{}", text(&o));
}
