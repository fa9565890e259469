mod common;

use common::*;
use faer::{Mat, MatRef};
use pmq_core::awq::{
    activation_scale, candidate_scales, clip_token_rows, fake_quantize, quantize_layer,
    scale_columns, search_clip, search_scales, unscale_columns, weight_scale, AwqConfig,
    LinearOutputLoss,
};
use pmq_core::rtn::rtn;
use pmq_core::{CoreError, QuantGrid, ScalePrecision};

fn grid(bits: u32, sym: bool, group: i64) -> QuantGrid {
    QuantGrid::new(bits, sym, group, ScalePrecision::F64).unwrap()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-300)
}

/// `Σ_j ‖(Q_j − W_j) Xᵀ‖²_F`, straight from the definition.
fn output_error(q: &[Mat<f64>], w: &[Mat<f64>], x: &Mat<f64>) -> f64 {
    let mut s = 0.0;
    for (qj, wj) in q.iter().zip(w) {
        let d = qj - wj;
        let e = &d * x.transpose();
        for t in 0..e.ncols() {
            for r in 0..e.nrows() {
                s += e[(r, t)] * e[(r, t)];
            }
        }
    }
    s
}

/// Token rows with unit-variance channels except a few salient ones with large magnitude.
fn salient_inputs(seed: u64, tokens: usize, dim: usize, salient: &[(usize, f64)]) -> Mat<f64> {
    let mut r = rng(seed);
    let mut x = randn(&mut r, tokens, dim);
    for &(c, f) in salient {
        for t in 0..tokens {
            x[(t, c)] *= f;
        }
    }
    x
}

fn refs(w: &[Mat<f64>]) -> Vec<MatRef<'_, f64>> {
    w.iter().map(|m| m.as_ref()).collect()
}

#[test]
fn candidate_scales_match_hand_computation() {
    // r = 0 without duo scaling is exactly no scaling (x^0 = 1, also for x = 0)
    let x = [0.0, 0.3, 2.0, 17.0];
    assert!(candidate_scales(&x, None, 0.0).iter().all(|&s| s == 1.0));

    // normalisation: sqrt(max · min) = 1
    let x: Vec<f64> = (0..50).map(|i| 0.01 + (i as f64 * 0.37) % 5.0).collect();
    let w: Vec<f64> = (0..50).map(|i| 0.05 + (i as f64 * 0.13) % 1.0).collect();
    for ratio in [0.0, 0.35, 0.95] {
        for wm in [None, Some(&w[..])] {
            let s = candidate_scales(&x, wm, ratio);
            let max = s.iter().cloned().fold(f64::MIN, f64::max);
            let min = s.iter().cloned().fold(f64::MAX, f64::min);
            assert!(((max * min).sqrt() - 1.0).abs() < 1e-12, "r {ratio}");
        }
    }

    // duo: s_c = x_c^r / (w_c^(1−r) + 1e-4), then / sqrt(max·min)
    let s = candidate_scales(&[0.5, 2.0, 8.0], Some(&[0.2, 0.5, 0.9]), 0.25);
    let raw: [f64; 3] = [2.810766789431754, 1.999663697992929, 1.8198836225319996];
    let norm = (raw[0] * raw[2]).sqrt();
    let want = [1.2427695346652425, 0.8841434774259808, 0.8046544207163593];
    for c in 0..3 {
        assert!(close(s[c], raw[c] / norm, 1e-12));
        assert!(close(s[c], want[c], 1e-12), "{} vs {}", s[c], want[c]);
    }

    // x-only with a dead channel: 0^r = 0 is clamped to 1e-4 before normalising
    let s = candidate_scales(&[0.0, 0.5, 3.0], None, 0.5);
    let norm = (1e-4 * 3f64.sqrt()).sqrt();
    for (c, raw) in [1e-4, 0.5f64.sqrt(), 3f64.sqrt()].into_iter().enumerate() {
        assert!(close(s[c], raw / norm, 1e-12));
    }
    assert!(close(s[2], 131.60740129524925, 1e-12));
}

#[test]
fn activation_and_weight_scale_match_hand_computation() {
    let x = Mat::from_fn(2, 3, |i, j| [[1.0, -2.0, 0.0], [-3.0, 4.0, 0.5]][i][j]);
    assert_eq!(activation_scale(x.as_ref()), vec![2.0, 3.0, 0.25]);

    let w1 = Mat::from_fn(1, 4, |_, j| [1.0, -2.0, 3.0, -4.0][j]);
    let w2 = Mat::from_fn(1, 4, |_, j| [0.5, 0.5, -1.0, 2.0][j]);
    let ws = [w1.as_ref(), w2.as_ref()];
    // groups of 2: |w| / group absmax, then mean over the 2 concatenated rows
    let got = weight_scale(&ws, &grid(4, false, 2)).unwrap();
    for (g, want) in got.iter().zip([0.75, 1.0, 0.625, 1.0]) {
        assert!((g - want).abs() < 1e-5, "{got:?}");
    }
    // per row: W1 / 4, W2 / 2
    let got = weight_scale(&ws, &grid(4, false, -1)).unwrap();
    for (g, want) in got.iter().zip([0.25, 0.375, 0.625, 1.0]) {
        assert!((g - want).abs() < 1e-5, "{got:?}");
    }
    // the reference's + 1e-6 in the denominator
    assert!(close(
        got[3],
        0.5 * (4.0 / 4.000001 + 2.0 / 2.000001),
        1e-12
    ));

    let bad = Mat::<f64>::zeros(1, 3);
    assert!(matches!(
        weight_scale(&[w1.as_ref(), bad.as_ref()], &grid(4, false, 2)),
        Err(CoreError::Shape { .. })
    ));
}

#[test]
fn fake_quantize_equals_rtn_and_scaling_folds_into_inputs() {
    let mut r = rng(3);
    for (bits, sym, group, cols) in [(4, false, 16, 64), (3, true, -1, 40), (4, false, 32, 70)] {
        let w = randn(&mut r, 9, cols);
        let g = grid(bits, sym, group);
        assert_eq!(
            fake_quantize(w.as_ref(), &g),
            rtn(w.as_ref(), &g).unwrap().dequant
        );
    }
    // exact ties (x/scale = k + 1/2) round half to even, as rtn
    let ties = Mat::from_fn(3, 16, |i, j| (j as f64 - 7.5) * [1.0, 0.25, -3.0][i]);
    for g in [grid(4, false, -1), grid(4, true, 8), grid(3, false, 4)] {
        assert_eq!(
            fake_quantize(ties.as_ref(), &g),
            rtn(ties.as_ref(), &g).unwrap().dequant
        );
    }
    // Q(W·diag(s))·diag(1/s) applied to X equals Q(W·diag(s)) applied to X·diag(1/s)
    let w = randn(&mut r, 6, 32);
    let x = randn(&mut r, 20, 32);
    let s: Vec<f64> = (0..32).map(|c| 0.3 + 0.1 * c as f64).collect();
    let q = rtn(scale_columns(w.as_ref(), &s).as_ref(), &grid(4, false, 8))
        .unwrap()
        .dequant;
    let a = &x * unscale_columns(q.as_ref(), &s).transpose();
    let b = unscale_columns(x.as_ref(), &s) * q.transpose();
    assert!(max_abs_diff(&a, &b) < 1e-12);
}

#[test]
fn scale_search_beats_rtn_on_salient_channels() {
    let dim = 64;
    let x = salient_inputs(
        11,
        256,
        dim,
        &[(3, 25.0), (17, 15.0), (40, 30.0), (41, 10.0)],
    );
    let mut r = rng(12);
    let ws = vec![randn(&mut r, 24, dim), randn(&mut r, 16, dim)];
    let x_mean = activation_scale(x.as_ref());
    let g = grid(3, false, 32);
    let rtn_q: Vec<Mat<f64>> = ws
        .iter()
        .map(|w| rtn(w.as_ref(), &g).unwrap().dequant)
        .collect();
    let rtn_loss = output_error(&rtn_q, &ws, &x);

    for cfg in [AwqConfig::llm_awq(), AwqConfig::default()] {
        let mut calls = 0;
        let res = search_scales(&refs(&ws), &x_mean, &g, &cfg, |q| {
            calls += 1;
            Ok(output_error(q, &ws, &x))
        })
        .unwrap();
        assert_eq!(res.ratios.len(), cfg.n_grid);
        assert_eq!(res.losses.len(), cfg.n_grid);
        // the unscaled loss is RTN's; one extra call only with duo scaling
        assert!(close(res.loss_unscaled, rtn_loss, 1e-12));
        assert_eq!(calls, cfg.n_grid + usize::from(cfg.duo_scaling));
        if !cfg.duo_scaling {
            assert_eq!(res.losses[0], rtn_loss);
        }
        let i = res.best.expect("a grid ratio wins on salient data");
        let min = res.losses.iter().cloned().fold(f64::INFINITY, f64::min);
        assert_eq!(res.loss, min);
        assert_eq!(res.losses[i], min);
        assert_eq!(res.losses.iter().position(|&l| l == min), Some(i));
        let ratio = res.ratio().unwrap();
        assert!(cfg.ratios().contains(&ratio) && ratio > 0.0 && ratio < 1.0);
        assert!(
            res.loss < 0.5 * rtn_loss,
            "duo {}: AWQ {} vs RTN {rtn_loss}",
            cfg.duo_scaling,
            res.loss
        );
        // the chosen scales reproduce the chosen loss
        let q: Vec<Mat<f64>> = ws
            .iter()
            .map(|w| {
                let qs = rtn(scale_columns(w.as_ref(), &res.scales).as_ref(), &g).unwrap();
                unscale_columns(qs.dequant.as_ref(), &res.scales)
            })
            .collect();
        assert!(close(output_error(&q, &ws, &x), res.loss, 1e-12));
        // the salient channels get the largest scales
        let top = (0..dim)
            .max_by(|&a, &b| res.scales[a].total_cmp(&res.scales[b]))
            .unwrap();
        assert!([3, 17, 40].contains(&top), "top scale at {top}");
    }
}

#[test]
fn scale_search_equals_brute_force_over_the_grid() {
    let dim = 8;
    let x = salient_inputs(21, 30, dim, &[(2, 8.0), (5, 3.0)]);
    let mut r = rng(22);
    let ws = vec![randn(&mut r, 3, dim), randn(&mut r, 2, dim)];
    let x_mean = activation_scale(x.as_ref());
    let g = grid(3, false, 4);
    for duo in [false, true] {
        let cfg = AwqConfig {
            duo_scaling: duo,
            identity_fallback: false,
            n_grid: 10,
            ..AwqConfig::default()
        };
        let res = search_scales(&refs(&ws), &x_mean, &g, &cfg, |q| {
            Ok(output_error(q, &ws, &x))
        })
        .unwrap();
        // w̄ by definition: |w| / group absmax (+1e-6), mean over the 5 concatenated rows
        let w_mean: Vec<f64> = (0..dim)
            .map(|c| {
                let mut s = 0.0;
                for w in &ws {
                    for row in 0..w.nrows() {
                        let g0 = c / 4 * 4;
                        let amax = (g0..g0 + 4).map(|k| w[(row, k)].abs()).fold(0.0, f64::max);
                        s += w[(row, c)].abs() / (amax + 1e-6);
                    }
                }
                s / 5.0
            })
            .collect();
        let mut brute = Vec::new();
        for i in 0..10 {
            let ratio = i as f64 / 10.0;
            let raw: Vec<f64> = (0..dim)
                .map(|c| {
                    let v = if duo {
                        x_mean[c].powf(ratio) / (w_mean[c].powf(1.0 - ratio) + 1e-4)
                    } else {
                        x_mean[c].powf(ratio)
                    };
                    v.max(1e-4)
                })
                .collect();
            let max = raw.iter().cloned().fold(f64::MIN, f64::max);
            let min = raw.iter().cloned().fold(f64::MAX, f64::min);
            let s: Vec<f64> = raw.iter().map(|v| v / (max * min).sqrt()).collect();
            let q: Vec<Mat<f64>> = ws
                .iter()
                .map(|w| {
                    let ws_ = Mat::from_fn(w.nrows(), dim, |a, b| w[(a, b)] * s[b]);
                    let qd = rtn(ws_.as_ref(), &g).unwrap().dequant;
                    Mat::from_fn(w.nrows(), dim, |a, b| qd[(a, b)] / s[b])
                })
                .collect();
            brute.push(output_error(&q, &ws, &x));
        }
        for (a, b) in res.losses.iter().zip(&brute) {
            assert!(close(*a, *b, 1e-9), "duo {duo}: {a} vs {b}");
        }
        let min = brute.iter().cloned().fold(f64::INFINITY, f64::min);
        let argmin = brute.iter().position(|&l| l == min).unwrap();
        assert_eq!(res.best, Some(argmin), "duo {duo}");
        assert!(close(res.loss, min, 1e-9));
    }
}

#[test]
fn identity_fallback_keeps_awq_no_worse_than_rtn() {
    // A loss that only likes the plain RTN weights: with duo scaling no grid ratio is s = 1.
    let mut r = rng(31);
    let ws = vec![randn(&mut r, 4, 16)];
    let x_mean: Vec<f64> = (0..16).map(|c| 0.5 + c as f64).collect();
    let g = grid(4, false, 8);
    let plain = rtn(ws[0].as_ref(), &g).unwrap().dequant;
    let loss = |q: &[Mat<f64>]| Ok(if q[0] == plain { 0.5 } else { 1.0 });

    let res = search_scales(&refs(&ws), &x_mean, &g, &AwqConfig::default(), loss).unwrap();
    assert_eq!(res.best, None);
    assert_eq!(res.ratio(), None);
    assert!(res.scales.iter().all(|&s| s == 1.0));
    assert_eq!((res.loss, res.loss_unscaled), (0.5, 0.5));
    assert!(res.losses.iter().all(|&l| l == 1.0));

    // AutoAWQ semantics: the first grid minimum wins even if scaling hurts
    let cfg = AwqConfig {
        identity_fallback: false,
        ..AwqConfig::default()
    };
    let res = search_scales(&refs(&ws), &x_mean, &g, &cfg, loss).unwrap();
    assert_eq!(res.best, Some(0));
    assert_eq!((res.loss, res.loss_unscaled), (1.0, 0.5));

    // without duo scaling r = 0 is the identity, so the grid itself holds RTN
    let res = search_scales(&refs(&ws), &x_mean, &g, &AwqConfig::llm_awq(), loss).unwrap();
    assert_eq!(res.best, Some(0));
    assert_eq!(res.loss, 0.5);

    // no finite loss anywhere is an error, a failing loss is passed through
    let nan = |_: &[Mat<f64>]| Ok(f64::NAN);
    assert!(matches!(
        search_scales(&refs(&ws), &x_mean, &g, &AwqConfig::llm_awq(), nan),
        Err(CoreError::NonFinite { .. })
    ));
    let fail = |_: &[Mat<f64>]| Err(CoreError::Config("block failed".into()));
    assert!(matches!(
        search_scales(&refs(&ws), &x_mean, &g, &AwqConfig::default(), fail),
        Err(CoreError::Config(_))
    ));
}

#[test]
fn linear_output_loss_is_the_mean_squared_output_error() {
    let mut r = rng(41);
    let ws = vec![randn(&mut r, 5, 12), randn(&mut r, 3, 12)];
    let g = grid(3, false, 4);
    let q: Vec<Mat<f64>> = ws.iter().map(|w| fake_quantize(w.as_ref(), &g)).collect();
    // fewer tokens than channels (X path) and more (XᵀX path)
    for tokens in [7, 50] {
        let x = randn(&mut r, tokens, 12);
        let l = LinearOutputLoss::new(&refs(&ws), x.as_ref()).unwrap();
        let want = output_error(&q, &ws, &x) / (tokens * 8) as f64;
        assert!(close(l.loss(&q).unwrap(), want, 1e-10), "tokens {tokens}");
    }
}

/// `mean_t (Σ_{c∈g} (q − w)_c x_tc)²` of one row-group after clamping to ±m, from the definition.
fn group_error(
    w: &Mat<f64>,
    x: &Mat<f64>,
    g: &QuantGrid,
    row: usize,
    start: usize,
    len: usize,
    m: f64,
) -> f64 {
    let wc = Mat::from_fn(1, len, |_, j| w[(row, start + j)].clamp(-m, m));
    let q = rtn(wc.as_ref(), g).unwrap().dequant;
    let mut e = 0.0;
    for t in 0..x.nrows() {
        let dot: f64 = (0..len)
            .map(|j| (q[(0, j)] - w[(row, start + j)]) * x[(t, start + j)])
            .sum();
        e += dot * dot;
    }
    e / x.nrows() as f64
}

#[test]
fn clip_search_never_worse_than_no_clipping_and_is_the_grid_argmin() {
    let mut r = rng(51);
    let (rows, cols, gs) = (10, 96, 32);
    let w = randn(&mut r, rows, cols);
    let cfg = AwqConfig::default();
    for (tokens, g) in [
        (300, grid(4, false, gs as i64)),
        (20, grid(3, true, gs as i64)),
    ] {
        let x = randn(&mut r, tokens, cols);
        let res = search_clip(w.as_ref(), x.as_ref(), &g, &cfg).unwrap();
        assert_eq!(res.tokens_used, tokens);
        assert_eq!(res.max_val.len(), 3 * rows);
        let mut clipped_somewhere = false;
        for grp in 0..3 {
            for row in 0..rows {
                let k = grp * rows + row;
                let org = (0..gs)
                    .map(|j| w[(row, grp * gs + j)].abs())
                    .fold(0.0, f64::max);
                assert_eq!(res.org_max_val[k], org);
                assert!(res.max_val[k] <= org);
                assert!(res.errors[k] <= res.unclipped_errors[k]);
                assert_eq!(res.max_val[k], org * (1.0 - res.shrink[k] as f64 / 20.0));
                clipped_somewhere |= res.shrink[k] > 0;
                // brute force over the 10 thresholds
                let errs: Vec<f64> = (0..10)
                    .map(|i| {
                        group_error(&w, &x, &g, row, grp * gs, gs, org * (1.0 - i as f64 / 20.0))
                    })
                    .collect();
                assert!(close(res.unclipped_errors[k], errs[0], 1e-9));
                assert!(close(res.errors[k], errs[res.shrink[k]], 1e-9));
                let min = errs.iter().cloned().fold(f64::INFINITY, f64::min);
                assert!(res.errors[k] <= min * (1.0 + 1e-9), "group {grp} row {row}");
                for c in grp * gs..(grp + 1) * gs {
                    assert_eq!(
                        res.clipped[(row, c)],
                        w[(row, c)].clamp(-res.max_val[k], res.max_val[k])
                    );
                }
            }
        }
        assert!(
            clipped_somewhere,
            "Gaussian weights at 3–4 bits profit from some clipping"
        );
    }
}

#[test]
fn clip_search_shrinks_a_group_with_one_huge_outlier() {
    let mut r = rng(61);
    let (rows, cols) = (8, 64);
    let mut w = randn(&mut r, rows, cols);
    for j in 0..cols {
        for i in 0..rows {
            w[(i, j)] *= 0.1;
        }
    }
    w[(0, 40)] = 10.0; // row 0, group 1 (columns 32..64)
    let mut x = randn(&mut r, 200, cols);
    for t in 0..200 {
        x[(t, 40)] *= 0.01; // a quiet input channel: clipping its weight costs little
    }
    let g = grid(4, false, 32);
    let res = search_clip(w.as_ref(), x.as_ref(), &g, &AwqConfig::default()).unwrap();
    let k = rows; // group 1, row 0
    assert_eq!(res.org_max_val[k], 10.0);
    assert!(
        res.max_val[k] < 10.0 && res.shrink[k] > 0,
        "{:?}",
        res.shrink
    );
    assert!(res.clipped[(0, 40)] < 10.0);
    // the outlier dominates its group's range: the strongest shrink (1 − 9/20) wins
    assert_eq!(res.shrink[k], AwqConfig::default().clip_steps() - 1);
    assert!(res.errors[k] < 0.8 * res.unclipped_errors[k]);
    for (m, o) in res.max_val.iter().zip(&res.org_max_val) {
        assert!(m <= o);
    }
}

#[test]
fn clip_tokens_are_strided_like_the_reference() {
    assert_eq!(clip_token_rows(1000, 512).len(), 1000); // step ⌊1000/512⌋ = 1
    let rows = clip_token_rows(1100, 512);
    assert_eq!(rows.len(), 550);
    assert_eq!(&rows[..3], &[0, 2, 4]);
    assert_eq!(clip_token_rows(100, 512).len(), 100);
    assert_eq!(clip_token_rows(100, 0).len(), 100);

    let mut r = rng(71);
    let w = randn(&mut r, 4, 16);
    let x = randn(&mut r, 90, 16);
    let cfg = AwqConfig {
        clip_tokens: 30,
        ..AwqConfig::default()
    };
    let g = grid(4, false, 8);
    let res = search_clip(w.as_ref(), x.as_ref(), &g, &cfg).unwrap();
    assert_eq!(res.tokens_used, 30);
    let xs = Mat::from_fn(30, 16, |t, c| x[(3 * t, c)]);
    let k = 4 + 2; // group 1, row 2
    let want = group_error(&w, &xs, &g, 2, 8, 8, res.max_val[k]);
    assert!(close(res.errors[k], want, 1e-9));
}

#[test]
fn quantize_layer_scales_clips_and_rounds() {
    let mut r = rng(81);
    let w = randn(&mut r, 6, 48);
    let x = salient_inputs(82, 64, 48, &[(5, 20.0)]);
    let s = candidate_scales(&activation_scale(x.as_ref()), None, 0.5);
    let g = grid(4, false, 16);
    let cfg = AwqConfig::default();

    let plain = quantize_layer(w.as_ref(), &s, None, &g, &cfg).unwrap();
    let want = rtn(scale_columns(w.as_ref(), &s).as_ref(), &g).unwrap();
    assert_eq!(plain.layer.codes, want.codes);
    assert!(plain.clip.is_none());
    assert_eq!(
        plain.effective_weight(),
        unscale_columns(want.dequant.as_ref(), &s)
    );

    let out = quantize_layer(w.as_ref(), &s, Some(x.as_ref()), &g, &cfg).unwrap();
    let clip = out.clip.as_ref().unwrap();
    let direct = search_clip(
        scale_columns(w.as_ref(), &s).as_ref(),
        unscale_columns(x.as_ref(), &s).as_ref(),
        &g,
        &cfg,
    )
    .unwrap();
    assert_eq!(clip.max_val, direct.max_val);
    assert_eq!(
        out.layer.dequant,
        rtn(clip.clipped.as_ref(), &g).unwrap().dequant
    );
    // clipping helps (or is neutral) on the output error of the calibration tokens
    let ws = vec![w.clone()];
    let e_clip = output_error(&[out.effective_weight()], &ws, &x);
    let e_plain = output_error(&[plain.effective_weight()], &ws, &x);
    assert!(e_clip <= e_plain * 1.05, "{e_clip} vs {e_plain}");

    assert!(quantize_layer(w.as_ref(), &s[..47], None, &g, &cfg).is_err());
    let mut bad = s.clone();
    bad[3] = 0.0;
    assert!(quantize_layer(w.as_ref(), &bad, None, &g, &cfg).is_err());
}

/// Timing of the clip search at LLM size (`cargo test -p pmq-core --test awq_search -- --ignored
/// --nocapture`); not part of the default run.
#[test]
#[ignore]
fn clip_search_timing_4096() {
    let mut r = rng(1);
    let w = randn(&mut r, 4096, 4096);
    let x = randn(&mut r, 1024, 4096);
    for group in [128, -1] {
        let t = std::time::Instant::now();
        let res = search_clip(
            w.as_ref(),
            x.as_ref(),
            &grid(4, false, group),
            &AwqConfig::default(),
        )
        .unwrap();
        eprintln!(
            "search_clip 4096×4096, group {group}, {} of 1024 tokens: {:?}",
            res.tokens_used,
            t.elapsed()
        );
    }
}
