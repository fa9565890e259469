//! `--alpha auto-model`: one anchor weight α for the whole model, chosen on held-out
//! calibration batches by the experts' end-to-end loss
//!
//! ```text
//! α* = argmin_{α ∈ grid} (1/K) Σ_i ‖F_α(X_i^held) − F_i(X_i^held)‖² / ‖F_i(X_i^held)‖²
//! ```
//!
//! where `F_α` is the merged model E-PMQ-quantized with anchor weight α on the *fit* batches
//! only (every `holdout_every`-th calibration batch of each task held out), `F_i` is expert
//! `i`, both read at the output of the last block on the real tokens of task `i`'s held-out
//! batches. The final model is then quantized with α* on all batches.
//!
//! When every expert is a BERT encoder with its classification head next to it (what
//! `pmq finetune` writes, `pmq_head.safetensors`), the score is what the head sees instead:
//!
//! ```text
//! α* = argmin_{α ∈ grid} (1/K) Σ_i mean_x KL( softmax(h_i(ē_i(x))) ‖ softmax(h_i(ē_α(x))) )
//! ```
//!
//! with `ē` the mean-pooled last hidden state (the sentence embedding evaluation uses) and
//! `h_i` expert `i`'s head, over the held-out texts `x` of task `i`: how far the quantized
//! model's predictive distribution is from the expert's. The hidden-state error weighs every
//! direction of the embedding alike; the head only the ones it reads (under WUDI the two
//! disagree: bench/README.md).
//!
//! Why not only per linear ([`pmq_core::alpha_selection`])? A linear's held-out loss
//! `Σ_i ‖QX_i − W_iX_i‖²` sees neither the merge's other tensors (norms, biases, embeddings)
//! nor how errors compound across blocks: it favours small α under every merge, while under
//! WUDI the accuracy is best at α = 10 (bench/README.md). The model's output sees both, at the
//! price of one quantization run per candidate.

use crate::config::{AutoAlpha, ModelAlphaCriterion, PipelineConfig, PipelineInputs};
use crate::method::Method;
use crate::pipeline::{forward_block, run_inner, HeldOut, PipelineOutput};
use crate::progress::Progress;
use crate::resume::Checkpointing;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use pmq_eval::{Head, HEAD_FILE};
use pmq_models::config::ConfigObject;
use pmq_models::{detect_family, load_model_streamed, BertModel, Family, Pooling, State};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// One candidate α and its held-out loss.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelAlphaCandidate {
    pub alpha: f64,
    /// Mean over the tasks of the criterion's score (the equations above).
    pub loss: f64,
    /// Each task's score, in the order of the calibration tasks.
    pub per_task: Vec<f64>,
}

/// What the search chose and saw.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelAlphaSearch {
    /// The α the final model was quantized with.
    pub alpha: f64,
    /// What the candidates were scored by.
    pub criterion: ModelAlphaCriterion,
    pub holdout_every: usize,
    pub candidates: Vec<ModelAlphaCandidate>,
    /// Seconds spent on the candidates' runs and the experts' forward passes.
    pub search_seconds: f64,
}

impl ModelAlphaSearch {
    /// A markdown section: one row per candidate, the chosen one marked.
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "## α per model (--alpha auto-model)\n\nchosen α = {} (every {}th calibration batch held out; search {:.1} s)\n\n| α | {} |\n|---|---|\n",
            self.alpha,
            self.holdout_every,
            self.search_seconds,
            self.criterion.describe()
        );
        for c in &self.candidates {
            let mark = if c.alpha == self.alpha { " ←" } else { "" };
            s.push_str(&format!("| {} | {:.5}{mark} |\n", c.alpha, c.loss));
        }
        s.push('\n');
        s
    }
}

/// Searches α over `auto.grid`, then quantizes with the chosen α on all batches (that run
/// keeps `checkpoint`).
pub(crate) fn run(
    inputs: &PipelineInputs,
    cfg: &PipelineConfig,
    auto: &AutoAlpha,
    progress: &dyn Progress,
    checkpoint: Option<&Checkpointing>,
) -> Result<PipelineOutput> {
    if !matches!(cfg.method, Method::Epmq { .. }) {
        bail!("--alpha auto-model applies to E-PMQ (--method epmq)");
    }
    if inputs.experts.is_empty() {
        bail!("--alpha auto-model needs the experts: give --expert DIR for each task");
    }
    if auto.grid.is_empty() {
        bail!("--alpha auto-model needs at least one candidate α");
    }
    let runs = Runs::new(progress, auto.grid.len() + 1);
    let result = search_then_quantize(inputs, cfg, auto, &runs, checkpoint);
    progress.finish();
    result
}

fn search_then_quantize(
    inputs: &PipelineInputs,
    cfg: &PipelineConfig,
    auto: &AutoAlpha,
    runs: &Runs<'_>,
    checkpoint: Option<&Checkpointing>,
) -> Result<PipelineOutput> {
    let t0 = Instant::now();
    let mut run_cfg = cfg.clone();
    run_cfg.alpha_auto = None;
    let heads = match auto.criterion {
        Some(ModelAlphaCriterion::HiddenState) => None,
        Some(ModelAlphaCriterion::HeadKl) => Some(expert_heads(inputs)?.context(
            "--alpha-criterion head-kl needs BERT experts with their classification heads \
             (pmq_head.safetensors, as pmq finetune writes them) in every expert directory",
        )?),
        None => expert_heads(inputs)?,
    };
    let criterion = if heads.is_some() {
        ModelAlphaCriterion::HeadKl
    } else {
        ModelAlphaCriterion::HiddenState
    };
    tracing::info!(?criterion, "--alpha auto-model: scoring the candidates");
    let mut experts_out: Option<Vec<Vec<Tensor>>> = None;
    let mut candidates = Vec::with_capacity(auto.grid.len());
    for &alpha in &auto.grid {
        run_cfg.method = Method::Epmq { alpha };
        runs.next_run(format!("α = {alpha}"));
        let (_, held) = run_inner(inputs, &run_cfg, runs, None, Some(auto.holdout_every))
            .with_context(|| format!("--alpha auto-model: the run with α = {alpha}"))?;
        let held = held.context("the run returned no held-out states")?;
        if experts_out.is_none() {
            experts_out = Some(expert_outputs(inputs, &held)?);
        }
        let expert_states = experts_out.as_deref().unwrap_or(&[]);
        let per_task = match &heads {
            Some(heads) => head_divergences(&held.states, expert_states, heads)?,
            None => relative_errors(&held.states, expert_states)?,
        };
        let loss = per_task.iter().sum::<f64>() / per_task.len().max(1) as f64;
        tracing::info!(alpha, loss, "--alpha auto-model: held-out loss");
        candidates.push(ModelAlphaCandidate {
            alpha,
            loss,
            per_task,
        });
    }
    let best = choose(&candidates)?;
    let search_seconds = t0.elapsed().as_secs_f64();
    tracing::info!(alpha = best, "--alpha auto-model: chosen");
    run_cfg.method = Method::Epmq { alpha: best };
    runs.next_run(format!("α = {best} (chosen), all batches"));
    let (mut out, _) = run_inner(inputs, &run_cfg, runs, checkpoint, None)?;
    out.report.wall_seconds += search_seconds;
    out.report.alpha_search = Some(ModelAlphaSearch {
        alpha: best,
        criterion,
        holdout_every: auto.holdout_every,
        candidates,
        search_seconds,
    });
    Ok(out)
}

/// The candidate with the lowest loss (the first of equal ones); a loss that is not finite
/// is an error.
fn choose(candidates: &[ModelAlphaCandidate]) -> Result<f64> {
    if let Some(c) = candidates.iter().find(|c| !c.loss.is_finite()) {
        bail!(
            "--alpha auto-model: the held-out loss at α = {} is {} (the quantized model or an expert produced non-finite outputs)",
            c.alpha,
            c.loss
        );
    }
    candidates
        .iter()
        .min_by(|a, b| a.loss.total_cmp(&b.loss))
        .map(|c| c.alpha)
        .context("no candidate α")
}

/// Every expert's classification head, when each expert is a BERT encoder with a
/// `pmq_head.safetensors` of its width beside it; `None` when any lacks one.
fn expert_heads(inputs: &PipelineInputs) -> Result<Option<Vec<Head>>> {
    let mut heads = Vec::with_capacity(inputs.experts.len());
    for dir in &inputs.experts {
        if !dir.join(HEAD_FILE).is_file() {
            return Ok(None);
        }
        let config = ConfigObject::read(&dir.join("config.json"))
            .with_context(|| format!("reading the config of expert {}", dir.display()))?;
        let Some(width) = bert_width(&config)? else {
            return Ok(None);
        };
        let head = Head::load(dir)
            .with_context(|| format!("loading the head of expert {}", dir.display()))?;
        if head.hidden != width {
            bail!(
                "expert {}: its head reads embeddings of width {} but the model's hidden size is {width}",
                dir.display(),
                head.hidden
            );
        }
        heads.push(head);
    }
    Ok(Some(heads))
}

/// The hidden size of a BERT `config.json` (the family as [`pmq_models::load_model`] detects it); `None`
/// for other or unknown architectures.
fn bert_width(config: &ConfigObject) -> Result<Option<usize>> {
    if !matches!(detect_family(config), Ok(Family::Bert)) {
        return Ok(None);
    }
    Ok(Some(config.usize_req("hidden_size")?))
}

/// Per task, the mean over its held-out texts of `KL(softmax(h(ē_e)) ‖ softmax(h(ē_q)))`: `h`
/// the task's head, `ē` the mean-pooled last hidden states of the expert (`e`) and of the
/// quantized model (`q`).
fn head_divergences(
    quantized: &[Vec<State>],
    experts: &[Vec<Tensor>],
    heads: &[Head],
) -> Result<Vec<f64>> {
    quantized
        .iter()
        .zip(experts)
        .zip(heads)
        .enumerate()
        .map(|(t, ((q_states, e_hidden), head))| {
            let (mut sum, mut n) = (0.0f64, 0usize);
            for (q, e) in q_states.iter().zip(e_hidden) {
                let pq =
                    mean_pool(q.hidden(), q.token_mask()).with_context(|| format!("task {t}"))?;
                let pe = mean_pool(e, q.token_mask()).with_context(|| format!("task {t}"))?;
                for (eq, ee) in pq.iter().zip(&pe) {
                    sum += kl_divergence(&head.logits(ee), &head.logits(eq));
                    n += 1;
                }
            }
            if n == 0 {
                bail!("task {t} has no held-out texts");
            }
            Ok(sum / n as f64)
        })
        .collect()
}

/// The sentence embeddings evaluation computes (mean pooling over the `[b, s]` token mask,
/// [`BertModel::pool`]) of a `[b, s, h]` batch, as `b` rows.
fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Vec<Vec<f32>>> {
    let pooled = BertModel::pool(&hidden.to_dtype(DType::F32)?, mask, Pooling::Mean)?;
    Ok(pooled.to_vec2::<f32>()?)
}

/// `KL(softmax(p) ‖ softmax(q))` of two logit vectors, in f64.
fn kl_divergence(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    let log_softmax = |l: &[f32]| {
        let m = l.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
        let lse = m + l.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        l.iter().map(|&v| v as f64 - lse).collect::<Vec<f64>>()
    };
    let (lp, lq) = (log_softmax(p_logits), log_softmax(q_logits));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
}

/// Every expert's last-block hidden states on its own task's held-out batches.
fn expert_outputs(inputs: &PipelineInputs, held: &HeldOut) -> Result<Vec<Vec<Tensor>>> {
    inputs
        .experts
        .iter()
        .zip(&held.batches)
        .enumerate()
        .map(|(i, (dir, batches))| {
            let mut model = load_model_streamed(dir)
                .with_context(|| format!("loading expert {} ({})", i + 1, dir.display()))?
                .into_block_model();
            let mut states = vec![batches
                .iter()
                .map(|b| model.embed(b))
                .collect::<pmq_models::Result<Vec<State>>>()?];
            for block in 0..model.num_blocks() {
                model.load_block(block)?;
                states = forward_block(&*model, block, &states)?;
                model.unload_block(block)?;
            }
            Ok(states
                .pop()
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.hidden().clone())
                .collect())
        })
        .collect()
}

/// Per task, `Σ_b ‖m ⊙ (H_q − H_i)‖² / Σ_b ‖m ⊙ H_i‖²` over its held-out batches `b` (`m`:
/// the token mask).
fn relative_errors(quantized: &[Vec<State>], experts: &[Vec<Tensor>]) -> Result<Vec<f64>> {
    quantized
        .iter()
        .zip(experts)
        .enumerate()
        .map(|(t, (q_states, e_hidden))| {
            let (mut num, mut den) = (0.0f64, 0.0f64);
            for (q, e) in q_states.iter().zip(e_hidden) {
                let (n, d) = masked_sums(q.hidden(), q.token_mask(), e)
                    .with_context(|| format!("task {t}"))?;
                num += n;
                den += d;
            }
            if den <= 0.0 {
                bail!("task {t}: the expert's held-out outputs are all zero");
            }
            Ok(num / den)
        })
        .collect()
}

/// `(‖m ⊙ (H_q − H_e)‖², ‖m ⊙ H_e‖²)` for one batch (`m`: the `[b, s]` token mask).
fn masked_sums(hq: &Tensor, mask: &Tensor, he: &Tensor) -> Result<(f64, f64)> {
    let hq = hq.to_dtype(DType::F32)?;
    let he = he.to_dtype(DType::F32)?;
    if hq.dims() != he.dims() {
        bail!(
            "the quantized model's last-block output is {:?} but the expert's is {:?}",
            hq.dims(),
            he.dims()
        );
    }
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let sq = |x: &Tensor| -> Result<f64> {
        Ok(x.sqr()?
            .broadcast_mul(&mask)?
            .to_dtype(DType::F64)?
            .sum_all()?
            .to_scalar::<f64>()?)
    };
    Ok((sq(&(&hq - &he)?)?, sq(&he)?))
}

/// One progress bar over all runs: the first start sizes it for every run, later starts and
/// finishes are absorbed, messages carry the run's label.
struct Runs<'a> {
    inner: &'a dyn Progress,
    runs: usize,
    started: AtomicBool,
    label: Mutex<String>,
}

impl<'a> Runs<'a> {
    fn new(inner: &'a dyn Progress, runs: usize) -> Self {
        Self {
            inner,
            runs,
            started: AtomicBool::new(false),
            label: Mutex::new(String::new()),
        }
    }

    fn next_run(&self, label: String) {
        self.inner.message(&label);
        if let Ok(mut l) = self.label.lock() {
            *l = label;
        }
    }
}

impl Progress for Runs<'_> {
    fn start(&self, linears: usize) {
        if !self.started.swap(true, Ordering::SeqCst) {
            self.inner.start(linears * self.runs);
        }
    }
    fn message(&self, msg: &str) {
        let label = self.label.lock().map(|l| l.clone()).unwrap_or_default();
        self.inner.message(&format!("{label}: {msg}"));
    }
    fn linear_done(&self, name: &str) {
        self.inner.linear_done(name);
    }
    fn finish(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(alpha: f64, loss: f64) -> ModelAlphaCandidate {
        ModelAlphaCandidate {
            alpha,
            loss,
            per_task: vec![loss],
        }
    }

    #[test]
    fn the_lowest_loss_wins_and_the_first_of_ties() {
        let c = [
            cand(0.0, 0.3),
            cand(0.1, 0.2),
            cand(1.0, 0.2),
            cand(10.0, 0.25),
        ];
        assert_eq!(choose(&c).unwrap(), 0.1);
    }

    #[test]
    fn a_non_finite_loss_is_an_error_naming_its_alpha() {
        let c = [cand(0.0, 0.3), cand(10.0, f64::NAN)];
        let e = choose(&c).unwrap_err().to_string();
        assert!(e.contains("α = 10"), "{e}");
    }

    #[test]
    fn kl_of_logits_against_a_hand_computation() {
        // softmax(0, 0) = (½, ½), softmax(ln 3, 0) = (¾, ¼):
        // KL = ½ ln(½ / ¾) + ½ ln(½ / ¼) = ½ ln(4/3)
        let kl = kl_divergence(&[0.0, 0.0], &[3f32.ln(), 0.0]);
        assert!((kl - 0.5 * (4.0f64 / 3.0).ln()).abs() < 1e-7, "{kl}");
        assert_eq!(kl_divergence(&[1.0, -2.0, 0.5], &[1.0, -2.0, 0.5]), 0.0);
        // shifting all logits changes nothing
        let a = kl_divergence(&[1.0, 2.0], &[0.0, 3.0]);
        let b = kl_divergence(&[11.0, 12.0], &[-5.0, -2.0]);
        assert!((a - b).abs() < 1e-6, "{a} {b}");
    }

    #[test]
    fn mean_pool_averages_real_tokens_only() {
        let h = Tensor::from_vec(
            vec![1f32, 2., 3., 4., 100., 100., 5., 6., 7., 8., 9., 10.],
            (2, 3, 2),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let mask = Tensor::from_vec(
            vec![1f32, 1., 0., 1., 1., 1.],
            (2, 3),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let rows = mean_pool(&h, &mask).unwrap();
        assert_eq!(rows, vec![vec![2.0, 3.0], vec![7.0, 8.0]]);
    }

    #[test]
    fn only_bert_configs_have_a_width_for_heads() {
        let config = |v: serde_json::Value| {
            ConfigObject::from_value("config.json".into(), String::new(), v).unwrap()
        };
        let bert = config(serde_json::json!({"model_type": "bert", "hidden_size": 384}));
        assert_eq!(bert_width(&bert).unwrap(), Some(384));
        let llama = config(serde_json::json!({"model_type": "llama", "hidden_size": 384}));
        assert_eq!(bert_width(&llama).unwrap(), None);
        assert_eq!(bert_width(&config(serde_json::json!({}))).unwrap(), None);
    }

    #[test]
    fn relative_error_counts_real_tokens_only() {
        // the numbers against a hand computation: one batch, 2 tokens (the second padding)
        let e =
            Tensor::from_vec(vec![1f32, 2., 3., 4.], (1, 2, 2), &candle_core::Device::Cpu).unwrap();
        let q =
            Tensor::from_vec(vec![1f32, 1., 0., 0.], (1, 2, 2), &candle_core::Device::Cpu).unwrap();
        let mask = Tensor::from_vec(vec![1f32, 0.], (1, 2), &candle_core::Device::Cpu).unwrap();
        let (num, den) = masked_sums(&q, &mask, &e).unwrap();
        // real token: q = (1, 1), e = (1, 2): ‖q − e‖² = 1, ‖e‖² = 5
        assert_eq!((num, den), (1.0, 5.0));
        let r = [num / den];
        assert!((r[0] - 0.2).abs() < 1e-12, "{r:?}");
    }
}
