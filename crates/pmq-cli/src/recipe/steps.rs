//! The steps of a recipe and their directory:
//!
//! ```text
//! OUT/recipe.json          the resolved recipe (paths absolute, sections as flags)
//! OUT/merged/              the merged model (pmq merge; merge_report.json inside)
//! OUT/quantized/           pmq quantize's output: fake/ and/or gptq/ (pmq_report.json inside)
//! OUT/gguf-q4_0/           GGUF outputs, one directory per grid (model.gguf; with evaluation
//!                          also fake/, the same codes as safetensors)
//! OUT/accuracy.{json,md}   per-task accuracy of the experts, the merged and quantized models
//! OUT/run.json             what ran, what was skipped, seconds per step
//! OUT/.pmq-run/state.json  per step, the fingerprint of its inputs and settings
//! ```
//!
//! A step's fingerprint hashes its command line, the sizes and modification times of its input
//! files and the fingerprints of the steps it reads; a rerun skips a step whose output exists
//! with the same fingerprint, so editing the quantization section reruns quantization and
//! evaluation but not the merge. A quantization killed part-way continues from its per-block
//! checkpoint (`pmq quantize --resume`) when rerun with the same fingerprint.

use super::schema::{Output, Recipe};
use crate::merge_cmd::MergeArgs;
use crate::quantize_cmd::QuantizeArgs;
use anyhow::{bail, Context, Result};
use clap::Parser;
use pmq_eval::tasks::{DataKind, TestTask};
use pmq_eval::{evaluate_tasks, EvalOptions, EvalTask, Head, TaskAccuracy};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
#[command(no_binary_name = true)]
struct MergeCli {
    #[command(flatten)]
    args: MergeArgs,
}

#[derive(Parser)]
#[command(no_binary_name = true)]
struct QuantizeCli {
    #[command(flatten)]
    args: QuantizeArgs,
}

/// Per step: the fingerprint of its finished output, and of a run that started.
#[derive(Default, Serialize, Deserialize)]
struct State {
    done: BTreeMap<String, String>,
    started: BTreeMap<String, String>,
}

/// One step as `run.json` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    pub step: String,
    pub skipped: bool,
    pub seconds: f64,
    pub out: PathBuf,
    pub command: Vec<String>,
}

/// What `pmq run` did.
#[derive(Debug, Serialize)]
pub struct RunSummary {
    pub out: PathBuf,
    pub steps: Vec<StepRecord>,
    pub accuracy: Option<PathBuf>,
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Path, size and modification time of a file, or of every file under a directory (sorted;
/// an unreadable entry is an error, not skipped).
fn file_facts(path: &Path, h: &mut Sha256) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("{} not found", path.display()))?;
    if meta.is_dir() {
        let mut entries = std::fs::read_dir(path)
            .with_context(|| format!("listing {}", path.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()
            .with_context(|| format!("listing {}", path.display()))?;
        entries.sort();
        for e in entries {
            file_facts(&e, h)?;
        }
    } else {
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        h.update(format!("{}\0{}\0{mtime}\0", path.display(), meta.len()).as_bytes());
    }
    Ok(())
}

/// A digest of what a step wrote (every file under `output`), so that a changed or damaged
/// output is recomputed and the steps reading it too.
fn output_digest(output: &Path) -> Result<String> {
    fingerprint(&[], &[output], &[])
}

/// The fingerprint of a step: its command, its input files, the steps it depends on.
fn fingerprint(command: &[String], inputs: &[&Path], upstream: &[&str]) -> Result<String> {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    for c in command {
        h.update(c.as_bytes());
        h.update([0]);
    }
    for p in inputs {
        file_facts(p, &mut h)?;
    }
    for u in upstream {
        h.update(u.as_bytes());
    }
    Ok(h.finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect())
}

struct Runner<'a> {
    out: &'a Path,
    state: State,
    force: bool,
    steps: Vec<StepRecord>,
}

impl Runner<'_> {
    fn state_path(&self) -> PathBuf {
        self.out.join(".pmq-run").join("state.json")
    }

    fn save(&self) -> Result<()> {
        pmq_io::write_file_atomic(
            &self.state_path(),
            serde_json::to_string_pretty(&self.state)?.as_bytes(),
        )?;
        Ok(())
    }

    /// Runs `work` unless the step finished with fingerprint `fp` and its output is as it left
    /// it; `work` gets whether an interrupted run of the same fingerprint started before.
    /// Returns the digest of the output, which the steps reading it fold into theirs.
    fn step(
        &mut self,
        name: &str,
        fp: &str,
        output: &Path,
        command: Vec<String>,
        work: impl FnOnce(bool) -> Result<()>,
    ) -> Result<String> {
        let current = output
            .exists()
            .then(|| output_digest(output))
            .transpose()?
            .map(|d| format!("{fp}:{d}"));
        let done = current.is_some() && self.state.done.get(name) == current.as_ref();
        let t = Instant::now();
        if done && !self.force {
            tracing::info!(step = name, "finished before with the same inputs: skipped");
        } else {
            let resumable = self.state.started.get(name).map(String::as_str) == Some(fp);
            self.state.done.remove(name);
            self.state.started.insert(name.into(), fp.into());
            self.save()?;
            tracing::info!(step = name, "running");
            work(resumable && !self.force).with_context(|| format!("step `{name}`"))?;
            let written = format!("{fp}:{}", output_digest(output)?);
            self.state.done.insert(name.into(), written);
            self.save()?;
        }
        self.steps.push(StepRecord {
            step: name.into(),
            skipped: done && !self.force,
            seconds: t.elapsed().as_secs_f64(),
            out: output.to_path_buf(),
            command,
        });
        Ok(self.state.done[name].clone())
    }
}

/// Runs (or resumes) a recipe into `out`.
pub fn run(recipe: &Recipe, out: &Path, force: bool) -> Result<RunSummary> {
    let mut inputs: Vec<PathBuf> = vec![recipe.base.clone(), recipe.path.clone()];
    for e in &recipe.experts {
        inputs.push(e.model.clone());
        inputs.extend(e.calib.iter().cloned());
        inputs.extend(e.eval.iter().cloned());
    }
    pmq_io::check_output_location(out, &inputs)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let state_path = out.join(".pmq-run").join("state.json");
    let state: State = match std::fs::read_to_string(&state_path) {
        Ok(t) => serde_json::from_str(&t).unwrap_or_default(),
        Err(_) => State::default(),
    };
    let mut r = Runner {
        out,
        state,
        force,
        steps: Vec::new(),
    };
    pmq_io::write_file_atomic(
        &out.join("recipe.json"),
        serde_json::to_string_pretty(&resolved(recipe))?.as_bytes(),
    )?;

    // merge
    let merged = out.join("merged");
    let mut cmd: Vec<String> = vec!["--base".into(), s(&recipe.base)];
    for e in &recipe.experts {
        cmd.extend(["--expert".into(), s(&e.model)]);
    }
    cmd.extend(recipe.merge_flags.iter().cloned());
    let regmean = recipe
        .merge_flags
        .windows(2)
        .any(|w| w == ["--method", "regmean"]);
    if regmean {
        for e in &recipe.experts {
            let Some(c) = &e.calib else {
                bail!(
                    "RegMean merges from each expert's data: expert {} has no `calib`",
                    e.model.display()
                );
            };
            cmd.extend(["--calib".into(), format!("{}={}", e.task, s(c))]);
        }
    }
    cmd.extend(["--out".into(), s(&merged), "--overwrite".into()]);
    let mut merge_inputs: Vec<&Path> = vec![&recipe.base];
    merge_inputs.extend(recipe.experts.iter().map(|e| e.model.as_path()));
    if regmean {
        merge_inputs.extend(recipe.experts.iter().filter_map(|e| e.calib.as_deref()));
    }
    // every command line is checked before the first step runs
    let merge_args = MergeCli::try_parse_from(&cmd)
        .map_err(|e| anyhow::anyhow!("merge: {e}"))?
        .args;
    let quantize_jobs = quantize_jobs(recipe, out, &merged)?;
    for job in &quantize_jobs {
        QuantizeCli::try_parse_from(&job.cmd).map_err(|e| anyhow::anyhow!("quantize: {e}"))?;
    }
    let merge_fp = fingerprint(&cmd, &merge_inputs, &[])?;
    let merge_out = r.step("merge", &merge_fp, &merged, cmd, |_| {
        crate::merge_cmd::run(merge_args)
    })?;

    // quantize: the affine grid once (fake and/or gptq), each GGUF grid once
    let mut evaluated: Vec<(String, PathBuf, String)> =
        vec![("FP merged".into(), merged.clone(), merge_out.clone())];
    let calib: Vec<&Path> = recipe
        .experts
        .iter()
        .filter_map(|e| e.calib.as_deref())
        .collect();
    for job in quantize_jobs {
        let fp = fingerprint(&job.cmd, &calib, &[&merge_out])?;
        let cmd = job.cmd.clone();
        let written = r.step(&job.name, &fp, &job.dir, job.cmd, move |resume| {
            let mut cmd = cmd;
            if resume {
                cmd.push("--resume".into());
            }
            let parsed =
                QuantizeCli::try_parse_from(&cmd).map_err(|e| anyhow::anyhow!("quantize: {e}"))?;
            crate::quantize_cmd::run(parsed.args)
        })?;
        if let Some(dir) = job.evaluable {
            evaluated.push((job.label, dir, written));
        }
    }

    // evaluate
    let mut accuracy = None;
    if let Some(ev) = &recipe.evaluate {
        let mut tasks: Vec<TestTask> = Vec::new();
        let mut files: Vec<&Path> = Vec::new();
        let mut experts = Vec::new();
        for e in &recipe.experts {
            let Some(eval) = e.eval.as_deref() else {
                continue;
            };
            let head_path = e.head.as_deref().unwrap_or(&e.model);
            // text-to-text is scored by the model's own decoding; classification by a head
            let head = if DataKind::detect(eval)? == DataKind::TextToText {
                if let Some(h) = &e.head {
                    bail!(
                        "expert {}: `eval` holds text-to-text pairs, scored by exact match of the \
                         model's decoding; drop `head: {}`",
                        e.model.display(),
                        h.display()
                    );
                }
                None
            } else {
                files.push(head_path);
                Some(Head::load(head_path).with_context(|| {
                    format!(
                        "the head of expert {} (evaluation scores each classification task with its expert's head: train experts with `pmq finetune`, or give `head:`)",
                        e.model.display()
                    )
                })?)
            };
            tasks.push(TestTask::read(&e.task, eval, head)?);
            files.extend([eval, e.model.as_path()]);
            experts.push(e.model.clone());
        }
        let heads: Vec<Head> = tasks.iter().filter_map(TestTask::head).cloned().collect();
        let json_path = out.join("accuracy.json");
        let mut cmd: Vec<String> = evaluated
            .iter()
            .map(|(l, p, _)| format!("{l}={}", s(p)))
            .collect();
        cmd.push(format!(
            "{:?}",
            (ev.max_examples, ev.max_seq_len, ev.batch_size)
        ));
        let ups: Vec<&str> = evaluated.iter().map(|(_, _, f)| f.as_str()).collect();
        let fp = fingerprint(&cmd, &files, &ups)?;
        let max_seq_len =
            crate::eval_cmd::eval_max_seq_len(&heads, ev.max_seq_len, "evaluate.max_seq_len")?;
        let opts = EvalOptions {
            max_examples: ev.max_examples,
            max_seq_len,
            batch_size: ev.batch_size,
            max_new_tokens: None,
        };
        r.step("evaluate", &fp, &json_path, cmd, |_| {
            let mut rows: Vec<(String, Vec<TaskAccuracy>)> = Vec::new();
            let mut stl = Vec::new();
            for (t, e) in tasks.iter().zip(&experts) {
                stl.extend(evaluate_tasks(e, &[t.as_eval()], &opts)?);
            }
            rows.push(("Fine-tuned (each expert on its task)".into(), stl));
            let all: Vec<EvalTask> = tasks.iter().map(TestTask::as_eval).collect();
            for (label, dir, _) in &evaluated {
                rows.push((label.clone(), evaluate_tasks(dir, &all, &opts)?));
            }
            write_accuracy(out, &rows)
        })?;
        accuracy = Some(json_path);
    }
    let summary = RunSummary {
        out: out.to_path_buf(),
        steps: r.steps,
        accuracy,
    };
    pmq_io::write_file_atomic(
        &out.join("run.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    Ok(summary)
}

/// One `pmq quantize` run of a recipe.
struct QuantizeJob {
    name: String,
    dir: PathBuf,
    cmd: Vec<String>,
    label: String,
    /// The directory `pmq eval` can read (fake-quant or GPTQ), if any.
    evaluable: Option<PathBuf>,
}

/// The quantization runs of a recipe: the affine grid once (fake and/or gptq), each GGUF grid
/// once (with its fake-quant twin when the recipe evaluates).
fn quantize_jobs(recipe: &Recipe, out: &Path, merged: &Path) -> Result<Vec<QuantizeJob>> {
    let Some(qflags) = &recipe.quantize_flags else {
        return Ok(Vec::new());
    };
    let mut jobs: Vec<(String, PathBuf, &str, Option<String>)> = Vec::new();
    let fake = recipe.outputs.contains(&Output::Fake);
    let gptq = recipe.outputs.contains(&Output::Gptq);
    let quantized = out.join("quantized");
    match (fake, gptq) {
        (true, true) => jobs.push(("quantize".into(), quantized.clone(), "both", None)),
        (true, false) => jobs.push(("quantize".into(), quantized.join("fake"), "fake", None)),
        (false, true) => jobs.push(("quantize".into(), quantized.join("gptq"), "gptq", None)),
        (false, false) => {}
    }
    for o in &recipe.outputs {
        if let Output::Gguf(grid) = o {
            let format = if recipe.evaluate.is_some() {
                "gguf-fake"
            } else {
                "gguf"
            };
            jobs.push((
                format!("gguf-{grid}"),
                out.join(format!("gguf-{grid}")),
                format,
                Some(grid.clone()),
            ));
        }
    }
    let mut out_jobs = Vec::new();
    for (name, dir, format, grid) in jobs {
        let mut cmd: Vec<String> = vec!["--model".into(), s(merged)];
        for e in &recipe.experts {
            cmd.extend(["--expert".into(), s(&e.model)]);
            if let Some(c) = &e.calib {
                cmd.extend(["--calib".into(), format!("{}={}", e.task, s(c))]);
            }
        }
        cmd.extend(qflags.iter().cloned());
        if let Some(g) = &grid {
            cmd.extend(["--grid".into(), g.clone()]);
        }
        cmd.extend([
            "--format".into(),
            format.into(),
            "--out".into(),
            s(&dir),
            "--overwrite".into(),
        ]);
        if cmd.iter().filter(|a| *a == "--calib").count() != recipe.experts.len()
            && !qflags.windows(2).any(|w| w == ["--method", "rtn"])
        {
            bail!("quantization needs calibration data: give every expert a `calib`");
        }
        let label = match &grid {
            Some(g) => format!("{} {g} (GGUF grid)", method_label(qflags)),
            None => method_label(qflags),
        };
        let evaluable = match format {
            "both" | "gguf-fake" => Some(dir.join("fake")),
            "gguf" => None,
            _ => Some(dir.clone()),
        };
        out_jobs.push(QuantizeJob {
            name,
            dir,
            cmd,
            label,
            evaluable,
        });
    }
    Ok(out_jobs)
}

fn method_label(flags: &[String]) -> String {
    let get = |k: &str| flags.windows(2).find(|w| w[0] == k).map(|w| w[1].clone());
    let method = get("--method").unwrap_or_else(|| "?".into());
    let bits = get("--bits").unwrap_or_else(|| "4".into());
    match (method.as_str(), get("--alpha")) {
        ("epmq", Some(a)) => format!("E-PMQ {bits}-bit (α {a})"),
        ("epmq", None) => format!("E-PMQ {bits}-bit"),
        (m, _) => format!("{} {bits}-bit", m.to_uppercase()),
    }
}

fn resolved(r: &Recipe) -> serde_json::Value {
    serde_json::json!({
        "recipe": r.path,
        "base": r.base,
        "experts": r.experts.iter().map(|e| serde_json::json!({
            "model": e.model, "task": e.task, "calib": e.calib, "eval": e.eval, "head": e.head,
        })).collect::<Vec<_>>(),
        "merge": r.merge_flags,
        "quantize": r.quantize_flags,
        "outputs": r.outputs.iter().map(|o| format!("{o:?}")).collect::<Vec<_>>(),
    })
}

/// `accuracy.json` (rows with per-task accuracies and per-example outcomes) and `accuracy.md`.
fn write_accuracy(out: &Path, rows: &[(String, Vec<TaskAccuracy>)]) -> Result<()> {
    let mean =
        |a: &[TaskAccuracy]| a.iter().map(|t| t.accuracy).sum::<f64>() / a.len().max(1) as f64;
    let json: Vec<_> = rows
        .iter()
        .map(|(l, a)| serde_json::json!({"model": l, "tasks": a, "average": mean(a)}))
        .collect();
    pmq_io::write_file_atomic(
        &out.join("accuracy.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    let tasks: Vec<&str> = rows[0].1.iter().map(|t| t.task.as_str()).collect();
    let mut md = format!(
        "| Model | {} | Avg |\n|---|{}---|\n",
        tasks.join(" | "),
        "---|".repeat(tasks.len())
    );
    for (label, acc) in rows {
        let cols: Vec<String> = tasks
            .iter()
            .map(|t| {
                acc.iter()
                    .find(|a| a.task == *t)
                    .map_or("–".into(), |a| format!("{:.1}", 100.0 * a.accuracy))
            })
            .collect();
        md.push_str(&format!(
            "| {label} | {} | **{:.1}** |\n",
            cols.join(" | "),
            100.0 * mean(acc)
        ));
    }
    pmq_io::write_file_atomic(&out.join("accuracy.md"), md.as_bytes())?;
    Ok(())
}
