//! A SmallCNN trained here loads into TRADES' PyTorch module with
//! `load_state_dict(strict=True)` and gives the same logits on real MNIST
//! digits: this checks the weight names, the layouts, and our convolution,
//! pooling and ReLU kernels against PyTorch's. Runs when PyTorch is
//! importable (`just bench` installs it), else prints why it skipped.

use std::path::Path;
use std::process::Command;

use candle_core::{Device, ModuleT, Var};
use mat_core::artifact::{write_tensors, Metadata};
use mat_core::data::{self, DataDir};
use mat_core::models::{small_cnn, Output};
use mat_core::nn::ParamStore;
use mat_core::optim::{Sgd, SgdConfig};

#[test]
fn smallcnn_loads_into_pytorch_and_gives_the_same_logits() {
    let probe = Command::new("python3")
        .args(["-c", "import torch, safetensors"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!(
            "skipped: python3 with torch and safetensors not found (`just bench` installs torch)"
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cache = tempfile::tempdir().unwrap();
    let ds = data::load(&DataDir::new(root.join("data"), cache.path()), "mnist-10k").unwrap();
    let d = Device::Cpu;
    let store = ParamStore::new(3);
    let model = small_cnn(Output::Logits(10), 3, store.var_builder(&d)).unwrap();
    // A few SGD steps, so that fc3 (zero at init) and every other layer matter.
    let vars: Vec<Var> = store.vars().into_iter().map(|(_, v)| v).collect();
    let mut opt = Sgd::new(
        vars,
        SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
        },
    );
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
    let io_path = dir.path().join("io.safetensors");
    store.save(&model_path, &Metadata::new()).unwrap();
    write_tensors(&io_path, [("x", &x), ("logits", &logits)], &Metadata::new()).unwrap();
    let out = Command::new("python3")
        .arg(root.join("tests/torch_check.py"))
        .args([&model_path, &io_path])
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
