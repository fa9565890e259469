//! Streaming tensor store over memory-mapped safetensors files, and atomic writers.
//!
//! * [`TensorStore`] opens one `.safetensors` file or a Hugging Face model directory (sharded via
//!   `model.safetensors.index.json` or plain `*.safetensors` files), memory-maps every file and
//!   hands out one tensor at a time (zero-copy bytes or converted `f32`/`f64` values).
//! * [`SafetensorsWriter`] streams tensors into a temporary file next to the destination and
//!   renames it into place only when every declared tensor was written.
//! * [`AtomicDir`] does the same for whole output directories.
//!
//! Every error names the file and/or tensor it is about.

mod aliases;
mod atomic_dir;
mod aux_files;
mod convert;
pub mod debris;
mod error;
mod layout;
mod store;
mod writer;

pub use aliases::{checkpoint_aliases, Alias};
pub use atomic_dir::{check_output_dir, check_output_location, AtomicDir};
pub use aux_files::{copy_non_weight_files, is_weight_file};
pub use convert::{
    decode_f32, decode_f64, encode_f32, f32_bytes, i32_bytes, is_float, parse_dtype,
};
pub use debris::TempDir;
pub use error::IoError;
pub use layout::{INDEX_FILE, SINGLE_FILE};
pub use safetensors::Dtype;
pub use store::TensorStore;
pub use writer::{write_file_atomic, write_safetensors, SafetensorsWriter};

/// Name, element type and shape of one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl TensorInfo {
    pub fn new(name: impl Into<String>, dtype: Dtype, shape: Vec<usize>) -> Self {
        Self {
            name: name.into(),
            dtype,
            shape,
        }
    }

    /// Number of elements (1 for a scalar with shape `[]`).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of the tensor's data in bytes, `None` on overflow or a sub-byte total.
    pub fn byte_len(&self) -> Option<usize> {
        let n = self
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
        let bits = n.checked_mul(self.dtype.bitsize())?;
        bits.is_multiple_of(8).then_some(bits / 8)
    }
}

/// Why the checkpoint directory `dir` looks GPTQ-quantized (packed integer codes instead of
/// float weights), or `None`: it has a `quantize_config.json`, its `config.json` has a
/// `quantization_config`, or it stores packed `*.qweight` tensors.
pub fn gptq_evidence(dir: &std::path::Path) -> Option<String> {
    if dir.join("quantize_config.json").is_file() {
        return Some("it has a quantize_config.json".into());
    }
    let config = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    if config
        .as_ref()
        .and_then(|c| c.get("quantization_config"))
        .is_some()
    {
        return Some("its config.json has a quantization_config".into());
    }
    let store = TensorStore::open_dir(dir).ok()?;
    let packed = store
        .names()
        .into_iter()
        .find(|n| n.ends_with(".qweight"))?;
    Some(format!("it stores packed GPTQ tensors such as `{packed}`"))
}

/// The message for a GPTQ-quantized checkpoint given where full-precision weights are needed.
pub fn gptq_refusal(dir: &std::path::Path, evidence: &str, role: &str) -> String {
    format!(
        "{} is a GPTQ-quantized checkpoint ({evidence}): {role} must be a full-precision model \
         (float weights); give the model it was quantized from",
        dir.display()
    )
}
