//! One cell of a benchmark table: a merge method × a quantizer × its settings.

use anyhow::{bail, Result};
use pmq_core::{QuantGrid, ScalePrecision};
use pmq_pipeline::{AwqOptions, Method, PipelineConfig};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The merge methods of the paper's main table (FusionBench settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MergeKind {
    /// Simple averaging.
    Average,
    /// Task arithmetic, λ = 0.3.
    Ta,
    /// TIES-merging, λ = 0.3, top-20 % trim, sign election, disjoint sum.
    Ties,
    /// WUDI-merging (closed-form solve of its quadratic; see the bench README).
    Wudi,
    /// RegMean (FusionBench's non-diagonal scaling 0.6), from the experts' Gram matrices on
    /// the calibration split: a data-driven merge, the baseline E-PMQ's re-merge is held against.
    #[serde(rename = "regmean")]
    RegMean,
}

impl MergeKind {
    /// All of them, in table order.
    pub const ALL: [MergeKind; 5] = [
        Self::Average,
        Self::Ta,
        Self::Ties,
        Self::Wudi,
        Self::RegMean,
    ];
    /// The data-free merges of the paper's main table.
    pub const PAPER: [MergeKind; 4] = [Self::Average, Self::Ta, Self::Ties, Self::Wudi];

    /// Short id used in file names and on the command line.
    pub fn id(self) -> &'static str {
        match self {
            Self::Average => "avg",
            Self::Ta => "ta",
            Self::Ties => "ties",
            Self::Wudi => "wudi",
            Self::RegMean => "regmean",
        }
    }

    /// Row label in the tables.
    pub fn label(self) -> &'static str {
        match self {
            Self::Average => "Simple Averaging",
            Self::Ta => "Task Arithmetic (λ=0.3)",
            Self::Ties => "TIES (λ=0.3)",
            Self::Wudi => "WUDI",
            Self::RegMean => "RegMean",
        }
    }

    /// The merge method with this table's parameters (FusionBench settings; WUDI by its
    /// closed-form solve). RegMean's Gram files are the runner's to fill in.
    pub fn method(self) -> pmq_merge::Method {
        use pmq_merge::{
            Method, RegMeanOptions, TiesOptions, WudiOptions, WudiSolver, DEFAULT_LAMBDA,
        };
        match self {
            Self::Average => Method::Average,
            Self::Ta => Method::TaskArithmetic {
                lambda: DEFAULT_LAMBDA,
            },
            Self::Ties => Method::Ties(TiesOptions {
                lambda: DEFAULT_LAMBDA,
                ..TiesOptions::default()
            }),
            Self::Wudi => Method::Wudi(WudiOptions {
                solver: WudiSolver::Exact,
                ..WudiOptions::default()
            }),
            Self::RegMean => Method::RegMean(RegMeanOptions::default()),
        }
    }

    /// Parses an id (`avg`/`average`, `ta`, `ties`, `wudi`).
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "avg" | "average" => Self::Average,
            "ta" | "task-arithmetic" => Self::Ta,
            "ties" => Self::Ties,
            "wudi" => Self::Wudi,
            "regmean" => Self::RegMean,
            _ => bail!("unknown merge method {s:?} (expected avg, ta, ties, wudi or regmean)"),
        })
    }
}

/// What is done to the merged model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantKind {
    /// Nothing: the full-precision merged model.
    Fp,
    Rtn,
    Gptq,
    Awq,
    Epmq,
    /// E-PMQ with `--alpha auto` (α per linear from held-out calibration batches).
    #[serde(rename = "epmq-auto")]
    EpmqAuto,
    /// E-PMQ with `--alpha auto-model` (one α for the model, by the held-out last-block error
    /// against the experts).
    #[serde(rename = "epmq-auto-model")]
    EpmqAutoModel,
}

impl QuantKind {
    /// The paper's main-table methods, in table order.
    pub const ALL: [QuantKind; 5] = [Self::Fp, Self::Rtn, Self::Gptq, Self::Awq, Self::Epmq];

    pub fn id(self) -> &'static str {
        match self {
            Self::Fp => "fp",
            Self::Rtn => "rtn",
            Self::Gptq => "gptq",
            Self::Awq => "awq",
            Self::Epmq => "epmq",
            Self::EpmqAuto => "epmq-auto",
            Self::EpmqAutoModel => "epmq-auto-model",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Fp => "FP merged",
            Self::Rtn => "RTN",
            Self::Gptq => "GPTQ",
            Self::Awq => "AWQ",
            Self::Epmq => "E-PMQ",
            Self::EpmqAuto => "E-PMQ (auto α)",
            Self::EpmqAutoModel => "E-PMQ (auto α per model)",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "fp" => Self::Fp,
            "rtn" => Self::Rtn,
            "gptq" => Self::Gptq,
            "awq" => Self::Awq,
            "epmq" | "e-pmq" => Self::Epmq,
            "epmq-auto" => Self::EpmqAuto,
            "epmq-auto-model" => Self::EpmqAutoModel,
            _ => bail!(
                "unknown method {s:?} (expected fp, rtn, gptq, awq, epmq, epmq-auto or epmq-auto-model)"
            ),
        })
    }
}

/// One model to build and evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub merge: MergeKind,
    pub quant: QuantKind,
    /// Bits (ignored for `Fp`).
    pub bits: u8,
    /// Group size (−1: one group per row; ignored for `Fp`).
    pub group_size: i64,
    /// E-PMQ anchor weight α (only for `Epmq`).
    pub alpha: f64,
    /// Calibration samples per task (ignored for `Fp` and `Rtn`).
    pub samples: usize,
    /// Auto-α cells: every `holdout_every`-th calibration batch of each task is held out to
    /// score the candidates (`pmq quantize --alpha-holdout-every`; 4 for other cells).
    #[serde(
        default = "default_holdout",
        skip_serializing_if = "is_default_holdout"
    )]
    pub holdout_every: usize,
}

/// The hold-out stride of cells that record none (every cell written before the field existed,
/// and all cells but the auto-α ones): `pmq quantize`'s per-linear default, 4. Cells with
/// another stride carry it in their key (`-hN`).
pub const DEFAULT_HOLDOUT: usize = pmq_pipeline::DEFAULT_HOLDOUT_EVERY;

fn default_holdout() -> usize {
    DEFAULT_HOLDOUT
}

fn is_default_holdout(n: &usize) -> bool {
    *n == DEFAULT_HOLDOUT
}

impl Cell {
    /// Whether α is chosen on held-out calibration data.
    pub fn is_auto(&self) -> bool {
        matches!(self.quant, QuantKind::EpmqAuto | QuantKind::EpmqAutoModel)
    }

    /// The cell with `n` as its hold-out stride when it chooses α automatically (other cells
    /// are returned unchanged).
    pub fn with_holdout(mut self, n: usize) -> Self {
        if self.is_auto() {
            self.holdout_every = n;
        }
        self
    }

    /// The full-precision merged model.
    pub fn fp(merge: MergeKind) -> Self {
        Self {
            merge,
            quant: QuantKind::Fp,
            bits: 16,
            group_size: -1,
            alpha: 0.0,
            samples: 0,
            holdout_every: DEFAULT_HOLDOUT,
        }
    }

    /// A quantized cell; irrelevant settings are normalised so equal models get equal keys.
    pub fn quant(
        merge: MergeKind,
        quant: QuantKind,
        bits: u8,
        group_size: i64,
        alpha: f64,
        samples: usize,
    ) -> Self {
        if quant == QuantKind::Fp {
            return Self::fp(merge);
        }
        Self {
            merge,
            quant,
            bits,
            group_size,
            alpha: if quant == QuantKind::Epmq { alpha } else { 0.0 },
            samples: if quant == QuantKind::Rtn { 0 } else { samples },
            // auto-α cells run with `pmq quantize`'s default for their scope
            holdout_every: match quant {
                QuantKind::EpmqAutoModel => pmq_pipeline::DEFAULT_MODEL_HOLDOUT_EVERY,
                _ => DEFAULT_HOLDOUT,
            },
        }
    }

    /// A unique, file-name-safe key.
    pub fn key(&self) -> String {
        match self.quant {
            QuantKind::Fp => format!("{}-fp", self.merge.id()),
            QuantKind::Rtn => format!(
                "{}-rtn-b{}-g{}",
                self.merge.id(),
                self.bits,
                self.group_size
            ),
            QuantKind::EpmqAuto | QuantKind::EpmqAutoModel => format!(
                "{}-{}-b{}-g{}-n{}{}",
                self.merge.id(),
                self.quant.id(),
                self.bits,
                self.group_size,
                self.samples,
                if self.holdout_every == DEFAULT_HOLDOUT {
                    String::new()
                } else {
                    format!("-h{}", self.holdout_every)
                }
            ),
            QuantKind::Epmq => format!(
                "{}-epmq-b{}-g{}-a{}-n{}",
                self.merge.id(),
                self.bits,
                self.group_size,
                self.alpha,
                self.samples
            ),
            q => format!(
                "{}-{}-b{}-g{}-n{}",
                self.merge.id(),
                q.id(),
                self.bits,
                self.group_size,
                self.samples
            ),
        }
    }

    /// The pipeline settings of this cell (`pmq quantize`'s defaults otherwise: asymmetric
    /// grid with f16 scales, damping 1 % for GPTQ and none for E-PMQ, AWQ's defaults);
    /// `None` for the full-precision cell.
    pub fn pipeline_config(&self) -> Result<Option<PipelineConfig>> {
        let method = match self.quant {
            QuantKind::Fp => return Ok(None),
            QuantKind::Rtn => Method::Rtn,
            QuantKind::Gptq => Method::Gptq,
            QuantKind::Awq => Method::Awq(AwqOptions::default()),
            QuantKind::Epmq => Method::Epmq { alpha: self.alpha },
            QuantKind::EpmqAuto | QuantKind::EpmqAutoModel => Method::Epmq { alpha: 0.0 },
        };
        let grid = QuantGrid::new(
            self.bits as u32,
            false,
            self.group_size,
            ScalePrecision::F16,
        )?;
        let mut cfg = PipelineConfig::new(method, grid);
        if self.samples > 0 {
            cfg.samples_per_task = self.samples;
        }
        if self.quant == QuantKind::EpmqAuto {
            cfg.alpha_auto = Some(pmq_pipeline::AutoAlpha {
                holdout_every: self.holdout_every,
                ..pmq_pipeline::AutoAlpha::default()
            });
        }
        if self.quant == QuantKind::EpmqAutoModel {
            cfg.alpha_auto = Some(pmq_pipeline::AutoAlpha {
                scope: pmq_pipeline::AlphaScope::Model,
                holdout_every: self.holdout_every,
                ..pmq_pipeline::AutoAlpha::default()
            });
        }
        Ok(Some(cfg))
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holdout_stride_is_part_of_auto_cells_only() {
        // auto-model's default stride is 2 (pmq quantize's); a cell with 4 is one written
        // before that default, with the old key
        let h2 = Cell::quant(MergeKind::Ties, QuantKind::EpmqAutoModel, 4, 128, 0.0, 128);
        assert_eq!(h2.key(), "ties-epmq-auto-model-b4-g128-n128-h2");
        let auto = h2.with_holdout(4);
        assert_eq!(auto.key(), "ties-epmq-auto-model-b4-g128-n128");
        let linear = Cell::quant(MergeKind::Ties, QuantKind::EpmqAuto, 4, 128, 0.0, 128);
        assert_eq!(linear.key(), "ties-epmq-auto-b4-g128-n128");
        let cfg = h2.pipeline_config().unwrap().unwrap();
        assert_eq!(cfg.alpha_auto.unwrap().holdout_every, 2);
        let fixed = Cell::quant(MergeKind::Ties, QuantKind::Epmq, 4, 128, 0.01, 128);
        assert_eq!(fixed.with_holdout(2), fixed);
        // results written before the field existed read as the default; it is not written then
        let json = serde_json::to_value(auto).unwrap();
        assert!(json.get("holdout_every").is_none());
        let back: Cell = serde_json::from_value(json).unwrap();
        assert_eq!(back, auto);
        let json = serde_json::to_value(h2).unwrap();
        assert_eq!(json["holdout_every"], 2);
    }

    #[test]
    fn keys_are_unique_and_normalised() {
        let a = Cell::quant(MergeKind::Ta, QuantKind::Gptq, 4, 128, 0.5, 128);
        let b = Cell::quant(MergeKind::Ta, QuantKind::Gptq, 4, 128, 0.01, 128);
        assert_eq!(a.key(), b.key(), "α does not change a GPTQ model");
        let c = Cell::quant(MergeKind::Ta, QuantKind::Epmq, 4, 128, 0.01, 128);
        let d = Cell::quant(MergeKind::Ta, QuantKind::Epmq, 4, 128, 0.1, 128);
        assert_ne!(c.key(), d.key());
        assert_eq!(
            Cell::quant(MergeKind::Ties, QuantKind::Rtn, 4, 64, 0.0, 256).key(),
            "ties-rtn-b4-g64"
        );
        assert_eq!(Cell::fp(MergeKind::Wudi).key(), "wudi-fp");
        for m in MergeKind::ALL {
            assert_eq!(MergeKind::parse(m.id()).unwrap(), m);
        }
        for q in QuantKind::ALL
            .into_iter()
            .chain([QuantKind::EpmqAuto, QuantKind::EpmqAutoModel])
        {
            assert_eq!(QuantKind::parse(q.id()).unwrap(), q);
        }
        let auto = Cell::quant(MergeKind::Wudi, QuantKind::EpmqAuto, 4, 128, 10.0, 128);
        assert_eq!(auto.key(), "wudi-epmq-auto-b4-g128-n128");
        assert_eq!(auto.alpha, 0.0, "auto chooses α itself");
        let cfg = auto.pipeline_config().unwrap().unwrap();
        assert_eq!(cfg.alpha_auto, Some(pmq_pipeline::AutoAlpha::default()));
        let per_model = Cell::quant(MergeKind::Wudi, QuantKind::EpmqAutoModel, 4, 128, 10.0, 128);
        assert_eq!(per_model.key(), "wudi-epmq-auto-model-b4-g128-n128-h2");
        let cfg = per_model.pipeline_config().unwrap().unwrap();
        assert_eq!(
            cfg.alpha_auto.map(|a| a.scope),
            Some(pmq_pipeline::AlphaScope::Model)
        );
        assert!(MergeKind::parse("dare").is_err());
    }

    #[test]
    fn pipeline_config_carries_the_settings() {
        let c = Cell::quant(MergeKind::Ta, QuantKind::Epmq, 3, 64, 0.1, 64);
        let cfg = c.pipeline_config().unwrap().unwrap();
        assert_eq!(cfg.method, Method::Epmq { alpha: 0.1 });
        assert_eq!(
            (
                cfg.gptq.grid.bits,
                cfg.gptq.grid.group_size_i64(),
                cfg.gptq.grid.sym
            ),
            (3, 64, false)
        );
        assert_eq!(cfg.samples_per_task, 64);
        assert_eq!(cfg.gptq.damping.percdamp, 0.0, "E-PMQ: λ damps");
        let g = Cell::quant(MergeKind::Ta, QuantKind::Gptq, 4, 128, 0.0, 0);
        let cfg = g.pipeline_config().unwrap().unwrap();
        assert_eq!(cfg.gptq.damping.percdamp, 0.01);
        assert_eq!(cfg.samples_per_task, 256, "pmq quantize's default");
        assert!(Cell::fp(MergeKind::Ta).pipeline_config().unwrap().is_none());
        match MergeKind::Ties.method() {
            pmq_merge::Method::Ties(o) => assert_eq!((o.lambda, o.density), (0.3, 0.2)),
            m => panic!("{m:?}"),
        }
    }
}
