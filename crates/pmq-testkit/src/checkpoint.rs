//! A random checkpoint under construction.

use pmq_io::{encode_f32, write_safetensors, Dtype};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// Named tensors drawn from one seeded generator, in the order they are added.
pub struct Ckpt {
    tensors: BTreeMap<String, (Vec<usize>, Data)>,
    rng: StdRng,
}

impl Ckpt {
    pub fn new(seed: u64) -> Self {
        Self {
            tensors: BTreeMap::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// A tensor with entries uniform in `[center − scale, center + scale)`.
    pub fn rand(&mut self, name: &str, shape: &[usize], center: f32, scale: f32) {
        let n = shape.iter().product();
        let v = (0..n)
            .map(|_| center + self.rng.random_range(-scale..scale))
            .collect();
        self.tensors
            .insert(name.to_string(), (shape.to_vec(), Data::F32(v)));
    }

    /// An i64 tensor (e.g. BERT's unused `embeddings.position_ids`).
    pub fn ints(&mut self, name: &str, shape: &[usize], values: Vec<i64>) {
        assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}");
        self.tensors
            .insert(name.to_string(), (shape.to_vec(), Data::I64(values)));
    }

    /// A linear `prefix.weight` `[out, in]` with Xavier-like scale, and `prefix.bias` when asked.
    pub fn linear(&mut self, prefix: &str, inp: usize, out: usize, bias: bool) {
        self.rand(
            &format!("{prefix}.weight"),
            &[out, inp],
            0.0,
            (3.0 / inp as f32).sqrt(),
        );
        if bias {
            self.rand(&format!("{prefix}.bias"), &[out], 0.0, 0.1);
        }
    }

    /// A norm weight around 1 (and a bias around 0 when asked).
    pub fn norm(&mut self, prefix: &str, dim: usize, bias: bool) {
        self.rand(&format!("{prefix}.weight"), &[dim], 1.0, 0.2);
        if bias {
            self.rand(&format!("{prefix}.bias"), &[dim], 0.0, 0.1);
        }
    }

    /// [`Ckpt::norm`] with a few channels scaled by 8: the activation outliers AWQ protects.
    pub fn norm_with_outliers(&mut self, prefix: &str, dim: usize, bias: bool) {
        self.norm(prefix, dim, bias);
        let Some((_, Data::F32(w))) = self.tensors.get_mut(&format!("{prefix}.weight")) else {
            unreachable!()
        };
        for c in [3, 17, 40].into_iter().filter(|&c| c < dim) {
            w[c] *= 8.0;
        }
    }

    /// Adds uniform noise in `[−scale, scale)` to every f32 tensor, drawn from `seed` in name
    /// order: an "expert" near this checkpoint.
    pub fn perturb(&mut self, seed: u64, scale: f32) {
        let mut r = StdRng::seed_from_u64(seed);
        for (_, d) in self.tensors.values_mut() {
            if let Data::F32(v) = d {
                v.iter_mut()
                    .for_each(|x| *x += r.random_range(-scale..scale));
            }
        }
    }

    /// Writes `config.json` and `model.safetensors` (f32, and i64 where added) into `dir`.
    pub fn save(&self, dir: &Path, config: &Value) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(config).unwrap(),
        )
        .unwrap();
        let t: Vec<_> = self
            .tensors
            .iter()
            .map(|(n, (s, d))| match d {
                Data::F32(v) => (
                    n.clone(),
                    Dtype::F32,
                    s.clone(),
                    encode_f32(Dtype::F32, v).unwrap(),
                ),
                Data::I64(v) => (
                    n.clone(),
                    Dtype::I64,
                    s.clone(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
            })
            .collect();
        write_safetensors(&dir.join("model.safetensors"), &t, None).unwrap();
    }
}
