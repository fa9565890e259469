//! Degenerate inputs are said, not passed silently: an expert given twice or equal to the
//! model, blank calibration samples (all blank: refused), a Hessian without any signal
//! (refused), input columns no sample reached (warned per linear) — in the report and the log.

mod common;

use common::{write_calib, write_model, Fam};
use faer::Mat;
use pmq_core::gptq::GptqConfig;
use pmq_core::{QuantGrid, ScalePrecision};
use pmq_pipeline::method::{solve, LinearProblem};
use pmq_pipeline::{DeviationMode, Method, PipelineConfig, PipelineInputs};

fn cfg(method: Method) -> PipelineConfig {
    let grid = QuantGrid::new(4, false, 32, ScalePrecision::F16).unwrap();
    let mut c = PipelineConfig::new(method, grid);
    c.gptq = GptqConfig {
        damping: c.gptq.damping,
        ..GptqConfig::new(grid)
    };
    c.samples_per_task = 6;
    c.batch_size = 3;
    c.max_seq_len = 32;
    c.deviation = DeviationMode::Total;
    c
}

#[test]
fn duplicate_experts_and_blank_samples_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let model = root.join("model");
    write_model(Fam::Bert, &model, 11);
    let e1 = root.join("e1");
    write_model(Fam::Bert, &e1, 12);
    let t1: pmq_pipeline::CalibSpec = write_calib(Fam::Bert, root, "t1", 6, 5).parse().unwrap();
    // task 2: some blank lines among real ones
    let t2 = root.join("t2.jsonl");
    std::fs::write(
        &t2,
        "{\"text\": \"the movie was great\"}\n{\"text\": \"   \"}\n{\"text\": \"\"}\n{\"text\": \"it was bad\"}\n",
    )
    .unwrap();
    let inputs = PipelineInputs {
        model_dir: model.clone(),
        experts: vec![e1.clone(), e1.clone()],
        calib: vec![t1.clone(), format!("t2={}", t2.display()).parse().unwrap()],
    };
    let out = pmq_pipeline::run(
        &inputs,
        &cfg(Method::Epmq { alpha: 0.01 }),
        &pmq_pipeline::NoProgress,
    )
    .unwrap();
    let w = out.report.warnings.join("\n");
    assert!(w.contains("experts 1 and 2 are the same checkpoint"), "{w}");
    assert!(
        w.contains("task \"t2\": 2 of 4 calibration samples are empty"),
        "{w}"
    );
    assert!(out.report.to_markdown().contains("## Warnings"));
    // the model given as an expert
    let inputs = PipelineInputs {
        experts: vec![model.clone(), e1.clone()],
        ..inputs
    };
    let out = pmq_pipeline::run(
        &inputs,
        &cfg(Method::Epmq { alpha: 0.01 }),
        &pmq_pipeline::NoProgress,
    )
    .unwrap();
    let w = out.report.warnings.join("\n");
    assert!(
        w.contains("expert 1") && w.contains("is the model being quantized"),
        "{w}"
    );
    // every sample blank: refused
    std::fs::write(&t2, "{\"text\": \" \"}\n{\"text\": \"\"}\n").unwrap();
    let inputs = PipelineInputs {
        model_dir: model,
        experts: vec![],
        calib: vec![format!("t2={}", t2.display()).parse().unwrap()],
    };
    let err = pmq_pipeline::run(&inputs, &cfg(Method::Gptq), &pmq_pipeline::NoProgress)
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains("every calibration sample of task \"t2\""),
        "{err:#}"
    );
}

#[test]
fn a_hessian_without_signal_is_refused_and_dead_columns_are_counted() {
    let grid = QuantGrid::new(4, false, 8, ScalePrecision::F16).unwrap();
    let g = GptqConfig::new(grid);
    let w = Mat::<f64>::from_fn(4, 16, |i, j| ((i * 16 + j) as f64 * 0.37).sin());
    let zero = Mat::<f64>::zeros(16, 16);
    for method in [Method::Gptq, Method::Epmq { alpha: 0.01 }] {
        let experts = matches!(method, Method::Epmq { .. }).then(|| {
            let mut f = pmq_core::epmq::ExpertFold::new(w.as_ref());
            f.add(w.as_ref(), zero.as_ref()).unwrap();
            f
        });
        let p = LinearProblem {
            merged: &w,
            h_q: Some(&zero),
            experts,
        };
        let err = solve(method, p, &g).err().expect("refused");
        assert!(err.to_string().contains("no calibration signal"), "{err}");
    }
    // 3 of 16 columns never excited: GPTQ zeroes them and says how many
    let x = Mat::<f64>::from_fn(40, 16, |t, j| {
        if j < 3 {
            0.0
        } else {
            ((t * 7 + j * 3) as f64).cos()
        }
    });
    let h = x.transpose() * &x;
    let p = LinearProblem {
        merged: &w,
        h_q: Some(&h),
        experts: None,
    };
    let sol = solve(Method::Gptq, p, &g).unwrap();
    assert_eq!(sol.dead_columns, Some(3));
    for i in 0..4 {
        for j in 0..3 {
            assert_eq!(sol.layer.dequant[(i, j)], 0.0);
        }
    }
}
