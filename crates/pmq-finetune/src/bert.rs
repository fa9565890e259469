//! A differentiable BERT encoder for training, built from `candle_core::Var`s named with the
//! checkpoint's HF tensor names.
//!
//! Same computation as [`pmq_models::BertModel`] (post-LN blocks):
//!
//! ```text
//! x₀ = LN(E_word[ids] + E_type[0] + E_pos[0..s])
//! a  = softmax(q kᵀ / √d_head + bias) v,   bias = f32::MIN on padded keys
//! x' = LN(x + W_o a + b_o)
//! y  = LN(x' + W_2 act(W_1 x' + b_1) + b_2)
//! e  = Σ_t m_t y_t / Σ_t m_t                       (mean pooling over the mask)
//! ```
//!
//! Only ops with a backward pass are used: candle's fused `softmax_last_dim` and `layer_norm`
//! kernels are applied without backward (gradients would silently stop), so softmax is
//! `max`/`exp`/`sum` and LayerNorm is `mean`/`var` arithmetic
//! ([`candle_nn::ops::layer_norm_slow`]).

use crate::layers::{Lin, Loader, Norm};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use pmq_models::config::ConfigObject;
use pmq_models::{BertConfig, WeightStore};
use std::path::Path;

#[derive(Debug)]
struct Layer {
    q: Lin,
    k: Lin,
    v: Lin,
    attn_out: Lin,
    attn_ln: Norm,
    inter: Lin,
    out: Lin,
    out_ln: Norm,
}

/// A trainable BERT encoder.
#[derive(Debug)]
pub struct TrainBert {
    cfg: BertConfig,
    dtype: DType,
    word: Var,
    position: Var,
    token_type: Var,
    emb_ln: Norm,
    layers: Vec<Layer>,
    /// Every trainable tensor with its checkpoint name, in load order.
    params: Vec<(String, Var)>,
}

impl TrainBert {
    /// Loads `config.json` and the safetensors checkpoint of `dir`, in `dtype` (F32 for
    /// training; F64 for gradient checks).
    pub fn load(dir: &Path, dtype: DType) -> Result<Self> {
        let c = ConfigObject::read(&dir.join("config.json"))
            .with_context(|| format!("reading {}", dir.join("config.json").display()))?;
        let ws = WeightStore::open_dir(dir)
            .with_context(|| format!("opening the checkpoint in {}", dir.display()))?;
        Self::from_parts(&c, &ws, dtype)
    }

    /// Builds the encoder from a parsed config and an open checkpoint.
    pub fn from_parts(c: &ConfigObject, ws: &WeightStore, dtype: DType) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::F64) {
            bail!("training dtype must be F32 or F64, got {dtype:?}");
        }
        let cfg = BertConfig::from_config(c)?;
        let prefix = if ws.contains("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        let mut ld = Loader {
            ws,
            dtype,
            prefix,
            params: Vec::new(),
        };
        let word = ld.var("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?;
        let position = ld.var(
            "embeddings.position_embeddings.weight",
            &[cfg.max_position_embeddings, h],
        )?;
        let token_type = ld.var(
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab_size, h],
        )?;
        let emb_ln = ld.norm("embeddings.LayerNorm", h, eps)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = format!("encoder.layer.{i}");
            layers.push(Layer {
                q: ld.lin(&format!("{l}.attention.self.query"), h, h)?,
                k: ld.lin(&format!("{l}.attention.self.key"), h, h)?,
                v: ld.lin(&format!("{l}.attention.self.value"), h, h)?,
                attn_out: ld.lin(&format!("{l}.attention.output.dense"), h, h)?,
                attn_ln: ld.norm(&format!("{l}.attention.output.LayerNorm"), h, eps)?,
                inter: ld.lin(&format!("{l}.intermediate.dense"), h, cfg.intermediate_size)?,
                out: ld.lin(&format!("{l}.output.dense"), cfg.intermediate_size, h)?,
                out_ln: ld.norm(&format!("{l}.output.LayerNorm"), h, eps)?,
            });
        }
        Ok(Self {
            cfg,
            dtype,
            word,
            position,
            token_type,
            emb_ln,
            layers,
            params: ld.params,
        })
    }

    /// The parsed configuration.
    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// The dtype of the parameters and activations.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Every trainable tensor with its checkpoint name.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Last hidden states `[b, s, hidden]` for token ids `[b, s]` (u32) and a 0/1 attention
    /// mask `[b, s]` (any dtype).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        if mask.dims() != [b, s] {
            bail!(
                "attention mask has shape {:?}, expected [{b}, {s}]",
                mask.dims()
            );
        }
        if s > self.cfg.max_position_embeddings {
            bail!(
                "sequence length {s} exceeds max_position_embeddings = {}",
                self.cfg.max_position_embeddings
            );
        }
        let ids = ids.to_dtype(DType::U32)?;
        let max_id = ids.flatten_all()?.max(0)?.to_scalar::<u32>()? as usize;
        if max_id >= self.cfg.vocab_size {
            bail!(
                "token id {max_id} is outside the vocabulary ({} entries)",
                self.cfg.vocab_size
            );
        }
        let h = self.cfg.hidden_size;
        let dev = Device::Cpu;
        let words = self
            .word
            .as_tensor()
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, s, h))?;
        let types = self
            .token_type
            .as_tensor()
            .index_select(&Tensor::zeros(s, DType::U32, &dev)?, 0)?;
        let pos = self
            .position
            .as_tensor()
            .index_select(&Tensor::arange(0u32, s as u32, &dev)?, 0)?;
        let x = words.broadcast_add(&(types + pos)?)?;
        let mut x = self.emb_ln.forward(&x)?;
        let mask = mask.to_dtype(self.dtype)?;
        let bias = ((mask.ones_like()? - &mask)? * f64::from(f32::MIN))?.reshape((b, 1, 1, s))?;
        for layer in &self.layers {
            x = self.layer_forward(layer, &x, &bias)?;
        }
        Ok(x)
    }

    fn layer_forward(&self, l: &Layer, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let heads = self.cfg.num_attention_heads;
        let (b, s, h) = x.dims3()?;
        let d = h / heads;
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, s, heads, d))?.transpose(1, 2)?.contiguous()?)
        };
        let q = split(l.q.forward(x)?)?;
        let k = split(l.k.forward(x)?)?;
        let v = split(l.v.forward(x)?)?;
        let scores =
            (q.matmul(&k.t()?.contiguous()?)? * (1.0 / (d as f64).sqrt()))?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, s, h))?;
        let x = l.attn_ln.forward(&(l.attn_out.forward(&ctx)? + x)?)?;
        let i = self.cfg.hidden_act.forward(&l.inter.forward(&x)?)?;
        l.out_ln.forward(&(l.out.forward(&i)? + &x)?)
    }

    /// Mean-pooled sentence embeddings `[b, hidden]` (mean over the masked tokens).
    pub fn sentence_embedding(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let hidden = self.forward(ids, mask)?;
        mean_pool(&hidden, mask)
    }
}

/// `Σ_t m_t h_t / Σ_t m_t` for `h` `[b, s, d]` and mask `[b, s]`.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(hidden.dtype())?.unsqueeze(2)?;
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1e-9, f64::from(f32::MAX))?;
    Ok(sum.broadcast_div(&count)?)
}
