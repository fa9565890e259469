//! Choosing E-PMQ's anchor strength α per layer from held-out calibration samples
//! (`--alpha auto`). Each task's samples are split into a fit part `F` and a held-out part
//! `V`; for every α of a grid, E-PMQ is solved on the fit part and scored on the held-out part
//! by the expert-guided loss alone:
//!
//! ```text
//! Q_α = argmin_Q Σ_i ‖Q X_i^F − W_i X_i^F‖² + λ_α ‖Q − W_m‖²,   λ_α = α · mean(diag Σ_i H_i^F)
//! α̂   = argmin_α L_V(Q_α),   L_V(Q) = Σ_i ‖Q X_i^V − W_i X_i^V‖²
//!     = ⟨E H^V, E⟩ − 2⟨E, D^V⟩ + c^V      (E = Q − W_m, H^V = Σ H_i^V, D^V = Σ Δ_i H_i^V,
//!                                          c^V = Σ⟨Δ_i H_i^V, Δ_i⟩, Δ_i = W_i − W_m)
//! ```
//!
//! The anchor term is left out of the score: it is the regulariser being tuned, and scoring
//! with it would favour large α by construction. The caller then solves once more on all the
//! samples with `α̂` (the chosen α is refitted, as in cross-validation).

use crate::epmq::{epmq_solve, ExpertFold};
use crate::gptq::GptqConfig;
use crate::CoreError;
use faer::Mat;
use serde::{Deserialize, Serialize};

/// One α tried: its held-out loss `L_V(Q_α)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlphaScore {
    pub alpha: f64,
    pub held_out_loss: f64,
}

/// The α chosen for one layer and the scores of the whole grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlphaChoice {
    pub alpha: f64,
    pub scores: Vec<AlphaScore>,
}

/// One layer's E-PMQ problem split into fit and held-out samples (`D`, `c` and `H_q` folded
/// over the tasks for each part, around the same merged weight).
pub struct SplitProblem<'a> {
    pub fit: &'a ExpertFold,
    pub h_fit: &'a Mat<f64>,
    pub held: &'a ExpertFold,
    pub h_held: &'a Mat<f64>,
}

/// The α of `grid` whose E-PMQ solution on the fit samples has the lowest held-out
/// expert-guided loss (the first one on ties). `grid` must be non-empty, finite, ≥ 0.
pub fn select_alpha(
    p: &SplitProblem<'_>,
    grid: &[f64],
    cfg: &GptqConfig,
) -> Result<AlphaChoice, CoreError> {
    if grid.is_empty() || grid.iter().any(|a| !(a.is_finite() && *a >= 0.0)) {
        return Err(CoreError::Config(format!(
            "the α grid must hold finite values ≥ 0, got {grid:?}"
        )));
    }
    if (0..p.h_held.nrows()).all(|j| p.h_held[(j, j)] == 0.0) {
        return Err(CoreError::Config(
            "no held-out calibration signal to choose α with (the held-out samples' Hessian is zero)"
                .into(),
        ));
    }
    // the held-out loss, as the α = 0 objective of the held-out fold
    let held = p.held.clone().finish(p.h_held.clone(), 0.0)?;
    let mut scores = Vec::with_capacity(grid.len());
    for &alpha in grid {
        let obj = p.fit.clone().finish(p.h_fit.clone(), alpha)?;
        let out = epmq_solve(&obj, cfg)?;
        let loss = held.eval(out.gptq.layer.dequant.as_ref());
        tracing::debug!(alpha, held_out_loss = loss, "α candidate");
        scores.push(AlphaScore {
            alpha,
            held_out_loss: loss,
        });
    }
    let best = scores
        .iter()
        .fold(None::<AlphaScore>, |b, s| match b {
            Some(b) if b.held_out_loss <= s.held_out_loss => Some(b),
            _ => Some(*s),
        })
        .expect("non-empty grid");
    Ok(AlphaChoice {
        alpha: best.alpha,
        scores,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant_grid::QuantGrid;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn gram(x: &Mat<f64>) -> Mat<f64> {
        x * x.transpose()
    }

    fn randn(r: &mut StdRng, rows: usize, cols: usize, s: f64) -> Mat<f64> {
        Mat::from_fn(rows, cols, |_, _| (r.random::<f64>() - 0.5) * 2.0 * s)
    }

    fn fold(merged: &Mat<f64>, experts: &[Mat<f64>], hs: &[Mat<f64>]) -> ExpertFold {
        let mut f = ExpertFold::new(merged.as_ref());
        for (w, h) in experts.iter().zip(hs) {
            f.add(w.as_ref(), h.as_ref()).unwrap();
        }
        f
    }

    /// The chosen α is the grid point with the lowest held-out loss, each loss equals the
    /// loss computed directly from the held-out inputs, and `absorb` of the two folds is the
    /// fold of all the samples.
    #[test]
    fn picks_the_grid_point_with_the_lowest_direct_held_out_loss() {
        let mut r = StdRng::seed_from_u64(7);
        let (rows, cols, k) = (6, 32, 3);
        let merged = randn(&mut r, rows, cols, 1.0);
        let experts: Vec<Mat<f64>> = (0..k)
            .map(|_| &merged + randn(&mut r, rows, cols, 0.3))
            .collect();
        // few fit tokens (an under-determined fit: the anchor matters), more held-out ones
        let xf: Vec<Mat<f64>> = (0..k).map(|_| randn(&mut r, cols, 12, 1.0)).collect();
        let xv: Vec<Mat<f64>> = (0..k).map(|_| randn(&mut r, cols, 64, 1.0)).collect();
        let hf: Vec<Mat<f64>> = xf.iter().map(gram).collect();
        let hv: Vec<Mat<f64>> = xv.iter().map(gram).collect();
        let sum = |hs: &[Mat<f64>]| hs.iter().fold(Mat::zeros(cols, cols), |a, h| a + h);
        let (fit, held) = (fold(&merged, &experts, &hf), fold(&merged, &experts, &hv));
        let (h_fit, h_held) = (sum(&hf), sum(&hv));
        let mut cfg =
            GptqConfig::new(QuantGrid::new(4, false, 16, crate::ScalePrecision::F16).unwrap());
        cfg.damping = crate::damping::Damping::gptq(0.0);
        let grid = [0.0, 0.01, 0.1, 1.0, 10.0];
        let p = SplitProblem {
            fit: &fit,
            h_fit: &h_fit,
            held: &held,
            h_held: &h_held,
        };
        let choice = select_alpha(&p, &grid, &cfg).unwrap();
        assert_eq!(choice.scores.len(), grid.len());
        for s in &choice.scores {
            let obj = fit.clone().finish(h_fit.clone(), s.alpha).unwrap();
            let q = epmq_solve(&obj, &cfg).unwrap().gptq.layer.dequant;
            let direct: f64 = experts
                .iter()
                .zip(&xv)
                .map(|(w, x)| (&q * x - w * x).squared_norm_l2())
                .sum();
            assert!(
                (s.held_out_loss - direct).abs() <= 1e-9 * direct,
                "α {}: {} vs {direct}",
                s.alpha,
                s.held_out_loss
            );
        }
        let min = choice
            .scores
            .iter()
            .map(|s| s.held_out_loss)
            .fold(f64::INFINITY, f64::min);
        let best = choice
            .scores
            .iter()
            .find(|s| s.held_out_loss == min)
            .unwrap();
        assert_eq!(choice.alpha, best.alpha);
        // distinct α give distinct solutions here: the choice is not vacuous
        assert!(choice.scores.iter().any(|s| s.held_out_loss > min * 1.001));

        let mut all = fit.clone();
        all.absorb(&held).unwrap();
        let both: Vec<Mat<f64>> = hf.iter().zip(&hv).map(|(a, b)| a + b).collect();
        let direct = fold(&merged, &experts, &both)
            .finish(sum(&both), 0.0)
            .unwrap();
        let via = all.finish(sum(&both), 0.0).unwrap();
        assert!((via.d.clone() - direct.d.clone()).norm_max() <= 1e-9 * direct.d.norm_max());
        assert!((via.c - direct.c).abs() <= 1e-9 * direct.c.abs());
        // folds around another merged weight do not add up
        let mut other = fold(&experts[0], &experts, &hv);
        assert!(other.absorb(&fit).is_err());

        assert!(select_alpha(&p, &[], &cfg).is_err());
        assert!(select_alpha(&p, &[-1.0], &cfg).is_err());
        let zero = Mat::zeros(cols, cols);
        let p0 = SplitProblem { h_held: &zero, ..p };
        assert!(select_alpha(&p0, &grid, &cfg)
            .unwrap_err()
            .to_string()
            .contains("held-out"));
    }
}
