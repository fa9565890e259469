//! Image embeddings of a CLIP vision tower: `e = P · LN_post(h_cls)`, the class token after
//! `post_layernorm`, projected by `visual_projection` when the checkpoint has one (CLIP's image
//! embedding; `CLIPVisionModel` checkpoints without a projection give the pooled output).
//! Images are preprocessed as transformers' CLIP processor does ([`ClipImageProcessor`], the
//! directory's `preprocessor_config.json` or the OpenAI defaults).

use crate::model_dir::ModelDir;
use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use pmq_models::{ClipImageProcessor, ClipVisionModel, LoadedModel};
use std::path::{Path, PathBuf};

/// A loaded CLIP vision tower with its image processor.
pub struct ImageEncoder {
    model: ClipVisionModel,
    processor: ClipImageProcessor,
    source: PathBuf,
    _model_dir: ModelDir,
}

impl ImageEncoder {
    /// Loads the CLIP vision tower in `dir` (HF directory or pmq GPTQ checkpoint).
    pub fn open(dir: &Path) -> Result<Self> {
        let md = ModelDir::open(dir)?;
        let model = match md.load()? {
            LoadedModel::ClipVision(m) => m,
            _ => bail!(
                "{}: image classification needs a CLIP vision tower (CLIPModel, \
                 CLIPVisionModel or CLIPVisionModelWithProjection)",
                dir.display()
            ),
        };
        let size = model.config().image_size as u32;
        // the processor config sits next to the weights, or in the source of a GPTQ checkpoint
        let proc_dir = [&md.dir, &md.source]
            .into_iter()
            .find(|d| d.join("preprocessor_config.json").is_file())
            .unwrap_or(&md.dir);
        let processor = ClipImageProcessor::from_dir(proc_dir, size)
            .with_context(|| format!("reading the image processor of {}", dir.display()))?;
        Ok(Self {
            model,
            processor,
            source: dir.to_path_buf(),
            _model_dir: md,
        })
    }

    /// Width of the embeddings (`projection_dim` with a projection, else `hidden_size`).
    pub fn hidden(&self) -> usize {
        let c = self.model.config();
        if self.model.has_projection() {
            c.projection_dim
        } else {
            c.hidden_size
        }
    }

    /// The model.
    pub fn model(&self) -> &ClipVisionModel {
        &self.model
    }

    /// The image processor.
    pub fn processor(&self) -> &ClipImageProcessor {
        &self.processor
    }

    /// Embeddings of the image files `paths`, in input order, `batch_size` images per forward;
    /// `progress` advances by one per image.
    pub fn embed(
        &self,
        paths: &[&Path],
        batch_size: usize,
        progress: Option<&ProgressBar>,
    ) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(batch_size.max(1)) {
            let px = self.processor.load_batch(chunk)?;
            let emb = self.model.image_embedding(&px)?;
            for (p, row) in chunk.iter().zip(emb.to_vec2::<f32>()?) {
                if row.iter().any(|v| !v.is_finite()) {
                    bail!(
                        "the model {} gives a non-finite image embedding (NaN or ±inf) for {}: \
                         its weights or activations overflow; no accuracy can be measured",
                        self.source.display(),
                        p.display()
                    );
                }
                out.push(row);
            }
            if let Some(pb) = progress {
                pb.inc(chunk.len() as u64);
            }
        }
        Ok(out)
    }
}
