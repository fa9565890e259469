//! Llama: parity with candle-transformers' Llama (GQA 4/2 heads, llama3 rope scaling, tied and
//! untied heads), capture, weight swapping, f16/bf16, sharded checkpoints, perplexity, errors.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::{rand_ids, rel_err, Ckpt};
use pmq_models::{load_model, Batch, BlockModel, Error, LlamaModel, LoadedModel, RopeScaling};
use serde_json::json;
use std::path::Path;

const H: usize = 64;
const I: usize = 128;
const L: usize = 2;
const V: usize = 97;
const HEAD: usize = 16;
const KV: usize = 2;

fn config(tied: bool) -> serde_json::Value {
    json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": V, "hidden_size": H, "intermediate_size": I, "num_hidden_layers": L,
        "num_attention_heads": 4, "num_key_value_heads": KV, "hidden_act": "silu",
        "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 16, "rope_type": "llama3"},
        "attention_bias": false, "mlp_bias": false, "tie_word_embeddings": tied,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16",
        "transformers_version": "4.45.0"
    })
}

fn checkpoint(seed: u64, tied: bool) -> Ckpt {
    let mut c = Ckpt::new(seed);
    c.rand("model.embed_tokens.weight", &[V, H], 1.0);
    for i in 0..L {
        let p = format!("model.layers.{i}");
        c.layer_norm(&format!("{p}.input_layernorm"), H, false);
        c.layer_norm(&format!("{p}.post_attention_layernorm"), H, false);
        c.linear(&format!("{p}.self_attn.q_proj"), H, H, false);
        c.linear(&format!("{p}.self_attn.k_proj"), H, KV * HEAD, false);
        c.linear(&format!("{p}.self_attn.v_proj"), H, KV * HEAD, false);
        c.linear(&format!("{p}.self_attn.o_proj"), H, H, false);
        c.linear(&format!("{p}.mlp.gate_proj"), H, I, false);
        c.linear(&format!("{p}.mlp.up_proj"), H, I, false);
        c.linear(&format!("{p}.mlp.down_proj"), I, H, false);
    }
    c.layer_norm("model.norm", H, false);
    if !tied {
        c.linear("lm_head", H, V, false);
    }
    c
}

/// candle's Llama returns the last position's logits; run it on every prefix (no KV cache).
fn candle_logits(dir: &Path, tied: bool, ids: &[u32]) -> Tensor {
    use candle_transformers::models::llama as cl;
    let cfg: cl::LlamaConfig = serde_json::from_value(config(tied)).unwrap();
    let cfg = cfg.into_config(false);
    let model = cl::Llama::load(common::vb(dir), &cfg).unwrap();
    let rows: Vec<Tensor> = (1..=ids.len())
        .map(|t| {
            let mut cache = cl::Cache::new(false, DType::F32, &cfg, &Device::Cpu).unwrap();
            let x = Tensor::new(&ids[..t], &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            model
                .forward(&x, 0, &mut cache)
                .unwrap()
                .squeeze(0)
                .unwrap()
        })
        .collect();
    Tensor::stack(&rows, 0).unwrap()
}

#[test]
fn llama_parity_with_candle_gqa_llama3_rope() {
    for tied in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        checkpoint(21, tied).save(dir.path(), &config(tied), DType::F32);
        let model = LlamaModel::load(dir.path()).unwrap();
        assert!(matches!(
            model.config().rope.scaling,
            RopeScaling::Llama3 { .. }
        ));
        let ids = rand_ids(5, 12, 0, V as u32);
        let ours = model
            .forward(&Batch::from_token_ids(std::slice::from_ref(&ids), 0).unwrap())
            .unwrap()
            .i(0)
            .unwrap();
        let theirs = candle_logits(dir.path(), tied, &ids);
        let e = rel_err(&ours, &theirs);
        println!("Llama (tied={tied}) logits max rel err = {e:.3e}");
        assert!(e <= 1e-4, "Llama parity error {e}");
    }
}

#[test]
fn llama3_inv_freq_matches_hand_computed_regimes() {
    // head_dim 16, theta 500000, llama3 scaling with original context 16: wavelengths below
    // 16/4 = 4 stay, above 16/1 = 16 are divided by 8, in between are smoothed.
    let dir = tempfile::tempdir().unwrap();
    checkpoint(22, false).save(dir.path(), &config(false), DType::F32);
    let model = LlamaModel::load(dir.path()).unwrap();
    let f = model.config().rope.inv_freq(16);
    assert_eq!(f.len(), 8);
    let base = |i: usize| 1.0 / 500000f64.powf((2 * i) as f64 / 16.0);
    for (i, &got) in f.iter().enumerate() {
        let b = base(i);
        let wl = 2.0 * std::f64::consts::PI / b;
        let want = if wl < 4.0 {
            b
        } else if wl > 16.0 {
            b / 8.0
        } else {
            let s = (16.0 / wl - 1.0) / 3.0;
            (1.0 - s) * b / 8.0 + s * b
        };
        assert!(
            ((got as f64) - want).abs() <= 1e-6 * want.abs(),
            "freq {i}: {got} vs {want}"
        );
    }
    // i=0: wavelength 2π lies in [4, 16] → smoothed, s = (16/2π − 1)/3;
    // i=1: wavelength 2π·500000^(1/8) ≈ 33 > 16 → divided by 8
    let s0 = (16.0 / (2.0 * std::f64::consts::PI) - 1.0) / 3.0;
    assert!(((f[0] as f64) - ((1.0 - s0) / 8.0 + s0)).abs() < 1e-6);
    assert!(((f[1] as f64) - base(1) / 8.0).abs() < 1e-9);
}

#[test]
fn llama_padding_capture_swap_and_perplexity() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(23, false);
    ck.save(dir.path(), &config(false), DType::F32);
    let mut model = LlamaModel::load(dir.path()).unwrap();
    let a = rand_ids(6, 10, 0, V as u32);
    let b = rand_ids(7, 6, 0, V as u32);
    let batch = Batch::from_token_ids(&[a.clone(), b.clone()], 0).unwrap();
    let logits = model.forward(&batch).unwrap();
    // right padding does not change the real positions
    let alone = model
        .forward(&Batch::from_token_ids(std::slice::from_ref(&b), 0).unwrap())
        .unwrap();
    assert!(rel_err(&logits.i((1, 0..6)).unwrap(), &alone.i(0).unwrap()) <= 1e-5);

    // capture: 4 groups [q,k,v] [o] [gate,up] [down], 16 real tokens
    let groups = model.block_groups(1).unwrap();
    let names: Vec<Vec<&str>> = groups
        .iter()
        .map(|g| {
            g.iter()
                .map(|s| s.name.rsplit('.').next().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(
        names,
        vec![
            vec!["q_proj", "k_proj", "v_proj"],
            vec!["o_proj"],
            vec!["gate_proj", "up_proj"],
            vec!["down_proj"]
        ]
    );
    let mut s = model.embed(&batch).unwrap();
    for blk in 0..L {
        let mut seen = vec![];
        let mut cb = |n: &str, x: &Tensor| -> pmq_models::Result<()> {
            seen.push((n.to_string(), x.dims().to_vec()));
            Ok(())
        };
        s = model.block_forward(blk, &s, Some(&mut cb)).unwrap();
        let want: Vec<(String, Vec<usize>)> = model
            .block_groups(blk)
            .unwrap()
            .into_iter()
            .flatten()
            .map(|l| (l.name, vec![16, l.in_features]))
            .collect();
        assert_eq!(seen, want);
    }
    // the real positions bit for bit (a capture pass leaves padding tokens out of the linears)
    let head = model.head(&s).unwrap();
    for (row, len) in [(0, 10), (1, 6)] {
        assert!(
            rel_err(
                &head.i((row, 0..len)).unwrap(),
                &logits.i((row, 0..len)).unwrap()
            ) == 0.0
        );
    }

    // perplexity against a log-softmax written out in f64
    let rows: Vec<Vec<Vec<f32>>> = logits.to_vec3().unwrap();
    let mut nll = 0f64;
    let mut n = 0usize;
    for (seq, r) in [&a, &b].iter().zip(&rows) {
        for t in 0..seq.len() - 1 {
            let z = &r[t];
            let m = z.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let lse = m + z.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
            nll += lse - z[seq[t + 1] as usize] as f64;
            n += 1;
        }
    }
    let ppl = model.perplexity(&[a.clone(), b.clone()]).unwrap();
    let want = (nll / n as f64).exp();
    println!("Llama perplexity {ppl} (reference {want})");
    assert!((ppl - want).abs() <= 1e-4 * want);

    // swapping a weight: zero down_proj of block 0 == candle on a checkpoint with it zeroed
    let name = "model.layers.0.mlp.down_proj";
    let zero = model.linear_weight(name).unwrap().zeros_like().unwrap();
    model.set_linear_weight(name, zero.clone()).unwrap();
    let mut z = Ckpt::with(ck.tensors.clone());
    z.tensors.insert(format!("{name}.weight"), zero);
    let zdir = tempfile::tempdir().unwrap();
    z.save(zdir.path(), &config(false), DType::F32);
    let ours = model
        .forward(&Batch::from_token_ids(std::slice::from_ref(&a), 0).unwrap())
        .unwrap()
        .i(0)
        .unwrap();
    let e = rel_err(&ours, &candle_logits(zdir.path(), false, &a));
    assert!(e <= 1e-4, "{e}");
}

#[test]
fn llama_f16_bf16_and_sharded_checkpoints() {
    let ids = rand_ids(8, 7, 0, V as u32);
    for dt in [DType::F16, DType::BF16] {
        let dir = tempfile::tempdir().unwrap();
        checkpoint(24, false).save(dir.path(), &config(false), dt);
        let model = LlamaModel::load(dir.path()).unwrap();
        let ours = model
            .forward(&Batch::from_token_ids(std::slice::from_ref(&ids), 0).unwrap())
            .unwrap()
            .i(0)
            .unwrap();
        let e = rel_err(&ours, &candle_logits(dir.path(), false, &ids));
        println!("Llama {dt:?} checkpoint max rel err = {e:.3e}");
        assert!(e <= 1e-4);
    }
    // sharded: split the tensors over two files with an index
    let ck = checkpoint(25, false);
    let dir = tempfile::tempdir().unwrap();
    ck.save(dir.path(), &config(false), DType::F32);
    let reference = LlamaModel::load(dir.path())
        .unwrap()
        .forward(&Batch::from_token_ids(std::slice::from_ref(&ids), 0).unwrap())
        .unwrap();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let mut names: Vec<&String> = ck.tensors.keys().collect();
    names.sort();
    let mut map = serde_json::Map::new();
    for (k, chunk) in names.chunks(names.len() / 2 + 1).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", k + 1);
        let part: std::collections::HashMap<String, Tensor> = chunk
            .iter()
            .map(|n| ((*n).clone(), ck.tensors[*n].to_dtype(DType::BF16).unwrap()))
            .collect();
        candle_core::safetensors::save(&part, dir.path().join(&file)).unwrap();
        for n in chunk {
            map.insert((*n).clone(), json!(file));
        }
    }
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        json!({"metadata": {"total_size": 0}, "weight_map": map}).to_string(),
    )
    .unwrap();
    let LoadedModel::Llama(sharded) = load_model(dir.path()).unwrap() else {
        panic!()
    };
    let out = sharded
        .forward(&Batch::from_token_ids(std::slice::from_ref(&ids), 0).unwrap())
        .unwrap();
    // bf16 rounding of the weights: close to, but not equal to, the f32 model
    let e = rel_err(&out, &reference);
    assert!(e > 0.0 && e < 0.05, "{e}");
}

#[test]
fn llama_config_errors_name_the_field() {
    let ck = checkpoint(26, false);
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            json!({"rope_type": "mrope", "factor": 4.0}),
            "rope_scaling.rope_type",
        ),
        (
            json!({"rope_type": "yarn", "factor": 4.0, "beta_fastest": 3.0}),
            "rope_scaling.beta_fastest",
        ),
        (
            json!({"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}),
            "rope_scaling.short_factor",
        ),
        (
            json!({"rope_type": "llama3", "factor": 8.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
            "rope_scaling.low_freq_factor",
        ),
    ];
    for (rs, field) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(false);
        cfg["rope_scaling"] = rs;
        ck.save(dir.path(), &cfg, DType::F32);
        let err = load_model(dir.path()).unwrap_err().to_string();
        assert!(err.contains(field), "{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(false);
    cfg["num_key_value_heads"] = json!(3);
    ck.save(dir.path(), &cfg, DType::F32);
    let err = load_model(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("num_attention_heads") && err.contains("num_key_value_heads"),
        "{err}"
    );
    // untied model without lm_head
    let mut no_head = Ckpt::with(ck.tensors.clone());
    no_head.tensors.remove("lm_head.weight");
    no_head.save(dir.path(), &config(false), DType::F32);
    let err = load_model(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::MissingTensor { name, .. } if name == "lm_head.weight"),
        "{err}"
    );
    // transformers 5 keys: rope_parameters wins over anything else, unknown keys are named
    for (rp, needle) in [
        (
            json!({"rope_type": "linear", "rope_theta": 10000.0}),
            "rope_parameters.factor",
        ),
        (
            json!({"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0, "extra": 1}),
            "rope_parameters.extra",
        ),
        (
            json!({"full_attention": {"rope_type": "default"}}),
            "per-layer-type",
        ),
    ] {
        let mut cfg = config(false);
        cfg["rope_parameters"] = rp;
        ck.save(dir.path(), &cfg, DType::F32);
        let err = load_model(dir.path()).unwrap_err().to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
    // sizes: no config value can make the loader allocate for layers that are not there
    for (n, needle) in [
        (
            json!(1_000_000_000u64),
            "has no tensor `model.layers.999999999",
        ),
        (json!(18446744073709551615u64), "implausibly large"),
        (json!(1e9), "expected a non-negative integer"),
    ] {
        let mut cfg = config(false);
        cfg["num_hidden_layers"] = n;
        ck.save(dir.path(), &cfg, DType::F32);
        let err = load_model(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("num_hidden_layers") && err.contains(needle),
            "{err}"
        );
    }
    // unsupported activation
    let mut cfg = config(false);
    cfg["hidden_act"] = json!("relu6");
    ck.save(dir.path(), &cfg, DType::F32);
    let err = load_model(dir.path()).unwrap_err().to_string();
    assert!(err.contains("hidden_act") && err.contains("relu6"), "{err}");
}
