//! Text-to-text data: JSONL lines `{"input": …, "target": …}` (the format `pmq quantize` reads
//! as T5 calibration data). A model is scored by exact match: its greedy decoding of `input`,
//! detokenized, equals `target` as the model's tokenizer writes it back (`decode(encode(target))`,
//! special tokens skipped, surrounding whitespace trimmed), so normalisation the tokenizer
//! cannot represent is not counted against the model.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// One input/target pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextPair {
    pub input: String,
    pub target: String,
}

/// A text-to-text task.
#[derive(Clone, Debug, PartialEq)]
pub struct TextToTextTask {
    pub name: String,
    pub examples: Vec<TextPair>,
}

impl TextToTextTask {
    /// Reads `path`; every line needs string fields `input` and `target`.
    pub fn from_jsonl(name: &str, path: &Path) -> Result<Self> {
        let mut examples = Vec::new();
        for (n, line) in super::jsonl::read_lines(path, "text-to-text file")? {
            let v: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("{}:{n}: not a JSON object", path.display()))?;
            let field = |k: &str| v.get(k).and_then(|t| t.as_str()).map(str::to_string);
            match (field("input"), field("target")) {
                (Some(input), Some(target)) => examples.push(TextPair { input, target }),
                _ => bail!(
                    "{}:{n}: a text-to-text line needs string fields \"input\" and \"target\"",
                    path.display()
                ),
            }
        }
        if examples.is_empty() {
            bail!("{}: no examples", path.display());
        }
        Ok(Self {
            name: name.to_string(),
            examples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pairs_and_names_bad_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.jsonl");
        std::fs::write(
            &p,
            "{\"input\": \"a b\", \"target\": \"c\"}\n\n{\"input\": \"d\", \"target\": \"\"}\n",
        )
        .unwrap();
        let t = TextToTextTask::from_jsonl("t", &p).unwrap();
        assert_eq!(t.examples.len(), 2);
        assert_eq!(t.examples[0].input, "a b");
        std::fs::write(
            &p,
            "{\"input\": \"a\", \"target\": \"c\"}\n{\"input\": \"a\"}\n",
        )
        .unwrap();
        let e = TextToTextTask::from_jsonl("t", &p).unwrap_err().to_string();
        assert!(e.contains("t.jsonl:2") && e.contains("target"), "{e}");
    }
}
