//! WUDI objective and solvers against hand-worked and independent checks.

mod common;

use common::TestRng;
use faer::Mat;
use pmq_merge::wudi_solver::{frobenius, mat_from_row_major, ExactMethod, WudiProblem};

fn random_problem(seed: u64, k: usize, r: usize, c: usize) -> WudiProblem {
    let mut rng = TestRng(seed);
    WudiProblem::from_row_major(r, c, &(0..k).map(|_| rng.vec(r * c)).collect::<Vec<_>>())
}

#[test]
fn hand_example() {
    // τ1 = [1, 0], τ2 = [1, 1] (1 × 2). S = [[1,0],[0,0]] + [[1,1],[1,1]]/2 = [[1.5,.5],[.5,.5]],
    // C = τ1 + τ2 = [2, 1]; τ_m S = C gives τ_m = [1, 1] with loss 0. The start Σ τ = [2, 1]
    // has loss ((2-1)·1)²/1 + ((2-1)·1 + 0·1)²/2 = 1.5.
    let p = WudiProblem::from_row_major(1, 2, &[vec![1.0, 0.0], vec![1.0, 1.0]]);
    assert_eq!(p.s()[(0, 0)], 1.5);
    assert_eq!(p.s()[(0, 1)], 0.5);
    assert_eq!(p.s()[(1, 1)], 0.5);
    assert_eq!((p.c()[(0, 0)], p.c()[(0, 1)]), (2.0, 1.0));
    assert!((p.loss(p.init()) - 1.5).abs() < 1e-15);
    let (x, how) = p.exact();
    assert_eq!(how, ExactMethod::Cholesky);
    assert!((x[(0, 0)] - 1.0).abs() < 1e-12 && (x[(0, 1)] - 1.0).abs() < 1e-12);
    assert!(p.loss(x.as_ref()) < 1e-24);
}

#[test]
fn gradient_matches_finite_differences() {
    // Wide (loss via (x − τ)τᵀ) and tall (loss via (x − τ)τᵀτ) shapes.
    for (r, c) in [(3, 4), (5, 2)] {
        let p = random_problem(3, 3, r, c);
        let mut rng = TestRng(99);
        let x = mat_from_row_major(r, c, &rng.vec(r * c));
        let g = p.gradient(x.as_ref());
        let h = 1e-6;
        for i in 0..r {
            for j in 0..c {
                let mut xp = x.clone();
                let mut xm = x.clone();
                xp[(i, j)] += h;
                xm[(i, j)] -= h;
                let fd = (p.loss(xp.as_ref()) - p.loss(xm.as_ref())) / (2.0 * h);
                let an = g[(i, j)];
                assert!(
                    (fd - an).abs() < 1e-6 * (1.0 + fd.abs()),
                    "{r}x{c} ({i},{j}) fd {fd} vs {an}"
                );
            }
        }
    }
}

#[test]
fn exact_has_zero_gradient_and_beats_adam() {
    for (seed, k, r, c) in [(1, 2, 2, 3), (2, 3, 4, 3), (5, 4, 3, 5)] {
        let p = random_problem(seed, k, r, c);
        let (x, how) = p.exact();
        assert_eq!(how, ExactMethod::Cholesky, "S of full rank");
        let g = frobenius(p.gradient(x.as_ref()).as_ref());
        let scale = frobenius(p.c()).max(1.0);
        assert!(g < 1e-10 * scale, "gradient {g}");
        let exact_loss = p.loss(x.as_ref());
        let init_loss = p.loss(p.init());
        let adam_ref = p.adam(400, 1e-5);
        let adam_ref_loss = p.loss(adam_ref.as_ref());
        assert!(exact_loss <= adam_ref_loss + 1e-12 && adam_ref_loss <= init_loss);
        // The reference schedule barely moves (each step changes an entry by ≈ lr at most).
        let moved = frobenius((adam_ref.as_ref() - p.init()).as_ref());
        assert!(
            moved <= 400.0 * 1e-5 * ((r * c) as f64).sqrt() * 1.01,
            "moved {moved}"
        );
        // A larger learning rate and many steps approach the exact minimum.
        let adam = p.adam(20_000, 2e-3);
        let adam_loss = p.loss(adam.as_ref());
        assert!(
            exact_loss <= adam_loss + 1e-12,
            "exact {exact_loss} vs adam {adam_loss}"
        );
        assert!(
            adam_loss - exact_loss < 1e-3 * (init_loss - exact_loss),
            "adam {adam_loss}, exact {exact_loss}, init {init_loss}"
        );
    }
}

/// Component of the 1 × 3 row x along n.
fn comp(m: &Mat<f64>, n: &[f64; 3]) -> f64 {
    (0..3).map(|j| m[(0, j)] * n[j]).sum()
}

#[test]
fn singular_s_dual_and_cg_keep_the_null_space_of_the_start() {
    // Two 1 × 3 task vectors: S has rank 2 in 3 dimensions (K·r = 2 < c = 3).
    let t1 = [1.0f32, 2.0, 0.5];
    let t2 = [-0.5f32, 1.0, 1.5];
    let p = WudiProblem::from_row_major(1, 3, &[t1.to_vec(), t2.to_vec()]);
    // The null direction of S is t1 × t2; minimisers differ only along it, and the one
    // returned keeps the start's component (as gradient descent from Σ τ does).
    let n = [
        (t1[1] * t2[2] - t1[2] * t2[1]) as f64,
        (t1[2] * t2[0] - t1[0] * t2[2]) as f64,
        (t1[0] * t2[1] - t1[1] * t2[0]) as f64,
    ];
    let start = comp(&p.init().to_owned(), &n);
    let (dual, how) = p.exact();
    assert_eq!(how, ExactMethod::DualCholesky);
    let (cg, how) = p.conjugate_gradient();
    assert!(
        matches!(
            how,
            ExactMethod::ConjugateGradient {
                converged: true,
                ..
            }
        ),
        "{how:?}"
    );
    for x in [&dual, &cg] {
        assert!(frobenius(p.gradient(x.as_ref()).as_ref()) < 1e-10);
        assert!((comp(x, &n) - start).abs() < 1e-10);
    }
    assert!(frobenius((dual.as_ref() - cg.as_ref()).as_ref()) < 1e-10);
    // Plain gradient descent from Σ τ converges to the same point.
    let mut x = p.init().to_owned();
    for _ in 0..20_000 {
        let g = p.gradient(x.as_ref());
        x -= faer::Scale(0.05) * &g;
    }
    assert!(frobenius((x.as_ref() - dual.as_ref()).as_ref()) < 1e-8);
}

#[test]
fn dual_matches_primal_and_degenerate_tasks_fall_back_to_cg() {
    // Wide random problems with K·r < c: the dual solution has zero gradient.
    for (seed, k, r, c) in [(7, 2, 2, 7), (8, 3, 1, 5), (9, 2, 3, 8)] {
        let p = random_problem(seed, k, r, c);
        let (x, how) = p.exact();
        assert_eq!(how, ExactMethod::DualCholesky);
        assert!(frobenius(p.gradient(x.as_ref()).as_ref()) < 1e-10 * frobenius(p.c()).max(1.0));
        let (cg, _) = p.conjugate_gradient();
        assert!(frobenius((x.as_ref() - cg.as_ref()).as_ref()) < 1e-8);
    }
    // Two identical task vectors: the dual Gram matrix is singular too → CG.
    let t = vec![1.0f32, -2.0, 0.5];
    let p = WudiProblem::from_row_major(1, 3, &[t.clone(), t]);
    let (x, how) = p.exact();
    assert!(
        matches!(
            how,
            ExactMethod::ConjugateGradient {
                converged: true,
                ..
            }
        ),
        "{how:?}"
    );
    // Minimiser: τ_m − τ ⊥ τ; from the start 2τ the correction is −τ, so τ_m = τ.
    for (j, w) in [1.0, -2.0, 0.5].iter().enumerate() {
        assert!((x[(0, j)] - w).abs() < 1e-12);
    }
}

#[test]
fn orthogonal_tasks_are_already_optimal() {
    // Disjoint supports: S = I, C = τ1 + τ2, so τ_m = Σ τ with loss 0; Adam does not move.
    let p =
        WudiProblem::from_row_major(2, 2, &[vec![1.0, 0.0, 0.0, 0.0], vec![0.0, 0.0, 0.0, 2.0]]);
    let (x, _) = p.exact();
    let want = [1.0, 0.0, 0.0, 2.0];
    for (i, w) in want.iter().enumerate() {
        assert!((x[(i / 2, i % 2)] - w).abs() < 1e-12);
    }
    let a = p.adam(50, 1e-3);
    assert!(frobenius((a.as_ref() - p.init()).as_ref()) < 1e-12);
    // A zero task vector contributes nothing (no 0/0).
    let z = WudiProblem::from_row_major(1, 2, &[vec![0.0, 0.0], vec![1.0, 0.0]]);
    assert_eq!(z.loss(z.init()), 0.0);
}
