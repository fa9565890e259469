//! AWQ end to end on tiny random checkpoints of every family: the folds are exact (the
//! independent truth: scaling + folding without quantization leaves the full forward
//! unchanged), the written fake-quant and GPTQ checkpoints agree and load, the ratio-0 grid
//! point is plain clip + RTN, and AWQ's block-output error is not above RTN's.

mod common;

use common::{calib_batches, embed_all, eval_batch, write_calib, write_model, Fam, ALL};
use faer::Mat;
use pmq_core::awq::{clip_token_rows, quantize_layer, AwqConfig};
use pmq_core::gptq::GptqConfig;
use pmq_core::matrix::from_row_major_f32;
use pmq_core::packing::CheckpointFormat;
use pmq_core::rtn::rtn;
use pmq_core::{QuantGrid, ScalePrecision};
use pmq_formats::fake_quant::write_fake_quant;
use pmq_formats::gptq_checkpoint::{write_gptq, GptqReader, GptqSettings};
use pmq_formats::{Destination, QuantizedModel};
use pmq_io::TensorStore;
use pmq_models::{load_model, BlockModel, ScaleFold, ScalingGroup, State, Tensor};
use pmq_pipeline::awq_fold::apply_scales;
use pmq_pipeline::{
    AwqOptions, DeviationMode, Method, PipelineConfig, PipelineInputs, PipelineOutput,
};
use pmq_testkit::rel_err;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const SAMPLES: usize = 10;
const BATCH: usize = 4;

struct Setup {
    _tmp: tempfile::TempDir,
    model: PathBuf,
    calib: String,
    root: PathBuf,
}

fn setup(fam: Fam) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let model = root.join("model");
    write_model(fam, &model, 11);
    let calib = write_calib(fam, &root, "task", SAMPLES, 5);
    Setup {
        _tmp: tmp,
        model,
        calib,
        root,
    }
}

fn config(method: Method, bits: u32) -> PipelineConfig {
    let grid = QuantGrid::new(bits, false, 32, ScalePrecision::F16).unwrap();
    PipelineConfig {
        method,
        gptq: GptqConfig::new(grid),
        samples_per_task: SAMPLES,
        batch_size: BATCH,
        max_seq_len: 128,
        true_sequential: true,
        deviation: DeviationMode::PerTask,
        state_dtype: candle_core::DType::F32,
        forward_cache_bytes: pmq_pipeline::DEFAULT_FORWARD_CACHE_BYTES,
        time_block_forward: false,
        alpha_auto: None,
        fold_precision: pmq_core::epmq::FoldPrecision::F32,
    }
}

fn run(s: &Setup, method: Method, bits: u32) -> PipelineOutput {
    let inputs = PipelineInputs {
        model_dir: s.model.clone(),
        experts: vec![],
        calib: vec![s.calib.parse().unwrap()],
    };
    pmq_pipeline::run(&inputs, &config(method, bits), &pmq_pipeline::NoProgress).unwrap()
}

fn load(dir: &Path) -> Box<dyn BlockModel> {
    load_model(dir).unwrap().into_block_model()
}

/// The fp model with the pipeline's quantized linears and replaced tensors.
fn quantized_model(dir: &Path, out: &PipelineOutput) -> Box<dyn BlockModel> {
    let mut m = load(dir);
    for (name, l) in &out.layers {
        let w = Tensor::from_vec(l.dequantize(), (l.rows, l.cols), &candle_core::Device::Cpu);
        m.set_linear_weight(name, w.unwrap()).unwrap();
    }
    for (name, v) in &out.tensors {
        let shape = m.tensor(name).unwrap().dims().to_vec();
        let t = Tensor::from_vec(v.clone(), shape, &candle_core::Device::Cpu).unwrap();
        m.set_tensor(name, t).unwrap();
    }
    m
}

/// Random positive scales, log-uniform in [1/3, 3].
fn random_scales(r: &mut rand::rngs::StdRng, n: usize) -> Vec<f64> {
    (0..n).map(|_| r.random_range(-1.1f64..1.1).exp()).collect()
}

fn apply_random(model: &mut dyn BlockModel, group: &ScalingGroup, r: &mut rand::rngs::StdRng) {
    let cols = model.linear_weight(&group.linears[0]).unwrap().dims()[1];
    apply_scales(model, group, &random_scales(r, cols)).unwrap();
}

#[test]
fn scaling_and_folding_without_quantization_leaves_every_family_unchanged() {
    for fam in ALL {
        let s = setup(fam);
        let batch = eval_batch(fam, &s.model, &s.root);
        let mut model = load(&s.model);
        let reference = model.forward(&batch).unwrap();
        let mut r = rand::rngs::StdRng::seed_from_u64(3);
        let mut folded = 0;
        for b in 0..model.num_blocks() {
            for g in model.awq_layout(b).unwrap().groups {
                if g.fold.is_some() {
                    apply_random(model.as_mut(), &g, &mut r);
                    folded += 1;
                }
            }
        }
        let err = rel_err(&model.forward(&batch).unwrap(), &reference);
        assert!(folded >= model.num_blocks(), "{fam:?}: only {folded} folds");
        assert!(
            err <= 1e-5,
            "{fam:?}: folded model differs, max rel err {err}"
        );
    }
}

/// The same check detects folds that are not exact (so the test above has teeth).
#[test]
fn non_exact_folds_change_the_forward() {
    let cases: Vec<(Fam, ScalingGroup)> = vec![
        // BERT post-LN: the attention LayerNorm output is also the residual
        (
            Fam::Bert,
            ScalingGroup {
                linears: vec!["encoder.layer.0.intermediate.dense".into()],
                fold: Some(ScaleFold::norm(
                    "encoder.layer.0.attention.output.LayerNorm",
                    true,
                )),
                inspect: None,
            },
        ),
        // CLIP: quick_gelu between fc1 and fc2
        (
            Fam::Clip,
            ScalingGroup {
                linears: vec!["vision_model.encoder.layers.0.mlp.fc2".into()],
                fold: Some(ScaleFold::linear(
                    "vision_model.encoder.layers.0.mlp.fc1",
                    true,
                )),
                inspect: None,
            },
        ),
        // T5 gated: the activated branch wi_0 does not commute with scaling
        (
            Fam::T5Gated,
            ScalingGroup {
                linears: vec!["encoder.block.0.layer.1.DenseReluDense.wo".into()],
                fold: Some(ScaleFold::linear(
                    "encoder.block.0.layer.1.DenseReluDense.wi_0",
                    false,
                )),
                inspect: None,
            },
        ),
    ];
    for (fam, group) in cases {
        let s = setup(fam);
        let batch = eval_batch(fam, &s.model, &s.root);
        let mut model = load(&s.model);
        let reference = model.forward(&batch).unwrap();
        apply_random(
            model.as_mut(),
            &group,
            &mut rand::rngs::StdRng::seed_from_u64(3),
        );
        let err = rel_err(&model.forward(&batch).unwrap(), &reference);
        assert!(
            err > 1e-3,
            "{fam:?}: a non-exact fold went unnoticed ({err})"
        );
    }
    // Llama with GQA: one V channel feeds several o_proj columns
    let s = setup(Fam::LlamaGqa);
    let batch = eval_batch(Fam::LlamaGqa, &s.model, &s.root);
    let mut model = load(&s.model);
    let reference = model.forward(&batch).unwrap();
    let o = "model.layers.0.self_attn.o_proj";
    let v = "model.layers.0.self_attn.v_proj";
    let s_o = random_scales(&mut rand::rngs::StdRng::seed_from_u64(4), 64);
    pmq_pipeline::awq_fold::scale_input_columns(model.as_mut(), o, &s_o).unwrap();
    // the best a per-V-channel fold can do: divide by the first head group's scales
    let w = model.linear_weight(v).unwrap();
    let st = Tensor::from_vec(
        s_o[..32].iter().map(|&x| x as f32).collect::<Vec<_>>(),
        (32, 1),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    model
        .set_linear_weight(v, w.broadcast_div(&st).unwrap())
        .unwrap();
    let err = rel_err(&model.forward(&batch).unwrap(), &reference);
    assert!(err > 1e-3, "GQA v → o fold went unnoticed ({err})");
}

#[test]
fn every_family_writes_loadable_matching_fake_and_gptq_checkpoints() {
    for fam in ALL {
        let s = setup(fam);
        let out = run(&s, Method::Awq(AwqOptions::default()), 4);
        let model = load(&s.model);
        let n_linears = model.linears().len();
        assert_eq!(out.layers.len(), n_linears, "{fam:?}");
        assert_eq!(out.report.linears.len(), n_linears, "{fam:?}");
        assert!(!out.tensors.is_empty(), "{fam:?}: no folded tensors");
        for l in &out.report.linears {
            let a = l.awq.as_ref().expect("AWQ record");
            assert!(l.objective.unwrap().is_finite() && l.objective_rtn.unwrap() > 0.0);
            if a.folded_into.is_none() {
                assert_eq!((a.scale_min, a.scale_max), (1.0, 1.0), "{}", l.name);
            }
        }
        let src = TensorStore::open_dir(&s.model).unwrap();
        let fake = s.root.join("fake");
        let gptq = s.root.join("gptq");
        let model = QuantizedModel::new(&src, &out.layers).with_replaced(&out.tensors);
        write_fake_quant(&model, None, &Destination::new(&fake)).unwrap();
        let settings = GptqSettings {
            bits: 4,
            group_size: 32,
            sym: false,
            desc_act: false,
            static_groups: false,
            true_sequential: true,
            damp_percent: 0.0,
            format: CheckpointFormat::V2,
            quantizer: "test awq".into(),
        };
        write_gptq(&model, &settings, &Destination::new(&gptq)).unwrap();
        // the GPTQ checkpoint dequantizes to exactly the fake-quant tensors
        let reader = GptqReader::open(&gptq).unwrap();
        let fake_store = TensorStore::open_dir(&fake).unwrap();
        assert_eq!(reader.names(), fake_store.names());
        for n in fake_store.names() {
            let (a, b) = (
                reader.read_f32(&n).unwrap(),
                fake_store.read_f32(&n).unwrap(),
            );
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{fam:?}: {n} differs"
            );
        }
        // the replaced tensors are in the checkpoint
        for (n, v) in &out.tensors {
            assert_eq!(&fake_store.read_f32(n).unwrap(), v, "{fam:?}: {n}");
        }
        // the fake-quant checkpoint is the in-memory quantized model
        let batch = eval_batch(fam, &s.model, &s.root);
        let written = load(&fake).forward(&batch).unwrap();
        let in_memory = quantized_model(&s.model, &out).forward(&batch).unwrap();
        assert_eq!(rel_err(&written, &in_memory), 0.0, "{fam:?}");
    }
}

/// With 8 bits the written model is close to full precision; with the quantized linears but
/// the original norms (the folds dropped) it is not: the replaced tensors matter.
#[test]
fn eight_bit_awq_keeps_the_function_and_needs_its_folded_tensors() {
    for fam in ALL {
        let s = setup(fam);
        let out = run(&s, Method::Awq(AwqOptions::default()), 8);
        let batch = eval_batch(fam, &s.model, &s.root);
        let fp = load(&s.model).forward(&batch).unwrap();
        let q = quantized_model(&s.model, &out).forward(&batch).unwrap();
        let err = rel_err(&q, &fp);
        // (the tiny random models amplify: 8-bit RTN alone is at ≈ 3 % on the Llama logits)
        assert!(err < 0.1, "{fam:?}: 8-bit AWQ rel err {err}");
        let scaled = out
            .report
            .linears
            .iter()
            .any(|l| l.awq.as_ref().unwrap().scale_max > 1.5);
        if scaled {
            let mut dropped = quantized_model(&s.model, &out);
            let orig = load(&s.model);
            for n in out.tensors.keys() {
                dropped.set_tensor(n, orig.tensor(n).unwrap()).unwrap();
            }
            let e = rel_err(&dropped.forward(&batch).unwrap(), &fp);
            assert!(e > 2.0 * err, "{fam:?}: without folds {e}, with {err}");
        }
    }
}

/// Every linear's inputs on the full-precision trajectory, concatenated over batches.
fn fp_inputs(
    model: &dyn BlockModel,
    states: &mut [State],
    block: usize,
) -> HashMap<String, Mat<f64>> {
    let mut rows: HashMap<String, (usize, Vec<f32>)> = HashMap::new();
    for st in states.iter_mut() {
        let mut cap = |name: &str, x: &Tensor| -> pmq_models::Result<()> {
            let (_, c) = x.dims2()?;
            let v: Vec<f32> = x.flatten_all()?.to_vec1()?;
            rows.entry(name.to_string())
                .or_insert((c, vec![]))
                .1
                .extend(v);
            Ok(())
        };
        *st = model.block_forward(block, st, Some(&mut cap)).unwrap();
    }
    rows.into_iter()
        .map(|(n, (c, v))| (n, from_row_major_f32(v.len() / c, c, &v)))
        .collect()
}

#[test]
fn the_ratio_zero_grid_point_is_plain_clip_and_rtn() {
    // llm-awq scales with a one-point grid: r = 0 gives s = x̄⁰ = 1
    let opts = AwqOptions {
        duo_scaling: false,
        n_grid: 1,
        clip: true,
    };
    for fam in [Fam::Bert, Fam::LlamaMha, Fam::T5Gated] {
        let s = setup(fam);
        let out = run(&s, Method::Awq(opts), 4);
        assert!(out.tensors.is_empty(), "{fam:?}: s = 1 must change nothing");
        let grid = config(Method::Awq(opts), 4).gptq.grid;
        let cfg = AwqConfig::default();
        let model = load(&s.model);
        let mut states = embed_all(
            model.as_ref(),
            &calib_batches(&s.model, &s.calib, SAMPLES, BATCH),
        );
        for b in 0..model.num_blocks() {
            let x = fp_inputs(model.as_ref(), &mut states, b);
            let skip = model.awq_layout(b).unwrap().skip_clip;
            for spec in model.block_groups(b).unwrap().concat() {
                let w = model.linear_weight(&spec.name).unwrap();
                let w: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
                let w = from_row_major_f32(spec.out_features, spec.in_features, &w);
                let want = if skip.contains(&spec.name) {
                    rtn(w.as_ref(), &grid).unwrap()
                } else {
                    let xs = &x[&spec.name];
                    let keep = clip_token_rows(xs.nrows(), cfg.clip_tokens);
                    let xs = Mat::from_fn(keep.len(), xs.ncols(), |i, j| xs[(keep[i], j)]);
                    let ones = vec![1.0; spec.in_features];
                    quantize_layer(w.as_ref(), &ones, Some(xs.as_ref()), &grid, &cfg)
                        .unwrap()
                        .layer
                };
                let got = &out.layers[&spec.name];
                let differ = got
                    .codes
                    .iter()
                    .zip(&want.codes)
                    .filter(|(a, b)| a != b)
                    .count();
                assert_eq!(differ, 0, "{fam:?} {}: codes differ", spec.name);
                assert_eq!(got.scales, want.scales, "{fam:?} {}", spec.name);
                let r = out.report.linears.iter().find(|l| l.name == spec.name);
                let a = r.unwrap().awq.as_ref().unwrap();
                assert_eq!((a.scale_min, a.scale_max), (1.0, 1.0));
            }
        }
    }
}

/// Mean squared error of every block's output, each block fed the full-precision block input.
fn block_errors(
    fp: &dyn BlockModel,
    q: &dyn BlockModel,
    batches: &[pmq_models::Batch],
) -> Vec<f64> {
    let mut states = embed_all(fp, batches);
    let mut errs = Vec::new();
    for b in 0..fp.num_blocks() {
        let (mut sse, mut n) = (0.0, 0usize);
        let mut next = Vec::new();
        for st in &states {
            let want = fp.block_forward(b, st, None).unwrap();
            let got = q.block_forward(b, st, None).unwrap();
            // the hidden states of the stream the block works on (T5's last encoder block
            // switches to the decoder stream: compare its output before the switch instead)
            let (w, g) = if want.hidden().dims() == st.hidden().dims() {
                (want.hidden().clone(), got.hidden().clone())
            } else {
                (
                    fp.sub_block_output(b, st, pmq_models::SubBlock::Mlp)
                        .unwrap(),
                    q.sub_block_output(b, st, pmq_models::SubBlock::Mlp)
                        .unwrap(),
                )
            };
            let d: Vec<f32> = (g - w).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            sse += d.iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
            n += d.len();
            next.push(want);
        }
        errs.push(sse / n as f64);
        states = next;
    }
    errs
}

#[test]
fn awq_block_output_error_is_not_above_rtn() {
    for fam in ALL {
        let s = setup(fam);
        let awq = run(&s, Method::Awq(AwqOptions::default()), 4);
        let plain = run(&s, Method::Rtn, 4);
        let fp = load(&s.model);
        let batches = calib_batches(&s.model, &s.calib, SAMPLES, BATCH);
        let e_awq = block_errors(
            fp.as_ref(),
            quantized_model(&s.model, &awq).as_ref(),
            &batches,
        );
        let e_rtn = block_errors(
            fp.as_ref(),
            quantized_model(&s.model, &plain).as_ref(),
            &batches,
        );
        println!("{fam:?}: AWQ {e_awq:?} RTN {e_rtn:?}");
        for (b, (a, r)) in e_awq.iter().zip(&e_rtn).enumerate() {
            assert!(a <= r, "{fam:?} block {b}: AWQ {a} > RTN {r}");
        }
    }
}

/// Pre-norm blocks: output = input + attention (+ cross-attention) + MLP, with each sub-block
/// output as [`BlockModel::sub_block_output`] reports it (what AWQ's search inspects).
#[test]
fn sub_block_outputs_add_up_to_the_block_output() {
    use pmq_models::SubBlock;
    for fam in [Fam::Clip, Fam::LlamaMha, Fam::T5Gated] {
        let s = setup(fam);
        let model = load(&s.model);
        let batch = eval_batch(fam, &s.model, &s.root);
        let mut st = model.embed(&batch).unwrap();
        for b in 0..model.num_blocks() {
            let next = model.block_forward(b, &st, None).unwrap();
            let rows = |t: &Tensor| {
                let d = t.dims()[2];
                let flat = t.reshape(((), d)).unwrap();
                match st.valid_rows() {
                    Some(r) => flat.index_select(r, 0).unwrap(),
                    None => flat,
                }
            };
            let mut sum = rows(st.hidden());
            let mut subs = vec![SubBlock::SelfAttention, SubBlock::Mlp];
            if model
                .sub_block_output(b, &st, SubBlock::CrossAttention)
                .is_ok()
            {
                subs.push(SubBlock::CrossAttention);
            }
            for sub in subs {
                sum = (sum + model.sub_block_output(b, &st, sub).unwrap()).unwrap();
            }
            if next.hidden().dims() == st.hidden().dims() {
                let err = rel_err(&sum, &rows(next.hidden()));
                assert!(err < 1e-5, "{fam:?} block {b}: {err}");
            }
            st = next;
        }
    }
}
