//! The backward pass of the vendored candle-core (vendor/README.md): a
//! tensor's first gradient is stored as it is instead of being added to a
//! tensor of zeros, and later ones add up as before.

use candle_core::{Device, Tensor, Var};

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Upstream computes `0 + g`, which turns a gradient of -0.0 into +0.0; the
/// patched pass keeps -0.0. This fails if the workspace builds against an
/// unpatched candle-core (the `[patch.crates-io]` entry gone).
#[test]
fn the_first_gradient_is_stored_not_added_to_zeros() {
    let dev = Device::Cpu;
    let x = Var::new(&[1f32, 2., 3., 4.], &dev).unwrap();
    let t = Tensor::new(&[-0f32, 1.5, -0., -2.], &dev).unwrap();
    let grads = (x.as_tensor() * &t)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = grads.get(x.as_tensor()).unwrap();
    assert_eq!(bits(g), bits(&t), "d(x·t)/dx must be t, bit for bit");
}

/// A tensor reached along several paths gets the sum of their gradients.
#[test]
fn gradients_along_several_paths_add_up() {
    let dev = Device::Cpu;
    let x = Var::new(&[[1f32, -2.], [3., 0.5]], &dev).unwrap();
    let a = Tensor::new(&[[2f32, 3.], [5., 7.]], &dev).unwrap();
    let xt = x.as_tensor();
    // loss = Σ x·a + Σ x² + Σ x: d/dx = a + 2x + 1.
    let loss = ((xt * &a).unwrap().sum_all().unwrap() + xt.sqr().unwrap().sum_all().unwrap())
        .unwrap()
        .add(&xt.sum_all().unwrap())
        .unwrap();
    let grads = loss.backward().unwrap();
    let g = grads.get(xt).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(g, vec![vec![5f32, 0.], vec![12., 9.]]);
}

/// The gradient of a sum is a broadcast of the output gradient; stored
/// first, it is made contiguous, as the sum with zeros made it before.
#[test]
fn a_broadcast_first_gradient_is_stored_contiguous() {
    let dev = Device::Cpu;
    let x = Var::new(&[[1f32, 2., 3.], [4., 5., 6.]], &dev).unwrap();
    let grads = x.as_tensor().sum_all().unwrap().backward().unwrap();
    let g = grads.get(x.as_tensor()).unwrap();
    assert!(g.is_contiguous());
    assert_eq!(g.to_vec2::<f32>().unwrap(), vec![vec![1f32; 3]; 2]);
}
