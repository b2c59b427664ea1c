//! `mat-cluster` as a program: a random-feature MAT SmallCNN attacked on
//! real MNIST digits by `mat-attack`, then clustered; the tables it writes,
//! determinism, and its refusals.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Device;
use mat_core::artifact::{Metadata, Table};
use mat_core::attacks::spec::AttackSpec;
use mat_core::centers::Centers;
use mat_core::data::{self, DataDir};
use mat_core::models::{Arch, Classifier, Head};
use mat_core::nn::ParamStore;

fn data_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn program(exe: &str, dir: &Path, args: &[&str]) -> Output {
    Command::new(exe)
        .args(args)
        .arg("--quiet")
        .env("MAT_DATA_DIR", data_root())
        .env("MAT_CACHE_DIR", dir.join("cache"))
        .output()
        .expect("run the stage")
}

/// A random-feature MAT SmallCNN and its PGD examples on 60 test digits,
/// written by the attack library (as `mat-attack` would).
fn setup(dir: &Path) -> (String, String) {
    let store = ParamStore::new(7);
    let head = Head::Centers(Centers::new(10, 10, 10.0).unwrap().centers);
    let m = Classifier::build(
        "small-cnn".parse::<Arch>().unwrap(),
        head,
        10,
        7,
        store.var_builder(&Device::Cpu),
    )
    .unwrap();
    let model = dir.join("model.safetensors");
    let mut meta: Metadata = m.metadata();
    meta.insert("method".into(), "mat".into());
    m.save(&model, &store, &meta, 0).unwrap();

    let spec: AttackSpec = serde_yaml::from_str(&format!(
        "{{model: {}, data: mnist-10k, attack: pgd, eps: [0.1, 0.3], steps: 3, limit: 60}}",
        model.display()
    ))
    .unwrap();
    let ds = data::load(&DataDir::new(data_root(), dir.join("cache")), "mnist-10k").unwrap();
    let indices = ds.test.subset_indices(Some(60), Some(0));
    let split = ds.test.subset(Some(60), Some(0)).unwrap();
    let mut meta = Metadata::new();
    meta.insert("data".into(), "mnist-10k".into());
    meta.insert("split".into(), "test".into());
    meta.insert("attack".into(), "pgd".into());
    let adv_dir = dir.join("attack");
    std::fs::create_dir_all(&adv_dir).unwrap();
    mat_core::attacks::run::run(
        &spec,
        &m,
        None,
        &split,
        &indices,
        &adv_dir,
        meta,
        &mut |_| {},
    )
    .unwrap();
    (
        model.display().to_string(),
        adv_dir.join("adv.parquet").display().to_string(),
    )
}

#[test]
fn clusters_features_and_tsne_from_an_attack() {
    let dir = tempfile::tempdir().unwrap();
    let (model, adv) = setup(dir.path());
    let exe = env!("CARGO_BIN_EXE_mat-cluster");
    let run = |out: &Path| {
        let o = program(
            exe,
            dir.path(),
            &[
                "--model",
                &model,
                "--adv",
                &adv,
                "--out",
                out.to_str().unwrap(),
                "--tsne-points",
                "30",
                "--tsne-iterations",
                "200",
                "--clusters",
                "4",
            ],
        );
        assert!(o.status.success(), "mat-cluster: {}", stderr(&o));
        stderr(&o)
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let log = run(&a);
    assert!(log.contains("match rate"), "{log}");
    run(&b);

    let f = Table::read(&a.join("features.parquet")).unwrap();
    // 60 clean rows and 60 per budget.
    assert_eq!(f.num_rows(), 180);
    let kinds = f.strings("kind").unwrap();
    assert_eq!(kinds.iter().filter(|k| *k == "clean").count(), 60);
    assert_eq!(f.shape_of("feature"), Some(vec![10]));
    // The cosine to the predicted center is that center's entry.
    let cos = f.f32_list("cos_centers", 10).unwrap();
    let pred = f.u32s("prediction").unwrap();
    let cp = f.f32s("cos_predicted").unwrap();
    for i in 0..180 {
        assert!((cos[i * 10 + pred[i] as usize] - cp[i]).abs() < 1e-6);
    }

    let c = Table::read(&a.join("clusters.parquet")).unwrap();
    assert_eq!(c.num_rows(), 180);
    assert_eq!(c.meta("clusters").unwrap(), "4");
    let nearest = c.u32s("nearest_cluster").unwrap();
    assert!(nearest.iter().all(|&k| k < 4));
    let cluster = c.i64s("cluster").unwrap();
    // Fit on clean features: only clean rows carry a Ward cluster.
    for (k, cl) in kinds.iter().zip(&cluster) {
        assert_eq!(k == "clean", *cl >= 0, "{k} {cl}");
    }
    let s = Table::read(&a.join("cluster_summary.parquet")).unwrap();
    assert_eq!(s.num_rows(), 3);
    let matches = c.bools("match").unwrap();
    let by_hand = matches[..60].iter().filter(|m| **m).count() as f64 / 60.0;
    assert!((s.f64s("match_rate").unwrap()[0] - by_hand).abs() < 1e-12);

    let t = Table::read(&a.join("tsne.parquet")).unwrap();
    assert_eq!(
        t.num_rows(),
        90,
        "30 clean points and their 2 adversarial versions"
    );
    // Same seed, same map and clusters.
    let t2 = Table::read(&b.join("tsne.parquet")).unwrap();
    assert_eq!(t.f64s("x").unwrap(), t2.f64s("x").unwrap());
    let c2 = Table::read(&b.join("clusters.parquet")).unwrap();
    assert_eq!(nearest, c2.u32s("nearest_cluster").unwrap());
}

#[test]
fn bad_input_is_refused_before_work() {
    let dir = tempfile::tempdir().unwrap();
    let (model, adv) = setup(dir.path());
    let exe = env!("CARGO_BIN_EXE_mat-cluster");
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--model",
                &model,
                "--adv",
                &adv,
                "--out",
                o,
                "--fit-points",
                "10000000",
            ],
            "fit_points: Ward on 10000000 points needs 399999.96 GB",
        ),
        (
            vec![
                "--model",
                &model,
                "--adv",
                &adv,
                "--out",
                o,
                "--clusters",
                "0",
            ],
            "--clusters: expected at least 1",
        ),
        (
            vec!["--model", &model, "--adv", "missing.parquet", "--out", o],
            "missing.parquet",
        ),
        (
            vec!["--model", &adv, "--adv", &adv, "--out", o],
            "adv.parquet",
        ),
    ];
    for (args, want) in cases {
        let r = program(exe, dir.path(), &args);
        assert_eq!(r.status.code(), Some(1), "{args:?}: {}", stderr(&r));
        assert!(
            stderr(&r).contains(want),
            "expected `{want}` in:\n{}",
            stderr(&r)
        );
        assert!(!out.join("features.parquet").exists());
    }
}
