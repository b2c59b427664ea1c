//! Models trained here load into the reference PyTorch modules with
//! `load_state_dict(strict=True)` and give the same logits: SmallCNN (TRADES'
//! MNIST net) on real MNIST digits, and a WideResNet whose BatchNorm running
//! statistics moved during training. This checks the weight names, the
//! layouts, BatchNorm's train/eval semantics, and our convolution, pooling
//! and ReLU kernels against PyTorch's. PyTorch is too large for CI to
//! install, so these tests are ignored by `just test` and run by
//! `just test-torch`, which installs PyTorch first; run without it, they fail.

use std::path::Path;
use std::process::Command;

use candle_core::{Device, ModuleT, Tensor, Var};
use mat_core::artifact::{write_tensors, Metadata};
use mat_core::data::{self, DataDir};
use mat_core::models::{small_cnn, Arch, Classifier, Head, Output};
use mat_core::nn::ParamStore;
use mat_core::optim::{Sgd, SgdConfig};
use mat_core::SeededRng;

/// Fails, naming what is missing, where python3 cannot import torch and
/// safetensors: an ignored test is run on purpose (`just test-torch`).
fn require_torch() {
    let probe = Command::new("python3")
        .args(["-c", "import torch, safetensors"])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "python3 with torch and safetensors not found: run `just test-torch`, which installs them"
    );
}

/// Runs tests/torch_check.py on a saved model and the (x, logits) pair.
fn check_in_torch(arch: &str, model_path: &Path, x: &Tensor, logits: &Tensor) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let io_path = dir.path().join("io.safetensors");
    write_tensors(&io_path, [("x", x), ("logits", logits)], &Metadata::new()).unwrap();
    let out = Command::new("python3")
        .arg(root.join("tests/torch_check.py"))
        .arg(arch)
        .args([model_path, &io_path])
        .env("PYTHONPATH", root.join("crates/mat-core/benches"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("logits match"), "{stdout}");
    eprintln!("{}", stdout.trim());
}

fn sgd(store: &ParamStore, lr: f64) -> Sgd {
    let vars: Vec<Var> = store.vars().into_iter().map(|(_, v)| v).collect();
    Sgd::new(
        vars,
        SgdConfig {
            lr,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
        },
    )
}

#[test]
#[ignore = "needs PyTorch: just test-torch"]
fn smallcnn_loads_into_pytorch_and_gives_the_same_logits() {
    require_torch();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cache = tempfile::tempdir().unwrap();
    let ds = data::load(&DataDir::new(root.join("data"), cache.path()), "mnist-10k").unwrap();
    let d = Device::Cpu;
    let store = ParamStore::new(3);
    let model = small_cnn(Output::Logits(10), 3, store.var_builder(&d)).unwrap();
    // A few SGD steps, so that fc3 (zero at init) and every other layer matter.
    let mut opt = sgd(&store, 0.05);
    let train = ds.train.subset(Some(640), Some(1)).unwrap();
    for i in 0..5 {
        let x = train.images.narrow(0, i * 128, 128).unwrap();
        let y = train.labels.narrow(0, i * 128, 128).unwrap();
        let loss = candle_nn::loss::cross_entropy(&model.forward_t(&x, true).unwrap(), &y).unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
    }
    let x = ds.test.subset(Some(64), Some(2)).unwrap().images;
    let logits = model.forward_t(&x, false).unwrap();
    let std = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(std.iter().any(|v| v.abs() > 0.1), "logits still trivial");

    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("model.safetensors");
    store.save(&model_path, &Metadata::new()).unwrap();
    check_in_torch("small-cnn", &model_path, &x, &logits);
}

/// WRN-16-2 after a few SGD steps in train mode (batch statistics, running
/// averages updated), saved as `mat-train` saves it, evaluated in eval mode.
#[test]
#[ignore = "needs PyTorch: just test-torch"]
fn wide_resnet_loads_into_pytorch_and_gives_the_same_logits() {
    require_torch();
    let d = Device::Cpu;
    let store = ParamStore::new(4);
    let arch = "wrn-16-2".parse::<Arch>().unwrap();
    let model = Classifier::build(arch, Head::Identity, 10, 4, store.var_builder(&d)).unwrap();
    let mut opt = sgd(&store, 0.05);
    let mut rng = SeededRng::new(9);
    for _ in 0..3 {
        let x = rng.uniform((32, 3, 32, 32), 0.0, 1.0, &d).unwrap();
        let y: Vec<u32> = (0..32).map(|_| rng.below(10) as u32).collect();
        let y = Tensor::new(y.as_slice(), &d).unwrap();
        let loss = candle_nn::loss::cross_entropy(&model.logits_t(&x, true).unwrap(), &y).unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
    }
    let x = rng.uniform((8, 3, 32, 32), 0.0, 1.0, &d).unwrap();
    let logits = model.logits_t(&x, false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("model.safetensors");
    model
        .save(&model_path, &store, &Metadata::new(), 3)
        .unwrap();
    check_in_torch("wrn-16-2", &model_path, &x, &logits);
}
