//! The GPTQ solver (Frantar et al. 2022), with the semantics of the original code
//! (IST-DASLab/gptq `gptq.py`): it approximately solves
//!
//! ```text
//! min_Q tr((Q − W) H (Q − W)ᵀ)   over the b-bit grid,   H = Σ_tokens x xᵀ
//! ```
//!
//! column by column: with `U` the upper Cholesky factor of `H_d⁻¹` (`H_d = H + δI`),
//! `q_j = quant(w_j)`, `e_j = (w_j − q_j) / U_jj`, `W[:, j+1:] −= e_j · U[j, j+1:]`, in lazy
//! blocks of `block_size` columns whose errors are propagated to the remaining columns with one
//! product `W[:, end:] −= E · U[block, end:]`.
//!
//! Details kept from the reference: dead inputs (`H_jj = 0`) get `H_jj = 1` and a zeroed weight
//! column; group parameters are fitted when the (permuted) column index is a multiple of
//! `group_size`, from the current, already updated weights (here also including the updates of
//! the current block still pending for columns past it); act-order permutes columns by `diag H`
//! descending; static groups fit every group on the original column order before the
//! permutation so `g_idx` stays trivial.
//!
//! The sum of the per-column losses `e_j²` equals `tr((Q − W) H_d (Q − W)ᵀ)` exactly (the
//! sequential decomposition of the quadratic form); the objective on the undamped `H` follows by
//! subtracting `δ‖Q − W‖²`.

use crate::damping::{with_auto_damping, Damping};
use crate::matrix::{check_finite, check_shape, par};
use crate::quant_grid::{GroupParams, QuantGrid};
use crate::quantized::{trivial_g_idx, QuantizedLayer};
use crate::CoreError;
use faer::linalg::matmul::matmul;
use faer::linalg::solvers::DenseSolveCore;
use faer::{Accum, Mat, MatRef, Side};

/// Settings of the GPTQ solver.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GptqConfig {
    pub grid: QuantGrid,
    pub damping: Damping,
    /// Columns per lazy block (128 in the reference).
    pub block_size: usize,
    /// Quantize columns in order of decreasing `diag H` (`desc_act`).
    pub act_order: bool,
    /// Fit group parameters before any permutation (only with groups).
    pub static_groups: bool,
}

impl GptqConfig {
    /// The reference defaults: damping 1 %, blocks of 128, no act-order.
    pub fn new(grid: QuantGrid) -> Self {
        Self {
            grid,
            damping: Damping::gptq(0.01),
            block_size: 128,
            act_order: false,
            static_groups: false,
        }
    }
}

/// What the solver returns besides the quantized layer.
#[derive(Clone, Debug)]
pub struct GptqOutput {
    pub layer: QuantizedLayer,
    /// Fraction of `mean(diag H)` added to the diagonal (after automatic increases).
    pub percdamp: f64,
    /// Absolute damping `δ` added to the diagonal.
    pub damping: f64,
    /// Input columns with `H_jj = 0`.
    pub dead_columns: usize,
    /// Column order used (act-order permutation), `None` for the natural order.
    pub perm: Option<Vec<usize>>,
    /// `tr((Q − W) H_d (Q − W)ᵀ)` on the damped Hessian: the sum of GPTQ's column losses.
    pub damped_objective: f64,
    /// `tr((Q − W) H (Q − W)ᵀ)` on the Hessian as given.
    pub objective: f64,
}

/// Quantizes `w` (`[out, in]`) with GPTQ on the Hessian `h` (`[in, in]`).
pub fn gptq(
    w: MatRef<'_, f64>,
    h: MatRef<'_, f64>,
    cfg: &GptqConfig,
) -> Result<GptqOutput, CoreError> {
    let (rows, cols) = (w.nrows(), w.ncols());
    check_shape("Hessian", h, cols, cols)?;
    check_finite("weight", w)?;
    check_finite("Hessian", h)?;
    if cfg.block_size == 0 {
        return Err(CoreError::Config("block size must be positive".into()));
    }
    let grid = cfg.grid;
    let mut w = w.to_owned();
    let mut h = h.to_owned();

    // Dead inputs.
    let mut dead_columns = 0;
    for j in 0..cols {
        if h[(j, j)] == 0.0 {
            h[(j, j)] = 1.0;
            w.col_mut(j).fill(0.0);
            dead_columns += 1;
        }
    }
    let w_start = w.clone();

    let static_groups = cfg.static_groups && grid.group_size.is_some();
    let mut layer = QuantizedLayer::new(grid, rows, cols, trivial_g_idx(&grid, cols));
    let mut static_params: Vec<Vec<GroupParams>> = Vec::new();
    if static_groups {
        let gs = grid.group_size.unwrap_or(cols);
        for (g, start) in (0..cols).step_by(gs).enumerate() {
            let end = (start + gs).min(cols);
            let params: Vec<_> = (0..rows)
                .map(|r| grid.fit((start..end).map(|c| w[(r, c)])))
                .collect();
            layer.set_group(g, &params);
            static_params.push(params);
        }
    }

    // Act-order permutation.
    let perm: Option<Vec<usize>> = cfg.act_order.then(|| {
        let mut p: Vec<usize> = (0..cols).collect();
        p.sort_by(|&a, &b| h[(b, b)].total_cmp(&h[(a, a)]));
        p
    });
    if let Some(p) = &perm {
        w = Mat::from_fn(rows, cols, |i, j| w[(i, p[j])]);
        h = Mat::from_fn(cols, cols, |i, j| h[(p[i], p[j])]);
    }

    // U: upper Cholesky factor of H_d⁻¹.
    let damped = with_auto_damping("Hessian", h.as_ref(), cfg.damping, |hd| {
        let inv = hd.llt(Side::Lower).ok()?.inverse();
        let l = inv.llt(Side::Lower).ok()?;
        let u = l.L().transpose().to_owned();
        let ok = (0..cols).all(|j| u[(j, j)].is_finite() && u[(j, j)] > 0.0);
        ok.then_some(u)
    })?;
    let u = damped.value;

    let mut q_perm = Mat::<f64>::zeros(rows, cols);
    let mut codes_perm = vec![0u8; rows * cols];
    let mut current: Vec<GroupParams> = if grid.group_size.is_none() {
        let params: Vec<_> = (0..rows)
            .map(|r| grid.fit((0..cols).map(|c| w[(r, c)])))
            .collect();
        layer.set_group(0, &params);
        params
    } else {
        Vec::new()
    };
    let mut damped_objective = 0.0;

    let bs = cfg.block_size;
    for i1 in (0..cols).step_by(bs) {
        let i2 = (i1 + bs).min(cols);
        let count = i2 - i1;
        let mut err = Mat::<f64>::zeros(rows, count);
        for i in 0..count {
            let j = i1 + i;
            if let Some(gs) = grid.group_size {
                if static_groups {
                    let orig = perm.as_ref().map_or(j, |p| p[j]);
                    current.clone_from(&static_params[orig / gs]);
                } else if j % gs == 0 {
                    let gend = (j + gs).min(cols);
                    current = fit_current_group(&grid, &w, &err, &u, i1, i2, i, gend);
                    layer.set_group(j / gs, &current);
                }
            }
            let d = u[(j, j)];
            let (err_col, wj) = (err.col_as_slice_mut(i), w.col_as_slice(j));
            for r in 0..rows {
                let x = wj[r];
                let code = grid.code(x, current[r]);
                let deq = QuantGrid::dequant(code, current[r]);
                codes_perm[r * cols + j] = code as u8;
                q_perm[(r, j)] = deq;
                let e = (x - deq) / d;
                err_col[r] = e;
                damped_objective += e * e;
            }
            let err_col = err.col_as_slice(i);
            for k in j + 1..i2 {
                let c = u[(j, k)];
                if c != 0.0 {
                    for (wv, &e) in w.col_as_slice_mut(k).iter_mut().zip(err_col) {
                        *wv -= e * c;
                    }
                }
            }
        }
        if i2 < cols {
            matmul(
                w.subcols_mut(i2, cols - i2),
                Accum::Add,
                err.as_ref(),
                u.submatrix(i1, i2, count, cols - i2),
                -1.0,
                par(),
            );
        }
    }

    // Back to the original column order.
    let p: Vec<usize> = perm.clone().unwrap_or_else(|| (0..cols).collect());
    for (j, &c) in p.iter().enumerate() {
        for r in 0..rows {
            layer.dequant[(r, c)] = q_perm[(r, j)];
            layer.codes[r * cols + c] = codes_perm[r * cols + j];
        }
        if let (Some(gs), false) = (grid.group_size, static_groups) {
            layer.g_idx[c] = (j / gs) as u32;
        }
    }

    let shift = crate::objective::squared_distance(layer.dequant.as_ref(), w_start.as_ref());
    let objective = damped_objective - damped.damping * shift;
    Ok(GptqOutput {
        layer,
        percdamp: damped.percdamp,
        damping: damped.damping,
        dead_columns,
        perm,
        damped_objective,
        objective,
    })
}

/// Group parameters for the group starting at (permuted) column `j = i1 + i` and ending at
/// `gend`, fitted on the current weights: columns inside the block are up to date in `w`;
/// columns past the block end `i2` still lack the block's pending update `E[:, ..i] · U[i1..j, ·]`,
/// which is applied here to a copy.
#[allow(clippy::too_many_arguments)]
fn fit_current_group(
    grid: &QuantGrid,
    w: &Mat<f64>,
    err: &Mat<f64>,
    u: &Mat<f64>,
    i1: usize,
    i2: usize,
    i: usize,
    gend: usize,
) -> Vec<GroupParams> {
    let j = i1 + i;
    let rows = w.nrows();
    let inside_end = gend.min(i2);
    let beyond = if gend > i2 && i > 0 {
        let mut tmp = w.subcols(i2, gend - i2).to_owned();
        matmul(
            tmp.as_mut(),
            Accum::Add,
            err.subcols(0, i),
            u.submatrix(i1, i2, i, gend - i2),
            -1.0,
            par(),
        );
        Some(tmp)
    } else {
        None
    };
    (0..rows)
        .map(|r| {
            let inside = (j..inside_end).map(|c| w[(r, c)]);
            match &beyond {
                Some(t) => grid.fit(inside.chain((0..t.ncols()).map(|c| t[(r, c)]))),
                None => grid.fit(inside.chain((i2.max(j)..gend).map(|c| w[(r, c)]))),
            }
        })
        .collect()
}
