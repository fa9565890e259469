//! What the training-model tests share.

use candle_core::backprop::GradStore;
use candle_core::Var;

/// Every named parameter received a finite, non-zero gradient (`what` names the case).
pub fn assert_every_param_has_a_gradient(params: &[(String, Var)], grads: &GradStore, what: &str) {
    for (name, var) in params {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{what}: no gradient for {name}"));
        let n = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(n > 0.0 && n.is_finite(), "{what} {name}: |g|² = {n}");
    }
}
