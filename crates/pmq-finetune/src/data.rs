//! Tokenised training data and seeded, length-bucketed mini-batches.
//!
//! Each epoch the example order is shuffled with the run's RNG; consecutive pools of
//! `POOL_BATCHES × batch_size` examples are sorted by token length and cut into batches, and
//! the batch order is shuffled again. Every example is seen once per epoch, while a batch pads
//! only to the longest of similar-length texts.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use pmq_models::TextTokenizer;
use pmq_testbed::Example;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Batches per sorting pool.
const POOL_BATCHES: usize = 16;

/// Token ids and labels of a training set.
pub struct Encoded {
    pub ids: Vec<Vec<u32>>,
    pub labels: Vec<u32>,
    pub pad_id: u32,
}

impl Encoded {
    /// Tokenises `examples` (truncated by the tokenizer) and checks their labels.
    pub fn new(tok: &TextTokenizer, examples: &[Example], num_classes: usize) -> Result<Self> {
        if let Some(e) = examples.iter().find(|e| e.label >= num_classes) {
            bail!(
                "example label {} is out of range for {num_classes} classes",
                e.label
            );
        }
        let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
        let mut ids = tok.encode(&texts)?;
        for s in &mut ids {
            if s.is_empty() {
                s.push(tok.pad_id());
            }
        }
        Ok(Self {
            ids,
            labels: examples.iter().map(|e| e.label as u32).collect(),
            pad_id: tok.pad_id(),
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Mean token count.
    pub fn mean_len(&self) -> f64 {
        self.ids.iter().map(Vec::len).sum::<usize>() as f64 / self.ids.len().max(1) as f64
    }

    /// One epoch's batches (indices into the examples).
    pub fn epoch_batches(&self, batch_size: usize, rng: &mut StdRng) -> Vec<Vec<usize>> {
        bucketed_batches(&self.ids, batch_size, rng)
    }

    /// `(ids [b, s] u32, mask [b, s] in dtype, labels [b] u32)` of the given examples.
    pub fn batch(&self, idx: &[usize], dtype: DType) -> Result<(Tensor, Tensor, Tensor)> {
        let seqs: Vec<Vec<u32>> = idx.iter().map(|&i| self.ids[i].clone()).collect();
        let (ids, mask) = pmq_models::pad_sequences(&seqs, self.pad_id)?;
        let labels: Vec<u32> = idx.iter().map(|&i| self.labels[i]).collect();
        let n = labels.len();
        Ok((
            ids,
            mask.to_dtype(dtype)?,
            Tensor::from_vec(labels, n, &Device::Cpu)?,
        ))
    }
}

/// One epoch's batches of the examples whose token sequences are `ids` (see the module
/// documentation).
fn bucketed_batches(ids: &[Vec<u32>], batch_size: usize, rng: &mut StdRng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.shuffle(rng);
    let mut batches = Vec::new();
    for pool in order.chunks(batch_size * POOL_BATCHES) {
        let mut pool = pool.to_vec();
        pool.sort_by_key(|&i| ids[i].len());
        batches.extend(pool.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(rng);
    batches
}

/// Tokenised text-to-text pairs for teacher-forced training: the decoder reads
/// `[decoder_start] + target[..−1]` and is scored on `target` (the tokenizer's end-of-sequence
/// token included).
pub struct Seq2Seq {
    inputs: Vec<Vec<u32>>,
    targets: Vec<Vec<u32>>,
    pad_id: u32,
    start_id: u32,
}

/// One padded batch of [`Seq2Seq`]: encoder ids and mask, decoder ids and mask, labels.
pub struct Seq2SeqBatch {
    pub ids: Tensor,
    pub mask: Tensor,
    pub dec_ids: Tensor,
    pub dec_mask: Tensor,
    pub labels: Tensor,
}

impl Seq2Seq {
    /// Tokenises `pairs` (inputs and targets truncated by `tok`); a target that tokenises to
    /// nothing is refused.
    pub fn new(
        tok: &TextTokenizer,
        pairs: &[pmq_eval::tasks::TextPair],
        start_id: u32,
    ) -> Result<Self> {
        let inputs: Vec<&str> = pairs.iter().map(|p| p.input.as_str()).collect();
        let targets: Vec<&str> = pairs.iter().map(|p| p.target.as_str()).collect();
        let mut inputs = tok.encode(&inputs)?;
        for s in &mut inputs {
            if s.is_empty() {
                s.push(tok.pad_id());
            }
        }
        let targets = tok.encode(&targets)?;
        if let Some(i) = targets.iter().position(Vec::is_empty) {
            bail!(
                "training pair {} has a target that tokenises to nothing: {:?}",
                i + 1,
                pairs[i].target
            );
        }
        Ok(Self {
            inputs,
            targets,
            pad_id: tok.pad_id(),
            start_id,
        })
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// One epoch's batches (indices into the pairs), bucketed by input length.
    pub fn epoch_batches(&self, batch_size: usize, rng: &mut StdRng) -> Vec<Vec<usize>> {
        bucketed_batches(&self.inputs, batch_size, rng)
    }

    /// The padded batch of the given pairs; masks in `dtype`.
    pub fn batch(&self, idx: &[usize], dtype: DType) -> Result<Seq2SeqBatch> {
        let enc: Vec<Vec<u32>> = idx.iter().map(|&i| self.inputs[i].clone()).collect();
        let labels: Vec<Vec<u32>> = idx.iter().map(|&i| self.targets[i].clone()).collect();
        let dec: Vec<Vec<u32>> = labels
            .iter()
            .map(|t| {
                std::iter::once(self.start_id)
                    .chain(t[..t.len() - 1].iter().copied())
                    .collect()
            })
            .collect();
        let (ids, mask) = pmq_models::pad_sequences(&enc, self.pad_id)?;
        let (dec_ids, dec_mask) = pmq_models::pad_sequences(&dec, self.pad_id)?;
        let (labels, _) = pmq_models::pad_sequences(&labels, self.pad_id)?;
        Ok(Seq2SeqBatch {
            ids,
            mask: mask.to_dtype(dtype)?,
            dec_ids,
            dec_mask: dec_mask.to_dtype(dtype)?,
            labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn encoded(lens: &[usize]) -> Encoded {
        Encoded {
            ids: lens.iter().map(|&l| vec![1; l]).collect(),
            labels: vec![0; lens.len()],
            pad_id: 0,
        }
    }

    #[test]
    fn every_example_once_per_epoch_and_seeded() {
        let lens: Vec<usize> = (0..100).map(|i| 1 + (i * 37) % 50).collect();
        let e = encoded(&lens);
        let a = e.epoch_batches(8, &mut StdRng::seed_from_u64(3));
        let b = e.epoch_batches(8, &mut StdRng::seed_from_u64(3));
        let c = e.epoch_batches(8, &mut StdRng::seed_from_u64(4));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut all: Vec<usize> = a.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(a.len(), 13);
    }

    #[test]
    fn seq2seq_batches_shift_the_targets_right() {
        let d = Seq2Seq {
            inputs: vec![vec![5, 6, 1], vec![7, 1]],
            targets: vec![vec![8, 9, 1], vec![4, 1]],
            pad_id: 0,
            start_id: 0,
        };
        let b = d.batch(&[0, 1], DType::F32).unwrap();
        assert_eq!(
            b.dec_ids.to_vec2::<u32>().unwrap(),
            vec![vec![0, 8, 9], vec![0, 4, 0]]
        );
        assert_eq!(
            b.labels.to_vec2::<u32>().unwrap(),
            vec![vec![8, 9, 1], vec![4, 1, 0]]
        );
        assert_eq!(
            b.dec_mask.to_vec2::<f32>().unwrap(),
            vec![vec![1.0; 3], vec![1.0, 1.0, 0.0]]
        );
    }

    #[test]
    fn batches_are_padded_with_a_mask() {
        let e = encoded(&[2, 4]);
        let (ids, mask, labels) = e.batch(&[0, 1], DType::F32).unwrap();
        assert_eq!(ids.dims(), [2, 4]);
        assert_eq!(
            mask.to_vec2::<f32>().unwrap(),
            vec![vec![1.0, 1.0, 0.0, 0.0], vec![1.0; 4]]
        );
        assert_eq!(labels.to_vec1::<u32>().unwrap(), vec![0, 0]);
    }
}
