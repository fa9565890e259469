//! Writes a synthetic layer file for `pmq solve`: a base weight, K experts = base + task
//! vectors, the task-arithmetic merge (λ = 0.3) as `merged`, and per-task Hessians
//! `H_i = X_i X_iᵀ` of correlated, unevenly scaled activations with a task-specific low-rank part.
//!
//! `cargo run --release -p pmq-cli --example make_layer -- OUT.safetensors ROWS COLS TASKS TOKENS [SEED]`

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};
use pmq_io::{f32_bytes, write_safetensors, Dtype};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

fn randn(rng: &mut rand::rngs::StdRng, rows: usize, cols: usize, std: f64) -> Mat<f64> {
    let n = Normal::new(0.0, std).expect("valid normal");
    Mat::from_fn(rows, cols, |_, _| n.sample(rng))
}

fn row_major(m: &Mat<f64>) -> Vec<f32> {
    let mut v = Vec::with_capacity(m.nrows() * m.ncols());
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            v.push(m[(i, j)] as f32);
        }
    }
    v
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        anyhow::bail!("usage: make_layer OUT.safetensors ROWS COLS TASKS TOKENS [SEED]");
    }
    let out = std::path::PathBuf::from(&args[0]);
    let rows: usize = args[1].parse()?;
    let cols: usize = args[2].parse()?;
    let tasks: usize = args[3].parse()?;
    let tokens: usize = args[4].parse()?;
    let seed: u64 = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let base = randn(&mut rng, rows, cols, 1.0 / (cols as f64).sqrt());
    let mut merged = base.clone();
    let mut tensors = Vec::new();
    // Channel scales shared by all tasks (outlier features, as in real activations).
    let scales: Vec<f64> = (0..cols)
        .map(|j| {
            if j % 97 == 0 {
                8.0
            } else {
                0.5 + (j % 13) as f64 / 13.0
            }
        })
        .collect();
    for i in 0..tasks {
        let tau = randn(&mut rng, rows, cols, 0.02 / (cols as f64).sqrt());
        let expert = &base + &tau;
        merged += faer::Scale(0.3) * &tau;
        tensors.push((
            format!("expert.{i}"),
            Dtype::F32,
            vec![rows, cols],
            f32_bytes(&row_major(&expert)),
        ));
        let rank = 16.min(cols);
        let u = randn(&mut rng, cols, rank, 1.0);
        let v = randn(&mut rng, rank, tokens, 1.0);
        let mut x = randn(&mut rng, cols, tokens, 1.0);
        matmul(
            x.as_mut(),
            Accum::Add,
            u.as_ref(),
            v.as_ref(),
            1.0,
            Par::rayon(0),
        );
        for j in 0..cols {
            for t in 0..tokens {
                x[(j, t)] *= scales[j];
            }
        }
        let mut h = Mat::<f64>::zeros(cols, cols);
        matmul(
            h.as_mut(),
            Accum::Replace,
            x.as_ref(),
            x.transpose(),
            1.0,
            Par::rayon(0),
        );
        tensors.push((
            format!("hessian.{i}"),
            Dtype::F32,
            vec![cols, cols],
            f32_bytes(&row_major(&h)),
        ));
    }
    tensors.push((
        "merged".into(),
        Dtype::F32,
        vec![rows, cols],
        f32_bytes(&row_major(&merged)),
    ));
    write_safetensors(&out, &tensors, None)?;
    eprintln!(
        "wrote {} ({rows}×{cols}, {tasks} tasks, {tokens} tokens each)",
        out.display()
    );
    Ok(())
}
