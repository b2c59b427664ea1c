//! Reports from hand-made stage outputs: Table 2's cells and Figure 2's
//! files.

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
        at.contains("95.00 (99.30) | 83.40 (88.26) | 1.500 (0.755) | none found (2.545)"),
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
