//! CLIP vision tower: parity with candle-transformers' ClipVisionTransformer (+ visual
//! projection) for a CLIPModel-style checkpoint and a CLIPVisionModel checkpoint, capture,
//! weight swapping, f16, errors, and image preprocessing.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{rel_err, Ckpt};
use pmq_models::{load_model, Batch, BlockModel, ClipImageProcessor, ClipVisionModel, LoadedModel};
use serde_json::json;
use std::path::Path;

const H: usize = 64;
const I: usize = 128;
const L: usize = 2;
const IMG: usize = 32;
const P: usize = 8;
const PROJ: usize = 32;

fn vision_config() -> serde_json::Value {
    json!({
        "model_type": "clip_vision_model", "hidden_size": H, "intermediate_size": I,
        "num_hidden_layers": L, "num_attention_heads": 4, "num_channels": 3,
        "image_size": IMG, "patch_size": P, "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5, "attention_dropout": 0.0, "projection_dim": PROJ
    })
}

fn clip_config() -> serde_json::Value {
    json!({
        "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": PROJ,
        "logit_scale_init_value": 2.6592, "initializer_factor": 1.0,
        "text_config": {"model_type": "clip_text_model", "hidden_size": 48, "vocab_size": 50,
                        "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 96,
                        "max_position_embeddings": 16},
        "vision_config": vision_config(),
        "transformers_version": "4.40.0"
    })
}

fn checkpoint(seed: u64, full: bool) -> Ckpt {
    let mut c = Ckpt::new(seed);
    let p = "vision_model";
    c.rand(&format!("{p}.embeddings.class_embedding"), &[H], 1.0);
    c.rand(
        &format!("{p}.embeddings.patch_embedding.weight"),
        &[H, 3, P, P],
        0.1,
    );
    c.rand(
        &format!("{p}.embeddings.position_embedding.weight"),
        &[(IMG / P).pow(2) + 1, H],
        0.5,
    );
    c.layer_norm(&format!("{p}.pre_layrnorm"), H, true);
    for i in 0..L {
        let l = format!("{p}.encoder.layers.{i}");
        for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            c.linear(&format!("{l}.self_attn.{n}"), H, H, true);
        }
        c.layer_norm(&format!("{l}.layer_norm1"), H, true);
        c.layer_norm(&format!("{l}.layer_norm2"), H, true);
        c.linear(&format!("{l}.mlp.fc1"), H, I, true);
        c.linear(&format!("{l}.mlp.fc2"), I, H, true);
    }
    c.layer_norm(&format!("{p}.post_layernorm"), H, true);
    if full {
        c.linear("visual_projection", H, PROJ, false);
        // a few text-side tensors of a real CLIPModel checkpoint, which the tower ignores
        c.rand(
            "text_model.embeddings.token_embedding.weight",
            &[50, 48],
            1.0,
        );
        c.linear("text_projection", 48, PROJ, false);
        c.rand("logit_scale", &[], 1.0);
    }
    c
}

fn pixels(seed: u64, b: usize) -> Tensor {
    let mut c = Ckpt::new(seed);
    c.rand("x", &[b, 3, IMG, IMG], 2.0);
    c.tensors["x"].clone()
}

fn candle_embed(dir: &Path, px: &Tensor, with_projection: bool) -> Tensor {
    use candle_transformers::models::clip::{text_model::Activation, vision_model as cv};
    let cfg = cv::ClipVisionConfig {
        embed_dim: H,
        activation: Activation::QuickGelu,
        intermediate_size: I,
        num_hidden_layers: L,
        num_attention_heads: 4,
        projection_dim: PROJ,
        num_channels: 3,
        image_size: IMG,
        patch_size: P,
    };
    let vb = common::vb(dir);
    let tower = cv::ClipVisionTransformer::new(vb.pp("vision_model"), &cfg).unwrap();
    let pooled = candle_core::Module::forward(&tower, px).unwrap();
    if with_projection {
        let proj = candle_nn::linear_no_bias(H, PROJ, vb.pp("visual_projection")).unwrap();
        candle_core::Module::forward(&proj, &pooled).unwrap()
    } else {
        pooled
    }
}

#[test]
fn clip_parity_full_clipmodel_and_vision_only() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(31, true).save(dir.path(), &clip_config(), DType::F32);
    let LoadedModel::ClipVision(model) = load_model(dir.path()).unwrap() else {
        panic!()
    };
    assert!(model.has_projection());
    let px = pixels(1, 3);
    let ours = model.image_embedding(&px).unwrap();
    assert_eq!(ours.dims(), &[3, PROJ]);
    let e = rel_err(&ours, &candle_embed(dir.path(), &px, true));
    println!("CLIP (CLIPModel, projected) image embedding max rel err = {e:.3e}");
    assert!(e <= 1e-4);

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = vision_config();
    cfg["architectures"] = json!(["CLIPVisionModel"]);
    checkpoint(32, false).save(dir.path(), &cfg, DType::F32);
    let model = ClipVisionModel::load(dir.path()).unwrap();
    assert!(!model.has_projection());
    let ours = model.image_embedding(&px).unwrap();
    let e = rel_err(&ours, &candle_embed(dir.path(), &px, false));
    println!("CLIP (CLIPVisionModel, pooled) max rel err = {e:.3e}");
    assert!(e <= 1e-4);
}

#[test]
fn clip_capture_swap_f16_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(33, true);
    ck.save(dir.path(), &clip_config(), DType::F32);
    let mut model = ClipVisionModel::load(dir.path()).unwrap();
    let px = pixels(2, 2);
    let tokens = 2 * ((IMG / P).pow(2) + 1);
    let mut s = model.embed(&Batch::from_pixels(px.clone())).unwrap();
    for blk in 0..L {
        let groups = model.block_groups(blk).unwrap();
        let short: Vec<Vec<String>> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|l| l.name.rsplit('.').next().unwrap().to_string())
                    .collect()
            })
            .collect();
        assert_eq!(
            short,
            vec![
                vec!["q_proj", "k_proj", "v_proj"],
                vec!["out_proj"],
                vec!["fc1"],
                vec!["fc2"]
            ]
        );
        let mut seen = vec![];
        let mut cb = |n: &str, x: &Tensor| -> pmq_models::Result<()> {
            seen.push((n.to_string(), x.dims().to_vec()));
            Ok(())
        };
        s = model.block_forward(blk, &s, Some(&mut cb)).unwrap();
        let want: Vec<_> = groups
            .into_iter()
            .flatten()
            .map(|l| (l.name, vec![tokens, l.in_features]))
            .collect();
        assert_eq!(seen, want);
    }
    // weight swap == candle on a checkpoint with that weight zeroed
    let name = "vision_model.encoder.layers.0.mlp.fc2";
    let zero = model.linear_weight(name).unwrap().zeros_like().unwrap();
    model.set_linear_weight(name, zero.clone()).unwrap();
    let mut z = Ckpt::with(ck.tensors.clone());
    z.tensors.insert(format!("{name}.weight"), zero);
    let zdir = tempfile::tempdir().unwrap();
    z.save(zdir.path(), &clip_config(), DType::F32);
    assert!(
        rel_err(
            &model.image_embedding(&px).unwrap(),
            &candle_embed(zdir.path(), &px, true)
        ) <= 1e-4
    );

    // f16 checkpoint
    let fdir = tempfile::tempdir().unwrap();
    ck.save(fdir.path(), &clip_config(), DType::F16);
    let m16 = ClipVisionModel::load(fdir.path()).unwrap();
    let e = rel_err(
        &m16.image_embedding(&px).unwrap(),
        &candle_embed(fdir.path(), &px, true),
    );
    println!("CLIP F16 checkpoint max rel err = {e:.3e}");
    assert!(e <= 1e-4);

    // errors
    let bad = Tensor::zeros((1, 3, 16, 16), DType::F32, &Device::Cpu).unwrap();
    let err = m16.image_embedding(&bad).unwrap_err().to_string();
    assert!(err.contains("pixel_values") && err.contains("32"), "{err}");
    let mut cfg = clip_config();
    cfg.as_object_mut().unwrap().remove("vision_config");
    ck.save(fdir.path(), &cfg, DType::F32);
    let err = load_model(fdir.path()).unwrap_err().to_string();
    assert!(err.contains("vision_config"), "{err}");
    let mut cfg = clip_config();
    cfg["projection_dim"] = json!(16);
    ck.save(fdir.path(), &cfg, DType::F32);
    let err = load_model(fdir.path()).unwrap_err().to_string();
    assert!(
        err.contains("visual_projection.weight") && err.contains("[16, 64]"),
        "{err}"
    );
    let mut cfg = clip_config();
    cfg["vision_config"]["hidden_act"] = json!("tanh");
    ck.save(fdir.path(), &cfg, DType::F32);
    let err = load_model(fdir.path()).unwrap_err().to_string();
    assert!(err.contains("vision_config.hidden_act"), "{err}");
}

#[test]
fn clip_preprocessing_resize_crop_normalise() {
    // a constant image stays constant under bicubic resizing and cropping
    let img = image::RgbImage::from_pixel(40, 20, image::Rgb([200, 100, 50]));
    let p = ClipImageProcessor::for_image_size(16);
    let t = p
        .preprocess(&image::DynamicImage::ImageRgb8(img.clone()))
        .unwrap();
    assert_eq!(t.dims(), &[3, 16, 16]);
    let v: Vec<Vec<Vec<f32>>> = t.to_vec3().unwrap();
    let want = [
        (200.0 / 255.0 - 0.48145466) / 0.26862954,
        (100.0 / 255.0 - 0.4578275) / 0.26130258,
        (50.0 / 255.0 - 0.40821073) / 0.27577711,
    ];
    for c in 0..3 {
        for row in &v[c] {
            for &x in row {
                assert!(
                    (x - want[c] as f32).abs() < 1e-5,
                    "channel {c}: {x} vs {}",
                    want[c]
                );
            }
        }
    }
    // center crop position, read from preprocessor_config.json (no resize, no normalisation)
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("preprocessor_config.json"),
        json!({"do_resize": false, "crop_size": {"height": 8, "width": 8}, "do_normalize": false,
               "rescale_factor": 1.0, "image_processor_type": "CLIPImageProcessor"})
        .to_string(),
    )
    .unwrap();
    let p = ClipImageProcessor::from_dir(dir.path(), 224).unwrap();
    let ramp = image::RgbImage::from_fn(20, 10, |x, y| image::Rgb([x as u8, y as u8, 0]));
    let path = dir.path().join("ramp.png");
    ramp.save(&path).unwrap();
    let t = p.load_batch(&[path.as_path()]).unwrap();
    assert_eq!(t.dims(), &[1, 3, 8, 8]);
    let v: Vec<Vec<Vec<f32>>> = t.squeeze(0).unwrap().to_vec3().unwrap();
    // left = (20 - 8) / 2 = 6, top = (10 - 8) / 2 = 1
    assert_eq!(v[0][0][0], 6.0);
    assert_eq!(v[0][0][7], 13.0);
    assert_eq!(v[1][0][0], 1.0);
    assert_eq!(v[1][7][0], 8.0);
    // bad files give errors naming them
    let err = p
        .load_batch(&[dir.path().join("nope.png").as_path()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.png"), "{err}");
    std::fs::write(
        dir.path().join("preprocessor_config.json"),
        r#"{"image_mean": [0.5, 0.5]}"#,
    )
    .unwrap();
    let err = ClipImageProcessor::from_dir(dir.path(), 224)
        .unwrap_err()
        .to_string();
    assert!(err.contains("image_mean"), "{err}");
}
