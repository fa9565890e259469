//! Tiny random checkpoints of every family (real HF tensor names), a word-level tokenizer and
//! calibration files, for the pipeline tests.
#![allow(dead_code)]

use pmq_io::{encode_f32, write_safetensors, Dtype};
use pmq_models::{Batch, BlockModel, State, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
const VOCAB: usize = 24; // 4 special tokens + WORDS
const H: usize = 64;

/// The families (and variants) the tests cover.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fam {
    Bert,
    Clip,
    /// Grouped-query attention (no v → o fold), no biases.
    LlamaGqa,
    /// Multi-head attention with attention and MLP biases (v → o and up → down fold biases).
    LlamaMha,
    /// Non-gated ReLU feed-forward (wi → wo folds).
    T5Relu,
    /// Gated-GELU feed-forward (wi_1 → wo folds).
    T5Gated,
}

pub const ALL: [Fam; 6] = [
    Fam::Bert,
    Fam::Clip,
    Fam::LlamaGqa,
    Fam::LlamaMha,
    Fam::T5Relu,
    Fam::T5Gated,
];

/// A checkpoint under construction.
struct Ckpt {
    t: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    rng: StdRng,
}

impl Ckpt {
    fn new(seed: u64) -> Self {
        Self {
            t: BTreeMap::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }
    fn rand(&mut self, name: &str, shape: &[usize], center: f32, scale: f32) {
        let n = shape.iter().product();
        let v = (0..n)
            .map(|_| center + self.rng.random_range(-scale..scale))
            .collect();
        self.t.insert(name.to_string(), (shape.to_vec(), v));
    }
    fn linear(&mut self, p: &str, i: usize, o: usize, bias: bool) {
        self.rand(
            &format!("{p}.weight"),
            &[o, i],
            0.0,
            (3.0 / i as f32).sqrt(),
        );
        if bias {
            self.rand(&format!("{p}.bias"), &[o], 0.0, 0.1);
        }
    }
    /// A norm weight around 1 with a few outlier channels (activation outliers are what AWQ
    /// protects), and a bias when asked.
    fn norm(&mut self, p: &str, bias: bool) {
        self.rand(&format!("{p}.weight"), &[H], 1.0, 0.2);
        let w = &mut self.t.get_mut(&format!("{p}.weight")).unwrap().1;
        for c in [3, 17, 40] {
            w[c] *= 8.0;
        }
        if bias {
            self.rand(&format!("{p}.bias"), &[H], 0.0, 0.1);
        }
    }
    fn save(&self, dir: &Path, config: &Value) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let t: Vec<_> = self
            .t
            .iter()
            .map(|(n, (s, v))| {
                (
                    n.clone(),
                    Dtype::F32,
                    s.clone(),
                    encode_f32(Dtype::F32, v).unwrap(),
                )
            })
            .collect();
        write_safetensors(&dir.join("model.safetensors"), &t, None).unwrap();
    }
}

fn tokenizer_json(bert: bool) -> Value {
    let mut vocab = serde_json::Map::new();
    for (i, t) in ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .chain(WORDS)
        .enumerate()
    {
        vocab.insert(t.to_string(), json!(i));
    }
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

fn bert(c: &mut Ckpt) -> Value {
    let ff = 128;
    c.rand("embeddings.word_embeddings.weight", &[VOCAB, H], 0.0, 1.0);
    c.rand("embeddings.position_embeddings.weight", &[32, H], 0.0, 0.5);
    c.rand("embeddings.token_type_embeddings.weight", &[2, H], 0.0, 0.5);
    c.norm("embeddings.LayerNorm", true);
    for l in 0..2 {
        let p = format!("encoder.layer.{l}");
        for (n, i, o) in [
            ("attention.self.query", H, H),
            ("attention.self.key", H, H),
            ("attention.self.value", H, H),
            ("attention.output.dense", H, H),
            ("intermediate.dense", H, ff),
            ("output.dense", ff, H),
        ] {
            c.linear(&format!("{p}.{n}"), i, o, true);
        }
        c.norm(&format!("{p}.attention.output.LayerNorm"), true);
        c.norm(&format!("{p}.output.LayerNorm"), true);
    }
    json!({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": H,
        "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": ff,
        "hidden_act": "gelu", "vocab_size": VOCAB, "max_position_embeddings": 32,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0
    })
}

fn llama(c: &mut Ckpt, kv: usize, bias: bool) -> Value {
    let (ff, heads) = (96, 4);
    let hd = H / heads;
    c.rand("model.embed_tokens.weight", &[VOCAB, H], 0.0, 1.0);
    for l in 0..2 {
        let p = format!("model.layers.{l}");
        for (n, i, o, b) in [
            ("self_attn.q_proj", H, heads * hd, bias),
            ("self_attn.k_proj", H, kv * hd, bias),
            ("self_attn.v_proj", H, kv * hd, bias),
            ("self_attn.o_proj", heads * hd, H, bias),
            ("mlp.gate_proj", H, ff, bias),
            ("mlp.up_proj", H, ff, bias),
            ("mlp.down_proj", ff, H, bias),
        ] {
            c.linear(&format!("{p}.{n}"), i, o, b);
        }
        c.norm(&format!("{p}.input_layernorm"), false);
        c.norm(&format!("{p}.post_attention_layernorm"), false);
    }
    c.norm("model.norm", false);
    c.linear("lm_head", H, VOCAB, false);
    json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H,
        "intermediate_size": ff, "num_hidden_layers": 2, "num_attention_heads": heads,
        "num_key_value_heads": kv, "vocab_size": VOCAB, "max_position_embeddings": 64,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
        "tie_word_embeddings": false, "attention_bias": bias, "mlp_bias": bias
    })
}

fn t5(c: &mut Ckpt, gated: bool) -> Value {
    let (kv, heads, ff) = (16, 4, 128);
    let inner = heads * kv;
    c.rand("shared.weight", &[VOCAB, H], 0.0, 1.0);
    for stack in ["encoder", "decoder"] {
        for i in 0..2 {
            let p = format!("{stack}.block.{i}.layer");
            let attn = |c: &mut Ckpt, a: &str| {
                for n in ["q", "k", "v"] {
                    c.linear(&format!("{a}.{n}"), H, inner, false);
                }
                c.linear(&format!("{a}.o"), inner, H, false);
            };
            attn(c, &format!("{p}.0.SelfAttention"));
            c.norm(&format!("{p}.0.layer_norm"), false);
            if i == 0 {
                c.rand(
                    &format!("{p}.0.SelfAttention.relative_attention_bias.weight"),
                    &[32, heads],
                    0.0,
                    1.0,
                );
            }
            let f = if stack == "decoder" {
                attn(c, &format!("{p}.1.EncDecAttention"));
                c.norm(&format!("{p}.1.layer_norm"), false);
                2
            } else {
                1
            };
            let d = format!("{p}.{f}.DenseReluDense");
            if gated {
                c.linear(&format!("{d}.wi_0"), H, ff, false);
                c.linear(&format!("{d}.wi_1"), H, ff, false);
            } else {
                c.linear(&format!("{d}.wi"), H, ff, false);
            }
            c.linear(&format!("{d}.wo"), ff, H, false);
            c.norm(&format!("{p}.{f}.layer_norm"), false);
        }
        c.norm(&format!("{stack}.final_layer_norm"), false);
    }
    c.linear("lm_head", H, VOCAB, false);
    json!({
        "architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
        "vocab_size": VOCAB, "d_model": H, "d_kv": kv, "d_ff": ff, "num_layers": 2,
        "num_decoder_layers": 2, "num_heads": heads, "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128, "layer_norm_epsilon": 1e-6,
        "feed_forward_proj": if gated { "gated-gelu" } else { "relu" },
        "tie_word_embeddings": false, "is_encoder_decoder": true,
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0
    })
}

fn clip(c: &mut Ckpt) -> Value {
    let (inter, img, patch) = (128, 32, 8);
    let p = "vision_model";
    c.rand(&format!("{p}.embeddings.class_embedding"), &[H], 0.0, 1.0);
    c.rand(
        &format!("{p}.embeddings.patch_embedding.weight"),
        &[H, 3, patch, patch],
        0.0,
        0.1,
    );
    c.rand(
        &format!("{p}.embeddings.position_embedding.weight"),
        &[(img / patch) * (img / patch) + 1, H],
        0.0,
        0.5,
    );
    c.norm(&format!("{p}.pre_layrnorm"), true);
    for i in 0..2 {
        let l = format!("{p}.encoder.layers.{i}");
        for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            c.linear(&format!("{l}.self_attn.{n}"), H, H, true);
        }
        c.norm(&format!("{l}.layer_norm1"), true);
        c.norm(&format!("{l}.layer_norm2"), true);
        c.linear(&format!("{l}.mlp.fc1"), H, inter, true);
        c.linear(&format!("{l}.mlp.fc2"), inter, H, true);
    }
    c.norm(&format!("{p}.post_layernorm"), true);
    json!({
        "architectures": ["CLIPVisionModel"], "model_type": "clip_vision_model",
        "hidden_size": H, "intermediate_size": inter, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_channels": 3, "image_size": img, "patch_size": patch,
        "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 32
    })
}

/// Writes the checkpoint of `fam` (seed `seed`) into `dir` with its tokenizer.
pub fn write_model(fam: Fam, dir: &Path, seed: u64) {
    let mut c = Ckpt::new(seed);
    let config = match fam {
        Fam::Bert => bert(&mut c),
        Fam::Clip => clip(&mut c),
        Fam::LlamaGqa => llama(&mut c, 2, false),
        Fam::LlamaMha => llama(&mut c, 4, true),
        Fam::T5Relu => t5(&mut c, false),
        Fam::T5Gated => t5(&mut c, true),
    };
    c.save(dir, &config);
    if fam != Fam::Clip {
        std::fs::write(
            dir.join("tokenizer.json"),
            tokenizer_json(fam == Fam::Bert).to_string(),
        )
        .unwrap();
    }
}

/// A calibration file (or image directory) of `n` samples for `fam` in `root`; `TASK=PATH`.
pub fn write_calib(fam: Fam, root: &Path, task: &str, n: usize, seed: u64) -> String {
    let mut r = StdRng::seed_from_u64(seed);
    let sentence = |r: &mut StdRng| {
        let k = r.random_range(3..9);
        (0..k)
            .map(|_| WORDS[r.random_range(0..WORDS.len())])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let path: PathBuf = if fam == Fam::Clip {
        let dir = root.join(format!("{task}-images"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..n {
            let img = image::RgbImage::from_fn(40, 36, |_, _| {
                image::Rgb([r.random(), r.random(), r.random()])
            });
            img.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
        dir
    } else {
        let lines: Vec<String> = (0..n)
            .map(|_| match fam {
                Fam::T5Relu | Fam::T5Gated => {
                    json!({"input": sentence(&mut r), "target": sentence(&mut r)}).to_string()
                }
                _ => json!({"text": sentence(&mut r)}).to_string(),
            })
            .collect();
        let p = root.join(format!("{task}.jsonl"));
        std::fs::write(&p, lines.join("\n")).unwrap();
        p
    };
    format!("{task}={}", path.display())
}

/// The calibration batches the pipeline builds from `calib` for the model in `dir`.
pub fn calib_batches(dir: &Path, calib: &str, n: usize, batch_size: usize) -> Vec<Batch> {
    use pmq_pipeline::calib::{read_samples, Batcher};
    let loaded = pmq_models::load_model(dir).unwrap();
    let family = loaded.as_block_model().family();
    let spec: pmq_pipeline::CalibSpec = calib.parse().unwrap();
    let samples = read_samples(&spec, family, n).unwrap();
    Batcher::new(dir, &loaded, 128)
        .unwrap()
        .batches(&samples, batch_size)
        .unwrap()
}

/// A fixed evaluation batch for `fam` (text, seq2seq or pixels).
pub fn eval_batch(fam: Fam, dir: &Path, root: &Path) -> Batch {
    let spec = write_calib(fam, root, "eval", 3, 999);
    calib_batches(dir, &spec, 3, 3).remove(0)
}

/// The embedded states of `batches`.
pub fn embed_all(model: &dyn BlockModel, batches: &[Batch]) -> Vec<State> {
    batches.iter().map(|b| model.embed(b).unwrap()).collect()
}

/// max |a − b| / max |b|.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let d = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max);
    let s = b.iter().map(|y| y.abs() as f64).fold(0.0, f64::max);
    d / s.max(1e-30)
}
