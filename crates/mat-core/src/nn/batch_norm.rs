//! Batch normalisation followed by a ReLU, as every batch norm of the
//! WideResNets is. candle-nn's layer keeps the parameters, the running
//! averages and the evaluation path; training on the CPU takes the fused
//! kernel (`kernels::batch_norm`), which updates the same running averages
//! the same way: `r ← (1 - momentum)·r + momentum·s`, with the unbiased
//! batch variance for the running variance, as PyTorch and candle-nn do.

use candle_core::{DType, ModuleT, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use crate::kernels::batch_norm::batch_norm_train;
use crate::kernels::relu;

/// candle-nn's default, and PyTorch's.
const MOMENTUM: f64 = 0.1;

#[derive(Debug)]
pub struct BatchNorm {
    inner: candle_nn::BatchNorm,
    weight: Tensor,
    bias: Tensor,
    /// The same variables as `inner`'s running averages, or `None` where the
    /// builder hands out plain tensors (a model loaded from a file), whose
    /// copies would diverge: such a model trains through candle-nn.
    running: Option<(Var, Var)>,
    eps: f64,
}

/// A batch norm of `channels` with PyTorch's names (`weight`, `bias`,
/// `running_mean`, `running_var`) and initialisation.
pub fn batch_norm(channels: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<BatchNorm> {
    let inner = candle_nn::batch_norm(channels, eps, vb.clone())?;
    // The builder hands out the tensors candle-nn's layer just took.
    let get = |name, init| vb.get_with_hints(channels, name, init);
    let mean = get("running_mean", Init::Const(0.0))?;
    let var = get("running_var", Init::Const(1.0))?;
    let running = (mean.is_variable() && var.is_variable())
        .then(|| Ok::<_, candle_core::Error>((Var::from_tensor(&mean)?, Var::from_tensor(&var)?)))
        .transpose()?;
    Ok(BatchNorm {
        inner,
        weight: get("weight", Init::Const(1.0))?,
        bias: get("bias", Init::Const(0.0))?,
        running,
        eps,
    })
}

impl BatchNorm {
    /// `relu(bn(x))`; in training mode on the CPU in one fused op.
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let fused = train
            && x.device().is_cpu()
            && x.dtype() == DType::F32
            && x.rank() == 4
            && x.dim(0)? * x.dim(2)? * x.dim(3)? > 1;
        let (Some((mean, var)), true) = (&self.running, fused) else {
            return relu(&self.inner.forward_t(x, train)?);
        };
        let weight = crate::nn::maybe_frozen(&self.weight);
        let bias = crate::nn::maybe_frozen(&self.bias);
        let (y, stats) = batch_norm_train(x, &weight, &bias, self.eps, true)?;
        let m = stats.count as f32;
        let dev = x.device();
        let batch_mean = Tensor::from_slice(&stats.mean, stats.mean.len(), dev)?;
        let unbiased: Vec<f32> = stats.var.iter().map(|v| v * m / (m - 1.0)).collect();
        let batch_var = Tensor::from_slice(&unbiased, unbiased.len(), dev)?;
        mean.set(&((mean.as_tensor() * (1.0 - MOMENTUM))? + (batch_mean * MOMENTUM)?)?)?;
        var.set(&((var.as_tensor() * (1.0 - MOMENTUM))? + (batch_var * MOMENTUM)?)?)?;
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::ParamStore;
    use crate::rng::SeededRng;
    use candle_core::Device;

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * scale,
                "{what}[{i}]: {x} vs {y} (scale {scale})"
            );
        }
    }

    /// The fused layer against candle-nn's batch norm and a ReLU, over two
    /// training steps (so the running averages compound): outputs, the
    /// gradients of x, weight and bias, the running averages, and the
    /// evaluation output that reads them.
    #[test]
    fn fused_training_equals_candle_nn_then_relu() {
        let d = Device::Cpu;
        let mut rng = SeededRng::new(11);
        for (n, c, h, w) in [(4, 3, 5, 5), (2, 8, 4, 3), (3, 2, 1, 1)] {
            let (ours_store, theirs_store) = (ParamStore::new(0), ParamStore::new(0));
            let ours = batch_norm(c, 1e-5, ours_store.var_builder(&d)).unwrap();
            let theirs = candle_nn::batch_norm(c, 1e-5, theirs_store.var_builder(&d)).unwrap();
            // Weights away from 1 and 0, the same on both sides.
            let gamma = rng.normal_vec(c, 1.0, 0.5);
            let beta = rng.normal_vec(c, 0.0, 0.5);
            for store in [&ours_store, &theirs_store] {
                let vars: std::collections::HashMap<_, _> = store.vars().into_iter().collect();
                vars["weight"]
                    .set(&Tensor::from_slice(&gamma, c, &d).unwrap())
                    .unwrap();
                vars["bias"]
                    .set(&Tensor::from_slice(&beta, c, &d).unwrap())
                    .unwrap();
            }
            for step in 0..2 {
                // Shifted and scaled, so the statistics matter.
                let xv = rng.normal_vec(n * c * h * w, 0.5 * step as f32, 2.0);
                let x_ours = Var::from_slice(&xv, (n, c, h, w), &d).unwrap();
                let x_theirs = Var::from_slice(&xv, (n, c, h, w), &d).unwrap();
                let r = rng.normal((n, c, h, w), 0.0, 1.0, &d).unwrap();
                let y_ours = ours.forward_relu_t(&x_ours, true).unwrap();
                let y_theirs = relu(&theirs.forward_t(&x_theirs, true).unwrap()).unwrap();
                let what = format!("[{n},{c},{h},{w}] step {step}");
                close(&flat(&y_ours), &flat(&y_theirs), 1e-5, &format!("y {what}"));
                let g_ours = (y_ours * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let g_theirs = (y_theirs * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                close(
                    &flat(g_ours.get(&x_ours).unwrap()),
                    &flat(g_theirs.get(&x_theirs).unwrap()),
                    1e-4,
                    &format!("dx {what}"),
                );
                let (vo, vt): (
                    std::collections::HashMap<_, _>,
                    std::collections::HashMap<_, _>,
                ) = (
                    ours_store.vars().into_iter().collect(),
                    theirs_store.vars().into_iter().collect(),
                );
                for p in ["weight", "bias"] {
                    close(
                        &flat(g_ours.get(vo[p].as_tensor()).unwrap()),
                        &flat(g_theirs.get(vt[p].as_tensor()).unwrap()),
                        1e-4,
                        &format!("d{p} {what}"),
                    );
                }
                for p in ["running_mean", "running_var"] {
                    close(
                        &flat(vo[p].as_tensor()),
                        &flat(vt[p].as_tensor()),
                        1e-5,
                        &format!("{p} {what}"),
                    );
                }
            }
            let x = rng.normal((n, c, h, w), 0.0, 1.0, &d).unwrap();
            close(
                &flat(&ours.forward_relu_t(&x, false).unwrap()),
                &flat(&relu(&theirs.forward_t(&x, false).unwrap()).unwrap()),
                1e-5,
                "eval",
            );
        }
    }
}
