//! Measures full fine-tuning throughput on the real backbone (used to size the presets):
//!
//! ```sh
//! cargo run --release -p pmq-finetune --example throughput -- BACKBONE_DIR [BATCH SEQ STEPS]
//! ```
//!
//! Prints seconds per step for the forward pass, forward + backward, and forward + backward +
//! AdamW update, on random token ids of exactly `SEQ` tokens.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use pmq_finetune::bert::{mean_pool, TrainBert};
use pmq_finetune::full::{cross_entropy, HeadVars};
use pmq_finetune::optim::{AdamW, ParamGroup};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(
        args.get(1)
            .context("usage: throughput BACKBONE_DIR [BATCH SEQ STEPS]")?,
    );
    let num = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (b, s, steps) = (num(2, 32), num(3, 64), num(4, 3));
    let model = TrainBert::load(&dir, DType::F32)?;
    let mut rng = StdRng::seed_from_u64(0);
    let head = HeadVars::init(4, model.config().hidden_size, DType::F32, &mut rng)?;
    let ids: Vec<u32> = (0..b * s).map(|_| rng.random_range(1000..20000)).collect();
    let ids = Tensor::from_vec(ids, (b, s), &Device::Cpu)?;
    let mask = Tensor::ones((b, s), DType::F32, &Device::Cpu)?;
    let labels = Tensor::from_vec(
        (0..b as u32).map(|i| i % 4).collect::<Vec<_>>(),
        b,
        &Device::Cpu,
    )?;
    let mut vars: Vec<_> = model.params().iter().map(|(_, v)| v.clone()).collect();
    vars.extend([head.w.clone(), head.b.clone()]);
    let mut opt = AdamW::new(vec![ParamGroup {
        vars,
        lr: 1e-5,
        weight_decay: 0.01,
    }])?;
    let loss_of = || -> Result<Tensor> {
        let e = mean_pool(&model.forward(&ids, &mask)?, &mask)?;
        cross_entropy(&head.logits(&e)?, &labels)
    };
    loss_of()?; // warm-up
    let t = Instant::now();
    for _ in 0..steps {
        loss_of()?;
    }
    let fwd = t.elapsed().as_secs_f64() / steps as f64;
    let t = Instant::now();
    for _ in 0..steps {
        loss_of()?.backward()?;
    }
    let bwd = t.elapsed().as_secs_f64() / steps as f64;
    let t = Instant::now();
    for _ in 0..steps {
        let g = loss_of()?.backward()?;
        opt.step(&g, 1.0, Some(1.0))?;
    }
    let full = t.elapsed().as_secs_f64() / steps as f64;
    println!(
        "batch {b} × seq {s}: forward {fwd:.3} s, forward+backward {bwd:.3} s, full step {full:.3} s ({:.0} tokens/s)",
        (b * s) as f64 / full
    );
    Ok(())
}
