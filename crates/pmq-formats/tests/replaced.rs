//! Unquantized tensors a method changed (AWQ's folded norms and biases) are written instead of
//! the source's, in the source dtype, by both writers; bad replacements are rejected.

use faer::Mat;
use pmq_core::packing::CheckpointFormat;
use pmq_core::rtn::rtn;
use pmq_core::{QuantGrid, ScalePrecision};
use pmq_formats::fake_quant::write_fake_quant;
use pmq_formats::gptq_checkpoint::{write_gptq, GptqReader, GptqSettings};
use pmq_formats::{Destination, QuantizedModel};
use pmq_formats::{PackedLinear, ReplacedTensors};
use pmq_io::{encode_f32, write_safetensors, Dtype, TensorStore};
use std::collections::BTreeMap;
use std::path::Path;

fn make_source(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"architectures":["BertModel"]}"#,
    )
    .unwrap();
    let t = |name: &str, dtype: Dtype, shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| ((i * 37 % 19) as f32 - 9.0) / 7.0).collect();
        (
            name.to_string(),
            dtype,
            shape,
            encode_f32(dtype, &v).unwrap(),
        )
    };
    write_safetensors(
        &dir.join("model.safetensors"),
        &[
            t("l.dense.weight", Dtype::F32, vec![8, 32]),
            t("l.dense.bias", Dtype::F32, vec![8]),
            t("l.ln.weight", Dtype::F16, vec![32]),
            t("l.ln.bias", Dtype::F16, vec![32]),
            t("emb.weight", Dtype::F32, vec![4, 32]),
        ],
        None,
    )
    .unwrap();
}

fn layers(src: &TensorStore) -> BTreeMap<String, PackedLinear> {
    let (r, c, w) = src.read_matrix_f64("l.dense.weight").unwrap();
    let w = Mat::from_fn(r, c, |a, b| w[a * c + b]);
    let grid = QuantGrid::new(4, true, 16, ScalePrecision::F16).unwrap();
    [(
        "l.dense".to_string(),
        PackedLinear::from(rtn(w.as_ref(), &grid).unwrap()),
    )]
    .into_iter()
    .collect()
}

fn settings() -> GptqSettings {
    GptqSettings {
        bits: 4,
        group_size: 16,
        sym: true,
        desc_act: false,
        static_groups: false,
        true_sequential: true,
        damp_percent: 0.0,
        format: CheckpointFormat::V1,
        quantizer: "pmq:test".into(),
    }
}

#[test]
fn both_writers_store_the_replaced_tensors_in_the_source_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    make_source(&src_dir);
    let src = TensorStore::open_dir(&src_dir).unwrap();
    let layers = layers(&src);
    let mut replaced = ReplacedTensors::new();
    replaced.insert(
        "l.dense.bias".into(),
        (0..8).map(|i| i as f32 * 0.1).collect(),
    );
    replaced.insert(
        "l.ln.weight".into(),
        (0..32).map(|i| 1.0 / (1.0 + i as f32)).collect(),
    );
    let fake = tmp.path().join("fake");
    let gptq = tmp.path().join("gptq");
    let model = QuantizedModel::new(&src, &layers).with_replaced(&replaced);
    write_fake_quant(&model, None, &Destination::new(&fake)).unwrap();
    write_gptq(&model, &settings(), &Destination::new(&gptq)).unwrap();
    let fake = TensorStore::open_dir(&fake).unwrap();
    let reader = GptqReader::open(&gptq).unwrap();
    for (name, values) in &replaced {
        let dtype = src.dtype(name).unwrap();
        assert_eq!(fake.dtype(name).unwrap(), dtype);
        let want: Vec<f32> = encode_f32(dtype, values)
            .map(|b| pmq_io::decode_f32(dtype, &b).unwrap())
            .unwrap();
        assert_eq!(fake.read_f32(name).unwrap(), want, "{name}");
        assert_eq!(reader.read_f32(name).unwrap(), want, "{name}");
    }
    // everything else is the source's
    for name in ["l.ln.bias", "emb.weight"] {
        assert_eq!(fake.raw_bytes(name).unwrap(), src.raw_bytes(name).unwrap());
    }
}

#[test]
fn bad_replacements_are_rejected_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    make_source(&src_dir);
    let src = TensorStore::open_dir(&src_dir).unwrap();
    let layers = layers(&src);
    let cases = [
        ("nope.weight", 4, "no such tensor"),
        ("l.ln.weight", 31, "31 values"),
        ("l.dense.weight", 256, "both quantized and replaced"),
    ];
    for (name, n, needle) in cases {
        let replaced: ReplacedTensors = [(name.to_string(), vec![0.5; n])].into_iter().collect();
        let out = tmp.path().join("out");
        let model = QuantizedModel::new(&src, &layers).with_replaced(&replaced);
        let e = write_fake_quant(&model, None, &Destination::new(&out))
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{name}: {e}");
        let e = write_gptq(&model, &settings(), &Destination::new(&out))
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{name}: {e}");
        assert!(!out.exists());
    }
}
