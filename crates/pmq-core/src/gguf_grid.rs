//! GGUF's block grids (llama.cpp, `ggml-quants.c`), fitted per block of 32 input columns of
//! one row as ggml's reference quantizers fit them, with the scales (and Q4_1's minimum)
//! rounded to the f16 they are stored in:
//!
//! ```text
//! Q4_0:  e = the value of largest |x| (signed),  d = e / −8,         x ≈ d · (q − 8),  q ∈ 0..=15
//! Q4_1:  d = (max x − min x) / 15,  m = min x,                       x ≈ d · q + m,    q ∈ 0..=15
//! Q8_0:  d = max |x| / 127,                                           x ≈ d · q,        q ∈ −128..=127
//! ```
//!
//! In pmq's form `scale · (q − zero) + offset` with a positive scale:
//! - Q4_0 with `e < 0` (`d > 0`) is `scale = d`, `zero = 8`; with `e > 0` (`d < 0`) the grid
//!   `d · (q − 8)` is `|d| · (q' − 7)` with `q' = 15 − q`, so `scale = |d|`, `zero = 7`. The
//!   writer maps back (`d = −scale`, `q = 15 − q'`). Either way the extreme value sits on a grid
//!   end, as in ggml.
//! - Q4_1 is `scale = d`, `zero = 0`, `offset = f16(m)`.
//! - Q8_0 is `scale = d`, `zero = 128` (codes 0..=255 are the int8 values −128..=127).
//!
//! Codes are then chosen by the solver (RTN: the nearest grid point with the stored f16 scale,
//! ties to even; ggml's own RTN truncates `x/d + 8.5` with the unrounded `d`, so a value within
//! an f16 rounding of a decision boundary may get the neighbouring code there). A block whose
//! values are all equal (all zero for Q4_0/Q8_0) gets a unit range (ggml writes `d = 0`), so a
//! solver that later moves its weights still has a usable grid. With `|min| = |max|`, Q4_0 takes
//! the positive extreme (ggml: whichever comes first in the block).

use crate::quant_grid::{f16_nearest, GridKind, GroupParams};

/// Input columns per GGUF block (`QK4_0 = QK4_1 = QK8_0 = 32`).
pub const BLOCK: usize = 32;

/// Fits the parameters of one block from its minimum and maximum; `round_scale` rounds a
/// positive scale to the stored f16 (keeping it positive and finite).
pub(crate) fn fit_range(
    kind: GridKind,
    min: f64,
    max: f64,
    round_scale: impl Fn(f64) -> f64,
) -> GroupParams {
    match kind {
        GridKind::GgufQ4_0 => {
            let e = if -min > max { min } else { max };
            let e = if e == 0.0 { -1.0 } else { e };
            let scale = round_scale(e.abs() / 8.0);
            GroupParams::new(scale, if e > 0.0 { 7 } else { 8 })
        }
        GridKind::GgufQ4_1 => {
            let offset = f16_finite(min);
            let range = if max > min {
                max - min
            } else {
                min.abs().max(1.0)
            };
            GroupParams {
                scale: round_scale(range / 15.0),
                zero: 0,
                offset,
            }
        }
        GridKind::GgufQ8_0 => {
            let amax = min.abs().max(max.abs());
            let amax = if amax == 0.0 { 1.0 } else { amax };
            GroupParams::new(round_scale(amax / 127.0), 128)
        }
        GridKind::Uniform => unreachable!("the uniform grid is fitted by QuantGrid"),
    }
}

/// `x` as the nearest finite f16 (±65504 beyond), in f64.
fn f16_finite(x: f64) -> f64 {
    let h = f16_nearest(x);
    if h.is_infinite() {
        half::f16::MAX.to_f64().copysign(x)
    } else {
        h.to_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QuantGrid;
    use rand::{Rng, SeedableRng};

    /// ggml's `quantize_row_q4_0_ref` for one block: the code `q` and `d` it stores.
    fn ggml_q4_0(x: &[f32]) -> (half::f16, Vec<u8>) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q = x
            .iter()
            .map(|&v| ((v * id + 8.5) as i32).min(15) as u8)
            .collect();
        (half::f16::from_f32(d), q)
    }

    /// ggml's `quantize_row_q4_1_ref` for one block.
    fn ggml_q4_1(x: &[f32]) -> (half::f16, half::f16, Vec<u8>) {
        let min = x.iter().copied().fold(f32::INFINITY, f32::min);
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q = x
            .iter()
            .map(|&v| (((v - min) * id + 0.5) as i32).min(15) as u8)
            .collect();
        (half::f16::from_f32(d), half::f16::from_f32(min), q)
    }

    /// ggml's `quantize_row_q8_0_ref` for one block.
    fn ggml_q8_0(x: &[f32]) -> (half::f16, Vec<i8>) {
        let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q = x.iter().map(|&v| (v * id).round() as i8).collect();
        (half::f16::from_f32(d), q)
    }

    /// How many f16 values apart `a` (an f16 value) and `b` are.
    fn f16_steps(a: f64, b: half::f16) -> u16 {
        half::f16::from_f64(a).to_bits().abs_diff(b.to_bits())
    }

    fn block(rng: &mut rand::rngs::StdRng) -> Vec<f32> {
        let s: f32 = rng.random_range(0.001..0.2);
        let shift: f32 = if rng.random_bool(0.3) {
            rng.random_range(-0.1..0.1)
        } else {
            0.0
        };
        (0..BLOCK)
            .map(|_| rng.random_range(-1.0..1.0f32) * s + shift)
            .collect()
    }

    /// On random blocks: pmq's parameters are ggml's (the stored f16 `d`, `m`), the value
    /// ggml's layout stores for each of pmq's codes is pmq's dequantized value exactly, pmq's
    /// codes are ggml's codes except where ggml (deciding with the unrounded f32 `d`, `m`)
    /// picks a code that is farther from the value on the stored grid, and per value pmq's
    /// error on the stored grid is never larger than ggml's.
    #[test]
    fn rtn_on_gguf_grids_matches_ggml_reference_quantizers() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        // per kind: (same codes, values)
        let mut agree = [(0usize, 0usize); 3];
        let mut check = |k: usize, v: f64, ours: f64, ggml: f64, same: bool| {
            assert!((ours - v).abs() <= (ggml - v).abs(), "kind {k}: {v}");
            agree[k].0 += same as usize;
            agree[k].1 += 1;
        };
        for _ in 0..400 {
            let x = block(&mut rng);
            let (lo, hi) = x
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v as f64), b.max(v as f64))
                });
            // Q4_0
            let g = QuantGrid::gguf(GridKind::GgufQ4_0);
            let p = g.fit_range(lo, hi);
            let (d, q) = ggml_q4_0(&x);
            let d = d.to_f64();
            assert_eq!(p.scale, d.abs());
            for (k, &v) in x.iter().enumerate() {
                let c = g.code(v as f64, p);
                let stored_code = if p.zero == 7 { 15 - c } else { c };
                let ours = QuantGrid::dequant(c, p);
                assert_eq!(ours, d * (stored_code as f64 - 8.0));
                let ggml = d * (q[k] as f64 - 8.0);
                check(0, v as f64, ours, ggml, stored_code == q[k] as u32);
            }
            // Q4_1
            let g = QuantGrid::gguf(GridKind::GgufQ4_1);
            let p = g.fit_range(lo, hi);
            let (d, m, q) = ggml_q4_1(&x);
            // ggml rounds max − min and d in f32 before f16: at most one f16 step apart
            assert!(f16_steps(p.scale, d) <= 1 && f16_steps(p.offset, m) == 0);
            for (k, &v) in x.iter().enumerate() {
                let c = g.code(v as f64, p);
                let ours = QuantGrid::dequant(c, p);
                assert_eq!(ours, p.scale * c as f64 + p.offset);
                let ggml = p.scale * q[k] as f64 + p.offset;
                check(1, v as f64, ours, ggml, c == q[k] as u32);
            }
            // Q8_0
            let g = QuantGrid::gguf(GridKind::GgufQ8_0);
            let p = g.fit_range(lo, hi);
            let (d, q) = ggml_q8_0(&x);
            assert!(f16_steps(p.scale, d) <= 1);
            for (k, &v) in x.iter().enumerate() {
                let c = g.code(v as f64, p);
                let ours = QuantGrid::dequant(c, p);
                let ggml = p.scale * q[k] as f64;
                check(2, v as f64, ours, ggml, c as i32 - 128 == q[k] as i32);
            }
        }
        // ggml decides with the unrounded d (and m): Q4_0's d = max/8 loses little to f16;
        // Q8_0's f16 d is off by up to 2⁻¹¹ relative, i.e. up to 127·2⁻¹¹ ≈ 6 % of a step at
        // the ends of its 255 levels (measured here: 99.95 %, 99.8 %, 98.7 %)
        for (k, want) in [(0, 0.995), (1, 0.99), (2, 0.97)] {
            let (same, n) = agree[k];
            let a = same as f64 / n as f64;
            assert!(a > want, "kind {k}: codes agree with ggml for {a}");
        }
    }

    /// RTN on a GGUF grid is the nearest grid point: brute force over every code.
    #[test]
    fn codes_are_nearest_grid_points() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for kind in [GridKind::GgufQ4_0, GridKind::GgufQ4_1, GridKind::GgufQ8_0] {
            let g = QuantGrid::gguf(kind);
            for _ in 0..50 {
                let x = block(&mut rng);
                let (lo, hi) = x
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                        (a.min(v as f64), b.max(v as f64))
                    });
                let p = g.fit_range(lo, hi);
                for &v in &x {
                    let v = v as f64;
                    let got = (QuantGrid::dequant(g.code(v, p), p) - v).abs();
                    let best = (0..=g.maxq())
                        .map(|c| (QuantGrid::dequant(c, p) - v).abs())
                        .fold(f64::INFINITY, f64::min);
                    assert!(got <= best * (1.0 + 1e-12) + 1e-300, "{kind:?} {v}");
                }
            }
        }
    }

    #[test]
    fn constant_blocks_get_a_usable_grid() {
        for kind in [GridKind::GgufQ4_0, GridKind::GgufQ4_1, GridKind::GgufQ8_0] {
            let g = QuantGrid::gguf(kind);
            let p = g.fit_range(0.0, 0.0);
            assert!(p.scale > 0.0);
            assert_eq!(QuantGrid::dequant(g.code(0.0, p), p), 0.0, "{kind:?}");
        }
        let g = QuantGrid::gguf(GridKind::GgufQ4_1);
        let p = g.fit_range(0.25, 0.25);
        assert_eq!(QuantGrid::dequant(g.code(0.25, p), p), 0.25);
    }
}
