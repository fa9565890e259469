//! Shared helpers for the parity tests: random checkpoints with HF tensor names.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;

pub use pmq_testkit::rel_err;

/// A random checkpoint under construction.
pub struct Ckpt {
    pub tensors: HashMap<String, Tensor>,
    rng: StdRng,
}

impl Ckpt {
    pub fn new(seed: u64) -> Self {
        Self {
            tensors: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// A checkpoint holding a copy of `tensors`.
    pub fn with(tensors: HashMap<String, Tensor>) -> Self {
        Self {
            tensors,
            rng: StdRng::seed_from_u64(0),
        }
    }

    /// Adds a tensor with entries uniform in `[-scale, scale]`.
    pub fn rand(&mut self, name: &str, shape: &[usize], scale: f32) {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| self.rng.random_range(-scale..scale))
            .collect();
        let t = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
        self.tensors.insert(name.to_string(), t);
    }

    /// Adds a tensor with entries uniform in `[center - scale, center + scale]`.
    pub fn around(&mut self, name: &str, shape: &[usize], center: f32, scale: f32) {
        self.rand(name, shape, scale);
        let t = (self.tensors[name].clone() + center as f64).unwrap();
        self.tensors.insert(name.to_string(), t);
    }

    /// A linear `[out, in]` with Xavier-like scale and optional bias.
    pub fn linear(&mut self, prefix: &str, inp: usize, out: usize, bias: bool) {
        let s = (3.0 / inp as f32).sqrt();
        self.rand(&format!("{prefix}.weight"), &[out, inp], s);
        if bias {
            self.rand(&format!("{prefix}.bias"), &[out], 0.1);
        }
    }

    /// LayerNorm weight ≈ 1 and bias ≈ 0.
    pub fn layer_norm(&mut self, prefix: &str, dim: usize, bias: bool) {
        self.around(&format!("{prefix}.weight"), &[dim], 1.0, 0.2);
        if bias {
            self.rand(&format!("{prefix}.bias"), &[dim], 0.1);
        }
    }

    /// Writes `model.safetensors` (in `dtype`) and `config.json` into `dir`.
    pub fn save(&self, dir: &Path, config: &serde_json::Value, dtype: DType) {
        std::fs::create_dir_all(dir).unwrap();
        let conv: HashMap<String, Tensor> = self
            .tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.to_dtype(dtype).unwrap()))
            .collect();
        candle_core::safetensors::save(&conv, dir.join("model.safetensors")).unwrap();
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(config).unwrap(),
        )
        .unwrap();
    }
}

/// Random token ids in `[lo, hi)`.
pub fn rand_ids(seed: u64, len: usize, lo: u32, hi: u32) -> Vec<u32> {
    let mut r = StdRng::seed_from_u64(seed);
    (0..len).map(|_| r.random_range(lo..hi)).collect()
}

pub fn vb(dir: &Path) -> candle_nn::VarBuilder<'static> {
    unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    }
}
