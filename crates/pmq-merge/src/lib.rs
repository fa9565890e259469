//! Model merging over streaming tensor stores: simple average, task arithmetic, TIES, DARE,
//! WUDI and RegMean (from Gram files, [`gram_file`]), with FusionBench defaults.
//!
//! [`merge`] reads a base checkpoint W₀ and K experts W₁..W_K (Hugging Face directories of
//! f32/f16/bf16 safetensors, sharded or not, dtypes may differ), merges the selected float
//! tensors one at a time (memory ~ K × one tensor), and writes `model.safetensors`,
//! `merge_report.json` and the base's non-weight files into an output directory that only
//! appears once complete. Unselected and non-float tensors are copied from the base.
//!
//! The per-tensor math of every method is public in [`methods`] and [`wudi_solver`].

mod checkpoint;
mod engine;
mod error;
pub mod gram_file;
mod inputs;
pub mod kth;
pub mod methods;
mod options;
mod plan;
mod progress;
mod report;
pub mod rng;
mod select;
pub mod wudi_solver;

pub use engine::{merge, REPORT_FILE, WEIGHTS_FILE};
pub use error::MergeError;
pub use options::{
    DareOptions, DareRescale, MergeConfig, Method, RegMeanOptions, TiesMerge, TiesOptions,
    TiesTrim, WudiOptions, WudiOther, WudiSolver, DEFAULT_LAMBDA,
};
pub use pmq_io::is_weight_file;
pub use progress::{NoProgress, Progress};
pub use report::MergeReport;
pub use select::Selector;
