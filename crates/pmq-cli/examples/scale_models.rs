//! Writes a paper-shaped random checkpoint and K synthetic experts of it, for the scale
//! benchmark (bench/scale): architecture-faithful HF configs and tensor names, bf16 weights.
//!
//! ```text
//! cargo run --release -p pmq-cli --example scale_models -- SHAPE K OUT [SEED]
//!   SHAPE: vit-b32 (CLIP ViT-B/32 vision tower, 88M) | vit-l14 (ViT-L/14, 304M)
//!          | tinyllama (TinyLlama-1.1B: hidden 2048, 22 layers, 5632, 32 heads, 4 KV heads)
//!          | llama-1024x8 (hidden 1024, 8 layers, 2816, 16 heads, 4 KV heads: the peer benchmark)
//!          | tinyllama-2l (TinyLlama's widths with 2 layers: per-layer costs in minutes)
//!          | llama2-7b (Llama-2-7B: hidden 4096, 32 layers, 11008, 32 heads, 32 KV heads)
//!          | llama2-7b-2l (Llama-2-7B's widths with 2 layers)
//! ```
//!
//! writes `OUT/base` and `OUT/expert-1 … OUT/expert-K`. The base's weights are Gaussian with
//! HF's initialiser scale (σ = 0.02; norms 1 + N(0, 0.02²), biases N(0, 0.02²)). Expert `i`
//! is the base plus a structured task vector on every block linear, the shape fine-tuning
//! deltas have (low rank plus a little dense noise):
//!
//! ```text
//! W_i = W + s·(A_i B_iᵀ/√r) + 0.1·s·N_i,   A_i ∈ ℝ^{out×r}, B_i ∈ ℝ^{in×r}, N_i Gaussian,
//! ```
//!
//! with `r = 16` and `s = 0.1·σ`, and `1 + N(0, 0.005²)` scaled norm weights; embeddings and
//! the head are shared. Every tensor comes from its own seed (name, expert), so the files are
//! the same on every run and tensors are generated one at a time (memory: one tensor).
//! Llama gets the testbed's BERT WordPiece tokenizer when `PMQ_TOKENIZER` names a
//! tokenizer.json (its 30522 ids fit the 32000-row embedding); CLIP gets OpenAI's
//! preprocessor_config.json.

use anyhow::{bail, Context, Result};
use pmq_io::{encode_f32, Dtype, SafetensorsWriter, TensorInfo};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal, StandardNormal};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// How a tensor is drawn.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// A block linear's weight: gets the experts' task vectors.
    Linear,
    /// A norm weight (around 1).
    Norm,
    /// Biases, embeddings, anything else (shared by the experts).
    Other,
}

struct Tensor {
    name: String,
    shape: Vec<usize>,
    kind: Kind,
}

fn t(name: impl Into<String>, shape: &[usize], kind: Kind) -> Tensor {
    Tensor {
        name: name.into(),
        shape: shape.to_vec(),
        kind,
    }
}

/// A CLIP vision tower (`CLIPVisionModel`) with its config.
fn vit(
    hidden: usize,
    layers: usize,
    heads: usize,
    mlp: usize,
    patch: usize,
) -> (Value, Vec<Tensor>) {
    let image = 224;
    let grid = image / patch;
    let p = "vision_model";
    let mut ts = vec![
        t(
            format!("{p}.embeddings.class_embedding"),
            &[hidden],
            Kind::Other,
        ),
        t(
            format!("{p}.embeddings.patch_embedding.weight"),
            &[hidden, 3, patch, patch],
            Kind::Other,
        ),
        t(
            format!("{p}.embeddings.position_embedding.weight"),
            &[grid * grid + 1, hidden],
            Kind::Other,
        ),
        t(format!("{p}.pre_layrnorm.weight"), &[hidden], Kind::Norm),
        t(format!("{p}.pre_layrnorm.bias"), &[hidden], Kind::Other),
    ];
    for i in 0..layers {
        let l = format!("{p}.encoder.layers.{i}");
        for ln in ["layer_norm1", "layer_norm2"] {
            ts.push(t(format!("{l}.{ln}.weight"), &[hidden], Kind::Norm));
            ts.push(t(format!("{l}.{ln}.bias"), &[hidden], Kind::Other));
        }
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            ts.push(t(
                format!("{l}.self_attn.{proj}.weight"),
                &[hidden, hidden],
                Kind::Linear,
            ));
            ts.push(t(
                format!("{l}.self_attn.{proj}.bias"),
                &[hidden],
                Kind::Other,
            ));
        }
        ts.push(t(
            format!("{l}.mlp.fc1.weight"),
            &[mlp, hidden],
            Kind::Linear,
        ));
        ts.push(t(format!("{l}.mlp.fc1.bias"), &[mlp], Kind::Other));
        ts.push(t(
            format!("{l}.mlp.fc2.weight"),
            &[hidden, mlp],
            Kind::Linear,
        ));
        ts.push(t(format!("{l}.mlp.fc2.bias"), &[hidden], Kind::Other));
    }
    ts.push(t(
        format!("{p}.post_layernorm.weight"),
        &[hidden],
        Kind::Norm,
    ));
    ts.push(t(
        format!("{p}.post_layernorm.bias"),
        &[hidden],
        Kind::Other,
    ));
    let config = json!({
        "architectures": ["CLIPVisionModel"], "model_type": "clip_vision_model",
        "hidden_size": hidden, "intermediate_size": mlp, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_channels": 3, "image_size": image, "patch_size": patch,
        "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 512,
        "torch_dtype": "bfloat16", "transformers_version": "4.46.0"
    });
    (config, ts)
}

/// A `LlamaForCausalLM` (TinyLlama-1.1B: hidden 2048, 22 layers, 5632, 32 heads, 4 KV heads).
fn llama(h: usize, layers: usize, inter: usize, heads: usize, kv: usize) -> (Value, Vec<Tensor>) {
    let vocab = 32000;
    let hd = h / heads;
    let mut ts = vec![t("model.embed_tokens.weight", &[vocab, h], Kind::Other)];
    for i in 0..layers {
        let l = format!("model.layers.{i}");
        ts.push(t(format!("{l}.input_layernorm.weight"), &[h], Kind::Norm));
        ts.push(t(
            format!("{l}.self_attn.q_proj.weight"),
            &[heads * hd, h],
            Kind::Linear,
        ));
        ts.push(t(
            format!("{l}.self_attn.k_proj.weight"),
            &[kv * hd, h],
            Kind::Linear,
        ));
        ts.push(t(
            format!("{l}.self_attn.v_proj.weight"),
            &[kv * hd, h],
            Kind::Linear,
        ));
        ts.push(t(
            format!("{l}.self_attn.o_proj.weight"),
            &[h, heads * hd],
            Kind::Linear,
        ));
        ts.push(t(
            format!("{l}.post_attention_layernorm.weight"),
            &[h],
            Kind::Norm,
        ));
        ts.push(t(
            format!("{l}.mlp.gate_proj.weight"),
            &[inter, h],
            Kind::Linear,
        ));
        ts.push(t(
            format!("{l}.mlp.up_proj.weight"),
            &[inter, h],
            Kind::Linear,
        ));
        ts.push(t(
            format!("{l}.mlp.down_proj.weight"),
            &[h, inter],
            Kind::Linear,
        ));
    }
    ts.push(t("model.norm.weight", &[h], Kind::Norm));
    ts.push(t("lm_head.weight", &[vocab, h], Kind::Other));
    let config = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": vocab, "hidden_size": h, "intermediate_size": inter,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv,
        "hidden_act": "silu", "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "tie_word_embeddings": false, "attention_bias": false,
        "mlp_bias": false, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
        "torch_dtype": "bfloat16", "transformers_version": "4.46.0"
    });
    (config, ts)
}

/// A seed for (tensor, expert): FNV-1a of the name, mixed with the run seed and the expert.
fn seed_of(name: &str, seed: u64, expert: u64) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h ^ seed.wrapping_mul(0x9e3779b97f4a7c15) ^ expert.wrapping_mul(0xbf58476d1ce4e5b9)
}

fn gaussian(n: usize, sigma: f32, rng: &mut impl Rng) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let z: f32 = StandardNormal.sample(rng);
            sigma * z
        })
        .collect()
}

const SIGMA: f32 = 0.02;
const RANK: usize = 16;

/// The base values of `t`.
fn base_values(t: &Tensor, seed: u64) -> Vec<f32> {
    let n: usize = t.shape.iter().product();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed_of(&t.name, seed, 0));
    let mut v = gaussian(n, SIGMA, &mut rng);
    if t.kind == Kind::Norm {
        v.iter_mut().for_each(|x| *x += 1.0);
    }
    v
}

/// Adds expert `e`'s task vector to `v` (the base values of `t`).
fn add_task_vector(t: &Tensor, v: &mut [f32], seed: u64, e: u64) -> Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed_of(&t.name, seed, e));
    match t.kind {
        Kind::Linear => {
            let (rows, cols) = (t.shape[0], t.shape[1]);
            let s = 0.1 * SIGMA;
            let a = gaussian(rows * RANK, 1.0, &mut rng);
            let b = gaussian(cols * RANK, 1.0, &mut rng);
            let scale = s / (RANK as f32).sqrt();
            let noise = Normal::new(0.0f32, 0.1 * s)?;
            for r in 0..rows {
                let ar = &a[r * RANK..(r + 1) * RANK];
                let row = &mut v[r * cols..(r + 1) * cols];
                for (c, x) in row.iter_mut().enumerate() {
                    let bc = &b[c * RANK..(c + 1) * RANK];
                    let lowrank: f32 = ar.iter().zip(bc).map(|(p, q)| p * q).sum();
                    *x += scale * lowrank + noise.sample(&mut rng);
                }
            }
        }
        Kind::Norm => {
            let noise = Normal::new(0.0f32, 0.005)?;
            v.iter_mut()
                .for_each(|x| *x *= 1.0 + noise.sample(&mut rng));
        }
        Kind::Other => {}
    }
    Ok(())
}

fn write_checkpoint(
    dir: &Path,
    config: &Value,
    ts: &[Tensor],
    seed: u64,
    expert: u64,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let infos: Vec<TensorInfo> = ts
        .iter()
        .map(|t| TensorInfo::new(t.name.clone(), Dtype::BF16, t.shape.clone()))
        .collect();
    let mut w = SafetensorsWriter::create(&dir.join("model.safetensors"), &infos, None)?;
    for t in ts {
        let mut v = base_values(t, seed);
        if expert > 0 {
            add_task_vector(t, &mut v, seed, expert)?;
        }
        w.write(&t.name, &encode_f32(Dtype::BF16, &v)?)?;
    }
    w.finish()?;
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(config)?)?;
    if config["model_type"] == "clip_vision_model" {
        let pre = json!({
            "crop_size": {"height": 224, "width": 224}, "do_center_crop": true,
            "do_convert_rgb": true, "do_normalize": true, "do_rescale": true, "do_resize": true,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3, "rescale_factor": 1.0 / 255.0, "size": {"shortest_edge": 224},
            "image_processor_type": "CLIPImageProcessor"
        });
        std::fs::write(
            dir.join("preprocessor_config.json"),
            serde_json::to_vec_pretty(&pre)?,
        )?;
    } else if let Ok(tok) = std::env::var("PMQ_TOKENIZER") {
        std::fs::copy(&tok, dir.join("tokenizer.json"))
            .with_context(|| format!("copying the tokenizer {tok}"))?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        bail!(
            "usage: scale_models vit-b32|vit-l14|tinyllama|tinyllama-2l|llama-1024x8|llama2-7b|llama2-7b-2l K OUT [SEED]"
        );
    }
    let (config, tensors) = match args[0].as_str() {
        "vit-b32" => vit(768, 12, 12, 3072, 32),
        "vit-l14" => vit(1024, 24, 16, 4096, 14),
        "tinyllama" => llama(2048, 22, 5632, 32, 4),
        "llama-1024x8" => llama(1024, 8, 2816, 16, 4),
        "tinyllama-2l" => llama(2048, 2, 5632, 32, 4),
        "llama2-7b" => llama(4096, 32, 11008, 32, 32),
        "llama2-7b-2l" => llama(4096, 2, 11008, 32, 32),
        other => bail!(
            "unknown shape {other:?}: vit-b32, vit-l14, tinyllama, tinyllama-2l, llama-1024x8, llama2-7b or llama2-7b-2l"
        ),
    };
    let k: u64 = args[1].parse().context("K")?;
    let out = PathBuf::from(&args[2]);
    let seed: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let params: usize = tensors
        .iter()
        .map(|t| t.shape.iter().product::<usize>())
        .sum();
    eprintln!(
        "{}: {} tensors, {:.1} M parameters",
        args[0],
        tensors.len(),
        params as f64 / 1e6
    );
    for e in 0..=k {
        let dir = if e == 0 {
            out.join("base")
        } else {
            out.join(format!("expert-{e}"))
        };
        if dir.join("model.safetensors").is_file() {
            eprintln!("{} exists, kept", dir.display());
            continue;
        }
        write_checkpoint(&dir, &config, &tensors, seed, e)?;
        eprintln!("wrote {}", dir.display());
    }
    Ok(())
}
