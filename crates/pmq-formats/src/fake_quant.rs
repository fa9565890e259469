//! The fake-quantized model: the source checkpoint with every quantized linear's `weight`
//! replaced by its dequantized value `scale · (q − zero)`, as ordinary HF safetensors.

use crate::replaced::unquantized_bytes;
use crate::{Destination, FormatError, PackedLinear, QuantizedModel};
use pmq_io::{encode_f32, AtomicDir, Dtype, SafetensorsWriter, TensorInfo};
use std::collections::BTreeMap;
use std::path::Path;

pub(crate) fn quantized_prefix<'a>(
    name: &'a str,
    layers: &BTreeMap<String, PackedLinear>,
) -> Option<&'a str> {
    name.strip_suffix(".weight")
        .filter(|p| layers.contains_key(*p))
}

/// Writes extra files (reports) into the directory being built.
pub(crate) fn write_extra_files(dir: &Path, files: &[(&str, Vec<u8>)]) -> Result<(), FormatError> {
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| FormatError::file(&path, e.to_string()))?;
    }
    Ok(())
}

/// Writes `model.safetensors` (+ the source's config, tokenizer and other files) of `model`
/// into `dest` with the quantized linears dequantized, in `dtype` (default: each tensor's
/// source dtype).
pub fn write_fake_quant(
    model: &QuantizedModel<'_>,
    dtype: Option<Dtype>,
    dest: &Destination<'_>,
) -> Result<(), FormatError> {
    model.check()?;
    let (src, layers, replaced) = (model.src, model.layers, model.replaced());
    let (out, extra_files, overwrite) = (dest.dir, dest.extra_files, dest.overwrite);
    let names = src.names();
    let infos: Vec<TensorInfo> = names
        .iter()
        .map(|n| {
            let info = src.info(n).expect("listed name");
            match quantized_prefix(n, layers) {
                Some(_) => {
                    TensorInfo::new(n.clone(), dtype.unwrap_or(info.dtype), info.shape.clone())
                }
                None => info.clone(),
            }
        })
        .collect();
    let dir = AtomicDir::create(out, overwrite)?;
    let meta: BTreeMap<String, String> = [
        ("format".to_string(), "pt".to_string()),
        (
            "quantized_by".to_string(),
            format!("pmq {} (fake-quant)", env!("CARGO_PKG_VERSION")),
        ),
    ]
    .into_iter()
    .collect();
    let mut writer =
        SafetensorsWriter::create(&dir.path().join("model.safetensors"), &infos, Some(meta))?;
    for info in &infos {
        match quantized_prefix(&info.name, layers) {
            Some(prefix) => {
                let w = layers[prefix].dequantize();
                let bytes = encode_f32(info.dtype, &w).map_err(|e| e.for_tensor(&info.name))?;
                writer.write(&info.name, &bytes)?;
            }
            None => writer.write(&info.name, &unquantized_bytes(src, replaced, &info.name)?)?,
        }
    }
    writer.finish()?;
    pmq_io::copy_non_weight_files(src.root(), dir.path(), &[])?;
    write_extra_files(dir.path(), extra_files)?;
    dir.commit()?;
    Ok(())
}
