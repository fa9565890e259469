//! A differentiable T5 (`T5ForConditionalGeneration`) for training on text-to-text pairs,
//! built from `candle_core::Var`s named with the checkpoint's HF tensor names.
//!
//! Same computation as [`pmq_models::T5Model`] with teacher forcing:
//!
//! ```text
//! encoder:  x ← x + Attn(RMS(x), RMS(x); B_rel(bidirectional) + B_pad);  x ← x + FF(RMS(x))
//! decoder:  y ← y + Attn(RMS(y), RMS(y); B_rel(causal) or −∞);  y ← y + Attn(RMS(y), enc; B_pad)
//!           y ← y + FF(RMS(y))
//! logits = W_lm · RMS(y) · (d_model^−½ when `scale_decoder_outputs`: tied T5 v1.0)
//! Attn(q, kv; B) = W_o softmax(Q Kᵀ + B) V   (no 1/√d scaling in T5)
//! FF(h) = W_o act(W_i h)   or, gated (FLAN-T5), W_o (act(W_i0 h) ⊙ W_i1 h)
//! ```
//!
//! The loss is the mean token cross-entropy of the targets (teacher forcing: the decoder reads
//! `[decoder_start] + target[..−1]`). RMS norm is `x / √(mean x² + ε) · w` arithmetic and
//! softmax candle-nn's generic one (ops with a backward pass).

use crate::layers::{Lin, Loader};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use pmq_models::config::ConfigObject;
use pmq_models::{T5Config, WeightStore};
use std::path::Path;

struct Attn {
    q: Lin,
    k: Lin,
    v: Lin,
    o: Lin,
}

struct Layer {
    self_ln: Var,
    self_attn: Attn,
    cross: Option<(Var, Attn)>,
    ff_ln: Var,
    wi: Vec<Lin>,
    wo: Lin,
}

/// A trainable T5.
pub struct TrainT5 {
    cfg: T5Config,
    dtype: DType,
    shared: Var,
    enc_rel: Var,
    dec_rel: Var,
    enc_final: Var,
    dec_final: Var,
    enc: Vec<Layer>,
    dec: Vec<Layer>,
    /// `None`: tied to `shared`.
    lm_head: Option<Lin>,
    params: Vec<(String, Var)>,
}

impl TrainT5 {
    /// Loads `config.json` and the checkpoint of `dir` in `dtype` (F32 or F64).
    pub fn load(dir: &Path, dtype: DType) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::F64) {
            bail!("training dtype must be F32 or F64, got {dtype:?}");
        }
        let c = ConfigObject::read(&dir.join("config.json"))
            .with_context(|| format!("reading {}", dir.join("config.json").display()))?;
        let cfg = T5Config::from_config(&c)?;
        let ws = WeightStore::open_dir(dir)
            .with_context(|| format!("opening the checkpoint in {}", dir.display()))?;
        let embeddings: Vec<&str> = [
            "shared.weight",
            "encoder.embed_tokens.weight",
            "decoder.embed_tokens.weight",
        ]
        .into_iter()
        .filter(|n| ws.contains(n))
        .collect();
        let [emb] = embeddings[..] else {
            bail!(
                "{}: the token embedding is stored as {embeddings:?}; training needs exactly one \
                 of shared / encoder.embed_tokens / decoder.embed_tokens",
                dir.display()
            );
        };
        let (d, inner) = (cfg.d_model, cfg.num_heads * cfg.d_kv);
        let mut ld = Loader {
            ws: &ws,
            dtype,
            prefix: "",
            params: Vec::new(),
        };
        let shared = ld.var(emb, &[cfg.vocab_size, d])?;
        let buckets = cfg.relative_attention_num_buckets;
        let rel = |ld: &mut Loader, stack: &str| {
            ld.var(
                &format!("{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
                &[buckets, cfg.num_heads],
            )
        };
        let enc_rel = rel(&mut ld, "encoder")?;
        let dec_rel = rel(&mut ld, "decoder")?;
        let attn = |ld: &mut Loader, p: &str| -> Result<Attn> {
            Ok(Attn {
                q: ld.lin_no_bias(&format!("{p}.q"), d, inner)?,
                k: ld.lin_no_bias(&format!("{p}.k"), d, inner)?,
                v: ld.lin_no_bias(&format!("{p}.v"), d, inner)?,
                o: ld.lin_no_bias(&format!("{p}.o"), inner, d)?,
            })
        };
        let mut stacks = Vec::new();
        for (stack, n) in [
            ("encoder", cfg.num_layers),
            ("decoder", cfg.num_decoder_layers),
        ] {
            let mut layers = Vec::with_capacity(n);
            for i in 0..n {
                let p = format!("{stack}.block.{i}.layer");
                let self_attn = attn(&mut ld, &format!("{p}.0.SelfAttention"))?;
                let self_ln = ld.var(&format!("{p}.0.layer_norm.weight"), &[d])?;
                let (cross, ff) = if stack == "decoder" {
                    let a = attn(&mut ld, &format!("{p}.1.EncDecAttention"))?;
                    (
                        Some((ld.var(&format!("{p}.1.layer_norm.weight"), &[d])?, a)),
                        2,
                    )
                } else {
                    (None, 1)
                };
                let fp = format!("{p}.{ff}.DenseReluDense");
                let wi = if cfg.gated {
                    vec![
                        ld.lin_no_bias(&format!("{fp}.wi_0"), d, cfg.d_ff)?,
                        ld.lin_no_bias(&format!("{fp}.wi_1"), d, cfg.d_ff)?,
                    ]
                } else {
                    vec![ld.lin_no_bias(&format!("{fp}.wi"), d, cfg.d_ff)?]
                };
                layers.push(Layer {
                    self_ln,
                    self_attn,
                    cross,
                    wi,
                    wo: ld.lin_no_bias(&format!("{fp}.wo"), cfg.d_ff, d)?,
                    ff_ln: ld.var(&format!("{p}.{ff}.layer_norm.weight"), &[d])?,
                });
            }
            stacks.push(layers);
        }
        let dec = stacks.pop().expect("two stacks");
        let enc = stacks.pop().expect("two stacks");
        let enc_final = ld.var("encoder.final_layer_norm.weight", &[d])?;
        let dec_final = ld.var("decoder.final_layer_norm.weight", &[d])?;
        let lm_head = if ws.contains("lm_head.weight") {
            Some(ld.lin_no_bias("lm_head", d, cfg.vocab_size)?)
        } else if cfg.tie_word_embeddings || c.raw("scale_decoder_outputs").is_some() {
            None
        } else {
            bail!(
                "{}: no lm_head.weight and tie_word_embeddings is false",
                dir.display()
            );
        };
        Ok(Self {
            cfg,
            dtype,
            shared,
            enc_rel,
            dec_rel,
            enc_final,
            dec_final,
            enc,
            dec,
            lm_head,
            params: ld.params,
        })
    }

    /// The parsed configuration.
    pub fn config(&self) -> &T5Config {
        &self.cfg
    }

    /// Every trainable tensor with its checkpoint name.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// The dtype of the parameters and activations.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    fn rms(&self, x: &Tensor, w: &Var) -> Result<Tensor> {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let inv = (ms + self.cfg.layer_norm_epsilon)?.sqrt()?.recip()?;
        Ok(x.broadcast_mul(&inv)?.broadcast_mul(w.as_tensor())?)
    }

    /// The relative position bias `[1, heads, q, k]`: pmq-models' computation, an
    /// `index_select` of the trainable table, so gradients reach it.
    fn position_bias(&self, table: &Var, q: usize, k: usize, bidir: bool) -> Result<Tensor> {
        Ok(pmq_models::t5::position_bias(
            &self.cfg,
            table.as_tensor(),
            q,
            k,
            bidir,
        )?)
    }

    fn attention(&self, a: &Attn, xq: &Tensor, xkv: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let h = self.cfg.num_heads;
        let split = |t: Tensor| -> Result<Tensor> {
            let (b, s, _) = t.dims3()?;
            Ok(t.reshape((b, s, h, self.cfg.d_kv))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(a.q.forward(xq)?)?;
        let k = split(a.k.forward(xkv)?)?;
        let v = split(a.v.forward(xkv)?)?;
        let scores = q.matmul(&k.t()?.contiguous()?)?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let (b, _, s, _) = probs.dims4()?;
        let ctx =
            probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, s, h * self.cfg.d_kv))?;
        a.o.forward(&ctx)
    }

    fn ff(&self, l: &Layer, x: &Tensor) -> Result<Tensor> {
        let hn = self.rms(x, &l.ff_ln)?;
        let g = self.cfg.dense_act.forward(&l.wi[0].forward(&hn)?)?;
        let g = match l.wi.get(1) {
            Some(wi1) => (g * wi1.forward(&hn)?)?,
            None => g,
        };
        l.wo.forward(&g)
    }

    /// Logits `[b, t, vocab]` of the decoder inputs `dec_ids` `[b, t]` (mask `dec_mask`) given
    /// the encoder inputs `ids` `[b, s]` (mask `mask`); masks are 0/1 in the model's dtype.
    pub fn forward(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        dec_ids: &Tensor,
        dec_mask: &Tensor,
    ) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let (_, t) = dec_ids.dims2()?;
        let vocab = self.cfg.vocab_size;
        for x in [ids, dec_ids] {
            let max = x.flatten_all()?.max(0)?.to_scalar::<u32>()? as usize;
            if max >= vocab {
                bail!("token id {max} is outside the vocabulary ({vocab} entries)");
            }
        }
        let min = f64::from(f32::MIN);
        let pad_bias = |m: &Tensor, n: usize| -> Result<Tensor> {
            Ok(((m.ones_like()? - m)? * min)?.reshape((b, 1, 1, n))?)
        };
        let emb = |x: &Tensor, n: usize| -> Result<Tensor> {
            Ok(self
                .shared
                .as_tensor()
                .index_select(&x.flatten_all()?, 0)?
                .reshape((b, n, self.cfg.d_model))?)
        };
        // encoder
        let enc_bias = self
            .position_bias(&self.enc_rel, s, s, true)?
            .broadcast_add(&pad_bias(mask, s)?)?;
        let mut x = emb(ids, s)?;
        for l in &self.enc {
            let hn = self.rms(&x, &l.self_ln)?;
            x = (&x + self.attention(&l.self_attn, &hn, &hn, &enc_bias)?)?;
            x = (&x + self.ff(l, &x)?)?;
        }
        let enc_out = self.rms(&x, &self.enc_final)?;
        // decoder: causal and padded keys masked to f32::MIN, else the position bias
        let causal: Vec<u8> = (0..t)
            .flat_map(|i| (0..t).map(move |j| u8::from(j <= i)))
            .collect();
        let causal = Tensor::from_vec(causal, (1, 1, t, t), &Device::Cpu)?;
        let keys = dec_mask.to_dtype(DType::U8)?.reshape((b, 1, 1, t))?;
        let shape = (b, self.cfg.num_heads, t, t);
        let allowed = causal.broadcast_mul(&keys)?.broadcast_as(shape)?;
        let pos = self
            .position_bias(&self.dec_rel, t, t, false)?
            .broadcast_as(shape)?;
        let floor = Tensor::full(f32::MIN, shape, &Device::Cpu)?.to_dtype(self.dtype)?;
        let self_bias = allowed.where_cond(&pos, &floor)?;
        let cross_bias = pad_bias(mask, s)?;
        let mut y = emb(dec_ids, t)?;
        for l in &self.dec {
            let hn = self.rms(&y, &l.self_ln)?;
            y = (&y + self.attention(&l.self_attn, &hn, &hn, &self_bias)?)?;
            let (cross_ln, cross) = l.cross.as_ref().expect("decoder layers cross-attend");
            let hn = self.rms(&y, cross_ln)?;
            y = (&y + self.attention(cross, &hn, &enc_out, &cross_bias)?)?;
            y = (&y + self.ff(l, &y)?)?;
        }
        let mut y = self.rms(&y, &self.dec_final)?;
        if self.cfg.scale_decoder_outputs {
            y = (y * (self.cfg.d_model as f64).powf(-0.5))?;
        }
        let w = match &self.lm_head {
            Some(l) => l.w.as_tensor().clone(),
            None => self.shared.as_tensor().clone(),
        };
        Ok(y.reshape((b * t, self.cfg.d_model))?
            .matmul(&w.t()?)?
            .reshape((b, t, vocab))?)
    }
}
