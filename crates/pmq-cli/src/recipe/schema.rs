//! The recipe file: what `pmq run` reads, checked and resolved (paths relative to the file,
//! the merge section translated into `pmq merge` flags, the quantization section into
//! `pmq quantize` flags).
//!
//! ```yaml
//! out: runs/ta-epmq
//! base: models/base
//! experts:
//!   - model: experts/spam
//!     task: spam                      # default: its head's task, else the calib file's stem
//!     calib: data/spam-calib.jsonl    # as pmq quantize --calib (JSONL, or an image folder)
//!     eval: data/spam-test.jsonl      # optional, as pmq eval --data (text/image classification
//!                                     # scored with the head; T5 input/target pairs by exact match)
//!   - model: experts/news
//!     calib: data/news-calib.jsonl
//! merge:                              # pmq merge's flags; or mergekit's keys; or {mergekit: FILE}
//!   method: task-arithmetic
//!   lambda: 0.3
//! quantize:                           # pmq quantize's flags
//!   method: epmq
//!   alpha: auto-model                # a number, auto (per linear) or auto-model (per model)
//!   samples_per_task: 128
//! outputs: [fake, gptq, gguf:q4_0]    # default [fake]
//! evaluate: {max_examples: 500}       # optional; evaluates experts with `eval` data
//! ```

use super::mergekit;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    out: Option<PathBuf>,
    base: Option<PathBuf>,
    experts: Vec<RawExpert>,
    merge: Value,
    quantize: Option<BTreeMap<String, Value>>,
    outputs: Option<Vec<String>>,
    evaluate: Option<RawEvaluate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpert {
    model: PathBuf,
    task: Option<String>,
    calib: Option<PathBuf>,
    eval: Option<PathBuf>,
    head: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEvaluate {
    max_examples: Option<usize>,
    max_seq_len: Option<usize>,
    batch_size: Option<usize>,
}

/// One expert with its data.
#[derive(Debug, Clone)]
pub struct Expert {
    pub model: PathBuf,
    pub task: String,
    pub calib: Option<PathBuf>,
    pub eval: Option<PathBuf>,
    /// The expert's classification head (default: the one `pmq finetune` wrote into the
    /// expert's directory).
    pub head: Option<PathBuf>,
}

/// What `outputs:` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Fake,
    Gptq,
    /// GGUF on this block grid (`q4_0`, `q4_1`, `q8_0`).
    Gguf(String),
}

/// Evaluation settings.
#[derive(Debug, Clone, Default)]
pub struct Evaluate {
    pub max_examples: Option<usize>,
    pub max_seq_len: Option<usize>,
    pub batch_size: usize,
}

/// A checked recipe.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub path: PathBuf,
    pub out: Option<PathBuf>,
    pub base: PathBuf,
    pub experts: Vec<Expert>,
    /// `pmq merge` flags (method and its parameters).
    pub merge_flags: Vec<String>,
    /// `pmq quantize` flags (method, grid, α, …); `None`: no quantization.
    pub quantize_flags: Option<Vec<String>>,
    pub outputs: Vec<Output>,
    pub evaluate: Option<Evaluate>,
}

/// Flags the recipe sets itself, not allowed in a section.
const RESERVED: [&str; 11] = [
    "model",
    "expert",
    "calib",
    "out",
    "format",
    "merge",
    "base",
    "overwrite",
    "resume",
    "grams",
    "keep_grams",
];

/// A section's `key: value` pairs as command-line flags: `group_size: 32` → `--group-size 32`,
/// `true` → the bare flag, `false` → nothing, a list → the flag once per item (which repeatable
/// flags like `--exclude` and comma-delimited ones like `--alpha-grid` both accept).
pub fn flags_of(section: &BTreeMap<String, Value>, what: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (k, v) in section {
        if RESERVED.contains(&k.as_str()) {
            bail!("{what}: `{k}` is set by the recipe itself (experts, base, outputs), not in this section");
        }
        let flag = format!("--{}", k.replace('_', "-"));
        let scalar = |v: &Value| -> Result<String> {
            Ok(match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => bail!("{what}.{k}: expected a scalar, got {other:?}"),
            })
        };
        match v {
            Value::Bool(true) => out.push(flag),
            Value::Bool(false) | Value::Null => {}
            Value::Sequence(items) => {
                for item in items {
                    out.extend([flag.clone(), scalar(item)?]);
                }
            }
            v => out.extend([flag, scalar(v)?]),
        }
    }
    Ok(out)
}

impl Recipe {
    /// Reads and checks a recipe file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the recipe {}", path.display()))?;
        let raw: RawRecipe = serde_yaml::from_str(&text)
            .with_context(|| format!("{} is not a valid recipe", path.display()))?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            }
        };
        Self::from_raw(raw, path, &resolve).with_context(|| format!("recipe {}", path.display()))
    }

    fn from_raw(raw: RawRecipe, path: &Path, resolve: &dyn Fn(&Path) -> PathBuf) -> Result<Self> {
        if raw.experts.is_empty() {
            bail!("`experts` lists no expert");
        }
        let mut experts = Vec::new();
        for (i, e) in raw.experts.into_iter().enumerate() {
            let calib = e.calib.as_deref().map(resolve);
            // default: the task the expert's head was trained for, else the calibration stem
            let head_task = || {
                let h = e
                    .head
                    .as_deref()
                    .map(resolve)
                    .unwrap_or_else(|| resolve(&e.model));
                pmq_eval::Head::load(&h).ok().map(|h| h.task)
            };
            let task = match (e.task.clone().or_else(head_task), &calib) {
                (Some(t), _) => t,
                (None, Some(c)) => c
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| format!("task{}", i + 1)),
                (None, None) => format!("task{}", i + 1),
            };
            if task.is_empty() || task.contains('=') {
                bail!("experts[{i}]: task name {task:?} must be non-empty and without '='");
            }
            experts.push(Expert {
                model: resolve(&e.model),
                task,
                calib,
                eval: e.eval.as_deref().map(resolve),
                head: e.head.as_deref().map(resolve),
            });
        }
        let mut seen = std::collections::HashSet::new();
        for e in &experts {
            if !seen.insert(e.task.clone()) {
                bail!(
                    "task {:?} is given to two experts; name them apart with `task:`",
                    e.task
                );
            }
        }
        let (merge_flags, mergekit_base) = merge_section(&raw.merge, &experts, resolve)?;
        let base = match (raw.base.as_deref().map(resolve), mergekit_base) {
            (Some(b), Some(m)) if !mergekit::same_path(&b, &m) => bail!(
                "`base` is {} but the mergekit configuration's base_model is {}",
                b.display(),
                m.display()
            ),
            (Some(b), _) | (None, Some(b)) => b,
            (None, None) => bail!("no base model: set `base:` (or mergekit's base_model)"),
        };
        let quantize_flags = raw
            .quantize
            .as_ref()
            .map(|q| flags_of(q, "quantize"))
            .transpose()?;
        if quantize_flags.is_none() && raw.outputs.as_ref().is_some_and(|o| !o.is_empty()) {
            bail!("`outputs` lists quantized outputs but there is no `quantize` section");
        }
        let outputs = raw
            .outputs
            .unwrap_or_else(|| vec!["fake".into()])
            .iter()
            .map(|o| parse_output(o))
            .collect::<Result<Vec<_>>>()?;
        if let Some(q) = &quantize_flags {
            if q.iter().any(|f| f == "--grid") {
                bail!("quantize.grid: choose a GGUF grid through `outputs: [gguf:q4_0]` instead");
            }
            if outputs.is_empty() {
                bail!("`outputs` is empty: nothing to write for the quantized model");
            }
        }
        let evaluate = raw.evaluate.map(|e| Evaluate {
            max_examples: e.max_examples,
            max_seq_len: e.max_seq_len,
            batch_size: e.batch_size.unwrap_or(32),
        });
        if evaluate.is_some() && experts.iter().all(|e| e.eval.is_none()) {
            bail!("`evaluate` is set but no expert has `eval` data");
        }
        Ok(Self {
            path: path.to_path_buf(),
            out: raw.out.as_deref().map(resolve),
            base,
            experts,
            merge_flags,
            quantize_flags,
            outputs,
            evaluate,
        })
    }
}

fn parse_output(s: &str) -> Result<Output> {
    Ok(match s {
        "fake" => Output::Fake,
        "gptq" => Output::Gptq,
        "gguf" => Output::Gguf("q4_0".into()),
        _ => match s.strip_prefix("gguf:") {
            Some(g @ ("q4_0" | "q4_1" | "q8_0")) => Output::Gguf(g.into()),
            _ => bail!("unknown output {s:?} (fake, gptq, gguf, gguf:q4_0|q4_1|q8_0)"),
        },
    })
}

/// The merge section as `pmq merge` flags (and mergekit's base_model, if any).
fn merge_section(
    v: &Value,
    experts: &[Expert],
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<(Vec<String>, Option<PathBuf>)> {
    let Some(m) = v.as_mapping() else {
        bail!("`merge` must be a mapping (method: …, or mergekit's merge_method: …)");
    };
    let get = |k: &str| m.get(Value::String(k.into()));
    let mergekit_doc = if let Some(file) = get("mergekit") {
        if m.len() != 1 {
            bail!("merge.mergekit names a mergekit file; give no other merge keys beside it");
        }
        let p = resolve(Path::new(file.as_str().ok_or_else(|| {
            anyhow::anyhow!("merge.mergekit: expected a file path")
        })?));
        let text = std::fs::read_to_string(&p)
            .with_context(|| format!("reading the mergekit configuration {}", p.display()))?;
        let doc: Value =
            serde_yaml::from_str(&text).with_context(|| format!("{} is not YAML", p.display()))?;
        let base_dir = p.parent().unwrap_or(Path::new(".")).to_path_buf();
        Some((doc, base_dir))
    } else if get("merge_method").is_some() {
        Some((v.clone(), PathBuf::new()))
    } else {
        None
    };
    if let Some((doc, dir)) = mergekit_doc {
        let resolve_mk = |s: &str| {
            let p = Path::new(s);
            if dir.as_os_str().is_empty() {
                resolve(p)
            } else if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            }
        };
        let t = mergekit::translate(&doc, &resolve_mk)?;
        let ours: Vec<&PathBuf> = experts.iter().map(|e| &e.model).collect();
        // one to one: every expert merged exactly once
        let matched = t.models.len() == ours.len()
            && ours.iter().all(|o| {
                t.models
                    .iter()
                    .filter(|m| mergekit::same_path(m, o))
                    .count()
                    == 1
            });
        if !matched {
            bail!(
                "the mergekit configuration merges {:?}, the recipe's experts are {:?}: list the same models (each expert needs its calibration data in `experts`)",
                t.models, ours
            );
        }
        return Ok((t.flags, t.base));
    }
    let section: BTreeMap<String, Value> =
        serde_yaml::from_value(v.clone()).context("merge: expected `key: value` pairs")?;
    if !section.contains_key("method") {
        bail!("merge: no `method` (average, task-arithmetic, ties, dare, wudi, regmean) and no mergekit merge_method");
    }
    Ok((flags_of(&section, "merge")?, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Recipe> {
        let raw: RawRecipe = serde_yaml::from_str(yaml)?;
        Recipe::from_raw(raw, Path::new("/r/recipe.yaml"), &|p: &Path| {
            Path::new("/r").join(p)
        })
    }

    #[test]
    fn sections_become_the_commands_flags() {
        let r = load(
            "base: b\nexperts:\n  - model: e1\n    calib: d/spam.jsonl\n  - model: e2\n    task: news\n    calib: d/n.jsonl\n    eval: d/n-test.jsonl\nmerge: {method: ties, lambda: 0.3, density: 0.2}\nquantize: {method: epmq, alpha: auto, group_size: 32, act_order: true, sym: false, alpha_grid: [0, 0.1]}\noutputs: [fake, gguf:q8_0]\nevaluate: {max_examples: 10}\n",
        )
        .unwrap();
        assert_eq!(r.base, PathBuf::from("/r/b"));
        assert_eq!(r.experts[0].task, "spam");
        assert_eq!(r.experts[1].task, "news");
        assert_eq!(r.experts[1].eval, Some(PathBuf::from("/r/d/n-test.jsonl")));
        assert_eq!(
            r.merge_flags.join(" "),
            "--density 0.2 --lambda 0.3 --method ties"
        );
        assert_eq!(
            r.quantize_flags.unwrap().join(" "),
            "--act-order --alpha auto --alpha-grid 0 --alpha-grid 0.1 --group-size 32 --method epmq"
        );
        assert_eq!(r.outputs, [Output::Fake, Output::Gguf("q8_0".into())]);
    }

    #[test]
    fn a_mergekit_merge_section_is_translated_and_checked_against_the_experts() {
        let r = load(
            "experts:\n  - model: e1\n    calib: c1.jsonl\n  - model: e2\n    calib: c2.jsonl\nmerge:\n  merge_method: task_arithmetic\n  base_model: b\n  models:\n    - model: e1\n      parameters: {weight: 0.3}\n    - model: e2\n      parameters: {weight: 0.3}\n",
        )
        .unwrap();
        assert_eq!(r.base, PathBuf::from("/r/b"));
        assert_eq!(
            r.merge_flags.join(" "),
            "--method task-arithmetic --lambda 0.3"
        );
        let e = load(
            "experts:\n  - model: e1\n    calib: c1.jsonl\nmerge:\n  merge_method: linear\n  models:\n    - model: other\n      parameters: {weight: 1}\n",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("list the same models"), "{e:#}");
    }

    #[test]
    fn bad_recipes_are_refused_with_the_reason() {
        let cases = [
            ("base: b\nexperts: []\nmerge: {method: average}\n", "no expert"),
            ("base: b\nexperts:\n  - model: e\nmerge: {lambda: 1}\n", "no `method`"),
            ("base: b\nexperts:\n  - model: e\nmerge: {method: average}\nquantize: {method: gptq, out: x}\n", "set by the recipe"),
            ("base: b\nexperts:\n  - model: e\nmerge: {method: average}\nquantize: {method: rtn}\noutputs: [onnx]\n", "unknown output"),
            ("base: b\nexperts:\n  - model: e\nmerge: {method: average}\nevaluate: {}\n", "no expert has `eval`"),
            ("base: b\nexperts:\n  - model: e\n    task: a\n  - model: f\n    task: a\nmerge: {method: average}\n", "two experts"),
            ("experts:\n  - model: e\nmerge: {method: average}\n", "no base model"),
            ("base: b\nexperts:\n  - model: e\nmerge: {method: average}\nquantize: {method: gptq, grid: q4_0}\n", "gguf:q4_0"),
            ("base: b\nexperts:\n  - model: e\nmerge: {method: average}\noutputs: [gguf]\n", "no `quantize` section"),
            ("experts:\n  - model: e1\n  - model: e2\nmerge:\n  merge_method: task_arithmetic\n  base_model: b\n  models:\n    - model: e1\n      parameters: {weight: 1}\n    - model: e1\n      parameters: {weight: 1}\n", "list the same models"),
        ];
        for (yaml, needle) in cases {
            let e = format!("{:#}", load(yaml).unwrap_err());
            assert!(e.contains(needle), "{yaml}: {e}");
        }
        let e = serde_yaml::from_str::<RawRecipe>("base: b\nexperts: []\nmerge: {}\ntypo: 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("typo"), "{e}");
    }
}
