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
