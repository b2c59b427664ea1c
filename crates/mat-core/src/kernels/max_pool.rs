//! Max-pooling with window = stride (floor mode), as `nn.MaxPool2d(k, k)`.
//!
//! The backward pass sends each output gradient to the first maximum of its
//! window, as PyTorch does. candle's own backward (an upsample, a comparison
//! and an average pool) divides every gradient by the window area (measured
//! on candle 0.11: exactly 1/4 of PyTorch's for 2x2 windows) and splits it
//! among tied maxima.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};

use std::mem::MaybeUninit;

use super::{copy_short, f32_slice, par_buffer, vectorized, write_short};

/// A `k x k` max-pool with stride `k`.
#[derive(Clone, Copy)]
pub(crate) struct Pool {
    pub(crate) k: usize,
}

impl Pool {
    /// The output's height and width for an `h x w` input (floor mode).
    pub(crate) fn out_dims(&self, h: usize, w: usize) -> (usize, usize) {
        (h / self.k, w / self.k)
    }

    /// [`Pool::out_dims`], or an error where the window does not fit.
    pub(crate) fn checked_out_dims(
        &self,
        h: usize,
        w: usize,
    ) -> candle_core::Result<(usize, usize)> {
        if self.k == 0 || h < self.k || w < self.k {
            candle_core::bail!("max_pool2d: window {} does not fit a {h}x{w} input", self.k)
        }
        Ok(self.out_dims(h, w))
    }

    fn dims(&self, l: &Layout) -> candle_core::Result<(usize, usize, usize, usize, usize)> {
        let &[n, c, h, w] = l.dims() else {
            candle_core::bail!("max_pool2d: expected (N, C, H, W), got {:?}", l.dims())
        };
        let (oh, ow) = self.checked_out_dims(h, w)?;
        Ok((n * c, h, w, oh, ow))
    }

    /// Index (within the plane) of the first maximum of window (oy, ox);
    /// a NaN wins, as in PyTorch.
    #[inline]
    fn argmax(&self, plane: &[f32], w: usize, oy: usize, ox: usize) -> usize {
        let mut best = oy * self.k * w + ox * self.k;
        let mut val = plane[best];
        for i in 0..self.k {
            let row = (oy * self.k + i) * w + ox * self.k;
            for (j, &v) in plane[row..row + self.k].iter().enumerate() {
                if beats(v, val) {
                    val = v;
                    best = row + j;
                }
            }
        }
        best
    }
}

/// `v` replaces the running maximum `best`: larger, or the first NaN.
/// Non-short-circuit operators keep it free of branches.
#[inline(always)]
fn beats(v: f32, best: f32) -> bool {
    (v > best) | (v.is_nan() & !best.is_nan())
}

/// The first maximum of a 2x2 window `[a, b; c, d]` and its position
/// (0 = a, 1 = b, 2 = c, 3 = d). Selects instead of branches: on activations
/// the comparisons are coin flips, and the loops below vectorise.
#[inline(always)]
fn first_max4(a: f32, b: f32, c: f32, d: f32) -> (f32, u32) {
    let (mut v, mut j) = (a, 0);
    for (x, i) in [(b, 1), (c, 2), (d, 3)] {
        let take = beats(x, v);
        v = if take { x } else { v };
        j = if take { i } else { j };
    }
    (v, j)
}

/// Forward of one output row for 2x2 windows (the network's only size).
/// Blocks of 8 outputs work on local arrays, so that they vectorise (the
/// compiler cannot rule out that `y` overlaps the inputs otherwise).
#[inline(always)]
fn pool2_row(top: &[f32], bottom: &[f32], y: &mut [MaybeUninit<f32>]) {
    let blocks = y.len() / 8;
    let (y8, y_rest) = y.split_at_mut(8 * blocks);
    let (t16, b16) = (
        top[..16 * blocks].chunks_exact(16),
        bottom[..16 * blocks].chunks_exact(16),
    );
    for ((y, t), b) in y8.chunks_exact_mut(8).zip(t16).zip(b16) {
        let t: [f32; 16] = t.try_into().expect("a block of 16");
        let b: [f32; 16] = b.try_into().expect("a block of 16");
        let y: &mut [MaybeUninit<f32>; 8] = y.try_into().expect("a block of 8");
        let mut out = [0f32; 8];
        for (j, o) in out.iter_mut().enumerate() {
            *o = first_max4(t[2 * j], t[2 * j + 1], b[2 * j], b[2 * j + 1]).0;
        }
        *y = out.map(MaybeUninit::new);
    }
    let (top, bottom) = (&top[16 * blocks..], &bottom[16 * blocks..]);
    for ((y, t), b) in y_rest
        .iter_mut()
        .zip(top.chunks_exact(2))
        .zip(bottom.chunks_exact(2))
    {
        *y = MaybeUninit::new(first_max4(t[0], t[1], b[0], b[1]).0);
    }
}

/// Backward of one output row for 2x2 windows: windows do not overlap, so
/// each input gets its window's gradient or 0, written, never accumulated.
/// `RELU`: the input is a ReLU's output, and the gradient goes on through
/// it: a window whose maximum is not positive passes none.
#[inline(always)]
fn pool2_row_bwd<const RELU: bool>(
    top: &[f32],
    bottom: &[f32],
    dy: &[f32],
    dtop: &mut [f32],
    dbottom: &mut [f32],
) {
    // Blocks of 8 windows on local arrays, as in the forward.
    let blocks = dy.len() / 8;
    let t16 = top[..16 * blocks].chunks_exact(16);
    let b16 = bottom[..16 * blocks].chunks_exact(16);
    let g8 = dy[..8 * blocks].chunks_exact(8);
    let dt16 = dtop[..16 * blocks].chunks_exact_mut(16);
    let db16 = dbottom[..16 * blocks].chunks_exact_mut(16);
    for ((((t, b), g), dt), db) in t16.zip(b16).zip(g8).zip(dt16).zip(db16) {
        let t: [f32; 16] = t.try_into().expect("a block of 16");
        let b: [f32; 16] = b.try_into().expect("a block of 16");
        let g: [f32; 8] = g.try_into().expect("a block of 8");
        let dt: &mut [f32; 16] = dt.try_into().expect("a block of 16");
        let db: &mut [f32; 16] = db.try_into().expect("a block of 16");
        let (mut ot, mut ob) = ([0f32; 16], [0f32; 16]);
        for j in 0..8 {
            let (v, w) = first_max4(t[2 * j], t[2 * j + 1], b[2 * j], b[2 * j + 1]);
            let pass = !RELU || v > 0.0;
            let pick = |i| if w == i && pass { g[j] } else { 0.0 };
            ot[2 * j] = pick(0);
            ot[2 * j + 1] = pick(1);
            ob[2 * j] = pick(2);
            ob[2 * j + 1] = pick(3);
        }
        *dt = ot;
        *db = ob;
    }
    let (top, bottom, dy) = (
        &top[16 * blocks..],
        &bottom[16 * blocks..],
        &dy[8 * blocks..],
    );
    let (dtop, dbottom) = (&mut dtop[16 * blocks..], &mut dbottom[16 * blocks..]);
    let windows = top
        .chunks_exact(2)
        .zip(bottom.chunks_exact(2))
        .zip(dtop.chunks_exact_mut(2).zip(dbottom.chunks_exact_mut(2)));
    for (((t, b), (dt, db)), &g) in windows.zip(dy) {
        let (v, j) = first_max4(t[0], t[1], b[0], b[1]);
        let pass = !RELU || v > 0.0;
        let pick = |i| if j == i && pass { g } else { 0.0 };
        dt[0] = pick(0);
        dt[1] = pick(1);
        db[0] = pick(2);
        db[1] = pick(3);
    }
}

/// Planes per rayon task: a SmallCNN plane is 144 to 576 floats, far too
/// little work for a task of its own (rayon's scheduling showed in the
/// profile); about 16K input floats per task, and at least two tasks per
/// thread.
fn planes_per_task(planes: usize, plane_len: usize) -> usize {
    let by_size = (16_384 / plane_len.max(1)).max(1);
    let by_threads = planes.div_ceil(rayon::current_num_threads() * 2).max(1);
    by_size.min(by_threads)
}

impl Pool {
    /// One plane's output `y` (every element) from its input `x`; `rows`
    /// is scratch of at least `4·oh·ow` floats.
    #[inline(always)]
    fn forward_plane(
        &self,
        x: &[f32],
        y: &mut [MaybeUninit<f32>],
        w: usize,
        (oh, ow): (usize, usize),
        rows: &mut [f32],
    ) {
        if self.k == 2 {
            let (top, bottom) = window_rows(x, w, oh, ow, rows);
            pool2_row(top, bottom, y);
            return;
        }
        for oy in 0..oh {
            for ox in 0..ow {
                y[oy * ow + ox] = MaybeUninit::new(x[self.argmax(x, w, oy, ox)]);
            }
        }
    }
}

/// The top and bottom rows of a plane's 2x2 windows, each gathered into one
/// contiguous run (`oh · 2ow` floats) of `rows`, so that the block loops of
/// [`pool2_row`] and [`pool2_row_bwd`] run over the whole plane at once:
/// row by row, SmallCNN's 4- and 12-window rows left 4 windows of each to
/// the scalar remainder loop (the max-pool's share of a one-thread PGD
/// step fell from 8.5% to 6.9% without it).
#[inline(always)]
fn window_rows<'a>(
    x: &[f32],
    w: usize,
    oh: usize,
    ow: usize,
    rows: &'a mut [f32],
) -> (&'a [f32], &'a [f32]) {
    let seg = 2 * ow;
    let (top, bottom) = rows[..2 * oh * seg].split_at_mut(oh * seg);
    for (oy, (t, b)) in top
        .chunks_exact_mut(seg)
        .zip(bottom.chunks_exact_mut(seg))
        .enumerate()
    {
        copy_short(t, &x[2 * oy * w..]);
        copy_short(b, &x[(2 * oy + 1) * w..]);
    }
    (top, bottom)
}

impl Pool {
    /// The output of `planes` planes of `h x w` floats in `x` (every plane's
    /// windows, floor mode).
    pub(crate) fn forward(&self, x: &[f32], planes: usize, (h, w): (usize, usize)) -> Vec<f32> {
        let (oh, ow) = self.out_dims(h, w);
        let per = planes_per_task(planes, h * w);
        let fill = |t: usize, ys: &mut [MaybeUninit<f32>]| {
            let mut rows = vec![0f32; 4 * oh * ow];
            vectorized(
                #[inline(always)]
                || {
                    for (j, y) in ys.chunks_mut(oh * ow).enumerate() {
                        let i = t * per + j;
                        let x = &x[i * h * w..(i + 1) * h * w];
                        self.forward_plane(x, y, w, (oh, ow), &mut rows);
                    }
                },
            )
        };
        // SAFETY: `forward_plane` writes every element of its plane.
        unsafe { par_buffer(planes * oh * ow, per * oh * ow, fill) }
    }
}

impl CustomOp1 for Pool {
    fn name(&self) -> &'static str {
        "mat-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (planes, h, w, oh, ow) = self.dims(l)?;
        let x = f32_slice(s, l, "max_pool2d input")?;
        let y = self.forward(x, planes, (h, w));
        let d = l.dims();
        Ok((CpuStorage::F32(y), Shape::from((d[0], d[1], oh, ow))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&dy.contiguous()?, &PoolBwd(*self))?,
        ))
    }
}

struct PoolBwd(Pool);

impl CustomOp2 for PoolBwd {
    fn name(&self) -> &'static str {
        "mat-max-pool2d-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (planes, h, w, oh, ow) = self.0.dims(l1)?;
        let (x, dy) = (
            f32_slice(s1, l1, "max_pool2d input")?,
            f32_slice(s2, l2, "max_pool2d gradient")?,
        );
        if dy.len() != planes * oh * ow {
            candle_core::bail!(
                "max_pool2d backward: {} gradients for {} outputs",
                dy.len(),
                planes * oh * ow
            )
        }
        let per = planes_per_task(planes, h * w);
        let fill = |t: usize, dxs: &mut [MaybeUninit<f32>]| {
            let mut rows = vec![0f32; self.0.backward_scratch(h, w)];
            let planes = dxs.len() / (h * w);
            let (x, dy) = (&x[t * per * h * w..], &dy[t * per * oh * ow..]);
            vectorized(
                #[inline(always)]
                || {
                    self.0
                        .backward::<false>(x, dy, dxs, (planes, h, w), &mut rows)
                },
            )
        };
        // SAFETY: `backward` writes every element of its planes.
        let dx = unsafe { par_buffer(x.len(), per * h * w, fill) };
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

impl Pool {
    /// Floats of scratch that [`Pool::backward`] needs for `h x w` planes.
    pub(crate) fn backward_scratch(&self, h: usize, w: usize) -> usize {
        let (oh, ow) = self.out_dims(h, w);
        8 * oh * ow
    }

    /// The input gradient `dx` (every element) of `planes` planes of
    /// `h x w` inputs `x`, from their output gradient `dy`; `rows` is
    /// scratch of [`Pool::backward_scratch`] floats.
    ///
    /// `RELU`: `x` is a ReLU's output and `dx` goes on through it, to the
    /// ReLU's input: `dy` where the window's first maximum is positive (the
    /// ReLU passes it), 0 elsewhere. Bit for bit the pool's gradient masked
    /// by `x > 0` afterwards, in one pass.
    #[inline(always)]
    pub(crate) fn backward<const RELU: bool>(
        &self,
        x: &[f32],
        dy: &[f32],
        dx: &mut [MaybeUninit<f32>],
        (planes, h, w): (usize, usize, usize),
        rows: &mut [f32],
    ) {
        let (oh, ow) = self.out_dims(h, w);
        for ((dx, x), dy) in dx[..planes * h * w]
            .chunks_exact_mut(h * w)
            .zip(x.chunks_exact(h * w))
            .zip(dy.chunks_exact(oh * ow))
        {
            self.backward_plane::<RELU>(x, dy, dx, w, (oh, ow), rows);
        }
    }

    /// One plane of [`Pool::backward`].
    #[inline(always)]
    fn backward_plane<const RELU: bool>(
        &self,
        x: &[f32],
        dy: &[f32],
        dx: &mut [MaybeUninit<f32>],
        w: usize,
        (oh, ow): (usize, usize),
        rows: &mut [f32],
    ) {
        let zero = MaybeUninit::new(0.0);
        if self.k == 2 {
            // The whole plane's windows at once (see `window_rows`), then
            // each gradient row back in place; rows and columns that floor
            // mode drops get 0.
            let (xs, grads) = rows.split_at_mut(4 * oh * ow);
            let (top, bottom) = window_rows(x, w, oh, ow, xs);
            let seg = 2 * ow;
            let (dtop, dbottom) = grads[..2 * oh * seg].split_at_mut(oh * seg);
            pool2_row_bwd::<RELU>(top, bottom, dy, dtop, dbottom);
            let (pooled, dropped) = dx.split_at_mut(2 * oh * w);
            let windows = dtop.chunks_exact(seg).zip(dbottom.chunks_exact(seg));
            for (rows, (t, b)) in pooled.chunks_exact_mut(2 * w).zip(windows) {
                for (row, src) in rows.chunks_exact_mut(w).zip([t, b]) {
                    let (head, tail) = row.split_at_mut(seg);
                    write_short(head, src);
                    tail.fill(zero);
                }
            }
            dropped.fill(zero);
            return;
        }
        dx.fill(zero);
        // SAFETY: every element was just written.
        let dx = unsafe { dx.assume_init_mut() };
        for oy in 0..oh {
            for ox in 0..ow {
                let at = self.argmax(x, w, oy, ox);
                if !RELU || x[at] > 0.0 {
                    dx[at] += dy[oy * ow + ox];
                }
            }
        }
    }
}

/// `nn.MaxPool2d(k, k)` on `(N, C, H, W)`, differentiable.
pub fn max_pool2d(x: &Tensor, k: usize) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(Pool { k })
    } else {
        x.max_pool2d(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRng;
    use candle_core::{Device, Var};

    /// The values of `t`, flat.
    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// The gradient of `Σ y·r` with respect to `x`, flat.
    fn grad(y: &Tensor, r: &Tensor, x: &Var) -> Vec<f32> {
        let g = (y * r).unwrap().sum_all().unwrap().backward().unwrap();
        flat(g.get(x).unwrap())
    }

    /// Forward equals candle's. The backward is checked by central
    /// differences on an input whose values are 0.01 apart, so a step of
    /// 1e-3 never changes which element is a window's maximum. (candle's own
    /// backward differs: it divides every gradient by the window area.)
    #[test]
    fn forward_equals_candle_and_gradient_equals_finite_differences() {
        let d = Device::Cpu;
        let shape = (2, 3, 8, 6);
        let n = 2 * 3 * 8 * 6;
        let xv: Vec<f32> = SeededRng::new(1)
            .permutation(n)
            .into_iter()
            .map(|i| i as f32 / 100.0)
            .collect();
        let x = Var::from_slice(&xv, shape, &d).unwrap();
        let ours = max_pool2d(&x, 2).unwrap();
        assert!(
            flat(&ours) == flat(&x.max_pool2d(2).unwrap()),
            "forward differs"
        );
        let r = SeededRng::new(2)
            .normal(ours.shape(), 0.0, 1.0, &d)
            .unwrap();
        let g = grad(&ours, &r, &x);
        let loss = |xs: &[f32]| -> f64 {
            let y = max_pool2d(&Tensor::from_slice(xs, shape, &d).unwrap(), 2).unwrap();
            crate::kernels::weighted_sum(&y, &r)
        };
        let h = 1e-3f32;
        for i in 0..n {
            let (mut a, mut b) = (xv.clone(), xv.clone());
            a[i] += h;
            b[i] -= h;
            let fd = ((loss(&a) - loss(&b)) / (2.0 * h as f64)) as f32;
            assert!(
                (fd - g[i]).abs() < 1e-3,
                "element {i}: autograd {} vs fd {fd}",
                g[i]
            );
        }
    }

    /// A 3x5 input with window 2: the last row and column are dropped
    /// (floor mode) and get no gradient; each window's maximum gets its
    /// output's gradient.
    #[test]
    fn odd_sizes_floor_and_route_to_the_maximum() {
        #[rustfmt::skip]
        let x = Var::new(&[[[[1f32, 5., 2., 0., 9.],
                              [3., 4., 8., 1., 9.],
                              [9., 9., 9., 9., 9.]]]], &Device::Cpu).unwrap();
        let y = max_pool2d(&x, 2).unwrap();
        assert_eq!(flat(&y), vec![5.0, 8.0]);
        let r = Tensor::new(&[[[[10f32, 20.]]]], &Device::Cpu).unwrap();
        let gx = grad(&y, &r, &x);
        #[rustfmt::skip]
        let want = vec![0., 10., 0., 0., 0.,
                        0., 0., 20., 0., 0.,
                        0., 0., 0., 0., 0.];
        assert_eq!(gx, want);
    }

    /// PyTorch: x = torch.ones(1, 1, 2, 2, requires_grad=True)
    ///          F.max_pool2d(x, 2).sum().backward(); x.grad
    ///          -> tensor([[[[1., 0.], [0., 0.]]]])
    #[test]
    fn ties_send_the_gradient_to_the_first_maximum_as_pytorch() {
        let x = Var::ones((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let y = max_pool2d(&x, 2).unwrap();
        let ones = Tensor::ones_like(&y).unwrap();
        assert_eq!(grad(&y, &ones, &x), vec![1.0, 0.0, 0.0, 0.0]);
    }

    /// Whole planes through the 2x2 path (their window rows gathered, so
    /// that blocks of 8 windows span output rows) give, bit for bit, the
    /// output and gradient of the general window loop: SmallCNN's 24x24 and
    /// 8x8 planes, odd sizes whose last row and column are dropped, ties and
    /// NaNs. 3x3 windows (the general loop) on the same planes route their
    /// gradients the same way, and write 0 everywhere else.
    #[test]
    fn whole_planes_equal_the_general_window_loop() {
        let mut rng = SeededRng::new(4);
        let shapes = [(24, 24), (8, 8), (9, 7), (2, 2), (5, 34)];
        for (k, (h, w)) in [2, 3].into_iter().flat_map(|k| shapes.map(|s| (k, s))) {
            if h < k || w < k {
                continue;
            }
            let (oh, ow, planes) = (h / k, w / k, 3);
            let xv: Vec<f32> = (0..planes * h * w)
                .map(|_| match rng.below(12) {
                    0 => f32::NAN,
                    1 | 2 => 1.0,
                    v => v as f32 - 6.0,
                })
                .collect();
            let dyv: Vec<f32> = (0..planes * oh * ow).map(|i| i as f32 + 1.0).collect();
            let x = Var::from_slice(&xv, (1, planes, h, w), &Device::Cpu).unwrap();
            let y = max_pool2d(&x, k).unwrap();
            let dy = Tensor::from_slice(&dyv, y.shape(), &Device::Cpu).unwrap();
            let (dx, y) = (grad(&y, &dy, &x), flat(&y));
            let pool = Pool { k };
            let mut want_dx = vec![0f32; xv.len()];
            for p in 0..planes {
                let plane = &xv[p * h * w..(p + 1) * h * w];
                for oy in 0..oh {
                    for ox in 0..ow {
                        let at = pool.argmax(plane, w, oy, ox);
                        let o = (p * oh + oy) * ow + ox;
                        assert_eq!(
                            y[o].to_bits(),
                            plane[at].to_bits(),
                            "{k}: {h}x{w}: output {o}"
                        );
                        want_dx[p * h * w + at] = dyv[o];
                    }
                }
            }
            assert_eq!(dx, want_dx, "{k}: {h}x{w}: gradient");
        }
    }

    /// The 2x2 fast path picks the same element as the general window loop,
    /// with ties, NaNs and odd sizes.
    #[test]
    fn window2_path_equals_the_general_argmax() {
        let (h, w) = (7, 9);
        let mut rng = SeededRng::new(3);
        let pool = Pool { k: 2 };
        for trial in 0..20 {
            let plane: Vec<f32> = (0..h * w)
                .map(|_| match rng.below(10) {
                    0 => f32::NAN,
                    1 | 2 => 1.0,
                    v => v as f32 * if trial % 2 == 0 { 1.0 } else { -1.0 },
                })
                .collect();
            for oy in 0..h / 2 {
                for ox in 0..w / 2 {
                    let i0 = 2 * oy * w + 2 * ox;
                    let (v, j) =
                        first_max4(plane[i0], plane[i0 + 1], plane[i0 + w], plane[i0 + w + 1]);
                    let want = pool.argmax(&plane, w, oy, ox);
                    let got = i0 + [0, 1, w, w + 1][j as usize];
                    assert_eq!(got, want, "trial {trial}, window ({oy}, {ox})");
                    assert_eq!(v.to_bits(), plane[want].to_bits());
                }
            }
        }
    }
}
