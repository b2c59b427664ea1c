//! `just gpu-check` (scripts/gpu-check runs it on a machine with a CUDA GPU;
//! scripts/build-cuda builds it): does the CUDA build compute what the CPU
//! build computes, on the code paths the stages run, and how fast is it.
//! Prints Markdown on stdout and exits 1 when a parity check fails.
//!
//!     gpu_check parity [--device cuda]
//!     gpu_check speed [--device cuda] [--steps N] [--set KEY=VALUE]...
//!
//! `parity`: `--device` against the CPU (run from the repository root, which
//! holds `pipelines/` and `data/mnist-10k`):
//! - logits (to 1e-4 of their scale) and input gradients of the
//!   cross-entropy (1e-3) of SmallCNN, VGG (the paper's MNIST net) and
//!   WRN-16-2 built from one seed, saved once and loaded on both devices;
//! - one training step (batch 128) of every method from its quick config,
//!   through `train::prepare` and `Prepared::run` (mat-train's loop), with
//!   the adversary and MAT's terms on from the first step: the largest
//!   weight difference;
//! - PGD-10 (`pipelines/attack/mnist/pgd10.yaml`) on 256 test digits
//!   through the attack runner, on the TRADES model of the step above
//!   trained on the CPU: robust accuracy within 1 point;
//! - each device's model file loads on the other device and gives the same
//!   logits.
//!
//! `speed` (on `--device`): a WRN-34-10 TRADES training step
//! (pipelines/train/cifar10/trades.yaml: batch 128, 10 inner steps, crop
//! and flip) on CIFAR-sized random data, and PGD-20 (eps 0.031, steps of
//! 0.003) throughput on WRN-34-10, batch 256. The medians of `--steps`
//! timed steps after one warm-up. `--set` overrides the training
//! config (e.g. `arch=wrn-10-1` to try the program on a CPU); PGD's batch
//! is twice the training batch.
//!
//! With `--device cpu` every check compares the CPU with itself: the way to
//! run this program where there is no GPU.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use mat_core::attacks::spec::AttackSpec;
use mat_core::attacks::{input_gradient, run_attack, Pgd};
use mat_core::centers::Centers;
use mat_core::data::{DataDir, Split};
use mat_core::models::{Arch, Classifier, Head};
use mat_core::nn::ParamStore;
use mat_core::train::spec::TrainSpec;
use mat_core::train::Trainer;
use mat_core::{DeviceSpec, SeededRng};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// One check's line in the report.
struct Line {
    what: String,
    measured: String,
    limit: String,
    pass: bool,
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Res<f64> {
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?)
}

fn max_abs(a: &Tensor) -> Res<f64> {
    Ok(a.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?)
}

/// The largest difference between the two files' tensors of one name.
fn weights_diff(a: &Path, b: &Path) -> Res<f64> {
    let ta = candle_core::safetensors::load(a, &Device::Cpu)?;
    let tb = candle_core::safetensors::load(b, &Device::Cpu)?;
    let mut worst = 0f64;
    for (name, t) in &ta {
        let u = tb
            .get(name)
            .ok_or_else(|| format!("{}: no tensor `{name}`", b.display()))?;
        if t.dtype() == DType::I64 {
            continue;
        }
        worst = worst.max(max_abs_diff(t, u)?);
    }
    Ok(worst)
}

/// Logits and input gradients of `arch` (identity head) on both devices,
/// from one saved file.
fn forward_parity(arch: &str, dev: &Device, dir: &Path, lines: &mut Vec<Line>) -> Res<()> {
    let a: Arch = arch.parse()?;
    let store = ParamStore::new(3);
    let model = Classifier::build(a, Head::Identity, 10, 3, store.var_builder(&Device::Cpu))?;
    let file = dir.join(format!("{arch}.safetensors"));
    model.save(&file, &store, &model.metadata(), 0)?;
    let [c, h, w] = a.input_shape();
    let x =
        SeededRng::for_purpose(3, "gpu-check/x").uniform((64, c, h, w), 0.0, 1.0, &Device::Cpu)?;
    let y = Tensor::new((0..64u32).map(|i| i % 10).collect::<Vec<_>>(), &Device::Cpu)?;
    let cpu = Classifier::load(&file, &Device::Cpu)?;
    let other = Classifier::load(&file, dev)?;
    let lc = cpu.logits_t(&x, false)?;
    let lo = other.logits_t(&x.to_device(dev)?, false)?;
    let rel = max_abs_diff(&lc, &lo)? / max_abs(&lc)?.max(1.0);
    lines.push(Line {
        what: format!("{arch}: logits"),
        measured: format!("{rel:.2e} of their scale"),
        limit: "1e-4".into(),
        pass: rel <= 1e-4,
    });
    let gc = input_gradient(&cpu, &x, &y)?;
    let go = input_gradient(&other, &x.to_device(dev)?, &y.to_device(dev)?)?;
    let rel = max_abs_diff(&gc, &go)? / max_abs(&gc)?.max(1e-12);
    lines.push(Line {
        what: format!("{arch}: input gradient of CE"),
        measured: format!("{rel:.2e} of its scale"),
        limit: "1e-3".into(),
        pass: rel <= 1e-3,
    });
    Ok(())
}

/// One training step of `method` on `dev`, through mat-train's loop.
fn train_step(method: &str, dev: &Device, centers: &Path, out: &Path) -> Res<PathBuf> {
    let config = PathBuf::from(format!("pipelines/train/mnist/{method}.yaml"));
    let mut sets: Vec<String> = [
        "train_limit=128",
        "optim.epochs=1",
        "optim.batch_size=128",
        "eval.limit=64",
        "eval.pgd.limit=16",
        "eval.pgd.steps=2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if method != "natural" {
        sets.push("adversary.warmup_epochs=0".into());
    }
    match method {
        "mat" => {
            sets.push("mat.warmup_epochs=0".into());
            sets.push(format!("centers={}", centers.display()));
        }
        "mmc" => {
            sets.push("mmc.adversarial=true".into());
            sets.push(format!("centers={}", centers.display()));
        }
        _ => {}
    }
    let spec = TrainSpec::load(&config, &sets)?;
    let prepared = mat_core::train::run::prepare(spec, &DataDir::locate(), dev)?;
    prepared.run(out, false, &mut |_| {})?;
    Ok(out.join(mat_core::train::run::MODEL))
}

/// Logits of a model file on both devices.
fn cross_load(file: &Path, dev: &Device, what: &str, lines: &mut Vec<Line>) -> Res<()> {
    let x = SeededRng::for_purpose(5, "gpu-check/cross").uniform(
        (32, 1, 28, 28),
        0.0,
        1.0,
        &Device::Cpu,
    )?;
    let lc = Classifier::load(file, &Device::Cpu)?.logits_t(&x, false)?;
    let lo = Classifier::load(file, dev)?.logits_t(&x.to_device(dev)?, false)?;
    let rel = max_abs_diff(&lc, &lo)? / max_abs(&lc)?.max(1.0);
    lines.push(Line {
        what: what.into(),
        measured: format!("logits agree to {rel:.2e} of their scale"),
        limit: "1e-4".into(),
        pass: rel <= 1e-4,
    });
    Ok(())
}

/// PGD-10 robust accuracy of `model` on 256 seeded test digits, on `dev`.
fn pgd10(model: &Path, dev: &Device, out: &Path) -> Res<f64> {
    let sets = vec![
        format!("model={}", model.display()),
        "limit=256".into(),
        "seed=11".into(),
        "eps=[0.3]".into(),
    ];
    let spec = AttackSpec::load(Path::new("pipelines/attack/mnist/pgd10.yaml"), &sets)?;
    let prepared = mat_core::attacks::run::prepare(spec, &DataDir::locate(), dev)?;
    let rows = prepared.run(out, &mut |_| {})?;
    Ok(rows[0].robust_accuracy)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The architecture, seconds per TRADES step, and PGD-20 images per second.
fn speed(dev: &Device, steps: usize, sets: &[String]) -> Res<(String, usize, f64, f64)> {
    let spec = TrainSpec::load(Path::new("pipelines/train/cifar10/trades.yaml"), sets)?;
    let arch = spec.validate()?;
    let store = ParamStore::new(spec.seed);
    let model = Classifier::build(arch, Head::Identity, 10, spec.seed, store.var_builder(dev))?;
    let batch = spec.train_config().batch_size;
    let n = batch * (steps + 1);
    let mut rng = SeededRng::for_purpose(7, "gpu-check/speed");
    let images = rng.uniform((n, 3, 32, 32), 0.0, 1.0, dev)?;
    let labels = Tensor::new((0..n as u32).map(|i| i % 10).collect::<Vec<_>>(), dev)?;
    let split = Split::new(images, labels)?;
    let mut objective = spec.objective()?;
    let mut trainer = Trainer::new(&model, &store, objective.as_mut(), spec.train_config());
    let mut times = Vec::new();
    let mut last = Instant::now();
    trainer.epoch(1, &split, &mut |done, _, _| {
        // The loss is read back each batch, so the step has finished.
        let now = Instant::now();
        if done > 1 {
            times.push((now - last).as_secs_f64());
        }
        last = now;
    })?;
    let step = median(times);

    let pgd = Pgd::linf(20, 0.003);
    let pgd_batch = 2 * batch;
    let x = rng.uniform((pgd_batch, 3, 32, 32), 0.0, 1.0, dev)?;
    let y = Tensor::new(
        (0..pgd_batch as u32).map(|i| i % 10).collect::<Vec<_>>(),
        dev,
    )?;
    let mut rates = Vec::new();
    for i in 0..=steps.min(5) {
        let t = Instant::now();
        let o = run_attack(&pgd, &model, &x, &y, 0.031, &mut rng)?;
        // The predictions are on the host: the attack has finished.
        assert_eq!(o.adv_pred.len(), pgd_batch);
        if i > 0 {
            rates.push(pgd_batch as f64 / t.elapsed().as_secs_f64());
        }
    }
    Ok((arch.to_string(), batch, step, median(rates)))
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut device = "cuda".to_string();
    let mut command = None;
    let mut speed_steps = 5usize;
    let mut speed_sets = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "parity" | "speed" => command = Some(a.clone()),
            "--device" => {
                device = it
                    .next()
                    .ok_or("--device: expected cpu or cuda[:N]")?
                    .clone()
            }
            "--steps" => {
                speed_steps = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--steps: expected a count of at least 1")?
            }
            "--set" => speed_sets.push(it.next().ok_or("--set: expected KEY=VALUE")?.clone()),
            // cargo bench passes --bench to harness-less benches.
            "--bench" => {}
            other => {
                return Err(format!("unknown argument `{other}` (see the file's header)").into())
            }
        }
    }
    if !Path::new("pipelines").is_dir() {
        return Err("run from the repository root (it reads pipelines/ and data/)".into());
    }
    let dev = device.parse::<DeviceSpec>()?.open()?;
    match command.as_deref() {
        Some("parity") => parity(&dev, &device),
        Some(_) => {
            let (arch, batch, step, rate) = speed(&dev, speed_steps, &speed_sets)?;
            println!("### Speed on {device}\n");
            println!("| workload | mat |\n|---|---|");
            println!("| {arch} TRADES training step, batch {batch} (s) | {step:.3} |");
            println!(
                "| {arch} PGD-20, batch {} (images/s) | {rate:.1} |",
                2 * batch
            );
            Ok(())
        }
        None => Err("expected a command: parity or speed (see the file's header)".into()),
    }
}

fn parity(dev: &Device, device: &str) -> Res<()> {
    let dev = dev.clone();
    let tmp = tempfile::tempdir()?;
    let mut lines = Vec::new();
    let started = Instant::now();

    for arch in ["small-cnn", "vgg-mnist", "wrn-16-2"] {
        forward_parity(arch, &dev, tmp.path(), &mut lines)?;
    }
    let centers = tmp.path().join("centers.safetensors");
    Centers::new(10, 10, 10.0)?.write(&centers)?;
    let mut trades = None;
    for method in ["natural", "at", "trades", "mmc", "mat"] {
        let a = train_step(
            method,
            &Device::Cpu,
            &centers,
            &tmp.path().join(format!("{method}-cpu")),
        )?;
        let b = train_step(
            method,
            &dev,
            &centers,
            &tmp.path().join(format!("{method}-dev")),
        )?;
        let d = weights_diff(&a, &b)?;
        lines.push(Line {
            what: format!("{method}: one training step (batch 128)"),
            measured: format!("weights differ by at most {d:.2e}"),
            limit: "1e-4".into(),
            pass: d <= 1e-4,
        });
        if method == "trades" {
            cross_load(
                &a,
                &dev,
                "TRADES model trained on the CPU, loaded on the device",
                &mut lines,
            )?;
            cross_load(
                &b,
                &dev,
                "TRADES model trained on the device, loaded on the CPU",
                &mut lines,
            )?;
            trades = Some(a);
        }
    }
    let model = trades.expect("trades ran");
    let rc = pgd10(&model, &Device::Cpu, &tmp.path().join("pgd-cpu"))?;
    let rd = pgd10(&model, &dev, &tmp.path().join("pgd-dev"))?;
    lines.push(Line {
        what: "PGD-10 (eps 0.3) on 256 test digits".into(),
        measured: format!(
            "{:.2}% on the CPU, {:.2}% on the device",
            100.0 * rc,
            100.0 * rd
        ),
        limit: "1 point".into(),
        pass: (rc - rd).abs() <= 0.01 + 1e-9,
    });

    println!("### Parity: {device} against the CPU\n");
    println!("| check | measured | limit | |\n|---|---|---|---|");
    for l in &lines {
        println!(
            "| {} | {} | {} | {} |",
            l.what,
            l.measured,
            l.limit,
            if l.pass { "pass" } else { "FAIL" }
        );
    }
    println!("\n{:.0} s.", started.elapsed().as_secs_f64());
    if lines.iter().any(|l| !l.pass) {
        return Err("a parity check failed (see the table)".into());
    }
    Ok(())
}
