//! Exact t-SNE (van der Maaten & Hinton, 2008) with a seeded initial
//! embedding. The `bhtsne` crate draws its initial embedding from an
//! unseedable thread RNG, so its maps differ from run to run; the maps here
//! are small (a few thousand points), where the exact O(n²) gradient costs
//! seconds and needs no approximation.
//!
//! Settings follow the reference implementation: perplexity calibrated by
//! bisection per point, early exaggeration 12 for 250 iterations, momentum
//! 0.5 then 0.8, learning rate 200, adaptive gains, initial embedding
//! N(0, 1e-4²).

use rayon::prelude::*;

use crate::rng::SeededRng;

#[derive(Debug, Clone, PartialEq)]
pub struct Tsne {
    pub perplexity: f64,
    pub iterations: usize,
    pub learning_rate: f64,
    pub exaggeration: f64,
    pub exaggeration_iterations: usize,
    pub seed: u64,
}

impl Default for Tsne {
    fn default() -> Self {
        Self {
            perplexity: 30.0,
            iterations: 1000,
            learning_rate: 200.0,
            exaggeration: 12.0,
            exaggeration_iterations: 250,
            seed: 0,
        }
    }
}

/// Row i of the input affinities: p_{j|i} ∝ exp(-beta·d_ij²) with beta
/// found by bisection so that the row's entropy is log(perplexity).
fn conditional_row(d2: &[f64], i: usize, perplexity: f64) -> Vec<f64> {
    let target = perplexity.ln();
    let (mut beta, mut lo, mut hi) = (1.0f64, 0.0f64, f64::INFINITY);
    let mut p = vec![0.0; d2.len()];
    for _ in 0..200 {
        let mut sum = 0.0;
        for (j, (pj, &d)) in p.iter_mut().zip(d2).enumerate() {
            *pj = if j == i { 0.0 } else { (-beta * d).exp() };
            sum += *pj;
        }
        let sum = sum.max(f64::MIN_POSITIVE);
        // H = log(sum) + beta·Σ p d / sum
        let h = sum.ln() + beta * p.iter().zip(d2).map(|(pj, d)| pj * d).sum::<f64>() / sum;
        for pj in p.iter_mut() {
            *pj /= sum;
        }
        if (h - target).abs() < 1e-5 {
            break;
        }
        if h > target {
            lo = beta;
            beta = if hi.is_finite() {
                (beta + hi) / 2.0
            } else {
                beta * 2.0
            };
        } else {
            hi = beta;
            beta = (beta + lo) / 2.0;
        }
    }
    p
}

impl Tsne {
    /// A 2-d embedding of `points`, row-major `[n, 2]`. `progress` gets
    /// (iteration, total).
    pub fn embed(
        &self,
        points: &[Vec<f32>],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Vec<[f64; 2]> {
        let n = points.len();
        if n < 2 {
            return vec![[0.0, 0.0]; n];
        }
        // Perplexity cannot exceed what n - 1 neighbours can give.
        let perplexity = self.perplexity.min((n - 1) as f64 / 3.0).max(1.0);
        let sq = |a: &Vec<f32>, b: &Vec<f32>| -> f64 {
            a.iter()
                .zip(b)
                .map(|(x, y)| ((*x - *y) as f64).powi(2))
                .sum()
        };
        let cond: Vec<Vec<f64>> = (0..n)
            .into_par_iter()
            .map(|i| {
                let d2: Vec<f64> = points.iter().map(|q| sq(&points[i], q)).collect();
                conditional_row(&d2, i, perplexity)
            })
            .collect();
        // Symmetric joint affinities p_ij = (p_{j|i} + p_{i|j}) / 2n.
        let p: Vec<f64> = (0..n * n)
            .map(|k| {
                let (i, j) = (k / n, k % n);
                ((cond[i][j] + cond[j][i]) / (2.0 * n as f64)).max(1e-12)
            })
            .collect();
        drop(cond);

        let mut rng = SeededRng::for_purpose(self.seed, "tsne/init");
        let init = rng.normal_vec(2 * n, 0.0, 1e-4);
        let mut y: Vec<[f64; 2]> = init.chunks(2).map(|c| [c[0] as f64, c[1] as f64]).collect();
        let mut update = vec![[0.0f64; 2]; n];
        let mut gains = vec![[1.0f64; 2]; n];
        for it in 0..self.iterations {
            let exaggerate = if it < self.exaggeration_iterations {
                self.exaggeration
            } else {
                1.0
            };
            let momentum = if it < self.exaggeration_iterations {
                0.5
            } else {
                0.8
            };
            // Student-t kernel rows and their sums (per row, then summed in
            // order: the result does not depend on the thread count).
            let rows: Vec<(Vec<f64>, f64)> = (0..n)
                .into_par_iter()
                .map(|i| {
                    let row: Vec<f64> = (0..n)
                        .map(|j| {
                            if i == j {
                                0.0
                            } else {
                                let dx = y[i][0] - y[j][0];
                                let dy = y[i][1] - y[j][1];
                                1.0 / (1.0 + dx * dx + dy * dy)
                            }
                        })
                        .collect();
                    let s = row.iter().sum();
                    (row, s)
                })
                .collect();
            let z: f64 = rows.iter().map(|r| r.1).sum();
            let grad: Vec<[f64; 2]> = (0..n)
                .into_par_iter()
                .map(|i| {
                    let mut g = [0.0f64; 2];
                    for j in 0..n {
                        let num = rows[i].0[j];
                        let m = (exaggerate * p[i * n + j] - num / z) * num;
                        g[0] += 4.0 * m * (y[i][0] - y[j][0]);
                        g[1] += 4.0 * m * (y[i][1] - y[j][1]);
                    }
                    g
                })
                .collect();
            for i in 0..n {
                for d in 0..2 {
                    let same_sign = (grad[i][d] > 0.0) == (update[i][d] > 0.0);
                    gains[i][d] = if same_sign {
                        (gains[i][d] * 0.8).max(0.01)
                    } else {
                        gains[i][d] + 0.2
                    };
                    update[i][d] =
                        momentum * update[i][d] - self.learning_rate * gains[i][d] * grad[i][d];
                    y[i][d] += update[i][d];
                }
            }
            // Keep the map centred.
            for d in 0..2 {
                let mean = y.iter().map(|v| v[d]).sum::<f64>() / n as f64;
                for v in y.iter_mut() {
                    v[d] -= mean;
                }
            }
            progress(it + 1, self.iterations);
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs() -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut rng = SeededRng::new(3);
        let centres = [
            [0.0f32; 5],
            [20.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 20.0, 0.0, 0.0],
        ];
        let mut pts = Vec::new();
        let mut blob = Vec::new();
        // 50 points a blob: a perplexity of 30 fits inside one blob.
        for i in 0..150 {
            let c = centres[i % 3];
            let noise = rng.normal_vec(5, 0.0, 1.0);
            pts.push(c.iter().zip(&noise).map(|(a, b)| a + b).collect());
            blob.push(i % 3);
        }
        (pts, blob)
    }

    #[test]
    fn separated_blobs_stay_separate_and_the_seed_fixes_the_map() {
        let (pts, blob) = blobs();
        let t = Tsne {
            iterations: 500,
            ..Tsne::default()
        };
        let y = t.embed(&pts, &mut |_, _| {});
        // Every point's 5 nearest neighbours in the map share its blob.
        for i in 0..pts.len() {
            let mut d: Vec<(f64, usize)> = (0..pts.len())
                .filter(|&j| j != i)
                .map(|j| ((y[i][0] - y[j][0]).powi(2) + (y[i][1] - y[j][1]).powi(2), j))
                .collect();
            d.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (_, j) in &d[..5] {
                assert_eq!(
                    blob[*j], blob[i],
                    "point {i}'s neighbour {j} is from another blob"
                );
            }
        }
        assert_eq!(t.embed(&pts, &mut |_, _| {}), y, "same seed, same map");
    }

    #[test]
    fn calibrated_rows_reach_the_perplexity() {
        let d2: Vec<f64> = (0..50).map(|j| (j as f64 * 0.37).powi(2)).collect();
        let p = conditional_row(&d2, 0, 10.0);
        let h: f64 = -p
            .iter()
            .filter(|&&x| x > 0.0)
            .map(|x| x * x.ln())
            .sum::<f64>();
        assert!((h.exp() - 10.0).abs() < 1e-2, "perplexity {}", h.exp());
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }
}
