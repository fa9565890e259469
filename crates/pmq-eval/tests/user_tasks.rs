//! Image classification (CLIP) and text-to-text (T5) evaluation on tiny random checkpoints:
//! outcomes counted from predictions made directly with the model, example by example.

use pmq_eval::tasks::{ImageTask, TextPair, TextToTextTask};
use pmq_eval::{evaluate, evaluate_tasks, EvalOptions, EvalTask, Head, ImageEncoder};
use pmq_models::{ClipImageProcessor, ClipVisionModel, T5Model, TextTokenizer};
use pmq_testkit::{t5_style_tokenizer, write_image_folder, write_model, Fam, WORDS};
use std::path::Path;

fn opts(batch_size: usize, max_new_tokens: Option<usize>) -> EvalOptions {
    EvalOptions {
        max_examples: None,
        max_seq_len: 16,
        batch_size,
        max_new_tokens,
    }
}

/// A head over `labels` that scores class `k` by embedding dimension `k`.
fn picking_head(task: &str, labels: &[&str], hidden: usize) -> Head {
    let c = labels.len();
    let mut w = vec![0.0; c * hidden];
    for k in 0..c {
        w[k * hidden + k] = 1.0;
    }
    Head::new(
        task,
        labels.iter().map(|s| s.to_string()).collect(),
        hidden,
        w,
        vec![0.0; c],
    )
    .unwrap()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len())
        .max_by(|&a, &b| v[a].total_cmp(&v[b]).then(b.cmp(&a)))
        .unwrap()
}

#[test]
fn image_folder_accuracy_matches_predictions_made_one_image_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("clip");
    write_model(Fam::Clip, &model, 5);
    let data = tmp.path().join("test");
    write_image_folder(
        &data,
        &[
            ("cat", [200, 40, 40]),
            ("dog", [40, 40, 200]),
            ("eel", [40, 200, 40]),
        ],
        4,
        30,
        7,
    );
    let head = picking_head("pets", &["cat", "dog", "eel"], 64);
    let mut task = ImageTask::from_folder_with_labels("pets", &data, &head.labels).unwrap();
    assert_eq!(task.examples.len(), 12);
    // each image alone through the model and the processor the checkpoint implies
    let clip = ClipVisionModel::load(&model).unwrap();
    let proc = ClipImageProcessor::for_image_size(32);
    let pred: Vec<usize> = task
        .examples
        .iter()
        .map(|e| {
            let px = proc.load_batch(&[e.path.as_path()]).unwrap();
            let emb = clip.image_embedding(&px).unwrap().to_vec2::<f32>().unwrap();
            argmax(&head.logits(&emb[0]))
        })
        .collect();
    // relabel: examples 0, 3, 6, 9 wrong, the rest as predicted → 8 / 12
    for (i, e) in task.examples.iter_mut().enumerate() {
        e.label = if i % 3 == 0 {
            (pred[i] + 1) % 3
        } else {
            pred[i]
        };
    }
    for bs in [1, 5] {
        let acc =
            evaluate_tasks(&model, &[EvalTask::Image(&task, &head)], &opts(bs, None)).unwrap();
        assert_eq!((acc[0].correct, acc[0].total), (8, 12), "batch {bs}");
        let hits = acc[0].outcomes().unwrap().unwrap();
        assert_eq!(hits, (0..12).map(|i| i % 3 != 0).collect::<Vec<_>>());
    }
    assert_eq!(ImageEncoder::open(&model).unwrap().hidden(), 64);

    // a head of another width, a text model for images, mixed kinds: refused
    let narrow = picking_head("pets", &["cat", "dog", "eel"], 32);
    let e = evaluate_tasks(&model, &[EvalTask::Image(&task, &narrow)], &opts(4, None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("width 32") && e.contains("64"), "{e}");
    let bert = tmp.path().join("bert");
    write_model(Fam::Bert, &bert, 1);
    let e = evaluate_tasks(&bert, &[EvalTask::Image(&task, &head)], &opts(4, None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("CLIP vision tower"), "{e}");
    let pairs = TextToTextTask {
        name: "qa".into(),
        examples: vec![TextPair {
            input: "a".into(),
            target: "b".into(),
        }],
    };
    let e = evaluate_tasks(
        &model,
        &[EvalTask::Image(&task, &head), EvalTask::TextToText(&pairs)],
        &opts(4, None),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("one kind"), "{e}");
    // the text path still refuses a CLIP model with a clear message
    let text_task = pmq_testkit::synthetic_task("t", 2, 2, 1);
    let e = evaluate(
        &model,
        &[(&text_task, &picking_head("t", &["pos", "neg"], 64))],
        &opts(4, None),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("BERT"), "{e}");
}

#[test]
fn text_to_text_exact_match_counts_greedy_decodings() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("t5");
    write_model(Fam::T5Gated, &model, 3);
    // the 4 specials as special tokens, as real T5 tokenizers have them: decoding skips them
    t5_style_tokenizer(&model, false);
    let t5 = T5Model::load(&model).unwrap();
    let tok = TextTokenizer::from_file(&model.join("tokenizer.json"), 16).unwrap();
    let inputs: Vec<String> = (0..6)
        .map(|i| format!("{} {} {}", WORDS[i], WORDS[i + 3], WORDS[2 * i + 1]))
        .collect();
    // the model's own 4-step greedy decoding of each input, alone
    let decoded: Vec<String> = inputs
        .iter()
        .map(|s| {
            let g = t5.generate(&tok.batch(&[s.as_str()]).unwrap(), 4).unwrap();
            tok.decode(&g[0], true).unwrap()
        })
        .collect();
    // targets: the decoding for even examples, the decoding plus a word for odd ones
    let task = TextToTextTask {
        name: "echo".into(),
        examples: inputs
            .iter()
            .zip(&decoded)
            .enumerate()
            .map(|(i, (input, d))| TextPair {
                input: input.clone(),
                target: if i % 2 == 0 {
                    format!("  {d} ")
                } else {
                    format!("{d} {}", WORDS[0])
                },
            })
            .collect(),
    };
    for bs in [1, 4] {
        let acc =
            evaluate_tasks(&model, &[EvalTask::TextToText(&task)], &opts(bs, Some(4))).unwrap();
        assert_eq!((acc[0].correct, acc[0].total), (3, 6), "batch {bs}");
        let hits = acc[0].outcomes().unwrap().unwrap();
        assert_eq!(hits, (0..6).map(|i| i % 2 == 0).collect::<Vec<_>>());
    }
    // one decoding step is too few for a multi-token target
    let acc = evaluate_tasks(&model, &[EvalTask::TextToText(&task)], &opts(2, Some(1))).unwrap();
    let short = decoded
        .iter()
        .step_by(2)
        .filter(|d| d.split_whitespace().count() <= 1)
        .count();
    assert_eq!(acc[0].correct, short);
    let e = evaluate_tasks(
        Path::new("/nonexistent/t5"),
        &[EvalTask::TextToText(&task)],
        &opts(2, None),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("does not exist"), "{e}");
}

/// By default a decoding counts only if the model stops: the eos token is set to a token the
/// model emits at step k, so its full output is the k tokens before it; a target one token
/// shorter matches a cut decoding (explicit `max_new_tokens`) but not the default score.
#[test]
fn text_to_text_default_scoring_requires_the_model_to_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("t5");
    // a seed and input whose greedy decoding has a fresh token after a prefix of words (the
    // search is deterministic; it fails loudly if the fixtures change so much that none does)
    let mut found = None;
    'search: for seed in 0..40u64 {
        write_model(Fam::T5Gated, &model, seed);
        let t5 = T5Model::load(&model).unwrap();
        let tok = TextTokenizer::from_file(&model.join("tokenizer.json"), 16).unwrap();
        for j in 0..6 {
            let input = format!("{} {} {}", WORDS[j], WORDS[j + 7], WORDS[19 - j]);
            let g = t5
                .generate(&tok.batch(&[input.as_str()]).unwrap(), 8)
                .unwrap()
                .remove(0);
            if let Some(k) =
                (2..g.len()).find(|&k| !g[..k].contains(&g[k]) && g[..k].iter().all(|&t| t >= 4))
            {
                found = Some((tok, input, g, k));
                break 'search;
            }
        }
    }
    let (tok, input, g, k) = found.expect("no seed gives a decoding with a fresh token");
    let cfg_file = model.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_file).unwrap()).unwrap();
    cfg["eos_token_id"] = g[k].into();
    std::fs::write(&cfg_file, cfg.to_string()).unwrap();
    let words = |n: usize| tok.decode(&g[..n], true).unwrap();
    let task = TextToTextTask {
        name: "stop".into(),
        examples: vec![
            TextPair {
                input: input.clone(),
                target: words(k),
            },
            TextPair {
                input,
                target: words(k - 1),
            },
        ],
    };
    let hits = |max_new| {
        let acc = evaluate_tasks(&model, &[EvalTask::TextToText(&task)], &opts(2, max_new));
        acc.unwrap()[0].outcomes().unwrap().unwrap()
    };
    // default: k + 1 steps for the longer target; the model stops at step k
    assert_eq!(hits(None), [true, false]);
    // cut after k − 1 tokens: the shorter target matches, the longer cannot
    assert_eq!(hits(Some(k - 1)), [false, true]);
}
