//! `evaluate` on a tiny random BERT: accuracy counted by hand, and a pmq GPTQ checkpoint
//! evaluated exactly like its fake-quant twin.

use pmq_core::packing::CheckpointFormat;
use pmq_core::{QuantGrid, ScalePrecision};
use pmq_eval::{evaluate, Encoder, EvalOptions, Head};
use pmq_formats::gptq_checkpoint::{write_gptq, GptqSettings};
use pmq_formats::PackedLinear;
use pmq_io::TensorStore;
use pmq_models::{BertModel, Pooling, TextTokenizer};
use pmq_testkit::{synthetic_task, write_tiny_bert, TinyBert};
use std::collections::BTreeMap;
use std::path::Path;

fn opts(max_examples: Option<usize>) -> EvalOptions {
    EvalOptions {
        max_examples,
        max_seq_len: 16,
        batch_size: 3,
        max_new_tokens: None,
    }
}

/// A head that scores class 0 by embedding dim 0 and class 1 by dim 1.
fn picking_head(task: &str, hidden: usize) -> Head {
    let mut w = vec![0.0; 2 * hidden];
    w[0] = 1.0;
    w[hidden + 1] = 1.0;
    Head::new(
        task,
        vec!["pos".into(), "neg".into()],
        hidden,
        w,
        vec![0.0, 0.0],
    )
    .unwrap()
}

#[test]
fn accuracy_matches_a_count_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("bert");
    write_tiny_bert(&model_dir, TinyBert::default(), 1);
    let mut task = synthetic_task("t", 4, 6, 2);
    // embeddings of each text alone (no padding), straight from the model
    let model = BertModel::load(&model_dir).unwrap();
    let tok = TextTokenizer::from_file(&model_dir.join("tokenizer.json"), 16).unwrap();
    let pred: Vec<usize> = task
        .test
        .iter()
        .map(|e| {
            let emb = model
                .sentence_embedding(&tok.batch(&[&e.text]).unwrap(), Pooling::Mean)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            usize::from(emb[0][1] > emb[0][0])
        })
        .collect();
    // label the first 4 as predicted and the last 2 wrongly: 4 / 6 correct
    for (i, e) in task.test.iter_mut().enumerate() {
        e.label = if i < 4 { pred[i] } else { 1 - pred[i] };
    }
    let head = picking_head("t", 16);
    let acc = evaluate(&model_dir, &[(&task, &head)], &opts(None)).unwrap();
    assert_eq!((acc[0].correct, acc[0].total), (4, 6));
    assert!((acc[0].accuracy - 4.0 / 6.0).abs() < 1e-12);
    assert_eq!(acc[0].task, "t");
    let acc = evaluate(&model_dir, &[(&task, &head)], &opts(Some(2))).unwrap();
    assert_eq!((acc[0].correct, acc[0].total), (2, 2));
    // batched, length-sorted embedding equals one-by-one embedding
    let enc = Encoder::open(&model_dir, 16).unwrap();
    let texts: Vec<&str> = task.test.iter().map(|e| e.text.as_str()).collect();
    let batched = enc.embed(&texts, 4, None).unwrap();
    for (t, b) in texts.iter().zip(&batched) {
        let one = enc.embed(&[t], 1, None).unwrap();
        for (x, y) in one[0].iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }
}

#[test]
fn mismatched_heads_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("bert");
    write_tiny_bert(&model_dir, TinyBert::default(), 1);
    let task = synthetic_task("t", 4, 6, 2);
    let wrong_width = picking_head("t", 8);
    let err = evaluate(&model_dir, &[(&task, &wrong_width)], &opts(None)).unwrap_err();
    assert!(format!("{err:#}").contains("width"), "{err:#}");
    let mut wrong_labels = picking_head("t", 16);
    wrong_labels.labels = vec!["a".into(), "b".into()];
    let err = evaluate(&model_dir, &[(&task, &wrong_labels)], &opts(None)).unwrap_err();
    assert!(format!("{err:#}").contains("labels"), "{err:#}");
    let err = evaluate(&tmp.path().join("nope"), &[], &opts(None)).unwrap_err();
    assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
}

/// RTN-quantizes every encoder linear of `src` (4 bits, groups of 8, f16 scales).
fn rtn_layers(src: &TensorStore) -> BTreeMap<String, PackedLinear> {
    let grid = QuantGrid::new(4, false, 8, ScalePrecision::F16).unwrap();
    let mut layers = BTreeMap::new();
    for name in src.names() {
        let Some(prefix) = name.strip_suffix(".weight") else {
            continue;
        };
        if !prefix.starts_with("encoder.") || prefix.contains("LayerNorm") {
            continue;
        }
        let shape = &src.info(&name).unwrap().shape;
        let w = src.read_f32(&name).unwrap();
        let m = pmq_core::matrix::from_row_major_f32(shape[0], shape[1], &w);
        let q = pmq_core::rtn::rtn(m.as_ref(), &grid).unwrap();
        layers.insert(prefix.to_string(), PackedLinear::from(q));
    }
    assert_eq!(layers.len(), 12);
    layers
}

fn quantized_twins(model_dir: &Path, root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let src = TensorStore::open_dir(model_dir).unwrap();
    let layers = rtn_layers(&src);
    let settings = GptqSettings {
        bits: 4,
        group_size: 8,
        sym: false,
        desc_act: false,
        static_groups: false,
        true_sequential: true,
        damp_percent: 0.01,
        format: CheckpointFormat::V2,
        quantizer: "pmq-eval test rtn".into(),
    };
    let gptq = root.join("gptq");
    let fake = root.join("fake");
    let model = pmq_formats::QuantizedModel::new(&src, &layers);
    write_gptq(&model, &settings, &pmq_formats::Destination::new(&gptq)).unwrap();
    pmq_formats::fake_quant::write_fake_quant(&model, None, &pmq_formats::Destination::new(&fake))
        .unwrap();
    (gptq, fake)
}

#[test]
fn gptq_checkpoint_evaluates_like_its_fake_quant_twin() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("bert");
    write_tiny_bert(&model_dir, TinyBert::default(), 5);
    let (gptq, fake) = quantized_twins(&model_dir, tmp.path());
    assert!(pmq_eval::is_gptq_dir(&gptq) && !pmq_eval::is_gptq_dir(&fake));
    let task = synthetic_task("t", 4, 40, 9);
    let head = picking_head("t", 16);
    let a = evaluate(&gptq, &[(&task, &head)], &opts(None)).unwrap();
    let b = evaluate(&fake, &[(&task, &head)], &opts(None)).unwrap();
    assert_eq!(a, b);
    assert_eq!(a[0].total, 40);
    // and the embeddings themselves agree
    let texts: Vec<&str> = task.test.iter().map(|e| e.text.as_str()).collect();
    let ea = Encoder::open(&gptq, 16)
        .unwrap()
        .embed(&texts, 8, None)
        .unwrap();
    let eb = Encoder::open(&fake, 16)
        .unwrap()
        .embed(&texts, 8, None)
        .unwrap();
    let orig = Encoder::open(&model_dir, 16)
        .unwrap()
        .embed(&texts, 8, None)
        .unwrap();
    let mut max_diff = 0f32;
    let mut max_quant_effect = 0f32;
    for ((x, y), o) in ea.iter().zip(&eb).zip(&orig) {
        for ((p, q), r) in x.iter().zip(y).zip(o) {
            max_diff = max_diff.max((p - q).abs());
            max_quant_effect = max_quant_effect.max((p - r).abs());
        }
    }
    assert!(
        max_diff <= 1e-6,
        "gptq vs fake-quant embeddings differ by {max_diff}"
    );
    assert!(
        max_quant_effect > 1e-4,
        "quantization had no effect ({max_quant_effect})"
    );
}
