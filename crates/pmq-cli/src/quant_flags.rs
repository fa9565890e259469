//! The quantization flags shared by `pmq solve` and `pmq quantize`.

use anyhow::Result;
use clap::Args;
use pmq_core::damping::Damping;
use pmq_core::gptq::{GptqConfig, GroupFit, Precision};
use pmq_core::{GridKind, QuantGrid, ScalePrecision};

#[derive(Args, Debug, Clone)]
pub struct QuantFlags {
    /// Bits per weight: 2, 3, 4 or 8.
    #[arg(long, default_value_t = 4)]
    pub bits: u32,
    /// Input columns per group; -1 for one group per row.
    #[arg(long, default_value_t = 128, allow_hyphen_values = true)]
    pub group_size: i64,
    /// Symmetric grid.
    #[arg(long)]
    pub sym: bool,
    /// Quantize columns by decreasing Hessian diagonal (desc_act).
    #[arg(long)]
    pub act_order: bool,
    /// Fit group parameters before the act-order permutation.
    #[arg(long)]
    pub static_groups: bool,
    /// Damping as a fraction of mean(diag H) [default: 0.01 for gptq, 0 for epmq, where λ damps].
    #[arg(long, allow_hyphen_values = true)]
    pub damp: Option<f64>,
    /// E-PMQ anchor strength α: λ = α · mean(diag ΣH_i); `auto` chooses α per linear from
    /// held-out calibration batches, `auto-model` one α for the model by the held-out
    /// last-block error against the experts (one quantization run per candidate)
    /// (`pmq quantize` only; see --alpha-grid).
    #[arg(long, default_value = "0.01", allow_hyphen_values = true, value_parser = parse_alpha)]
    pub alpha: AlphaArg,
    /// Columns per lazy GPTQ block.
    #[arg(long, default_value_t = 128)]
    pub block_size: usize,
    /// Working precision of GPTQ's rounding loop (updates and lazy-block products): f32 as
    /// the reference code, or f64. Factorisations and Hessians are f64 either way.
    #[arg(long, value_enum, default_value_t = WorkPrecision::F32)]
    pub work_precision: WorkPrecision,
    /// Precision of the expert fold's products `(W_i − W_m) H_i` (E-PMQ's target and the
    /// report's expert figures): f32 GEMMs (about twice as fast; the offsets from the merged
    /// weight are small, so their rounding stays far below the quantization step) or f64.
    /// Sums over tasks are f64 either way.
    #[arg(long, value_enum, default_value_t = WorkPrecision::F32)]
    pub fold_precision: WorkPrecision,
    /// The grid codes are chosen on: `uniform` (GPTQ's b-bit grid: --bits, --group-size,
    /// --sym) or one of GGUF's block grids `q4_0`, `q4_1`, `q8_0` (blocks of 32 input columns,
    /// f16 scales, fitted as llama.cpp fits them; --bits, --group-size and --sym do not apply),
    /// so that the codes solved are the codes llama.cpp reads [default: q4_0 with
    /// --format gguf, else uniform].
    #[arg(long, value_enum)]
    pub grid: Option<GridArg>,
    /// Which weights a group's scale and zero are fitted on when a group starts inside a lazy
    /// block (groups smaller than --block-size): `reference` as the original gptq.py,
    /// AutoGPTQ and GPTQModel (the weights updated by the finished blocks), or `updated` (also
    /// by the current block's columns so far).
    #[arg(long, value_enum, default_value_t = GroupFitArg::Reference)]
    pub group_fit: GroupFitArg,
}

/// `--grid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GridArg {
    Uniform,
    #[value(name = "q4_0")]
    Q4_0,
    #[value(name = "q4_1")]
    Q4_1,
    #[value(name = "q8_0")]
    Q8_0,
}

impl GridArg {
    /// The grid kind.
    pub fn kind(self) -> GridKind {
        match self {
            GridArg::Uniform => GridKind::Uniform,
            GridArg::Q4_0 => GridKind::GgufQ4_0,
            GridArg::Q4_1 => GridKind::GgufQ4_1,
            GridArg::Q8_0 => GridKind::GgufQ8_0,
        }
    }
}

/// `--group-fit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupFitArg {
    Reference,
    Updated,
}

/// `--work-precision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkPrecision {
    F32,
    F64,
}

impl QuantFlags {
    /// `--fold-precision`.
    pub fn fold_precision(&self) -> pmq_core::epmq::FoldPrecision {
        match self.fold_precision {
            WorkPrecision::F32 => pmq_core::epmq::FoldPrecision::F32,
            WorkPrecision::F64 => pmq_core::epmq::FoldPrecision::F64,
        }
    }

    /// The solver settings; `epmq` selects E-PMQ's default damping (0: λ damps); `kind` is
    /// the grid (see [`QuantFlags::grid`]).
    pub fn gptq_config(
        &self,
        epmq: bool,
        precision: ScalePrecision,
        kind: GridKind,
    ) -> Result<GptqConfig> {
        if self.group_size == 0 || self.group_size < -1 {
            anyhow::bail!(
                "--group-size must be positive, or -1 for one group per row; got {}",
                self.group_size
            );
        }
        if let Some(d) = self.damp {
            if !(d.is_finite() && d >= 0.0) {
                anyhow::bail!("--damp must be a finite number ≥ 0; got {d}");
            }
        }
        if let AlphaArg::Fixed(a) = self.alpha {
            if !(a.is_finite() && a >= 0.0) {
                anyhow::bail!(
                    "--alpha must be a finite number ≥ 0, `auto` or `auto-model`; got {a}"
                );
            }
        }
        if self.block_size == 0 {
            anyhow::bail!("--block-size must be positive");
        }
        let grid = if kind.is_gguf() {
            if self.act_order && !self.static_groups {
                anyhow::bail!(
                    "GGUF's blocks follow the column order: with --grid {} and --act-order, also give --static-groups",
                    kind.name()
                );
            }
            QuantGrid::gguf(kind)
        } else {
            QuantGrid::new(self.bits, self.sym, self.group_size, precision)?
        };
        let mut cfg = GptqConfig::new(grid);
        cfg.group_fit = match self.group_fit {
            GroupFitArg::Reference => GroupFit::Reference,
            GroupFitArg::Updated => GroupFit::Updated,
        };
        cfg.block_size = self.block_size;
        cfg.act_order = self.act_order;
        cfg.static_groups = self.static_groups;
        cfg.precision = match self.work_precision {
            WorkPrecision::F32 => Precision::F32,
            WorkPrecision::F64 => Precision::F64,
        };
        let default_damp = if epmq {
            pmq_pipeline::Method::Epmq {
                alpha: self.alpha.fixed_or(0.0),
            }
        } else {
            pmq_pipeline::Method::Gptq
        }
        .default_percdamp();
        cfg.damping = Damping::gptq(self.damp.unwrap_or(default_damp));
        Ok(cfg)
    }
}

/// `--alpha`: a fixed α or `auto`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AlphaArg {
    Fixed(f64),
    /// α per linear
    Auto,
    /// one α per model
    AutoModel,
}

impl AlphaArg {
    /// The fixed α, or `auto_value` for `auto`.
    pub fn fixed_or(self, auto_value: f64) -> f64 {
        match self {
            AlphaArg::Fixed(a) => a,
            AlphaArg::Auto | AlphaArg::AutoModel => auto_value,
        }
    }
}

fn parse_alpha(s: &str) -> Result<AlphaArg, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(AlphaArg::Auto);
    }
    if s.eq_ignore_ascii_case("auto-model") {
        return Ok(AlphaArg::AutoModel);
    }
    s.parse::<f64>()
        .map(AlphaArg::Fixed)
        .map_err(|_| format!("`{s}` is neither a number nor `auto` / `auto-model`"))
}

/// `--alpha-holdout-every N`: at least 2 (1 would hold out every batch).
pub fn check_holdout(n: usize) -> anyhow::Result<()> {
    if n < 2 {
        anyhow::bail!("--alpha-holdout-every must be at least 2 (1 would hold out every batch)");
    }
    Ok(())
}
