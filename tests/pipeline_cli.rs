//! `mat repro`, `mat status`, `mat dag` and `mat gc` on a toy pipeline of
//! shell commands, run in a scratch folder.

use std::process::{Command, Output};

fn mat(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mat"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run mat")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

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
    let o = mat(d, &["repro", "toy.yaml"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("times: ran (not in the lock file)"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(d.join("runs/toy/quick/show.txt"))
            .unwrap()
            .trim(),
        "15"
    );
    let o = mat(d, &["repro", "toy.yaml"]);
    assert!(
        text(&o).contains("times: up to date, skipped"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("0 of 2 stages ran"), "{}", text(&o));

    let o = mat(d, &["dag", "toy.yaml"]);
    assert!(text(&o).contains("show <- times"), "{}", text(&o));

    std::fs::write(d.join("in.txt"), "4").unwrap();
    let o = mat(d, &["status", "toy.yaml"]);
    assert!(
        text(&o).contains("times: would run: in.txt changed"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("show: would run: upstream stage `times` runs first"));

    // Two cache entries per run; after the rerun the first two are stale.
    let o = mat(d, &["repro", "toy.yaml"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = mat(d, &["gc"]);
    assert!(
        text(&o).contains("removed 2 run-cache entries, kept 2"),
        "{}",
        text(&o)
    );

    let o = mat(d, &["repro", "toy.yaml", "--profile", "paper"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("profile `paper` is not defined"),
        "{}",
        text(&o)
    );
}
