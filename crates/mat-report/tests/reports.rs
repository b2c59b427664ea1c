//! Reports from hand-made stage outputs: Table 2's cells, the AutoAttack
//! and audit cells beside PGD, and the figures' files.

use std::path::Path;

use mat_core::artifact::{write_table, Columns, Metadata};

fn summary(path: &Path, eps: &[f64], clean: f64, robust: &[f64], mean_l2: f64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let n = eps.len();
    let mut meta = Metadata::new();
    meta.insert(
        "config".into(),
        "{model: m.safetensors, data: mnist-10k, attack: pgd, eps: [0.3], steps: 40, step_size: 0.01, limit: 100}".into(),
    );
    write_table(
        path,
        Columns::new()
            .f64("eps", eps.to_vec())
            .f64("clean_accuracy", vec![clean; n])
            .f64("robust_accuracy", robust.to_vec())
            .f64("mean_l2", vec![mean_l2; n]),
        meta,
    )
    .unwrap();
}

#[test]
fn table2_cells_read_the_summaries_and_name_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path();
    let m = runs.join("mnist");
    summary(
        &m.join("pgd/at/summary.parquet"),
        &[0.1, 0.3],
        0.95,
        &[0.9, 0.834],
        f64::NAN,
    );
    summary(&m.join("cw/at/summary.parquet"), &[1.0], 0.95, &[0.5], 1.5);
    summary(
        &m.join("ddn/at/summary.parquet"),
        &[1.0],
        0.95,
        &[0.5],
        f64::NAN,
    );
    let t = mat_report::table2::collect(runs, [0.3, 8.0 / 255.0]).unwrap();
    let md = t.markdown("note");
    let at = md.lines().find(|l| l.starts_with("| AT |")).unwrap();
    assert!(
        at.contains(
            "95.00 (99.30) | 83.40 (88.26) | not run | not run | 1.500 (0.755) | none found (2.545)"
        ),
        "{at}"
    );
    assert!(at.contains("not run in this profile (78.49)"), "{at}");
    // A method without runs says which file is missing, never a number.
    let natural = md.lines().find(|l| l.starts_with("| Natural |")).unwrap();
    assert!(
        natural.contains("no ") && natural.contains("pgd/natural/summary.parquet"),
        "{natural}"
    );
    assert!(
        md.contains("pgd, eps [0.3], 40 steps of 0.01, on 100 seeded test samples")
            || !md.contains("natural")
    );
    let csv = t.csv();
    assert!(csv.contains("AT,mnist,pgd_accuracy,83.4"), "{csv}");
}

#[test]
fn figure2_writes_svg_png_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path();
    for (key, acc) in [("at", [0.95, 0.9, 0.8]), ("mat-full", [0.93, 0.85, 0.7])] {
        summary(
            &runs.join(format!("mnist/pgd-curve/{key}/summary.parquet")),
            &[0.1, 0.2, 0.3],
            0.95,
            &acc,
            f64::NAN,
        );
    }
    let stem = runs.join("out/figure2");
    mat_report::figures::figure2(runs, &stem, "Figure 2 test").unwrap();
    let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
    for text in [
        "Figure 2 test",
        "robust accuracy (%)",
        "AT",
        "MAT SO O BIBO O",
    ] {
        assert!(svg.contains(text), "svg lacks `{text}`");
    }
    let png = std::fs::read(stem.with_extension("png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let csv = std::fs::read_to_string(stem.with_extension("csv")).unwrap();
    assert_eq!(csv.lines().count(), 7, "{csv}");
    assert!(csv.contains("AT,0.3,80"), "{csv}");
}

/// `adv.parquet` rows (index, label, clean prediction, adversarial
/// prediction, broken_by) at eps 0.3, as mat-attack writes them.
fn adv(path: &Path, rows: &[(u32, u32, u32, u32, &str)], with_broken_by: bool) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let n = rows.len();
    let cols = Columns::new()
        .u32("index", rows.iter().map(|r| r.0).collect())
        .f64("eps", vec![0.3; n])
        .u32("label", rows.iter().map(|r| r.1).collect())
        .u32("clean_prediction", rows.iter().map(|r| r.2).collect())
        .u32("adversarial_prediction", rows.iter().map(|r| r.3).collect());
    let cols = if with_broken_by {
        cols.string("broken_by", rows.iter().map(|r| r.4.to_string()).collect())
    } else {
        cols
    };
    write_table(path, cols, Metadata::new()).unwrap();
}

#[test]
fn autoattack_members_are_cumulative_and_pgd_is_read_on_the_same_points() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("mnist");
    // PGD on test points 7, 3, 9, 1, 5 (a seeded sample); AutoAttack on its
    // first four. PGD leaves 7 and 1 robust (9 is misclassified clean), so
    // 2 of the 4 shared points: 50%.
    adv(
        &m.join("pgd/mat-full/adv.parquet"),
        &[
            (7, 1, 1, 1, ""),
            (3, 2, 2, 0, ""),
            (9, 4, 0, 0, ""),
            (1, 5, 5, 5, ""),
            (5, 6, 6, 0, ""),
        ],
        false,
    );
    summary(
        &m.join("pgd/mat-full/summary.parquet"),
        &[0.3],
        0.8,
        &[0.6],
        f64::NAN,
    );
    // AutoAttack: 9 misclassified clean, 7 broken by APGD-T, 3 and 1
    // robust: 75% clean, 75 after APGD-CE, 50 after each later member. The
    // worst case of the two attacks leaves 1 alone: 25%.
    adv(
        &m.join("autoattack/mat-full/adv.parquet"),
        &[
            (7, 1, 1, 0, "apgd-t"),
            (3, 2, 2, 2, ""),
            (9, 4, 0, 0, "clean"),
            (1, 5, 5, 5, ""),
        ],
        true,
    );
    mat_core::audit::write(
        &m.join("audit/mat-full"),
        &[mat_core::audit::Check {
            name: "zero_gradient_ce",
            value: 0.7,
            reference: f64::NAN,
            threshold: 0.05,
            pass: false,
            detail: String::new(),
        }],
        Metadata::new(),
    )
    .unwrap();
    let r = mat_report::robustness::autoattack_at(
        &m.join("autoattack/mat-full"),
        &m.join("pgd/mat-full"),
        0.3,
    )
    .unwrap()
    .unwrap();
    assert_eq!(r.points, 4);
    assert_eq!(r.clean, 0.75);
    assert_eq!(r.after_member, [0.75, 0.5, 0.5, 0.5]);
    assert_eq!(r.pgd_same_points, Some(0.5));
    assert_eq!(r.worst_case, Some(0.25));

    let (md, csv) = mat_report::robustness::table(dir.path(), "mnist", 0.3, "note").unwrap();
    let row = md
        .lines()
        .find(|l| l.starts_with("| MAT SO O BIBO O |"))
        .unwrap();
    assert_eq!(
        row,
        "| MAT SO O BIBO O | 4 | 75.00 | 60.00 | 50.00 | 75.00 | 50.00 | 50.00 | 50.00 | 25.00 | suspect: zero_gradient_ce |"
    );
    assert!(
        csv.contains("MAT SO O BIBO O,4,75,60,50,75,50,50,50,25,\"suspect: zero_gradient_ce\""),
        "{csv}"
    );
    // Models with neither AutoAttack nor an audit are not rows.
    assert!(!md.contains("| AT |"), "{md}");
    let beside = mat_report::robustness::beside_pgd(dir.path(), "mnist", "mat-full", 0.3).unwrap();
    assert_eq!(
        beside,
        [
            "50.00 [PGD 50.00, n=4]".to_string(),
            "suspect: zero_gradient_ce".into()
        ]
    );

    // A `broken_by` that names no member is refused, naming the file.
    adv(
        &m.join("autoattack/at/adv.parquet"),
        &[(7, 1, 1, 0, "pgd")],
        true,
    );
    let e = mat_report::robustness::table(dir.path(), "mnist", 0.3, "")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("autoattack/at/adv.parquet") && e.contains("`broken_by` is `pgd`"),
        "{e}"
    );
}

#[test]
fn robustness_figure_draws_pgd_and_autoattack_per_model() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("mnist");
    summary(
        &m.join("pgd-curve/at/summary.parquet"),
        &[0.1, 0.2, 0.3],
        0.95,
        &[0.9, 0.85, 0.8],
        f64::NAN,
    );
    summary(
        &m.join("autoattack/at/summary.parquet"),
        &[0.3],
        0.95,
        &[0.7],
        f64::NAN,
    );
    summary(
        &m.join("autoattack-curve/at/summary.parquet"),
        &[0.1, 0.2],
        0.95,
        &[0.88, 0.8],
        f64::NAN,
    );
    let stem = dir.path().join("out/robustness-eps");
    mat_report::figures::robustness(dir.path(), "mnist", &stem, "Robustness test").unwrap();
    let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
    for text in ["Robustness test", "AT PGD-40", "AT AutoAttack"] {
        assert!(svg.contains(text), "svg lacks `{text}`");
    }
    let csv = std::fs::read_to_string(stem.with_extension("csv")).unwrap();
    // Three PGD points and AutoAttack's three, in eps order.
    assert!(
        csv.contains("AT AutoAttack,0.1,88\nAT AutoAttack,0.2,80\nAT AutoAttack,0.3,70\n"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 7, "{csv}");
}
