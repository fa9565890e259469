#![allow(dead_code)]
use faer::Mat;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn randn(rng: &mut StdRng, rows: usize, cols: usize) -> Mat<f64> {
    let n = Normal::new(0.0, 1.0).unwrap();
    Mat::from_fn(rows, cols, |_, _| n.sample(rng))
}

/// `X Xᵀ` for `tokens` random tokens of dimension `dim` with correlated, unevenly scaled
/// features (like real activations), so that GPTQ's error feedback matters.
pub fn hessian(rng: &mut StdRng, dim: usize, tokens: usize) -> Mat<f64> {
    let mix = randn(rng, dim, dim);
    let z = randn(rng, dim, tokens);
    let scales: Vec<f64> = (0..dim)
        .map(|i| 0.2 + 3.0 * ((i * 7919) % dim) as f64 / dim as f64)
        .collect();
    let x = Mat::from_fn(dim, tokens, |i, t| {
        let mut s = 0.0;
        for k in 0..dim {
            s += (if k == i { 1.0 } else { 0.3 }) * mix[(i, k)] * z[(k, t)] / (dim as f64).sqrt();
        }
        scales[i] * (s + z[(i, t)])
    });
    &x * x.transpose()
}

pub fn max_abs_diff(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    let mut m: f64 = 0.0;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            m = m.max((a[(i, j)] - b[(i, j)]).abs());
        }
    }
    m
}
