//! Small helpers between row-major buffers (as stored in safetensors) and `faer` matrices,
//! plus input validation shared by the solvers.

use crate::CoreError;
use faer::{Mat, MatMut, MatRef, Par};

/// Parallelism used for the large products (all rayon threads).
pub fn par() -> Par {
    Par::rayon(0)
}

/// `dst = a · b` in f32 (any strides), on all threads, by the gemm crate (candle's GEMM),
/// whose AVX-512 kernels run ~1.35× faster than faer's own f32 GEMM on the fold's shapes
/// (`Δ_i H_i`: 2048–5632 wide) and give the same sums.
pub fn gemm_f32(mut dst: MatMut<'_, f32>, a: MatRef<'_, f32>, b: MatRef<'_, f32>) {
    let (m, n, k) = (dst.nrows(), dst.ncols(), a.ncols());
    assert!(
        a.nrows() == m && b.nrows() == k && b.ncols() == n,
        "gemm_f32: [{m}, {n}] = [{}, {k}] · [{}, {}]",
        a.nrows(),
        b.nrows(),
        b.ncols()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst.fill(0.0);
        return;
    }
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the shapes agree (checked above); pointers and strides describe faer views that
    // stay borrowed for the call, and `dst` is a unique borrow, so it overlaps neither input.
    // With `read_dst = false` the destination is only written: dst = 1 · (a · b).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_ptr_mut(),
            dst.col_stride(),
            dst.row_stride(),
            false,
            a.as_ptr(),
            a.col_stride(),
            a.row_stride(),
            b.as_ptr(),
            b.col_stride(),
            b.row_stride(),
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Column panels of [`lower_gram_f32`].
pub const GRAM_PANEL: usize = 512;

/// The lower triangle of `C = X Xᵀ` (`X` is `[d, m]`, any strides; the strict upper triangle of
/// `c` is left as it was), in f32: panel by panel of [`GRAM_PANEL`] columns, the panel's
/// diagonal block by faer's triangular product and the rectangle below it, `X_below X_panelᵀ`,
/// by [`gemm_f32`]. faer's triangular product alone runs at about 2/3 of a plain GEMM's speed
/// on wide inputs; the panels keep most of the work in plain GEMMs (1.1× faster at d = 1536,
/// 1.4× at d = 2048 and 5632 on 1024 tokens here). Up to `d = GRAM_PANEL` it is faer's product
/// alone; above, the sums are rounded in another order than faer's (last-bit differences).
pub fn lower_gram_f32(mut c: MatMut<'_, f32>, x: MatRef<'_, f32>) {
    use faer::linalg::matmul::triangular::{matmul, BlockStructure};
    let d = x.nrows();
    for j in (0..d).step_by(GRAM_PANEL) {
        let w = GRAM_PANEL.min(d - j);
        let panel = x.subrows(j, w);
        matmul(
            c.as_mut().submatrix_mut(j, j, w, w),
            BlockStructure::TriangularLower,
            faer::Accum::Replace,
            panel,
            BlockStructure::Rectangular,
            panel.transpose(),
            BlockStructure::Rectangular,
            1.0f32,
            par(),
        );
        let below = d - j - w;
        if below > 0 {
            gemm_f32(
                c.as_mut().submatrix_mut(j + w, j, below, w),
                x.subrows(j + w, below),
                panel.transpose(),
            );
        }
    }
}

/// Builds a `rows × cols` matrix from a row-major buffer (tile by tile).
pub fn from_row_major(rows: usize, cols: usize, data: &[f64]) -> Mat<f64> {
    from_row_major_with(rows, cols, data, |v| v)
}

/// Builds a `rows × cols` matrix from a row-major f32 buffer (tile by tile).
pub fn from_row_major_f32(rows: usize, cols: usize, data: &[f32]) -> Mat<f64> {
    from_row_major_with(rows, cols, data, |v| v as f64)
}

fn from_row_major_with<T: Copy>(
    rows: usize,
    cols: usize,
    data: &[T],
    f: impl Fn(T) -> f64,
) -> Mat<f64> {
    assert_eq!(data.len(), rows * cols, "row-major buffer length");
    let mut m = Mat::<f64>::zeros(rows, cols);
    tiles(rows, cols, |r, c| m[(r, c)] = f(data[r * cols + c]));
    m
}

/// Visits every `(r, c)` of a `rows × cols` index space in 64 × 64 tiles, so that row-major
/// and column-major buffers can be read and written together without striding through memory.
pub fn tiles(rows: usize, cols: usize, mut f: impl FnMut(usize, usize)) {
    const T: usize = 64;
    for c0 in (0..cols).step_by(T) {
        for r0 in (0..rows).step_by(T) {
            for c in c0..(c0 + T).min(cols) {
                for r in r0..(r0 + T).min(rows) {
                    f(r, c);
                }
            }
        }
    }
}

/// The `rows × cols` matrix of `f(r, c)`, built in parallel over 64-column chunks and tile by
/// tile inside each (so that `f` may read row-major and column-major sources together).
pub fn par_from_fn<T>(rows: usize, cols: usize, f: impl Fn(usize, usize) -> T + Sync) -> Mat<T>
where
    T: faer::traits::ComplexField + Copy + Send,
{
    use rayon::prelude::*;
    const T: usize = 64;
    let mut m = Mat::<T>::zeros(rows, cols);
    m.par_col_chunks_mut(T)
        .enumerate()
        .for_each(|(k, mut chunk)| {
            let c0 = k * T;
            for r0 in (0..rows).step_by(T) {
                for c in 0..chunk.ncols() {
                    for r in r0..(r0 + T).min(rows) {
                        chunk[(r, c)] = f(r, c0 + c);
                    }
                }
            }
        });
    m
}

/// `m` in f32, column by column in parallel (contiguous columns convert as slices).
pub fn to_f32(m: MatRef<'_, f64>) -> Mat<f32> {
    to_f32_checked(m).0
}

/// `m` in f32 (as [`to_f32`]) and whether every entry of it is finite.
pub fn to_f32_checked(m: MatRef<'_, f64>) -> (Mat<f32>, bool) {
    use rayon::prelude::*;
    let mut out = Mat::<f32>::zeros(m.nrows(), m.ncols());
    let finite = out
        .par_col_iter_mut()
        .enumerate()
        .map(|(c, mut dst)| {
            let src = m.col(c);
            let mut finite = true;
            match src.try_as_col_major() {
                Some(col) => {
                    for (r, &v) in col.as_slice().iter().enumerate() {
                        dst[r] = v as f32;
                        finite &= dst[r].is_finite();
                    }
                }
                None => {
                    for r in 0..m.nrows() {
                        dst[r] = src[r] as f32;
                        finite &= dst[r].is_finite();
                    }
                }
            }
            finite
        })
        .reduce(|| true, |a, b| a && b);
    (out, finite)
}

/// Row-major copy of a matrix, each value mapped by `f` (tile by tile).
pub fn to_row_major_with<T: Copy + Default>(m: MatRef<'_, f64>, f: impl Fn(f64) -> T) -> Vec<T> {
    let (rows, cols) = (m.nrows(), m.ncols());
    let mut out = vec![T::default(); rows * cols];
    tiles(rows, cols, |r, j| out[r * cols + j] = f(m[(r, j)]));
    out
}

/// Row-major copy of a matrix.
pub fn to_row_major(m: MatRef<'_, f64>) -> Vec<f64> {
    to_row_major_with(m, |v| v)
}

/// Row-major f32 copy of a matrix.
pub fn to_row_major_f32(m: MatRef<'_, f64>) -> Vec<f32> {
    to_row_major_with(m, |v| v as f32)
}

/// Fails unless `m` is `rows × cols`.
pub fn check_shape(
    what: &str,
    m: MatRef<'_, f64>,
    rows: usize,
    cols: usize,
) -> Result<(), CoreError> {
    if m.nrows() != rows || m.ncols() != cols {
        return Err(CoreError::Shape {
            what: what.to_string(),
            got_rows: m.nrows(),
            got_cols: m.ncols(),
            expected: format!("{rows}×{cols}"),
        });
    }
    Ok(())
}

/// Fails on the first NaN or infinity in `m`, naming its position.
pub fn check_finite(what: &str, m: MatRef<'_, f64>) -> Result<(), CoreError> {
    for j in 0..m.ncols() {
        for i in 0..m.nrows() {
            let v = m[(i, j)];
            if !v.is_finite() {
                return Err(CoreError::NonFinite {
                    what: what.to_string(),
                    row: i,
                    col: j,
                    value: v,
                });
            }
        }
    }
    Ok(())
}

/// Mean of the diagonal of a square matrix.
pub fn mean_diag(h: MatRef<'_, f64>) -> f64 {
    let n = h.nrows();
    if n == 0 {
        return 0.0;
    }
    (0..n).map(|j| h[(j, j)]).sum::<f64>() / n as f64
}

/// Frobenius inner product `⟨A, B⟩ = Σ a_ij b_ij`.
pub fn frobenius_dot(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> f64 {
    let mut s = 0.0;
    for j in 0..a.ncols() {
        let (ca, cb) = (a.col(j), b.col(j));
        match (ca.try_as_col_major(), cb.try_as_col_major()) {
            // the same order as element by element, without the index checks
            (Some(x), Some(y)) => {
                s = x
                    .as_slice()
                    .iter()
                    .zip(y.as_slice())
                    .fold(s, |s, (p, q)| s + p * q)
            }
            _ => s = (0..a.nrows()).fold(s, |s, i| s + ca[i] * cb[i]),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_f32_matches_the_f64_product_on_strided_views() {
        let a = Mat::<f32>::from_fn(37, 53, |i, j| ((i * 31 + j * 17) % 13) as f32 - 6.0);
        let b = Mat::<f32>::from_fn(29, 53, |i, j| ((i * 7 + j * 11) % 9) as f32 * 0.25 - 1.0);
        // a [37, 53] times bᵀ [53, 29] (a transposed view), into a submatrix of a bigger matrix
        let mut big = Mat::<f32>::from_fn(40, 31, |_, _| 7.0);
        gemm_f32(
            big.as_mut().submatrix_mut(2, 1, 37, 29),
            a.as_ref(),
            b.transpose(),
        );
        for i in 0..40 {
            for j in 0..31 {
                let want = if (2..39).contains(&i) && (1..30).contains(&j) {
                    (0..53)
                        .map(|k| a[(i - 2, k)] as f64 * b[(j - 1, k)] as f64)
                        .sum::<f64>()
                } else {
                    7.0
                };
                // small integers and quarters: every product and sum is exact in f32
                assert_eq!(big[(i, j)] as f64, want, "{i},{j}");
            }
        }
        let mut empty = Mat::<f32>::from_fn(3, 2, |_, _| 1.0);
        gemm_f32(
            empty.as_mut(),
            Mat::<f32>::zeros(3, 0).as_ref(),
            Mat::<f32>::zeros(0, 2).as_ref(),
        );
        assert_eq!(empty, Mat::<f32>::zeros(3, 2));
    }
}
