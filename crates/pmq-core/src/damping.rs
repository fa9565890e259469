//! Damping with automatic increase, as GPTQ users expect it (GPTQModel's `damp_auto_increment`):
//! `H_d = H + p · mean(diag H) · I`, trying `p = percdamp, percdamp + step, …` until the needed
//! Cholesky factorisations succeed, never a crash or NaN.

use crate::matrix::mean_diag;
use crate::CoreError;
use faer::MatRef;

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

/// Calls `factor(h, amount)`, which must factor `h + amount·I` (without copying `h`), with
/// `amount = p · mean(diag H)`, increasing `p` until `factor` succeeds. `what` names the
/// matrix in the error.
pub fn with_auto_damping<T>(
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
