//! Paired bootstrap confidence intervals for "model A − model B" in average accuracy.
//!
//! The bench's average is the mean over tasks of per-task accuracy, so the difference is
//! `D = (1/T) Σ_t (1/n_t) Σ_j (a_tj − b_tj)` with `a_tj, b_tj ∈ {0, 1}` whether each model got
//! test example `j` of task `t` right. One bootstrap replicate resamples, within every task, its
//! `n_t` examples with replacement — the same examples for both models (paired) — and recomputes
//! `D`; the 95 % interval is the 2.5th and 97.5th percentile of the replicates (percentile
//! bootstrap, Efron & Tibshirani 1993, ch. 13). A difference is called significant when the
//! interval excludes 0.

use crate::results::CellResult;
use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Replicates per interval.
pub const REPLICATES: usize = 10_000;
/// Seed of the replicates (fixed: regenerated tables do not move).
pub const SEED: u64 = 20_261_203;

/// A difference and its 95 % paired bootstrap interval (fractions, not points).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub diff: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    /// The interval excludes 0.
    pub fn significant(&self) -> bool {
        self.lo > 0.0 || self.hi < 0.0
    }

    /// `+0.7 [+0.2, +1.2]` in percentage points, with `*` when significant.
    pub fn points(&self) -> String {
        format!(
            "{:+.1} [{:+.1}, {:+.1}]{}",
            100.0 * self.diff,
            100.0 * self.lo,
            100.0 * self.hi,
            if self.significant() { "*" } else { "" }
        )
    }
}

/// The paired bootstrap interval of `mean_t acc_t(a) − mean_t acc_t(b)`; `a[t]` and `b[t]` are
/// task `t`'s per-example outcomes of the two models.
pub fn paired_bootstrap(
    a: &[Vec<bool>],
    b: &[Vec<bool>],
    reps: usize,
    seed: u64,
) -> Result<Interval> {
    if a.len() != b.len() || a.is_empty() {
        bail!(
            "paired bootstrap needs the same, non-zero number of tasks ({} vs {})",
            a.len(),
            b.len()
        );
    }
    if reps == 0 {
        bail!("paired bootstrap needs at least one replicate");
    }
    // per task, the per-example differences in {-1, 0, 1}
    let mut diffs = Vec::with_capacity(a.len());
    for (t, (x, y)) in a.iter().zip(b).enumerate() {
        if x.len() != y.len() || x.is_empty() {
            bail!("task {t}: {} vs {} examples", x.len(), y.len());
        }
        diffs.push(
            x.iter()
                .zip(y)
                .map(|(&p, &q)| p as i32 - q as i32)
                .collect::<Vec<i32>>(),
        );
    }
    let tasks = diffs.len() as f64;
    let mean_diff = |pick: &mut dyn FnMut(&[i32]) -> i64| {
        diffs
            .iter()
            .map(|d| pick(d) as f64 / d.len() as f64)
            .sum::<f64>()
            / tasks
    };
    let diff = mean_diff(&mut |d| d.iter().map(|&v| v as i64).sum());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut replicates: Vec<f64> = (0..reps)
        .map(|_| {
            mean_diff(&mut |d| {
                let n = d.len();
                (0..n).map(|_| d[rng.random_range(0..n)] as i64).sum()
            })
        })
        .collect();
    replicates.sort_by(f64::total_cmp);
    let at = |q: f64| replicates[((q * reps as f64).floor() as usize).min(reps - 1)];
    Ok(Interval {
        diff,
        lo: at(0.025),
        hi: at(0.975),
    })
}

/// The interval of `a.average − b.average` when both cells recorded per-example outcomes for
/// the same tasks; `None` otherwise (results written before outcomes were recorded).
pub fn cell_difference(a: &CellResult, b: &CellResult) -> Option<Interval> {
    let outcomes = |c: &CellResult| -> Option<Vec<(String, Vec<bool>)>> {
        c.accuracies
            .iter()
            .map(|t| match t.outcomes()? {
                Ok(v) => Some((t.task.clone(), v)),
                Err(e) => {
                    tracing::warn!(cell = %c.key, "per-example outcomes unusable, no interval: {e}");
                    None
                }
            })
            .collect()
    };
    let (x, y) = (outcomes(a)?, outcomes(b)?);
    if x.iter().map(|t| &t.0).ne(y.iter().map(|t| &t.0)) {
        return None;
    }
    let split = |v: Vec<(String, Vec<bool>)>| v.into_iter().map(|t| t.1).collect::<Vec<_>>();
    paired_bootstrap(&split(x), &split(y), REPLICATES, SEED).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize, every: usize, offset: usize) -> Vec<bool> {
        (0..n)
            .map(|j| !(j + offset).is_multiple_of(every))
            .collect()
    }

    #[test]
    fn equal_models_give_a_zero_interval_and_dominance_a_full_one() {
        let a = vec![pattern(300, 3, 0), pattern(200, 5, 1)];
        let i = paired_bootstrap(&a, &a, 500, 1).unwrap();
        assert_eq!((i.diff, i.lo, i.hi), (0.0, 0.0, 0.0));
        assert!(!i.significant());
        let ones = vec![vec![true; 50]];
        let zeros = vec![vec![false; 50]];
        let i = paired_bootstrap(&ones, &zeros, 200, 1).unwrap();
        assert_eq!((i.diff, i.lo, i.hi), (1.0, 1.0, 1.0));
        assert!(i.significant());
    }

    #[test]
    fn the_interval_matches_the_normal_approximation_on_a_large_sample() {
        // one task, 4,000 examples: a and b disagree on 10 % of them, a wins 6 % and loses 4 %
        // → difference 0.02, per-example variance E[d²] − 0.02² = 0.1 − 0.0004
        let n = 4000;
        let mut a: Vec<bool> = (0..n).map(|j| j % 7 != 0).collect();
        let mut b = a.clone();
        for j in 0..n {
            match j % 50 {
                0..=2 => {
                    a[j] = true;
                    b[j] = false;
                } // a wins: 6 %
                3 | 4 => {
                    a[j] = false;
                    b[j] = true;
                } // b wins: 4 %
                _ => {}
            }
        }
        let i = paired_bootstrap(&[a], &[b], 4000, 7).unwrap();
        assert!((i.diff - 0.02).abs() < 1e-12);
        let se = ((0.1f64 - 0.0004) / n as f64).sqrt();
        let (lo, hi) = (0.02 - 1.96 * se, 0.02 + 1.96 * se);
        assert!((i.lo - lo).abs() < 0.15 * 1.96 * se, "{} vs {lo}", i.lo);
        assert!((i.hi - hi).abs() < 0.15 * 1.96 * se, "{} vs {hi}", i.hi);
        assert!(i.significant());
    }

    #[test]
    fn tasks_weigh_equally_whatever_their_size() {
        // task 1 (10 examples): a +100 %; task 2 (1,000 examples): equal → average +50 %
        let a = vec![vec![true; 10], pattern(1000, 2, 0)];
        let b = vec![vec![false; 10], pattern(1000, 2, 0)];
        let i = paired_bootstrap(&a, &b, 300, 3).unwrap();
        assert!((i.diff - 0.5).abs() < 1e-12);
        assert_eq!((i.lo, i.hi), (0.5, 0.5));
    }

    #[test]
    fn refuses_mismatched_inputs() {
        assert!(paired_bootstrap(&[vec![true]], &[], 10, 0).is_err());
        assert!(paired_bootstrap(&[vec![true]], &[vec![true, false]], 10, 0).is_err());
        assert!(paired_bootstrap(&[vec![true]], &[vec![true]], 0, 0).is_err());
    }
}
