//! Llama (1/2/3.x) decoder-only LMs: pre-RMSNorm blocks with rotary position embeddings,
//! grouped-query attention and a SwiGLU MLP. Supports Llama-3.x `rope_scaling` (`llama3`) and
//! linear RoPE scaling, `attention_bias`/`mlp_bias`, and tied embeddings.

use crate::attention::{attend, merge_heads, split_heads};
use crate::bert::{check_ids, ids_u32};
use crate::config::{Activation, ConfigObject};
use crate::error::{Error, Result};
use crate::linear::{Capturer, Linears};
use crate::model::{
    check_block, token_rows, Batch, BlockModel, CaptureFn, Extra, Family, LinearSpec, Ran, State,
};
use crate::norm::Norms;
use crate::scaling::{AwqLayout, ScaleFold, ScalingGroup, SubBlock};
use crate::weights::WeightStore;
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, RmsNorm};
use std::path::Path;

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

/// Llama-specific part of a block state.
#[derive(Debug, Clone)]
pub(crate) struct LlamaExtra {
    /// Additive causal + key-padding bias `[b, 1, s, s]`.
    bias: Tensor,
    /// RoPE tables `[s, head_dim / 2]`.
    cos: Tensor,
    sin: Tensor,
}

#[derive(Debug, Clone)]
struct LlamaLayer {
    input_norm: String,
    q: String,
    k: String,
    v: String,
    o: String,
    post_norm: String,
    gate: String,
    up: String,
    down: String,
}

/// A Llama causal LM split into blocks.
#[derive(Debug, Clone)]
pub struct LlamaModel {
    cfg: LlamaConfig,
    embed_tokens: Embedding,
    layers: Vec<LlamaLayer>,
    norm: RmsNorm,
    lm_head: candle_nn::Linear,
    linears: Linears,
    norms: Norms,
    inv_freq: Tensor,
}

impl LlamaModel {
    /// Loads `config.json` and the safetensors checkpoint from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let c = ConfigObject::read(&dir.join("config.json"))?;
        let ws = WeightStore::open_dir(dir)?;
        Self::from_parts(&c, &ws)
    }

    /// Builds the model from a parsed config and an open checkpoint.
    pub fn from_parts(c: &ConfigObject, ws: &WeightStore) -> Result<Self> {
        let cfg = LlamaConfig::from_config(c)?;
        let h = cfg.hidden_size;
        let rms = |n: &str| -> Result<RmsNorm> {
            Ok(RmsNorm::new(
                ws.get(&format!("{n}.weight"), &[h])?,
                cfg.rms_norm_eps,
            ))
        };
        let emb = ws.get("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let lm_head = if cfg.tie_word_embeddings {
            candle_nn::Linear::new(emb.clone(), None)
        } else {
            candle_nn::Linear::new(ws.get("lm_head.weight", &[cfg.vocab_size, h])?, None)
        };
        let q_dim = cfg.num_attention_heads * cfg.head_dim;
        let kv_dim = cfg.num_key_value_heads * cfg.head_dim;
        let mut linears = Linears::default();
        let mut norms = Norms::default();
        let eps = cfg.rms_norm_eps;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let n = |s: &str| format!("{p}.{s}");
            let l = LlamaLayer {
                input_norm: norms.load_rms_norm(ws, &n("input_layernorm"), h, eps)?,
                q: n("self_attn.q_proj"),
                k: n("self_attn.k_proj"),
                v: n("self_attn.v_proj"),
                o: n("self_attn.o_proj"),
                post_norm: norms.load_rms_norm(ws, &n("post_attention_layernorm"), h, eps)?,
                gate: n("mlp.gate_proj"),
                up: n("mlp.up_proj"),
                down: n("mlp.down_proj"),
            };
            let ab = cfg.attention_bias;
            linears.load(ws, &l.q, h, q_dim, ab)?;
            linears.load(ws, &l.k, h, kv_dim, ab)?;
            linears.load(ws, &l.v, h, kv_dim, ab)?;
            linears.load(ws, &l.o, q_dim, h, ab)?;
            linears.load(ws, &l.gate, h, cfg.intermediate_size, cfg.mlp_bias)?;
            linears.load(ws, &l.up, h, cfg.intermediate_size, cfg.mlp_bias)?;
            linears.load(ws, &l.down, cfg.intermediate_size, h, cfg.mlp_bias)?;
            layers.push(l);
        }
        let inv_freq = Tensor::new(cfg.inv_freq(), &Device::Cpu)?;
        Ok(Self {
            embed_tokens: Embedding::new(emb, h),
            norm: rms("model.norm")?,
            cfg,
            layers,
            lm_head,
            linears,
            norms,
            inv_freq,
        })
    }

    /// The parsed configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Mean next-token negative log-likelihood and the number of predicted tokens of a batch
    /// (targets are positions `1..` whose mask is 1).
    pub fn nll(&self, batch: &Batch) -> Result<(f64, usize)> {
        let logits = self.forward(batch)?;
        let ids = ids_u32(
            batch
                .input_ids
                .as_ref()
                .ok_or_else(|| Error::input("Llama needs `input_ids`"))?,
            "input_ids",
        )?;
        let (b, s) = ids.dims2()?;
        if s < 2 {
            return Err(Error::input(
                "perplexity needs sequences of at least 2 tokens",
            ));
        }
        let mask = match &batch.attention_mask {
            Some(m) => m.to_dtype(DType::F32)?,
            None => Tensor::ones((b, s), DType::F32, &Device::Cpu)?,
        };
        let lp = candle_nn::ops::log_softmax(&logits.narrow(1, 0, s - 1)?, D::Minus1)?;
        let targets = ids.narrow(1, 1, s - 1)?.contiguous()?.unsqueeze(2)?;
        let tok_lp = lp.gather(&targets, 2)?.squeeze(2)?;
        let m = (mask.narrow(1, 1, s - 1)? * mask.narrow(1, 0, s - 1)?)?;
        let count = m.sum_all()?.to_scalar::<f32>()? as usize;
        if count == 0 {
            return Err(Error::input("no predicted tokens in the batch"));
        }
        let total = (tok_lp * m)?.sum_all()?.to_scalar::<f32>()? as f64;
        Ok((-total / count as f64, count))
    }

    /// Perplexity exp(mean NLL) over token id sequences (each of length ≥ 2).
    pub fn perplexity(&self, seqs: &[Vec<u32>]) -> Result<f64> {
        let batch = Batch::from_token_ids(seqs, 0)?;
        Ok(self.nll(&batch)?.0.exp())
    }

    /// The pre-RMSNorm block, stopping after `stop` when given.
    fn run_block(
        &self,
        block: usize,
        state: &State,
        capture: Option<&mut CaptureFn<'_>>,
        stop: Option<SubBlock>,
    ) -> Result<Ran> {
        check_block(block, self.layers.len())?;
        let Extra::Llama(ex) = &state.extra else {
            return Err(Error::input("state was not produced by a Llama model"));
        };
        let l = &self.layers[block];
        let mut cap = Capturer::new(capture);
        let rows = state.rows.as_ref();
        let lin = |n: &str, t: &Tensor, cap: &mut Capturer| self.linears.forward(n, t, rows, cap);
        let x = &state.hidden;
        let hn = self.norms.forward(&l.input_norm, x)?;
        let q = split_heads(&lin(&l.q, &hn, &mut cap)?, self.cfg.num_attention_heads)?;
        let k = split_heads(&lin(&l.k, &hn, &mut cap)?, self.cfg.num_key_value_heads)?;
        let v = split_heads(&lin(&l.v, &hn, &mut cap)?, self.cfg.num_key_value_heads)?;
        let q = candle_nn::rotary_emb::rope(&q, &ex.cos, &ex.sin)?;
        let k = candle_nn::rotary_emb::rope(&k, &ex.cos, &ex.sin)?;
        let scale = 1.0 / (self.cfg.head_dim as f64).sqrt();
        let ctx = merge_heads(&attend(&q, &k, &v, scale, Some(&ex.bias))?)?;
        let a = lin(&l.o, &ctx, &mut cap)?;
        if stop == Some(SubBlock::SelfAttention) {
            return Ok(Ran::Sub(token_rows(&a, rows)?));
        }
        let x = (a + x)?;
        let hn = self.norms.forward(&l.post_norm, &x)?;
        let g = self.cfg.hidden_act.forward(&lin(&l.gate, &hn, &mut cap)?)?;
        let u = lin(&l.up, &hn, &mut cap)?;
        let m = lin(&l.down, &(g * u)?, &mut cap)?;
        if stop == Some(SubBlock::Mlp) {
            return Ok(Ran::Sub(token_rows(&m, rows)?));
        }
        Ok(Ran::Block(State {
            hidden: (m + x)?,
            ..state.clone()
        }))
    }
}

impl BlockModel for LlamaModel {
    fn family(&self) -> Family {
        Family::Llama
    }

    fn num_blocks(&self) -> usize {
        self.layers.len()
    }

    fn block_groups(&self, block: usize) -> Result<Vec<Vec<LinearSpec>>> {
        check_block(block, self.layers.len())?;
        let l = &self.layers[block];
        Ok(vec![
            self.linears
                .group(&[l.q.clone(), l.k.clone(), l.v.clone()])?,
            self.linears.group(std::slice::from_ref(&l.o))?,
            self.linears.group(&[l.gate.clone(), l.up.clone()])?,
            self.linears.group(std::slice::from_ref(&l.down))?,
        ])
    }

    fn embed(&self, batch: &Batch) -> Result<State> {
        let ids = batch
            .input_ids
            .as_ref()
            .ok_or_else(|| Error::input("Llama needs `input_ids`"))?;
        let ids = ids_u32(ids, "input_ids")?;
        check_ids(&ids, self.cfg.vocab_size, "input_ids")?;
        let (b, s) = ids.dims2()?;
        let x = self.embed_tokens.forward(&ids)?;
        let mut state = State::new(x, batch.attention_mask.as_ref(), Extra::None)?;
        let dev = Device::Cpu;
        // allowed[b, i, j] = j <= i && mask[b, j]
        let causal: Vec<u8> = (0..s)
            .flat_map(|i| (0..s).map(move |j| u8::from(j <= i)))
            .collect();
        let causal = Tensor::from_vec(causal, (1, s, s), &dev)?;
        let keys = state.mask.to_dtype(DType::U8)?.reshape((b, 1, s))?;
        let allowed = causal.broadcast_mul(&keys)?;
        let zero = Tensor::zeros((b, s, s), DType::F32, &dev)?;
        let min = Tensor::full(f32::MIN, (b, s, s), &dev)?;
        let bias = allowed.where_cond(&zero, &min)?.unsqueeze(1)?;
        let pos = Tensor::arange(0u32, s as u32, &dev)?.to_dtype(DType::F32)?;
        let freqs = pos.unsqueeze(1)?.matmul(&self.inv_freq.unsqueeze(0)?)?;
        state.extra = Extra::Llama(LlamaExtra {
            bias,
            cos: freqs.cos()?,
            sin: freqs.sin()?,
        });
        Ok(state)
    }

    fn block_forward(
        &self,
        block: usize,
        state: &State,
        capture: Option<&mut CaptureFn<'_>>,
    ) -> Result<State> {
        self.run_block(block, state, capture, None)?.into_state()
    }

    fn head(&self, state: &State) -> Result<Tensor> {
        Ok(self.lm_head.forward(&self.norm.forward(&state.hidden)?)?)
    }

    fn set_linear_weight(&mut self, name: &str, weight: Tensor) -> Result<()> {
        self.linears.set_weight(name, weight)
    }

    fn linear_weight(&self, name: &str) -> Result<Tensor> {
        self.linears.weight(name)
    }

    /// Pre-RMSNorm: both norms fold; up → down folds (`act(gate)·up` is linear in up);
    /// v → o folds only without GQA (otherwise one V channel feeds several o columns).
    fn awq_layout(&self, block: usize) -> Result<AwqLayout> {
        check_block(block, self.layers.len())?;
        let l = &self.layers[block];
        let c = &self.cfg;
        let o = if c.num_key_value_heads == c.num_attention_heads {
            ScalingGroup::folded(&[&l.o], ScaleFold::linear(&l.v, c.attention_bias), None)
        } else {
            ScalingGroup::unscaled(&[&l.o], None)
        };
        Ok(AwqLayout {
            groups: vec![
                ScalingGroup::folded(
                    &[&l.q, &l.k, &l.v],
                    ScaleFold::norm(&l.input_norm, false),
                    Some(SubBlock::SelfAttention),
                ),
                o,
                ScalingGroup::folded(
                    &[&l.gate, &l.up],
                    ScaleFold::norm(&l.post_norm, false),
                    Some(SubBlock::Mlp),
                ),
                ScalingGroup::folded(&[&l.down], ScaleFold::linear(&l.up, c.mlp_bias), None),
            ],
            skip_clip: vec![l.q.clone(), l.k.clone()],
        })
    }

    fn sub_block_output(&self, block: usize, state: &State, sub: SubBlock) -> Result<Tensor> {
        self.run_block(block, state, None, Some(sub))?.into_sub(sub)
    }

    fn tensor(&self, name: &str) -> Result<Tensor> {
        crate::norm::get_tensor(&self.norms, &self.linears, name)
    }

    fn set_tensor(&mut self, name: &str, value: Tensor) -> Result<()> {
        crate::norm::set_tensor(&mut self.norms, &mut self.linears, name, value)
    }
}
