//! Resuming a killed run (`pmq_pipeline::resume`): a run stopped right after a block's
//! checkpoint and resumed gives bit for bit the quantized linears, changed tensors and report
//! figures of an uninterrupted run — GPTQ, E-PMQ and AWQ on 4-block BERT, Llama, CLIP and T5
//! checkpoints, f32 and bf16 calibration states, stopped after the first, a middle and the
//! last block; a checkpoint of other inputs or settings is refused with what differs.

mod common;

use common::{write_calib, write_model, Fam};
use pmq_core::gptq::GptqConfig;
use pmq_core::{QuantGrid, ScalePrecision};
use pmq_io::TensorStore;
use pmq_pipeline::{
    run_checkpointed, AwqOptions, CalibSpec, Checkpointing, DeviationMode, Method, NoProgress,
    PipelineConfig, PipelineInputs, PipelineOutput,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Makes the 2-layer checkpoint in `dir` 4 layers deep: layer `i + 2` is a copy of layer `i`
/// (`marker` precedes the layer index in the tensor names).
fn deepen(dir: &Path, marker: &str) {
    let store = TensorStore::open_dir(dir).unwrap();
    let mut tensors = Vec::new();
    for name in store.names() {
        let info = store.info(&name).unwrap().clone();
        let bytes = store.raw_bytes(&name).unwrap().to_vec();
        if let Some((head, rest)) = name.split_once(marker) {
            let (index, tail) = rest.split_once('.').unwrap();
            let i: usize = index.parse().unwrap();
            let copy = format!("{head}{marker}{}.{tail}", i + 2);
            tensors.push((copy, info.dtype, info.shape.clone(), bytes.clone()));
        }
        tensors.push((name, info.dtype, info.shape, bytes));
    }
    drop(store);
    let file = dir.join("model.safetensors");
    std::fs::remove_file(&file).unwrap();
    pmq_io::write_safetensors(&file, &tensors, None).unwrap();
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], 2);
    config["num_hidden_layers"] = 4.into();
    std::fs::write(&path, config.to_string()).unwrap();
}

/// A 4-block checkpoint of `fam` drawn from `seed`.
fn model(fam: Fam, dir: &Path, seed: u64) {
    write_model(fam, dir, seed);
    match fam {
        Fam::Bert => deepen(dir, "encoder.layer."),
        Fam::Clip => deepen(dir, "encoder.layers."),
        Fam::LlamaGqa | Fam::LlamaMha => deepen(dir, "model.layers."),
        // 2 encoder + 2 decoder blocks already
        Fam::T5Relu | Fam::T5Gated => {}
    }
}

struct Case {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    model: PathBuf,
    experts: Vec<PathBuf>,
    calib: Vec<CalibSpec>,
}

fn case(fam: Fam) -> Case {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let m = root.join("model");
    model(fam, &m, 11);
    let experts = vec![root.join("e1"), root.join("e2")];
    model(fam, &experts[0], 12);
    model(fam, &experts[1], 13);
    let calib = vec![
        write_calib(fam, &root, "t1", 6, 5).parse().unwrap(),
        write_calib(fam, &root, "t2", 5, 6).parse().unwrap(),
    ];
    Case {
        _tmp: tmp,
        root,
        model: m,
        experts,
        calib,
    }
}

impl Case {
    fn inputs(&self, method: Method) -> PipelineInputs {
        PipelineInputs {
            model_dir: self.model.clone(),
            experts: if method.needs_experts() {
                self.experts.clone()
            } else {
                vec![]
            },
            calib: self.calib.clone(),
        }
    }
}

fn config(method: Method, state_dtype: candle_core::DType) -> PipelineConfig {
    let grid = QuantGrid::new(3, false, 32, ScalePrecision::F16).unwrap();
    let mut gptq = GptqConfig::new(grid);
    gptq.damping = pmq_core::damping::Damping::gptq(method.default_percdamp());
    PipelineConfig {
        method,
        gptq,
        samples_per_task: 6,
        batch_size: 2,
        max_seq_len: 64,
        true_sequential: true,
        deviation: DeviationMode::PerTask,
        state_dtype,
        forward_cache_bytes: pmq_pipeline::DEFAULT_FORWARD_CACHE_BYTES,
        time_block_forward: false,
        alpha_auto: None,
        fold_precision: pmq_core::epmq::FoldPrecision::F32,
    }
}

const AWQ: Method = Method::Awq(AwqOptions {
    duo_scaling: true,
    n_grid: 5,
    clip: true,
});

fn checkpointing(dir: &Path, resume: bool, stop_after_block: Option<usize>) -> Checkpointing {
    Checkpointing {
        dir: dir.to_path_buf(),
        resume,
        stop_after_block,
    }
}

/// A record without its times, for comparison.
fn untimed(v: Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.into_iter()
                .filter(|(k, _)| !matches!(k.as_str(), "seconds" | "search_seconds"))
                .map(|(k, v)| (k, untimed(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(untimed).collect()),
        other => other,
    }
}

/// Bit-for-bit equality of what a run writes (packed linears, changed tensors) and of its
/// report figures other than times.
fn assert_same(a: &PipelineOutput, b: &PipelineOutput, tag: &str) {
    assert_eq!(
        a.layers.keys().collect::<Vec<_>>(),
        b.layers.keys().collect::<Vec<_>>(),
        "{tag}"
    );
    for (name, x) in &a.layers {
        let y = &b.layers[name];
        assert_eq!(
            (x.rows, x.cols, x.grid),
            (y.rows, y.cols, y.grid),
            "{tag}: {name}"
        );
        assert!(x.codes == y.codes, "{tag}: codes of {name} differ");
        assert!(x.zeros == y.zeros, "{tag}: zeros of {name} differ");
        assert!(x.g_idx == y.g_idx, "{tag}: g_idx of {name} differ");
        let bits = |v: &[f64]| v.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(&x.scales) == bits(&y.scales),
            "{tag}: scales of {name} differ"
        );
    }
    assert_eq!(
        a.tensors.keys().collect::<Vec<_>>(),
        b.tensors.keys().collect::<Vec<_>>(),
        "{tag}"
    );
    for (name, x) in &a.tensors {
        let bits = |v: &[f32]| v.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(x) == bits(&b.tensors[name]),
            "{tag}: changed tensor {name} differs"
        );
    }
    let records = |o: &PipelineOutput| untimed(serde_json::to_value(&o.report.linears).unwrap());
    assert_eq!(records(a), records(b), "{tag}: report records differ");
}

/// Runs with a checkpoint in `dir`, stopped right after block `stop` (as if killed), then
/// resumed; returns the resumed run's output.
fn stop_and_resume(
    inputs: &PipelineInputs,
    cfg: &PipelineConfig,
    dir: &Path,
    stop: usize,
) -> PipelineOutput {
    let err = run_checkpointed(
        inputs,
        cfg,
        &NoProgress,
        Some(&checkpointing(dir, false, Some(stop))),
    )
    .err()
    .expect("the run stops");
    assert!(
        format!("{err:#}").contains(&format!("stopped after block {stop}")),
        "{err:#}"
    );
    let out = run_checkpointed(
        inputs,
        cfg,
        &NoProgress,
        Some(&checkpointing(dir, true, None)),
    )
    .unwrap();
    assert_eq!(out.report.resumed_at_block, Some(stop + 1));
    assert!(out
        .report
        .to_markdown()
        .contains(&format!("resumed at block {}", stop + 1)));
    out
}

#[test]
fn resumed_runs_equal_uninterrupted_runs() {
    use candle_core::DType::{BF16, F32};
    let methods = [Method::Gptq, Method::Epmq { alpha: 0.01 }, AWQ];
    for (fam, dtypes, stops) in [
        (Fam::Bert, &[F32][..], &[1usize][..]),
        (Fam::LlamaGqa, &[F32, BF16], &[0, 1, 3]),
        (Fam::LlamaMha, &[F32], &[2]),
        (Fam::Clip, &[F32], &[1]),
        (Fam::T5Gated, &[F32], &[1]),
    ] {
        let c = case(fam);
        for method in methods {
            for &dtype in dtypes {
                let (inputs, cfg) = (c.inputs(method), config(method, dtype));
                let reference = pmq_pipeline::run(&inputs, &cfg, &NoProgress).unwrap();
                assert_eq!(reference.report.resumed_at_block, None);
                if matches!(method, Method::Awq(_)) && fam != Fam::Bert {
                    // the folds' changed tensors are part of what must come back
                    assert!(!reference.tensors.is_empty(), "{fam:?}");
                }
                for &stop in stops {
                    let tag = format!(
                        "{fam:?} {} {dtype:?} stopped after block {stop}",
                        method.label()
                    );
                    let dir = c
                        .root
                        .join(format!("ckpt-{}-{dtype:?}-{stop}", method.label()));
                    let resumed = stop_and_resume(&inputs, &cfg, &dir, stop);
                    assert_same(&reference, &resumed, &tag);
                    // the last block's checkpoint is still there (the caller removes it)
                    assert!(dir.join("block-00003.safetensors").is_file(), "{tag}");
                }
            }
        }
    }
}

/// A checkpointed run to the end equals a plain run, and resuming a checkpoint whose blocks
/// are all finished only restores them.
#[test]
fn checkpointing_does_not_change_the_result_and_a_finished_checkpoint_restores_everything() {
    let c = case(Fam::LlamaGqa);
    for method in [Method::Gptq, AWQ] {
        let (inputs, cfg) = (c.inputs(method), config(method, candle_core::DType::F32));
        let plain = pmq_pipeline::run(&inputs, &cfg, &NoProgress).unwrap();
        let dir = c.root.join(format!("ckpt-{}", method.label()));
        let full = run_checkpointed(
            &inputs,
            &cfg,
            &NoProgress,
            Some(&checkpointing(&dir, false, None)),
        )
        .unwrap();
        assert_same(&plain, &full, "checkpointed");
        let restored = run_checkpointed(
            &inputs,
            &cfg,
            &NoProgress,
            Some(&checkpointing(&dir, true, None)),
        )
        .unwrap();
        assert_eq!(restored.report.resumed_at_block, Some(4));
        assert_same(&plain, &restored, "restored");
        // --resume without a checkpoint starts at the first block
        let none = c.root.join(format!("none-{}", method.label()));
        let fresh = run_checkpointed(
            &inputs,
            &cfg,
            &NoProgress,
            Some(&checkpointing(&none, true, None)),
        )
        .unwrap();
        assert_eq!(fresh.report.resumed_at_block, None);
        assert_same(&plain, &fresh, "resume without a checkpoint");
    }
}

#[test]
fn a_checkpoint_of_other_inputs_or_settings_is_refused_and_replaced_without_resume() {
    let c = case(Fam::Bert);
    let method = Method::Gptq;
    let inputs = c.inputs(method);
    let cfg = config(method, candle_core::DType::F32);
    let dir = c.root.join("ckpt");
    let stop = |inputs: &PipelineInputs, cfg: &PipelineConfig| {
        run_checkpointed(
            inputs,
            cfg,
            &NoProgress,
            Some(&checkpointing(&dir, false, Some(0))),
        )
        .err()
        .expect("the run stops")
    };
    let resume = |inputs: &PipelineInputs, cfg: &PipelineConfig| {
        run_checkpointed(
            inputs,
            cfg,
            &NoProgress,
            Some(&checkpointing(&dir, true, None)),
        )
    };
    stop(&inputs, &cfg);
    // a setting
    let mut other = cfg.clone();
    other.max_seq_len = 32;
    let e = format!("{:#}", resume(&inputs, &other).err().unwrap());
    assert!(e.contains("cannot resume"), "{e}");
    assert!(
        e.contains("setting max_seq_len: 64 in the checkpoint, 32 now"),
        "{e}"
    );
    assert!(e.contains("drop --resume"), "{e}");
    let mut other = cfg.clone();
    other.gptq.act_order = true;
    let e = format!("{:#}", resume(&inputs, &other).err().unwrap());
    assert!(e.contains("setting gptq: "), "{e}");
    // a calibration file's contents
    let path = &inputs.calib[1].path;
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, format!("{text}\n{{\"text\": \"one more sample\"}}\n")).unwrap();
    let e = format!("{:#}", resume(&inputs, &cfg).err().unwrap());
    assert!(e.contains("calibration 1 samples:"), "{e}");
    assert!(!e.contains("calibration 0 samples"), "{e}");
    std::fs::write(path, &text).unwrap();
    // the model's weights
    let weights = c.model.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    let mut changed = bytes.clone();
    *changed.last_mut().unwrap() ^= 1;
    std::fs::write(&weights, &changed).unwrap();
    let e = format!("{:#}", resume(&inputs, &cfg).err().unwrap());
    assert!(e.contains("model file model.safetensors:"), "{e}");
    std::fs::write(&weights, &bytes).unwrap();
    // a refused resume leaves the checkpoint as it was: it still resumes
    let reference = pmq_pipeline::run(&inputs, &cfg, &NoProgress).unwrap();
    assert_same(
        &reference,
        &resume(&inputs, &cfg).unwrap(),
        "after refusals",
    );
    // without --resume another run replaces the checkpoint, and its own resumes
    let mut other = cfg.clone();
    other.batch_size = 3;
    stop(&inputs, &cfg);
    stop(&inputs, &other);
    let resumed = resume(&inputs, &other).unwrap();
    assert_eq!(resumed.report.resumed_at_block, Some(1));
    let reference = pmq_pipeline::run(&inputs, &other, &NoProgress).unwrap();
    assert_same(&reference, &resumed, "replaced checkpoint");
    // a directory that is not a checkpoint is never removed
    let not_ours = c.root.join("not-ours");
    std::fs::create_dir(&not_ours).unwrap();
    std::fs::write(not_ours.join("notes.txt"), "keep").unwrap();
    let e = run_checkpointed(
        &inputs,
        &cfg,
        &NoProgress,
        Some(&checkpointing(&not_ours, false, None)),
    )
    .err()
    .unwrap();
    assert!(format!("{e:#}").contains("not a pmq checkpoint"), "{e:#}");
    assert!(not_ours.join("notes.txt").is_file());
}
