//! A user's labelled data for text classification: JSONL lines `{"text": …, "label": …}`, read
//! into the testbed's task type so that `pmq_eval` scores it and `pmq_finetune` trains on it
//! like any testbed task. For evaluation `label` is one of the head's class names (or its
//! index); for training the classes are the distinct labels of the file (integers in numeric
//! order, names in sorted order).

use anyhow::{bail, Context, Result};
use pmq_eval::Head;
use pmq_testbed::{Example, TaskData};
use std::path::Path;

/// `(line, text, label)` of every line of a labelled JSONL file.
fn read_lines(path: &Path, what: &str) -> Result<Vec<(usize, String, serde_json::Value)>> {
    let lines = pmq_pipeline::calib::read_jsonl_lines(path, what)?;
    let mut out = Vec::with_capacity(lines.len());
    for (line_no, line) in lines {
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{line_no}: not a JSON object", path.display()))?;
        let Some(text) = v.get("text").and_then(|t| t.as_str()) else {
            bail!("{}:{line_no}: no string \"text\"", path.display());
        };
        match v.get("label") {
            Some(l @ (serde_json::Value::String(_) | serde_json::Value::Number(_))) => {
                out.push((line_no, text.to_string(), l.clone()))
            }
            _ => bail!(
                "{}:{line_no}: no \"label\" (a class name or index)",
                path.display()
            ),
        }
    }
    if out.is_empty() {
        bail!("{}: no labelled examples", path.display());
    }
    Ok(out)
}

/// A training task named `task` from `path`; its classes are the file's distinct labels.
pub fn read_train_task(task: &str, path: &Path) -> Result<TaskData> {
    let lines = read_lines(path, "training file")?;
    let ints: Option<Vec<u64>> = lines.iter().map(|(_, _, l)| l.as_u64()).collect();
    let labels: Vec<String> = match &ints {
        Some(v) => {
            let max = v.iter().copied().max().unwrap_or(0);
            (0..=max).map(|i| i.to_string()).collect()
        }
        None => {
            let mut names: Vec<String> = lines
                .iter()
                .map(|(n, _, l)| match l {
                    serde_json::Value::String(s) => Ok(s.clone()),
                    other => bail!(
                        "{}:{n}: label {other} mixes indices with class names",
                        path.display()
                    ),
                })
                .collect::<Result<_>>()?;
            names.sort();
            names.dedup();
            names
        }
    };
    if labels.len() < 2 {
        bail!(
            "{}: a classifier needs at least 2 classes, found {labels:?}",
            path.display()
        );
    }
    let train = lines
        .iter()
        .map(|(_, text, l)| Example {
            text: text.clone(),
            label: match l {
                serde_json::Value::String(s) => labels.iter().position(|x| x == s).expect("listed"),
                n => n.as_u64().expect("integer labels") as usize,
            },
        })
        .collect();
    Ok(TaskData {
        name: task.to_string(),
        labels,
        train,
        calib: Vec::new(),
        test: Vec::new(),
        stats: Default::default(),
    })
}

/// The test examples of `path` for a task named `task`, labels checked against `head`.
pub fn read_task(task: &str, path: &Path, head: &Head) -> Result<TaskData> {
    let lines = read_lines(path, "evaluation file")?;
    let mut test = Vec::with_capacity(lines.len());
    for (line_no, text, label) in lines {
        let label = match Some(&label) {
            Some(serde_json::Value::String(s)) => {
                head.labels.iter().position(|l| l == s).with_context(|| {
                    format!(
                        "{}:{line_no}: label {s:?} is not one of the head's classes {:?}",
                        path.display(),
                        head.labels
                    )
                })?
            }
            Some(serde_json::Value::Number(n)) => match n.as_u64() {
                Some(i) if (i as usize) < head.labels.len() => i as usize,
                _ => bail!(
                    "{}:{line_no}: label {n} is not a class index below {}",
                    path.display(),
                    head.labels.len()
                ),
            },
            Some(other) => bail!(
                "{}:{line_no}: label {other} is neither a class name nor an index",
                path.display()
            ),
            None => bail!("{}:{line_no}: no label", path.display()),
        };
        test.push(Example { text, label });
    }
    Ok(TaskData {
        name: task.to_string(),
        labels: head.labels.clone(),
        train: Vec::new(),
        calib: Vec::new(),
        test,
        stats: Default::default(),
    })
}
