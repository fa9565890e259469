//! GPTQ's rounding loop (the inner part of [`crate::gptq`]), row-parallel and in the working
//! precision of the caller's choice.
//!
//! Every output row is quantized independently given `U` (`Uᵀ U = H_d⁻¹`): for row `w`,
//! column by column, `q_j = quant(w_j)`, `e_j = (w_j − q_j) / U_jj`, `w_k −= e_j U_jk` for
//! `k > j`. So rows are split into chunks, one per thread, and each chunk runs the whole loop
//! on column-major storage: quantizing column `j` touches one contiguous column of the chunk,
//! the update inside a lazy block is a rank-1 product `W[:, j+1..end] −= e_j U[j, j+1..end]`,
//! and after the block `W[:, end:] −= E · U[block, end:]` is one GEMM (both through faer's
//! SIMD kernels, chosen at run time for the CPU).
//!
//! The weights are kept as the original f64 values plus accumulated updates `Δ` in the working
//! precision (f32 like the reference code, IST-DASLab `gptq.py`, or f64): the products and
//! updates run at f32 speed, while a weight that no update touched (e.g. an identity Hessian)
//! is quantized exactly as RTN quantizes it. `U` is computed in f64 by the caller.

use crate::gptq::GroupFit;
use crate::quant_grid::{GroupParams, QuantGrid};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

/// Unused rows below every column of the buffers written by faer products (see [`run`]).
const PAD: usize = 64;

/// A floating-point type the loop can run in.
pub(crate) trait Work:
    faer::traits::ComplexField
    + Copy
    + Send
    + Sync
    + PartialEq
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::SubAssign
    + 'static
{
    fn of(x: f64) -> Self;
    fn to_f64(self) -> f64;
}

impl Work for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Work for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
}

/// How group parameters are chosen.
#[derive(Clone, Copy)]
pub(crate) enum GroupMode<'a> {
    /// One group per row, fitted on the row before any update.
    PerRow,
    /// Groups of `gs` (permuted) columns, fitted when the loop reaches their first column,
    /// on the weights `fit` says.
    Dynamic(usize, GroupFit),
    /// Fixed parameters per (row, original group) (`params` is `[rows, groups]`); the
    /// original column of permuted column `j` is `perm[j]`.
    Static {
        gs: usize,
        perm: Option<&'a [usize]>,
        params: &'a [GroupParams],
        groups: usize,
    },
}

/// Which weights a group's parameters are fitted on.
enum Seen<'m, T> {
    /// The weights before any update.
    Original,
    /// As the reference: the block's columns as they were when the block started (`Δ` there
    /// is the second matrix, `[rows, i2 − i1]`), later columns as they are (they only change
    /// at block ends); `(Δ, Δ at block start, i1, i2)`.
    BlockStart(&'m Mat<T>, &'m Mat<T>, usize, usize),
    /// The current weights including every update so far: columns past the block end `i2`
    /// still lack the block's pending update `E[:, ..j0−i1] · U[i1..j0, ·]`, which is applied
    /// to a copy; `(Δ, E, i1, i2)`.
    Updated(&'m Mat<T>, &'m Mat<T>, usize, usize),
}

/// The loop's inputs: the (permuted) weight and `U` in working precision.
pub(crate) struct KernelInput<'a, T> {
    /// The (permuted) weight, `[rows, cols]`.
    pub w: MatRef<'a, f64>,
    /// `U`, `[cols, cols]` row-major, upper triangular.
    pub u: &'a [T],
    pub grid: QuantGrid,
    pub block_size: usize,
    pub groups: GroupMode<'a>,
}

/// Codes and dequantized values in the permuted column order, and the fitted parameters.
pub(crate) struct KernelOutput {
    /// Codes per row chunk, each `[chunk rows, cols]` column-major, chunks in row order.
    pub codes: Vec<Vec<u8>>,
    /// `[rows, cols]`.
    pub q: Mat<f64>,
    /// Columns.
    pub cols: usize,
    /// `[rows, n_groups]` row-major: dynamic groups by permuted group index, per-row at 0;
    /// unused for static groups (the caller has them).
    pub params: Vec<GroupParams>,
    pub n_groups: usize,
    /// `Σ_j Σ_rows e_j²`.
    pub damped_objective: f64,
}

impl KernelOutput {
    /// Code of (row, permuted column).
    pub fn code(&self, chunk_rows: usize, r: usize, j: usize) -> u8 {
        let c = &self.codes[r / chunk_rows];
        let rows_here = c.len() / self.cols.max(1);
        c[j * rows_here + r % chunk_rows]
    }
}

/// Rows per chunk for `rows` rows on the current rayon pool.
pub(crate) fn chunk_rows(rows: usize) -> usize {
    rows.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

/// Runs the rounding loop on all rows, one chunk of [`chunk_rows`] rows per rayon thread.
pub(crate) fn run<T: Work>(input: KernelInput<'_, T>) -> KernelOutput {
    let KernelInput {
        w,
        u,
        grid,
        block_size,
        groups,
    } = input;
    let (rows, cols) = (w.nrows(), w.ncols());
    let n_groups = match groups {
        GroupMode::PerRow => 1,
        GroupMode::Dynamic(gs, _) => cols.div_ceil(gs),
        GroupMode::Static { .. } => 1, // unused slot, so the row chunks line up
    };
    let mut q = Mat::<f64>::zeros(rows, cols);
    let mut params = vec![GroupParams::new(1.0, 0); rows * n_groups];
    if rows == 0 || cols == 0 {
        return KernelOutput {
            codes: Vec::new(),
            q,
            cols,
            params,
            n_groups,
            damped_objective: 0.0,
        };
    }
    let chunk = chunk_rows(rows);
    // disjoint row ranges of q
    let mut q_parts: Vec<MatMut<'_, f64>> = Vec::new();
    let mut rest = q.as_mut();
    while rest.nrows() > 0 {
        let take = chunk.min(rest.nrows());
        let (top, bottom) = rest.split_at_row_mut(take);
        q_parts.push(top);
        rest = bottom;
    }
    let results: Vec<(Vec<u8>, f64)> = q_parts
        .into_par_iter()
        .zip(params.par_chunks_mut(chunk * n_groups))
        .enumerate()
        .map(|(c, (qc, pc))| {
            let row0 = c * chunk;
            let ctx = Chunk {
                row0,
                rows: qc.nrows(),
                cols,
                u,
                grid: &grid,
                block_size,
                groups,
                n_groups,
            };
            ctx.run(w.subrows(row0, qc.nrows()), qc, pc)
        })
        .collect();
    let damped_objective = results.iter().map(|r| r.1).sum();
    KernelOutput {
        codes: results.into_iter().map(|r| r.0).collect(),
        q,
        cols,
        params,
        n_groups,
        damped_objective,
    }
}

/// One chunk of rows and what it needs to know.
struct Chunk<'a, T> {
    row0: usize,
    rows: usize,
    cols: usize,
    u: &'a [T],
    grid: &'a QuantGrid,
    block_size: usize,
    groups: GroupMode<'a>,
    n_groups: usize,
}

impl<T: Work> Chunk<'_, T> {
    /// `U[i, j0..j1]` as a `1 × (j1 − j0)` matrix.
    fn u_row(&self, i: usize, j0: usize, j1: usize) -> MatRef<'_, T> {
        MatRef::from_row_major_slice(&self.u[i * self.cols + j0..i * self.cols + j1], 1, j1 - j0)
    }

    /// `U[i0..i1, j0..j1]`.
    fn u_block(&self, i0: usize, i1: usize, j0: usize, j1: usize) -> MatRef<'_, T> {
        let cols = self.cols;
        let len = (i1 - i0 - 1) * cols + (j1 - j0);
        MatRef::from_row_major_slice_with_stride(
            &self.u[i0 * cols + j0..i0 * cols + j0 + len],
            i1 - i0,
            j1 - j0,
            cols,
        )
    }

    /// Runs every column on the chunk's rows; returns the codes (column-major) and `Σ e²`.
    fn run(
        &self,
        w: MatRef<'_, f64>,
        mut q: MatMut<'_, f64>,
        params: &mut [GroupParams],
    ) -> (Vec<u8>, f64) {
        let (rows, cols, bs, ng) = (self.rows, self.cols, self.block_size, self.n_groups);
        if let GroupMode::PerRow = self.groups {
            let (lo, hi) = self.row_ranges(w, Seen::Original, 0, cols);
            for r in 0..rows {
                params[r * ng] = self.grid.fit_range(lo[r], hi[r]);
            }
        }
        // Δ and the block's errors, column-major with PAD unused rows under each column:
        // faer 0.24's small f32 GEMM kernels (nano-gemm) can store a few lanes past the end
        // of a destination column taken from a slice (seen with a 5 × 89 destination, k = 7, row
        // stride 96: values appeared past the slice's end); they land there.
        let mut delta = Mat::<T>::zeros(rows + PAD, cols);
        let mut err = Mat::<T>::zeros(rows + PAD, bs);
        let mut codes = vec![0u8; rows * cols];
        let mut current = vec![GroupParams::new(1.0, 0); rows];
        let mut objective = 0.0;
        // GroupFit::Reference: the block's Δ as it was when the block started
        let mut block_start = match self.groups {
            GroupMode::Dynamic(_, GroupFit::Reference) => Some(Mat::<T>::zeros(rows, bs)),
            _ => None,
        };
        for i1 in (0..cols).step_by(bs) {
            let i2 = (i1 + bs).min(cols);
            if let Some(start) = block_start.as_mut() {
                for c in i1..i2 {
                    start
                        .col_as_slice_mut(c - i1)
                        .copy_from_slice(&delta.col_as_slice(c)[..rows]);
                }
            }
            for j in i1..i2 {
                let i = j - i1;
                match self.groups {
                    GroupMode::PerRow => {
                        for (r, c) in current.iter_mut().enumerate() {
                            *c = params[r * ng];
                        }
                    }
                    GroupMode::Dynamic(gs, _) => {
                        if j % gs == 0 {
                            let gend = (j + gs).min(cols);
                            let seen = match &block_start {
                                Some(start) => Seen::BlockStart(&delta, start, i1, i2),
                                None => Seen::Updated(&delta, &err, i1, i2),
                            };
                            let (lo, hi) = self.row_ranges(w, seen, j, gend);
                            for r in 0..rows {
                                let p = self.grid.fit_range(lo[r], hi[r]);
                                params[r * ng + j / gs] = p;
                                current[r] = p;
                            }
                        }
                    }
                    GroupMode::Static {
                        gs,
                        perm,
                        params: fixed,
                        groups,
                    } => {
                        let orig = perm.map_or(j, |p| p[j]) / gs;
                        for (r, c) in current.iter_mut().enumerate() {
                            *c = fixed[(self.row0 + r) * groups + orig];
                        }
                    }
                }
                let d = self.u[j * cols + j].to_f64();
                let (wj, dj) = (w.col(j), &delta.col_as_slice(j)[..rows]);
                let mut qj = q.as_mut().col_mut(j);
                let ej = &mut err.col_as_slice_mut(i)[..rows];
                let cj = &mut codes[j * rows..(j + 1) * rows];
                for r in 0..rows {
                    let p = current[r];
                    let x = wj[r] + dj[r].to_f64();
                    let code = self.grid.code(x, p);
                    let deq = QuantGrid::dequant(code, p);
                    cj[r] = code as u8;
                    qj[r] = deq;
                    let e = (x - deq) / d;
                    objective += e * e;
                    ej[r] = T::of(e);
                }
                if j + 1 < i2 {
                    // Δ[:, j+1..i2] −= e_j U[j, j+1..i2]
                    matmul(
                        delta.submatrix_mut(0, j + 1, rows, i2 - j - 1),
                        Accum::Add,
                        err.submatrix(0, i, rows, 1),
                        self.u_row(j, j + 1, i2),
                        T::of(-1.0),
                        Par::Seq,
                    );
                }
            }
            if i2 < cols {
                // Δ[:, i2:] −= E · U[i1..i2, i2:]
                matmul(
                    delta.submatrix_mut(0, i2, rows, cols - i2),
                    Accum::Add,
                    err.submatrix(0, 0, rows, i2 - i1),
                    self.u_block(i1, i2, i2, cols),
                    T::of(-1.0),
                    Par::Seq,
                );
            }
        }
        (codes, objective)
    }

    /// Per row, the minimum and maximum in columns `j0..j1` of the weights `seen` says.
    fn row_ranges(
        &self,
        w: MatRef<'_, f64>,
        seen: Seen<'_, T>,
        j0: usize,
        j1: usize,
    ) -> (Vec<f64>, Vec<f64>) {
        let rows = self.rows;
        let mut lo = vec![f64::INFINITY; rows];
        let mut hi = vec![f64::NEG_INFINITY; rows];
        let mut visit = |c: usize, col: &dyn Fn(usize) -> f64| {
            let wc = w.col(c);
            for r in 0..rows {
                let v = wc[r] + col(r);
                lo[r] = lo[r].min(v);
                hi[r] = hi[r].max(v);
            }
        };
        match seen {
            Seen::Original => {
                for c in j0..j1 {
                    visit(c, &|_| 0.0);
                }
            }
            Seen::BlockStart(delta, start, i1, i2) => {
                for c in j0..j1 {
                    if c < i2 {
                        let sc = start.col_as_slice(c - i1);
                        visit(c, &|r| sc[r].to_f64());
                    } else {
                        let dc = delta.col_as_slice(c);
                        visit(c, &|r| dc[r].to_f64());
                    }
                }
            }
            Seen::Updated(delta, err, i1, i2) => {
                for c in j0..j1.min(i2) {
                    let dc = delta.col_as_slice(c);
                    visit(c, &|r| dc[r].to_f64());
                }
                if j1 > i2 {
                    let done = j0 - i1;
                    let mut beyond = Mat::<T>::zeros(rows + PAD, j1 - i2);
                    for (k, c) in (i2..j1).enumerate() {
                        beyond.col_as_slice_mut(k)[..rows]
                            .copy_from_slice(&delta.col_as_slice(c)[..rows]);
                    }
                    if done > 0 {
                        matmul(
                            beyond.submatrix_mut(0, 0, rows, j1 - i2),
                            Accum::Add,
                            err.submatrix(0, 0, rows, done),
                            self.u_block(i1, j0, i2, j1),
                            T::of(-1.0),
                            Par::Seq,
                        );
                    }
                    for (k, c) in (i2..j1).enumerate() {
                        let bc = beyond.col_as_slice(k);
                        visit(c, &|r| bc[r].to_f64());
                    }
                }
            }
        }
        // an empty range (no columns) fits as an all-zero group
        for r in 0..rows {
            if lo[r] > hi[r] {
                (lo[r], hi[r]) = (0.0, 0.0);
            }
        }
        (lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_transposed_update_is_exact() {
        for (rows, cols, count, i1) in [(5, 96, 7, 0), (5, 96, 7, 7), (1, 20, 3, 0), (3, 50, 1, 4)]
        {
            let i2 = i1 + count;
            let rest = cols - i2;
            let mut delta = Mat::<f32>::zeros(cols + PAD, rows);
            let err: Vec<f32> = (0..rows * count).map(|k| k as f32).collect();
            let u: Vec<f32> = (0..cols * cols).map(|k| (k % 7) as f32).collect();
            let e = MatRef::from_row_major_slice(&err[..], rows, count);
            let ub = MatRef::from_row_major_slice_with_stride(
                &u[i1 * cols + i2..i1 * cols + i2 + (count - 1) * cols + rest],
                count,
                rest,
                cols,
            );
            matmul(
                delta.submatrix_mut(i2, 0, rest, rows),
                Accum::Add,
                ub.transpose(),
                e.transpose(),
                -1.0f32,
                Par::Seq,
            );
            for r in 0..rows {
                for c in 0..cols {
                    let want: f32 = if c < i2 {
                        0.0
                    } else {
                        -(0..count)
                            .map(|k| err[r * count + k] * u[(i1 + k) * cols + c])
                            .sum::<f32>()
                    };
                    assert_eq!(delta[(c, r)], want, "r{r} c{c}");
                }
            }
        }
    }
}
