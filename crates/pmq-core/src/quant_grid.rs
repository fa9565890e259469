//! The uniform b-bit quantization grid exactly as the original GPTQ code fits it
//! (IST-DASLab/gptq `quant.py`, `Quantizer.find_params` with `perchannel=True`).
//!
//! For the values `x` of one output row (one group of `group_size` input columns, or the whole
//! row when `group_size` is `None`):
//!
//! ```text
//! xmin = min(min x, 0),  xmax = max(max x, 0)                 (the range always holds 0)
//! sym:  xmax = max(|xmin|, xmax);  xmin = −xmax if xmin < 0
//! xmin = −1, xmax = +1 if both are 0                          (all-zero group)
//! scale = (xmax − xmin) / (2^b − 1)
//! zero  = 2^(b−1) if sym else round(−xmin / scale)
//! q     = clamp(round(x / scale) + zero, 0, 2^b − 1),   dequant = scale · (q − zero)
//! ```
//!
//! `round` is round-half-to-even, as `torch.round`. Note the reference quirk kept here on
//! purpose: with `sym` and a group without negative values, `xmin` stays 0 and the top half of
//! the grid is unused (values above `(2^(b−1) − 1)·scale` clip).
//!
//! Besides this uniform grid, [`GridKind`] selects the block grids of llama.cpp's GGUF files
//! (Q4_0, Q4_1, Q8_0; fitted as ggml fits them, see [`crate::gguf_grid`]), so that every solver
//! chooses its codes on the grid llama.cpp reads. Q4_1's grid has an arbitrary minimum: its
//! [`GroupParams::offset`] (0 on every other grid) is added to `scale · (q − zero)`.
//!
//! [`ScalePrecision`] rounds the scale to the precision it is stored in (f16 in GPTQ
//! checkpoints) *before* the codes are chosen, so the fake-quantized weight equals what a
//! loader dequantizes from the packed checkpoint, bit for bit.

use crate::CoreError;
use serde::{Deserialize, Serialize};

/// Precision in which scales are stored; scales are rounded to it before codes are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScalePrecision {
    F64,
    F32,
    F16,
}

/// Which grid: GPTQ's uniform grid or one of GGUF's block grids.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GridKind {
    /// The uniform b-bit grid of GPTQ (`bits`, `sym`, `group_size` as set).
    #[default]
    #[serde(rename = "uniform")]
    Uniform,
    /// GGUF Q4_0: blocks of 32, `d · (q − 8)`, `d = max / −8` (signed extreme), f16 `d`.
    #[serde(rename = "gguf_q4_0")]
    GgufQ4_0,
    /// GGUF Q4_1: blocks of 32, `d · q + m`, `d = (max − min) / 15`, `m = min`, f16 `d`, `m`.
    #[serde(rename = "gguf_q4_1")]
    GgufQ4_1,
    /// GGUF Q8_0: blocks of 32, `d · q` with `q` in −128..=127, `d = max|x| / 127`, f16 `d`.
    #[serde(rename = "gguf_q8_0")]
    GgufQ8_0,
}

impl GridKind {
    /// Whether this is GPTQ's uniform grid.
    pub fn is_uniform(&self) -> bool {
        *self == GridKind::Uniform
    }

    /// Whether this is a GGUF block grid.
    pub fn is_gguf(&self) -> bool {
        !self.is_uniform()
    }

    /// The name used on the command line and in reports (`uniform`, `q4_0`, `q4_1`, `q8_0`).
    pub fn name(&self) -> &'static str {
        match self {
            GridKind::Uniform => "uniform",
            GridKind::GgufQ4_0 => "q4_0",
            GridKind::GgufQ4_1 => "q4_1",
            GridKind::GgufQ8_0 => "q8_0",
        }
    }
}

/// The grid settings of one quantized linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantGrid {
    /// Uniform (GPTQ) or a GGUF block grid; GGUF grids fix `bits`, `group_size` (32) and f16
    /// scales ([`QuantGrid::gguf`]).
    #[serde(default, skip_serializing_if = "GridKind::is_uniform")]
    pub kind: GridKind,
    /// Bits per weight: 2, 3, 4 or 8.
    pub bits: u32,
    /// Symmetric grid (zero fixed at 2^(b−1)).
    pub sym: bool,
    /// Input columns per group; `None` = one group per row (GPTQ's `group_size = -1`).
    pub group_size: Option<usize>,
    /// Precision the scales are stored in.
    pub scale_precision: ScalePrecision,
}

/// Scale, integer zero point and offset of one (group, row): `value = scale · (q − zero) +
/// offset`; the offset is 0 except on GGUF's Q4_1 grid (its block minimum).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupParams {
    pub scale: f64,
    pub zero: u32,
    pub offset: f64,
}

impl GroupParams {
    /// Parameters without offset.
    pub fn new(scale: f64, zero: u32) -> Self {
        Self {
            scale,
            zero,
            offset: 0.0,
        }
    }
}

impl QuantGrid {
    /// A grid with validated settings. `group_size` ≤ 0 means one group per row.
    pub fn new(
        bits: u32,
        sym: bool,
        group_size: i64,
        scale_precision: ScalePrecision,
    ) -> Result<Self, CoreError> {
        if !matches!(bits, 2 | 3 | 4 | 8) {
            return Err(CoreError::Config(format!(
                "bits must be 2, 3, 4 or 8, got {bits}"
            )));
        }
        let group_size = if group_size <= 0 {
            if group_size != -1 && group_size != 0 {
                return Err(CoreError::Config(format!(
                    "group size must be positive or -1 (per row), got {group_size}"
                )));
            }
            None
        } else {
            Some(group_size as usize)
        };
        Ok(Self {
            kind: GridKind::Uniform,
            bits,
            sym,
            group_size,
            scale_precision,
        })
    }

    /// The GGUF block grid `kind` (blocks of 32 input columns, f16 scales); `Uniform` gives
    /// GPTQ's 4-bit grid with groups of 32 and f16 scales.
    pub fn gguf(kind: GridKind) -> Self {
        let (bits, sym) = match kind {
            GridKind::Uniform | GridKind::GgufQ4_1 => (4, false),
            GridKind::GgufQ4_0 => (4, true),
            GridKind::GgufQ8_0 => (8, true),
        };
        Self {
            kind,
            bits,
            sym,
            group_size: Some(crate::gguf_grid::BLOCK),
            scale_precision: ScalePrecision::F16,
        }
    }

    /// Largest integer code, `2^b − 1`.
    pub fn maxq(&self) -> u32 {
        (1u32 << self.bits) - 1
    }

    /// Number of groups for a row of `cols` input columns.
    pub fn num_groups(&self, cols: usize) -> usize {
        match self.group_size {
            Some(g) => cols.div_ceil(g),
            None => 1,
        }
    }

    /// `group_size` as GPTQ configs write it (−1 for per row).
    pub fn group_size_i64(&self) -> i64 {
        self.group_size.map_or(-1, |g| g as i64)
    }

    /// Fits scale and zero from the minimum and maximum of a group's values.
    pub fn fit_range(&self, min: f64, max: f64) -> GroupParams {
        if self.kind.is_gguf() {
            return crate::gguf_grid::fit_range(self.kind, min, max, |s| self.round_scale(s));
        }
        let maxq = self.maxq() as f64;
        let mut xmin = min.min(0.0);
        let mut xmax = max.max(0.0);
        if self.sym {
            xmax = xmax.max(xmin.abs());
            if xmin < 0.0 {
                xmin = -xmax;
            }
        }
        if xmin == 0.0 && xmax == 0.0 {
            xmin = -1.0;
            xmax = 1.0;
        }
        let scale = self.round_scale((xmax - xmin) / maxq);
        let zero = if self.sym {
            self.maxq().div_ceil(2)
        } else {
            (-xmin / scale).round_ties_even().clamp(0.0, maxq) as u32
        };
        GroupParams::new(scale, zero)
    }

    /// Fits scale and zero of a group from its values.
    pub fn fit(&self, values: impl IntoIterator<Item = f64>) -> GroupParams {
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values {
            min = min.min(v);
            max = max.max(v);
        }
        if min > max {
            // No values: an all-zero group.
            (min, max) = (0.0, 0.0);
        }
        self.fit_range(min, max)
    }

    /// Rounds a scale to the storage precision, keeping it positive and finite.
    pub(crate) fn round_scale(&self, scale: f64) -> f64 {
        match self.scale_precision {
            ScalePrecision::F64 => scale,
            ScalePrecision::F32 => {
                let s = scale as f32;
                if s > 0.0 {
                    s.min(f32::MAX) as f64
                } else {
                    f32::from_bits(1) as f64
                }
            }
            ScalePrecision::F16 => {
                let s = f16_nearest(scale);
                let s = if s.is_infinite() {
                    half::f16::MAX
                } else if s.to_f64() <= 0.0 {
                    half::f16::from_bits(1) // smallest positive subnormal
                } else {
                    s
                };
                s.to_f64()
            }
        }
    }

    /// The integer code of `x` under `p`: `clamp(round((x − offset) / scale) + zero, 0, maxq)`.
    pub fn code(&self, x: f64, p: GroupParams) -> u32 {
        let q = ((x - p.offset) / p.scale).round_ties_even() + p.zero as f64;
        q.clamp(0.0, self.maxq() as f64) as u32
    }

    /// The value of code `q` under `p`: `scale · (q − zero) + offset` (exact in f64: both terms
    /// are f16 multiples; without offset, `−0` stays as it was).
    pub fn dequant(q: u32, p: GroupParams) -> f64 {
        let v = p.scale * (q as f64 - p.zero as f64);
        if p.offset == 0.0 {
            v
        } else {
            v + p.offset
        }
    }

    /// Quantize-dequantize `x` under `p`.
    pub fn fake_quant(&self, x: f64, p: GroupParams) -> f64 {
        Self::dequant(self.code(x, p), p)
    }
}

/// `x` rounded to the nearest f16, ties to even, in one rounding on every CPU.
///
/// `half::f16::from_f64` goes f64 → f32 → f16 where the CPU has F16C (two roundings: a value
/// just above a tie of f16 becomes the tie in f32, then rounds to even, possibly down), and its
/// software path drops the low 32 mantissa bits before rounding; either way outputs could
/// depend on the machine. Here the rounding happens in exact f64 arithmetic — `|x| / ulp` is
/// exact because `ulp` is a power of two, and `round_ties_even` is exact — and only the
/// already representable result is converted.
pub fn f16_nearest(x: f64) -> half::f16 {
    if !x.is_finite() {
        return half::f16::from_f64(x);
    }
    let a = x.abs();
    // largest finite f16 is 65504 = (2 − 2⁻¹⁰)·2¹⁵; from 65520 on, the nearest is ∞
    if a >= 65520.0 {
        return if x > 0.0 {
            half::f16::INFINITY
        } else {
            half::f16::NEG_INFINITY
        };
    }
    // exponent of the f16 binade holding `a` (subnormals share the ulp of the first binade)
    let e = if a < f64::powi(2.0, -14) {
        -14
    } else {
        ((a.to_bits() >> 52) as i32) - 1023
    };
    let ulp = f64::powi(2.0, e - 10);
    let r = (a / ulp).round_ties_even() * ulp;
    half::f16::from_f64(r.copysign(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(bits: u32, sym: bool) -> QuantGrid {
        QuantGrid::new(bits, sym, -1, ScalePrecision::F64).unwrap()
    }

    #[test]
    fn asym_range_maps_extremes_to_grid_ends() {
        let g = grid(4, false);
        let p = g.fit([-1.5, 0.25, 3.0]);
        assert!((p.scale - 4.5 / 15.0).abs() < 1e-15);
        assert_eq!(p.zero, 5); // round(1.5 / 0.3) = 5
        assert_eq!(g.code(-1.5, p), 0);
        assert_eq!(g.code(3.0, p), 15);
    }

    #[test]
    fn range_always_contains_zero() {
        let g = grid(4, false);
        let p = g.fit([2.0, 3.0]);
        assert_eq!(p.zero, 0);
        assert!((p.scale - 3.0 / 15.0).abs() < 1e-15);
        assert_eq!(g.fake_quant(0.0, p), 0.0);
    }

    #[test]
    fn sym_zero_is_midpoint_and_nonnegative_group_clips_like_reference() {
        let g = grid(4, true);
        let p = g.fit([-2.0, 1.0]);
        assert_eq!(p.zero, 8);
        assert!((p.scale - 4.0 / 15.0).abs() < 1e-15);
        // no negative values: xmin stays 0, scale = xmax / 15, codes above 15 clip
        let p = g.fit([0.5, 3.0]);
        assert_eq!(p.zero, 8);
        assert!((p.scale - 0.2).abs() < 1e-15);
        assert_eq!(g.code(3.0, p), 15);
        assert!((g.fake_quant(3.0, p) - 1.4).abs() < 1e-12);
    }

    #[test]
    fn all_zero_group_uses_unit_range() {
        for sym in [false, true] {
            let g = grid(3, sym);
            let p = g.fit([0.0, 0.0]);
            assert!((p.scale - 2.0 / 7.0).abs() < 1e-15);
            assert_eq!(g.fake_quant(0.0, p), 0.0);
        }
    }

    #[test]
    fn rounding_is_half_to_even() {
        let g = grid(8, false);
        let p = GroupParams::new(1.0, 10);
        assert_eq!(g.code(2.5, p), 12);
        assert_eq!(g.code(3.5, p), 14);
        assert_eq!(g.code(-2.5, p), 8);
    }

    #[test]
    fn f16_scales_are_representable() {
        let g = QuantGrid::new(4, false, 128, ScalePrecision::F16).unwrap();
        let p = g.fit([-0.0123, 0.0456]);
        assert_eq!(half::f16::from_f64(p.scale).to_f64(), p.scale);
        let tiny = g.fit([1e-12]);
        assert!(tiny.scale > 0.0 && tiny.scale.is_finite());
    }

    #[test]
    fn rejects_bad_settings() {
        assert!(QuantGrid::new(5, false, 128, ScalePrecision::F64).is_err());
        assert!(QuantGrid::new(4, false, -7, ScalePrecision::F64).is_err());
        assert_eq!(
            QuantGrid::new(4, false, -1, ScalePrecision::F64)
                .unwrap()
                .group_size,
            None
        );
    }

    /// The nearest f16 by exhaustive comparison with every finite f16 of the same sign
    /// (differences of nearby values are exact in f64), ties to the even code.
    fn f16_reference(x: f64) -> half::f16 {
        let mut best = half::f16::from_bits(0);
        let mut best_d = f64::INFINITY;
        for bits in 0u16..0x7C00 {
            let c = half::f16::from_bits(bits | if x < 0.0 { 0x8000 } else { 0 });
            let d = (c.to_f64() - x).abs();
            if d < best_d || (d == best_d && bits % 2 == 0) {
                best = c;
                best_d = d;
            }
        }
        best
    }

    #[test]
    fn f16_rounding_is_single_and_exact() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut xs: Vec<f64> = Vec::new();
        // values just above and below f16 ties, where f64 → f32 → f16 rounds twice
        for m in [1.0, 1.5, 0.75, 3.0e-3, 6.1e-5, 1.2e-6, 40000.0] {
            let h = f16_nearest(m);
            let next = half::f16::from_bits(h.to_bits() + 1);
            let tie = (h.to_f64() + next.to_f64()) / 2.0;
            for k in [-1e-13, -1e-11, 0.0, 1e-11, 1e-13] {
                xs.push(tie * (1.0 + k));
                xs.push(-tie * (1.0 + k));
            }
        }
        for _ in 0..300 {
            let e: i32 = rng.random_range(-26..16);
            xs.push(rng.random_range(-1.0..1.0) * f64::powi(2.0, e));
        }
        for x in xs {
            assert_eq!(
                f16_nearest(x).to_bits(),
                f16_reference(x).to_bits(),
                "{x:e}"
            );
        }
        // the double-rounding case: 1 + 2⁻¹¹ + 2⁻³⁰ is above the tie between 1 and 1 + 2⁻¹⁰,
        // but its f32 rounding is the tie itself
        let x = 1.0 + f64::powi(2.0, -11) + f64::powi(2.0, -30);
        assert_eq!(f16_nearest(x).to_f64(), 1.0 + f64::powi(2.0, -10));
        assert_eq!(f16_nearest(65519.0).to_f64(), 65504.0);
        assert!(f16_nearest(65520.0).is_infinite());
        assert_eq!(f16_nearest(-0.0).to_bits(), 0x8000);
    }
}
