//! Dequantizing a GPTQ checkpoint into an ordinary HF checkpoint that any loader can run.

use super::{write_json, GptqReader};
use crate::FormatError;
use pmq_io::{AtomicDir, Dtype, SafetensorsWriter, TensorInfo};
use serde_json::Value;
use std::path::Path;

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
            if pmq_io::is_float(info.dtype) {
                // refuses NaN/±inf, naming the file and tensor, as every other read does
                reader.read_f32(&info.name)?;
            }
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
