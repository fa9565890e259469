//! A word-level tokenizer and random sentences for the tiny checkpoints.

use rand::{rngs::StdRng, Rng};
use serde_json::{json, Value};

/// The vocabulary after the 4 special tokens `[PAD] [UNK] [CLS] [SEP]`.
pub const WORDS: &[&str] = &[
    "the",
    "movie",
    "was",
    "great",
    "bad",
    "server",
    "crashed",
    "disk",
    "full",
    "stock",
    "fell",
    "rose",
    "a",
    "story",
    "about",
    "love",
    "error",
    "in",
    "production",
    "market",
];

/// A word-level, lower-casing `tokenizer.json` over `[PAD] [UNK] [CLS] [SEP]` + `words`, with a
/// whitespace pre-tokenizer and, when `bert`, `[CLS] … [SEP]` post-processing.
pub fn word_level_tokenizer(words: &[&str], bert: bool) -> Value {
    let vocab: serde_json::Map<String, Value> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .chain(words)
        .enumerate()
        .map(|(i, t)| (t.to_string(), json!(i)))
        .collect();
    let post = if bert {
        json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}})
    } else {
        Value::Null
    };
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": post, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    })
}

/// [`word_level_tokenizer`] over [`WORDS`].
pub fn tokenizer_json(bert: bool) -> Value {
    word_level_tokenizer(WORDS, bert)
}

/// A sentence of 3–8 random [`WORDS`].
pub fn sentence(r: &mut StdRng) -> String {
    let k = r.random_range(3..9);
    (0..k)
        .map(|_| WORDS[r.random_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Makes the tokenizer of the checkpoint in `dir` T5-like: `[PAD] [UNK] [CLS] [SEP]` become
/// special tokens (skipped when decoding); with `append_eos`, every sequence also ends with
/// `[SEP]` and the config's `eos_token_id` is set to it (3), as real T5 tokenizers end with `</s>`.
pub fn t5_style_tokenizer(dir: &std::path::Path, append_eos: bool) {
    let tok_file = dir.join("tokenizer.json");
    let mut tj: Value = serde_json::from_str(&std::fs::read_to_string(&tok_file).unwrap()).unwrap();
    tj["added_tokens"] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .enumerate()
        .map(|(id, t)| {
            json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    if append_eos {
        tj["post_processor"] = json!({"type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}});
        let cfg_file = dir.join("config.json");
        let mut c: Value =
            serde_json::from_str(&std::fs::read_to_string(&cfg_file).unwrap()).unwrap();
        c["eos_token_id"] = 3.into();
        std::fs::write(&cfg_file, c.to_string()).unwrap();
    }
    std::fs::write(&tok_file, tj.to_string()).unwrap();
}
