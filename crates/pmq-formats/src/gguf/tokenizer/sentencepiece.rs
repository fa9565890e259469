//! T5's vocabulary from its SentencePiece model file (`spiece.model` or `tokenizer.model`, a
//! `sentencepiece_model.proto` `ModelProto`), as `T5Model.set_vocab` of llama.cpp's converter
//! writes it: `tokenizer.ggml.model = "t5"`, pieces and scores in id order, token types from the
//! piece types (unknown 2, control 3, unused 5, byte 6, everything else — user-defined pieces
//! included — normal 1), ids up to `config.json`'s `vocab_size` beyond the model's pieces as
//! `[PAD<i>]` (score −10000, unused), `added_tokens.json` entries as user-defined (score −1000),
//! the normalizer's `add_dummy_prefix`, `remove_extra_whitespaces` and precompiled character
//! map. SentencePiece BPE models (Pile-T5) take the converter's Llama path: refused here.

use super::{CONTROL, NORMAL, UNUSED, USER_DEFINED};
use crate::gguf::metadata::Metadata;
use candle_core::quantized::gguf_file::Value;
use prost::Message;
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

const UNKNOWN: i32 = 2;
const BYTE: i32 = 6;

/// The parts of `sentencepiece_model.proto` the converter reads (field numbers as there;
/// proto2 defaults applied by the accessors below).
#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, repeated, tag = "1")]
    pieces: Vec<SentencePiece>,
    #[prost(message, optional, tag = "2")]
    trainer_spec: Option<TrainerSpec>,
    #[prost(message, optional, tag = "3")]
    normalizer_spec: Option<NormalizerSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct SentencePiece {
    #[prost(string, optional, tag = "1")]
    piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    score: Option<f32>,
    /// NORMAL = 1 (default), UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6.
    #[prost(int32, optional, tag = "3")]
    r#type: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct TrainerSpec {
    /// UNIGRAM = 1 (default), BPE = 2, WORD = 3, CHAR = 4.
    #[prost(int32, optional, tag = "3")]
    model_type: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct NormalizerSpec {
    #[prost(bytes = "vec", optional, tag = "2")]
    precompiled_charsmap: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "3")]
    add_dummy_prefix: Option<bool>,
    #[prost(bool, optional, tag = "4")]
    remove_extra_whitespaces: Option<bool>,
}

/// `tokenizer.model`, else `spiece.model`, in `root` (the converter's order).
pub(super) fn model_file(root: &Path) -> Option<PathBuf> {
    ["tokenizer.model", "spiece.model"]
        .iter()
        .map(|n| root.join(n))
        .find(|p| p.is_file())
}

/// gguf-py's token type of a SentencePiece piece type (`IsUnknown`, `IsControl`, `IsUnused`,
/// `IsByte` in that order; the rest normal).
fn token_type(sp_type: i32) -> i32 {
    match sp_type {
        2 => UNKNOWN,
        3 => CONTROL,
        5 => UNUSED,
        6 => BYTE,
        _ => NORMAL,
    }
}

/// The `tokenizer.ggml.*` vocabulary keys of the SentencePiece model `path` (ids up to
/// `config.json`'s `vocab_size`), without the special-vocabulary keys, and the number of tokens.
pub(super) fn t5_vocab_keys(
    path: &Path,
    root: &Path,
    config: &Json,
) -> Result<(Metadata, usize), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let model = ModelProto::decode(&bytes[..]).map_err(|e| {
        format!(
            "{}: not a SentencePiece model (protobuf: {e})",
            path.display()
        )
    })?;
    let model_type = model
        .trainer_spec
        .as_ref()
        .and_then(|t| t.model_type)
        .unwrap_or(1);
    if model_type != 1 {
        return Err(format!(
            "{}: a SentencePiece model of type {model_type} (not Unigram); pmq writes T5's Unigram vocabularies only — pass a template GGUF from llama.cpp's converter",
            path.display()
        ));
    }
    let n_pieces = model.pieces.len();
    let vocab_size = match config.get("vocab_size").and_then(Json::as_u64) {
        Some(n) => n as usize,
        None => n_pieces,
    };
    if n_pieces > vocab_size {
        return Err(format!(
            "{}: {n_pieces} pieces, more than config.json's vocab_size {vocab_size}",
            path.display()
        ));
    }
    let mut tokens: Vec<String> = (0..vocab_size).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000.0f32; vocab_size];
    let mut types = vec![UNUSED; vocab_size];
    for (i, p) in model.pieces.iter().enumerate() {
        tokens[i] = p.piece.clone().unwrap_or_default();
        scores[i] = p.score.unwrap_or(0.0);
        types[i] = token_type(p.r#type.unwrap_or(1));
    }
    let added_path = root.join("added_tokens.json");
    if let Ok(text) = std::fs::read_to_string(&added_path) {
        let added: Json = serde_json::from_str(&text)
            .map_err(|e| format!("{}: invalid JSON: {e}", added_path.display()))?;
        for (tok, id) in added.as_object().into_iter().flatten() {
            let Some(id) = id.as_u64().map(|i| i as usize) else {
                return Err(format!(
                    "{}: the id of {tok:?} is not an integer",
                    added_path.display()
                ));
            };
            if id >= vocab_size {
                tracing::warn!(
                    "{}: token {tok:?} has id {id}, beyond vocab_size {vocab_size}: ignored, as llama.cpp's converter ignores it",
                    added_path.display()
                );
                continue;
            }
            tokens[id] = tok.clone();
            scores[id] = -1000.0;
            types[id] = USER_DEFINED;
        }
    }
    let norm = model.normalizer_spec.unwrap_or_default();
    let mut md: Metadata = vec![
        ("tokenizer.ggml.model".into(), Value::String("t5".into())),
        ("tokenizer.ggml.pre".into(), Value::String("default".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.scores".into(),
            Value::Array(scores.into_iter().map(Value::F32).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        (
            "tokenizer.ggml.add_space_prefix".into(),
            Value::Bool(norm.add_dummy_prefix.unwrap_or(true)),
        ),
        (
            "tokenizer.ggml.remove_extra_whitespaces".into(),
            Value::Bool(norm.remove_extra_whitespaces.unwrap_or(true)),
        ),
    ];
    if let Some(map) = norm.precompiled_charsmap.filter(|m| !m.is_empty()) {
        md.push((
            "tokenizer.ggml.precompiled_charsmap".into(),
            Value::Array(map.into_iter().map(Value::U8).collect()),
        ));
    }
    Ok((md, vocab_size))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A SentencePiece model file with these pieces `(piece, score, type)`, model type and
    /// normalizer — what `spm_train` writes, built with the same message definitions.
    pub(crate) fn model_bytes(
        pieces: &[(&str, f32, i32)],
        model_type: i32,
        charsmap: &[u8],
        add_dummy_prefix: Option<bool>,
    ) -> Vec<u8> {
        ModelProto {
            pieces: pieces
                .iter()
                .map(|&(p, s, t)| SentencePiece {
                    piece: Some(p.into()),
                    score: Some(s),
                    r#type: (t != 1).then_some(t),
                })
                .collect(),
            trainer_spec: Some(TrainerSpec {
                model_type: Some(model_type),
            }),
            normalizer_spec: Some(NormalizerSpec {
                precompiled_charsmap: Some(charsmap.to_vec()),
                add_dummy_prefix,
                remove_extra_whitespaces: None,
            }),
        }
        .encode_to_vec()
    }

    fn get<'a>(md: &'a Metadata, key: &str) -> &'a Value {
        &md.iter().find(|(k, _)| k == key).unwrap().1
    }

    /// Piece types map as the converter maps them, ids past the model's pieces are `[PAD<i>]`,
    /// `added_tokens.json` overrides, a BPE model is refused.
    #[test]
    fn vocabulary_as_the_converter_builds_it() {
        let dir = tempfile::tempdir().unwrap();
        let pieces = [
            ("<pad>", 0.0, 3),
            ("</s>", 0.0, 3),
            ("<unk>", 0.0, 2),
            ("\u{2581}the", -2.5, 1),
            ("<sep>", 0.0, 4),
            ("<0x41>", 0.0, 6),
            ("x", -7.0, 5),
        ];
        let path = dir.path().join("spiece.model");
        std::fs::write(&path, model_bytes(&pieces, 1, &[1, 2, 3], Some(false))).unwrap();
        std::fs::write(
            dir.path().join("added_tokens.json"),
            r#"{"<extra_id_0>": 8, "<far>": 99}"#,
        )
        .unwrap();
        let cfg = serde_json::json!({"vocab_size": 10});
        let (md, n) = t5_vocab_keys(&path, dir.path(), &cfg).unwrap();
        assert_eq!(n, 10);
        let Value::Array(tokens) = get(&md, "tokenizer.ggml.tokens") else {
            panic!()
        };
        let tokens: Vec<String> = tokens
            .iter()
            .map(|v| v.to_string().unwrap().clone())
            .collect();
        assert_eq!(
            tokens,
            [
                "<pad>",
                "</s>",
                "<unk>",
                "\u{2581}the",
                "<sep>",
                "<0x41>",
                "x",
                "[PAD7]",
                "<extra_id_0>",
                "[PAD9]"
            ]
        );
        let Value::Array(types) = get(&md, "tokenizer.ggml.token_type") else {
            panic!()
        };
        let types: Vec<i32> = types.iter().map(|v| v.to_i32().unwrap()).collect();
        assert_eq!(types, [3, 3, 2, 1, 1, 6, 5, 5, 4, 5]);
        let Value::Array(scores) = get(&md, "tokenizer.ggml.scores") else {
            panic!()
        };
        let scores: Vec<f32> = scores.iter().map(|v| v.to_f32().unwrap()).collect();
        assert_eq!(scores[3], -2.5);
        assert_eq!(scores[7], -10000.0);
        assert_eq!(scores[8], -1000.0);
        assert!(matches!(
            get(&md, "tokenizer.ggml.add_space_prefix"),
            Value::Bool(false)
        ));
        assert!(matches!(
            get(&md, "tokenizer.ggml.remove_extra_whitespaces"),
            Value::Bool(true)
        ));
        assert!(matches!(
            get(&md, "tokenizer.ggml.precompiled_charsmap"),
            Value::Array(m) if m.len() == 3
        ));

        std::fs::write(&path, model_bytes(&pieces, 2, &[], None)).unwrap();
        let err = t5_vocab_keys(&path, dir.path(), &cfg).unwrap_err();
        assert!(err.contains("not Unigram"), "{err}");
        std::fs::write(&path, b"\xff\xff not protobuf").unwrap();
        let err = t5_vocab_keys(&path, dir.path(), &cfg).unwrap_err();
        assert!(err.contains("not a SentencePiece model"), "{err}");
        let small = serde_json::json!({"vocab_size": 3});
        std::fs::write(&path, model_bytes(&pieces, 1, &[], None)).unwrap();
        let err = t5_vocab_keys(&path, dir.path(), &small).unwrap_err();
        assert!(
            err.contains("more than config.json's vocab_size 3"),
            "{err}"
        );
    }
}
