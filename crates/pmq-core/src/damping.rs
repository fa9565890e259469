//! Damping with automatic increase, as GPTQ users expect it (GPTQModel's `damp_auto_increment`):
//! `H_d = H + p · mean(diag H) · I`, trying `p = percdamp, percdamp + step, …` until the needed
//! Cholesky factorisations succeed, never a crash or NaN.

use crate::matrix::mean_diag;
use crate::CoreError;
use faer::{Mat, MatRef};

/// How damping is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Damping {
    /// Initial fraction of `mean(diag H)` added to the diagonal.
    pub percdamp: f64,
    /// Increment of the fraction after a failed factorisation.
    pub step: f64,
    /// Largest fraction tried before giving up.
    pub max_percdamp: f64,
}

impl Damping {
    /// GPTQ's default: 1 % of the mean diagonal, +1 % steps up to 100 %.
    pub fn gptq(percdamp: f64) -> Self {
        Self {
            percdamp,
            step: 0.01,
            max_percdamp: 1.0,
        }
    }
}

/// A damped matrix and the damping it took.
pub struct Damped<T> {
    /// Fraction of the mean diagonal that was added.
    pub percdamp: f64,
    /// Absolute amount added to the diagonal.
    pub damping: f64,
    /// What the caller's factorisation produced on the damped matrix.
    pub value: T,
}

/// Adds `p · mean(diag H)` to the diagonal of `h` and calls `factor` on it, increasing `p`
/// until `factor` succeeds. `what` names the matrix in the error.
pub fn with_auto_damping<T>(
    what: &str,
    h: MatRef<'_, f64>,
    damping: Damping,
    mut factor: impl FnMut(&Mat<f64>) -> Option<T>,
) -> Result<Damped<T>, CoreError> {
    with_auto_damping_shift(what, h, damping, |h, amount| {
        let mut hd = h.to_owned();
        for j in 0..hd.nrows() {
            hd[(j, j)] += amount;
        }
        factor(&hd)
    })
}

/// [`with_auto_damping`] without the copy: `factor(h, amount)` must factor `h + amount·I`.
pub fn with_auto_damping_shift<T>(
    what: &str,
    h: MatRef<'_, f64>,
    damping: Damping,
    mut factor: impl FnMut(MatRef<'_, f64>, f64) -> Option<T>,
) -> Result<Damped<T>, CoreError> {
    let mean = mean_diag(h);
    let unit = if mean > 0.0 { mean } else { 1.0 };
    let mut p = damping.percdamp.max(0.0);
    loop {
        let amount = p * unit;
        if let Some(value) = factor(h, amount) {
            return Ok(Damped {
                percdamp: p,
                damping: amount,
                value,
            });
        }
        let next = if p == 0.0 {
            damping.step
        } else {
            p + damping.step
        };
        if next > damping.max_percdamp + 1e-12 || damping.step <= 0.0 {
            return Err(CoreError::NotPositiveDefinite {
                what: what.to_string(),
                percdamp: p,
                damping: amount,
                max_percdamp: damping.max_percdamp,
            });
        }
        p = next;
    }
}
