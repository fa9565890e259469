//! A corrupt GPTQ checkpoint is refused with the file and tensor named, never dequantized into
//! garbage: non-finite scales, and qweight/qzeros/scales/g_idx/bias shapes or dtypes that do not
//! agree.

use pmq_core::packing::CheckpointFormat;
use pmq_core::{QuantGrid, QuantizedLayer, ScalePrecision};
use pmq_formats::gptq_checkpoint::{dequantize_checkpoint, write_gptq, GptqReader, GptqSettings};
use pmq_formats::{Destination, PackedLinear, QuantizedModel};
use pmq_io::{encode_f32, write_safetensors, Dtype, TensorStore};
use std::collections::BTreeMap;
use std::path::Path;

/// A GPTQ checkpoint of one 8×32 linear (4 bits, group 16, symmetric) plus an embedding.
fn write_checkpoint(root: &Path) -> std::path::PathBuf {
    let src_dir = root.join("src");
    std::fs::create_dir_all(&src_dir).unwrap();
    std::fs::write(src_dir.join("config.json"), r#"{"model_type":"bert"}"#).unwrap();
    let w: Vec<f32> = (0..8 * 32)
        .map(|i| ((i * 7) % 13) as f32 / 13.0 - 0.5)
        .collect();
    write_safetensors(
        &src_dir.join("model.safetensors"),
        &[
            (
                "l.weight".to_string(),
                Dtype::F32,
                vec![8, 32],
                encode_f32(Dtype::F32, &w).unwrap(),
            ),
            (
                "l.bias".to_string(),
                Dtype::F32,
                vec![8],
                encode_f32(Dtype::F32, &[0.0; 8]).unwrap(),
            ),
            (
                "emb.weight".to_string(),
                Dtype::F32,
                vec![4, 8],
                encode_f32(Dtype::F32, &[0.25; 32]).unwrap(),
            ),
        ],
        None,
    )
    .unwrap();
    let src = TensorStore::open_dir(&src_dir).unwrap();
    let grid = QuantGrid::new(4, true, 16, ScalePrecision::F16).unwrap();
    let wm = faer::Mat::from_fn(8, 32, |r, c| w[r * 32 + c] as f64);
    let q: QuantizedLayer = pmq_core::rtn::rtn(wm.as_ref(), &grid).unwrap();
    let layers = BTreeMap::from([("l".to_string(), PackedLinear::from(q))]);
    let settings = GptqSettings {
        bits: 4,
        group_size: 16,
        sym: true,
        desc_act: false,
        static_groups: false,
        true_sequential: true,
        damp_percent: 0.01,
        format: CheckpointFormat::V1,
        quantizer: "pmq:test".into(),
    };
    let out = root.join("gptq");
    write_gptq(
        &QuantizedModel::new(&src, &layers),
        &settings,
        &Destination::new(&out),
    )
    .unwrap();
    out
}

/// Rewrites `name` in `dir/model.safetensors` with `dtype`, `shape` and `bytes`.
fn replace(dir: &Path, name: &str, dtype: Dtype, shape: Vec<usize>, bytes: Vec<u8>) {
    let path = dir.join("model.safetensors");
    let store = TensorStore::open_dir(dir).unwrap();
    let tensors: Vec<_> = store
        .names()
        .into_iter()
        .map(|n| {
            if n == name {
                (n, dtype, shape.clone(), bytes.clone())
            } else {
                let i = store.info(&n).unwrap().clone();
                let b = store.raw_bytes(&n).unwrap().to_vec();
                (n, i.dtype, i.shape, b)
            }
        })
        .collect();
    drop(store);
    write_safetensors(&path, &tensors, None).unwrap();
}

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    encode_f32(Dtype::F16, v).unwrap()
}

#[test]
fn corrupt_checkpoints_are_refused_naming_the_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let good = write_checkpoint(tmp.path());
    // the intact checkpoint reads
    let reader = GptqReader::open(&good).unwrap();
    assert!(reader
        .read_f32("l.weight")
        .unwrap()
        .iter()
        .all(|v| v.is_finite()));

    let scales = TensorStore::open_dir(&good)
        .unwrap()
        .read_f32("l.scales")
        .unwrap();
    assert_eq!(scales.len(), 2 * 8);
    let i32s = |n: usize| vec![0u8; 4 * n];
    let mut nan_scales = scales.clone();
    nan_scales[11] = f32::NAN;
    let mut inf_scales = scales.clone();
    inf_scales[0] = f32::INFINITY;
    type Case = (
        &'static str,
        Dtype,
        Vec<usize>,
        Vec<u8>,
        &'static [&'static str],
    );
    let cases: Vec<Case> = vec![
        // non-finite scales: found when the weight is dequantized
        (
            "l.scales",
            Dtype::F16,
            vec![2, 8],
            f16_bytes(&nan_scales),
            &["`l.scales`", "non-finite", "group 1, output 3"],
        ),
        (
            "l.scales",
            Dtype::F16,
            vec![2, 8],
            f16_bytes(&inf_scales),
            &["`l.scales`", "non-finite", "inf"],
        ),
        // shapes that do not agree: found at open
        (
            "l.scales",
            Dtype::F16,
            vec![1, 16],
            f16_bytes(&scales),
            &["`l.scales`", "[1, 16]", "[2, 8]"],
        ),
        (
            "l.scales",
            Dtype::F16,
            vec![3, 8],
            f16_bytes(&[0.1; 24]),
            &["`l.scales`", "[3, 8]"],
        ),
        (
            "l.scales",
            Dtype::I32,
            vec![2, 8],
            i32s(16),
            &["`l.scales`", "dtype I32"],
        ),
        (
            "l.qzeros",
            Dtype::I32,
            vec![2, 2],
            i32s(4),
            &["`l.qzeros`", "[2, 2]", "[2, 1]"],
        ),
        (
            "l.qzeros",
            Dtype::F32,
            vec![2, 1],
            i32s(2),
            &["`l.qzeros`", "dtype F32"],
        ),
        (
            "l.g_idx",
            Dtype::I32,
            vec![31],
            i32s(31),
            &["`l.g_idx`", "[31]", "32 input columns"],
        ),
        (
            "l.qweight",
            Dtype::I32,
            vec![4, 8, 1],
            i32s(32),
            &["`l.qweight`", "2-D"],
        ),
        (
            "l.qweight",
            Dtype::I32,
            vec![4, 7],
            i32s(28),
            &["`l.qzeros`"],
        ),
        (
            "l.bias",
            Dtype::F32,
            vec![7],
            i32s(7),
            &["`l.bias`", "8 outputs"],
        ),
    ];
    for (k, (name, dtype, shape, bytes, needles)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(format!("case{k}"));
        std::fs::create_dir(&dir).unwrap();
        for f in ["model.safetensors", "config.json", "quantize_config.json"] {
            std::fs::copy(good.join(f), dir.join(f)).unwrap();
        }
        replace(&dir, name, dtype, shape.clone(), bytes);
        let err = GptqReader::open(&dir)
            .and_then(|r| r.read_f32("l.weight"))
            .expect_err(&format!("{name} {shape:?} must be refused"))
            .to_string();
        for n in needles.iter().chain(&["model.safetensors"]) {
            assert!(err.contains(n), "case {k}: expected {n:?} in: {err}");
        }
        // the dequantizing path (pmq compare / pmq eval) refuses it too, and writes nothing
        let out = tmp.path().join(format!("deq{k}"));
        assert!(
            dequantize_checkpoint(&dir, &out, false).is_err(),
            "case {k}"
        );
        assert!(!out.exists(), "case {k}");
    }
}
