//! Reading a GPTQ checkpoint: [`GptqReader`] opens it, unpacks each quantized linear back into a
//! [`PackedLinear`] and presents the dequantized `P.weight` in place of its four packed tensors.

use super::GptqSettings;
use crate::{FormatError, PackedLinear};
use pmq_core::packing::{unpack_qweight, unpack_qzeros};
use pmq_core::{QuantGrid, ScalePrecision};
use pmq_io::{Dtype, TensorStore};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// A GPTQ checkpoint opened for reading, presenting dequantized `P.weight` tensors in place of
/// `P.qweight`/`P.qzeros`/`P.scales`/`P.g_idx`.
pub struct GptqReader {
    store: TensorStore,
    settings: GptqSettings,
    /// prefix → (out, in)
    quantized: BTreeMap<String, (usize, usize)>,
}

impl GptqReader {
    /// Opens a GPTQ checkpoint directory (settings from quantize_config.json, else from
    /// config.json's `quantization_config`).
    pub fn open(dir: &Path) -> Result<Self, FormatError> {
        let qc_path = dir.join("quantize_config.json");
        let cfg_path = dir.join("config.json");
        let (path, v) = if qc_path.is_file() {
            let text = std::fs::read_to_string(&qc_path)
                .map_err(|e| FormatError::file(&qc_path, e.to_string()))?;
            (
                qc_path.clone(),
                serde_json::from_str::<Value>(&text)
                    .map_err(|e| FormatError::file(&qc_path, format!("invalid JSON: {e}")))?,
            )
        } else {
            let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
                FormatError::file(&cfg_path, format!("no quantize_config.json and {e}"))
            })?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| FormatError::file(&cfg_path, format!("invalid JSON: {e}")))?;
            let qc = v.get("quantization_config").cloned().ok_or_else(|| {
                FormatError::file(
                    &cfg_path,
                    "has no quantization_config: not a GPTQ checkpoint",
                )
            })?;
            (cfg_path.clone(), qc)
        };
        let settings = GptqSettings::from_json(&path, &v)?;
        QuantGrid::new(
            settings.bits,
            settings.sym,
            settings.group_size,
            ScalePrecision::F16,
        )
        .map_err(|e| FormatError::file(&path, e.to_string()))?;
        let store = TensorStore::open_dir(dir)?;
        let bits = settings.bits as usize;
        let mut quantized = BTreeMap::new();
        for n in store.names() {
            let Some(p) = n.strip_suffix(".qweight") else {
                continue;
            };
            let shape = &store.info(&n).expect("listed").shape;
            if shape.len() != 2 {
                return Err(FormatError::tensor(
                    dir,
                    &n,
                    format!("must be 2-D, has shape {shape:?}"),
                ));
            }
            let (cols, rows) = (shape[0] * 32 / bits, shape[1]);
            for part in ["qzeros", "scales", "g_idx"] {
                if !store.contains(&format!("{p}.{part}")) {
                    return Err(FormatError::tensor(
                        dir,
                        &format!("{p}.{part}"),
                        "is missing (needed with qweight)",
                    ));
                }
            }
            quantized.insert(p.to_string(), (rows, cols));
        }
        Ok(Self {
            store,
            settings,
            quantized,
        })
    }

    pub fn settings(&self) -> &GptqSettings {
        &self.settings
    }

    /// Prefixes of the quantized linears.
    pub fn quantized_prefixes(&self) -> impl Iterator<Item = &str> {
        self.quantized.keys().map(String::as_str)
    }

    /// Logical tensor names: stored ones, with each quantized linear's four tensors replaced by
    /// `P.weight`. Sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .store
            .names()
            .into_iter()
            .filter(|n| {
                !n.rsplit_once('.').is_some_and(|(p, s)| {
                    self.quantized.contains_key(p)
                        && matches!(s, "qweight" | "qzeros" | "scales" | "g_idx")
                })
            })
            .collect();
        names.extend(self.quantized.keys().map(|p| format!("{p}.weight")));
        names.sort();
        names
    }

    /// Shape of a logical tensor.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        if let Some(&(r, c)) = name
            .strip_suffix(".weight")
            .and_then(|p| self.quantized.get(p))
        {
            return Some(vec![r, c]);
        }
        self.store.info(name).map(|i| i.shape.clone())
    }

    /// The codes and parameters of quantized linear `prefix`.
    pub fn packed(&self, prefix: &str) -> Result<PackedLinear, FormatError> {
        let root = self.store.root();
        let &(rows, cols) = self
            .quantized
            .get(prefix)
            .ok_or_else(|| FormatError::tensor(root, &format!("{prefix}.qweight"), "not found"))?;
        let s = &self.settings;
        let grid = QuantGrid::new(s.bits, s.sym, s.group_size, ScalePrecision::F16)?;
        let name = |part: &str| format!("{prefix}.{part}");
        let read_i32 = |part: &str| -> Result<Vec<i32>, FormatError> {
            let n = name(part);
            let info = self.store.info(&n).expect("checked at open");
            if info.dtype != Dtype::I32 {
                return Err(FormatError::tensor(
                    root,
                    &n,
                    format!("must be I32, is {}", info.dtype),
                ));
            }
            Ok(self
                .store
                .raw_bytes(&n)?
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let ctx = |part: &'static str| {
            move |e: pmq_core::CoreError| {
                FormatError::tensor(root, &format!("{prefix}.{part}"), e.to_string())
            }
        };
        let codes =
            unpack_qweight(&read_i32("qweight")?, rows, cols, s.bits).map_err(ctx("qweight"))?;
        let g_idx: Vec<u32> = read_i32("g_idx")?.into_iter().map(|g| g as u32).collect();
        if g_idx.len() != cols {
            return Err(FormatError::tensor(
                root,
                &name("g_idx"),
                format!("has {} entries for {cols} input columns", g_idx.len()),
            ));
        }
        let scales: Vec<f64> = self.store.read_f64(&name("scales"))?;
        if !scales.len().is_multiple_of(rows.max(1)) {
            return Err(FormatError::tensor(
                root,
                &name("scales"),
                format!(
                    "has {} values, not a multiple of {rows} outputs",
                    scales.len()
                ),
            ));
        }
        let groups = scales.len() / rows.max(1);
        if let Some(&g) = g_idx.iter().find(|&&g| g as usize >= groups) {
            return Err(FormatError::tensor(
                root,
                &name("g_idx"),
                format!("refers to group {g} of {groups}"),
            ));
        }
        let zeros = unpack_qzeros(&read_i32("qzeros")?, groups, rows, s.bits, s.format)
            .map_err(ctx("qzeros"))?;
        Ok(PackedLinear {
            rows,
            cols,
            grid,
            codes,
            scales,
            zeros,
            g_idx,
        })
    }

    /// A logical tensor as f32 (quantized linears dequantized).
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>, FormatError> {
        if let Some(p) = name
            .strip_suffix(".weight")
            .filter(|p| self.quantized.contains_key(*p))
        {
            return Ok(self.packed(p)?.dequantize());
        }
        Ok(self.store.read_f32(name)?)
    }

    /// The underlying store.
    pub fn store(&self) -> &TensorStore {
        &self.store
    }
}
