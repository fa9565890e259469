//! T5's configuration ([`T5Config`], read from `config.json`) and its relative position
//! buckets ([`relative_position_bucket`]).

use crate::config::{Activation, ConfigObject};
use crate::error::Result;

/// The `config.json` fields of `T5Config` that affect inference (transformers defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct T5Config {
    /// `vocab_size` (32128).
    pub vocab_size: usize,
    /// `d_model` (512).
    pub d_model: usize,
    /// `d_kv` (64).
    pub d_kv: usize,
    /// `d_ff` (2048).
    pub d_ff: usize,
    /// `num_layers` (6): encoder blocks.
    pub num_layers: usize,
    /// `num_decoder_layers` (= `num_layers`).
    pub num_decoder_layers: usize,
    /// `num_heads` (8).
    pub num_heads: usize,
    /// `relative_attention_num_buckets` (32).
    pub relative_attention_num_buckets: usize,
    /// `relative_attention_max_distance` (128).
    pub relative_attention_max_distance: usize,
    /// `layer_norm_epsilon` (1e-6).
    pub layer_norm_epsilon: f64,
    /// Activation of `feed_forward_proj` ("relu"; "gated-gelu" → gelu_new).
    pub dense_act: Activation,
    /// Whether `feed_forward_proj` is gated (`wi_0`, `wi_1`).
    pub gated: bool,
    /// `tie_word_embeddings` (true). Only what the config says: the model uses the
    /// checkpoint's `lm_head.weight` whenever it has one (as transformers 5 does) and `shared`
    /// otherwise.
    pub tie_word_embeddings: bool,
    /// Whether the decoder output is scaled by `d_model^-0.5` before `lm_head` (original T5;
    /// not T5 v1.1 / FLAN-T5): `scale_decoder_outputs` (transformers 5), else
    /// `tie_word_embeddings` not `false` (transformers 4's rule).
    pub scale_decoder_outputs: bool,
    /// `decoder_start_token_id` (= `pad_token_id`, 0).
    pub decoder_start_token_id: u32,
    /// `eos_token_id` (1).
    pub eos_token_id: u32,
    /// `pad_token_id` (0).
    pub pad_token_id: u32,
}

impl T5Config {
    /// Reads the fields from a parsed config, rejecting options this crate does not implement.
    pub fn from_config(c: &ConfigObject) -> Result<Self> {
        let ffp = c.str_or("feed_forward_proj", "relu")?;
        let parts: Vec<&str> = ffp.split('-').collect();
        let gated = parts[0] == "gated";
        if (parts.len() > 1 && !gated) || parts.len() > 2 {
            return Err(c.unsupported(
                "feed_forward_proj",
                &ffp,
                "expected `{ACT}` or `gated-{ACT}`, e.g. \"relu\" or \"gated-gelu\"",
            ));
        }
        let act_name = if ffp == "gated-gelu" {
            "gelu_new"
        } else {
            parts[parts.len() - 1]
        };
        let dense_act = Activation::from_hf_name(act_name).ok_or_else(|| {
            c.unsupported(
                "feed_forward_proj",
                &ffp,
                "activation not implemented (supported: relu, gelu, gelu_new, silu, ...)",
            )
        })?;
        if !c.bool_or("is_encoder_decoder", true)? {
            return Err(c.unsupported(
                "is_encoder_decoder",
                false,
                "only the encoder-decoder T5ForConditionalGeneration is implemented",
            ));
        }
        let num_layers = c.positive("num_layers", c.usize_or("num_layers", 6)?)?;
        let pad = c.usize_or("pad_token_id", 0)? as u32;
        let cfg = Self {
            vocab_size: c.positive("vocab_size", c.usize_or("vocab_size", 32128)?)?,
            d_model: c.positive("d_model", c.usize_or("d_model", 512)?)?,
            d_kv: c.positive("d_kv", c.usize_or("d_kv", 64)?)?,
            d_ff: c.positive("d_ff", c.usize_or("d_ff", 2048)?)?,
            num_layers,
            num_decoder_layers: c.positive(
                "num_decoder_layers",
                c.usize_or("num_decoder_layers", num_layers)?,
            )?,
            num_heads: c.positive("num_heads", c.usize_or("num_heads", 8)?)?,
            relative_attention_num_buckets: c.usize_or("relative_attention_num_buckets", 32)?,
            relative_attention_max_distance: c.usize_or("relative_attention_max_distance", 128)?,
            layer_norm_epsilon: c.f64_or("layer_norm_epsilon", 1e-6)?,
            dense_act,
            gated,
            tie_word_embeddings: c.bool_or("tie_word_embeddings", true)?,
            scale_decoder_outputs: match c.raw("scale_decoder_outputs") {
                Some(_) => c.bool_or("scale_decoder_outputs", true)?,
                None => c.bool_or("tie_word_embeddings", true)?,
            },
            decoder_start_token_id: c
                .usize_opt("decoder_start_token_id")?
                .map(|x| x as u32)
                .unwrap_or(pad),
            eos_token_id: c.usize_or("eos_token_id", 1)? as u32,
            pad_token_id: pad,
        };
        if cfg.relative_attention_num_buckets < 4 {
            return Err(c.err("relative_attention_num_buckets", "must be >= 4"));
        }
        if cfg.relative_attention_max_distance <= cfg.relative_attention_num_buckets / 2 {
            return Err(c.err(
                "relative_attention_max_distance",
                format!(
                    "{} must exceed `relative_attention_num_buckets` / 2 = {}",
                    cfg.relative_attention_max_distance,
                    cfg.relative_attention_num_buckets / 2
                ),
            ));
        }
        Ok(cfg)
    }
}

/// transformers' `T5Attention._relative_position_bucket` for one offset
/// `relative_position = key_position - query_position`.
pub fn relative_position_bucket(
    relative_position: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> u32 {
    let mut num_buckets = num_buckets as i64;
    let mut bucket = 0i64;
    let n = if bidirectional {
        num_buckets /= 2;
        if relative_position > 0 {
            bucket += num_buckets;
        }
        relative_position.abs()
    } else {
        (-relative_position).max(0)
    };
    let max_exact = num_buckets / 2;
    if n < max_exact {
        bucket += n;
    } else {
        let ratio = ((n as f32 / max_exact as f32).ln()
            / (max_distance as f32 / max_exact as f32).ln())
            * (num_buckets - max_exact) as f32;
        bucket += (max_exact + ratio as i64).min(num_buckets - 1);
    }
    bucket as u32
}
