//! BERT encoders (`BertModel` and checkpoints of `Bert*` heads with a `bert.` prefix), e.g.
//! all-MiniLM-L6-v2. Post-LN blocks: self-attention → add & LayerNorm → FFN → add & LayerNorm.

use crate::attention::{attend, merge_heads, padding_bias, split_heads};
use crate::batch::Batch;
use crate::capture::{CaptureFn, Capturer, OutputMemo};
use crate::config::{Activation, ConfigObject};
use crate::error::{Error, Result};
use crate::ids::{check_ids, ids_u32};
use crate::linear::LinearSpec;
use crate::model::{BlockModel, Blocks, Family, ModelParts, Ran};
use crate::params::Params;
use crate::scaling::{AwqLayout, ScaleFold, ScalingGroup, SubBlock};
use crate::state::State;
use crate::tensors::token_rows;
use crate::weights::WeightStore;
use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Embedding, LayerNorm};
use std::path::Path;

/// The `config.json` fields of `BertConfig` that affect inference (transformers defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    /// `vocab_size` (30522).
    pub vocab_size: usize,
    /// `hidden_size` (768).
    pub hidden_size: usize,
    /// `num_hidden_layers` (12).
    pub num_hidden_layers: usize,
    /// `num_attention_heads` (12).
    pub num_attention_heads: usize,
    /// `intermediate_size` (3072).
    pub intermediate_size: usize,
    /// `hidden_act` ("gelu").
    pub hidden_act: Activation,
    /// `max_position_embeddings` (512).
    pub max_position_embeddings: usize,
    /// `type_vocab_size` (2).
    pub type_vocab_size: usize,
    /// `layer_norm_eps` (1e-12).
    pub layer_norm_eps: f64,
    /// `pad_token_id` (0).
    pub pad_token_id: u32,
}

impl BertConfig {
    /// Reads the fields from a parsed config, rejecting options this crate does not implement.
    pub fn from_config(c: &ConfigObject) -> Result<Self> {
        let pet = c.str_or("position_embedding_type", "absolute")?;
        if pet != "absolute" {
            return Err(c.unsupported(
                "position_embedding_type",
                &pet,
                "only \"absolute\" position embeddings are implemented",
            ));
        }
        if c.bool_or("is_decoder", false)? {
            return Err(c.unsupported("is_decoder", true, "BERT is supported as an encoder only"));
        }
        if c.bool_or("add_cross_attention", false)? {
            return Err(c.unsupported(
                "add_cross_attention",
                true,
                "BERT cross-attention is not implemented",
            ));
        }
        let cfg = Self {
            vocab_size: c.usize_or("vocab_size", 30522)?,
            hidden_size: c.usize_or("hidden_size", 768)?,
            num_hidden_layers: c.usize_or("num_hidden_layers", 12)?,
            num_attention_heads: c.usize_or("num_attention_heads", 12)?,
            intermediate_size: c.usize_or("intermediate_size", 3072)?,
            hidden_act: c.activation_or("hidden_act", "gelu")?,
            max_position_embeddings: c.usize_or("max_position_embeddings", 512)?,
            type_vocab_size: c.usize_or("type_vocab_size", 2)?,
            layer_norm_eps: c.f64_or("layer_norm_eps", 1e-12)?,
            pad_token_id: c.usize_or("pad_token_id", 0)? as u32,
        };
        c.positive("hidden_size", cfg.hidden_size)?;
        c.positive("num_attention_heads", cfg.num_attention_heads)?;
        c.positive("num_hidden_layers", cfg.num_hidden_layers)?;
        c.divisible(
            "hidden_size",
            cfg.hidden_size,
            "num_attention_heads",
            cfg.num_attention_heads,
        )?;
        Ok(cfg)
    }
}

/// Sentence pooling over the last hidden state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the real (unpadded) tokens — sentence-transformers' default.
    Mean,
    /// The first ([CLS]) token.
    Cls,
}

/// BERT's part of a block state.
#[derive(Debug)]
struct BertExtra {
    /// Additive key-padding bias `[b, 1, 1, s]`.
    bias: Tensor,
}

/// The HF names of one encoder layer's linears and LayerNorms.
#[derive(Debug, Clone)]
struct BertLayer {
    q: String,
    k: String,
    v: String,
    attn_out: String,
    attn_ln: String,
    inter: String,
    out: String,
    out_ln: String,
}

/// A BERT encoder split into blocks.
#[derive(Debug, Clone)]
pub struct BertModel {
    cfg: BertConfig,
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    emb_ln: LayerNorm,
    layers: Blocks<BertLayer>,
    params: Params,
}

fn layer_norm(ws: &WeightStore, prefix: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
    Ok(LayerNorm::new(
        ws.get(&format!("{prefix}.weight"), &[dim])?,
        ws.get(&format!("{prefix}.bias"), &[dim])?,
        eps,
    ))
}

impl BertModel {
    /// Loads `config.json` and the safetensors checkpoint from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let c = ConfigObject::read(&dir.join("config.json"))?;
        let ws = WeightStore::open_dir(dir)?;
        Self::from_parts(&c, &ws)
    }

    /// Builds the model from a parsed config and an open checkpoint.
    pub fn from_parts(c: &ConfigObject, ws: &WeightStore) -> Result<Self> {
        let cfg = BertConfig::from_config(c)?;
        let p = if ws.contains("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let h = cfg.hidden_size;
        let emb = |n: &str, rows: usize| -> Result<Embedding> {
            Ok(Embedding::new(
                ws.get(&format!("{p}embeddings.{n}.weight"), &[rows, h])?,
                h,
            ))
        };
        let word = emb("word_embeddings", cfg.vocab_size)?;
        let position = emb("position_embeddings", cfg.max_position_embeddings)?;
        let token_type = emb("token_type_embeddings", cfg.type_vocab_size)?;
        let emb_ln = layer_norm(
            ws,
            &format!("{p}embeddings.LayerNorm"),
            h,
            cfg.layer_norm_eps,
        )?;
        let mut params = Params::default();
        let eps = cfg.layer_norm_eps;
        c.check_layer_count("num_hidden_layers", cfg.num_hidden_layers, ws, |i| {
            format!("{p}encoder.layer.{i}.attention.self.query.weight")
        })?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = format!("{p}encoder.layer.{i}");
            let q = format!("{l}.attention.self.query");
            let k = format!("{l}.attention.self.key");
            let v = format!("{l}.attention.self.value");
            let attn_out = format!("{l}.attention.output.dense");
            let inter = format!("{l}.intermediate.dense");
            let out = format!("{l}.output.dense");
            let linears = &mut params.linears;
            for n in [&q, &k, &v, &attn_out] {
                linears.load(ws, n, h, h, true)?;
            }
            linears.load(ws, &inter, h, cfg.intermediate_size, true)?;
            linears.load(ws, &out, cfg.intermediate_size, h, true)?;
            let norms = &mut params.norms;
            layers.push(BertLayer {
                q,
                k,
                v,
                attn_out,
                attn_ln: norms.load_layer_norm(
                    ws,
                    &format!("{l}.attention.output.LayerNorm"),
                    h,
                    eps,
                )?,
                inter,
                out,
                out_ln: norms.load_layer_norm(ws, &format!("{l}.output.LayerNorm"), h, eps)?,
            });
        }
        Ok(Self {
            cfg,
            word,
            position,
            token_type,
            emb_ln,
            layers: layers.into(),
            params,
        })
    }

    /// The parsed configuration.
    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// Pools a last hidden state `[b, s, d]` with the `[b, s]` token mask of `state`.
    pub fn pool(last_hidden: &Tensor, token_mask: &Tensor, pooling: Pooling) -> Result<Tensor> {
        match pooling {
            Pooling::Cls => Ok(last_hidden.i((.., 0, ..))?.contiguous()?),
            Pooling::Mean => {
                let m = token_mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let sum = last_hidden.broadcast_mul(&m)?.sum(1)?;
                let count = m.sum(1)?.clamp(1e-9f32, f32::MAX)?;
                Ok(sum.broadcast_div(&count)?)
            }
        }
    }

    /// Sentence embeddings `[b, hidden]` of a batch (full forward, then pooling).
    pub fn sentence_embedding(&self, batch: &Batch, pooling: Pooling) -> Result<Tensor> {
        let mut s = self.embed(batch)?;
        for b in 0..self.num_blocks() {
            s = self.block_forward(b, &s, None)?;
        }
        Self::pool(s.hidden(), s.token_mask(), pooling)
    }
}

impl ModelParts for BertModel {
    fn params(&self) -> &Params {
        &self.params
    }

    fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }

    /// The post-LN block, stopping after `stop` when given.
    fn run_block(
        &self,
        block: usize,
        state: &State,
        capture: Option<&mut CaptureFn<'_>>,
        memo: Option<&mut OutputMemo>,
        stop: Option<SubBlock>,
    ) -> Result<Ran> {
        let l = self.layers.get(block)?;
        let BertExtra { bias } = state.extra_for("BERT")?;
        let mut cap = Capturer::with_memo(capture, memo);
        let rows = state.rows.as_ref();
        let x = &state.hidden;
        let heads = self.cfg.num_attention_heads;
        let p = &self.params;
        let head_dim = self.cfg.hidden_size / heads;
        // each linear's input is computed only when needed (see `Capturer::linear`)
        let a = p.linear(&l.attn_out, rows, &mut cap, |cap| {
            let q = split_heads(&p.linear(&l.q, rows, cap, |_| Ok(x.clone()))?, heads)?;
            let k = split_heads(&p.linear(&l.k, rows, cap, |_| Ok(x.clone()))?, heads)?;
            let v = split_heads(&p.linear(&l.v, rows, cap, |_| Ok(x.clone()))?, heads)?;
            let scale = 1.0 / (head_dim as f64).sqrt();
            merge_heads(&attend(&q, &k, &v, scale, Some(bias))?)
        })?;
        if stop == Some(SubBlock::SelfAttention) {
            return Ok(Ran::Sub(token_rows(&a, rows)?));
        }
        let x = p.norm(&l.attn_ln, &(a + x)?)?;
        let o = p.linear(&l.out, rows, &mut cap, |cap| {
            p.linear_act(&l.inter, rows, self.cfg.hidden_act, cap, |_| Ok(x.clone()))
        })?;
        if stop == Some(SubBlock::Mlp) {
            return Ok(Ran::Sub(token_rows(&o, rows)?));
        }
        let y = self.params.norm(&l.out_ln, &(o + &x)?)?;
        Ok(Ran::Block(state.with_hidden(y)))
    }
}

impl BlockModel for BertModel {
    fn family(&self) -> Family {
        Family::Bert
    }

    fn num_blocks(&self) -> usize {
        self.layers.len()
    }

    fn block_groups(&self, block: usize) -> Result<Vec<Vec<LinearSpec>>> {
        let l = self.layers.get(block)?;
        let p = &self.params;
        Ok(vec![
            p.group(&[&l.q, &l.k, &l.v])?,
            p.group(&[&l.attn_out])?,
            p.group(&[&l.inter])?,
            p.group(&[&l.out])?,
        ])
    }

    fn embed(&self, batch: &Batch) -> Result<State> {
        let ids = batch
            .input_ids
            .as_ref()
            .ok_or_else(|| Error::input("BERT needs `input_ids`"))?;
        let ids = ids_u32(ids, "input_ids")?;
        let (b, s) = ids.dims2()?;
        if s > self.cfg.max_position_embeddings {
            return Err(Error::input(format!(
                "sequence length {s} exceeds max_position_embeddings = {}",
                self.cfg.max_position_embeddings
            )));
        }
        check_ids(&ids, self.cfg.vocab_size, "input_ids")?;
        let tt = match &batch.token_type_ids {
            Some(t) => {
                let t = ids_u32(t, "token_type_ids")?;
                if t.dims() != [b, s] {
                    return Err(Error::input(format!(
                        "token_type_ids has shape {:?}, expected [{b}, {s}]",
                        t.dims()
                    )));
                }
                check_ids(&t, self.cfg.type_vocab_size, "token_type_ids")?;
                t
            }
            None => Tensor::zeros((b, s), DType::U32, &Device::Cpu)?,
        };
        let pos = Tensor::arange(0u32, s as u32, &Device::Cpu)?;
        let x = self
            .word
            .forward(&ids)?
            .add(&self.token_type.forward(&tt)?)?
            .broadcast_add(&self.position.forward(&pos)?)?;
        let x = self.emb_ln.forward(&x)?;
        State::new(x, batch.attention_mask.as_ref(), |mask| {
            Ok(BertExtra {
                bias: padding_bias(mask)?,
            })
        })
    }

    fn head(&self, state: &State) -> Result<Tensor> {
        Ok(state.hidden.clone())
    }

    /// Post-LN: every LayerNorm output is also the residual stream, so only the value →
    /// attention-output pair has an exact fold.
    fn awq_layout(&self, block: usize) -> Result<AwqLayout> {
        let l = self.layers.get(block)?;
        Ok(AwqLayout {
            groups: vec![
                ScalingGroup::unscaled(&[&l.q, &l.k, &l.v], Some(SubBlock::SelfAttention)),
                ScalingGroup::folded(&[&l.attn_out], ScaleFold::linear(&l.v, true), None),
                ScalingGroup::unscaled(&[&l.inter], Some(SubBlock::Mlp)),
                ScalingGroup::unscaled(&[&l.out], None),
            ],
            skip_clip: vec![l.q.clone(), l.k.clone()],
        })
    }
}
