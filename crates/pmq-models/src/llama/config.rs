//! Llama's configuration ([`LlamaConfig`], read from `config.json`), its RoPE scaling
//! ([`RopeScaling`]) and the inverse RoPE frequencies they give.

use crate::config::{Activation, ConfigObject};
use crate::error::Result;

/// RoPE frequency scaling (`rope_scaling`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// No scaling (`null` or `rope_type: "default"`).
    None,
    /// `rope_type: "linear"`: every inverse frequency divided by `factor`.
    Linear {
        /// `rope_scaling.factor`.
        factor: f64,
    },
    /// `rope_type: "llama3"` (Llama-3.1/3.2/3.3).
    Llama3 {
        /// `rope_scaling.factor`.
        factor: f64,
        /// `rope_scaling.low_freq_factor`.
        low_freq_factor: f64,
        /// `rope_scaling.high_freq_factor`.
        high_freq_factor: f64,
        /// `rope_scaling.original_max_position_embeddings`.
        original_max_position_embeddings: usize,
    },
}

/// The `config.json` fields of `LlamaConfig` that affect inference (transformers defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// `vocab_size` (32000).
    pub vocab_size: usize,
    /// `hidden_size` (4096).
    pub hidden_size: usize,
    /// `intermediate_size` (11008).
    pub intermediate_size: usize,
    /// `num_hidden_layers` (32).
    pub num_hidden_layers: usize,
    /// `num_attention_heads` (32).
    pub num_attention_heads: usize,
    /// `num_key_value_heads` (= `num_attention_heads`).
    pub num_key_value_heads: usize,
    /// `head_dim` (`hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// `hidden_act` ("silu").
    pub hidden_act: Activation,
    /// `rms_norm_eps` (1e-6).
    pub rms_norm_eps: f64,
    /// `rope_theta` (10000).
    pub rope_theta: f64,
    /// `rope_scaling` (null).
    pub rope_scaling: RopeScaling,
    /// `attention_bias` (false).
    pub attention_bias: bool,
    /// `mlp_bias` (false).
    pub mlp_bias: bool,
    /// `tie_word_embeddings` (false).
    pub tie_word_embeddings: bool,
}

impl LlamaConfig {
    /// Reads the fields from a parsed config, rejecting options this crate does not implement.
    pub fn from_config(c: &ConfigObject) -> Result<Self> {
        let hidden_size = c.positive("hidden_size", c.usize_or("hidden_size", 4096)?)?;
        let heads = c.positive(
            "num_attention_heads",
            c.usize_or("num_attention_heads", 32)?,
        )?;
        let kv = c.positive(
            "num_key_value_heads",
            c.usize_or("num_key_value_heads", heads)?,
        )?;
        c.divisible("num_attention_heads", heads, "num_key_value_heads", kv)?;
        let head_dim = match c.usize_opt("head_dim")? {
            Some(d) => c.positive("head_dim", d)?,
            None => {
                c.divisible("hidden_size", hidden_size, "num_attention_heads", heads)?;
                hidden_size / heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(c.err("head_dim", format!("{head_dim} must be even for RoPE")));
        }
        if let Some(p) = c.f64_opt("partial_rotary_factor")? {
            if p != 1.0 {
                return Err(c.unsupported(
                    "partial_rotary_factor",
                    p,
                    "only full rotary embeddings (1.0) are implemented",
                ));
            }
        }
        let rope_scaling = match c.object("rope_scaling")? {
            None => RopeScaling::None,
            Some(rs) => {
                let kind = match rs.str_opt("rope_type")? {
                    Some(t) => t,
                    None => rs.str_or("type", "default")?,
                };
                match kind.as_str() {
                    "default" => RopeScaling::None,
                    "linear" => RopeScaling::Linear {
                        factor: rs
                            .f64_opt("factor")?
                            .ok_or_else(|| rs.err("factor", "required for linear scaling"))?,
                    },
                    "llama3" => {
                        let req = |f: &str| -> Result<f64> {
                            rs.f64_opt(f)?
                                .ok_or_else(|| rs.err(f, "required for llama3 rope scaling"))
                        };
                        let low = req("low_freq_factor")?;
                        let high = req("high_freq_factor")?;
                        if high <= low {
                            return Err(rs.err(
                                "high_freq_factor",
                                format!("{high} must exceed low_freq_factor = {low}"),
                            ));
                        }
                        RopeScaling::Llama3 {
                            factor: req("factor")?,
                            low_freq_factor: low,
                            high_freq_factor: high,
                            original_max_position_embeddings: rs
                                .usize_opt("original_max_position_embeddings")?
                                .ok_or_else(|| {
                                    rs.err(
                                        "original_max_position_embeddings",
                                        "required for llama3 rope scaling",
                                    )
                                })?,
                        }
                    }
                    other => {
                        return Err(rs.unsupported(
                            "rope_type",
                            other,
                            "supported: default, linear, llama3",
                        ))
                    }
                }
            }
        };
        Ok(Self {
            vocab_size: c.positive("vocab_size", c.usize_or("vocab_size", 32000)?)?,
            hidden_size,
            intermediate_size: c.usize_or("intermediate_size", 11008)?,
            num_hidden_layers: c
                .positive("num_hidden_layers", c.usize_or("num_hidden_layers", 32)?)?,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            head_dim,
            hidden_act: c.activation_or("hidden_act", "silu")?,
            rms_norm_eps: c.f64_or("rms_norm_eps", 1e-6)?,
            rope_theta: c.f64_or("rope_theta", 10000.0)?,
            rope_scaling,
            attention_bias: c.bool_or("attention_bias", false)?,
            mlp_bias: c.bool_or("mlp_bias", false)?,
            tie_word_embeddings: c.bool_or("tie_word_embeddings", false)?,
        })
    }

    /// RoPE inverse frequencies (length `head_dim / 2`) after `rope_scaling`, following
    /// transformers' `_compute_default_rope_parameters` / `_compute_llama3_parameters`.
    pub fn inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        let base: Vec<f64> = (0..d)
            .step_by(2)
            .map(|i| 1.0 / self.rope_theta.powf(i as f64 / d as f64))
            .collect();
        let scaled: Vec<f64> = match self.rope_scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.into_iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old = original_max_position_embeddings as f64;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.into_iter()
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
        };
        scaled.into_iter().map(|f| f as f32).collect()
    }
}
