//! A word-level tokenizer and calibration files for the tiny checkpoints.

use crate::families::Fam;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

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

/// A calibration set of `n` samples for `fam` in `root`, drawn from `seed`: `TASK.jsonl` with
/// `{"text"}` lines (T5: `{"input", "target"}`), or for CLIP a directory `TASK-images` of random
/// 40×36 PNGs. Returns the `TASK=PATH` argument of `pmq quantize --calib`.
pub fn write_calib(fam: Fam, root: &Path, task: &str, n: usize, seed: u64) -> String {
    let mut r = StdRng::seed_from_u64(seed);
    let path: PathBuf = if fam.is_text() {
        let lines: Vec<String> = (0..n)
            .map(|_| {
                if fam.is_seq2seq() {
                    json!({"input": sentence(&mut r), "target": sentence(&mut r)}).to_string()
                } else {
                    json!({"text": sentence(&mut r)}).to_string()
                }
            })
            .collect();
        let p = root.join(format!("{task}.jsonl"));
        std::fs::write(&p, lines.join("\n")).unwrap();
        p
    } else {
        let dir = root.join(format!("{task}-images"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            let img = image::RgbImage::from_fn(40, 36, |_, _| {
                image::Rgb([r.random(), r.random(), r.random()])
            });
            img.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
        dir
    };
    format!("{task}={}", path.display())
}
