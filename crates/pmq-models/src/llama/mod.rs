//! Llama (1/2/3.x) decoder-only LMs: pre-RMSNorm blocks with rotary position embeddings,
//! grouped-query attention and a SwiGLU MLP. Supports Llama-3.x `rope_scaling` (`llama3`) and
//! linear RoPE scaling, `attention_bias`/`mlp_bias`, and tied embeddings.

mod config;
mod rope;

pub use config::LlamaConfig;
pub use rope::{Rope, RopeScaling};

use crate::attention::{attend, merge_heads, split_heads};
use crate::batch::Batch;
use crate::capture::{CaptureFn, Capturer, OutputMemo, SharedInput};
use crate::config::ConfigObject;
use crate::error::{Error, Result};
use crate::ids::{check_ids, ids_u32};
use crate::linear::LinearSpec;
use crate::model::{BlockModel, Blocks, Family, ModelParts, Ran};
use crate::params::Params;
use crate::scaling::{AwqLayout, ScaleFold, ScalingGroup, SubBlock};
use crate::state::State;
use crate::tensors::token_rows;
use crate::weights::WeightStore;
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, RmsNorm};
use std::path::Path;

/// Llama's part of a block state.
#[derive(Debug)]
struct LlamaExtra {
    /// Additive causal + key-padding bias `[b, 1, s, s]`.
    bias: Tensor,
    /// RoPE tables `[s, head_dim / 2]`.
    cos: Tensor,
    sin: Tensor,
}

/// The HF names of one decoder layer's norms and linears.
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
    layers: Blocks<LlamaLayer>,
    norm: RmsNorm,
    lm_head: candle_nn::Linear,
    params: Params,
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
        let mut params = Params::default();
        let eps = cfg.rms_norm_eps;
        c.check_layer_count("num_hidden_layers", cfg.num_hidden_layers, ws, |i| {
            format!("model.layers.{i}.self_attn.q_proj.weight")
        })?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let n = |s: &str| format!("{p}.{s}");
            let norms = &mut params.norms;
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
            let linears = &mut params.linears;
            linears.load(ws, &l.q, h, q_dim, ab)?;
            linears.load(ws, &l.k, h, kv_dim, ab)?;
            linears.load(ws, &l.v, h, kv_dim, ab)?;
            linears.load(ws, &l.o, q_dim, h, ab)?;
            linears.load(ws, &l.gate, h, cfg.intermediate_size, cfg.mlp_bias)?;
            linears.load(ws, &l.up, h, cfg.intermediate_size, cfg.mlp_bias)?;
            linears.load(ws, &l.down, cfg.intermediate_size, h, cfg.mlp_bias)?;
            layers.push(l);
        }
        Ok(Self {
            embed_tokens: Embedding::new(emb, h),
            norm: rms("model.norm")?,
            cfg,
            layers: layers.into(),
            lm_head,
            params,
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
}

impl ModelParts for LlamaModel {
    fn params(&self) -> &Params {
        &self.params
    }

    fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }

    /// The pre-RMSNorm block, stopping after `stop` when given.
    fn run_block(
        &self,
        block: usize,
        state: &State,
        capture: Option<&mut CaptureFn<'_>>,
        memo: Option<&mut OutputMemo>,
        stop: Option<SubBlock>,
    ) -> Result<Ran> {
        let l = self.layers.get(block)?;
        let ex: &LlamaExtra = state.extra_for("Llama")?;
        let mut cap = Capturer::with_memo(capture, memo);
        let rows = state.rows.as_ref();
        let (p, c) = (&self.params, &self.cfg);
        let x = &state.hidden;
        // each linear's input is computed only when needed (see `Capturer::linear`)
        let hn = SharedInput::default();
        let hn = || hn.get(|| p.norm(&l.input_norm, x));
        let a = p.linear(&l.o, rows, &mut cap, |cap| {
            let q = p.linear(&l.q, rows, cap, |_| hn())?;
            let k = p.linear(&l.k, rows, cap, |_| hn())?;
            let v = p.linear(&l.v, rows, cap, |_| hn())?;
            let q = split_heads(&q, c.num_attention_heads)?;
            let k = split_heads(&k, c.num_key_value_heads)?;
            let v = split_heads(&v, c.num_key_value_heads)?;
            let q = candle_nn::rotary_emb::rope(&q, &ex.cos, &ex.sin)?;
            let k = candle_nn::rotary_emb::rope(&k, &ex.cos, &ex.sin)?;
            let scale = 1.0 / (c.head_dim as f64).sqrt();
            merge_heads(&attend(&q, &k, &v, scale, Some(&ex.bias))?)
        })?;
        if stop == Some(SubBlock::SelfAttention) {
            return Ok(Ran::Sub(token_rows(&a, rows)?));
        }
        let x = (a + x)?;
        let hn = SharedInput::default();
        let hn = || hn.get(|| p.norm(&l.post_norm, &x));
        let m = p.linear(&l.down, rows, &mut cap, |cap| {
            let g = p.linear_act(&l.gate, rows, c.hidden_act, cap, |_| hn())?;
            let u = p.linear(&l.up, rows, cap, |_| hn())?;
            Ok((g * u)?)
        })?;
        if stop == Some(SubBlock::Mlp) {
            return Ok(Ran::Sub(token_rows(&m, rows)?));
        }
        Ok(Ran::Block(state.with_hidden((m + x)?)))
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
        let l = self.layers.get(block)?;
        let p = &self.params;
        Ok(vec![
            p.group(&[&l.q, &l.k, &l.v])?,
            p.group(&[&l.o])?,
            p.group(&[&l.gate, &l.up])?,
            p.group(&[&l.down])?,
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
        State::new(x, batch.attention_mask.as_ref(), |mask| {
            let dev = Device::Cpu;
            // allowed[b, i, j] = j <= i && mask[b, j]
            let causal: Vec<u8> = (0..s)
                .flat_map(|i| (0..s).map(move |j| u8::from(j <= i)))
                .collect();
            let causal = Tensor::from_vec(causal, (1, s, s), &dev)?;
            let keys = mask.to_dtype(DType::U8)?.reshape((b, 1, s))?;
            let allowed = causal.broadcast_mul(&keys)?;
            let zero = Tensor::zeros((b, s, s), DType::F32, &dev)?;
            let min = Tensor::full(f32::MIN, (b, s, s), &dev)?;
            let bias = allowed.where_cond(&zero, &min)?.unsqueeze(1)?;
            let pos = Tensor::arange(0u32, s as u32, &dev)?.to_dtype(DType::F32)?;
            let rope = &self.cfg.rope;
            let inv_freq = Tensor::new(rope.inv_freq(s), &dev)?;
            let freqs = pos.unsqueeze(1)?.matmul(&inv_freq.unsqueeze(0)?)?;
            let (mut cos, mut sin) = (freqs.cos()?, freqs.sin()?);
            let m = rope.attention_factor();
            if m != 1.0 {
                cos = (cos * m)?;
                sin = (sin * m)?;
            }
            Ok(LlamaExtra { bias, cos, sin })
        })
    }

    fn head(&self, state: &State) -> Result<Tensor> {
        Ok(self.lm_head.forward(&self.norm.forward(&state.hidden)?)?)
    }

    /// Pre-RMSNorm: both norms fold; up → down folds (`act(gate)·up` is linear in up);
    /// v → o folds only without GQA (otherwise one V channel feeds several o columns).
    fn awq_layout(&self, block: usize) -> Result<AwqLayout> {
        let l = self.layers.get(block)?;
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
}
