//! Full fine-tuning of a CLIP vision tower: the trainable tower computes what the inference
//! model computes (with and without `visual_projection`), gradients reach every tensor, and a
//! fine-tuned expert learns colour classes that `pmq_eval` then scores from its directory.

use candle_core::{DType, Device, Tensor};
use pmq_eval::tasks::ImageTask;
use pmq_eval::{evaluate_tasks, EvalOptions, EvalTask, Head};
mod common;
use pmq_finetune::clip::TrainClip;
use pmq_finetune::{finetune_images, FinetuneConfig, Mode};
use pmq_io::{Dtype, TensorStore};
use pmq_models::ClipVisionModel;
use pmq_testkit::{rel_err, write_image_folder, write_model, Fam};
use std::path::Path;

fn pixels(seed: u64, b: usize) -> Tensor {
    let v: Vec<f32> = (0..b * 3 * 32 * 32)
        .map(|i| (((i as u64 * 2_654_435_761 + seed) % 1000) as f32 / 500.0) - 1.0)
        .collect();
    Tensor::from_vec(v, (b, 3, 32, 32), &Device::Cpu).unwrap()
}

/// Adds a `visual_projection.weight` `[24, 64]` to the checkpoint in `dir` (a
/// `CLIPVisionModelWithProjection`).
fn add_projection(dir: &Path) {
    let store = TensorStore::open_dir(dir).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = store
        .names()
        .iter()
        .map(|n| {
            let v = store.read_f32(n).unwrap();
            let shape = store.info(n).unwrap().shape.clone();
            (
                n.clone(),
                Dtype::F32,
                shape,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    drop(store);
    let w: Vec<u8> = (0..24 * 64)
        .flat_map(|i| (((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.3).to_le_bytes())
        .collect();
    tensors.push((
        "visual_projection.weight".into(),
        Dtype::F32,
        vec![24, 64],
        w,
    ));
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    pmq_io::write_safetensors(&dir.join("model.safetensors"), &tensors, None).unwrap();
    let cfg_file = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_file).unwrap()).unwrap();
    cfg["architectures"] = serde_json::json!(["CLIPVisionModelWithProjection"]);
    cfg["projection_dim"] = 24.into();
    std::fs::write(&cfg_file, cfg.to_string()).unwrap();
}

#[test]
fn the_trainable_tower_computes_the_inference_embedding_and_every_tensor_gets_a_gradient() {
    let tmp = tempfile::tempdir().unwrap();
    for projection in [false, true] {
        let dir = tmp.path().join(format!("clip-{projection}"));
        write_model(Fam::Clip, &dir, 9);
        if projection {
            add_projection(&dir);
        }
        let px = pixels(3, 2);
        let reference = ClipVisionModel::load(&dir)
            .unwrap()
            .image_embedding(&px)
            .unwrap();
        let train = TrainClip::load(&dir, DType::F32).unwrap();
        let ours = train.forward(&px).unwrap();
        assert_eq!(ours.dims(), reference.dims());
        assert_eq!(train.embedding_width(), if projection { 24 } else { 64 });
        let e = rel_err(&ours, &reference);
        assert!(e <= 1e-5, "projection {projection}: rel err {e:.3e}");
        // every parameter of the tower receives a non-zero gradient
        let loss = ours.sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let names: Vec<&str> = train.params().iter().map(|(n, _)| n.as_str()).collect();
        // 3 embedding tensors, pre-LN, 2 layers of 4 LayerNorm and 12 linear tensors, post-LN
        assert_eq!(
            names.len(),
            3 + 2 + 2 * 16 + 2 + usize::from(projection),
            "{names:?}"
        );
        common::assert_every_param_has_a_gradient(
            train.params(),
            &grads,
            &format!("projection {projection}"),
        );
    }
}

#[test]
fn a_fine_tuned_clip_expert_learns_colour_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("clip");
    write_model(Fam::Clip, &model, 13);
    let classes = [
        ("red", [210, 60, 50]),
        ("blue", [50, 70, 210]),
        ("green", [60, 190, 70]),
    ];
    write_image_folder(&tmp.path().join("train"), &classes, 8, 40, 1);
    write_image_folder(&tmp.path().join("test"), &classes, 5, 40, 2);
    let task = ImageTask::from_folder("colours", &tmp.path().join("train")).unwrap();
    let cfg = FinetuneConfig {
        batch_size: 6,
        epochs: 3,
        ..FinetuneConfig::ci()
    };
    let out_dir = tmp.path().join("expert");
    let out = finetune_images(&model, &task, Mode::Full, &cfg, &out_dir).unwrap();
    assert!(!out.cached && out.steps == 12, "{} steps", out.steps);
    // an HF directory with the base's tensor names, every trained tensor moved
    let (base, expert) = (
        TensorStore::open_dir(&model).unwrap(),
        TensorStore::open_dir(&out_dir).unwrap(),
    );
    assert_eq!(base.names(), expert.names());
    for n in base.names() {
        assert_ne!(
            base.read_f32(&n).unwrap(),
            expert.read_f32(&n).unwrap(),
            "{n} did not train"
        );
    }
    let head = Head::load(&out.head).unwrap();
    let test =
        ImageTask::from_folder_with_labels("colours", &tmp.path().join("test"), &head.labels)
            .unwrap();
    let acc = evaluate_tasks(
        &out_dir,
        &[EvalTask::Image(&test, &head)],
        &EvalOptions::default(),
    )
    .unwrap();
    println!(
        "fine-tuned CLIP: {}/{} held-out images",
        acc[0].correct, acc[0].total
    );
    assert!(acc[0].accuracy >= 0.9, "{:?}", acc[0]);
    // same inputs → cached
    let again = finetune_images(&model, &task, Mode::Full, &cfg, &out_dir).unwrap();
    assert!(again.cached);
}
