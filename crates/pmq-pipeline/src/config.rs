//! What to quantize with what, and how: the inputs and settings of a pipeline run.

use crate::calib::CalibSpec;
use crate::deviation::DeviationMode;
use crate::method::Method;
use candle_core::DType;
use pmq_core::damping::Damping;
use pmq_core::epmq::FoldPrecision;
use pmq_core::gptq::GptqConfig;
use pmq_core::QuantGrid;
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

/// The solver settings as reports list them (the one place they are spelled out): grid,
/// damping, lazy block, act-order, working precision.
pub fn solver_settings(g: &GptqConfig) -> serde_json::Value {
    serde_json::json!({
        "bits": g.grid.bits,
        "group_size": g.grid.group_size_i64(),
        "sym": g.grid.sym,
        "act_order": g.act_order,
        "static_groups": g.static_groups,
        "damp": g.damping.percdamp,
        "block_size": g.block_size,
        "work_precision": g.precision,
    })
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
    /// Quantize a block's groups of linears one after the other, each on inputs captured
    /// after the previous groups were quantized (GPTQ's `true_sequential`); `false`: one
    /// capture serves the whole block.
    pub true_sequential: bool,
    /// How much of the Eq. 9 deviation split to measure.
    pub deviation: DeviationMode,
    /// Storage of the calibration states kept between blocks (F32, BF16 or F16); forward
    /// passes always compute in f32.
    pub state_dtype: DType,
    /// Memory for the outputs of a block's already quantized linears, kept between the
    /// block's capture passes and reused instead of recomputed ([`pmq_models::OutputMemo`]);
    /// 0 recomputes everything. Results do not depend on it.
    pub forward_cache_bytes: usize,
    /// Benchmark aid: time a plain forward pass of the first block over every calibration
    /// batch (four extra passes, a warm-up and three timed ones whose median is kept, not used
    /// otherwise) so that the report can express the time outside the solver in block-forward
    /// units
    /// ([`Phases::non_solve_block_forwards`](crate::report::Phases)).
    pub time_block_forward: bool,
    /// E-PMQ only: choose α per linear from held-out calibration batches
    /// ([`pmq_core::alpha_selection`]) instead of the method's fixed α.
    pub alpha_auto: Option<AutoAlpha>,
    /// Precision of the expert fold's products `Δ_i H_i` (E-PMQ's target, the report's
    /// expert figures); sums are f64 either way.
    pub fold_precision: FoldPrecision,
}

/// The default of [`AutoAlpha::holdout_every`] (`--alpha-holdout-every`) per linear.
pub const DEFAULT_HOLDOUT_EVERY: usize = 4;

/// The default of [`AutoAlpha::holdout_every`] per model: every 2nd batch. On the bench (two
/// testbed seeds, 4 merges each, head-kl criterion) it never chose an α significantly worse than
/// the best fixed one; every 4th did once (TIES, seed 0, −0.4 points): 32 held-out samples per
/// task do not resolve the candidates' differences (bench/README.md).
pub const DEFAULT_MODEL_HOLDOUT_EVERY: usize = 2;

/// `--alpha auto` / `auto-model`: the α grid, which calibration batches are held out to
/// score it, and whether one α is chosen per linear or for the whole model.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AutoAlpha {
    /// Candidate α values.
    pub grid: Vec<f64>,
    /// Every `holdout_every`-th batch of each task (the last of every run of that many) is
    /// held out for scoring; the final solve uses all batches.
    pub holdout_every: usize,
    /// Per linear ([`pmq_core::alpha_selection`], one extra solve per candidate) or per model
    /// ([`crate::alpha_model`], one extra quantization run per candidate).
    pub scope: AlphaScope,
    /// Per model: what the candidates are scored by; `None` = each expert's classification
    /// head where every expert has one (BERT with `pmq_head.safetensors`), else the hidden
    /// states.
    pub criterion: Option<ModelAlphaCriterion>,
}

/// What `--alpha auto-model` scores a candidate α by ([`crate::alpha_model`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelAlphaCriterion {
    /// Relative error of the last block's output against the expert's.
    HiddenState,
    /// KL divergence of the expert's head on the quantized model's embeddings from the same
    /// head on the expert's own.
    HeadKl,
}

impl ModelAlphaCriterion {
    /// The column heading of the report's candidate table.
    pub fn describe(self) -> &'static str {
        match self {
            Self::HiddenState => "held-out relative error of the last block vs the experts",
            Self::HeadKl => "held-out KL of each expert's head: expert ‖ quantized model",
        }
    }
}

/// What one chosen α applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlphaScope {
    /// Each linear's α minimises its own held-out loss `Σ_i ‖QX_i − W_iX_i‖²`.
    #[default]
    Linear,
    /// One α for the model: the one whose quantized model is closest to the experts on the
    /// held-out batches ([`ModelAlphaCriterion`]).
    Model,
}

impl AlphaScope {
    /// The default hold-out stride of this scope ([`DEFAULT_HOLDOUT_EVERY`],
    /// [`DEFAULT_MODEL_HOLDOUT_EVERY`]).
    pub fn default_holdout_every(self) -> usize {
        match self {
            AlphaScope::Linear => DEFAULT_HOLDOUT_EVERY,
            AlphaScope::Model => DEFAULT_MODEL_HOLDOUT_EVERY,
        }
    }
}

impl Default for AutoAlpha {
    /// The grid spans the α that were best under the bench's merges (0 for TA/TIES, 10 for
    /// WUDI) and the paper's 0.01; one batch in 4 held out.
    fn default() -> Self {
        Self {
            grid: vec![0.0, 0.01, 0.1, 1.0, 10.0],
            holdout_every: DEFAULT_HOLDOUT_EVERY,
            scope: AlphaScope::Linear,
            criterion: None,
        }
    }
}

/// [`PipelineConfig::forward_cache_bytes`]'s default: 4 GiB.
pub const DEFAULT_FORWARD_CACHE_BYTES: usize = 4 << 30;

impl PipelineConfig {
    /// `pmq quantize`'s defaults for `method` on `grid`: GPTQ's lazy blocks of 128 with 1 %
    /// damping (E-PMQ: none, λ damps), 256 samples per task in batches of 32 truncated to 128
    /// tokens, true-sequential groups, the total deviation split, f32 calibration states, a
    /// forward cache of [`DEFAULT_FORWARD_CACHE_BYTES`], f32 fold products.
    pub fn new(method: Method, grid: QuantGrid) -> Self {
        let mut gptq = GptqConfig::new(grid);
        gptq.damping = Damping::gptq(method.default_percdamp());
        Self {
            method,
            gptq,
            samples_per_task: 256,
            batch_size: 32,
            max_seq_len: 128,
            true_sequential: true,
            deviation: DeviationMode::Total,
            state_dtype: DType::F32,
            forward_cache_bytes: DEFAULT_FORWARD_CACHE_BYTES,
            time_block_forward: false,
            alpha_auto: None,
            fold_precision: FoldPrecision::F32,
        }
    }
}
