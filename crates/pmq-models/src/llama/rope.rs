//! Rotary position embeddings as transformers computes them (`modeling_rope_utils.py`), from
//! the config keys of transformers 4 (`rope_theta`, `rope_scaling`) and 5 (`rope_parameters`).
//!
//! With `θ` = `rope_theta`, `d` = `head_dim` and `i = 0, 2, …, d − 2`, the default inverse
//! frequencies are `f_i = θ^(−i/d)`; position `p` rotates pair `i` by `p·f_i`, and `cos`/`sin`
//! are multiplied by the type's attention factor `m`. The types:
//!
//! - `default`: `f_i`, `m = 1`.
//! - `linear`: `f_i / factor`.
//! - `dynamic` (NTK): for a batch of `L > max_position_embeddings = M` positions,
//!   `θ' = θ·(factor·L/M − (factor − 1))^(d/(d−2))`; unchanged for `L ≤ M`.
//! - `llama3`: wavelengths `λ = 2π/f_i` above `old/low_freq_factor` divided by `factor`, below
//!   `old/high_freq_factor` kept, in between `(1 − s)·f/factor + s·f` with
//!   `s = (old/λ − low)/(high − low)`.
//! - `yarn`: `f = f_interp·(1 − r) + f_i·r`, `f_interp = f_i/factor`, `r = 1 − ramp(j)` over the
//!   correction range of `beta_fast`/`beta_slow` rotations within `original_max_position_embeddings`;
//!   `m = 0.1·ln(factor) + 1` (or `attention_factor`, or the `mscale` ratio).
//! - `longrope`: `f_i / ext_j` with `ext` = `long_factor` when the batch has more positions than
//!   `original_max_position_embeddings`, else `short_factor`;
//!   `m = sqrt(1 + ln(factor)/ln(original))` for `factor > 1`.
//!
//! Unknown types and unknown keys are errors naming the key. Where transformers keeps state
//! across calls (`dynamic` caches the longest sequence seen so far), pmq computes each batch
//! from its own length, which equals transformers on a fresh model.

use crate::config::ConfigObject;
use crate::error::Result;

/// The RoPE type and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// No scaling (`null` or `rope_type: "default"`).
    None,
    /// `rope_type: "linear"`: every inverse frequency divided by `factor`.
    Linear {
        /// The `factor` parameter.
        factor: f64,
    },
    /// `rope_type: "dynamic"`: NTK-aware base growth beyond `max_position_embeddings`.
    Dynamic {
        /// The `factor` parameter.
        factor: f64,
        /// `max_position_embeddings` of the config.
        max_position_embeddings: usize,
    },
    /// `rope_type: "llama3"` (Llama-3.1/3.2/3.3).
    Llama3 {
        /// The `factor` parameter.
        factor: f64,
        /// `low_freq_factor`.
        low_freq_factor: f64,
        /// `high_freq_factor`.
        high_freq_factor: f64,
        /// The pretraining context (`original_max_position_embeddings`).
        original_max_position_embeddings: usize,
    },
    /// `rope_type: "yarn"`.
    Yarn {
        /// The `factor` parameter.
        factor: f64,
        /// The pretraining context (`original_max_position_embeddings`).
        original_max_position_embeddings: usize,
        /// `beta_fast` (32).
        beta_fast: f64,
        /// `beta_slow` (1).
        beta_slow: f64,
        /// `truncate` (true): round the correction range outward.
        truncate: bool,
        /// The factor of `cos`/`sin` (`attention_factor`, or derived from `factor`).
        attention_factor: f64,
    },
    /// `rope_type: "longrope"` (Phi-3 style).
    LongRope {
        /// `short_factor`, one per frequency.
        short_factor: Vec<f64>,
        /// `long_factor`, one per frequency.
        long_factor: Vec<f64>,
        /// The pretraining context (`original_max_position_embeddings`).
        original_max_position_embeddings: usize,
        /// The factor of `cos`/`sin` (`attention_factor`, or derived from `factor`).
        attention_factor: f64,
    },
}

/// Llama's RoPE: base, type, and the head dimension it rotates.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    /// `rope_theta`.
    pub theta: f64,
    /// The type and its parameters.
    pub scaling: RopeScaling,
    /// `head_dim`.
    pub dim: usize,
}

const COMMON: &[&str] = &["rope_type", "type", "rope_theta", "partial_rotary_factor"];

impl Rope {
    /// Reads the RoPE of a Llama config: `rope_parameters` (transformers 5) when present, else
    /// `rope_theta` + `rope_scaling` (transformers 4).
    pub fn from_config(
        c: &ConfigObject,
        dim: usize,
        max_position_embeddings: usize,
    ) -> Result<Self> {
        let params = match c.object("rope_parameters")? {
            Some(p) => Some(p),
            None => c.object("rope_scaling")?,
        };
        // θ and the field it was read from (named in the error if it is invalid)
        let (theta, field) = match params
            .as_ref()
            .map(|p| {
                p.f64_opt("rope_theta")
                    .map(|t| t.map(|t| (t, p.field_name("rope_theta"))))
            })
            .transpose()?
            .flatten()
        {
            Some(t) => t,
            None => (c.f64_or("rope_theta", 10000.0)?, "rope_theta".to_string()),
        };
        if !(theta.is_finite() && theta > 1.0) {
            return Err(c.err(&field, format!("{theta} must be a number above 1")));
        }
        let Some(p) = params else {
            return Ok(Self {
                theta,
                scaling: RopeScaling::None,
                dim,
            });
        };
        if p.keys()
            .any(|k| matches!(p.raw(k), Some(serde_json::Value::Object(_))))
        {
            return Err(p.unsupported(
                "(keys)",
                p.keys().collect::<Vec<_>>().join(", "),
                "per-layer-type RoPE parameters are not implemented for Llama",
            ));
        }
        if let Some(f) = p.f64_opt("partial_rotary_factor")? {
            if f != 1.0 {
                return Err(p.unsupported(
                    "partial_rotary_factor",
                    f,
                    "only full rotary embeddings (1.0) are implemented",
                ));
            }
        }
        let kind = match p.str_opt("rope_type")? {
            Some(t) => t,
            None => p.str_or("type", "default")?,
        };
        let allowed: &[&str] = match kind.as_str() {
            "default" => &[],
            "linear" | "dynamic" => &["factor"],
            "llama3" => &[
                "factor",
                "low_freq_factor",
                "high_freq_factor",
                "original_max_position_embeddings",
            ],
            "yarn" => &[
                "factor",
                "attention_factor",
                "beta_fast",
                "beta_slow",
                "mscale",
                "mscale_all_dim",
                "original_max_position_embeddings",
                "truncate",
            ],
            "longrope" => &[
                "factor",
                "attention_factor",
                "short_factor",
                "long_factor",
                "original_max_position_embeddings",
            ],
            other => {
                return Err(p.unsupported(
                    if p.raw("rope_type").is_some() {
                        "rope_type"
                    } else {
                        "type"
                    },
                    other,
                    "supported: default, linear, dynamic, llama3, yarn, longrope",
                ))
            }
        };
        if let Some(k) = p
            .keys()
            .find(|k| !COMMON.contains(k) && !allowed.contains(k))
        {
            return Err(p.unsupported(
                k,
                p.raw(k).map(|v| v.to_string()).unwrap_or_default(),
                &format!(
                    "not a parameter of rope_type {kind:?} (known: {})",
                    allowed.join(", ")
                ),
            ));
        }
        let req = |f: &str| -> Result<f64> {
            p.f64_opt(f)?
                .ok_or_else(|| p.err(f, format!("required for {kind} RoPE")))
        };
        let positive = |f: &str, v: f64| -> Result<f64> {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(p.err(f, format!("{v} must be a positive number")))
            }
        };
        // transformers: a top-level `original_max_position_embeddings` wins (Phi-3), then the
        // RoPE parameters', then `max_position_embeddings`
        let original = || -> Result<usize> {
            let v = match c.usize_opt("original_max_position_embeddings")? {
                Some(v) => v,
                None => p
                    .usize_opt("original_max_position_embeddings")?
                    .unwrap_or(max_position_embeddings),
            };
            if v == 0 {
                return Err(p.err("original_max_position_embeddings", "must be positive"));
            }
            Ok(v)
        };
        let scaling = match kind.as_str() {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: positive("factor", req("factor")?)?,
            },
            "dynamic" => RopeScaling::Dynamic {
                factor: positive("factor", req("factor")?)?,
                max_position_embeddings,
            },
            "llama3" => {
                let low = positive("low_freq_factor", req("low_freq_factor")?)?;
                let high = positive("high_freq_factor", req("high_freq_factor")?)?;
                if high <= low {
                    return Err(p.err(
                        "high_freq_factor",
                        format!("{high} must exceed low_freq_factor = {low}"),
                    ));
                }
                if p.raw("original_max_position_embeddings").is_none()
                    && c.raw("original_max_position_embeddings").is_none()
                {
                    return Err(p.err(
                        "original_max_position_embeddings",
                        "required for llama3 RoPE",
                    ));
                }
                RopeScaling::Llama3 {
                    factor: positive("factor", req("factor")?)?,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max_position_embeddings: original()?,
                }
            }
            "yarn" => {
                let orig = original()?;
                let factor = match p.f64_opt("factor")? {
                    Some(f) => positive("factor", f)?,
                    None => max_position_embeddings as f64 / orig as f64,
                };
                let mscale = |scale: f64, m: f64| {
                    if scale <= 1.0 {
                        1.0
                    } else {
                        0.1 * m * scale.ln() + 1.0
                    }
                };
                let attention_factor = match p.f64_opt("attention_factor")? {
                    Some(a) => positive("attention_factor", a)?,
                    None => match (p.f64_opt("mscale")?, p.f64_opt("mscale_all_dim")?) {
                        (Some(m), Some(a)) if m != 0.0 && a != 0.0 => {
                            mscale(factor, m) / mscale(factor, a)
                        }
                        _ => mscale(factor, 1.0),
                    },
                };
                let beta = |f: &str, d: f64| -> Result<f64> {
                    // transformers: `get(f) or default` (0 counts as absent)
                    Ok(match p.f64_opt(f)? {
                        Some(v) if v != 0.0 => v,
                        _ => d,
                    })
                };
                RopeScaling::Yarn {
                    factor,
                    original_max_position_embeddings: orig,
                    beta_fast: beta("beta_fast", 32.0)?,
                    beta_slow: beta("beta_slow", 1.0)?,
                    truncate: p.bool_or("truncate", true)?,
                    attention_factor,
                }
            }
            "longrope" => {
                let orig = original()?;
                let list = |f: &str| -> Result<Vec<f64>> {
                    let v = p
                        .f64_list_opt(f)?
                        .ok_or_else(|| p.err(f, "required for longrope RoPE"))?;
                    if v.len() != dim / 2 {
                        return Err(p.err(
                            f,
                            format!(
                                "has {} entries, head_dim / 2 = {} expected",
                                v.len(),
                                dim / 2
                            ),
                        ));
                    }
                    if v.iter().any(|&x| x <= 0.0) {
                        return Err(p.err(f, "entries must be positive"));
                    }
                    Ok(v)
                };
                let factor = match p.f64_opt("factor")? {
                    Some(f) => positive("factor", f)?,
                    None => max_position_embeddings as f64 / orig as f64,
                };
                let attention_factor = match p.f64_opt("attention_factor")? {
                    Some(a) => positive("attention_factor", a)?,
                    None if factor <= 1.0 => 1.0,
                    None => (1.0 + factor.ln() / (orig as f64).ln()).sqrt(),
                };
                RopeScaling::LongRope {
                    short_factor: list("short_factor")?,
                    long_factor: list("long_factor")?,
                    original_max_position_embeddings: orig,
                    attention_factor,
                }
            }
            _ => unreachable!("checked above"),
        };
        Ok(Self {
            theta,
            scaling,
            dim,
        })
    }

    /// The factor `cos` and `sin` are multiplied by (1 except for YaRN and LongRoPE).
    pub fn attention_factor(&self) -> f64 {
        match self.scaling {
            RopeScaling::Yarn {
                attention_factor, ..
            }
            | RopeScaling::LongRope {
                attention_factor, ..
            } => attention_factor,
            _ => 1.0,
        }
    }

    /// The inverse frequencies (length `dim / 2`) for a batch of `positions` positions.
    pub fn inv_freq(&self, positions: usize) -> Vec<f32> {
        let d = self.dim as f64;
        let base_of = |theta: f64| -> Vec<f64> {
            (0..self.dim)
                .step_by(2)
                .map(|i| 1.0 / theta.powf(i as f64 / d))
                .collect()
        };
        let scaled: Vec<f64> = match &self.scaling {
            RopeScaling::None => base_of(self.theta),
            RopeScaling::Linear { factor } => base_of(self.theta)
                .into_iter()
                .map(|f| f / factor)
                .collect(),
            RopeScaling::Dynamic {
                factor,
                max_position_embeddings,
            } => {
                let m = *max_position_embeddings as f64;
                let l = (positions as f64).max(m);
                let theta = self.theta * (factor * l / m - (factor - 1.0)).powf(d / (d - 2.0));
                base_of(theta)
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old = *original_max_position_embeddings as f64;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base_of(self.theta)
                    .into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                truncate,
                ..
            } => {
                let orig = *original_max_position_embeddings as f64;
                let correction_dim = |rotations: f64| {
                    d * (orig / (rotations * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * self.theta.ln())
                };
                let (mut low, mut high) = (correction_dim(*beta_fast), correction_dim(*beta_slow));
                if *truncate {
                    low = low.floor();
                    high = high.ceil();
                }
                let low = low.max(0.0);
                let mut high = high.min(d - 1.0);
                if low == high {
                    high += 0.001;
                }
                base_of(self.theta)
                    .into_iter()
                    .enumerate()
                    .map(|(j, f)| {
                        let ramp = ((j as f64 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolation = 1.0 - ramp;
                        f / factor * (1.0 - extrapolation) + f * extrapolation
                    })
                    .collect()
            }
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                ..
            } => {
                let ext = if positions > *original_max_position_embeddings {
                    long_factor
                } else {
                    short_factor
                };
                base_of(self.theta)
                    .into_iter()
                    .zip(ext)
                    .map(|(f, e)| f / e)
                    .collect()
            }
        };
        scaled.into_iter().map(|f| f as f32).collect()
    }
}
