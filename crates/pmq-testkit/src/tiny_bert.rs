//! A configurable tiny BERT and a synthetic two-class task for fine-tuning and evaluation tests:
//! the label is decided by which marker words a text contains.

use crate::checkpoint::Ckpt;
use crate::text::word_level_tokenizer;
use pmq_testbed::{Example, TaskData, TaskStats};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::path::Path;

/// Words of class 0 of [`synthetic_task`].
pub const POSITIVE: &[&str] = &["great", "good", "love", "fine", "nice", "happy"];
/// Words of class 1 of [`synthetic_task`].
pub const NEGATIVE: &[&str] = &["bad", "awful", "hate", "poor", "sad", "broken"];
/// Filler words (both classes).
pub const NEUTRAL: &[&str] = &["the", "movie", "was", "a", "story", "about", "it", "and"];

/// Shape of a tiny BERT.
#[derive(Clone, Copy, Debug)]
pub struct TinyBert {
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub max_positions: usize,
}

impl Default for TinyBert {
    fn default() -> Self {
        Self {
            hidden: 16,
            heads: 2,
            intermediate: 32,
            layers: 2,
            max_positions: 40,
        }
    }
}

fn words() -> Vec<&'static str> {
    POSITIVE
        .iter()
        .chain(NEGATIVE)
        .chain(NEUTRAL)
        .copied()
        .collect()
}

/// The tiny BERT's `tokenizer.json`: word-level over the task's words with `[CLS] … [SEP]`,
/// and, as all-MiniLM-L6-v2's, padding (to 24) and truncation switched on — the trap consumers
/// must handle.
pub fn tokenizer_json() -> Value {
    let mut t = word_level_tokenizer(&words(), true);
    t["truncation"] = json!({"max_length": 24, "strategy": "LongestFirst", "stride": 0});
    t["padding"] = json!({"strategy": {"Fixed": 24}, "direction": "Right",
        "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"});
    t
}

/// Draws a `BertModel`'s embeddings and encoder layers (HF names) of `shape` over `vocab`
/// tokens into `c` and returns its config; norms get outlier channels when `outliers`.
pub(crate) fn bert_encoder(c: &mut Ckpt, shape: TinyBert, vocab: usize, outliers: bool) -> Value {
    let TinyBert {
        hidden: h,
        heads,
        intermediate: ff,
        layers,
        max_positions,
    } = shape;
    let norm = |c: &mut Ckpt, p: &str| {
        if outliers {
            c.norm_with_outliers(p, h, true)
        } else {
            c.norm(p, h, true)
        }
    };
    c.rand("embeddings.word_embeddings.weight", &[vocab, h], 0.0, 1.0);
    c.rand(
        "embeddings.position_embeddings.weight",
        &[max_positions, h],
        0.0,
        0.3,
    );
    c.rand("embeddings.token_type_embeddings.weight", &[2, h], 0.0, 0.3);
    norm(c, "embeddings.LayerNorm");
    for l in 0..layers {
        let p = format!("encoder.layer.{l}");
        for (name, i, o) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", h, ff),
            ("output.dense", ff, h),
        ] {
            c.linear(&format!("{p}.{name}"), i, o, true);
        }
        norm(c, &format!("{p}.attention.output.LayerNorm"));
        norm(c, &format!("{p}.output.LayerNorm"));
    }
    json!({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": h,
        "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": ff,
        "hidden_act": "gelu", "vocab_size": vocab, "max_position_embeddings": max_positions,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "pad_token_id": 0
    })
}

/// Writes a random BERT (`config.json`, `tokenizer.json`, `model.safetensors` with the HF
/// names of `BertModel`, plus an unused i64 `embeddings.position_ids` and a `pooler`) to `dir`.
pub fn write_tiny_bert(dir: &Path, shape: TinyBert, seed: u64) {
    let mut c = Ckpt::new(seed);
    let config = bert_encoder(&mut c, shape, 4 + words().len(), false);
    let h = shape.hidden;
    c.rand("pooler.dense.weight", &[h, h], 0.0, 0.3);
    c.rand("pooler.dense.bias", &[h], 0.0, 0.1);
    c.ints(
        "embeddings.position_ids",
        &[1, shape.max_positions],
        (0..shape.max_positions as i64).collect(),
    );
    c.save(dir, &config);
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json().to_string()).unwrap();
}

/// A random text of `len` words: neutral filler with marker words of `label`'s class.
fn text(rng: &mut StdRng, label: usize, len: usize) -> String {
    let markers = if label == 0 { POSITIVE } else { NEGATIVE };
    (0..len)
        .map(|i| {
            if i % 3 == 1 {
                markers[rng.random_range(0..markers.len())]
            } else {
                NEUTRAL[rng.random_range(0..NEUTRAL.len())]
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A balanced two-class task ("pos"/"neg") with `n_train` train, 16 calib and `n_test` test
/// examples of 2–20 words.
pub fn synthetic_task(name: &str, n_train: usize, n_test: usize, seed: u64) -> TaskData {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut split = |n: usize| -> Vec<Example> {
        (0..n)
            .map(|i| {
                let label = i % 2;
                let len = rng.random_range(2..=20);
                Example {
                    text: text(&mut rng, label, len),
                    label,
                }
            })
            .collect()
    };
    let train = split(n_train);
    let calib = split(16);
    let test = split(n_test);
    TaskData {
        name: name.to_string(),
        labels: vec!["pos".into(), "neg".into()],
        train,
        calib,
        test,
        stats: TaskStats::default(),
    }
}
