use faer::Mat;
use pmq_core::gptq::{gptq, GptqConfig};
use pmq_core::packing::CheckpointFormat;
use pmq_core::{QuantGrid, ScalePrecision};
use pmq_formats::fake_quant::write_fake_quant;
use pmq_formats::gptq_checkpoint::{write_gptq, GptqReader, GptqSettings};
use pmq_formats::{Destination, PackedLinear, QuantizedModel};
use pmq_io::{encode_f32, write_safetensors, Dtype, TensorStore};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::collections::BTreeMap;
use std::path::Path;

fn randn(seed: u64, n: usize) -> Vec<f32> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let d = Normal::new(0.0f32, 0.5).unwrap();
    (0..n).map(|_| d.sample(&mut r)).collect()
}

/// A tiny source model: two linears (one f16), a bias, an embedding, config and tokenizer files.
fn make_source(dir: &Path) {
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"architectures":["BertModel"],"hidden_size":64}"#,
    )
    .unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
    std::fs::write(dir.join("1_Pooling/config.json"), "{}").unwrap();
    let t = |name: &str, dtype: Dtype, shape: Vec<usize>, seed: u64| {
        let n = shape.iter().product();
        (
            name.to_string(),
            dtype,
            shape,
            encode_f32(dtype, &randn(seed, n)).unwrap(),
        )
    };
    write_safetensors(
        &dir.join("model.safetensors"),
        &[
            t("enc.0.dense.weight", Dtype::F32, vec![32, 64], 1),
            t("enc.0.dense.bias", Dtype::F32, vec![32], 2),
            t("enc.0.out.weight", Dtype::F16, vec![64, 32], 3),
            t("emb.weight", Dtype::F32, vec![10, 64], 4),
        ],
        None,
    )
    .unwrap();
}

fn quantize(src: &TensorStore, sym: bool, act_order: bool) -> BTreeMap<String, PackedLinear> {
    let mut layers = BTreeMap::new();
    for (i, p) in ["enc.0.dense", "enc.0.out"].iter().enumerate() {
        let (r, c, w) = src.read_matrix_f64(&format!("{p}.weight")).unwrap();
        let w = Mat::from_fn(r, c, |a, b| w[a * c + b]);
        let noise = randn(100 + i as u64, 3 * c * c);
        let x = Mat::from_fn(c, 3 * c, |a, b| {
            noise[a * 3 * c + b] as f64 * (1.0 + a as f64 / 8.0)
        });
        let h = &x * x.transpose();
        let mut cfg = GptqConfig::new(QuantGrid::new(4, sym, 16, ScalePrecision::F16).unwrap());
        cfg.act_order = act_order;
        let out = gptq(w.as_ref(), h.as_ref(), &cfg).unwrap();
        layers.insert(p.to_string(), PackedLinear::from(out.layer));
    }
    layers
}

fn settings(sym: bool, act: bool, format: CheckpointFormat) -> GptqSettings {
    GptqSettings {
        bits: 4,
        group_size: 16,
        sym,
        desc_act: act,
        static_groups: false,
        true_sequential: true,
        damp_percent: 0.01,
        format,
        quantizer: "pmq:test".into(),
    }
}

#[test]
fn gptq_checkpoints_reload_to_the_fake_quant_weights_bit_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    make_source(&src_dir);
    let src = TensorStore::open_dir(&src_dir).unwrap();
    for (sym, act, format) in [
        (true, false, CheckpointFormat::V1),
        (false, true, CheckpointFormat::V2),
        (true, true, CheckpointFormat::V2),
    ] {
        let layers = quantize(&src, sym, act);
        let tag = format!("{sym}-{act}-{}", format.name());
        let gdir = tmp.path().join(format!("gptq-{tag}"));
        let fdir = tmp.path().join(format!("fake-{tag}"));
        let model = QuantizedModel::new(&src, &layers);
        write_gptq(
            &model,
            &settings(sym, act, format),
            &Destination::new(&gdir),
        )
        .unwrap();
        write_fake_quant(&model, Some(Dtype::F32), &Destination::new(&fdir)).unwrap();

        let reader = GptqReader::open(&gdir).unwrap();
        assert_eq!(reader.settings(), &settings(sym, act, format));
        let fake = TensorStore::open_dir(&fdir).unwrap();
        assert_eq!(reader.names(), fake.names());
        for name in fake.names() {
            let a = reader.read_f32(&name).unwrap();
            let b = fake.read_f32(&name).unwrap();
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{tag}: {name} differs"
            );
        }
        // untouched tensors are byte-identical to the source
        let g = TensorStore::open_dir(&gdir).unwrap();
        assert_eq!(
            g.raw_bytes("emb.weight").unwrap(),
            src.raw_bytes("emb.weight").unwrap()
        );
        assert_eq!(
            g.raw_bytes("enc.0.dense.bias").unwrap(),
            src.raw_bytes("enc.0.dense.bias").unwrap()
        );
        assert_eq!(g.info("enc.0.dense.scales").unwrap().dtype, Dtype::F16);
        assert_eq!(
            g.info("enc.0.dense.qweight").unwrap().shape,
            vec![64 * 4 / 32, 32]
        );
        assert_eq!(
            g.info("enc.0.out.qzeros").unwrap().shape,
            vec![2, 64 * 4 / 32]
        );
        assert!(!g.contains("enc.0.dense.weight"));
        // the packed parameters come back exactly
        for (p, l) in &layers {
            assert_eq!(&reader.packed(p).unwrap(), l, "{tag}: {p}");
        }
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(gdir.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(
            cfg["quantization_config"]["checkpoint_format"],
            format.name()
        );
        assert_eq!(cfg["architectures"][0], "BertModel");
        assert!(
            gdir.join("quantize_config.json").is_file() && gdir.join("tokenizer.json").is_file()
        );
        assert!(gdir.join("1_Pooling/config.json").is_file());
    }
}

#[test]
fn fake_quant_keeps_source_dtypes_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    make_source(&src_dir);
    let src = TensorStore::open_dir(&src_dir).unwrap();
    let layers = quantize(&src, false, false);
    let out = tmp.path().join("fake");
    write_fake_quant(
        &QuantizedModel::new(&src, &layers),
        None,
        &Destination::new(&out),
    )
    .unwrap();
    let fake = TensorStore::open_dir(&out).unwrap();
    assert_eq!(fake.info("enc.0.out.weight").unwrap().dtype, Dtype::F16);
    let want: Vec<f32> = layers["enc.0.out"]
        .dequantize()
        .iter()
        .map(|&v| half::f16::from_f32(v).to_f32())
        .collect();
    assert_eq!(fake.read_f32("enc.0.out.weight").unwrap(), want);
}

#[test]
fn unrepresentable_or_mismatched_layers_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    make_source(&src_dir);
    let src = TensorStore::open_dir(&src_dir).unwrap();
    let mut layers = quantize(&src, false, false);
    layers.get_mut("enc.0.dense").unwrap().zeros[0] = 0;
    let out = tmp.path().join("v1");
    let err = write_gptq(
        &QuantizedModel::new(&src, &layers),
        &settings(false, false, CheckpointFormat::V1),
        &Destination::new(&out),
    )
    .unwrap_err();
    assert!(err.to_string().contains("gptq_v2"), "{err}");
    assert!(!out.exists());
    let mut wrong = quantize(&src, false, false);
    let l = wrong.remove("enc.0.dense").unwrap();
    wrong.insert("enc.0.missing".into(), l);
    let err = write_fake_quant(
        &QuantizedModel::new(&src, &wrong),
        None,
        &Destination::new(&out),
    )
    .unwrap_err();
    assert!(err.to_string().contains("enc.0.missing.weight"), "{err}");
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}
