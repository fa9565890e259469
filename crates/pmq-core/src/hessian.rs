//! Accumulation of a linear layer's input Hessian `H = Σ_tokens x xᵀ = X Xᵀ` (the reference's
//! `2/N` scale does not change any argmin and is left out, so per-task Hessians add up to the
//! Hessian of the union of the tasks' tokens).
//!
//! Precision and speed: the tokens of each call (a batch) are taken in blocks of
//! [`BLOCK_TOKENS`]; each block's `X_b X_bᵀ` is a symmetric rank-k update computed in f32
//! (lower triangle only: half a GEMM, mostly as plain GEMMs of column panels:
//! [`lower_gram_f32`]), and the blocks are summed in f64. The reference accumulates everything
//! in f32; here only sums of at most `BLOCK_TOKENS` products are rounded to f32, so `H` keeps ~1e-6 relative accuracy however many tokens are seen. Blocks never span
//! two calls, so Hessians of disjoint sets of batches (a hold-out split, one per task) add up to
//! the Hessian of all the batches up to the order of the f64 sums.

use crate::matrix::lower_gram_f32;
use faer::{Mat, MatMut, MatRef};

/// Tokens per f32 block.
pub const BLOCK_TOKENS: usize = 1024;

/// Running `Σ x xᵀ` over the tokens seen so far.
#[derive(Clone, Debug)]
pub struct HessianAccumulator {
    dim: usize,
    /// the lower triangle of the sum of the blocks so far (allocated again after
    /// [`Self::take_hessian`])
    h: Mat<f64>,
    /// one block's `X_b X_bᵀ` in f32 (allocated at the first block)
    block: Mat<f32>,
    tokens: usize,
}

impl HessianAccumulator {
    /// An empty accumulator for inputs of dimension `dim`.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            h: Mat::zeros(dim, dim),
            block: Mat::zeros(0, 0),
            tokens: 0,
        }
    }

    /// Input dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Tokens accumulated.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Adds the tokens of a row-major `[n, dim]` buffer.
    pub fn add_rows_f32(&mut self, x: &[f32]) {
        let d = self.dim();
        assert_eq!(x.len() % d.max(1), 0, "input rows must have {d} features");
        let n = x.len().checked_div(d).unwrap_or(0);
        self.tokens += n;
        if n == 0 || d == 0 {
            return;
        }
        for block in x.chunks(BLOCK_TOKENS * d) {
            self.add_block(block);
        }
    }

    /// Adds one block of row-major rows to `h`: `X_b X_bᵀ` in f32, summed into f64.
    fn add_block(&mut self, rows: &[f32]) {
        let d = self.dim();
        let m = rows.len() / d;
        if self.block.nrows() != d {
            self.block = Mat::zeros(d, d);
        }
        if self.h.nrows() != d {
            self.h = Mat::zeros(d, d);
        }
        // A row-major [m, d] buffer read column-major is the [d, m] matrix X_b.
        let xb = MatRef::from_column_major_slice(rows, d, m);
        lower_gram_f32(self.block.as_mut(), xb);
        add_lower_f32(self.h.as_mut(), self.block.as_ref());
    }

    /// The accumulated Hessian (a symmetric copy; the accumulator keeps the lower triangle).
    pub fn hessian(&self) -> Mat<f64> {
        self.clone().into_hessian()
    }

    /// Consumes the accumulator: the full symmetric Hessian.
    pub fn into_hessian(mut self) -> Mat<f64> {
        self.take_hessian()
    }

    /// The full symmetric Hessian of the tokens since the last take; the accumulator starts
    /// again from zero tokens and keeps its f32 work buffers (one task after another reuses
    /// them instead of zeroing new ones).
    pub fn take_hessian(&mut self) -> Mat<f64> {
        self.tokens = 0;
        if self.h.nrows() != self.dim {
            return Mat::zeros(self.dim, self.dim);
        }
        // mirror the lower triangle, tile by tile so both sides stay in cache
        const T: usize = 64;
        let d = self.dim();
        for j0 in (0..d).step_by(T) {
            for i0 in (j0..d).step_by(T) {
                for j in j0..(j0 + T).min(d) {
                    for i in i0.max(j + 1)..(i0 + T).min(d) {
                        self.h[(j, i)] = self.h[(i, j)];
                    }
                }
            }
        }
        std::mem::replace(&mut self.h, Mat::zeros(0, 0))
    }
}

/// `h += block` on the lower triangles (diagonal included), column chunks on all threads:
/// memory bound at large `d` (it reads and writes `h` once per block of tokens), and each
/// element is the same single addition whatever the number of threads.
fn add_lower_f32(h: MatMut<'_, f64>, block: MatRef<'_, f32>) {
    use rayon::prelude::*;
    const COLS: usize = 16;
    h.par_col_chunks_mut(COLS)
        .enumerate()
        .for_each(|(k, mut part)| {
            for c in 0..part.ncols() {
                let j = k * COLS + c;
                const CONTIGUOUS: &str = "faer matrices have contiguous columns";
                let dst = part.as_mut().col_mut(c);
                let dst = dst.try_as_col_major_mut().expect(CONTIGUOUS).as_slice_mut();
                let src = block
                    .col(j)
                    .try_as_col_major()
                    .expect(CONTIGUOUS)
                    .as_slice();
                for (a, &b) in dst[j..].iter_mut().zip(&src[j..]) {
                    *a += b as f64;
                }
            }
        });
}

/// `Σ_i H_i` (`None` for no Hessians).
pub fn sum(hs: &[Mat<f64>]) -> Option<Mat<f64>> {
    let first = hs.first()?;
    Some(hs[1..].iter().fold(first.clone(), |a, h| a + h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulates_sum_of_outer_products_over_batches() {
        let d = 3;
        let tokens: Vec<[f32; 3]> = vec![[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0], [2.0, -2.0, 1.0]];
        let mut acc = HessianAccumulator::new(d);
        acc.add_rows_f32(&tokens[..2].concat());
        acc.add_rows_f32(&tokens[2]);
        assert_eq!(acc.tokens(), 3);
        for i in 0..d {
            for j in 0..d {
                let want: f64 = tokens.iter().map(|t| t[i] as f64 * t[j] as f64).sum();
                assert!((acc.hessian()[(i, j)] - want).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn many_blocks_stay_accurate_and_symmetric() {
        let (d, n) = (37, 3 * BLOCK_TOKENS + 11);
        let x: Vec<f32> = (0..n * d)
            .map(|k| (((k * 7919) % 1013) as f32 / 1013.0 - 0.4) * (1.0 + (k % d) as f32))
            .collect();
        let mut acc = HessianAccumulator::new(d);
        acc.add_rows_f32(&x[..5 * d]);
        acc.add_rows_f32(&x[5 * d..]);
        for i in 0..d {
            for j in 0..d {
                let want: f64 = (0..n)
                    .map(|t| x[t * d + i] as f64 * x[t * d + j] as f64)
                    .sum();
                let got = acc.hessian()[(i, j)];
                let scale = (acc.hessian()[(i, i)] * acc.hessian()[(j, j)]).sqrt();
                assert!(
                    (got - want).abs() <= 1e-6 * scale,
                    "{i},{j}: {got} vs {want}"
                );
                assert_eq!(got, acc.hessian()[(j, i)]);
            }
        }
    }

    #[test]
    fn wide_inputs_over_several_panels_match_the_f64_sum() {
        // 1100 features: two full panels and a partial one, each with a rectangle below
        let (d, n) = (2 * crate::matrix::GRAM_PANEL + 76, 300);
        let x: Vec<f32> = (0..n * d)
            .map(|k| ((k * 7919) % 1013) as f32 / 1013.0 - 0.45)
            .collect();
        let mut acc = HessianAccumulator::new(d);
        acc.add_rows_f32(&x);
        let h = acc.into_hessian();
        let mut worst = 0.0f64;
        for j in 0..d {
            for i in j..d {
                let want: f64 = (0..n)
                    .map(|t| x[t * d + i] as f64 * x[t * d + j] as f64)
                    .sum();
                let scale = (h[(i, i)] * h[(j, j)]).sqrt();
                worst = worst.max((h[(i, j)] - want).abs() / scale);
                assert_eq!(h[(i, j)], h[(j, i)]);
            }
        }
        assert!(worst <= 1e-6, "worst relative error {worst}");
    }

    #[test]
    fn a_taken_hessian_starts_the_next_one_from_zero() {
        let d = 5;
        let x: Vec<f32> = (0..(BLOCK_TOKENS + 7) * d)
            .map(|k| ((k * 31) % 17) as f32 - 8.0)
            .collect();
        let (a, b) = x.split_at(300 * d);
        let mut acc = HessianAccumulator::new(d);
        acc.add_rows_f32(a);
        let h_a = acc.take_hessian();
        assert_eq!(acc.tokens(), 0);
        acc.add_rows_f32(b);
        let h_b = acc.take_hessian();
        let alone = |rows: &[f32]| {
            let mut acc = HessianAccumulator::new(d);
            acc.add_rows_f32(rows);
            acc.into_hessian()
        };
        assert_eq!(h_a, alone(a));
        assert_eq!(h_b, alone(b));
        assert_eq!(acc.take_hessian(), Mat::<f64>::zeros(d, d));
    }
}
