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
use crate::job::{mat_to_tensor, tensor_to_mat, BlockJob, Results};
use crate::method::{solve, LinearProblem, Method};
use crate::report::LinearRecord;
use anyhow::{bail, Context, Result};
use faer::{Mat, MatRef};
use pmq_core::alpha_selection::{select_alpha, SplitProblem};
use pmq_core::epmq::ExpertFold;
use pmq_core::hessian::HessianAccumulator;
use pmq_models::{BlockModel, LinearSpec, OutputMemo, State};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// One task's Hessians of the captured inputs.
struct TaskCapture {
    /// canonical linear name (the first linear reading the input) → (`H_i`, tokens)
    by_input: HashMap<String, (Mat<f64>, usize)>,
    /// `--alpha auto`: the held-out batches' Hessians (`by_input` then holds the others')
    held: HashMap<String, (Mat<f64>, usize)>,
    /// linear name → canonical name
    alias: HashMap<String, String>,
}

/// Runs `block` on every batch of one task with input capture of the linears `names` (as many
/// batches at once as there are threads, each with its forward cache from `memos`), and
/// accumulates one Hessian per distinct input tensor, batches in order (so the result does
/// not depend on the number of threads).
fn capture_task(
    model: &dyn BlockModel,
    block: usize,
    names: &HashSet<String>,
    states: &[State],
    memos: &mut [OutputMemo],
    timing: &mut crate::report::Phases,
    holdout_every: Option<usize>,
) -> Result<TaskCapture> {
    use rayon::prelude::*;
    let mut acc: HashMap<String, HessianAccumulator> = HashMap::new();
    let mut held_acc: HashMap<String, HessianAccumulator> = HashMap::new();
    let mut batch_index = 0usize;
    let mut pattern: Option<HashMap<String, String>> = None;
    let threads = rayon::current_num_threads().max(1);
    for (chunk, memo_chunk) in states.chunks(threads).zip(memos.chunks_mut(threads)) {
        let t = Instant::now();
        let captured = chunk
            .par_iter()
            .zip(memo_chunk.par_iter_mut())
            .map(|(s, m)| capture_batch(model, block, Wanted::Linears(names), s, Some(m)))
            .collect::<Result<Vec<_>>>()?;
        timing.forward_s += t.elapsed().as_secs_f64();
        timing.capture_calls += chunk.len();
        let t = Instant::now();
        for cap in captured {
            let sharing = cap.sharing();
            let held = holdout_every.is_some_and(|k| batch_index % k == k - 1);
            batch_index += 1;
            let target = if held { &mut held_acc } else { &mut acc };
            add_to_hessians(target, cap.inputs)?;
            same_sharing(&mut pattern, sharing, block)?;
        }
        timing.hessian_s += t.elapsed().as_secs_f64();
    }
    let alias = pattern.unwrap_or_default();
    let finish = |acc: HashMap<String, HessianAccumulator>| {
        acc.into_iter()
            .map(|(k, a)| {
                let n = a.tokens();
                (k, (a.into_hessian(), n))
            })
            .collect::<HashMap<_, _>>()
    };
    let mut by_input = finish(acc);
    let mut held = finish(held_acc);
    if holdout_every.is_some() {
        // an input all (or none) of whose batches were held out: zero on the other side, so
        // that every task folds into both parts
        zeros_where_missing(&mut held, &by_input);
        zeros_where_missing(&mut by_input, &held);
    }
    Ok(TaskCapture {
        by_input,
        held,
        alias,
    })
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

/// Captures the inputs of `specs` task by task and folds them.
fn capture_and_fold(job: &mut BlockJob<'_>, specs: &[&LinearSpec]) -> Result<Folded> {
    let names: HashSet<String> = specs.iter().map(|s| s.name.clone()).collect();
    let keep_per_task = job.cfg.deviation == DeviationMode::PerTask;
    let mut folded = Folded::default();
    for (t, task_states) in job.states.iter().enumerate() {
        let cap = capture_task(
            &*job.model,
            job.block,
            &names,
            task_states,
            &mut job.memos[t],
            job.timing,
            job.cfg.alpha_auto.as_ref().map(|a| a.holdout_every),
        )?;
        if t == 0 {
            folded.alias = cap.alias.clone();
        } else if folded.alias != cap.alias {
            bail!(
                "block {}: the linears sharing an input differ between tasks",
                job.block
            );
        }
        let t_fold = Instant::now();
        for spec in specs {
            let canonical = &cap.alias[&spec.name];
            let (h_t, n) = &cap.by_input[canonical];
            let held = cap.held.get(canonical);
            let n_held = held.map_or(0, |(_, n)| *n);
            folded
                .tokens
                .entry(spec.name.clone())
                .or_default()
                .push(*n + n_held);
            if !job.experts.is_empty() {
                let (rows, cols, w_t) = job.experts.weight_rows(t, spec)?;
                let w_t = MatRef::from_row_major_slice(&w_t, rows, cols);
                // the fit batches' fold, and with `--alpha auto` the held-out batches' beside it
                let parts = [
                    (&mut folded.experts, Some(h_t)),
                    (&mut folded.held_experts, held.map(|(h, _)| h)),
                ];
                for (folds, h) in parts {
                    let Some(h) = h else { continue };
                    let fold = match folds.entry(spec.name.clone()) {
                        Entry::Occupied(e) => e.into_mut(),
                        Entry::Vacant(e) => {
                            let merged = tensor_to_mat(&job.model.linear_weight(&spec.name)?)?;
                            e.insert(ExpertFold::with_precision(
                                merged.as_ref(),
                                job.cfg.fold_precision,
                            ))
                        }
                    };
                    fold.add(w_t, h.as_ref())
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
            if keep_per_task {
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
        job.timing.fold_s += t_fold.elapsed().as_secs_f64();
    }
    Ok(folded)
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
