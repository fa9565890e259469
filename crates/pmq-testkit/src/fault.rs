//! The harness of the fault suites: many generated bad inputs, each run once, and every outcome
//! counted instead of stopping at the first failure, so a suite can report its figures.
//!
//! - [`runner`] / [`draw`]: a proptest [`TestRunner`] with a fixed seed (`PROPTEST_RNG_SEED`
//!   overrides it) and `PROPTEST_CASES` cases (else the suite's default), and one value drawn
//!   from a strategy. Values are drawn and run one by one (no shrinking: every case is counted
//!   and a failing case is printed whole).
//! - [`Tally`]: runs one case under `catch_unwind` (a panic is counted, with its message, not
//!   propagated), checks that the watched input trees are byte-identical afterwards (SipHash of
//!   every file) and hold no new entry (debris), counts the outcome, and at the end prints the
//!   figures and asserts that there were no panics, wrong outcomes, modified inputs or debris.
//! - [`CappedAlloc`]: a global allocator for a suite's test binary that records the largest
//!   single request and refuses any above [`ALLOC_CAP`] (the process then aborts with "memory
//!   allocation of N bytes failed": an absurd allocation cannot go unnoticed).

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngSeed, TestRunner};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The seed of every suite unless `PROPTEST_RNG_SEED` is set.
pub const SEED: u64 = 0x504d_515f_6661_756c; // "PMQ_faul"

/// Requests above this many bytes are refused by [`CappedAlloc`].
pub const ALLOC_CAP: usize = 1 << 30;

/// The most a case may allocate at once before the suite calls it absurd.
pub const ALLOC_LIMIT: usize = 256 << 20;

static LARGEST_ALLOC: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, recording the largest single request and refusing those above
/// [`ALLOC_CAP`]. Install it in a suite's test file:
/// `#[global_allocator] static ALLOC: CappedAlloc = CappedAlloc;`
pub struct CappedAlloc;

fn admit(size: usize) -> bool {
    LARGEST_ALLOC.fetch_max(size, Ordering::Relaxed);
    size <= ALLOC_CAP
}

// SAFETY: every call is forwarded unchanged to `System`, or refused with a null pointer (which
// the `GlobalAlloc` contract allows for any request).
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !admit(new_size) {
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

/// The largest single allocation request of this process so far (0 without [`CappedAlloc`]).
pub fn largest_allocation() -> usize {
    LARGEST_ALLOC.load(Ordering::Relaxed)
}

/// `PROPTEST_CASES` if set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A runner drawing from the fixed seed (or `PROPTEST_RNG_SEED`); its `cases` is
/// `PROPTEST_CASES` or `default_cases`.
pub fn runner(default_cases: u32) -> TestRunner {
    // `Config::default()` reads `PROPTEST_RNG_SEED` (and the other PROPTEST_* variables)
    let default = Config::default();
    let rng_seed = match default.rng_seed {
        RngSeed::Random => RngSeed::Fixed(SEED),
        fixed => fixed,
    };
    TestRunner::new(Config {
        cases: cases(default_cases),
        rng_seed,
        failure_persistence: None,
        ..default
    })
}

/// One value of `strategy`.
pub fn draw<S: Strategy>(runner: &mut TestRunner, strategy: &S) -> S::Value {
    strategy
        .new_tree(runner)
        .expect("the fault strategies never reject")
        .current()
}

/// What a case did with its bad input, when that was right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Read (the input was usable after all) and the data checked.
    Accepted,
    /// Refused with a clear error (the file and the problem named).
    Refused,
}

thread_local! {
    /// `Some(message)` once a case running on this thread panicked; `None` outside cases.
    static CAPTURE: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let captured = CAPTURE.with(|c| match c.try_borrow_mut() {
                Ok(mut slot) => match slot.as_mut() {
                    Some(msg) => {
                        *msg = Some(info.to_string());
                        true
                    }
                    None => false,
                },
                Err(_) => false,
            });
            if !captured {
                previous(info);
            }
        }));
    });
}

/// Every file under `root` with its length and SipHash, and every directory, by path.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Option<(u64, u64)>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let meta = match std::fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(_) => continue,
            };
            if meta.is_dir() {
                out.insert(p.clone(), None);
                stack.push(p);
            } else if meta.is_file() {
                let bytes = std::fs::read(&p).unwrap_or_default();
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                out.insert(p, Some((bytes.len() as u64, h.finish())));
            } else {
                // symbolic links and others: their target is what is compared
                out.insert(p, Some((meta.len(), 0)));
            }
        }
    }
    out
}

/// How many failures a suite prints (`PMQ_FAULT_SHOW`, default 20).
fn failure_limit() -> usize {
    std::env::var("PMQ_FAULT_SHOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// The counts of one suite.
pub struct Tally {
    name: String,
    cases: usize,
    accepted: usize,
    refused: usize,
    panics: usize,
    wrong: usize,
    modified: usize,
    debris: usize,
    failures: Vec<String>,
    /// Time spent in cases (input snapshots included).
    busy: Duration,
}

impl Tally {
    /// A new suite called `name`.
    pub fn new(name: &str) -> Self {
        install_panic_hook();
        Self {
            name: name.to_string(),
            cases: 0,
            accepted: 0,
            refused: 0,
            panics: 0,
            wrong: 0,
            modified: 0,
            debris: 0,
            failures: Vec::new(),
            busy: Duration::ZERO,
        }
    }

    fn fail(&mut self, label: &str, what: String) {
        if self.failures.len() < failure_limit() {
            self.failures.push(format!("{label}: {what}"));
        }
    }

    /// Runs one case (`label` describes it in failure reports). Every file under the `watch`
    /// directories must be byte-identical afterwards and no entry may have appeared there;
    /// `run` returns the outcome, or `Err` describing why the outcome was wrong.
    pub fn case(
        &mut self,
        label: &str,
        watch: &[&Path],
        run: impl FnOnce() -> Result<Outcome, String>,
    ) {
        self.cases += 1;
        let started = Instant::now();
        let before: Vec<_> = watch.iter().map(|w| snapshot(w)).collect();
        CAPTURE.with(|c| *c.borrow_mut() = Some(None));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run));
        let panic_msg = CAPTURE.with(|c| c.borrow_mut().take()).flatten();
        match result {
            Ok(Ok(Outcome::Accepted)) => self.accepted += 1,
            Ok(Ok(Outcome::Refused)) => self.refused += 1,
            Ok(Err(why)) => {
                self.wrong += 1;
                self.fail(label, format!("wrong outcome: {why}"));
            }
            Err(_) => {
                self.panics += 1;
                let msg = panic_msg.unwrap_or_else(|| "(no message)".into());
                self.fail(label, format!("PANIC: {msg}"));
            }
        }
        for (w, before) in watch.iter().zip(before) {
            let after = snapshot(w);
            let changed: Vec<_> = before
                .iter()
                .filter(|(p, v)| after.get(*p) != Some(v))
                .map(|(p, _)| p.display().to_string())
                .collect();
            if !changed.is_empty() {
                self.modified += 1;
                self.fail(label, format!("inputs modified or removed: {changed:?}"));
            }
            let new: Vec<_> = after
                .keys()
                .filter(|p| !before.contains_key(*p))
                .map(|p| p.display().to_string())
                .collect();
            if !new.is_empty() {
                self.debris += 1;
                self.fail(label, format!("debris left: {new:?}"));
            }
        }
        self.busy += started.elapsed();
    }

    /// Counts a failure found outside [`case`](Self::case) (e.g. a check over all cases).
    pub fn wrong(&mut self, label: &str, why: String) {
        self.wrong += 1;
        self.fail(label, format!("wrong outcome: {why}"));
    }

    /// Prints the figures and asserts: no panic, no wrong outcome, no input modified, no
    /// debris, no absurd allocation.
    pub fn finish(self) {
        let largest = largest_allocation();
        // 0 without `CappedAlloc` (the CLI suite, whose cases run in child processes)
        let alloc = match largest {
            0 => String::new(),
            n => format!("; largest allocation {n} bytes"),
        };
        eprintln!(
            "fault suite {}: {} cases ({} accepted, {} refused with a clear error), {} panics, \
             {} wrong outcomes, {} inputs modified, {} debris left{}; {:.1}s",
            self.name,
            self.cases,
            self.accepted,
            self.refused,
            self.panics,
            self.wrong,
            self.modified,
            self.debris,
            alloc,
            self.busy.as_secs_f64()
        );
        for f in &self.failures {
            eprintln!("  {f}");
        }
        assert!(
            self.panics == 0 && self.wrong == 0 && self.modified == 0 && self.debris == 0,
            "fault suite {}: {} panics, {} wrong outcomes, {} inputs modified, {} debris (first: {:?})",
            self.name,
            self.panics,
            self.wrong,
            self.modified,
            self.debris,
            self.failures.first()
        );
        assert!(
            largest <= ALLOC_LIMIT,
            "fault suite {}: a single allocation of {largest} bytes",
            self.name
        );
    }

    /// Cases read successfully so far.
    pub fn accepted(&self) -> usize {
        self.accepted
    }

    /// Cases refused with a clear error so far.
    pub fn refused(&self) -> usize {
        self.refused
    }
}

/// `Ok(Refused)` if `msg` contains every needle, else `Err` naming the missing ones.
pub fn refused_naming(msg: &str, needles: &[&str]) -> Result<Outcome, String> {
    let missing: Vec<&&str> = needles.iter().filter(|n| !msg.contains(**n)).collect();
    if missing.is_empty() {
        Ok(Outcome::Refused)
    } else {
        Err(format!("the error does not name {missing:?}: {msg}"))
    }
}
