//! The `--data NAME=PATH` flags of `pmq finetune` and `pmq eval`: a user's task data, read by
//! [`pmq_eval::tasks`] (text classification JSONL, an image folder per class, text-to-text
//! JSONL).

use anyhow::{bail, Result};
use std::path::PathBuf;

/// One `--data NAME=PATH` flag.
#[derive(Clone, Debug, PartialEq)]
pub struct DataSpec {
    pub task: String,
    pub path: PathBuf,
}

/// The `--data NAME=PATH` flags, each name once.
pub fn parse_data_flags(flags: &[String]) -> Result<Vec<DataSpec>> {
    let mut out: Vec<DataSpec> = Vec::new();
    for f in flags {
        let Some((task, path)) = f
            .split_once('=')
            .filter(|(t, p)| !t.is_empty() && !p.is_empty())
        else {
            bail!("--data {f:?} must be NAME=PATH with both parts non-empty");
        };
        if out.iter().any(|o| o.task == task) {
            bail!("--data: task {task:?} is given twice");
        }
        out.push(DataSpec {
            task: task.to_string(),
            path: PathBuf::from(path),
        });
    }
    Ok(out)
}
