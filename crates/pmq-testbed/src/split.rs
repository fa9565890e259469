//! Cleaning, de-duplication and the fixed, seeded, class-stratified train / calib / test splits.

use crate::text::strip_controls;
use crate::{Example, SplitConfig, TaskStats};
use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashMap;

/// What a task loader hands over: labelled examples in a deterministic source order.
#[derive(Debug, Default)]
pub(crate) struct Pools {
    pub labels: Vec<String>,
    /// The official training part, or all the data when there is no official split.
    pub train: Vec<Example>,
    /// The official test part, if the dataset has one.
    pub test: Option<Vec<Example>>,
    /// Draw the same number of examples from every class (else: proportional to the pool).
    pub balanced: bool,
    /// Records dropped by the task's own rules before this point.
    pub filtered: usize,
}

/// The three splits and how they were obtained.
#[derive(Debug)]
pub(crate) struct Splits {
    pub train: Vec<Example>,
    pub calib: Vec<Example>,
    pub test: Vec<Example>,
    pub stats: TaskStats,
}

/// 64-bit FNV-1a.
pub(crate) fn fnv1a64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The shuffling generator of a task: `StdRng` seeded with `seed ^ fnv1a64(task)`.
pub(crate) fn task_rng(seed: u64, task: &str) -> StdRng {
    StdRng::seed_from_u64(seed ^ fnv1a64(task))
}

/// Cleans, de-duplicates, shuffles and splits.
pub(crate) fn make_splits(task: &str, pools: Pools, cfg: &SplitConfig) -> Result<Splits> {
    cfg.validate()?;
    let k = pools.labels.len();
    if k < 2 {
        bail!("task {task}: needs at least 2 classes, found {k}");
    }
    let official_test = pools.test.is_some();
    let parsed = pools.train.len() + pools.test.as_ref().map_or(0, Vec::len);
    let mut stats = TaskStats {
        parsed,
        filtered: pools.filtered,
        official_test,
        ..TaskStats::default()
    };

    // Clean: strip control characters, trim, drop empty texts; check labels.
    let mut clean = |v: Vec<Example>| -> Result<Vec<Example>> {
        let mut out = Vec::with_capacity(v.len());
        for ex in v {
            if ex.label >= k {
                bail!(
                    "task {task}: label index {} out of range ({k} classes)",
                    ex.label
                );
            }
            let text = strip_controls(&ex.text).trim().to_string();
            if text.is_empty() {
                stats.empty += 1;
            } else {
                out.push(Example {
                    text,
                    label: ex.label,
                });
            }
        }
        Ok(out)
    };
    let test_pool = pools.test.map(&mut clean).transpose()?;
    let train_pool = clean(pools.train)?;

    // De-duplicate exact texts across everything (the official test part first, so a text in
    // both parts stays in test); texts seen with different labels are dropped entirely.
    let mut labels_of: HashMap<&str, (usize, bool)> = HashMap::new();
    for ex in test_pool.iter().flatten().chain(&train_pool) {
        labels_of
            .entry(ex.text.as_str())
            .and_modify(|(l, conflict)| *conflict |= *l != ex.label)
            .or_insert((ex.label, false));
    }
    let conflicting: std::collections::HashSet<String> = labels_of
        .iter()
        .filter(|(_, (_, c))| *c)
        .map(|(t, _)| t.to_string())
        .collect();
    drop(labels_of);
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut dedupe = |v: Vec<Example>| -> Vec<Example> {
        let mut out = Vec::with_capacity(v.len());
        for ex in v {
            if conflicting.contains(&ex.text) {
                stats.conflicting += 1;
            } else if !seen.insert(ex.text.clone()) {
                stats.duplicates += 1;
            } else {
                out.push(ex);
            }
        }
        out
    };
    let mut test_pool = test_pool.map(&mut dedupe);
    let mut train_pool = dedupe(train_pool);
    stats.usable = train_pool.len() + test_pool.as_ref().map_or(0, Vec::len);

    let mut rng = task_rng(cfg.seed, task);
    if let Some(t) = test_pool.as_mut() {
        t.shuffle(&mut rng);
    }
    train_pool.shuffle(&mut rng);

    let (test, calib, train) = match test_pool {
        Some(mut official) => {
            let test_n = official.len().min(cfg.test_max);
            let test = take_stratified(&mut official, test_n, k, pools.balanced);
            let calib_n = cfg.calib_size.min(train_pool.len() / 4);
            let calib = take_stratified(&mut train_pool, calib_n, k, pools.balanced);
            let train_n = train_pool.len().min(cfg.train_max);
            let train = take_stratified(&mut train_pool, train_n, k, pools.balanced);
            (test, calib, train)
        }
        None => {
            let n = train_pool.len();
            let by_fraction = (n as f64 * cfg.test_fraction).ceil() as usize;
            let test_n = by_fraction.clamp(cfg.test_min, cfg.test_max).min(n / 2);
            let test = take_stratified(&mut train_pool, test_n, k, pools.balanced);
            let calib_n = cfg.calib_size.min(train_pool.len() / 4);
            let calib = take_stratified(&mut train_pool, calib_n, k, pools.balanced);
            let train_n = train_pool.len().min(cfg.train_max);
            let train = take_stratified(&mut train_pool, train_n, k, pools.balanced);
            (test, calib, train)
        }
    };
    if train.is_empty() || test.is_empty() || calib.is_empty() {
        bail!(
            "task {task}: only {} usable examples after cleaning ({} empty, {} duplicates, {} \
             with conflicting labels); too few for train/calib/test splits",
            stats.usable,
            stats.empty,
            stats.duplicates,
            stats.conflicting
        );
    }
    Ok(Splits {
        train,
        calib,
        test,
        stats,
    })
}

/// Removes `n` examples from `pool` (stratified by class, see [`allocate`]) and returns them in
/// the pool's (shuffled) order; the rest of the pool keeps its order.
fn take_stratified(pool: &mut Vec<Example>, n: usize, k: usize, balanced: bool) -> Vec<Example> {
    let mut avail = vec![0usize; k];
    for ex in pool.iter() {
        avail[ex.label] += 1;
    }
    let quota = allocate(n, &avail, balanced);
    let mut taken = vec![0usize; k];
    let mut out = Vec::with_capacity(n);
    let mut rest = Vec::with_capacity(pool.len().saturating_sub(n));
    for ex in pool.drain(..) {
        if taken[ex.label] < quota[ex.label] {
            taken[ex.label] += 1;
            out.push(ex);
        } else {
            rest.push(ex);
        }
    }
    *pool = rest;
    out
}

/// Splits `n` draws over classes with `avail[c]` examples each: proportionally to `avail`, or
/// equally when `balanced`; a class that runs out passes its share on to the others. Shares are
/// rounded down and the remainder goes to the largest fractional parts (ties: lower class index).
/// Exact integer arithmetic, so the result is the same on every platform.
pub(crate) fn allocate(n: usize, avail: &[usize], balanced: bool) -> Vec<usize> {
    let k = avail.len();
    let mut quota = vec![0usize; k];
    let mut remaining = n.min(avail.iter().sum());
    let weight = |c: usize| -> u128 {
        if balanced {
            1
        } else {
            avail[c] as u128
        }
    };
    let mut active: Vec<usize> = (0..k).filter(|&c| avail[c] > 0).collect();
    while remaining > 0 && !active.is_empty() {
        let wsum: u128 = active.iter().map(|&c| weight(c)).sum();
        // Classes whose share reaches their capacity take everything they have.
        let saturated: Vec<usize> = active
            .iter()
            .copied()
            .filter(|&c| remaining as u128 * weight(c) >= (avail[c] - quota[c]) as u128 * wsum)
            .collect();
        if !saturated.is_empty() {
            for &c in &saturated {
                let cap = avail[c] - quota[c];
                quota[c] += cap;
                remaining -= cap;
            }
            active.retain(|c| !saturated.contains(c));
            continue;
        }
        let mut fractions: Vec<(u128, usize)> = Vec::with_capacity(active.len());
        let mut given = 0;
        for &c in &active {
            let num = remaining as u128 * weight(c);
            let share = (num / wsum) as usize;
            quota[c] += share;
            given += share;
            fractions.push((num % wsum, c));
        }
        fractions.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, c) in fractions.iter().take(remaining - given) {
            quota[c] += 1;
        }
        remaining = 0;
    }
    quota
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn ex(text: &str, label: usize) -> Example {
        Example {
            text: text.to_string(),
            label,
        }
    }

    #[test]
    fn allocation() {
        assert_eq!(allocate(10, &[50, 30, 20], false), [5, 3, 2]);
        assert_eq!(allocate(10, &[50, 30, 20], true), [4, 3, 3]);
        // A small class runs out and passes its share on.
        assert_eq!(allocate(9, &[100, 1, 100], true), [4, 1, 4]);
        assert_eq!(allocate(5, &[1, 1], false), [1, 1]);
        assert_eq!(allocate(0, &[3, 3], true), [0, 0]);
        assert_eq!(allocate(3, &[0, 10], true), [0, 3]);
        // Largest remainder: 7 * (2/3, 1/3) = (4.67, 2.33) → (5, 2).
        assert_eq!(allocate(7, &[20, 10], false), [5, 2]);
        for n in 0..40 {
            let q = allocate(n, &[7, 0, 13, 2, 30], n % 2 == 0);
            assert_eq!(q.iter().sum::<usize>(), n.min(52));
            assert!(q.iter().zip([7, 0, 13, 2, 30]).all(|(q, a)| *q <= a));
        }
    }

    #[test]
    fn the_rng_stream_is_pinned() {
        // Splits must not change silently when the rand crate changes its StdRng: if this
        // fails, the documented split sizes and contents are no longer reproducible.
        let mut rng = task_rng(SplitConfig::default().seed, "movie-sentiment");
        let mut v: Vec<u32> = (0..10).collect();
        v.shuffle(&mut rng);
        let draws: Vec<u32> = (0..3).map(|_| rng.random_range(0..1000)).collect();
        assert_eq!(v, [8, 7, 0, 2, 3, 6, 5, 4, 9, 1]);
        assert_eq!(draws, [700, 282, 124]);
    }

    fn synthetic(n: usize, k: usize) -> Vec<Example> {
        (0..n)
            .map(|i| ex(&format!("text number {i}"), i % k))
            .collect()
    }

    #[test]
    fn splits_are_deterministic_disjoint_and_stratified() {
        let cfg = SplitConfig {
            train_max: 300,
            calib_size: 40,
            test_max: 200,
            test_min: 100,
            ..SplitConfig::default()
        };
        let make = |seed: u64| {
            let pools = Pools {
                labels: vec!["a".into(), "b".into(), "c".into()],
                train: synthetic(1000, 3),
                ..Pools::default()
            };
            make_splits(
                "t",
                pools,
                &SplitConfig {
                    seed,
                    ..cfg.clone()
                },
            )
            .unwrap()
        };
        let s = make(cfg.seed);
        assert_eq!((s.test.len(), s.calib.len(), s.train.len()), (200, 40, 300));
        let again = make(cfg.seed);
        assert_eq!(s.train, again.train);
        assert_eq!(s.calib, again.calib);
        assert_eq!(s.test, again.test);
        assert_ne!(
            s.test,
            make(cfg.seed + 1).test,
            "another seed, another split"
        );
        let mut all: Vec<&str> = s
            .train
            .iter()
            .chain(&s.calib)
            .chain(&s.test)
            .map(|e| e.text.as_str())
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "splits overlap");
        // 1000 = 334/333/333 → 200 test draws split 67/67/66.
        let count = |v: &[Example], c: usize| v.iter().filter(|e| e.label == c).count();
        assert_eq!([0, 1, 2].map(|c| count(&s.test, c)), [67, 67, 66]);
        // The order inside a split is shuffled, not grouped by class.
        assert_ne!(s.test[0].label, s.test[1].label);
    }

    #[test]
    fn official_test_part_dedupe_and_conflicts() {
        let mut train = synthetic(200, 2);
        train.push(ex("  shared text  ", 0)); // also in test → kept only in test
        train.push(ex("same", 0));
        train.push(ex("same", 0)); // exact duplicate
        train.push(ex("ambiguous", 0));
        train.push(ex("ambiguous", 1)); // conflicting labels → both dropped
        train.push(ex("   \n ", 1)); // empty after trimming
        train.push(ex("bell\u{7}", 1));
        let mut test: Vec<Example> = (0..50).map(|i| ex(&format!("test {i}"), i % 2)).collect();
        test.push(ex("shared text", 0));
        let pools = Pools {
            labels: vec!["x".into(), "y".into()],
            train,
            test: Some(test),
            filtered: 3,
            balanced: false,
        };
        let cfg = SplitConfig {
            calib_size: 10,
            ..SplitConfig::default()
        };
        let s = make_splits("t", pools, &cfg).unwrap();
        assert_eq!(s.test.len(), 51);
        assert!(s.test.iter().any(|e| e.text == "shared text"));
        assert!(!s
            .train
            .iter()
            .chain(&s.calib)
            .any(|e| e.text == "shared text"));
        assert!(!s
            .train
            .iter()
            .chain(&s.calib)
            .any(|e| e.text == "ambiguous"));
        assert!(s.train.iter().chain(&s.calib).any(|e| e.text == "bell"));
        let st = &s.stats;
        assert_eq!(
            (
                st.parsed,
                st.filtered,
                st.empty,
                st.duplicates,
                st.conflicting
            ),
            (258, 3, 1, 2, 2)
        );
        assert_eq!(st.usable, 253);
        assert!(st.official_test);
        assert_eq!(s.calib.len(), 10);
        assert_eq!(s.train.len(), 253 - 51 - 10);
    }

    #[test]
    fn balanced_mode_and_tiny_inputs() {
        let mut train = synthetic(2000, 2); // 1000 per class
        train.extend((0..200).map(|i| ex(&format!("rare {i}"), 2)));
        let pools = Pools {
            labels: vec!["a".into(), "b".into(), "c".into()],
            train,
            balanced: true,
            ..Pools::default()
        };
        let cfg = SplitConfig {
            test_max: 300,
            test_min: 100,
            calib_size: 30,
            train_max: 600,
            ..SplitConfig::default()
        };
        let s = make_splits("bal", pools, &cfg).unwrap();
        let count = |v: &[Example], c: usize| v.iter().filter(|e| e.label == c).count();
        assert_eq!([0, 1, 2].map(|c| count(&s.test, c)), [100, 100, 100]);
        assert_eq!([0, 1, 2].map(|c| count(&s.calib, c)), [10, 10, 10]);
        // Only 200 − 100 − 10 = 90 left of the rare class: it runs out, the others fill up.
        assert_eq!([0, 1, 2].map(|c| count(&s.train, c)), [255, 255, 90]);

        let tiny = Pools {
            labels: vec!["a".into(), "b".into()],
            train: synthetic(3, 2),
            ..Pools::default()
        };
        let err = make_splits("tiny", tiny, &SplitConfig::default()).unwrap_err();
        assert!(err.to_string().contains("too few"), "{err}");
        let one_class = Pools {
            labels: vec!["a".into()],
            train: synthetic(30, 1),
            ..Pools::default()
        };
        assert!(make_splits("one", one_class, &SplitConfig::default()).is_err());
        let bad_label = Pools {
            labels: vec!["a".into(), "b".into()],
            train: vec![ex("x", 5)],
            ..Pools::default()
        };
        assert!(make_splits("bad", bad_label, &SplitConfig::default()).is_err());
    }
}
