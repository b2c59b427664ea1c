//! End to end: `mat repro pipelines/table2.yaml --profile smoke` runs every
//! stage program (centers, train, attack, report) on a few hundred MNIST
//! digits in a scratch folder; the report holds a cell for every method,
//! "ours (paper)"; a second run skips every stage.

mod common;

use std::path::Path;
use std::process::Command;

use common::copy_dir;

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
    assert!(log.contains("44 of 44 stages ran"), "{log}");
    let md = std::fs::read_to_string(dir.path().join("runs/table2/smoke/table2.md")).unwrap();
    // The measured MNIST cells, "ours (paper)", with AutoAttack and the
    // audit's verdict beside PGD; then the paper's CIFAR-10 numbers in a
    // table of their own (this profile runs no CIFAR-10).
    let t = tables(&md);
    assert_eq!(t.len(), 2, "{md}");
    assert_eq!(t[0].len(), 7, "{md}");
    for row in &t[0] {
        assert_eq!(row.len(), 7, "{row:?}");
        let (aa, verdict) = (&row[3], &row[4]);
        let aa_pct = aa.split(" [PGD ").next().unwrap();
        assert!(
            aa_pct.parse::<f64>().is_ok() && aa.ends_with(", n=10]"),
            "AutoAttack cell `{aa}` in {row:?}"
        );
        assert!(
            verdict == "ok" || verdict.starts_with("suspect: "),
            "audit cell `{verdict}` in {row:?}"
        );
        for c in [&row[1], &row[2], &row[5], &row[6]] {
            let (ours, paper) = c
                .split_once(" (")
                .unwrap_or_else(|| panic!("`{c}` is not `ours (paper)`"));
            assert!(
                paper.ends_with(')') && paper.trim_end_matches(')').parse::<f64>().is_ok(),
                "{c}"
            );
            assert!(
                ours == "none found" || ours.parse::<f64>().is_ok(),
                "MNIST cell `{c}` in {row:?}"
            );
        }
    }
    paper_only(&t[1], 7, &md);
    assert!(md.contains("Settings:"), "{md}");
    let log = repro();
    assert!(log.contains("0 of 44 stages ran"), "{log}");

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
        let t = tables(&md);
        assert_eq!(t.len(), 2, "{md}");
        assert_eq!(t[0].len(), rows, "{md}");
        for row in &t[0] {
            assert_eq!(row.len(), 3, "{table}: {row:?}");
            for c in &row[1..] {
                let ours = c.split(" (").next().unwrap();
                let number = ours.split('±').next().unwrap();
                assert!(number.parse::<f64>().is_ok(), "{table}: `{c}`");
            }
        }
        paper_only(&t[1], rows, &md);
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
    // tables 3 and 4 and the robustness report appear.
    let log = mat_in_dir(&["repro", "pipelines/all.yaml", "--profile", "smoke"]);
    assert_eq!(
        log.matches("stages ran or were restored").count(),
        8,
        "{log}"
    );
    // robustness.yaml reuses Table 2's AutoAttack runs and audits; it adds
    // AutoAttack at the figure's other budgets.
    let robustness = log
        .split("pipelines/robustness.yaml: ")
        .nth(1)
        .expect("robustness in the suite's log");
    for stage in [
        "train@mat-full",
        "autoattack@mat-full",
        "audit@mat-full",
        "pgd@at",
    ] {
        assert!(
            robustness.contains(&format!("  {stage}: restored from the run cache")),
            "{stage}: {robustness}"
        );
    }
    assert!(
        robustness.contains("  autoattack-curve@at: ran"),
        "{robustness}"
    );
    let md =
        std::fs::read_to_string(dir.path().join("runs/robustness/smoke/robustness.md")).unwrap();
    let t = tables(&md);
    assert_eq!((t.len(), t[0].len()), (1, 7), "{md}");
    for row in &t[0] {
        // model | n | clean | PGD-40 | same points | 4 members | worst case
        // | verdict; v: clean, PGD-40, same points, the members in turn,
        // the worst case.
        assert_eq!(row.len(), 11, "{row:?}");
        let v: Vec<f64> = row[2..10].iter().map(|c| c.parse().unwrap()).collect();
        // Each member can only lower the robust accuracy; AutoAttack is
        // never above clean.
        assert!(
            v[3] <= v[0] && v[3] >= v[4] && v[4] >= v[5] && v[5] >= v[6] && v[7] <= v[6].min(v[2]),
            "{row:?}"
        );
        assert!(
            row[10] == "ok" || row[10].starts_with("suspect: "),
            "{row:?}"
        );
    }
    let csv = std::fs::read_to_string(dir.path().join("runs/robustness/smoke/robustness-eps.csv"))
        .unwrap();
    for model in ["AT PGD-40,0.3,", "AT AutoAttack,0.1,", "AT AutoAttack,0.3,"] {
        assert!(csv.contains(model), "{model}: {csv}");
    }
    // Table 3 takes Table 2's natural, AT and MAT models from the run
    // cache; only MMC is trained.
    let table3 = log
        .split("pipelines/table3.yaml: ")
        .nth(1)
        .and_then(|rest| rest.split("pipelines/table4.yaml: ").next())
        .expect("table3 in the suite's log");
    for model in ["natural", "at", "mat-full"] {
        assert!(
            table3.contains(&format!("  train@{model}: restored from the run cache")),
            "{model}: {table3}"
        );
    }
    assert!(table3.contains("  train@mmc: ran"), "{table3}");
    let md = std::fs::read_to_string(dir.path().join("runs/table4/smoke/table4.md")).unwrap();
    let t = tables(&md);
    assert_eq!((t.len(), t[0].len()), (2, 5), "{md}");
    paper_only(&t[1], 5, &md);

    // Table 3 on the smoke profile: every MNIST cell measured (natural, AT,
    // MMC, MAT; clean and eight PGD cells), then the paper's CIFAR-10
    // numbers on their own.
    let md = std::fs::read_to_string(dir.path().join("runs/table3/smoke/table3.md")).unwrap();
    let (mnist, cifar) = md.split_once("## CIFAR-10").expect("a CIFAR-10 block");
    assert!(mnist.contains("## MNIST"), "{md}");
    let rows = |block: &str| -> Vec<Vec<String>> {
        block
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| method"))
            .map(|l| {
                l.trim_matches('|')
                    .split('|')
                    .map(|c| c.trim().to_string())
                    .collect()
            })
            .collect()
    };
    let mnist_rows = rows(mnist);
    assert_eq!(
        mnist_rows.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
        ["Natural", "AT", "MMC", "MAT"],
        "{md}"
    );
    for r in &mnist_rows {
        assert_eq!(r.len(), 10, "{r:?}");
        for c in &r[1..] {
            let v: f64 = c
                .parse()
                .unwrap_or_else(|_| panic!("MNIST cell `{c}` in {r:?}"));
            assert!((0.0..=100.0).contains(&v), "{r:?}");
        }
    }
    let cifar_rows = rows(cifar);
    assert_eq!(cifar_rows.len(), 4, "{md}");
    assert_eq!(
        cifar_rows[2][1], "81.8",
        "MMC's clean CIFAR-10 accuracy in the paper"
    );
    assert!(!md.contains("not run in this profile ("), "{md}");
    let log = mat_in_dir(&["status", "pipelines/table3.yaml", "--profile", "smoke"]);
    assert!(!log.contains("would run"), "{log}");
}

/// The body rows of every Markdown table of `md`, as cells.
fn tables(md: &str) -> Vec<Vec<Vec<String>>> {
    let mut out: Vec<Vec<Vec<String>>> = Vec::new();
    let mut inside = false;
    for l in md.lines() {
        if !l.starts_with('|') {
            inside = false;
            continue;
        }
        if !inside {
            // A header line opens a table; the separator follows.
            out.push(Vec::new());
            inside = true;
            continue;
        }
        if l.starts_with("|---") {
            continue;
        }
        let cells = l.trim_matches('|').split('|').map(|c| c.trim().to_string());
        out.last_mut().unwrap().push(cells.collect());
    }
    out
}

/// A table of the paper's numbers alone: `rows` rows of plain numbers
/// (`<=1`, or `mean±std`), and no cell that says it was not run.
fn paper_only(t: &[Vec<String>], rows: usize, md: &str) {
    assert_eq!(t.len(), rows, "{md}");
    for row in t {
        for c in &row[1..] {
            let number = c.trim_start_matches("<=").split('±').next().unwrap();
            assert!(number.parse::<f64>().is_ok(), "paper cell `{c}` in {md}");
        }
    }
    assert!(!md.contains("not run in this profile ("), "{md}");
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
