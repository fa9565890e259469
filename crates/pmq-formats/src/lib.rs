//! Quantized checkpoint formats.
//!
//! - [`PackedLinear`]: the compact result of quantizing one linear layer (codes, scales, zeros,
//!   g_idx), what the pipeline keeps per layer until the model is written.
//! - [`fake_quant`]: the dequantized model as ordinary HF safetensors (loads anywhere).
//! - [`gptq_checkpoint`]: HF GPTQ checkpoints (`qweight`/`qzeros`/`scales`/`g_idx` per quantized
//!   linear, `quantization_config` in config.json, quantize_config.json), v1 or v2 zero points,
//!   and a reader that dequantizes them back.
//!
//! - [`gguf`]: GGUF files for llama.cpp (Q4_0 / Q4_1 / Q8_0 blocks, the converter's names and
//!   keys) for BERT and Llama checkpoints.
//! - [`replaced`]: unquantized tensors a method changed (AWQ's folded norms), written instead
//!   of the source's by both writers.
//!
//! The writers take a [`QuantizedModel`] (what to write) and a [`Destination`] (where), and
//! stream tensor by tensor into a temporary directory renamed into place at the end.

mod error;
pub mod fake_quant;
pub mod gguf;
pub mod gptq_checkpoint;
mod packed_linear;
mod quantized_model;
pub mod replaced;

pub use error::FormatError;
pub use packed_linear::PackedLinear;
pub use quantized_model::{Destination, QuantizedModel};
pub use replaced::ReplacedTensors;
