//! `just bench`: training and PGD-40 throughput of `mat` beside PyTorch CPU
//! on the same machine, data, batch sizes and thread count, written to
//! BENCHMARKS.md.
//!
//! Measured (min and median of `--runs`, default 3):
//! - natural SmallCNN training, one epoch of mnist-10k's 7,996 training
//!   images, batch 128, SGD lr 0.01 momentum 0.9;
//! - PGD-40 (eps 0.3, step 0.01, random start) on 1,024 test images, batch
//!   256, eval mode, weights frozen;
//! - peak resident memory of a 5-epoch training run (a child process);
//! - the f32 GEMM rate of the `gemm` crate (1024³), which bounds both.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, ModuleT, Tensor, Var, D};
use candle_nn::VarBuilder;
use mat_core::data::{self, DataDir, Split};
use mat_core::kernels::gemm::{sgemm, Mat};
use mat_core::models::{small_cnn, SmallCnn};
use mat_core::nn::ParamStore;
use mat_core::optim::{Sgd, SgdConfig};
use mat_core::SeededRng;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// FLOPs of one SmallCNN forward pass on one image (multiply-adds x 2).
const SMALLCNN_FWD_FLOPS: f64 = 2.0
    * ((26 * 26 * 32 * 9)
        + (24 * 24 * 32 * 288)
        + (10 * 10 * 64 * 288)
        + (8 * 8 * 64 * 576)
        + 1024 * 200
        + 200 * 200
        + 200 * 10) as f64;

fn train_epoch(split: &Split, seed: u64, epochs: usize) -> Res<(SmallCnn, ParamStore)> {
    let store = ParamStore::new(seed);
    let model = small_cnn(10, seed, store.var_builder(&Device::Cpu))?;
    let vars: Vec<Var> = store.vars().into_iter().map(|(_, v)| v).collect();
    let mut opt = Sgd::new(
        vars,
        SgdConfig {
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
        },
    );
    let n = split.len();
    let mut rng = SeededRng::for_purpose(seed, "shuffle");
    for _ in 0..epochs {
        let order: Vec<u32> = rng.permutation(n).into_iter().map(|i| i as u32).collect();
        for chunk in order.chunks(128) {
            let idx = Tensor::new(chunk, &Device::Cpu)?;
            let x = split.images.index_select(&idx, 0)?;
            let y = split.labels.index_select(&idx, 0)?;
            let loss = candle_nn::loss::cross_entropy(&model.forward_t(&x, true)?, &y)?;
            opt.step(&loss.backward()?)?;
        }
    }
    Ok((model, store))
}

/// The trained weights as constants: attacks need no weight gradients.
fn frozen(store: &ParamStore) -> Res<SmallCnn> {
    let tensors: HashMap<String, Tensor> = store
        .vars()
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().detach()))
        .collect();
    Ok(small_cnn(
        10,
        0,
        VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
    )?)
}

/// L∞ PGD with a uniform random start, maximising cross-entropy.
fn pgd(
    model: &SmallCnn,
    x: &Tensor,
    y: &Tensor,
    eps: f32,
    step: f32,
    steps: usize,
    rng: &mut SeededRng,
) -> Res<Tensor> {
    let start = rng.uniform(x.shape(), -eps, eps, x.device())?;
    let (lo, hi) = (
        (x - eps as f64)?.clamp(0f32, 1f32)?,
        (x + eps as f64)?.clamp(0f32, 1f32)?,
    );
    let mut adv = (x + start)?.clamp(0f32, 1f32)?;
    for _ in 0..steps {
        let v = Var::from_tensor(&adv)?;
        let loss = candle_nn::loss::cross_entropy(&model.forward_t(v.as_tensor(), false)?, y)?;
        let grads = loss.backward()?;
        let g = grads.get(&v).ok_or("no input gradient")?;
        adv = (adv + (g.sign()? * step as f64)?)?
            .maximum(&lo)?
            .minimum(&hi)?;
    }
    Ok(adv)
}

fn gemm_gflops() -> f64 {
    let n = 1024;
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32).collect();
    let b = a.clone();
    let mut c = vec![0f32; n * n];
    let mut best = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..5 {
            // One GEMM split over the rayon threads by row blocks, as the
            // convolution kernels split over images.
            let rows = n.div_ceil(rayon::current_num_threads());
            rayon::scope(|s| {
                for (ci, ai) in c.chunks_mut(rows * n).zip(a.chunks(rows * n)) {
                    let b = &b;
                    s.spawn(move |_| {
                        sgemm(
                            ai.len() / n,
                            n,
                            n,
                            Mat::rows(ai, n),
                            Mat::rows(b, n),
                            ci,
                            false,
                        )
                    });
                }
            });
        }
        best.push(2.0 * (n * n * n) as f64 * 5.0 / t.elapsed().as_secs_f64() / 1e9);
    }
    median(&best)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::MAX, f64::min)
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn run_cmd(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

struct Torch {
    version: String,
    train_s: Vec<f64>,
    pgd_s: Vec<f64>,
    numpy_gemm: f64,
}

fn pytorch(data_dir: &Path, threads: usize, runs: usize) -> Result<Torch, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pytorch_reference.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([
            "--data",
            &data_dir.display().to_string(),
            "--threads",
            &threads.to_string(),
            "--runs",
            &runs.to_string(),
        ])
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().last().unwrap_or("failed").to_string());
    }
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("bad JSON from the reference: {e}"))?;
    let nums = |k: &str| -> Vec<f64> {
        j[k].as_array()
            .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
            .unwrap_or_default()
    };
    Ok(Torch {
        version: j["torch"].as_str().unwrap_or("?").to_string(),
        train_s: nums("train_seconds"),
        pgd_s: nums("pgd_seconds"),
        numpy_gemm: j["numpy_gemm_gflops"].as_f64().unwrap_or(f64::NAN),
    })
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let dd = DataDir::locate();
    let ds = data::load(&dd, "mnist-10k")?;
    if args.iter().any(|a| a == "--memory-probe") {
        // Child process: a 5-epoch run, then its peak memory.
        train_epoch(&ds.train, 0, 5)?;
        println!("{}", peak_rss_mb().unwrap_or(f64::NAN));
        return Ok(());
    }
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(3);
    let threads = rayon::current_num_threads();
    eprintln!("bench: {threads} threads, {runs} runs");

    let gemm = gemm_gflops();
    eprintln!("gemm: {gemm:.0} GFLOP/s");

    let n_train = ds.train.len();
    let mut train_s = Vec::new();
    let mut store = None;
    for r in 0..runs {
        let t = Instant::now();
        let (_, s) = train_epoch(&ds.train, r as u64, 1)?;
        train_s.push(t.elapsed().as_secs_f64());
        eprintln!(
            "train run {r}: {:.2} s ({:.0} images/s)",
            train_s[r],
            n_train as f64 / train_s[r]
        );
        store = Some(s);
    }
    let model = frozen(&store.expect("runs >= 1"))?;
    let n_pgd = 1024;
    let test = ds.test.subset(Some(n_pgd), Some(0))?;
    let mut pgd_s = Vec::new();
    for r in 0..runs {
        let mut rng = SeededRng::for_purpose(r as u64, "pgd");
        let t = Instant::now();
        for i in (0..n_pgd).step_by(256) {
            let x = test.images.narrow(0, i, 256)?;
            let y = test.labels.narrow(0, i, 256)?;
            let adv = pgd(&model, &x, &y, 0.3, 0.01, 40, &mut rng)?;
            // The result must be used; its accuracy also checks the attack.
            let _acc = model.forward_t(&adv, false)?.argmax(D::Minus1)?;
        }
        pgd_s.push(t.elapsed().as_secs_f64());
        eprintln!(
            "pgd run {r}: {:.2} s ({:.1} images/s)",
            pgd_s[r],
            n_pgd as f64 / pgd_s[r]
        );
    }
    let exe = std::env::current_exe()?;
    let mem = Command::new(exe)
        .arg("--memory-probe")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        });
    eprintln!("peak memory of a 5-epoch run: {:?} MB", mem);

    let torch = pytorch(&dd.cache_dir("mnist-10k"), threads, runs);
    write_report(
        n_train, n_pgd, threads, runs, gemm, &train_s, &pgd_s, mem, &torch,
    )
}

#[allow(clippy::too_many_arguments)]
fn write_report(
    n_train: usize,
    n_pgd: usize,
    threads: usize,
    runs: usize,
    gemm: f64,
    train_s: &[f64],
    pgd_s: &[f64],
    mem: Option<f64>,
    torch: &Result<Torch, String>,
) -> Res<()> {
    let tput = |n: usize, s: &[f64]| (n as f64 / min(s).max(1e-9), n as f64 / median(s).max(1e-9));
    let (train_best, train_med) = tput(n_train, train_s);
    let (pgd_best, pgd_med) = tput(n_pgd, pgd_s);
    let train_flops = 3.0 * SMALLCNN_FWD_FLOPS; // forward + input and weight gradients
    let pgd_flops = 40.0 * 2.0 * SMALLCNN_FWD_FLOPS; // forward + input gradient, 40 steps
    let mut md = String::new();
    let date = run_cmd("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    writeln!(md, "# Benchmarks\n")?;
    writeln!(
        md,
        "Written by `just bench` on {date}. Machine: {}, {threads} threads for both sides.",
        cpu_model()
    )?;
    writeln!(
        md,
        "Versions: {}, candle 0.11, gemm 0.19 (x86-v4); {}.\n",
        run_cmd("rustc", &["--version"]),
        match torch {
            Ok(t) => format!("PyTorch {} (CPU)", t.version),
            Err(_) => "PyTorch not measured".into(),
        }
    )?;
    writeln!(
        md,
        "Throughput in images/s: best (min time) and median of {runs} runs.\n"
    )?;
    writeln!(md, "| workload | mat best | mat median | PyTorch best | PyTorch median | mat/PyTorch (median) | GEMM-bound limit |")?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    let limit = |flops: f64| gemm * 1e9 / flops;
    let (mut r_train, mut r_pgd) = (f64::NAN, f64::NAN);
    for (name, n, best, med, flops, key) in [
        (
            "SmallCNN training, batch 128, 1 epoch of 7,996",
            n_train,
            train_best,
            train_med,
            train_flops,
            0,
        ),
        (
            "PGD-40 eps 0.3, batch 256, 1,024 images",
            n_pgd,
            pgd_best,
            pgd_med,
            pgd_flops,
            1,
        ),
    ] {
        let (tb, tm, ratio) = match torch {
            Ok(t) => {
                let s = if key == 0 { &t.train_s } else { &t.pgd_s };
                let (b, m) = tput(n, s);
                (format!("{b:.1}"), format!("{m:.1}"), med / m)
            }
            Err(_) => ("-".into(), "-".into(), f64::NAN),
        };
        if key == 0 {
            r_train = ratio
        } else {
            r_pgd = ratio
        }
        writeln!(
            md,
            "| {name} | {best:.1} | {med:.1} | {tb} | {tm} | {ratio:.2} | {:.0} |",
            limit(flops)
        )?;
    }
    writeln!(md)?;
    writeln!(
        md,
        "- GEMM rate (f32 1024³, `gemm` crate, {threads} threads): {gemm:.0} GFLOP/s{}.",
        match torch {
            Ok(t) => format!(
                "; numpy/OpenBLAS in the same run: {:.0} GFLOP/s",
                t.numpy_gemm
            ),
            Err(_) => String::new(),
        }
    )?;
    writeln!(md, "- GEMM-bound limit: images/s if every FLOP ran at that GEMM rate ({:.1} MFLOP per training image, {:.1} MFLOP per PGD-40 image).", train_flops / 1e6, pgd_flops / 1e6)?;
    if let Some(m) = mem {
        writeln!(md, "- Peak resident memory of a 5-epoch natural training run (whole process, data included): {m:.0} MB.")?;
    }
    if let Err(e) = torch {
        writeln!(md, "- PyTorch reference not measured: {e}")?;
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../BENCHMARKS.md");
    mat_core::artifact::write_atomic(&path, md.as_bytes())?;
    print!("{md}");
    println!("\nmat/pytorch throughput: train {r_train:.2}, pgd {r_pgd:.2}");
    Ok(())
}
