//! T5 / FLAN-T5 encoder-decoder (`T5ForConditionalGeneration`): pre-RMSNorm blocks, relative
//! position buckets (bidirectional in the encoder, causal in the decoder), ReLU or gated
//! (`gated-gelu`, FLAN-T5) feed-forward, tied or untied `lm_head`.
//!
//! Blocks are numbered encoder first, then decoder. The state returned by the last encoder
//! block already carries the final encoder output (after `encoder.final_layer_norm`) and the
//! embedded teacher-forced `decoder_input_ids`, so the pipeline walks all blocks uniformly.

use crate::bert::{check_ids, ids_u32};
use crate::config::{Activation, ConfigObject};
use crate::error::{Error, Result};
use crate::linear::{Capturer, Linears};
use crate::model::{
    check_block, padding_bias, token_mask_and_rows, token_rows, Batch, BlockModel, CaptureFn,
    Extra, Family, LinearSpec, Ran, State,
};
use crate::norm::Norms;
use crate::scaling::{AwqLayout, ScaleFold, ScalingGroup, SubBlock};
use crate::weights::WeightStore;
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::Embedding;
use std::path::Path;

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
    /// `tie_word_embeddings` (true).
    pub tie_word_embeddings: bool,
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
                "must exceed relative_attention_num_buckets / 2",
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

/// T5-specific part of a block state.
#[derive(Debug, Clone)]
pub(crate) enum T5Extra {
    /// Inside the encoder.
    Encoder {
        /// Position bias + key padding `[b, h, s, s]`.
        bias: Tensor,
        /// Teacher-forced decoder inputs and their mask, if given.
        decoder: Option<(Tensor, Option<Tensor>)>,
    },
    /// Inside the decoder.
    Decoder {
        /// Causal position bias + causal/padding masking `[b, h, t, t]`.
        self_bias: Tensor,
        /// Final encoder output `[b, s, d]`.
        enc_out: Tensor,
        /// Unpadded rows of the encoder output.
        enc_rows: Option<Tensor>,
        /// Encoder key padding bias `[b, 1, 1, s]`.
        cross_bias: Tensor,
    },
}

#[derive(Debug, Clone)]
struct Attn {
    q: String,
    k: String,
    v: String,
    o: String,
}

#[derive(Debug, Clone)]
struct T5Layer {
    self_ln: String,
    self_attn: Attn,
    cross: Option<(String, Attn)>,
    ff_ln: String,
    wi: Vec<String>,
    wo: String,
}

/// A T5 encoder-decoder split into blocks (encoder blocks, then decoder blocks).
#[derive(Debug, Clone)]
pub struct T5Model {
    cfg: T5Config,
    shared: Embedding,
    enc_rel_bias: Tensor,
    dec_rel_bias: Tensor,
    enc_final_ln: Tensor,
    dec_final_ln: Tensor,
    layers: Vec<T5Layer>,
    lm_head: candle_nn::Linear,
    linears: Linears,
    norms: Norms,
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
        let inner = cfg.num_heads * cfg.d_kv;
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
        let mut linears = Linears::default();
        let mut norms = Norms::default();
        let eps = cfg.layer_norm_epsilon;
        let attn = |linears: &mut Linears, p: &str| -> Result<Attn> {
            let a = Attn {
                q: format!("{p}.q"),
                k: format!("{p}.k"),
                v: format!("{p}.v"),
                o: format!("{p}.o"),
            };
            for n in [&a.q, &a.k, &a.v] {
                linears.load(ws, n, d, inner, false)?;
            }
            linears.load(ws, &a.o, inner, d, false)?;
            Ok(a)
        };
        let mut layers = Vec::new();
        for (stack, n) in [
            ("encoder", cfg.num_layers),
            ("decoder", cfg.num_decoder_layers),
        ] {
            for i in 0..n {
                let p = format!("{stack}.block.{i}.layer");
                let self_attn = attn(&mut linears, &format!("{p}.0.SelfAttention"))?;
                let self_ln = norms.load_rms_norm(ws, &format!("{p}.0.layer_norm"), d, eps)?;
                let (cross, ff) = if stack == "decoder" {
                    let a = attn(&mut linears, &format!("{p}.1.EncDecAttention"))?;
                    let cross_ln = norms.load_rms_norm(ws, &format!("{p}.1.layer_norm"), d, eps)?;
                    (Some((cross_ln, a)), 2)
                } else {
                    (None, 1)
                };
                let fp = format!("{p}.{ff}.DenseReluDense");
                let wi = if cfg.gated {
                    vec![format!("{fp}.wi_0"), format!("{fp}.wi_1")]
                } else {
                    vec![format!("{fp}.wi")]
                };
                for n in &wi {
                    linears.load(ws, n, d, cfg.d_ff, false)?;
                }
                let wo = format!("{fp}.wo");
                linears.load(ws, &wo, cfg.d_ff, d, false)?;
                layers.push(T5Layer {
                    self_ln,
                    self_attn,
                    cross,
                    ff_ln: norms.load_rms_norm(ws, &format!("{p}.{ff}.layer_norm"), d, eps)?,
                    wi,
                    wo,
                });
            }
        }
        let rel = |stack: &str| {
            ws.get(
                &format!("{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
                &[cfg.relative_attention_num_buckets, cfg.num_heads],
            )
        };
        let lm_head = if cfg.tie_word_embeddings {
            candle_nn::Linear::new(shared_w.clone(), None)
        } else {
            candle_nn::Linear::new(ws.get("lm_head.weight", &[cfg.vocab_size, d])?, None)
        };
        Ok(Self {
            enc_rel_bias: rel("encoder")?,
            dec_rel_bias: rel("decoder")?,
            enc_final_ln: ln("encoder.final_layer_norm")?,
            dec_final_ln: ln("decoder.final_layer_norm")?,
            shared: Embedding::new(shared_w, d),
            cfg,
            layers,
            lm_head,
            linears,
            norms,
        })
    }

    /// The parsed configuration.
    pub fn config(&self) -> &T5Config {
        &self.cfg
    }

    fn rms(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(
            x,
            w,
            self.cfg.layer_norm_epsilon as f32,
        )?)
    }

    /// Relative position bias `[1, heads, q, k]` from `table` `[buckets, heads]`.
    fn position_bias(
        &self,
        table: &Tensor,
        q: usize,
        k: usize,
        bidirectional: bool,
    ) -> Result<Tensor> {
        let buckets: Vec<u32> = (0..q)
            .flat_map(|i| {
                (0..k).map(move |j| {
                    relative_position_bucket(
                        j as i64 - i as i64,
                        bidirectional,
                        self.cfg.relative_attention_num_buckets,
                        self.cfg.relative_attention_max_distance,
                    )
                })
            })
            .collect();
        let buckets = Tensor::from_vec(buckets, q * k, &Device::Cpu)?;
        let vals = table.index_select(&buckets, 0)?; // [q*k, h]
        Ok(vals
            .reshape((q, k, self.cfg.num_heads))?
            .permute((2, 0, 1))?
            .unsqueeze(0)?
            .contiguous()?)
    }

    /// Final encoder output `[b, s, d_model]` (after `encoder.final_layer_norm`).
    pub fn encode(&self, batch: &Batch) -> Result<Tensor> {
        let mut b = batch.clone();
        b.decoder_input_ids = None;
        let mut s = self.embed(&b)?;
        for i in 0..self.cfg.num_layers {
            s = self
                .encoder_block(i, &s, &mut Capturer::new(None), None)?
                .into_state()?;
        }
        self.rms(&s.hidden, &self.enc_final_ln)
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
        let (mask, rows) = token_mask_and_rows(dec_mask, b, t)?;
        let dev = Device::Cpu;
        let causal: Vec<u8> = (0..t)
            .flat_map(|i| (0..t).map(move |j| u8::from(j <= i)))
            .collect();
        let causal = Tensor::from_vec(causal, (1, 1, t, t), &dev)?;
        let keys = mask.to_dtype(DType::U8)?.reshape((b, 1, 1, t))?;
        let allowed = causal
            .broadcast_mul(&keys)?
            .broadcast_as((b, self.cfg.num_heads, t, t))?;
        let pos = self
            .position_bias(&self.dec_rel_bias, t, t, false)?
            .broadcast_as((b, self.cfg.num_heads, t, t))?;
        let min = Tensor::full(f32::MIN, (b, self.cfg.num_heads, t, t), &dev)?;
        let self_bias = allowed.where_cond(&pos, &min)?;
        Ok(State {
            hidden: x,
            mask,
            rows,
            extra: Extra::T5(Box::new(T5Extra::Decoder {
                self_bias,
                enc_out: enc_out.clone(),
                enc_rows,
                cross_bias: padding_bias(enc_mask)?,
            })),
        })
    }

    /// The feed-forward sub-block's output (before the residual add).
    fn ff(
        &self,
        l: &T5Layer,
        x: &Tensor,
        rows: Option<&Tensor>,
        cap: &mut Capturer,
    ) -> Result<Tensor> {
        let hn = self.norms.forward(&l.ff_ln, x)?;
        let h = if self.cfg.gated {
            let g = self
                .cfg
                .dense_act
                .forward(&self.linears.forward(&l.wi[0], &hn, rows, cap)?)?;
            let u = self.linears.forward(&l.wi[1], &hn, rows, cap)?;
            (g * u)?
        } else {
            self.cfg
                .dense_act
                .forward(&self.linears.forward(&l.wi[0], &hn, rows, cap)?)?
        };
        self.linears.forward(&l.wo, &h, rows, cap)
    }

    /// T5 attention (no 1/√d scaling): queries from `xq`, keys/values from `xkv`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        a: &Attn,
        xq: &Tensor,
        q_rows: Option<&Tensor>,
        xkv: &Tensor,
        kv_rows: Option<&Tensor>,
        bias: &Tensor,
        cap: &mut Capturer,
    ) -> Result<Tensor> {
        let h = self.cfg.num_heads;
        let q = crate::attention::split_heads(&self.linears.forward(&a.q, xq, q_rows, cap)?, h)?;
        let k = crate::attention::split_heads(&self.linears.forward(&a.k, xkv, kv_rows, cap)?, h)?;
        let v = crate::attention::split_heads(&self.linears.forward(&a.v, xkv, kv_rows, cap)?, h)?;
        let ctx =
            crate::attention::merge_heads(&crate::attention::attend(&q, &k, &v, 1.0, Some(bias))?)?;
        self.linears.forward(&a.o, &ctx, q_rows, cap)
    }

    fn encoder_block(
        &self,
        i: usize,
        state: &State,
        cap: &mut Capturer,
        stop: Option<SubBlock>,
    ) -> Result<Ran> {
        let Extra::T5(ex) = &state.extra else {
            return Err(Error::input("state was not produced by a T5 model"));
        };
        let T5Extra::Encoder { bias, .. } = ex.as_ref() else {
            return Err(Error::input(format!(
                "encoder block {i} was given a decoder-phase state"
            )));
        };
        let l = &self.layers[i];
        let rows = state.rows.as_ref();
        let x = &state.hidden;
        let hn = self.norms.forward(&l.self_ln, x)?;
        let a = self.attention(&l.self_attn, &hn, rows, &hn, rows, bias, cap)?;
        if stop == Some(SubBlock::SelfAttention) {
            return Ok(Ran::Sub(token_rows(&a, rows)?));
        }
        let x = (a + x)?;
        let m = self.ff(l, &x, rows, cap)?;
        if stop == Some(SubBlock::Mlp) {
            return Ok(Ran::Sub(token_rows(&m, rows)?));
        }
        Ok(Ran::Block(State {
            hidden: (m + x)?,
            ..state.clone()
        }))
    }

    fn decoder_block(
        &self,
        i: usize,
        state: &State,
        cap: &mut Capturer,
        stop: Option<SubBlock>,
    ) -> Result<Ran> {
        let Extra::T5(ex) = &state.extra else {
            return Err(Error::input("state was not produced by a T5 model"));
        };
        let T5Extra::Decoder {
            self_bias,
            enc_out,
            enc_rows,
            cross_bias,
        } = ex.as_ref()
        else {
            return Err(Error::input(format!(
                "decoder block {} was given an encoder-phase state (run the encoder blocks first)",
                i - self.cfg.num_layers
            )));
        };
        let l = &self.layers[i];
        let rows = state.rows.as_ref();
        let x = &state.hidden;
        let hn = self.norms.forward(&l.self_ln, x)?;
        let a = self.attention(&l.self_attn, &hn, rows, &hn, rows, self_bias, cap)?;
        if stop == Some(SubBlock::SelfAttention) {
            return Ok(Ran::Sub(token_rows(&a, rows)?));
        }
        let x = (a + x)?;
        let (cross_ln, cross) = l
            .cross
            .as_ref()
            .ok_or_else(|| Error::input("decoder block without cross-attention"))?;
        let hn = self.norms.forward(cross_ln, &x)?;
        let c = self.attention(
            cross,
            &hn,
            rows,
            enc_out,
            enc_rows.as_ref(),
            cross_bias,
            cap,
        )?;
        if stop == Some(SubBlock::CrossAttention) {
            return Ok(Ran::Sub(token_rows(&c, rows)?));
        }
        let x = (c + x)?;
        let m = self.ff(l, &x, rows, cap)?;
        if stop == Some(SubBlock::Mlp) {
            return Ok(Ran::Sub(token_rows(&m, rows)?));
        }
        Ok(Ran::Block(State {
            hidden: (m + x)?,
            ..state.clone()
        }))
    }

    /// Greedy decoding: for each input sequence, up to `max_new_tokens` tokens generated after
    /// `decoder_start_token_id`, stopping at `eos_token_id` (neither the start token nor the
    /// eos token is included in the result).
    pub fn generate(&self, batch: &Batch, max_new_tokens: usize) -> Result<Vec<Vec<u32>>> {
        let enc_out = self.encode(batch)?;
        let (b, s, _) = enc_out.dims3()?;
        let (enc_mask, enc_rows) = token_mask_and_rows(batch.attention_mask.as_ref(), b, s)?;
        let mut seqs: Vec<Vec<u32>> = vec![vec![self.cfg.decoder_start_token_id]; b];
        let mut done = vec![false; b];
        for _ in 0..max_new_tokens {
            let ids = Tensor::new(seqs.clone(), &Device::Cpu)?;
            let mut st = self.decoder_state(&enc_out, &enc_mask, enc_rows.clone(), &ids, None)?;
            for i in self.cfg.num_layers..self.layers.len() {
                st = self
                    .decoder_block(i, &st, &mut Capturer::new(None), None)?
                    .into_state()?;
            }
            let t = st.hidden.dim(1)?;
            let last = st.hidden.narrow(1, t - 1, 1)?;
            let logits = self.logits(&last)?.squeeze(1)?;
            let next: Vec<u32> = logits.argmax(D::Minus1)?.to_vec1()?;
            for (k, tok) in next.into_iter().enumerate() {
                if done[k] {
                    seqs[k].push(self.cfg.pad_token_id);
                } else {
                    seqs[k].push(tok);
                    done[k] = tok == self.cfg.eos_token_id;
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
        }
        Ok(seqs
            .into_iter()
            .map(|s| {
                s[1..]
                    .iter()
                    .copied()
                    .take_while(|&t| t != self.cfg.eos_token_id)
                    .collect()
            })
            .collect())
    }

    /// Decoder final norm → (tied: ×d_model^-0.5) → lm_head.
    fn logits(&self, dec_hidden: &Tensor) -> Result<Tensor> {
        let mut x = self.rms(dec_hidden, &self.dec_final_ln)?;
        if self.cfg.tie_word_embeddings {
            x = (x * (self.cfg.d_model as f64).powf(-0.5))?;
        }
        Ok(self.lm_head.forward(&x)?)
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
        check_block(block, self.layers.len())?;
        let l = &self.layers[block];
        let a = &l.self_attn;
        let mut g = vec![
            self.linears
                .group(&[a.q.clone(), a.k.clone(), a.v.clone()])?,
            self.linears.group(std::slice::from_ref(&a.o))?,
        ];
        if let Some((_, c)) = &l.cross {
            g.push(
                self.linears
                    .group(&[c.q.clone(), c.k.clone(), c.v.clone()])?,
            );
            g.push(self.linears.group(std::slice::from_ref(&c.o))?);
        }
        g.push(self.linears.group(&l.wi)?);
        g.push(self.linears.group(std::slice::from_ref(&l.wo))?);
        Ok(g)
    }

    fn embed(&self, batch: &Batch) -> Result<State> {
        let ids = batch
            .input_ids
            .as_ref()
            .ok_or_else(|| Error::input("T5 needs `input_ids`"))?;
        let ids = ids_u32(ids, "input_ids")?;
        check_ids(&ids, self.cfg.vocab_size, "input_ids")?;
        let (b, s) = ids.dims2()?;
        let x = self.shared.forward(&ids)?;
        let (mask, rows) = token_mask_and_rows(batch.attention_mask.as_ref(), b, s)?;
        let bias = self
            .position_bias(&self.enc_rel_bias, s, s, true)?
            .broadcast_add(&padding_bias(&mask)?)?;
        let decoder = batch
            .decoder_input_ids
            .as_ref()
            .map(|d| (d.clone(), batch.decoder_attention_mask.clone()));
        Ok(State {
            hidden: x,
            mask,
            rows,
            extra: Extra::T5(Box::new(T5Extra::Encoder { bias, decoder })),
        })
    }

    fn block_forward(
        &self,
        block: usize,
        state: &State,
        capture: Option<&mut CaptureFn<'_>>,
    ) -> Result<State> {
        check_block(block, self.layers.len())?;
        let mut cap = Capturer::new(capture);
        if block >= self.cfg.num_layers {
            return self
                .decoder_block(block, state, &mut cap, None)?
                .into_state();
        }
        let out = self
            .encoder_block(block, state, &mut cap, None)?
            .into_state()?;
        if block + 1 < self.cfg.num_layers {
            return Ok(out);
        }
        // transition: final encoder norm, then embed the teacher-forced decoder inputs
        let Extra::T5(ex) = &out.extra else {
            return Err(Error::input("state was not produced by a T5 model"));
        };
        let T5Extra::Encoder { decoder, .. } = ex.as_ref() else {
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

    fn head(&self, state: &State) -> Result<Tensor> {
        match &state.extra {
            Extra::T5(ex) if matches!(ex.as_ref(), T5Extra::Decoder { .. }) => {
                self.logits(&state.hidden)
            }
            _ => Err(Error::input(
                "T5 head needs the state after the last decoder block",
            )),
        }
    }

    fn set_linear_weight(&mut self, name: &str, weight: Tensor) -> Result<()> {
        self.linears.set_weight(name, weight)
    }

    fn linear_weight(&self, name: &str) -> Result<Tensor> {
        self.linears.weight(name)
    }

    /// Pre-RMSNorm: every block norm folds; v → o folds (self and cross); wi_1 → wo (gated) or
    /// wi → wo (ReLU only) folds; cross-attention k/v read the final encoder norm, shared by
    /// every decoder block, so they are not scaled.
    fn awq_layout(&self, block: usize) -> Result<AwqLayout> {
        check_block(block, self.layers.len())?;
        let l = &self.layers[block];
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

    fn sub_block_output(&self, block: usize, state: &State, sub: SubBlock) -> Result<Tensor> {
        check_block(block, self.layers.len())?;
        let mut cap = Capturer::new(None);
        let ran = if block >= self.cfg.num_layers {
            self.decoder_block(block, state, &mut cap, Some(sub))?
        } else {
            self.encoder_block(block, state, &mut cap, Some(sub))?
        };
        ran.into_sub(sub)
    }

    fn tensor(&self, name: &str) -> Result<Tensor> {
        crate::norm::get_tensor(&self.norms, &self.linears, name)
    }

    fn set_tensor(&mut self, name: &str, value: Tensor) -> Result<()> {
        crate::norm::set_tensor(&mut self.norms, &mut self.linears, name, value)
    }
}
