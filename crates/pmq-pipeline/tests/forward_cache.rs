//! The forward cache (outputs of a block's quantized linears kept between its capture passes,
//! `PipelineConfig::forward_cache_bytes`) changes speed only: on every family, GPTQ and E-PMQ
//! give bit-identical codes, scales and report objectives with the cache off, with a budget
//! too small for everything (some outputs kept, others recomputed) and with the default, with
//! true-sequential groups and without, and with bf16 calibration states.

mod common;

use common::{write_calib, write_model, ALL};
use pmq_core::gptq::GptqConfig;
use pmq_core::{QuantGrid, ScalePrecision};
use pmq_pipeline::{
    DeviationMode, Method, PipelineConfig, PipelineInputs, PipelineOutput,
    DEFAULT_FORWARD_CACHE_BYTES,
};

fn run(
    inputs: &PipelineInputs,
    method: Method,
    cache: usize,
    true_sequential: bool,
    state_dtype: candle_core::DType,
) -> PipelineOutput {
    let grid = QuantGrid::new(3, false, 32, ScalePrecision::F16).unwrap();
    let mut gptq = GptqConfig::new(grid);
    gptq.damping = pmq_core::damping::Damping::gptq(method.default_percdamp());
    let cfg = PipelineConfig {
        method,
        gptq,
        samples_per_task: 6,
        batch_size: 2,
        max_seq_len: 64,
        true_sequential,
        deviation: DeviationMode::Total,
        state_dtype,
        forward_cache_bytes: cache,
        time_block_forward: false,
        alpha_auto: None,
        fold_precision: pmq_core::epmq::FoldPrecision::F32,
    };
    pmq_pipeline::run(inputs, &cfg, &pmq_pipeline::NoProgress).unwrap()
}

fn assert_same(a: &PipelineOutput, b: &PipelineOutput, tag: &str) {
    assert_eq!(a.layers.len(), b.layers.len(), "{tag}");
    for (name, la) in &a.layers {
        assert!(la == &b.layers[name], "{tag}: {name} differs");
    }
    for (ra, rb) in a.report.linears.iter().zip(&b.report.linears) {
        assert_eq!(ra.name, rb.name, "{tag}");
        assert_eq!(
            ra.objective.map(f64::to_bits),
            rb.objective.map(f64::to_bits),
            "{tag}: {}",
            ra.name
        );
        assert_eq!(
            ra.deviation.as_ref().map(|d| d.quant.to_bits()),
            rb.deviation.as_ref().map(|d| d.quant.to_bits()),
            "{tag}: {}",
            ra.name
        );
    }
}

#[test]
fn the_forward_cache_changes_nothing_but_speed() {
    for fam in ALL {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let model = root.join("model");
        write_model(fam, &model, 21);
        let experts = vec![root.join("e1"), root.join("e2")];
        write_model(fam, &experts[0], 22);
        write_model(fam, &experts[1], 23);
        let calib = vec![
            write_calib(fam, root, "t1", 6, 7).parse().unwrap(),
            write_calib(fam, root, "t2", 6, 8).parse().unwrap(),
        ];
        for method in [Method::Gptq, Method::Epmq { alpha: 0.01 }] {
            let inputs = PipelineInputs {
                model_dir: model.clone(),
                experts: if method.needs_experts() {
                    experts.clone()
                } else {
                    vec![]
                },
                calib: calib.clone(),
            };
            for (true_seq, dtype) in [
                (true, candle_core::DType::F32),
                (false, candle_core::DType::F32),
                (true, candle_core::DType::BF16),
            ] {
                let tag = format!(
                    "{fam:?} {} true_sequential={true_seq} {dtype:?}",
                    method.label()
                );
                let off = run(&inputs, method, 0, true_seq, dtype);
                assert_eq!(off.report.phases.forward_cache_peak_mib, 0.0, "{tag}");
                let full = run(
                    &inputs,
                    method,
                    DEFAULT_FORWARD_CACHE_BYTES,
                    true_seq,
                    dtype,
                );
                assert_same(&off, &full, &format!("{tag}, cache on"));
                if !true_seq {
                    continue;
                }
                // with true-sequential groups the quantized linears' outputs are kept ...
                let peak = full.report.phases.forward_cache_peak_mib;
                assert!(peak > 0.0, "{tag}: nothing was kept");
                // ... and a budget for part of them keeps some and recomputes the rest
                let part = run(
                    &inputs,
                    method,
                    (peak * 1048576.0 / 3.0) as usize,
                    true_seq,
                    dtype,
                );
                let kept = part.report.phases.forward_cache_peak_mib;
                assert!(kept > 0.0 && kept < peak, "{tag}: {kept} of {peak} MiB");
                assert_same(&off, &part, &format!("{tag}, part cached"));
            }
        }
    }
}

/// The bits of the real tokens' hidden states (a pass with a forward cache leaves padding
/// tokens out of the linears).
fn bits(s: &pmq_models::State) -> Vec<u32> {
    let h = s.hidden();
    let flat = h
        .reshape(((), h.dim(candle_core::D::Minus1).unwrap()))
        .unwrap();
    let real = match s.valid_rows() {
        Some(r) => flat.index_select(r, 0).unwrap(),
        None => flat,
    };
    real.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

#[test]
fn kept_outputs_are_reused_and_a_changed_weight_is_recomputed() {
    use pmq_models::{load_model, MemoBudget, OutputMemo};
    for fam in ALL {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("model");
        write_model(fam, &dir, 31);
        let mut model = load_model(&dir).unwrap().into_block_model();
        let state = model
            .embed(&common::eval_batch(fam, &dir, tmp.path()))
            .unwrap();
        const BUDGET: usize = 1 << 30;
        let budget = MemoBudget::new(BUDGET);
        let mut memo = OutputMemo::new(budget.clone());
        let first = model.block_groups(0).unwrap().remove(0);
        memo.freeze(first.iter().map(|l| &l.name));
        let plain = bits(&model.block_forward(0, &state, None).unwrap());
        let kept = model
            .block_forward_memo(0, &state, None, &mut memo)
            .unwrap();
        assert_eq!(bits(&kept), plain, "{fam:?}");
        let held = memo.bytes();
        assert!(
            held > 0,
            "{fam:?}: the frozen group's outputs were not kept"
        );
        assert_eq!(budget.left(), BUDGET - held, "{fam:?}");
        // the kept outputs are reused: their linears are neither computed nor reported
        let mut reported = Vec::new();
        let mut capture = |name: &str, _: &pmq_models::Tensor| -> pmq_models::Result<()> {
            reported.push(name.to_string());
            Ok(())
        };
        let reused = model
            .block_forward_memo(0, &state, Some(&mut capture), &mut memo)
            .unwrap();
        assert_eq!(bits(&reused), plain, "{fam:?}");
        assert!(
            first.iter().all(|l| !reported.contains(&l.name)),
            "{fam:?}: {reported:?}"
        );
        let rest = model.block_groups(0).unwrap().concat().len() - first.len();
        assert_eq!(reported.len(), rest, "{fam:?}: {reported:?}");
        // a frozen linear whose weight changes anyway is recomputed, not served stale
        let name = &first[0].name;
        let w = (model.linear_weight(name).unwrap() * 0.5).unwrap();
        model.set_linear_weight(name, w).unwrap();
        let changed = bits(&model.block_forward(0, &state, None).unwrap());
        assert_ne!(changed, plain, "{fam:?}");
        let after = model
            .block_forward_memo(0, &state, None, &mut memo)
            .unwrap();
        assert_eq!(bits(&after), changed, "{fam:?}");
        drop(memo);
        assert_eq!(
            budget.left(),
            BUDGET,
            "{fam:?}: the memo's bytes were not returned"
        );
    }
}
