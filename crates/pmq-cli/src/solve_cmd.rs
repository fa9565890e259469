//! `pmq solve`: quantize one linear layer from a layer file with RTN, GPTQ or E-PMQ, through
//! the pipeline's own per-linear dispatch ([`pmq_pipeline::method::solve`]).
//!
//! The layer file holds `merged` f32 `[out, in]`, `hessian.<i>` f32 `[in, in]` (task i's
//! `Σ_tokens x xᵀ`) and, for E-PMQ, `expert.<i>` f32 `[out, in]`. The output holds the
//! dequantized `weight`, the GPTQ tensors (`qweight`, `qzeros` with true zeros as in
//! `gptq_v2`, `scales` in f32, `g_idx`) and, for E-PMQ, the continuous `target` W*.

use crate::quant_flags::QuantFlags;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use faer::Mat;
use pmq_core::epmq::ExpertFold;
use pmq_core::matrix::{from_row_major, to_row_major_f32};
use pmq_core::objective::quadratic_error;
use pmq_core::packing::{pack_qweight, pack_qzeros, CheckpointFormat};
use pmq_core::{GridKind, QuantizedLayer, ScalePrecision};
use pmq_io::{f32_bytes, i32_bytes, write_safetensors, Dtype, TensorStore};
use pmq_pipeline::method::{solve, LinearProblem};
use pmq_pipeline::{solver_settings, Method};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SolveMethod {
    Rtn,
    Gptq,
    Epmq,
}

#[derive(Args, Debug)]
pub struct SolveArgs {
    /// Layer file: `merged`, `hessian.<i>` and (E-PMQ) `expert.<i>` tensors.
    #[arg(long)]
    layer: PathBuf,
    #[arg(long, value_enum)]
    method: SolveMethod,
    #[command(flatten)]
    q: QuantFlags,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing output file.
    #[arg(long)]
    overwrite: bool,
    /// Solve this many times in one process and report the fastest (`time_solve_s`; every
    /// run's time in `time_solve_runs_s`): a benchmark's steady state, the allocator's memory
    /// reused. The fastest run's result is kept while the next one runs (up to twice the
    /// memory of one solve); `time_total_s` counts every repeat.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeats: u32,
}

/// Refuses an output that is the input layer file or an existing file (without `--overwrite`),
/// before any work.
fn check_out(args: &SolveArgs) -> Result<()> {
    let same = match (args.out.canonicalize(), args.layer.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        bail!(
            "--out {} is the input layer file: choose another path",
            args.out.display()
        );
    }
    if args.out.is_dir() {
        bail!(
            "--out {} is a directory: give a file path",
            args.out.display()
        );
    }
    if args.out.exists() && !args.overwrite {
        bail!(
            "--out {} exists: pass --overwrite to replace it",
            args.out.display()
        );
    }
    pmq_io::debris::remove_stale(&args.out);
    Ok(())
}

/// Tensors `prefix.<i>` for i = 0..K, in index order; fails on gaps.
fn indexed(store: &TensorStore, prefix: &str) -> Result<Vec<String>> {
    let mut idx: Vec<(usize, String)> = Vec::new();
    for name in store.names() {
        if let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) {
            let i: usize = rest.parse().with_context(|| {
                format!(
                    "{}: tensor {name:?} should be {prefix}.<task index>",
                    store.root().display()
                )
            })?;
            idx.push((i, name));
        }
    }
    idx.sort();
    for (k, (i, name)) in idx.iter().enumerate() {
        if *i != k {
            bail!(
                "{}: {prefix} indices must be 0..K without gaps, found {name:?} at position {k}",
                store.root().display()
            );
        }
    }
    Ok(idx.into_iter().map(|(_, n)| n).collect())
}

fn read_matrix(store: &TensorStore, name: &str, shape: Option<(usize, usize)>) -> Result<Mat<f64>> {
    let (r, c, data) = store
        .read_matrix_f64(name)
        .with_context(|| format!("reading {name:?} from {}", store.root().display()))?;
    if let Some((er, ec)) = shape {
        if (r, c) != (er, ec) {
            bail!(
                "{}: tensor {name:?} has shape [{r}, {c}], expected [{er}, {ec}]",
                store.root().display()
            );
        }
    }
    if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
        bail!(
            "{}: tensor {name:?} has a non-finite value ({}) at row {}, column {}",
            store.root().display(),
            data[pos],
            pos / c.max(1),
            pos % c.max(1)
        );
    }
    Ok(from_row_major(r, c, &data))
}

/// A Hessian `Σ x xᵀ` is symmetric; anything else is not one (refused, naming the tensor and
/// the worst entry).
fn check_symmetric(h: &Mat<f64>, name: &str, file: &std::path::Path) -> Result<()> {
    let n = h.nrows();
    let scale = (0..n).map(|j| h[(j, j)].abs()).fold(0.0f64, f64::max);
    let (mut worst, mut at) = (0.0f64, (0, 0));
    for j in 0..n {
        for i in j + 1..n {
            let d = (h[(i, j)] - h[(j, i)]).abs();
            if d > worst {
                (worst, at) = (d, (i, j));
            }
        }
    }
    if worst > 1e-6 * scale.max(f64::MIN_POSITIVE) {
        bail!(
            "{}: tensor {name:?} is not symmetric (H[{}, {}] = {} but H[{}, {}] = {}): a Hessian \
             Σ x xᵀ must be",
            file.display(),
            at.0,
            at.1,
            h[(at.0, at.1)],
            at.1,
            at.0,
            h[(at.1, at.0)]
        );
    }
    Ok(())
}

pub fn run(args: SolveArgs) -> Result<()> {
    let t0 = Instant::now();
    check_out(&args)?;
    let store = TensorStore::open_file(&args.layer)?;
    let merged = read_matrix(&store, "merged", None)?;
    let (rows, cols) = (merged.nrows(), merged.ncols());
    if rows == 0 || cols == 0 {
        bail!(
            "{}: tensor \"merged\" has shape [{rows}, {cols}]: there is no weight to quantize",
            args.layer.display()
        );
    }
    let hessian_names = indexed(&store, "hessian")?;
    let expert_names = indexed(&store, "expert")?;
    let tasks = hessian_names.len();
    if args.method != SolveMethod::Rtn && tasks == 0 {
        bail!(
            "{}: {:?} needs at least one hessian.<i> tensor",
            args.layer.display(),
            args.method
        );
    }
    if args.method == SolveMethod::Epmq && expert_names.len() != tasks {
        bail!(
            "{}: epmq needs one expert.<i> per hessian.<i>: {} experts, {} hessians",
            args.layer.display(),
            expert_names.len(),
            tasks
        );
    }
    let cfg = args.q.gptq_config(
        args.method == SolveMethod::Epmq,
        ScalePrecision::F32,
        args.q.grid.map_or(GridKind::Uniform, |g| g.kind()),
    )?;
    let method = match args.method {
        SolveMethod::Rtn => Method::Rtn,
        SolveMethod::Gptq => Method::Gptq,
        SolveMethod::Epmq => Method::Epmq {
            alpha: match args.q.alpha {
                crate::quant_flags::AlphaArg::Fixed(a) => a,
                crate::quant_flags::AlphaArg::Auto | crate::quant_flags::AlphaArg::AutoModel => anyhow::bail!(
                    "--alpha auto / auto-model needs held-out calibration batches: use it with `pmq quantize`; `pmq solve` takes a fixed α"
                ),
            },
        },
    };
    let mut report = solver_settings(&cfg);
    for (k, v) in [
        ("method", json!(method.label())),
        ("layer", json!(args.layer.display().to_string())),
        ("rows", json!(rows)),
        ("cols", json!(cols)),
        ("tasks", json!(tasks)),
    ] {
        report[k] = v;
    }
    let mut runs = Vec::new();
    let mut best = None;
    for _ in 0..args.repeats {
        let tasks = read_tasks(&args, &store, &merged, &hessian_names, &expert_names)?;
        let t_solve = Instant::now();
        let problem = LinearProblem {
            merged: &merged,
            // RTN reports no Hessian objective of its own here: `objective` below is the one
            // figure comparable across methods
            h_q: tasks.h_sum.as_ref().filter(|_| method != Method::Rtn),
            experts: tasks.fold,
        };
        let sol = solve(method, problem, &cfg)?;
        let solve_s = t_solve.elapsed().as_secs_f64() - sol.metrics_seconds + tasks.fold_s;
        runs.push(solve_s);
        if best.as_ref().is_none_or(|(_, _, s, _)| solve_s < *s) {
            best = Some((sol, tasks.h_sum, solve_s, tasks.fold_s));
        }
    }
    let Some((sol, h_sum, solve_s, fold_s)) = best else {
        bail!("--repeats must be at least 1");
    };
    if method != Method::Rtn {
        report["percdamp"] = json!(sol.percdamp);
        report["damping"] = json!(sol.damping);
        report["dead_columns"] = json!(sol.dead_columns);
    }
    let target = match sol.epmq {
        Some(e) => {
            report["alpha"] = json!(args.q.alpha.fixed_or(f64::NAN));
            report["lambda"] = json!(sol.lambda);
            report["extra_damping"] = json!(sol.extra_damping);
            report["extra_percdamp"] = json!(e.extra_percdamp);
            report["objective_epmq"] = json!(sol.objective);
            report["objective_epmq_target"] = json!(e.objective_target);
            report["objective_target_rounding"] = json!(e.objective_rounding);
            report["objective_epmq_merged"] = json!(sol.terms.as_ref().map(|t| t.merge_sq));
            report["time_fold_s"] = json!(fold_s);
            Some(e.target)
        }
        None => None,
    };
    let layer = sol.layer;
    if let Some(h) = &h_sum {
        // ‖Q X − W_m X‖² over all tasks' inputs: the naive PMQ objective, comparable across methods.
        report["objective"] = json!(quadratic_error(
            layer.dequant.as_ref(),
            merged.as_ref(),
            h.as_ref()
        ));
    }
    write_output(&args, &layer, target.as_ref())?;
    report["time_solve_s"] = json!(solve_s);
    report["time_solve_runs_s"] = json!(runs);
    report["time_total_s"] = json!(t0.elapsed().as_secs_f64());
    report["out"] = json!(args.out.display().to_string());
    println!("{report}");
    Ok(())
}

/// What the tasks of a layer file add up to: `ΣH_i`, and for E-PMQ the experts' fold.
struct Tasks {
    h_sum: Option<Mat<f64>>,
    fold: Option<ExpertFold>,
    /// Seconds in the fold's products (solve time; reading is not).
    fold_s: f64,
}

/// Reads and folds the tasks of the layer file one at a time: memory holds `ΣH_i` (and, for
/// E-PMQ, `D = Σ(W_i − W_m)H_i`), never all K Hessians.
fn read_tasks(
    args: &SolveArgs,
    store: &TensorStore,
    merged: &Mat<f64>,
    hessian_names: &[String],
    expert_names: &[String],
) -> Result<Tasks> {
    let (rows, cols) = (merged.nrows(), merged.ncols());
    let mut h_sum = (!hessian_names.is_empty()).then(|| Mat::<f64>::zeros(cols, cols));
    let mut fold = (args.method == SolveMethod::Epmq)
        .then(|| ExpertFold::with_precision(merged.as_ref(), args.q.fold_precision()));
    let mut fold_s = 0.0;
    for (i, name) in hessian_names.iter().enumerate() {
        let h_i = read_matrix(store, name, Some((cols, cols)))?;
        check_symmetric(&h_i, name, &args.layer)?;
        if let Some(fold) = fold.as_mut() {
            let w_i = read_matrix(store, &expert_names[i], Some((rows, cols)))?;
            let t = Instant::now();
            fold.add(w_i.as_ref(), h_i.as_ref())?;
            fold_s += t.elapsed().as_secs_f64();
        }
        if let Some(h) = h_sum.as_mut() {
            *h += &h_i;
        }
    }
    Ok(Tasks {
        h_sum,
        fold,
        fold_s,
    })
}

fn write_output(args: &SolveArgs, layer: &QuantizedLayer, target: Option<&Mat<f64>>) -> Result<()> {
    let (rows, cols, bits) = (layer.rows, layer.cols, layer.grid.bits);
    let groups = layer.num_groups();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![(
        "weight".into(),
        Dtype::F32,
        vec![rows, cols],
        f32_bytes(&to_row_major_f32(layer.dequant.as_ref())),
    )];
    match (
        pack_qweight(&layer.codes, rows, cols, bits),
        pack_qzeros(&layer.zeros, groups, rows, bits, CheckpointFormat::V2),
    ) {
        (Ok(qweight), Ok(qzeros)) => {
            tensors.push((
                "qweight".into(),
                Dtype::I32,
                vec![cols * bits as usize / 32, rows],
                i32_bytes(&qweight),
            ));
            tensors.push((
                "qzeros".into(),
                Dtype::I32,
                vec![groups, rows * bits as usize / 32],
                i32_bytes(&qzeros),
            ));
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!("the GPTQ int32 layout does not fit this shape ({e}); writing unpacked `codes` [out, in] instead");
            let codes: Vec<i32> = layer.codes.iter().map(|&c| c as i32).collect();
            let zeros: Vec<i32> = layer.zeros.iter().map(|&z| z as i32).collect();
            tensors.push((
                "codes".into(),
                Dtype::I32,
                vec![rows, cols],
                i32_bytes(&codes),
            ));
            tensors.push((
                "zeros".into(),
                Dtype::I32,
                vec![groups, rows],
                i32_bytes(&zeros),
            ));
        }
    }
    let scales: Vec<f32> = layer.scales.iter().map(|&s| s as f32).collect();
    tensors.push((
        "scales".into(),
        Dtype::F32,
        vec![groups, rows],
        f32_bytes(&scales),
    ));
    let g_idx: Vec<i32> = layer.g_idx.iter().map(|&g| g as i32).collect();
    tensors.push(("g_idx".into(), Dtype::I32, vec![cols], i32_bytes(&g_idx)));
    if let Some(t) = target {
        tensors.push((
            "target".into(),
            Dtype::F32,
            vec![rows, cols],
            f32_bytes(&to_row_major_f32(t.as_ref())),
        ));
    }
    let meta = [
        ("format".to_string(), "pmq-solve".to_string()),
        ("bits".to_string(), bits.to_string()),
        (
            "group_size".to_string(),
            layer.grid.group_size_i64().to_string(),
        ),
        ("sym".to_string(), layer.grid.sym.to_string()),
        ("checkpoint_format".to_string(), "gptq_v2".to_string()),
    ]
    .into_iter()
    .collect();
    write_safetensors(&args.out, &tensors, Some(meta))
        .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}
