//! Square (Andriushchenko et al., 2020): a score-based black-box attack by
//! random search. It reads only the model's logits, never a gradient, so a
//! defence that masks gradients (a saturated softmax, MAT's center head
//! with large |mu|) cannot hide from it; AutoAttack runs it last for that.
//!
//! L∞: the search starts from vertical stripes of ±eps; each query changes
//! one random square window of the current best point to a random vertex
//! of the eps-ball (one sign per channel) and keeps the change where the
//! margin loss `z_y - max_{j≠y} z_j` fell or the point is misclassified.
//! The window's side follows the reference's schedule: a fraction `p` of
//! the pixels, `p` halving from `p_init` at 10, 50, 200, 500, 1000, 2000,
//! 4000, 6000 and 8000 of 10,000 queries (rescaled to `queries`).
//!
//! L2: the search starts from a grid of "pseudo-Gaussian" squares (the
//! paper's Section 3.2: nested rectangles of weights 1/k², one half
//! positive and one negative, in random orientation) of random sign per
//! channel, scaled to norm eps. Each query moves the mass of one window into
//! another (odd side, at least 3): the second window's perturbation is set
//! to 0 and the first gets a fresh square plus its old content, rescaled so
//! the whole perturbation keeps norm eps.
//!
//! Distance: L∞ or L2. Arguments: queries (5000), p_init (0.8), restarts.
//! Unlike the reference, which draws one window and one sign per channel
//! for the whole batch, each image draws its own, as in the paper's
//! Algorithm 1: the images' searches are then independent of the batch
//! they sit in.

use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use super::spec::{at_least_one, bad, AttackSpec, Budget, Registration};
use super::{Attack, Norm, Problem};
use crate::losses::logit_margin;
use crate::rng::SeededRng;

/// The config section `square:` (AutoAttack's settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SquareSpec {
    /// Model queries per image and run.
    pub queries: usize,
    /// The fraction of the image the first windows cover.
    pub p_init: f64,
}

impl Default for SquareSpec {
    fn default() -> Self {
        Self {
            queries: 5000,
            p_init: 0.8,
        }
    }
}

pub const SQUARE: Registration = Registration {
    name: "square",
    summary: "Square: score-based random search, no gradients (Andriushchenko et al.)",
    budget: Budget::Bounded,
    norms: &[Norm::Linf, Norm::L2],
    iterative: false,
    needs_objective: false,
    section: Some("square"),
    check: |spec| {
        let s: SquareSpec = spec.section("square")?;
        at_least_one("square.queries", s.queries)?;
        if !(s.p_init > 0.0 && s.p_init <= 1.0) {
            return Err(bad("square.p_init", "a number in (0, 1]", s.p_init));
        }
        Ok(())
    },
    build: |spec: &AttackSpec, _, _| {
        let s: SquareSpec = spec.section("square")?;
        Ok(Box::new(Square {
            norm: spec.norm(),
            queries: s.queries,
            p_init: s.p_init,
            restarts: spec.restarts,
        }))
    },
    examples: &[
        "eps: [0.3]\nsquare: {queries: 50}\nrestarts: 2",
        "eps: [2.0]\nnorm: l2\nsquare: {queries: 50}",
    ],
};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Square {
    pub norm: Norm,
    pub queries: usize,
    pub p_init: f64,
    /// Runs in total; a run starts afresh on the images still robust.
    pub restarts: usize,
}

/// The fraction of pixels a window covers at query `it` of `queries`.
pub fn p_at(p_init: f64, it: usize, queries: usize) -> f64 {
    let it = (it as f64 / queries as f64 * 10_000.0) as usize;
    let halvings = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000]
        .iter()
        .filter(|&&t| it > t)
        .count();
    p_init / 2f64.powi(halvings as i32)
}

/// Per image: the margin `z_y - max_{j≠y} z_j` of `logits` `[N, L]`, and
/// whether the model misclassifies it (argmax ≠ y).
fn margins(logits: &Tensor, y: &[u32]) -> crate::Result<(Vec<f32>, Vec<bool>)> {
    let labels = Tensor::new(y, logits.device())?;
    let m = logit_margin(logits, &labels)?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    Ok((m, pred.iter().zip(y).map(|(p, l)| p != l).collect()))
}

impl Square {
    /// One run of the search from a fresh stripe start, on images `x`
    /// (host, `[n][C·H·W]`); returns the best points.
    fn one_run(
        &self,
        p: &Problem,
        dims: [usize; 3],
        x: &[Vec<f32>],
        y: &[u32],
        rng: &mut SeededRng,
    ) -> crate::Result<Vec<Vec<f32>>> {
        let [c, h, w] = dims;
        let eps = p.eps as f32;
        let clip = |v: f32, x0: f32| v.clamp(x0 - eps, x0 + eps).clamp(0.0, 1.0);
        let logits = |pts: &[&Vec<f32>]| -> crate::Result<Tensor> {
            let flat: Vec<f32> = pts.iter().flat_map(|v| v.iter().copied()).collect();
            let t = Tensor::from_vec(flat, (pts.len(), c, h, w), p.x.device())?;
            Ok(p.model.logits(&t)?)
        };
        let mut best: Vec<Vec<f32>> = match self.norm {
            // Vertical stripes: one sign per channel and column.
            Norm::Linf => x
                .iter()
                .map(|xi| {
                    let signs: Vec<f32> = (0..c * w)
                        .map(|_| if rng.coin() { eps } else { -eps })
                        .collect();
                    (0..c * h * w)
                        .map(|k| {
                            let (ch, col) = (k / (h * w), k % w);
                            clip(xi[k] + signs[ch * w + col], xi[k])
                        })
                        .collect()
                })
                .collect(),
            Norm::L2 => x.iter().map(|xi| l2_start(xi, dims, eps, rng)).collect(),
        };
        // The margin loss is what the search lowers; a point that is
        // misclassified is done.
        let (mut loss, mut fooled) = margins(&logits(&best.iter().collect::<Vec<_>>())?, y)?;
        for it in 0..self.queries {
            let active: Vec<usize> = (0..x.len()).filter(|&i| !fooled[i]).collect();
            if active.is_empty() {
                break;
            }
            let frac = p_at(self.p_init, it, self.queries);
            let side = ((frac * (h * w) as f64).sqrt().round() as usize).clamp(1, h.min(w));
            let candidates: Vec<Vec<f32>> = active
                .iter()
                .map(|&i| {
                    if self.norm == Norm::L2 {
                        return l2_move(&x[i], &best[i], dims, eps, frac, rng);
                    }
                    let (top, left) = (rng.below(h - side + 1), rng.below(w - side + 1));
                    let mut v = best[i].clone();
                    for ch in 0..c {
                        let step = if rng.coin() { 2.0 * eps } else { -2.0 * eps };
                        for r in top..top + side {
                            for col in left..left + side {
                                let k = ch * h * w + r * w + col;
                                v[k] = clip(v[k] + step, x[i][k]);
                            }
                        }
                    }
                    v
                })
                .collect();
            let (m, f) = margins(&logits(&candidates.iter().collect::<Vec<_>>())?, &{
                active.iter().map(|&i| y[i]).collect::<Vec<_>>()
            })?;
            for (j, &i) in active.iter().enumerate() {
                let improved = m[j] < loss[i];
                if improved {
                    loss[i] = m[j];
                }
                if improved || f[j] {
                    fooled[i] = f[j];
                    best[i] = candidates[j].clone();
                }
            }
        }
        Ok(best)
    }
}

/// The L2 norm of `v`.
fn l2(v: impl Iterator<Item = f32>) -> f32 {
    v.map(|a| a * a).sum::<f32>().sqrt()
}

/// Nested rectangles centred in an `rows` x `cols` patch, rectangle k
/// weighted 1/k², normalised to L2 norm 1 (row-major).
fn rectangles(rows: usize, cols: usize) -> Vec<f32> {
    let mut m = vec![0f32; rows * cols];
    let (r0, c0) = ((rows / 2 + 1) as isize - 1, (cols / 2 + 1) as isize - 1);
    for k in 0..(rows / 2 + 1).max(cols / 2 + 1) as isize {
        let (top, left) = (r0 - k, c0 - k);
        let (bottom, right) = (
            (top + 2 * k + 1).min(rows as isize),
            (left + 2 * k + 1).min(cols as isize),
        );
        for r in top.max(0)..bottom {
            for col in left.max(0)..right {
                m[r as usize * cols + col as usize] += 1.0 / ((k + 1) * (k + 1)) as f32;
            }
        }
    }
    let n = l2(m.iter().copied()).max(1e-12);
    m.iter().map(|v| v / n).collect()
}

/// A `side` x `side` "pseudo-Gaussian" square: rectangles in the top half,
/// their negative in the bottom half, transposed at random; norm 1.
fn eta(side: usize, rng: &mut SeededRng) -> Vec<f32> {
    let (top, bottom) = (
        rectangles(side / 2, side),
        rectangles(side - side / 2, side),
    );
    let mut m: Vec<f32> = top
        .into_iter()
        .chain(bottom.into_iter().map(|v| -v))
        .collect();
    let n = l2(m.iter().copied()).max(1e-12);
    m.iter_mut().for_each(|v| *v /= n);
    if rng.coin() {
        let t: Vec<f32> = (0..side * side)
            .map(|k| m[(k % side) * side + k / side])
            .collect();
        m = t;
    }
    m
}

/// `x + eps·delta/|delta|`, clipped to [0, 1].
fn at_norm(x: &[f32], delta: &[f32], eps: f32) -> Vec<f32> {
    let n = l2(delta.iter().copied()) + 1e-12;
    x.iter()
        .zip(delta)
        .map(|(a, d)| (a + eps * d / n).clamp(0.0, 1.0))
        .collect()
}

/// L2 start: a grid of squares of side h/5 with a random sign per channel.
fn l2_start(x: &[f32], [c, h, w]: [usize; 3], eps: f32, rng: &mut SeededRng) -> Vec<f32> {
    let side = (h / 5).max(1);
    let offset = (h - side * 5.min(h / side)) / 2;
    let mut delta = vec![0f32; c * h * w];
    let mut top = offset;
    while top + side <= h {
        let mut left = offset;
        while left + side <= w {
            let e = eta(side, rng);
            for ch in 0..c {
                let sign = if rng.coin() { 1.0 } else { -1.0 };
                for r in 0..side {
                    for col in 0..side {
                        delta[ch * h * w + (top + r) * w + left + col] += sign * e[r * side + col];
                    }
                }
            }
            left += side;
        }
        top += side;
    }
    at_norm(x, &delta, eps)
}

/// One L2 query: the mass of a second window moves into a first one.
fn l2_move(
    x: &[f32],
    best: &[f32],
    [c, h, w]: [usize; 3],
    eps: f32,
    frac: f64,
    rng: &mut SeededRng,
) -> Vec<f32> {
    let mut side = ((frac * (h * w) as f64).sqrt().round() as usize).max(3);
    if side.is_multiple_of(2) {
        side += 1;
    }
    let side = side.min(h.min(w));
    let mut delta: Vec<f32> = best.iter().zip(x).map(|(b, a)| b - a).collect();
    let pick = |rng: &mut SeededRng, n: usize| rng.below((n - side).max(1));
    let (t1, l1) = (pick(rng, h), pick(rng, w));
    let (t2, l2w) = (pick(rng, h), pick(rng, w));
    let in1 = |r: usize, col: usize| (t1..t1 + side).contains(&r) && (l1..l1 + side).contains(&col);
    let in2 =
        |r: usize, col: usize| (t2..t2 + side).contains(&r) && (l2w..l2w + side).contains(&col);
    let image = l2(delta.iter().copied());
    let union = l2((0..c * h * w).filter_map(|k| {
        let (r, col) = ((k / w) % h, k % w);
        (in1(r, col) || in2(r, col)).then_some(delta[k])
    }));
    let spare = ((eps * eps - image * image).max(0.0) / c as f32 + union * union).sqrt();
    for ch in 0..c {
        let at = |r: usize, col: usize| ch * h * w + (t1 + r) * w + l1 + col;
        let old: Vec<f32> = (0..side * side)
            .map(|k| delta[at(k / side, k % side)])
            .collect();
        let old_norm = l2(old.iter().copied()) + 1e-12;
        let e = eta(side, rng);
        let sign = if rng.coin() { 1.0 } else { -1.0 };
        let fresh: Vec<f32> = e
            .iter()
            .zip(&old)
            .map(|(e, o)| sign * e + o / old_norm)
            .collect();
        let n = l2(fresh.iter().copied()) + 1e-12;
        for r in t2..t2 + side {
            for col in l2w..l2w + side {
                delta[ch * h * w + r * w + col] = 0.0;
            }
        }
        for k in 0..side * side {
            delta[at(k / side, k % side)] = fresh[k] / n * spare;
        }
    }
    at_norm(x, &delta, eps)
}

impl Attack for Square {
    fn settings(&self) -> Option<String> {
        Some(format!("{}: {self:?}", self.name()))
    }

    fn name(&self) -> &'static str {
        "square"
    }

    fn norm(&self) -> Norm {
        self.norm
    }

    fn propose(&self, p: &Problem, rng: &mut SeededRng) -> crate::Result<Tensor> {
        let dims: [usize; 3] = match p.x.dims() {
            [_, c, h, w] => [*c, *h, *w],
            other => {
                return Err(crate::Error::Shape {
                    what: "square".into(),
                    expected: "images [N, C, H, W]".into(),
                    found: format!("{other:?}"),
                })
            }
        };
        let n = p.x.dim(0)?;
        let x: Vec<Vec<f32>> =
            p.x.to_dtype(DType::F32)?
                .flatten_from(1)?
                .to_vec2::<f32>()?;
        let y = p.y.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let mut best = x.clone();
        let mut robust: Vec<usize> = (0..n).collect();
        for _ in 0..self.restarts {
            if robust.is_empty() {
                break;
            }
            let xs: Vec<Vec<f32>> = robust.iter().map(|&i| x[i].clone()).collect();
            let ys: Vec<u32> = robust.iter().map(|&i| y[i]).collect();
            let found = self.one_run(p, dims, &xs, &ys, rng)?;
            let t = Tensor::from_vec(
                found.iter().flatten().copied().collect::<Vec<_>>(),
                (found.len(), dims[0], dims[1], dims[2]),
                p.x.device(),
            )?;
            let (_, fooled) = margins(&p.model.logits(&t)?, &ys)?;
            let mut still = Vec::new();
            for ((&i, point), f) in robust.iter().zip(found).zip(fooled) {
                best[i] = point;
                if !f {
                    still.push(i);
                }
            }
            robust = still;
        }
        let flat: Vec<f32> = best.into_iter().flatten().collect();
        Ok(Tensor::from_vec(flat, p.x.shape(), p.x.device())?.to_dtype(p.x.dtype())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's schedule at 5000 queries: p_init until query 5,
    /// then halved at 25, 100, 250, 500, 1000, 2000, 3000 and 4000.
    /// The L2 squares have norm 1, a positive and a negative half, and a
    /// largest weight at the centre of each half.
    #[test]
    fn pseudo_gaussian_squares_have_unit_norm_and_two_signed_halves() {
        let mut rng = SeededRng::new(3);
        for side in [3usize, 5, 9, 25] {
            let e = eta(side, &mut rng);
            assert!((l2(e.iter().copied()) - 1.0).abs() < 1e-5, "side {side}");
            assert!(e.iter().any(|v| *v > 0.0) && e.iter().any(|v| *v < 0.0));
        }
        let r = rectangles(3, 3);
        assert!(r[4] > r[0] && r[4] > r[1], "{r:?}");
    }

    #[test]
    fn window_schedule_follows_the_reference() {
        let p = |it| p_at(0.8, it, 5000);
        assert_eq!(p(0), 0.8);
        assert_eq!(p(5), 0.8);
        assert_eq!(p(6), 0.4);
        assert_eq!(p(26), 0.2);
        assert_eq!(p(101), 0.1);
        assert_eq!(p(4001), 0.8 / 512.0);
    }
}
