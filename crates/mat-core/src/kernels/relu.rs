//! ReLU with a one-pass backward (`dX = dY · [Y > 0]`); candle's backward
//! builds the mask through a comparison, a cast and a multiplication.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};

use std::mem::MaybeUninit;

use super::{f32_slice, par_buffer, vectorized};

/// Elements per rayon task: large enough to amortise the task.
const CHUNK: usize = 1 << 16;

struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "mat-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "relu input")?;
        let fill = |i: usize, y: &mut [MaybeUninit<f32>]| {
            vectorized(
                #[inline(always)]
                || {
                    for (y, &x) in y.iter_mut().zip(&x[i * CHUNK..]) {
                        *y = MaybeUninit::new(x.max(0.0));
                    }
                },
            )
        };
        // SAFETY: each part's input is at least as long as the part, and
        // every element of it is written.
        let y = unsafe { par_buffer(x.len(), CHUNK, fill) };
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(relu_backward(y, dy)?))
    }
}

struct ReluBwd;

impl CustomOp2 for ReluBwd {
    fn name(&self) -> &'static str {
        "mat-relu-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (y, dy) = (
            f32_slice(s1, l1, "relu output")?,
            f32_slice(s2, l2, "relu gradient")?,
        );
        if y.len() != dy.len() {
            candle_core::bail!("relu backward: {} outputs, {} gradients", y.len(), dy.len())
        }
        let fill = |i: usize, dx: &mut [MaybeUninit<f32>]| {
            vectorized(
                #[inline(always)]
                || mask_by_output(&y[i * CHUNK..], &dy[i * CHUNK..], dx),
            )
        };
        // SAFETY: `y` and `dy` have `dx`'s length (checked above), so
        // `mask_by_output` writes every element of each part.
        let dx = unsafe { par_buffer(y.len(), CHUNK, fill) };
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// `dx = dy · [y > 0]`, elementwise, over the shortest of the three.
#[inline(always)]
pub(crate) fn mask_by_output(y: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
    for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
        *dx = MaybeUninit::new(if y > 0.0 { dy } else { 0.0 });
    }
}

/// `dY · [Y > 0]` from a ReLU's output and its gradient (not differentiable).
pub(crate) fn relu_backward(y: &Tensor, dy: &Tensor) -> candle_core::Result<Tensor> {
    y.contiguous()?
        .apply_op2_no_bwd(&dy.contiguous()?, &ReluBwd)
}

/// `max(x, 0)`, differentiable; the gradient at 0 is 0, as in PyTorch.
pub fn relu(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(Relu)
    } else {
        x.relu()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Away from 0 both agree; at exactly 0 candle's backward (`x >= 0`)
    /// passes the gradient and PyTorch's (`threshold_backward`) does not.
    #[test]
    fn matches_candle_away_from_zero() {
        let d = Device::Cpu;
        let v: Vec<f32> = (0..300_000)
            .map(|i| ((i as f32) * 0.37 + 0.1).sin())
            .collect();
        assert!(v.iter().all(|&a| a != 0.0));
        let x = Var::from_slice(&v, (3, 100_000), &d).unwrap();
        let r: Vec<f32> = v.iter().map(|a| a * 2.0 + 1.0).collect();
        let r = Tensor::from_slice(&r, (3, 100_000), &d).unwrap();
        let ours = relu(&x).unwrap();
        let theirs = x.relu().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(flat(&ours) == flat(&theirs), "forward differs");
        let g1 = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (theirs * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(
            flat(g1.get(&x).unwrap()) == flat(g2.get(&x).unwrap()),
            "gradient differs"
        );
    }

    /// PyTorch: x = torch.tensor([-1., 0., 2.], requires_grad=True)
    ///          torch.relu(x).sum().backward(); x.grad -> tensor([0., 0., 1.])
    #[test]
    fn gradient_at_zero_is_zero_as_in_pytorch() {
        let x = Var::new(&[-1f32, 0.0, 2.0], &Device::Cpu).unwrap();
        let g = relu(&x).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(
            g.get(&x).unwrap().to_vec1::<f32>().unwrap(),
            vec![0.0, 0.0, 1.0]
        );
    }
}
