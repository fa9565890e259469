//! Parity with HF transformers itself: tiny random checkpoints of every family in the layouts
//! transformers 4 and 5 write, with the hidden states, heads and pixels transformers computed
//! for fixed inputs (`tests/golden/<case>`, made by `scripts/golden.sh`). pmq's forward must
//! match to 1e-5 relative (max |pmq − HF| / max |HF| over the real, unpadded positions).

use candle_core::{DType, Device, IndexOp, Tensor};
use pmq_io::{Dtype, TensorStore};
use pmq_models::pixels::ClipImageProcessor;
use pmq_models::{load_model, Batch, BlockModel, Family, State};
use std::path::{Path, PathBuf};

const TOL: f64 = 1e-5;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

struct Golden(TensorStore);

impl Golden {
    fn open(case: &Path) -> Self {
        Golden(TensorStore::open_file(&case.join("golden.safetensors")).unwrap())
    }
    fn has(&self, name: &str) -> bool {
        self.0.contains(name)
    }
    fn f32(&self, name: &str) -> Tensor {
        let info = self.0.info(name).unwrap();
        Tensor::from_vec(
            self.0.read_f32(name).unwrap(),
            info.shape.clone(),
            &Device::Cpu,
        )
        .unwrap()
    }
    /// An i64 tensor (ids, masks) as u32.
    fn ids(&self, name: &str) -> Tensor {
        let info = self.0.info(name).unwrap();
        assert_eq!(info.dtype, Dtype::I64, "{name}");
        let v: Vec<u32> = self
            .0
            .raw_bytes(name)
            .unwrap()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect();
        Tensor::from_vec(v, info.shape.clone(), &Device::Cpu).unwrap()
    }
}

/// max |a − b| / max |b| over the positions where `mask` ([b, s], 1 = real) is set; `a`, `b`
/// are `[b, s, …]` (or anything when `mask` is `None`).
fn rel_diff(a: &Tensor, b: &Tensor, mask: Option<&Tensor>) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    let (a, b) = match mask {
        Some(m) => {
            let m = m.to_dtype(DType::F64).unwrap();
            let mut shape = m.dims().to_vec();
            shape.resize(a.rank(), 1);
            let m = m.reshape(shape).unwrap().broadcast_as(a.dims()).unwrap();
            (a.mul(&m).unwrap(), b.mul(&m).unwrap())
        }
        None => (a, b),
    };
    let diff: f64 = (a - &b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap();
    let scale: f64 = b
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap();
    diff / scale
}

/// Runs one case; returns (what, max relative difference) for every comparison.
fn run_case(case: &Path) -> Vec<(String, f64)> {
    let g = Golden::open(case);
    let loaded = load_model(case).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
    let model = loaded.as_block_model();
    let mut out = Vec::new();
    let (batch, mask) = match model.family() {
        Family::ClipVision => {
            let size = g.f32("pixel_values").dims()[3] as u32;
            let proc = ClipImageProcessor::from_dir(case, size).unwrap();
            let ours = proc.load_batch(&[&case.join("image.png")]).unwrap();
            let hf = g.f32("pixel_values");
            out.push(("pixels".to_string(), rel_diff(&ours, &hf, None)));
            (Batch::from_pixels(ours), None)
        }
        _ => {
            let mut b = Batch {
                input_ids: Some(g.ids("input_ids")),
                attention_mask: Some(g.ids("attention_mask")),
                ..Default::default()
            };
            if g.has("decoder_input_ids") {
                b.decoder_input_ids = Some(g.ids("decoder_input_ids"));
                b.decoder_attention_mask = Some(g.ids("decoder_attention_mask"));
            }
            (b, Some(g.ids("attention_mask")))
        }
    };
    let mut state: State = model.embed(&batch).unwrap();
    // HF's hidden states: [embeddings, block 1, …]; the last one of Llama and T5 stacks is
    // after the final norm, which the head comparison covers
    let (enc_hs, dec_hs) = if g.has("encoder_hidden_states") {
        (
            g.f32("encoder_hidden_states"),
            Some(g.f32("decoder_hidden_states")),
        )
    } else {
        (g.f32("hidden_states"), None)
    };
    let n_enc = enc_hs.dims()[0] - 1;
    let final_normed = matches!(model.family(), Family::Llama | Family::T5);
    out.push((
        "embeddings".into(),
        rel_diff(state.hidden(), &enc_hs.i(0).unwrap(), mask.as_ref()),
    ));
    for block in 0..model.num_blocks() {
        state = model.block_forward(block, &state, None).unwrap();
        let (hs, i, m) = if block < n_enc {
            (&enc_hs, block + 1, mask.clone())
        } else {
            let dm = g.ids("decoder_attention_mask");
            (dec_hs.as_ref().unwrap(), block - n_enc + 1, Some(dm))
        };
        let last = i == hs.dims()[0] - 1;
        if last && final_normed {
            continue;
        }
        out.push((
            format!("block {block}"),
            rel_diff(state.hidden(), &hs.i(i).unwrap(), m.as_ref()),
        ));
    }
    let head = model.head(&state).unwrap();
    let head_mask = match model.family() {
        Family::T5 => Some(g.ids("decoder_attention_mask")),
        Family::ClipVision => None,
        _ => mask.clone(),
    };
    out.push((
        "head".into(),
        rel_diff(&head, &g.f32("head"), head_mask.as_ref()),
    ));
    out
}

#[test]
fn every_family_and_layout_matches_transformers() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("golden.safetensors").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "golden cases missing: {cases:?}");
    let mut failures = Vec::new();
    eprintln!("| case | max relative difference | worst at |");
    eprintln!("|---|---|---|");
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let diffs = run_case(case);
        let (at, worst) = diffs
            .iter()
            .cloned()
            .fold((String::new(), 0.0f64), |acc, (w, d)| {
                if d > acc.1 {
                    (w, d)
                } else {
                    acc
                }
            });
        eprintln!("| {name} | {worst:.2e} | {at} |");
        for (what, d) in diffs {
            if d.is_nan() || d > TOL {
                failures.push(format!("{name} {what}: {d:.3e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "differences above {TOL}: {failures:#?}"
    );
}

#[test]
fn transformers_4_and_5_layouts_load_to_the_same_model() {
    for (v4, v5) in [
        ("bert-v4", "bert-v5"),
        ("llama-llama3-v4", "llama-llama3-v5"),
        ("clip-vision-v4", "clip-vision-v5"),
        ("t5-gated-v4", "t5-gated-v5"),
        ("t5-tied-v4", "t5-tied-v5"),
    ] {
        let a = load_model(&golden_dir().join(v4)).unwrap();
        let b = load_model(&golden_dir().join(v5)).unwrap();
        let (a, b) = (a.as_block_model(), b.as_block_model());
        let names = |m: &dyn BlockModel| -> Vec<String> {
            m.linears().into_iter().map(|l| l.name).collect()
        };
        // same weights, each under the names its own checkpoint uses
        let (na, nb) = (names(a), names(b));
        assert_eq!(na.len(), nb.len(), "{v4} vs {v5}");
        for (x, y) in na.iter().zip(&nb) {
            let (wa, wb) = (a.linear_weight(x).unwrap(), b.linear_weight(y).unwrap());
            assert_eq!(rel_diff(&wa, &wb, None), 0.0, "{x} vs {y}");
        }
    }
}
