//! The streaming merge: validate everything, run the method's preparatory passes, then write
//! the output one tensor at a time into an [`AtomicDir`] that only appears when complete.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use pmq_io::{
    decode_f32, encode_f32, AtomicDir, Dtype, SafetensorsWriter, TensorInfo, TensorStore,
};
use serde_json::Value;

use crate::checkpoint::Checkpoint;
use crate::inputs::Inputs;
use crate::methods::{self, MergeMethod};
use crate::plan::{self, Action, TensorPlan};
use crate::progress::Progress;
use crate::select::Selector;
use crate::{MergeConfig, MergeError, MergeReport};

/// File name of the merged weights inside the output directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of the report inside the output directory.
pub const REPORT_FILE: &str = "merge_report.json";

/// Runs a merge end to end; on any error nothing is left at `cfg.out`.
pub fn merge(cfg: &MergeConfig, progress: &dyn Progress) -> Result<MergeReport, MergeError> {
    let start = Instant::now();
    if cfg.experts.is_empty() {
        return Err(MergeError::NoExperts);
    }
    cfg.method.validate()?;
    if let Some(d) = cfg.dtype {
        if !matches!(d, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(MergeError::option(
                "dtype",
                format!("{d} is not one of F32, F16, BF16"),
            ));
        }
    }
    let selector = Selector::new(&cfg.include, &cfg.exclude)?;
    let mut input_dirs = vec![cfg.base.clone()];
    input_dirs.extend(cfg.experts.iter().cloned());
    pmq_io::check_output_location(&cfg.out, &input_dirs)?;
    pmq_io::check_output_dir(&cfg.out, cfg.overwrite)?;
    let base = Checkpoint::open(&cfg.base, format!("base ({})", cfg.base.display()))?;
    let experts = cfg
        .experts
        .iter()
        .enumerate()
        .map(|(i, dir)| Checkpoint::open(dir, format!("expert {} ({})", i + 1, dir.display())))
        .collect::<Result<Vec<_>, _>>()?;
    for e in &experts {
        base.check_same_architecture(e)?;
    }
    let plan = plan::build(&base, &experts, &selector, cfg.dtype)?;
    let inputs = Inputs { base, experts };

    let mut method = methods::build(&cfg.method);
    let to_merge: Vec<&TensorPlan> = plan.iter().filter(|p| p.action == Action::Merge).collect();
    if to_merge.is_empty() {
        tracing::warn!("no tensor is selected for merging; the output equals the base");
    }
    tracing::info!(
        method = cfg.method.name(),
        k = inputs.k(),
        merged = to_merge.len(),
        total = plan.len(),
        "merging"
    );
    method.prepare(&inputs, &to_merge, progress)?;

    let out = AtomicDir::create(&cfg.out, cfg.overwrite)?;
    let tensors = write_weights(
        &out.path().join(WEIGHTS_FILE),
        &plan,
        &inputs,
        method.as_ref(),
        cfg,
        progress,
    )?;
    let copied_files =
        pmq_io::copy_non_weight_files(&cfg.base, out.path(), &["merge_report.json"])?;

    let count = |a: Action| plan.iter().filter(|p| p.action == a).count();
    let report = MergeReport {
        method: cfg.method.name().to_string(),
        params: method_params(cfg),
        k: inputs.k(),
        base: cfg.base.clone(),
        experts: cfg.experts.clone(),
        out: cfg.out.clone(),
        include: cfg.include.clone(),
        exclude: cfg.exclude.clone(),
        dtype: cfg.dtype.map(|d| d.to_string()),
        tensors_total: plan.len(),
        tensors_merged: count(Action::Merge),
        tensors_copied: plan.len() - count(Action::Merge),
        tensors_copied_unselected: count(Action::CopyUnselected),
        tensors_copied_non_float: count(Action::CopyNonFloat),
        copied_files,
        seconds: start.elapsed().as_secs_f64(),
        method_details: method.details(),
        tensors,
        warnings: crate::report::input_warnings(&cfg.base, &cfg.experts),
    };
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    let report_path = out.path().join(REPORT_FILE);
    let json = serde_json::to_string_pretty(&report).map_err(|e| MergeError::Report {
        path: cfg.out.join(REPORT_FILE),
        reason: e.to_string(),
    })?;
    std::fs::write(&report_path, json).map_err(|e| MergeError::Report {
        path: cfg.out.join(REPORT_FILE),
        reason: e.to_string(),
    })?;
    out.commit()?;
    Ok(report)
}

fn method_params(cfg: &MergeConfig) -> Value {
    let mut v = serde_json::to_value(&cfg.method).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("method");
    }
    v
}

/// Streams every planned tensor into `dest`; returns the per-tensor report details.
fn write_weights(
    dest: &Path,
    plan: &[TensorPlan],
    inputs: &Inputs,
    method: &dyn MergeMethod,
    cfg: &MergeConfig,
    progress: &dyn Progress,
) -> Result<BTreeMap<String, Value>, MergeError> {
    let infos: Vec<TensorInfo> = plan
        .iter()
        .map(|p| TensorInfo::new(p.name(), p.out_dtype, p.info.shape.clone()))
        .collect();
    let metadata = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        (
            "pmq_merge_method".to_string(),
            cfg.method.name().to_string(),
        ),
    ]);
    let mut writer = SafetensorsWriter::create(dest, &infos, Some(metadata))?;
    let mut details = BTreeMap::new();
    progress.phase("merge", plan.len());
    for p in plan {
        let bytes = match p.action {
            Action::Merge => {
                let data = inputs.load(p.name())?;
                let merged = method.merge_tensor(p, &data)?;
                if let Some(d) = merged.detail {
                    details.insert(p.name().to_string(), d);
                }
                encode_checked(p, &merged.values)?
            }
            Action::CopyUnselected | Action::CopyNonFloat => copy_bytes(&inputs.base.store, p)?,
        };
        writer.write(p.name(), &bytes)?;
        progress.tensor_done(p.name());
    }
    writer.finish()?;
    Ok(details)
}

/// Encodes merged values to the output dtype, refusing non-finite results or overflow.
fn encode_checked(p: &TensorPlan, values: &[f32]) -> Result<Vec<u8>, MergeError> {
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(MergeError::BadResult {
            tensor: p.name().to_string(),
            reason: format!("has a non-finite value ({v}) at flat index {i}"),
        });
    }
    let bytes = encode_f32(p.out_dtype, values).map_err(|e| e.for_tensor(p.name()))?;
    if p.out_dtype != Dtype::F32 {
        let back = decode_f32(p.out_dtype, &bytes).unwrap_or_default();
        if let Some(i) = back.iter().position(|b| !b.is_finite()) {
            return Err(MergeError::BadResult {
                tensor: p.name().to_string(),
                reason: format!(
                    "value {} at flat index {i} overflows {}; choose another output dtype",
                    values[i], p.out_dtype
                ),
            });
        }
    }
    Ok(bytes)
}

/// The base tensor's bytes in the output dtype (raw when unchanged).
fn copy_bytes(base: &TensorStore, p: &TensorPlan) -> Result<Vec<u8>, MergeError> {
    if p.out_dtype == p.info.dtype {
        return Ok(base.raw_bytes(p.name())?.to_vec());
    }
    let values = base.read_f32(p.name())?;
    encode_checked(p, &values)
}
