//! Text classification data: JSONL lines `{"text": …, "label": …}`, read into the testbed's
//! task type so that [`crate::evaluate`] scores it and pmq-finetune trains on it like any
//! testbed task. For training the classes are the file's distinct labels (integers in numeric
//! order, named by their decimals; or names in sorted order); for evaluation `label` is one of
//! the head's class names, an integer naming one, or else a class index.

use super::integer_classes;
use crate::Head;
use anyhow::{bail, Context, Result};
use pmq_testbed::{Example, TaskData};
use std::path::Path;

/// `(line, text, label)` of every line of a labelled JSONL file.
fn read_lines(path: &Path, what: &str) -> Result<Vec<(usize, String, serde_json::Value)>> {
    let lines = super::jsonl::read_lines(path, what)?;
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

/// A training task named `task` from `path`; its classes are the file's distinct labels
/// (integers in numeric order, written as their decimal names, or names in sorted order).
pub fn read_train_task(task: &str, path: &Path) -> Result<TaskData> {
    let lines = read_lines(path, "training file")?;
    // each line's class name, integers as decimals; all integers or all names
    let mut ints = None;
    let mut keys: Vec<(String, Option<u64>)> = Vec::with_capacity(lines.len());
    for (n, _, l) in &lines {
        let (key, int) = match l {
            serde_json::Value::String(s) => (s.clone(), None),
            other => match other.as_u64() {
                Some(i) => (i.to_string(), Some(i)),
                None => bail!(
                    "{}:{n}: label {other} is neither a class name nor a non-negative integer",
                    path.display()
                ),
            },
        };
        if *ints.get_or_insert(int.is_some()) != int.is_some() {
            bail!(
                "{}:{n}: label {l} mixes integer labels with class names",
                path.display()
            );
        }
        keys.push((key, int));
    }
    let labels = super::sorted_classes(keys.iter().map(|k| k.0.clone()));
    if labels.len() < 2 {
        bail!(
            "{}: a classifier needs at least 2 classes, found {labels:?}",
            path.display()
        );
    }
    let index: std::collections::HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let train = lines
        .iter()
        .zip(&keys)
        .map(|((_, text, _), (key, _))| Example {
            text: text.clone(),
            label: index[key.as_str()],
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
pub fn read_test_task(task: &str, path: &Path, head: &Head) -> Result<TaskData> {
    let lines = read_lines(path, "evaluation file")?;
    let mut test = Vec::with_capacity(lines.len());
    for (line_no, text, label) in lines {
        let label = match &label {
            serde_json::Value::String(s) => {
                head.labels.iter().position(|l| l == s).with_context(|| {
                    format!(
                        "{}:{line_no}: label {s:?} is not one of the head's classes {:?}",
                        path.display(),
                        head.labels
                    )
                })?
            }
            // an integer names a class trained from integer labels ("3"); for a head with
            // named classes it is an index
            n => match n.as_u64() {
                Some(i) => match head.labels.iter().position(|l| l.parse::<u64>() == Ok(i)) {
                    Some(p) => p,
                    None if integer_classes(&head.labels) => bail!(
                        "{}:{line_no}: label {i} is not one of the head's classes {:?}",
                        path.display(),
                        head.labels
                    ),
                    None if (i as usize) < head.labels.len() => i as usize,
                    None => bail!(
                        "{}:{line_no}: label {i} is neither a class of the head {:?} nor an index below {}",
                        path.display(),
                        head.labels,
                        head.labels.len()
                    ),
                },
                None => bail!(
                    "{}:{line_no}: label {n} is neither a class name nor a non-negative integer",
                    path.display()
                ),
            },
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
