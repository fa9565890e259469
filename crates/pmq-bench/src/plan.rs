//! Which cells each of the paper's experiments needs, and selecting a subset of them.
//!
//! - `main`: {Average, TA, TIES, WUDI} × {FP, RTN, GPTQ, AWQ, E-PMQ}, 4-bit, group 128 and 64
//!   (the paper's Tables 1–3).
//! - `alpha`: the anchor ablation, E-PMQ with α ∈ {0, 0.01, 0.1, 1, 10} under TA and TIES (the
//!   paper's) and WUDI (whose main-table α is 10, not 0.01).
//! - `bits`: GPTQ vs E-PMQ at 2, 3, 4 and 8 bits under TA.
//! - `budget`: GPTQ vs E-PMQ with 64 / 128 / 256 calibration samples per task under TA, with
//!   the quantization wall time (the paper's Table 6).
//! - `auto`: E-PMQ with `--alpha auto` beside GPTQ and E-PMQ at the main table's α under the
//!   four merges (the α sweep of `alpha` gives the best fixed α to compare with).
//! - `regmean`: RegMean as the merge, FP / RTN / GPTQ / E-PMQ / E-PMQ auto α on it.

use crate::cell::{Cell, MergeKind, QuantKind};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// The experiments of `pmq bench`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Experiment {
    Main,
    Alpha,
    Bits,
    Budget,
    Auto,
    RegMean,
}

impl Experiment {
    pub const ALL: [Experiment; 6] = [
        Self::Main,
        Self::Alpha,
        Self::Bits,
        Self::Budget,
        Self::Auto,
        Self::RegMean,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Alpha => "alpha",
            Self::Bits => "bits",
            Self::Budget => "budget",
            Self::Auto => "auto",
            Self::RegMean => "regmean",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "main" => Self::Main,
            "alpha" => Self::Alpha,
            "bits" => Self::Bits,
            "budget" => Self::Budget,
            "auto" => Self::Auto,
            "regmean" => Self::RegMean,
            _ => bail!(
                "unknown experiment {s:?} (expected main, alpha, bits, budget, auto or regmean)"
            ),
        })
    }
}

/// The anchor weights of the ablation.
pub const ALPHAS: [f64; 5] = [0.0, 0.01, 0.1, 1.0, 10.0];
/// Bit widths of the bit-width sweep.
pub const BITS: [u8; 4] = [2, 3, 4, 8];
/// Calibration budgets (samples per task).
pub const BUDGETS: [usize; 3] = [64, 128, 256];
/// Group sizes of the main table (d = 384 allows 128 and 64).
pub const GROUPS: [i64; 2] = [128, 64];

/// Settings shared by every cell unless an experiment varies them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Defaults {
    pub bits: u8,
    pub group_size: i64,
    /// E-PMQ's α for Simple Averaging, Task Arithmetic and TIES (the paper: 0.01).
    pub alpha: f64,
    /// E-PMQ's α for WUDI (the paper: 10; WUDI's merged model is the better anchor there).
    #[serde(default = "paper_wudi_alpha")]
    pub wudi_alpha: f64,
    pub samples: usize,
}

/// The paper's α for WUDI-merged models.
pub const PAPER_WUDI_ALPHA: f64 = 10.0;

fn paper_wudi_alpha() -> f64 {
    PAPER_WUDI_ALPHA
}

impl Defaults {
    /// E-PMQ's α in the main table for models merged with `m`.
    pub fn alpha_for(&self, m: MergeKind) -> f64 {
        if m == MergeKind::Wudi {
            self.wudi_alpha
        } else {
            self.alpha
        }
    }
}

/// A subset of the grid: every `Some` list restricts that axis.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub merges: Option<Vec<MergeKind>>,
    pub methods: Option<Vec<QuantKind>>,
    pub bits: Option<Vec<u8>>,
    pub groups: Option<Vec<i64>>,
    pub alphas: Option<Vec<f64>>,
    pub samples: Option<Vec<usize>>,
}

/// Whether an optional allow-list admits `x`.
fn ok<T: PartialEq>(list: &Option<Vec<T>>, x: T) -> bool {
    list.as_ref().is_none_or(|v| v.contains(&x))
}

impl Selection {
    fn keeps(&self, c: &Cell) -> bool {
        let quantized = c.quant != QuantKind::Fp;
        ok(&self.merges, c.merge)
            && ok(&self.methods, c.quant)
            && (!quantized || ok(&self.bits, c.bits))
            && (!quantized || ok(&self.groups, c.group_size))
            && (c.quant != QuantKind::Epmq
                || self
                    .alphas
                    .as_ref()
                    .is_none_or(|v| v.iter().any(|a| (a - c.alpha).abs() < 1e-12)))
            && (c.samples == 0 || ok(&self.samples, c.samples))
    }
}

/// The cells of one experiment (before selection), in table order.
pub fn experiment_cells(e: Experiment, d: &Defaults) -> Vec<Cell> {
    let q = |m, k, bits, g, a, n| Cell::quant(m, k, bits, g, a, n);
    let mut out = Vec::new();
    match e {
        Experiment::Main => {
            for m in MergeKind::PAPER {
                out.push(Cell::fp(m));
                for g in GROUPS {
                    for k in &QuantKind::ALL[1..] {
                        out.push(q(m, *k, d.bits, g, d.alpha_for(m), d.samples));
                    }
                }
            }
        }
        Experiment::Alpha => {
            for m in [MergeKind::Ta, MergeKind::Ties, MergeKind::Wudi] {
                out.push(Cell::fp(m));
                out.push(q(m, QuantKind::Gptq, d.bits, d.group_size, 0.0, d.samples));
                for a in ALPHAS {
                    out.push(q(m, QuantKind::Epmq, d.bits, d.group_size, a, d.samples));
                }
            }
        }
        Experiment::Bits => {
            out.push(Cell::fp(MergeKind::Ta));
            for b in BITS {
                for k in [QuantKind::Gptq, QuantKind::Epmq] {
                    out.push(q(MergeKind::Ta, k, b, d.group_size, d.alpha, d.samples));
                }
            }
        }
        Experiment::Budget => {
            out.push(Cell::fp(MergeKind::Ta));
            for n in BUDGETS {
                for k in [QuantKind::Gptq, QuantKind::Epmq] {
                    out.push(q(MergeKind::Ta, k, d.bits, d.group_size, d.alpha, n));
                }
            }
        }
        Experiment::Auto => {
            for m in MergeKind::PAPER {
                out.push(Cell::fp(m));
                for k in [
                    QuantKind::Gptq,
                    QuantKind::Epmq,
                    QuantKind::EpmqAuto,
                    QuantKind::EpmqAutoModel,
                ] {
                    out.push(q(m, k, d.bits, d.group_size, d.alpha_for(m), d.samples));
                }
            }
        }
        Experiment::RegMean => {
            let m = MergeKind::RegMean;
            out.push(Cell::fp(m));
            for k in [
                QuantKind::Rtn,
                QuantKind::Gptq,
                QuantKind::Epmq,
                QuantKind::EpmqAuto,
                QuantKind::EpmqAutoModel,
            ] {
                out.push(q(m, k, d.bits, d.group_size, d.alpha, d.samples));
            }
        }
    }
    out
}

/// The selected cells of the given experiments, without duplicates, in first-seen order.
pub fn plan(experiments: &[Experiment], d: &Defaults, sel: &Selection) -> Vec<Cell> {
    let mut out: Vec<Cell> = Vec::new();
    for &e in experiments {
        for c in experiment_cells(e, d) {
            if sel.keeps(&c) && !out.iter().any(|o| o.key() == c.key()) {
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Defaults {
        Defaults {
            bits: 4,
            group_size: 128,
            alpha: 0.01,
            wudi_alpha: 10.0,
            samples: 128,
        }
    }

    #[test]
    fn main_table_has_every_merge_and_method() {
        let cells = plan(&[Experiment::Main], &d(), &Selection::default());
        // 4 merges × (FP + 2 groups × 4 quantizers)
        assert_eq!(cells.len(), 4 * (1 + 2 * 4));
    }

    #[test]
    fn selection_picks_a_single_cell() {
        let sel = Selection {
            merges: Some(vec![MergeKind::Ta]),
            methods: Some(vec![QuantKind::Epmq]),
            bits: Some(vec![4]),
            groups: Some(vec![128]),
            ..Default::default()
        };
        let cells = plan(&[Experiment::Main], &d(), &sel);
        assert_eq!(cells.len(), 1);
        assert_eq!(cells[0].key(), "ta-epmq-b4-g128-a0.01-n128");
    }

    #[test]
    fn wudi_uses_its_own_alpha_in_the_main_table() {
        let sel = Selection {
            methods: Some(vec![QuantKind::Epmq]),
            groups: Some(vec![128]),
            ..Default::default()
        };
        let keys: Vec<String> = plan(&[Experiment::Main], &d(), &sel)
            .iter()
            .map(Cell::key)
            .collect();
        assert_eq!(
            keys,
            [
                "avg-epmq-b4-g128-a0.01-n128",
                "ta-epmq-b4-g128-a0.01-n128",
                "ties-epmq-b4-g128-a0.01-n128",
                "wudi-epmq-b4-g128-a10-n128"
            ]
        );
    }

    #[test]
    fn auto_and_regmean_experiments() {
        let auto = plan(&[Experiment::Auto], &d(), &Selection::default());
        // per merge: FP, GPTQ, E-PMQ at the main table's α, auto per linear, auto per model
        assert_eq!(auto.len(), 4 * 5);
        for key in [
            "wudi-epmq-auto-b4-g128-n128",
            "wudi-epmq-auto-model-b4-g128-n128-h2",
        ] {
            assert!(auto.iter().any(|c| c.key() == key), "{key}");
        }
        // the fixed-α E-PMQ cells are the main table's
        let main = plan(&[Experiment::Main], &d(), &Selection::default());
        assert!(auto
            .iter()
            .filter(|c| c.quant == QuantKind::Epmq)
            .all(|c| main.contains(c)));
        let reg = plan(&[Experiment::RegMean], &d(), &Selection::default());
        let keys: Vec<String> = reg.iter().map(Cell::key).collect();
        assert_eq!(
            keys,
            [
                "regmean-fp",
                "regmean-rtn-b4-g128",
                "regmean-gptq-b4-g128-n128",
                "regmean-epmq-b4-g128-a0.01-n128",
                "regmean-epmq-auto-b4-g128-n128",
                "regmean-epmq-auto-model-b4-g128-n128-h2"
            ]
        );
        assert!(main.iter().all(|c| c.merge != MergeKind::RegMean));
    }

    #[test]
    fn experiments_share_cells() {
        let all = plan(&Experiment::ALL, &d(), &Selection::default());
        let keys: std::collections::HashSet<_> = all.iter().map(Cell::key).collect();
        assert_eq!(keys.len(), all.len());
        // the α = 0.01 ablation cell is the main-table E-PMQ cell
        let main = plan(&[Experiment::Main], &d(), &Selection::default()).len();
        let alpha = plan(&[Experiment::Alpha], &d(), &Selection::default()).len();
        assert!(all.len() < main + alpha + 9 + 7 + 16 + 5);
    }

    #[test]
    fn alpha_ablation_sweeps_ta_ties_and_wudi() {
        let cells = plan(&[Experiment::Alpha], &d(), &Selection::default());
        for m in ["ta", "ties", "wudi"] {
            let epmq: Vec<_> = cells
                .iter()
                .filter(|c| c.quant == QuantKind::Epmq && c.key().starts_with(&format!("{m}-")))
                .map(|c| c.alpha)
                .collect();
            assert_eq!(epmq, ALPHAS.to_vec(), "{m}");
        }
        // WUDI at α = 10 is the main-table cell: one computation serves both tables
        let main = plan(&[Experiment::Main], &d(), &Selection::default());
        assert!(cells
            .iter()
            .any(|c| c.key() == "wudi-epmq-b4-g128-a10-n128" && main.contains(c)));
    }
}
