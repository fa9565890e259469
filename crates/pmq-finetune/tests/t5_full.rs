//! The trainable T5 computes the inference model's logits (gated and ReLU feed-forward,
//! padded batches) and every tensor gets a gradient from the token loss.

use candle_core::{DType, Device, Tensor};
mod common;
use pmq_finetune::t5::TrainT5;
use pmq_models::{load_model, Batch};
use pmq_testkit::{rel_err, write_model, Fam};

#[test]
fn the_trainable_t5_computes_the_inference_logits_and_every_tensor_gets_a_gradient() {
    let tmp = tempfile::tempdir().unwrap();
    for fam in [Fam::T5Gated, Fam::T5Relu] {
        let dir = tmp.path().join(format!("{fam:?}"));
        write_model(fam, &dir, 17);
        let enc: Vec<Vec<u32>> = vec![vec![5, 9, 12, 7, 1], vec![8, 4, 1]];
        let dec: Vec<Vec<u32>> = vec![vec![0, 6, 11, 13], vec![0, 10]];
        let batch = Batch::from_token_ids(&enc, 0)
            .unwrap()
            .with_decoder_ids(&dec, 0)
            .unwrap();
        let model = load_model(&dir).unwrap().into_block_model();
        let mut state = model.embed(&batch).unwrap();
        for b in 0..model.num_blocks() {
            state = model.block_forward(b, &state, None).unwrap();
        }
        let reference = model.head(&state).unwrap();
        let t5 = TrainT5::load(&dir, DType::F32).unwrap();
        let f32_mask = |m: &Tensor| m.to_dtype(DType::F32).unwrap();
        let ours = t5
            .forward(
                batch.input_ids.as_ref().unwrap(),
                &f32_mask(batch.attention_mask.as_ref().unwrap()),
                batch.decoder_input_ids.as_ref().unwrap(),
                &f32_mask(batch.decoder_attention_mask.as_ref().unwrap()),
            )
            .unwrap();
        assert_eq!(ours.dims(), reference.dims());
        // compare the unpadded decoder positions only
        for (i, d) in dec.iter().enumerate() {
            let a = ours.get(i).unwrap().narrow(0, 0, d.len()).unwrap();
            let r = reference.get(i).unwrap().narrow(0, 0, d.len()).unwrap();
            let e = rel_err(&a, &r);
            assert!(e <= 1e-4, "{fam:?} sequence {i}: rel err {e:.3e}");
        }
        let y = Tensor::new(&[6u32, 11, 13, 1], &Device::Cpu).unwrap();
        let logits = ours.get(0).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
        let grads = loss.backward().unwrap();
        common::assert_every_param_has_a_gradient(t5.params(), &grads, &format!("{fam:?}"));
    }
}

/// A T5 expert fine-tuned on pairs "a b" → "b" learns the task: its greedy decodings match
/// the targets far more often than the base model's; every tensor moved; no head is written.
#[test]
fn a_fine_tuned_t5_expert_learns_a_text_to_text_task() {
    use pmq_eval::tasks::{TextPair, TextToTextTask};
    use pmq_eval::{evaluate_tasks, EvalOptions, EvalTask};
    use pmq_testkit::WORDS;
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_model(Fam::T5Gated, &base, 23);
    // as real T5 tokenizers do: every sequence ends with the end-of-sequence token ([SEP] = 3
    // here), which is special (skipped when decoding)
    pmq_testkit::t5_style_tokenizer(&base, true);
    let task = TextToTextTask {
        name: "second".into(),
        examples: (0..24)
            .map(|i| TextPair {
                input: format!("{} {}", WORDS[i % 5], WORDS[5 + (i * 7) % 15]),
                target: WORDS[5 + (i * 7) % 15].to_string(),
            })
            .collect(),
    };
    let cfg = pmq_finetune::FinetuneConfig {
        epochs: 40,
        batch_size: 8,
        lr: 3e-3,
        warmup_frac: 0.05,
        ..pmq_finetune::FinetuneConfig::ci()
    };
    let out_dir = tmp.path().join("expert");
    let out = pmq_finetune::finetune_text_to_text(&base, &task, &cfg, &out_dir).unwrap();
    assert_eq!(out.steps, 120);
    assert!(!out_dir.join(pmq_eval::HEAD_FILE).exists());
    let (b, e) = (
        pmq_io::TensorStore::open_dir(&base).unwrap(),
        pmq_io::TensorStore::open_dir(&out_dir).unwrap(),
    );
    for n in b.names() {
        assert_ne!(
            b.read_f32(&n).unwrap(),
            e.read_f32(&n).unwrap(),
            "{n} did not train"
        );
    }
    let score = |dir: &std::path::Path| {
        evaluate_tasks(dir, &[EvalTask::TextToText(&task)], &EvalOptions::default()).unwrap()[0]
            .correct
    };
    let (before, after) = (score(&base), score(&out_dir));
    println!(
        "exact match on the training pairs: base {before}/24, expert {after}/24 (loss {:.3})",
        out.final_loss
    );
    assert!(after >= 18 && after > before + 10, "{before} → {after}");
    let again = pmq_finetune::finetune_text_to_text(&base, &task, &cfg, &out_dir).unwrap();
    assert!(again.cached);
}
