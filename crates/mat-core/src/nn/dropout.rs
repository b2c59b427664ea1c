//! Dropout with a seeded mask (candle-nn's draws from the unseedable CPU RNG).

use std::sync::Mutex;

use candle_core::{ModuleT, Tensor};

use crate::rng::SeededRng;

#[derive(Debug)]
pub struct Dropout {
    p: f32,
    seed: u64,
    rng: Mutex<SeededRng>,
}

impl Dropout {
    /// Drops each activation with probability `p` at training time and
    /// scales the rest by `1/(1-p)`, as `torch.nn.Dropout`.
    pub fn new(p: f32, seed: u64) -> Self {
        Self {
            p,
            seed,
            rng: Mutex::new(SeededRng::for_purpose(seed, "dropout")),
        }
    }

    /// Re-keys the mask stream for `epoch`, so that a run resumed at an
    /// epoch draws the masks an uninterrupted run draws.
    pub fn start_epoch(&self, epoch: usize) {
        *self.rng.lock().expect("not poisoned") =
            SeededRng::for_purpose(self.seed, &format!("dropout/{epoch}"));
    }
}

impl ModuleT for Dropout {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if !train || self.p == 0.0 {
            return Ok(xs.clone());
        }
        let mask = self
            .rng
            .lock()
            .expect("not poisoned")
            .dropout_mask(xs.shape(), 1.0 - self.p, xs.device())
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        xs * mask
    }
}
