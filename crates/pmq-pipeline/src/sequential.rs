//! The true-sequential strategy of RTN, GPTQ and E-PMQ: for every group of linears of a block,
//! run the current (partially quantized) block with input capture, accumulate one Hessian
//! `H_i = X_i X_iᵀ` per task, and quantize every linear of the group with [`solve`].

use crate::deviation::deviation;
use crate::method::{solve, LinearProblem};
use crate::pipeline::{mat_to_tensor, tensor_to_mat, BlockJob, Results};
use crate::report::LinearRecord;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use faer::Mat;
use pmq_core::hessian::HessianAccumulator;
use std::collections::HashMap;
use std::time::Instant;

/// Quantizes every linear of `job.block`, group by group; the caller re-runs the quantized
/// block to get the next block's inputs.
pub(crate) fn quantize_block(job: &mut BlockJob<'_>, results: &mut Results) -> Result<()> {
    let block = job.block;
    let n_tasks = job.states.len();
    for (gi, group) in job.model.block_groups(block)?.into_iter().enumerate() {
        // One Hessian per (linear, task), from the current quantized trajectory.
        let mut acc: HashMap<String, Vec<HessianAccumulator>> = group
            .iter()
            .map(|l| {
                (
                    l.name.clone(),
                    (0..n_tasks)
                        .map(|_| HessianAccumulator::new(l.in_features))
                        .collect(),
                )
            })
            .collect();
        // Linears fed the very same tensor (q, k, v) share one accumulation; the sharing
        // pattern is fixed by the architecture and checked on every forward.
        let mut aliases: Option<HashMap<String, String>> = None;
        for (t, task_states) in job.states.iter().enumerate() {
            for s in task_states {
                let mut seen: HashMap<candle_core::TensorId, String> = HashMap::new();
                let mut call_aliases: HashMap<String, String> = HashMap::new();
                let mut capture = |name: &str, x: &Tensor| -> pmq_models::Result<()> {
                    if !acc.contains_key(name) {
                        return Ok(());
                    }
                    if let Some(src) = seen.get(&x.id()) {
                        call_aliases.insert(name.to_string(), src.clone());
                        return Ok(());
                    }
                    seen.insert(x.id(), name.to_string());
                    let v: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                    acc.get_mut(name).expect("checked")[t].add_rows_f32(&v);
                    Ok(())
                };
                job.model.block_forward(block, s, Some(&mut capture))?;
                match &aliases {
                    None => aliases = Some(call_aliases),
                    Some(a) if *a == call_aliases => {}
                    Some(_) => {
                        bail!("block {block}: the linears sharing an input changed between batches")
                    }
                }
            }
        }
        for (name, src) in aliases.unwrap_or_default() {
            let copy = acc[&src].clone();
            acc.insert(name, copy);
        }
        for spec in &group {
            let t_lin = Instant::now();
            job.bar.set_message(spec.name.clone());
            let per_task = acc.remove(&spec.name).expect("accumulated above");
            let tokens: Vec<usize> = per_task.iter().map(|a| a.tokens()).collect();
            let hessians: Vec<Mat<f64>> = per_task.into_iter().map(|a| a.into_hessian()).collect();
            let merged = tensor_to_mat(&job.model.linear_weight(&spec.name)?)?;
            let expert_weights = if job.experts.is_empty() {
                Vec::new()
            } else {
                job.experts.weights(spec)?
            };
            let problem = LinearProblem {
                merged: &merged,
                hessians: &hessians,
                experts: &expert_weights,
            };
            let sol = solve(job.cfg.method, &problem, &job.cfg.gptq)
                .with_context(|| format!("quantizing {}", spec.name))?;
            let q = &sol.layer.dequant;
            let dev =
                (!hessians.is_empty()).then(|| deviation(q, &merged, &expert_weights, &hessians));
            job.model
                .set_linear_weight(&spec.name, mat_to_tensor(q.as_ref())?)?;
            results.push(
                LinearRecord {
                    name: spec.name.clone(),
                    block,
                    group: gi,
                    rows: spec.out_features,
                    cols: spec.in_features,
                    tokens,
                    objective_rtn: sol.objective_rtn,
                    objective: sol.objective,
                    percdamp: sol.percdamp,
                    damping: sol.damping,
                    lambda: sol.lambda,
                    extra_damping: sol.extra_damping,
                    seconds: t_lin.elapsed().as_secs_f64(),
                    deviation: dev,
                    awq: None,
                },
                sol.layer,
            );
            job.bar.inc(1);
        }
    }
    Ok(())
}
