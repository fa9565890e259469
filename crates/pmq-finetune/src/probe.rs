//! Linear probe: the frozen backbone embeds the training examples once, as evaluation does
//! (texts: BERT mean pooling; images: CLIP's image embedding), then only a linear head is
//! trained on them with AdamW and cross-entropy.
//!
//! The features are standardised for the optimisation (`z = (e − μ) / σ` per dimension) and the
//! standardisation is folded back into the head, so the saved head applies to raw embeddings:
//! `W' = W / σ` (column-wise), `b' = b − W' μ`.

use crate::config::FinetuneConfig;
use crate::full::{cross_entropy, progress, HeadVars, Trained};
use crate::optim::{schedule, AdamW};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use pmq_eval::tasks::ImageExample;
use pmq_eval::{Encoder, Head, ImageEncoder};
use pmq_testbed::Example;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// Trains a head on the frozen embeddings of `backbone`.
pub fn train_probe(
    backbone: &Path,
    train: &[Example],
    task: &str,
    labels: &[String],
    cfg: &FinetuneConfig,
) -> Result<Trained> {
    let y: Vec<usize> = train.iter().map(|e| e.label).collect();
    check_labels(task, &y, labels)?;
    let start = Instant::now();
    let encoder = Encoder::open(backbone, cfg.max_seq_len)?;
    let texts: Vec<&str> = train.iter().map(|e| e.text.as_str()).collect();
    let pb = progress(texts.len() as u64, format!("embed {task}"));
    let emb = encoder.embed(&texts, cfg.batch_size.max(32), Some(&pb))?;
    pb.finish_and_clear();
    train_head(emb, encoder.hidden(), &y, task, labels, cfg, start)
}

/// Trains a head on the frozen image embeddings of the CLIP vision tower in `model`.
pub fn train_image_probe(
    model: &Path,
    train: &[ImageExample],
    task: &str,
    labels: &[String],
    cfg: &FinetuneConfig,
) -> Result<Trained> {
    let y: Vec<usize> = train.iter().map(|e| e.label).collect();
    check_labels(task, &y, labels)?;
    let start = Instant::now();
    let encoder = ImageEncoder::open(model)?;
    let paths: Vec<&Path> = train.iter().map(|e| e.path.as_path()).collect();
    let pb = progress(paths.len() as u64, format!("embed {task}"));
    let emb = encoder.embed(&paths, cfg.batch_size.max(16), Some(&pb))?;
    pb.finish_and_clear();
    train_head(emb, encoder.hidden(), &y, task, labels, cfg, start)
}

/// Refuses an empty training set and class indices `y` beyond `labels`.
fn check_labels(task: &str, y: &[usize], labels: &[String]) -> Result<()> {
    if y.is_empty() {
        bail!("task {task:?} has no training examples");
    }
    if let Some(l) = y.iter().find(|&&l| l >= labels.len()) {
        bail!(
            "task {task:?}: label {l} is out of range for {} classes",
            labels.len()
        );
    }
    Ok(())
}

/// The head trained on embeddings `emb` (width `h`) with class indices `y`.
fn train_head(
    emb: Vec<Vec<f32>>,
    h: usize,
    y: &[usize],
    task: &str,
    labels: &[String],
    cfg: &FinetuneConfig,
    start: Instant,
) -> Result<Trained> {
    let n = emb.len();
    let (mu, sigma) = moments(&emb, h);
    let z: Vec<f32> = emb
        .iter()
        .flat_map(|e| e.iter().zip(&mu).zip(&sigma).map(|((x, m), s)| (x - m) / s))
        .collect();
    let z = Tensor::from_vec(z, (n, h), &Device::Cpu)?;
    let y_t = Tensor::from_vec(
        y.iter().map(|&l| l as u32).collect::<Vec<_>>(),
        n,
        &Device::Cpu,
    )?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let head = HeadVars::init(labels.len(), h, DType::F32, &mut rng)?;
    let mut opt = AdamW::new(head.param_groups(cfg))?;
    let bs = cfg.batch_size.max(1);
    let epochs = cfg.probe_epochs();
    let total = epochs * n.div_ceil(bs);
    let warmup = (cfg.warmup_frac * total as f64).round() as usize;
    let mut order: Vec<u32> = (0..n as u32).collect();
    let (mut step, mut last_loss, mut last_steps) = (0, 0.0, 0);
    for epoch in 0..epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(bs) {
            let idx = Tensor::from_slice(chunk, chunk.len(), &Device::Cpu)?;
            let logits = head.logits(&z.index_select(&idx, 0)?)?;
            let loss = cross_entropy(&logits, &y_t.index_select(&idx, 0)?)?;
            let grads = loss.backward()?;
            opt.step(&grads, schedule(step, total, warmup), None)?;
            if epoch + 1 == epochs {
                last_loss += f64::from(loss.to_scalar::<f32>()?);
                last_steps += 1;
            }
            step += 1;
        }
    }
    let std_head = head.to_head(task, labels)?;
    let head = fold_standardisation(&std_head, &mu, &sigma)?;
    let (correct, seen) = pmq_eval::accuracy(&head, &emb, y);
    Ok(Trained {
        head: Some(head),
        tensors: HashMap::new(),
        steps: total,
        final_loss: last_loss / last_steps.max(1) as f64,
        train_accuracy: correct as f64 / seen as f64,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Per-dimension mean and standard deviation (σ floored at 1e-6).
fn moments(emb: &[Vec<f32>], h: usize) -> (Vec<f32>, Vec<f32>) {
    let n = emb.len().max(1) as f64;
    let mut mu = vec![0f64; h];
    for e in emb {
        for (m, x) in mu.iter_mut().zip(e) {
            *m += f64::from(*x);
        }
    }
    mu.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0f64; h];
    for e in emb {
        for ((v, m), x) in var.iter_mut().zip(&mu).zip(e) {
            *v += (f64::from(*x) - m).powi(2);
        }
    }
    let sigma = var
        .iter()
        .map(|v| ((v / n).sqrt().max(1e-6)) as f32)
        .collect();
    (mu.iter().map(|m| *m as f32).collect(), sigma)
}

/// The head on raw embeddings equivalent to `head` on standardised ones.
fn fold_standardisation(head: &Head, mu: &[f32], sigma: &[f32]) -> Result<Head> {
    let h = head.hidden;
    let mut w = head.weight.clone();
    let mut b = head.bias.clone();
    for (row, bias) in w.chunks_exact_mut(h).zip(&mut b) {
        let mut shift = 0f64;
        for ((wv, m), s) in row.iter_mut().zip(mu).zip(sigma) {
            *wv /= s;
            shift += f64::from(*wv) * f64::from(*m);
        }
        *bias = (f64::from(*bias) - shift) as f32;
    }
    Head::new(head.task.clone(), head.labels.clone(), h, w, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_preserves_logits() {
        let head = Head::new(
            "t",
            vec!["a".into(), "b".into()],
            2,
            vec![1.0, -2.0, 0.5, 0.25],
            vec![0.1, -0.3],
        )
        .unwrap();
        let (mu, sigma) = (vec![0.5f32, -1.0], vec![2.0f32, 0.5]);
        let folded = fold_standardisation(&head, &mu, &sigma).unwrap();
        let e = [1.5f32, 0.25];
        let z: Vec<f32> = e
            .iter()
            .zip(&mu)
            .zip(&sigma)
            .map(|((x, m), s)| (x - m) / s)
            .collect();
        for (a, b) in head.logits(&z).iter().zip(folded.logits(&e)) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn moments_by_hand() {
        let (mu, sigma) = moments(&[vec![1.0, 5.0], vec![3.0, 5.0]], 2);
        assert_eq!(mu, vec![2.0, 5.0]);
        assert_eq!(sigma, vec![1.0, 1e-6]);
    }
}
