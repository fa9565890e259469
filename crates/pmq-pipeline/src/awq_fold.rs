//! Applying AWQ scales to a model without changing its function.
//!
//! A scaling group's linears `W_j` read `x`; with `W_j ← W_j·diag(s)` they must read
//! `diag(s)⁻¹·x`, so `1/s` is folded into the producer of `x` named by the model's
//! [`ScaleFold`] (see [`pmq_models::scaling`] for the per-family table):
//!
//! ```text
//! norm:             γ ← γ / s,  β ← β / s                (LayerNorm / RMSNorm output = x)
//! preceding linear: W_p ← diag(s)⁻¹·W_p,  b_p ← b_p / s  (x = f(W_p·h + b_p), f channel-wise
//!                                                          positively homogeneous or linear)
//! ```

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use pmq_models::{BlockModel, ScaleFold, ScalingGroup};

fn scale_tensor(s: &[f64]) -> Result<Tensor> {
    if let Some(v) = s.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
        bail!("AWQ scales must be finite and positive, found {v}");
    }
    let v: Vec<f32> = s.iter().map(|&v| v as f32).collect();
    Ok(Tensor::from_vec(v, s.len(), &Device::Cpu)?)
}

/// Divides the producer named by `fold` by `s`: a norm's weight (and bias), or a preceding
/// linear's rows (and bias). Returns the names of the changed tensors other than linear
/// weights (those are quantized later and so written anyway).
pub fn fold_inverse_scales(
    model: &mut dyn BlockModel,
    fold: &ScaleFold,
    s: &[f64],
) -> Result<Vec<String>> {
    let st = scale_tensor(s)?;
    let (tensors, linear) = match fold {
        ScaleFold::Norm { weight, bias } => {
            let mut t = vec![weight.clone()];
            t.extend(bias.iter().cloned());
            (t, None)
        }
        ScaleFold::Linear { linear, bias } => (bias.iter().cloned().collect(), Some(linear)),
    };
    for name in &tensors {
        let t = model.tensor(name)?;
        model.set_tensor(name, t.broadcast_div(&st)?)?;
    }
    if let Some(linear) = linear {
        let w = model.linear_weight(linear)?;
        model.set_linear_weight(linear, w.broadcast_div(&st.unsqueeze(1)?)?)?;
    }
    Ok(tensors)
}

/// Multiplies the input columns of linear `name` by `s` (`W ← W·diag(s)`).
pub fn scale_input_columns(model: &mut dyn BlockModel, name: &str, s: &[f64]) -> Result<()> {
    let st = scale_tensor(s)?;
    let w = model.linear_weight(name)?;
    model.set_linear_weight(name, w.broadcast_mul(&st.unsqueeze(0)?)?)?;
    Ok(())
}

/// Scales the group's linears by `s` and folds `1/s` into their producer: the model computes
/// the same function (up to f32 rounding). Fails for a group without a fold unless `s = 1`.
/// Returns the changed tensors as [`fold_inverse_scales`] does.
pub fn apply_scales(
    model: &mut dyn BlockModel,
    group: &ScalingGroup,
    s: &[f64],
) -> Result<Vec<String>> {
    let Some(fold) = &group.fold else {
        if s.iter().all(|&v| v == 1.0) {
            return Ok(Vec::new());
        }
        bail!(
            "{:?} have no exact fold for AWQ scales; they can only be left unscaled",
            group.linears
        );
    };
    let changed = fold_inverse_scales(model, fold, s)?;
    for name in &group.linears {
        scale_input_columns(model, name, s)?;
    }
    Ok(changed)
}
