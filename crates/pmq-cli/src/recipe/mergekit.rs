//! mergekit's merge configuration (`merge_method`, `base_model`, `models: - model:,
//! parameters: {weight, density}`, `parameters`, `dtype`) as `pmq merge` flags, for the
//! methods whose semantics pmq reproduces exactly:
//!
//! - `linear`: `Σ wᵢ Wᵢ / Σ wᵢ` (mergekit normalises by default) — with equal weights the
//!   experts' mean, `--method average`;
//! - `task_arithmetic`: `W₀ + Σ wᵢ τᵢ` (no normalisation by default; with `normalize: true`
//!   divided by `Σ wᵢ`) — with equal weights `--method task-arithmetic --lambda w` (or `1/K`);
//! - `ties`: per tensor the ⌊density·n⌋ largest |τᵢ| kept (`--ties-trim mergekit`), sign
//!   election, agreeing entries summed with weights and (by default) divided by the sum of the
//!   agreeing weights — with equal weights `--ties-merge mean --lambda 1`; with
//!   `normalize: false` `--ties-merge sum --lambda w`.
//!
//! Per-model weights or densities that differ, layer-wise gradients (lists), and other methods
//! or keys are refused with what to change: pmq merges with one λ and one density. One known
//! difference remains: where the experts' weighted τ of an entry sum to exactly 0, mergekit's
//! sign election picks +, pmq's TIES the sign of the tensor's majority mass.

use anyhow::{bail, Result};
use serde_yaml::{Mapping, Value};
use std::path::{Path, PathBuf};

/// `pmq merge` flags (without `--base`/`--expert`/`--out`) and the base model the
/// configuration names.
#[derive(Debug, PartialEq)]
pub struct Translated {
    pub flags: Vec<String>,
    pub base: Option<PathBuf>,
    /// The models in the configuration's order (the base, if listed, left out).
    pub models: Vec<PathBuf>,
}

fn key<'a>(m: &'a Mapping, k: &str) -> Option<&'a Value> {
    m.get(Value::String(k.to_string()))
}

fn number(v: &Value, what: &str) -> Result<f64> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| anyhow::anyhow!("{what}: {n:?} is not a number")),
        Value::Sequence(_) => bail!(
            "{what}: layer-wise gradients (lists) are not supported; pmq uses one value for all layers"
        ),
        other => bail!("{what}: expected a number, got {other:?}"),
    }
}

fn boolean(v: &Value, what: &str) -> Result<bool> {
    v.as_bool()
        .ok_or_else(|| anyhow::anyhow!("{what}: expected true or false, got {v:?}"))
}

/// The one value every model gives `name` (model parameters over the global ones), or
/// `default` when nobody sets it.
fn uniform(
    models: &[(PathBuf, Mapping)],
    global: &Mapping,
    name: &str,
    default: Option<f64>,
) -> Result<Option<f64>> {
    let global_v = key(global, name)
        .map(|v| number(v, &format!("parameters.{name}")))
        .transpose()?;
    let mut seen: Option<(f64, &Path)> = None;
    for (path, p) in models {
        let v = match key(p, name) {
            Some(v) => Some(number(
                v,
                &format!("{}: parameters.{name}", path.display()),
            )?),
            None => global_v,
        };
        let Some(v) = v.or(default) else {
            bail!(
                "{}: mergekit needs parameters.{name} for this method",
                path.display()
            );
        };
        match seen {
            None => seen = Some((v, path)),
            Some((w, first)) if w != v => bail!(
                "parameters.{name} differs between models ({} has {w}, {} has {v}); pmq merges all experts with one {name}",
                first.display(),
                path.display()
            ),
            _ => {}
        }
    }
    Ok(seen.map(|(v, _)| v).or(default))
}

/// The same file or directory (as given, or after resolving links and `..`).
pub fn same_path(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

fn fmt(x: f64) -> String {
    format!("{x}")
}

/// Translates a mergekit configuration; relative model paths are resolved by `resolve`.
pub fn translate(doc: &Value, resolve: &dyn Fn(&str) -> PathBuf) -> Result<Translated> {
    let Some(m) = doc.as_mapping() else {
        bail!("a mergekit configuration is a mapping with merge_method, models, …");
    };
    const KNOWN: [&str; 6] = [
        "merge_method",
        "base_model",
        "models",
        "parameters",
        "dtype",
        "tokenizer_source",
    ];
    for k in m.keys() {
        let k = k.as_str().unwrap_or("?");
        if !KNOWN.contains(&k) {
            bail!(
                "mergekit key `{k}` is not supported by pmq (supported: {})",
                KNOWN.join(", ")
            );
        }
    }
    if let Some(t) = key(m, "tokenizer_source") {
        if t.as_str() != Some("base") {
            bail!("tokenizer_source: pmq keeps the base's tokenizer; only `base` is accepted");
        }
    }
    let method = key(m, "merge_method")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("mergekit configuration without merge_method"))?;
    let base = key(m, "base_model")
        .map(|v| {
            v.as_str()
                .map(resolve)
                .ok_or_else(|| anyhow::anyhow!("base_model: expected a path"))
        })
        .transpose()?;
    let empty = Mapping::new();
    let global = match key(m, "parameters") {
        None => &empty,
        Some(v) => v
            .as_mapping()
            .ok_or_else(|| anyhow::anyhow!("parameters: expected a mapping"))?,
    };
    let mut models = Vec::new();
    for (i, entry) in key(m, "models")
        .and_then(Value::as_sequence)
        .ok_or_else(|| anyhow::anyhow!("mergekit configuration without a models list"))?
        .iter()
        .enumerate()
    {
        let e = entry
            .as_mapping()
            .ok_or_else(|| anyhow::anyhow!("models[{i}]: expected a mapping with `model`"))?;
        for k in e.keys() {
            let k = k.as_str().unwrap_or("?");
            if k != "model" && k != "parameters" {
                bail!("models[{i}]: key `{k}` is not supported (only model, parameters)");
            }
        }
        let path = key(e, "model")
            .and_then(Value::as_str)
            .map(resolve)
            .ok_or_else(|| anyhow::anyhow!("models[{i}]: `model` must be a path"))?;
        let params = match key(e, "parameters") {
            None => Mapping::new(),
            Some(v) => v
                .as_mapping()
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("models[{i}].parameters: expected a mapping"))?,
        };
        if base.as_ref().is_some_and(|b| same_path(b, &path)) {
            if method == "linear" {
                bail!("linear with the base among the models averages the base too; pmq's average merges the experts only: remove the base from models");
            }
            continue; // task-vector methods: the base listed among the models adds nothing
        }
        models.push((path, params));
    }
    if models.is_empty() {
        bail!("the mergekit configuration lists no model besides the base");
    }
    let normalize = |default: bool| -> Result<bool> {
        key(global, "normalize")
            .map(|v| boolean(v, "parameters.normalize"))
            .transpose()
            .map(|v| v.unwrap_or(default))
    };
    for (path, p) in &models {
        for k in p.keys() {
            let k = k.as_str().unwrap_or("?");
            if !["weight", "density"].contains(&k) {
                bail!(
                    "{}: model parameter `{k}` is not supported (only weight, density)",
                    path.display()
                );
            }
        }
    }
    for k in global.keys() {
        let k = k.as_str().unwrap_or("?");
        if !["weight", "density", "normalize", "int8_mask"].contains(&k) {
            bail!("parameters.{k} is not supported (weight, density, normalize, int8_mask)");
        }
    }
    let k = models.len() as f64;
    let mut flags: Vec<String> = Vec::new();
    match method {
        "linear" => {
            uniform(&models, global, "weight", None)?;
            if !normalize(true)? {
                bail!("linear with normalize: false (a plain weighted sum) has no pmq equivalent");
            }
            flags.extend(["--method".into(), "average".into()]);
        }
        "task_arithmetic" => {
            let w = uniform(&models, global, "weight", None)?.unwrap_or(1.0);
            let lambda = if normalize(false)? { 1.0 / k } else { w };
            flags.extend([
                "--method".into(),
                "task-arithmetic".into(),
                "--lambda".into(),
                fmt(lambda),
            ]);
        }
        "ties" => {
            let w = uniform(&models, global, "weight", None)?.unwrap_or(1.0);
            let density = uniform(&models, global, "density", Some(1.0))?.unwrap_or(1.0);
            let (merge, lambda) = if normalize(true)? {
                ("mean", 1.0)
            } else {
                ("sum", w)
            };
            flags.extend([
                "--method".into(),
                "ties".into(),
                "--density".into(),
                fmt(density),
                "--ties-trim".into(),
                "mergekit".into(),
                "--ties-merge".into(),
                merge.into(),
                "--lambda".into(),
                fmt(lambda),
            ]);
        }
        other => bail!(
            "mergekit merge_method `{other}` is not supported by pmq's mergekit reader (linear, task_arithmetic, ties); write the merge section in pmq's form instead (method: ties | dare | wudi | regmean | …)"
        ),
    }
    if let Some(d) = key(m, "dtype") {
        let d = match d.as_str() {
            Some("float32") => "f32",
            Some("float16") => "f16",
            Some("bfloat16") => "bf16",
            _ => bail!("dtype: expected float32, float16 or bfloat16, got {d:?}"),
        };
        flags.extend(["--dtype".into(), d.into()]);
    }
    Ok(Translated {
        flags,
        base,
        models: models.into_iter().map(|(p, _)| p).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(yaml: &str) -> Result<Translated> {
        let doc: Value = serde_yaml::from_str(yaml).unwrap();
        translate(&doc, &|s| PathBuf::from("/r").join(s))
    }

    #[test]
    fn ties_with_mergekit_defaults_is_the_normalised_mean_of_agreeing_entries() {
        let t = tr("merge_method: ties\nbase_model: base\nmodels:\n  - model: base\n  - model: a\n    parameters: {weight: 0.5, density: 0.2}\n  - model: b\n    parameters: {weight: 0.5, density: 0.2}\ndtype: bfloat16\n").unwrap();
        assert_eq!(t.base, Some(PathBuf::from("/r/base")));
        assert_eq!(t.models, [PathBuf::from("/r/a"), PathBuf::from("/r/b")]);
        assert_eq!(
            t.flags.join(" "),
            "--method ties --density 0.2 --ties-trim mergekit --ties-merge mean --lambda 1 --dtype bf16"
        );
        let t = tr("merge_method: ties\nmodels:\n  - model: a\n  - model: b\nparameters: {weight: 0.3, density: 0.5, normalize: false}\n").unwrap();
        assert!(
            t.flags.join(" ").contains("--ties-merge sum --lambda 0.3"),
            "{:?}",
            t.flags
        );
    }

    #[test]
    fn task_arithmetic_and_linear() {
        let t = tr("merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: a\n    parameters: {weight: 0.3}\n  - model: b\n    parameters: {weight: 0.3}\n").unwrap();
        assert_eq!(t.flags.join(" "), "--method task-arithmetic --lambda 0.3");
        let t = tr("merge_method: task_arithmetic\nmodels:\n  - model: a\n  - model: b\n  - model: c\nparameters: {normalize: true, weight: 2}\n").unwrap();
        assert!(tr("merge_method: task_arithmetic\nmodels:\n  - model: a\n")
            .unwrap_err()
            .to_string()
            .contains("needs parameters.weight"));
        assert!(t
            .flags
            .join(" ")
            .ends_with(&format!("--lambda {}", 1.0 / 3.0)));
        let t = tr("merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1}\n  - model: b\n    parameters: {weight: 1}\n").unwrap();
        assert_eq!(t.flags.join(" "), "--method average");
    }

    #[test]
    fn what_pmq_cannot_reproduce_is_refused_with_the_reason() {
        let cases = [
            ("merge_method: ties\nmodels:\n  - model: a\n    parameters: {weight: 1, density: 0.2}\n  - model: b\n    parameters: {weight: 1, density: 0.5}\n", "differs between models"),
            ("merge_method: task_arithmetic\nmodels:\n  - model: a\n    parameters: {weight: [0.1, 0.5]}\n  - model: b\n", "layer-wise gradients"),
            ("merge_method: slerp\nmodels:\n  - model: a\n  - model: b\n", "not supported"),
            ("merge_method: ties\nslices: []\nmodels:\n  - model: a\n", "`slices`"),
            ("merge_method: ties\nmodels:\n  - model: a\n    parameters: {epsilon: 0.1}\n", "`epsilon`"),
            ("merge_method: linear\nmodels:\n  - model: a\nparameters: {normalize: false, weight: 1}\n", "no pmq equivalent"),
            ("merge_method: linear\nmodels:\n  - model: a\n", "needs parameters.weight"),
            ("merge_method: linear\nbase_model: b\nmodels:\n  - model: b\n  - model: a\nparameters: {weight: 1}\n", "averages the base too"),
            ("models:\n  - model: a\n", "without merge_method"),
            ("merge_method: ties\nbase_model: a\nmodels:\n  - model: a\n", "no model besides the base"),
            ("merge_method: ties\nmodels:\n  - model: a\nparameters: {weight: 1}\ndtype: int8\n", "dtype"),
        ];
        for (yaml, needle) in cases {
            let e = tr(yaml).unwrap_err().to_string();
            assert!(e.contains(needle), "{yaml}: {e}");
        }
    }
}
