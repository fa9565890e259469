//! The layer-wise post-merge quantization pipeline (the paper's Algorithm 1) and its baselines.
//!
//! Blocks are walked in forward order. Each task's calibration batches are propagated through
//! the *current, partially quantized* merged model; for every true-sequential group of linears
//! the block is run with input capture, one Hessian `H_i = X_i X_iᵀ` is accumulated per task,
//! every linear of the group is quantized by the chosen [`method::Method`] and written back, and
//! once the block is done it is re-run so its quantized outputs feed the next block.

pub mod calib;
pub mod deviation;
pub mod experts;
pub mod method;
pub mod pipeline;
pub mod report;

pub use calib::CalibSpec;
pub use method::Method;
pub use pipeline::{run, PipelineConfig, PipelineInputs, PipelineOutput};
pub use report::Report;
