//! HF GPTQ checkpoints, as AutoGPTQ / GPTQModel / transformers load them.
//!
//! Per quantized linear `P`: `P.qweight` int32 `[in·b/32, out]`, `P.qzeros` int32
//! `[groups, out·b/32]`, `P.scales` f16 `[groups, out]`, `P.g_idx` int32 `[in]` (and `P.bias` as
//! in the source); every other tensor is kept. `config.json` gains a `quantization_config` and a
//! `quantize_config.json` is written. v1 (`checkpoint_format: "gptq"`) stores zero − 1, v2
//! (`"gptq_v2"`) the true zero (see [`pmq_core::packing`]).
//!
//! - [`GptqSettings`] (`settings`): what `quantization_config` / `quantize_config.json` record.
//! - [`write_gptq`] (`write`): the writer.
//! - [`GptqReader`] (`read`): the reader, dequantizing each quantized linear on demand.
//! - [`dequantize_checkpoint`] (`dequant`): a GPTQ checkpoint rewritten as plain HF safetensors.

mod blocks;
mod dequant;
mod read;
mod settings;
mod write;

pub use dequant::dequantize_checkpoint;
pub use read::GptqReader;
pub use settings::GptqSettings;
pub use write::write_gptq;

use crate::FormatError;
use serde_json::Value;
use std::path::Path;

/// Writes `v` as pretty-printed JSON with a trailing newline (config.json, quantize_config.json).
fn write_json(path: &Path, v: &Value) -> Result<(), FormatError> {
    let text = serde_json::to_string_pretty(v).expect("JSON values serialise");
    std::fs::write(path, text + "\n").map_err(|e| FormatError::file(path, e.to_string()))
}
