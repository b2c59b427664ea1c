//! `mat-train` as a program on the real MNIST subset: determinism, resume,
//! the files it writes, and its refusals. Small runs (a few hundred images).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Device;
use mat_core::artifact::{Table, TensorFile};
use mat_core::centers::Centers;
use mat_core::models::Classifier;

fn data_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data")
}

fn train(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mat-train"))
        .args(args)
        .arg("--quiet")
        .env("MAT_DATA_DIR", data_root())
        .env("MAT_CACHE_DIR", cache)
        .output()
        .expect("run mat-train")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tiny natural run: 256 images, 2 epochs, clean evaluation on 200.
const TINY: &str = "\
method: natural
arch: small-cnn
dataset: mnist-10k
seed: 3
train_limit: 256
optim: {epochs: 2, batch_size: 64, lr: 0.05, lr_milestones: [1]}
eval: {limit: 200}
";

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
    fn config(&self, name: &str, text: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
    fn train(&self, args: &[&str]) -> Output {
        train(&self.path("cache"), args)
    }
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let f = TensorFile::read(path, &Device::Cpu).unwrap();
    f.tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        })
        .collect()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "mat-train failed:\n{}", stderr(o));
}

/// One seed, one config: identical weights, bit for bit; and a run stopped
/// after epoch 1 and resumed gives the weights of the uninterrupted run.
#[test]
fn same_seed_same_weights_and_resume_is_exact() {
    let r = Run::new();
    let cfg = r.config("tiny.yaml", TINY);
    let (a, b, c) = (r.path("a"), r.path("b"), r.path("c"));
    for out in [&a, &b] {
        ok(&r.train(&["--config", &cfg, "--out", out.to_str().unwrap()]));
    }
    let wa = weights(&a.join("model.safetensors"));
    assert_eq!(wa, weights(&b.join("model.safetensors")));
    let c_out = c.to_str().unwrap();
    ok(&r.train(&["--config", &cfg, "--out", c_out, "--set", "optim.epochs=1"]));
    let o = r.train(&["--config", &cfg, "--out", c_out, "--resume"]);
    ok(&o);
    assert!(
        stderr(&o).contains("resumed after epoch 1"),
        "{}",
        stderr(&o)
    );
    assert_eq!(wa, weights(&c.join("model.safetensors")));

    // The log: one row per epoch, the loss falling, accuracy in [0, 1].
    let log = Table::read(&a.join("train_log.parquet")).unwrap();
    assert_eq!(log.u32s("epoch").unwrap(), vec![1, 2]);
    let lr = log.f64s("lr").unwrap();
    assert!((lr[0] - 0.05).abs() < 1e-12 && (lr[1] - 0.005).abs() < 1e-12);
    let loss = log.f64s("loss_ce").unwrap();
    assert!(loss[1] < loss[0], "{loss:?}");
    assert!(log
        .f64s("clean_accuracy")
        .unwrap()
        .iter()
        .all(|a| (0.0..=1.0).contains(a)));
    assert!(log.f64s("pgd_accuracy").unwrap().iter().all(|a| a.is_nan()));
    // The resumed log holds both epochs too.
    let log_c = Table::read(&c.join("train_log.parquet")).unwrap();
    assert_eq!(log_c.u32s("epoch").unwrap(), vec![1, 2]);
    assert_eq!(log_c.f64s("loss_ce").unwrap(), loss);

    // Provenance in the model file.
    let m = TensorFile::read(&a.join("model.safetensors"), &Device::Cpu).unwrap();
    for (k, v) in [
        ("kind", "model"),
        ("arch", "small-cnn"),
        ("method", "natural"),
        ("dataset", "mnist-10k"),
        ("head", "identity"),
        ("seed", "3"),
    ] {
        assert_eq!(m.meta(k).unwrap(), v, "{k}");
    }
    assert_eq!(m.meta("config_hash").unwrap().len(), 64);
}

/// The same AT run on 1 and on 3 threads gives the same weights, bit for
/// bit: `mat repro --jobs N` gives each stage a share of the cores, and the
/// convolution's backward once split its batch by the thread count, so its
/// partial weight gradients summed in another order.
#[test]
fn weights_do_not_depend_on_the_thread_count() {
    let r = Run::new();
    let cfg = r.config(
        "at.yaml",
        &TINY.replace("method: natural", "method: at").replace(
            "eval: {limit: 200}",
            "eval: {limit: 50}\nadversary: {eps: 0.3, steps: 2, step_size: 0.15}",
        ),
    );
    let mut models = Vec::new();
    for threads in ["1", "3"] {
        let out = r.path(&format!("threads-{threads}"));
        let o = Command::new(env!("CARGO_BIN_EXE_mat-train"))
            .args(["--quiet", "--config", &cfg, "--out", out.to_str().unwrap()])
            .env("MAT_DATA_DIR", data_root())
            .env("MAT_CACHE_DIR", r.path("cache"))
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .expect("run mat-train");
        ok(&o);
        models.push(std::fs::read(out.join("model.safetensors")).unwrap());
    }
    assert!(
        models[0] == models[1],
        "1 and 3 threads gave different weights"
    );
}

/// `eval.pgd.every: 2` over 3 epochs: PGD after epoch 2 only, NaN in the log
/// after epochs 1 and 3 (not after the last: `--resume` may raise the
/// epochs, and the log must not depend on them); the clean accuracy after
/// every epoch.
#[test]
fn eval_pgd_runs_every_nth_epoch() {
    let r = Run::new();
    let cfg = r.config(
        "every.yaml",
        &TINY
            .replace("epochs: 2", "epochs: 3")
            .replace("train_limit: 256", "train_limit: 128")
            .replace(
                "eval: {limit: 200}",
                "eval: {limit: 50, pgd: {eps: 0.3, steps: 1, step_size: 0.3, limit: 10, every: 2}}",
            ),
    );
    let out = r.path("out");
    ok(&r.train(&["--config", &cfg, "--out", out.to_str().unwrap()]));
    let log = Table::read(&out.join("train_log.parquet")).unwrap();
    let ran: Vec<bool> = log
        .f64s("pgd_accuracy")
        .unwrap()
        .iter()
        .map(|a| a.is_finite())
        .collect();
    assert_eq!(ran, vec![false, true, false]);
    assert!(log
        .f64s("clean_accuracy")
        .unwrap()
        .iter()
        .all(|a| (0.0..=1.0).contains(a)));
}

/// A MAT model (FTC + SO + BIBO, one short epoch) carries the Section 3.3
/// head: `head.weight` = the centers file's tensor, `head.bias` = 0; loaded
/// back, its logits' argmax is the argmax of the cosine to the centers.
#[test]
fn mat_model_carries_the_centers_head() {
    let r = Run::new();
    let centers = r.path("centers.safetensors");
    Centers::new(10, 16, 10.0).unwrap().write(&centers).unwrap();
    let cfg = r.config(
        "mat.yaml",
        &format!(
            "method: mat\narch: small-cnn\ndataset: mnist-10k\ntrain_limit: 128\n\
             centers: {}\noptim: {{epochs: 1, batch_size: 64, lr: 0.01}}\n\
             adversary: {{eps: 0.3, steps: 2, step_size: 0.15}}\n\
             mat: {{alpha: 0.1, beta: 1.0}}\neval: {{limit: 100, pgd: {{eps: 0.3, steps: 2, step_size: 0.15, limit: 20}}}}\n",
            centers.display()
        ),
    );
    let out = r.path("out");
    ok(&r.train(&["--config", &cfg, "--out", out.to_str().unwrap()]));
    let log = Table::read(&out.join("train_log.parquet")).unwrap();
    for col in ["loss_ftc", "loss_so", "loss_bibo"] {
        assert!(log.f64s(col).unwrap()[0].is_finite(), "{col}");
    }
    assert!(!log.f64s("pgd_accuracy").unwrap()[0].is_nan());
    let file = TensorFile::read(&out.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(file.meta("head").unwrap(), "centers");
    assert_eq!(file.meta("alpha").unwrap(), "0.1");
    let want = Centers::read(&centers, None).unwrap().centers;
    let got = file.get("head.weight").unwrap();
    assert_eq!(
        got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    let bias = file.get("head.bias").unwrap().to_vec1::<f32>().unwrap();
    assert!(bias.iter().all(|&b| b == 0.0));

    let model = Classifier::from_file(&file).unwrap();
    let mut rng = mat_core::SeededRng::new(5);
    let x = rng
        .uniform((16, 1, 28, 28), 0.0, 1.0, &Device::Cpu)
        .unwrap();
    let by_logits = model
        .logits_t(&x, false)
        .unwrap()
        .argmax(1)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    let phi = model.features_t(&x, false).unwrap();
    let n = phi.dim(0).unwrap();
    let cos: Vec<Vec<f32>> = (0..10)
        .map(|k| {
            let mu = want.get(k).unwrap().unsqueeze(0).unwrap();
            let mu = mu.broadcast_as((n, 16)).unwrap().contiguous().unwrap();
            mat_core::losses::cosine(&phi, &mu)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect();
    for (i, &p) in by_logits.iter().enumerate() {
        let best = (0..10)
            .max_by(|&a, &b| cos[a][i].total_cmp(&cos[b][i]))
            .unwrap();
        assert_eq!(p as usize, best, "sample {i}");
    }
}

/// Bad configs fail before any training, name the field, and write nothing.
#[test]
fn bad_input_is_refused_before_training() {
    let r = Run::new();
    let small_centers = r.path("c5.safetensors");
    Centers::new(5, 8, 10.0)
        .unwrap()
        .write(&small_centers)
        .unwrap();
    let mat_with = |c: &Path| {
        format!(
            "method: mat\narch: small-cnn\ndataset: mnist-10k\ncenters: {}\noptim: {{epochs: 1, lr: 0.01}}\n",
            c.display()
        )
    };
    let cases: Vec<(&str, String, Vec<&str>, &str)> = vec![
        (
            "unknown method",
            TINY.replace("natural", "madry"),
            vec![],
            "unknown variant `madry`",
        ),
        (
            "unknown arch",
            TINY.replace("small-cnn", "resnet-9"),
            vec![],
            "arch: unknown architecture `resnet-9`",
        ),
        (
            "negative lr",
            TINY.to_string(),
            vec!["--set", "optim.lr=-0.1"],
            "optim.lr: expected a number > 0",
        ),
        (
            "negative eps",
            TINY.replace("natural", "at"),
            vec!["--set", "adversary={eps: -0.3, steps: 5, step_size: 0.1}"],
            "adversary.eps: expected a number in [0, 1]",
        ),
        (
            "unknown key",
            format!("{TINY}optimiser: {{}}\n"),
            vec![],
            ":8:1: unknown field `optimiser`",
        ),
        (
            "eval PGD every 0 epochs",
            TINY.replace(
                "eval: {limit: 200}",
                "eval: {limit: 200, pgd: {eps: 0.3, steps: 1, step_size: 0.3, limit: 10, every: 0}}",
            ),
            vec![],
            "eval.pgd.every: expected at least 1 (epochs)",
        ),
        (
            "unknown dataset",
            TINY.replace("mnist-10k", "mnist-11k"),
            vec![],
            "unknown dataset `mnist-11k`",
        ),
        (
            "wrong image shape",
            TINY.replace("small-cnn", "wrn-16-4"),
            vec![],
            "wrn-16-4 takes [3, 32, 32]",
        ),
        (
            "centers with 5 classes",
            mat_with(&small_centers),
            vec![],
            "c5.safetensors: metadata `num_classes`: expected 10",
        ),
        (
            "missing centers file",
            mat_with(&r.path("none.safetensors")),
            vec![],
            "none.safetensors",
        ),
    ];
    for (what, yaml, extra, want) in cases {
        let cfg = r.config("bad.yaml", &yaml);
        let out = r.path("out");
        let mut args = vec!["--config", cfg.as_str(), "--out", out.to_str().unwrap()];
        args.extend(extra);
        let o = r.train(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains(want), "{what}: expected `{want}` in:\n{err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(!out.exists(), "{what}: wrote {}", out.display());
    }
}

/// Every training config the pipelines use (quick and paper profiles, MNIST
/// and CIFAR-10) parses, names only known keys and passes validation.
#[test]
fn pipeline_train_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/train");
    let mut dirs = vec![root.clone()];
    let mut seen = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let spec: mat_core::train::spec::TrainSpec = mat_core::config::load(&path, &[])
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            spec.validate()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 14, "found {seen} configs under {}", root.display());
}
