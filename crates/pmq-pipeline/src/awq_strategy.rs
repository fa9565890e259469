//! AWQ (Lin et al. 2023; llm-awq `auto_scale.py`/`auto_clip.py`, AutoAWQ `quantizer.py`) as a
//! block strategy of the pipeline.
//!
//! For one block, on the calibration states entering it (the *full-precision* trajectory:
//! AWQ propagates full-precision activations, shared/DESIGN.md §4 (AWQ) and AutoAWQ's `_get_input_feat`):
//!
//! 1. One forward per batch with input capture gives every linear's inputs `X` and the
//!    block's full-precision outputs, which become the next block's inputs.
//! 2. For each scaling group of the model's [`pmq_models::AwqLayout`] that has an exact fold
//!    (linears `W_j` sharing the input `X`), search
//!
//!    ```text
//!    s(r) = x̄^r / w̄^(1−r)  (duo scaling; llm-awq: x̄^r),  normalised by sqrt(max·min)
//!    r* = argmin_{r ∈ {0, 1/n, …, (n−1)/n}}  mean ‖ f({Q(W_j·diag(s))·diag(s)⁻¹}; X) − f({W_j}; X) ‖²
//!    ```
//!
//!    where `f` is the inspected part of the block (AutoAWQ's `module2inspect`: the attention
//!    sub-block for q/k/v, the MLP for its input linears, the linear itself otherwise, then
//!    `‖·‖² = tr(D H Dᵀ)` with `H = Σ_i X_iᵀX_i`), run by the model on the block's inputs with
//!    every other weight at full precision ([`pmq_core::awq::search_scales`]). All searches
//!    happen before anything is applied, as in AutoAWQ. Groups without an exact fold keep
//!    `s = 1`.
//! 3. `1/s` is folded into the producers ([`crate::awq_fold::fold_inverse_scales`]): norm
//!    weights/biases (reported as changed tensors, written with the checkpoint) or the rows
//!    and bias of a preceding linear.
//! 4. Every linear: `W' = ` its current weight (rows already divided by a fold), clip search on
//!    `W'·diag(s)` with the inputs `X·diag(s)⁻¹` (skipping queries and keys), RTN on the grid
//!    ([`pmq_core::awq::quantize_layer`]); the model gets `Q(W'·diag(s))`, which reads the
//!    folded producer's output `X·diag(s)⁻¹`.
//!
//! The report measures each linear in the original coordinates: `Q_eff =
//! diag(s_out)·Q(W'·diag(s))·diag(s)⁻¹` against the merged `W` on `H`, next to plain RTN of `W`.

use crate::capture::{capture_block, BlockInputs};
use crate::deviation::{deviation_per_task, deviation_total, DeviationMode};
use crate::job::{mat_to_tensor, tensor_to_mat, BlockJob, Results};
use crate::method::{expert_terms, AwqOptions};
use crate::report::{AwqRecord, ClipRecord, LinearRecord};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use faer::{Mat, MatRef};
use pmq_core::awq::{clip_token_rows, quantize_layer, search_scales, AwqConfig, ScaleSearch};
use pmq_core::epmq::ExpertFold;
use pmq_core::objective::quadratic_error;
use pmq_core::rtn::rtn;
use pmq_core::{CoreError, QuantGrid, QuantizedLayer};
use pmq_models::{AwqLayout, LinearSpec, ScaleFold, ScalingGroup, State, SubBlock};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// The outcome of one group's search.
struct GroupPlan {
    search: Option<ScaleSearch>,
    seconds: f64,
}

impl GroupPlan {
    fn scales(&self, cols: usize) -> Vec<f64> {
        self.search
            .as_ref()
            .map_or_else(|| vec![1.0; cols], |s| s.scales.clone())
    }

    fn is_scaled(&self) -> bool {
        self.search
            .as_ref()
            .is_some_and(|s| s.scales.iter().any(|&v| v != 1.0))
    }
}

/// A block after the searches: its layout, the searched scales, the captured inputs and the
/// full-precision weights.
struct BlockPlan {
    layout: AwqLayout,
    groups: Vec<GroupPlan>,
    inputs: BlockInputs,
    merged: HashMap<String, Mat<f64>>,
}

impl BlockPlan {
    /// The scaling group of linear `name` and its search.
    fn group_of(&self, name: &str) -> (&ScalingGroup, &GroupPlan) {
        self.layout
            .groups
            .iter()
            .zip(&self.groups)
            .find(|(g, _)| g.linears.iter().any(|n| n == name))
            .expect("checked by check_layout")
    }

    /// The scales whose inverse was folded into the rows of linear `name`, if any.
    fn row_scales(&self, name: &str, rows: usize) -> Option<Vec<f64>> {
        self.layout
            .groups
            .iter()
            .zip(&self.groups)
            .find(|(g, p)| p.is_scaled() && folds_into(g, name))
            .map(|(_, p)| p.scales(rows))
    }
}

/// Quantizes `job.block` with AWQ; returns the block's full-precision outputs.
pub(crate) fn quantize_block(
    job: &mut BlockJob<'_>,
    opts: &AwqOptions,
    results: &mut Results,
) -> Result<Vec<Vec<State>>> {
    let block = job.block;
    let awq = opts.config();
    let layout = job.model.awq_layout(block)?;
    let sequential = job.model.block_groups(block)?;
    check_layout(&layout, &sequential.concat())?;
    // 1. every linear's full-precision inputs; the block's outputs feed the next block
    let (inputs, next) = capture_block(&*job.model, block, job.states)?;
    let mut merged = HashMap::new();
    for spec in sequential.iter().flatten() {
        let w = tensor_to_mat(&job.model.linear_weight(&spec.name)?)?;
        merged.insert(spec.name.clone(), w);
    }

    // 2. every search on the full-precision block, before anything is applied
    let mut groups = Vec::with_capacity(layout.groups.len());
    for g in &layout.groups {
        let t = Instant::now();
        job.progress
            .message(&format!("searching {}", g.linears.join(", ")));
        let search = match &g.fold {
            Some(_) => Some(
                search_group(job, g, &inputs, &job.cfg.gptq.grid, &awq)
                    .with_context(|| format!("AWQ scale search of {:?}", g.linears))?,
            ),
            None => None,
        };
        let seconds = t.elapsed().as_secs_f64();
        groups.push(GroupPlan { search, seconds });
    }
    // 3. the folds
    for (g, plan) in layout.groups.iter().zip(&groups) {
        if let (Some(fold), Some(search)) = (&g.fold, &plan.search) {
            if plan.is_scaled() {
                let changed =
                    crate::awq_fold::fold_inverse_scales(job.model, fold, &search.scales)?;
                results.changed.extend(changed);
            }
        }
    }
    // 4. clip + RTN, in true-sequential order
    let plan = BlockPlan {
        layout,
        groups,
        inputs,
        merged,
    };
    for (gi, group) in sequential.iter().enumerate() {
        for spec in group {
            job.progress.message(&spec.name);
            let (record, layer) = quantize_linear(job, &plan, spec, gi, opts)?;
            job.model
                .set_linear_weight(&spec.name, mat_to_tensor(layer.dequant.as_ref())?)?;
            results.push(record, layer);
            job.progress.linear_done(&spec.name);
        }
    }
    Ok(next)
}

/// Clip search + RTN of one linear (its current weight, rows already divided by a fold, scaled
/// by its group's `s`) and its report entry.
fn quantize_linear(
    job: &BlockJob<'_>,
    plan: &BlockPlan,
    spec: &LinearSpec,
    gi: usize,
    opts: &AwqOptions,
) -> Result<(LinearRecord, QuantizedLayer)> {
    let t = Instant::now();
    let (name, grid, awq) = (&spec.name, &job.cfg.gptq.grid, opts.config());
    let (g, gplan) = plan.group_of(name);
    let s_in = gplan.scales(spec.in_features);
    let s_out = plan.row_scales(name, spec.out_features);
    let x = plan.inputs.get(name)?;
    let clip = opts.clip && !plan.layout.skip_clip.contains(name);
    let x_rows = clip.then(|| x.rows(&clip_token_rows(x.tokens(), awq.clip_tokens)));
    let w = tensor_to_mat(&job.model.linear_weight(name)?)?;
    let q = quantize_layer(
        w.as_ref(),
        &s_in,
        x_rows.as_ref().map(|m| m.as_ref()),
        grid,
        &awq,
    )
    .with_context(|| format!("AWQ clip + RTN of {name}"))?;
    let w0 = &plan.merged[name];
    let effective = original_coordinates(q.layer.dequant.as_ref(), s_out.as_deref(), &s_in);
    let h = x.hessian_sum();
    let base = rtn(w0.as_ref(), grid)?;
    let deviation = match job.cfg.deviation {
        DeviationMode::PerTask => {
            let experts = if job.experts.is_empty() {
                Vec::new()
            } else {
                job.experts.weights(spec)?
            };
            deviation_per_task(&effective, w0, &experts, x.hessians())
        }
        DeviationMode::Total => {
            // the experts folded task by task, one Hessian at a time
            let terms = if job.experts.is_empty() {
                None
            } else {
                let mut fold = ExpertFold::with_precision(w0.as_ref(), job.cfg.fold_precision);
                for i in 0..job.experts.len() {
                    fold.add(
                        job.experts.weight(i, spec)?.as_ref(),
                        x.task_hessian(i).as_ref(),
                    )?;
                }
                Some(expert_terms(fold, h, &effective)?)
            };
            deviation_total(&effective, w0, h, None, &terms)
        }
    };
    let record = LinearRecord {
        name: name.clone(),
        block: job.block,
        group: gi,
        rows: spec.out_features,
        cols: spec.in_features,
        tokens: x.task_tokens().to_vec(),
        objective_rtn: Some(quadratic_error(
            base.dequant.as_ref(),
            w0.as_ref(),
            h.as_ref(),
        )),
        objective: Some(quadratic_error(effective.as_ref(), w0.as_ref(), h.as_ref())),
        percdamp: None,
        damping: None,
        lambda: None,
        extra_damping: None,
        seconds: t.elapsed().as_secs_f64(),
        deviation: Some(deviation),
        awq: Some(awq_record(
            g,
            gplan,
            &s_in,
            s_out.is_some(),
            q.clip.as_ref(),
        )),
        alpha: None,
        warnings: Vec::new(),
    };
    Ok((record, q.layer))
}

/// Every linear of the block in exactly one scaling group; folds into linears of the block.
fn check_layout(layout: &AwqLayout, specs: &[LinearSpec]) -> Result<()> {
    let mut seen = HashSet::new();
    for g in &layout.groups {
        for n in &g.linears {
            if !seen.insert(n.as_str()) {
                bail!("AWQ layout: `{n}` is in two scaling groups");
            }
            if !specs.iter().any(|s| &s.name == n) {
                bail!("AWQ layout: `{n}` is not a linear of the block");
            }
        }
        if let Some(ScaleFold::Linear { linear, .. }) = &g.fold {
            if !specs.iter().any(|s| &s.name == linear) {
                bail!("AWQ layout: fold target `{linear}` is not a linear of the block");
            }
        }
        if g.fold.is_some() && g.inspect.is_none() && g.linears.len() != 1 {
            bail!(
                "AWQ layout: {:?} need a sub-block to inspect (more than one linear)",
                g.linears
            );
        }
    }
    if let Some(s) = specs.iter().find(|s| !seen.contains(s.name.as_str())) {
        bail!("AWQ layout: `{}` is in no scaling group", s.name);
    }
    Ok(())
}

/// Whether `group` folds its inverse scales into the rows of linear `name`.
fn folds_into(group: &ScalingGroup, name: &str) -> bool {
    matches!(&group.fold, Some(ScaleFold::Linear { linear, .. }) if linear == name)
}

/// `diag(s_out)·Q·diag(s_in)⁻¹`.
fn original_coordinates(q: MatRef<'_, f64>, s_out: Option<&[f64]>, s_in: &[f64]) -> Mat<f64> {
    Mat::from_fn(q.nrows(), q.ncols(), |r, c| {
        s_out.map_or(1.0, |s| s[r]) * q[(r, c)] / s_in[c]
    })
}

/// The grid search of one group's scales on the block's full-precision inputs.
fn search_group(
    job: &mut BlockJob<'_>,
    g: &ScalingGroup,
    inputs: &BlockInputs,
    grid: &QuantGrid,
    cfg: &AwqConfig,
) -> Result<ScaleSearch> {
    let x = inputs.shared(&g.linears)?;
    let originals: Vec<Tensor> = g
        .linears
        .iter()
        .map(|n| job.model.linear_weight(n))
        .collect::<pmq_models::Result<_>>()?;
    let weights: Vec<Mat<f64>> = originals.iter().map(tensor_to_mat).collect::<Result<_>>()?;
    let refs: Vec<MatRef<'_, f64>> = weights.iter().map(|w| w.as_ref()).collect();
    let x_mean = x.mean_abs();
    let Some(sub) = g.inspect else {
        // the linear's own output: mean over (tokens × out) of ‖X (Q − W)ᵀ‖² = tr(D H Dᵀ)
        let h = x.hessian_sum();
        let elements = (x.tokens() * weights.iter().map(|w| w.nrows()).sum::<usize>()) as f64;
        return Ok(search_scales(&refs, &x_mean, grid, cfg, |q| {
            Ok(q.iter()
                .zip(&weights)
                .map(|(q, w)| quadratic_error(q.as_ref(), w.as_ref(), h.as_ref()))
                .sum::<f64>()
                / elements)
        })?);
    };
    let (block, states) = (job.block, job.states);
    let model = &mut *job.model;
    let reference: Vec<Tensor> = states
        .iter()
        .flatten()
        .map(|s| model.sub_block_output(block, s, sub))
        .collect::<pmq_models::Result<_>>()?;
    let elements: f64 = reference.iter().map(|t| t.elem_count() as f64).sum();
    let result = search_scales(&refs, &x_mean, grid, cfg, |q| {
        for (name, qj) in g.linears.iter().zip(q) {
            let t = mat_to_tensor(qj.as_ref()).map_err(|e| model_error(sub, e))?;
            model
                .set_linear_weight(name, t)
                .map_err(|e| model_error(sub, e))?;
        }
        sub_block_error(model, block, states, sub, &reference)
            .map(|sse| sse / elements)
            .map_err(|e| model_error(sub, e))
    });
    for (name, w) in g.linears.iter().zip(originals) {
        model.set_linear_weight(name, w)?;
    }
    Ok(result?)
}

/// `Σ ‖f(state) − reference‖²` over all calibration states.
fn sub_block_error(
    model: &dyn pmq_models::BlockModel,
    block: usize,
    states: &[Vec<State>],
    sub: SubBlock,
    reference: &[Tensor],
) -> Result<f64> {
    let mut sse = 0.0;
    for (s, r) in states.iter().flatten().zip(reference) {
        let out = model.sub_block_output(block, s, sub)?;
        sse += (out - r)?
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
    }
    Ok(sse)
}

fn model_error(sub: SubBlock, e: impl std::fmt::Display) -> CoreError {
    CoreError::Config(format!("running the {sub:?} sub-block: {e}"))
}

fn awq_record(
    g: &ScalingGroup,
    plan: &GroupPlan,
    s_in: &[f64],
    rows_rescaled: bool,
    clip: Option<&pmq_core::awq::ClipSearch>,
) -> AwqRecord {
    let fold = |v: f64, f: fn(f64, f64) -> f64| s_in.iter().copied().fold(v, f);
    AwqRecord {
        group: g.linears.clone(),
        folded_into: g.fold.as_ref().map(ScaleFold::describe),
        inspected: match g.inspect {
            None => "linear",
            Some(SubBlock::SelfAttention) => "self_attention",
            Some(SubBlock::CrossAttention) => "cross_attention",
            Some(SubBlock::Mlp) => "mlp",
        }
        .to_string(),
        ratio: plan.search.as_ref().and_then(ScaleSearch::ratio),
        loss: plan.search.as_ref().map(|s| s.loss),
        loss_unscaled: plan.search.as_ref().map(|s| s.loss_unscaled),
        scale_min: fold(f64::INFINITY, f64::min),
        scale_max: fold(f64::NEG_INFINITY, f64::max),
        rows_rescaled,
        clip: clip.map(|c| {
            let n = c.max_val.len().max(1) as f64;
            let shrink: f64 = c
                .max_val
                .iter()
                .zip(&c.org_max_val)
                .map(|(m, o)| if *o > 0.0 { 1.0 - m / o } else { 0.0 })
                .sum();
            ClipRecord {
                clipped_fraction: c.shrink.iter().filter(|&&i| i > 0).count() as f64 / n,
                mean_shrink: shrink / n,
                tokens: c.tokens_used,
            }
        }),
        search_seconds: plan.seconds,
    }
}
