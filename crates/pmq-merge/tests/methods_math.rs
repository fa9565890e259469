//! The per-tensor math of each method against hand-worked examples and independent truth.

mod common;

use common::TestRng;
use pmq_merge::kth::StreamingKth;
use pmq_merge::methods::average::average;
use pmq_merge::methods::dare::dare_drop;
use pmq_merge::methods::task_arithmetic::task_arithmetic;
use pmq_merge::methods::ties::{tensor_threshold, threshold_rank, ties_tensor};
use pmq_merge::{DareRescale, TiesMerge};

fn close(got: &[f32], want: &[f64]) {
    common::assert_close(got, want, 1e-6);
}

// W0 = [[1,2,3],[4,5,6]]; experts chosen so that τ is easy to read.
const BASE: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];

fn plus(tau: [f32; 6]) -> Vec<f32> {
    BASE.iter().zip(tau).map(|(b, t)| b + t).collect()
}

#[test]
fn average_and_task_arithmetic_by_hand() {
    // τA = [[1,0,-2],[0,2,0]], τB = [[-1,1,0],[0,-1,3]].
    let a = plus([1.0, 0.0, -2.0, 0.0, 2.0, 0.0]);
    let b = plus([-1.0, 1.0, 0.0, 0.0, -1.0, 3.0]);
    // (A + B)/2 = [[1, 2.5, 2], [4, 5.5, 7.5]]
    close(
        &average(&[a.clone(), b.clone()]),
        &[1.0, 2.5, 2.0, 4.0, 5.5, 7.5],
    );
    // Στ = [[0,1,-2],[0,1,3]]; W0 + 0.3 Στ = [[1, 2.3, 2.4], [4, 5.3, 6.9]]
    close(
        &task_arithmetic(&BASE, &[a.clone(), b.clone()], 0.3),
        &[1.0, 2.3, 2.4, 4.0, 5.3, 6.9],
    );
    close(
        &task_arithmetic(&BASE, &[a, b], 1.0),
        &[1.0, 3.0, 1.0, 4.0, 6.0, 9.0],
    );
}

#[test]
fn ties_per_tensor_by_hand() {
    // τA = [[0.5,-3,1],[2,-0.25,4]]: |τA| sorted 0.25,0.5,1,2,3,4; density 0.5 keeps ⌊3⌋,
    // k = 6-3 = 3 → threshold 1 → τ̂A = [[0,-3,1],[2,0,4]].
    // τB = [[-2,1,-0.5],[-1,3,5]]: sorted 0.5,1,1,2,3,5 → threshold 1 (both 1s kept)
    // → τ̂B = [[-2,1,0],[-1,3,5]].
    let ta = vec![0.5, -3.0, 1.0, 2.0, -0.25, 4.0];
    let tb = vec![-2.0, 1.0, -0.5, -1.0, 3.0, 5.0];
    assert_eq!(tensor_threshold(&ta, 0.5), 1.0);
    assert_eq!(tensor_threshold(&tb, 0.5), 1.0);
    // Σ τ̂ = [[-2,-2,1],[1,3,9]] → γ = [[-,-,+],[+,+,+]].
    // Agreeing entries: [[B:-2],[A:-3],[A:1]] / [[A:2],[B:3],[A:4,B:5]].
    // sum  = [[-2,-3,1],[2,3,9]]   → W0 + 0.3· = [[0.4,1.1,3.3],[4.6,5.9,8.7]]
    // mean = [[-2,-3,1],[2,3,4.5]] → last entry 6 + 1.35 = 7.35
    let taus = vec![ta, tb];
    let th = [1.0, 1.0];
    close(
        &ties_tensor(&BASE, &taus, &th, None, TiesMerge::Sum, 0.3),
        &[0.4, 1.1, 3.3, 4.6, 5.9, 8.7],
    );
    close(
        &ties_tensor(&BASE, &taus, &th, None, TiesMerge::Mean, 0.3),
        &[0.4, 1.1, 3.3, 4.6, 5.9, 7.35],
    );
}

#[test]
fn ties_zero_signs_take_the_majority() {
    // Σ τ̂ = [0, 0, 5] → γ = [0, 0, +]. Majority from this tensor: sign(1) = + →
    // entries: [A:1], [B:1], [A:3 + B:2] = [1, 1, 5]. A global majority of − instead gives
    // [B:-1], [A:-1], [5].
    let base = [0.0f32; 3];
    let taus = vec![vec![1.0, -1.0, 3.0], vec![-1.0, 1.0, 2.0]];
    let th = [0.0, 0.0];
    close(
        &ties_tensor(&base, &taus, &th, None, TiesMerge::Sum, 1.0),
        &[1.0, 1.0, 5.0],
    );
    close(
        &ties_tensor(&base, &taus, &th, Some(-1), TiesMerge::Sum, 1.0),
        &[-1.0, -1.0, 5.0],
    );
    // mean over agreeing entries: [1, 1, 2.5]
    close(
        &ties_tensor(&base, &taus, &th, None, TiesMerge::Mean, 1.0),
        &[1.0, 1.0, 2.5],
    );
}

#[test]
fn ties_threshold_rank_matches_fusionbench() {
    // FusionBench: k = d - int(d * K).
    assert_eq!(threshold_rank(10, 0.2), 8);
    assert_eq!(threshold_rank(6, 0.5), 3);
    assert_eq!(threshold_rank(3, 0.2), 3); // int(0.6) = 0 → keeps the maxima only
    assert_eq!(threshold_rank(7, 1.0), 0); // keep all
                                           // Small tensor, density 0.2: only the largest magnitude survives.
    assert_eq!(tensor_threshold(&[0.1, -0.7, 0.3], 0.2), 0.7);
}

#[test]
fn streaming_threshold_equals_sorting_on_random_data() {
    let mut rng = TestRng(0x9E3779B97F4A7C15);
    let chunks: Vec<Vec<f32>> = [1000, 1, 4096, 333].iter().map(|&n| rng.vec(n)).collect();
    let all: Vec<f32> = chunks.concat();
    let mut sorted: Vec<f32> = all.iter().map(|v| v.abs()).collect();
    sorted.sort_by(f32::total_cmp);
    for density in [0.01, 0.2, 0.5, 0.9] {
        let k = threshold_rank(all.len() as u64, density);
        let mut s = StreamingKth::new();
        chunks.iter().for_each(|c| s.observe_first(c));
        assert!(s.start_second(k));
        chunks.iter().for_each(|c| s.observe_second(c));
        assert_eq!(
            s.value().unwrap(),
            sorted[k as usize - 1],
            "density {density}"
        );
    }
}

#[test]
fn dare_p0_is_identity_and_rescalings() {
    let tau = [0.5f32, -1.0, 2.0, 0.0, -3.0];
    for rescale in [DareRescale::Inverse, DareRescale::L1, DareRescale::None] {
        let out = dare_drop(&tau, 0.0, rescale, 7, "w", 0);
        assert_eq!(
            out,
            tau.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            "{rescale:?}"
        );
    }
    let mut rng = TestRng(42);
    let big = rng.vec(20_000);
    let l1: f64 = big.iter().map(|v| v.abs() as f64).sum();
    let none = dare_drop(&big, 0.3, DareRescale::None, 1, "w", 0);
    let dropped = none.iter().filter(|v| **v == 0.0).count() as f64 / big.len() as f64;
    assert!((dropped - 0.3).abs() < 0.02, "drop fraction {dropped}");
    assert!(none
        .iter()
        .zip(&big)
        .all(|(o, &t)| *o == 0.0 || *o == t as f64));
    let inv = dare_drop(&big, 0.3, DareRescale::Inverse, 1, "w", 0);
    for (i, n) in inv.iter().zip(&none) {
        assert!((i - n / 0.7).abs() < 1e-12);
    }
    let l1r = dare_drop(&big, 0.3, DareRescale::L1, 1, "w", 0);
    let l1_after: f64 = l1r.iter().map(|v| v.abs()).sum();
    assert!((l1_after - l1).abs() < 1e-9 * l1, "{l1_after} vs {l1}");
}

#[test]
fn dare_is_reproducible_and_unbiased() {
    let tau = [0.5f32, -1.0, 2.0, -3.0];
    let a = dare_drop(&tau, 0.5, DareRescale::Inverse, 11, "layer.w", 1);
    assert_eq!(
        a,
        dare_drop(&tau, 0.5, DareRescale::Inverse, 11, "layer.w", 1)
    );
    // E[τ̃] = τ: average over many seeds.
    let n = 4000;
    let mut mean = [0.0f64; 4];
    for seed in 0..n {
        let d = dare_drop(&tau, 0.5, DareRescale::Inverse, seed, "layer.w", 0);
        mean.iter_mut()
            .zip(&d)
            .for_each(|(m, v)| *m += v / n as f64);
    }
    for (m, &t) in mean.iter().zip(&tau) {
        // std of the mean = |τ|/sqrt(n) ≈ 0.016|τ|; allow 5σ.
        assert!(
            (m - t as f64).abs() < 0.08 * t.abs() as f64,
            "mean {m} vs τ {t}"
        );
    }
}
