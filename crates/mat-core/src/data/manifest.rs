//! `data/datasets.yaml`: what each dataset is, where it comes from, and the
//! checksums that prove a copy is the published one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, IoContext, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub datasets: BTreeMap<String, DatasetSpec>,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// LeCun's IDX files (MNIST, Fashion-MNIST), gzipped at the source.
    Idx,
    /// The CIFAR-10 "binary version": records of 1 label byte + 3072 pixels.
    CifarBinary,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Idx => "idx",
            Format::CifarBinary => "cifar-binary",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub description: String,
    pub format: Format,
    pub homepage: String,
    pub licence: String,
    /// `[C, H, W]` of one image.
    pub image_shape: [usize; 3],
    pub classes: Vec<String>,
    pub train_size: usize,
    pub test_size: usize,
    /// A folder under `data/` that ships the gzipped files with the repository.
    #[serde(default)]
    pub embedded: Option<String>,
    /// The archive the files are extracted from (CIFAR-10).
    #[serde(default)]
    pub archive: Option<ArchiveSpec>,
    /// The files as they lie in the cache, unpacked.
    pub files: Vec<FileSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub name: String,
    /// Official download locations, tried in order (gzipped where they end in `.gz`).
    #[serde(default)]
    pub urls: Vec<String>,
    /// SHA-256 of the unpacked file. Mirrors re-compress the same IDX bytes
    /// (Debian's Fashion-MNIST `.gz` differ from Zalando's), so the digest is
    /// taken after unpacking.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Size in bytes, checked where no per-file digest is published.
    #[serde(default)]
    pub size: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSpec {
    pub name: String,
    pub urls: Vec<String>,
    pub sha256: String,
    /// The folder inside the archive that holds the files.
    pub member_dir: String,
}

/// The four IDX files every IDX dataset has, in `candle-datasets`' names.
pub const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// The six record files of CIFAR-10's binary version.
pub const CIFAR_FILES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];

pub(crate) fn yaml_error(path: &Path, e: &serde_yaml::Error) -> Error {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    // serde_yaml repeats the position at the end; it is already in front.
    let what = e.to_string();
    let what = match what.rfind(" at line ") {
        Some(i) => what[..i].to_string(),
        None => what,
    };
    Error::Yaml {
        path: path.to_path_buf(),
        line,
        column,
        what,
    }
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut m: Manifest = serde_yaml::from_str(text).map_err(|e| yaml_error(path, &e))?;
        m.path = path.to_path_buf();
        for (name, spec) in &m.datasets {
            spec.validate(name)
                .map_err(|what| Error::format(path, format!("dataset `{name}`: {what}")))?;
        }
        Ok(m)
    }

    pub fn get(&self, name: &str) -> Result<&DatasetSpec> {
        self.datasets
            .get(name)
            .ok_or_else(|| Error::UnknownDataset {
                name: name.to_string(),
                manifest: self.path.clone(),
                known: self.datasets.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }
}

impl DatasetSpec {
    fn validate(&self, _name: &str) -> std::result::Result<(), String> {
        let names: Vec<&str> = self.files.iter().map(|f| f.name.as_str()).collect();
        let want: &[&str] = match self.format {
            Format::Idx => &IDX_FILES,
            Format::CifarBinary => &CIFAR_FILES,
        };
        for w in want {
            if !names.contains(w) {
                return Err(format!("`files` must list `{w}`"));
            }
        }
        for f in &self.files {
            let from_archive = self.archive.is_some();
            if f.sha256.is_none() && !from_archive {
                return Err(format!("file `{}` needs a `sha256`", f.name));
            }
            if let Some(s) = &f.sha256 {
                if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("file `{}`: `sha256` must be 64 hex digits", f.name));
                }
            }
        }
        if self.classes.len() < 2 {
            return Err("`classes` must name at least two classes".into());
        }
        if self.embedded.is_none()
            && self.archive.is_none()
            && self.files.iter().any(|f| f.urls.is_empty())
        {
            return Err("every file needs `urls` unless the dataset is `embedded`".into());
        }
        Ok(())
    }

    pub fn file(&self, name: &str) -> Option<&FileSpec> {
        self.files.iter().find(|f| f.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
datasets:
  tiny:
    description: d
    format: idx
    homepage: h
    licence: l
    image_shape: [1, 28, 28]
    classes: ["a", "b"]
    train_size: 2
    test_size: 1
    embedded: tiny
    files:
      - { name: train-images-idx3-ubyte, sha256: "0000000000000000000000000000000000000000000000000000000000000000" }
      - { name: train-labels-idx1-ubyte, sha256: "0000000000000000000000000000000000000000000000000000000000000000" }
      - { name: t10k-images-idx3-ubyte, sha256: "0000000000000000000000000000000000000000000000000000000000000000" }
      - { name: t10k-labels-idx1-ubyte, sha256: "0000000000000000000000000000000000000000000000000000000000000000" }
"#;

    #[test]
    fn parses_and_finds() {
        let m = Manifest::parse(GOOD, Path::new("m.yaml")).unwrap();
        assert_eq!(m.get("tiny").unwrap().format, Format::Idx);
        let err = m.get("cifar100").unwrap_err().to_string();
        assert!(
            err.contains("unknown dataset `cifar100`") && err.contains("knows: tiny"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let bad = GOOD.replace("    licence: l\n", "    licence: l\n    licnse: typo\n");
        let err = Manifest::parse(&bad, Path::new("data/datasets.yaml")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("data/datasets.yaml:8:5: datasets.tiny: unknown field `licnse`"),
            "{msg}"
        );
        assert!(!msg.contains("at line"), "{msg}");
        assert!(msg.contains("unknown field `licnse`"), "{msg}");
    }

    #[test]
    fn a_missing_checksum_is_refused() {
        let bad = GOOD.replacen(
            "{ name: train-images-idx3-ubyte, sha256: \"0000000000000000000000000000000000000000000000000000000000000000\" }",
            "{ name: train-images-idx3-ubyte }",
            1,
        );
        let err = Manifest::parse(&bad, Path::new("m.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dataset `tiny`: file `train-images-idx3-ubyte` needs a `sha256`"),
            "{err}"
        );
    }

    #[test]
    fn the_shipped_manifest_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/datasets.yaml");
        let m = Manifest::read(&path).unwrap();
        for name in ["mnist", "mnist-10k", "fashion-mnist", "cifar10"] {
            let spec = m.get(name).unwrap();
            assert_eq!(spec.classes.len(), 10, "{name}");
        }
    }
}
