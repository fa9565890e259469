//! T5 / FLAN-T5: parity with candle-transformers' T5ForConditionalGeneration (gated-gelu,
//! untied lm_head), relative position buckets against hand-computed values, capture over the
//! encoder → decoder transition, weight swapping, greedy decoding, tied-head scaling, errors.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::{rand_ids, rel_err, Ckpt};
use pmq_models::t5::relative_position_bucket;
use pmq_models::{load_model, Batch, BlockModel, LoadedModel, T5Model};
use serde_json::json;
use std::path::Path;

const D: usize = 64;
const KV: usize = 16;
const HEADS: usize = 4;
const FF: usize = 128;
const L: usize = 2;
const V: usize = 50;

fn config(tied: bool) -> serde_json::Value {
    json!({
        "architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
        "vocab_size": V, "d_model": D, "d_kv": KV, "d_ff": FF, "num_layers": L,
        "num_decoder_layers": L, "num_heads": HEADS, "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128, "dropout_rate": 0.1,
        "layer_norm_epsilon": 1e-6, "initializer_factor": 1.0,
        "feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu_new", "is_gated_act": true,
        "tie_word_embeddings": tied, "is_encoder_decoder": true, "use_cache": true,
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
        "transformers_version": "4.30.0"
    })
}

fn checkpoint(seed: u64, tied: bool) -> Ckpt {
    let mut c = Ckpt::new(seed);
    c.rand("shared.weight", &[V, D], 1.0);
    let inner = HEADS * KV;
    for stack in ["encoder", "decoder"] {
        for i in 0..L {
            let p = format!("{stack}.block.{i}.layer");
            let attn = |c: &mut Ckpt, a: &str| {
                for n in ["q", "k", "v"] {
                    c.linear(&format!("{a}.{n}"), D, inner, false);
                }
                c.linear(&format!("{a}.o"), inner, D, false);
            };
            attn(&mut c, &format!("{p}.0.SelfAttention"));
            c.layer_norm(&format!("{p}.0.layer_norm"), D, false);
            if i == 0 {
                c.rand(
                    &format!("{p}.0.SelfAttention.relative_attention_bias.weight"),
                    &[32, HEADS],
                    1.0,
                );
            }
            let ff = if stack == "decoder" {
                attn(&mut c, &format!("{p}.1.EncDecAttention"));
                c.layer_norm(&format!("{p}.1.layer_norm"), D, false);
                2
            } else {
                1
            };
            c.linear(&format!("{p}.{ff}.DenseReluDense.wi_0"), D, FF, false);
            c.linear(&format!("{p}.{ff}.DenseReluDense.wi_1"), D, FF, false);
            c.linear(&format!("{p}.{ff}.DenseReluDense.wo"), FF, D, false);
            c.layer_norm(&format!("{p}.{ff}.layer_norm"), D, false);
        }
        c.layer_norm(&format!("{stack}.final_layer_norm"), D, false);
    }
    if !tied {
        c.linear("lm_head", D, V, false);
    }
    c
}

fn candle_model(dir: &Path) -> candle_transformers::models::t5::T5ForConditionalGeneration {
    let cfg: candle_transformers::models::t5::Config =
        serde_json::from_value(config(false)).unwrap();
    candle_transformers::models::t5::T5ForConditionalGeneration::load(common::vb(dir), &cfg)
        .unwrap()
}

/// candle's encoder output and its teacher-forced logits for every decoder prefix.
/// candle's decoder uses bidirectional position buckets, which coincide with transformers'
/// causal buckets for distances < num_buckets / 4 = 8, so decoder inputs stay ≤ 8 tokens.
fn candle_run(dir: &Path, enc: &[u32], dec: &[u32]) -> (Tensor, Tensor) {
    assert!(dec.len() <= 8);
    let mut m = candle_model(dir);
    let ids = Tensor::new(enc, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let enc_out = m.encode(&ids).unwrap();
    let rows: Vec<Tensor> = (1..=dec.len())
        .map(|t| {
            m.clear_kv_cache();
            let d = Tensor::new(&dec[..t], &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            m.decode(&d, &enc_out).unwrap().squeeze(0).unwrap()
        })
        .collect();
    (
        enc_out.squeeze(0).unwrap(),
        Tensor::stack(&rows, 0).unwrap(),
    )
}

#[test]
fn t5_parity_with_candle_gated_gelu_untied() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(41, false).save(dir.path(), &config(false), DType::F32);
    let LoadedModel::T5(model) = load_model(dir.path()).unwrap() else {
        panic!()
    };
    // 20 encoder tokens: distances up to 19 exercise the logarithmic buckets
    let enc = rand_ids(1, 20, 2, V as u32);
    let dec = [0u32, 7, 12, 3, 44, 9, 17, 5];
    let batch = Batch::from_token_ids(std::slice::from_ref(&enc), 0)
        .unwrap()
        .with_decoder_ids(&[dec.to_vec()], 0)
        .unwrap();
    let (c_enc, c_logits) = candle_run(dir.path(), &enc, &dec);
    let e_enc = rel_err(&model.encode(&batch).unwrap().i(0).unwrap(), &c_enc);
    let logits = model.forward(&batch).unwrap().i(0).unwrap();
    let e = rel_err(&logits, &c_logits);
    println!("T5 encoder output max rel err = {e_enc:.3e}; decoder logits max rel err = {e:.3e}");
    assert!(e_enc <= 1e-4 && e <= 1e-4);
}

#[test]
fn t5_relative_position_buckets_match_hand_computed_values() {
    // transformers' formula, 32 buckets, max distance 128, evaluated by hand.
    // causal: n = max(q - k, 0); n < 16 → n; else 16 + floor(ln(n/16) / ln(8) · 16), ≤ 31
    let causal = [
        (0, 0),
        (-1, 1),
        (-15, 15),
        (-16, 16),
        (-32, 21),
        (-64, 26),
        (-127, 31),
        (-500, 31),
        (5, 0),
    ];
    for (rel, want) in causal {
        assert_eq!(
            relative_position_bucket(rel, false, 32, 128),
            want,
            "causal {rel}"
        );
    }
    // bidirectional: 16 buckets per direction, exact below 8, +16 for keys after the query
    let bi = [
        (0, 0),
        (3, 19),
        (-3, 3),
        (8, 24),
        (-16, 10),
        (-32, 12),
        (200, 31),
        (-200, 15),
    ];
    for (rel, want) in bi {
        assert_eq!(
            relative_position_bucket(rel, true, 32, 128),
            want,
            "bidirectional {rel}"
        );
    }
}

#[test]
fn t5_capture_padding_swap_and_generate() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(42, false);
    ck.save(dir.path(), &config(false), DType::F32);
    let mut model = T5Model::load(dir.path()).unwrap();
    let a = rand_ids(2, 9, 2, V as u32);
    let b = rand_ids(3, 5, 2, V as u32);
    let da = vec![0u32, 4, 8, 15, 16, 23];
    let db = vec![0u32, 42, 7];
    let batch = Batch::from_token_ids(&[a.clone(), b.clone()], 0)
        .unwrap()
        .with_decoder_ids(&[da.clone(), db.clone()], 0)
        .unwrap();
    assert_eq!(model.num_blocks(), 2 * L);

    // groups: encoder 4, decoder 6 (self qkv, self o, cross qkv, cross o, wi_0+wi_1, wo)
    assert_eq!(model.block_groups(0).unwrap().len(), 4);
    let g = model.block_groups(L).unwrap();
    assert_eq!(g.len(), 6);
    assert_eq!(
        g[2].iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        vec![
            "decoder.block.0.layer.1.EncDecAttention.q",
            "decoder.block.0.layer.1.EncDecAttention.k",
            "decoder.block.0.layer.1.EncDecAttention.v",
        ]
    );
    assert_eq!(g[4].len(), 2);

    let mut s = model.embed(&batch).unwrap();
    for blk in 0..model.num_blocks() {
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
            .map(|l| {
                let rows = if blk < L
                    || l.name.contains("EncDecAttention.k")
                    || l.name.contains("EncDecAttention.v")
                {
                    9 + 5 // encoder tokens
                } else {
                    6 + 3 // decoder tokens
                };
                (l.name, vec![rows, l.in_features])
            })
            .collect();
        assert_eq!(seen, want, "block {blk}");
    }
    let logits = model.head(&s).unwrap();
    // padding invariance: the second pair alone gives the same logits
    let alone = Batch::from_token_ids(std::slice::from_ref(&b), 0)
        .unwrap()
        .with_decoder_ids(std::slice::from_ref(&db), 0)
        .unwrap();
    let e = rel_err(
        &logits.i((1, 0..3)).unwrap(),
        &model.forward(&alone).unwrap().i(0).unwrap(),
    );
    assert!(e <= 1e-5, "{e}");

    // greedy decoding == argmax loop over candle's decoder (≤ 8 decoder tokens)
    let single = Batch::from_token_ids(std::slice::from_ref(&a), 0).unwrap();
    let ours = model.generate(&single, 6).unwrap();
    let mut cm = candle_model(dir.path());
    let enc_out = cm
        .encode(
            &Tensor::new(a.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap(),
        )
        .unwrap();
    let mut seq = vec![0u32];
    let mut reference = vec![];
    for _ in 0..6 {
        cm.clear_kv_cache();
        let d = Tensor::new(seq.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let next = cm
            .decode(&d, &enc_out)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .argmax(0)
            .unwrap()
            .to_scalar::<u32>()
            .unwrap();
        if next == 1 {
            break;
        }
        seq.push(next);
        reference.push(next);
    }
    println!("T5 greedy decode: {:?}", ours[0]);
    assert_eq!(ours[0], reference);
    // a padded batch decodes each sequence as it decodes alone
    let both = Batch::from_token_ids(&[a.clone(), b.clone()], 0).unwrap();
    let batched = model.generate(&both, 6).unwrap();
    let b_alone = model
        .generate(
            &Batch::from_token_ids(std::slice::from_ref(&b), 0).unwrap(),
            6,
        )
        .unwrap();
    assert_eq!(batched, vec![ours[0].clone(), b_alone[0].clone()]);

    // swapping the cross-attention key weight == candle on a checkpoint with it zeroed
    let name = "decoder.block.1.layer.1.EncDecAttention.k";
    let zero = model.linear_weight(name).unwrap().zeros_like().unwrap();
    model.set_linear_weight(name, zero.clone()).unwrap();
    let mut z = Ckpt::with(ck.tensors.clone());
    z.tensors.insert(format!("{name}.weight"), zero);
    let zdir = tempfile::tempdir().unwrap();
    z.save(zdir.path(), &config(false), DType::F32);
    let one = Batch::from_token_ids(std::slice::from_ref(&a), 0)
        .unwrap()
        .with_decoder_ids(std::slice::from_ref(&da), 0)
        .unwrap();
    let (_, c_logits) = candle_run(zdir.path(), &a, &da);
    assert!(rel_err(&model.forward(&one).unwrap().i(0).unwrap(), &c_logits) <= 1e-4);
}

#[test]
fn t5_tied_head_bf16_and_errors() {
    // tied head: logits = (decoder output · d_model^-0.5) · sharedᵀ (transformers' rescaling),
    // i.e. equal to an untied model whose lm_head is shared / √d_model
    let ck = checkpoint(43, true);
    let tdir = tempfile::tempdir().unwrap();
    ck.save(tdir.path(), &config(true), DType::F32);
    let mut untied = Ckpt::with(ck.tensors.clone());
    let head = (ck.tensors["shared.weight"].clone() / (D as f64).sqrt()).unwrap();
    untied.tensors.insert("lm_head.weight".into(), head);
    let udir = tempfile::tempdir().unwrap();
    untied.save(udir.path(), &config(false), DType::F32);
    let batch = Batch::from_token_ids(&[rand_ids(4, 6, 2, V as u32)], 0)
        .unwrap()
        .with_decoder_ids(&[vec![0, 3, 9]], 0)
        .unwrap();
    let tied = T5Model::load(tdir.path()).unwrap().forward(&batch).unwrap();
    let reference = T5Model::load(udir.path()).unwrap().forward(&batch).unwrap();
    assert!(rel_err(&tied, &reference) <= 1e-5);

    // bf16 checkpoint vs candle reading the same bf16 file
    let ck = checkpoint(44, false);
    let bdir = tempfile::tempdir().unwrap();
    ck.save(bdir.path(), &config(false), DType::BF16);
    let enc = rand_ids(5, 7, 2, V as u32);
    let dec = vec![0u32, 5, 6, 7];
    let b = Batch::from_token_ids(std::slice::from_ref(&enc), 0)
        .unwrap()
        .with_decoder_ids(std::slice::from_ref(&dec), 0)
        .unwrap();
    let (_, c_logits) = candle_run(bdir.path(), &enc, &dec);
    let e = rel_err(
        &T5Model::load(bdir.path())
            .unwrap()
            .forward(&b)
            .unwrap()
            .i(0)
            .unwrap(),
        &c_logits,
    );
    println!("T5 BF16 checkpoint max rel err = {e:.3e}");
    assert!(e <= 1e-4);

    // errors
    let model = T5Model::load(bdir.path()).unwrap();
    let no_dec = Batch::from_token_ids(std::slice::from_ref(&enc), 0).unwrap();
    let err = model.forward(&no_dec).unwrap_err().to_string();
    assert!(err.contains("decoder_input_ids"), "{err}");
    let s = model.embed(&no_dec).unwrap();
    let err = model.block_forward(L, &s, None).unwrap_err().to_string();
    assert!(err.contains("encoder-phase"), "{err}");
    for (field, value) in [
        ("feed_forward_proj", json!("gated-gelu-x")),
        ("feed_forward_proj", json!("mish")),
        ("is_encoder_decoder", json!(false)),
    ] {
        let mut cfg = config(false);
        cfg[field] = value;
        ck.save(bdir.path(), &cfg, DType::F32);
        let err = load_model(bdir.path()).unwrap_err().to_string();
        assert!(err.contains(field), "{err}");
    }
    let mut missing = Ckpt::with(ck.tensors.clone());
    missing
        .tensors
        .remove("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight");
    missing.save(bdir.path(), &config(false), DType::F32);
    let err = load_model(bdir.path()).unwrap_err().to_string();
    assert!(
        err.contains("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
        "{err}"
    );
}
