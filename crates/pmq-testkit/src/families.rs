//! Tiny checkpoints of every supported family: 2 blocks, hidden 64, real HF tensor names and
//! real-looking configs. Norm weights carry a few outlier channels, as real models' do.

use crate::checkpoint::Ckpt;
use crate::text::{tokenizer_json, WORDS};
use crate::tiny_bert::{bert_encoder, TinyBert};
use serde_json::{json, Value};
use std::path::Path;

/// Hidden size of every family's checkpoint.
pub const H: usize = 64;
/// Token ids: 4 special tokens + [`WORDS`].
pub const VOCAB: usize = 4 + WORDS.len();

/// The families (and variants) the tests cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fam {
    /// `BertModel` (post-LN, biases, GELU).
    Bert,
    /// `CLIPVisionModel` (pre-LN, quick-GELU, 32×32 images, 8×8 patches).
    Clip,
    /// `LlamaForCausalLM` with grouped-query attention (no v → o fold), no biases.
    LlamaGqa,
    /// `LlamaForCausalLM`, multi-head attention with attention and MLP biases.
    LlamaMha,
    /// `T5ForConditionalGeneration`, non-gated ReLU feed-forward.
    T5Relu,
    /// `T5ForConditionalGeneration`, gated-GELU feed-forward (FLAN-T5).
    T5Gated,
}

/// Every family and variant.
pub const ALL: [Fam; 6] = [
    Fam::Bert,
    Fam::Clip,
    Fam::LlamaGqa,
    Fam::LlamaMha,
    Fam::T5Relu,
    Fam::T5Gated,
];

impl Fam {
    /// Whether the family reads text (has a `tokenizer.json`).
    pub fn is_text(self) -> bool {
        self != Fam::Clip
    }

    /// Whether calibration samples are `{"input", "target"}` pairs.
    pub fn is_seq2seq(self) -> bool {
        matches!(self, Fam::T5Relu | Fam::T5Gated)
    }
}

fn bert(c: &mut Ckpt) -> Value {
    let shape = TinyBert {
        hidden: H,
        heads: 4,
        intermediate: 128,
        layers: 2,
        max_positions: 32,
    };
    bert_encoder(c, shape, VOCAB, true)
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
        c.norm_with_outliers(&format!("{p}.input_layernorm"), H, false);
        c.norm_with_outliers(&format!("{p}.post_attention_layernorm"), H, false);
    }
    c.norm_with_outliers("model.norm", H, false);
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
            c.norm_with_outliers(&format!("{p}.0.layer_norm"), H, false);
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
                c.norm_with_outliers(&format!("{p}.1.layer_norm"), H, false);
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
            c.norm_with_outliers(&format!("{p}.{f}.layer_norm"), H, false);
        }
        c.norm_with_outliers(&format!("{stack}.final_layer_norm"), H, false);
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
    c.norm_with_outliers(&format!("{p}.pre_layrnorm"), H, true);
    for i in 0..2 {
        let l = format!("{p}.encoder.layers.{i}");
        for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            c.linear(&format!("{l}.self_attn.{n}"), H, H, true);
        }
        c.norm_with_outliers(&format!("{l}.layer_norm1"), H, true);
        c.norm_with_outliers(&format!("{l}.layer_norm2"), H, true);
        c.linear(&format!("{l}.mlp.fc1"), H, inter, true);
        c.linear(&format!("{l}.mlp.fc2"), inter, H, true);
    }
    c.norm_with_outliers(&format!("{p}.post_layernorm"), H, true);
    json!({
        "architectures": ["CLIPVisionModel"], "model_type": "clip_vision_model",
        "hidden_size": H, "intermediate_size": inter, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_channels": 3, "image_size": img, "patch_size": patch,
        "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 32
    })
}

/// The random checkpoint of `fam` drawn from `seed`, and its config.
fn build(fam: Fam, seed: u64) -> (Ckpt, Value) {
    let mut c = Ckpt::new(seed);
    let config = match fam {
        Fam::Bert => bert(&mut c),
        Fam::Clip => clip(&mut c),
        Fam::LlamaGqa => llama(&mut c, 2, false),
        Fam::LlamaMha => llama(&mut c, 4, true),
        Fam::T5Relu => t5(&mut c, false),
        Fam::T5Gated => t5(&mut c, true),
    };
    (c, config)
}

fn save(fam: Fam, c: &Ckpt, config: &Value, dir: &Path) {
    c.save(dir, config);
    if fam.is_text() {
        std::fs::write(
            dir.join("tokenizer.json"),
            tokenizer_json(fam == Fam::Bert).to_string(),
        )
        .unwrap();
    }
}

/// Writes the checkpoint of `fam` drawn from `seed` into `dir`, with its tokenizer.
pub fn write_model(fam: Fam, dir: &Path, seed: u64) {
    let (c, config) = build(fam, seed);
    save(fam, &c, &config, dir);
}

/// Writes the checkpoint of `fam` drawn from `seed` plus uniform noise of size `noise` drawn
/// from `noise_seed` on every tensor: an "expert" fine-tuned from the base `write_model(fam, _,
/// seed)`.
pub fn write_perturbed(fam: Fam, dir: &Path, seed: u64, noise_seed: u64, noise: f32) {
    let (mut c, config) = build(fam, seed);
    c.perturb(noise_seed, noise);
    save(fam, &c, &config, dir);
}
