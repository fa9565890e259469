//! The layer-wise post-merge quantization pipeline (the paper's Algorithm 1) and its baselines.
//!
//! Blocks are walked in forward order ([`pipeline`]); what happens inside a block is the
//! method's strategy:
//!
//! - [`sequential`] (RTN, GPTQ, E-PMQ): each task's calibration batches are propagated through
//!   the *current, partially quantized* merged model; for every true-sequential group of
//!   linears the block is run with input capture, one Hessian `H_i = X_i X_iᵀ` is accumulated
//!   per task, every linear of the group is quantized by the chosen [`method::Method`] and
//!   written back, and once the block is done it is re-run so its quantized outputs feed the
//!   next block.
//! - [`awq_strategy`] (AWQ): scales searched on the block's full-precision inputs, folded
//!   exactly into norms or preceding linears ([`awq_fold`]), clipping, RTN; the block's
//!   full-precision outputs feed the next block.
//!
//! A run can keep a checkpoint of its finished blocks and a killed run continue from it with a
//! bit-identical result ([`resume`]).

pub mod alpha_model;
pub mod awq_fold;
pub mod awq_strategy;
pub mod calib;
mod capture;
mod config;
pub mod deviation;
pub mod experts;
pub mod export;
pub mod grams;
mod job;
pub mod method;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod resume;
pub mod sequential;
mod strategy;

pub use calib::CalibSpec;
pub use config::{
    solver_settings, AlphaScope, AutoAlpha, ModelAlphaCriterion, DEFAULT_FORWARD_CACHE_BYTES,
    DEFAULT_HOLDOUT_EVERY, DEFAULT_MODEL_HOLDOUT_EVERY,
};
pub use deviation::DeviationMode;
pub use export::{quantize_and_write, OutputFormat, QuantizeOptions, QuantizeSummary};
pub use method::{AwqOptions, Method};
pub use pipeline::{
    check_inputs, run, run_checkpointed, PipelineConfig, PipelineInputs, PipelineOutput,
};
pub use progress::{NoProgress, Progress};
pub use report::Report;
pub use resume::{checkpoint_dir, Checkpointing};
