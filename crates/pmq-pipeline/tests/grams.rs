//! RegMean's Gram files: every linear of every family covered, shared inputs stored once, and
//! the Gram of a block's first input equal to the mean outer product of the hidden states
//! entering it (computed here from the model's own block outputs, not through the capture).

mod common;

use candle_core::{DType, IndexOp};
use common::{calib_batches, embed_all, write_calib, write_model, Fam, ALL};
use pmq_merge::gram_file::GramFile;
use pmq_pipeline::grams::{collect_grams, GramSettings};

fn settings() -> GramSettings {
    GramSettings {
        samples: 6,
        batch_size: 4,
        max_seq_len: 128,
    }
}

#[test]
fn every_linear_has_a_gram_and_shared_inputs_are_stored_once() {
    for fam in ALL {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("model");
        write_model(fam, &dir, 3);
        let spec = write_calib(fam, root.path(), "task", 6, 5);
        let out = root.path().join("g.safetensors");
        let s = collect_grams(&dir, &spec.parse().unwrap(), &settings(), &out).unwrap();
        let file = GramFile::open(&out).unwrap();
        let model = pmq_models::load_model(&dir).unwrap().into_block_model();
        let linears = model.linears();
        assert_eq!(s.linears, linears.len(), "{fam:?}");
        assert!(s.entries < s.linears, "{fam:?}: q/k/v share one input");
        for l in &linears {
            let g = file
                .gram(&l.weight_name())
                .unwrap()
                .unwrap_or_else(|| panic!("{fam:?}: no Gram for {}", l.name));
            assert_eq!(g.nrows(), l.in_features);
            for i in 0..g.nrows() {
                assert!(g[(i, i)] >= 0.0);
                for j in 0..i {
                    assert!((g[(i, j)] - g[(j, i)]).abs() <= 1e-6 * (1.0 + g[(i, i)]));
                }
            }
        }
    }
}

/// `XᵀX / n` over the real tokens of `states` (hidden `[b, s, d]`, mask `[b, s]`).
fn mean_gram(states: &[pmq_models::State]) -> Vec<Vec<f64>> {
    let d = states[0].hidden().dim(2).unwrap();
    let mut g = vec![vec![0.0f64; d]; d];
    let mut n = 0usize;
    for s in states {
        let h = s.hidden().to_dtype(DType::F32).unwrap();
        let m: Vec<Vec<f32>> = s.token_mask().to_vec2().unwrap();
        for (b, row) in m.iter().enumerate() {
            for (t, &keep) in row.iter().enumerate() {
                if keep == 0.0 {
                    continue;
                }
                let x: Vec<f32> = h.i((b, t)).unwrap().to_vec1().unwrap();
                for i in 0..d {
                    for j in 0..d {
                        g[i][j] += x[i] as f64 * x[j] as f64;
                    }
                }
                n += 1;
            }
        }
    }
    g.iter()
        .map(|r| r.iter().map(|v| v / n as f64).collect())
        .collect()
}

#[test]
fn a_blocks_first_gram_is_the_mean_outer_product_of_its_input() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("model");
    write_model(Fam::Bert, &dir, 4);
    let spec = write_calib(Fam::Bert, root.path(), "task", 6, 9);
    let out = root.path().join("g.safetensors");
    collect_grams(&dir, &spec.parse().unwrap(), &settings(), &out).unwrap();
    let file = GramFile::open(&out).unwrap();
    let model = pmq_models::load_model(&dir).unwrap().into_block_model();
    let batches = calib_batches(&dir, &spec, 6, 4);
    let mut states = embed_all(&*model, &batches);
    for block in 0..model.num_blocks() {
        let first = &model.block_groups(block).unwrap()[0][0];
        let want = mean_gram(&states);
        let got = file.gram(&first.weight_name()).unwrap().unwrap();
        let scale = (0..got.nrows()).map(|i| want[i][i]).fold(0.0, f64::max);
        for (i, row) in want.iter().enumerate() {
            for (j, w) in row.iter().enumerate() {
                assert!(
                    (got[(i, j)] - w).abs() <= 1e-5 * scale,
                    "block {block} ({}): G[{i},{j}] = {} vs {w}",
                    first.name,
                    got[(i, j)]
                );
            }
        }
        states = states
            .iter()
            .map(|s| model.block_forward(block, s, None).unwrap())
            .collect();
    }
}
