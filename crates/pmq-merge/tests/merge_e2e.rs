//! End-to-end merges through files: every method, dtypes, shards, selection, errors.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_close, f32t, ft, i32t, read, write_model, Tensor, TestRng};
use pmq_io::{Dtype, TensorStore};
use pmq_merge::{
    merge, DareOptions, MergeConfig, MergeError, Method, NoProgress, TiesMerge, TiesOptions,
    TiesTrim, WudiOptions, WudiOther, WudiSolver,
};

const BASE_W: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
const TAU_A: [f32; 6] = [1.0, 0.0, -2.0, 0.0, 2.0, 0.0];
const TAU_B: [f32; 6] = [-1.0, 1.0, 0.0, 0.0, -1.0, 3.0];

fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// base + 2 experts: `w` (2×3, τ as above), `b` (bias [2]), `ids` (i32), config, tokenizer.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    base: PathBuf,
    experts: Vec<PathBuf>,
}

impl Fixture {
    fn new() -> Self {
        Self::with(Dtype::F32, [Dtype::F32, Dtype::F32], 1)
    }

    fn with(base_dtype: Dtype, expert_dtypes: [Dtype; 2], expert_shards: usize) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let base = write_model(
            &root.join("base"),
            "Toy",
            vec![
                ft("w", base_dtype, &[2, 3], &BASE_W),
                ft("b", base_dtype, &[2], &[0.5, -0.5]),
                i32t("ids", &[0, 1, 2]),
            ],
            1,
        );
        std::fs::write(base.join("tokenizer.json"), "{\"tok\": 1}").unwrap();
        let mut experts = Vec::new();
        for (i, (tau, bias)) in [(TAU_A, [1.5f32, 0.5]), (TAU_B, [0.5, 1.5])]
            .iter()
            .enumerate()
        {
            let d = expert_dtypes[i];
            experts.push(write_model(
                &root.join(format!("e{}", i + 1)),
                "Toy",
                vec![
                    ft("w", d, &[2, 3], &add(&BASE_W, tau)),
                    ft("b", d, &[2], bias),
                    i32t("ids", &[9, 9, 9]),
                ],
                expert_shards,
            ));
        }
        Self {
            _tmp: tmp,
            root,
            base,
            experts,
        }
    }

    fn out(&self) -> PathBuf {
        self.root.join("out")
    }

    fn config(&self, method: Method) -> MergeConfig {
        MergeConfig::new(self.base.clone(), self.experts.clone(), self.out(), method)
    }

    fn run(&self, method: Method) -> Result<pmq_merge::MergeReport, MergeError> {
        merge(&self.config(method), &NoProgress)
    }
}

#[test]
fn average_copies_non_float_and_files() {
    let f = Fixture::new();
    let report = f.run(Method::Average).unwrap();
    let out = f.out();
    assert_close(&read(&out, "w"), &[1.0, 2.5, 2.0, 4.0, 5.5, 7.5], 1e-6);
    assert_close(&read(&out, "b"), &[1.0, 1.0], 1e-6);
    let store = TensorStore::open_dir(&out).unwrap();
    assert_eq!(
        store.raw_bytes("ids").unwrap(),
        pmq_io::i32_bytes(&[0, 1, 2]).as_slice()
    );
    assert_eq!(store.metadata().unwrap()["format"], "pt");
    assert_eq!(
        std::fs::read_to_string(out.join("tokenizer.json")).unwrap(),
        "{\"tok\": 1}"
    );
    assert!(out.join("config.json").is_file());
    assert_eq!(
        (report.tensors_merged, report.tensors_copied, report.k),
        (2, 1, 2)
    );
    assert_eq!(report.copied_files, ["config.json", "tokenizer.json"]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("merge_report.json")).unwrap())
            .unwrap();
    assert_eq!(json["method"], "average");
    assert_eq!(json["tensors_copied_non_float"], 1);
    // No temporary leftovers next to the output.
    let mut names: Vec<_> = std::fs::read_dir(&f.root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["base", "e1", "e2", "out"]);
}

#[test]
fn task_arithmetic_with_lambda() {
    let f = Fixture::new();
    f.run(Method::task_arithmetic()).unwrap();
    // W0 + 0.3 Στ, Στ = [[0,1,-2],[0,1,3]]; bias: τ = [1, 1] + [0, 2] → 0.5 + 0.3, -0.5 + 0.9.
    assert_close(&read(&f.out(), "w"), &[1.0, 2.3, 2.4, 4.0, 5.3, 6.9], 1e-6);
    assert_close(&read(&f.out(), "b"), &[0.8, 0.4], 1e-6);
}

#[test]
fn ties_global_and_tensor_by_hand() {
    // density 0.5. Global: τA flattened over b (first, sorted names) and w:
    // |τA| = [1, 1, 1,0,2,0,2,0] → n = 8, keep 4, k = 4 → threshold = 4th smallest = 1 →
    // keeps every |τA| ≥ 1 (6 entries, ties kept). τB = [0, 2, -1,1,0,0,-1,3]: sorted
    // 0,0,0,1,1,1,2,3 → k = 4 → threshold 1 → keeps all non-zeros.
    // So nothing nonzero is trimmed: τ̂ = τ. w: Στ̂ = [0,1,-2,0,1,3] → γ = [0,+,-,0,+,+].
    // Majority over the model (b: Σ = [1, 3] → +,+): Σγ = 2 + (0+1-1+0+1+1) = 4 → +.
    // w agreeing sums (γ=+ at zeros): [1, 1, -2, 0, 2, 3]; b: [1, 3] (τA_b=[1,1], τB_b=[0,2]).
    let f = Fixture::new();
    let ties = |trim, merge| {
        Method::Ties(TiesOptions {
            density: 0.5,
            lambda: 1.0,
            trim,
            merge,
        })
    };
    f.run(ties(TiesTrim::Global, TiesMerge::Sum)).unwrap();
    assert_close(&read(&f.out(), "w"), &[2.0, 3.0, 1.0, 4.0, 7.0, 9.0], 1e-6);
    assert_close(&read(&f.out(), "b"), &[1.5, 2.5], 1e-6);
    std::fs::remove_dir_all(f.out()).unwrap();
    // mean: w entry 4 has A:2 (agree), B:-1 (no) → 2; b entry 1: A:1, B:2 → 1.5
    f.run(ties(TiesTrim::Global, TiesMerge::Mean)).unwrap();
    assert_close(&read(&f.out(), "b"), &[1.5, 1.0], 1e-6);
    std::fs::remove_dir_all(f.out()).unwrap();
    // Per tensor, w: |τA_w| = 1,0,2,0,2,0 → n 6, keep 3, k = 3 → 3rd smallest = 0 → keep all;
    // same for τB_w. γ = [0,+,-,0,+,+], majority of this tensor: Σγ = 2 → +. Same result for w.
    f.run(ties(TiesTrim::Tensor, TiesMerge::Sum)).unwrap();
    assert_close(&read(&f.out(), "w"), &[2.0, 3.0, 1.0, 4.0, 7.0, 9.0], 1e-6);
    // b per tensor: τA_b = [1,1] (n 2, keep 1, k 1 → t = 1 → both), τB_b = [0,2] (t = 0) →
    // Σ = [1, 3] → b = [0.5 + 1, -0.5 + 3].
    assert_close(&read(&f.out(), "b"), &[1.5, 2.5], 1e-6);
    std::fs::remove_dir_all(f.out()).unwrap();
    // mergekit: exactly ⌊0.5·n⌋ largest |τ| per tensor, equal magnitudes by lower index.
    // b: τA_b = [1, 1] keeps index 0 only → [1, 0]; τB_b = [0, 2] → [0, 2]; Σ = [1, 2] →
    // b = [0.5 + 1, -0.5 + 2]. w: τB_w = [-1,1,0,0,-1,3] keeps 3 (index 5, then 0 and 1 of the
    // three 1s) → the dropped −1 at index 4 disagreed with γ anyway: w as before.
    f.run(ties(TiesTrim::Mergekit, TiesMerge::Sum)).unwrap();
    assert_close(&read(&f.out(), "w"), &[2.0, 3.0, 1.0, 4.0, 7.0, 9.0], 1e-6);
    assert_close(&read(&f.out(), "b"), &[1.5, 1.5], 1e-6);
}

#[test]
fn mergekit_trim_keeps_exactly_the_density() {
    use pmq_merge::methods::ties::{tensor_threshold, trim, trim_top_k};
    // 100 entries, 40 of them with the same magnitude: mergekit keeps exactly 20, the
    // tie-inclusive threshold keeps every entry at the threshold
    let tau: Vec<f32> = (0..100)
        .map(|i| if i % 5 < 2 { 0.5 } else { (i as f32) * 1e-3 })
        .collect();
    let kept = trim_top_k(&tau, 0.2).unwrap();
    assert_eq!(kept.iter().filter(|v| **v != 0.0).count(), 20);
    // the 20 kept are the lowest-index entries of the 40 largest (all 0.5)
    let want: Vec<usize> = (0..100).filter(|i| i % 5 < 2).take(20).collect();
    let got: Vec<usize> = (0..100).filter(|&i| kept[i] != 0.0).collect();
    assert_eq!(got, want);
    let inclusive = trim(&tau, tensor_threshold(&tau, 0.2));
    assert_eq!(inclusive.iter().filter(|v| **v != 0.0).count(), 40);
    // brute force on random data: the kept set is the top-k of a stable sort by |τ| descending
    let mut rng = TestRng(0x9E37_79B9_7F4A_7C15);
    for n in [1usize, 7, 64, 333] {
        let tau: Vec<f32> = (0..n)
            .map(|_| (rng.next_f32() * 4.0).round() / 4.0)
            .collect();
        for density in [0.1, 0.5, 0.99] {
            let k = ((n as f64) * density).floor() as usize;
            let Some(kept) = trim_top_k(&tau, density) else {
                assert_eq!(k, 0);
                continue;
            };
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| tau[b].abs().total_cmp(&tau[a].abs()));
            let mut want = vec![0.0f32; n];
            for &i in &order[..k] {
                want[i] = tau[i];
            }
            assert_eq!(kept, want, "n {n} density {density}");
        }
    }
    assert_eq!(trim_top_k(&tau, 1.0).unwrap(), tau);
}

/// FusionBench TIES by brute force over the flattened model (sorted names), in memory.
fn ties_brute_force(
    base: &[Vec<f32>],
    experts: &[Vec<Vec<f32>>],
    density: f64,
    lambda: f64,
) -> Vec<Vec<f64>> {
    let flat_base: Vec<f32> = base.concat();
    let taus: Vec<Vec<f32>> = experts
        .iter()
        .map(|e| {
            e.concat()
                .iter()
                .zip(&flat_base)
                .map(|(w, b)| w - b)
                .collect()
        })
        .collect();
    let n = flat_base.len();
    let k = n - (n as f64 * density) as usize;
    let trimmed: Vec<Vec<f32>> = taus
        .iter()
        .map(|t| {
            let mut s: Vec<f32> = t.iter().map(|v| v.abs()).collect();
            s.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let th = s[k - 1];
            t.iter()
                .map(|&v| if v.abs() >= th { v } else { 0.0 })
                .collect()
        })
        .collect();
    let sgn = |x: f64| {
        if x > 0.0 {
            1.0
        } else if x < 0.0 {
            -1.0
        } else {
            0.0
        }
    };
    let mut gamma: Vec<f64> = (0..n)
        .map(|j| sgn(trimmed.iter().map(|t| t[j] as f64).sum()))
        .collect();
    let majority = sgn(gamma.iter().sum());
    gamma
        .iter_mut()
        .filter(|g| **g == 0.0)
        .for_each(|g| *g = majority);
    let merged: Vec<f64> = (0..n)
        .map(|j| {
            trimmed
                .iter()
                .map(|t| t[j])
                .filter(|&v| if gamma[j] > 0.0 { v > 0.0 } else { v < 0.0 })
                .map(|v| v as f64)
                .sum()
        })
        .collect();
    let flat: Vec<f64> = flat_base
        .iter()
        .zip(&merged)
        .map(|(&b, m)| b as f64 + lambda * m)
        .collect();
    let mut out = Vec::new();
    let mut at = 0;
    for t in base {
        out.push(flat[at..at + t.len()].to_vec());
        at += t.len();
    }
    out
}

#[test]
fn ties_global_matches_brute_force_on_random_data() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = TestRng(0xDEADBEEF);
    let names = ["a.weight", "b.bias", "c.weight"];
    let shapes: [&[usize]; 3] = [&[16, 24], &[24], &[8, 40]];
    let base: Vec<Vec<f32>> = shapes.iter().map(|s| rng.vec(s.iter().product())).collect();
    let mk = |vals: &[Vec<f32>]| -> Vec<Tensor> {
        names
            .iter()
            .zip(shapes)
            .zip(vals)
            .map(|((n, s), v)| f32t(n, s, v))
            .collect()
    };
    let base_dir = write_model(&tmp.path().join("base"), "Toy", mk(&base), 1);
    let mut experts = Vec::new();
    let mut dirs = Vec::new();
    for e in 0..3 {
        // Sparse-ish updates with repeated magnitudes to exercise ties at the threshold.
        let vals: Vec<Vec<f32>> = base
            .iter()
            .map(|b| {
                b.iter()
                    .map(|&x| {
                        let r = rng.next_f32();
                        let step = (r * 8.0).round() / 64.0;
                        if r.abs() < 0.2 {
                            x
                        } else {
                            x + step
                        }
                    })
                    .collect()
            })
            .collect();
        dirs.push(write_model(
            &tmp.path().join(format!("e{e}")),
            "Toy",
            mk(&vals),
            2,
        ));
        experts.push(vals);
    }
    let want = ties_brute_force(&base, &experts, 0.2, 0.3);
    let out = tmp.path().join("out");
    let cfg = MergeConfig::new(
        base_dir,
        dirs,
        out.clone(),
        Method::Ties(TiesOptions::default()),
    );
    let report = merge(&cfg, &NoProgress).unwrap();
    assert_eq!(
        report.method_details["entries_per_task"],
        24 * 16 + 24 + 8 * 40
    );
    for (name, w) in names.iter().zip(&want) {
        assert_close(&read(&out, name), w, 1e-6);
    }
}

#[test]
fn dare_reproducible_and_order_independent() {
    let f = Fixture::new();
    let dare = |seed| {
        Method::Dare(DareOptions {
            seed,
            ..Default::default()
        })
    };
    f.run(dare(5)).unwrap();
    let first = std::fs::read(f.out().join("model.safetensors")).unwrap();
    let w_all = read(&f.out(), "w");
    std::fs::remove_dir_all(f.out()).unwrap();
    f.run(dare(5)).unwrap();
    assert_eq!(
        first,
        std::fs::read(f.out().join("model.safetensors")).unwrap()
    );
    std::fs::remove_dir_all(f.out()).unwrap();
    // Merging only `w` draws the same stream for `w`.
    let mut cfg = f.config(dare(5));
    cfg.include = vec!["w".into()];
    merge(&cfg, &NoProgress).unwrap();
    assert_eq!(read(&f.out(), "w"), w_all);
    assert_eq!(
        read(&f.out(), "b"),
        [0.5, -0.5],
        "unselected copied from base"
    );
    // Every entry is W0 + 0.3 Σ (0 or 2τ).
    for (j, &v) in w_all.iter().enumerate() {
        let ok = [0.0, 1.0].iter().any(|&ka| {
            [0.0, 1.0].iter().any(|&kb| {
                let d = 2.0 * (ka * TAU_A[j] + kb * TAU_B[j]);
                (v as f64 - (BASE_W[j] as f64 + 0.3 * d as f64)).abs() < 1e-6
            })
        });
        assert!(ok, "entry {j} = {v}");
    }
}

#[test]
fn wudi_exact_and_adam_and_other_tensors() {
    let f = Fixture::new();
    let wudi = |solver, other| {
        Method::Wudi(WudiOptions {
            solver,
            other,
            ..Default::default()
        })
    };
    let report = f.run(wudi(WudiSolver::Exact, WudiOther::Average)).unwrap();
    // Independent check: the output τ_m = W − W0 has zero gradient Σᵢ (τ_m − τᵢ) τᵢᵀ τᵢ / ‖τᵢ‖².
    let w = read(&f.out(), "w");
    let tm: Vec<f64> = w.iter().zip(&BASE_W).map(|(a, b)| (a - b) as f64).collect();
    let mut grad = [0.0f64; 6];
    for tau in [TAU_A, TAU_B] {
        let n: f64 = tau.iter().map(|v| (v * v) as f64).sum();
        for r in 0..2 {
            for r2 in 0..2 {
                // ((τ_m − τ) τᵀ)[r, r2]
                let p: f64 = (0..3)
                    .map(|c| (tm[r * 3 + c] - tau[r * 3 + c] as f64) * tau[r2 * 3 + c] as f64)
                    .sum();
                for c in 0..3 {
                    grad[r * 3 + c] += 2.0 * p * tau[r2 * 3 + c] as f64 / n;
                }
            }
        }
    }
    assert!(grad.iter().all(|g| g.abs() < 1e-5), "gradient {grad:?}");
    assert_close(&read(&f.out(), "b"), &[1.0, 1.0], 1e-6); // 1-D: average
    let d = &report.tensors["w"];
    assert_eq!(d["solver"], "cholesky");
    assert!(d["final_loss"].as_f64().unwrap() <= d["initial_loss"].as_f64().unwrap());
    std::fs::remove_dir_all(f.out()).unwrap();

    let report = f.run(wudi(WudiSolver::Adam, WudiOther::Base)).unwrap();
    // 400 Adam steps at lr 1e-5 move each entry by at most ≈ 4e-3 from Σ τ.
    let sum: Vec<f64> = (0..6)
        .map(|j| (BASE_W[j] + TAU_A[j] + TAU_B[j]) as f64)
        .collect();
    assert_close(&read(&f.out(), "w"), &sum, 4.1e-3);
    assert_close(&read(&f.out(), "b"), &[0.5, -0.5], 0.0); // 1-D: base
    let d = &report.tensors["w"];
    assert_eq!(d["solver"], "adam");
    assert!(d["final_loss"].as_f64().unwrap() < d["initial_loss"].as_f64().unwrap());
}

#[test]
fn mixed_dtypes_and_sharded_experts() {
    // Base f32, experts f16 and bf16 (all values exact in both), experts in 2 shards.
    let f = Fixture::with(Dtype::F32, [Dtype::F16, Dtype::BF16], 2);
    assert!(f.experts[0].join("model.safetensors.index.json").is_file());
    f.run(Method::task_arithmetic()).unwrap();
    let store = TensorStore::open_dir(&f.out()).unwrap();
    assert_eq!(store.info("w").unwrap().dtype, Dtype::F32);
    assert_close(&read(&f.out(), "w"), &[1.0, 2.3, 2.4, 4.0, 5.3, 6.9], 1e-6);
    std::fs::remove_dir_all(f.out()).unwrap();
    // Requested output dtype applies to merged and copied float tensors, not to ints.
    let mut cfg = f.config(Method::Average);
    cfg.dtype = Some(Dtype::BF16);
    cfg.exclude = vec!["b".into()];
    merge(&cfg, &NoProgress).unwrap();
    let store = TensorStore::open_dir(&f.out()).unwrap();
    assert_eq!(store.info("w").unwrap().dtype, Dtype::BF16);
    assert_eq!(store.info("b").unwrap().dtype, Dtype::BF16);
    assert_eq!(store.info("ids").unwrap().dtype, Dtype::I32);
    assert_close(&read(&f.out(), "w"), &[1.0, 2.5, 2.0, 4.0, 5.5, 7.5], 0.0);
}

#[test]
fn f16_base_gives_f16_output() {
    let f = Fixture::with(Dtype::F16, [Dtype::F32, Dtype::BF16], 1);
    f.run(Method::Average).unwrap();
    let store = TensorStore::open_dir(&f.out()).unwrap();
    assert_eq!(store.info("w").unwrap().dtype, Dtype::F16);
    assert_close(&read(&f.out(), "w"), &[1.0, 2.5, 2.0, 4.0, 5.5, 7.5], 0.0);
}

/// Asserts the merge fails with a message containing all `needles` and leaves no output.
fn fails(f: &Fixture, cfg: &MergeConfig, needles: &[&str]) -> MergeError {
    let err = merge(cfg, &NoProgress).unwrap_err();
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "`{n}` not in: {msg}");
    }
    assert!(!cfg.out.exists(), "output left behind after: {msg}");
    let leftovers: Vec<_> = std::fs::read_dir(&f.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("out"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    err
}

fn rewrite_expert(f: &Fixture, i: usize, arch: &str, tensors: Vec<Tensor>) {
    let dir = &f.experts[i];
    std::fs::remove_dir_all(dir).unwrap();
    write_model(dir, arch, tensors, 1);
}

fn expert2(w_shape: &[usize], w: &[f32]) -> Vec<Tensor> {
    vec![
        f32t("w", w_shape, w),
        f32t("b", &[2], &[0.5, 1.5]),
        i32t("ids", &[9, 9, 9]),
    ]
}

#[test]
fn errors_leave_no_output() {
    let f = Fixture::new();
    let cfg = f.config(Method::task_arithmetic());
    // Shape mismatch.
    rewrite_expert(&f, 1, "Toy", expert2(&[3, 2], &BASE_W));
    fails(&f, &cfg, &["`w`", "expert 2", "[3, 2]", "[2, 3]"]);
    // Missing tensor.
    rewrite_expert(
        &f,
        1,
        "Toy",
        vec![f32t("w", &[2, 3], &BASE_W), i32t("ids", &[1, 2, 3])],
    );
    fails(&f, &cfg, &["`b`", "expert 2"]);
    // Extra tensor: an error unless excluded.
    let mut extra = expert2(&[2, 3], &BASE_W);
    extra.push(f32t("head.weight", &[1], &[1.0]));
    rewrite_expert(&f, 1, "Toy", extra);
    fails(&f, &cfg, &["`head.weight`", "expert 2", "base"]);
    let mut ok = cfg.clone();
    ok.exclude = vec!["head.*".into()];
    merge(&ok, &NoProgress).unwrap();
    std::fs::remove_dir_all(f.out()).unwrap();
    // NaN in an expert tensor.
    let mut nan = BASE_W;
    nan[4] = f32::NAN;
    rewrite_expert(&f, 1, "Toy", expert2(&[2, 3], &nan));
    let err = fails(&f, &cfg, &["`w`", "expert 2", "NaN", "index 4"]);
    assert!(matches!(err, MergeError::NonFinite { index: 4, .. }));
    // Architecture mismatch.
    rewrite_expert(&f, 1, "Other", expert2(&[2, 3], &BASE_W));
    fails(&f, &cfg, &["architectures", "Toy", "Other", "expert 2"]);
    rewrite_expert(&f, 1, "Toy", expert2(&[2, 3], &BASE_W));
    // Bad options.
    let mut bad = f.config(Method::Ties(TiesOptions {
        density: 0.0,
        ..Default::default()
    }));
    fails(&f, &bad, &["density"]);
    bad.method = Method::Dare(DareOptions {
        p: 1.0,
        ..Default::default()
    });
    fails(&f, &bad, &["dare-p"]);
    bad.method = Method::Average;
    bad.include = vec!["[".into()];
    fails(&f, &bad, &["pattern"]);
    // Overflow of the requested output dtype.
    rewrite_expert(
        &f,
        1,
        "Toy",
        expert2(&[2, 3], &[3e5, 2.0, 3.0, 4.0, 5.0, 6.0]),
    );
    let mut f16 = f.config(Method::Average);
    f16.dtype = Some(Dtype::F16);
    fails(&f, &f16, &["`w`", "F16"]);
}

#[test]
fn output_location_rules() {
    let f = Fixture::new();
    // Never replaces an input, even with overwrite.
    let mut cfg = f.config(Method::Average);
    cfg.out = f.base.clone();
    cfg.overwrite = true;
    let err = merge(&cfg, &NoProgress).unwrap_err();
    assert!(
        matches!(
            err,
            MergeError::Io(pmq_io::IoError::OutputOverlapsInput { .. })
        ),
        "{err}"
    );
    cfg.out = f.root.clone();
    assert!(merge(&cfg, &NoProgress).is_err(), "parent of the inputs");
    cfg.out = f.experts[0].join("merged");
    assert!(merge(&cfg, &NoProgress).is_err(), "inside an input");
    assert!(!f.experts[0].join("merged").exists());
    assert!(TensorStore::open_dir(&f.base).unwrap().contains("w"));
    // Existing output: refused without overwrite (and kept), replaced with it.
    let out = f.out();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "x").unwrap();
    let cfg = f.config(Method::Average);
    let err = merge(&cfg, &NoProgress).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(out.join("keep.txt").exists());
    let mut cfg = cfg;
    cfg.overwrite = true;
    merge(&cfg, &NoProgress).unwrap();
    assert!(!out.join("keep.txt").exists() && out.join("model.safetensors").exists());
}

#[test]
fn sharded_base_and_relative_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let base = write_model(
        &tmp.path().join("base"),
        "Toy",
        vec![
            f32t("x", &[2], &[1.0, 2.0]),
            f32t("y", &[1], &[3.0]),
            f32t("z", &[1], &[4.0]),
        ],
        3,
    );
    let e = write_model(
        &tmp.path().join("e"),
        "Toy",
        vec![
            f32t("x", &[2], &[2.0, 2.0]),
            f32t("y", &[1], &[4.0]),
            f32t("z", &[1], &[4.0]),
        ],
        1,
    );
    let cfg = MergeConfig::new(
        base,
        vec![e],
        tmp.path().join("o"),
        Method::TaskArithmetic { lambda: 1.0 },
    );
    merge(&cfg, &NoProgress).unwrap();
    let out = tmp.path().join("o");
    assert_eq!(read(&out, "x"), [2.0, 2.0]);
    assert_eq!(read(&out, "y"), [4.0]);
    // The index of the base is not copied; the output is a single file.
    assert!(!out.join("model.safetensors.index.json").exists());
    let _ = Path::new(".");
}
