//! Test fixtures shared by this crate's and dependent crates' tests: a tiny random BERT
//! checkpoint with real HF tensor names and a word-level `tokenizer.json`, and a synthetic
//! two-class task whose label is decided by which marker words a text contains.

use anyhow::Result;
use pmq_io::{encode_f32, write_safetensors, Dtype};
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

fn vocab() -> Vec<&'static str> {
    let mut v = vec!["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
    v.extend(POSITIVE.iter().chain(NEGATIVE).chain(NEUTRAL));
    v
}

/// A word-level, lower-casing `tokenizer.json` with `[CLS] … [SEP]` post-processing and, as
/// all-MiniLM-L6-v2's, padding and truncation switched on (the trap consumers must handle).
pub fn tokenizer_json() -> Value {
    let vocab: serde_json::Map<String, Value> = vocab()
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), json!(i)))
        .collect();
    json!({
        "version": "1.0",
        "truncation": {"max_length": 24, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 24}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": [],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    })
}

/// Writes a random BERT (`config.json`, `tokenizer.json`, `model.safetensors` with the HF
/// names of `BertModel`, plus an unused i64 `embeddings.position_ids` and a `pooler`) to `dir`.
pub fn write_tiny_bert(dir: &Path, shape: TinyBert, seed: u64) -> Result<()> {
    let TinyBert {
        hidden: h,
        heads,
        intermediate: ff,
        layers,
        max_positions,
    } = shape;
    let v = vocab().len();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, shape: &[usize], scale: f32, center: f32| -> Result<()> {
        let n = shape.iter().product();
        let vals: Vec<f32> = (0..n)
            .map(|_| center + rng.random_range(-scale..scale))
            .collect();
        tensors.push((
            name.to_string(),
            Dtype::F32,
            shape.to_vec(),
            encode_f32(Dtype::F32, &vals)?,
        ));
        Ok(())
    };
    add("embeddings.word_embeddings.weight", &[v, h], 1.0, 0.0)?;
    add(
        "embeddings.position_embeddings.weight",
        &[max_positions, h],
        0.3,
        0.0,
    )?;
    add("embeddings.token_type_embeddings.weight", &[2, h], 0.3, 0.0)?;
    add("embeddings.LayerNorm.weight", &[h], 0.2, 1.0)?;
    add("embeddings.LayerNorm.bias", &[h], 0.1, 0.0)?;
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
            add(
                &format!("{p}.{name}.weight"),
                &[o, i],
                (3.0 / i as f32).sqrt(),
                0.0,
            )?;
            add(&format!("{p}.{name}.bias"), &[o], 0.1, 0.0)?;
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            add(&format!("{p}.{ln}.weight"), &[h], 0.2, 1.0)?;
            add(&format!("{p}.{ln}.bias"), &[h], 0.1, 0.0)?;
        }
    }
    add("pooler.dense.weight", &[h, h], 0.3, 0.0)?;
    add("pooler.dense.bias", &[h], 0.1, 0.0)?;
    let pos: Vec<u8> = (0..max_positions as i64)
        .flat_map(i64::to_le_bytes)
        .collect();
    tensors.push((
        "embeddings.position_ids".into(),
        Dtype::I64,
        vec![1, max_positions],
        pos,
    ));
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    std::fs::create_dir_all(dir)?;
    let config = json!({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": h,
        "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": ff,
        "hidden_act": "gelu", "vocab_size": v, "max_position_embeddings": max_positions,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "pad_token_id": 0
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json().to_string())?;
    write_safetensors(&dir.join("model.safetensors"), &tensors, None)?;
    Ok(())
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
