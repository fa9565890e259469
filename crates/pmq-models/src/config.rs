//! Typed access to HF `config.json` fields with the family defaults of transformers and
//! errors that name the file and the field.

use crate::error::{Error, Result};
use crate::weights::{read_to_string, WeightStore};
use candle_core::Tensor;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The largest integer a config field may hold (2³¹ − 1).
pub const MAX_CONFIG_INT: u64 = (1 << 31) - 1;

/// A JSON object from a config file (the root or a nested object such as `vision_config`).
#[derive(Debug, Clone)]
pub struct ConfigObject {
    file: PathBuf,
    /// Dotted prefix of this object inside the file ("" for the root).
    prefix: String,
    map: Map<String, Value>,
}

impl ConfigObject {
    /// Reads and parses `path`, which must hold a JSON object.
    pub fn read(path: &Path) -> Result<Self> {
        let text = read_to_string(path)?;
        let value: Value = serde_json::from_str(&text).map_err(|e| Error::Config {
            file: path.to_path_buf(),
            field: "(root)".into(),
            msg: format!("invalid JSON: {e}"),
        })?;
        Self::from_value(path.to_path_buf(), String::new(), value)
    }

    /// Wraps an already parsed JSON object (`file` is used in error messages).
    pub fn from_value(file: PathBuf, prefix: String, value: Value) -> Result<Self> {
        match value {
            Value::Object(map) => Ok(Self { file, prefix, map }),
            other => Err(Error::Config {
                file,
                field: if prefix.is_empty() {
                    "(root)".into()
                } else {
                    prefix
                },
                msg: format!("expected a JSON object, found {other}"),
            }),
        }
    }

    /// The config file this object came from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Full dotted name of `field` for messages.
    pub fn field_name(&self, field: &str) -> String {
        if self.prefix.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.prefix)
        }
    }

    /// The fields present (not `null`), in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| k.as_str())
    }

    /// Optional array of numbers.
    pub fn f64_list_opt(&self, field: &str) -> Result<Option<Vec<f64>>> {
        match self.raw(field) {
            None => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_f64()
                        .filter(|x| x.is_finite())
                        .ok_or_else(|| self.err(field, format!("expected numbers, found {v}")))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(v) => Err(self.err(field, format!("expected an array of numbers, found {v}"))),
        }
    }

    /// The raw value of `field`, treating JSON `null` as absent.
    pub fn raw(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    /// An error about `field`.
    pub fn err(&self, field: &str, msg: impl Into<String>) -> Error {
        Error::Config {
            file: self.file.clone(),
            field: self.field_name(field),
            msg: msg.into(),
        }
    }

    /// An "unsupported value" error about `field`.
    pub fn unsupported(&self, field: &str, value: impl std::fmt::Display, why: &str) -> Error {
        Error::Unsupported {
            file: self.file.clone(),
            field: self.field_name(field),
            value: value.to_string(),
            why: why.to_string(),
        }
    }

    /// Nested object `field`, if present.
    pub fn object(&self, field: &str) -> Result<Option<ConfigObject>> {
        match self.raw(field) {
            None => Ok(None),
            Some(v) => {
                Self::from_value(self.file.clone(), self.field_name(field), v.clone()).map(Some)
            }
        }
    }

    /// Optional non-negative integer, at most [`MAX_CONFIG_INT`] (no model dimension or
    /// count comes near it, and products of two stay far from overflowing).
    pub fn usize_opt(&self, field: &str) -> Result<Option<usize>> {
        match self.raw(field) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(x) if x <= MAX_CONFIG_INT => Ok(Some(x as usize)),
                Some(x) => Err(self.err(
                    field,
                    format!("{x} is implausibly large (at most {MAX_CONFIG_INT} is accepted)"),
                )),
                None => Err(self.err(field, format!("expected a non-negative integer, found {v}"))),
            },
        }
    }

    /// Checks a layer count read from `field` against the checkpoint before anything is
    /// allocated for it: the last layer must exist (its tensor `tensor(n − 1)`); a layer beyond
    /// the count (`tensor(n)`) is reported as ignored.
    pub fn check_layer_count(
        &self,
        field: &str,
        n: usize,
        ws: &WeightStore,
        tensor: impl Fn(usize) -> String,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let last = tensor(n - 1);
        if !ws.contains(&last) {
            return Err(self.err(
                field,
                format!(
                    "says {n} layers, but the checkpoint {} has no tensor `{last}`",
                    ws.source()
                ),
            ));
        }
        let beyond = tensor(n);
        if ws.contains(&beyond) {
            tracing::warn!(
                "{}: `{}` = {n}, but the checkpoint also has `{beyond}`: layers from {n} on are ignored",
                self.file.display(),
                self.field_name(field)
            );
        }
        Ok(())
    }

    /// Non-negative integer with a default.
    pub fn usize_or(&self, field: &str, default: usize) -> Result<usize> {
        Ok(self.usize_opt(field)?.unwrap_or(default))
    }

    /// Required positive integer.
    pub fn usize_req(&self, field: &str) -> Result<usize> {
        self.usize_opt(field)?
            .ok_or_else(|| self.err(field, "required field is missing"))
    }

    /// Optional number.
    pub fn f64_opt(&self, field: &str) -> Result<Option<f64>> {
        match self.raw(field) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected a number, found {v}"))),
        }
    }

    /// Number with a default.
    pub fn f64_or(&self, field: &str, default: f64) -> Result<f64> {
        Ok(self.f64_opt(field)?.unwrap_or(default))
    }

    /// Boolean with a default.
    pub fn bool_or(&self, field: &str, default: bool) -> Result<bool> {
        match self.raw(field) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(field, format!("expected true/false, found {v}"))),
        }
    }

    /// Optional string.
    pub fn str_opt(&self, field: &str) -> Result<Option<String>> {
        match self.raw(field) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| self.err(field, format!("expected a string, found {v}"))),
        }
    }

    /// String with a default.
    pub fn str_or(&self, field: &str, default: &str) -> Result<String> {
        Ok(self.str_opt(field)?.unwrap_or_else(|| default.to_string()))
    }

    /// The `architectures` list (empty when absent).
    pub fn architectures(&self) -> Result<Vec<String>> {
        match self.raw("architectures") {
            None => Ok(vec![]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.err("architectures", "expected a list of strings"))
                })
                .collect(),
            Some(v) => Err(self.err("architectures", format!("expected a list, found {v}"))),
        }
    }

    /// Requires `field`'s value to be positive.
    pub fn positive(&self, field: &str, value: usize) -> Result<usize> {
        if value == 0 {
            Err(self.err(field, "must be > 0"))
        } else {
            Ok(value)
        }
    }

    /// Requires `a` to be divisible by `b` (both named fields).
    pub fn divisible(&self, field_a: &str, a: usize, field_b: &str, b: usize) -> Result<()> {
        if b == 0 || !a.is_multiple_of(b) {
            Err(self.err(
                field_a,
                format!(
                    "{a} is not divisible by `{}` = {b}",
                    self.field_name(field_b)
                ),
            ))
        } else {
            Ok(())
        }
    }

    /// Reads an activation name (`field`) with a default.
    pub fn activation_or(&self, field: &str, default: &str) -> Result<Activation> {
        let name = self.str_or(field, default)?;
        Activation::from_hf_name(&name).ok_or_else(|| {
            self.unsupported(
                field,
                &name,
                "supported: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, quick_gelu, relu, silu, swish",
            )
        })
    }
}

/// Activation functions by their transformers `ACT2FN` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: exact (erf) GELU.
    GeluErf,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: tanh approximation.
    GeluTanh,
    /// `quick_gelu`: x·σ(1.702x).
    QuickGelu,
    /// `relu`.
    Relu,
    /// `silu` / `swish`.
    Silu,
}

impl Activation {
    /// Maps a transformers activation name.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => Self::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "quick_gelu" => Self::QuickGelu,
            "relu" => Self::Relu,
            "silu" | "swish" => Self::Silu,
            _ => return None,
        })
    }

    /// Applies the activation.
    pub fn forward(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::GeluErf => gelu_erf(xs),
            Self::GeluTanh => xs.gelu(),
            Self::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702f64)?)?,
            Self::Relu => xs.relu(),
            Self::Silu => candle_nn::ops::silu(xs),
        }
    }
}

/// Exact (erf) GELU, `x · (1 + erf(x/√2)) / 2`, computed exactly as candle's `gelu_erf` (same
/// expression, same `erf`), but over all rayon threads for large f32 tensors on the CPU:
/// candle evaluates the scalar `erf` on one thread, which made GELU a tenth of a BERT
/// calibration run on 2 cores. The threaded path builds a new tensor outside candle's autograd
/// graph, so it is taken only for tensors no gradient flows through (inference): in training
/// (`track_op`) candle's own op keeps GELU's backward.
fn gelu_erf(xs: &Tensor) -> candle_core::Result<Tensor> {
    use rayon::prelude::*;
    const PARALLEL_FROM: usize = 1 << 15;
    if xs.dtype() != candle_core::DType::F32
        || !xs.device().is_cpu()
        || xs.elem_count() < PARALLEL_FROM
        || xs.track_op()
    {
        return xs.gelu_erf();
    }
    let mut v: Vec<f32> = xs.flatten_all()?.to_vec1()?;
    v.par_chunks_mut(4096).for_each(|chunk| {
        for x in chunk {
            let v = *x;
            *x = (candle_core::cpu::erf::erf_f32(v * std::f32::consts::FRAC_1_SQRT_2) + 1.)
                * 0.5
                * v;
        }
    });
    Tensor::from_vec(v, xs.shape(), xs.device())
}

#[cfg(test)]
mod gelu_tests {
    use super::*;

    #[test]
    fn parallel_gelu_equals_candles_bit_for_bit() {
        let (b, s, d) = (3, 97, 385);
        let v: Vec<f32> = (0..b * s * d)
            .map(|i| ((i * 7919) % 2003) as f32 / 250.0 - 4.0)
            .collect();
        let t = Tensor::from_vec(v, (b, s, d), &candle_core::Device::Cpu).unwrap();
        let ours = gelu_erf(&t).unwrap();
        assert_eq!(ours.dims(), t.dims());
        let a: Vec<f32> = ours.flatten_all().unwrap().to_vec1().unwrap();
        let want: Vec<f32> = t
            .gelu_erf()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(a, want);
    }

    /// What capture passes rely on (`Capturer::linear` activates only the real tokens' rows,
    /// then puts them back among zero rows): every activation maps +0 to +0, and activating a
    /// subset of rows gives those rows bit for bit as activating the whole tensor does.
    #[test]
    fn activations_of_real_rows_equal_those_of_the_padded_tensor() {
        let (n, d) = (200, 384);
        let dev = candle_core::Device::Cpu;
        let real = |r: usize| r % 3 != 2;
        let value = |i: usize| ((i * 7919) % 2003) as f32 / 250.0 - 4.0;
        let full: Vec<f32> = (0..n * d)
            .map(|i| if real(i / d) { value(i) } else { 0.0 })
            .collect();
        let packed: Vec<f32> = (0..n * d).filter(|i| real(i / d)).map(value).collect();
        let m = packed.len() / d;
        let full = Tensor::from_vec(full, (n, d), &dev).unwrap();
        let packed = Tensor::from_vec(packed, (m, d), &dev).unwrap();
        for act in [
            Activation::GeluErf,
            Activation::GeluTanh,
            Activation::QuickGelu,
            Activation::Relu,
            Activation::Silu,
        ] {
            let a: Vec<Vec<f32>> = act.forward(&full).unwrap().to_vec2().unwrap();
            let b: Vec<Vec<f32>> = act.forward(&packed).unwrap().to_vec2().unwrap();
            let mut k = 0;
            for (r, row) in a.iter().enumerate() {
                if real(r) {
                    assert_eq!(row, &b[k], "{act:?}: row {r}");
                    k += 1;
                } else {
                    assert!(
                        row.iter().all(|v| v.to_bits() == 0),
                        "{act:?}: act(0) != +0"
                    );
                }
            }
        }
    }

    #[test]
    fn gradients_flow_through_gelu_on_large_tensors() {
        // large enough for the threaded path: training must still get GELU's derivative
        let n = 1 << 16;
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 2003) as f32 / 250.0 - 4.0)
            .collect();
        let dev = candle_core::Device::Cpu;
        let x = candle_core::Var::from_vec(v.clone(), n, &dev).unwrap();
        let grads = gelu_erf(x.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let got: Vec<f32> = grads
            .get(x.as_tensor())
            .expect("a gradient")
            .to_vec1()
            .unwrap();
        let y = candle_core::Var::from_vec(v, n, &dev).unwrap();
        let grads = y
            .as_tensor()
            .gelu_erf()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let want: Vec<f32> = grads.get(y.as_tensor()).unwrap().to_vec1().unwrap();
        assert_eq!(got, want);
        // d/dx GELU(0) = 1/2: a real derivative, not zeros
        assert!(want.iter().any(|&g| g != 0.0));
    }
}
