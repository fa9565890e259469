//! CLIP image preprocessing as transformers' PIL backend (`CLIPImageProcessorPil`, which
//! `CLIPImageProcessor` falls back to without torchvision) does it: convert to RGB, resize the
//! shortest side to `size` with Pillow's bicubic filter (bit for bit, [`crate::pil_resize`]),
//! center-crop, rescale by 1/255 and normalise with the processor mean/std. (transformers'
//! torchvision backend resizes in floating point with its own antialiasing; its pixels differ
//! from Pillow's by a few levels.)

use crate::config::ConfigObject;
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use image::DynamicImage;
use serde_json::Value;
use std::path::Path;

/// OpenAI CLIP normalisation mean (digits as published in `preprocessor_config.json`).
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP normalisation std (digits as published in `preprocessor_config.json`).
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// CLIP image preprocessing parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipImageProcessor {
    /// Target length of the shortest side (`size.shortest_edge`); `None` disables resizing.
    pub shortest_edge: Option<u32>,
    /// Center crop `(height, width)` (`crop_size`); `None` disables cropping.
    pub crop: Option<(u32, u32)>,
    /// Multiplier applied to 0..255 pixel values (`rescale_factor`, 1/255).
    pub rescale_factor: f32,
    /// Per-channel mean (`image_mean`).
    pub mean: [f32; 3],
    /// Per-channel std (`image_std`).
    pub std: [f32; 3],
}

impl ClipImageProcessor {
    /// The processor of the OpenAI CLIP checkpoints for a model with `image_size`.
    pub fn for_image_size(image_size: u32) -> Self {
        Self {
            shortest_edge: Some(image_size),
            crop: Some((image_size, image_size)),
            rescale_factor: 1.0 / 255.0,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }

    /// Reads `preprocessor_config.json` in `dir` when present, else the defaults for
    /// `image_size`.
    pub fn from_dir(dir: &Path, image_size: u32) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        if path.is_file() {
            Self::from_file(&path, image_size)
        } else {
            Ok(Self::for_image_size(image_size))
        }
    }

    /// Reads a `preprocessor_config.json`.
    pub fn from_file(path: &Path, image_size: u32) -> Result<Self> {
        let c = ConfigObject::read(path)?;
        let mut p = Self::for_image_size(image_size);
        let size_of = |field: &str, key: &str| -> Result<Option<(u32, u32)>> {
            match c.raw(field) {
                None => Ok(None),
                Some(Value::Number(n)) => {
                    let v = n
                        .as_u64()
                        .ok_or_else(|| c.err(field, "expected a positive integer"))?;
                    Ok(Some((v as u32, v as u32)))
                }
                Some(Value::Object(_)) => {
                    let o = c
                        .object(field)?
                        .ok_or_else(|| c.err(field, "expected an object"))?;
                    if let Some(v) = o.usize_opt(key)? {
                        return Ok(Some((v as u32, v as u32)));
                    }
                    match (o.usize_opt("height")?, o.usize_opt("width")?) {
                        (Some(h), Some(w)) => Ok(Some((h as u32, w as u32))),
                        _ => Err(c.err(field, format!("expected `{key}` or `height` and `width`"))),
                    }
                }
                Some(v) => Err(c.err(field, format!("expected an integer or object, found {v}"))),
            }
        };
        // PIL.Image.BICUBIC = 3, the processor's default; others are not implemented
        if let Some(r) = c.usize_opt("resample")? {
            if r != 3 {
                return Err(c.unsupported(
                    "resample",
                    r,
                    "only bicubic resampling (3, PIL.Image.BICUBIC) is implemented",
                ));
            }
        }
        if let Some((h, w)) = size_of("size", "shortest_edge")? {
            if h != w {
                return Err(c.unsupported(
                    "size",
                    format!("{h}x{w}"),
                    "only `shortest_edge` resizing is implemented",
                ));
            }
            p.shortest_edge = Some(h);
        }
        if let Some(hw) = size_of("crop_size", "shortest_edge")? {
            p.crop = Some(hw);
        }
        if !c.bool_or("do_resize", true)? {
            p.shortest_edge = None;
        }
        if !c.bool_or("do_center_crop", true)? {
            p.crop = None;
        }
        p.rescale_factor = if c.bool_or("do_rescale", true)? {
            c.f64_or("rescale_factor", 1.0 / 255.0)? as f32
        } else {
            1.0
        };
        let triple = |field: &str, default: [f32; 3]| -> Result<[f32; 3]> {
            match c.raw(field) {
                None => Ok(default),
                Some(Value::Array(a)) if a.len() == 3 && a.iter().all(Value::is_number) => Ok([
                    a[0].as_f64().unwrap_or(0.0) as f32,
                    a[1].as_f64().unwrap_or(0.0) as f32,
                    a[2].as_f64().unwrap_or(0.0) as f32,
                ]),
                Some(v) => Err(c.err(field, format!("expected 3 numbers, found {v}"))),
            }
        };
        if c.bool_or("do_normalize", true)? {
            p.mean = triple("image_mean", CLIP_MEAN)?;
            p.std = triple("image_std", CLIP_STD)?;
            if p.std.contains(&0.0) {
                return Err(c.err("image_std", "must not contain 0"));
            }
        } else {
            p.mean = [0.0; 3];
            p.std = [1.0; 3];
        }
        Ok(p)
    }

    /// Preprocesses one image to `[3, crop_h, crop_w]` f32.
    pub fn preprocess(&self, img: &DynamicImage) -> Result<Tensor> {
        let mut rgb = img.to_rgb8();
        if let Some(s) = self.shortest_edge {
            let (w, h) = rgb.dimensions();
            if w == 0 || h == 0 {
                return Err(Error::input("image has zero width or height"));
            }
            let (nw, nh) = if w <= h {
                (s, ((s as u64 * h as u64) / w as u64) as u32)
            } else {
                (((s as u64 * w as u64) / h as u64) as u32, s)
            };
            rgb = crate::pil_resize::resize_bicubic(&rgb, nw, nh);
        }
        if let Some((ch, cw)) = self.crop {
            let (w, h) = rgb.dimensions();
            if ch > h || cw > w {
                return Err(Error::input(format!(
                    "image {w}x{h} is smaller than the crop {cw}x{ch}"
                )));
            }
            let top = (h - ch) / 2;
            let left = (w - cw) / 2;
            rgb = image::imageops::crop_imm(&rgb, left, top, cw, ch).to_image();
        }
        let (w, h) = rgb.dimensions();
        let (w, h) = (w as usize, h as usize);
        let mut data = vec![0f32; 3 * h * w];
        for (x, y, px) in rgb.enumerate_pixels() {
            for c in 0..3 {
                let v = px.0[c] as f32 * self.rescale_factor;
                data[c * h * w + y as usize * w + x as usize] = (v - self.mean[c]) / self.std[c];
            }
        }
        Ok(Tensor::from_vec(data, (3, h, w), &Device::Cpu)?)
    }

    /// Loads and preprocesses image files into a `[b, 3, H, W]` batch.
    pub fn load_batch(&self, paths: &[&Path]) -> Result<Tensor> {
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            let img = image::open(p).map_err(|e| Error::Image {
                path: p.to_path_buf(),
                msg: e.to_string(),
            })?;
            out.push(self.preprocess(&img)?);
        }
        if out.is_empty() {
            return Err(Error::input("no images given"));
        }
        Ok(Tensor::stack(&out, 0)?)
    }
}
