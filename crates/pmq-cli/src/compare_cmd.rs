//! `pmq compare`: how close two BERT-family models' sentence embeddings are on real texts
//! (e.g. a quantized model against the full-precision expert it should serve). Either model
//! may be a pmq GPTQ checkpoint; it is dequantized first.

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
    /// JSONL file with a "text" field per line.
    #[arg(long, value_name = "FILE")]
    texts: PathBuf,
    #[arg(long, default_value_t = 512)]
    max_texts: usize,
    #[arg(long, default_value_t = 128)]
    max_seq_len: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

fn load_bert(dir: &Path, scratch: &Path) -> Result<BertModel> {
    let dir = if dir.join("quantize_config.json").is_file() {
        let out = scratch.join(dir.file_name().unwrap_or_default());
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
    for chunk in texts.chunks(bs.max(1)) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let e: Tensor = m.sentence_embedding(&tok.batch(&refs)?, Pooling::Mean)?;
        out.extend(e.to_vec2::<f32>()?);
    }
    Ok(out)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

pub fn run(args: CompareArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.texts)
        .with_context(|| format!("reading {}", args.texts.display()))?;
    let mut texts = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", args.texts.display(), i + 1))?;
        let t = v["text"]
            .as_str()
            .with_context(|| format!("{}:{}: no \"text\" field", args.texts.display(), i + 1))?;
        texts.push(t.to_string());
        if texts.len() >= args.max_texts {
            break;
        }
    }
    if texts.is_empty() {
        bail!("{} has no texts", args.texts.display());
    }
    let scratch = tempfile::tempdir()?;
    let model = load_bert(&args.model, scratch.path())?;
    let reference = load_bert(&args.reference, scratch.path())?;
    let tok = TextTokenizer::from_file(&args.reference.join("tokenizer.json"), args.max_seq_len)?;
    let a = embeddings(&model, &tok, &texts, args.batch_size)?;
    let b = embeddings(&reference, &tok, &texts, args.batch_size)?;
    let cos: Vec<f64> = a.iter().zip(&b).map(|(x, y)| cosine(x, y)).collect();
    let mean = cos.iter().sum::<f64>() / cos.len() as f64;
    let min = cos.iter().cloned().fold(f64::INFINITY, f64::min);
    println!(
        "{}",
        serde_json::json!({
            "model": args.model, "reference": args.reference, "texts": cos.len(),
            "mean_cosine": mean, "min_cosine": min,
        })
    );
    Ok(())
}
