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
        let mut quantized = BTreeMap::new();
        for n in store.names() {
            let Some(p) = n.strip_suffix(".qweight") else {
                continue;
            };
            let (rows, cols) = check_linear(&store, p, &settings)?;
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
        let g_idx_name = name("g_idx");
        let g_idx = read_i32("g_idx")?;
        if g_idx.len() != cols {
            return Err(FormatError::tensor(
                self.file_of(&g_idx_name),
                &g_idx_name,
                format!("has {} entries for {cols} input columns", g_idx.len()),
            ));
        }
        let scales_name = name("scales");
        let scales: Vec<f64> = self.store.read_f64(&scales_name)?;
        if let Some((i, v)) = scales.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(FormatError::tensor(
                self.file_of(&scales_name),
                &scales_name,
                format!(
                    "holds a non-finite scale ({v}) at group {}, output {}: the checkpoint is corrupt",
                    i / rows.max(1),
                    i % rows.max(1)
                ),
            ));
        }
        let groups = scales.len() / rows.max(1);
        if let Some((c, &g)) = g_idx
            .iter()
            .enumerate()
            .find(|(_, &g)| g < 0 || g as usize >= groups)
        {
            return Err(FormatError::tensor(
                self.file_of(&g_idx_name),
                &g_idx_name,
                format!(
                    "maps input column {c} to group {g}, but the linear has groups 0..{}",
                    groups.saturating_sub(1)
                ),
            ));
        }
        let g_idx: Vec<u32> = g_idx.into_iter().map(|g| g as u32).collect();
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
            offsets: Vec::new(),
        })
    }

    /// A logical tensor as f32 (quantized linears dequantized).
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>, FormatError> {
        if let Some(p) = name
            .strip_suffix(".weight")
            .filter(|p| self.quantized.contains_key(*p))
        {
            let packed = self.packed(p)?;
            let weight = packed.dequantize();
            // finite scales can still overflow f32 once multiplied by a code
            if let Some(i) = weight.iter().position(|v| !v.is_finite()) {
                let scales = format!("{p}.scales");
                return Err(FormatError::tensor(
                    self.file_of(&scales),
                    &scales,
                    format!(
                        "dequantizes `{name}` to {} at row {}, column {}: a scale too large for f32",
                        weight[i],
                        i / packed.cols.max(1),
                        i % packed.cols.max(1)
                    ),
                ));
            }
            return Ok(weight);
        }
        let values = self.store.read_f32(name)?;
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(FormatError::tensor(
                self.file_of(name),
                name,
                format!("holds a non-finite value ({v}) at flat index {i}"),
            ));
        }
        Ok(values)
    }

    /// The file that stores `name` (the checkpoint directory if unknown).
    fn file_of(&self, name: &str) -> &Path {
        self.store.file_of(name).unwrap_or(self.store.root())
    }

    /// The underlying store.
    pub fn store(&self) -> &TensorStore {
        &self.store
    }
}

/// Checks that the packed tensors of quantized linear `p` exist and agree with each other and
/// with the settings; returns its `(out, in)`:
/// `qweight` I32 `[in·b/32, out]`, `qzeros` I32 `[groups, out·b/32]`, `scales` float
/// `[groups, out]`, `g_idx` I32 `[in]`, `bias` (if any) `[out]`, with `groups = ⌈in / group⌉`
/// (1 for group size −1).
fn check_linear(
    store: &TensorStore,
    p: &str,
    settings: &GptqSettings,
) -> Result<(usize, usize), FormatError> {
    let bits = settings.bits as usize;
    let info = |part: &str| -> Result<&pmq_io::TensorInfo, FormatError> {
        let n = format!("{p}.{part}");
        store.info(&n).ok_or_else(|| {
            FormatError::tensor(
                store.root(),
                &n,
                format!("is missing (needed with `{p}.qweight`)"),
            )
        })
    };
    let bad = |part: &str, reason: String| {
        let n = format!("{p}.{part}");
        FormatError::tensor(store.file_of(&n).unwrap_or(store.root()), &n, reason)
    };
    if store.contains(&format!("{p}.weight")) {
        return Err(bad(
            "weight",
            format!(
                "is stored next to `{p}.qweight`: a quantized linear's weight is its packed \
                 codes, so the checkpoint is ambiguous"
            ),
        ));
    }
    let qweight = info("qweight")?;
    let (qzeros, scales, g_idx) = (info("qzeros")?, info("scales")?, info("g_idx")?);
    for (part, t) in [("qweight", qweight), ("qzeros", qzeros), ("g_idx", g_idx)] {
        if t.dtype != Dtype::I32 {
            return Err(bad(
                part,
                format!("has dtype {}, but GPTQ stores it as I32", t.dtype),
            ));
        }
    }
    if !pmq_io::is_float(scales.dtype) {
        return Err(bad(
            "scales",
            format!(
                "has dtype {}, but scales must be floating point (F16)",
                scales.dtype
            ),
        ));
    }
    if qweight.shape.len() != 2 {
        return Err(bad(
            "qweight",
            format!("must be 2-D, has shape {:?}", qweight.shape),
        ));
    }
    let words = qweight.shape[0];
    if words == 0 || !(words * 32).is_multiple_of(bits) {
        return Err(bad(
            "qweight",
            format!(
                "has {words} rows of 32-bit words, which do not hold a whole number of {bits}-bit codes"
            ),
        ));
    }
    let (rows, cols) = (qweight.shape[1], words * 32 / bits);
    let groups = match settings.group_size {
        -1 => 1,
        g if g > 0 => cols.div_ceil(g as usize),
        g => {
            return Err(bad(
                "qweight",
                format!("cannot be read with group size {g}"),
            ))
        }
    };
    let zero_words = rows * bits / 32;
    if !(rows * bits).is_multiple_of(32) || qzeros.shape != [groups, zero_words] {
        return Err(bad(
            "qzeros",
            format!(
                "has shape {:?}, but a {rows}×{cols} {bits}-bit linear with group size {} needs [{groups}, {}]",
                qzeros.shape,
                settings.group_size,
                (rows * bits) as f64 / 32.0
            ),
        ));
    }
    if scales.shape != [groups, rows] {
        return Err(bad(
            "scales",
            format!(
                "has shape {:?}, but a {rows}×{cols} linear with group size {} needs [{groups}, {rows}]",
                scales.shape, settings.group_size
            ),
        ));
    }
    if g_idx.shape != [cols] {
        return Err(bad(
            "g_idx",
            format!(
                "has shape {:?}, but `{p}.qweight` packs {cols} input columns",
                g_idx.shape
            ),
        ));
    }
    if let Some(b) = store.info(&format!("{p}.bias")) {
        if b.shape != [rows] {
            return Err(bad(
                "bias",
                format!("has shape {:?}, but the linear has {rows} outputs", b.shape),
            ));
        }
    }
    Ok((rows, cols))
}
