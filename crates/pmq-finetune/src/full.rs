//! Full fine-tuning: every encoder weight plus a linear head on the mean-pooled embedding,
//! minimising the cross-entropy `−log softmax(W e(x) + b)_y` with AdamW
//! ([`crate::optim`]; encoder at `lr`, head at `head_lr`, biases and LayerNorm weights without
//! weight decay), global gradient-norm clipping at [`crate::config::MAX_GRAD_NORM`] and a
//! linear warm-up/decay schedule. No dropout: runs are deterministic for a seed.

use crate::bert::{mean_pool, TrainBert};
use crate::clip::TrainClip;
use crate::config::{FinetuneConfig, MAX_GRAD_NORM};
use crate::data::Encoded;
use crate::optim::{no_decay, schedule, AdamW, ParamGroup};
use crate::t5::TrainT5;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use indicatif::{ProgressBar, ProgressStyle};
use pmq_eval::Head;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;
use std::time::Instant;

/// What a training run produced.
pub struct Trained {
    /// The classification head (`None` for a text-to-text model, which has its own LM head).
    pub head: Option<Head>,
    /// Trained encoder tensors by checkpoint name (empty for a linear probe).
    pub tensors: HashMap<String, Tensor>,
    pub steps: usize,
    pub final_loss: f64,
    pub train_accuracy: f64,
    pub seconds: f64,
}

/// A trainable linear head `[classes, hidden]` + `[classes]`.
pub struct HeadVars {
    pub w: Var,
    pub b: Var,
}

impl HeadVars {
    /// `w ~ N(0, 0.02²)` (BERT's `initializer_range`) from `rng`, `b = 0`.
    pub fn init(classes: usize, hidden: usize, dtype: DType, rng: &mut StdRng) -> Result<Self> {
        let normal = Normal::new(0.0f64, 0.02)?;
        let w: Vec<f64> = (0..classes * hidden).map(|_| normal.sample(rng)).collect();
        let w = Tensor::from_vec(w, (classes, hidden), &Device::Cpu)?.to_dtype(dtype)?;
        Ok(Self {
            w: Var::from_tensor(&w)?,
            b: Var::zeros(classes, dtype, &Device::Cpu)?,
        })
    }

    /// The optimizer groups of the head: the weight at `head_lr` with weight decay, the bias at
    /// `head_lr` without.
    pub fn param_groups(&self, cfg: &FinetuneConfig) -> Vec<ParamGroup> {
        vec![
            ParamGroup {
                vars: vec![self.w.clone()],
                lr: cfg.head_lr,
                weight_decay: cfg.weight_decay,
            },
            ParamGroup {
                vars: vec![self.b.clone()],
                lr: cfg.head_lr,
                weight_decay: 0.0,
            },
        ]
    }

    /// Logits `[b, classes]` of embeddings `[b, hidden]`.
    pub fn logits(&self, e: &Tensor) -> Result<Tensor> {
        Ok(e.matmul(&self.w.as_tensor().t()?)?
            .broadcast_add(self.b.as_tensor())?)
    }

    /// The head as plain f32 values.
    pub fn to_head(&self, task: &str, labels: &[String]) -> Result<Head> {
        let (_, hidden) = self.w.as_tensor().dims2()?;
        let f = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
        };
        Head::new(
            task,
            labels.to_vec(),
            hidden,
            f(self.w.as_tensor())?,
            f(self.b.as_tensor())?,
        )
    }
}

/// Mean cross-entropy of `logits` `[b, c]` against `labels` `[b]` (u32).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::loss::cross_entropy(logits, labels)?)
}

/// Correct predictions of `logits` against `labels`.
fn correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let pred = logits.argmax(D::Minus1)?;
    Ok(pred
        .eq(labels)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()? as usize)
}

pub(crate) fn progress(total: u64, msg: String) -> ProgressBar {
    let pb = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{msg:>24} [{bar:30}] {pos}/{len} steps {elapsed}<{eta} {prefix}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(msg);
    pb
}

/// Fine-tunes `model` and a fresh head on `data`.
pub fn train_full(
    model: &TrainBert,
    data: &Encoded,
    task: &str,
    labels: &[String],
    cfg: &FinetuneConfig,
) -> Result<Trained> {
    let dtype = model.dtype();
    let run = Run {
        params: model.params(),
        hidden: model.config().hidden_size,
        dtype,
        examples: data.len(),
    };
    train_loop(
        &run,
        |rng| data.epoch_batches(cfg.batch_size, rng),
        |idx| {
            let (ids, mask, y) = data.batch(idx, dtype)?;
            let hidden = model.forward(&ids, &mask)?;
            Ok((mean_pool(&hidden, &mask)?, y))
        },
        task,
        labels,
        cfg,
    )
}

/// Fine-tunes the CLIP vision tower `model` and a fresh head on preprocessed images `pixels`
/// (`[C, H, W]` each) with class indices `y`. Each epoch visits the images in a seeded
/// shuffled order, `batch_size` at a time.
pub fn train_full_images(
    model: &TrainClip,
    pixels: &[Tensor],
    y: &[usize],
    task: &str,
    labels: &[String],
    cfg: &FinetuneConfig,
) -> Result<Trained> {
    use rand::seq::SliceRandom;
    if pixels.len() != y.len() {
        bail!("{} images but {} labels", pixels.len(), y.len());
    }
    let run = Run {
        params: model.params(),
        hidden: model.embedding_width(),
        dtype: model.dtype(),
        examples: pixels.len(),
    };
    train_loop(
        &run,
        |rng| {
            let mut order: Vec<usize> = (0..pixels.len()).collect();
            order.shuffle(rng);
            order
                .chunks(cfg.batch_size)
                .map(<[usize]>::to_vec)
                .collect()
        },
        |idx| {
            let batch: Vec<&Tensor> = idx.iter().map(|&i| &pixels[i]).collect();
            let labels: Vec<u32> = idx.iter().map(|&i| y[i] as u32).collect();
            let n = labels.len();
            Ok((
                model.forward(&Tensor::stack(&batch, 0)?)?,
                Tensor::from_vec(labels, n, &Device::Cpu)?,
            ))
        },
        task,
        labels,
        cfg,
    )
}

/// Fine-tunes every tensor of the T5 `model` on text-to-text `data` (mean token
/// cross-entropy of the targets under teacher forcing). The reported accuracy is the share of
/// target tokens predicted right over the last quarter of the steps.
pub fn train_full_seq2seq(
    model: &TrainT5,
    data: &crate::data::Seq2Seq,
    task: &str,
    cfg: &FinetuneConfig,
) -> Result<Trained> {
    let dtype = model.dtype();
    let run = Run {
        params: model.params(),
        hidden: model.config().d_model,
        dtype,
        examples: data.len(),
    };
    optimise(
        &run,
        None,
        |rng| data.epoch_batches(cfg.batch_size, rng),
        |idx, _| {
            let b = data.batch(idx, dtype)?;
            let logits = model.forward(&b.ids, &b.mask, &b.dec_ids, &b.dec_mask)?;
            let (n, t, v) = logits.dims3()?;
            let logp = candle_nn::ops::log_softmax(&logits.reshape((n * t, v))?, D::Minus1)?;
            let labels = b.labels.flatten_all()?;
            let picked = logp.gather(&labels.unsqueeze(1)?, 1)?.squeeze(1)?;
            let m = b.dec_mask.flatten_all()?;
            let tokens = m.sum_all()?;
            let loss = (picked.mul(&m)?.sum_all()?.neg()? / tokens.clone())?;
            let hits = logp
                .argmax(D::Minus1)?
                .eq(&labels)?
                .to_dtype(dtype)?
                .mul(&m)?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            let seen = tokens.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            Ok((loss, hits as usize, seen as usize))
        },
        task,
        cfg,
    )
}

/// What a full fine-tuning run trains: the encoder's named variables, the width of its
/// embeddings, its dtype and the number of training examples.
struct Run<'a> {
    params: &'a [(String, Var)],
    hidden: usize,
    dtype: DType,
    examples: usize,
}

/// Full fine-tuning of a classifier: a fresh head on the encoder's embeddings; `embed` gives a
/// batch's embeddings `[b, hidden]` and labels `[b]` (u32).
fn train_loop(
    run: &Run,
    epoch_batches: impl FnMut(&mut StdRng) -> Vec<Vec<usize>>,
    embed: impl Fn(&[usize]) -> Result<(Tensor, Tensor)>,
    task: &str,
    labels: &[String],
    cfg: &FinetuneConfig,
) -> Result<Trained> {
    optimise(
        run,
        Some(labels),
        epoch_batches,
        |idx, head| {
            let head = head.context("a classifier has a head")?;
            let (emb, y) = embed(idx)?;
            let logits = head.logits(&emb)?;
            let loss = cross_entropy(&logits, &y)?;
            let right = correct(&logits, &y)?;
            Ok((loss, right, idx.len()))
        },
        task,
        cfg,
    )
}

/// The training loop of every full fine-tuning. With `labels` a head is drawn first from the
/// run's RNG and trained along; then each epoch's batches come from `epoch_batches` (same RNG);
/// `step` gives a batch's loss and how many of its predictions were right of how many.
fn optimise(
    run: &Run,
    labels: Option<&[String]>,
    mut epoch_batches: impl FnMut(&mut StdRng) -> Vec<Vec<usize>>,
    step_fn: impl Fn(&[usize], Option<&HeadVars>) -> Result<(Tensor, usize, usize)>,
    task: &str,
    cfg: &FinetuneConfig,
) -> Result<Trained> {
    if run.examples == 0 {
        bail!("task {task:?} has no training examples");
    }
    let start = Instant::now();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let head = match labels {
        Some(l) => Some(HeadVars::init(l.len(), run.hidden, run.dtype, &mut rng)?),
        None => None,
    };
    let (mut decay, mut plain) = (Vec::new(), Vec::new());
    for (name, var) in run.params {
        if no_decay(name) {
            plain.push(var.clone());
        } else {
            decay.push(var.clone());
        }
    }
    let mut groups = vec![
        ParamGroup {
            vars: decay,
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
        },
        ParamGroup {
            vars: plain,
            lr: cfg.lr,
            weight_decay: 0.0,
        },
    ];
    if let Some(h) = &head {
        groups.extend(h.param_groups(cfg));
    }
    let mut opt = AdamW::new(groups)?;
    let per_epoch = run.examples.div_ceil(cfg.batch_size);
    let total = per_epoch * cfg.epochs;
    let warmup = (cfg.warmup_frac * total as f64).round() as usize;
    let tail_from = total - (total / 4).max(1);
    let (mut tail_loss, mut tail_steps, mut tail_correct, mut tail_seen) = (0.0, 0usize, 0, 0);
    let pb = progress(total as u64, format!("finetune {task}"));
    let mut step = 0;
    for epoch in 0..cfg.epochs {
        for idx in epoch_batches(&mut rng) {
            let (loss, right, seen) = step_fn(&idx, head.as_ref())?;
            let loss_v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !loss_v.is_finite() {
                bail!("task {task:?}: training loss became {loss_v} at step {step}");
            }
            let grads = loss.backward()?;
            let norm = opt.step(&grads, schedule(step, total, warmup), Some(MAX_GRAD_NORM))?;
            if step >= tail_from {
                tail_loss += loss_v;
                tail_steps += 1;
                tail_correct += right;
                tail_seen += seen;
            }
            step += 1;
            pb.set_prefix(format!("loss {loss_v:.3}"));
            pb.inc(1);
            if step % 10 == 0 || step == total {
                tracing::debug!(
                    task,
                    epoch,
                    step,
                    total,
                    loss = loss_v,
                    grad_norm = norm,
                    "step"
                );
            }
        }
    }
    pb.finish_and_clear();
    let mut tensors = HashMap::new();
    for (name, var) in run.params {
        tensors.insert(name.clone(), var.as_tensor().clone());
    }
    Ok(Trained {
        head: match (&head, labels) {
            (Some(h), Some(l)) => Some(h.to_head(task, l)?),
            _ => None,
        },
        tensors,
        steps: total,
        final_loss: tail_loss / tail_steps.max(1) as f64,
        train_accuracy: tail_correct as f64 / tail_seen.max(1) as f64,
        seconds: start.elapsed().as_secs_f64(),
    })
}
