//! The `tokenizer.*` keys of a GGUF file from the source's `tokenizer.json` (+
//! `tokenizer_config.json`, `config.json`), as llama.cpp's converter writes them:
//!
//! - WordPiece (BERT) → `tokenizer.ggml.model = "bert"` (`BertModel.set_vocab`): the vocabulary
//!   in id order with the converter's "phantom space" (control tokens kept, `##x` → `x`, any other
//!   token `x` → `▁x`), token types, `token_type_count`, no scores.
//! - Byte-level BPE → `"gpt2"` (`_set_vocab_gpt2`): tokens, token types and merges.
//! - T5 → `"t5"` from the SentencePiece model file, as `T5Model.set_vocab` (see
//!   [`sentencepiece`]).
//!
//! Either for either architecture: llama.cpp picks the vocabulary from `tokenizer.ggml.model`,
//! not from the architecture (so a Llama with a WordPiece vocabulary gets the `bert` one).
//!
//! Token types follow `get_vocab_base`: added tokens are CONTROL (3) when special or
//! special-looking, else USER_DEFINED (4); ids without a token are `[PAD<i>]`, UNUSED (5); the
//! rest NORMAL (1). Special ids, `add_*_token` flags, the chat template and the lower-casing
//! flag follow gguf-py's `SpecialVocab` (see [`special`]).
//!
//! `tokenizer.ggml.pre`: the converter identifies the pre-tokenizer by hashing the tokens of a
//! probe text, which needs the HF tokenizer itself. pmq writes `"default"` for WordPiece
//! (llama.cpp ignores `pre` for WPM vocabularies), `"gpt-2"` for a plain byte-level
//! pre-tokenizer (GPT-2's regex) and `"default"` otherwise (llama.cpp's fallback for unknown
//! names too, with a different split regex than e.g. Llama 3's `llama-bpe`): pass a template
//! GGUF from the converter when the exact pre-tokenizer matters.

mod sentencepiece;
mod special;

use super::metadata::Metadata;
use super::names::Arch;
use candle_core::quantized::gguf_file::Value;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::Path;

/// gguf-py `TokenType`.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// The tokenizer keys, or why none can be written.
pub enum TokenizerKeys {
    Keys(Metadata),
    Unsupported(String),
}

fn read_json(path: &Path) -> Result<Option<Json>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{}: invalid JSON: {e}", path.display())),
        Err(_) => Ok(None),
    }
}

/// The tokenizer keys of the checkpoint in `root` (with its parsed `config`).
pub fn tokenizer_keys(arch: Arch, root: &Path, config: &Json) -> Result<TokenizerKeys, String> {
    if arch == Arch::T5 {
        return t5_keys(root, config);
    }
    let Some(tok) = read_json(&root.join("tokenizer.json"))? else {
        return Ok(TokenizerKeys::Unsupported(
            "the source has no tokenizer.json".into(),
        ));
    };
    let tc = read_json(&root.join("tokenizer_config.json"))?;
    let model = &tok["model"];
    let model_type = model["type"].as_str().unwrap_or("?");
    let byte_level = model_type == "BPE"
        && !model["byte_fallback"].as_bool().unwrap_or(false)
        && tok["decoder"]["type"].as_str() == Some("ByteLevel");
    // llama.cpp picks the vocabulary from `tokenizer.ggml.model`, whatever the architecture
    let wordpiece = model_type == "WordPiece";
    if !wordpiece && !byte_level {
        return Ok(TokenizerKeys::Unsupported(format!(
            "its {model_type} tokenizer{} is not one pmq converts (WordPiece → bert, byte-level BPE → gpt2)",
            if model_type == "BPE" { " (not byte-level)" } else { "" },
        )));
    }
    let (tokens, types) = vocab_base(&tok, config)?;
    let mut md: Metadata = Vec::new();
    if wordpiece {
        if arch == Arch::Bert {
            let type_count = config["type_vocab_size"].as_u64().unwrap_or(1) as u32;
            md.push((
                "tokenizer.ggml.token_type_count".into(),
                Value::U32(type_count),
            ));
        }
        let tokens: Vec<String> = tokens
            .into_iter()
            .zip(&types)
            .map(|(t, &ty)| phantom(t, ty))
            .collect();
        let n = tokens.len();
        push_vocab(&mut md, "bert", "default", tokens, types);
        special::SpecialVocab::load(&tok, tc.as_ref(), config, root, Some(n), false)
            .add_to(&mut md);
    } else {
        let pre = if is_plain_byte_level(&tok["pre_tokenizer"]) {
            "gpt-2"
        } else {
            "default"
        };
        push_vocab(&mut md, "gpt2", pre, tokens, types);
        special::SpecialVocab::load(&tok, tc.as_ref(), config, root, None, true).add_to(&mut md);
    }
    Ok(TokenizerKeys::Keys(md))
}

/// T5: the SentencePiece vocabulary plus the special vocabulary (from `tokenizer.json` and
/// `tokenizer_config.json` where present, else `config.json`'s ids).
fn t5_keys(root: &Path, config: &Json) -> Result<TokenizerKeys, String> {
    let Some(path) = sentencepiece::model_file(root) else {
        return Ok(TokenizerKeys::Unsupported(
            "a T5 vocabulary needs the SentencePiece model (spiece.model or tokenizer.model), as llama.cpp's converter does".into(),
        ));
    };
    let (mut md, n) = sentencepiece::t5_vocab_keys(&path, root, config)?;
    let tok = read_json(&root.join("tokenizer.json"))?.unwrap_or(Json::Null);
    let tc = read_json(&root.join("tokenizer_config.json"))?;
    special::SpecialVocab::load(&tok, tc.as_ref(), config, root, Some(n), false).add_to(&mut md);
    Ok(TokenizerKeys::Keys(md))
}

fn push_vocab(md: &mut Metadata, model: &str, pre: &str, tokens: Vec<String>, types: Vec<i32>) {
    md.push(("tokenizer.ggml.model".into(), Value::String(model.into())));
    md.push(("tokenizer.ggml.pre".into(), Value::String(pre.into())));
    md.push((
        "tokenizer.ggml.tokens".into(),
        Value::Array(tokens.into_iter().map(Value::String).collect()),
    ));
    md.push((
        "tokenizer.ggml.token_type".into(),
        Value::Array(types.into_iter().map(Value::I32).collect()),
    ));
}

/// `{"type": "ByteLevel"}` with its default regex, alone: GPT-2's pre-tokenizer.
fn is_plain_byte_level(pre: &Json) -> bool {
    pre["type"].as_str() == Some("ByteLevel") && pre["use_regex"].as_bool().unwrap_or(true)
}

/// BERT's phantom-space form of a token.
fn phantom(tok: String, ty: i32) -> String {
    if ty == CONTROL {
        tok
    } else if let Some(rest) = tok.strip_prefix("##") {
        rest.to_string()
    } else {
        format!("\u{2581}{tok}")
    }
}

/// Tokens that look special although not marked so (`does_token_look_special`).
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<\u{ff5c}") && t.ends_with("\u{ff5c}>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// `get_vocab_base`: tokens and types for ids `0..vocab_size` (config's `vocab_size`, else the
/// tokenizer's size), from the model vocabulary plus the added tokens.
fn vocab_base(tok: &Json, config: &Json) -> Result<(Vec<String>, Vec<i32>), String> {
    let mut by_id: HashMap<u64, String> = HashMap::new();
    let vocab = tok["model"]["vocab"]
        .as_object()
        .ok_or("tokenizer.json: model.vocab is not an object")?;
    for (t, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| format!("tokenizer.json: id of {t:?} is not an integer"))?;
        by_id.insert(id, t.clone());
    }
    // added tokens: content → special
    let mut added: HashMap<String, bool> = HashMap::new();
    for a in tok["added_tokens"].as_array().into_iter().flatten() {
        let (Some(content), Some(id)) = (a["content"].as_str(), a["id"].as_u64()) else {
            continue;
        };
        by_id.insert(id, content.to_string());
        added.insert(content.to_string(), a["special"].as_bool().unwrap_or(false));
    }
    let max_id = by_id.keys().max().copied().unwrap_or(0);
    let n = config["vocab_size"].as_u64().unwrap_or(by_id.len() as u64);
    if !by_id.is_empty() && max_id >= n {
        return Err(format!(
            "tokenizer.json has token id {max_id}, beyond config.json's vocab_size {n}"
        ));
    }
    let mut tokens = Vec::with_capacity(n as usize);
    let mut types = Vec::with_capacity(n as usize);
    for i in 0..n {
        match by_id.remove(&i) {
            None => {
                tokens.push(format!("[PAD{i}]"));
                types.push(UNUSED);
            }
            Some(t) => {
                let ty = match added.get(&t) {
                    Some(&special) if special || looks_special(&t) => CONTROL,
                    Some(_) => USER_DEFINED,
                    None => NORMAL,
                };
                let t = if ty == USER_DEFINED {
                    t.replace('\u{2581}', " ")
                } else {
                    t
                };
                tokens.push(t);
                types.push(ty);
            }
        }
    }
    Ok((tokens, types))
}
