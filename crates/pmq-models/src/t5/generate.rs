//! T5 inference outside the block-wise interface: the final encoder output ([`T5Model::encode`])
//! and greedy decoding ([`T5Model::generate`]).

use super::T5Model;
use crate::batch::Batch;
use crate::capture::Capturer;
use crate::error::Result;
use crate::model::BlockModel;
use crate::state::token_mask_and_rows;
use candle_core::{Device, Tensor, D};

impl T5Model {
    /// Final encoder output `[b, s, d_model]` (after `encoder.final_layer_norm`).
    pub fn encode(&self, batch: &Batch) -> Result<Tensor> {
        let mut b = batch.clone();
        b.decoder_input_ids = None;
        let mut s = self.embed(&b)?;
        for i in 0..self.cfg.num_layers {
            s = self
                .encoder_block(i, &s, &mut Capturer::new(None), None)?
                .into_state()?;
        }
        self.rms(&s.hidden, &self.enc_final_ln)
    }

    /// Greedy decoding: for each input sequence, up to `max_new_tokens` tokens generated after
    /// `decoder_start_token_id`, stopping at `eos_token_id` (neither the start token nor the
    /// eos token is included in the result).
    pub fn generate(&self, batch: &Batch, max_new_tokens: usize) -> Result<Vec<Vec<u32>>> {
        let enc_out = self.encode(batch)?;
        let (b, s, _) = enc_out.dims3()?;
        let (enc_mask, enc_rows) = token_mask_and_rows(batch.attention_mask.as_ref(), b, s)?;
        let mut seqs: Vec<Vec<u32>> = vec![vec![self.cfg.decoder_start_token_id]; b];
        let mut done = vec![false; b];
        for _ in 0..max_new_tokens {
            let ids = Tensor::new(seqs.clone(), &Device::Cpu)?;
            let mut st = self.decoder_state(&enc_out, &enc_mask, enc_rows.clone(), &ids, None)?;
            for i in self.cfg.num_layers..self.layers.len() {
                st = self
                    .decoder_block(i, &st, &mut Capturer::new(None), None)?
                    .into_state()?;
            }
            let t = st.hidden.dim(1)?;
            let last = st.hidden.narrow(1, t - 1, 1)?.contiguous()?;
            let logits = self.logits(&last)?.squeeze(1)?;
            let next: Vec<u32> = logits.argmax(D::Minus1)?.to_vec1()?;
            for (k, tok) in next.into_iter().enumerate() {
                if done[k] {
                    seqs[k].push(self.cfg.pad_token_id);
                } else {
                    seqs[k].push(tok);
                    done[k] = tok == self.cfg.eos_token_id;
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
        }
        Ok(seqs
            .into_iter()
            .map(|s| {
                s[1..]
                    .iter()
                    .copied()
                    .take_while(|&t| t != self.cfg.eos_token_id)
                    .collect()
            })
            .collect())
    }
}
