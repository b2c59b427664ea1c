//! SGD with momentum, Nesterov and weight decay, with PyTorch's semantics
//! (`torch.optim.SGD`); candle-nn's SGD has no momentum.

use candle_core::{Tensor, Var};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

pub struct Sgd {
    vars: Vec<Var>,
    buffers: Vec<Option<Tensor>>,
    pub config: SgdConfig,
}

impl Sgd {
    pub fn new(vars: Vec<Var>, config: SgdConfig) -> Self {
        let buffers = vec![None; vars.len()];
        Self {
            vars,
            buffers,
            config,
        }
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// The momentum buffers, in the order of the variables (None before
    /// a variable's first step): what a checkpoint must keep.
    pub fn buffers(&self) -> &[Option<Tensor>] {
        &self.buffers
    }

    /// Restores the momentum buffers of a checkpoint.
    pub fn set_buffers(&mut self, buffers: Vec<Option<Tensor>>) -> candle_core::Result<()> {
        if buffers.len() != self.vars.len() {
            candle_core::bail!(
                "{} momentum buffers for {} variables",
                buffers.len(),
                self.vars.len()
            )
        }
        self.buffers = buffers;
        Ok(())
    }

    /// One step: `g = ∇ + wd·p`; `buf = m·buf + g` (`buf = g` at first);
    /// `g = g + m·buf` (Nesterov) or `buf`; `p -= lr·g`.
    pub fn step(&mut self, grads: &candle_core::backprop::GradStore) -> candle_core::Result<()> {
        let SgdConfig {
            lr,
            momentum,
            weight_decay,
            nesterov,
        } = self.config;
        for (var, buf) in self.vars.iter().zip(self.buffers.iter_mut()) {
            let Some(g) = grads.get(var) else { continue };
            // Gradients carry their graph; detaching keeps the momentum
            // buffer from holding every past step alive.
            let mut g = g.detach();
            if weight_decay != 0.0 {
                g = (g + (var.as_tensor().detach() * weight_decay)?)?;
            }
            if momentum != 0.0 {
                let b = match buf.take() {
                    None => g.clone(),
                    Some(b) => ((b * momentum)? + &g)?,
                };
                g = if nesterov {
                    (g + (&b * momentum)?)?
                } else {
                    b.clone()
                };
                *buf = Some(b);
            }
            var.set(&(var.as_tensor().detach() - (g * lr)?)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Three steps on f(p) = sum(p^2)/2 (gradient p), the setting of
    ///   torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
    /// against torch's documented update rule evaluated in f64.
    #[test]
    fn matches_pytorch_on_a_quadratic() {
        let p = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let cfg = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
            nesterov: true,
        };
        let mut opt = Sgd::new(vec![p.clone()], cfg);
        let (mut x, mut b) = (1.0f64, 0.0f64);
        for i in 0..3 {
            let loss = (p.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
            let g = x + 0.01 * x;
            b = if i == 0 { g } else { 0.9 * b + g };
            x -= 0.1 * (g + 0.9 * b);
        }
        let got = p.as_tensor().to_vec1::<f32>().unwrap();
        assert!((got[0] as f64 - x).abs() < 1e-6, "{} vs {x}", got[0]);
        assert!((got[1] as f64 + 2.0 * x).abs() < 1e-6);
    }
}
