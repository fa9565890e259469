//! Tiny HF-style checkpoints for tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use pmq_io::{encode_f32, i32_bytes, write_safetensors, Dtype, TensorStore};

pub struct Tensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// A float tensor stored as `dtype`.
pub fn ft(name: &str, dtype: Dtype, shape: &[usize], values: &[f32]) -> Tensor {
    assert_eq!(values.len(), shape.iter().product::<usize>());
    Tensor {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
        bytes: encode_f32(dtype, values).unwrap(),
    }
}

/// An f32 tensor.
pub fn f32t(name: &str, shape: &[usize], values: &[f32]) -> Tensor {
    ft(name, Dtype::F32, shape, values)
}

/// An i32 tensor.
pub fn i32t(name: &str, values: &[i32]) -> Tensor {
    Tensor {
        name: name.into(),
        dtype: Dtype::I32,
        shape: vec![values.len()],
        bytes: i32_bytes(values),
    }
}

/// Writes `dir` with a config.json for `arch` and the tensors in `shards` files
/// (1: model.safetensors; more: model-0000i-of-0000n.safetensors + index).
pub fn write_model(dir: &Path, arch: &str, tensors: Vec<Tensor>, shards: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let config =
        serde_json::json!({"architectures": [arch], "model_type": "toy", "hidden_size": 3});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let as_tuple = |t: &Tensor| (t.name.clone(), t.dtype, t.shape.clone(), t.bytes.clone());
    if shards <= 1 {
        let all: Vec<_> = tensors.iter().map(as_tuple).collect();
        write_safetensors(&dir.join("model.safetensors"), &all, None).unwrap();
    } else {
        let mut weight_map = serde_json::Map::new();
        for s in 0..shards {
            let file = format!("model-{:05}-of-{:05}.safetensors", s + 1, shards);
            let part: Vec<_> = tensors
                .iter()
                .enumerate()
                .filter(|(i, _)| i % shards == s)
                .map(|(_, t)| {
                    weight_map.insert(t.name.clone(), file.clone().into());
                    as_tuple(t)
                })
                .collect();
            write_safetensors(&dir.join(&file), &part, None).unwrap();
        }
        let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }
    dir.to_path_buf()
}

/// Reads an output tensor as f32.
pub fn read(out: &Path, name: &str) -> Vec<f32> {
    TensorStore::open_dir(out).unwrap().read_f32(name).unwrap()
}

pub fn assert_close(got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol,
            "entry {i}: got {g}, want {w}\n got {got:?}\nwant {want:?}"
        );
    }
}

/// A deterministic pseudo-random stream (xorshift) for test data, independent of the crate's RNG.
pub struct TestRng(pub u64);

impl TestRng {
    pub fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next_f32()).collect()
    }
}
