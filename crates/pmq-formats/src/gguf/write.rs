//! Writing `model.gguf`: every source tensor mapped to its GGUF name (skipped where the
//! converter skips it), quantized linears packed as ggml blocks (rows permuted for Llama's q/k),
//! the rest as F32/F16, with the model, tokenizer and template keys; built in a temporary
//! directory renamed into place at the end.

use super::blocks::{pack_rows, GgufType, BLOCK};
use super::metadata::{model_keys, Metadata, QUANTIZATION_VERSION};
use super::names::{map_name, rope_permutation, Arch, Mapped, RopePermute};
use super::template::template_keys;
use super::tokenizer::{tokenizer_keys, TokenizerKeys};
use super::{GgufOptions, Unquantized};
use crate::fake_quant::{quantized_prefix, write_extra_files};
use crate::{Destination, FormatError, PackedLinear, QuantizedModel};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, gguf_file, GgmlDType, QTensor};
use candle_core::Device;
use gguf_file::Value;
use pmq_core::GridKind;
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// The GGUF block type of a quantized linear: its GGUF grid, or a uniform grid that maps
/// exactly (symmetric 4-bit → Q4_0, symmetric 8-bit → Q8_0).
fn layer_type(l: &PackedLinear) -> Result<GgufType, String> {
    match l.grid.kind {
        GridKind::GgufQ4_0 => Ok(GgufType::Q4_0),
        GridKind::GgufQ4_1 => Ok(GgufType::Q4_1),
        GridKind::GgufQ8_0 => Ok(GgufType::Q8_0),
        GridKind::Uniform => match (l.grid.bits, l.grid.sym) {
            (4, true) => Ok(GgufType::Q4_0),
            (8, true) => Ok(GgufType::Q8_0),
            (b, sym) => Err(format!(
                "was quantized on a uniform {b}-bit {} grid, which no GGUF block type stores exactly; quantize with a GGUF grid (q4_0, q4_1, q8_0)",
                if sym { "symmetric" } else { "asymmetric" }
            )),
        },
    }
}

/// The one block type shared by every quantized linear.
fn model_type(
    layers: &BTreeMap<String, PackedLinear>,
    root: &Path,
) -> Result<Option<GgufType>, FormatError> {
    let mut ty: Option<(GgufType, &str)> = None;
    for (prefix, l) in layers {
        let t = layer_type(l).map_err(|e| FormatError::tensor(root, prefix, e))?;
        match ty {
            Some((t0, p0)) if t0 != t => {
                return Err(FormatError::tensor(
                    root,
                    prefix,
                    format!(
                        "is {} but {p0} is {}: all quantized linears of a GGUF file must share one type (general.file_type)",
                        t.name(),
                        t0.name()
                    ),
                ))
            }
            None => ty = Some((t, prefix)),
            _ => {}
        }
    }
    Ok(ty.map(|(t, _)| t))
}

/// Scales, zeros and offsets (empty: all 0) of every block, `[cols/32, rows]` row-major.
type BlockParams = (Vec<f64>, Vec<u32>, Vec<f64>);

/// Per-block parameters `[cols/32, rows]` of a layer: each block of 32 columns must lie in one
/// group (`g_idx` constant on it).
fn block_params(l: &PackedLinear) -> Result<BlockParams, String> {
    if !l.cols.is_multiple_of(BLOCK) {
        return Err(format!(
            "has {} input columns, not a multiple of GGUF's block of {BLOCK}",
            l.cols
        ));
    }
    let (rows, blocks) = (l.rows, l.cols / BLOCK);
    let mut scales = Vec::with_capacity(blocks * rows);
    let mut zeros = Vec::with_capacity(blocks * rows);
    let mut offsets = Vec::new();
    for b in 0..blocks {
        let g = l.g_idx[b * BLOCK];
        if l.g_idx[b * BLOCK..(b + 1) * BLOCK].iter().any(|&x| x != g) {
            return Err(format!(
                "columns {}..{} span several groups (g_idx); a GGUF block needs one",
                b * BLOCK,
                (b + 1) * BLOCK
            ));
        }
        let base = g as usize * rows;
        scales.extend_from_slice(&l.scales[base..base + rows]);
        zeros.extend_from_slice(&l.zeros[base..base + rows]);
        if !l.offsets.is_empty() {
            offsets.extend_from_slice(&l.offsets[base..base + rows]);
        }
    }
    Ok((scales, zeros, offsets))
}

/// `v` (`[rows, n]` row-major) with its rows reordered: output row `j` is input row `perm[j]`.
fn permute_rows<T: Copy>(v: &[T], perm: &[usize]) -> Vec<T> {
    let n = v.len() / perm.len().max(1);
    perm.iter()
        .flat_map(|&r| v[r * n..(r + 1) * n].iter().copied())
        .collect()
}

/// The ggml bytes of a quantized linear (rows permuted by `perm`).
fn pack_layer(ty: GgufType, l: &PackedLinear, perm: Option<&[usize]>) -> Result<Vec<u8>, String> {
    let (mut scales, mut zeros, mut offsets) = block_params(l)?;
    let mut codes = std::borrow::Cow::Borrowed(&l.codes[..]);
    if let Some(perm) = perm {
        codes = std::borrow::Cow::Owned(permute_rows(&l.codes, perm));
        // block params are [blocks, rows]: permute within each block's row of `rows` entries
        let blocks = l.cols / BLOCK;
        let by_block = |v: &[f64]| -> Vec<f64> {
            (0..blocks)
                .flat_map(|b| perm.iter().map(move |&r| v[b * l.rows + r]))
                .collect()
        };
        scales = by_block(&scales);
        if !offsets.is_empty() {
            offsets = by_block(&offsets);
        }
        zeros = (0..blocks)
            .flat_map(|b| {
                perm.iter()
                    .map(|&r| zeros[b * l.rows + r])
                    .collect::<Vec<_>>()
            })
            .collect();
    }
    pack_rows(ty, l.rows, l.cols, &codes, &scales, &zeros, &offsets).map_err(|e| e.to_string())
}

fn qtensor(ty: GgmlDType, bytes: &[u8], shape: Vec<usize>) -> Result<QTensor, String> {
    qtensor_from_ggml(ty, bytes, shape, &Device::Cpu).map_err(|e| e.to_string())
}

/// Tensors the converter keeps in F32 whatever the output type (besides 1-D ones).
const ALWAYS_F32: [&str; 2] = ["position_embd.", "token_types."];

/// The unquantized tensor `name` (GGUF name `gguf_name`) as a QTensor: its values (or
/// replacement), rows permuted, F32 or F16 (1-D tensors and [`ALWAYS_F32`] always F32).
fn plain_tensor(
    model: &QuantizedModel<'_>,
    name: &str,
    gguf_name: &str,
    perm: Option<&[usize]>,
    storage: Unquantized,
) -> Result<QTensor, String> {
    let src = model.src;
    let info = src.info(name).expect("listed name");
    if !pmq_io::is_float(info.dtype) {
        return Err(format!(
            "has the non-float dtype {:?}, which GGUF output does not map",
            info.dtype
        ));
    }
    let mut values = match model.replaced().get(name) {
        Some(v) => v.clone(),
        None => src.read_f32(name).map_err(|e| e.to_string())?,
    };
    if let Some(perm) = perm {
        values = permute_rows(&values, perm);
    }
    let shape = info.shape.clone();
    let f32_only = ALWAYS_F32.iter().any(|p| gguf_name.starts_with(p));
    if shape.len() <= 1 || f32_only || storage == Unquantized::F32 {
        let shape = if shape.is_empty() { vec![1] } else { shape };
        qtensor(GgmlDType::F32, &pmq_io::f32_bytes(&values), shape)
    } else {
        let bytes: Vec<u8> = values
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        qtensor(GgmlDType::F16, &bytes, shape)
    }
}

/// Writes `model.gguf` of `model` (a `bert`, `llama` or `t5` checkpoint) into `dest`, plus
/// `dest.extra_files`.
pub fn write_gguf(
    model: &QuantizedModel<'_>,
    opts: &GgufOptions,
    dest: &Destination<'_>,
) -> Result<(), FormatError> {
    model.check()?;
    let (src, layers) = (model.src, model.layers);
    let root = src.root();
    let config_path = root.join("config.json");
    let config: Json = std::fs::read_to_string(&config_path)
        .map_err(|e| FormatError::file(&config_path, e.to_string()))
        .and_then(|t| {
            serde_json::from_str(&t)
                .map_err(|e| FormatError::file(&config_path, format!("invalid JSON: {e}")))
        })?;
    let model_type_name = config["model_type"].as_str().unwrap_or("(no model_type)");
    let arch =
        Arch::from_model_type(model_type_name).map_err(|e| FormatError::file(&config_path, e))?;
    let qtype = model_type(layers, root)?;
    let template = match &opts.template {
        Some(p) => Some(template_keys(p, arch)?),
        None => None,
    };

    // keys
    let file_type = match (qtype, opts.unquantized) {
        (Some(t), _) => t.file_type(),
        (None, Unquantized::F32) => GgufType::F32.file_type(),
        (None, Unquantized::F16) => GgufType::F16.file_type(),
    };
    let name = opts.name.clone().unwrap_or_else(|| {
        root.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let mut md: Metadata = vec![
        (
            "general.architecture".into(),
            Value::String(arch.name().into()),
        ),
        ("general.type".into(), Value::String("model".into())),
        ("general.name".into(), Value::String(name)),
        (
            "general.quantized_by".into(),
            Value::String(format!("pmq {}", env!("CARGO_PKG_VERSION"))),
        ),
    ];
    md.extend(model_keys(arch, &config, root).map_err(|e| FormatError::file(&config_path, e))?);
    md.push(("general.file_type".into(), Value::U32(file_type)));
    md.push((
        "general.quantization_version".into(),
        Value::U32(QUANTIZATION_VERSION),
    ));
    match (&template, tokenizer_keys(arch, root, &config).map_err(|e| FormatError::file(root, e))?) {
        (Some(_), _) => {}
        (None, TokenizerKeys::Keys(keys)) => md.extend(keys),
        (None, TokenizerKeys::Unsupported(why)) => tracing::warn!(
            "{}: no tokenizer keys written ({why}); llama.cpp needs a vocabulary to load the model: pass a template GGUF from llama.cpp's converter",
            root.display()
        ),
    }
    if let Some(t) = template {
        let ours: HashSet<String> = md.iter().map(|(k, _)| k.clone()).collect();
        md.extend(
            t.into_iter()
                .filter(|(k, _)| k.starts_with("tokenizer.") || !ours.contains(k)),
        );
    }

    // tensors
    let n_head = config["num_attention_heads"].as_u64().unwrap_or(0) as usize;
    let n_head_kv = config["num_key_value_heads"]
        .as_u64()
        .map_or(n_head, |n| n as usize);
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for hf in src.names() {
        let err = |e: String| FormatError::tensor(root, &hf, e);
        let (gguf_name, permute) = match map_name(arch, &hf).map_err(err)? {
            Mapped::Skip => continue,
            Mapped::Tensor { name, permute } => (name, permute),
            Mapped::FirstOf { name } => match seen.get(&name) {
                Some(first) => {
                    tracing::debug!("{hf}: a copy of {first}, written once as {name}");
                    continue;
                }
                None => (name, None),
            },
        };
        if let Some(prev) = seen.insert(gguf_name.clone(), hf.clone()) {
            return Err(err(format!("maps to {gguf_name}, as {prev} does")));
        }
        let rows = src
            .info(&hf)
            .expect("listed name")
            .shape
            .first()
            .copied()
            .unwrap_or(1);
        let perm = match permute {
            Some(RopePermute::Query) => Some(rope_permutation(rows, n_head).map_err(err)?),
            Some(RopePermute::Key) => Some(rope_permutation(rows, n_head_kv).map_err(err)?),
            None => None,
        };
        let t = match quantized_prefix(&hf, layers) {
            Some(p) => {
                let l = &layers[p];
                let ty = qtype.expect("a quantized layer has a type");
                let bytes = pack_layer(ty, l, perm.as_deref()).map_err(err)?;
                qtensor(ty.candle_dtype(), &bytes, vec![l.rows, l.cols]).map_err(err)?
            }
            None => plain_tensor(model, &hf, &gguf_name, perm.as_deref(), opts.unquantized)
                .map_err(err)?,
        };
        tensors.push((gguf_name, t));
    }

    let dir = pmq_io::AtomicDir::create(dest.dir, dest.overwrite)?;
    let path = dir.path().join("model.gguf");
    let io = |e: String| FormatError::file(&path, e);
    let file = std::fs::File::create(&path).map_err(|e| io(e.to_string()))?;
    let mut w = std::io::BufWriter::new(file);
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    gguf_file::write(&mut w, &md_refs, &t_refs).map_err(|e| io(e.to_string()))?;
    use std::io::Write;
    w.flush().map_err(|e| io(e.to_string()))?;
    w.into_inner()
        .map_err(|e| io(e.to_string()))?
        .sync_all()
        .map_err(|e| io(e.to_string()))?;
    write_extra_files(dir.path(), dest.extra_files)?;
    dir.commit()?;
    Ok(())
}
