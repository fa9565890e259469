//! Runs benchmark cells: experts (fine-tuned, cached) → merge → quantize → per-task test
//! accuracy with the experts' heads.
//!
//! Merging and quantization call the same library functions as `pmq merge` and `pmq quantize`
//! ([`pmq_merge::merge`], [`pmq_pipeline::quantize_and_write`]); a cell's wall time and peak
//! RSS come from the quantization's summary (the peak is reset before each cell).
//! Every intermediate is cached under the work directory, keyed by a hash of the settings that
//! determine it: a rerun only computes what is missing (`force` recomputes the cells).

use crate::cell::{Cell, QuantKind};
use crate::results::{average, now, CellResult, RefRow};
use crate::suite::{Suite, SuiteTask, TestSource, Train};
use anyhow::{bail, Context, Result};
use pmq_eval::tasks::{DataKind, TestTask};
use pmq_eval::{evaluate_tasks, EvalOptions, EvalTask, Head, TaskAccuracy, HEAD_FILE};
use pmq_finetune::{
    finetune, finetune_images, finetune_text_to_text, ExpertOutput, FinetuneConfig, Mode,
};
use pmq_pipeline::report::reset_peak_rss;
use pmq_pipeline::{
    quantize_and_write, CalibSpec, OutputFormat, PipelineInputs, QuantizeOptions, QuantizeSummary,
};
use pmq_testbed::{backbone_dir, SplitConfig};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything a benchmark run needs.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// The testbed cache (fetched; also where testbed experts are cached).
    pub cache: PathBuf,
    /// A suite file with the user's own tasks ([`crate::suite`]); `None`: the testbed
    /// `tasks`.
    pub suite: Option<PathBuf>,
    /// Where experts, merged models, quantized models and cell results are cached.
    pub work: PathBuf,
    /// The testbed tasks (with a suite: its task names, filled in by [`Bench::prepare`]).
    pub tasks: Vec<String>,
    pub split: SplitConfig,
    /// Name of the fine-tuning preset (part of the experts' cache path).
    pub preset: String,
    pub finetune: FinetuneConfig,
    pub eval: EvalOptions,
    /// Calibration sequence length and batch size of `pmq quantize`.
    pub calib_max_seq_len: usize,
    pub calib_batch_size: usize,
    /// Recompute cells even when cached.
    pub force: bool,
    /// Keep the quantized models (otherwise only their reports are kept).
    pub keep_models: bool,
}

impl BenchConfig {
    /// The settings that determine every number, as JSON.
    pub fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "tasks": self.tasks,
            "split": self.split,
            "finetune_preset": self.preset,
            "finetune": self.finetune,
            "eval": {
                "max_examples": self.eval.max_examples,
                "max_seq_len": self.eval.max_seq_len,
            },
            "calibration": {
                "max_seq_len": self.calib_max_seq_len,
                "split": "calib",
            },
            "pmq_version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// A short hash of [`Self::settings`].
    pub fn context(&self) -> String {
        short_hash(&self.settings())
    }
}

fn short_hash(v: &serde_json::Value) -> String {
    let h = Sha256::digest(v.to_string().as_bytes());
    h.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// A prepared benchmark: tasks loaded, experts trained (or given), heads ready, calibration
/// files written.
pub struct Bench {
    cfg: BenchConfig,
    context: String,
    suite: Suite,
    /// Every task's expert directory.
    experts: Vec<PathBuf>,
    /// Every task's test data with its expert's head.
    tests: Vec<TestTask>,
}

impl Bench {
    /// Loads the tasks (the testbed's, or a suite file's), fine-tunes (or reuses) the experts
    /// pmq trains, readies every head and writes the testbed's calibration files.
    pub fn prepare(mut cfg: BenchConfig) -> Result<Self> {
        let (suite, context) = match &cfg.suite {
            None => {
                if cfg.tasks.is_empty() {
                    bail!("no tasks selected");
                }
                let context = cfg.context();
                let backbone = backbone_dir(&cfg.cache);
                if !backbone.join("config.json").is_file() {
                    bail!(
                        "the backbone is not in the cache ({}): run `pmq testbed fetch` first",
                        backbone.display()
                    );
                }
                let calib_dir = cfg.work.join("calib").join(&context);
                let suite =
                    Suite::testbed(&cfg.cache, &backbone, &cfg.tasks, &cfg.split, &calib_dir)?;
                (suite, context)
            }
            Some(file) => {
                let suite = Suite::load(file)?;
                cfg.tasks = suite.names();
                let mut settings = cfg.settings();
                settings["suite"] = suite.identity.clone().unwrap_or_default();
                (suite, short_hash(&settings))
            }
        };
        let mut experts = Vec::new();
        let mut tests = Vec::new();
        for t in &suite.tasks {
            let (dir, head) = ready_expert(&cfg, &suite, t)?;
            tests.push(match (&t.test, head) {
                (TestSource::Testbed(td), Some(h)) => TestTask::Text(td.clone(), h),
                (TestSource::Testbed(_), None) => bail!("testbed task {:?} has no head", t.name),
                (TestSource::File(p), h) => TestTask::read(&t.name, p, h)?,
            });
            experts.push(dir);
        }
        Ok(Self {
            cfg,
            context,
            suite,
            experts,
            tests,
        })
    }

    pub fn config(&self) -> &BenchConfig {
        &self.cfg
    }

    pub fn context(&self) -> &str {
        &self.context
    }

    /// The tasks.
    pub fn suite(&self) -> &Suite {
        &self.suite
    }

    /// The experts on their own tasks ("Fine-tuned (STL)") and, with `probe`, the base model
    /// with a linear head per task trained on its frozen embeddings ("Pre-trained (linear
    /// probe)"; text-to-text tasks: the base model's own decoding). Without training data for
    /// every classification task the probe row is left out.
    pub fn reference_rows(&self, probe: bool) -> Result<Vec<RefRow>> {
        let path = self.cfg.work.join("refs").join(format!(
            "{}{}.json",
            self.context,
            if probe { "-probe" } else { "" }
        ));
        if !self.cfg.force {
            if let Ok(text) = std::fs::read_to_string(&path) {
                if let Ok(rows) = serde_json::from_str::<Vec<RefRow>>(&text) {
                    return Ok(rows);
                }
            }
        }
        let mut rows = Vec::new();
        if probe {
            if let Some(tests) = self.probe_tests()? {
                let all: Vec<EvalTask> = tests.iter().map(TestTask::as_eval).collect();
                let acc = evaluate_tasks(&self.suite.base, &all, &self.cfg.eval)?;
                rows.push(RefRow {
                    name: "Pre-trained (linear probe)".into(),
                    average: average(&acc),
                    accuracies: acc,
                });
            }
        }
        let mut acc = Vec::new();
        for (t, e) in self.tests.iter().zip(&self.experts) {
            acc.extend(evaluate_tasks(e, &[t.as_eval()], &self.cfg.eval)?);
        }
        rows.push(RefRow {
            name: "Fine-tuned (STL)".into(),
            average: average(&acc),
            accuracies: acc,
        });
        write_json(&path, &rows)?;
        Ok(rows)
    }

    /// The test tasks scored by linear probes on the base model, or `None` when a
    /// classification task has no training data.
    fn probe_tests(&self) -> Result<Option<Vec<TestTask>>> {
        let mut out = Vec::new();
        for (t, test) in self.suite.tasks.iter().zip(&self.tests) {
            if test.head().is_none() {
                out.push(test.clone());
                continue;
            }
            let dir = head_dir(&self.cfg, &self.suite, "probe", &t.name);
            let e = match &t.train {
                Some(Train::Text(td)) => finetune(
                    &self.suite.base,
                    td,
                    Mode::LinearProbe,
                    &self.cfg.finetune,
                    &dir,
                ),
                Some(Train::Images(it)) => finetune_images(
                    &self.suite.base,
                    it,
                    Mode::LinearProbe,
                    &self.cfg.finetune,
                    &dir,
                ),
                // text-to-text tests have no head and were taken as they are above
                Some(Train::Pairs(_)) => bail!("task {:?}: text-to-text data has no probe", t.name),
                None => {
                    tracing::warn!(task = %t.name, "no training data: no linear-probe row");
                    return Ok(None);
                }
            }
            .with_context(|| format!("training the {} linear probe", t.name))?;
            let head = Head::load(&e.head)?;
            // the test labels are mapped to this head's classes, not the expert's
            out.push(match &t.test {
                TestSource::Testbed(td) => TestTask::Text(td.clone(), head),
                TestSource::File(p) => TestTask::read(&t.name, p, Some(head))?,
            });
        }
        Ok(Some(out))
    }

    fn cell_path(&self, c: &Cell) -> PathBuf {
        self.cfg
            .work
            .join("cells")
            .join(&self.context)
            .join(format!("{}.json", c.key()))
    }

    /// One cell: merge (cached), quantize, evaluate.
    pub fn run_cell(&self, c: &Cell) -> Result<CellResult> {
        let path = self.cell_path(c);
        if !self.cfg.force {
            if let Ok(text) = std::fs::read_to_string(&path) {
                if let Ok(r) = serde_json::from_str::<CellResult>(&text) {
                    tracing::info!(cell = %c, "cached result");
                    return Ok(r);
                }
            }
        }
        let merged = self.merged(c)?;
        let (model, quant) = match c.quant {
            QuantKind::Fp => (merged, None),
            _ => {
                let dir = self
                    .cfg
                    .work
                    .join("models")
                    .join(&self.context)
                    .join(c.key());
                let summary = self.quantize(c, &merged, &dir)?;
                (dir, Some(summary))
            }
        };
        let t0 = Instant::now();
        let all: Vec<EvalTask> = self.tests.iter().map(TestTask::as_eval).collect();
        let accuracies = evaluate_tasks(&model, &all, &self.cfg.eval)
            .with_context(|| format!("evaluating {}", model.display()))?;
        let eval_seconds = t0.elapsed().as_secs_f64();
        let mut r = CellResult {
            cell: *c,
            key: c.key(),
            average: average(&accuracies),
            accuracies,
            quant_seconds: quant.as_ref().map(|s| s.wall_seconds),
            quant_peak_rss_mib: quant.as_ref().and_then(|s| s.peak_rss_mib),
            eval_seconds,
            finished: now(),
            alpha_summary: None,
        };
        if quant.is_some() {
            let report = model.join("pmq_report.json");
            if matches!(c.quant, QuantKind::EpmqAuto | QuantKind::EpmqAutoModel) {
                r.alpha_summary = Some(alpha_summary(&report)?);
            }
            if report.is_file() {
                let dst = path.with_extension("report.json");
                std::fs::create_dir_all(dst.parent().expect("cell path has a parent"))?;
                std::fs::copy(&report, &dst)
                    .with_context(|| format!("copying {}", report.display()))?;
            }
            if !self.cfg.keep_models {
                std::fs::remove_dir_all(&model)
                    .with_context(|| format!("removing {}", model.display()))?;
            }
        }
        write_json(&path, &r)?;
        tracing::info!(cell = %c, average = r.average, "cell done");
        Ok(r)
    }

    /// The merged model of the cell's merge method (built once).
    fn merged(&self, c: &Cell) -> Result<PathBuf> {
        let dir = self
            .cfg
            .work
            .join("merged")
            .join(&self.context)
            .join(c.merge.id());
        if dir.join("config.json").is_file() {
            return Ok(dir);
        }
        let mut method = c.merge.method();
        if let pmq_merge::Method::RegMean(o) = &mut method {
            o.grams = self.regmean_grams()?;
        }
        let mut cfg = pmq_merge::MergeConfig::new(
            self.suite.base.clone(),
            self.experts.clone(),
            dir.clone(),
            method,
        );
        cfg.overwrite = true;
        tracing::info!(merge = c.merge.id(), "merging into {}", dir.display());
        pmq_merge::merge(&cfg, &pmq_merge::NoProgress)
            .with_context(|| format!("merging {} into {}", c.merge.id(), dir.display()))?;
        Ok(dir)
    }

    /// Every expert's RegMean Gram file on its own task's calibration split (the first
    /// [`REGMEAN_SAMPLES`] samples, the quantizers' calibration settings), built once.
    fn regmean_grams(&self) -> Result<Vec<PathBuf>> {
        let dir = self.cfg.work.join("grams").join(&self.context);
        let settings = pmq_pipeline::grams::GramSettings {
            samples: REGMEAN_SAMPLES,
            batch_size: self.cfg.calib_batch_size,
            max_seq_len: self.cfg.calib_max_seq_len,
        };
        let mut out = Vec::new();
        for (t, e) in self.suite.tasks.iter().zip(&self.experts) {
            let path = dir.join(format!("{}-n{REGMEAN_SAMPLES}.safetensors", t.name));
            if !path.is_file() {
                let spec = CalibSpec {
                    task: t.name.clone(),
                    path: t.calib.clone(),
                };
                let s = pmq_pipeline::grams::collect_grams(e, &spec, &settings, &path)
                    .with_context(|| format!("RegMean Gram matrices of the {} expert", t.name))?;
                tracing::info!(task = %t.name, seconds = s.seconds, "Gram matrices ready");
            }
            out.push(path);
        }
        Ok(out)
    }

    /// Quantizes the cell's merged model into `out` (fake-quant format) as `pmq quantize`
    /// does, and returns its summary.
    fn quantize(&self, c: &Cell, merged: &Path, out: &Path) -> Result<QuantizeSummary> {
        let Some(mut config) = c.pipeline_config()? else {
            bail!("cell {c} is not quantized");
        };
        config.max_seq_len = self.cfg.calib_max_seq_len;
        config.batch_size = self.cfg.calib_batch_size;
        let calib = if c.quant == QuantKind::Rtn {
            Vec::new()
        } else {
            self.suite
                .tasks
                .iter()
                .map(|t| CalibSpec {
                    task: t.name.clone(),
                    path: t.calib.clone(),
                })
                .collect()
        };
        let experts = if matches!(
            c.quant,
            QuantKind::Epmq | QuantKind::EpmqAuto | QuantKind::EpmqAutoModel
        ) {
            self.experts.clone()
        } else {
            Vec::new()
        };
        let opts = QuantizeOptions {
            inputs: PipelineInputs {
                model_dir: merged.to_path_buf(),
                experts,
                calib,
            },
            config,
            out: out.to_path_buf(),
            format: OutputFormat::Fake,
            gguf: Default::default(),
            overwrite: true,
            // cells are short; their timings should not include checkpoint writes
            checkpoint: None,
        };
        tracing::info!(cell = %c, "quantizing into {}", out.display());
        reset_peak_rss();
        let (_, summary) = quantize_and_write(&opts, &pmq_pipeline::NoProgress)
            .with_context(|| format!("quantizing cell {c}"))?;
        Ok(summary)
    }
}

/// How many linears of a `--alpha auto` run chose each α, from its report: `0×8, 0.01×18`.
fn alpha_summary(report: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(report).with_context(|| format!("reading {}", report.display()))?;
    let r: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", report.display()))?;
    if let Some(a) = r["alpha_search"]["alpha"].as_f64() {
        // --alpha auto-model: the model's α, then every candidate's held-out loss
        let losses: Vec<String> = r["alpha_search"]["candidates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some(format!(
                    "{}: {:.4}",
                    c["alpha"].as_f64()?,
                    c["loss"].as_f64()?
                ))
            })
            .collect();
        return Ok(format!("α = {a} (held-out loss {})", losses.join(", ")));
    }
    let chosen = r["linears"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["alpha"]["alpha"].as_f64());
    let mut counts: Vec<(f64, usize)> = Vec::new();
    for a in chosen {
        match counts.iter_mut().find(|(x, _)| *x == a) {
            Some((_, n)) => *n += 1,
            None => counts.push((a, 1)),
        }
    }
    if counts.is_empty() {
        bail!(
            "{} records no α choice: not an --alpha auto run",
            report.display()
        );
    }
    counts.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(counts
        .iter()
        .map(|(a, n)| format!("{a}×{n}"))
        .collect::<Vec<_>>()
        .join(", "))
}

/// Calibration samples per task behind RegMean's Gram matrices (the bench's quantization
/// budget).
pub const REGMEAN_SAMPLES: usize = 128;

/// The expert directory of `t` and its head (`None` for text-to-text): pmq fine-tunes it from
/// the base when the suite gives only training data; a given expert's head is `head:`, else
/// its `pmq_head.safetensors`, else a linear probe on its own embeddings of `train`.
fn ready_expert(
    cfg: &BenchConfig,
    suite: &Suite,
    t: &SuiteTask,
) -> Result<(PathBuf, Option<Head>)> {
    let text_to_text = t.kind()? == DataKind::TextToText;
    let Some(dir) = &t.expert else {
        let out_dir = head_dir(cfg, suite, "full", &t.name);
        let e: ExpertOutput = match &t.train {
            Some(Train::Text(td)) => finetune(&suite.base, td, Mode::Full, &cfg.finetune, &out_dir),
            Some(Train::Images(it)) => {
                finetune_images(&suite.base, it, Mode::Full, &cfg.finetune, &out_dir)
            }
            Some(Train::Pairs(p)) => finetune_text_to_text(&suite.base, p, &cfg.finetune, &out_dir),
            None => bail!("task {:?}: no expert and no training data", t.name),
        }
        .with_context(|| format!("fine-tuning the {} expert", t.name))?;
        tracing::info!(task = %t.name, cached = e.cached, seconds = e.train_seconds,
            "expert ready at {}", e.dir.display());
        let head = Head::load(&e.head).with_context(|| format!("head of {}", t.name))?;
        return Ok((e.dir, Some(head)));
    };
    if text_to_text {
        return Ok((dir.clone(), None));
    }
    let head_file = match &t.head {
        Some(h) => Some(h.clone()),
        None => Some(dir.join(HEAD_FILE)).filter(|p| p.is_file()),
    };
    let head_file = match (head_file, &t.train) {
        (Some(h), _) => h,
        (None, Some(train)) => {
            let out_dir = head_dir(cfg, suite, "expert-probe", &t.name);
            let e = match train {
                Train::Text(td) => finetune(dir, td, Mode::LinearProbe, &cfg.finetune, &out_dir),
                Train::Images(it) => {
                    finetune_images(dir, it, Mode::LinearProbe, &cfg.finetune, &out_dir)
                }
                // text-to-text experts returned above without a head
                Train::Pairs(_) => bail!("task {:?}: text-to-text data has no probe", t.name),
            }
            .with_context(|| format!("probing the {} expert for its head", t.name))?;
            e.head
        }
        (None, None) => bail!(
            "task {:?}: expert {} has no {HEAD_FILE}; give `head:`, or `train:` data to probe one",
            t.name,
            dir.display()
        ),
    };
    let head = Head::load(&head_file).with_context(|| format!("head of {}", t.name))?;
    Ok((dir.clone(), Some(head)))
}

/// Where what pmq trains for a task is cached — `kind` is `full` (its expert), `probe` (a
/// head on the base model) or `expert-probe` (a head on a given expert): the testbed's under
/// the cache (shared by every bench run), a suite's under the work directory. The directory
/// does not depend on the suite's other inputs: the trained model's own fingerprint decides
/// whether it is reused.
fn head_dir(cfg: &BenchConfig, suite: &Suite, kind: &str, task: &str) -> PathBuf {
    if suite.identity.is_none() {
        let mode = if kind == "full" {
            Mode::Full
        } else {
            Mode::LinearProbe
        };
        return expert_dir(cfg, mode, task);
    }
    cfg.work.join("experts").join(kind).join(task)
}

/// Where an expert (or linear probe) of a testbed task is cached.
pub fn expert_dir(cfg: &BenchConfig, mode: Mode, task: &str) -> PathBuf {
    let m = match mode {
        Mode::Full => "full",
        Mode::LinearProbe => "probe",
    };
    cfg.cache
        .join("experts")
        .join(&cfg.preset)
        .join(m)
        .join(task)
}

/// Writes pretty JSON atomically (temporary file + rename, parent created).
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    pmq_testbed::write_atomic(path, &serde_json::to_vec_pretty(value)?)
}

/// The per-task accuracies as `task → accuracy`.
pub fn by_task(acc: &[TaskAccuracy]) -> std::collections::BTreeMap<&str, f64> {
    acc.iter().map(|a| (a.task.as_str(), a.accuracy)).collect()
}
