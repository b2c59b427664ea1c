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
    // `mat ARGS` in the scratch folder: its log, after checking it succeeded.
    let mat_in_dir = |args: &[&str]| {
        let o = Command::new(mat)
            .args(args)
            .current_dir(dir.path())
            .env("MAT_DATA_DIR", root.join("data"))
            .env("MAT_CACHE_DIR", dir.path().join("cache"))
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "mat {args:?}: {log}");
        log
    };
    let repro = || {
        mat_in_dir(&[
            "repro",
            "pipelines/table2.yaml",
            "--profile",
            "smoke",
            "--jobs",
            "2",
        ])
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

    // Changing MAT's beta reruns the MAT models and what reads them, only.
    let mat_yaml = dir.path().join("pipelines/train/mnist/mat.yaml");
    let text = std::fs::read_to_string(&mat_yaml).unwrap();
    std::fs::write(&mat_yaml, text.replace("beta: 2.0", "beta: 1.0")).unwrap();
    let status = mat_in_dir(&["status", "pipelines/table2.yaml", "--profile", "smoke"]);
    for up in [
        "train@natural",
        "train@at",
        "train@trades",
        "pgd@at",
        "centers",
    ] {
        assert!(
            status.contains(&format!("  {up}: up to date")),
            "{up}: {status}"
        );
    }
    for runs in ["train@mat-full", "train@mat-ftc", "pgd@mat-full", "report"] {
        assert!(
            status.contains(&format!("  {runs}: would run")),
            "{runs}: {status}"
        );
    }
    std::fs::write(&mat_yaml, text).unwrap();

    // Tables 1 and 5 reuse table2's models and attacks through the run
    // cache: only their clustering and report stages run.
    for (table, rows) in [("table1", 3), ("table5", 4)] {
        let file = format!("pipelines/{table}.yaml");
        let log = mat_in_dir(&["repro", &file, "--profile", "smoke"]);
        for line in log
            .lines()
            .filter(|l| l.contains("train@") || l.contains("pgd@"))
        {
            assert!(
                line.contains("restored from the run cache"),
                "{table}: {line}"
            );
        }
        let md = std::fs::read_to_string(dir.path().join(format!("runs/{table}/smoke/{table}.md")))
            .unwrap();
        let body: Vec<&str> = md
            .lines()
            .filter(|l| {
                l.starts_with("| ") && !l.starts_with("| input") && !l.starts_with("| method")
            })
            .collect();
        assert_eq!(body.len(), rows, "{md}");
        for row in body {
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            for (i, c) in cells[1..].iter().enumerate() {
                let cifar = if table == "table1" { i % 2 == 1 } else { i < 2 };
                if cifar {
                    assert!(c.starts_with("not run in this profile ("), "{table}: `{c}`");
                } else {
                    let ours = c.split(" (").next().unwrap();
                    let number = ours.split('±').next().unwrap();
                    assert!(number.parse::<f64>().is_ok(), "{table}: `{c}`");
                }
            }
        }
    }

    // Figures 1 and 2: SVG and PNG with their axis labels.
    for (figure, label) in [("figure1", "t-SNE 1"), ("figure2", "robust accuracy (%)")] {
        let file = format!("pipelines/{figure}.yaml");
        let log = mat_in_dir(&["repro", &file, "--profile", "smoke"]);
        for line in log.lines().filter(|l| l.contains("train@")) {
            assert!(
                line.contains("restored from the run cache"),
                "{figure}: {line}"
            );
        }
        let out = dir.path().join(format!("runs/{figure}/smoke/{figure}"));
        let svg = std::fs::read_to_string(out.with_extension("svg")).unwrap();
        assert!(svg.contains(label), "{figure}.svg lacks `{label}`");
        let png = std::fs::read(out.with_extension("png")).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{figure}.png"
        );
    }

    // The suite runs every pipeline; what table2 made is reused, and
    // tables 3 and 4 appear.
    let log = mat_in_dir(&["repro", "pipelines/all.yaml", "--profile", "smoke"]);
    assert_eq!(
        log.matches("stages ran or were restored").count(),
        7,
        "{log}"
    );
    for (table, rows) in [("table3", 4), ("table4", 5)] {
        let md = std::fs::read_to_string(dir.path().join(format!("runs/{table}/smoke/{table}.md")))
            .unwrap();
        let body = md
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| method"))
            .count();
        assert_eq!(body, rows, "{md}");
    }
}

/// Writes a CIFAR-10 binary batch of `n` records: label `k % 10`, each
/// channel a constant that depends on the label, plus a little noise.
fn write_cifar_batch(path: &Path, n: usize, offset: usize) {
    let mut b = Vec::with_capacity(n * 3073);
    for i in 0..n {
        let k = i + offset;
        let label = k % 10;
        b.push(label as u8);
        for c in 0..3 {
            let base = (label * 23 + c * 61) % 200;
            b.extend((0..1024).map(|p| (base + (p * 7 + k) % 40) as u8));
        }
    }
    std::fs::write(path, b).unwrap();
}

/// The paper profile's CIFAR-10 stages (Table 3: ResNet and WRN training,
/// MMC with its 256-d centers, targeted and untargeted PGD at two budgets)
/// run through every stage program on generated CIFAR-10 files, with tiny
/// budgets (profile smoke-cifar10); every cell of the report is a number
/// beside the paper's.
#[test]
fn table3_cifar10_stages_run_on_generated_cifar10() {
    let mat = Path::new(env!("CARGO_BIN_EXE_mat"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root.join("pipelines"), &dir.path().join("pipelines"));
    let cache = dir.path().join("cache");
    let cifar = cache.join("cifar10");
    std::fs::create_dir_all(&cifar).unwrap();
    for (i, f) in mat_core::data::manifest::CIFAR_FILES.iter().enumerate() {
        write_cifar_batch(&cifar.join(f), 10_000, i * 10_000);
    }
    let o = Command::new(mat)
        .args([
            "repro",
            "pipelines/table3.yaml",
            "--profile",
            "smoke-cifar10",
            "--jobs",
            "2",
        ])
        .current_dir(dir.path())
        .env("MAT_DATA_DIR", root.join("data"))
        .env("MAT_CACHE_DIR", &cache)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("23 of 23 stages ran"), "{log}");
    let md =
        std::fs::read_to_string(dir.path().join("runs/table3/smoke-cifar10/table3.md")).unwrap();
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| method"))
        .collect();
    assert_eq!(rows.len(), 4, "{md}");
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 10, "{row}");
        for c in &cells[1..] {
            let ours = c.split(" (").next().unwrap();
            assert!(ours.parse::<f64>().is_ok(), "cell `{c}` in {row}");
        }
    }
}
