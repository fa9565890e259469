//! The tasks a benchmark runs on: the built-in testbed ([`Suite::testbed`]) or a user's suite
//! file ([`Suite::load`]) — one definition format, so that `pmq bench` measures E-PMQ on the
//! user's own experts and data exactly as on the testbed.
//!
//! ```yaml
//! base: models/base                 # the pre-trained model every expert was fine-tuned from
//! tasks:
//!   - name: spam
//!     train: data/spam-train.jsonl  # pmq fine-tunes this expert from base (BERT, CLIP or T5)
//!     calib: data/spam-calib.jsonl  # calibration data, as pmq quantize --calib
//!     test: data/spam-test.jsonl    # test data, as pmq eval --data
//!   - name: cars
//!     expert: experts/cars          # an expert fine-tuned elsewhere (any HF fine-tune of base)
//!     head: heads/cars              # optional: its head; else the expert's pmq_head.safetensors;
//!     train: data/cars-train        #   else a linear probe on the expert's embeddings of `train`
//!     calib: data/cars-calib        # a directory of images (CLIP calibration reads no labels)
//!     test: data/cars-test          # a folder of images per class
//! ```
//!
//! Paths are relative to the suite file. Test data is text classification JSONL, an image
//! folder per class, or text-to-text JSONL (T5, scored by exact match; no head, no train data
//! needed); all tasks of a suite are of one kind. `train` data also gives the "Pre-trained
//! (linear probe)" row (a head on the base model's embeddings).

use anyhow::{bail, Context, Result};
use pmq_eval::tasks::{text, DataKind, ImageTask, TextToTextTask};
use pmq_testbed::{load_task, write_calib_jsonl, SplitConfig, TaskData};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Training data of a task.
#[derive(Clone, Debug)]
pub enum Train {
    /// Text classification examples (the task's `train` split).
    Text(TaskData),
    /// Image classification folders.
    Images(ImageTask),
    /// Text-to-text pairs (T5).
    Pairs(TextToTextTask),
}

/// Where a task's test examples come from.
#[derive(Clone, Debug)]
pub enum TestSource {
    /// A testbed task's test split.
    Testbed(TaskData),
    /// A user's test data ([`pmq_eval::tasks::TestTask::read`]).
    File(PathBuf),
}

/// One task of a suite.
#[derive(Clone, Debug)]
pub struct SuiteTask {
    pub name: String,
    /// An expert fine-tuned elsewhere; `None`: pmq fine-tunes it from `train`.
    pub expert: Option<PathBuf>,
    /// The expert's head (a directory with `pmq_head.safetensors`, or the file).
    pub head: Option<PathBuf>,
    pub train: Option<Train>,
    /// Where `train` was read from (a suite file's tasks).
    pub train_path: Option<PathBuf>,
    pub calib: PathBuf,
    pub test: TestSource,
}

impl SuiteTask {
    /// The kind of the test data.
    pub fn kind(&self) -> Result<DataKind> {
        match &self.test {
            TestSource::Testbed(_) => Ok(DataKind::TextClassification),
            TestSource::File(p) => DataKind::detect(p),
        }
    }
}

/// A benchmark's tasks and the base model their experts share.
#[derive(Clone, Debug)]
pub struct Suite {
    pub base: PathBuf,
    pub tasks: Vec<SuiteTask>,
    /// What identifies a suite file's inputs (its text and the size and modification time of
    /// every file it names); `None` for the testbed, whose settings identify it.
    pub identity: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    base: PathBuf,
    tasks: Vec<RawTask>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    name: String,
    expert: Option<PathBuf>,
    head: Option<PathBuf>,
    train: Option<PathBuf>,
    calib: PathBuf,
    test: PathBuf,
}

impl Suite {
    /// The testbed tasks `names` (loaded with `split`) on the backbone `base`; their
    /// calibration splits are written to `calib_dir/<task>.jsonl` when missing.
    pub fn testbed(
        cache: &Path,
        base: &Path,
        names: &[String],
        split: &SplitConfig,
        calib_dir: &Path,
    ) -> Result<Self> {
        let mut tasks = Vec::new();
        for name in names {
            let t =
                load_task(cache, name, split).with_context(|| format!("loading task {name}"))?;
            let calib = calib_dir.join(format!("{name}.jsonl"));
            if !calib.is_file() {
                write_calib_jsonl(&t, &calib)?;
            }
            tasks.push(SuiteTask {
                name: name.clone(),
                expert: None,
                head: None,
                train: Some(Train::Text(t.clone())),
                train_path: None,
                calib,
                test: TestSource::Testbed(t),
            });
        }
        Ok(Self {
            base: base.to_path_buf(),
            tasks,
            identity: None,
        })
    }

    /// Reads a suite file (see the module documentation).
    pub fn load(path: &Path) -> Result<Self> {
        // the canonical path: `s.yaml` and `./s.yaml` are one suite
        let path = &std::fs::canonicalize(path)
            .with_context(|| format!("suite {} does not exist", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading suite {}", path.display()))?;
        let raw: RawSuite = serde_yaml::from_str(&text)
            .with_context(|| format!("{}: not a bench suite", path.display()))?;
        let resolve = |p: &Path| dir.join(p);
        let base = resolve(&raw.base);
        if !base.join("config.json").is_file() {
            bail!(
                "{}: base {} is not a model directory",
                path.display(),
                base.display()
            );
        }
        if raw.tasks.is_empty() {
            bail!("{}: no tasks", path.display());
        }
        let mut tasks: Vec<SuiteTask> = Vec::new();
        let mut facts = Sha256::new();
        facts.update(text.as_bytes());
        path_facts(&base, &mut facts)?;
        for t in raw.tasks {
            let name = t.name.clone();
            let at = || format!("{}: task {name:?}", path.display());
            if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
                bail!(
                    "{}: a task name is a directory name: no path separators",
                    at()
                );
            }
            if tasks.iter().any(|o| o.name == name) {
                bail!("{}: the name is used twice", at());
            }
            let (calib, test) = (resolve(&t.calib), resolve(&t.test));
            let expert = t.expert.as_deref().map(resolve);
            let head = t.head.as_deref().map(resolve);
            let kind = DataKind::detect(&test).with_context(at)?;
            let train_path = t.train.as_deref().map(resolve);
            let train = match &train_path {
                None => None,
                Some(p) => Some(match DataKind::detect(p).with_context(at)? {
                    DataKind::TextClassification => Train::Text(text::read_train_task(&name, p)?),
                    DataKind::ImageClassification => {
                        Train::Images(ImageTask::from_folder(&name, p)?)
                    }
                    DataKind::TextToText => Train::Pairs(TextToTextTask::from_jsonl(&name, p)?),
                }),
            };
            let train_kind = match &train {
                Some(Train::Text(_)) => Some(DataKind::TextClassification),
                Some(Train::Images(_)) => Some(DataKind::ImageClassification),
                Some(Train::Pairs(_)) => Some(DataKind::TextToText),
                None => None,
            };
            if let Some(k) = train_kind.filter(|&k| k != kind) {
                bail!(
                    "{}: `train` is {} data but `test` is {} data",
                    at(),
                    k.name(),
                    kind.name()
                );
            }
            if kind == DataKind::TextToText && head.is_some() {
                bail!(
                    "{}: text-to-text tasks are scored by exact match of the model's decoding: \
                     drop `head`",
                    at()
                );
            }
            match (&expert, &train) {
                (None, Some(_)) => {}
                (None, None) => bail!("{}: give `expert:` or `train:` data to fine-tune one", at()),
                (Some(e), _) if !e.join("config.json").is_file() => {
                    bail!("{}: expert {} is not a model directory", at(), e.display())
                }
                _ => {}
            }
            if let Some(first) = tasks.first() {
                let k0 = first.kind()?;
                if k0 != kind {
                    bail!(
                        "{}: {} test data, but task {:?} has {} data; a suite's tasks share one \
                         model family",
                        at(),
                        kind.name(),
                        first.name,
                        k0.name()
                    );
                }
            }
            for p in [Some(&calib), Some(&test), expert.as_ref(), head.as_ref()]
                .into_iter()
                .flatten()
            {
                path_facts(p, &mut facts)?;
            }
            if let Some(p) = &train_path {
                path_facts(p, &mut facts)?;
            }
            tasks.push(SuiteTask {
                name,
                expert,
                head,
                train,
                train_path,
                calib,
                test: TestSource::File(test),
            });
        }
        let digest: String = facts
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Self {
            base,
            tasks,
            identity: Some(serde_json::json!({
                "suite": path.display().to_string(),
                "inputs": digest,
            })),
        })
    }

    /// The task names in order.
    pub fn names(&self) -> Vec<String> {
        self.tasks.iter().map(|t| t.name.clone()).collect()
    }
}

/// Adds `path` and, for directories, every file under it (sorted) with its size and
/// modification time to `h`.
fn path_facts(path: &Path, h: &mut Sha256) -> Result<()> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("{} does not exist", path.display()))?;
    h.update(path.display().to_string().as_bytes());
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("listing {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            path_facts(&e, h)?;
        }
    } else {
        h.update(meta.len().to_le_bytes());
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        h.update(mtime.to_le_bytes());
    }
    Ok(())
}
