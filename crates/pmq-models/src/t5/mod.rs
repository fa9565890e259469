//! T5 / FLAN-T5 encoder-decoder (`T5ForConditionalGeneration`): pre-RMSNorm blocks, relative
//! position buckets (bidirectional in the encoder, causal in the decoder), ReLU or gated
//! (`gated-gelu`, FLAN-T5) feed-forward, tied or untied `lm_head`.
//!
//! Blocks are numbered encoder first, then decoder. The state returned by the last encoder
//! block already carries the final encoder output (after `encoder.final_layer_norm`) and the
//! embedded teacher-forced `decoder_input_ids`, so the pipeline walks all blocks uniformly.

mod block;
mod config;
mod generate;

pub use block::position_bias;
pub use config::{relative_position_bucket, T5Config};

use crate::attention::padding_bias;
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
use crate::weights::WeightStore;
use block::{Forward, T5Extra, T5Layer};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Embedding;
use std::path::Path;

/// A T5 encoder-decoder split into blocks (encoder blocks, then decoder blocks).
#[derive(Debug, Clone)]
pub struct T5Model {
    cfg: T5Config,
    shared: Embedding,
    enc_rel_bias: Tensor,
    dec_rel_bias: Tensor,
    enc_final_ln: Tensor,
    dec_final_ln: Tensor,
    layers: Blocks<T5Layer>,
    lm_head: candle_nn::Linear,
    params: Params,
}

impl T5Model {
    /// Loads `config.json` and the safetensors checkpoint from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let c = ConfigObject::read(&dir.join("config.json"))?;
        let ws = WeightStore::open_dir(dir)?;
        Self::from_parts(&c, &ws)
    }

    /// Builds the model from a parsed config and an open checkpoint.
    pub fn from_parts(c: &ConfigObject, ws: &WeightStore) -> Result<Self> {
        let cfg = T5Config::from_config(c)?;
        let d = cfg.d_model;
        let emb_name = [
            "shared.weight",
            "encoder.embed_tokens.weight",
            "decoder.embed_tokens.weight",
        ]
        .into_iter()
        .find(|n| ws.contains(n))
        .unwrap_or("shared.weight");
        let shared_w = ws.get(emb_name, &[cfg.vocab_size, d])?;
        let ln = |n: &str| ws.get(&format!("{n}.weight"), &[d]);
        let mut params = Params::default();
        let mut layers = Vec::new();
        for (stack, n, field) in [
            ("encoder", cfg.num_layers, "num_layers"),
            ("decoder", cfg.num_decoder_layers, "num_decoder_layers"),
        ] {
            c.check_layer_count(field, n, ws, |i| {
                format!("{stack}.block.{i}.layer.0.SelfAttention.q.weight")
            })?;
            for i in 0..n {
                layers.push(T5Layer::load(&mut params, ws, &cfg, stack, i)?);
            }
        }
        let rel = |stack: &str| {
            ws.get(
                &format!("{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
                &[cfg.relative_attention_num_buckets, cfg.num_heads],
            )
        };
        // transformers 5 ties `lm_head` to `shared` only when the checkpoint has no lm_head of
        // its own (whatever `tie_word_embeddings` says, which it always writes as true)
        let lm_head = match ws.get_opt("lm_head.weight", &[cfg.vocab_size, d])? {
            Some(w) => candle_nn::Linear::new(w, None),
            None if cfg.tie_word_embeddings || c.raw("scale_decoder_outputs").is_some() => {
                candle_nn::Linear::new(shared_w.clone(), None)
            }
            None => {
                return Err(Error::MissingTensor {
                    name: "lm_head.weight (tie_word_embeddings is false)".into(),
                    location: ws.source().to_string(),
                })
            }
        };
        Ok(Self {
            enc_rel_bias: rel("encoder")?,
            dec_rel_bias: rel("decoder")?,
            enc_final_ln: ln("encoder.final_layer_norm")?,
            dec_final_ln: ln("decoder.final_layer_norm")?,
            shared: Embedding::new(shared_w, d),
            cfg,
            layers: layers.into(),
            lm_head,
            params,
        })
    }

    /// The parsed configuration.
    pub fn config(&self) -> &T5Config {
        &self.cfg
    }

    /// RMSNorm with weight `w` (the final encoder and decoder norms).
    fn rms(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(
            x,
            w,
            self.cfg.layer_norm_epsilon as f32,
        )?)
    }

    /// Decoder final norm → (`scale_decoder_outputs`: ×d_model^-0.5) → lm_head.
    fn logits(&self, dec_hidden: &Tensor) -> Result<Tensor> {
        let mut x = self.rms(dec_hidden, &self.dec_final_ln)?;
        if self.cfg.scale_decoder_outputs {
            x = (x * (self.cfg.d_model as f64).powf(-0.5))?;
        }
        Ok(self.lm_head.forward(&x)?)
    }

    /// The state entering decoder block 0.
    fn decoder_state(
        &self,
        enc_out: &Tensor,
        enc_mask: &Tensor,
        enc_rows: Option<Tensor>,
        dec_ids: &Tensor,
        dec_mask: Option<&Tensor>,
    ) -> Result<State> {
        let ids = ids_u32(dec_ids, "decoder_input_ids")?;
        check_ids(&ids, self.cfg.vocab_size, "decoder_input_ids")?;
        let (b, t) = ids.dims2()?;
        if enc_out.dim(0)? != b {
            return Err(Error::input(format!(
                "decoder_input_ids has batch size {b}, encoder input has {}",
                enc_out.dim(0)?
            )));
        }
        let x = self.shared.forward(&ids)?;
        State::new(x, dec_mask, |mask| {
            let dev = Device::Cpu;
            let causal: Vec<u8> = (0..t)
                .flat_map(|i| (0..t).map(move |j| u8::from(j <= i)))
                .collect();
            let causal = Tensor::from_vec(causal, (1, 1, t, t), &dev)?;
            let keys = mask.to_dtype(DType::U8)?.reshape((b, 1, 1, t))?;
            let shape = (b, self.cfg.num_heads, t, t);
            let allowed = causal.broadcast_mul(&keys)?.broadcast_as(shape)?;
            let pos =
                position_bias(&self.cfg, &self.dec_rel_bias, t, t, false)?.broadcast_as(shape)?;
            let min = Tensor::full(f32::MIN, shape, &dev)?;
            let self_bias = allowed.where_cond(&pos, &min)?;
            Ok(T5Extra::Decoder {
                self_bias,
                enc_out: enc_out.clone(),
                enc_rows,
                cross_bias: padding_bias(enc_mask)?,
            })
        })
    }

    /// What a block forward reads.
    fn parts(&self) -> Forward<'_> {
        Forward {
            params: &self.params,
            cfg: &self.cfg,
        }
    }

    /// Encoder block `i`, stopping after `stop` when given.
    fn encoder_block(
        &self,
        i: usize,
        state: &State,
        cap: &mut Capturer,
        stop: Option<SubBlock>,
    ) -> Result<Ran> {
        let l = self.layers.get(i)?;
        self.parts().encoder_block(l, i, state, cap, stop)
    }

    /// Decoder block `i` (numbered after the encoder blocks), stopping after `stop` when given.
    fn decoder_block(
        &self,
        i: usize,
        state: &State,
        cap: &mut Capturer,
        stop: Option<SubBlock>,
    ) -> Result<Ran> {
        let l = self.layers.get(i)?;
        self.parts().decoder_block(l, i, state, cap, stop)
    }

    /// The encoder → decoder transition after the last encoder block: the final encoder norm,
    /// then the embedded teacher-forced decoder inputs.
    fn to_decoder(&self, out: State) -> Result<State> {
        let T5Extra::Encoder { decoder, .. } = out.extra_for("T5")? else {
            return Err(Error::input(
                "unexpected decoder-phase state in the encoder",
            ));
        };
        let (dec_ids, dec_mask) = decoder.as_ref().ok_or_else(|| {
            Error::input(
                "T5 decoder blocks need `decoder_input_ids` (teacher forcing) in the batch",
            )
        })?;
        let enc_out = self.rms(&out.hidden, &self.enc_final_ln)?;
        self.decoder_state(
            &enc_out,
            &out.mask,
            out.rows.clone(),
            dec_ids,
            dec_mask.as_ref(),
        )
    }
}

impl ModelParts for T5Model {
    fn params(&self) -> &Params {
        &self.params
    }

    fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }

    /// An encoder or a decoder block; a whole run of the last encoder block also makes the
    /// transition to the decoder ([`T5Model::to_decoder`]).
    fn run_block(
        &self,
        block: usize,
        state: &State,
        capture: Option<&mut CaptureFn<'_>>,
        memo: Option<&mut OutputMemo>,
        stop: Option<SubBlock>,
    ) -> Result<Ran> {
        let mut cap = Capturer::with_memo(capture, memo);
        if block >= self.cfg.num_layers {
            return self.decoder_block(block, state, &mut cap, stop);
        }
        let ran = self.encoder_block(block, state, &mut cap, stop)?;
        if stop.is_some() || block + 1 < self.cfg.num_layers {
            return Ok(ran);
        }
        Ok(Ran::Block(self.to_decoder(ran.into_state()?)?))
    }
}

impl BlockModel for T5Model {
    fn family(&self) -> Family {
        Family::T5
    }

    fn num_blocks(&self) -> usize {
        self.layers.len()
    }

    fn block_groups(&self, block: usize) -> Result<Vec<Vec<LinearSpec>>> {
        let l = self.layers.get(block)?;
        let (a, p) = (&l.self_attn, &self.params);
        let mut g = vec![p.group(&[&a.q, &a.k, &a.v])?, p.group(&[&a.o])?];
        if let Some((_, c)) = &l.cross {
            g.push(p.group(&[&c.q, &c.k, &c.v])?);
            g.push(p.group(&[&c.o])?);
        }
        g.push(p.group(&l.wi)?);
        g.push(p.group(&[&l.wo])?);
        Ok(g)
    }

    fn embed(&self, batch: &Batch) -> Result<State> {
        let ids = batch
            .input_ids
            .as_ref()
            .ok_or_else(|| Error::input("T5 needs `input_ids`"))?;
        let ids = ids_u32(ids, "input_ids")?;
        check_ids(&ids, self.cfg.vocab_size, "input_ids")?;
        let s = ids.dim(1)?;
        let x = self.shared.forward(&ids)?;
        State::new(x, batch.attention_mask.as_ref(), |mask| {
            let bias = position_bias(&self.cfg, &self.enc_rel_bias, s, s, true)?
                .broadcast_add(&padding_bias(mask)?)?;
            let decoder = batch
                .decoder_input_ids
                .as_ref()
                .map(|d| (d.clone(), batch.decoder_attention_mask.clone()));
            Ok(T5Extra::Encoder { bias, decoder })
        })
    }

    fn head(&self, state: &State) -> Result<Tensor> {
        match state.extra() {
            Some(T5Extra::Decoder { .. }) => self.logits(&state.hidden),
            _ => Err(Error::input(
                "T5 head needs the state after the last decoder block",
            )),
        }
    }

    /// Pre-RMSNorm: every block norm folds; v → o folds (self and cross); wi_1 → wo (gated) or
    /// wi → wo (ReLU only) folds; cross-attention k/v read the final encoder norm, shared by
    /// every decoder block, so they are not scaled.
    fn awq_layout(&self, block: usize) -> Result<AwqLayout> {
        let l = self.layers.get(block)?;
        let a = &l.self_attn;
        let mut groups = vec![
            ScalingGroup::folded(
                &[&a.q, &a.k, &a.v],
                ScaleFold::norm(&l.self_ln, false),
                Some(SubBlock::SelfAttention),
            ),
            ScalingGroup::folded(&[&a.o], ScaleFold::linear(&a.v, false), None),
        ];
        let mut skip_clip = vec![a.q.clone(), a.k.clone()];
        if let Some((ln, c)) = &l.cross {
            groups.push(ScalingGroup::folded(
                &[&c.q],
                ScaleFold::norm(ln, false),
                Some(SubBlock::CrossAttention),
            ));
            groups.push(ScalingGroup::unscaled(
                &[&c.k, &c.v],
                Some(SubBlock::CrossAttention),
            ));
            groups.push(ScalingGroup::folded(
                &[&c.o],
                ScaleFold::linear(&c.v, false),
                None,
            ));
            skip_clip.extend([c.q.clone(), c.k.clone()]);
        }
        let wi: Vec<&String> = l.wi.iter().collect();
        groups.push(ScalingGroup::folded(
            &wi,
            ScaleFold::norm(&l.ff_ln, false),
            Some(SubBlock::Mlp),
        ));
        let wo_fold = if self.cfg.gated {
            Some(&l.wi[1])
        } else if self.cfg.dense_act == Activation::Relu {
            Some(&l.wi[0])
        } else {
            None
        };
        groups.push(match wo_fold {
            Some(prev) => ScalingGroup::folded(&[&l.wo], ScaleFold::linear(prev, false), None),
            None => ScalingGroup::unscaled(&[&l.wo], None),
        });
        Ok(AwqLayout { groups, skip_clip })
    }
}
