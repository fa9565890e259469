mod common;

use common::*;
use faer::{Mat, MatRef};
use pmq_core::damping::Damping;
use pmq_core::epmq::{epmq, epmq_target, EpmqObjective, EpmqProblem};
use pmq_core::gptq::{gptq, GptqConfig};
use pmq_core::objective::{quadratic_error, squared_distance};
use pmq_core::{QuantGrid, ScalePrecision};

struct Case {
    merged: Mat<f64>,
    experts: Vec<Mat<f64>>,
    hessians: Vec<Mat<f64>>,
}

fn case(seed: u64, k: usize, rows: usize, cols: usize, tokens: usize) -> Case {
    let mut r = rng(seed);
    let base = randn(&mut r, rows, cols);
    let experts: Vec<_> = (0..k)
        .map(|_| {
            let tau = randn(&mut r, rows, cols);
            Mat::from_fn(rows, cols, |i, j| base[(i, j)] + 0.3 * tau[(i, j)])
        })
        .collect();
    let merged = Mat::from_fn(rows, cols, |i, j| {
        base[(i, j)]
            + 0.3
                * experts
                    .iter()
                    .map(|e| e[(i, j)] - base[(i, j)])
                    .sum::<f64>()
    });
    let hessians = (0..k).map(|_| hessian(&mut r, cols, tokens)).collect();
    Case {
        merged,
        experts,
        hessians,
    }
}

fn with_problem<T>(c: &Case, f: impl FnOnce(&EpmqProblem<'_>) -> T) -> T {
    let experts: Vec<MatRef<'_, f64>> = c.experts.iter().map(|m| m.as_ref()).collect();
    let hessians: Vec<MatRef<'_, f64>> = c.hessians.iter().map(|m| m.as_ref()).collect();
    f(&EpmqProblem {
        merged: c.merged.as_ref(),
        experts: &experts,
        hessians: &hessians,
    })
}

fn direct_objective(c: &Case, lambda: f64, q: MatRef<'_, f64>) -> f64 {
    c.experts
        .iter()
        .zip(&c.hessians)
        .map(|(w, h)| quadratic_error(q, w.as_ref(), h.as_ref()))
        .sum::<f64>()
        + lambda * squared_distance(q, c.merged.as_ref())
}

fn grid() -> QuantGrid {
    QuantGrid::new(4, false, 16, ScalePrecision::F64).unwrap()
}

#[test]
fn target_solves_the_normal_equations() {
    let c = case(11, 3, 6, 32, 80);
    with_problem(&c, |p| {
        let obj = EpmqObjective::new(p, 0.01).unwrap();
        let t = epmq_target(&obj).unwrap();
        assert_eq!(t.extra_damping, 0.0);
        let lhs = &t.target * obj.h_e();
        let r = obj.r();
        let scale = (0..32).map(|j| r.col(j).norm_l2()).fold(0.0, f64::max);
        assert!(max_abs_diff(&lhs, &r) <= 1e-9 * scale, "W*·H_E ≠ R");
        // λ = α · mean(diag ΣH_i)
        let hq: Mat<f64> = c.hessians.iter().fold(Mat::zeros(32, 32), |a, h| a + h);
        let mean = (0..32).map(|j| hq[(j, j)]).sum::<f64>() / 32.0;
        assert!((obj.lambda - 0.01 * mean).abs() <= 1e-12 * mean);
    });
}

#[test]
fn target_is_the_continuous_minimiser() {
    let c = case(12, 2, 5, 24, 60);
    with_problem(&c, |p| {
        let obj = EpmqObjective::new(p, 0.05).unwrap();
        let t = epmq_target(&obj).unwrap();
        let f0 = direct_objective(&c, obj.lambda, t.target.as_ref());
        let mut r = rng(99);
        for _ in 0..10 {
            let d = randn(&mut r, 5, 24);
            let moved = &t.target + faer::Scale(1e-3) * &d;
            assert!(direct_objective(&c, obj.lambda, moved.as_ref()) > f0);
        }
    });
}

#[test]
fn objective_matches_the_direct_sum_and_completes_the_square() {
    let c = case(13, 4, 7, 20, 50);
    with_problem(&c, |p| {
        let obj = EpmqObjective::new(p, 0.1).unwrap();
        let t = epmq_target(&obj).unwrap();
        let h_e = obj.h_e();
        let mut r = rng(5);
        let mut constants = Vec::new();
        for _ in 0..5 {
            let q = randn(&mut r, 7, 20);
            let direct = direct_objective(&c, obj.lambda, q.as_ref());
            assert!((obj.eval(q.as_ref()) - direct).abs() <= 1e-9 * direct);
            constants.push(direct - quadratic_error(q.as_ref(), t.target.as_ref(), h_e.as_ref()));
        }
        for k in &constants[1..] {
            assert!((k - constants[0]).abs() <= 1e-8 * constants[0].abs().max(1.0));
        }
    });
}

#[test]
fn single_expert_with_tiny_alpha_targets_that_expert() {
    let c = case(14, 1, 6, 16, 100);
    with_problem(&c, |p| {
        let obj = EpmqObjective::new(p, 1e-8).unwrap();
        let t = epmq_target(&obj).unwrap();
        assert!(max_abs_diff(&t.target, &c.experts[0]) < 1e-6);
    });
}

#[test]
fn single_expert_equal_to_merged_is_gptq_damped_by_alpha() {
    let mut c = case(15, 1, 8, 64, 300);
    c.experts[0] = c.merged.clone();
    let alpha = 0.01;
    let mut cfg = GptqConfig::new(grid());
    cfg.damping = Damping::gptq(0.0);
    let e = with_problem(&c, |p| epmq(p, alpha, &cfg).unwrap());
    assert!(max_abs_diff(&e.target.target, &c.merged) < 1e-9);
    let g = gptq(
        c.merged.as_ref(),
        c.hessians[0].as_ref(),
        &GptqConfig::new(grid()),
    )
    .unwrap();
    assert!((g.damping - e.target.lambda).abs() <= 1e-12 * g.damping);
    let differ = e
        .gptq
        .layer
        .codes
        .iter()
        .zip(&g.layer.codes)
        .filter(|(a, b)| a != b)
        .count();
    assert!(differ <= 2, "{differ} codes differ");
    // E-PMQ objective = GPTQ's damped objective here: Σ‖QX − W_mX‖² + λ‖Q − W_m‖².
    assert!((e.objective - g.damped_objective).abs() <= 1e-6 * g.damped_objective);
}

#[test]
fn epmq_objective_ordering() {
    let c = case(16, 3, 10, 48, 120);
    let cfg = {
        let mut cfg = GptqConfig::new(grid());
        cfg.damping = Damping::gptq(0.0);
        cfg
    };
    let e = with_problem(&c, |p| epmq(p, 0.01, &cfg).unwrap());
    // W* is the continuous optimum: no quantized weight (nor W_m) does better.
    assert!(e.objective_target <= e.objective);
    let at_merged = with_problem(&c, |p| EpmqObjective::new(p, 0.01).unwrap().at_merged());
    assert!(e.objective_target <= at_merged);
    // E-PMQ beats naive GPTQ-on-merged under its own objective.
    let hq: Mat<f64> = c.hessians.iter().fold(Mat::zeros(48, 48), |a, h| a + h);
    let naive = gptq(c.merged.as_ref(), hq.as_ref(), &GptqConfig::new(grid())).unwrap();
    let naive_obj = direct_objective(&c, e.target.lambda, naive.layer.dequant.as_ref());
    assert!(
        e.objective < naive_obj,
        "epmq {} naive {naive_obj}",
        e.objective
    );
    assert!(
        (direct_objective(&c, e.target.lambda, e.gptq.layer.dequant.as_ref()) - e.objective).abs()
            <= 1e-8 * e.objective
    );
}

#[test]
fn alpha_zero_runs_with_rank_deficient_hessians() {
    let c = case(17, 2, 4, 40, 8); // 16 tokens for 40 inputs: ΣH_i is singular
    let mut cfg = GptqConfig::new(grid());
    cfg.damping = Damping::gptq(0.0);
    let e = with_problem(&c, |p| epmq(p, 0.0, &cfg).unwrap());
    assert_eq!(e.target.lambda, 0.0);
    assert!(e.target.extra_damping > 0.0);
    assert!(e.objective.is_finite());
}

#[test]
fn mismatched_inputs_are_refused() {
    let c = case(18, 2, 4, 8, 20);
    let experts: Vec<MatRef<'_, f64>> = c.experts.iter().map(|m| m.as_ref()).collect();
    let hessians: Vec<MatRef<'_, f64>> = vec![c.hessians[0].as_ref()];
    let p = EpmqProblem {
        merged: c.merged.as_ref(),
        experts: &experts,
        hessians: &hessians,
    };
    assert!(EpmqObjective::new(&p, 0.01)
        .unwrap_err()
        .to_string()
        .contains("one Hessian per expert"));
    let wrong = Mat::<f64>::zeros(4, 9);
    let experts2 = vec![wrong.as_ref(), c.experts[1].as_ref()];
    let hessians2: Vec<MatRef<'_, f64>> = c.hessians.iter().map(|m| m.as_ref()).collect();
    let p = EpmqProblem {
        merged: c.merged.as_ref(),
        experts: &experts2,
        hessians: &hessians2,
    };
    let err = EpmqObjective::new(&p, 0.01).unwrap_err().to_string();
    assert!(err.contains("expert 0 weight"), "{err}");
    assert!(EpmqObjective::new(
        &EpmqProblem {
            merged: c.merged.as_ref(),
            experts: &experts,
            hessians: &hessians2
        },
        -1.0
    )
    .is_err());
}

/// The f32 fold (`Δ_i H_i` in f32 GEMMs, summed in f64) solves the same problems as the f64
/// reference: the folded sums agree to f32 accuracy and the quantized layers are the same up
/// to a few rounding ties, with objectives within 1e-6 — also at α = 0 with a singular
/// `ΣH_i` (extra damping) and with a heavy-tailed spread of input scales.
#[test]
fn f32_fold_solves_the_same_problems_as_the_f64_reference() {
    use pmq_core::epmq::{epmq_solve, FoldPrecision};
    let mut cfg = GptqConfig::new(QuantGrid::new(4, false, 32, ScalePrecision::F32).unwrap());
    cfg.damping = Damping::gptq(0.0);
    for (seed, k, rows, cols, tokens, alpha) in [
        (31, 4, 48, 192, 400, 0.01),
        (32, 8, 32, 128, 300, 1.0),
        (33, 3, 24, 160, 40, 0.0), // 120 tokens for 160 inputs: singular ΣH_i
    ] {
        let mut c = case(seed, k, rows, cols, tokens);
        // fine-tuning-sized task vectors (the case's are 30 % of the weights), and inputs
        // whose scales span four orders of magnitude
        for e in &mut c.experts {
            *e = &c.merged + faer::Scale(0.05) * (&*e - &c.merged);
        }
        for h in &mut c.hessians {
            *h = Mat::from_fn(cols, cols, |i, j| {
                let s = |t: usize| 10f64.powf(-2.0 + 4.0 * ((t * 37) % cols) as f64 / cols as f64);
                h[(i, j)] * s(i) * s(j)
            });
        }
        let solve = |p: FoldPrecision| {
            let obj = with_problem(&c, |pr| {
                EpmqObjective::with_precision(pr, alpha, p).unwrap()
            });
            let out = epmq_solve(&obj, &cfg).unwrap();
            (obj, out)
        };
        let (o64, e64) = solve(FoldPrecision::F64);
        let (o32, e32) = solve(FoldPrecision::F32);
        let d_err = max_abs_diff(&o32.d, &o64.d) / o64.d.norm_max();
        assert!(d_err <= 1e-5, "seed {seed}: D differs by {d_err:e}");
        assert!((o32.c - o64.c).abs() <= 1e-5 * o64.c, "seed {seed}: c");
        let same = e32
            .gptq
            .layer
            .codes
            .iter()
            .zip(&e64.gptq.layer.codes)
            .filter(|(a, b)| a == b)
            .count() as f64
            / e64.gptq.layer.codes.len() as f64;
        assert!(
            same >= 0.99,
            "seed {seed}: {:.2} % identical codes",
            100.0 * same
        );
        // both objectives measured exactly, on the f64 problem
        let direct = |q: MatRef<'_, f64>| direct_objective(&c, o64.lambda, q);
        let (f32_obj, f64_obj) = (
            direct(e32.gptq.layer.dequant.as_ref()),
            direct(e64.gptq.layer.dequant.as_ref()),
        );
        assert!(
            (f32_obj - f64_obj).abs() <= 1e-6 * f64_obj,
            "seed {seed}: objective {f32_obj} vs {f64_obj}"
        );
    }
}
