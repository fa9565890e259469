//! T5's blocks: the HF names of a layer's linears and norms ([`T5Layer`], [`Attn`]), the state
//! context of the encoder and decoder phases ([`T5Extra`]), the relative position bias, and
//! the forward of attention, feed-forward, encoder and decoder blocks ([`Forward`]).

use super::config::{relative_position_bucket, T5Config};
use crate::attention::{attend, merge_heads, split_heads};
use crate::capture::{Capturer, SharedInput};
use crate::error::{Error, Result};
use crate::model::Ran;
use crate::params::Params;
use crate::scaling::SubBlock;
use crate::state::State;
use crate::tensors::token_rows;
use crate::weights::WeightStore;
use candle_core::{Device, Tensor};

/// T5's part of a block state.
#[derive(Debug)]
pub(super) enum T5Extra {
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

/// The HF names of an attention's linears (`SelfAttention` or `EncDecAttention`).
#[derive(Debug, Clone)]
pub(super) struct Attn {
    pub(super) q: String,
    pub(super) k: String,
    pub(super) v: String,
    pub(super) o: String,
}

impl Attn {
    /// Loads the attention `{p}.{q,k,v,o}` into `params`.
    fn load(params: &mut Params, ws: &WeightStore, cfg: &T5Config, p: &str) -> Result<Self> {
        let (d, inner) = (cfg.d_model, cfg.num_heads * cfg.d_kv);
        let a = Attn {
            q: format!("{p}.q"),
            k: format!("{p}.k"),
            v: format!("{p}.v"),
            o: format!("{p}.o"),
        };
        for n in [&a.q, &a.k, &a.v] {
            params.linears.load(ws, n, d, inner, false)?;
        }
        params.linears.load(ws, &a.o, inner, d, false)?;
        Ok(a)
    }
}

/// The HF names of one encoder or decoder block's linears and norms.
#[derive(Debug, Clone)]
pub(super) struct T5Layer {
    pub(super) self_ln: String,
    pub(super) self_attn: Attn,
    /// Decoder blocks: the cross-attention's norm and linears.
    pub(super) cross: Option<(String, Attn)>,
    pub(super) ff_ln: String,
    /// `wi` (ReLU) or `wi_0`, `wi_1` (gated).
    pub(super) wi: Vec<String>,
    pub(super) wo: String,
}

impl T5Layer {
    /// Loads block `i` of `stack` (`"encoder"` or `"decoder"`) into `params`.
    pub(super) fn load(
        params: &mut Params,
        ws: &WeightStore,
        cfg: &T5Config,
        stack: &str,
        i: usize,
    ) -> Result<Self> {
        let (d, eps) = (cfg.d_model, cfg.layer_norm_epsilon);
        let p = format!("{stack}.block.{i}.layer");
        let self_attn = Attn::load(params, ws, cfg, &format!("{p}.0.SelfAttention"))?;
        let self_ln = params
            .norms
            .load_rms_norm(ws, &format!("{p}.0.layer_norm"), d, eps)?;
        let (cross, ff) = if stack == "decoder" {
            let a = Attn::load(params, ws, cfg, &format!("{p}.1.EncDecAttention"))?;
            let cross_ln = params
                .norms
                .load_rms_norm(ws, &format!("{p}.1.layer_norm"), d, eps)?;
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
            params.linears.load(ws, n, d, cfg.d_ff, false)?;
        }
        let wo = format!("{fp}.wo");
        params.linears.load(ws, &wo, cfg.d_ff, d, false)?;
        Ok(T5Layer {
            self_ln,
            self_attn,
            cross,
            ff_ln: params
                .norms
                .load_rms_norm(ws, &format!("{p}.{ff}.layer_norm"), d, eps)?,
            wi,
            wo,
        })
    }
}

/// Relative position bias `[1, heads, q, k]` from `table` `[buckets, heads]`
/// (`relative_attention_bias` of a stack's first block).
pub fn position_bias(
    cfg: &T5Config,
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
                    cfg.relative_attention_num_buckets,
                    cfg.relative_attention_max_distance,
                )
            })
        })
        .collect();
    let buckets = Tensor::from_vec(buckets, q * k, &Device::Cpu)?;
    let vals = table.index_select(&buckets, 0)?; // [q*k, h]
    Ok(vals
        .reshape((q, k, cfg.num_heads))?
        .permute((2, 0, 1))?
        .unsqueeze(0)?
        .contiguous()?)
}

/// What a T5 block forward reads: the model's parameters and configuration.
pub(super) struct Forward<'a> {
    pub(super) params: &'a Params,
    pub(super) cfg: &'a T5Config,
}

impl Forward<'_> {
    /// The feed-forward sub-block's output (before the residual add); each linear's input
    /// is computed only when needed (see `Capturer::linear`).
    fn ff(
        &self,
        l: &T5Layer,
        x: &Tensor,
        rows: Option<&Tensor>,
        cap: &mut Capturer,
    ) -> Result<Tensor> {
        let (p, c) = (self.params, self.cfg);
        let hn = SharedInput::default();
        let hn = || hn.get(|| p.norm(&l.ff_ln, x));
        p.linear(&l.wo, rows, cap, |cap| {
            let g = p.linear_act(&l.wi[0], rows, c.dense_act, cap, |_| hn())?;
            Ok(if c.gated {
                (g * p.linear(&l.wi[1], rows, cap, |_| hn())?)?
            } else {
                g
            })
        })
    }

    /// T5 attention (no 1/√d scaling): queries from what `xq` computes, keys/values from what
    /// `xkv` computes (each only when needed, see `Capturer::linear`).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        a: &Attn,
        xq: &dyn Fn() -> Result<Tensor>,
        q_rows: Option<&Tensor>,
        xkv: &dyn Fn() -> Result<Tensor>,
        kv_rows: Option<&Tensor>,
        bias: &Tensor,
        cap: &mut Capturer,
    ) -> Result<Tensor> {
        let (h, p) = (self.cfg.num_heads, self.params);
        p.linear(&a.o, q_rows, cap, |cap| {
            let q = split_heads(&p.linear(&a.q, q_rows, cap, |_| xq())?, h)?;
            let k = split_heads(&p.linear(&a.k, kv_rows, cap, |_| xkv())?, h)?;
            let v = split_heads(&p.linear(&a.v, kv_rows, cap, |_| xkv())?, h)?;
            merge_heads(&attend(&q, &k, &v, 1.0, Some(bias))?)
        })
    }

    /// Encoder block `i` (layer `l`), stopping after `stop` when given.
    pub(super) fn encoder_block(
        &self,
        l: &T5Layer,
        i: usize,
        state: &State,
        cap: &mut Capturer,
        stop: Option<SubBlock>,
    ) -> Result<Ran> {
        let T5Extra::Encoder { bias, .. } = state.extra_for("T5")? else {
            return Err(Error::input(format!(
                "encoder block {i} was given a decoder-phase state"
            )));
        };
        let rows = state.rows.as_ref();
        let x = &state.hidden;
        let hn = SharedInput::default();
        let hn = || hn.get(|| self.params.norm(&l.self_ln, x));
        let a = self.attention(&l.self_attn, &hn, rows, &hn, rows, bias, cap)?;
        if stop == Some(SubBlock::SelfAttention) {
            return Ok(Ran::Sub(token_rows(&a, rows)?));
        }
        let x = (a + x)?;
        let m = self.ff(l, &x, rows, cap)?;
        if stop == Some(SubBlock::Mlp) {
            return Ok(Ran::Sub(token_rows(&m, rows)?));
        }
        Ok(Ran::Block(state.with_hidden((m + x)?)))
    }

    /// Decoder block `i` (layer `l`, numbered after the encoder blocks), stopping after `stop`
    /// when given.
    pub(super) fn decoder_block(
        &self,
        l: &T5Layer,
        i: usize,
        state: &State,
        cap: &mut Capturer,
        stop: Option<SubBlock>,
    ) -> Result<Ran> {
        let T5Extra::Decoder {
            self_bias,
            enc_out,
            enc_rows,
            cross_bias,
        } = state.extra_for("T5")?
        else {
            return Err(Error::input(format!(
                "decoder block {} was given an encoder-phase state (run the encoder blocks first)",
                i - self.cfg.num_layers
            )));
        };
        let rows = state.rows.as_ref();
        let x = &state.hidden;
        let hn = SharedInput::default();
        let hn = || hn.get(|| self.params.norm(&l.self_ln, x));
        let a = self.attention(&l.self_attn, &hn, rows, &hn, rows, self_bias, cap)?;
        if stop == Some(SubBlock::SelfAttention) {
            return Ok(Ran::Sub(token_rows(&a, rows)?));
        }
        let x = (a + x)?;
        let (cross_ln, cross) = l
            .cross
            .as_ref()
            .ok_or_else(|| Error::input("decoder block without cross-attention"))?;
        let hn = SharedInput::default();
        let hn = || hn.get(|| self.params.norm(cross_ln, &x));
        let c = self.attention(
            cross,
            &hn,
            rows,
            &|| Ok(enc_out.clone()),
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
        Ok(Ran::Block(state.with_hidden((m + x)?)))
    }
}
