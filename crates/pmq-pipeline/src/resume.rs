//! Checkpoints of a running quantization, and resuming from them (`pmq quantize --resume`).
//!
//! A run given a [`Checkpointing`] ([`crate::run_checkpointed`]) keeps a checkpoint directory —
//! for `pmq quantize --out OUT` it is `OUT.pmq-resume/` next to the output ([`checkpoint_dir`]),
//! removed once `OUT` was written:
//!
//! - `fingerprint.json`: everything that determines the result, as named entries: the SHA-256
//!   of every `*.safetensors` and `*.json` file of the model and of each expert, of the
//!   calibration samples used (texts, or image files' contents), every setting of the
//!   [`PipelineConfig`] and pmq's version. Written when the checkpoint is started.
//! - `block-NNNNN.safetensors`, one per finished block, written atomically once the block is
//!   quantized and its outputs propagated: every linear the block quantized, losslessly
//!   (`NAME/codes` u8, `NAME/scales` f64, `NAME/zeros` and `NAME/g_idx` u32, `NAME/offsets` f64
//!   on grids with offsets, and `NAME/weight`
//!   f32 only where the weight the model went on with is not the packed linear's
//!   dequantization), the current values of every unquantized tensor changed so far
//!   (`tensor/NAME` f32: AWQ's folds), and in the metadata (`pmq_resume`, JSON) the grids, the
//!   block's report records and the times so far (floats as their bits), and the hash of the
//!   fingerprint.
//!
//! A resumed run whose fingerprint equals the checkpoint's loads the model and the calibration
//! batches as usual and embeds them (with the untouched model, as the interrupted run did);
//! then for every finished block `k`, in order, it replays the loop of the interrupted run with
//! the quantization replaced by the checkpoint: the strategy's `replay_block` on the model as
//! it was before block `k` (AWQ computes the block's full-precision outputs here, from the same
//! capture pass as `quantize_block`), block `k`'s checkpoint put into the model (its linears'
//! weights, the changed tensors' values after block `k`), then the same propagation step
//! (RTN, GPTQ, E-PMQ: the quantized block re-run on the states; every method: the states
//! stored as `state_dtype`). It continues at the first unfinished block. Every step repeats the
//! interrupted run's arithmetic on the same values, so the quantized linears and changed
//! tensors — and the files written from them — are bit for bit those of an uninterrupted run;
//! only the report's times differ, and the report says where the run was resumed.
//!
//! A checkpoint with another fingerprint is refused, naming the entries that differ; a run that
//! is not resuming replaces an old checkpoint. The fingerprint reads every model and expert
//! file once (SHA-256), which is seconds per GB: a run that is not resuming computes it on a
//! thread of its own, one file after another, while the first block is quantized, and writes
//! it before the first block's checkpoint (a run stopped before that leaves nothing to resume). A report record with a non-finite float
//! (never produced today) cannot be read back: resuming such a checkpoint fails.

use crate::calib::{read_samples, Sample};
use crate::config::{PipelineConfig, PipelineInputs};
use crate::job::Results;
use crate::progress::Progress;
use crate::report::{LinearRecord, Phases};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use pmq_core::QuantGrid;
use pmq_formats::PackedLinear;
use pmq_io::{write_safetensors, Dtype, TensorStore};
use pmq_models::{BlockModel, Family};
use rayon::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The checkpoint layout's version (a fingerprint entry).
const FORMAT: &str = "1";
const FINGERPRINT_FILE: &str = "fingerprint.json";
/// The metadata key of a block file.
const META_KEY: &str = "pmq_resume";
/// How an f64 is written in the metadata: `{"f64": "<bits as 16 hex digits>"}`.
const F64_TAG: &str = "f64";

/// Where a run keeps its checkpoint, and whether it continues from it.
#[derive(Clone, Debug)]
pub struct Checkpointing {
    /// The checkpoint directory (`pmq quantize`: [`checkpoint_dir`] of the output).
    pub dir: PathBuf,
    /// Continue from the checkpoint in `dir` if there is one (made with the same inputs and
    /// settings, else the run is refused); otherwise an old checkpoint there is replaced.
    pub resume: bool,
    /// A testing aid: fail right after block N's checkpoint was written, as a run killed there.
    pub stop_after_block: Option<usize>,
}

impl Checkpointing {
    /// Checkpoints in [`checkpoint_dir`]`(out)`.
    pub fn next_to(out: &Path, resume: bool) -> Self {
        Self {
            dir: checkpoint_dir(out),
            resume,
            stop_after_block: None,
        }
    }
}

/// The checkpoint directory of the output `out`: `OUT.pmq-resume` next to it.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    match out.file_name() {
        Some(name) => {
            let mut name = name.to_os_string();
            name.push(".pmq-resume");
            out.with_file_name(name)
        }
        None => out.join("output.pmq-resume"),
    }
}

/// Removes the checkpoint directory `dir` (once the result is stored); nothing if there is
/// none. Refuses a directory that does not look like a checkpoint.
pub fn remove_checkpoint(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    check_is_checkpoint(dir)?;
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

/// Removes the checkpoint directory `dir` if it holds no finished block (a run that failed
/// before finishing one leaves nothing to resume from).
pub fn remove_checkpoint_without_blocks(dir: &Path) -> Result<()> {
    if dir.is_dir()
        && !std::fs::read_dir(dir)?.any(|e| {
            e.is_ok_and(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("block-") && name.ends_with(".safetensors")
            })
        })
    {
        remove_checkpoint(dir)?;
    }
    Ok(())
}

/// Fails unless `dir` is a directory holding only what a checkpoint holds.
fn check_is_checkpoint(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!(
            "{} exists but is not a pmq checkpoint directory; move it away",
            dir.display()
        );
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(FINGERPRINT_FILE) || name.starts_with("block-")) {
            bail!(
                "{} is not a pmq checkpoint directory (it holds {name:?}); move it away",
                dir.display()
            );
        }
    }
    Ok(())
}

fn block_file(block: usize) -> String {
    format!("block-{block:05}.safetensors")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256 <hex>, <n> bytes` of a file's contents.
fn hash_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok(format!("sha256 {}, {n} bytes", hex(&h.finalize())))
}

/// The files of a checkpoint directory that pmq reads (`*.safetensors`, `*.json` but the
/// reports), by name, with their hashes.
fn hash_dir(dir: &Path, parallel: bool) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let read = name.ends_with(".safetensors")
            || (name.ends_with(".json")
                && !matches!(name.as_str(), "merge_report.json" | "pmq_report.json"));
        if read && path.is_file() {
            files.push((name, path));
        }
    }
    files.sort();
    let hash = |(name, path): (String, PathBuf)| Ok((name, hash_file(&path)?));
    if parallel {
        files.into_par_iter().map(hash).collect()
    } else {
        files.into_iter().map(hash).collect()
    }
}

/// `<n> samples, sha256 <hex>` of calibration samples (image samples: the files' contents).
fn hash_samples(samples: &[Sample]) -> Result<String> {
    let mut h = Sha256::new();
    let mut put = |tag: u8, bytes: &[u8]| {
        h.update([tag]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    for s in samples {
        match s {
            Sample::Text(t) => put(b't', t.as_bytes()),
            Sample::Seq2Seq { input, target } => {
                put(b's', input.as_bytes());
                put(b'S', target.as_bytes());
            }
            Sample::Image(p) => {
                let bytes =
                    std::fs::read(p).with_context(|| format!("reading image {}", p.display()))?;
                put(b'i', &bytes);
            }
        }
    }
    Ok(format!(
        "{} samples, sha256 {}",
        samples.len(),
        hex(&h.finalize())
    ))
}

/// Everything that determines a run's result, as named entries.
///
/// `parallel`: files hashed on the rayon pool (when nothing else runs); else one after another
/// on the calling thread (beside a running pipeline, whose pool it must not hold up).
fn fingerprint(
    inputs: &PipelineInputs,
    cfg: &PipelineConfig,
    family: Family,
    parallel: bool,
) -> Result<BTreeMap<String, String>> {
    let mut e = BTreeMap::new();
    e.insert("checkpoint format".to_string(), FORMAT.to_string());
    e.insert(
        "pmq version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    for (file, hash) in hash_dir(&inputs.model_dir, parallel)? {
        e.insert(format!("model file {file}"), hash);
    }
    e.insert("experts".to_string(), inputs.experts.len().to_string());
    for (i, dir) in inputs.experts.iter().enumerate() {
        for (file, hash) in hash_dir(dir, parallel)? {
            e.insert(format!("expert {i} file {file}"), hash);
        }
    }
    e.insert(
        "calibration tasks".to_string(),
        inputs.calib.len().to_string(),
    );
    for (i, spec) in inputs.calib.iter().enumerate() {
        e.insert(format!("calibration {i} task"), spec.task.clone());
        let samples = read_samples(spec, family, cfg.samples_per_task)?;
        e.insert(format!("calibration {i} samples"), hash_samples(&samples)?);
    }
    // every field, so that a new setting cannot be forgotten here
    let PipelineConfig {
        method,
        gptq,
        samples_per_task,
        batch_size,
        max_seq_len,
        true_sequential,
        deviation,
        state_dtype,
        // speed only: the results do not depend on it
        forward_cache_bytes: _,
        time_block_forward: _,
        alpha_auto,
        fold_precision,
    } = cfg;
    for (k, v) in [
        ("method", format!("{method:?}")),
        ("gptq", format!("{gptq:?}")),
        ("samples_per_task", samples_per_task.to_string()),
        ("batch_size", batch_size.to_string()),
        ("max_seq_len", max_seq_len.to_string()),
        ("true_sequential", true_sequential.to_string()),
        ("deviation", format!("{deviation:?}")),
        ("state_dtype", format!("{state_dtype:?}")),
        ("alpha_auto", format!("{alpha_auto:?}")),
        ("fold_precision", format!("{fold_precision:?}")),
    ] {
        e.insert(format!("setting {k}"), v);
    }
    Ok(e)
}

/// The entries of two fingerprints that differ, one per line.
fn differences(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> String {
    const SHOWN: usize = 20;
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let lines: Vec<String> = keys
        .into_iter()
        .filter_map(|k| match (old.get(k), new.get(k)) {
            (Some(a), Some(b)) if a == b => None,
            (a, b) => Some(format!(
                "  {k}: {} in the checkpoint, {} now",
                a.map_or("absent", String::as_str),
                b.map_or("absent", String::as_str)
            )),
        })
        .collect();
    let mut text = lines[..lines.len().min(SHOWN)].join("\n");
    if lines.len() > SHOWN {
        text.push_str(&format!("\n  … and {} more", lines.len() - SHOWN));
    }
    text
}

/// Writes `bytes` to `path` through a temporary file renamed into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// `value` as JSON with every float as its bits (`{"f64": "…"}`), so that reading it back
/// gives the same floats (JSON's decimal text need not). Non-finite floats become `null`.
fn exact_json<T: Serialize>(value: &T) -> Result<Value> {
    fn encode(v: Value) -> Value {
        match v {
            Value::Number(n) if n.is_f64() => {
                let bits = n.as_f64().expect("an f64").to_bits();
                serde_json::json!({ F64_TAG: format!("{bits:016x}") })
            }
            Value::Array(a) => Value::Array(a.into_iter().map(encode).collect()),
            Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, encode(v))).collect()),
            other => other,
        }
    }
    Ok(encode(serde_json::to_value(value)?))
}

/// Reads what [`exact_json`] wrote.
fn from_exact_json<T: DeserializeOwned>(value: Value) -> Result<T> {
    fn decode(v: Value) -> Result<Value> {
        Ok(match v {
            Value::Object(o) if o.len() == 1 && o.contains_key(F64_TAG) => {
                let bits = o[F64_TAG]
                    .as_str()
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                    .ok_or_else(|| anyhow!("a malformed float {:?}", o[F64_TAG]))?;
                serde_json::Number::from_f64(f64::from_bits(bits))
                    .map(Value::Number)
                    .ok_or_else(|| anyhow!("a non-finite float"))?
            }
            Value::Array(a) => Value::Array(a.into_iter().map(decode).collect::<Result<_>>()?),
            Value::Object(o) => Value::Object(
                o.into_iter()
                    .map(|(k, v)| Ok((k, decode(v)?)))
                    .collect::<Result<_>>()?,
            ),
            other => other,
        })
    }
    Ok(serde_json::from_value(decode(value)?)?)
}

/// A quantized linear in a block file.
#[derive(Serialize, Deserialize)]
struct SavedLinear {
    name: String,
    rows: usize,
    cols: usize,
    grid: QuantGrid,
    /// `NAME/weight` holds the model's weight (it differs from the dequantized codes).
    weight: bool,
}

/// A block file's metadata.
#[derive(Serialize, Deserialize)]
struct BlockMeta {
    format: String,
    /// SHA-256 of `fingerprint.json`.
    fingerprint: String,
    block: usize,
    linears: Vec<SavedLinear>,
    /// The changed unquantized tensors (all so far), `tensor/NAME` in the file.
    changed: Vec<String>,
    /// The block's records ([`exact_json`]).
    records: Value,
    /// The times so far ([`exact_json`]).
    phases: Value,
    capture_calls: usize,
    /// Wall seconds so far ([`exact_json`]).
    wall_seconds: Value,
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// The bytes of tensor `name` of a block file, checked to be `dtype` with `len` elements.
fn tensor_bytes<'a>(
    store: &'a TensorStore,
    name: &str,
    dtype: Dtype,
    len: usize,
) -> Result<&'a [u8]> {
    let info = store
        .info(name)
        .ok_or_else(|| anyhow!("it has no tensor `{name}`"))?;
    if info.dtype != dtype || info.numel() != len {
        bail!(
            "tensor `{name}` is {:?} {:?}, expected {dtype:?} with {len} elements",
            info.dtype,
            info.shape
        );
    }
    Ok(store.raw_bytes(name)?)
}

fn decode<T, const N: usize>(bytes: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunks of N")))
        .collect()
}

/// A finished block read back from its checkpoint.
pub(crate) struct SavedBlock {
    /// (name, packed linear, the weight the model went on with)
    layers: Vec<(String, PackedLinear, Vec<f32>)>,
    /// (name, shape, values) of the changed unquantized tensors
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    records: Vec<LinearRecord>,
    /// The times up to the end of this block.
    phases: Phases,
    /// Wall seconds up to the end of this block.
    wall_seconds: f64,
}

impl SavedBlock {
    /// Puts the block's weights and changed tensors into `model` and its linears into
    /// `results`, as the interrupted run had them after the block; returns the times (phases,
    /// wall seconds) the interrupted run had spent up to the end of the block.
    pub fn restore(
        self,
        model: &mut dyn BlockModel,
        results: &mut Results,
        progress: &dyn Progress,
    ) -> Result<(Phases, f64)> {
        for (name, packed, weight) in self.layers {
            let w = Tensor::from_vec(weight, (packed.rows, packed.cols), &Device::Cpu)?;
            model.set_linear_weight(&name, w)?;
            results.layers.insert(name.clone(), packed);
            progress.linear_done(&name);
        }
        for (name, shape, values) in self.tensors {
            model.set_tensor(&name, Tensor::from_vec(values, shape, &Device::Cpu)?)?;
            results.changed.insert(name);
        }
        results.records.extend(self.records);
        Ok((self.phases, self.wall_seconds))
    }
}

/// A run's checkpoint directory, opened (and checked, or started afresh) for the run.
pub(crate) struct Checkpoint {
    dir: PathBuf,
    /// SHA-256 of the fingerprint's JSON (`None` while a fresh run computes it on `pending`).
    hash: Option<String>,
    /// A fresh run's fingerprint, being computed.
    pending: Option<std::thread::JoinHandle<Result<BTreeMap<String, String>>>>,
    stop_after_block: Option<usize>,
    /// Blocks with a checkpoint, from the first.
    finished: usize,
}

impl Checkpoint {
    /// Computes the run's fingerprint; with `c.resume` and a checkpoint in `c.dir`, checks that
    /// it was made with the same fingerprint and counts its finished blocks (at most
    /// `blocks`); else (re)starts the checkpoint.
    pub fn open(
        c: &Checkpointing,
        inputs: &PipelineInputs,
        cfg: &PipelineConfig,
        family: Family,
        blocks: usize,
    ) -> Result<Self> {
        let fp_path = c.dir.join(FINGERPRINT_FILE);
        if c.resume && fp_path.is_file() {
            check_is_checkpoint(&c.dir)?;
            let entries = fingerprint(inputs, cfg, family, true)?;
            let text = serde_json::to_string_pretty(&entries)?;
            let old: BTreeMap<String, String> = std::fs::read_to_string(&fp_path)
                .map_err(anyhow::Error::from)
                .and_then(|t| Ok(serde_json::from_str(&t)?))
                .with_context(|| format!("reading the checkpoint {}", fp_path.display()))?;
            if old != entries {
                bail!(
                    "cannot resume: the checkpoint {} was made with other inputs or settings:\n{}\n\
                     give the interrupted run's inputs and settings, or drop --resume to start \
                     over (the checkpoint is then replaced)",
                    c.dir.display(),
                    differences(&old, &entries)
                );
            }
            let mut ckpt = Self {
                dir: c.dir.clone(),
                hash: Some(hex(&Sha256::digest(text.as_bytes()))),
                pending: None,
                stop_after_block: c.stop_after_block,
                finished: 0,
            };
            while ckpt.finished < blocks && c.dir.join(block_file(ckpt.finished)).is_file() {
                ckpt.finished += 1;
            }
            tracing::info!(
                checkpoint = %c.dir.display(),
                finished_blocks = ckpt.finished,
                "resuming"
            );
            return Ok(ckpt);
        }
        if c.resume {
            tracing::warn!(
                checkpoint = %c.dir.display(),
                "no checkpoint to resume from: starting at the first block"
            );
        } else if c.dir.exists() {
            tracing::info!(checkpoint = %c.dir.display(), "replacing an old checkpoint");
        }
        remove_checkpoint(&c.dir)?;
        std::fs::create_dir_all(&c.dir)
            .with_context(|| format!("creating the checkpoint {}", c.dir.display()))?;
        let (inputs, cfg) = (inputs.clone(), cfg.clone());
        let pending = std::thread::Builder::new()
            .name("pmq-fingerprint".into())
            .spawn(move || fingerprint(&inputs, &cfg, family, false))
            .context("starting the fingerprint thread")?;
        Ok(Self {
            dir: c.dir.clone(),
            hash: None,
            pending: Some(pending),
            stop_after_block: c.stop_after_block,
            finished: 0,
        })
    }

    /// The fingerprint's hash; a fresh run waits here for its fingerprint and writes it.
    fn fingerprint_hash(&mut self) -> Result<String> {
        if let Some(pending) = self.pending.take() {
            let entries = pending
                .join()
                .map_err(|_| anyhow!("the fingerprint thread panicked"))??;
            let text = serde_json::to_string_pretty(&entries)?;
            write_atomically(&self.dir.join(FINGERPRINT_FILE), text.as_bytes())?;
            self.hash = Some(hex(&Sha256::digest(text.as_bytes())));
        }
        self.hash
            .clone()
            .ok_or_else(|| anyhow!("the checkpoint has no fingerprint"))
    }

    /// The blocks the checkpoint holds, from the first: the run continues at this block.
    pub fn finished_blocks(&self) -> usize {
        self.finished
    }

    /// Writes block `block`'s checkpoint: the linears it quantized (`results.records` from
    /// `first_record` on), every changed unquantized tensor as `model` has it now, the times
    /// so far. Fails afterwards when the run was asked to stop after this block.
    pub fn save_block(
        &mut self,
        block: usize,
        model: &dyn BlockModel,
        results: &Results,
        first_record: usize,
        timing: &Phases,
        wall_seconds: f64,
    ) -> Result<()> {
        let records = &results.records[first_record..];
        let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        let mut linears = Vec::with_capacity(records.len());
        for r in records {
            let name = &r.name;
            let p = results
                .layers
                .get(name)
                .ok_or_else(|| anyhow!("`{name}` was reported but not quantized"))?;
            tensors.push((
                format!("{name}/codes"),
                Dtype::U8,
                vec![p.codes.len()],
                p.codes.clone(),
            ));
            tensors.push((
                format!("{name}/scales"),
                Dtype::F64,
                vec![p.scales.len()],
                f64_bytes(&p.scales),
            ));
            tensors.push((
                format!("{name}/zeros"),
                Dtype::U32,
                vec![p.zeros.len()],
                u32_bytes(&p.zeros),
            ));
            tensors.push((
                format!("{name}/g_idx"),
                Dtype::U32,
                vec![p.g_idx.len()],
                u32_bytes(&p.g_idx),
            ));
            if !p.offsets.is_empty() {
                tensors.push((
                    format!("{name}/offsets"),
                    Dtype::F64,
                    vec![p.offsets.len()],
                    f64_bytes(&p.offsets),
                ));
            }
            let weight: Vec<f32> = model.linear_weight(name)?.flatten_all()?.to_vec1()?;
            let stored = !same_bits(&weight, &p.dequantize());
            if stored {
                tensors.push((
                    format!("{name}/weight"),
                    Dtype::F32,
                    vec![weight.len()],
                    f32_bytes(&weight),
                ));
            }
            linears.push(SavedLinear {
                name: name.clone(),
                rows: p.rows,
                cols: p.cols,
                grid: p.grid,
                weight: stored,
            });
        }
        for name in &results.changed {
            let t = model.tensor(name)?;
            let values: Vec<f32> = t.flatten_all()?.to_vec1()?;
            tensors.push((
                format!("tensor/{name}"),
                Dtype::F32,
                t.dims().to_vec(),
                f32_bytes(&values),
            ));
        }
        let meta = BlockMeta {
            format: FORMAT.to_string(),
            fingerprint: self.fingerprint_hash()?,
            block,
            linears,
            changed: results.changed.iter().cloned().collect(),
            records: exact_json(&records)?,
            phases: exact_json(timing)?,
            capture_calls: timing.capture_calls,
            wall_seconds: exact_json(&wall_seconds)?,
        };
        let metadata = BTreeMap::from([(META_KEY.to_string(), serde_json::to_string(&meta)?)]);
        let path = self.dir.join(block_file(block));
        write_safetensors(&path, &tensors, Some(metadata))
            .with_context(|| format!("writing the checkpoint of block {block}"))?;
        self.finished = block + 1;
        if self.stop_after_block == Some(block) {
            bail!(
                "stopped after block {block} as asked (stop_after_block); its checkpoint is in {}",
                self.dir.display()
            );
        }
        Ok(())
    }

    /// Reads block `block`'s checkpoint (one of the finished blocks).
    pub fn load_block(&self, block: usize) -> Result<SavedBlock> {
        let path = self.dir.join(block_file(block));
        self.read_block(&path, block)
            .with_context(|| format!("reading the checkpoint {}", path.display()))
    }

    fn read_block(&self, path: &Path, block: usize) -> Result<SavedBlock> {
        let store = TensorStore::open_file(path)?;
        let text = store
            .metadata()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| anyhow!("it has no `{META_KEY}` metadata"))?;
        let meta: BlockMeta = serde_json::from_str(text)?;
        if meta.format != FORMAT
            || Some(&meta.fingerprint) != self.hash.as_ref()
            || meta.block != block
        {
            bail!(
                "it is not block {block} of this checkpoint (format {}, block {}, fingerprint {})",
                meta.format,
                meta.block,
                meta.fingerprint
            );
        }
        let mut layers = Vec::with_capacity(meta.linears.len());
        for l in meta.linears {
            let n = l.rows * l.cols;
            let get = |part: &str, dtype, len| {
                tensor_bytes(&store, &format!("{}/{part}", l.name), dtype, len)
            };
            let groups = store
                .info(&format!("{}/scales", l.name))
                .map_or(0, |i| i.numel());
            let packed = PackedLinear {
                rows: l.rows,
                cols: l.cols,
                grid: l.grid,
                codes: get("codes", Dtype::U8, n)?.to_vec(),
                scales: decode(get("scales", Dtype::F64, groups)?, f64::from_le_bytes),
                zeros: decode(get("zeros", Dtype::U32, groups)?, u32::from_le_bytes),
                g_idx: decode(get("g_idx", Dtype::U32, l.cols)?, u32::from_le_bytes),
                offsets: match store.info(&format!("{}/offsets", l.name)) {
                    Some(_) => decode(get("offsets", Dtype::F64, groups)?, f64::from_le_bytes),
                    None => Vec::new(),
                },
            };
            let limit = packed.num_groups();
            if l.rows == 0
                || groups % l.rows != 0
                || packed.g_idx.iter().any(|&g| g as usize >= limit)
            {
                bail!("the packed linear `{}` is inconsistent", l.name);
            }
            let weight = if l.weight {
                decode(get("weight", Dtype::F32, n)?, f32::from_le_bytes)
            } else {
                packed.dequantize()
            };
            layers.push((l.name, packed, weight));
        }
        let mut tensors = Vec::with_capacity(meta.changed.len());
        for name in meta.changed {
            let key = format!("tensor/{name}");
            let shape = store
                .info(&key)
                .ok_or_else(|| anyhow!("it has no tensor `{key}`"))?
                .shape
                .clone();
            let len = shape.iter().product();
            let values = decode(
                tensor_bytes(&store, &key, Dtype::F32, len)?,
                f32::from_le_bytes,
            );
            tensors.push((name, shape, values));
        }
        let mut phases: Phases = from_exact_json(meta.phases).context("its times")?;
        phases.capture_calls = meta.capture_calls;
        Ok(SavedBlock {
            layers,
            tensors,
            records: from_exact_json(meta.records).context("its report records")?,
            phases,
            wall_seconds: from_exact_json(meta.wall_seconds)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_json_keeps_every_float_bit_for_bit() {
        let v: Vec<f64> = vec![
            0.1,
            1.0 / 3.0,
            -0.0,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            1e300 * 1.7,
            2.0,
            123456789.12345679,
            0.1 + 0.2,
        ];
        let back: Vec<f64> = from_exact_json(exact_json(&v).unwrap()).unwrap();
        assert_eq!(
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            back.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        // integers stay integers
        let n: Vec<usize> = from_exact_json(exact_json(&vec![3usize, 0]).unwrap()).unwrap();
        assert_eq!(n, [3, 0]);
    }

    #[test]
    fn checkpoint_dir_is_next_to_the_output() {
        assert_eq!(
            checkpoint_dir(Path::new("/a/b/model")),
            Path::new("/a/b/model.pmq-resume")
        );
        assert_eq!(
            checkpoint_dir(Path::new("out/")),
            Path::new("out.pmq-resume")
        );
    }

    #[test]
    fn differences_name_what_changed() {
        let a = BTreeMap::from([
            ("setting x".to_string(), "1".to_string()),
            ("setting y".to_string(), "2".to_string()),
            ("gone".to_string(), "3".to_string()),
        ]);
        let b = BTreeMap::from([
            ("setting x".to_string(), "1".to_string()),
            ("setting y".to_string(), "5".to_string()),
            ("new".to_string(), "4".to_string()),
        ]);
        let d = differences(&a, &b);
        assert!(d.contains("setting y: 2 in the checkpoint, 5 now"), "{d}");
        assert!(d.contains("gone: 3 in the checkpoint, absent now"), "{d}");
        assert!(d.contains("new: absent in the checkpoint, 4 now"), "{d}");
        assert!(!d.contains("setting x"), "{d}");
    }

    #[test]
    fn only_checkpoint_directories_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("x.pmq-resume");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("block-00000.safetensors"), b"").unwrap();
        std::fs::write(dir.join("fingerprint.json"), b"{}").unwrap();
        remove_checkpoint_without_blocks(&dir).unwrap();
        assert!(dir.exists(), "it holds a block");
        remove_checkpoint(&dir).unwrap();
        assert!(!dir.exists());
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("fingerprint.json"), b"{}").unwrap();
        remove_checkpoint_without_blocks(&dir).unwrap();
        assert!(!dir.exists());
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("precious.txt"), b"").unwrap();
        let e = remove_checkpoint(&dir).unwrap_err().to_string();
        assert!(e.contains("not a pmq checkpoint"), "{e}");
        assert!(dir.join("precious.txt").exists());
    }
}
