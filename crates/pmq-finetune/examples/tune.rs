//! Trains one expert of a testbed task with a custom config and prints its test accuracy
//! (used to choose the presets' hyper-parameters):
//!
//! ```sh
//! cargo run --release -p pmq-finetune --example tune -- CACHE TASK MODE PRESET [KEY=VALUE ...]
//! # e.g. ... -- ~/.cache/pmq spam full bench lr=5e-5 batch_size=16 max_train=1000
//! ```
//!
//! KEY is a field of `FinetuneConfig`; the expert goes to a temporary directory.

use anyhow::{bail, Context, Result};
use pmq_eval::{evaluate, EvalOptions, Head};
use pmq_finetune::{finetune, ExpertRecord, FinetuneConfig, Mode};
use pmq_testbed::{backbone_dir, load_task, SplitConfig};
use std::path::PathBuf;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        bail!("usage: tune CACHE TASK MODE PRESET [KEY=VALUE ...]");
    }
    let cache = PathBuf::from(&args[1]);
    let task = load_task(&cache, &args[2], &SplitConfig::default())?;
    let mode = Mode::parse(&args[3])?;
    let mut cfg = serde_json::to_value(FinetuneConfig::preset(&args[4])?)?;
    for kv in &args[5..] {
        let (k, v) = kv.split_once('=').context("expected KEY=VALUE")?;
        if cfg.get(k).is_none() {
            bail!("unknown config field {k:?}");
        }
        cfg[k] = serde_json::from_str(v).with_context(|| format!("bad value for {k}: {v}"))?;
    }
    let cfg: FinetuneConfig = serde_json::from_value(cfg)?;
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join(&task.name);
    let backbone = backbone_dir(&cache);
    let r = finetune(&backbone, &task, mode, &cfg, &out)?;
    let rec = ExpertRecord::read(&out)?.context("no record")?;
    let model = if mode == Mode::Full {
        out.clone()
    } else {
        backbone
    };
    let head = Head::load(&out)?;
    let opts = EvalOptions {
        max_examples: None,
        max_seq_len: cfg.max_seq_len,
        batch_size: 64,
        max_new_tokens: None,
    };
    let t = std::time::Instant::now();
    let acc = evaluate(&model, &[(&task, &head)], &opts)?;
    println!(
        "{} {} {}: train {:.1} s, {} steps, loss {:.4}, train acc {:.3}, test acc {:.4} (eval {:.1} s)",
        task.name,
        mode,
        serde_json::to_string(&cfg)?,
        r.train_seconds,
        r.steps,
        r.final_loss,
        rec.train_accuracy,
        acc[0].accuracy,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
