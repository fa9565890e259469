//! The clip search of AWQ (AutoAWQ `_compute_best_clip`, llm-awq `auto_clip.py`).
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
//! weight ([`quantize_layer`](super::quantize_layer)).

use super::config::AwqConfig;
use super::kernel::{col, col_mut, fit_rows};
use super::loss::RowMetric;
use crate::matrix::{check_finite, par};
use crate::quant_grid::QuantGrid;
use crate::CoreError;
use faer::{Mat, MatRef, Par};
use rayon::prelude::*;

/// The result of [`search_clip`]. Per-(group, row) vectors are `[groups, out]` row-major, as
/// [`QuantizedLayer::scales`](crate::quantized::QuantizedLayer::scales).
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
