//! Fixtures for pmq's tests, in one place so every suite builds its checkpoints the same way.
//!
//! - [`Ckpt`]: a random checkpoint under construction, written as HF `config.json` +
//!   `model.safetensors`.
//! - [`families`]: tiny checkpoints of every supported family with real HF tensor names and
//!   real-looking configs (BERT, CLIP vision, Llama with and without GQA/biases, T5 with ReLU and
//!   gated-GELU feed-forwards), and "experts" near a base.
//! - [`fault`]: the harness of the fault suites (seeded proptest draws, per-case panic,
//!   input and debris checks, figures).
//! - [`rel_err`]: the parity metric, max |a − b| / max |b|.
//! - [`text`]: a word-level `tokenizer.json` and calibration files (JSONL or images).
//! - [`tiny_bert`]: a configurable tiny BERT and a synthetic two-class task whose label is
//!   carried by marker words, for fine-tuning and evaluation tests.
//!
//! Test-only: every function panics on I/O errors instead of returning them.

pub mod calib;
pub mod checkpoint;
pub mod compare;
pub mod families;
pub mod fault;
pub mod text;
pub mod tiny_bert;

pub use calib::{write_calib, write_image_folder};
pub use checkpoint::Ckpt;
pub use compare::rel_err;
pub use families::{write_model, write_perturbed, Fam, ALL};
pub use text::{t5_style_tokenizer, tokenizer_json, WORDS};
pub use tiny_bert::{synthetic_task, write_tiny_bert, TinyBert};
