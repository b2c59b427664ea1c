//! The loss terms of MAT (paper Sections 3.1-3.2) and of MMC.
//!
//! Shapes: features `phi` `[N, D]`, centers `mu` `[L, D]`, labels `[N]` u32.
//! Every loss returns the batch mean as a scalar tensor.

use candle_core::{DType, Tensor, D};

/// Row-wise cosine similarity of `a` and `b`, both `[N, D]` → `[N]`.
/// Norms are clamped at `EPS` so a zero feature gives cosine 0, not NaN.
pub fn cosine(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let dot = (a * b)?.sum(D::Minus1)?;
    dot / (norm(a)? * norm(b)?)?
}

/// Row-wise L2 norm, `[N, D]` → `[N]`. The square is clamped before the
/// root: sqrt's derivative at 0 is infinite, and a zero feature (a layer
/// initialised to zero) must give a finite gradient, not NaN.
pub fn norm(a: &Tensor) -> candle_core::Result<Tensor> {
    a.sqr()?.sum(D::Minus1)?.clamp(EPS * EPS, f64::MAX)?.sqrt()
}

/// Norms below this are treated as this (features of exactly zero).
pub const EPS: f64 = 1e-12;

/// Cosine distance CD(a, b) = 1 - cos(a, b), row-wise `[N]`.
pub fn cosine_distance(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    cosine(a, b)?.affine(-1.0, 1.0)
}

/// The center of each sample's class, `[N, D]`.
fn class_centers(mu: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    mu.index_select(&labels.to_dtype(DType::U32)?, 0)
}

/// Feature-To-Center loss (Eq. 4): mean over the batch of CD(phi(x), mu_y).
pub fn ftc_loss(phi: &Tensor, mu: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    cosine_distance(phi, &class_centers(mu, labels)?)?.mean_all()
}

/// Smallest value of `1 - cos^2` inside the square root of the SO loss:
/// sqrt has an infinite slope at 0, so a feature exactly on its center
/// would give an infinite gradient.
pub const SO_FLOOR: f64 = 1e-8;

/// Second-Order loss (Eq. 6) in the closed form of Eq. 7:
/// `|grad_phi FTC| = sin(theta) / |phi|` with theta the angle between phi
/// and mu_y; mean over the batch. No double backpropagation is needed.
pub fn so_loss(phi: &Tensor, mu: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    let cos = cosine(phi, &class_centers(mu, labels)?)?;
    let sin = cos.sqr()?.affine(-1.0, 1.0)?.clamp(SO_FLOOR, 1.0)?.sqrt()?;
    (sin / norm(phi)?)?.mean_all()
}

/// MMC loss (Pang et al., 2020, paper Eq. 2): mean of `1/2 |z - mu_y|^2`.
/// (MMC's code drops the 1/2; this follows the paper.)
pub fn mmc_loss(z: &Tensor, mu: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    ((z - class_centers(mu, labels)?)?.sqr()?.sum(D::Minus1)? * 0.5)?.mean_all()
}

/// MMC's logits: `-|z - mu_k|^2` for every class k, `[N, L]`; the predicted
/// class is the nearest center.
pub fn mmc_logits(z: &Tensor, mu: &Tensor) -> candle_core::Result<Tensor> {
    // |z|^2 - 2 z·mu_k + |mu_k|^2, without materialising [N, L, D].
    let zz = z.sqr()?.sum_keepdim(D::Minus1)?; // [N, 1]
    let mm = mu.sqr()?.sum(D::Minus1)?.unsqueeze(0)?; // [1, L]
    let zm = z.matmul(&mu.t()?)?; // [N, L]
    (zm * 2.0)?.broadcast_sub(&zz)?.broadcast_sub(&mm)
}

/// BIBO loss (Eq. 8) at a given adversarial point: mean CD(phi(x), phi(x'));
/// the maximising x' comes from an inner PGD ([`crate::train::InnerMax`]).
pub fn bibo_loss(phi: &Tensor, phi_adv: &Tensor) -> candle_core::Result<Tensor> {
    cosine_distance(phi, phi_adv)?.mean_all()
}

/// Row-wise KL(softmax(p) || softmax(q)) of two logit batches `[N, L]` →
/// `[N]`; TRADES' regulariser with p the clean and q the adversarial logits.
pub fn kl_divergence(p_logits: &Tensor, q_logits: &Tensor) -> candle_core::Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(p_logits, D::Minus1)?;
    let log_q = candle_nn::ops::log_softmax(q_logits, D::Minus1)?;
    (log_p.exp()? * (log_p - log_q)?)?.sum(D::Minus1)
}

/// Cross-entropy summed (not averaged) over the batch: the gain an inner
/// maximisation ascends, so each sample's gradient is independent of the
/// batch size.
pub fn cross_entropy_sum(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, labels)? * logits.dim(0)? as f64
}

/// The logit margin `z_y - max_{j≠y} z_j` per sample, `[N]` (positive
/// while the sample is classified y), differentiable in `logits`: the loss
/// Square lowers and the saturation the audit measures.
pub fn logit_margin(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    let y2 = labels.to_dtype(DType::U32)?.unsqueeze(1)?;
    let z_y = logits.gather(&y2, 1)?.squeeze(1)?;
    let classes = logits.dim(1)?;
    let onehot = Tensor::arange(0u32, classes as u32, logits.device())?
        .unsqueeze(0)?
        .broadcast_as(logits.shape())?
        .eq(&y2.broadcast_as(logits.shape())?)?
        .to_dtype(logits.dtype())?;
    // The true class pushed far down before the max of the others.
    let others = (logits - (onehot * 1e30)?)?.max(D::Minus1)?;
    z_y - others
}

/// The terms of MAT's objective (Eq. 9), batch means.
pub struct MatTerms {
    pub total: Tensor,
    pub ftc: Tensor,
    pub so: Option<Tensor>,
    pub bibo: Option<Tensor>,
}

/// MAT's objective (Eq. 9): `FTC(phi, mu_y) + alpha·SO(phi, mu_y) +
/// beta·CD(phi_clean, phi_adv)`. `so` is SO's weight alpha, `None` to leave
/// the term out; `bibo` is (beta, phi(x), phi(x')) with x' BIBO's inner
/// maximiser, `None` to leave it out. Training minimises it at the clean
/// features; the adaptive attack (Section 4.4) ascends it at phi(x').
pub fn mat_objective(
    phi: &Tensor,
    mu: &Tensor,
    labels: &Tensor,
    so: Option<f64>,
    bibo: Option<(f64, &Tensor, &Tensor)>,
) -> candle_core::Result<MatTerms> {
    let ftc = ftc_loss(phi, mu, labels)?;
    let mut total = ftc.clone();
    let so = match so {
        None => None,
        Some(alpha) => {
            let so = so_loss(phi, mu, labels)?;
            total = (total + (&so * alpha)?)?;
            Some(so)
        }
    };
    let bibo = match bibo {
        None => None,
        Some((beta, clean, adv)) => {
            let bibo = bibo_loss(clean, adv)?;
            total = (total + (&bibo * beta)?)?;
            Some(bibo)
        }
    };
    Ok(MatTerms {
        total,
        ftc,
        so,
        bibo,
    })
}

/// The terms of TRADES' objective, batch means.
pub struct TradesTerms {
    pub total: Tensor,
    pub ce: Tensor,
    pub kl: Tensor,
}

/// TRADES' objective (Zhang et al., 2019): `CE(logits, y) + beta·KL(p || q)`
/// with p the clean and q the adversarial logits. Training takes the CE at
/// the clean logits; the adaptive attack at the adversarial ones, since the
/// clean CE does not move with x'.
pub fn trades_objective(
    logits: &Tensor,
    labels: &Tensor,
    p_logits: &Tensor,
    q_logits: &Tensor,
    beta: f64,
) -> candle_core::Result<TradesTerms> {
    let ce = candle_nn::loss::cross_entropy(logits, labels)?;
    let kl = kl_divergence(p_logits, q_logits)?.mean_all()?;
    let total = (&ce + (&kl * beta)?)?;
    Ok(TradesTerms { total, ce, kl })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::centers::Centers;
    use crate::rng::SeededRng;
    use candle_core::{Device, Var};

    fn scalar(t: &Tensor) -> f64 {
        t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    /// phi = [(1, 0), (0, 2)], centers mu_0 = (1, 0) and mu_1 = (-1, 0),
    /// labels [0, 1]: CD = 1 - 1 = 0 and 1 - 0 = 1, so FTC = 0.5.
    /// SO: sin/|phi| = 0/1 (floored: 1e-4) and 1/2, mean = (1e-4 + 0.5)/2.
    /// MMC: 1/2|(1,0)-(1,0)|^2 = 0 and 1/2|(0,2)-(-1,0)|^2 = 2.5, mean 1.25.
    /// Regression: an all-zero feature (SmallCNN's zero-initialised last
    /// layer) gave NaN gradients through sqrt at 0.
    #[test]
    fn zero_features_give_finite_gradients() {
        let d = Device::Cpu;
        let phi = Var::zeros((3, 4), DType::F32, &d).unwrap();
        let mu = Centers::new(3, 4, 10.0).unwrap().centers;
        let y = Tensor::new(&[0u32, 1, 2], &d).unwrap();
        for loss in [
            ftc_loss(&phi, &mu, &y).unwrap(),
            so_loss(&phi, &mu, &y).unwrap(),
        ] {
            assert!(scalar(&loss).is_finite());
            let g = loss.backward().unwrap();
            let g = g
                .get(&phi)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        }
    }

    /// p = softmax(0, 0) = (1/2, 1/2), q = softmax(ln 3, 0) = (3/4, 1/4):
    /// KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3); identical rows give 0.
    #[test]
    fn kl_divergence_by_hand() {
        let d = Device::Cpu;
        let p = Tensor::new(&[[0f32, 0.0], [1.0, 2.0]], &d).unwrap();
        let q = Tensor::new(&[[3f32.ln(), 0.0], [1.0, 2.0]], &d).unwrap();
        let kl = kl_divergence(&p, &q).unwrap().to_vec1::<f32>().unwrap();
        assert!(
            (kl[0] as f64 - 0.5 * (4.0f64 / 3.0).ln()).abs() < 1e-6,
            "{kl:?}"
        );
        assert!(kl[1].abs() < 1e-7);
    }

    #[test]
    fn hand_computed_values() {
        let d = Device::Cpu;
        let phi = Tensor::new(&[[1f32, 0.0], [0.0, 2.0]], &d).unwrap();
        let mu = Tensor::new(&[[1f32, 0.0], [-1.0, 0.0]], &d).unwrap();
        let y = Tensor::new(&[0u32, 1], &d).unwrap();
        assert!((scalar(&ftc_loss(&phi, &mu, &y).unwrap()) - 0.5).abs() < 1e-7);
        let so = scalar(&so_loss(&phi, &mu, &y).unwrap());
        assert!((so - (1e-4 + 0.5) / 2.0).abs() < 1e-6, "{so}");
        assert!((scalar(&mmc_loss(&phi, &mu, &y).unwrap()) - 1.25).abs() < 1e-6);
        // logits -|z - mu_k|^2: row 0: [0, -4], row 1: [-5, -5]
        let lg = mmc_logits(&phi, &mu).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(lg, vec![vec![0.0, -4.0], vec![-5.0, -5.0]]);
    }

    /// SO's closed form equals the norm of the autograd gradient of the
    /// per-sample FTC with respect to phi (Eq. 6 vs 7), on random features.
    #[test]
    fn so_closed_form_equals_autograd_gradient_norm() {
        let d = Device::Cpu;
        let mu = Centers::new(10, 16, 10.0).unwrap().centers;
        let mut rng = SeededRng::new(7);
        let labels: Vec<u32> = (0..32).map(|_| rng.below(10) as u32).collect();
        let y = Tensor::new(labels.as_slice(), &d).unwrap();
        let phi = Var::from_tensor(&rng.normal((32, 16), 0.0, 3.0, &d).unwrap()).unwrap();
        // Sum (not mean) of FTC so each row's gradient is its own sample's.
        let ftc_sum = cosine_distance(&phi, &class_centers(&mu, &y).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let g = ftc_sum.backward().unwrap();
        let grad_norms = g
            .get(&phi)
            .unwrap()
            .sqr()
            .unwrap()
            .sum(D::Minus1)
            .unwrap()
            .sqrt()
            .unwrap();
        let cos = cosine(&phi, &class_centers(&mu, &y).unwrap()).unwrap();
        let norm = phi.sqr().unwrap().sum(D::Minus1).unwrap().sqrt().unwrap();
        let closed = (cos
            .sqr()
            .unwrap()
            .affine(-1.0, 1.0)
            .unwrap()
            .sqrt()
            .unwrap()
            / norm)
            .unwrap();
        let (a, b) = (
            grad_norms.to_vec1::<f32>().unwrap(),
            closed.to_vec1::<f32>().unwrap(),
        );
        for (i, (x, z)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - z).abs() <= 1e-5 * z.abs().max(1e-3),
                "sample {i}: autograd {x} vs closed form {z}"
            );
        }
        // and so_loss is their mean
        let so = scalar(&so_loss(&phi, &mu, &y).unwrap());
        let mean = b.iter().map(|&v| v as f64).sum::<f64>() / b.len() as f64;
        assert!((so - mean).abs() < 1e-6);
    }

    /// Section 3.3: with equal-norm centers, argmax of the linear head
    /// W = centers (logits phi·mu_k) equals argmax of cos(phi, mu_k).
    #[test]
    fn logits_head_argmax_equals_cosine_argmax() {
        let d = Device::Cpu;
        let mu = Centers::new(10, 32, 10.0).unwrap().centers;
        let phi = SeededRng::new(8).normal((500, 32), 0.0, 1.0, &d).unwrap();
        let logits = phi.matmul(&mu.t().unwrap()).unwrap();
        let n = phi.dim(0).unwrap();
        let cos: Vec<Tensor> = (0..10)
            .map(|k| {
                cosine(
                    &phi,
                    &mu.get(k)
                        .unwrap()
                        .unsqueeze(0)
                        .unwrap()
                        .broadcast_as((n, 32))
                        .unwrap(),
                )
                .unwrap()
            })
            .collect();
        let cos = Tensor::stack(&cos, 1).unwrap();
        let a = logits.argmax(D::Minus1).unwrap().to_vec1::<u32>().unwrap();
        let b = cos.argmax(D::Minus1).unwrap().to_vec1::<u32>().unwrap();
        assert_eq!(a, b);
    }
}
