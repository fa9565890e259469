//! Llama's configuration ([`LlamaConfig`], read from `config.json`); its RoPE is
//! [`super::rope`].

use super::rope::Rope;
use crate::config::{Activation, ConfigObject};
use crate::error::Result;

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
    /// `max_position_embeddings` (2048).
    pub max_position_embeddings: usize,
    /// RoPE: `rope_parameters` (transformers 5) or `rope_theta` + `rope_scaling` (4).
    pub rope: Rope,
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
            Some(d) => {
                let d = c.positive("head_dim", d)?;
                if d % 2 != 0 {
                    return Err(c.err("head_dim", format!("{d} must be even for RoPE")));
                }
                d
            }
            None => {
                c.divisible("hidden_size", hidden_size, "num_attention_heads", heads)?;
                let d = hidden_size / heads;
                if d % 2 != 0 {
                    // no `head_dim` in the file: name the fields it comes from
                    return Err(c.err(
                        "hidden_size",
                        format!(
                            "{hidden_size} / `num_attention_heads` = {d} is the head dimension \
                             (no `head_dim` given), which must be even for RoPE"
                        ),
                    ));
                }
                d
            }
        };
        if let Some(p) = c.f64_opt("partial_rotary_factor")? {
            if p != 1.0 {
                return Err(c.unsupported(
                    "partial_rotary_factor",
                    p,
                    "only full rotary embeddings (1.0) are implemented",
                ));
            }
        }
        let max_position_embeddings = c.positive(
            "max_position_embeddings",
            c.usize_or("max_position_embeddings", 2048)?,
        )?;
        let rope = Rope::from_config(c, head_dim, max_position_embeddings)?;
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
            max_position_embeddings,
            rope,
            attention_bias: c.bool_or("attention_bias", false)?,
            mlp_bias: c.bool_or("mlp_bias", false)?,
            tie_word_embeddings: c.bool_or("tie_word_embeddings", false)?,
        })
    }
}
