//! The parity metric the test suites share.

use candle_core::{DType, Tensor};

/// max |a − b| / max |b| over all entries, in f32 (either input may be f16/bf16); panics on a
/// shape mismatch or a non-finite entry of `a`.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let flat = |t: &Tensor| -> Vec<f32> {
        t.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (a, b) = (flat(a), flat(b));
    assert!(a.iter().all(|x| x.is_finite()), "non-finite output");
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
    diff / scale.max(1e-30)
}
