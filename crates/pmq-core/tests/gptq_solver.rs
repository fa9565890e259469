mod common;

use common::*;
use faer::Mat;
use pmq_core::damping::Damping;
use pmq_core::gptq::{gptq, GptqConfig, GroupFit, Precision};
use pmq_core::objective::quadratic_error;
use pmq_core::rtn::rtn;
use pmq_core::{CoreError, QuantGrid, ScalePrecision};

fn grid(bits: u32, sym: bool, group: i64) -> QuantGrid {
    QuantGrid::new(bits, sym, group, ScalePrecision::F64).unwrap()
}

#[test]
fn identity_hessian_equals_rtn() {
    let mut r = rng(1);
    for (bits, sym, group) in [(4, false, 16), (3, true, -1), (2, false, 32), (8, true, 8)] {
        let w = randn(&mut r, 12, 64);
        let h = Mat::<f64>::identity(64, 64);
        let g = grid(bits, sym, group);
        let out = gptq(w.as_ref(), h.as_ref(), &GptqConfig::new(g)).unwrap();
        let base = rtn(w.as_ref(), &g).unwrap();
        assert_eq!(
            out.layer.codes, base.codes,
            "bits {bits} sym {sym} group {group}"
        );
        assert_eq!(out.layer.dequant, base.dequant);
        assert_eq!(out.layer.scales, base.scales);
        assert_eq!(out.layer.zeros, base.zeros);
    }
}

#[test]
fn gptq_never_worse_than_rtn_on_the_same_hessian() {
    let mut r = rng(2);
    let mut wins = 0;
    for case in 0..40 {
        let cols = [16, 48, 96, 160][case % 4];
        let rows = 8 + case % 5;
        let w = randn(&mut r, rows, cols);
        let h = hessian(&mut r, cols, 4 * cols);
        let bits = [2, 3, 4, 8][case % 4];
        let group = [-1, 16, 32, 64][(case / 4) % 4];
        let mut cfg = GptqConfig::new(grid(bits, case % 3 == 0, group));
        cfg.act_order = case % 2 == 0;
        cfg.static_groups = case % 6 == 0;
        cfg.block_size = [128, 32, 7][case % 3];
        let out = gptq(w.as_ref(), h.as_ref(), &cfg).unwrap();
        let base = rtn(w.as_ref(), &cfg.grid).unwrap();
        let e_gptq = quadratic_error(out.layer.dequant.as_ref(), w.as_ref(), h.as_ref());
        let e_rtn = quadratic_error(base.dequant.as_ref(), w.as_ref(), h.as_ref());
        assert!(
            e_gptq <= e_rtn * (1.0 + 1e-9),
            "case {case}: gptq {e_gptq} > rtn {e_rtn}"
        );
        if e_gptq < 0.95 * e_rtn {
            wins += 1;
        }
    }
    assert!(
        wins >= 30,
        "GPTQ should clearly beat RTN on correlated inputs, won {wins}/40"
    );
}

#[test]
fn reported_objective_matches_direct_trace() {
    let mut r = rng(3);
    for case in 0..12 {
        let w = randn(&mut r, 10, 64);
        let mut h = hessian(&mut r, 64, 200);
        if case % 3 == 0 {
            for k in 0..64 {
                h[(5, k)] = 0.0;
                h[(k, 5)] = 0.0;
            }
        }
        let mut cfg = GptqConfig::new(grid(4, case % 2 == 0, [16, -1, 24][case % 3]));
        cfg.act_order = case % 4 < 2;
        cfg.block_size = [128, 16, 5][case % 3];
        // f64 working precision: exact up to rounding; f32 (the default): to f32 accuracy
        for (precision, tol) in [(Precision::F64, 1e-8), (Precision::F32, 1e-5)] {
            cfg.precision = precision;
            let out = gptq(w.as_ref(), h.as_ref(), &cfg).unwrap();
            let direct = quadratic_error(out.layer.dequant.as_ref(), w.as_ref(), h.as_ref());
            assert!(
                (out.objective - direct).abs() <= tol * direct.max(1.0),
                "case {case} {precision:?}: reported {} direct {direct}",
                out.objective
            );
        }
    }
}

#[test]
fn codes_scales_zeros_and_g_idx_reproduce_the_dequantized_weight() {
    let mut r = rng(4);
    for (act_order, static_groups) in [(false, false), (true, false), (true, true), (false, true)] {
        let w = randn(&mut r, 9, 96);
        let h = hessian(&mut r, 96, 300);
        let mut cfg = GptqConfig::new(grid(3, false, 32));
        cfg.act_order = act_order;
        cfg.static_groups = static_groups;
        let out = gptq(w.as_ref(), h.as_ref(), &cfg).unwrap();
        assert_eq!(out.layer.dequantize_from_codes(), out.layer.dequant);
        let trivial = (0..96).all(|c| out.layer.g_idx[c] == (c / 32) as u32);
        assert_eq!(
            trivial,
            !act_order || static_groups,
            "act {act_order} static {static_groups}"
        );
        assert_eq!(out.layer.num_groups(), 3);
    }
}

/// With groups fitted on the current weights, lazy blocks only reorder the arithmetic. (With
/// the reference's fit, block size changes which weights a group is fitted on.)
#[test]
fn lazy_block_size_does_not_change_the_result() {
    let mut r = rng(5);
    let w = randn(&mut r, 7, 100);
    let h = hessian(&mut r, 100, 400);
    let mut results = Vec::new();
    for bs in [1, 13, 32, 128] {
        let mut cfg = GptqConfig::new(grid(4, false, 20));
        cfg.group_fit = GroupFit::Updated;
        cfg.block_size = bs;
        results.push(gptq(w.as_ref(), h.as_ref(), &cfg).unwrap());
    }
    for o in &results[1..] {
        let diff = o
            .layer
            .codes
            .iter()
            .zip(&results[0].layer.codes)
            .filter(|(a, b)| a != b)
            .count();
        assert!(diff <= 2, "{diff} codes differ between block sizes");
        assert!((o.objective - results[0].objective).abs() <= 1e-6 * results[0].objective);
    }
}

#[test]
fn act_order_quantizes_large_diagonal_columns_first() {
    let mut r = rng(6);
    let w = randn(&mut r, 4, 32);
    let h = hessian(&mut r, 32, 100);
    let mut cfg = GptqConfig::new(grid(4, false, 8));
    cfg.act_order = true;
    let out = gptq(w.as_ref(), h.as_ref(), &cfg).unwrap();
    let perm = out.perm.unwrap();
    for k in 1..32 {
        assert!(h[(perm[k - 1], perm[k - 1])] >= h[(perm[k], perm[k])]);
    }
    for (j, &c) in perm.iter().enumerate() {
        assert_eq!(out.layer.g_idx[c] as usize, j / 8);
    }
}

#[test]
fn dead_inputs_get_zero_weights() {
    let mut r = rng(7);
    let w = randn(&mut r, 6, 16);
    let mut h = hessian(&mut r, 16, 64);
    for k in 0..16 {
        h[(3, k)] = 0.0;
        h[(k, 3)] = 0.0;
    }
    let out = gptq(w.as_ref(), h.as_ref(), &GptqConfig::new(grid(4, false, -1))).unwrap();
    assert_eq!(out.dead_columns, 1);
    for i in 0..6 {
        assert_eq!(out.layer.dequant[(i, 3)], 0.0);
    }
}

#[test]
fn singular_hessian_without_damping_is_damped_automatically() {
    let mut r = rng(8);
    let w = randn(&mut r, 5, 40);
    let h = hessian(&mut r, 40, 10); // rank 10 < 40
    let mut cfg = GptqConfig::new(grid(4, false, -1));
    cfg.damping = Damping::gptq(0.0);
    let out = gptq(w.as_ref(), h.as_ref(), &cfg).unwrap();
    assert!(
        out.percdamp > 0.0 && out.damping > 0.0,
        "damping {}",
        out.percdamp
    );
    assert!(out.objective.is_finite());
    for j in 0..40 {
        for i in 0..5 {
            assert!(out.layer.dequant[(i, j)].is_finite());
        }
    }
}

#[test]
fn tiny_cases_against_brute_force() {
    // 1 row, 4 columns, 2 bits, one per-row grid: enumerate all 4^4 code vectors. With a
    // diagonal H the objective separates and GPTQ must hit the exact optimum; with a full H it
    // can never beat it.
    let mut r = rng(9);
    for case in 0..40 {
        let w = randn(&mut r, 1, 4);
        let mut h = hessian(&mut r, 4, 6);
        let diagonal = case % 2 == 0;
        if diagonal {
            h = Mat::from_fn(4, 4, |i, j| if i == j { h[(i, j)] } else { 0.0 });
        }
        let g = grid(2, false, -1);
        let out = gptq(w.as_ref(), h.as_ref(), &GptqConfig::new(g)).unwrap();
        let p = out.layer.params(0, 0);
        let mut best = f64::INFINITY;
        for code in 0..256u32 {
            let q = Mat::from_fn(1, 4, |_, j| QuantGrid::dequant((code >> (2 * j)) & 3, p));
            best = best.min(quadratic_error(q.as_ref(), w.as_ref(), h.as_ref()));
        }
        let e = quadratic_error(out.layer.dequant.as_ref(), w.as_ref(), h.as_ref());
        assert!(e >= best * (1.0 - 1e-12) - 1e-12, "case {case}");
        if diagonal {
            assert!(
                (e - best).abs() <= 1e-12 * best.max(1.0),
                "case {case}: {e} vs optimum {best}"
            );
        }
    }
}

#[test]
fn bad_inputs_are_named() {
    let w = Mat::<f64>::from_fn(2, 3, |i, j| if i == 1 && j == 2 { f64::NAN } else { 1.0 });
    let h = Mat::<f64>::identity(3, 3);
    let err = gptq(w.as_ref(), h.as_ref(), &GptqConfig::new(grid(4, false, -1))).unwrap_err();
    assert!(
        matches!(err, CoreError::NonFinite { row: 1, col: 2, .. }),
        "{err}"
    );
    let h4 = Mat::<f64>::identity(4, 4);
    let w = Mat::<f64>::zeros(2, 3);
    let err = gptq(
        w.as_ref(),
        h4.as_ref(),
        &GptqConfig::new(grid(4, false, -1)),
    )
    .unwrap_err();
    assert!(err.to_string().contains("Hessian"), "{err}");
}

/// The textbook GPTQ of the original code, written independently of the solver: `U` from
/// `chol(H_d⁻¹)` with an explicit inverse, then column by column in f64 without lazy blocks,
/// group parameters fitted when a group starts: with `fit_block = Some(bs)` on the weights as
/// they were when the current block of `bs` columns started (what the reference's `W` holds
/// there), with `None` on the current weights.
fn textbook_gptq(
    w: &Mat<f64>,
    h: &Mat<f64>,
    g: &QuantGrid,
    percdamp: f64,
    fit_block: Option<usize>,
) -> (Vec<u32>, f64) {
    use faer::linalg::solvers::DenseSolveCore;
    let (rows, cols) = (w.nrows(), w.ncols());
    let mean = (0..cols).map(|j| h[(j, j)]).sum::<f64>() / cols as f64;
    let mut hd = h.clone();
    for j in 0..cols {
        hd[(j, j)] += percdamp * mean;
    }
    let inv = hd.llt(faer::Side::Lower).unwrap().inverse();
    let u = inv
        .llt(faer::Side::Lower)
        .unwrap()
        .L()
        .transpose()
        .to_owned();
    let mut w = w.clone();
    let mut codes = vec![0u32; rows * cols];
    let mut params = vec![g.fit([0.0]); rows];
    let mut obj = 0.0;
    let mut seen = w.clone();
    for j in 0..cols {
        match fit_block {
            Some(bs) if j % bs == 0 => seen = w.clone(),
            None => seen = w.clone(),
            _ => {}
        }
        for r in 0..rows {
            match g.group_size {
                Some(gs) if j % gs == 0 => {
                    params[r] = g.fit((j..(j + gs).min(cols)).map(|c| seen[(r, c)]))
                }
                None if j == 0 => params[r] = g.fit((0..cols).map(|c| w[(r, c)])),
                _ => {}
            }
            let code = g.code(w[(r, j)], params[r]);
            codes[r * cols + j] = code;
            let e = (w[(r, j)] - QuantGrid::dequant(code, params[r])) / u[(j, j)];
            obj += e * e;
            for k in j + 1..cols {
                w[(r, k)] -= e * u[(j, k)];
            }
        }
    }
    (codes, obj)
}

#[test]
fn fast_solver_agrees_with_the_textbook_algorithm_in_both_precisions() {
    let mut r = rng(11);
    for case in 0..16 {
        let cols = [64, 96, 130, 200][case % 4];
        let rows = [7, 33, 64, 5][(case / 4) % 4];
        let w = randn(&mut r, rows, cols);
        let h = hessian(&mut r, cols, 3 * cols);
        let g = grid(
            [4, 3, 2, 8][case % 4],
            case % 3 == 0,
            [-1, 32, 64, 128][(case / 2) % 4],
        );
        let block_size = [128, 32, 7, 64][case % 4];
        for (precision, group_fit) in [
            (Precision::F64, GroupFit::Reference),
            (Precision::F32, GroupFit::Reference),
            (Precision::F64, GroupFit::Updated),
            (Precision::F32, GroupFit::Updated),
        ] {
            let fit_block = (group_fit == GroupFit::Reference).then_some(block_size);
            let (want_codes, want_obj) = textbook_gptq(&w, &h, &g, 0.01, fit_block);
            let mut cfg = GptqConfig::new(g);
            cfg.precision = precision;
            cfg.group_fit = group_fit;
            cfg.block_size = block_size;
            let out = gptq(w.as_ref(), h.as_ref(), &cfg).unwrap();
            let same = out
                .layer
                .codes
                .iter()
                .zip(&want_codes)
                .filter(|(a, b)| **a as u32 == **b)
                .count();
            let frac = same as f64 / want_codes.len() as f64;
            assert!(
                frac >= 0.99,
                "case {case} {precision:?}: {frac} identical codes"
            );
            let rel = (out.damped_objective - want_obj).abs() / want_obj;
            assert!(
                rel <= 0.01,
                "case {case} {precision:?}: objective off by {rel}"
            );
            if precision == Precision::F64 {
                assert!(frac >= 0.999, "case {case}: f64 should match, {frac}");
            }
        }
    }
}

/// On GGUF's block grids (Q4_0, Q4_1, Q8_0: blocks of 32 inside lazy blocks of 128), the solver
/// is the textbook algorithm with the reference's group fit, and beats RTN on the same grid.
#[test]
fn gptq_on_gguf_grids_follows_the_textbook_and_beats_rtn() {
    use pmq_core::GridKind;
    let mut r = rng(21);
    for (k, kind) in [GridKind::GgufQ4_0, GridKind::GgufQ4_1, GridKind::GgufQ8_0]
        .into_iter()
        .enumerate()
    {
        let (rows, cols) = (24, [96, 160, 256][k]);
        let w = randn(&mut r, rows, cols);
        let h = hessian(&mut r, cols, 3 * cols);
        let g = QuantGrid::gguf(kind);
        let (want_codes, want_obj) = textbook_gptq(&w, &h, &g, 0.01, Some(128));
        let mut cfg = GptqConfig::new(g);
        cfg.precision = Precision::F64;
        let out = gptq(w.as_ref(), h.as_ref(), &cfg).unwrap();
        let same = out
            .layer
            .codes
            .iter()
            .zip(&want_codes)
            .filter(|(a, b)| **a as u32 == **b)
            .count();
        assert!(
            same as f64 >= 0.999 * want_codes.len() as f64,
            "{kind:?}: {same}"
        );
        assert!(
            (out.damped_objective - want_obj).abs() <= 1e-6 * want_obj,
            "{kind:?}"
        );
        assert_eq!(out.layer.dequantize_from_codes(), out.layer.dequant);
        let base = rtn(w.as_ref(), &g).unwrap();
        let rtn_loss = quadratic_error(base.dequant.as_ref(), w.as_ref(), h.as_ref());
        assert!(
            out.objective < rtn_loss,
            "{kind:?}: {} vs {rtn_loss}",
            out.objective
        );
    }
}
