//! The model-free search primitives of AWQ, activation-aware weight quantization
//! (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization for LLM Compression and
//! Acceleration"), with the semantics of the reference code: mit-han-lab/llm-awq
//! (`awq/quantize/auto_scale.py`, `auto_clip.py`, `quantizer.py`) and casper-hansen/AutoAWQ
//! (`awq/quantize/quantizer.py`: `_search_best_scale`, `_compute_best_scale`,
//! `_compute_best_clip`). Running the block, choosing the groups of linears and folding the
//! scales into the model belong to the pipeline; everything here is a pure function of matrices.
//!
//! One file per concept of the method, each stating the equation it implements:
//!
//! - `scale.rs`: the activation-aware scale search (the paper's Eq. 5),
//!   `s* = argmin_s L(s)` over `s(r) = x̄^r` (llm-awq) or `s(r) = x̄^r / (w̄^(1−r) + 1e-4)`
//!   (AutoAWQ duo scaling), `r ∈ {0, 1/n, …, (n−1)/n}` ([`activation_scale`],
//!   [`weight_scale`], [`candidate_scales`], [`search_scales`]).
//! - `loss.rs`: the loss of the searches,
//!   `L(s) = ‖ f({Q(W_j·diag(s))·diag(s)⁻¹}_j ; X) − f({W_j}_j ; X) ‖²`; for a block that is
//!   the group of linears itself `Σ_j ‖X (Q_j − W_j)ᵀ‖²_F / (tokens · Σ_j out_j)`
//!   ([`LinearOutputLoss`]).
//! - `clip.rs`: the per-(row, group) clip search, `m = m₀·(1 − i/n)` minimising
//!   `mean_t ( Σ_{c ∈ g} (Q(clamp(w_rc, −m, m)) − w_rc) · x_tc )²` ([`search_clip`],
//!   [`clip_token_rows`]).
//! - `layer.rs`: the quantized linear, `RTN(clamp(W·diag(s), ±m))` applied to `diag(s)⁻¹·x`,
//!   and why `diag(s)⁻¹` can be folded into the producer of `x` ([`quantize_layer`],
//!   [`AwqLayer`]).
//! - `kernel.rs`: the numeric kernels `W·diag(s)`, `W·diag(s)⁻¹` and fake quantization
//!   `Q(W·diag(s))·diag(s)⁻¹` ([`scale_columns`], [`unscale_columns`], [`fake_quantize`]).
//! - `config.rs`: the settings of both searches ([`AwqConfig`]).
//!
//! # Differences from the reference (on purpose)
//!
//! - `Q` is this crate's grid ([`QuantGrid::fit`], GPTQ's quantizer) everywhere: the fitted range
//!   always holds 0 and the sym grid uses zero `2^(b−1)` with scale `2·max|w|/(2^b − 1)`.
//!   AutoAWQ's `pseudo_quantize_tensor` fits asym groups on `[min w, max w]` without forcing 0 in
//!   (zero clamped to `[0, 2^b − 1]`, scale clamped to ≥ 1e-5) and its sym grid is
//!   `[−2^(b−1), 2^(b−1) − 1]·max|w|/(2^(b−1) − 1)`. In the clip search AutoAWQ clamps to
//!   `±m` and then refits min/max on the clamped group; here the clamped group is fitted with
//!   [`QuantGrid::fit`], i.e. on `[min(min, 0), max(max, 0)]` of the clamped values. Searched
//!   thresholds are therefore optimal for the grid that is actually exported.
//! - Arithmetic is f64 (the reference runs the search in fp16 with f32 accumulation).
//! - Groups may be ragged (the last group of a row may be shorter); the reference asserts
//!   `in % group_size == 0`.
//! - With `duo_scaling`, no grid ratio gives `s = 1` (at `r = 0`, `s = 1/(w̄ + 1e-4)`), so
//!   AutoAWQ can pick a scale that is worse than not scaling at all. [`search_scales`] always
//!   evaluates the unscaled loss too and, with [`AwqConfig::identity_fallback`] (default on),
//!   returns `s = 1` when it is strictly better, so AWQ is never worse than RTN on the loss it
//!   is given. Without duo scaling `r = 0` gives exactly `s = 1` (`x̄⁰ = 1`) and the fallback
//!   never triggers (llm-awq semantics). Set `identity_fallback = false` to reproduce AutoAWQ.
//! - Clip search on a row-group never updates on a non-finite error (the reference starts from
//!   an error of 1e9 instead of infinity).
//!
//! [`QuantGrid::fit`]: crate::QuantGrid::fit

mod clip;
mod config;
mod kernel;
mod layer;
mod loss;
mod scale;

pub use clip::{clip_token_rows, search_clip, ClipSearch};
pub use config::AwqConfig;
pub use kernel::{fake_quantize, scale_columns, unscale_columns};
pub use layer::{quantize_layer, AwqLayer};
pub use loss::LinearOutputLoss;
pub use scale::{activation_scale, candidate_scales, search_scales, weight_scale, ScaleSearch};
