//! Writes K synthetic "experts" of a real checkpoint: every float tensor of the base plus a
//! seeded Gaussian task vector with relative size `REL` (per tensor, σ = REL · rms(tensor)),
//! for benchmarking the pipeline when no fine-tuned experts exist yet.
//!
//! `cargo run --release -p pmq-cli --example make_experts -- BASE_DIR OUT_PREFIX K [REL] [SEED]`
//! writes `OUT_PREFIX0 … OUT_PREFIX{K−1}` (config/tokenizer files copied).

use pmq_io::{encode_f32, is_float, write_safetensors, TensorStore};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        anyhow::bail!("usage: make_experts BASE_DIR OUT_PREFIX K [REL] [SEED]");
    }
    let base = PathBuf::from(&args[0]);
    let k: usize = args[2].parse()?;
    let rel: f32 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(0.01);
    let seed: u64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let store = TensorStore::open_dir(&base)?;
    for i in 0..k {
        let dir = PathBuf::from(format!("{}{i}", args[1]));
        std::fs::create_dir_all(&dir)?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 1000 + i as u64);
        let mut tensors = Vec::new();
        for name in store.names() {
            let info = store.info(&name).expect("listed").clone();
            let bytes = if is_float(info.dtype) {
                let mut v = store.read_f32(&name)?;
                let rms = (v.iter().map(|x| x * x).sum::<f32>() / v.len().max(1) as f32).sqrt();
                let noise = Normal::new(0.0f32, (rel * rms).max(1e-12))?;
                for x in v.iter_mut() {
                    *x += noise.sample(&mut rng);
                }
                encode_f32(info.dtype, &v)?
            } else {
                store.raw_bytes(&name)?.to_vec()
            };
            tensors.push((name, info.dtype, info.shape, bytes));
        }
        write_safetensors(&dir.join("model.safetensors"), &tensors, None)?;
        pmq_io::copy_non_weight_files(&base, &dir, &[])?;
        eprintln!("wrote {}", dir.display());
    }
    Ok(())
}
