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
//! `group_size`, from the weights as the reference sees them there ([`GroupFit::Reference`]:
//! updated by every finished lazy block, not yet by the current block's own columns, since the
//! reference reads `W`, whose block columns change only at the block's end; this matters when
//! groups are smaller than blocks, e.g. group 32, GGUF's blocks); act-order permutes columns by `diag H`
//! descending; static groups fit every group on the original column order before the
//! permutation so `g_idx` stays trivial.
//!
//! The sum of the per-column losses `e_j²` equals `tr((Q − W) H_d (Q − W)ᵀ)` exactly (the
//! sequential decomposition of the quadratic form; up to the working precision's rounding);
//! the objective on the undamped `H` follows by subtracting `δ‖Q − W‖²`.
//!
//! Speed: `U` comes from one Cholesky factorisation and one triangular inverse
//! ([`crate::inverse_factor`]); the rounding loop ([`crate::gptq_kernel`]) runs rows in
//! parallel, in f32 by default ([`Precision`]).

use crate::damping::{with_auto_damping, Damped, Damping};
use crate::gptq_kernel::{self, GroupMode, KernelInput, Work};
use crate::inverse_factor::inverse_upper_factor_shifted;
use crate::matrix::{check_finite, check_shape, tiles, to_row_major_with};
use crate::quant_grid::{GroupParams, QuantGrid};
use crate::quantized::{trivial_g_idx, QuantizedLayer};
use crate::CoreError;
use faer::{Mat, MatRef};
use serde::{Deserialize, Serialize};

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
    /// Precision of the rounding loop's working weights and updates.
    pub precision: Precision,
    /// Which weights dynamic group parameters are fitted on.
    pub group_fit: GroupFit,
}

/// Which weights GPTQ fits a group's parameters on, when it reaches the group's first column
/// (only differs when a group starts inside a lazy block, i.e. groups smaller than blocks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupFit {
    /// As the original `gptq.py`, AutoGPTQ and GPTQModel: on `W`, i.e. updated by the
    /// finished blocks only.
    #[default]
    Reference,
    /// On the current weights, including the current block's updates so far (pmq's earlier
    /// behaviour: parameters fitted on the values actually quantized).
    Updated,
}

/// Working precision of the rounding loop (the factorisations are always f64).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 updates and products, as the reference code (twice the GEMM throughput).
    #[default]
    F32,
    /// f64 throughout (reported objective exact to ~1e-12).
    F64,
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
            precision: Precision::F32,
            group_fit: GroupFit::Reference,
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

/// A Hessian made ready for the rounding loop: dead inputs, act-order permutation, damping and
/// the factor `U` (`Uᵀ U = H_d⁻¹`, in the permuted order).
#[derive(Clone, Debug)]
pub struct PreparedHessian {
    /// Column order (act-order), `None` for the natural order.
    pub perm: Option<Vec<usize>>,
    /// Input columns with `H_jj = 0` (their weights are zeroed), in the original order.
    pub dead: Vec<usize>,
    /// `U`, upper triangular, `[in, in]`, permuted.
    pub u: Mat<f64>,
    /// Fraction of `mean(diag H)` added to the diagonal (after automatic increases).
    pub percdamp: f64,
    /// Absolute damping `δ` added to the diagonal.
    pub damping: f64,
}

/// Prepares `h` as the reference does: dead inputs (`H_jj = 0`) get `H_jj = 1` when
/// `handle_dead`, act-order permutes by `diag H` descending, then `H + p·mean(diag H)·I` is
/// factored with `p` increased from `damping.percdamp` until it succeeds.
pub fn prepare_hessian(
    what: &str,
    h: MatRef<'_, f64>,
    damping: Damping,
    act_order: bool,
    handle_dead: bool,
) -> Result<PreparedHessian, CoreError> {
    let cols = h.nrows();
    let dead: Vec<usize> = if handle_dead {
        (0..cols).filter(|&j| h[(j, j)] == 0.0).collect()
    } else {
        Vec::new()
    };
    let diag = |j: usize| {
        if dead.binary_search(&j).is_ok() {
            1.0
        } else {
            h[(j, j)]
        }
    };
    let perm: Option<Vec<usize>> = act_order.then(|| {
        let mut p: Vec<usize> = (0..cols).collect();
        p.sort_by(|&a, &b| diag(b).total_cmp(&diag(a)));
        p
    });
    let mut fixed: Option<Mat<f64>> = match &perm {
        Some(p) => Some(Mat::from_fn(cols, cols, |i, j| {
            if i == j {
                diag(p[i])
            } else {
                h[(p[i], p[j])]
            }
        })),
        None if !dead.is_empty() => Some(Mat::from_fn(cols, cols, |i, j| {
            if i == j {
                diag(i)
            } else {
                h[(i, j)]
            }
        })),
        None => None,
    };
    let hp = fixed.as_ref().map_or(h, |m| m.as_ref());
    let Damped {
        percdamp,
        damping,
        value: u,
    } = with_auto_damping(what, hp, damping, |hd, amount| {
        inverse_upper_factor_shifted(hd, amount)
    })?;
    fixed.take();
    Ok(PreparedHessian {
        perm,
        dead,
        u,
        percdamp,
        damping,
    })
}

/// Quantizes `w` (`[out, in]`) with GPTQ on the Hessian `h` (`[in, in]`).
pub fn gptq(
    w: MatRef<'_, f64>,
    h: MatRef<'_, f64>,
    cfg: &GptqConfig,
) -> Result<GptqOutput, CoreError> {
    let cols = w.ncols();
    check_shape("Hessian", h, cols, cols)?;
    check_finite("weight", w)?;
    check_finite("Hessian", h)?;
    check_config(cfg)?;
    let t = std::time::Instant::now();
    let prepared = prepare_hessian("Hessian", h, cfg.damping, cfg.act_order, true)?;
    tracing::debug!(seconds = t.elapsed().as_secs_f64(), "GPTQ Hessian factor");
    gptq_prepared(w, &prepared, cfg)
}

fn check_config(cfg: &GptqConfig) -> Result<(), CoreError> {
    if cfg.block_size == 0 {
        return Err(CoreError::Config("block size must be positive".into()));
    }
    Ok(())
}

/// GPTQ's rounding loop on `w` (original column order) with an already prepared Hessian
/// (its permutation, dead columns, damping and `U` are used as they are; `cfg`'s damping and
/// act-order are not looked at).
pub fn gptq_prepared(
    w: MatRef<'_, f64>,
    prepared: &PreparedHessian,
    cfg: &GptqConfig,
) -> Result<GptqOutput, CoreError> {
    let (rows, cols) = (w.nrows(), w.ncols());
    check_shape("Hessian factor", prepared.u.as_ref(), cols, cols)?;
    check_finite("weight", w)?;
    check_config(cfg)?;
    let grid = cfg.grid;
    // the weight with dead inputs zeroed (a copy only when there are some)
    let zeroed;
    let w_start = if prepared.dead.is_empty() {
        w
    } else {
        let mut z = w.to_owned();
        for &j in &prepared.dead {
            z.col_mut(j).fill(0.0);
        }
        zeroed = z;
        zeroed.as_ref()
    };
    let static_groups = cfg.static_groups && grid.group_size.is_some();
    let gs = grid.group_size.unwrap_or(cols.max(1));
    let n_static = cols.div_ceil(gs);
    // [rows, groups] row-major, fitted on the original column order
    let static_params: Vec<GroupParams> = if static_groups {
        let mut p = Vec::with_capacity(rows * n_static);
        for r in 0..rows {
            for start in (0..cols).step_by(gs) {
                let end = (start + gs).min(cols);
                p.push(grid.fit((start..end).map(|c| w_start[(r, c)])));
            }
        }
        p
    } else {
        Vec::new()
    };
    let perm = prepared.perm.as_deref();
    let groups = match (grid.group_size, static_groups) {
        (None, _) => GroupMode::PerRow,
        (Some(g), false) => GroupMode::Dynamic(g, cfg.group_fit),
        (Some(g), true) => GroupMode::Static {
            gs: g,
            perm,
            params: &static_params,
            groups: n_static,
        },
    };
    let t = std::time::Instant::now();
    let permuted;
    let w_perm = match perm {
        Some(p) => {
            permuted = Mat::from_fn(rows, cols, |r, j| w_start[(r, p[j])]);
            permuted.as_ref()
        }
        None => w_start,
    };
    let u = prepared.u.as_ref();
    let input = |groups| (w_perm, grid, cfg.block_size, groups);
    let mut out = match cfg.precision {
        Precision::F32 => run_kernel::<f32>(input(groups), u),
        Precision::F64 => run_kernel::<f64>(input(groups), u),
    };
    tracing::debug!(seconds = t.elapsed().as_secs_f64(), "GPTQ rounding loop");

    // Back to the original column order.
    let chunk = gptq_kernel::chunk_rows(rows);
    let g_idx = trivial_g_idx(&grid, cols);
    let mut layer = match perm {
        // the loop's values are in the right order already: no copy
        None => {
            QuantizedLayer::with_dequant(grid, std::mem::replace(&mut out.q, Mat::new()), g_idx)
        }
        Some(p) => {
            let mut layer = QuantizedLayer::new(grid, rows, cols, g_idx);
            for (j, &c) in p.iter().enumerate() {
                layer.dequant.col_mut(c).copy_from(out.q.col(j));
            }
            layer
        }
    };
    tiles(rows, cols, |r, j| {
        let c = perm.map_or(j, |p| p[j]);
        layer.codes[r * cols + c] = out.code(chunk, r, j);
    });

    if let (Some(gs), false) = (grid.group_size, static_groups) {
        for j in 0..cols {
            layer.g_idx[perm.map_or(j, |p| p[j])] = (j / gs) as u32;
        }
    }
    if static_groups {
        for g in 0..n_static {
            let params: Vec<_> = (0..rows).map(|r| static_params[r * n_static + g]).collect();
            layer.set_group(g, &params);
        }
    } else {
        for g in 0..out.n_groups {
            let params: Vec<_> = (0..rows)
                .map(|r| out.params[r * out.n_groups + g])
                .collect();
            layer.set_group(g, &params);
        }
    }

    let damped_objective = out.damped_objective;
    let shift = crate::objective::squared_distance(layer.dequant.as_ref(), w_start);
    let objective = damped_objective - prepared.damping * shift;
    Ok(GptqOutput {
        layer,
        percdamp: prepared.percdamp,
        damping: prepared.damping,
        dead_columns: prepared.dead.len(),
        perm: prepared.perm.clone(),
        damped_objective,
        objective,
    })
}

fn run_kernel<T: Work + Default>(
    (w, grid, block_size, groups): (MatRef<'_, f64>, QuantGrid, usize, GroupMode<'_>),
    u: MatRef<'_, f64>,
) -> gptq_kernel::KernelOutput {
    let ut = to_row_major_with(u, T::of);
    gptq_kernel::run(KernelInput {
        w,
        u: &ut,
        grid,
        block_size,
        groups,
    })
}
