//! Streamed models (`load_model_streamed`): the linears stay in the checkpoint until their
//! block is loaded, and every result is that of the model loaded whole.

use candle_core::{DType, Device, Tensor};
use pmq_models::{load_model, load_model_streamed, Batch, BlockModel, LoadedModel};
use pmq_testkit::families::{write_model, Fam, ALL};

/// A tiny batch the family reads.
fn batch(model: &LoadedModel) -> Batch {
    match model {
        LoadedModel::ClipVision(m) => {
            let c = m.config();
            let n = 2 * c.num_channels * c.image_size * c.image_size;
            let px: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 251) as f32 / 125.0 - 1.0)
                .collect();
            let px = Tensor::from_vec(
                px,
                (2, c.num_channels, c.image_size, c.image_size),
                &Device::Cpu,
            )
            .unwrap();
            Batch::from_pixels(px)
        }
        LoadedModel::T5(_) => Batch::from_token_ids(&[vec![5, 6, 7, 1], vec![8, 1]], 0)
            .unwrap()
            .with_decoder_ids(&[vec![0, 9, 10], vec![0, 11]], 0)
            .unwrap(),
        _ => Batch::from_token_ids(&[vec![2, 5, 6, 7, 3], vec![2, 8, 3]], 0).unwrap(),
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Half of every weight of `block`, as a stand-in for its quantized version.
fn replace_block(model: &mut dyn BlockModel, block: usize) {
    for l in model.block_groups(block).unwrap().into_iter().flatten() {
        let w = model.linear_weight(&l.name).unwrap();
        model
            .set_linear_weight(&l.name, (w * 0.5).unwrap())
            .unwrap();
    }
}

#[test]
fn a_streamed_model_computes_what_the_whole_model_computes() {
    for fam in ALL {
        let d = tempfile::tempdir().unwrap();
        write_model(fam, d.path(), 3);
        let whole = load_model(d.path()).unwrap();
        let b = batch(&whole);
        let mut whole = whole.into_block_model();
        let mut streamed = load_model_streamed(d.path()).unwrap().into_block_model();
        // without any block loaded (each weight read for its use) ...
        assert_eq!(
            bits(&whole.forward(&b).unwrap()),
            bits(&streamed.forward(&b).unwrap()),
            "{fam:?}"
        );
        // ... and the layer-wise way: load, replace, run, unload, block by block
        let mut s_whole = whole.embed(&b).unwrap();
        let mut s_streamed = streamed.embed(&b).unwrap();
        for block in 0..whole.num_blocks() {
            streamed.load_block(block).unwrap();
            for m in [&mut whole, &mut streamed] {
                replace_block(m.as_mut(), block);
            }
            s_whole = whole.block_forward(block, &s_whole, None).unwrap();
            s_streamed = streamed.block_forward(block, &s_streamed, None).unwrap();
            streamed.unload_block(block).unwrap();
            // the whole model keeps what it was given; unloading is for streamed models only
            whole.unload_block(block).unwrap();
            assert_eq!(
                bits(s_whole.hidden()),
                bits(s_streamed.hidden()),
                "{fam:?} block {block}"
            );
        }
        assert_eq!(
            bits(&whole.head(&s_whole).unwrap()),
            bits(&streamed.head(&s_streamed).unwrap()),
            "{fam:?}"
        );
        // a replaced weight that was unloaded is gone, and saying so names the linear
        let first = &streamed.block_groups(0).unwrap()[0][0].name;
        let e = streamed.linear_weight(first).unwrap_err().to_string();
        assert!(e.contains(first.as_str()) && e.contains("unloaded"), "{e}");
        assert!(streamed.forward(&b).is_err(), "{fam:?}");
        // while the whole model still runs on its replaced weights
        whole.forward(&b).unwrap();
    }
}

#[test]
fn unloading_an_unchanged_block_gives_the_checkpoint_back() {
    let d = tempfile::tempdir().unwrap();
    write_model(Fam::LlamaGqa, d.path(), 5);
    let whole = load_model(d.path()).unwrap();
    let b = batch(&whole);
    let whole = whole.into_block_model();
    let mut streamed = load_model_streamed(d.path()).unwrap().into_block_model();
    let expected = bits(&whole.forward(&b).unwrap());
    for block in 0..streamed.num_blocks() {
        streamed.load_block(block).unwrap();
        streamed.unload_block(block).unwrap();
        // loading twice is harmless
        streamed.load_block(block).unwrap();
        streamed.load_block(block).unwrap();
    }
    assert_eq!(bits(&streamed.forward(&b).unwrap()), expected);
    for block in 0..streamed.num_blocks() {
        streamed.unload_block(block).unwrap();
    }
    assert_eq!(bits(&streamed.forward(&b).unwrap()), expected);
    assert!(streamed.load_block(streamed.num_blocks()).is_err());
}

#[test]
fn a_streamed_model_checks_its_weights_when_it_is_loaded() {
    // a NaN in the last block's last linear is found at load time, not when the block runs
    let d = tempfile::tempdir().unwrap();
    write_model(Fam::Bert, d.path(), 1);
    let path = d.path().join("model.safetensors");
    let store = pmq_io::TensorStore::open_dir(d.path()).unwrap();
    let name = "encoder.layer.1.output.dense.weight";
    let mut tensors: Vec<(String, pmq_io::Dtype, Vec<usize>, Vec<u8>)> = store
        .names()
        .into_iter()
        .map(|n| {
            let info = store.info(&n).unwrap();
            let mut v = store.read_f32(&n).unwrap();
            if n == name {
                v[3] = f32::NAN;
            }
            (
                n.clone(),
                pmq_io::Dtype::F32,
                info.shape.clone(),
                pmq_io::f32_bytes(&v),
            )
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    drop(store);
    pmq_io::write_safetensors(&path, &tensors, None).unwrap();
    let e = load_model_streamed(d.path()).unwrap_err().to_string();
    assert!(e.contains(name) && e.contains("NaN"), "{e}");
}
