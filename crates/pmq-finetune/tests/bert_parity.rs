//! The differentiable training forward equals `pmq_models::BertModel` (the inference forward
//! used by quantization and evaluation): on a tiny random checkpoint always, on the real
//! all-MiniLM-L6-v2 when `PMQ_TESTBED_CACHE` points to a fetched cache.

use candle_core::DType;
use pmq_finetune::bert::TrainBert;
use pmq_models::{BertModel, BlockModel, Pooling, TextTokenizer};
use pmq_testkit::{rel_err, synthetic_task, write_tiny_bert, TinyBert};
use std::path::Path;

fn check_parity(dir: &Path, texts: &[&str], max_len: usize) {
    let reference = BertModel::load(dir).unwrap();
    let train = TrainBert::load(dir, DType::F32).unwrap();
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), max_len).unwrap();
    let batch = tok.batch(texts).unwrap();
    let ids = batch.input_ids.as_ref().unwrap();
    let mask = batch.attention_mask.as_ref().unwrap();
    assert!(
        mask.to_dtype(DType::F32)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            < (ids.dims()[0] * ids.dims()[1]) as f32,
        "the batch should contain padding"
    );
    let want = reference.sentence_embedding(&batch, Pooling::Mean).unwrap();
    let got = train.sentence_embedding(ids, mask).unwrap();
    let rel = rel_err(&got, &want);
    eprintln!(
        "{}: sentence embeddings max rel diff {rel:e}",
        dir.display()
    );
    assert!(rel <= 1e-4, "sentence embeddings differ: max rel {rel}");
    // last hidden states on real tokens (padded positions may differ harmlessly)
    let hidden_ref = reference.forward(&batch).unwrap();
    let hidden = train.forward(ids, mask).unwrap();
    let m = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
    let rel = rel_err(
        &hidden.broadcast_mul(&m).unwrap(),
        &hidden_ref.broadcast_mul(&m).unwrap(),
    );
    assert!(rel <= 1e-4, "hidden states differ: max rel {rel}");
}

#[test]
fn tiny_random_bert_matches_the_inference_forward() {
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_bert(tmp.path(), TinyBert::default(), 3);
    let task = synthetic_task("t", 6, 0, 4);
    let texts: Vec<&str> = task.train.iter().map(|e| e.text.as_str()).collect();
    check_parity(tmp.path(), &texts, 16);
}

#[test]
fn params_carry_the_checkpoint_names() {
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_bert(tmp.path(), TinyBert::default(), 3);
    let m = TrainBert::load(tmp.path(), DType::F32).unwrap();
    let names: Vec<&str> = m.params().iter().map(|(n, _)| n.as_str()).collect();
    // 3 embeddings + LN (2) + per layer 6 linears × 2 + 2 LNs × 2
    assert_eq!(names.len(), 5 + 2 * 16);
    assert!(names.contains(&"encoder.layer.1.attention.self.key.weight"));
    assert!(!names
        .iter()
        .any(|n| n.starts_with("pooler") || n.ends_with("position_ids")));
}

#[test]
fn real_minilm_matches_the_inference_forward() {
    let Ok(cache) = std::env::var("PMQ_TESTBED_CACHE") else {
        eprintln!("SKIPPED real_minilm_matches_the_inference_forward: set PMQ_TESTBED_CACHE to a fetched pmq testbed cache");
        return;
    };
    let dir = pmq_testbed::backbone_dir(Path::new(&cache));
    if !dir.join("model.safetensors").is_file() {
        eprintln!("SKIPPED: no backbone at {}", dir.display());
        return;
    }
    check_parity(
        &dir,
        &[
            "A gripping, beautifully shot film.",
            "The server crashed again after the kernel update, and nobody noticed for hours.",
            "Hallo Welt",
        ],
        64,
    );
}
