//! Pipeline-test helpers on top of the shared fixtures of `pmq-testkit` (tiny checkpoints of
//! every family, calibration files).
#![allow(dead_code, unused_imports)]

use pmq_models::{Batch, BlockModel, State};
pub use pmq_testkit::{write_calib, write_model, Fam, ALL};
use std::path::Path;

/// The calibration batches the pipeline builds from `calib` for the model in `dir`.
pub fn calib_batches(dir: &Path, calib: &str, n: usize, batch_size: usize) -> Vec<Batch> {
    use pmq_pipeline::calib::{read_samples, Batcher};
    let loaded = pmq_models::load_model(dir).unwrap();
    let family = loaded.as_block_model().family();
    let spec: pmq_pipeline::CalibSpec = calib.parse().unwrap();
    let samples = read_samples(&spec, family, n).unwrap();
    Batcher::new(dir, &loaded, 128)
        .unwrap()
        .batches(&samples, batch_size)
        .unwrap()
}

/// A fixed evaluation batch for `fam` (text, seq2seq or pixels).
pub fn eval_batch(fam: Fam, dir: &Path, root: &Path) -> Batch {
    let spec = write_calib(fam, root, "eval", 3, 999);
    calib_batches(dir, &spec, 3, 3).remove(0)
}

/// The embedded states of `batches`.
pub fn embed_all(model: &dyn BlockModel, batches: &[Batch]) -> Vec<State> {
    batches.iter().map(|b| model.embed(b).unwrap()).collect()
}
