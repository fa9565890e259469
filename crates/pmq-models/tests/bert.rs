//! BERT: parity with candle-transformers' BertModel on a random checkpoint, capture, weight
//! swapping, f16/bf16 loading, error reporting, and (gated) the real all-MiniLM-L6-v2.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{rand_ids, rel_err, Ckpt};
use pmq_models::{load_model, Batch, BertModel, BlockModel, Error, LoadedModel, Pooling};
use serde_json::json;
use std::path::Path;

const H: usize = 64;
const I: usize = 128;
const L: usize = 2;
const V: usize = 100;

fn config() -> serde_json::Value {
    json!({
        "architectures": ["BertModel"], "model_type": "bert",
        "vocab_size": V, "hidden_size": H, "num_hidden_layers": L, "num_attention_heads": 4,
        "intermediate_size": I, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 32,
        "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12,
        "pad_token_id": 0, "position_embedding_type": "absolute", "use_cache": true,
        "classifier_dropout": null, "transformers_version": "4.44.0"
    })
}

fn checkpoint(seed: u64) -> Ckpt {
    let mut c = Ckpt::new(seed);
    c.rand("embeddings.word_embeddings.weight", &[V, H], 1.0);
    c.rand("embeddings.position_embeddings.weight", &[32, H], 1.0);
    c.rand("embeddings.token_type_embeddings.weight", &[2, H], 1.0);
    c.layer_norm("embeddings.LayerNorm", H, true);
    for i in 0..L {
        let p = format!("encoder.layer.{i}");
        for n in ["query", "key", "value"] {
            c.linear(&format!("{p}.attention.self.{n}"), H, H, true);
        }
        c.linear(&format!("{p}.attention.output.dense"), H, H, true);
        c.layer_norm(&format!("{p}.attention.output.LayerNorm"), H, true);
        c.linear(&format!("{p}.intermediate.dense"), H, I, true);
        c.linear(&format!("{p}.output.dense"), I, H, true);
        c.layer_norm(&format!("{p}.output.LayerNorm"), H, true);
    }
    c.linear("pooler.dense", H, H, true);
    c
}

fn batch() -> Batch {
    let seqs = vec![rand_ids(1, 9, 1, V as u32), rand_ids(2, 5, 1, V as u32)];
    let mut b = Batch::from_token_ids(&seqs, 0).unwrap();
    let tt: Vec<u32> = rand_ids(3, 18, 0, 2);
    b.token_type_ids = Some(Tensor::from_vec(tt, (2, 9), &Device::Cpu).unwrap());
    b
}

fn candle_bert(dir: &Path) -> candle_transformers::models::bert::BertModel {
    let cfg: candle_transformers::models::bert::Config = serde_json::from_value(config()).unwrap();
    candle_transformers::models::bert::BertModel::load(common::vb(dir), &cfg).unwrap()
}

fn candle_out(dir: &Path, b: &Batch) -> Tensor {
    candle_bert(dir)
        .forward(
            b.input_ids.as_ref().unwrap(),
            b.token_type_ids.as_ref().unwrap(),
            b.attention_mask.as_ref(),
        )
        .unwrap()
}

/// Mean pooling written out element by element (independent of the crate's pooling).
fn mean_pool_reference(h: &Tensor, mask: &Tensor) -> Vec<Vec<f32>> {
    let h: Vec<Vec<Vec<f32>>> = h.to_vec3().unwrap();
    let m: Vec<Vec<u32>> = mask.to_vec2().unwrap();
    h.iter()
        .zip(&m)
        .map(|(rows, mr)| {
            let n = mr.iter().filter(|&&x| x == 1).count() as f32;
            (0..rows[0].len())
                .map(|d| {
                    rows.iter()
                        .zip(mr)
                        .filter(|(_, &k)| k == 1)
                        .map(|(r, _)| r[d])
                        .sum::<f32>()
                        / n
                })
                .collect()
        })
        .collect()
}

#[test]
fn bert_parity_with_candle() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(7).save(dir.path(), &config(), DType::F32);
    let model = BertModel::load(dir.path()).unwrap();
    let b = batch();
    let ours = model.forward(&b).unwrap();
    let theirs = candle_out(dir.path(), &b);
    let e = rel_err(&ours, &theirs);
    println!("BERT last_hidden_state max rel err = {e:.3e}");
    assert!(e <= 1e-4, "BERT parity error {e}");

    // sentence embeddings: mean (mask-aware) and CLS
    let mean = model.sentence_embedding(&b, Pooling::Mean).unwrap();
    let reference = mean_pool_reference(&theirs, b.attention_mask.as_ref().unwrap());
    let reference = Tensor::new(reference, &Device::Cpu).unwrap();
    let e_mean = rel_err(&mean, &reference);
    println!("BERT mean-pooled embedding max rel err = {e_mean:.3e}");
    assert!(e_mean <= 1e-4);
    let cls = model.sentence_embedding(&b, Pooling::Cls).unwrap();
    let cls_ref = theirs.narrow(1, 0, 1).unwrap().squeeze(1).unwrap();
    assert!(rel_err(&cls, &cls_ref) <= 1e-4);

    // the padded sequence's embedding equals the embedding of the sequence alone
    let alone = Batch {
        input_ids: Some(
            b.input_ids
                .as_ref()
                .unwrap()
                .narrow(0, 1, 1)
                .unwrap()
                .narrow(1, 0, 5)
                .unwrap(),
        ),
        token_type_ids: Some(
            b.token_type_ids
                .as_ref()
                .unwrap()
                .narrow(0, 1, 1)
                .unwrap()
                .narrow(1, 0, 5)
                .unwrap(),
        ),
        ..Default::default()
    };
    let e_alone = rel_err(
        &mean.narrow(0, 1, 1).unwrap(),
        &model.sentence_embedding(&alone, Pooling::Mean).unwrap(),
    );
    assert!(e_alone <= 1e-4, "padding changed the embedding: {e_alone}");
}

#[test]
fn bert_capture_reports_every_linear_with_unpadded_inputs() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(8).save(dir.path(), &config(), DType::F32);
    let model = BertModel::load(dir.path()).unwrap();
    let b = batch();
    let mut state = model.embed(&b).unwrap();
    let valid_tokens = 9 + 5;
    for blk in 0..model.num_blocks() {
        let groups = model.block_groups(blk).unwrap();
        let names: Vec<Vec<String>> = groups
            .iter()
            .map(|g| g.iter().map(|s| s.name.clone()).collect())
            .collect();
        let p = format!("encoder.layer.{blk}");
        assert_eq!(
            names,
            vec![
                vec![
                    format!("{p}.attention.self.query"),
                    format!("{p}.attention.self.key"),
                    format!("{p}.attention.self.value")
                ],
                vec![format!("{p}.attention.output.dense")],
                vec![format!("{p}.intermediate.dense")],
                vec![format!("{p}.output.dense")],
            ]
        );
        let mut seen: Vec<(String, Vec<usize>)> = vec![];
        let mut query_input = None;
        let mut cb = |name: &str, x: &Tensor| -> pmq_models::Result<()> {
            if name.ends_with("query") {
                query_input = Some(x.clone());
            }
            seen.push((name.to_string(), x.dims().to_vec()));
            Ok(())
        };
        let next = model.block_forward(blk, &state, Some(&mut cb)).unwrap();
        let expected: Vec<(String, Vec<usize>)> = groups
            .iter()
            .flatten()
            .map(|s| (s.name.clone(), vec![valid_tokens, s.in_features]))
            .collect();
        assert_eq!(seen, expected);
        // the query input is the block input at the unpadded positions, in order
        let h: Vec<Vec<Vec<f32>>> = state.hidden().to_vec3().unwrap();
        let m: Vec<Vec<u32>> = b.attention_mask.as_ref().unwrap().to_vec2().unwrap();
        let rows: Vec<Vec<f32>> = h
            .iter()
            .zip(&m)
            .flat_map(|(hs, ms)| {
                hs.iter()
                    .zip(ms)
                    .filter(|(_, &k)| k == 1)
                    .map(|(r, _)| r.clone())
            })
            .collect();
        let rows = Tensor::new(rows, &Device::Cpu).unwrap();
        assert_eq!(rel_err(query_input.as_ref().unwrap(), &rows), 0.0);
        state = next;
    }
    // a failing callback aborts with an error naming the linear
    let s0 = model.embed(&b).unwrap();
    let mut bad =
        |_: &str, _: &Tensor| -> pmq_models::Result<()> { Err(Error::Input("boom".into())) };
    let err = model
        .block_forward(0, &s0, Some(&mut bad))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("encoder.layer.0.attention.self.query") && err.contains("boom"),
        "{err}"
    );
    assert!(model.block_forward(5, &s0, None).is_err());
}

#[test]
fn bert_set_linear_weight_matches_zeroed_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(9);
    ck.save(&dir.path().join("a"), &config(), DType::F32);
    let name = "encoder.layer.1.intermediate.dense";
    let mut zeroed = Ckpt::with(ck.tensors.clone());
    let w = zeroed.tensors[&format!("{name}.weight")]
        .zeros_like()
        .unwrap();
    zeroed.tensors.insert(format!("{name}.weight"), w.clone());
    zeroed.save(&dir.path().join("b"), &config(), DType::F32);

    let mut model = BertModel::load(&dir.path().join("a")).unwrap();
    let b = batch();
    let before = model.forward(&b).unwrap();
    let original = model.linear_weight(name).unwrap();
    assert_eq!(original.dims(), &[I, H]);
    model.set_linear_weight(name, w).unwrap();
    let after = model.forward(&b).unwrap();
    let theirs = candle_out(&dir.path().join("b"), &b);
    assert!(rel_err(&after, &theirs) <= 1e-4);
    assert!(rel_err(&before, &theirs) > 1e-2, "zeroing had no effect");
    // restoring gives back the original output
    model.set_linear_weight(name, original).unwrap();
    assert_eq!(rel_err(&model.forward(&b).unwrap(), &before), 0.0);
    // errors: wrong shape, unknown name
    let err = model
        .set_linear_weight(
            name,
            Tensor::zeros((H, I), DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains(name) && err.contains("[128, 64]"), "{err}");
    let err = model
        .linear_weight("encoder.layer.9.output.dense")
        .unwrap_err();
    assert!(matches!(err, Error::UnknownLinear(_)), "{err}");
}

#[test]
fn bert_loads_f16_bf16_and_prefixed_checkpoints() {
    for dt in [DType::F16, DType::BF16] {
        let dir = tempfile::tempdir().unwrap();
        checkpoint(10).save(dir.path(), &config(), dt);
        let model = BertModel::load(dir.path()).unwrap();
        let b = batch();
        let e = rel_err(&model.forward(&b).unwrap(), &candle_out(dir.path(), &b));
        println!("BERT {dt:?} checkpoint max rel err = {e:.3e}");
        assert!(e <= 1e-4);
    }
    // BertForSequenceClassification-style checkpoint: `bert.` prefix and a classifier
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(11);
    let mut pre = Ckpt::new(0);
    for (k, v) in &ck.tensors {
        pre.tensors.insert(format!("bert.{k}"), v.clone());
    }
    pre.linear("classifier", H, 3, true);
    let mut cfg = config();
    cfg["architectures"] = json!(["BertForSequenceClassification"]);
    pre.save(dir.path(), &cfg, DType::F32);
    let LoadedModel::Bert(model) = load_model(dir.path()).unwrap() else {
        panic!("expected BERT")
    };
    assert!(model
        .linears()
        .iter()
        .all(|s| s.name.starts_with("bert.encoder.layer.")));
    assert_eq!(model.linears().len(), 12);
    let plain = tempfile::tempdir().unwrap();
    ck.save(plain.path(), &config(), DType::F32);
    let b = batch();
    assert!(rel_err(&model.forward(&b).unwrap(), &candle_out(plain.path(), &b)) <= 1e-4);
}

#[test]
fn bert_bad_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(12);
    // unknown architecture
    let mut cfg = config();
    cfg["architectures"] = json!(["GPT2LMHeadModel"]);
    ck.save(dir.path(), &cfg, DType::F32);
    let err = load_model(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("GPT2LMHeadModel") && err.contains("config.json"),
        "{err}"
    );
    // unsupported option
    let mut cfg = config();
    cfg["position_embedding_type"] = json!("relative_key");
    ck.save(dir.path(), &cfg, DType::F32);
    let err = load_model(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("position_embedding_type") && err.contains("relative_key"),
        "{err}"
    );
    // bad field type
    let mut cfg = config();
    cfg["hidden_size"] = json!("64");
    ck.save(dir.path(), &cfg, DType::F32);
    let err = load_model(dir.path()).unwrap_err().to_string();
    assert!(err.contains("hidden_size"), "{err}");
    // missing tensor
    let mut missing = Ckpt::with(ck.tensors.clone());
    missing
        .tensors
        .remove("encoder.layer.1.attention.self.key.bias");
    missing.save(dir.path(), &config(), DType::F32);
    let err = load_model(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("encoder.layer.1.attention.self.key.bias") && err.contains("not found"),
        "{err}"
    );
    // wrong shape
    let mut wrong = Ckpt::with(ck.tensors.clone());
    wrong.rand("encoder.layer.0.output.dense.weight", &[H, H], 0.1);
    wrong.save(dir.path(), &config(), DType::F32);
    let err = load_model(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("encoder.layer.0.output.dense.weight")
            && err.contains("[64, 128]")
            && err.contains("[64, 64]"),
        "{err}"
    );
    // integer tensor where floats are expected
    let mut ints = Ckpt::with(ck.tensors.clone());
    ints.tensors.insert(
        "embeddings.LayerNorm.bias".into(),
        Tensor::zeros(H, DType::I64, &Device::Cpu).unwrap(),
    );
    std::fs::create_dir_all(dir.path()).unwrap();
    let mut m = ints.tensors.clone();
    for (k, v) in m.iter_mut() {
        if k != "embeddings.LayerNorm.bias" {
            *v = v.to_dtype(DType::F32).unwrap();
        }
    }
    candle_core::safetensors::save(&m, dir.path().join("model.safetensors")).unwrap();
    let err = load_model(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("embeddings.LayerNorm.bias") && err.contains("I64"),
        "{err}"
    );
    // no checkpoint at all
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("config.json"), config().to_string()).unwrap();
    let err = load_model(empty.path()).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    // bad model inputs
    ck.save(dir.path(), &config(), DType::F32);
    let model = BertModel::load(dir.path()).unwrap();
    let err = model
        .forward(&Batch::from_token_ids(&[vec![1, 2, 500]], 0).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("input_ids") && err.contains("500"), "{err}");
    let err = model
        .forward(&Batch::from_token_ids(&[vec![1; 40]], 0).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_position_embeddings"), "{err}");
    assert!(model.forward(&Batch::default()).is_err());
}
