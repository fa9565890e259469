//! Calibration data: one file per task, turned into model batches.
//!
//! - Text (BERT, Llama): JSONL with a `"text"` field per line.
//! - T5: JSONL with `"input"` and `"target"` (teacher forcing: the decoder reads
//!   `[decoder_start] + target[..−1]`); a line with only `"text"` uses it as input and an empty
//!   target.
//! - Images (CLIP): a directory of `.png`/`.jpg`/`.jpeg` files (sorted by name), or a list file
//!   with one image path per line (relative paths are relative to the list file).
//!
//! The first `samples_per_task` samples of each file are used, in file order. JSONL files are
//! UTF-8 (a leading byte-order mark is allowed); errors name the file and line.

use anyhow::{bail, Context, Result};
use pmq_models::{Batch, ClipImageProcessor, Family, LoadedModel, TextTokenizer};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// `TASK=FILE` as given on the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct CalibSpec {
    pub task: String,
    pub path: PathBuf,
}

impl FromStr for CalibSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (task, path) = s
            .split_once('=')
            .ok_or_else(|| format!("calibration {s:?} must be TASK=FILE"))?;
        if task.is_empty() || path.is_empty() {
            return Err(format!(
                "calibration {s:?} must be TASK=FILE with both parts non-empty"
            ));
        }
        Ok(Self {
            task: task.to_string(),
            path: PathBuf::from(path),
        })
    }
}

/// One calibration sample.
#[derive(Clone, Debug, PartialEq)]
pub enum Sample {
    Text(String),
    Seq2Seq { input: String, target: String },
    Image(PathBuf),
}

impl Sample {
    /// A text sample with nothing but white space (it tokenizes to special tokens only).
    pub fn is_blank(&self) -> bool {
        match self {
            Sample::Text(t) => t.trim().is_empty(),
            Sample::Seq2Seq { input, .. } => input.trim().is_empty(),
            Sample::Image(_) => false,
        }
    }
}

pub use pmq_eval::tasks::jsonl::read_lines as read_jsonl_lines;

fn read_jsonl(path: &Path, limit: usize) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for (line_no, line) in read_jsonl_lines(path, "calibration file")? {
        let i = line_no - 1;
        if out.len() >= limit {
            break;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a JSON object", path.display(), i + 1))?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let sample = match (field("input"), field("target"), field("text")) {
            (Some(input), target, _) => Sample::Seq2Seq {
                input,
                target: target.unwrap_or_default(),
            },
            (None, _, Some(t)) => Sample::Text(t),
            _ => bail!(
                "{}:{}: expected a string field \"text\" (or \"input\"/\"target\")",
                path.display(),
                i + 1
            ),
        };
        out.push(sample);
    }
    Ok(out)
}

/// Whether a sample gives the T5 decoder a non-empty target to read.
fn has_target(s: &Sample) -> bool {
    matches!(s, Sample::Seq2Seq { target, .. } if !target.trim().is_empty())
}

use pmq_eval::tasks::image::is_image;

fn read_images(path: &Path, limit: usize) -> Result<Vec<Sample>> {
    let mut paths: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("listing image directory {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_image(p))
            .collect();
        v.sort();
        v
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading image list {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| base.join(l))
            .collect()
    };
    paths.truncate(limit);
    for p in &paths {
        if !p.is_file() {
            bail!(
                "image {} listed in {} does not exist",
                p.display(),
                path.display()
            );
        }
    }
    Ok(paths.into_iter().map(Sample::Image).collect())
}

/// Reads up to `limit` samples of `spec` in the form the model family needs.
pub fn read_samples(spec: &CalibSpec, family: Family, limit: usize) -> Result<Vec<Sample>> {
    if !spec.path.exists() {
        bail!(
            "calibration file for task {:?} not found: {}",
            spec.task,
            spec.path.display()
        );
    }
    let samples = match family {
        Family::ClipVision => read_images(&spec.path, limit)?,
        _ => read_jsonl(&spec.path, limit)?,
    };
    if samples.is_empty() {
        bail!(
            "calibration file {} (task {:?}) has no samples",
            spec.path.display(),
            spec.task
        );
    }
    if family == Family::T5 && samples.iter().all(|s| !has_target(s)) {
        tracing::warn!(
            "{} (task {:?}): no sample has a \"target\": the T5 decoder reads only its start \
             token, so every decoder linear is calibrated on one input vector (rank-1 \
             Hessians; GPTQ/E-PMQ there are little better than RTN); give \"input\"/\"target\" \
             pairs",
            spec.path.display(),
            spec.task
        );
    }
    if family != Family::T5 {
        if let Some(Sample::Seq2Seq { .. }) = samples.first() {
            bail!(
                "{}: \"input\"/\"target\" samples are for T5; this model needs \"text\"",
                spec.path.display()
            );
        }
    }
    Ok(samples)
}

/// Turns samples into model batches.
pub struct Batcher {
    family: Family,
    tokenizer: Option<TextTokenizer>,
    images: Option<ClipImageProcessor>,
    decoder_start: u32,
    pad: u32,
}

impl Batcher {
    /// A batcher for the model in `dir` (tokenizer.json for text models, the CLIP processor
    /// for vision), truncating texts to `max_len` tokens.
    pub fn new(dir: &Path, model: &LoadedModel, max_len: usize) -> Result<Self> {
        let family = model.as_block_model().family();
        let (mut decoder_start, mut pad) = (0, 0);
        let mut images = None;
        let mut tokenizer = None;
        match model {
            LoadedModel::ClipVision(m) => {
                images = Some(ClipImageProcessor::from_dir(
                    dir,
                    m.config().image_size as u32,
                )?);
            }
            other => {
                if let LoadedModel::T5(m) = other {
                    decoder_start = m.config().decoder_start_token_id;
                    pad = m.config().pad_token_id;
                }
                let path = dir.join("tokenizer.json");
                tokenizer = Some(
                    TextTokenizer::from_file(&path, max_len)
                        .with_context(|| format!("loading the tokenizer of {}", dir.display()))?,
                );
            }
        }
        Ok(Self {
            family,
            tokenizer,
            images,
            decoder_start,
            pad,
        })
    }

    /// Batches of at most `batch_size` samples.
    pub fn batches(&self, samples: &[Sample], batch_size: usize) -> Result<Vec<Batch>> {
        samples
            .chunks(batch_size.max(1))
            .map(|chunk| self.batch(chunk))
            .collect()
    }

    fn batch(&self, chunk: &[Sample]) -> Result<Batch> {
        if let Some(proc) = &self.images {
            let paths: Vec<&Path> = chunk
                .iter()
                .map(|s| match s {
                    Sample::Image(p) => Ok(p.as_path()),
                    _ => bail!("a CLIP vision model needs image samples"),
                })
                .collect::<Result<_>>()?;
            return Ok(Batch::from_pixels(proc.load_batch(&paths)?));
        }
        let tok = self
            .tokenizer
            .as_ref()
            .expect("text models have a tokenizer");
        let inputs: Vec<&str> = chunk
            .iter()
            .map(|s| match s {
                Sample::Text(t) => Ok(t.as_str()),
                Sample::Seq2Seq { input, .. } => Ok(input.as_str()),
                Sample::Image(_) => bail!("a text model needs text samples"),
            })
            .collect::<Result<_>>()?;
        let mut batch = tok.batch(&inputs)?;
        if self.family == Family::T5 {
            let targets: Vec<&str> = chunk
                .iter()
                .map(|s| match s {
                    Sample::Seq2Seq { target, .. } => target.as_str(),
                    _ => "",
                })
                .collect();
            let decoder: Vec<Vec<u32>> = tok
                .encode(&targets)?
                .into_iter()
                .map(|labels| {
                    let mut d = vec![self.decoder_start];
                    d.extend(labels.iter().take(labels.len().saturating_sub(1)));
                    d
                })
                .collect();
            batch = batch.with_decoder_ids(&decoder, self.pad)?;
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_with_a_bom_and_crlf_reads_and_bad_utf8_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.jsonl");
        std::fs::write(
            &p,
            b"\xEF\xBB\xBF{\"text\": \"a\"}\r\n\r\n{\"text\": \"b\"}\n",
        )
        .unwrap();
        let spec = CalibSpec {
            task: "t".into(),
            path: p.clone(),
        };
        let got = read_samples(&spec, Family::Bert, 10).unwrap();
        assert_eq!(
            got,
            vec![Sample::Text("a".into()), Sample::Text("b".into())]
        );
        std::fs::write(&p, b"{\"text\": \"a\"}\n{\"text\": \"caf\xE9\"}\n").unwrap();
        let err = read_samples(&spec, Family::Bert, 10)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{}:2:", p.display())), "{err}");
        assert!(
            err.contains("not valid UTF-8") && err.contains("0xe9"),
            "{err}"
        );
    }
}
