//! `pmq merge --method regmean` and `pmq quantize --merge regmean` end to end on a tiny BERT:
//! each expert's Gram matrices computed on its own task, every linear merged as
//! `(Σ Wᵢ G̃ᵢ)(Σ G̃ᵢ)⁻¹`, the other tensors averaged, precomputed Gram files reused, bad input
//! refused before anything is written.

mod common;
use common::pmq;
use pmq_core::matrix::{from_row_major, to_row_major};
use pmq_core::regmean::RegMeanFold;
use pmq_io::TensorStore;
use pmq_merge::gram_file::GramFile;
use pmq_testkit::{write_calib, write_model, write_perturbed, Fam};
use std::path::{Path, PathBuf};

struct Env {
    root: tempfile::TempDir,
    base: PathBuf,
    experts: Vec<PathBuf>,
    calib: Vec<String>,
}

impl Env {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("base");
        write_model(Fam::Bert, &base, 1);
        let mut experts = Vec::new();
        let mut calib = Vec::new();
        for i in 0..2 {
            let d = root.path().join(format!("expert{i}"));
            write_perturbed(Fam::Bert, &d, 1, 100 + i, 0.05);
            experts.push(d);
            calib.push(write_calib(
                Fam::Bert,
                root.path(),
                &format!("t{i}"),
                10,
                7 + i,
            ));
        }
        Self {
            root,
            base,
            experts,
            calib,
        }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// `pmq merge --method regmean` with the experts and `extra`.
    fn merge(&self, out: &str, extra: &[String]) -> (bool, String, String) {
        let mut args: Vec<String> = vec![
            "merge".into(),
            "--method".into(),
            "regmean".into(),
            "--base".into(),
            s(&self.base),
            "--out".into(),
            s(&self.p(out)),
            "--batch-size".into(),
            "4".into(),
        ];
        for e in &self.experts {
            args.extend(["--expert".into(), s(e)]);
        }
        args.extend(extra.iter().cloned());
        pmq(&args)
    }

    fn calib_args(&self) -> Vec<String> {
        self.calib
            .iter()
            .flat_map(|c| ["--calib".to_string(), c.clone()])
            .collect()
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn read(dir: &Path, name: &str) -> Vec<f32> {
    TensorStore::open_dir(dir).unwrap().read_f32(name).unwrap()
}

#[test]
fn regmean_merges_linears_by_their_grams_and_averages_the_rest() {
    let env = Env::new();
    let mut extra = env.calib_args();
    extra.extend(["--keep-grams".into(), s(&env.p("grams"))]);
    let (ok, out, err) = env.merge("m", &extra);
    assert!(ok, "{err}");
    assert!(out.contains("\"method\":\"regmean\""), "{out}");
    let grams: Vec<GramFile> = (1..=2)
        .map(|i| GramFile::open(&env.p(&format!("grams/expert-{i}.safetensors"))).unwrap())
        .collect();
    let merged = env.p("m");
    let linears: Vec<String> = grams[0].linears().map(String::from).collect();
    assert!(linears.len() >= 6, "{linears:?}");
    for name in &linears {
        let store = TensorStore::open_dir(&merged).unwrap();
        let shape = store.info(name).unwrap().shape.clone();
        let mut fold = RegMeanFold::new(shape[0], shape[1], 0.6).unwrap();
        for (e, g) in env.experts.iter().zip(&grams) {
            let w: Vec<f64> = read(e, name).iter().map(|&v| v as f64).collect();
            let w = from_row_major(shape[0], shape[1], &w);
            fold.add(w.as_ref(), g.gram(name).unwrap().unwrap().as_ref())
                .unwrap();
        }
        let want = to_row_major(fold.solve().unwrap().weight.as_ref());
        let got = read(&merged, name);
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (g, w) in got.iter().zip(&want) {
            assert!((*g as f64 - w).abs() <= 1e-5 * scale, "{name}: {g} vs {w}");
        }
        // not the plain mean: the Grams weigh the experts
        let mean: Vec<f32> = read(&env.experts[0], name)
            .iter()
            .zip(read(&env.experts[1], name))
            .map(|(a, b)| (a + b) / 2.0)
            .collect();
        assert_ne!(got, mean, "{name}");
    }
    // everything else: the experts' mean
    let store = TensorStore::open_dir(&merged).unwrap();
    let mut others = 0;
    for name in store.names() {
        if linears.contains(&name) || store.dtype(&name).unwrap() != pmq_io::Dtype::F32 {
            continue;
        }
        let got = read(&merged, &name);
        let a = read(&env.experts[0], &name);
        let b = read(&env.experts[1], &name);
        for ((g, x), y) in got.iter().zip(&a).zip(&b) {
            assert!(
                (g - (x + y) / 2.0).abs() <= 1e-6 * (1.0 + g.abs()),
                "{name}"
            );
        }
        others += 1;
    }
    assert!(others > 0);

    // the kept Gram files reproduce the merge without the data; r = 1 is another merge
    let grams_args: Vec<String> = (1..=2)
        .flat_map(|i| {
            [
                "--grams".to_string(),
                s(&env.p(&format!("grams/expert-{i}.safetensors"))),
            ]
        })
        .collect();
    let (ok, _, err) = env.merge("m2", &grams_args);
    assert!(ok, "{err}");
    for name in &linears {
        assert_eq!(read(&merged, name), read(&env.p("m2"), name), "{name}");
    }
    let mut other = grams_args.clone();
    other.extend(["--regmean-ratio".into(), "0.9".into()]);
    let (ok, _, err) = env.merge("m3", &other);
    assert!(ok, "{err}");
    assert_ne!(read(&merged, &linears[0]), read(&env.p("m3"), &linears[0]));
    // r = 1 on these few distinct tokens: the Gram sum is singular, refused, nothing written
    let mut plain = grams_args.clone();
    plain.extend(["--regmean-ratio".into(), "1".into()]);
    let (ok, _, err) = env.merge("m4", &plain);
    assert!(
        !ok && err.contains("singular") && err.contains("ratio below 1"),
        "{err}"
    );
    assert!(!env.p("m4").exists());
}

#[test]
fn bad_regmean_input_is_refused_before_anything_is_written() {
    let env = Env::new();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "own calibration data"),
        (vec!["--calib".into(), env.calib[0].clone()], "1 --calib"),
        (
            vec!["--grams".into(), s(&env.base.join("model.safetensors"))],
            "one Gram file per expert",
        ),
        (
            vec![
                "--grams".into(),
                s(&env.base.join("model.safetensors")),
                "--grams".into(),
                s(&env.base.join("model.safetensors")),
            ],
            "not a pmq Gram file",
        ),
        (
            [
                env.calib_args(),
                vec!["--regmean-ratio".into(), "1.5".into()],
            ]
            .concat(),
            "regmean-ratio",
        ),
    ];
    for (i, (extra, needle)) in cases.iter().enumerate() {
        let out = format!("bad{i}");
        let (ok, _, err) = env.merge(&out, extra);
        assert!(!ok, "case {i} succeeded");
        assert!(err.contains(needle), "case {i}: {err}");
        assert!(!env.p(&out).exists(), "case {i} left an output");
    }
    // --calib belongs to regmean only
    let (ok, _, err) = pmq(&[
        "merge",
        "--method",
        "average",
        "--base",
        &s(&env.base),
        "--expert",
        &s(&env.experts[0]),
        "--calib",
        &env.calib[0],
        "--out",
        &s(&env.p("avg")),
    ]);
    assert!(!ok && err.contains("--calib does not apply"), "{err}");
    assert!(
        std::fs::read_dir(env.root.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".pmq-grams-")),
        "temporary Gram directories are removed"
    );
}

#[test]
fn quantize_merges_inline_with_regmean() {
    let env = Env::new();
    let mut args: Vec<String> = vec![
        "quantize".into(),
        "--merge".into(),
        "regmean".into(),
        "--base".into(),
        s(&env.base),
        "--method".into(),
        "epmq".into(),
        "--alpha".into(),
        "0.01".into(),
        "--samples-per-task".into(),
        "10".into(),
        "--batch-size".into(),
        "4".into(),
        "--group-size".into(),
        "-1".into(),
        "--format".into(),
        "fake".into(),
        "--out".into(),
        s(&env.p("q")),
    ];
    for e in &env.experts {
        args.extend(["--expert".into(), s(e)]);
    }
    args.extend(env.calib_args());
    let (ok, _, err) = pmq(&args);
    assert!(ok, "{err}");
    assert!(env.p("q/pmq_report.json").is_file());
    // the inline merge without each expert's data is refused up front
    let no_calib: Vec<String> = args
        .iter()
        .take_while(|a| *a != "--calib")
        .cloned()
        .collect();
    let mut no_calib = no_calib;
    no_calib[args.iter().position(|a| a == "--out").unwrap() + 1] = s(&env.p("q2"));
    let (ok, _, err) = pmq(&no_calib);
    assert!(!ok && err.contains("--merge regmean"), "{err}");
    assert!(!env.p("q2").exists());
}
