//! Training-mode batch normalisation over `[N, C, H, W]`, optionally fused
//! with the ReLU after it, with a two-pass backward.
//!
//! Every batch norm of the WideResNets is followed by a ReLU. candle-nn's
//! training forward is a chain of broadcast ops over a transposed copy of the
//! input (a transpose, a mean, a square, another mean, a subtraction, a
//! division, a multiplication, an addition and the transpose back), and its
//! backward walks the same chain: with the other elementwise ops, 23% of a
//! WRN-16-4 training step. Here the forward reads the input three times
//! (mean, variance, output) and writes once; the backward reads it twice.
//!
//! With `xhat = (x - mean) · invstd`, `z = gamma · xhat + beta`, `y = relu(z)`
//! (Ioffe & Szegedy 2015, Algorithm 1; the biased variance normalises) and
//! `dz = dy · [y > 0]`, over the `M = N·H·W` values of a channel:
//! `dbeta = Σ dz`, `dgamma = Σ dz · xhat`,
//! `dx = gamma · invstd · (dz - dbeta/M - xhat · dgamma/M)`.

use std::mem::MaybeUninit;
use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{f32_slice, lane_sum, par_buffer, parameter_gradient, vectorized, LANES};

/// The batch's per-channel statistics, kept for the backward pass and for
/// the running averages.
#[derive(Debug, Clone)]
pub struct BatchStats {
    pub mean: Vec<f32>,
    /// The biased variance (divided by `M`), which normalises.
    pub var: Vec<f32>,
    pub invstd: Vec<f32>,
    /// Values per channel, `N·H·W`.
    pub count: usize,
}

struct BnTrain {
    eps: f64,
    relu: bool,
    stats: Arc<OnceLock<BatchStats>>,
}

/// `[N, C, H·W]` of a 4-d layout.
fn dims(l: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    match l.dims() {
        [n, c, h, w] => Ok((*n, *c, h * w)),
        d => candle_core::bail!("batch norm takes [N, C, H, W], got {d:?}"),
    }
}

/// `(Σ dz, Σ dz · (x - mu))` over a block, where `dz = dy · [y > 0]` (or
/// `dy` without a ReLU), in [`LANES`] partial sums.
#[inline(always)]
fn lane_sums_bwd(x: &[f32], y: &[f32], dy: &[f32], mu: f32, relu: bool) -> (f32, f32) {
    let term = |x: f32, y: f32, dy: f32| {
        let dz = if !relu || y > 0.0 { dy } else { 0.0 };
        (dz, dz * (x - mu))
    };
    let (mut a, mut b) = ([0f32; LANES], [0f32; LANES]);
    let (xc, yc, dc) = (
        x.chunks_exact(LANES),
        y.chunks_exact(LANES),
        dy.chunks_exact(LANES),
    );
    let tail = xc.remainder().len();
    for ((xs, ys), ds) in xc.zip(yc).zip(dc) {
        let xs: &[f32; LANES] = xs.try_into().expect("exact chunks");
        let ys: &[f32; LANES] = ys.try_into().expect("exact chunks");
        let ds: &[f32; LANES] = ds.try_into().expect("exact chunks");
        for l in 0..LANES {
            let (p, q) = term(xs[l], ys[l], ds[l]);
            a[l] += p;
            b[l] += q;
        }
    }
    let (mut sa, mut sb) = (a.iter().sum::<f32>(), b.iter().sum::<f32>());
    let at = x.len() - tail;
    for i in at..x.len() {
        let (p, q) = term(x[i], y[i], dy[i]);
        sa += p;
        sb += q;
    }
    (sa, sb)
}

/// Per channel, channels in parallel: the sums of `f(ch, at)` over the
/// channel's `N` blocks, where `at` is where a block of `H·W` values starts.
/// `f` sums its block in f32; the blocks add up in f64.
///
/// Runs under [`vectorized`]: callers pass `f` with `#[inline(always)]`.
fn per_channel<T: Send + Default + std::ops::AddAssign>(
    (n, c, hw): (usize, usize, usize),
    f: impl Fn(usize, usize) -> T + Sync,
) -> Vec<T> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            vectorized(
                #[inline(always)]
                || {
                    let mut sum = T::default();
                    for i in 0..n {
                        sum += f(ch, (i * c + ch) * hw);
                    }
                    sum
                },
            )
        })
        .collect()
}

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        "mat-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, "batch norm input")?;
        let gamma = f32_slice(ws, wl, "batch norm weight")?;
        let beta = f32_slice(bs, bl, "batch norm bias")?;
        let (n, c, hw) = dims(xl)?;
        if gamma.len() != c || beta.len() != c {
            candle_core::bail!(
                "batch norm of {c} channels: weight has {}, bias {}",
                gamma.len(),
                beta.len()
            )
        }
        let m = (n * hw) as f64;
        // Two passes (mean, then squared deviations): E[x²] - E[x]² loses
        // the variance of large activations to cancellation. Each block is
        // summed in f32, the blocks in f64.
        let block = |at: usize| &x[at..at + hw];
        let mean: Vec<f64> = per_channel((n, c, hw), |_, at| block(at).iter().sum::<f32>() as f64)
            .into_iter()
            .map(|s| s / m)
            .collect();
        let var: Vec<f64> = per_channel(
            (n, c, hw),
            #[inline(always)]
            |ch, at| {
                let mu = mean[ch] as f32;
                lane_sum(block(at), |v| (v - mu) * (v - mu)) as f64
            },
        )
        .into_iter()
        .map(|s| s / m)
        .collect();
        let invstd: Vec<f32> = var
            .iter()
            .map(|v| (1.0 / (v + self.eps).sqrt()) as f32)
            .collect();
        let mean: Vec<f32> = mean.into_iter().map(|v| v as f32).collect();
        // z = x · scale + shift per channel.
        let scale: Vec<f32> = (0..c).map(|ch| gamma[ch] * invstd[ch]).collect();
        let shift: Vec<f32> = (0..c).map(|ch| beta[ch] - mean[ch] * scale[ch]).collect();
        let relu = self.relu;
        let fill = |i: usize, y: &mut [MaybeUninit<f32>]| {
            vectorized(
                #[inline(always)]
                || {
                    for ch in 0..c {
                        let at = (i * c + ch) * hw;
                        let (s, t) = (scale[ch], shift[ch]);
                        let out = &mut y[ch * hw..(ch + 1) * hw];
                        for (o, &v) in out.iter_mut().zip(&x[at..at + hw]) {
                            let z = v * s + t;
                            *o = MaybeUninit::new(if relu { z.max(0.0) } else { z });
                        }
                    }
                },
            )
        };
        // SAFETY: each part is one image, c planes of hw, all written.
        let y = unsafe { par_buffer(x.len(), c * hw, fill) };
        let _ = self.stats.set(BatchStats {
            mean,
            var: var.into_iter().map(|v| v as f32).collect(),
            invstd,
            count: n * hw,
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(stats) = self.stats.get() else {
            candle_core::bail!("batch norm backward before its forward")
        };
        let op = BnBwd {
            gamma: w.flatten_all()?.to_vec1::<f32>()?,
            stats: stats.clone(),
            relu: self.relu,
        };
        let c = op.gamma.len();
        let flat = x.apply_op3_no_bwd(y, &dy.contiguous()?, &op)?;
        let dx = flat.narrow(0, 0, x.elem_count())?.reshape(x.shape())?;
        let dgamma = parameter_gradient(&flat, x.elem_count(), w)?;
        let dbeta = parameter_gradient(&flat, x.elem_count() + c, b)?;
        Ok((
            x.track_op().then_some(dx),
            w.track_op().then_some(dgamma),
            b.track_op().then_some(dbeta),
        ))
    }
}

/// Two sums carried together through [`per_channel`].
#[derive(Default)]
struct Pair(f64, f64);

impl std::ops::AddAssign for Pair {
    fn add_assign(&mut self, o: Self) {
        self.0 += o.0;
        self.1 += o.1;
    }
}

/// `[dx..., dgamma..., dbeta...]`, flat, from `(x, y, dy)`.
struct BnBwd {
    gamma: Vec<f32>,
    stats: BatchStats,
    relu: bool,
}

impl CustomOp3 for BnBwd {
    fn name(&self) -> &'static str {
        "mat-batch-norm-train-bwd"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, "batch norm input")?;
        let y = f32_slice(ys, yl, "batch norm output")?;
        let dy = f32_slice(gs, gl, "batch norm output gradient")?;
        let (n, c, hw) = dims(xl)?;
        if y.len() != x.len() || dy.len() != x.len() {
            candle_core::bail!(
                "batch norm backward: {} inputs, {} outputs, {} gradients",
                x.len(),
                y.len(),
                dy.len()
            )
        }
        let BatchStats {
            mean,
            invstd,
            count,
            ..
        } = &self.stats;
        let relu = self.relu;
        // dz = dy where the ReLU passed (y > 0), everywhere without one.
        // One pass for both sums: Σ dz and Σ dz · xhat.
        let sums: Vec<Pair> = per_channel(
            (n, c, hw),
            #[inline(always)]
            |ch, at| {
                let r = at..at + hw;
                let (db, dg) = lane_sums_bwd(&x[r.clone()], &y[r.clone()], &dy[r], mean[ch], relu);
                Pair(db as f64, (dg * invstd[ch]) as f64)
            },
        );
        let dbeta: Vec<f64> = sums.iter().map(|p| p.0).collect();
        let dgamma: Vec<f64> = sums.iter().map(|p| p.1).collect();
        let m = *count as f64;
        // dx = k · (dz - a - (x - mean) · b) per channel.
        let k: Vec<f32> = (0..c).map(|ch| self.gamma[ch] * invstd[ch]).collect();
        let a: Vec<f32> = dbeta.iter().map(|&s| (s / m) as f32).collect();
        let bb: Vec<f32> = (0..c)
            .map(|ch| (dgamma[ch] / m) as f32 * invstd[ch])
            .collect();
        let len = x.len();
        let fill = |i: usize, dx: &mut [MaybeUninit<f32>]| {
            vectorized(
                #[inline(always)]
                || {
                    for ch in 0..c {
                        let at = (i * c + ch) * hw;
                        let (mu, k, a, b) = (mean[ch], k[ch], a[ch], bb[ch]);
                        let r = at..at + hw;
                        let out = dx[ch * hw..(ch + 1) * hw].iter_mut();
                        for (o, ((&x, &y), &dy)) in
                            out.zip(x[r.clone()].iter().zip(&y[r.clone()]).zip(&dy[r]))
                        {
                            let dz = if !relu || y > 0.0 { dy } else { 0.0 };
                            *o = MaybeUninit::new(k * (dz - a - (x - mu) * b));
                        }
                    }
                },
            )
        };
        // SAFETY: each part is one image, c planes of hw, all written.
        let mut out = unsafe { par_buffer(len, c * hw, fill) };
        out.extend(dgamma.iter().map(|&v| v as f32));
        out.extend(dbeta.iter().map(|&v| v as f32));
        let total = out.len();
        Ok((CpuStorage::F32(out), Shape::from(total)))
    }
}

/// Training-mode batch norm of `x` (`[N, C, H, W]`, f32 on the CPU) with
/// `gamma` and `beta` (`[C]`), followed by a ReLU if `relu`; differentiable
/// in all three. Returns the output and the batch's statistics (for the
/// running averages).
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> candle_core::Result<(Tensor, BatchStats)> {
    let stats = Arc::new(OnceLock::new());
    let op = BnTrain {
        eps,
        relu,
        stats: stats.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let Some(s) = stats.get() else {
        candle_core::bail!("batch norm forward left no statistics")
    };
    Ok((y, s.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRng;
    use candle_core::{Device, Var};

    /// Central differences of `L = Σ bn(x; gamma, beta) · r`, in f64 over
    /// an f32 forward, with and without the ReLU. Batch norm is not linear
    /// in x, so the step is small and the tolerance loose enough for f32.
    #[test]
    fn gradients_equal_finite_differences() {
        let d = Device::Cpu;
        let mut rng = SeededRng::new(7);
        let (n, c, h, w) = (3, 2, 3, 2);
        let h_step = 1e-2f32;
        for relu in [false, true] {
            let xv = rng.normal_vec(n * c * h * w, 0.3, 1.5);
            let gv = rng.normal_vec(c, 1.0, 0.3);
            let bv = rng.normal_vec(c, 0.2, 0.3);
            let r = rng.normal((n, c, h, w), 0.0, 1.0, &d).unwrap();
            let loss = |xs: &[f32], gs: &[f32], bs: &[f32]| -> f64 {
                let (y, _) = batch_norm_train(
                    &Tensor::from_slice(xs, (n, c, h, w), &d).unwrap(),
                    &Tensor::from_slice(gs, c, &d).unwrap(),
                    &Tensor::from_slice(bs, c, &d).unwrap(),
                    1e-5,
                    relu,
                )
                .unwrap();
                crate::kernels::weighted_sum(&y, &r)
            };
            let x = Var::from_slice(&xv, (n, c, h, w), &d).unwrap();
            let g = Var::from_slice(&gv, c, &d).unwrap();
            let b = Var::from_slice(&bv, c, &d).unwrap();
            let (y, _) = batch_norm_train(&x, &g, &b, 1e-5, relu).unwrap();
            let grads = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            // Views into the flat output would keep x's gradient alive
            // with them (see `parameter_gradient`).
            for v in [&g, &b] {
                let grad = grads.get(v).unwrap();
                assert_eq!(crate::kernels::storage_len(grad), grad.elem_count());
            }
            let fd = |which: usize, i: usize| -> f32 {
                let mut args = [xv.clone(), gv.clone(), bv.clone()];
                args[which][i] += h_step;
                let up = loss(&args[0], &args[1], &args[2]);
                args[which][i] -= 2.0 * h_step;
                let down = loss(&args[0], &args[1], &args[2]);
                ((up - down) / (2.0 * h_step as f64)) as f32
            };
            for (which, var, len) in [(0, &x, xv.len()), (1, &g, c), (2, &b, c)] {
                let got: Vec<f32> = grads
                    .get(var)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let want: Vec<f32> = (0..len).map(|i| fd(which, i)).collect();
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
                for (i, (a, e)) in got.iter().zip(&want).enumerate() {
                    // A ReLU kink inside the step makes one difference
                    // quotient wrong by up to its size: none lies that close
                    // here (checked by the tolerance).
                    assert!(
                        (a - e).abs() <= 2e-2 * scale,
                        "relu {relu}, argument {which}[{i}]: {a} vs {e} (scale {scale})"
                    );
                }
            }
        }
    }
}
