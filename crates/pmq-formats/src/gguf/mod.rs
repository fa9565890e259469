//! GGUF files for llama.cpp: one `model.gguf` with the quantized linears in ggml's Q4_0 / Q4_1 /
//! Q8_0 blocks and every other tensor in F32 (or F16), named and described as llama.cpp's
//! `convert_hf_to_gguf.py` would name and describe the source checkpoint, for `bert`, `llama`
//! and `t5` checkpoints.
//!
//! - [`blocks`]: the block layouts ([`GgufType`], [`pack_rows`]).
//! - [`names`]: HF → GGUF tensor names and Llama's rotary row permutation.
//! - [`metadata`]: the model keys from `config.json`.
//! - `tokenizer`: the `tokenizer.*` keys from `tokenizer.json` (WordPiece, byte-level BPE) or
//!   T5's SentencePiece model.
//! - `template`: keys copied from a GGUF the converter wrote for the same model.
//! - [`write_gguf`] (`write`): the writer.

pub mod blocks;
pub mod metadata;
pub mod names;
mod template;
mod tokenizer;
mod write;

pub use blocks::{pack_rows, BlockError, GgufType, BLOCK};
pub use names::{map_name, rope_permutation, Arch, Mapped, RopePermute};
pub use write::write_gguf;

use std::path::PathBuf;

/// How tensors that are not quantized are stored (1-D tensors are always F32, as the converter
/// stores them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unquantized {
    #[default]
    F32,
    F16,
}

/// Options of [`write_gguf`].
#[derive(Clone, Debug, Default)]
pub struct GgufOptions {
    /// Storage of the tensors that are not quantized.
    pub unquantized: Unquantized,
    /// A GGUF file that llama.cpp's converter produced for the same (unquantized) model: its
    /// `tokenizer.*` keys, and every key pmq does not write itself, are copied. Its
    /// `general.architecture` must match.
    pub template: Option<PathBuf>,
    /// `general.name` (default: the source directory's name).
    pub name: Option<String>,
}
