//! The model keys of a GGUF file from the source's `config.json`, as llama.cpp's
//! `convert_hf_to_gguf.py` writes them for `bert` and `llama` (`TextModel.set_gguf_parameters`
//! plus the architecture's additions) and `t5` (`T5Model.set_gguf_parameters`, its own list),
//! with gguf-py's value types: lengths and counts u32, epsilons and the rope base f32, flags
//! bool.
//!
//! Not reproduced: `general.name` and the other naming keys the converter derives from the model
//! card and directory name (pmq writes `general.name` from [`super::GgufOptions::name`] or the
//! source directory's name), and rope scaling other than `linear` (an error).

use super::names::Arch;
use candle_core::quantized::gguf_file::Value;
use serde_json::Value as Json;
use std::path::Path;

/// `general.quantization_version` (`GGML_QUANT_VERSION`).
pub const QUANTIZATION_VERSION: u32 = 2;

/// Ordered key/value pairs.
pub type Metadata = Vec<(String, Value)>;

/// The first of `keys` present in `config`.
fn find<'a>(config: &'a Json, keys: &[&str]) -> Option<&'a Json> {
    keys.iter()
        .find_map(|k| config.get(*k).filter(|v| !v.is_null()))
}

fn as_u32(v: &Json, key: &str) -> Result<u32, String> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("config.json: `{key}` = {v} is not a u32"))
}

fn as_f32(v: &Json, key: &str) -> Result<f32, String> {
    v.as_f64()
        .map(|x| x as f32)
        .ok_or_else(|| format!("config.json: `{key}` = {v} is not a number"))
}

/// The architecture-level keys (everything but `general.*` and `tokenizer.*`).
pub fn model_keys(arch: Arch, config: &Json, src_root: &Path) -> Result<Metadata, String> {
    if arch == Arch::T5 {
        return t5_keys(config);
    }
    let a = arch.name();
    let mut md: Metadata = Vec::new();
    let put_u32 =
        |md: &mut Metadata, key: &str, names: &[&str], required: bool| match find(config, names) {
            Some(v) => {
                md.push((format!("{a}.{key}"), Value::U32(as_u32(v, names[0])?)));
                Ok(())
            }
            None if required => Err(format!("config.json has none of {names:?}")),
            None => Ok(()),
        };
    put_u32(
        &mut md,
        "block_count",
        &["n_layers", "num_hidden_layers", "n_layer", "num_layers"],
        true,
    )?;
    put_u32(
        &mut md,
        "context_length",
        &[
            "max_position_embeddings",
            "n_ctx",
            "n_positions",
            "max_length",
            "max_sequence_length",
            "model_max_length",
        ],
        false,
    )?;
    put_u32(
        &mut md,
        "embedding_length",
        &["hidden_size", "n_embd", "dim"],
        true,
    )?;
    put_u32(
        &mut md,
        "feed_forward_length",
        &["intermediate_size", "n_inner", "hidden_dim"],
        false,
    )?;
    put_u32(
        &mut md,
        "attention.head_count",
        &["num_attention_heads", "n_head", "n_heads"],
        true,
    )?;
    put_u32(
        &mut md,
        "attention.head_count_kv",
        &["num_key_value_heads", "n_kv_heads"],
        false,
    )?;
    if config.get("is_causal") == Some(&Json::Bool(false)) && arch != Arch::Bert {
        md.push((format!("{a}.attention.causal"), Value::Bool(false)));
    }
    // transformers 4 writes rope_theta / rope_scaling, transformers 5 one rope_parameters
    let rope_params = config.get("rope_parameters").filter(|v| v.is_object());
    let scaling = config
        .get("rope_scaling")
        .filter(|v| !v.is_null())
        .or(rope_params);
    if let Some(scaling) = scaling {
        let ty = scaling
            .get("rope_type")
            .or_else(|| scaling.get("type"))
            .and_then(Json::as_str)
            .unwrap_or("");
        match (ty, scaling.get("factor")) {
            ("linear", Some(f)) => {
                md.push((
                    format!("{a}.rope.scaling.type"),
                    Value::String("linear".into()),
                ));
                md.push((
                    format!("{a}.rope.scaling.factor"),
                    Value::F32(as_f32(f, "rope_scaling.factor")?),
                ));
            }
            ("default", _) | ("", None) => {}
            _ => {
                return Err(format!(
                    "config.json: rope_scaling {scaling} is not supported by pmq's GGUF writer"
                ))
            }
        }
    }
    let theta = config
        .get("rope_theta")
        .filter(|v| !v.is_null())
        .or_else(|| rope_params.and_then(|p| p.get("rope_theta")));
    if let Some(v) = theta {
        md.push((
            format!("{a}.rope.freq_base"),
            Value::F32(as_f32(v, "rope_theta")?),
        ));
    }
    if let Some(v) = find(config, &["rms_norm_eps", "norm_eps"]) {
        md.push((
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(as_f32(v, "rms_norm_eps")?),
        ));
    }
    if let Some(v) = find(
        config,
        &["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"],
    ) {
        md.push((
            format!("{a}.attention.layer_norm_epsilon"),
            Value::F32(as_f32(v, "layer_norm_eps")?),
        ));
    }
    if let Some(v) = config.get("head_dim").filter(|v| !v.is_null()) {
        let hd = as_u32(v, "head_dim")?;
        md.push((format!("{a}.attention.key_length"), Value::U32(hd)));
        md.push((format!("{a}.attention.value_length"), Value::U32(hd)));
    }
    match arch {
        Arch::Bert => {
            md.push((format!("{a}.attention.causal"), Value::Bool(false)));
            if let Some(p) = pooling_type(src_root)? {
                md.push((format!("{a}.pooling_type"), Value::U32(p)));
            }
        }
        Arch::T5 => unreachable!("t5_keys"),
        Arch::Llama => {
            let vocab = config
                .get("vocab_size")
                .ok_or("config.json has no `vocab_size`")?;
            md.push((
                format!("{a}.vocab_size"),
                Value::U32(as_u32(vocab, "vocab_size")?),
            ));
            let rope_dim = match config.get("head_dim").filter(|v| !v.is_null()) {
                Some(v) => as_u32(v, "head_dim")?,
                None => {
                    let h = as_u32(
                        config.get("hidden_size").unwrap_or(&Json::Null),
                        "hidden_size",
                    )?;
                    let n = as_u32(
                        config.get("num_attention_heads").unwrap_or(&Json::Null),
                        "num_attention_heads",
                    )?;
                    h / n.max(1)
                }
            };
            md.push((format!("{a}.rope.dimension_count"), Value::U32(rope_dim)));
        }
    }
    Ok(md)
}

/// T5's keys, in the converter's order: the context from `n_positions` (512 without it, as the
/// converter assumes with a warning), sizes from `d_model`/`d_ff`/`num_heads`/`d_kv`, the
/// encoder's block count (`num_layers`) and the decoder's (`num_decoder_layers`, when given),
/// `layer_norm_epsilon` as both epsilons, the relative-attention bucket count and the decoder
/// start token.
fn t5_keys(config: &Json) -> Result<Metadata, String> {
    let get = |k: &str| {
        config
            .get(k)
            .filter(|v| !v.is_null())
            .ok_or_else(|| format!("config.json has no `{k}`"))
    };
    let u = |k: &str| get(k).and_then(|v| as_u32(v, k));
    let mut md: Metadata = Vec::new();
    let mut put = |key: &str, v: Value| md.push((format!("t5.{key}"), v));
    let n_ctx = match config.get("n_positions").filter(|v| !v.is_null()) {
        Some(v) => as_u32(v, "n_positions")?,
        None => {
            tracing::warn!("config.json has no `n_positions`; t5.context_length = 512, as llama.cpp's converter assumes");
            512
        }
    };
    put("context_length", Value::U32(n_ctx));
    put("embedding_length", Value::U32(u("d_model")?));
    put("feed_forward_length", Value::U32(u("d_ff")?));
    let layers = find(
        config,
        &["n_layers", "num_hidden_layers", "n_layer", "num_layers"],
    )
    .ok_or("config.json has no `num_layers`")?;
    put("block_count", Value::U32(as_u32(layers, "num_layers")?));
    if let Some(v) = config.get("num_decoder_layers").filter(|v| !v.is_null()) {
        put(
            "decoder_block_count",
            Value::U32(as_u32(v, "num_decoder_layers")?),
        );
    }
    put("attention.head_count", Value::U32(u("num_heads")?));
    let d_kv = u("d_kv")?;
    put("attention.key_length", Value::U32(d_kv));
    put("attention.value_length", Value::U32(d_kv));
    let eps = as_f32(get("layer_norm_epsilon")?, "layer_norm_epsilon")?;
    put("attention.layer_norm_epsilon", Value::F32(eps));
    put(
        "attention.relative_buckets_count",
        Value::U32(u("relative_attention_num_buckets")?),
    );
    put("attention.layer_norm_rms_epsilon", Value::F32(eps));
    put(
        "decoder_start_token_id",
        Value::U32(u("decoder_start_token_id")?),
    );
    Ok(md)
}

/// The sentence-transformers pooling of the source (`modules.json` → the Pooling module's
/// `config.json`), as gguf-py's `PoolingType`: MEAN = 1, CLS = 2, LAST = 3; `None` without a
/// Pooling module.
pub fn pooling_type(src_root: &Path) -> Result<Option<u32>, String> {
    let modules_path = src_root.join("modules.json");
    let Ok(text) = std::fs::read_to_string(&modules_path) else {
        return Ok(None);
    };
    let modules: Json = serde_json::from_str(&text)
        .map_err(|e| format!("{}: invalid JSON: {e}", modules_path.display()))?;
    let path = modules.as_array().and_then(|mods| {
        mods.iter()
            .find(|m| {
                m.get("type").and_then(Json::as_str) == Some("sentence_transformers.models.Pooling")
            })
            .and_then(|m| m.get("path").and_then(Json::as_str))
    });
    let Some(path) = path else { return Ok(None) };
    let cfg_path = src_root.join(path).join("config.json");
    let text =
        std::fs::read_to_string(&cfg_path).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    let cfg: Json = serde_json::from_str(&text)
        .map_err(|e| format!("{}: invalid JSON: {e}", cfg_path.display()))?;
    let on = |k: &str| cfg.get(k).and_then(Json::as_bool).unwrap_or(false);
    if on("pooling_mode_mean_tokens") {
        Ok(Some(1))
    } else if on("pooling_mode_cls_token") {
        Ok(Some(2))
    } else if on("pooling_mode_lasttoken") {
        Ok(Some(3))
    } else {
        Err(format!(
            "{}: only MEAN, CLS and LAST pooling can be stored in GGUF",
            cfg_path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn llama(extra: Json) -> Json {
        let mut c = json!({
            "model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "vocab_size": 100
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn get<'a>(md: &'a Metadata, key: &str) -> Option<&'a Value> {
        md.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// T5's keys are the converter's own list, not the generic one.
    #[test]
    fn t5_keys_as_the_converter_writes_them() {
        let cfg = json!({"model_type": "t5", "d_model": 64, "d_ff": 128, "d_kv": 16,
            "num_layers": 2, "num_decoder_layers": 3, "num_heads": 4, "n_positions": 512,
            "layer_norm_epsilon": 1e-6, "relative_attention_num_buckets": 32,
            "decoder_start_token_id": 0, "vocab_size": 100});
        let md = model_keys(Arch::T5, &cfg, &std::env::temp_dir()).unwrap();
        let keys: Vec<&str> = md.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "t5.context_length",
                "t5.embedding_length",
                "t5.feed_forward_length",
                "t5.block_count",
                "t5.decoder_block_count",
                "t5.attention.head_count",
                "t5.attention.key_length",
                "t5.attention.value_length",
                "t5.attention.layer_norm_epsilon",
                "t5.attention.relative_buckets_count",
                "t5.attention.layer_norm_rms_epsilon",
                "t5.decoder_start_token_id"
            ]
        );
        assert!(matches!(
            get(&md, "t5.decoder_block_count"),
            Some(Value::U32(3))
        ));
        assert!(
            matches!(get(&md, "t5.attention.layer_norm_rms_epsilon"), Some(Value::F32(e)) if *e == 1e-6)
        );
        let mut bad = cfg.clone();
        bad.as_object_mut().unwrap().remove("d_kv");
        assert!(model_keys(Arch::T5, &bad, &std::env::temp_dir())
            .unwrap_err()
            .contains("d_kv"));
    }

    /// The rope base comes from transformers 4's `rope_theta` and from transformers 5's
    /// `rope_parameters`; scalings pmq cannot express are refused, not dropped.
    #[test]
    fn rope_settings_in_both_config_layouts() {
        let dir = std::env::temp_dir();
        for cfg in [
            llama(json!({"rope_theta": 500000.0})),
            llama(json!({"rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"}})),
        ] {
            let md = model_keys(Arch::Llama, &cfg, &dir).unwrap();
            match get(&md, "llama.rope.freq_base") {
                Some(Value::F32(v)) => assert_eq!(*v, 500000.0),
                other => panic!("{other:?}"),
            }
        }
        let cfg = llama(json!({"rope_parameters":
            {"rope_theta": 1e4, "rope_type": "linear", "factor": 2.0}}));
        let md = model_keys(Arch::Llama, &cfg, &dir).unwrap();
        assert!(matches!(get(&md, "llama.rope.scaling.factor"), Some(Value::F32(f)) if *f == 2.0));
        let cfg = llama(json!({"rope_parameters":
            {"rope_theta": 5e5, "rope_type": "llama3", "factor": 8.0}}));
        let err = model_keys(Arch::Llama, &cfg, &dir).unwrap_err();
        assert!(err.contains("llama3"), "{err}");
    }
}
