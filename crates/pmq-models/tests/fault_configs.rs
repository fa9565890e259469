//! Fault suite of the model loader: thousands of mutated `config.json` files for every family
//! (BERT, CLIP vision, Llama with GQA and with biases, T5 ReLU and gated-GELU), each loaded with
//! [`load_model`] over the family's intact tiny checkpoint.
//!
//! Every integer and float field (and the nested RoPE and `vision_config` objects) gets random
//! values: 0, negative, 2³¹ − 1, 2³¹, 2⁶⁴ − 1, huge floats, floats where integers are expected,
//! "NaN" and other strings, booleans, null, arrays, objects; fields are removed; whole files are
//! not JSON, not objects, empty. A config the checkpoint supports loads, and the model then runs
//! one forward pass; any other is refused with an error naming config.json and a field it
//! concerns, or the checkpoint file and the tensor that does not fit it. Never a panic, never an
//! abort or an absurd allocation ([`CappedAlloc`]), inputs byte-identical, nothing left behind.
//!
//! `PROPTEST_CASES` sets the number of cases, `PROPTEST_RNG_SEED` the seed.

use candle_core::{Device, Tensor};
use pmq_models::{load_model, Batch, LoadedModel};
use pmq_testkit::fault::{draw, runner, CappedAlloc, Outcome, Tally};
use pmq_testkit::{write_model, Fam, ALL};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

/// Every config field a family reads (and some it does not).
const FIELDS: &[&str] = &[
    "architectures",
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "pad_token_id",
    "position_embedding_type",
    "is_decoder",
    "add_cross_attention",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "partial_rotary_factor",
    "original_max_position_embeddings",
    "attention_bias",
    "mlp_bias",
    "tie_word_embeddings",
    "d_model",
    "d_kv",
    "d_ff",
    "num_layers",
    "num_decoder_layers",
    "num_heads",
    "relative_attention_num_buckets",
    "relative_attention_max_distance",
    "layer_norm_epsilon",
    "feed_forward_proj",
    "is_encoder_decoder",
    "scale_decoder_outputs",
    "decoder_start_token_id",
    "eos_token_id",
    "num_channels",
    "image_size",
    "patch_size",
    "projection_dim",
    "vision_config",
    "torch_dtype",
];

const ROPE_KEYS: &[&str] = &[
    "rope_type",
    "type",
    "rope_theta",
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
    "beta_fast",
    "beta_slow",
    "attention_factor",
    "mscale",
    "mscale_all_dim",
    "truncate",
    "short_factor",
    "long_factor",
    "partial_rotary_factor",
    "unknown_key",
];

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(vec![
            json!(0), json!(-1), json!(1), json!(2), json!(3), json!(4), json!(8), json!(16),
            json!(32), json!(64), json!(2147483647u64), json!(2147483648u64),
            json!(9007199254740993u64), json!(u64::MAX), json!(i64::MIN), json!(1e300),
            json!(-1e300), json!(0.5), json!(1.5), json!(64.0), json!(-0.0), json!(1e-12),
            json!("NaN"), json!("Infinity"), json!("12"), json!(""), json!(true), json!(false),
            json!(null), json!([]), json!([1, 2]), json!({}),
        ]),
        2 => (0u64..200).prop_map(Value::from),
        1 => (-10.0f64..10.0).prop_map(Value::from),
        2 => prop::sample::select(vec![
            json!("gelu"), json!("relu"), json!("silu"), json!("quick_gelu"), json!("gelu_new"),
            json!("bogus"), json!("gated-gelu"), json!("gated-silu"), json!("a-b-c"),
            json!("gated-"), json!("-"), json!("absolute"), json!("relative_key"),
            json!(["BertModel"]), json!(["LlamaForCausalLM"]), json!(["T5ForConditionalGeneration"]),
            json!(["CLIPVisionModel"]), json!(["CLIPModel"]), json!(["GPT2LMHeadModel"]),
            json!([1]), json!("BertModel"), json!("bert"), json!("llama"), json!("t5"),
            json!("clip_vision_model"),
        ]),
    ]
}

fn rope_object() -> impl Strategy<Value = Value> {
    let rope_type = prop::sample::select(vec![
        "default", "linear", "dynamic", "llama3", "yarn", "longrope", "bogus",
    ]);
    let entry = (
        prop::sample::select(ROPE_KEYS.to_vec()),
        prop_oneof![
            3 => value(),
            1 => prop::collection::vec(-2.0f64..4.0, 0..12).prop_map(|v| json!(v)),
        ],
    );
    (rope_type, prop::collection::vec(entry, 0..5)).prop_map(|(t, entries)| {
        let mut m = Map::new();
        m.insert("rope_type".into(), json!(t));
        for (k, v) in entries {
            m.insert(k.to_string(), v);
        }
        Value::Object(m)
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    /// `field` set to a value.
    Set(&'static str, Value),
    /// `field` removed.
    Remove(&'static str),
    /// The family's config moved into `vision_config` (CLIPModel style), then `field` set.
    Nested(&'static str, Value),
    /// The whole file replaced.
    File(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let field = prop::sample::select(FIELDS.to_vec());
    prop_oneof![
        12 => (field.clone(), value()).prop_map(|(f, v)| Mutation::Set(f, v)),
        2 => (prop::sample::select(vec!["rope_scaling", "rope_parameters"]), rope_object())
            .prop_map(|(f, v)| Mutation::Set(f, v)),
        3 => field.clone().prop_map(Mutation::Remove),
        1 => (field, value()).prop_map(|(f, v)| Mutation::Nested(f, v)),
        1 => prop_oneof![
            prop::collection::vec(any::<u8>(), 0..32),
            prop::sample::select(vec![
                b"".to_vec(), b"[]".to_vec(), b"null".to_vec(), b"42".to_vec(),
                b"\"config\"".to_vec(), b"{".to_vec(), b"{\"hidden_size\": 64,}".to_vec(),
                b"\xEF\xBB\xBF{}".to_vec(), b"{\"a\": \"\xff\"}".to_vec(),
            ]),
        ]
        .prop_map(Mutation::File),
    ]
}

fn apply(config: &Value, muts: &[Mutation]) -> (Vec<u8>, Vec<String>) {
    let mut c = config.clone();
    let mut fields = Vec::new();
    let mut file = None;
    for m in muts {
        let obj = c.as_object_mut().unwrap();
        match m {
            Mutation::Set(f, v) => {
                obj.insert(f.to_string(), v.clone());
                fields.push(f.to_string());
            }
            Mutation::Remove(f) => {
                obj.remove(*f);
                fields.push(f.to_string());
            }
            Mutation::Nested(f, v) => {
                let mut inner = obj.clone();
                inner.insert(f.to_string(), v.clone());
                let arch = obj.get("architectures").cloned();
                obj.clear();
                obj.insert("vision_config".into(), Value::Object(inner));
                if let Some(a) = arch {
                    obj.insert("architectures".into(), a);
                }
                fields.push(f.to_string());
                fields.push("vision_config".into());
                fields.push("architectures".into());
            }
            Mutation::File(b) => file = Some(b.clone()),
        }
    }
    match file {
        Some(b) => (b, vec!["(root)".into()]),
        None => (serde_json::to_vec_pretty(&c).unwrap(), fields),
    }
}

/// One forward pass of a loaded model on a tiny batch.
fn forward(model: LoadedModel) -> pmq_models::Result<Tensor> {
    let batch = match &model {
        LoadedModel::ClipVision(m) => {
            let c = m.config();
            let px = Tensor::ones(
                (2, c.num_channels, c.image_size, c.image_size),
                candle_core::DType::F32,
                &Device::Cpu,
            )?;
            Batch::from_pixels(px)
        }
        LoadedModel::T5(_) => Batch::from_token_ids(&[vec![5, 6, 7, 1], vec![8, 1]], 0)?
            .with_decoder_ids(&[vec![0, 9, 10], vec![0, 11]], 0)?,
        _ => Batch::from_token_ids(&[vec![2, 5, 6, 7, 3], vec![2, 8, 3]], 0)?,
    };
    model.into_block_model().forward(&batch)
}

fn run_case(dir: &Path, fields: &[String]) -> Result<Outcome, String> {
    let config = dir.join("config.json").display().to_string();
    let weights = dir.join("model.safetensors").display().to_string();
    let dir_s = dir.display().to_string();
    match load_model(dir) {
        Ok(model) => {
            // a config the checkpoint supports: the model runs (an error is fine, a panic not)
            let _ = forward(model);
            Ok(Outcome::Accepted)
        }
        Err(e) => {
            let msg = e.to_string();
            let names_field = msg.contains(&config)
                && (fields
                    .iter()
                    .any(|f| msg.contains(&format!("`{f}")) || msg.contains(&format!(".{f}`")))
                    || fields.iter().any(|f| f == "(root)")
                    || msg.contains("unknown architecture"));
            // a config that does not fit the checkpoint: the tensor and its file (or the
            // checkpoint directory, for a missing tensor)
            let names_tensor = msg.contains('`')
                && (msg.contains(&weights) || msg.contains(&dir_s))
                && matches!(
                    e,
                    pmq_models::Error::Shape { .. } | pmq_models::Error::MissingTensor { .. }
                );
            if names_field || names_tensor {
                Ok(Outcome::Refused)
            } else {
                Err(format!(
                    "the error names neither config.json and one of {fields:?} nor a tensor and \
                     its file: {msg}"
                ))
            }
        }
    }
}

#[test]
fn mutated_configs_load_or_are_refused_naming_config_json_and_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let cases = tmp.path().join("cases");
    // per family: its intact checkpoint and a case directory whose config.json is rewritten
    // for every case, its weights a link to the intact ones
    let fams: Vec<(Fam, Value, PathBuf)> = ALL
        .iter()
        .map(|&fam| {
            let name = format!("{fam:?}");
            let src = models.join(&name);
            write_model(fam, &src, 1);
            let config: Value =
                serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap())
                    .unwrap();
            let dir = cases.join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::symlink(
                src.join("model.safetensors"),
                dir.join("model.safetensors"),
            )
            .unwrap();
            (fam, config, dir)
        })
        .collect();
    let mut tally = Tally::new("config.json (pmq-models load_model)");
    // the intact configs load and run
    for (fam, config, dir) in &fams {
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        tally.case(
            &format!("{fam:?} intact"),
            &[&models, &cases],
            || match load_model(dir) {
                Ok(m) => forward(m)
                    .map(|_| Outcome::Accepted)
                    .map_err(|e| format!("the intact model does not run: {e}")),
                Err(e) => Err(format!("the intact config is refused: {e}")),
            },
        );
    }
    let mut runner = runner(2500);
    let strategy = (0..fams.len(), prop::collection::vec(mutation(), 1..4));
    for k in 0..runner.config().cases {
        let (f, muts) = draw(&mut runner, &strategy);
        let (fam, config, dir) = &fams[f];
        let (bytes, fields) = apply(config, &muts);
        std::fs::write(dir.join("config.json"), &bytes).unwrap();
        let label = format!("case {k}: {fam:?} {muts:?}");
        tally.case(&label, &[&models, &cases], || run_case(dir, &fields));
    }
    assert!(tally.accepted() > 0 && tally.refused() > 0);
    tally.finish();
}
