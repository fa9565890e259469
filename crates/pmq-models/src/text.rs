//! Text inputs through HF `tokenizer.json` (the `tokenizers` crate).
//!
//! Padding configured inside `tokenizer.json` is always switched off (all-MiniLM-L6-v2 ships
//! with fixed padding to 128, which would otherwise leak `[PAD]` tokens into mean pooling);
//! batches are padded by [`crate::Batch`] with an explicit attention mask, and truncation is set
//! to the `max_len` chosen by the caller.

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::ids::pad_sequences;
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationParams};

/// A tokenizer with padding disabled and an explicit truncation length.
#[derive(Clone)]
pub struct TextTokenizer {
    tok: Tokenizer,
    path: PathBuf,
    max_len: usize,
    pad_id: u32,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .field("max_len", &self.max_len)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, disables its padding (batches are right-padded with an
    /// attention mask instead) and truncates to `max_len` tokens (special tokens included)
    /// the way the file says (strategy, direction, stride). A `max_len` shorter than the
    /// special tokens the tokenizer adds to every text is refused.
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        let err = |msg: String| Error::Tokenizer {
            path: path.to_path_buf(),
            msg,
        };
        if max_len == 0 {
            return Err(err("max_len must be > 0".into()));
        }
        if !path.is_file() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "tokenizer file not found",
                ),
            });
        }
        let mut tok = Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        let pad_id = tok
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| tok.token_to_id("[PAD]"))
            .or_else(|| tok.token_to_id("<pad>"))
            .unwrap_or(0);
        tok.with_padding(None);
        // the truncation length must hold the special tokens the post-processor adds to every
        // text (tokenizers' `with_truncation` underflows otherwise)
        let added = tok
            .get_post_processor()
            .map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, false));
        if max_len < added {
            return Err(err(format!(
                "a truncation length of {max_len} cannot hold the {added} special tokens the \
                 tokenizer adds to every text; use more than {added} to keep any text"
            )));
        }
        // tokenizer.json's own truncation strategy, direction and stride are kept; the length
        // is the caller's (as transformers' `max_length=` overrides the file's)
        let truncation = match tok.get_truncation() {
            Some(t) => TruncationParams {
                max_length: max_len,
                ..t.clone()
            },
            None => TruncationParams {
                max_length: max_len,
                ..Default::default()
            },
        };
        tok.with_truncation(Some(truncation))
            .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            tok,
            path: path.to_path_buf(),
            max_len,
            pad_id,
        })
    }

    /// The padding token id (from the tokenizer's padding config, `[PAD]` or `<pad>`, else 0).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The truncation length.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.tok
    }

    fn encodings(&self, texts: &[&str]) -> Result<Vec<tokenizers::Encoding>> {
        self.tok
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                msg: e.to_string(),
            })
    }

    /// Token ids (with special tokens, truncated, unpadded) of each text.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        Ok(self
            .encodings(texts)?
            .iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    /// A right-padded batch with attention mask and token type ids.
    pub fn batch(&self, texts: &[&str]) -> Result<Batch> {
        let enc = self.encodings(texts)?;
        let ids: Vec<Vec<u32>> = enc.iter().map(|e| e.get_ids().to_vec()).collect();
        let types: Vec<Vec<u32>> = enc.iter().map(|e| e.get_type_ids().to_vec()).collect();
        let mut batch = Batch::from_token_ids(&ids, self.pad_id)?;
        batch.token_type_ids = Some(pad_sequences(&types, 0)?.0);
        Ok(batch)
    }

    /// Decodes ids to text.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.tok
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                msg: e.to_string(),
            })
    }
}
