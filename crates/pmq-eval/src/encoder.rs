//! Sentence embeddings of a BERT model directory: `e = Σ_t m_t h_t / Σ_t m_t`, the mean of the
//! last hidden states over the attention mask `m` (sentence-transformers' mean pooling, without
//! its final normalisation), with the directory's `tokenizer.json` truncated to `max_seq_len`
//! tokens and padding switched off ([`pmq_models::TextTokenizer`]).
//!
//! A pmq GPTQ checkpoint (a directory with `quantize_config.json`) is first dequantized into a
//! temporary directory, which lives as long as the [`Encoder`].

use crate::model_dir::ModelDir;
use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use pmq_models::{BertModel, LoadedModel, Pooling, TextTokenizer};
use std::path::{Path, PathBuf};

/// A loaded BERT encoder with its tokenizer.
pub struct Encoder {
    model: BertModel,
    tokenizer: TextTokenizer,
    source: PathBuf,
    _model_dir: ModelDir,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("source", &self.source)
            .field("tokenizer", &self.tokenizer)
            .finish()
    }
}

impl Encoder {
    /// Loads the BERT model in `dir` (HF directory or pmq GPTQ checkpoint) and its
    /// `tokenizer.json` with truncation to `max_seq_len` tokens.
    pub fn open(dir: &Path, max_seq_len: usize) -> Result<Self> {
        let md = ModelDir::open(dir)?;
        let model = match md.load()? {
            LoadedModel::Bert(m) => m,
            _ => bail!(
                "{}: text classification works on BERT sentence encoders (images: a CLIP vision \
                 tower; text-to-text: T5)",
                dir.display()
            ),
        };
        let tok_path = md.tokenizer_file()?;
        let tokenizer = TextTokenizer::from_file(&tok_path, max_seq_len)
            .with_context(|| format!("loading tokenizer {}", tok_path.display()))?;
        Ok(Self {
            model,
            tokenizer,
            source: dir.to_path_buf(),
            _model_dir: md,
        })
    }

    /// The model.
    pub fn model(&self) -> &BertModel {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Hidden size of the embeddings.
    pub fn hidden(&self) -> usize {
        self.model.config().hidden_size
    }

    /// The directory the encoder was opened from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Mean-pooled embeddings of `texts`, in input order. Texts are processed in batches of
    /// similar token length (sorted), so little padding is computed; `progress` advances by one
    /// per text.
    pub fn embed(
        &self,
        texts: &[&str],
        batch_size: usize,
        progress: Option<&ProgressBar>,
    ) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let ids = self.tokenizer.encode(texts)?;
        let pad = self.tokenizer.pad_id();
        let mut out = vec![Vec::new(); texts.len()];
        for (chunk, seqs) in length_sorted_batches(&ids, batch_size, pad) {
            let batch = pmq_models::Batch::from_token_ids(&seqs, pad)?;
            let emb = self.model.sentence_embedding(&batch, Pooling::Mean)?;
            for (&i, row) in chunk.iter().zip(emb.to_vec2::<f32>()?) {
                if row.iter().any(|v| !v.is_finite()) {
                    bail!(
                        "the model {} gives a non-finite sentence embedding (NaN or ±inf) for \
                         text {:?}: its weights or activations overflow; no accuracy can be measured",
                        self.source.display(),
                        texts[i].chars().take(60).collect::<String>()
                    );
                }
                out[i] = row;
            }
            if let Some(p) = progress {
                p.inc(chunk.len() as u64);
            }
        }
        Ok(out)
    }
}

/// Batches of at most `batch_size` token sequences of similar length (sorted by length, then
/// index), so little padding is computed: each batch's indices into `ids` and its sequences
/// (an empty one replaced by a single `pad`).
pub(crate) fn length_sorted_batches(
    ids: &[Vec<u32>],
    batch_size: usize,
    pad: u32,
) -> Vec<(Vec<usize>, Vec<Vec<u32>>)> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| (ids[i].len(), i));
    order
        .chunks(batch_size.max(1))
        .map(|chunk| {
            let seqs = chunk
                .iter()
                .map(|&i| {
                    if ids[i].is_empty() {
                        vec![pad]
                    } else {
                        ids[i].clone()
                    }
                })
                .collect();
            (chunk.to_vec(), seqs)
        })
        .collect()
}
