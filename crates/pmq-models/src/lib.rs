//! Architecture adapters for post-merge quantization.
//!
//! Each supported family (BERT, CLIP vision tower, T5/FLAN-T5, Llama) is loaded from an HF
//! checkpoint directory (`config.json` + memory-mapped safetensors, f32/f16/bf16, computed in
//! f32 on CPU) and exposed through [`BlockModel`]: an embedding stage, ordered blocks whose
//! linears can be captured and swapped, and a head stage. See [`load_model`]. For AWQ, each
//! adapter also describes where input-channel scales fold exactly ([`BlockModel::awq_layout`],
//! the table in [`scaling`]), runs single sub-blocks ([`BlockModel::sub_block_output`]) and
//! reads/replaces its norm and bias tensors by name ([`BlockModel::tensor`]).
//!
//! Models larger than memory: [`load_model_streamed`] leaves the linears' weights in the
//! memory-mapped checkpoint; a block-by-block pass calls [`BlockModel::load_block`] before a
//! block and [`BlockModel::unload_block`] after it, so only one block's linears are held in f32
//! (a 7B Llama's 27 GB of f32 linears become 0.8 GB at a time). The values are the same.
//!
//! A layer-wise pass (what a GPTQ-style pipeline does per calibration batch):
//!
//! ```no_run
//! use pmq_models::{load_model, BlockModel, Tensor, TextTokenizer};
//! use std::collections::HashMap;
//!
//! # fn quantize(w: Tensor, _h: &Tensor) -> Tensor { w }
//! # fn main() -> pmq_models::Result<()> {
//! let dir = std::path::Path::new("all-MiniLM-L6-v2");
//! let mut model = load_model(dir)?.into_block_model();
//! let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), 256)?;
//! let batch = tok.batch(&["a sentence", "another, longer sentence"])?;
//! let mut state = model.embed(&batch)?;
//! for b in 0..model.num_blocks() {
//!     for group in model.block_groups(b)? {
//!         // X Xᵀ per linear; `x` is [tokens, in_features] with padding removed
//!         let mut hessians: HashMap<String, Tensor> = HashMap::new();
//!         let mut capture = |name: &str, x: &Tensor| -> pmq_models::Result<()> {
//!             hessians.insert(name.to_string(), x.t()?.matmul(x)?);
//!             Ok(())
//!         };
//!         model.block_forward(b, &state, Some(&mut capture))?;
//!         for lin in &group {
//!             let w = model.linear_weight(&lin.name)?;
//!             model.set_linear_weight(&lin.name, quantize(w, &hessians[&lin.name]))?;
//!         }
//!     }
//!     state = model.block_forward(b, &state, None)?; // quantized outputs feed the next block
//! }
//! let last_hidden = model.head(&state)?;
//! # let _ = last_hidden;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod attention;
mod batch;
pub mod bert;
mod capture;
pub mod clip;
pub mod config;
pub mod error;
mod ids;
mod linear;
pub mod llama;
mod loader;
mod model;
mod norm;
mod params;
mod pil_resize;
pub mod pixels;
pub mod scaling;
mod state;
pub mod t5;
mod tensors;
pub mod text;
pub mod weights;

pub use batch::Batch;
pub use bert::{BertConfig, BertModel, Pooling};
pub use capture::{CaptureFn, MemoBudget, OutputMemo};
pub use clip::{ClipVisionConfig, ClipVisionModel};
pub use error::{Error, Result};
pub use ids::pad_sequences;
pub use linear::LinearSpec;
pub use llama::{LlamaConfig, LlamaModel, Rope, RopeScaling};
pub use loader::{detect_family, load_model, load_model_streamed, LoadedModel};
pub use model::{BlockModel, Family};
pub use pixels::ClipImageProcessor;
pub use scaling::{AwqLayout, ScaleFold, ScalingGroup, SubBlock};
pub use state::State;
pub use t5::{T5Config, T5Model};
pub use tensors::with_f32_values;
pub use text::TextTokenizer;
pub use weights::WeightStore;

/// The tensor type of the API (candle's).
pub use candle_core::Tensor;
