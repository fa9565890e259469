//! What to merge and how: the method, its parameters (FusionBench defaults) and the I/O choices.

use std::path::PathBuf;

use pmq_io::Dtype;
use serde::Serialize;

use crate::MergeError;

/// A full merge request.
#[derive(Debug, Clone)]
pub struct MergeConfig {
    /// The shared pre-trained checkpoint W₀ (HF directory).
    pub base: PathBuf,
    /// The K fine-tuned experts W₁..W_K (HF directories).
    pub experts: Vec<PathBuf>,
    /// Output directory; written atomically.
    pub out: PathBuf,
    pub method: Method,
    /// Glob patterns of tensor names to merge (empty: all); the others are copied from the base.
    pub include: Vec<String>,
    /// Glob patterns of tensor names never merged (copied from the base).
    pub exclude: Vec<String>,
    /// Output dtype of float tensors (default: each tensor's base dtype).
    pub dtype: Option<Dtype>,
    /// Replace an existing output directory.
    pub overwrite: bool,
}

impl MergeConfig {
    /// A config with no patterns, the base dtype and no overwrite.
    pub fn new(base: PathBuf, experts: Vec<PathBuf>, out: PathBuf, method: Method) -> Self {
        Self {
            base,
            experts,
            out,
            method,
            include: Vec::new(),
            exclude: Vec::new(),
            dtype: None,
            overwrite: false,
        }
    }
}

/// Merge method with its parameters.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum Method {
    /// W = (1/K) Σᵢ Wᵢ.
    Average,
    /// W = W₀ + λ Σᵢ τᵢ, τᵢ = Wᵢ − W₀.
    TaskArithmetic {
        lambda: f64,
    },
    Ties(TiesOptions),
    Dare(DareOptions),
    Wudi(WudiOptions),
    /// W = (Σ Wᵢ G̃ᵢ)(Σ G̃ᵢ)⁻¹ per linear from the experts' Gram files; other tensors averaged.
    #[serde(rename = "regmean")]
    RegMean(RegMeanOptions),
}

/// Default scaling factor λ of task arithmetic, TIES and DARE.
pub const DEFAULT_LAMBDA: f64 = 0.3;

impl Method {
    /// Short name as used on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Average => "average",
            Method::TaskArithmetic { .. } => "task-arithmetic",
            Method::Ties(_) => "ties",
            Method::Dare(_) => "dare",
            Method::Wudi(_) => "wudi",
            Method::RegMean(_) => "regmean",
        }
    }

    /// Task arithmetic with the default λ = 0.3.
    pub fn task_arithmetic() -> Self {
        Method::TaskArithmetic {
            lambda: DEFAULT_LAMBDA,
        }
    }

    /// Checks the method's parameters (λ finite, density in (0, 1], p in [0, 1), WUDI steps and
    /// learning rate positive).
    pub fn validate(&self) -> Result<(), MergeError> {
        match self {
            Method::Average => Ok(()),
            Method::TaskArithmetic { lambda } => check_lambda(*lambda),
            Method::Ties(o) => {
                check_lambda(o.lambda)?;
                if !(o.density > 0.0 && o.density <= 1.0) {
                    return Err(MergeError::option(
                        "density",
                        format!("{} is not in (0, 1]", o.density),
                    ));
                }
                Ok(())
            }
            Method::Dare(o) => {
                check_lambda(o.lambda)?;
                if !(o.p >= 0.0 && o.p < 1.0) {
                    return Err(MergeError::option(
                        "dare-p",
                        format!("{} is not in [0, 1)", o.p),
                    ));
                }
                Ok(())
            }
            Method::Wudi(o) => {
                if o.solver == WudiSolver::Adam {
                    if o.steps == 0 {
                        return Err(MergeError::option("wudi-steps", "must be at least 1"));
                    }
                    if !(o.lr.is_finite() && o.lr > 0.0) {
                        return Err(MergeError::option(
                            "wudi-lr",
                            format!("{} is not a positive number", o.lr),
                        ));
                    }
                }
                Ok(())
            }
            Method::RegMean(o) => {
                if !(0.0..=1.0).contains(&o.non_diagonal_ratio) {
                    return Err(MergeError::option(
                        "regmean-ratio",
                        format!("{} is not in [0, 1]", o.non_diagonal_ratio),
                    ));
                }
                Ok(())
            }
        }
    }
}

fn check_lambda(lambda: f64) -> Result<(), MergeError> {
    if lambda.is_finite() {
        Ok(())
    } else {
        Err(MergeError::option(
            "lambda",
            format!("{lambda} is not finite"),
        ))
    }
}

/// Where TIES computes each task's magnitude threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TiesTrim {
    /// Over all merged tensors flattened into one vector per task (FusionBench): keeps every
    /// entry with |τ| ≥ the k-th smallest |τ| (ties at the threshold all kept).
    Global,
    /// The same tie-inclusive threshold, but per tensor (FusionBench's rule applied to each
    /// tensor; keeps more than the density where many magnitudes are equal).
    Tensor,
    /// mergekit's `magnitude` sparsification: per tensor exactly ⌊density·n⌋ entries of
    /// largest |τ| (equal magnitudes: the lower index first); density ≥ 1 keeps everything.
    Mergekit,
}

/// How TIES aggregates the entries that agree with the elected sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TiesMerge {
    /// Σ of agreeing entries (FusionBench default).
    Sum,
    /// Mean of agreeing entries (TIES paper, mergekit).
    Mean,
}

/// TIES-merging parameters.
#[derive(Debug, Clone, Serialize)]
pub struct TiesOptions {
    /// Fraction of |τ| entries kept per task (FusionBench `threshold: 20` = 0.2).
    pub density: f64,
    pub lambda: f64,
    pub trim: TiesTrim,
    pub merge: TiesMerge,
}

impl Default for TiesOptions {
    fn default() -> Self {
        Self {
            density: 0.2,
            lambda: DEFAULT_LAMBDA,
            trim: TiesTrim::Global,
            merge: TiesMerge::Sum,
        }
    }
}

/// How DARE rescales the surviving entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DareRescale {
    /// Multiply survivors by 1/(1−p) (DARE paper, FusionBench).
    Inverse,
    /// Scale so that each tensor's L1 norm of τ is preserved (mergekit).
    L1,
    /// No rescaling.
    None,
}

/// DARE parameters.
#[derive(Debug, Clone, Serialize)]
pub struct DareOptions {
    /// Drop probability of each τ entry.
    pub p: f64,
    pub lambda: f64,
    pub rescale: DareRescale,
    pub seed: u64,
}

impl Default for DareOptions {
    fn default() -> Self {
        Self {
            p: 0.5,
            lambda: DEFAULT_LAMBDA,
            rescale: DareRescale::Inverse,
            seed: 0,
        }
    }
}

/// How WUDI solves its per-tensor quadratic problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WudiSolver {
    /// The reference schedule: Adam from Σ τᵢ for `steps` steps at `lr`.
    Adam,
    /// The minimiser itself: τ_m S = C by Cholesky (conjugate gradient if S is singular).
    Exact,
}

/// What WUDI does with selected tensors that are not 2-D.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WudiOther {
    /// Simple average of the experts (FusionBench).
    Average,
    /// Keep the base values (official WUDI code).
    Base,
}

/// WUDI-merging parameters.
#[derive(Debug, Clone, Serialize)]
pub struct WudiOptions {
    pub solver: WudiSolver,
    /// Adam steps (FusionBench 400, official code 300).
    pub steps: usize,
    /// Adam learning rate (1e-5 in both references).
    pub lr: f64,
    pub other: WudiOther,
}

impl Default for WudiOptions {
    fn default() -> Self {
        Self {
            solver: WudiSolver::Adam,
            steps: 400,
            lr: 1e-5,
            other: WudiOther::Average,
        }
    }
}

/// RegMean parameters.
#[derive(Debug, Clone, Serialize)]
pub struct RegMeanOptions {
    /// FusionBench's `reduce_non_diagonal_ratio` r: G̃ = r·G + (1 − r)·diag(G).
    pub non_diagonal_ratio: f64,
    /// One Gram file per expert, in expert order ([`crate::gram_file`]).
    pub grams: Vec<std::path::PathBuf>,
}

impl Default for RegMeanOptions {
    fn default() -> Self {
        Self {
            non_diagonal_ratio: pmq_core::regmean::DEFAULT_NON_DIAGONAL_RATIO,
            grams: Vec::new(),
        }
    }
}
