//! `mat-attack` as a program on the real MNIST subset: the files it writes,
//! the invariants of every row, determinism, and its refusals.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Device;
use mat_core::artifact::{Metadata, Table};
use mat_core::attacks::run::images;
use mat_core::centers::Centers;
use mat_core::models::{Arch, Classifier, Head};
use mat_core::nn::ParamStore;

fn data_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data")
}

struct Run {
    dir: tempfile::TempDir,
}

impl Run {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn attack(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mat-attack"))
            .args(args)
            .arg("--quiet")
            .env("MAT_DATA_DIR", data_root())
            .env("MAT_CACHE_DIR", self.path("cache"))
            .output()
            .expect("run mat-attack")
    }
    /// An untrained SmallCNN with a centers head: random features, so
    /// gradients are not zero and attacks move every sample.
    fn model(&self, arch: Arch) -> String {
        let store = ParamStore::new(7);
        let head = Head::Centers(Centers::new(10, 10, 10.0).unwrap().centers);
        let m = Classifier::build(arch, head, 10, 7, store.var_builder(&Device::Cpu)).unwrap();
        let path = self.path(&format!("{arch}.safetensors"));
        let mut meta: Metadata = m.metadata();
        meta.insert("method".into(), "mat".into());
        m.save(&path, &store, &meta, 0).unwrap();
        path.display().to_string()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "mat-attack failed:\n{}", stderr(o));
}

#[test]
fn pgd_rows_hold_the_invariants_and_repeat_with_the_seed() {
    let r = Run::new();
    let model = r.model("small-cnn".parse::<Arch>().unwrap());
    let args = |out: &str| {
        vec![
            "--model".to_string(),
            model.clone(),
            "--data".into(),
            "mnist-10k".into(),
            "--attack".into(),
            "pgd".into(),
            "--eps".into(),
            "0.1,0.3".into(),
            "--steps".into(),
            "5".into(),
            "--limit".into(),
            "40".into(),
            "--seed".into(),
            "4".into(),
            "--out".into(),
            out.into(),
        ]
    };
    let (a, b) = (r.path("a"), r.path("b"));
    for out in [&a, &b] {
        let argv = args(out.to_str().unwrap());
        ok(&r.attack(&argv.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    let t = Table::read(&a.join("adv.parquet")).unwrap();
    assert_eq!(t.num_rows(), 80);
    let eps = t.f64s("eps").unwrap();
    let linf = t.f32s("linf").unwrap();
    for (e, l) in eps.iter().zip(&linf) {
        assert!(*l as f64 <= e + 1e-6, "L∞ {l} > eps {e}");
    }
    assert!(linf.iter().any(|l| *l > 0.0));
    let idx = t.u32s("index").unwrap();
    assert!(idx.iter().all(|i| *i < 2004));
    assert_eq!(idx[..40], idx[40..], "each budget covers the same samples");
    let imgs = images(&t, &Device::Cpu).unwrap();
    assert_eq!(imgs.dims(), &[80, 1, 28, 28]);
    let px = imgs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(px.iter().all(|v| (0.0..=1.0).contains(v)));
    for k in [
        "attack",
        "config",
        "seed",
        "model_hash",
        "data_hash",
        "definitions",
    ] {
        assert!(t.meta(k).is_ok(), "metadata {k}");
    }
    // Same seed, same adversarial images.
    let t2 = Table::read(&b.join("adv.parquet")).unwrap();
    assert_eq!(
        t2.f32_list("image", 784).unwrap(),
        t.f32_list("image", 784).unwrap()
    );

    let s = Table::read(&a.join("summary.parquet")).unwrap();
    assert_eq!(s.f64s("eps").unwrap(), vec![0.1, 0.3]);
    let robust = s.f64s("robust_accuracy").unwrap();
    let still = t.u32s("adversarial_prediction").unwrap();
    let labels = t.u32s("label").unwrap();
    let by_hand = (0..40).filter(|&i| still[i] == labels[i]).count() as f64 / 40.0;
    assert!(
        (robust[0] - by_hand).abs() < 1e-12,
        "{robust:?} vs {by_hand}"
    );
}

/// DDN runs once; the summary cuts its norms at each budget, so robust
/// accuracy cannot grow with eps, and every success's norm is recorded.
#[test]
fn minimum_norm_attack_reports_each_budget_from_its_norms() {
    let r = Run::new();
    let model = r.model("small-cnn".parse::<Arch>().unwrap());
    let out = r.path("ddn");
    ok(&r.attack(&[
        "--model",
        &model,
        "--data",
        "mnist-10k",
        "--attack",
        "ddn",
        "--eps",
        "0.5,1,2",
        "--set",
        "ddn.steps=10",
        "--limit",
        "30",
        "--out",
        out.to_str().unwrap(),
    ]));
    let t = Table::read(&out.join("adv.parquet")).unwrap();
    assert_eq!(t.num_rows(), 30);
    let s = Table::read(&out.join("summary.parquet")).unwrap();
    let robust = s.f64s("robust_accuracy").unwrap();
    assert_eq!(robust.len(), 3);
    assert!(robust.windows(2).all(|w| w[1] <= w[0]), "{robust:?}");
    let l2 = t.f32s("l2").unwrap();
    let success = t.bools("success").unwrap();
    let fooled_within_1 = (0..30).filter(|&i| success[i] && l2[i] <= 1.0).count();
    assert!((robust[1] - (30 - fooled_within_1) as f64 / 30.0).abs() < 1e-12);
}

#[test]
fn bad_input_is_refused_before_work() {
    let r = Run::new();
    let model = r.model("small-cnn".parse::<Arch>().unwrap());
    let wrn = r.model("wrn-10-1".parse::<Arch>().unwrap());
    let base = |m: &str| {
        vec![
            "--model".to_string(),
            m.to_string(),
            "--data".into(),
            "mnist-10k".into(),
            "--attack".into(),
            "pgd".into(),
            "--limit".into(),
            "8".into(),
        ]
    };
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "negative eps",
            vec!["--eps".into(), "-0.1".into()],
            "eps: expected numbers >= 0",
        ),
        (
            "zero steps",
            vec!["--eps".into(), "0.3".into(), "--steps".into(), "0".into()],
            "steps: expected at least 1",
        ),
        ("no eps", vec![], "eps: expected at least one budget"),
        (
            "an adaptive attack on a model file without MAT's weights",
            vec![
                "--eps".into(),
                "0.3".into(),
                "--set".into(),
                "attack=adaptive".into(),
            ],
            "metadata `alpha`: expected",
        ),
        (
            "a minimum-norm member of a composite",
            vec![
                "--eps".into(),
                "0.3".into(),
                "--set".into(),
                "attack=composite".into(),
                "--set".into(),
                "composite.attacks=[apgd-ce, ddn]".into(),
            ],
            "composite.attacks: expected bounded attacks",
        ),
        (
            "unknown attack",
            vec![
                "--eps".into(),
                "0.3".into(),
                "--set".into(),
                "attack=madry".into(),
            ],
            "unknown variant `madry`",
        ),
    ];
    for (what, extra, want) in cases {
        let out = r.path("out");
        let mut argv = base(&model);
        argv.extend(extra);
        argv.extend(["--out".to_string(), out.display().to_string()]);
        let o = r.attack(&argv.iter().map(String::as_str).collect::<Vec<_>>());
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains(want), "{what}: expected `{want}` in:\n{err}");
        assert!(!out.exists(), "{what}: wrote output");
    }
    let out = r.path("out");
    let mut argv = base(&wrn);
    argv.extend([
        "--eps".into(),
        "0.3".into(),
        "--out".into(),
        out.display().to_string(),
    ]);
    let o = r.attack(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("wrn-10-1 takes images of shape [N, 3, 32, 32]"),
        "{err}"
    );
    assert!(!out.exists());
    let mut argv = base(&r.path("missing.safetensors").display().to_string());
    argv.extend([
        "--eps".into(),
        "0.3".into(),
        "--out".into(),
        out.display().to_string(),
    ]);
    let o = r.attack(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(stderr(&o).contains("missing.safetensors"), "{}", stderr(&o));
    assert!(!out.exists());
}

/// The adaptive attack reads alpha, beta and the centers from the model
/// file; the composite (APGD-CE then APGD-T) keeps every point in its ball.
#[test]
fn adaptive_and_composite_attacks_run_from_the_model_file() {
    let r = Run::new();
    let model = r.model("small-cnn".parse::<Arch>().unwrap());
    // The same model, now carrying MAT's weights.
    let file = mat_core::artifact::TensorFile::read(Path::new(&model), &Device::Cpu).unwrap();
    let mut meta = file.metadata.clone();
    meta.insert("alpha".into(), "0.1".into());
    meta.insert("beta".into(), "2".into());
    let with_weights = r.path("mat.safetensors");
    mat_core::artifact::write_tensors(
        &with_weights,
        file.tensors.iter().map(|(n, t)| (n.as_str(), t)),
        &meta,
    )
    .unwrap();
    for (attack, extra) in [
        ("adaptive", vec![]),
        ("composite", vec!["--set", "apgd.target_classes=2"]),
    ] {
        let out = r.path(attack);
        let mut argv = vec![
            "--model",
            with_weights.to_str().unwrap(),
            "--data",
            "mnist-10k",
            "--attack",
            attack,
            "--eps",
            "0.1",
            "--steps",
            "5",
            "--limit",
            "20",
            "--out",
            out.to_str().unwrap(),
        ];
        argv.extend(extra);
        ok(&r.attack(&argv));
        let t = Table::read(&out.join("adv.parquet")).unwrap();
        assert_eq!(t.num_rows(), 20);
        assert_eq!(t.meta("attack").unwrap(), attack);
        let linf = t.f32s("linf").unwrap();
        assert!(
            linf.iter().all(|l| *l as f64 <= 0.1 + 1e-6),
            "{attack}: {linf:?}"
        );
        if attack == "adaptive" {
            assert!(linf.iter().any(|l| *l > 0.0), "{attack} did nothing");
        } else {
            // The composite leaves points the model already gets wrong alone.
            let clean = t.u32s("clean_prediction").unwrap();
            let label = t.u32s("label").unwrap();
            for i in 0..20 {
                if clean[i] != label[i] {
                    assert_eq!(linf[i], 0.0, "sample {i} was misclassified already");
                }
            }
        }
    }
}

/// Every attack config the pipelines use (MNIST and CIFAR-10) parses, names
/// only known keys and passes validation once a model is given.
#[test]
fn pipeline_attack_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/attack");
    let mut seen = 0;
    for dataset in ["mnist", "cifar10"] {
        for entry in std::fs::read_dir(root.join(dataset)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let spec: mat_core::attacks::spec::AttackSpec =
                mat_core::config::load(&path, &["model=m.safetensors".to_string()])
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            spec.validate()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 10, "found {seen} configs under {}", root.display());
}
