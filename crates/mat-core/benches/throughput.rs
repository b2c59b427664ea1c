//! `just bench`: training and attack throughput of `mat` beside PyTorch CPU
//! on the same machine, data, batch sizes and thread count, written to
//! BENCHMARKS.md.
//!
//! Measured (min and median of `--runs`, default 3; `--train-runs`,
//! default 9, for SmallCNN training, PyTorch's from a fresh process every
//! third run; training after one untimed warm-up run per side and
//! process; each PyTorch PGD-40 run in a fresh process), each workload's
//! runs interleaved with PyTorch's (mat, PyTorch, then PyTorch, mat, ...),
//! so that the machine's drift hits both sides alike:
//! - natural SmallCNN training, one epoch of mnist-10k's 7,996 training
//!   images, batch 128, SGD lr 0.01 momentum 0.9;
//! - natural VGG (the paper's MNIST net) training on 2,560 of them, the same
//!   SGD and batch size;
//! - PGD-40 (eps 0.3, step 0.01, random start) on 1,024 test images, batch
//!   256, eval mode, weights frozen: the last model trained above, on both
//!   sides (saved by mat, loaded by the reference);
//! - a WRN-16-4 training step on CIFAR-shaped inputs (batch 128, random
//!   data; SGD lr 0.1, momentum 0.9, weight decay 2e-4), 3 steps per run;
//! - AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square; eps 0.3) on 128
//!   test images of the model trained above, one run per side, beside
//!   torchattacks' members with the same budget (100 steps, 5000 queries)
//!   on the same weights (saved by mat, loaded by the reference) where
//!   torchattacks is installed;
//! - peak resident memory of a 5-epoch training run (a child process);
//! - the f32 GEMM rate of the `gemm` crate (1024³), which bounds both.
//!
//! The PyTorch side is `pytorch_reference.py`, a process that answers one
//! workload run per request, replaced by a fresh one where said above.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering::Relaxed};
use std::time::Instant;

use candle_core::{DType, Device, ModuleT, Tensor, Var, D};
use candle_nn::VarBuilder;
use mat_core::attacks::spec::{AttackSpec, Context};
use mat_core::attacks::square::SquareSpec;
use mat_core::attacks::{run_attack, Attack, Pgd, Problem};
use mat_core::data::{self, DataDir, Split};
use mat_core::kernels::gemm::{sgemm, Mat};
use mat_core::models::{small_cnn, vgg_mnist, wide_resnet, Output, SmallCnn};
use mat_core::nn::ParamStore;
use mat_core::optim::{Sgd, SgdConfig};
use mat_core::SeededRng;

#[global_allocator]
static GLOBAL: Counting = Counting;

/// mimalloc, counting the bytes allocated and their peak in the memory
/// probe: its peak resident memory holds, beside the program's own data,
/// the freed memory the allocator keeps mapped (`keep_freed_memory`), and
/// the two move apart when only the pattern of allocations changes.
struct Counting;

/// Whether [`Counting`] counts (the memory probe only: the timed
/// workloads allocate without the atomics).
static COUNTING: AtomicBool = AtomicBool::new(false);
// Signed: blocks the runtime allocated before counting began may be freed.
static ALLOCATED: AtomicIsize = AtomicIsize::new(0);
static PEAK_ALLOCATED: AtomicIsize = AtomicIsize::new(0);

/// Adds `bytes` (negative: freed) to the count, when counting.
fn count(bytes: isize) {
    if COUNTING.load(Relaxed) {
        let now = ALLOCATED.fetch_add(bytes, Relaxed) + bytes;
        PEAK_ALLOCATED.fetch_max(now, Relaxed);
    }
}

// SAFETY: every call goes to mimalloc unchanged (`realloc` and
// `alloc_zeroed` too, so that mimalloc still grows blocks in place); the
// counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        mimalloc::MiMalloc.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        mimalloc::MiMalloc.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        mimalloc::MiMalloc.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        mimalloc::MiMalloc.dealloc(ptr, layout)
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The memory probe's peaks, in MB.
#[derive(Debug, Clone, Copy)]
struct Memory {
    resident: f64,
    allocated: f64,
}

/// FLOPs of one SmallCNN forward pass on one image (multiply-adds x 2).
const SMALLCNN_FWD_FLOPS: f64 = 2.0
    * ((26 * 26 * 32 * 9)
        + (24 * 24 * 32 * 288)
        + (10 * 10 * 64 * 288)
        + (8 * 8 * 64 * 576)
        + 1024 * 200
        + 200 * 200
        + 200 * 10) as f64;

/// FLOPs of one VGG (`vgg-mnist`) forward pass on one image: 3x3
/// convolutions with padding 1 at 28, 14 and 7 pixels.
const VGG_FWD_FLOPS: f64 = 2.0
    * ((28 * 28 * 32 * 9)
        + (28 * 28 * 32 * 288)
        + (14 * 14 * 64 * 288)
        + (14 * 14 * 64 * 576)
        + (7 * 7 * 128 * 576)
        + (7 * 7 * 128 * 1152)
        + 1152 * 256
        + 256 * 10) as f64;

/// Training images per VGG run (20 batches of 128): an epoch would take a
/// minute per run.
const VGG_IMAGES: usize = 2560;

/// FLOPs of one WRN-`depth`-`widen` forward pass on one 3x32x32 image.
fn wrn_fwd_flops(depth: usize, widen: usize) -> f64 {
    let n = (depth - 4) / 6;
    let conv = |hw: usize, i: usize, o: usize, k: usize| 2.0 * (hw * hw * o * i * k * k) as f64;
    let ch = [16, 16 * widen, 32 * widen, 64 * widen];
    let mut f = conv(32, 3, ch[0], 3);
    for (g, hw) in [(1, 32), (2, 16), (3, 8)] {
        for b in 0..n {
            let i = if b == 0 { ch[g - 1] } else { ch[g] };
            f += conv(hw, i, ch[g], 3) + conv(hw, ch[g], ch[g], 3);
            if i != ch[g] {
                f += conv(hw, i, ch[g], 1);
            }
        }
    }
    f + 2.0 * (ch[3] * 10) as f64
}

const WRN_STEPS: usize = 3;

/// Seconds for `WRN_STEPS` WRN-16-4 training steps after one warm-up step.
fn wrn_steps(seed: u64) -> Res<f64> {
    let d = Device::Cpu;
    let store = ParamStore::new(seed);
    let model = wide_resnet(16, 4, 10, store.var_builder(&d))?;
    let vars: Vec<Var> = store.vars().into_iter().map(|(_, v)| v).collect();
    let cfg = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 2e-4,
        nesterov: false,
    };
    let mut opt = Sgd::new(vars, cfg);
    let mut rng = SeededRng::for_purpose(seed, "wrn-data");
    let x = rng.uniform((128, 3, 32, 32), 0.0, 1.0, &d)?;
    let labels: Vec<u32> = (0..128).map(|_| rng.below(10) as u32).collect();
    let y = Tensor::new(labels.as_slice(), &d)?;
    let mut step = || -> Res<()> {
        let loss = candle_nn::loss::cross_entropy(&model.forward_t(&x, true)?, &y)?;
        opt.step(&loss.backward()?)?;
        Ok(())
    };
    step()?;
    let t = Instant::now();
    for _ in 0..WRN_STEPS {
        step()?;
    }
    Ok(t.elapsed().as_secs_f64())
}

fn train_epoch(split: &Split, seed: u64, epochs: usize) -> Res<(SmallCnn, ParamStore)> {
    let store = ParamStore::new(seed);
    let model = small_cnn(Output::Logits(10), seed, store.var_builder(&Device::Cpu))?;
    for _ in 0..epochs {
        sgd_epoch(&model, &store, split, seed, None)?;
    }
    Ok((model, store))
}

/// Seconds of natural VGG training on the first `VGG_IMAGES` of a seeded
/// shuffle.
fn vgg_run(split: &Split, seed: u64) -> Res<f64> {
    let store = ParamStore::new(seed);
    let model = vgg_mnist(10, seed, store.var_builder(&Device::Cpu))?;
    let t = Instant::now();
    sgd_epoch(&model, &store, split, seed, Some(VGG_IMAGES))?;
    Ok(t.elapsed().as_secs_f64())
}

/// One epoch of SGD (lr 0.01, momentum 0.9, batch 128) over a seeded
/// shuffle of `split`, or its first `limit` images.
fn sgd_epoch(
    model: &impl ModuleT,
    store: &ParamStore,
    split: &Split,
    seed: u64,
    limit: Option<usize>,
) -> Res<()> {
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
    let mut rng = SeededRng::for_purpose(seed, "shuffle");
    let mut order: Vec<u32> = rng
        .permutation(split.len())
        .into_iter()
        .map(|i| i as u32)
        .collect();
    order.truncate(limit.unwrap_or(order.len()));
    for chunk in order.chunks(128) {
        let idx = Tensor::new(chunk, &Device::Cpu)?;
        let x = split.images.index_select(&idx, 0)?;
        let y = split.labels.index_select(&idx, 0)?;
        let loss = candle_nn::loss::cross_entropy(&model.forward_t(&x, true)?, &y)?;
        opt.step(&loss.backward()?)?;
    }
    Ok(())
}

/// The trained weights as constants: attacks need no weight gradients.
fn frozen(store: &ParamStore) -> Res<SmallCnn> {
    let tensors: HashMap<String, Tensor> = store
        .vars()
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().detach()))
        .collect();
    Ok(small_cnn(
        Output::Logits(10),
        0,
        VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
    )?)
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

/// The CPU's model name and its widest vector extension: machines sold
/// under one name (an "AMD EPYC" with and without AVX-512) differ by 2x
/// here, for PyTorch too.
fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
    };
    let model = field("model name").unwrap_or_else(|| "unknown CPU".into());
    let flags = field("flags").unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let simd = if has("avx512f") {
        "AVX-512"
    } else if has("avx2") {
        "AVX2, no AVX-512"
    } else {
        "no AVX2"
    };
    format!("{model} ({simd})")
}

/// Which of mat's kernel paths this CPU runs (the crate picks them at run
/// time, so one binary's figures differ between machines by more than the
/// clock): its own AVX-512 kernels, or the fallbacks.
fn kernels_in_use() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "mat's AVX-512 kernels (the Winograd products, the planes' even and odd \
                    columns split and merged), the other loops at AVX-512";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "no AVX-512: the Winograd products through the `gemm` crate, the planes' \
                    columns split and merged in plain loops, the other loops at AVX2";
        }
    }
    "neither AVX-512 nor AVX2 with FMA: the `gemm` crate and plain loops throughout"
}

/// `pytorch_reference.py`, serving one workload run per request.
struct Reference {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    version: String,
    data_dir: PathBuf,
    threads: usize,
}

impl Reference {
    fn start(data_dir: &Path, threads: usize) -> Result<Self, String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pytorch_reference.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--data", &data_dir.display().to_string()])
            .args(["--threads", &threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Its warnings and errors go to the bench's stderr: a pipe
            // nobody reads until it exits could fill and stall it.
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut r = Self {
            child,
            stdin,
            stdout,
            version: String::new(),
            data_dir: data_dir.to_path_buf(),
            threads,
        };
        let hello = r.read()?;
        r.version = hello["torch"].as_str().unwrap_or("?").to_string();
        Ok(r)
    }

    fn read(&mut self) -> Result<serde_json::Value, String> {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("reading the reference: {e}"))?;
        if line.is_empty() {
            let status = self.child.wait().map_err(|e| e.to_string())?;
            return Err(format!(
                "pytorch_reference.py exited ({status}); its error is printed above"
            ));
        }
        serde_json::from_str(&line).map_err(|e| format!("bad JSON from the reference: {e}"))
    }

    /// A new process in place of this one (which is stopped).
    fn restart(&mut self) -> Result<(), String> {
        *self = Self::start(&self.data_dir.clone(), self.threads)?;
        Ok(())
    }

    /// One run of a workload: its answer, or what went wrong.
    fn ask(&mut self, request: serde_json::Value) -> Result<serde_json::Value, String> {
        writeln!(self.stdin, "{request}").map_err(|e| format!("writing to the reference: {e}"))?;
        let answer = self.read()?;
        match answer["error"].as_str() {
            Some(e) => Err(e.to_string()),
            None => Ok(answer),
        }
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One row of the table: images per run, seconds per run on each side,
/// FLOPs per image.
struct Workload {
    key: &'static str,
    name: &'static str,
    images: usize,
    seconds: Vec<f64>,
    /// PyTorch's seconds per run, or why it has none.
    torch: Result<Vec<f64>, String>,
    flops_per_image: f64,
    /// One untimed run per side before the timed ones. PyTorch's first
    /// SmallCNN epoch in a process took 1.0-2.1x as long as its later ones
    /// (six benches on one machine: 4.0-6.7 s against 2.6-4.2), mat's
    /// 0.97-1.13x; kept as one of three timed runs, it made PyTorch's
    /// median that of its slower steady epoch.
    warmup: bool,
    /// A fresh reference process every this many runs, each warmed up
    /// when `warmup` is set. PyTorch's steady SmallCNN epoch is set per
    /// process: five processes on one machine ran theirs at 3.6-3.7,
    /// 3.2-3.4, 2.9, 2.9 and 3.0 s (mat's five: 2.9-3.0 s each), so the
    /// runs of a single process measure that process's luck.
    runs_per_reference: Option<usize>,
}

impl Workload {
    fn new(key: &'static str, name: &'static str, images: usize, flops_per_image: f64) -> Self {
        Self {
            key,
            name,
            images,
            seconds: Vec::new(),
            torch: Ok(Vec::new()),
            flops_per_image,
            warmup: false,
            runs_per_reference: None,
        }
    }

    /// With a fresh reference process every `runs` runs (see
    /// [`Workload::runs_per_reference`]).
    fn reference_restarted_every(mut self, runs: usize) -> Self {
        self.runs_per_reference = Some(runs);
        self
    }

    /// The runs column of the report.
    fn runs_note(&self) -> String {
        let mut note = self.seconds.len().to_string();
        if let Some(k) = self.runs_per_reference {
            let processes = self.seconds.len().div_ceil(k);
            if processes > 1 {
                note += &format!(" (PyTorch's in {processes} processes)");
            }
        }
        if self.warmup {
            note += if self.runs_per_reference.is_some() {
                " + warm-up (each process)"
            } else {
                " + warm-up"
            };
        }
        note
    }

    /// PyTorch's answer to `request` as run `r`, or `None` where PyTorch
    /// is not measured: it was not before, or this request failed (see
    /// [`Workload::not_measured`]).
    fn ask_torch(
        &mut self,
        reference: &mut Result<Reference, String>,
        request: &serde_json::Value,
        r: usize,
    ) -> Option<serde_json::Value> {
        let (Ok(rf), Ok(_)) = (reference.as_mut(), self.torch.as_ref()) else {
            return None;
        };
        let mut req = request.clone();
        req["run"] = r.into();
        rf.ask(req).map_err(|e| self.not_measured(e)).ok()
    }

    /// Prints why PyTorch is not measured and keeps it for the report.
    fn not_measured(&mut self, e: String) {
        eprintln!("{}: PyTorch not measured: {e}", self.key);
        self.torch = Err(e);
    }

    /// An untimed PyTorch run of `request`, its time printed.
    fn torch_warmup(
        &mut self,
        reference: &mut Result<Reference, String>,
        request: &serde_json::Value,
    ) {
        if let Some(a) = self.ask_torch(reference, request, 0) {
            eprintln!(
                "{} warm-up: PyTorch {:.2} s (not kept)",
                self.key,
                a["seconds"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }

    /// A fresh reference process in place of the old one, warmed up with
    /// `request` when the workload is (see [`Workload::runs_per_reference`]).
    fn fresh_torch(
        &mut self,
        reference: &mut Result<Reference, String>,
        request: &serde_json::Value,
    ) {
        let (Ok(rf), Ok(_)) = (reference.as_mut(), self.torch.as_ref()) else {
            return;
        };
        eprintln!("{}: a fresh PyTorch process", self.key);
        if let Err(e) = rf.restart() {
            return self.not_measured(e);
        }
        if self.warmup {
            self.torch_warmup(reference, request);
        }
    }

    /// With one untimed run per side first (see [`Workload::warmup`]).
    fn warmed_up(mut self) -> Self {
        self.warmup = true;
        self
    }

    /// `runs` runs of `ours` and of the reference's `request` (with `run`
    /// added), alternating which side goes first; `answer` sees each of
    /// the reference's answers. A warm-up (see [`Workload::warmup`]) runs
    /// both sides once first with the seed of run 0, its times printed
    /// and not kept.
    fn measure(
        &mut self,
        runs: usize,
        reference: &mut Result<Reference, String>,
        request: serde_json::Value,
        mut ours: impl FnMut(usize) -> Res<f64>,
        mut answer: impl FnMut(&serde_json::Value),
    ) -> Res<()> {
        if self.warmup {
            let s = ours(0)?;
            eprintln!("{} warm-up: mat {s:.2} s (not kept)", self.key);
            self.torch_warmup(reference, &request);
        }
        for r in 0..runs {
            if r > 0 && self.runs_per_reference.is_some_and(|k| r % k == 0) {
                self.fresh_torch(reference, &request);
            }
            for side in [r % 2, 1 - r % 2] {
                if side == 0 {
                    let s = ours(r)?;
                    eprintln!(
                        "{} run {r}: mat {s:.2} s ({:.1} images/s)",
                        self.key,
                        self.images as f64 / s
                    );
                    self.seconds.push(s);
                    continue;
                }
                let Some(a) = self.ask_torch(reference, &request, r) else {
                    continue;
                };
                let s = a["seconds"].as_f64().unwrap_or(f64::NAN);
                eprintln!(
                    "{} run {r}: PyTorch {s:.2} s ({:.1} images/s)",
                    self.key,
                    self.images as f64 / s
                );
                if let Ok(torch) = self.torch.as_mut() {
                    torch.push(s);
                }
                answer(&a);
            }
        }
        Ok(())
    }
}

fn main() -> Res<()> {
    mat_core::alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let memory_probe = args.iter().any(|a| a == "--memory-probe");
    COUNTING.store(memory_probe, Relaxed);
    let dd = DataDir::locate();
    let ds = data::load(&dd, "mnist-10k")?;
    // `--conv im2col`: the 3x3 stride-1 convolutions through im2col instead
    // of Winograd's F(2x2, 3x3), to measure one against the other.
    match args
        .iter()
        .position(|a| a == "--conv")
        .map(|i| args.get(i + 1).map(String::as_str))
    {
        None | Some(Some("winograd")) => {}
        Some(Some("im2col")) => mat_core::kernels::conv2d::set_winograd(false),
        Some(other) => {
            return Err(format!("--conv: expected winograd or im2col, got {other:?}").into())
        }
    }
    if memory_probe {
        // Child process: a 5-epoch run, then its peak resident memory and
        // the peak of its allocations (counted from the start of `main`).
        train_epoch(&ds.train, 0, 5)?;
        let mb = |b: isize| b as f64 / (1024.0 * 1024.0);
        println!(
            "{} {}",
            peak_rss_mb().unwrap_or(f64::NAN),
            mb(PEAK_ALLOCATED.load(Relaxed))
        );
        return Ok(());
    }
    let runs = count_arg(&args, "--runs", 3)?;
    // SmallCNN training, the cheapest workload (about 7 s a pair) and the
    // one whose PyTorch side varies most between runs (its steady epochs
    // ranged over 2.6-4.2 s in six benches on one machine), gets more runs.
    let train_runs = count_arg(&args, "--train-runs", 9)?;
    let threads = rayon::current_num_threads();
    eprintln!("bench: {threads} threads, {runs} runs ({train_runs} for SmallCNN training)");
    // `--profile train|vgg|pgd|wrn|autoattack`: that workload alone, nothing written,
    // for running under a profiler (`perf record`).
    if let Some(w) = args
        .iter()
        .position(|a| a == "--profile")
        .and_then(|i| args.get(i + 1))
    {
        return profile_one(w, &ds, runs);
    }

    let mut reference = Reference::start(&dd.cache_dir("mnist-10k"), threads);
    if let Err(e) = &reference {
        eprintln!("PyTorch reference not measured: {e}");
    }
    let gemm = gemm_gflops();
    let numpy_gemm = match reference.as_mut() {
        Ok(r) => r.ask(serde_json::json!({"workload": "gemm"})).ok(),
        Err(_) => None,
    }
    .and_then(|a| a["gflops"].as_f64());
    eprintln!("gemm: {gemm:.0} GFLOP/s (numpy/OpenBLAS: {numpy_gemm:?})");

    let json = |w: &str| serde_json::json!({ "workload": w });
    let n_train = ds.train.len();
    let mut train = Workload::new(
        "train",
        "SmallCNN training, batch 128, 1 epoch of 7,996",
        n_train,
        // forward + input and weight gradients
        3.0 * SMALLCNN_FWD_FLOPS,
    )
    .warmed_up()
    .reference_restarted_every(TRAIN_RUNS_PER_REFERENCE);
    let mut trained = None;
    train.measure(
        train_runs,
        &mut reference,
        json("train"),
        |r| {
            let t = Instant::now();
            let (_, s) = train_epoch(&ds.train, r as u64, 1)?;
            trained = Some(s);
            Ok(t.elapsed().as_secs_f64())
        },
        |_| {},
    )?;
    let trained = trained.expect("runs >= 1");

    let mut vgg = Workload::new(
        "vgg",
        "VGG (paper's MNIST net) training, batch 128, 2,560 images",
        VGG_IMAGES,
        3.0 * VGG_FWD_FLOPS,
    )
    .warmed_up();
    let mut req = json("vgg");
    req["images"] = VGG_IMAGES.into();
    vgg.measure(
        runs,
        &mut reference,
        req,
        |r| vgg_run(&ds.train, r as u64),
        |_| {},
    )?;

    let model = frozen(&trained)?;
    // The attacks run on the same weights on both sides: the file the
    // reference loads, removed when the bench ends.
    let weights = tempfile::Builder::new()
        .prefix("mat-bench-")
        .suffix(".safetensors")
        .tempfile()?;
    let named: Vec<(String, Tensor)> = trained
        .vars()
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect();
    mat_core::artifact::write_tensors(
        weights.path(),
        named.iter().map(|(n, t)| (n.as_str(), t)),
        &Default::default(),
    )?;
    let n_pgd = 1024;
    let test = ds.test.subset(Some(n_pgd), Some(0))?;
    let attack = Pgd::linf(40, 0.01);
    let logits = |x: &Tensor| model.forward_t(x, false);
    let mut pgd = Workload::new(
        "pgd",
        "PGD-40 eps 0.3, batch 256, 1,024 images",
        n_pgd,
        // forward + input gradient, 40 steps
        40.0 * 2.0 * SMALLCNN_FWD_FLOPS,
    )
    .reference_restarted_every(1);
    let mut req = json("pgd");
    req["images"] = n_pgd.into();
    req["weights"] = weights.path().display().to_string().into();
    pgd.measure(
        runs,
        &mut reference,
        req,
        |r| {
            let mut rng = SeededRng::for_purpose(r as u64, "pgd");
            let t = Instant::now();
            for i in (0..n_pgd).step_by(256) {
                let x = test.images.narrow(0, i, 256)?;
                let y = test.labels.narrow(0, i, 256)?;
                // The attack proper, as the attack stage runs it (each step
                // projects); the reference script times the same loop.
                let p = Problem {
                    model: &logits,
                    x: &x,
                    y: &y,
                    eps: 0.3,
                };
                let adv = attack.propose(&p, &mut rng)?;
                let _pred = model.forward_t(&adv, false)?.argmax(D::Minus1)?;
            }
            Ok(t.elapsed().as_secs_f64())
        },
        |_| {},
    )?;

    // One run per side on 128 images: on a model PGD does not break
    // entirely, a run of mat's takes minutes.
    let (n_aa, aa_runs) = (128, 1);
    // The first 128 test images, as the reference takes them.
    let aa_test = ds.test.subset(Some(n_aa), None)?;
    let (spec, autoattack) = stage_autoattack()?;
    let mut aa = Workload::new(
        "autoattack",
        "AutoAttack standard eps 0.3, 128 images, 1 run (vs torchattacks' members, same weights and budget)",
        n_aa,
        // At most: APGD-CE's 100 steps on every image; the members after
        // it attack only what it left.
        100.0 * 2.0 * SMALLCNN_FWD_FLOPS,
    );
    let mut aa_robust = f64::NAN;
    let mut torch_robust = None;
    let mut req = json("autoattack");
    req["images"] = n_aa.into();
    req["weights"] = weights.path().display().to_string().into();
    // The reference composes torchattacks' members with the same budget:
    // its `AutoAttack(version="standard")` gives APGD, APGD-T and FAB 10
    // steps, not AutoAttack's 100.
    req["steps"] = spec.steps.into();
    req["queries"] = spec.section::<SquareSpec>("square")?.queries.into();
    aa.measure(
        aa_runs,
        &mut reference,
        req,
        |r| {
            let mut rng = SeededRng::for_purpose(r as u64, "autoattack");
            let t = Instant::now();
            let o = run_attack(
                autoattack.as_ref(),
                &logits,
                &aa_test.images,
                &aa_test.labels,
                0.3,
                &mut rng,
            )?;
            let s = t.elapsed().as_secs_f64();
            let labels = aa_test.labels.to_vec1::<u32>()?;
            aa_robust = (0..n_aa)
                .filter(|&i| o.clean_pred[i] == labels[i] && o.adv_pred[i] == labels[i])
                .count() as f64
                / n_aa as f64;
            Ok(s)
        },
        |a| torch_robust = a["robust"].as_f64(),
    )?;

    let mut wrn = Workload::new(
        "wrn",
        "WRN-16-4 training step, batch 128, 3x32x32",
        128 * WRN_STEPS,
        3.0 * wrn_fwd_flops(16, 4),
    );
    let mut req = json("wrn");
    req["steps"] = WRN_STEPS.into();
    wrn.measure(runs, &mut reference, req, |r| wrn_steps(r as u64), |_| {})?;

    let exe = std::env::current_exe()?;
    // The probe runs the same convolution path (`--conv`) as the workloads.
    let conv: Vec<&String> = match args.iter().position(|a| a == "--conv") {
        Some(i) => args[i..(i + 2).min(args.len())].iter().collect(),
        None => Vec::new(),
    };
    let mem = Command::new(exe)
        .args(conv)
        .arg("--memory-probe")
        .output()
        .ok()
        .and_then(|o| {
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            let mut mb = out.split_whitespace().map(|v| v.parse::<f64>().ok());
            Some(Memory {
                resident: mb.next()??,
                allocated: mb.next()??,
            })
        });
    eprintln!("peak memory of a 5-epoch run: {:?} MB", mem);

    let torch = Torch {
        version: reference
            .as_ref()
            .map(|r| r.version.clone())
            .map_err(|e| e.clone()),
        numpy_gemm,
        autoattack: match (&aa.torch, torch_robust) {
            (Err(e), _) => Err(e.clone()),
            (Ok(_), Some(r)) => Ok(r),
            (Ok(_), None) => Err("not run".into()),
        },
    };
    let workloads = [train, vgg, pgd, aa, wrn];
    write_report(&workloads, threads, gemm, mem, aa_robust, &torch)
}

/// What the report says of the reference beside the table.
struct Torch {
    /// PyTorch's version, or why the reference did not start.
    version: Result<String, String>,
    numpy_gemm: Option<f64>,
    /// torchattacks' AutoAttack: its robust accuracy, or why it did not run.
    autoattack: Result<f64, String>,
}

/// The AutoAttack stage's config, read and checked as mat-attack reads it
/// (the model is given by the caller, not by file), and the attack at eps
/// 0.3.
fn stage_autoattack() -> Res<(AttackSpec, Box<dyn Attack>)> {
    let spec = AttackSpec::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/attack/mnist/autoattack.yaml"),
        &["model=unused".to_string()],
    )?;
    let attack = spec.build(0.3, Context { objective: None })?;
    Ok((spec, attack))
}

/// SmallCNN training runs per PyTorch process (see
/// [`Workload::runs_per_reference`]).
const TRAIN_RUNS_PER_REFERENCE: usize = 3;

/// The value of `flag` in `args`, a count of at least 1, or `default`
/// where it is not given.
fn count_arg(args: &[String], flag: &str, default: usize) -> Res<usize> {
    let Some(i) = args.iter().position(|a| a == flag) else {
        return Ok(default);
    };
    match args.get(i + 1) {
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!("{flag}: expected a count of at least 1, got {v:?}").into()),
        },
        None => Err(format!("{flag}: expected a count of at least 1, got nothing").into()),
    }
}

fn profile_one(workload: &str, ds: &data::Dataset, runs: usize) -> Res<()> {
    for r in 0..runs {
        let t = Instant::now();
        match workload {
            "train" => {
                train_epoch(&ds.train, r as u64, 1)?;
            }
            "vgg" => {
                vgg_run(&ds.train, r as u64)?;
            }
            "pgd" => {
                let (_, store) = train_epoch(&ds.train.subset(Some(512), Some(0))?, 0, 1)?;
                let model = frozen(&store)?;
                let test = ds.test.subset(Some(256), Some(0))?;
                let logits = |x: &Tensor| model.forward_t(x, false);
                let mut rng = SeededRng::for_purpose(r as u64, "pgd");
                let t = Instant::now();
                let p = Problem {
                    model: &logits,
                    x: &test.images,
                    y: &test.labels,
                    eps: 0.3,
                };
                Pgd::linf(40, 0.01).propose(&p, &mut rng)?;
                eprintln!("pgd-40 on 256: {:.2} s", t.elapsed().as_secs_f64());
            }
            "wrn" => {
                wrn_steps(r as u64)?;
            }
            "autoattack" => {
                // The bench's model (its last training run's of the default
                // three: seed 2) and its 128 images, with the stage's config.
                let (_, store) = train_epoch(&ds.train, 2, 1)?;
                let model = frozen(&store)?;
                let logits = |x: &Tensor| model.forward_t(x, false);
                let test = ds.test.subset(Some(128), None)?;
                let (_, autoattack) = stage_autoattack()?;
                let mut rng = SeededRng::for_purpose(r as u64, "autoattack");
                let t = Instant::now();
                run_attack(
                    autoattack.as_ref(),
                    &logits,
                    &test.images,
                    &test.labels,
                    0.3,
                    &mut rng,
                )?;
                eprintln!("autoattack on 128: {:.2} s", t.elapsed().as_secs_f64());
            }
            other => {
                return Err(format!(
                    "--profile: unknown workload {other:?} (train, vgg, pgd, wrn, autoattack)"
                )
                .into())
            }
        }
        eprintln!("{workload} run {r}: {:.2} s", t.elapsed().as_secs_f64());
    }
    Ok(())
}

fn write_report(
    workloads: &[Workload],
    threads: usize,
    gemm: f64,
    mem: Option<Memory>,
    aa_robust: f64,
    torch: &Torch,
) -> Res<()> {
    let tput = |n: usize, s: &[f64]| (n as f64 / min(s).max(1e-9), n as f64 / median(s).max(1e-9));
    let mut md = String::new();
    let date = run_cmd("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    writeln!(md, "# Benchmarks\n")?;
    writeln!(
        md,
        "Written by `just bench` on {date}. Machine: {}, {threads} threads for both sides.",
        cpu_model()
    )?;
    let torch_version = match &torch.version {
        Ok(v) => format!("PyTorch {v} (CPU)"),
        Err(_) => "PyTorch not measured".into(),
    };
    let rustc = run_cmd("rustc", &["--version"]);
    writeln!(
        md,
        "Versions: {rustc}, candle 0.11, gemm 0.19 (built with its AVX-512 kernels, which \
         it runs where the CPU has AVX-512); {torch_version}. Kernels: {}.\n",
        kernels_in_use()
    )?;
    writeln!(
        md,
        "Throughput in images/s: best (min time) and median of the runs per side (the runs \
         column). Each workload's runs alternate between mat and PyTorch (mat first in even \
         runs, PyTorch first in odd ones), so that the machine's drift hits both. Where the \
         runs column says \"+ warm-up\", each side ran once more first, untimed: a process's \
         first epoch runs slower, PyTorch's most. Where it names PyTorch's processes, its runs \
         came from that many fresh ones in equal turns: PyTorch's steady speed differs from \
         process to process.\n"
    )?;
    writeln!(md, "| workload | runs | mat best | mat median | PyTorch best | PyTorch median | mat/PyTorch (median) | GEMM-bound limit |")?;
    writeln!(md, "|---|---|---|---|---|---|---|---|")?;
    let mut ratios = HashMap::new();
    for w in workloads {
        let (best, med) = tput(w.images, &w.seconds);
        let (tb, tm, ratio) = match &w.torch {
            Ok(s) if !s.is_empty() => {
                let (b, m) = tput(w.images, s);
                (format!("{b:.1}"), format!("{m:.1}"), med / m)
            }
            _ => ("-".into(), "-".into(), f64::NAN),
        };
        ratios.insert(w.key, ratio);
        let limit = gemm * 1e9 / w.flops_per_image;
        writeln!(
            md,
            "| {} | {} | {best:.1} | {med:.1} | {tb} | {tm} | {ratio:.2} | {limit:.0} |",
            w.name,
            w.runs_note(),
        )?;
    }
    writeln!(md)?;
    let numpy = match torch.numpy_gemm {
        Some(g) => format!("; numpy/OpenBLAS in the same run: {g:.0} GFLOP/s"),
        None => String::new(),
    };
    writeln!(
        md,
        "- GEMM rate (f32 1024³, `gemm` crate, {threads} threads): {gemm:.0} GFLOP/s{numpy}."
    )?;
    let per_image: Vec<String> = workloads
        .iter()
        .map(|w| {
            format!(
                "{:.1} MFLOP per image for {}",
                w.flops_per_image / 1e6,
                w.key
            )
        })
        .collect();
    writeln!(
        md,
        "- GEMM-bound limit: images/s if every FLOP ran at that GEMM rate ({}).",
        per_image.join(", ")
    )?;
    if let Some(m) = mem {
        writeln!(
            md,
            "- Peak resident memory of a 5-epoch natural training run (whole process, data included): {:.0} MB, of which the peak of the program's allocations {:.0} MB (the rest: code, and freed memory the allocator keeps mapped).",
            m.resident, m.allocated
        )?;
    }
    match (&torch.version, &torch.autoattack) {
        (Err(e), _) => writeln!(md, "- PyTorch reference not measured: {e}")?,
        (Ok(_), Ok(r)) => writeln!(
            md,
            "- AutoAttack's robust accuracy on the 128 images: mat {:.1}%, torchattacks {:.1}% (same weights and budget: torchattacks' APGD-CE, APGD-T, FAB-T and Square with AutoAttack's 100 steps and 5000 queries, where its `AutoAttack` class gives 10 steps; each side seeds its own random starts).",
            100.0 * aa_robust,
            100.0 * r
        )?,
        (Ok(_), Err(e)) => writeln!(md, "- torchattacks' AutoAttack not measured: {e}")?,
    }
    for w in workloads {
        if let Err(e) = &w.torch {
            writeln!(md, "- PyTorch's {} not measured: {e}", w.key)?;
        }
    }
    writeln!(md, "- Where the time goes (a perf profile) and what would close the gap: README, \"Speed on the CPU\".")?;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../BENCHMARKS.md");
    mat_core::artifact::write_atomic(&path, md.as_bytes())?;
    print!("{md}");
    let ratio = |k: &str| ratios.get(k).copied().unwrap_or(f64::NAN);
    println!(
        "\nmat/pytorch throughput: train {:.2}, vgg {:.2}, pgd {:.2}, wrn {:.2}",
        ratio("train"),
        ratio("vgg"),
        ratio("pgd"),
        ratio("wrn")
    );
    Ok(())
}
