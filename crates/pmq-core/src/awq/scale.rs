//! The activation-aware scale search of AWQ (AutoAWQ `_search_best_scale`/`_compute_best_scale`,
//! llm-awq `auto_scale.py`).
//!
//! For a group of linears `W_j` (`[out_j, in]`) that read the same input `X` (token rows,
//! `[tokens, in]`), AWQ searches one positive scale per input channel, `s ∈ ℝ^in`:
//!
//! ```text
//! s* = argmin_s  L(s),   L(s) = ‖ f({Q(W_j·diag(s))·diag(s)⁻¹}_j ; X) − f({W_j}_j ; X) ‖²
//! ```
//!
//! where `f` is the block that contains the linears (for a single linear, `f(W; X) = X Wᵀ`),
//! `Q` is fake quantization on the grid and the norm is the mean over output elements. The
//! search space is one-dimensional (the paper's Eq. 5, `s = s_X^α`, `α* = argmin L(s_X^α)`):
//!
//! ```text
//! s(r) = x̄^r                               (llm-awq; AutoAWQ duo_scaling = false)
//! s(r) = x̄^r / (w̄^(1−r) + 1e-4)            (AutoAWQ duo_scaling = true, its default)
//! s(r) ← max(s(r), 1e-4);  s(r) ← s(r) / sqrt(max s(r) · min s(r));  inf/NaN ← 1
//! r ∈ {0, 1/n, …, (n−1)/n}                  (n = 20; r = 1 is not on the grid)
//! ```
//!
//! with `x̄_c = mean_t |x_tc|` ([`activation_scale`]) and `w̄_c` the per-group normalised mean
//! weight magnitude of the concatenated `W_j` ([`weight_scale`]).

use super::config::AwqConfig;
use super::kernel::{common_cols, fake_quant_scaled, fake_quantize};
use crate::matrix::check_finite;
use crate::quant_grid::QuantGrid;
use crate::CoreError;
use faer::{Mat, MatRef};

/// Per input channel mean magnitude of the activations, `x̄_c = mean_t |x_tc|`
/// (llm-awq `get_act_scale`: `x.abs().view(-1, in).mean(0)`). `x_rows` is `[tokens, in]`;
/// no tokens give zeros.
pub fn activation_scale(x_rows: MatRef<'_, f64>) -> Vec<f64> {
    let t = x_rows.nrows();
    (0..x_rows.ncols())
        .map(|c| {
            if t == 0 {
                return 0.0;
            }
            let s: f64 = (0..t).map(|i| x_rows[(i, c)].abs()).sum();
            s / t as f64
        })
        .collect()
}

/// Per input channel mean of the group-normalised weight magnitudes over the concatenated
/// weights of the group of linears (AutoAWQ `_search_best_scale`, step 1):
/// `w̄_c = mean_rows |w_rc| / (max_{c' ∈ group(c)} |w_rc'| + 1e-6)`, groups as in `grid`
/// (one group per row without `group_size`).
pub fn weight_scale(weights: &[MatRef<'_, f64>], grid: &QuantGrid) -> Result<Vec<f64>, CoreError> {
    let cols = common_cols(weights)?;
    let span = grid.group_size.unwrap_or(cols.max(1));
    let mut sum = vec![0.0; cols];
    let mut rows_total = 0usize;
    for w in weights {
        rows_total += w.nrows();
        for start in (0..cols).step_by(span) {
            let end = (start + span).min(cols);
            let mut amax = vec![0.0f64; w.nrows()];
            for c in start..end {
                for (r, a) in amax.iter_mut().enumerate() {
                    *a = a.max(w[(r, c)].abs());
                }
            }
            for (c, s) in sum.iter_mut().enumerate().take(end).skip(start) {
                for (r, a) in amax.iter().enumerate() {
                    *s += w[(r, c)].abs() / (a + 1e-6);
                }
            }
        }
    }
    if rows_total > 0 {
        for s in &mut sum {
            *s /= rows_total as f64;
        }
    }
    Ok(sum)
}

/// The candidate scales of ratio `r`, exactly as AutoAWQ/llm-awq compute them:
/// `x̄^r / (w̄^(1−r) + 1e-4)` with `w_mean` (duo scaling) or `x̄^r` without, clamped below at
/// 1e-4, divided by `sqrt(max · min)`, non-finite entries replaced by 1.
/// Without `w_mean`, `r = 0` gives exactly 1 everywhere.
pub fn candidate_scales(x_mean: &[f64], w_mean: Option<&[f64]>, ratio: f64) -> Vec<f64> {
    // clamp(min = 1e-4) that keeps NaN, as torch.clamp
    let clamp_min = |v: f64| if v < 1e-4 { 1e-4 } else { v };
    let mut s: Vec<f64> = match w_mean {
        Some(w) => x_mean
            .iter()
            .zip(w)
            .map(|(&x, &w)| clamp_min(x.powf(ratio) / (w.powf(1.0 - ratio) + 1e-4)))
            .collect(),
        None => x_mean.iter().map(|&x| clamp_min(x.powf(ratio))).collect(),
    };
    // torch max/min propagate NaN
    let fold = |f: fn(f64, f64) -> f64| {
        s.iter().fold(None, |acc: Option<f64>, &v| {
            Some(match acc {
                None => v,
                Some(a) if a.is_nan() || v.is_nan() => f64::NAN,
                Some(a) => f(a, v),
            })
        })
    };
    let (max, min) = (fold(f64::max), fold(f64::min));
    if let (Some(max), Some(min)) = (max, min) {
        let norm = (max * min).sqrt();
        for v in &mut s {
            *v /= norm;
            if !v.is_finite() {
                *v = 1.0;
            }
        }
    }
    s
}

/// The result of [`search_scales`].
#[derive(Clone, Debug)]
pub struct ScaleSearch {
    /// The grid ratios, `n_grid` entries.
    pub ratios: Vec<f64>,
    /// Loss at each grid ratio (same order as `ratios`).
    pub losses: Vec<f64>,
    /// Index of the chosen ratio (the first minimum), `None` when the identity fallback won.
    pub best: Option<usize>,
    /// The chosen scales `s` (all ones for the identity).
    pub scales: Vec<f64>,
    /// Loss at the chosen scales.
    pub loss: f64,
    /// Loss without scaling (plain RTN of every `W_j`).
    pub loss_unscaled: f64,
}

impl ScaleSearch {
    /// The chosen ratio, `None` when no scaling was chosen by the identity fallback.
    pub fn ratio(&self) -> Option<f64> {
        self.best.map(|i| self.ratios[i])
    }
}

/// Grid search of the AWQ scales for a group of linears `weights` (each `[out_j, in]`) sharing
/// an input with channel magnitudes `x_mean` ([`activation_scale`]).
///
/// For each `r = i / n_grid`, `i = 0 … n_grid − 1`: `s = `[`candidate_scales`]`(r)`, the
/// candidate weights `Q(W_j·diag(s))·diag(s)⁻¹` (to be used with the *original* inputs) are passed
/// to `loss`, which returns the block-output error (AutoAWQ: the mean over output elements of the
/// squared difference to the full-precision block output). The first strictly smallest finite
/// loss wins (the reference starts from `inf` and keeps `loss < best`). The unscaled loss is the
/// grid's `r = 0` loss when that candidate is exactly `s = 1` (no duo scaling), otherwise one more
/// call of `loss` with plain RTN weights after the grid (see [`AwqConfig::identity_fallback`]).
pub fn search_scales<F>(
    weights: &[MatRef<'_, f64>],
    x_mean: &[f64],
    grid: &QuantGrid,
    cfg: &AwqConfig,
    mut loss: F,
) -> Result<ScaleSearch, CoreError>
where
    F: FnMut(&[Mat<f64>]) -> Result<f64, CoreError>,
{
    cfg.validate()?;
    let cols = common_cols(weights)?;
    if x_mean.len() != cols {
        return Err(CoreError::Shape {
            what: "AWQ activation scale x_mean".into(),
            got_rows: 1,
            got_cols: x_mean.len(),
            expected: format!("1×{cols} (one entry per input channel)"),
        });
    }
    for (c, &v) in x_mean.iter().enumerate() {
        if !v.is_finite() || v < 0.0 {
            return Err(CoreError::NonFinite {
                what: "AWQ activation scale x_mean (must be finite and ≥ 0)".into(),
                row: 0,
                col: c,
                value: v,
            });
        }
    }
    for (j, w) in weights.iter().enumerate() {
        check_finite(&format!("AWQ weight {j}"), *w)?;
    }
    let w_mean = if cfg.duo_scaling {
        Some(weight_scale(weights, grid)?)
    } else {
        None
    };

    let ratios = cfg.ratios();
    let mut losses = Vec::with_capacity(ratios.len());
    let mut best: Option<(usize, f64, Vec<f64>)> = None;
    let mut unscaled = None;
    for (i, &r) in ratios.iter().enumerate() {
        let s = candidate_scales(x_mean, w_mean.as_deref(), r);
        let q: Vec<Mat<f64>> = weights
            .iter()
            .map(|w| fake_quant_scaled(*w, Some(&s), grid))
            .collect();
        let l = loss(&q)?;
        losses.push(l);
        if unscaled.is_none() && s.iter().all(|&v| v == 1.0) {
            unscaled = Some(l);
        }
        if l.is_finite() && best.as_ref().is_none_or(|b| l < b.1) {
            best = Some((i, l, s));
        }
    }
    let loss_unscaled = match unscaled {
        Some(l) => l,
        None => {
            let q: Vec<Mat<f64>> = weights.iter().map(|w| fake_quantize(*w, grid)).collect();
            loss(&q)?
        }
    };
    let identity = |loss| ScaleSearch {
        ratios: ratios.clone(),
        losses: losses.clone(),
        best: None,
        scales: vec![1.0; cols],
        loss,
        loss_unscaled,
    };
    match best {
        Some((_, l, _)) if cfg.identity_fallback && loss_unscaled < l => {
            Ok(identity(loss_unscaled))
        }
        Some((i, l, s)) => Ok(ScaleSearch {
            best: Some(i),
            scales: s,
            loss: l,
            ratios,
            losses,
            loss_unscaled,
        }),
        None if cfg.identity_fallback && loss_unscaled.is_finite() => Ok(identity(loss_unscaled)),
        None => {
            let (col, value) = losses
                .iter()
                .copied()
                .enumerate()
                .find(|(_, l)| !l.is_finite())
                .unwrap_or((0, f64::NAN));
            Err(CoreError::NonFinite {
                what: "AWQ block losses (no grid ratio gave a finite loss)".into(),
                row: 0,
                col,
                value,
            })
        }
    }
}
