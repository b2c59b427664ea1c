//! End to end: `mat repro pipelines/table2.yaml --profile smoke` runs every
//! stage program (centers, train, attack, report) on a few hundred MNIST
//! digits in a scratch folder; the report holds a cell for every method,
//! "ours (paper)"; a second run skips every stage.

use std::path::Path;
use std::process::Command;

fn copy_dir(from: &Path, to: &Path) {
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

#[test]
fn table2_smoke_profile_runs_every_stage_and_then_skips() {
    let mat = Path::new(env!("CARGO_BIN_EXE_mat"));
    for stage in ["mat-centers", "mat-train", "mat-attack", "mat-report"] {
        assert!(
            mat.with_file_name(stage).exists(),
            "{stage} is not built beside {} (build the workspace: cargo test --workspace)",
            mat.display()
        );
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root.join("pipelines"), &dir.path().join("pipelines"));
    let repro = || {
        let o = Command::new(mat)
            .args([
                "repro",
                "pipelines/table2.yaml",
                "--profile",
                "smoke",
                "--jobs",
                "2",
            ])
            .current_dir(dir.path())
            .env("MAT_DATA_DIR", root.join("data"))
            .env("MAT_CACHE_DIR", dir.path().join("cache"))
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{log}");
        log
    };
    let log = repro();
    assert!(log.contains("30 of 30 stages ran"), "{log}");
    let md = std::fs::read_to_string(dir.path().join("runs/table2/smoke/table2.md")).unwrap();
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| {
            l.starts_with("| MAT")
                || l.starts_with("| Natural")
                || l.starts_with("| AT")
                || l.starts_with("| TRADES")
        })
        .collect();
    assert_eq!(rows.len(), 7, "{md}");
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 9, "{row}");
        for c in &cells[1..5] {
            assert!(
                c.starts_with("not run in this profile ("),
                "CIFAR-10 cell `{c}` in {row}"
            );
        }
        for c in &cells[5..] {
            let (ours, paper) = c
                .split_once(" (")
                .unwrap_or_else(|| panic!("`{c}` is not `ours (paper)`"));
            assert!(
                paper.ends_with(')') && paper.trim_end_matches(')').parse::<f64>().is_ok(),
                "{c}"
            );
            assert!(
                ours == "none found" || ours.parse::<f64>().is_ok(),
                "MNIST cell `{c}` in {row}"
            );
        }
    }
    assert!(md.contains("Settings:"), "{md}");
    let log = repro();
    assert!(log.contains("0 of 30 stages ran"), "{log}");
}
