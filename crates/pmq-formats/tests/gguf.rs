//! GGUF writer: ggml block layouts checked against candle's independent implementation, the
//! Llama rotary permutation against the converter's reshape/swap formula, tiny BERT and Llama
//! checkpoints written and read back (keys, types, names, shapes, dequantized values), the tiny
//! Llama run through candle's quantized Llama and compared with the plain Llama on the
//! fake-quant weights, a tiny T5 with a real SentencePiece vocabulary whose tokenizer keys equal
//! those llama.cpp's converter wrote for it (golden file), and clear errors on bad input.

use candle_core::quantized::{ggml_file::qtensor_from_ggml, gguf_file, GgmlDType};
use candle_core::{DType, Device, Tensor};
use faer::Mat;
use pmq_core::{GridKind, QuantGrid, ScalePrecision};
use pmq_formats::gguf::{pack_rows, rope_permutation, write_gguf, GgufOptions, GgufType};
use pmq_formats::{Destination, PackedLinear, QuantizedModel};
use pmq_io::TensorStore;
use pmq_testkit::families::{write_model, Fam, VOCAB};
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// A random positive f16 value (as f64) of magnitude around 2^-8..2^2.
fn f16_scale(r: &mut impl Rng) -> f64 {
    half::f16::from_f64(r.random_range(0.004..4.0)).to_f64()
}

fn candle_dequant(ty: GgmlDType, bytes: &[u8], rows: usize, cols: usize) -> Vec<f32> {
    let q = qtensor_from_ggml(ty, bytes, vec![rows, cols], &Device::Cpu).unwrap();
    q.dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn blocks_round_trip_through_candle() {
    let (rows, cols) = (5, 96);
    let nb = cols / 32;
    for (ty, dt) in [
        (GgufType::Q4_0, GgmlDType::Q4_0),
        (GgufType::Q4_1, GgmlDType::Q4_1),
        (GgufType::Q8_0, GgmlDType::Q8_0),
    ] {
        let mut r = rng(ty.type_id() as u64);
        let maxq = if ty == GgufType::Q8_0 { 255 } else { 15 };
        let codes: Vec<u8> = (0..rows * cols)
            .map(|_| r.random_range(0..=maxq) as u8)
            .collect();
        let scales: Vec<f64> = (0..nb * rows).map(|_| f16_scale(&mut r)).collect();
        let zeros: Vec<u32> = (0..nb * rows)
            .map(|_| match ty {
                GgufType::Q4_0 => [7, 8][r.random_range(0..2)],
                GgufType::Q4_1 => 0,
                _ => 128,
            })
            .collect();
        let offsets: Vec<f64> = if ty == GgufType::Q4_1 {
            (0..nb * rows)
                .map(|_| half::f16::from_f64(r.random_range(-3.0..3.0)).to_f64())
                .collect()
        } else {
            vec![]
        };
        let bytes = pack_rows(ty, rows, cols, &codes, &scales, &zeros, &offsets).unwrap();
        assert_eq!(bytes.len(), rows * nb * ty.block_bytes());
        let got = candle_dequant(dt, &bytes, rows, cols);
        for row in 0..rows {
            for c in 0..cols {
                let i = (c / 32) * rows + row;
                let off = offsets.get(i).copied().unwrap_or(0.0);
                let want =
                    (scales[i] * (codes[row * cols + c] as f64 - zeros[i] as f64) + off) as f32;
                assert_eq!(got[row * cols + c], want, "{ty:?} row {row} col {c}");
            }
        }
    }
}

#[test]
fn block_packing_rejects_what_it_cannot_store() {
    let codes = vec![3u8; 32];
    let err = |ty, s: f64, z: u32, o: &[f64]| {
        pack_rows(ty, 1, 32, &codes, &[s], &[z], o)
            .unwrap_err()
            .to_string()
    };
    assert!(err(GgufType::Q4_0, 0.5, 6, &[]).contains("zero point 8 or 7"));
    assert!(err(GgufType::Q4_0, 0.1, 8, &[]).contains("not exactly an f16"));
    assert!(err(GgufType::Q4_0, 0.5, 8, &[0.25]).contains("no offset"));
    assert!(err(GgufType::Q4_1, 0.5, 1, &[0.0]).contains("zero point 0"));
    assert!(err(GgufType::Q4_1, 0.5, 0, &[0.1]).contains("offset 0.1 is not exactly an f16"));
    assert!(err(GgufType::Q8_0, 0.5, 127, &[]).contains("zero point 128"));
    let e = pack_rows(GgufType::Q4_0, 1, 48, &[0; 48], &[0.5], &[8], &[]).unwrap_err();
    assert!(e
        .to_string()
        .contains("48 input columns, not a multiple of GGUF's block of 32"));
    let e = pack_rows(GgufType::Q4_0, 2, 32, &[0; 64], &[0.5, 0.5], &[8, 9], &[]).unwrap_err();
    assert_eq!((e.row, e.block), (1, Some(0)));
}

#[test]
fn rope_permutation_matches_the_converters_reshape_swap() {
    for (rows, n_head) in [(64, 4), (32, 2), (16, 1), (96, 6)] {
        let hd = rows / n_head;
        let idx = Tensor::arange(0u32, rows as u32, &Device::Cpu).unwrap();
        let perm: Vec<u32> = idx
            .reshape((n_head, 2, hd / 2))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let ours: Vec<u32> = rope_permutation(rows, n_head)
            .unwrap()
            .iter()
            .map(|&i| i as u32)
            .collect();
        assert_eq!(ours, perm, "rows {rows}, heads {n_head}");
    }
}

// ---------------------------------------------------------------- tiny checkpoints

/// RTN-quantizes every linear of the family on `grid`.
fn quantize_all(src: &TensorStore, grid: &QuantGrid) -> BTreeMap<String, PackedLinear> {
    let mut layers = BTreeMap::new();
    for n in src.names() {
        let Some(p) = n.strip_suffix(".weight") else {
            continue;
        };
        let is_linear = [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
            "query",
            "key",
            "value",
            "dense",
            "Attention.q",
            "Attention.k",
            "Attention.v",
            "Attention.o",
            "DenseReluDense.wi",
            "DenseReluDense.wi_0",
            "DenseReluDense.wi_1",
            "DenseReluDense.wo",
        ]
        .iter()
        .any(|s| p.ends_with(s))
            && !p.starts_with("pooler");
        if !is_linear {
            continue;
        }
        let (r, c, w) = src.read_matrix_f64(&n).unwrap();
        let m = Mat::from_fn(r, c, |a, b| w[a * c + b]);
        let q = pmq_core::rtn::rtn(m.as_ref(), grid).unwrap();
        layers.insert(p.to_string(), PackedLinear::from(q));
    }
    layers
}

/// A WordPiece `tokenizer.json` (BERT) over the tiny vocabulary, `##` pieces included.
fn wordpiece_tokenizer(dir: &Path) {
    let mut vocab = serde_json::Map::new();
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
    let words: Vec<String> = specials
        .iter()
        .map(|s| s.to_string())
        .chain((0..VOCAB - 5 - 2).map(|i| format!("w{i}")))
        .chain(["##s".to_string(), "##ing".to_string()])
        .collect();
    for (i, w) in words.iter().enumerate() {
        vocab.insert(w.clone(), json!(i));
    }
    let added: Vec<_> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"id": i, "content": s, "special": true, "normalized": false}))
        .collect();
    let tok = json!({
        "version": "1.0", "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {}},
        "decoder": {"type": "WordPiece", "prefix": "##"},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "vocab": vocab}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    let tc = json!({"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]", "do_lower_case": true});
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
    std::fs::write(dir.join("modules.json"), r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},{"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#).unwrap();
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    std::fs::write(dir.join("1_Pooling/config.json"), r#"{"word_embedding_dimension":64,"pooling_mode_cls_token":false,"pooling_mode_mean_tokens":true}"#).unwrap();
}

/// A byte-level BPE `tokenizer.json` (GPT-2 style) with fewer tokens than the vocabulary.
fn byte_level_tokenizer(dir: &Path) {
    let vocab = json!({"a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġab": 4});
    let tok = json!({
        "version": "1.0",
        "added_tokens": [{"id": 5, "content": "<|endoftext|>", "special": true}, {"id": 6, "content": "<x>", "special": false}],
        "normalizer": null, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": vocab, "merges": [["a", "b"], ["Ġ", "ab"]], "byte_fallback": false}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    let tc =
        json!({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "add_bos_token": true});
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
}

/// `model.gguf` of `src` with `layers` quantized, default options, into a new directory `out`.
fn write_default(
    src: &TensorStore,
    layers: &BTreeMap<String, PackedLinear>,
    out: &Path,
) -> Result<(), pmq_formats::FormatError> {
    write_gguf(
        &QuantizedModel::new(src, layers),
        &GgufOptions::default(),
        &Destination::new(out),
    )
}

struct Read {
    content: gguf_file::Content,
    file: std::fs::File,
}

impl Read {
    fn open(dir: &Path) -> Self {
        let mut file = std::fs::File::open(dir.join("model.gguf")).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        Read { content, file }
    }
    fn md(&self, k: &str) -> &gguf_file::Value {
        self.content
            .metadata
            .get(k)
            .unwrap_or_else(|| panic!("no key {k}"))
    }
    fn values(&mut self, name: &str) -> (Vec<usize>, GgmlDType, Vec<f32>) {
        let t = self
            .content
            .tensor(&mut self.file, name, &Device::Cpu)
            .unwrap();
        let v = t
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        (t.shape().dims().to_vec(), t.dtype(), v)
    }
}

fn permuted(v: &[f32], perm: &[usize]) -> Vec<f32> {
    let n = v.len() / perm.len();
    perm.iter()
        .flat_map(|&r| v[r * n..(r + 1) * n].to_vec())
        .collect()
}

#[test]
fn tiny_bert_gguf_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("bert");
    write_model(Fam::Bert, &src_dir, 1);
    wordpiece_tokenizer(&src_dir);
    let src = TensorStore::open_dir(&src_dir).unwrap();
    let layers = quantize_all(&src, &QuantGrid::gguf(GridKind::GgufQ4_0));
    assert_eq!(layers.len(), 12);
    let out = tmp.path().join("out");
    let extra = [("report.md", b"hi".to_vec())];
    let dest = Destination {
        dir: &out,
        extra_files: &extra,
        overwrite: false,
    };
    write_gguf(
        &QuantizedModel::new(&src, &layers),
        &GgufOptions::default(),
        &dest,
    )
    .unwrap();
    assert_eq!(std::fs::read(out.join("report.md")).unwrap(), b"hi");
    let mut g = Read::open(&out);
    use gguf_file::Value as V;
    assert!(matches!(g.md("general.architecture"), V::String(s) if s == "bert"));
    assert!(matches!(g.md("general.file_type"), V::U32(2)));
    assert!(matches!(g.md("general.quantization_version"), V::U32(2)));
    assert!(matches!(g.md("bert.block_count"), V::U32(2)));
    assert!(matches!(g.md("bert.context_length"), V::U32(32)));
    assert!(matches!(g.md("bert.embedding_length"), V::U32(64)));
    assert!(matches!(g.md("bert.feed_forward_length"), V::U32(128)));
    assert!(matches!(g.md("bert.attention.head_count"), V::U32(4)));
    assert!(matches!(g.md("bert.attention.layer_norm_epsilon"), V::F32(e) if *e == 1e-12f32));
    assert!(matches!(g.md("bert.attention.causal"), V::Bool(false)));
    assert!(matches!(g.md("bert.pooling_type"), V::U32(1)));
    assert!(!g
        .content
        .metadata
        .contains_key("bert.attention.head_count_kv"));
    // tokenizer
    assert!(matches!(g.md("tokenizer.ggml.model"), V::String(s) if s == "bert"));
    assert!(matches!(g.md("tokenizer.ggml.token_type_count"), V::U32(2)));
    let toks = g.md("tokenizer.ggml.tokens").to_vec().unwrap().clone();
    assert_eq!(toks.len(), VOCAB);
    let tok = |i: usize| toks[i].to_string().unwrap().clone();
    assert_eq!(tok(2), "[CLS]");
    assert_eq!(tok(5), "\u{2581}w0");
    assert_eq!(tok(VOCAB - 2), "s");
    assert_eq!(tok(VOCAB - 1), "ing");
    let types = g.md("tokenizer.ggml.token_type").to_vec().unwrap().clone();
    assert!(matches!(types[0], V::I32(3)) && matches!(types[5], V::I32(1)));
    assert!(matches!(g.md("tokenizer.ggml.bos_token_id"), V::U32(2)));
    assert!(matches!(g.md("tokenizer.ggml.eos_token_id"), V::U32(3)));
    assert!(matches!(
        g.md("tokenizer.ggml.seperator_token_id"),
        V::U32(3)
    ));
    assert!(matches!(g.md("tokenizer.ggml.padding_token_id"), V::U32(0)));
    assert!(matches!(g.md("tokenizer.ggml.unknown_token_id"), V::U32(1)));
    assert!(matches!(g.md("tokenizer.ggml.mask_token_id"), V::U32(4)));
    assert!(matches!(
        g.md("tokenizer.ggml.add_bos_token"),
        V::Bool(true)
    ));
    assert!(matches!(
        g.md("tokenizer.ggml.add_eos_token"),
        V::Bool(true)
    ));
    assert!(matches!(
        g.md("tokenizer.ggml.normalizer.lowercase"),
        V::Bool(true)
    ));
    // tensors
    let mut names: Vec<&String> = g.content.tensor_infos.keys().collect();
    names.sort();
    let want = [
        "blk.0.attn_k.bias",
        "blk.0.attn_k.weight",
        "blk.0.attn_output.bias",
        "blk.0.attn_output.weight",
        "blk.0.attn_output_norm.bias",
        "blk.0.attn_output_norm.weight",
        "blk.0.attn_q.bias",
        "blk.0.attn_q.weight",
        "blk.0.attn_v.bias",
        "blk.0.attn_v.weight",
        "blk.0.ffn_down.bias",
        "blk.0.ffn_down.weight",
        "blk.0.ffn_up.bias",
        "blk.0.ffn_up.weight",
        "blk.0.layer_output_norm.bias",
        "blk.0.layer_output_norm.weight",
    ];
    for w in want {
        assert!(names.iter().any(|n| *n == w), "missing {w} in {names:?}");
    }
    for w in [
        "token_embd.weight",
        "position_embd.weight",
        "token_types.weight",
        "token_embd_norm.weight",
        "token_embd_norm.bias",
    ] {
        assert!(names.iter().any(|n| *n == w), "missing {w}");
    }
    assert_eq!(names.len(), 2 * 16 + 5);
    let (shape, dt, v) = g.values("blk.1.ffn_up.weight");
    let l = &layers["encoder.layer.1.intermediate.dense"];
    assert_eq!((shape, dt), (vec![128, 64], GgmlDType::Q4_0));
    assert_eq!(v, l.dequantize());
    let (shape, dt, v) = g.values("token_embd.weight");
    assert_eq!((shape, dt), (vec![VOCAB, 64], GgmlDType::F32));
    assert_eq!(
        v,
        src.read_f32("embeddings.word_embeddings.weight").unwrap()
    );
}

fn write_llama(
    tmp: &Path,
    kind: GridKind,
    opts: &GgufOptions,
) -> (
    TensorStore,
    BTreeMap<String, PackedLinear>,
    std::path::PathBuf,
) {
    let src_dir = tmp.join(format!("llama-{}", kind.name()));
    write_model(Fam::LlamaGqa, &src_dir, 7);
    byte_level_tokenizer(&src_dir);
    let src = TensorStore::open_dir(&src_dir).unwrap();
    let layers = quantize_all(&src, &QuantGrid::gguf(kind));
    let out = tmp.join(format!("out-{}", kind.name()));
    write_gguf(
        &QuantizedModel::new(&src, &layers),
        opts,
        &Destination::new(&out),
    )
    .unwrap();
    (src, layers, out)
}

#[test]
fn tiny_llama_gguf_reads_back_with_permuted_qk() {
    let tmp = tempfile::tempdir().unwrap();
    let config: serde_json::Value = {
        write_model(Fam::LlamaGqa, &tmp.path().join("probe"), 7);
        serde_json::from_str(
            &std::fs::read_to_string(tmp.path().join("probe/config.json")).unwrap(),
        )
        .unwrap()
    };
    let (heads, kv) = (
        config["num_attention_heads"].as_u64().unwrap() as usize,
        config["num_key_value_heads"].as_u64().unwrap() as usize,
    );
    for (kind, dt, ft) in [
        (GridKind::GgufQ4_0, GgmlDType::Q4_0, 2),
        (GridKind::GgufQ4_1, GgmlDType::Q4_1, 3),
        (GridKind::GgufQ8_0, GgmlDType::Q8_0, 7),
    ] {
        let (src, layers, out) = write_llama(tmp.path(), kind, &GgufOptions::default());
        let mut g = Read::open(&out);
        use gguf_file::Value as V;
        assert!(matches!(g.md("general.architecture"), V::String(s) if s == "llama"));
        assert!(matches!(g.md("general.file_type"), V::U32(x) if *x == ft));
        assert!(matches!(g.md("llama.attention.head_count_kv"), V::U32(x) if *x as usize == kv));
        assert!(matches!(g.md("llama.rope.dimension_count"), V::U32(16)));
        assert!(matches!(g.md("llama.rope.freq_base"), V::F32(x) if *x == 10000.0));
        assert!(
            matches!(g.md("llama.attention.layer_norm_rms_epsilon"), V::F32(x) if *x == 1e-5f32)
        );
        assert!(matches!(g.md("llama.vocab_size"), V::U32(x) if *x as usize == VOCAB));
        assert!(matches!(g.md("tokenizer.ggml.model"), V::String(s) if s == "gpt2"));
        assert!(matches!(g.md("tokenizer.ggml.pre"), V::String(s) if s == "gpt-2"));
        let merges = g.md("tokenizer.ggml.merges").to_vec().unwrap().clone();
        assert_eq!(merges.len(), 2);
        assert_eq!(merges[1].to_string().unwrap(), "Ġ ab");
        let types = g.md("tokenizer.ggml.token_type").to_vec().unwrap().clone();
        assert!(
            matches!(types[5], V::I32(3))
                && matches!(types[6], V::I32(4))
                && matches!(types[7], V::I32(5))
        );
        assert!(matches!(g.md("tokenizer.ggml.bos_token_id"), V::U32(5)));
        assert!(matches!(
            g.md("tokenizer.ggml.add_bos_token"),
            V::Bool(true)
        ));
        assert_eq!(g.content.tensor_infos.len(), 2 * 9 + 3);
        for l in 0..2 {
            for (hf, gg, perm) in [
                ("self_attn.q_proj", "attn_q", Some(heads)),
                ("self_attn.k_proj", "attn_k", Some(kv)),
                ("self_attn.v_proj", "attn_v", None),
                ("self_attn.o_proj", "attn_output", None),
                ("mlp.gate_proj", "ffn_gate", None),
                ("mlp.up_proj", "ffn_up", None),
                ("mlp.down_proj", "ffn_down", None),
            ] {
                let p = &layers[&format!("model.layers.{l}.{hf}")];
                let (shape, got_dt, v) = g.values(&format!("blk.{l}.{gg}.weight"));
                assert_eq!((shape, got_dt), (vec![p.rows, p.cols], dt));
                let mut want = p.dequantize();
                if let Some(n) = perm {
                    want = permuted(&want, &rope_permutation(p.rows, n).unwrap());
                }
                assert_eq!(v, want, "{kind:?} layer {l} {hf}");
            }
            let (_, got_dt, v) = g.values(&format!("blk.{l}.attn_norm.weight"));
            assert_eq!(got_dt, GgmlDType::F32);
            assert_eq!(
                v,
                src.read_f32(&format!("model.layers.{l}.input_layernorm.weight"))
                    .unwrap()
            );
        }
        let (shape, _, _) = g.values("output.weight");
        assert_eq!(shape, vec![VOCAB, 64]);
    }
}

#[test]
fn tiny_llama_gguf_runs_like_the_fake_quant_model_in_candle() {
    // f32 matmuls on the dequantized weights on both sides (set before the first QMatMul of
    // this thread), so the only differences are the two rope conventions.
    unsafe { std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1") };
    let tmp = tempfile::tempdir().unwrap();
    for kind in [GridKind::GgufQ4_1, GridKind::GgufQ4_0] {
        let (src, layers, out) = write_llama(tmp.path(), kind, &GgufOptions::default());
        let fq = tmp.path().join(format!("fq-{}", kind.name()));
        pmq_formats::fake_quant::write_fake_quant(
            &QuantizedModel::new(&src, &layers),
            Some(pmq_io::Dtype::F32),
            &Destination::new(&fq),
        )
        .unwrap();
        let dev = Device::Cpu;
        let ids: Vec<u32> = vec![1, 5, 9, 2, 7, 3, 11, 4];
        let input = Tensor::new(ids.as_slice(), &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap();

        let mut f = std::fs::File::open(out.join("model.gguf")).unwrap();
        let content = gguf_file::Content::read(&mut f).unwrap();
        let mut qm = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
            content, &mut f, &dev,
        )
        .unwrap();
        let got: Vec<f32> = qm
            .forward(&input, 0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();

        use candle_transformers::models::llama;
        let cfg: llama::LlamaConfig =
            serde_json::from_str(&std::fs::read_to_string(fq.join("config.json")).unwrap())
                .unwrap();
        let cfg = cfg.into_config(false);
        let vb = unsafe {
            candle_nn::VarBuilder::from_mmaped_safetensors(
                &[fq.join("model.safetensors")],
                DType::F32,
                &dev,
            )
            .unwrap()
        };
        let model = llama::Llama::load(vb, &cfg).unwrap();
        let mut cache = llama::Cache::new(false, DType::F32, &cfg, &dev).unwrap();
        let want: Vec<f32> = model
            .forward(&input, 0, &mut cache)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(got.len(), want.len());
        let max_diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let max_ref = want.iter().map(|b| b.abs()).fold(0f32, f32::max);
        let rel = max_diff / max_ref;
        assert!(
            rel < 1e-4,
            "{kind:?}: quantized_llama vs llama logits differ by {rel}"
        );
        // non-trivial logits (without the q/k permutation the two differ by ~50%)
        assert!(want.iter().any(|x| x.abs() > 1e-3));
    }
}

#[test]
fn template_supplies_tokenizer_keys_and_must_match_the_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    // a template: the BERT with a WordPiece tokenizer, unquantized, F16
    let t_dir = tmp.path().join("t-src");
    write_model(Fam::Bert, &t_dir, 1);
    wordpiece_tokenizer(&t_dir);
    let t_src = TensorStore::open_dir(&t_dir).unwrap();
    let none = BTreeMap::new();
    let t_out = tmp.path().join("t-out");
    let f16 = GgufOptions {
        unquantized: pmq_formats::gguf::Unquantized::F16,
        ..Default::default()
    };
    write_gguf(
        &QuantizedModel::new(&t_src, &none),
        &f16,
        &Destination::new(&t_out),
    )
    .unwrap();
    {
        let mut g = Read::open(&t_out);
        assert!(matches!(
            g.md("general.file_type"),
            gguf_file::Value::U32(1)
        ));
        assert_eq!(g.values("blk.0.attn_q.weight").1, GgmlDType::F16);
        assert_eq!(g.values("blk.0.attn_q.bias").1, GgmlDType::F32);
        assert_eq!(g.values("token_embd.weight").1, GgmlDType::F16);
        assert_eq!(g.values("position_embd.weight").1, GgmlDType::F32);
        assert_eq!(g.values("token_types.weight").1, GgmlDType::F32);
    }
    // the model: same BERT with the testkit's word-level tokenizer (not convertible)
    let src_dir = tmp.path().join("bert");
    write_model(Fam::Bert, &src_dir, 1);
    let src = TensorStore::open_dir(&src_dir).unwrap();
    let layers = quantize_all(&src, &QuantGrid::gguf(GridKind::GgufQ8_0));
    let plain = tmp.path().join("plain");
    write_default(&src, &layers, &plain).unwrap();
    assert!(!Read::open(&plain)
        .content
        .metadata
        .contains_key("tokenizer.ggml.model"));
    let opts = GgufOptions {
        template: Some(t_out.join("model.gguf")),
        ..Default::default()
    };
    let with_t = tmp.path().join("with-template");
    write_gguf(
        &QuantizedModel::new(&src, &layers),
        &opts,
        &Destination::new(&with_t),
    )
    .unwrap();
    let g = Read::open(&with_t);
    assert!(matches!(g.md("tokenizer.ggml.model"), gguf_file::Value::String(s) if s == "bert"));
    assert_eq!(g.md("tokenizer.ggml.tokens").to_vec().unwrap().len(), VOCAB);
    assert!(matches!(
        g.md("general.file_type"),
        gguf_file::Value::U32(7)
    ));
    // a llama template for a bert model
    let (_, _, llama_out) = write_llama(tmp.path(), GridKind::GgufQ4_0, &GgufOptions::default());
    let bad = GgufOptions {
        template: Some(llama_out.join("model.gguf")),
        ..Default::default()
    };
    let e = write_gguf(
        &QuantizedModel::new(&src, &layers),
        &bad,
        &Destination::new(&tmp.path().join("x")),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("template for architecture llama, but the model is bert"),
        "{e}"
    );
}

/// The tokenizer keys `convert_hf_to_gguf.py` wrote for a T5 with the vocabulary in
/// `tests/data/t5_vocab` (a 600-piece Unigram model trained by SentencePiece, byte fallback, a
/// user-defined piece; `vocab_size` 604), read back from its GGUF with gguf-py
/// (`bench/interop/gguf_t5.py golden`).
fn converter_t5_keys() -> serde_json::Map<String, serde_json::Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/t5_vocab");
    let text = std::fs::read_to_string(dir.join("converter_tokenizer_keys.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn json_of(v: &gguf_file::Value) -> serde_json::Value {
    use gguf_file::Value as V;
    match v {
        V::U8(x) => json!(x),
        V::I32(x) => json!(x),
        V::U32(x) => json!(x),
        V::F32(x) => json!(*x as f64),
        V::Bool(x) => json!(x),
        V::String(x) => json!(x),
        V::Array(a) => serde_json::Value::Array(a.iter().map(json_of).collect()),
        other => panic!("unexpected value {other:?}"),
    }
}

#[test]
fn tiny_t5_gguf_reads_back_with_the_converters_vocabulary() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("t5");
    write_model(Fam::T5Gated, &src_dir, 5);
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/t5_vocab");
    for f in ["spiece.model", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(data.join(f), src_dir.join(f)).unwrap();
    }
    // the golden vocabulary's size (the embedding rows do not enter the tokenizer keys)
    let cfg_path = src_dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["vocab_size"] = json!(604);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();

    let src = TensorStore::open_dir(&src_dir).unwrap();
    let layers = quantize_all(&src, &QuantGrid::gguf(GridKind::GgufQ8_0));
    // encoder: 4 attention + 3 feed-forward per block; decoder: 8 attention + 3
    assert_eq!(layers.len(), 2 * 7 + 2 * 11);
    let out = tmp.path().join("out");
    write_default(&src, &layers, &out).unwrap();
    let mut g = Read::open(&out);
    use gguf_file::Value as V;
    assert!(matches!(g.md("general.architecture"), V::String(s) if s == "t5"));
    assert!(matches!(g.md("general.file_type"), V::U32(7)));
    assert!(matches!(g.md("t5.context_length"), V::U32(512)));
    assert!(matches!(g.md("t5.block_count"), V::U32(2)));
    assert!(matches!(g.md("t5.decoder_block_count"), V::U32(2)));
    assert!(matches!(g.md("t5.attention.key_length"), V::U32(16)));
    assert!(matches!(
        g.md("t5.attention.relative_buckets_count"),
        V::U32(32)
    ));
    assert!(matches!(g.md("t5.decoder_start_token_id"), V::U32(0)));

    // every tokenizer key the converter wrote, with the same value; no other tokenizer key
    let want = converter_t5_keys();
    // numbers as f32 (serde_json's default parser may be 1 ulp off in f64)
    fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        match (a, b) {
            (serde_json::Value::Number(x), serde_json::Value::Number(y)) => {
                x.as_f64().map(|v| v as f32) == y.as_f64().map(|v| v as f32)
            }
            (serde_json::Value::Array(x), serde_json::Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
            }
            _ => a == b,
        }
    }
    for (k, v) in &want {
        assert!(same(&json_of(g.md(k)), v), "{k}");
    }
    let ours: Vec<&String> = g
        .content
        .metadata
        .keys()
        .filter(|k| k.starts_with("tokenizer."))
        .collect();
    assert_eq!(ours.len(), want.len(), "{ours:?}");

    // tensors: the shared embedding once, relative biases, both stacks, names as the converter's
    let (shape, dt, v) = g.values("token_embd.weight");
    assert_eq!((shape, dt), (vec![VOCAB, 64], GgmlDType::F32));
    assert_eq!(v, src.read_f32("shared.weight").unwrap());
    let (shape, _, v) = g.values("enc.blk.0.attn_rel_b.weight");
    assert_eq!(shape, vec![32, 4]);
    assert_eq!(
        v,
        src.read_f32("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
            .unwrap()
    );
    assert!(g
        .content
        .tensor_infos
        .contains_key("dec.blk.0.attn_rel_b.weight"));
    for (hf, gg) in [
        (
            "encoder.block.1.layer.0.SelfAttention.o",
            "enc.blk.1.attn_o",
        ),
        (
            "encoder.block.0.layer.1.DenseReluDense.wi_0",
            "enc.blk.0.ffn_gate",
        ),
        (
            "encoder.block.0.layer.1.DenseReluDense.wi_1",
            "enc.blk.0.ffn_up",
        ),
        (
            "decoder.block.1.layer.1.EncDecAttention.k",
            "dec.blk.1.cross_attn_k",
        ),
        (
            "decoder.block.0.layer.2.DenseReluDense.wo",
            "dec.blk.0.ffn_down",
        ),
    ] {
        let p = &layers[hf];
        let (shape, dt, v) = g.values(&format!("{gg}.weight"));
        assert_eq!((shape, dt), (vec![p.rows, p.cols], GgmlDType::Q8_0));
        assert_eq!(v, p.dequantize(), "{hf}");
    }
    for (hf, gg) in [
        (
            "decoder.block.1.layer.1.layer_norm",
            "dec.blk.1.cross_attn_norm",
        ),
        ("decoder.block.1.layer.2.layer_norm", "dec.blk.1.ffn_norm"),
        ("encoder.final_layer_norm", "enc.output_norm"),
    ] {
        let (_, dt, v) = g.values(&format!("{gg}.weight"));
        assert_eq!(dt, GgmlDType::F32);
        assert_eq!(v, src.read_f32(&format!("{hf}.weight")).unwrap(), "{hf}");
    }
    // 1 embedding + output + 2 final norms + encoder 2×(7 linears + 2 norms) + 1 bias
    // + decoder 2×(11 linears + 3 norms) + 1 bias
    assert_eq!(g.content.tensor_infos.len(), 4 + 18 + 1 + 28 + 1);
}

#[test]
fn bad_input_gives_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    // unsupported architecture
    let clip = tmp.path().join("clip");
    write_model(Fam::Clip, &clip, 3);
    let src = TensorStore::open_dir(&clip).unwrap();
    let none = BTreeMap::new();
    let e = write_default(&src, &none, &tmp.path().join("o1")).unwrap_err();
    assert!(
        e.to_string()
            .contains("GGUF output supports bert, llama and t5 checkpoints; clip_vision_model is not supported"),
        "{e}"
    );

    let dir = tmp.path().join("llama");
    write_model(Fam::LlamaGqa, &dir, 4);
    let src = TensorStore::open_dir(&dir).unwrap();
    // mixed types
    let mut layers = quantize_all(&src, &QuantGrid::gguf(GridKind::GgufQ4_0));
    let q8 = quantize_all(&src, &QuantGrid::gguf(GridKind::GgufQ8_0));
    layers.insert(
        "model.layers.1.mlp.up_proj".into(),
        q8["model.layers.1.mlp.up_proj"].clone(),
    );
    let e = write_default(&src, &layers, &tmp.path().join("o2")).unwrap_err();
    assert!(e.to_string().contains("must share one type"), "{e}");
    // a uniform asymmetric grid
    let asym = QuantGrid {
        kind: GridKind::Uniform,
        bits: 4,
        sym: false,
        group_size: Some(32),
        scale_precision: ScalePrecision::F16,
    };
    let layers = quantize_all(&src, &asym);
    let e = write_default(&src, &layers, &tmp.path().join("o3")).unwrap_err();
    assert!(
        e.to_string().contains("no GGUF block type stores exactly"),
        "{e}"
    );
    // groups that do not align with blocks of 32
    let g48 = QuantGrid {
        kind: GridKind::Uniform,
        bits: 4,
        sym: true,
        group_size: Some(48),
        scale_precision: ScalePrecision::F16,
    };
    let layers = quantize_all(&src, &g48);
    let e = write_default(&src, &layers, &tmp.path().join("o4")).unwrap_err();
    assert!(e.to_string().contains("span several groups"), "{e}");
    // a uniform symmetric 4-bit grid with groups of 64 maps exactly onto Q4_0
    let g64 = QuantGrid {
        kind: GridKind::Uniform,
        bits: 4,
        sym: true,
        group_size: Some(64),
        scale_precision: ScalePrecision::F16,
    };
    let layers = quantize_all(&src, &g64);
    let out = tmp.path().join("o5");
    write_default(&src, &layers, &out).unwrap();
    let mut g = Read::open(&out);
    let p = &layers["model.layers.0.mlp.down_proj"];
    let (_, dt, v) = g.values("blk.0.ffn_down.weight");
    assert_eq!((dt, v), (GgmlDType::Q4_0, p.dequantize()));
}
