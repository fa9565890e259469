//! Settings of the AWQ searches: the ratios of the scale search, `r = i / n_grid`,
//! `i = 0 … n_grid − 1`, and the thresholds of the clip search, `m = m₀·(1 − i/clip_grid)`,
//! `i = 0 … ⌊max_shrink·clip_grid⌋ − 1`.

use crate::CoreError;

/// Settings of the AWQ searches. [`Default`] is AutoAWQ's (duo scaling, 20 ratios, clip shrink
/// ≤ 50 % in 20ths, 512 clip tokens) plus the identity fallback; [`AwqConfig::llm_awq`] the
/// original x-only scaling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AwqConfig {
    /// Number of ratios `r = i / n_grid`, `i = 0 … n_grid − 1` (20).
    pub n_grid: usize,
    /// `s = x̄^r / (w̄^(1−r) + 1e-4)` (AutoAWQ's default) instead of `s = x̄^r` (llm-awq).
    pub duo_scaling: bool,
    /// Return `s = 1` when the unscaled loss is strictly below every grid loss (not in the
    /// reference; only matters with `duo_scaling`).
    pub identity_fallback: bool,
    /// Largest relative shrink of a group's `max |w|` in the clip search (0.5).
    pub max_shrink: f64,
    /// Shrink steps are `i / clip_grid` (20).
    pub clip_grid: usize,
    /// Tokens kept in the clip search: every `max(1, ⌊tokens / clip_tokens⌋)`-th row, starting
    /// at row 0 (AutoAWQ's `n_sample_token = 512`; up to `2·clip_tokens − 1` rows can remain).
    /// 0 keeps every row.
    pub clip_tokens: usize,
}

impl Default for AwqConfig {
    fn default() -> Self {
        Self {
            n_grid: 20,
            duo_scaling: true,
            identity_fallback: true,
            max_shrink: 0.5,
            clip_grid: 20,
            clip_tokens: 512,
        }
    }
}

impl AwqConfig {
    /// llm-awq's settings: activation-only scales `s = x̄^r`.
    pub fn llm_awq() -> Self {
        Self {
            duo_scaling: false,
            ..Self::default()
        }
    }

    /// The grid ratios `i / n_grid`, `i = 0 … n_grid − 1`.
    pub fn ratios(&self) -> Vec<f64> {
        (0..self.n_grid)
            .map(|i| i as f64 / self.n_grid as f64)
            .collect()
    }

    /// Number of clip thresholds tried, `⌊max_shrink · clip_grid⌋` (at least 1: no clipping).
    pub fn clip_steps(&self) -> usize {
        ((self.max_shrink * self.clip_grid as f64) as usize).max(1)
    }

    pub(super) fn validate(&self) -> Result<(), CoreError> {
        if self.n_grid == 0 {
            return Err(CoreError::Config("AWQ n_grid must be at least 1".into()));
        }
        if self.clip_grid == 0 {
            return Err(CoreError::Config("AWQ clip_grid must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.max_shrink) {
            return Err(CoreError::Config(format!(
                "AWQ max_shrink must be in [0, 1), got {}",
                self.max_shrink
            )));
        }
        Ok(())
    }
}
