//! RegMean's Gram matrices of one model on one task: the model (an expert, unmodified) runs
//! block by block on the task's calibration batches; one forward pass per batch and block
//! captures every linear's input, and for each distinct input tensor `G = XᵀX / n` (the mean
//! over the `n` non-padding tokens, as FusionBench's hooks average over their tokens) is
//! accumulated in f64 ([`HessianAccumulator`]). Written as a Gram file
//! ([`pmq_merge::gram_file`]) for `pmq merge --method regmean`.
//!
//! Unlike FusionBench's forward hooks, padding tokens are not counted (the pipeline's capture
//! sees only real tokens), so a batch's padding does not change the result.

use crate::calib::{read_samples, Batcher, CalibSpec};
use crate::capture::{add_to_hessians, capture_batch, same_sharing, Wanted};
use anyhow::{bail, Context, Result};
use candle_core::DType;
use pmq_core::hessian::HessianAccumulator;
use pmq_merge::gram_file::{write_grams, GramEntry};
use pmq_models::{load_model_streamed, State};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// How the calibration data is read for the Grams.
#[derive(Clone, Debug)]
pub struct GramSettings {
    pub samples: usize,
    pub batch_size: usize,
    pub max_seq_len: usize,
}

/// What [`collect_grams`] wrote.
#[derive(Clone, Debug)]
pub struct GramSummary {
    /// Linears covered.
    pub linears: usize,
    /// Distinct inputs stored (linears reading the same tensor share one).
    pub entries: usize,
    /// Calibration samples read.
    pub samples: usize,
    pub seconds: f64,
}

/// Runs `model_dir` on the calibration task `calib` and writes the mean Gram matrix of every
/// linear's input to `out` (atomically).
pub fn collect_grams(
    model_dir: &Path,
    calib: &CalibSpec,
    settings: &GramSettings,
    out: &Path,
) -> Result<GramSummary> {
    let t0 = std::time::Instant::now();
    if let Some(evidence) = pmq_io::gptq_evidence(model_dir) {
        bail!(pmq_io::gptq_refusal(
            model_dir,
            &evidence,
            "a RegMean expert"
        ));
    }
    let loaded = load_model_streamed(model_dir)
        .with_context(|| format!("loading {}", model_dir.display()))?;
    let family = loaded.as_block_model().family();
    let batcher = Batcher::new(model_dir, &loaded, settings.max_seq_len)?;
    let mut model = loaded.into_block_model();
    let samples = read_samples(calib, family, settings.samples)?;
    if samples.iter().all(|s| s.is_blank()) {
        bail!(
            "every calibration sample of task {:?} ({}) is empty",
            calib.task,
            calib.path.display()
        );
    }
    let batches = batcher
        .batches(&samples, settings.batch_size)
        .with_context(|| format!("preparing calibration task {:?}", calib.task))?;
    let mut states: Vec<State> = batches
        .iter()
        .map(|b| model.embed(b))
        .collect::<pmq_models::Result<_>>()?;
    let mut entries = Vec::new();
    let mut linears = BTreeMap::new();
    let threads = rayon::current_num_threads().max(1);
    for block in 0..model.num_blocks() {
        model.load_block(block)?;
        let mut acc: HashMap<String, HessianAccumulator> = HashMap::new();
        let mut pattern = None;
        let mut next = Vec::with_capacity(states.len());
        for chunk in states.chunks(threads) {
            let captured = chunk
                .par_iter()
                .map(|s| capture_batch(&*model, block, Wanted::Block, s, None))
                .collect::<Result<Vec<_>>>()?;
            for cap in captured {
                same_sharing(&mut pattern, cap.sharing(), block)?;
                add_to_hessians(&mut acc, cap.inputs)?;
                let Some(out) = cap.output else {
                    bail!("block {block}: the forward pass stopped early");
                };
                next.push(out.with_hidden_dtype(DType::F32)?);
            }
        }
        states = next;
        model.unload_block(block)?;
        for (linear, canonical) in pattern.unwrap_or_default() {
            linears.insert(format!("{linear}.weight"), format!("{canonical}.weight"));
        }
        let mut acc: Vec<(String, HessianAccumulator)> = acc.into_iter().collect();
        acc.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, a) in acc {
            let n = a.tokens();
            if n == 0 {
                bail!("block {block}: no calibration token reached `{name}`");
            }
            let mut g = a.into_hessian();
            g *= faer::Scale(1.0 / n as f64);
            entries.push(GramEntry {
                name: format!("{name}.weight"),
                gram: g,
                tokens: n,
            });
        }
    }
    write_grams(
        out,
        &entries,
        &linears,
        &model_dir.display().to_string(),
        &calib.task,
    )?;
    Ok(GramSummary {
        linears: linears.len(),
        entries: entries.len(),
        samples: samples.len(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}
