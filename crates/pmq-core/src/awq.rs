//! The model-free search primitives of AWQ, activation-aware weight quantization
//! (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization for LLM Compression and
//! Acceleration"), with the semantics of the reference code: mit-han-lab/llm-awq
//! (`awq/quantize/auto_scale.py`, `auto_clip.py`, `quantizer.py`) and casper-hansen/AutoAWQ
//! (`awq/quantize/quantizer.py`: `_search_best_scale`, `_compute_best_scale`,
//! `_compute_best_clip`). Running the block, choosing the groups of linears and folding the
//! scales into the model belong to the pipeline; everything here is a pure function of matrices.
//!
//! # The objective
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
//!
//! # Why the scaled weight can be folded
//!
//! `Q(W·diag(s))·diag(s)⁻¹` applied to `x` equals `Q(W·diag(s))` applied to `diag(s)⁻¹·x`
//! (in token rows: `X·diag(s)⁻¹·Q(W·diag(s))ᵀ`). So the quantized layer stores
//! `Q(W·diag(s))` ([`scale_columns`] then RTN) and `diag(s)⁻¹` is folded into whatever produces
//! `x`: a LayerNorm/RMSNorm (`γ ← γ/s`, `β ← β/s`) or a preceding linear (its rows and bias
//! divided by `s`). Folding is architecture-specific and left to the pipeline;
//! [`unscale_columns`] gives `W·diag(s)⁻¹` (or `X·diag(s)⁻¹` for token rows).
//!
//! # Clipping
//!
//! After scaling, the reference searches per output row and quantization group a clipping
//! threshold `m = m₀·(1 − i/n)`, `i = 0 … ⌊max_shrink·n⌋ − 1` (`m₀` = the group's `max |w|`,
//! `n = 20`, `max_shrink = 0.5`), minimising the group's contribution to the output error on
//! (strided) sampled tokens of the *scaled* input `X·diag(s)⁻¹`:
//!
//! ```text
//! err(r, g; m) = mean_t ( Σ_{c ∈ g} (Q(clamp(w_rc, −m, m)) − w_rc) · x_tc )²
//! ```
//!
//! (the square of the group's partial dot product, not a sum of squares). `i = 0` is no clipping
//! and the best threshold starts as `m₀`, so the chosen clip is never worse than none on the
//! sampled tokens. The reference skips `q`/`k` projections ("due to qk bmm, it is hard to clip
//! precisely"); that is the pipeline's choice. The final weight is RTN of the scaled, clipped
//! weight ([`quantize_layer`]).
//!
//! # Differences from the reference (on purpose)
//!
//! - `Q` is this crate's grid ([`QuantGrid::fit`], GPTQ's quantizer) everywhere: the fitted range
//!   always holds 0 and the sym grid uses zero `2^(b−1)` with scale `2·max|w|/(2^b − 1)`.
//!   AutoAWQ's `pseudo_quantize_tensor` fits asym groups on `[min w, max w]` without forcing 0 in
//!   (zero clamped to `[0, 2^b − 1]`, scale clamped to ≥ 1e-5) and its sym grid is
//!   `[−2^(b−1), 2^(b−1) − 1]·max|w|/(2^(b−1) − 1)`. In the clip search AutoAWQ clamps to
//!   `±m` and then refits min/max on the clamped group; here the clamped group is fitted with
//!   [`QuantGrid::fit`], i.e. on `[min(min, 0), max(max, 0)]` of the clamped values. Searched
//!   thresholds are therefore optimal for the grid that is actually exported.
//! - Arithmetic is f64 (the reference runs the search in fp16 with f32 accumulation).
//! - Groups may be ragged (the last group of a row may be shorter); the reference asserts
//!   `in % group_size == 0`.
//! - With `duo_scaling`, no grid ratio gives `s = 1` (at `r = 0`, `s = 1/(w̄ + 1e-4)`), so
//!   AutoAWQ can pick a scale that is worse than not scaling at all. [`search_scales`] always
//!   evaluates the unscaled loss too and, with [`AwqConfig::identity_fallback`] (default on),
//!   returns `s = 1` when it is strictly better, so AWQ is never worse than RTN on the loss it
//!   is given. Without duo scaling `r = 0` gives exactly `s = 1` (`x̄⁰ = 1`) and the fallback
//!   never triggers (llm-awq semantics). Set `identity_fallback = false` to reproduce AutoAWQ.
//! - Clip search on a row-group never updates on a non-finite error (the reference starts from
//!   an error of 1e9 instead of infinity).

use crate::matrix::{check_finite, par};
use crate::quant_grid::QuantGrid;
use crate::quantized::QuantizedLayer;
use crate::rtn::rtn;
use crate::CoreError;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

/// Settings of the AWQ searches. [`Default`] is AutoAWQ's (duo scaling, 20 ratios, clip shrink
/// ≤ 50 % in 20ths, 512 clip tokens) plus the identity fallback; [`AwqConfig::llm_awq`] the
/// original x-only scaling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AwqConfig {
    /// Number of ratios `r = i / n_grid`, `i = 0 … n_grid − 1` (20).
    pub n_grid: usize,
    /// `s = x̄^r / (w̄^(1−r) + 1e-4)` (AutoAWQ's default) instead of `s = x̄^r` (llm-awq).
    pub duo_scaling: bool,
    /// Return `s = 1` when the unscaled loss is strictly below every grid loss (not in the
    /// reference; only matters with `duo_scaling`).
    pub identity_fallback: bool,
    /// Largest relative shrink of a group's `max |w|` in the clip search (0.5).
    pub max_shrink: f64,
    /// Shrink steps are `i / clip_grid` (20).
    pub clip_grid: usize,
    /// Tokens kept in the clip search: every `max(1, ⌊tokens / clip_tokens⌋)`-th row, starting
    /// at row 0 (AutoAWQ's `n_sample_token = 512`; up to `2·clip_tokens − 1` rows can remain).
    /// 0 keeps every row.
    pub clip_tokens: usize,
}

impl Default for AwqConfig {
    fn default() -> Self {
        Self {
            n_grid: 20,
            duo_scaling: true,
            identity_fallback: true,
            max_shrink: 0.5,
            clip_grid: 20,
            clip_tokens: 512,
        }
    }
}

impl AwqConfig {
    /// llm-awq's settings: activation-only scales `s = x̄^r`.
    pub fn llm_awq() -> Self {
        Self {
            duo_scaling: false,
            ..Self::default()
        }
    }

    /// The grid ratios `i / n_grid`, `i = 0 … n_grid − 1`.
    pub fn ratios(&self) -> Vec<f64> {
        (0..self.n_grid)
            .map(|i| i as f64 / self.n_grid as f64)
            .collect()
    }

    /// Number of clip thresholds tried, `⌊max_shrink · clip_grid⌋` (at least 1: no clipping).
    pub fn clip_steps(&self) -> usize {
        ((self.max_shrink * self.clip_grid as f64) as usize).max(1)
    }

    fn validate(&self) -> Result<(), CoreError> {
        if self.n_grid == 0 {
            return Err(CoreError::Config("AWQ n_grid must be at least 1".into()));
        }
        if self.clip_grid == 0 {
            return Err(CoreError::Config("AWQ clip_grid must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.max_shrink) {
            return Err(CoreError::Config(format!(
                "AWQ max_shrink must be in [0, 1), got {}",
                self.max_shrink
            )));
        }
        Ok(())
    }
}

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

/// `W·diag(s)`: column `c` multiplied by `s_c`.
pub fn scale_columns(w: MatRef<'_, f64>, s: &[f64]) -> Mat<f64> {
    assert_eq!(s.len(), w.ncols(), "one scale per column");
    Mat::from_fn(w.nrows(), w.ncols(), |r, c| w[(r, c)] * s[c])
}

/// `W·diag(s)⁻¹`: column `c` divided by `s_c`. For token rows `X` (`[tokens, in]`) this is the
/// input the scaled weight sees, `X·diag(s)⁻¹`.
pub fn unscale_columns(w: MatRef<'_, f64>, s: &[f64]) -> Mat<f64> {
    assert_eq!(s.len(), w.ncols(), "one scale per column");
    Mat::from_fn(w.nrows(), w.ncols(), |r, c| w[(r, c)] / s[c])
}

/// Fake quantization (quantize-dequantize) of `w` on `grid`, groups fitted on `w` itself;
/// equal to [`rtn`]`(w).dequant`.
pub fn fake_quantize(w: MatRef<'_, f64>, grid: &QuantGrid) -> Mat<f64> {
    fake_quant_scaled(w, None, grid)
}

/// `Q(W·diag(s))·diag(s)⁻¹` (or `Q(W)` without `s`), parallel over groups.
fn fake_quant_scaled(w: MatRef<'_, f64>, s: Option<&[f64]>, grid: &QuantGrid) -> Mat<f64> {
    let (rows, cols) = (w.nrows(), w.ncols());
    let mut out = Mat::<f64>::zeros(rows, cols);
    if rows == 0 || cols == 0 {
        return out;
    }
    let owned;
    let w = if w.row_stride() == 1 {
        w
    } else {
        owned = w.to_owned();
        owned.as_ref()
    };
    let span = grid.group_size.unwrap_or(cols);
    out.par_col_chunks_mut(span)
        .enumerate()
        .for_each(|(g, mut block)| {
            let start = g * span;
            let mut mn = vec![f64::INFINITY; rows];
            let mut mx = vec![f64::NEG_INFINITY; rows];
            for j in 0..block.ncols() {
                let c = start + j;
                let sc = s.map_or(1.0, |s| s[c]);
                let dst = col_mut(block.as_mut(), j);
                for (((d, &x), lo), hi) in dst.iter_mut().zip(col(w, c)).zip(&mut mn).zip(&mut mx) {
                    let v = if s.is_some() { x * sc } else { x };
                    *lo = lo.min(v);
                    *hi = hi.max(v);
                    *d = v;
                }
            }
            let params = fit_rows(grid, &mn, &mx);
            for j in 0..block.ncols() {
                let sc = s.map_or(1.0, |s| s[start + j]);
                for (d, p) in col_mut(block.as_mut(), j).iter_mut().zip(&params) {
                    let q = p.fake_quant(*d);
                    *d = if s.is_some() { q / sc } else { q };
                }
            }
        });
    out
}

/// Group parameters of one row in the form the hot loops use.
#[derive(Clone, Copy)]
struct RowParams {
    scale: f64,
    zero: f64,
    maxq: f64,
}

impl RowParams {
    /// [`QuantGrid::fake_quant`] bit for bit (`scale·(clamp(round(x/scale) + zero, 0, maxq) −
    /// zero)`; the code stays an integral f64 instead of a `u32`), with a branch-free
    /// round-half-to-even: `round_ties_even` is a libm call on baseline x86-64, ~10× slower.
    #[inline(always)]
    fn fake_quant(&self, x: f64) -> f64 {
        let q = (round_half_even(x / self.scale) + self.zero).clamp(0.0, self.maxq);
        (q - self.zero) * self.scale
    }
}

/// Round half to even: for `|v| < 2^51`, adding and subtracting `1.5·2^52` rounds to an
/// integer in the default (nearest-even) rounding mode; larger values and NaN take the libm path.
/// `−0.3 ↦ +0` here versus `−0` in libm; `+ zero` (≥ 0) makes both `+0` before use.
#[inline(always)]
fn round_half_even(v: f64) -> f64 {
    const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5 · 2^52
    if v.abs() < 2_251_799_813_685_248.0 {
        (v + MAGIC) - MAGIC
    } else {
        v.round_ties_even()
    }
}

/// Fits the parameters of each row from its minimum and maximum ([`QuantGrid::fit_range`]).
fn fit_rows(grid: &QuantGrid, mn: &[f64], mx: &[f64]) -> Vec<RowParams> {
    let maxq = grid.maxq() as f64;
    mn.iter()
        .zip(mx)
        .map(|(&lo, &hi)| {
            let p = grid.fit_range(lo, hi);
            RowParams {
                scale: p.scale,
                zero: p.zero as f64,
                maxq,
            }
        })
        .collect()
}

/// Column `j` of a matrix with unit row stride, as a slice.
fn col(m: MatRef<'_, f64>, j: usize) -> &[f64] {
    m.col(j)
        .try_as_col_major()
        .expect("unit row stride")
        .as_slice()
}

/// Column `j` of a mutable matrix with unit row stride, as a slice.
fn col_mut(m: MatMut<'_, f64>, j: usize) -> &mut [f64] {
    m.col_mut(j)
        .try_as_col_major_mut()
        .expect("unit row stride")
        .as_slice_mut()
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

/// The result of [`search_clip`]. Per-(group, row) vectors are `[groups, out]` row-major, as
/// [`QuantizedLayer::scales`].
#[derive(Clone, Debug)]
pub struct ClipSearch {
    /// Chosen clipping threshold `m` of each (group, row); equals the group's `max |w|` when
    /// clipping does not help.
    pub max_val: Vec<f64>,
    /// The group's original `max |w|`.
    pub org_max_val: Vec<f64>,
    /// Chosen shrink step `i` (`m = m₀·(1 − i/clip_grid)`, 0 = no clipping).
    pub shrink: Vec<usize>,
    /// Error at the chosen threshold, `mean_t (Σ_{c∈g} (q − w)_c x_tc)²`.
    pub errors: Vec<f64>,
    /// The same error without clipping (step 0).
    pub unclipped_errors: Vec<f64>,
    /// `w` clamped to `±max_val` per (group, row), `[out, in]`.
    pub clipped: Mat<f64>,
    /// Token rows used (after striding).
    pub tokens_used: usize,
}

/// The token rows the clip search uses: every `max(1, ⌊tokens / clip_tokens⌋)`-th from row 0
/// (AutoAWQ `_compute_best_clip`; `clip_tokens = 0` keeps all).
pub fn clip_token_rows(tokens: usize, clip_tokens: usize) -> Vec<usize> {
    let step = tokens.checked_div(clip_tokens).unwrap_or(1).max(1);
    (0..tokens).step_by(step).collect()
}

/// Clip search of one (already scaled) weight `w` (`[out, in]`) on the inputs it sees, `x_rows`
/// (`[tokens, in]`, already divided by the AWQ scales): per output row and group, the threshold
/// `m = m₀·(1 − i/clip_grid)`, `i = 0 … clip_steps − 1`, minimising
/// `mean_t (Σ_{c∈g} (Q(clamp(w, ±m)) − w)_c · x_tc)²` over the sampled tokens; returns the
/// thresholds and `w` clamped to them. The errors are batched GEMMs per group, either
/// `D_g·X_gᵀ` or `D_g·(X_gᵀX_g)` whichever is cheaper (`tokens` vs `group_size`).
pub fn search_clip(
    w: MatRef<'_, f64>,
    x_rows: MatRef<'_, f64>,
    grid: &QuantGrid,
    cfg: &AwqConfig,
) -> Result<ClipSearch, CoreError> {
    cfg.validate()?;
    let (rows, cols) = (w.nrows(), w.ncols());
    if x_rows.ncols() != cols {
        return Err(CoreError::Shape {
            what: "AWQ clip-search inputs".into(),
            got_rows: x_rows.nrows(),
            got_cols: x_rows.ncols(),
            expected: format!("tokens×{cols}"),
        });
    }
    if x_rows.nrows() == 0 {
        return Err(CoreError::Shape {
            what: "AWQ clip-search inputs".into(),
            got_rows: 0,
            got_cols: cols,
            expected: "at least one token row".into(),
        });
    }
    check_finite("AWQ clip-search weight", w)?;
    check_finite("AWQ clip-search inputs", x_rows)?;

    let keep = clip_token_rows(x_rows.nrows(), cfg.clip_tokens);
    let xs = Mat::from_fn(keep.len(), cols, |t, c| x_rows[(keep[t], c)]);
    let tokens = keep.len() as f64;
    let span = grid.group_size.unwrap_or(cols.max(1));
    let n_groups = if cols == 0 { 0 } else { cols.div_ceil(span) };
    let steps = cfg.clip_steps();
    let inner_par = if n_groups > 1 { Par::Seq } else { par() };

    struct GroupResult {
        org: Vec<f64>,
        best: Vec<f64>,
        shrink: Vec<usize>,
        err: Vec<f64>,
        err0: Vec<f64>,
    }
    let results: Vec<GroupResult> = (0..n_groups)
        .into_par_iter()
        .map(|g| {
            let start = g * span;
            let len = span.min(cols - start);
            let wg = w.subcols(start, len).to_owned();
            let metric = RowMetric::new(xs.subcols(start, len), inner_par);
            let org: Vec<f64> = (0..rows)
                .map(|r| (0..len).fold(0.0f64, |m, j| m.max(wg[(r, j)].abs())))
                .collect();
            let mut best = org.clone();
            let mut shrink = vec![0usize; rows];
            let mut err = vec![f64::INFINITY; rows];
            let mut err0 = vec![f64::NAN; rows];
            let mut d = Mat::<f64>::zeros(rows, len);
            let mut mn = vec![0.0; rows];
            let mut mx = vec![0.0; rows];
            for i in 0..steps {
                let factor = 1.0 - i as f64 / cfg.clip_grid as f64;
                let m: Vec<f64> = org.iter().map(|&o| o * factor).collect();
                mn.fill(f64::INFINITY);
                mx.fill(f64::NEG_INFINITY);
                for j in 0..len {
                    let src = &col(wg.as_ref(), j)[..rows];
                    let dst = &mut col_mut(d.as_mut(), j)[..rows];
                    let (m, mn, mx) = (&m[..rows], &mut mn[..rows], &mut mx[..rows]);
                    for r in 0..rows {
                        let v = src[r].clamp(-m[r], m[r]);
                        mn[r] = mn[r].min(v);
                        mx[r] = mx[r].max(v);
                        dst[r] = v;
                    }
                }
                let params = fit_rows(grid, &mn, &mx);
                for j in 0..len {
                    let src = &col(wg.as_ref(), j)[..rows];
                    let dst = &mut col_mut(d.as_mut(), j)[..rows];
                    let params = &params[..rows];
                    for r in 0..rows {
                        dst[r] = params[r].fake_quant(dst[r]) - src[r];
                    }
                }
                let e = metric.row_errors(d.as_ref(), inner_par);
                for r in 0..rows {
                    let e = e[r] / tokens;
                    if i == 0 {
                        err0[r] = e;
                    }
                    if e < err[r] {
                        err[r] = e;
                        best[r] = m[r];
                        shrink[r] = i;
                    }
                }
            }
            for r in 0..rows {
                if !err[r].is_finite() {
                    err[r] = err0[r];
                }
            }
            GroupResult {
                org,
                best,
                shrink,
                err,
                err0,
            }
        })
        .collect();

    let flat = |f: fn(&GroupResult) -> &Vec<f64>| -> Vec<f64> {
        results.iter().flat_map(|g| f(g).iter().copied()).collect()
    };
    let max_val = flat(|g| &g.best);
    let clipped = Mat::from_fn(rows, cols, |r, c| {
        let m = max_val[(c / span) * rows + r];
        w[(r, c)].clamp(-m, m)
    });
    Ok(ClipSearch {
        org_max_val: flat(|g| &g.org),
        errors: flat(|g| &g.err),
        unclipped_errors: flat(|g| &g.err0),
        shrink: results
            .iter()
            .flat_map(|g| g.shrink.iter().copied())
            .collect(),
        max_val,
        clipped,
        tokens_used: keep.len(),
    })
}

/// One AWQ-quantized linear: the codes of the scaled (and clipped) weight plus the scales.
#[derive(Clone, Debug)]
pub struct AwqLayer {
    /// RTN of `clamp(W·diag(s))`: what is stored, to be applied to `diag(s)⁻¹·x`.
    pub layer: QuantizedLayer,
    /// The AWQ scales `s` (fold `diag(s)⁻¹` into the producer of `x`).
    pub scales: Vec<f64>,
    /// The clip search, when inputs were given.
    pub clip: Option<ClipSearch>,
}

impl AwqLayer {
    /// `Q(W·diag(s))·diag(s)⁻¹`: the weight to apply to the original, unscaled input.
    pub fn effective_weight(&self) -> Mat<f64> {
        unscale_columns(self.layer.dequant.as_ref(), &self.scales)
    }
}

/// The final AWQ step for one linear: scale the columns of `w` by `scales`, run the clip search
/// on the scaled inputs `x_rows·diag(s)⁻¹` when `x_rows` (the original inputs, `[tokens, in]`)
/// is given, clamp, and quantize with [`rtn`].
pub fn quantize_layer(
    w: MatRef<'_, f64>,
    scales: &[f64],
    x_rows: Option<MatRef<'_, f64>>,
    grid: &QuantGrid,
    cfg: &AwqConfig,
) -> Result<AwqLayer, CoreError> {
    if scales.len() != w.ncols() {
        return Err(CoreError::Shape {
            what: "AWQ scales".into(),
            got_rows: 1,
            got_cols: scales.len(),
            expected: format!("1×{}", w.ncols()),
        });
    }
    if let Some(c) = scales.iter().position(|&s| !(s.is_finite() && s > 0.0)) {
        return Err(CoreError::NonFinite {
            what: "AWQ scales (must be finite and > 0)".into(),
            row: 0,
            col: c,
            value: scales[c],
        });
    }
    let ws = scale_columns(w, scales);
    let clip = match x_rows {
        Some(x) => {
            if x.ncols() != w.ncols() {
                return Err(CoreError::Shape {
                    what: "AWQ clip-search inputs".into(),
                    got_rows: x.nrows(),
                    got_cols: x.ncols(),
                    expected: format!("tokens×{}", w.ncols()),
                });
            }
            let xs = unscale_columns(x, scales);
            Some(search_clip(ws.as_ref(), xs.as_ref(), grid, cfg)?)
        }
        None => None,
    };
    let target = clip.as_ref().map_or(ws.as_ref(), |c| c.clipped.as_ref());
    let layer = rtn(target, grid)?;
    Ok(AwqLayer {
        layer,
        scales: scales.to_vec(),
        clip,
    })
}

/// The block loss of [`search_scales`] when the block is the group of linears itself:
/// `Σ_j ‖X (Q_j − W_j)ᵀ‖²_F / (tokens · Σ_j out_j)` — AutoAWQ's `_compute_loss` (mean over
/// output elements; biases cancel). Evaluated with `X` or with `XᵀX`, whichever is cheaper.
#[derive(Clone, Debug)]
pub struct LinearOutputLoss {
    weights: Vec<Mat<f64>>,
    metric: RowMetric,
    elements: f64,
}

impl LinearOutputLoss {
    /// `weights` `[out_j, in]`, inputs `x_rows` `[tokens, in]`.
    pub fn new(weights: &[MatRef<'_, f64>], x_rows: MatRef<'_, f64>) -> Result<Self, CoreError> {
        let cols = common_cols(weights)?;
        if x_rows.ncols() != cols || x_rows.nrows() == 0 {
            return Err(CoreError::Shape {
                what: "AWQ loss inputs".into(),
                got_rows: x_rows.nrows(),
                got_cols: x_rows.ncols(),
                expected: format!("tokens×{cols}, tokens ≥ 1"),
            });
        }
        check_finite("AWQ loss inputs", x_rows)?;
        let out: usize = weights.iter().map(|w| w.nrows()).sum();
        Ok(Self {
            weights: weights.iter().map(|w| w.to_owned()).collect(),
            metric: RowMetric::new(x_rows, par()),
            elements: (x_rows.nrows() * out) as f64,
        })
    }

    /// The loss of candidate weights `q` (same shapes as the weights).
    pub fn loss(&self, q: &[Mat<f64>]) -> Result<f64, CoreError> {
        if q.len() != self.weights.len() {
            return Err(CoreError::Config(format!(
                "AWQ loss: {} candidate weights for {} linears",
                q.len(),
                self.weights.len()
            )));
        }
        let mut total = 0.0;
        for (qj, wj) in q.iter().zip(&self.weights) {
            crate::matrix::check_shape(
                "AWQ candidate weight",
                qj.as_ref(),
                wj.nrows(),
                wj.ncols(),
            )?;
            let d = qj - wj;
            total += self
                .metric
                .row_errors(d.as_ref(), par())
                .iter()
                .sum::<f64>();
        }
        Ok(total / self.elements)
    }
}

/// Per-row sums `Σ_t (d_r · x_t)²` for difference rows `d` against token rows `x`, batched as
/// one GEMM: `D·Xᵀ` (`[out, tokens]`) or `D·(XᵀX)` (`[out, in]`), whichever is smaller.
#[derive(Clone, Debug)]
enum RowMetric {
    Tokens(Mat<f64>),
    Gram(Mat<f64>),
}

impl RowMetric {
    fn new(x: MatRef<'_, f64>, par: Par) -> Self {
        if x.ncols() < x.nrows() {
            let mut h = Mat::<f64>::zeros(x.ncols(), x.ncols());
            matmul(h.as_mut(), Accum::Replace, x.transpose(), x, 1.0, par);
            RowMetric::Gram(h)
        } else {
            RowMetric::Tokens(x.to_owned())
        }
    }

    fn row_errors(&self, d: MatRef<'_, f64>, par: Par) -> Vec<f64> {
        let rows = d.nrows();
        let mut acc = vec![0.0; rows];
        match self {
            RowMetric::Tokens(x) => {
                let mut e = Mat::<f64>::zeros(rows, x.nrows());
                matmul(e.as_mut(), Accum::Replace, d, x.transpose(), 1.0, par);
                for t in 0..e.ncols() {
                    for (a, &v) in acc.iter_mut().zip(col(e.as_ref(), t)) {
                        *a += v * v;
                    }
                }
            }
            RowMetric::Gram(h) => {
                let mut f = Mat::<f64>::zeros(rows, h.ncols());
                matmul(f.as_mut(), Accum::Replace, d, h.as_ref(), 1.0, par);
                for c in 0..f.ncols() {
                    let dc = d.col(c);
                    for ((r, a), &v) in acc.iter_mut().enumerate().zip(col(f.as_ref(), c)) {
                        *a += v * dc[r];
                    }
                }
                for a in &mut acc {
                    *a = a.max(0.0);
                }
            }
        }
        acc
    }
}

/// The common number of input columns of a non-empty list of weights.
fn common_cols(weights: &[MatRef<'_, f64>]) -> Result<usize, CoreError> {
    let Some(first) = weights.first() else {
        return Err(CoreError::Config(
            "AWQ needs at least one weight in the group of linears".into(),
        ));
    };
    let cols = first.ncols();
    for (j, w) in weights.iter().enumerate() {
        if w.ncols() != cols {
            return Err(CoreError::Shape {
                what: format!("AWQ weight {j}"),
                got_rows: w.nrows(),
                got_cols: w.ncols(),
                expected: format!("out×{cols} (all linears of a group share the input)"),
            });
        }
    }
    Ok(cols)
}
