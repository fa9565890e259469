//! The settings a GPTQ checkpoint records, in config.json's `quantization_config` and in
//! `quantize_config.json`, and their (de)serialisation to and from JSON.

use crate::FormatError;
use pmq_core::packing::CheckpointFormat;
use serde_json::{json, Value};
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
    pub(super) fn to_json(&self) -> Value {
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

    pub(super) fn from_json(path: &Path, v: &Value) -> Result<Self, FormatError> {
        let bad = |field: &str| {
            FormatError::file(
                path,
                format!(
                    "quantization config field `{field}` is missing or invalid ({})",
                    v.get(field).map_or("absent".to_string(), Value::to_string)
                ),
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
        // 2, 3, 4 or 8 bits (never truncated from a larger number), a positive group size or
        // -1 (one group per row)
        let bits = v
            .get("bits")
            .and_then(Value::as_u64)
            .and_then(|b| u32::try_from(b).ok())
            .filter(|b| matches!(b, 2 | 3 | 4 | 8))
            .ok_or_else(|| bad("bits"))?;
        let group_size = v
            .get("group_size")
            .and_then(Value::as_i64)
            .filter(|&g| g == -1 || g > 0)
            .ok_or_else(|| bad("group_size"))?;
        Ok(Self {
            bits,
            group_size,
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
