//! The true-sequential strategy of RTN, GPTQ and E-PMQ: for every group of linears of a block,
//! run the current (partially quantized) block with input capture, fold the calibration tasks
//! one at a time into what the solver needs, and quantize every linear of the group.
//!
//! Per linear input (linears fed the same tensor share it) and per task `i`, the capture
//! accumulates `H_i = X_i X_iᵀ`, which is folded at once into `H_q = Σ_i H_i` and, when the
//! experts are given, into the expert sums
//! (`D = Σ_i (W_i − W_m) H_i` and `c`, [`pmq_core::epmq::ExpertFold`]); then `H_i` is dropped. So memory holds one task's Hessian
//! at a time, whatever the number of tasks — unless the per-task deviation split is asked for
//! ([`DeviationMode::PerTask`]), which keeps every `H_i`.
//!
//! A group's capture stops the block's forward pass as soon as the group's inputs have been
//! seen; with `true_sequential = false` (GPTQModel's `true_sequential=False`) one capture
//! collects the inputs of all the block's linears before any of them is quantized.

use crate::capture::{add_to_hessians, capture_batch, same_sharing, Wanted};
use crate::deviation::{deviation_per_task, deviation_total, DeviationMode};
use crate::experts::Experts;
use crate::job::{mat_to_tensor, tensor_to_mat, BlockJob, Results};
use crate::method::{solve, LinearProblem, Method};
use crate::report::LinearRecord;
use anyhow::{bail, Context, Result};
use faer::{Mat, MatRef};
use pmq_core::alpha_selection::{select_alpha, SplitProblem};
use pmq_core::epmq::{ExpertFold, FoldPrecision};
use pmq_core::hessian::HessianAccumulator;
use pmq_core::objective::QuadraticFormF32;
use pmq_models::{BlockModel, LinearSpec};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// One task's Hessians of the captured inputs.
struct TaskCapture {
    /// canonical linear name (the first linear reading the input) → (`H_i`, tokens)
    by_input: HashMap<String, (Mat<f64>, usize)>,
    /// `--alpha auto`: the held-out batches' Hessians (`by_input` then holds the others')
    held: HashMap<String, (Mat<f64>, usize)>,
}

/// Running Hessians of the captured inputs (canonical linear name → accumulator): of the fit
/// batches and, with `--alpha auto`, of the held-out ones.
#[derive(Default)]
struct Accumulators {
    fit: HashMap<String, HessianAccumulator>,
    held: HashMap<String, HessianAccumulator>,
}

impl Accumulators {
    /// Tokens seen so far per input (fit and held out).
    fn tokens(&self, canonical: &str) -> usize {
        [&self.fit, &self.held]
            .iter()
            .map(|m| m.get(canonical).map_or(0, HessianAccumulator::tokens))
            .sum()
    }

    /// The Hessians of the tokens since the last take (the accumulators start again from
    /// zero and keep their work buffers), and with a hold-out a zero one on the side that
    /// lacks an input (so that every task folds into both parts).
    fn take(&mut self, holdout: bool) -> TaskCapture {
        let take = |acc: &mut HashMap<String, HessianAccumulator>| {
            acc.iter_mut()
                .map(|(k, a)| {
                    let n = a.tokens();
                    (k.clone(), (a.take_hessian(), n))
                })
                .collect::<HashMap<_, _>>()
        };
        let mut by_input = take(&mut self.fit);
        let mut held = take(&mut self.held);
        if holdout {
            zeros_where_missing(&mut held, &by_input);
            zeros_where_missing(&mut by_input, &held);
        }
        TaskCapture { by_input, held }
    }
}

/// Adds a zero Hessian to `to` for every input of `from` that `to` lacks.
fn zeros_where_missing(
    to: &mut HashMap<String, (Mat<f64>, usize)>,
    from: &HashMap<String, (Mat<f64>, usize)>,
) {
    for (k, (h, _)) in from {
        to.entry(k.clone())
            .or_insert_with(|| (Mat::zeros(h.nrows(), h.ncols()), 0));
    }
}

/// What the tasks fold into for one capture set.
#[derive(Default)]
struct Folded {
    /// canonical input → `H_q`
    h_q: HashMap<String, Mat<f64>>,
    /// canonical input → every `H_i` (per-task deviation only)
    per_task: HashMap<String, Vec<Mat<f64>>>,
    /// linear → expert fold (when experts are given; with `--alpha auto` of the fit batches)
    experts: HashMap<String, ExpertFold>,
    /// `--alpha auto`: canonical input → `Σ_i H_i` of the held-out batches
    h_held: HashMap<String, Mat<f64>>,
    /// `--alpha auto`: linear → expert fold of the held-out batches
    held_experts: HashMap<String, ExpertFold>,
    /// linear → tokens per task
    tokens: HashMap<String, Vec<usize>>,
    /// linear → canonical input
    alias: HashMap<String, String>,
}

/// Captures the inputs of `specs` on every batch of every task and folds them.
///
/// The batches run as many at once as there are threads (each with its forward cache), tasks
/// one after the other; their inputs are accumulated batch by batch in order, so the result
/// does not depend on the number of threads. The expert fold and the per-task deviation split
/// need each task's `H_i`: the Hessians are then finished and folded at the end of every task
/// and dropped. RTN and GPTQ need only `H_q = Σ_i H_i`: one accumulator per input then takes
/// the tokens of all tasks (no per-task Hessian is zeroed, mirrored and summed).
fn capture_and_fold(job: &mut BlockJob<'_>, specs: &[&LinearSpec]) -> Result<Folded> {
    use rayon::prelude::*;
    let names: HashSet<String> = specs.iter().map(|s| s.name.clone()).collect();
    let keep_per_task = job.cfg.deviation == DeviationMode::PerTask;
    let per_task = keep_per_task || !job.experts.is_empty();
    let holdout_every = job.cfg.alpha_auto.as_ref().map(|a| a.holdout_every);
    let (block, model, states) = (job.block, &*job.model, job.states);
    let (experts, cfg, timing) = (job.experts, job.cfg, &mut *job.timing);
    let mut work = Vec::new();
    for (t, (task_states, task_memos)) in states.iter().zip(job.memos.iter_mut()).enumerate() {
        for (b, (s, m)) in task_states.iter().zip(task_memos.iter_mut()).enumerate() {
            work.push((t, b, s, m));
        }
    }
    let mut folded = Folded::default();
    let mut acc = Accumulators::default();
    let mut pattern: Option<HashMap<String, String>> = None;
    // tokens per input when the current task began (one accumulator for all tasks)
    let mut task_start: HashMap<String, usize> = HashMap::new();
    let ctx = TaskEnd {
        specs,
        experts,
        model,
        fold_precision: cfg.fold_precision,
        keep_per_task,
        per_task,
        holdout: holdout_every.is_some(),
    };
    let mut current = 0;
    let threads = rayon::current_num_threads().max(1);
    for chunk in work.chunks_mut(threads) {
        let t = Instant::now();
        let captured = chunk
            .par_iter_mut()
            .map(|(_, _, s, m)| capture_batch(model, block, Wanted::Linears(&names), s, Some(m)))
            .collect::<Result<Vec<_>>>()?;
        timing.forward_s += t.elapsed().as_secs_f64();
        timing.capture_calls += chunk.len();
        for (w, cap) in chunk.iter().zip(captured) {
            let (task, b) = (w.0, w.1);
            while current < task {
                let t = Instant::now();
                ctx.end(current, &mut acc, &mut task_start, &pattern, &mut folded)?;
                timing.fold_s += t.elapsed().as_secs_f64();
                current += 1;
            }
            let t = Instant::now();
            let sharing = cap.sharing();
            let held = holdout_every.is_some_and(|k| b % k == k - 1);
            add_to_hessians(if held { &mut acc.held } else { &mut acc.fit }, cap.inputs)?;
            same_sharing(&mut pattern, sharing, block)?;
            timing.hessian_s += t.elapsed().as_secs_f64();
        }
    }
    while current < states.len() {
        let t = Instant::now();
        ctx.end(current, &mut acc, &mut task_start, &pattern, &mut folded)?;
        timing.fold_s += t.elapsed().as_secs_f64();
        current += 1;
    }
    if !per_task {
        let t = Instant::now();
        folded.h_q = acc
            .take(false)
            .by_input
            .into_iter()
            .map(|(k, (h, _))| (k, h))
            .collect();
        timing.hessian_s += t.elapsed().as_secs_f64();
    }
    folded.alias = pattern.unwrap_or_default();
    Ok(folded)
}

/// The f32 copy of the Hessian last folded, reused by the next linear when it reads the same
/// input (the linears sharing an input — q, k, v; gate, up — come one after the other): one
/// conversion per input and task, and one copy in memory at a time.
#[derive(Default)]
struct LastForm(Option<(String, QuadraticFormF32)>);

impl LastForm {
    fn get(&mut self, canonical: &str, h: &Mat<f64>) -> &QuadraticFormF32 {
        if self.0.as_ref().is_none_or(|(c, _)| c != canonical) {
            // the previous copy goes before the next one is made
            self.0 = None;
            self.0 = Some((canonical.to_string(), QuadraticFormF32::new(h.as_ref())));
        }
        &self.0.as_ref().expect("set above").1
    }
}

/// What the end of a task's batches needs: the specs of the capture set, the experts and how
/// the Hessians are kept.
struct TaskEnd<'a, 'b> {
    specs: &'b [&'b LinearSpec],
    experts: &'a Experts,
    model: &'b dyn BlockModel,
    fold_precision: pmq_core::epmq::FoldPrecision,
    keep_per_task: bool,
    per_task: bool,
    holdout: bool,
}

impl TaskEnd<'_, '_> {
    /// Task `t`'s batches were all accumulated: records its tokens per linear and, with
    /// per-task Hessians, finishes them and folds them into `folded`.
    fn end(
        &self,
        t: usize,
        acc: &mut Accumulators,
        task_start: &mut HashMap<String, usize>,
        pattern: &Option<HashMap<String, String>>,
        folded: &mut Folded,
    ) -> Result<()> {
        let alias = pattern.clone().unwrap_or_default();
        let canonical = |name: &str| {
            alias
                .get(name)
                .ok_or_else(|| anyhow::anyhow!("task {t}: no inputs were captured for `{name}`"))
        };
        if !self.per_task {
            // this task's tokens: what the shared accumulators gained since it began
            let mut seen: HashMap<String, usize> = HashMap::new();
            for spec in self.specs {
                let c = canonical(&spec.name)?;
                let n = *seen
                    .entry(c.clone())
                    .or_insert_with(|| acc.tokens(c) - task_start.get(c).copied().unwrap_or(0));
                folded.tokens.entry(spec.name.clone()).or_default().push(n);
            }
            for (c, n) in seen {
                *task_start.entry(c).or_default() += n;
            }
            return Ok(());
        }
        let cap = acc.take(self.holdout);
        // the f32 copies of the fit and held-out Hessians last folded
        let mut forms = [LastForm::default(), LastForm::default()];
        for spec in self.specs {
            let canonical = canonical(&spec.name)?;
            let (h_t, n) = &cap.by_input[canonical];
            let held = cap.held.get(canonical);
            let n_held = held.map_or(0, |(_, n)| *n);
            folded
                .tokens
                .entry(spec.name.clone())
                .or_default()
                .push(*n + n_held);
            if !self.experts.is_empty() {
                let (rows, cols, w_t) = self.experts.weight_rows(t, spec)?;
                let w_t = MatRef::from_row_major_slice(&w_t, rows, cols);
                // the fit batches' fold, and with `--alpha auto` the held-out batches' beside it
                let parts = [
                    (&mut folded.experts, Some(h_t)),
                    (&mut folded.held_experts, held.map(|(h, _)| h)),
                ];
                for ((folds, h), last) in parts.into_iter().zip(&mut forms) {
                    let Some(h) = h else { continue };
                    let fold = match folds.entry(spec.name.clone()) {
                        Entry::Occupied(e) => e.into_mut(),
                        Entry::Vacant(e) => {
                            let merged = tensor_to_mat(&self.model.linear_weight(&spec.name)?)?;
                            e.insert(ExpertFold::with_precision(
                                merged.as_ref(),
                                self.fold_precision,
                            ))
                        }
                    };
                    match self.fold_precision {
                        FoldPrecision::F32 => {
                            fold.add_with_form(w_t, h.as_ref(), last.get(canonical, h))
                        }
                        FoldPrecision::F64 => fold.add(w_t, h.as_ref()),
                    }
                    .with_context(|| format!("folding task {t} into {}", spec.name))?;
                }
            }
        }
        let mut by_input = cap.by_input;
        for (canonical, (h_v, _)) in cap.held {
            // H_q is the sum over all batches; the held-out part is kept beside it
            if let Some((h, _)) = by_input.get_mut(&canonical) {
                *h += &h_v;
            }
            match folded.h_held.get_mut(&canonical) {
                Some(h) => *h += &h_v,
                None => {
                    folded.h_held.insert(canonical, h_v);
                }
            }
        }
        for (canonical, (h_t, _)) in by_input {
            if self.keep_per_task {
                folded
                    .per_task
                    .entry(canonical.clone())
                    .or_default()
                    .push(h_t.clone());
            }
            match folded.h_q.get_mut(&canonical) {
                Some(h) => *h += &h_t,
                None => {
                    folded.h_q.insert(canonical, h_t);
                }
            }
        }
        Ok(())
    }
}

/// Quantizes every linear of `job.block`, group by group; the caller re-runs the quantized
/// block to get the next block's inputs.
pub(crate) fn quantize_block(job: &mut BlockJob<'_>, results: &mut Results) -> Result<()> {
    let block = job.block;
    let groups = job.model.block_groups(block)?;
    let needs_inputs = !job.states.is_empty();
    // which groups one capture serves
    let sets: Vec<Vec<usize>> = if job.cfg.true_sequential {
        (0..groups.len()).map(|g| vec![g]).collect()
    } else {
        vec![(0..groups.len()).collect()]
    };
    for set in sets {
        let specs: Vec<(usize, &LinearSpec)> = set
            .iter()
            .flat_map(|&g| groups[g].iter().map(move |s| (g, s)))
            .collect();
        // the set's first group reads only frozen linears: its inputs are fixed from now on
        for memo in job.memos.iter_mut().flatten() {
            memo.fix_inputs(groups[set[0]].iter().map(|s| &s.name));
        }
        let mut folded = if needs_inputs {
            let refs: Vec<&LinearSpec> = specs.iter().map(|(_, s)| *s).collect();
            capture_and_fold(job, &refs)?
        } else {
            Folded::default()
        };
        for (gi, spec) in specs {
            let t_lin = Instant::now();
            job.progress.message(&spec.name);
            let merged = tensor_to_mat(&job.model.linear_weight(&spec.name)?)?;
            let canonical = folded.alias.get(&spec.name).cloned();
            let h_q = canonical.as_ref().map(|c| &folded.h_q[c]);
            let mut fold = folded.experts.remove(&spec.name);
            let t_solve = Instant::now();
            let mut method = job.cfg.method;
            let mut alpha_choice = None;
            if let (Some(auto), Method::Epmq { .. }) = (&job.cfg.alpha_auto, method) {
                let (Some(fit), Some(held), Some(c)) = (
                    fold.as_mut(),
                    folded.held_experts.remove(&spec.name),
                    canonical.as_ref(),
                ) else {
                    bail!(
                        "{}: --alpha auto needs experts and calibration inputs",
                        spec.name
                    );
                };
                let h_held = &folded.h_held[c];
                let h_fit = &folded.h_q[c] - h_held;
                let choice = select_alpha(
                    &SplitProblem {
                        fit,
                        h_fit: &h_fit,
                        held: &held,
                        h_held,
                    },
                    &auto.grid,
                    &job.cfg.gptq,
                )
                .with_context(|| {
                    format!(
                        "choosing α for {} (--alpha auto holds out every {}th calibration batch of each task: give more samples or a smaller --batch-size)",
                        spec.name, auto.holdout_every
                    )
                })?;
                fit.absorb(&held)?;
                method = Method::Epmq {
                    alpha: choice.alpha,
                };
                alpha_choice = Some(choice);
            }
            let problem = LinearProblem {
                merged: &merged,
                h_q,
                experts: fold,
            };
            let sol = solve(method, problem, &job.cfg.gptq)
                .with_context(|| format!("quantizing {}", spec.name))?;
            job.timing.solve_s += t_solve.elapsed().as_secs_f64();
            let t_metrics = Instant::now();
            let q = &sol.layer.dequant;
            let dev = match (&sol.terms, canonical.as_ref()) {
                (_, None) => None,
                (terms, Some(c)) => Some(match job.cfg.deviation {
                    DeviationMode::PerTask => {
                        let experts = if job.experts.is_empty() {
                            Vec::new()
                        } else {
                            job.experts.weights(spec)?
                        };
                        deviation_per_task(q, &merged, &experts, &folded.per_task[c])
                    }
                    DeviationMode::Total => {
                        // RTN's and GPTQ's objective is `‖(Q − W_m) X‖²` on `H_q` itself
                        let known = match job.cfg.method {
                            Method::Rtn | Method::Gptq => sol.objective,
                            _ => None,
                        };
                        deviation_total(q, &merged, &folded.h_q[c], known, terms)
                    }
                }),
            };
            job.timing.metrics_s += t_metrics.elapsed().as_secs_f64() + sol.metrics_seconds;
            job.timing.solve_s -= sol.metrics_seconds;
            job.model
                .set_linear_weight(&spec.name, mat_to_tensor(q.as_ref())?)?;
            results.push(
                LinearRecord {
                    name: spec.name.clone(),
                    block,
                    group: gi,
                    rows: spec.out_features,
                    cols: spec.in_features,
                    tokens: folded.tokens.get(&spec.name).cloned().unwrap_or_default(),
                    objective_rtn: sol.objective_rtn,
                    objective: sol.objective,
                    percdamp: sol.percdamp,
                    damping: sol.damping,
                    lambda: sol.lambda,
                    extra_damping: sol.extra_damping,
                    seconds: t_lin.elapsed().as_secs_f64(),
                    deviation: dev,
                    awq: None,
                    alpha: alpha_choice,
                    warnings: dead_column_warning(sol.dead_columns, spec.in_features),
                },
                sol.layer,
            );
            job.progress.linear_done(&spec.name);
        }
        // final weights on fixed inputs from now on: later passes reuse their outputs
        for memo in job.memos.iter_mut().flatten() {
            memo.freeze(set.iter().flat_map(|&g| groups[g].iter().map(|s| &s.name)));
        }
        // the sums of this set are no longer needed
        folded.h_q.clear();
        folded.per_task.clear();
        folded.h_held.clear();
    }
    Ok(())
}

/// The warning for a linear some of whose input columns no calibration sample reached
/// (`H_jj = 0`): GPTQ sets those weights to zero, as the reference code does.
fn dead_column_warning(dead: Option<usize>, cols: usize) -> Vec<String> {
    match dead {
        Some(d) if d > 0 => vec![format!(
            "{d} of {cols} input columns never saw a nonzero calibration input (H_jj = 0): \
             their weights were set to zero, as GPTQ does; more or more varied calibration data \
             would fix them"
        )],
        _ => Vec::new(),
    }
}
