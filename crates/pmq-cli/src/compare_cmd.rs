//! `pmq compare`: how close two BERT-family models' sentence embeddings are on real texts
//! (e.g. a quantized model against the full-precision expert it should serve). Either model
//! may be a pmq GPTQ checkpoint; it is dequantized first. Models of different hidden sizes are
//! refused, and so is a result that is not a finite number.

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use clap::Args;
use pmq_models::{load_model, BertModel, LoadedModel, Pooling, TextTokenizer};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The model under test (HF directory or pmq GPTQ checkpoint).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// The reference model (HF directory or pmq GPTQ checkpoint).
    #[arg(long, value_name = "DIR")]
    reference: PathBuf,
    /// JSONL file with a "text" field per line (UTF-8).
    #[arg(long, value_name = "FILE")]
    texts: PathBuf,
    /// Compare on at most this many texts (the first ones).
    #[arg(long, default_value_t = 512, value_parser = crate::flag_values::positive)]
    max_texts: usize,
    #[arg(long, default_value_t = 128, value_parser = crate::flag_values::positive)]
    max_seq_len: usize,
    #[arg(long, default_value_t = 32, value_parser = crate::flag_values::positive)]
    batch_size: usize,
}

fn load_bert(dir: &Path, scratch: &Path, which: &str) -> Result<BertModel> {
    if !dir.is_dir() {
        bail!("{which} {} is not a directory", dir.display());
    }
    let dir = if pmq_io::gptq_evidence(dir).is_some() {
        let out = scratch.join(which);
        pmq_formats::gptq_checkpoint::dequantize_checkpoint(dir, &out, false)
            .with_context(|| format!("dequantizing GPTQ checkpoint {}", dir.display()))?;
        out
    } else {
        dir.to_path_buf()
    };
    match load_model(&dir).with_context(|| format!("loading {}", dir.display()))? {
        LoadedModel::Bert(m) => Ok(m),
        _ => bail!(
            "{}: pmq compare works on BERT sentence encoders",
            dir.display()
        ),
    }
}

fn embeddings(
    m: &BertModel,
    tok: &TextTokenizer,
    texts: &[String],
    bs: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::new();
    for chunk in texts.chunks(bs) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let e: Tensor = m.sentence_embedding(&tok.batch(&refs)?, Pooling::Mean)?;
        out.extend(e.to_vec2::<f32>()?);
    }
    Ok(out)
}

/// Fails if an embedding of `which` (`dir`) holds NaN or ±inf (naming the text).
fn check_finite(e: &[Vec<f32>], which: &str, dir: &Path) -> Result<()> {
    if let Some(i) = e.iter().position(|v| v.iter().any(|x| !x.is_finite())) {
        bail!(
            "the {which} {} gives a non-finite sentence embedding for text {} (NaN or ±inf): \
             its weights or activations overflow; no comparison is possible",
            dir.display(),
            i + 1
        );
    }
    Ok(())
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

pub fn run(args: CompareArgs) -> Result<()> {
    let max_texts = args.max_texts;
    let mut texts = Vec::new();
    for (line_no, line) in pmq_pipeline::calib::read_jsonl_lines(&args.texts, "text file")? {
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{line_no}: not JSON", args.texts.display()))?;
        let t = v["text"]
            .as_str()
            .with_context(|| format!("{}:{line_no}: no \"text\" field", args.texts.display()))?;
        texts.push(t.to_string());
        if texts.len() >= max_texts {
            break;
        }
    }
    if texts.is_empty() {
        bail!("{} has no texts", args.texts.display());
    }
    let scratch = pmq_io::TempDir::in_dir(&std::env::temp_dir(), "pmq-compare-")?;
    let model = load_bert(&args.model, scratch.path(), "model")?;
    let reference = load_bert(&args.reference, scratch.path(), "reference")?;
    let (hm, hr) = (model.config().hidden_size, reference.config().hidden_size);
    if hm != hr {
        bail!(
            "the model {} has hidden size {hm} but the reference {} has {hr}: their embeddings \
             cannot be compared (compare a model with the one it was derived from)",
            args.model.display(),
            args.reference.display()
        );
    }
    let (max_seq_len, bs) = (args.max_seq_len, args.batch_size);
    let tok = TextTokenizer::from_file(&args.reference.join("tokenizer.json"), max_seq_len)?;
    let a = embeddings(&model, &tok, &texts, bs)?;
    let b = embeddings(&reference, &tok, &texts, bs)?;
    check_finite(&a, "model", &args.model)?;
    check_finite(&b, "reference", &args.reference)?;
    let cos: Vec<f64> = a.iter().zip(&b).map(|(x, y)| cosine(x, y)).collect();
    let mean = cos.iter().sum::<f64>() / cos.len() as f64;
    let min = cos.iter().cloned().fold(f64::INFINITY, f64::min);
    if !(mean.is_finite() && min.is_finite()) {
        bail!("the cosine similarities are not finite (mean {mean}, min {min}); no result");
    }
    println!(
        "{}",
        serde_json::json!({
            "model": args.model, "reference": args.reference, "texts": cos.len(),
            "mean_cosine": mean, "min_cosine": min,
        })
    );
    Ok(())
}
