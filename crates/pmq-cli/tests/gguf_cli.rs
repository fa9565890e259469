//! `pmq quantize --format gguf-fake --grid q4_0|q4_1|q8_0` end to end on tiny random Llama (GQA)
//! and BERT checkpoints: the GGUF file, read back by candle's GGUF reader and dequantized by
//! candle's ggml block code, holds exactly the fake-quant weights written by the same run (q/k
//! rows in the converter's rotary order), and the solver beat RTN on the GGUF grid.

mod common;
use candle_core::quantized::gguf_file;
use candle_core::Device;
use common::pmq;
use pmq_formats::gguf::{map_name, rope_permutation, Arch, Mapped, RopePermute};
use pmq_io::TensorStore;
use pmq_testkit::{write_calib, write_model, write_perturbed, Fam};
use serde_json::Value;
use std::path::Path;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Every tensor of `gguf` equals its source in the fake-quant directory `fake` (dequantized,
/// for the quantized linears); returns the number of quantized tensors and the
/// file's `general.file_type`.
fn check_against_fake(gguf: &Path, fake: &Path, arch: Arch) -> (usize, u32) {
    let mut f = std::fs::File::open(gguf).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let store = TensorStore::open_dir(fake).unwrap();
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(fake.join("config.json")).unwrap()).unwrap();
    let heads = cfg["num_attention_heads"].as_u64().unwrap_or(1) as usize;
    let kv = cfg["num_key_value_heads"]
        .as_u64()
        .map_or(heads, |v| v as usize);
    let mut quantized = 0;
    let mut seen = 0;
    for hf in store.names() {
        let (name, permute) = match map_name(arch, &hf).unwrap() {
            Mapped::Tensor { name, permute } => (name, permute),
            // the tiny T5 has its embedding once, as `shared`
            Mapped::FirstOf { name } => (name, None),
            Mapped::Skip => continue,
        };
        let info = store.info(&hf).unwrap();
        let want = store.read_f32(&hf).unwrap();
        let qt = content
            .tensor(&mut f, &name, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{name} ({hf}): {e}"));
        if qt.dtype().block_size() > 1 {
            quantized += 1;
        }
        let got: Vec<f32> = qt
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let rows = info.shape[0];
        let cols = want.len() / rows.max(1);
        let perm: Vec<usize> = match permute {
            None => (0..rows).collect(),
            Some(RopePermute::Query) => rope_permutation(rows, heads).unwrap(),
            Some(RopePermute::Key) => rope_permutation(rows, kv).unwrap(),
        };
        for (j, &src) in perm.iter().enumerate() {
            let (a, b) = (
                &got[j * cols..(j + 1) * cols],
                &want[src * cols..(src + 1) * cols],
            );
            assert!(
                // equal values: ggml's d·(q − 8) with a negative d (pmq's zero 7) gives −0 for 0
                a.iter().zip(b).all(|(x, y)| x == y),
                "{name} row {j} differs from {hf} row {src}: {:?} vs {:?} ({:?})",
                &a[..8],
                &b[..8],
                info.dtype
            );
        }
        seen += 1;
    }
    assert_eq!(seen, content.tensor_infos.len(), "tensors without a source");
    let ft = content.metadata["general.file_type"].to_u32().unwrap();
    (quantized, ft)
}

#[test]
fn gguf_output_holds_the_fake_quant_weights_on_every_grid() {
    for (fam, arch) in [
        (Fam::LlamaGqa, Arch::Llama),
        (Fam::Bert, Arch::Bert),
        (Fam::T5Gated, Arch::T5),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        write_model(fam, &base, 1);
        let experts: Vec<_> = (0..2)
            .map(|i| {
                let d = tmp.path().join(format!("e{i}"));
                write_perturbed(fam, &d, 1, 40 + i as u64, 0.05);
                d
            })
            .collect();
        let calib: Vec<String> = (0..2)
            .map(|i| {
                let calib_fam = if fam.is_seq2seq() { fam } else { Fam::Bert };
                write_calib(calib_fam, tmp.path(), &format!("t{i}"), 12, 3 + i as u64)
            })
            .collect();
        for (grid, method, file_type) in [
            ("q4_0", "gptq", 2),
            ("q4_1", "epmq", 3),
            ("q8_0", "epmq", 7),
        ] {
            let out = tmp.path().join(format!("out-{grid}"));
            let mut args = vec![
                "quantize".to_string(),
                "--model".into(),
                s(&base),
                "--method".into(),
                method.into(),
                "--grid".into(),
                grid.into(),
                "--format".into(),
                "gguf-fake".into(),
                "--batch-size".into(),
                "5".into(),
                "--out".into(),
                s(&out),
            ];
            for (e, c) in experts.iter().zip(&calib) {
                if method == "epmq" {
                    args.extend(["--expert".into(), s(e)]);
                }
                args.extend(["--calib".into(), c.clone()]);
            }
            let (ok, _, err) = pmq(&args);
            assert!(ok, "{fam:?} {grid}: {err}");
            let (quantized, ft) =
                check_against_fake(&out.join("gguf/model.gguf"), &out.join("fake"), arch);
            // 2 blocks × 7 linears (Llama) or × 6 (BERT); T5: 2 × 7 (encoder) + 2 × 11 (decoder)
            let linears = match arch {
                Arch::Llama => 14,
                Arch::Bert => 12,
                Arch::T5 => 36,
            };
            assert_eq!(quantized, linears, "{fam:?} {grid}");
            assert_eq!(ft, file_type, "{fam:?} {grid}");
            let report: Value =
                serde_json::from_slice(&std::fs::read(out.join("gguf/pmq_report.json")).unwrap())
                    .unwrap();
            for l in report["linears"].as_array().unwrap() {
                let (rtn, obj) = (l["objective_rtn"].as_f64(), l["objective"].as_f64());
                if let (Some(rtn), Some(obj)) = (rtn, obj) {
                    assert!(
                        obj <= rtn * (1.0 + 1e-9),
                        "{grid} {}: {obj} > RTN {rtn}",
                        l["name"]
                    );
                }
            }
        }
    }
}
