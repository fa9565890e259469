//! RTN, GPTQ and E-PMQ (2 experts, 2 calibration tasks) on tiny random checkpoints of every
//! family (BERT, CLIP vision, T5 ReLU and gated, Llama with and without GQA): each quantizes
//! every linear, its GPTQ checkpoint dequantizes bit-exactly to its fake-quant checkpoint, the
//! fake-quant checkpoint loads and runs, and the Eq. 9 report covers both tasks.

mod common;

use common::{eval_batch, write_calib, write_model, ALL};
use pmq_core::gptq::GptqConfig;
use pmq_core::packing::CheckpointFormat;
use pmq_core::{QuantGrid, ScalePrecision};
use pmq_formats::fake_quant::write_fake_quant;
use pmq_formats::gptq_checkpoint::{write_gptq, GptqReader, GptqSettings};
use pmq_formats::{Destination, QuantizedModel};
use pmq_io::TensorStore;
use pmq_models::load_model;
use pmq_pipeline::{DeviationMode, Method, PipelineConfig, PipelineInputs};

#[test]
fn every_method_on_every_family_writes_matching_loadable_checkpoints() {
    for fam in ALL {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let model = root.join("model");
        write_model(fam, &model, 11);
        // Two "experts" of the same architecture (other random weights).
        let experts = vec![root.join("e1"), root.join("e2")];
        write_model(fam, &experts[0], 12);
        write_model(fam, &experts[1], 13);
        let calib = vec![
            write_calib(fam, root, "t1", 6, 5).parse().unwrap(),
            write_calib(fam, root, "t2", 6, 6).parse().unwrap(),
        ];
        let n_linears = load_model(&model)
            .unwrap()
            .into_block_model()
            .linears()
            .len();
        for method in [Method::Rtn, Method::Gptq, Method::Epmq { alpha: 0.01 }] {
            let inputs = PipelineInputs {
                model_dir: model.clone(),
                experts: if method.needs_experts() {
                    experts.clone()
                } else {
                    vec![]
                },
                calib: calib.clone(),
            };
            let grid = QuantGrid::new(4, false, 32, ScalePrecision::F16).unwrap();
            let mut gptq = GptqConfig::new(grid);
            if matches!(method, Method::Epmq { .. }) {
                gptq.damping = pmq_core::damping::Damping::gptq(0.0);
            }
            let cfg = PipelineConfig {
                method,
                gptq,
                samples_per_task: 6,
                batch_size: 3,
                max_seq_len: 64,
                true_sequential: true,
                deviation: DeviationMode::PerTask,
                state_dtype: candle_core::DType::F32,
                forward_cache_bytes: pmq_pipeline::DEFAULT_FORWARD_CACHE_BYTES,
                time_block_forward: false,
                alpha_auto: None,
                fold_precision: pmq_core::epmq::FoldPrecision::F32,
            };
            let out = pmq_pipeline::run(&inputs, &cfg, &pmq_pipeline::NoProgress).unwrap();
            let tag = format!("{fam:?} {}", method.label());
            assert_eq!(out.layers.len(), n_linears, "{tag}");
            assert_eq!(out.report.linears.len(), n_linears, "{tag}");
            for l in &out.report.linears {
                assert!(l.objective.is_none_or(f64::is_finite), "{tag}: {}", l.name);
                if method.needs_calibration() {
                    let d = l.deviation.as_ref().expect("Eq. 9 split");
                    assert!(d.quant.is_finite() && d.quant >= 0.0, "{tag}");
                    if method.needs_experts() {
                        assert_eq!(d.per_task.len(), 2, "{tag}: one entry per task");
                    }
                }
            }
            let src = TensorStore::open_dir(&model).unwrap();
            let fake = root.join(format!("fake-{}", method.label()));
            let gdir = root.join(format!("gptq-{}", method.label()));
            let qm = QuantizedModel::new(&src, &out.layers).with_replaced(&out.tensors);
            write_fake_quant(&qm, None, &Destination::new(&fake)).unwrap();
            let settings = GptqSettings {
                bits: 4,
                group_size: 32,
                sym: false,
                desc_act: false,
                static_groups: false,
                true_sequential: true,
                damp_percent: 0.01,
                format: CheckpointFormat::V2,
                quantizer: format!("test {}", method.label()),
            };
            write_gptq(&qm, &settings, &Destination::new(&gdir)).unwrap();
            // where transformers/optimum look for the quantized linears
            let config: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(gdir.join("config.json")).unwrap())
                    .unwrap();
            let qc = &config["quantization_config"];
            let (blocks, modules) = (
                &qc["block_name_to_quantize"],
                &qc["modules_in_block_to_quantize"],
            );
            match fam {
                common::Fam::Bert => assert_eq!(blocks, "encoder.layer", "{tag}"),
                common::Fam::Clip => assert_eq!(blocks, "vision_model.encoder.layers", "{tag}"),
                common::Fam::LlamaGqa | common::Fam::LlamaMha => {
                    assert_eq!(blocks, "model.layers", "{tag}")
                }
                common::Fam::T5Relu | common::Fam::T5Gated => {
                    assert_eq!(blocks, "", "{tag}");
                    let m = modules[0].as_array().unwrap();
                    assert!(
                        m.iter().any(|p| p == "layer.0.SelfAttention.q"),
                        "{tag}: {m:?}"
                    );
                    assert!(
                        m.iter().any(|p| p == "layer.1.EncDecAttention.k"),
                        "{tag}: {m:?}"
                    );
                    assert!(m.iter().all(|p| p != "lm_head"), "{tag}: {m:?}");
                }
            }
            if !matches!(fam, common::Fam::T5Relu | common::Fam::T5Gated) {
                assert!(modules.is_null(), "{tag}: {modules}");
            }
            let reader = GptqReader::open(&gdir).unwrap();
            let fake_store = TensorStore::open_dir(&fake).unwrap();
            assert_eq!(reader.names(), fake_store.names(), "{tag}");
            for n in fake_store.names() {
                let (a, b) = (
                    reader.read_f32(&n).unwrap(),
                    fake_store.read_f32(&n).unwrap(),
                );
                assert!(
                    a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{tag}: {n} differs"
                );
            }
            let batch = eval_batch(fam, &model, root);
            let y = load_model(&fake)
                .unwrap()
                .into_block_model()
                .forward(&batch)
                .unwrap();
            let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
            assert!(v.iter().all(|x| x.is_finite()), "{tag}: non-finite output");
        }
    }
}

/// The run options that only change what is measured, or when inputs are captured: the total
/// deviation split equals the per-task one summed, and the codes do not depend on it; one
/// capture per block (no true-sequential) still quantizes every linear, with the first group
/// identical (its inputs are the same either way).
#[test]
fn deviation_modes_and_fold_precisions_agree_and_true_sequential_only_changes_later_groups() {
    for fam in ALL {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let model = root.join("model");
        write_model(fam, &model, 21);
        let experts = vec![root.join("e1"), root.join("e2"), root.join("e3")];
        for (i, e) in experts.iter().enumerate() {
            write_model(fam, e, 22 + i as u64);
        }
        let calib: Vec<_> = (0..3)
            .map(|i| {
                write_calib(fam, root, &format!("t{i}"), 5, 4 + i as u64)
                    .parse()
                    .unwrap()
            })
            .collect();
        let inputs = PipelineInputs {
            model_dir: model.clone(),
            experts: experts.clone(),
            calib,
        };
        let grid = QuantGrid::new(4, false, 32, ScalePrecision::F16).unwrap();
        let mut gptq = GptqConfig::new(grid);
        gptq.damping = pmq_core::damping::Damping::gptq(0.0);
        let cfg = |deviation, true_sequential| PipelineConfig {
            method: Method::Epmq { alpha: 0.01 },
            gptq,
            samples_per_task: 5,
            batch_size: 2,
            max_seq_len: 64,
            true_sequential,
            deviation,
            state_dtype: candle_core::DType::F32,
            forward_cache_bytes: pmq_pipeline::DEFAULT_FORWARD_CACHE_BYTES,
            time_block_forward: false,
            alpha_auto: None,
            fold_precision: pmq_core::epmq::FoldPrecision::F32,
        };
        let per_task = pmq_pipeline::run(
            &inputs,
            &cfg(DeviationMode::PerTask, true),
            &pmq_pipeline::NoProgress,
        )
        .unwrap();
        let total = pmq_pipeline::run(
            &inputs,
            &cfg(DeviationMode::Total, true),
            &pmq_pipeline::NoProgress,
        )
        .unwrap();
        let tag = format!("{fam:?}");
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-4 * x.abs().max(1e-6);
        // the f64 fold (the reference) quantizes the first group (the same inputs in both
        // runs) to the same codes up to rounding ties, with the same figures; later groups see
        // inputs that differ by those ties, which GPTQ's error feedback turns into other codes
        let mut reference = cfg(DeviationMode::Total, true);
        reference.fold_precision = pmq_core::epmq::FoldPrecision::F64;
        let reference = pmq_pipeline::run(&inputs, &reference, &pmq_pipeline::NoProgress).unwrap();
        let (mut same, mut all) = (0usize, 0usize);
        let first = |l: &&pmq_pipeline::report::LinearRecord| l.block == 0 && l.group == 0;
        for (a, b) in total
            .report
            .linears
            .iter()
            .filter(first)
            .zip(reference.report.linears.iter().filter(first))
        {
            let (x, y) = (&total.layers[&a.name], &reference.layers[&b.name]);
            same += x.codes.iter().zip(&y.codes).filter(|(p, q)| p == q).count();
            all += x.codes.len();
            let (da, db) = (a.deviation.as_ref().unwrap(), b.deviation.as_ref().unwrap());
            for (x, y) in [
                (a.objective, b.objective),
                (da.merge_rms, db.merge_rms),
                (da.expert_rms, db.expert_rms),
            ] {
                let (x, y) = (x.unwrap(), y.unwrap());
                assert!(
                    (x - y).abs() <= 1e-4 * y.abs(),
                    "{tag} {}: f32 fold {x} vs f64 {y}",
                    a.name
                );
            }
        }
        assert!(
            all > 0 && same as f64 >= 0.99 * all as f64,
            "{tag}: {same} of {all} codes of the first group as with the f64 fold"
        );
        for (a, b) in per_task.report.linears.iter().zip(&total.report.linears) {
            assert_eq!(a.name, b.name);
            assert_eq!(
                per_task.layers[&a.name], total.layers[&b.name],
                "{tag} {}",
                a.name
            );
            let (da, db) = (a.deviation.as_ref().unwrap(), b.deviation.as_ref().unwrap());
            assert_eq!(da.per_task.len(), 3);
            assert!(db.per_task.is_empty());
            assert!(
                close(da.quant, db.quant),
                "{tag} {}: quant {} vs {}",
                a.name,
                da.quant,
                db.quant
            );
            for (x, y) in [(da.merge_rms, db.merge_rms), (da.expert_rms, db.expert_rms)] {
                let (x, y) = (x.unwrap(), y.unwrap());
                assert!(close(x, y), "{tag} {}: {x} vs {y}", a.name);
            }
            assert!(
                close(a.objective_rtn.unwrap(), b.objective_rtn.unwrap()),
                "{tag}"
            );
        }
        let one_pass = pmq_pipeline::run(
            &inputs,
            &cfg(DeviationMode::Total, false),
            &pmq_pipeline::NoProgress,
        )
        .unwrap();
        assert_eq!(one_pass.layers.len(), total.layers.len(), "{tag}");
        assert!(
            one_pass.report.phases.capture_passes_per_block
                < total.report.phases.capture_passes_per_block
                || total.report.phases.capture_passes_per_block == 0.0
        );
        for l in &total.report.linears {
            if l.block == 0 && l.group == 0 {
                assert_eq!(
                    one_pass.layers[&l.name], total.layers[&l.name],
                    "{tag} {}",
                    l.name
                );
            }
        }
    }
}
