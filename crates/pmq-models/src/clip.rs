//! The vision tower of CLIP: `CLIPVisionModel`, `CLIPVisionModelWithProjection`, and the
//! `vision_model.*` + `visual_projection` part of a full `CLIPModel` checkpoint (ViT-B/32,
//! ViT-L/14, ...). Pre-LN ViT blocks; the image embedding is the class token after
//! `post_layernorm`, projected by `visual_projection` when the checkpoint has one.

use crate::attention::{attend, merge_heads, split_heads};
use crate::batch::Batch;
use crate::capture::{CaptureFn, Capturer, OutputMemo, SharedInput};
use crate::config::{Activation, ConfigObject};
use crate::error::{Error, Result};
use crate::linear::LinearSpec;
use crate::model::{BlockModel, Blocks, Family, ModelParts, Ran};
use crate::params::Params;
use crate::scaling::{AwqLayout, ScaleFold, ScalingGroup, SubBlock};
use crate::state::State;
use crate::tensors::token_rows;
use crate::weights::WeightStore;
use candle_core::{DType, IndexOp, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, LayerNorm};
use std::path::Path;

/// The `CLIPVisionConfig` fields (transformers defaults) plus the projection size.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipVisionConfig {
    /// `hidden_size` (768).
    pub hidden_size: usize,
    /// `intermediate_size` (3072).
    pub intermediate_size: usize,
    /// `num_hidden_layers` (12).
    pub num_hidden_layers: usize,
    /// `num_attention_heads` (12).
    pub num_attention_heads: usize,
    /// `num_channels` (3).
    pub num_channels: usize,
    /// `image_size` (224).
    pub image_size: usize,
    /// `patch_size` (32).
    pub patch_size: usize,
    /// `hidden_act` ("quick_gelu").
    pub hidden_act: Activation,
    /// `layer_norm_eps` (1e-5).
    pub layer_norm_eps: f64,
    /// `projection_dim` (512; top-level for `CLIPModel`, in the vision config otherwise).
    pub projection_dim: usize,
}

impl ClipVisionConfig {
    /// Reads a vision config; `projection_dim` comes from `proj_source` (the top-level config
    /// of a `CLIPModel`, the vision config itself otherwise).
    pub fn from_config(c: &ConfigObject, proj_source: &ConfigObject) -> Result<Self> {
        let cfg = Self {
            hidden_size: c.positive("hidden_size", c.usize_or("hidden_size", 768)?)?,
            intermediate_size: c.usize_or("intermediate_size", 3072)?,
            num_hidden_layers: c
                .positive("num_hidden_layers", c.usize_or("num_hidden_layers", 12)?)?,
            num_attention_heads: c.positive(
                "num_attention_heads",
                c.usize_or("num_attention_heads", 12)?,
            )?,
            num_channels: c.positive("num_channels", c.usize_or("num_channels", 3)?)?,
            image_size: c.positive("image_size", c.usize_or("image_size", 224)?)?,
            patch_size: c.positive("patch_size", c.usize_or("patch_size", 32)?)?,
            hidden_act: c.activation_or("hidden_act", "quick_gelu")?,
            layer_norm_eps: c.f64_or("layer_norm_eps", 1e-5)?,
            projection_dim: proj_source.usize_or("projection_dim", 512)?,
        };
        c.divisible(
            "hidden_size",
            cfg.hidden_size,
            "num_attention_heads",
            cfg.num_attention_heads,
        )?;
        if cfg.patch_size > cfg.image_size {
            return Err(c.err(
                "patch_size",
                format!(
                    "{} exceeds `{}` = {}",
                    cfg.patch_size,
                    c.field_name("image_size"),
                    cfg.image_size
                ),
            ));
        }
        Ok(cfg)
    }

    /// Number of patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// CLIP's part of a block state: nothing beyond the hidden states (no padding, no mask).
#[derive(Debug)]
struct ClipExtra;

/// The HF names of one encoder layer's LayerNorms and linears.
#[derive(Debug, Clone)]
struct ClipLayer {
    ln1: String,
    q: String,
    k: String,
    v: String,
    out: String,
    ln2: String,
    fc1: String,
    fc2: String,
}

/// A CLIP vision tower split into blocks.
#[derive(Debug, Clone)]
pub struct ClipVisionModel {
    cfg: ClipVisionConfig,
    class_embedding: Tensor,
    patch_embedding: Conv2d,
    position_embedding: Tensor,
    pre_ln: LayerNorm,
    layers: Blocks<ClipLayer>,
    post_ln: LayerNorm,
    projection: Option<candle_nn::Linear>,
    params: Params,
}

impl ClipVisionModel {
    /// Loads `config.json` and the safetensors checkpoint from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let c = ConfigObject::read(&dir.join("config.json"))?;
        let ws = WeightStore::open_dir(dir)?;
        Self::from_parts(&c, &ws)
    }

    /// Builds the vision tower from a parsed config (a `CLIPModel` config with a nested
    /// `vision_config`, or a vision-only config) and an open checkpoint.
    pub fn from_parts(c: &ConfigObject, ws: &WeightStore) -> Result<Self> {
        let archs = c.architectures()?;
        let full_clip = archs.iter().any(|a| a == "CLIPModel")
            || c.str_opt("model_type")?.as_deref() == Some("clip");
        let cfg = if full_clip {
            let vc = c.object("vision_config")?.ok_or_else(|| {
                c.err(
                    "vision_config",
                    "`architectures`/`model_type` name a CLIPModel, whose config needs a \
                     `vision_config` object",
                )
            })?;
            ClipVisionConfig::from_config(&vc, c)?
        } else {
            ClipVisionConfig::from_config(c, c)?
        };
        let h = cfg.hidden_size;
        // transformers 4 saves every vision tower under `vision_model.`; a `CLIPVisionModel`
        // saved by transformers 5 has its tensors at the root
        let p = if ws.contains("vision_model.embeddings.patch_embedding.weight") {
            "vision_model."
        } else if ws.contains("embeddings.patch_embedding.weight") {
            ""
        } else {
            return Err(Error::MissingTensor {
                name:
                    "vision_model.embeddings.patch_embedding.weight (or, saved by transformers 5 \
                       as a CLIPVisionModel, embeddings.patch_embedding.weight)"
                        .into(),
                location: ws.source().to_string(),
            });
        };
        let ln = |n: &str| -> Result<LayerNorm> {
            Ok(LayerNorm::new(
                ws.get(&format!("{n}.weight"), &[h])?,
                ws.get(&format!("{n}.bias"), &[h])?,
                cfg.layer_norm_eps,
            ))
        };
        let num_positions = cfg.grid() * cfg.grid() + 1;
        let patch_w = ws.get(
            &format!("{p}embeddings.patch_embedding.weight"),
            &[h, cfg.num_channels, cfg.patch_size, cfg.patch_size],
        )?;
        let patch_embedding = Conv2d::new(
            patch_w,
            None,
            Conv2dConfig {
                stride: cfg.patch_size,
                ..Default::default()
            },
        );
        let mut params = Params::default();
        let eps = cfg.layer_norm_eps;
        let layer_field = if full_clip {
            "vision_config.num_hidden_layers"
        } else {
            "num_hidden_layers"
        };
        c.check_layer_count(layer_field, cfg.num_hidden_layers, ws, |i| {
            format!("{p}encoder.layers.{i}.self_attn.q_proj.weight")
        })?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = format!("{p}encoder.layers.{i}");
            let norms = &mut params.norms;
            let layer = ClipLayer {
                ln1: norms.load_layer_norm(ws, &format!("{l}.layer_norm1"), h, eps)?,
                q: format!("{l}.self_attn.q_proj"),
                k: format!("{l}.self_attn.k_proj"),
                v: format!("{l}.self_attn.v_proj"),
                out: format!("{l}.self_attn.out_proj"),
                ln2: norms.load_layer_norm(ws, &format!("{l}.layer_norm2"), h, eps)?,
                fc1: format!("{l}.mlp.fc1"),
                fc2: format!("{l}.mlp.fc2"),
            };
            let linears = &mut params.linears;
            for n in [&layer.q, &layer.k, &layer.v, &layer.out] {
                linears.load(ws, n, h, h, true)?;
            }
            linears.load(ws, &layer.fc1, h, cfg.intermediate_size, true)?;
            linears.load(ws, &layer.fc2, cfg.intermediate_size, h, true)?;
            layers.push(layer);
        }
        let has_projection = full_clip
            || archs.iter().any(|a| a == "CLIPVisionModelWithProjection")
            || ws.contains("visual_projection.weight");
        let projection = if has_projection {
            Some(candle_nn::Linear::new(
                ws.get("visual_projection.weight", &[cfg.projection_dim, h])?,
                None,
            ))
        } else {
            None
        };
        Ok(Self {
            class_embedding: ws.get(&format!("{p}embeddings.class_embedding"), &[h])?,
            patch_embedding,
            position_embedding: ws.get(
                &format!("{p}embeddings.position_embedding.weight"),
                &[num_positions, h],
            )?,
            pre_ln: ln(&format!("{p}pre_layrnorm"))?,
            post_ln: ln(&format!("{p}post_layernorm"))?,
            cfg,
            layers: layers.into(),
            projection,
            params,
        })
    }

    /// The parsed configuration.
    pub fn config(&self) -> &ClipVisionConfig {
        &self.cfg
    }

    /// Whether the checkpoint has a `visual_projection`.
    pub fn has_projection(&self) -> bool {
        self.projection.is_some()
    }

    /// Image embeddings `[b, projection_dim]` (or the pooled output `[b, hidden]` without a
    /// projection) of preprocessed pixels `[b, C, image_size, image_size]`.
    pub fn image_embedding(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.forward(&Batch::from_pixels(pixel_values.clone()))
    }
}

impl ModelParts for ClipVisionModel {
    fn params(&self) -> &Params {
        &self.params
    }

    fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }

    /// The pre-LN block, stopping after `stop` when given.
    fn run_block(
        &self,
        block: usize,
        state: &State,
        capture: Option<&mut CaptureFn<'_>>,
        memo: Option<&mut OutputMemo>,
        stop: Option<SubBlock>,
    ) -> Result<Ran> {
        let l = self.layers.get(block)?;
        state.extra_for::<ClipExtra>("CLIP vision")?;
        let mut cap = Capturer::with_memo(capture, memo);
        let (p, c) = (&self.params, &self.cfg);
        let heads = c.num_attention_heads;
        let x = &state.hidden;
        // each linear's input is computed only when needed (see `Capturer::linear`)
        let hn = SharedInput::default();
        let hn = || hn.get(|| p.norm(&l.ln1, x));
        let a = p.linear(&l.out, None, &mut cap, |cap| {
            let q = split_heads(&p.linear(&l.q, None, cap, |_| hn())?, heads)?;
            let k = split_heads(&p.linear(&l.k, None, cap, |_| hn())?, heads)?;
            let v = split_heads(&p.linear(&l.v, None, cap, |_| hn())?, heads)?;
            let scale = 1.0 / ((c.hidden_size / heads) as f64).sqrt();
            merge_heads(&attend(&q, &k, &v, scale, None)?)
        })?;
        if stop == Some(SubBlock::SelfAttention) {
            return Ok(Ran::Sub(token_rows(&a, None)?));
        }
        let x = (a + x)?;
        let m = p.linear(&l.fc2, None, &mut cap, |cap| {
            p.linear_act(&l.fc1, None, c.hidden_act, cap, |_| p.norm(&l.ln2, &x))
        })?;
        if stop == Some(SubBlock::Mlp) {
            return Ok(Ran::Sub(token_rows(&m, None)?));
        }
        Ok(Ran::Block(state.with_hidden((m + x)?)))
    }
}

impl BlockModel for ClipVisionModel {
    fn family(&self) -> Family {
        Family::ClipVision
    }

    fn num_blocks(&self) -> usize {
        self.layers.len()
    }

    fn block_groups(&self, block: usize) -> Result<Vec<Vec<LinearSpec>>> {
        let l = self.layers.get(block)?;
        let p = &self.params;
        Ok(vec![
            p.group(&[&l.q, &l.k, &l.v])?,
            p.group(&[&l.out])?,
            p.group(&[&l.fc1])?,
            p.group(&[&l.fc2])?,
        ])
    }

    fn embed(&self, batch: &Batch) -> Result<State> {
        let px = batch
            .pixel_values
            .as_ref()
            .ok_or_else(|| Error::input("CLIP vision needs `pixel_values`"))?;
        let c = &self.cfg;
        let dims = px.dims();
        if dims.len() != 4
            || dims[1] != c.num_channels
            || dims[2] != c.image_size
            || dims[3] != c.image_size
        {
            return Err(Error::input(format!(
                "pixel_values has shape {dims:?}, expected [batch, {}, {}, {}]",
                c.num_channels, c.image_size, c.image_size
            )));
        }
        let px = px.to_dtype(DType::F32)?;
        let b = dims[0];
        let patches = self
            .patch_embedding
            .forward(&px)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let cls = self
            .class_embedding
            .reshape((1, 1, c.hidden_size))?
            .broadcast_as((b, 1, c.hidden_size))?;
        let x = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.position_embedding)?;
        let x = self.pre_ln.forward(&x)?;
        State::new(x, None, |_| Ok(ClipExtra))
    }

    fn head(&self, state: &State) -> Result<Tensor> {
        let pooled = self
            .post_ln
            .forward(&state.hidden.i((.., 0, ..))?.contiguous()?)?;
        match &self.projection {
            Some(p) => Ok(p.forward(&pooled)?),
            None => Ok(pooled),
        }
    }

    /// Pre-LN: both LayerNorms fold; v → out_proj folds; quick_gelu blocks fc1 → fc2.
    fn awq_layout(&self, block: usize) -> Result<AwqLayout> {
        let l = self.layers.get(block)?;
        Ok(AwqLayout {
            groups: vec![
                ScalingGroup::folded(
                    &[&l.q, &l.k, &l.v],
                    ScaleFold::norm(&l.ln1, true),
                    Some(SubBlock::SelfAttention),
                ),
                ScalingGroup::folded(&[&l.out], ScaleFold::linear(&l.v, true), None),
                ScalingGroup::folded(
                    &[&l.fc1],
                    ScaleFold::norm(&l.ln2, true),
                    Some(SubBlock::Mlp),
                ),
                ScalingGroup::unscaled(&[&l.fc2], None),
            ],
            skip_clip: vec![l.q.clone(), l.k.clone()],
        })
    }
}
