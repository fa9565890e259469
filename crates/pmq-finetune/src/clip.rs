//! A differentiable CLIP vision tower for training, built from `candle_core::Var`s named with
//! the checkpoint's HF tensor names (`CLIPModel`, `CLIPVisionModel`,
//! `CLIPVisionModelWithProjection`; the text tower of a `CLIPModel` is not trained).
//!
//! Same computation as [`pmq_models::ClipVisionModel`] (pre-LN ViT):
//!
//! ```text
//! x₀ = LN_pre([c; P ⊛ pixels] + E_pos)              (class token, stride-p patch convolution)
//! x' = x + W_o softmax(q kᵀ / √d_head) v,  q, k, v from LN₁(x)
//! y  = x' + W₂ act(W₁ LN₂(x') + b₁) + b₂
//! e  = W_proj LN_post(y_cls)                          (without W_proj when there is none)
//! ```
//!
//! Softmax is candle-nn's generic `softmax` and LayerNorm `layer_norm_slow` (ops with a
//! backward pass; the fused kernels have none).

use crate::layers::{Lin, Loader, Norm};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, Var, D};
use pmq_models::config::Activation;
use pmq_models::{ClipVisionConfig, WeightStore};
use std::path::Path;

#[derive(Debug)]
struct Layer {
    ln1: Norm,
    q: Lin,
    k: Lin,
    v: Lin,
    out: Lin,
    ln2: Norm,
    fc1: Lin,
    fc2: Lin,
}

/// A trainable CLIP vision tower.
#[derive(Debug)]
pub struct TrainClip {
    cfg: ClipVisionConfig,
    dtype: DType,
    class_embedding: Var,
    patch_embedding: Var,
    position_embedding: Var,
    pre_ln: Norm,
    layers: Vec<Layer>,
    post_ln: Norm,
    projection: Option<Lin>,
    params: Vec<(String, Var)>,
}

impl TrainClip {
    /// Loads `config.json` and the safetensors checkpoint of `dir` in `dtype` (F32 for
    /// training; F64 for checks).
    pub fn load(dir: &Path, dtype: DType) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::F64) {
            bail!("training dtype must be F32 or F64, got {dtype:?}");
        }
        // the inference model parses the config and checks the checkpoint's layout
        let inference = pmq_models::ClipVisionModel::load(dir)
            .with_context(|| format!("loading the CLIP vision tower in {}", dir.display()))?;
        let cfg = inference.config().clone();
        let has_projection = inference.has_projection();
        drop(inference);
        let ws = WeightStore::open_dir(dir)
            .with_context(|| format!("opening the checkpoint in {}", dir.display()))?;
        let prefix = if ws.contains("vision_model.embeddings.patch_embedding.weight") {
            "vision_model."
        } else {
            ""
        };
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let mut ld = Loader {
            ws: &ws,
            dtype,
            prefix,
            params: Vec::new(),
        };
        let g = cfg.grid();
        let class_embedding = ld.var("embeddings.class_embedding", &[h])?;
        let patch_embedding = ld.var(
            "embeddings.patch_embedding.weight",
            &[h, cfg.num_channels, cfg.patch_size, cfg.patch_size],
        )?;
        let position_embedding = ld.var("embeddings.position_embedding.weight", &[g * g + 1, h])?;
        let pre_ln = ld.norm("pre_layrnorm", h, eps)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = format!("encoder.layers.{i}");
            let a = format!("{l}.self_attn");
            layers.push(Layer {
                ln1: ld.norm(&format!("{l}.layer_norm1"), h, eps)?,
                q: ld.lin(&format!("{a}.q_proj"), h, h)?,
                k: ld.lin(&format!("{a}.k_proj"), h, h)?,
                v: ld.lin(&format!("{a}.v_proj"), h, h)?,
                out: ld.lin(&format!("{a}.out_proj"), h, h)?,
                ln2: ld.norm(&format!("{l}.layer_norm2"), h, eps)?,
                fc1: ld.lin(&format!("{l}.mlp.fc1"), h, cfg.intermediate_size)?,
                fc2: ld.lin(&format!("{l}.mlp.fc2"), cfg.intermediate_size, h)?,
            });
        }
        let post_ln = ld.norm("post_layernorm", h, eps)?;
        let projection = if has_projection {
            ld.prefix = "";
            Some(ld.lin_no_bias("visual_projection", h, cfg.projection_dim)?)
        } else {
            None
        };
        Ok(Self {
            cfg,
            dtype,
            class_embedding,
            patch_embedding,
            position_embedding,
            pre_ln,
            layers,
            post_ln,
            projection,
            params: ld.params,
        })
    }

    /// The parsed configuration.
    pub fn config(&self) -> &ClipVisionConfig {
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

    /// Width of the image embeddings.
    pub fn embedding_width(&self) -> usize {
        match &self.projection {
            Some(_) => self.cfg.projection_dim,
            None => self.cfg.hidden_size,
        }
    }

    /// Image embeddings `[b, width]` of preprocessed pixels `[b, C, size, size]`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, ch, hh, ww) = pixels.dims4()?;
        if ch != c.num_channels || hh != c.image_size || ww != c.image_size {
            bail!(
                "pixels are [{b}, {ch}, {hh}, {ww}], the model takes [b, {}, {}, {}]",
                c.num_channels,
                c.image_size,
                c.image_size
            );
        }
        let h = c.hidden_size;
        let x = pixels.to_dtype(self.dtype)?;
        let patches = x
            .conv2d(self.patch_embedding.as_tensor(), 0, c.patch_size, 1, 1)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let cls = self
            .class_embedding
            .as_tensor()
            .reshape((1, 1, h))?
            .broadcast_as((b, 1, h))?;
        let x = Tensor::cat(&[&cls, &patches], 1)?
            .broadcast_add(self.position_embedding.as_tensor())?;
        let mut x = self.pre_ln.forward(&x)?;
        for l in &self.layers {
            x = self.layer_forward(l, &x)?;
        }
        let pooled = self.post_ln.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)?;
        match &self.projection {
            Some(p) => p.forward(&pooled),
            None => Ok(pooled),
        }
    }

    fn layer_forward(&self, l: &Layer, x: &Tensor) -> Result<Tensor> {
        let heads = self.cfg.num_attention_heads;
        let (b, s, h) = x.dims3()?;
        let d = h / heads;
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, s, heads, d))?.transpose(1, 2)?.contiguous()?)
        };
        let hn = l.ln1.forward(x)?;
        let q = split(l.q.forward(&hn)?)?;
        let k = split(l.k.forward(&hn)?)?;
        let v = split(l.v.forward(&hn)?)?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? * (1.0 / (d as f64).sqrt()))?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, s, h))?;
        let x = (x + l.out.forward(&ctx)?)?;
        let m = activation(self.cfg.hidden_act, &l.fc1.forward(&l.ln2.forward(&x)?)?)?;
        Ok((&x + l.fc2.forward(&m)?)?)
    }
}

/// The activation with a backward pass (quick GELU as `x / (1 + e^{−1.702 x})`).
fn activation(act: Activation, x: &Tensor) -> Result<Tensor> {
    Ok(match act {
        Activation::QuickGelu => (x / ((x * -1.702)?.exp()? + 1.0)?)?,
        other => other.forward(x)?,
    })
}
