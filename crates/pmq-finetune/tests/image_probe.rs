//! A linear probe on a tiny random CLIP vision tower learns colour classes from image folders
//! and scores them on held-out images; reruns reuse it.

use pmq_eval::tasks::ImageTask;
use pmq_eval::{evaluate_tasks, EvalOptions, EvalTask, Head};
use pmq_finetune::{finetune_images, train_images, FinetuneConfig, Mode};
use pmq_testkit::{write_image_folder, write_model, Fam};

#[test]
fn image_probe_separates_colour_classes_and_is_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("clip");
    write_model(Fam::Clip, &model, 11);
    let classes = [
        ("red", [210, 60, 50]),
        ("blue", [50, 70, 210]),
        ("green", [60, 190, 70]),
    ];
    write_image_folder(&tmp.path().join("train"), &classes, 10, 40, 1);
    write_image_folder(&tmp.path().join("test"), &classes, 6, 40, 2);
    let task = ImageTask::from_folder("colours", &tmp.path().join("train")).unwrap();
    assert_eq!(task.labels, ["blue", "green", "red"]);
    let cfg = FinetuneConfig::ci();
    let out_dir = tmp.path().join("experts/colours");
    let out = finetune_images(&model, &task, Mode::LinearProbe, &cfg, &out_dir).unwrap();
    assert!(!out.cached);
    let head = Head::load(&out.head).unwrap();
    assert_eq!(head.labels, task.labels);
    assert_eq!(head.hidden, 64);
    let test =
        ImageTask::from_folder_with_labels("colours", &tmp.path().join("test"), &head.labels)
            .unwrap();
    let opts = EvalOptions {
        batch_size: 7,
        ..EvalOptions::default()
    };
    let acc = evaluate_tasks(&model, &[EvalTask::Image(&test, &head)], &opts).unwrap();
    println!(
        "image probe: {}/{} held-out images",
        acc[0].correct, acc[0].total
    );
    // chance is 1/3; the colours are far apart
    assert!(acc[0].accuracy >= 0.9, "{:?}", acc[0]);
    // same inputs → cached; a changed image → retrained
    let again = finetune_images(&model, &task, Mode::LinearProbe, &cfg, &out_dir).unwrap();
    assert!(again.cached);
    write_image_folder(&tmp.path().join("train"), &classes[..1], 1, 40, 99);
    let changed = ImageTask::from_folder("colours", &tmp.path().join("train")).unwrap();
    let re = finetune_images(&model, &changed, Mode::LinearProbe, &cfg, &out_dir).unwrap();
    assert!(!re.cached);
}

#[test]
fn a_capped_image_set_keeps_every_class() {
    let tmp = tempfile::tempdir().unwrap();
    let classes = [("a", [0, 0, 0]), ("b", [255, 255, 255])];
    write_image_folder(tmp.path(), &classes, 20, 0, 1);
    let task = ImageTask::from_folder("t", tmp.path()).unwrap();
    let cfg = FinetuneConfig {
        max_train: Some(10),
        ..FinetuneConfig::ci()
    };
    let picked = train_images(&task, &cfg);
    assert_eq!(picked.len(), 10);
    assert!(picked.iter().any(|e| e.label == 0) && picked.iter().any(|e| e.label == 1));
    assert_eq!(picked, train_images(&task, &cfg), "seeded");
    assert_eq!(
        train_images(
            &task,
            &FinetuneConfig {
                max_train: None,
                ..cfg
            }
        )
        .len(),
        40
    );
}
