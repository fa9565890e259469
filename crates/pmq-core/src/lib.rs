//! Math core of post-merge quantization (no model runtime in here).
//!
//! Every module is one concept of the method, named after it:
//! - [`quant_grid`]: the b-bit uniform grid of the original GPTQ code (per row, per group).
//! - [`rtn`]: round-to-nearest on that grid.
//! - [`damping`]: `H + percdamp·mean(diag H)·I` with automatic increase when Cholesky fails.
//! - [`gptq`]: the GPTQ solver `min_Q tr((Q−W) H (Q−W)ᵀ)` (lazy blocks, act-order, static groups).
//! - [`epmq`]: the E-PMQ objective `Σ_i ‖Q X_i − W_i X_i‖² + λ‖Q − W_m‖²`, its target
//!   `W* = R H_E⁻¹` and the solve = GPTQ on `(W*, H_E)`.
//! - [`objective`]: quadratic errors `tr(D H Dᵀ)`.
//! - [`hessian`]: accumulation of `H = Σ_tokens x xᵀ`.
//! - [`packing`]: the GPTQ int32 checkpoint layout (v1/v2) for 2/3/4/8 bits.
//! - [`awq`]: the AWQ searches (Lin et al. 2023): per-channel scales `s` minimising the block
//!   error of `Q(W·diag(s))·diag(s)⁻¹`, then per-group clipping, then RTN.
//!
//! Matrices are `faer::Mat<f64>`; a weight is `[out, in]` (rows = output channels), a Hessian
//! `[in, in]`.

pub mod alpha_selection;
pub mod awq;
pub mod damping;
pub mod epmq;
mod error;
pub mod gguf_grid;
pub mod gptq;
mod gptq_kernel;
pub mod hessian;
pub mod inverse_factor;
pub mod matrix;
pub mod objective;
pub mod packing;
pub mod quant_grid;
pub mod quantized;
pub mod regmean;
pub mod rtn;

pub use error::CoreError;
pub use quant_grid::{GridKind, GroupParams, QuantGrid, ScalePrecision};
pub use quantized::QuantizedLayer;
