//! `pmq merge` end to end: tiny checkpoints, every method, numeric checks, clean failures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pmq_io::{encode_f32, i32_bytes, write_safetensors, Dtype, TensorStore};

const BASE_W: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
const TAU_A: [f32; 6] = [1.0, 0.0, -2.0, 0.0, 2.0, 0.0];
const TAU_B: [f32; 6] = [-1.0, 1.0, 0.0, 0.0, -1.0, 3.0];

/// Writes a model dir: config.json, tokenizer.json, `w` [2,3] (dtype), `b` [2] and `ids` (i32).
fn model(dir: &Path, arch: &str, dtype: Dtype, w: &[f32], b: &[f32]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({"architectures": [arch], "model_type": "toy"});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
    let tensors = vec![
        (
            "w".to_string(),
            dtype,
            vec![2, 3],
            encode_f32(dtype, w).unwrap(),
        ),
        (
            "b".to_string(),
            dtype,
            vec![2],
            encode_f32(dtype, b).unwrap(),
        ),
        (
            "ids".to_string(),
            Dtype::I32,
            vec![3],
            i32_bytes(&[0, 1, 2]),
        ),
    ];
    write_safetensors(&dir.join("model.safetensors"), &tensors, None).unwrap();
    dir.to_path_buf()
}

fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        model(&r.join("base"), "Toy", Dtype::F32, &BASE_W, &[0.5, -0.5]);
        model(
            &r.join("e1"),
            "Toy",
            Dtype::F16,
            &add(&BASE_W, &TAU_A),
            &[1.5, 0.5],
        );
        model(
            &r.join("e2"),
            "Toy",
            Dtype::BF16,
            &add(&BASE_W, &TAU_B),
            &[0.5, 1.5],
        );
        Self { tmp }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn pmq(&self, method: &str, out: &str, extra: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pmq"));
        cmd.arg("merge")
            .arg("--base")
            .arg(self.p("base"))
            .arg("--expert")
            .arg(self.p("e1"))
            .arg("--expert")
            .arg(self.p("e2"))
            .args(["--method", method])
            .arg("--out")
            .arg(self.p(out))
            .args(extra)
            .env("PMQ_LOG", "warn");
        cmd.output().unwrap()
    }

    fn ok(&self, method: &str, out: &str, extra: &[&str]) -> serde_json::Value {
        let o = self.pmq(method, out, extra);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success(),
            "pmq merge --method {method} failed: {stderr}"
        );
        let stdout = String::from_utf8(o.stdout).unwrap();
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "one JSON line on stdout: {stdout}");
        let summary: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(summary["method"], method);
        assert!(self.p(out).join("merge_report.json").is_file());
        summary
    }

    fn fails(&self, method: &str, out: &str, extra: &[&str], needle: &str) {
        let o = self.pmq(method, out, extra);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "expected failure");
        assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
        assert!(o.stdout.is_empty());
        assert!(!self.p(out).exists(), "output left after failure: {stderr}");
    }

    fn read(&self, out: &str, name: &str) -> Vec<f32> {
        TensorStore::open_dir(&self.p(out))
            .unwrap()
            .read_f32(name)
            .unwrap()
    }
}

fn close(got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() <= tol, "got {got:?}, want {want:?}");
    }
}

#[test]
fn every_method_numerically() {
    let env = Env::new();
    // average
    let s = env.ok("average", "avg", &[]);
    assert_eq!(
        (s["k"].as_u64(), s["tensors_merged"].as_u64()),
        (Some(2), Some(2))
    );
    close(&env.read("avg", "w"), &[1.0, 2.5, 2.0, 4.0, 5.5, 7.5], 1e-6);
    let store = TensorStore::open_dir(&env.p("avg")).unwrap();
    assert_eq!(
        store.info("w").unwrap().dtype,
        Dtype::F32,
        "base dtype kept"
    );
    assert_eq!(
        store.raw_bytes("ids").unwrap(),
        i32_bytes(&[0, 1, 2]).as_slice()
    );
    assert!(env.p("avg").join("tokenizer.json").is_file());

    // task arithmetic, λ = 0.5: W0 + 0.5·[[0,1,-2],[0,1,3]]
    env.ok("task-arithmetic", "ta", &["--lambda", "0.5"]);
    close(&env.read("ta", "w"), &[1.0, 2.5, 2.0, 4.0, 5.5, 7.5], 1e-6);
    // b: 0.5 + 0.5·(1 + 0), -0.5 + 0.5·(1 + 2)
    close(&env.read("ta", "b"), &[1.0, 1.0], 1e-6);

    // TIES, density 1 (nothing trimmed), λ 1, per tensor, sum:
    // w: Στ = [0,1,-2,0,1,3], γ = [0,+,-,0,+,+], majority of w = + →
    // agreeing sums [1, 1, -2, 0, 2, 3].
    env.ok(
        "ties",
        "ties",
        &["--density", "1", "--lambda", "1", "--ties-trim", "tensor"],
    );
    close(
        &env.read("ties", "w"),
        &[2.0, 3.0, 1.0, 4.0, 7.0, 9.0],
        1e-6,
    );
    // ... and mean: entry 0 (γ=+): A:1 → 1; entry 4: A:2 → 2 (B:-1 disagrees).
    env.ok(
        "ties",
        "ties_mean",
        &["--density", "1", "--lambda", "1", "--ties-merge", "mean"],
    );
    close(
        &env.read("ties_mean", "w"),
        &[2.0, 3.0, 1.0, 4.0, 7.0, 9.0],
        1e-6,
    );
    close(&env.read("ties_mean", "b"), &[1.5, 1.0], 1e-6);

    // DARE with p = 0 is task arithmetic; with p = 0.5 the run is reproducible per seed.
    env.ok("dare", "dare0", &["--dare-p", "0", "--lambda", "0.5"]);
    close(
        &env.read("dare0", "w"),
        &[1.0, 2.5, 2.0, 4.0, 5.5, 7.5],
        1e-6,
    );
    env.ok("dare", "dare_a", &["--seed", "3"]);
    env.ok(
        "dare",
        "dare_b",
        &["--seed", "3", "--dare-rescale", "inverse"],
    );
    assert_eq!(env.read("dare_a", "w"), env.read("dare_b", "w"));

    // WUDI exact: the result has zero gradient; 1-D tensors: base values with --wudi-other base.
    env.ok(
        "wudi",
        "wudi",
        &["--wudi-solver", "exact", "--wudi-other", "base"],
    );
    let tm: Vec<f64> = env
        .read("wudi", "w")
        .iter()
        .zip(&BASE_W)
        .map(|(a, b)| (a - b) as f64)
        .collect();
    let mut grad = [0.0f64; 6];
    for tau in [TAU_A, TAU_B] {
        let n: f64 = tau.iter().map(|v| (v * v) as f64).sum();
        for r in 0..2 {
            for r2 in 0..2 {
                let p: f64 = (0..3)
                    .map(|c| (tm[r * 3 + c] - tau[r * 3 + c] as f64) * tau[r2 * 3 + c] as f64)
                    .sum();
                for c in 0..3 {
                    grad[r * 3 + c] += 2.0 * p * tau[r2 * 3 + c] as f64 / n;
                }
            }
        }
    }
    assert!(grad.iter().all(|g| g.abs() < 1e-5), "{grad:?}");
    close(&env.read("wudi", "b"), &[0.5, -0.5], 0.0);
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.p("wudi").join("merge_report.json")).unwrap(),
    )
    .unwrap();
    assert!(report["tensors"]["w"]["final_loss"].as_f64().unwrap() >= 0.0);

    // WUDI default (Adam, 400 steps, lr 1e-5) stays within 4e-3 of Σ τ; output dtype option.
    env.ok("wudi", "wudi_adam", &["--dtype", "f32", "--include", "w"]);
    let sum: Vec<f64> = (0..6)
        .map(|j| (BASE_W[j] + TAU_A[j] + TAU_B[j]) as f64)
        .collect();
    close(&env.read("wudi_adam", "w"), &sum, 4.1e-3);
    close(&env.read("wudi_adam", "b"), &[0.5, -0.5], 0.0);

    env.ok("average", "avg16", &["--dtype", "bf16", "--exclude", "b"]);
    let store = TensorStore::open_dir(&env.p("avg16")).unwrap();
    assert_eq!(store.info("w").unwrap().dtype, Dtype::BF16);
    assert_eq!(store.info("ids").unwrap().dtype, Dtype::I32);
}

#[test]
fn failures_leave_no_output() {
    let env = Env::new();
    env.fails(
        "average",
        "x",
        &["--density", "0.3"],
        "--density does not apply to --method average",
    );
    env.fails("ties", "x", &["--density", "1.5"], "density");
    // Shape mismatch in expert 2.
    let e2 = env.p("e2");
    std::fs::remove_dir_all(&e2).unwrap();
    std::fs::create_dir_all(&e2).unwrap();
    std::fs::write(
        e2.join("config.json"),
        r#"{"architectures": ["Toy"], "model_type": "toy"}"#,
    )
    .unwrap();
    let tensors = vec![
        (
            "w".to_string(),
            Dtype::F32,
            vec![3, 2],
            encode_f32(Dtype::F32, &BASE_W).unwrap(),
        ),
        (
            "b".to_string(),
            Dtype::F32,
            vec![2],
            encode_f32(Dtype::F32, &[0.0, 0.0]).unwrap(),
        ),
        (
            "ids".to_string(),
            Dtype::I32,
            vec![3],
            i32_bytes(&[0, 1, 2]),
        ),
    ];
    write_safetensors(&e2.join("model.safetensors"), &tensors, None).unwrap();
    env.fails(
        "task-arithmetic",
        "x",
        &[],
        "tensor `w` has shape [3, 2] in expert 2",
    );
    // Architecture mismatch.
    model(&e2, "Other", Dtype::F32, &BASE_W, &[0.0, 0.0]);
    env.fails("average", "x", &[], "architectures");
    // NaN in an expert.
    let mut nan = BASE_W;
    nan[1] = f32::NAN;
    model(&e2, "Toy", Dtype::F32, &nan, &[0.0, 0.0]);
    env.fails("wudi", "x", &[], "tensor `w` of expert 2");
    // Missing expert dir.
    std::fs::remove_dir_all(&e2).unwrap();
    env.fails("average", "x", &[], "e2");
}

#[test]
fn existing_output_needs_overwrite() {
    let env = Env::new();
    env.ok("average", "o", &[]);
    let o = env.pmq("average", "o", &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    env.ok("task-arithmetic", "o", &["--overwrite"]);
    close(&env.read("o", "w"), &[1.0, 2.3, 2.4, 4.0, 5.3, 6.9], 1e-6);
}
