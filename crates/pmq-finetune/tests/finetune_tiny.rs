//! `finetune` end to end on a tiny random BERT and a synthetic two-class task: output layout
//! (mergeable model directory, head, record), learning, caching, seeding and the linear probe.

use pmq_eval::{evaluate, EvalOptions, Head};
use pmq_finetune::{finetune, ExpertRecord, FinetuneConfig, Mode};
use pmq_io::TensorStore;
use pmq_testkit::{synthetic_task, write_tiny_bert, TinyBert};
use std::path::Path;

fn cfg() -> FinetuneConfig {
    FinetuneConfig {
        seed: 0,
        epochs: 4,
        max_train: Some(96),
        batch_size: 16,
        lr: 1e-3,
        head_lr: 1e-2,
        weight_decay: 0.01,
        warmup_frac: 0.1,
        max_seq_len: 24,
    }
}

fn eval_opts() -> EvalOptions {
    EvalOptions {
        max_examples: None,
        max_seq_len: 24,
        batch_size: 16,
        max_new_tokens: None,
    }
}

fn assert_same_layout(backbone: &Path, expert: &Path) {
    let a = TensorStore::open_dir(backbone).unwrap();
    let b = TensorStore::open_dir(expert).unwrap();
    assert_eq!(a.names(), b.names());
    for n in a.names() {
        assert_eq!(a.info(&n), b.info(&n), "{n}");
    }
    // untrained tensors are copied byte for byte, trained ones changed
    for n in ["embeddings.position_ids", "pooler.dense.weight"] {
        assert_eq!(a.raw_bytes(n).unwrap(), b.raw_bytes(n).unwrap(), "{n}");
    }
    for n in [
        "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.1.output.dense.weight",
        "embeddings.LayerNorm.weight",
    ] {
        assert_ne!(
            a.raw_bytes(n).unwrap(),
            b.raw_bytes(n).unwrap(),
            "{n} unchanged"
        );
    }
}

#[test]
fn full_finetune_writes_a_mergeable_expert_that_learns_and_is_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let backbone = tmp.path().join("backbone");
    write_tiny_bert(&backbone, TinyBert::default(), 1);
    let task = synthetic_task("synth", 128, 60, 3);
    let out = tmp.path().join("experts/full/synth");
    let r = finetune(&backbone, &task, Mode::Full, &cfg(), &out).unwrap();
    assert!(!r.cached);
    assert_eq!(r.steps, 4 * 6);
    assert!(r.final_loss.is_finite() && r.train_seconds > 0.0);
    assert_eq!(r.head, out.join("pmq_head.safetensors"));
    assert_same_layout(&backbone, &out);
    for f in ["config.json", "tokenizer.json", "pmq_expert.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let rec = ExpertRecord::read(&out).unwrap().unwrap();
    assert_eq!(
        (rec.task.as_str(), rec.mode, rec.steps),
        ("synth", Mode::Full, 24)
    );
    assert_eq!(rec.train_examples, 96);
    assert_eq!(rec.config, cfg());
    let head = Head::load(&out).unwrap();
    assert_eq!(head.labels, task.labels);
    assert_eq!(head.max_seq_len, Some(24));
    let acc = evaluate(&out, &[(&task, &head)], &eval_opts()).unwrap();
    assert!(acc[0].accuracy >= 0.8, "expert test accuracy {:?}", acc[0]);
    assert!(
        rec.train_accuracy >= 0.7,
        "train accuracy {}",
        rec.train_accuracy
    );

    // same inputs: cached, nothing rewritten
    let mtime = std::fs::metadata(out.join("model.safetensors"))
        .unwrap()
        .modified()
        .unwrap();
    let again = finetune(&backbone, &task, Mode::Full, &cfg(), &out).unwrap();
    assert!(again.cached);
    assert_eq!((again.steps, again.final_loss), (r.steps, r.final_loss));
    let mtime2 = std::fs::metadata(out.join("model.safetensors"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(mtime, mtime2);

    // same seed elsewhere: the same weights; another seed: retrained in place
    let twin = tmp.path().join("twin");
    finetune(&backbone, &task, Mode::Full, &cfg(), &twin).unwrap();
    assert_eq!(
        std::fs::read(out.join("pmq_head.safetensors")).unwrap(),
        std::fs::read(twin.join("pmq_head.safetensors")).unwrap()
    );
    let reseeded = FinetuneConfig { seed: 1, ..cfg() };
    let r2 = finetune(&backbone, &task, Mode::Full, &reseeded, &out).unwrap();
    assert!(!r2.cached);
    assert_eq!(ExpertRecord::read(&out).unwrap().unwrap().seed, 1);
    assert_ne!(
        std::fs::read(out.join("pmq_head.safetensors")).unwrap(),
        std::fs::read(twin.join("pmq_head.safetensors")).unwrap()
    );
}

#[test]
fn linear_probe_writes_only_a_head_that_works_on_the_backbone() {
    let tmp = tempfile::tempdir().unwrap();
    let backbone = tmp.path().join("backbone");
    write_tiny_bert(&backbone, TinyBert::default(), 1);
    let task = synthetic_task("synth", 128, 60, 3);
    let out = tmp.path().join("probe");
    let r = finetune(&backbone, &task, Mode::LinearProbe, &cfg(), &out).unwrap();
    assert!(!r.cached);
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, vec!["pmq_expert.json", "pmq_head.safetensors"]);
    let rec = ExpertRecord::read(&out).unwrap().unwrap();
    assert_eq!(rec.mode, Mode::LinearProbe);
    assert_eq!(rec.backbone, std::fs::canonicalize(&backbone).unwrap());
    let head = Head::load(&out).unwrap();
    let acc = evaluate(&backbone, &[(&task, &head)], &eval_opts()).unwrap();
    assert!(acc[0].accuracy >= 0.7, "probe test accuracy {:?}", acc[0]);
    assert!(
        finetune(&backbone, &task, Mode::LinearProbe, &cfg(), &out)
            .unwrap()
            .cached
    );
}

#[test]
fn refuses_to_replace_foreign_directories_and_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let backbone = tmp.path().join("backbone");
    write_tiny_bert(&backbone, TinyBert::default(), 1);
    let task = synthetic_task("synth", 8, 4, 3);
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let err = finetune(&backbone, &task, Mode::Full, &cfg(), &foreign).unwrap_err();
    assert!(format!("{err:#}").contains("refusing"), "{err:#}");
    assert!(foreign.join("notes.txt").is_file());
    let bad = FinetuneConfig {
        batch_size: 0,
        ..cfg()
    };
    assert!(finetune(&backbone, &task, Mode::Full, &bad, &tmp.path().join("x")).is_err());
    let mut empty = task.clone();
    empty.train.clear();
    let err = finetune(&backbone, &empty, Mode::Full, &cfg(), &tmp.path().join("y")).unwrap_err();
    assert!(
        format!("{err:#}").contains("no training examples"),
        "{err:#}"
    );
    let err = finetune(
        &tmp.path().join("nope"),
        &task,
        Mode::Full,
        &cfg(),
        &tmp.path().join("z"),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("model.safetensors"), "{err:#}");
}
