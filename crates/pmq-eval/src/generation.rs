//! Exact-match scoring of a T5 model on text-to-text tasks: greedy decoding
//! ([`pmq_models::T5Model::generate`]) of each input, detokenized without special tokens and
//! trimmed, equals the target as the tokenizer writes it back, `decode(encode(target))`.
//!
//! By default decoding runs for one step more than the longest tokenized target has tokens,
//! and an output counts only if the model stopped (emitted its end-of-sequence token) within
//! them: a model that reproduces a target but does not stop there — or pads it with other
//! special tokens — is scored wrong. With an explicit `max_new_tokens` decoding is cut there
//! and the cut output is compared (a cheaper, more lenient score for capped runs).

use crate::model_dir::ModelDir;
use crate::tasks::TextPair;
use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use pmq_models::{Batch, LoadedModel, T5Model, TextTokenizer};
use std::path::{Path, PathBuf};

/// The longest target a tokenizer may produce (tokens), for the target round trip.
const MAX_TARGET_TOKENS: usize = 4096;

/// A loaded T5 model with its tokenizer.
pub struct Generator {
    model: T5Model,
    inputs: TextTokenizer,
    targets: TextTokenizer,
    source: PathBuf,
    _model_dir: ModelDir,
}

impl Generator {
    /// Loads the T5 model in `dir` (HF directory or pmq GPTQ checkpoint) and its
    /// `tokenizer.json`; inputs are truncated to `max_seq_len` tokens.
    pub fn open(dir: &Path, max_seq_len: usize) -> Result<Self> {
        let md = ModelDir::open(dir)?;
        let model = match md.load()? {
            LoadedModel::T5(m) => m,
            _ => bail!(
                "{}: text-to-text tasks need an encoder-decoder (T5ForConditionalGeneration)",
                dir.display()
            ),
        };
        let tok = md.tokenizer_file()?;
        let load = |n| {
            TextTokenizer::from_file(&tok, n)
                .with_context(|| format!("loading tokenizer {}", tok.display()))
        };
        Ok(Self {
            model,
            inputs: load(max_seq_len)?,
            targets: load(MAX_TARGET_TOKENS)?,
            source: dir.to_path_buf(),
            _model_dir: md,
        })
    }

    /// Whether each pair's greedy decoding matches its target; `batch_size` inputs per
    /// decoding batch (sorted by length), `max_new_tokens` cuts decoding there (see the module
    /// documentation).
    pub fn exact_matches(
        &self,
        pairs: &[TextPair],
        batch_size: usize,
        max_new_tokens: Option<usize>,
        progress: Option<&ProgressBar>,
    ) -> Result<Vec<bool>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let targets: Vec<&str> = pairs.iter().map(|p| p.target.as_str()).collect();
        let target_ids = self.targets.encode(&targets)?;
        let longest = target_ids.iter().map(Vec::len).max().unwrap_or(0);
        let (steps, must_stop) = match max_new_tokens {
            Some(n) => (n, false),
            None => (longest + 1, true),
        };
        let expected: Vec<String> = target_ids
            .iter()
            .map(|ids| Ok(self.targets.decode(ids, true)?.trim().to_string()))
            .collect::<Result<_>>()?;
        let inputs: Vec<&str> = pairs.iter().map(|p| p.input.as_str()).collect();
        let ids = self.inputs.encode(&inputs)?;
        let pad = self.inputs.pad_id();
        let mut out = vec![false; pairs.len()];
        for (chunk, seqs) in crate::encoder::length_sorted_batches(&ids, batch_size, pad) {
            let generated = self
                .model
                .generate(&Batch::from_token_ids(&seqs, pad)?, steps)
                .with_context(|| format!("decoding with {}", self.source.display()))?;
            for (&i, g) in chunk.iter().zip(generated) {
                // fewer tokens than steps: decoding ended at the end-of-sequence token
                let stopped = g.len() < steps;
                out[i] =
                    (stopped || !must_stop) && self.targets.decode(&g, true)?.trim() == expected[i];
            }
            if let Some(p) = progress {
                p.inc(chunk.len() as u64);
            }
        }
        Ok(out)
    }
}
