//! CIFAR augmentation as in TRADES' and most robustness code:
//! `RandomCrop(32, padding=4)` (zero padding) and `RandomHorizontalFlip()`.

use candle_core::Tensor;

use crate::rng::SeededRng;

/// What to apply to each training batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Augment {
    /// Pad by this many zero pixels on each side, then crop back to the
    /// original size at a uniformly drawn offset; 0 turns cropping off.
    pub crop_padding: usize,
    /// Mirror each image left-right with probability 1/2.
    pub flip: bool,
}

impl Augment {
    pub fn is_identity(&self) -> bool {
        self.crop_padding == 0 && !self.flip
    }

    /// Applies the augmentation to a batch `[N, C, H, W]`, one draw per image.
    pub fn apply(&self, x: &Tensor, rng: &mut SeededRng) -> crate::Result<Tensor> {
        if self.is_identity() {
            return Ok(x.clone());
        }
        let (n, c, h, w) = x.dims4()?;
        let src = x.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; src.len()];
        let p = self.crop_padding as isize;
        for i in 0..n {
            // Offsets into the padded image: the crop's top-left corner.
            let dy = rng.below(2 * self.crop_padding + 1) as isize - p;
            let dx = rng.below(2 * self.crop_padding + 1) as isize - p;
            let flip = self.flip && rng.coin();
            for ch in 0..c {
                let plane = (i * c + ch) * h * w;
                for y in 0..h {
                    let sy = y as isize + dy;
                    if sy < 0 || sy >= h as isize {
                        continue;
                    }
                    for xx in 0..w {
                        let ox = if flip { w - 1 - xx } else { xx };
                        let sx = ox as isize + dx;
                        if sx < 0 || sx >= w as isize {
                            continue;
                        }
                        out[plane + y * w + xx] = src[plane + sy as usize * w + sx as usize];
                    }
                }
            }
        }
        Ok(Tensor::from_vec(out, (n, c, h, w), x.device())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn flips_and_crops_keep_the_pixels_they_move() {
        let x = Tensor::arange(1f32, 17.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 4, 4))
            .unwrap();
        let flip = Augment {
            crop_padding: 0,
            flip: true,
        };
        let mut seen_flip = false;
        let mut rng = SeededRng::new(0);
        for _ in 0..8 {
            let y = flip.apply(&x, &mut rng).unwrap();
            let row = y.get(0).unwrap().get(0).unwrap().get(0).unwrap();
            let row = row.to_vec1::<f32>().unwrap();
            assert!(row == [1.0, 2.0, 3.0, 4.0] || row == [4.0, 3.0, 2.0, 1.0]);
            seen_flip |= row[0] == 4.0;
        }
        assert!(seen_flip);
        // Crops: every output pixel is either padding (0) or a shifted input pixel.
        let crop = Augment {
            crop_padding: 2,
            flip: false,
        };
        for _ in 0..8 {
            let y = crop.apply(&x, &mut rng).unwrap();
            let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let nz: Vec<f32> = v.iter().copied().filter(|&p| p != 0.0).collect();
            assert!(nz.windows(2).all(|w| w[0] < w[1]), "{v:?}");
            assert!(nz.len() >= 4, "{v:?}");
        }
    }
}
