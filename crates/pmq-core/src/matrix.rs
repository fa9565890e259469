//! Small helpers between row-major buffers (as stored in safetensors) and `faer` matrices,
//! plus input validation shared by the solvers.

use crate::CoreError;
use faer::{Mat, MatRef, Par};

/// Parallelism used for the large products (all rayon threads).
pub fn par() -> Par {
    Par::rayon(0)
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
    use rayon::prelude::*;
    let mut out = Mat::<f32>::zeros(m.nrows(), m.ncols());
    out.par_col_iter_mut().enumerate().for_each(|(c, mut dst)| {
        let src = m.col(c);
        match src.try_as_col_major() {
            Some(col) => {
                for (r, &v) in col.as_slice().iter().enumerate() {
                    dst[r] = v as f32;
                }
            }
            None => {
                for r in 0..m.nrows() {
                    dst[r] = src[r] as f32;
                }
            }
        }
    });
    out
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
