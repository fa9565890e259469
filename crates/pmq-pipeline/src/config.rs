//! What to quantize with what, and how: the inputs and settings of a pipeline run.

use crate::calib::CalibSpec;
use crate::deviation::DeviationMode;
use crate::method::Method;
use candle_core::DType;
use pmq_core::gptq::GptqConfig;
use std::path::PathBuf;

/// What to quantize with what.
#[derive(Clone, Debug)]
pub struct PipelineInputs {
    /// The merged model (HF directory).
    pub model_dir: PathBuf,
    /// Expert checkpoints, expert i paired with calibration task i.
    pub experts: Vec<PathBuf>,
    /// One calibration file per task.
    pub calib: Vec<CalibSpec>,
}

/// How to quantize.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub method: Method,
    /// Grid, damping, block size, act-order, static groups.
    pub gptq: GptqConfig,
    pub samples_per_task: usize,
    pub batch_size: usize,
    pub max_seq_len: usize,
    pub show_progress: bool,
    /// Quantize a block's groups of linears one after the other, each on inputs captured
    /// after the previous groups were quantized (GPTQ's `true_sequential`); `false`: one
    /// capture serves the whole block.
    pub true_sequential: bool,
    /// How much of the Eq. 9 deviation split to measure.
    pub deviation: DeviationMode,
    /// Storage of the calibration states kept between blocks (F32, BF16 or F16); forward
    /// passes always compute in f32.
    pub state_dtype: DType,
}
