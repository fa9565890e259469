//! `pmq eval`: test accuracy of a model directory (HF or pmq GPTQ checkpoint) on testbed tasks
//! or the user's own (`--data`: text or image classification with the head of its expert,
//! text-to-text by exact match); prints a per-task table.

use anyhow::{bail, Context, Result};
use clap::Args;
use pmq_eval::tasks::TestTask;
use pmq_eval::{evaluate_tasks, EvalOptions, EvalTask, Head};
use pmq_testbed::{default_cache_dir, load_task, task_names, SplitConfig};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The model (HF directory or pmq GPTQ checkpoint): BERT for text classification, a CLIP
    /// vision tower for images, T5 for text-to-text.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Testbed cache directory [default: $PMQ_CACHE, else $XDG_CACHE_HOME/pmq, else ~/.cache/pmq].
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// TASK=HEAD: a classification task and its head (an expert directory or a
    /// pmq_head.safetensors file); repeat. Text-to-text tasks (--data) need none.
    #[arg(long = "task", value_name = "TASK=HEAD")]
    tasks: Vec<String>,
    /// Evaluate only the first N test examples of each task.
    #[arg(long, value_name = "N", value_parser = crate::flag_values::positive)]
    max_examples: Option<usize>,
    /// Tokenizer truncation length [default: the one the heads were trained with, else 128].
    #[arg(long, value_name = "N", value_parser = crate::flag_values::positive)]
    max_seq_len: Option<usize>,
    #[arg(long, default_value_t = 32, value_parser = crate::flag_values::positive)]
    batch_size: usize,
    /// Text-to-text: cut decoding after N tokens and compare the cut output [default: one step
    /// more than the longest tokenized target, and the model must stop within it].
    #[arg(long, value_name = "N", value_parser = crate::flag_values::positive)]
    max_new_tokens: Option<usize>,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Your own test data: TASK=PATH; repeat. PATH is a JSONL file of {"text", "label"} lines
    /// (a label is one of the head's classes, or its index), a directory with one folder of
    /// images per class (a CLIP model), or a JSONL file of {"input", "target"} lines (a T5
    /// model, scored by exact match of its greedy decoding; no --task needed). Tasks without
    /// --data are the testbed's.
    #[arg(long = "data", value_name = "TASK=PATH")]
    data: Vec<String>,
}

fn parse_pair(s: &str, own: &[(String, PathBuf)]) -> Result<(String, PathBuf)> {
    let (task, head) = s
        .split_once('=')
        .with_context(|| format!("--task {s:?}: expected TASK=HEAD_DIR"))?;
    if !task_names().contains(&task) && !own.iter().any(|(t, _)| t == task) {
        bail!(
            "unknown task {task:?}; the testbed's tasks are {} (your own data: --data {task}=FILE)",
            task_names().join(", ")
        );
    }
    Ok((task.to_string(), PathBuf::from(head)))
}

/// The truncation length to evaluate with: `given`, else the one every head was trained with
/// (heads that disagree are refused, naming `flag` to settle it), else 128.
pub fn eval_max_seq_len(heads: &[Head], given: Option<usize>, flag: &str) -> Result<usize> {
    let recorded: Vec<usize> = heads.iter().filter_map(|h| h.max_seq_len).collect();
    Ok(match given {
        Some(m) => m,
        None => match recorded.first() {
            Some(&m) if recorded.iter().all(|&x| x == m) => m,
            Some(_) => bail!(
                "the heads were trained with different max_seq_len values {recorded:?}; set {flag}"
            ),
            None => 128,
        },
    })
}

pub fn run(args: EvalArgs) -> Result<()> {
    let cache = match args.cache {
        Some(c) => c,
        None => default_cache_dir()?,
    };
    let own: Vec<(String, PathBuf)> = crate::labelled::parse_data_flags(&args.data)?
        .into_iter()
        .map(|s| (s.task, s.path))
        .collect();
    if args.tasks.is_empty() && own.is_empty() {
        bail!(
            "nothing to evaluate: give --task TASK=HEAD (and --data TASK=PATH for your own data)"
        );
    }
    if let Some(path) = &args.json {
        let mut inputs = vec![args.model.clone()];
        for s in &args.tasks {
            if let Some((_, head)) = s.split_once('=') {
                inputs.push(PathBuf::from(head));
            }
        }
        inputs.extend(crate::output::testbed_inputs(&cache));
        inputs.extend(own.iter().map(|(_, f)| f.clone()));
        crate::output::prepare_file(path, &inputs, "--json")?;
    }
    let mut loaded: Vec<TestTask> = Vec::new();
    for s in &args.tasks {
        let (name, head_path) = parse_pair(s, &own)?;
        let head = Head::load(&head_path)?;
        loaded.push(match own.iter().find(|(t, _)| *t == name) {
            Some((_, path)) => TestTask::read(&name, path, Some(head))?,
            None => TestTask::Text(
                load_task(&cache, &name, &SplitConfig::default()).with_context(|| {
                    format!(
                        "loading task {name:?} (fetch it with `pmq testbed --cache {} fetch`)",
                        cache.display()
                    )
                })?,
                head,
            ),
        });
    }
    for (t, path) in &own {
        if !args
            .tasks
            .iter()
            .any(|s| s.split_once('=').is_some_and(|(n, _)| n == t))
        {
            loaded.push(TestTask::read(t, path, None)?);
        }
    }
    let heads: Vec<Head> = loaded.iter().filter_map(TestTask::head).cloned().collect();
    let max_seq_len = eval_max_seq_len(&heads, args.max_seq_len, "--max-seq-len")?;
    let opts = EvalOptions {
        max_examples: args.max_examples,
        max_seq_len,
        batch_size: args.batch_size,
        max_new_tokens: args.max_new_tokens,
    };
    let tasks: Vec<EvalTask> = loaded.iter().map(TestTask::as_eval).collect();
    let results = evaluate_tasks(&args.model, &tasks, &opts)?;
    let mean = results.iter().map(|r| r.accuracy).sum::<f64>() / results.len().max(1) as f64;
    println!("{:<22} {:>9} {:>13}", "task", "accuracy", "correct/total");
    for r in &results {
        println!(
            "{:<22} {:>9.4} {:>13}",
            r.task,
            r.accuracy,
            format!("{}/{}", r.correct, r.total)
        );
    }
    println!("{:<22} {:>9.4}", "mean", mean);
    if let Some(path) = &args.json {
        let v = serde_json::json!({
            "model": args.model,
            "max_seq_len": max_seq_len,
            "max_examples": args.max_examples,
            "max_new_tokens": args.max_new_tokens,
            "tasks": results,
            "mean_accuracy": mean,
        });
        pmq_io::write_file_atomic(path, (serde_json::to_string_pretty(&v)? + "\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
