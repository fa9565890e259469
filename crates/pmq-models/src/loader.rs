//! Family detection from `config.json` and loading into a [`LoadedModel`].

use crate::config::ConfigObject;
use crate::error::{Error, Result};
use crate::model::{BlockModel, Family};
use crate::weights::WeightStore;
use crate::{BertModel, ClipVisionModel, LlamaModel, T5Model};
use std::path::Path;

/// A loaded model of any supported family.
#[derive(Debug)]
pub enum LoadedModel {
    /// BERT encoder.
    Bert(BertModel),
    /// Llama causal LM.
    Llama(LlamaModel),
    /// CLIP vision tower.
    ClipVision(ClipVisionModel),
    /// T5 encoder-decoder.
    T5(T5Model),
}

impl LoadedModel {
    /// The model as a block-wise model.
    pub fn as_block_model(&self) -> &dyn BlockModel {
        match self {
            Self::Bert(m) => m,
            Self::Llama(m) => m,
            Self::T5(m) => m,
            Self::ClipVision(m) => m,
        }
    }

    /// The model as a mutable block-wise model (to swap weights).
    pub fn as_block_model_mut(&mut self) -> &mut dyn BlockModel {
        match self {
            Self::Bert(m) => m,
            Self::Llama(m) => m,
            Self::T5(m) => m,
            Self::ClipVision(m) => m,
        }
    }

    /// Converts into a boxed block-wise model.
    pub fn into_block_model(self) -> Box<dyn BlockModel> {
        match self {
            Self::Bert(m) => Box::new(m),
            Self::Llama(m) => Box::new(m),
            Self::T5(m) => Box::new(m),
            Self::ClipVision(m) => Box::new(m),
        }
    }
}

/// Detects the family from `architectures` (first entry) or else `model_type`.
pub fn detect_family(c: &ConfigObject) -> Result<Family> {
    let archs = c.architectures()?;
    let model_type = c.str_opt("model_type")?;
    let unknown = |found: String| Error::UnknownArchitecture {
        file: c.file().to_path_buf(),
        found,
    };
    if let Some(a) = archs.first() {
        return match a.as_str() {
            a if a.starts_with("Bert") && !a.contains("LMHead") && !a.contains("Generation") => {
                Ok(Family::Bert)
            }
            "CLIPModel" | "CLIPVisionModel" | "CLIPVisionModelWithProjection" => {
                Ok(Family::ClipVision)
            }
            "T5ForConditionalGeneration" => Ok(Family::T5),
            "LlamaForCausalLM" => Ok(Family::Llama),
            other => Err(unknown(format!("architectures = [\"{other}\"]"))),
        };
    }
    match model_type.as_deref() {
        Some("bert") => Ok(Family::Bert),
        Some("clip") | Some("clip_vision_model") => Ok(Family::ClipVision),
        Some("t5") => Ok(Family::T5),
        Some("llama") => Ok(Family::Llama),
        Some(other) => Err(unknown(format!("model_type = \"{other}\""))),
        None => Err(unknown("no `architectures` and no `model_type`".into())),
    }
}

/// Loads the model in `dir` (`config.json` + `model.safetensors` or a sharded index), every
/// weight in memory as f32.
pub fn load_model(dir: &Path) -> Result<LoadedModel> {
    load_from(dir, false)
}

/// [`load_model`], with the quantizable linears' weights left in the memory-mapped checkpoint
/// (each read once to check it) until their block is loaded ([`BlockModel::load_block`]) and
/// given back when it is unloaded ([`BlockModel::unload_block`]): a block-by-block pass needs
/// memory for one block's linears in f32, not the whole model's. Results are the same.
pub fn load_model_streamed(dir: &Path) -> Result<LoadedModel> {
    load_from(dir, true)
}

fn load_from(dir: &Path, streamed: bool) -> Result<LoadedModel> {
    let c = ConfigObject::read(&dir.join("config.json"))?;
    let family = detect_family(&c)?;
    let ws = match streamed {
        true => WeightStore::open_dir_streamed(dir)?,
        false => WeightStore::open_dir(dir)?,
    };
    match family {
        Family::Bert => Ok(LoadedModel::Bert(BertModel::from_parts(&c, &ws)?)),
        Family::Llama => Ok(LoadedModel::Llama(LlamaModel::from_parts(&c, &ws)?)),
        Family::T5 => Ok(LoadedModel::T5(T5Model::from_parts(&c, &ws)?)),
        Family::ClipVision => Ok(LoadedModel::ClipVision(ClipVisionModel::from_parts(
            &c, &ws,
        )?)),
    }
}
