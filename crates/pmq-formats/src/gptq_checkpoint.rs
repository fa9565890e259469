//! HF GPTQ checkpoints, as AutoGPTQ / GPTQModel / transformers load them.
//!
//! Per quantized linear `P`: `P.qweight` int32 `[in·b/32, out]`, `P.qzeros` int32
//! `[groups, out·b/32]`, `P.scales` f16 `[groups, out]`, `P.g_idx` int32 `[in]` (and `P.bias` as
//! in the source); every other tensor is kept. `config.json` gains a `quantization_config` and a
//! `quantize_config.json` is written. v1 (`checkpoint_format: "gptq"`) stores zero − 1, v2
//! (`"gptq_v2"`) the true zero (see [`pmq_core::packing`]).

use crate::fake_quant::{check_layers, quantized_prefix, write_extra_files};
use crate::replaced::{check_replaced, unquantized_bytes, ReplacedTensors};
use crate::{FormatError, PackedLinear};
use pmq_core::packing::{
    pack_qweight, pack_qzeros, unpack_qweight, unpack_qzeros, CheckpointFormat,
};
use pmq_core::{QuantGrid, ScalePrecision};
use pmq_io::{i32_bytes, AtomicDir, Dtype, SafetensorsWriter, TensorInfo, TensorStore};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The settings recorded in `quantization_config` / `quantize_config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct GptqSettings {
    pub bits: u32,
    /// −1 for one group per row.
    pub group_size: i64,
    pub sym: bool,
    pub desc_act: bool,
    pub static_groups: bool,
    pub true_sequential: bool,
    pub damp_percent: f64,
    pub format: CheckpointFormat,
    /// What produced the checkpoint (recorded under `meta.quantizer`), e.g. "pmq:0.1.0 epmq".
    pub quantizer: String,
}

impl GptqSettings {
    fn to_json(&self) -> Value {
        json!({
            "bits": self.bits,
            "group_size": self.group_size,
            "desc_act": self.desc_act,
            "sym": self.sym,
            "static_groups": self.static_groups,
            "true_sequential": self.true_sequential,
            "damp_percent": self.damp_percent,
            "quant_method": "gptq",
            "checkpoint_format": self.format.name(),
            "pack_dtype": "int32",
            "meta": { "quantizer": [self.quantizer] },
        })
    }

    fn from_json(path: &Path, v: &Value) -> Result<Self, FormatError> {
        let bad = |field: &str| {
            FormatError::file(
                path,
                format!("quantization config field `{field}` is missing or invalid"),
            )
        };
        if let Some(m) = v.get("quant_method").and_then(Value::as_str) {
            if m != "gptq" {
                return Err(FormatError::file(
                    path,
                    format!("quant_method is {m:?}, not \"gptq\""),
                ));
            }
        }
        let format = match v
            .get("checkpoint_format")
            .and_then(Value::as_str)
            .unwrap_or("gptq")
        {
            "gptq" => CheckpointFormat::V1,
            "gptq_v2" => CheckpointFormat::V2,
            other => {
                return Err(FormatError::file(
                    path,
                    format!("unsupported checkpoint_format {other:?}"),
                ))
            }
        };
        Ok(Self {
            bits: v
                .get("bits")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad("bits"))? as u32,
            group_size: v
                .get("group_size")
                .and_then(Value::as_i64)
                .ok_or_else(|| bad("group_size"))?,
            sym: v.get("sym").and_then(Value::as_bool).unwrap_or(true),
            desc_act: v.get("desc_act").and_then(Value::as_bool).unwrap_or(false),
            static_groups: v
                .get("static_groups")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            true_sequential: v
                .get("true_sequential")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            damp_percent: v
                .get("damp_percent")
                .and_then(Value::as_f64)
                .unwrap_or(0.01),
            format,
            quantizer: v
                .pointer("/meta/quantizer/0")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        })
    }
}

fn write_json(path: &Path, v: &Value) -> Result<(), FormatError> {
    let text = serde_json::to_string_pretty(v).expect("JSON values serialise");
    std::fs::write(path, text + "\n").map_err(|e| FormatError::file(path, e.to_string()))
}

/// Writes a GPTQ checkpoint of `src` with the given quantized linears into `out`, plus
/// `extra_files` (name, contents) such as reports.
pub fn write_gptq(
    src: &TensorStore,
    layers: &BTreeMap<String, PackedLinear>,
    settings: &GptqSettings,
    out: &Path,
    extra_files: &[(&str, Vec<u8>)],
    overwrite: bool,
) -> Result<(), FormatError> {
    let none = ReplacedTensors::new();
    write_gptq_with(src, layers, &none, settings, out, extra_files, overwrite)
}

/// [`write_gptq`] with some unquantized tensors `replaced` (written in their source dtype),
/// e.g. the norms and biases an AWQ fold changed.
pub fn write_gptq_with(
    src: &TensorStore,
    layers: &BTreeMap<String, PackedLinear>,
    replaced: &ReplacedTensors,
    settings: &GptqSettings,
    out: &Path,
    extra_files: &[(&str, Vec<u8>)],
    overwrite: bool,
) -> Result<(), FormatError> {
    check_layers(src, layers)?;
    check_replaced(src, layers, replaced)?;
    for (prefix, l) in layers {
        if l.grid.bits != settings.bits
            || l.grid.sym != settings.sym
            || l.grid.group_size_i64() != settings.group_size
        {
            return Err(FormatError::tensor(
                src.root(),
                prefix,
                format!(
                    "was quantized with {} bits, group {}, sym {} but the checkpoint declares {} bits, group {}, sym {}",
                    l.grid.bits, l.grid.group_size_i64(), l.grid.sym, settings.bits, settings.group_size, settings.sym
                ),
            ));
        }
        if settings.format == CheckpointFormat::V1 && !l.fits_v1() {
            return Err(FormatError::tensor(
                src.root(),
                prefix,
                "has a zero point of 0, which GPTQ v1 (zero − 1) cannot store; write checkpoint_format gptq_v2",
            ));
        }
    }
    let bits = settings.bits as usize;
    let mut infos = Vec::new();
    for n in src.names() {
        match quantized_prefix(&n, layers) {
            Some(p) => {
                let l = &layers[p];
                let g = l.num_groups();
                infos.push(TensorInfo::new(
                    format!("{p}.qweight"),
                    Dtype::I32,
                    vec![l.cols * bits / 32, l.rows],
                ));
                infos.push(TensorInfo::new(
                    format!("{p}.qzeros"),
                    Dtype::I32,
                    vec![g, l.rows * bits / 32],
                ));
                infos.push(TensorInfo::new(
                    format!("{p}.scales"),
                    Dtype::F16,
                    vec![g, l.rows],
                ));
                infos.push(TensorInfo::new(
                    format!("{p}.g_idx"),
                    Dtype::I32,
                    vec![l.cols],
                ));
            }
            None => infos.push(src.info(&n).expect("listed name").clone()),
        }
    }
    infos.sort_by(|a, b| a.name.cmp(&b.name));

    let dir = AtomicDir::create(out, overwrite)?;
    let meta: BTreeMap<String, String> = [("format".to_string(), "pt".to_string())]
        .into_iter()
        .collect();
    let mut writer =
        SafetensorsWriter::create(&dir.path().join("model.safetensors"), &infos, Some(meta))?;
    for info in &infos {
        let (prefix, suffix) = info.name.rsplit_once('.').unwrap_or(("", ""));
        let layer = layers
            .get(prefix)
            .filter(|_| matches!(suffix, "qweight" | "qzeros" | "scales" | "g_idx"));
        let Some(l) = layer else {
            writer.write(&info.name, &unquantized_bytes(src, replaced, &info.name)?)?;
            continue;
        };
        let context =
            |e: pmq_core::CoreError| FormatError::tensor(src.root(), &info.name, e.to_string());
        let bytes = match suffix {
            "qweight" => {
                i32_bytes(&pack_qweight(&l.codes, l.rows, l.cols, l.grid.bits).map_err(context)?)
            }
            "qzeros" => i32_bytes(
                &pack_qzeros(
                    &l.zeros,
                    l.num_groups(),
                    l.rows,
                    l.grid.bits,
                    settings.format,
                )
                .map_err(context)?,
            ),
            "scales" => {
                let mut b = Vec::with_capacity(l.scales.len() * 2);
                for &s in &l.scales {
                    let h = half::f16::from_f64(s);
                    if h.to_f64() != s {
                        return Err(FormatError::tensor(
                            src.root(),
                            &info.name,
                            format!("scale {s} is not representable in f16; quantize with f16 scale precision"),
                        ));
                    }
                    b.extend_from_slice(&h.to_le_bytes());
                }
                b
            }
            _ => i32_bytes(&l.g_idx.iter().map(|&g| g as i32).collect::<Vec<_>>()),
        };
        writer.write(&info.name, &bytes)?;
    }
    writer.finish()?;

    let config_path = src.root().join("config.json");
    let mut config: Value = match std::fs::read_to_string(&config_path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| FormatError::file(&config_path, format!("invalid JSON: {e}")))?,
        Err(_) => json!({}),
    };
    let qc = settings.to_json();
    match config.as_object_mut() {
        Some(obj) => {
            obj.insert("quantization_config".into(), qc.clone());
        }
        None => return Err(FormatError::file(&config_path, "is not a JSON object")),
    }
    write_json(&dir.path().join("config.json"), &config)?;
    write_json(&dir.path().join("quantize_config.json"), &qc)?;
    pmq_io::copy_non_weight_files(
        src.root(),
        dir.path(),
        &["config.json", "quantize_config.json"],
    )?;
    write_extra_files(dir.path(), extra_files)?;
    dir.commit()?;
    Ok(())
}

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

/// Writes the dequantized form of GPTQ checkpoint `src` as an ordinary HF checkpoint in `out`
/// (quantized linears as f32 `P.weight`, every other tensor as stored; `quantization_config`
/// removed from config.json), so any loader can run it.
pub fn dequantize_checkpoint(src: &Path, out: &Path, overwrite: bool) -> Result<(), FormatError> {
    let reader = GptqReader::open(src)?;
    let infos: Vec<TensorInfo> = reader
        .names()
        .into_iter()
        .map(|n| match reader.store().info(&n) {
            Some(info) => info.clone(),
            None => TensorInfo::new(
                n.clone(),
                Dtype::F32,
                reader.shape(&n).expect("logical name"),
            ),
        })
        .collect();
    let dir = AtomicDir::create(out, overwrite)?;
    let mut writer =
        SafetensorsWriter::create(&dir.path().join("model.safetensors"), &infos, None)?;
    for info in &infos {
        if reader.store().contains(&info.name) {
            writer.write(&info.name, reader.store().raw_bytes(&info.name)?)?;
        } else {
            writer.write(
                &info.name,
                &pmq_io::f32_bytes(&reader.read_f32(&info.name)?),
            )?;
        }
    }
    writer.finish()?;
    let config_path = src.join("config.json");
    if let Ok(text) = std::fs::read_to_string(&config_path) {
        let mut config: Value = serde_json::from_str(&text)
            .map_err(|e| FormatError::file(&config_path, format!("invalid JSON: {e}")))?;
        if let Some(obj) = config.as_object_mut() {
            obj.remove("quantization_config");
        }
        write_json(&dir.path().join("config.json"), &config)?;
    }
    pmq_io::copy_non_weight_files(src, dir.path(), &["config.json", "quantize_config.json"])?;
    dir.commit()?;
    Ok(())
}
