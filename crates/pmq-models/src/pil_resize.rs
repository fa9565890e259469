//! Bicubic resizing exactly as Pillow does it (`Image.resize(size, Image.BICUBIC)`, which
//! transformers' PIL image processors call), so that preprocessed pixels equal HF's.
//!
//! Pillow's `ImagingResample` (libImaging/Resample.c) is separable: one pass along the width
//! into a temporary 8-bit image, rounded and clipped to 0…255, then one pass along the height.
//! Each output pixel `x` of a pass of scale `s = in / out` reads the inputs within
//! `support = 2·max(s, 1)` of its centre `c = (x + ½)·s` with the weights
//!
//! ```text
//! w_j = k((j − c + ½) / max(s, 1)) / Σ_j k(·),   k = Keys' cubic with a = −½,
//! ```
//!
//! converted to fixed point with 22 fraction bits (`round(w·2²²)`, away from zero), and the
//! sum `½·2²² + Σ_j w_j·p_j` is shifted back and clipped to 0…255. A pass whose size does not
//! change is skipped. (The `image` crate's Catmull-Rom filter has the same kernel, but runs the
//! vertical pass first, in floating point, and rounds once; that is up to 4 levels off.)

use image::RgbImage;

/// Fraction bits of Pillow's 8-bit fixed-point coefficients (`32 − 8 − 2`).
const PRECISION_BITS: u32 = 22;

/// Keys' cubic convolution kernel with `a = −½` (Pillow's `bicubic_filter`).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// One pass's taps: per output pixel, the first input index and the fixed-point weights.
struct Taps {
    first: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for `in_size → out_size`.
fn taps(in_size: usize, out_size: usize) -> Taps {
    const SUPPORT: f64 = 2.0;
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = SUPPORT * filter_scale;
    let ss = 1.0 / filter_scale;
    let mut first = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's (int) truncates toward zero
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let w: Vec<f64> = (0..n)
            .map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) * ss))
            .collect();
        let total: f64 = w.iter().sum();
        let fixed = w
            .iter()
            .map(|&v| {
                let v = if total != 0.0 { v / total } else { v };
                let f = v * f64::from(1u32 << PRECISION_BITS);
                if v < 0.0 {
                    (-0.5 + f) as i32
                } else {
                    (0.5 + f) as i32
                }
            })
            .collect();
        first.push(xmin);
        weights.push(fixed);
    }
    Taps { first, weights }
}

/// Pillow's `clip8`: the fixed-point sum back to 0…255.
fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Applies `taps` along one axis: `get(i, j, c)` reads input sample `j` of output line `i`.
fn pass(
    taps: &Taps,
    lines: usize,
    get: impl Fn(usize, usize, usize) -> u8,
    mut put: impl FnMut(usize, usize, [u8; 3]),
) {
    for i in 0..lines {
        for (o, (first, w)) in taps.first.iter().zip(&taps.weights).enumerate() {
            let mut ss = [1i64 << (PRECISION_BITS - 1); 3];
            for (k, &wk) in w.iter().enumerate() {
                for (c, s) in ss.iter_mut().enumerate() {
                    *s += i64::from(get(i, first + k, c)) * i64::from(wk);
                }
            }
            put(i, o, [clip8(ss[0]), clip8(ss[1]), clip8(ss[2])]);
        }
    }
}

/// Resizes `img` to `width × height` with Pillow's bicubic filter, bit for bit.
pub fn resize_bicubic(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w0, h0) = img.dimensions();
    let mut cur = img.clone();
    if width != w0 {
        let t = taps(w0 as usize, width as usize);
        let src = cur;
        let mut out = RgbImage::new(width, h0);
        pass(
            &t,
            h0 as usize,
            |y, x, c| src.get_pixel(x as u32, y as u32).0[c],
            |y, x, px| out.put_pixel(x as u32, y as u32, image::Rgb(px)),
        );
        cur = out;
    }
    if height != h0 {
        let t = taps(h0 as usize, height as usize);
        let src = cur;
        let mut out = RgbImage::new(width, height);
        pass(
            &t,
            width as usize,
            |x, y, c| src.get_pixel(x as u32, y as u32).0[c],
            |x, y, px| out.put_pixel(x as u32, y as u32, image::Rgb(px)),
        );
        cur = out;
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_normalised_and_identity_keeps_the_image() {
        for (i, o) in [(28, 224), (300, 224), (7, 3), (224, 224)] {
            let t = taps(i, o);
            for w in &t.weights {
                let s: i64 = w.iter().map(|&v| i64::from(v)).sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= w.len() as i64,
                    "{i}→{o}: {s}"
                );
            }
        }
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([(x * 40) as u8, (y * 60) as u8, 7]));
        assert_eq!(resize_bicubic(&img, 5, 4), img);
        // a constant image stays constant at any size
        let flat = RgbImage::from_pixel(13, 9, image::Rgb([200, 3, 77]));
        let r = resize_bicubic(&flat, 31, 5);
        assert!(r.pixels().all(|p| p.0 == [200, 3, 77]));
    }
}
