//! Calibration files for the pipeline's tests, per family.

use crate::families::Fam;
use crate::text::sentence;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::path::{Path, PathBuf};

/// A calibration set of `n` samples for `fam` in `root`, drawn from `seed`: `TASK.jsonl` with
/// `{"text"}` lines (T5: `{"input", "target"}`), or for CLIP a directory `TASK-images` of random
/// 40×36 PNGs. Returns the `TASK=PATH` argument of `pmq quantize --calib`.
pub fn write_calib(fam: Fam, root: &Path, task: &str, n: usize, seed: u64) -> String {
    let mut r = StdRng::seed_from_u64(seed);
    let path: PathBuf = if fam.is_text() {
        let lines: Vec<String> = (0..n)
            .map(|_| {
                if fam.is_seq2seq() {
                    json!({"input": sentence(&mut r), "target": sentence(&mut r)}).to_string()
                } else {
                    json!({"text": sentence(&mut r)}).to_string()
                }
            })
            .collect();
        let p = root.join(format!("{task}.jsonl"));
        std::fs::write(&p, lines.join("\n")).unwrap();
        p
    } else {
        let dir = root.join(format!("{task}-images"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            let img = image::RgbImage::from_fn(40, 36, |_, _| {
                image::Rgb([r.random(), r.random(), r.random()])
            });
            img.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
        dir
    };
    format!("{task}={}", path.display())
}

/// An image classification folder in `root`: one sub-folder per `(class, rgb)` with `n`
/// 40×36 PNGs each, every pixel the class colour plus uniform noise of ±`noise` levels
/// (clamped), drawn from `seed`. Classes with distinct colours are separable from pixels.
pub fn write_image_folder(
    root: &Path,
    classes: &[(&str, [u8; 3])],
    n: usize,
    noise: i32,
    seed: u64,
) {
    let mut r = StdRng::seed_from_u64(seed);
    for (class, rgb) in classes {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            let img =
                image::RgbImage::from_fn(40, 36, |_, _| {
                    image::Rgb(rgb.map(|c| {
                        (i32::from(c) + r.random_range(-noise..=noise)).clamp(0, 255) as u8
                    }))
                });
            img.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
    }
}
