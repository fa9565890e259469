//! RegMean (Jin et al., ICLR 2023, "Dataless Knowledge Fusion by Merging Weights of Language
//! Models"), as FusionBench runs it: for every linear layer,
//!
//! ```text
//! W = (Σ_i W_i G̃_i) (Σ_i G̃_i)⁻¹,   G_i = X_iᵀ X_i / n_i,   G̃_i = r·G_i + (1 − r)·diag(G_i)
//! ```
//!
//! `X_i` are the `n_i` token inputs of the linear when expert `i` runs on its own task's data
//! (so `G_i` is the mean Gram matrix), and `r` FusionBench's `reduce_non_diagonal_ratio`
//! (its CLIP default 0.6; `r = 1` is the paper's plain RegMean). With `r = 1`, `W` minimises
//! `Σ_i ‖W X_i − W_i X_i‖² / n_i`, the regression the method is named after. Tensors that are
//! not linear weights are averaged, as FusionBench does.
//!
//! Folded expert by expert ([`RegMeanFold`]): memory holds `Σ G̃_i` and `Σ W_i G̃_i`, not K Grams.
//! An input column that no expert's data reached (`(Σ G̃_i)_jj = 0`, so its whole row and column
//! are zero) makes the system singular; there the merged column is the experts' mean.

use crate::matrix::{check_finite, check_shape, par};
use crate::CoreError;
use faer::linalg::matmul::matmul;
use faer::prelude::Solve;
use faer::{Accum, Mat, MatRef, Side};

/// FusionBench's `reduce_non_diagonal_ratio` default (its CLIP configuration).
pub const DEFAULT_NON_DIAGONAL_RATIO: f64 = 0.6;

/// Squared Cholesky pivots at or below this fraction of the largest diagonal entry count as
/// zero (the sum of Grams is singular).
const SINGULAR_PIVOT: f64 = 1e-12;

/// `G̃ = r·G + (1 − r)·diag(G)`: off-diagonal entries scaled by `r`, the diagonal kept.
pub fn reduce_non_diagonal(g: MatRef<'_, f64>, ratio: f64) -> Mat<f64> {
    Mat::from_fn(g.nrows(), g.ncols(), |i, j| {
        if i == j {
            g[(i, j)]
        } else {
            ratio * g[(i, j)]
        }
    })
}

/// The running sums of one linear's RegMean solve.
#[derive(Clone, Debug)]
pub struct RegMeanFold {
    ratio: f64,
    /// `Σ_i G̃_i`, `[in, in]`
    grams: Mat<f64>,
    /// `Σ_i W_i G̃_i`, `[out, in]`
    weighted: Mat<f64>,
    /// `Σ_i W_i` (for the columns no data reached)
    weights: Mat<f64>,
    experts: usize,
}

/// A solved linear: the merged weight and how many input columns fell back to the mean.
#[derive(Clone, Debug)]
pub struct RegMeanSolution {
    pub weight: Mat<f64>,
    pub dead_columns: usize,
}

impl RegMeanFold {
    /// An empty fold for `[rows, cols]` weights with non-diagonal ratio `ratio ∈ [0, 1]`.
    pub fn new(rows: usize, cols: usize, ratio: f64) -> Result<Self, CoreError> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(CoreError::Config(format!(
                "RegMean's non-diagonal ratio must lie in [0, 1], got {ratio}"
            )));
        }
        Ok(Self {
            ratio,
            grams: Mat::zeros(cols, cols),
            weighted: Mat::zeros(rows, cols),
            weights: Mat::zeros(rows, cols),
            experts: 0,
        })
    }

    /// Experts folded so far.
    pub fn experts(&self) -> usize {
        self.experts
    }

    /// Folds expert `i`'s weight `W_i` `[out, in]` and its mean Gram matrix `G_i` `[in, in]`.
    pub fn add(&mut self, weight: MatRef<'_, f64>, gram: MatRef<'_, f64>) -> Result<(), CoreError> {
        let (rows, cols) = (self.weighted.nrows(), self.weighted.ncols());
        let i = self.experts + 1;
        check_shape(&format!("expert {i} weight"), weight, rows, cols)?;
        check_shape(&format!("expert {i} Gram matrix"), gram, cols, cols)?;
        check_finite(&format!("expert {i} weight"), weight)?;
        check_finite(&format!("expert {i} Gram matrix"), gram)?;
        if let Some(j) = (0..cols).find(|&j| gram[(j, j)] < 0.0) {
            return Err(CoreError::Config(format!(
                "expert {i} Gram matrix has a negative diagonal entry ({}) at {j}: not a Gram matrix",
                gram[(j, j)]
            )));
        }
        let g = reduce_non_diagonal(gram, self.ratio);
        matmul(
            self.weighted.as_mut(),
            Accum::Add,
            weight,
            g.as_ref(),
            1.0,
            par(),
        );
        self.grams += &g;
        self.weights += weight;
        self.experts += 1;
        Ok(())
    }

    /// `W = (Σ W_i G̃_i)(Σ G̃_i)⁻¹` by a Cholesky factorisation of `Σ G̃_i`.
    pub fn solve(&self) -> Result<RegMeanSolution, CoreError> {
        if self.experts == 0 {
            return Err(CoreError::Config(
                "RegMean needs at least one expert".into(),
            ));
        }
        let mut g = self.grams.clone();
        let mut s = self.weighted.clone();
        let mut dead = 0;
        let k = self.experts as f64;
        for j in 0..g.ncols() {
            if g[(j, j)] == 0.0 {
                // each G̃_i is PSD with a non-negative diagonal: a zero diagonal entry of the
                // sum means a zero row and column
                g[(j, j)] = 1.0;
                for r in 0..s.nrows() {
                    s[(r, j)] = self.weights[(r, j)] / k;
                }
                dead += 1;
            }
        }
        let singular = || {
            CoreError::Singular(format!(
                "the sum of the experts' Gram matrices ({0}×{0}) is singular (too few calibration tokens for the input width?); a non-diagonal ratio below 1 makes it definite",
                g.nrows()
            ))
        };
        let llt = g.llt(Side::Lower).map_err(|_| singular())?;
        // a pivot that survived only by rounding: relative to the largest diagonal entry
        let max_diag = (0..g.ncols()).map(|j| g[(j, j)]).fold(0.0, f64::max);
        let l = llt.L();
        if (0..g.ncols()).any(|j| l[(j, j)] * l[(j, j)] <= SINGULAR_PIVOT * max_diag) {
            return Err(singular());
        }
        // W Σ G̃ = S  ⇔  (Σ G̃) Wᵀ = Sᵀ
        let wt = llt.solve(s.transpose());
        let weight = wt.transpose().to_owned();
        check_finite("RegMean merged weight", weight.as_ref())?;
        Ok(RegMeanSolution {
            weight,
            dead_columns: dead,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::prelude::SolveLstsq;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn random(rows: usize, cols: usize, rng: &mut StdRng) -> Mat<f64> {
        Mat::from_fn(rows, cols, |_, _| rng.random_range(-1.0..1.0))
    }

    /// `XᵀX / n` of `n` random tokens of width `d` (rows are tokens).
    fn gram(x: &Mat<f64>) -> Mat<f64> {
        let n = x.nrows() as f64;
        let mut g = x.transpose() * x;
        g *= faer::Scale(1.0 / n);
        g
    }

    #[test]
    fn plain_regmean_is_the_least_squares_merge() {
        // r = 1: W minimises Σ_i ‖X_i Wᵀ − X_i W_iᵀ‖² / n_i; check against the normal
        // equations solved by stacking the scaled inputs and running a QR least squares
        let mut rng = StdRng::seed_from_u64(1);
        let (out, d) = (5, 7);
        let ns = [20usize, 35, 12];
        let mut fold = RegMeanFold::new(out, d, 1.0).unwrap();
        let mut a_rows = Vec::new();
        let mut b_rows = Vec::new();
        for &n in &ns {
            let x = random(n, d, &mut rng);
            let w = random(out, d, &mut rng);
            fold.add(w.as_ref(), gram(&x).as_ref()).unwrap();
            let s = 1.0 / (n as f64).sqrt();
            let y = &x * w.transpose();
            for t in 0..n {
                a_rows.push((0..d).map(|j| s * x[(t, j)]).collect::<Vec<_>>());
                b_rows.push((0..out).map(|o| s * y[(t, o)]).collect::<Vec<_>>());
            }
        }
        let a = Mat::from_fn(a_rows.len(), d, |i, j| a_rows[i][j]);
        let b = Mat::from_fn(b_rows.len(), out, |i, j| b_rows[i][j]);
        let want = a.qr().solve_lstsq(&b).transpose().to_owned();
        let got = fold.solve().unwrap();
        assert_eq!(got.dead_columns, 0);
        assert!((&got.weight - &want).norm_max() < 1e-10);
    }

    #[test]
    fn ratio_zero_is_the_diagonal_weighted_mean_and_one_expert_is_itself() {
        let mut rng = StdRng::seed_from_u64(2);
        let (out, d) = (3, 4);
        let xs: Vec<Mat<f64>> = (0..2).map(|_| random(9, d, &mut rng)).collect();
        let ws: Vec<Mat<f64>> = (0..2).map(|_| random(out, d, &mut rng)).collect();
        let mut fold = RegMeanFold::new(out, d, 0.0).unwrap();
        for (x, w) in xs.iter().zip(&ws) {
            fold.add(w.as_ref(), gram(x).as_ref()).unwrap();
        }
        let got = fold.solve().unwrap().weight;
        for j in 0..d {
            let (g0, g1) = (gram(&xs[0])[(j, j)], gram(&xs[1])[(j, j)]);
            for o in 0..out {
                let want = (ws[0][(o, j)] * g0 + ws[1][(o, j)] * g1) / (g0 + g1);
                assert!((got[(o, j)] - want).abs() < 1e-12);
            }
        }
        let mut one = RegMeanFold::new(out, d, 0.6).unwrap();
        one.add(ws[0].as_ref(), gram(&xs[0]).as_ref()).unwrap();
        assert!((&one.solve().unwrap().weight - &ws[0]).norm_max() < 1e-12);
    }

    #[test]
    fn reduction_scales_only_off_diagonals() {
        let g = Mat::from_fn(3, 3, |i, j| 1.0 + i as f64 + 10.0 * j as f64);
        let r = reduce_non_diagonal(g.as_ref(), 0.6);
        for i in 0..3 {
            for j in 0..3 {
                let want = if i == j { g[(i, j)] } else { 0.6 * g[(i, j)] };
                assert_eq!(r[(i, j)], want);
            }
        }
    }

    #[test]
    fn unreached_columns_take_the_mean_and_bad_input_is_refused() {
        let mut rng = StdRng::seed_from_u64(3);
        let (out, d) = (2, 3);
        let mut x = random(10, d, &mut rng);
        for t in 0..10 {
            x[(t, 1)] = 0.0;
        }
        let ws: Vec<Mat<f64>> = (0..2).map(|_| random(out, d, &mut rng)).collect();
        let mut fold = RegMeanFold::new(out, d, 0.6).unwrap();
        for w in &ws {
            fold.add(w.as_ref(), gram(&x).as_ref()).unwrap();
        }
        let s = fold.solve().unwrap();
        assert_eq!(s.dead_columns, 1);
        for o in 0..out {
            assert!((s.weight[(o, 1)] - (ws[0][(o, 1)] + ws[1][(o, 1)]) / 2.0).abs() < 1e-12);
        }
        assert!(RegMeanFold::new(out, d, 1.5).is_err());
        assert!(fold
            .add(ws[0].as_ref(), Mat::<f64>::zeros(2, 2).as_ref())
            .is_err());
        assert!(RegMeanFold::new(out, d, 0.6).unwrap().solve().is_err());
        let mut neg = gram(&x);
        neg[(0, 0)] = -1.0;
        let e = RegMeanFold::new(out, d, 0.6)
            .unwrap()
            .add(ws[0].as_ref(), neg.as_ref())
            .unwrap_err()
            .to_string();
        assert!(e.contains("negative diagonal"), "{e}");
        // r = 1 with fewer tokens than columns: singular, refused with a pointer to r < 1
        let few = Mat::from_fn(2, d, |t, j| [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]][t][j]);
        let mut f = RegMeanFold::new(out, d, 1.0).unwrap();
        f.add(ws[0].as_ref(), gram(&few).as_ref()).unwrap();
        let e = f.solve().unwrap_err().to_string();
        assert!(e.contains("singular"), "{e}");
    }
}
