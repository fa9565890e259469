//! Writing a GPTQ checkpoint: packing each [`PackedLinear`] into `qweight`/`qzeros`/`scales`/
//! `g_idx`, streaming every other tensor through (or its replacement), and recording the
//! settings in config.json and quantize_config.json.

use super::{write_json, GptqSettings};
use crate::fake_quant::{quantized_prefix, write_extra_files};
use crate::replaced::unquantized_bytes;
use crate::{Destination, FormatError, QuantizedModel};
use pmq_core::packing::{pack_qweight, pack_qzeros, CheckpointFormat};
use pmq_io::{i32_bytes, AtomicDir, Dtype, SafetensorsWriter, TensorInfo};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Writes a GPTQ checkpoint of `model` into `dest` with `settings` recorded in its
/// `quantization_config`.
pub fn write_gptq(
    model: &QuantizedModel<'_>,
    settings: &GptqSettings,
    dest: &Destination<'_>,
) -> Result<(), FormatError> {
    model.check()?;
    let (src, layers, replaced) = (model.src, model.layers, model.replaced());
    let (out, extra_files, overwrite) = (dest.dir, dest.extra_files, dest.overwrite);
    for (prefix, l) in layers {
        if l.grid.kind.is_gguf() {
            return Err(FormatError::tensor(
                src.root(),
                prefix,
                format!(
                    "was quantized on GGUF's {} grid, which a GPTQ checkpoint cannot declare; write it as GGUF or fake-quant",
                    l.grid.kind.name()
                ),
            ));
        }
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
    // transformers/optimum also need to know where the quantized linears are
    let mut hf_qc = qc.clone();
    if let Some(obj) = hf_qc.as_object_mut() {
        obj.extend(super::blocks::block_layout(layers.keys(), src));
    }
    match config.as_object_mut() {
        Some(obj) => {
            obj.insert("quantization_config".into(), hf_qc);
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
