//! The inner maximisation of adversarial training (AT, TRADES, MMC-adv and
//! MAT's BIBO term): sign-gradient ascent of a gain in the L∞ eps-ball,
//! with the model in eval mode and its weights frozen.

use candle_core::Tensor;

use crate::attacks::{project, Ascent, Norm};
use crate::rng::SeededRng;

/// Where the ascent starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Start {
    /// `x + U(-eps, eps)` (Madry et al.).
    Uniform,
    /// `x + sigma·N(0, 1)` (TRADES: sigma 0.001).
    Gaussian(f64),
}

/// The settings of an inner maximisation.
#[derive(Debug, Clone, PartialEq)]
pub struct InnerMax {
    pub eps: f64,
    pub steps: usize,
    pub step_size: f64,
    pub start: Start,
    /// The budget grows linearly from eps/W at epoch 1 to eps at epoch W
    /// (0 or 1: no warm-up). The step size scales with it.
    pub warmup_epochs: usize,
}

impl InnerMax {
    /// The budget of `epoch` (1-based).
    pub fn eps_at(&self, epoch: usize) -> f64 {
        if self.warmup_epochs <= 1 {
            self.eps
        } else {
            self.eps * (epoch.min(self.warmup_epochs) as f64 / self.warmup_epochs as f64)
        }
    }
}

/// An [`InnerMax`] with its per-epoch state: the budget and a random
/// stream keyed by (seed, epoch), so a resumed run draws what an
/// uninterrupted one draws.
#[derive(Debug)]
pub struct Adversary {
    pub settings: InnerMax,
    seed: u64,
    rng: SeededRng,
    eps: f64,
}

impl Adversary {
    pub fn new(settings: InnerMax, seed: u64) -> Self {
        let eps = settings.eps_at(1);
        Self {
            settings,
            seed,
            rng: SeededRng::for_purpose(seed, "inner/1"),
            eps,
        }
    }

    pub fn start_epoch(&mut self, epoch: usize) {
        self.rng = SeededRng::for_purpose(self.seed, &format!("inner/{epoch}"));
        self.eps = self.settings.eps_at(epoch);
    }

    /// The current budget.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// A point x' in the eps-ball around `x` (and in [0, 1]) that ascends
    /// `gain(x')`, a scalar summed over the batch. Runs inside
    /// [`crate::nn::frozen`]: the backward passes compute input gradients only.
    pub fn maximise(
        &mut self,
        x: &Tensor,
        gain: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    ) -> crate::Result<Tensor> {
        let eps = self.eps;
        let s = &self.settings;
        let x = x.detach();
        if eps == 0.0 || s.steps == 0 {
            return Ok(x);
        }
        let noise = match s.start {
            Start::Uniform => self
                .rng
                .uniform(x.shape(), -eps as f32, eps as f32, x.device())?,
            Start::Gaussian(sigma) => self.rng.normal(x.shape(), 0.0, sigma as f32, x.device())?,
        };
        let start = project(&x, &(&x + noise)?, eps, Norm::Linf)?;
        // The step scales with the budget during an eps warm-up.
        let ascent = Ascent {
            norm: Norm::Linf,
            eps,
            steps: s.steps,
            step_size: s.step_size * eps / s.eps,
        };
        crate::nn::frozen(|| ascent.run(&x, start, gain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    #[test]
    fn warmup_is_linear_then_flat() {
        let s = InnerMax {
            eps: 0.3,
            steps: 1,
            step_size: 0.1,
            start: Start::Uniform,
            warmup_epochs: 3,
        };
        let e: Vec<f64> = (1..=5).map(|k| s.eps_at(k)).collect();
        for (got, want) in e.iter().zip([0.1, 0.2, 0.3, 0.3, 0.3]) {
            assert!((got - want).abs() < 1e-12, "{e:?}");
        }
    }

    /// Ascending the sum of the pixels must push every pixel to x + eps
    /// (clipped at 1), and never leave the ball.
    #[test]
    fn ascends_within_the_ball() {
        let d = Device::Cpu;
        let x = Tensor::new(&[[0.5f32, 0.9, 0.0]], &d).unwrap();
        let mut adv = Adversary::new(
            InnerMax {
                eps: 0.2,
                steps: 5,
                step_size: 0.1,
                start: Start::Gaussian(0.001),
                warmup_epochs: 0,
            },
            1,
        );
        let out = adv
            .maximise(&x, |t| t.sum(D::Minus1)?.sum_all())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let want = [0.7f32, 1.0, 0.2];
        for (o, w) in out[0].iter().zip(want) {
            assert!((o - w).abs() < 1e-6, "{out:?}");
        }
    }
}
