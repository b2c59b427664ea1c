//! The library's one error type: every variant names the file (or value) at
//! fault and what was expected, so a binary can print it and exit non-zero.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file whose contents do not follow its format (bad magic, truncated,
    /// wrong size, unreadable header).
    #[error("{}: {what}", path.display())]
    Format { path: PathBuf, what: String },

    /// A file whose SHA-256 differs from the manifest's.
    #[error(
        "{}: sha256 mismatch: expected {expected}, found {found} (the file is corrupt or not the published one)",
        path.display()
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        found: String,
    },

    /// A tensor in a safetensors file that is missing or of the wrong shape or dtype.
    #[error("{}: tensor `{name}`: expected {expected}, found {found}", path.display())]
    Tensor {
        path: PathBuf,
        name: String,
        expected: String,
        found: String,
    },

    /// A column in a Parquet file that is missing or of the wrong type or width.
    #[error("{}: column `{column}`: expected {expected}, found {found}", path.display())]
    Column {
        path: PathBuf,
        column: String,
        expected: String,
        found: String,
    },

    /// A metadata key that an artifact must carry.
    #[error("{}: metadata `{key}`: expected {expected}, found {found}", path.display())]
    Metadata {
        path: PathBuf,
        key: String,
        expected: String,
        found: String,
    },

    /// A config file (with its `--set` overrides) that parses but holds a
    /// value out of range or a combination that cannot work.
    #[error("{}: {what}", path.display())]
    Config { path: PathBuf, what: String },

    /// A YAML file that does not parse or names an unknown key.
    #[error("{}:{line}:{column}: {what}", path.display())]
    Yaml {
        path: PathBuf,
        line: usize,
        column: usize,
        what: String,
    },

    #[error("unknown dataset `{name}`; the manifest {} knows: {known}", manifest.display())]
    UnknownDataset {
        name: String,
        manifest: PathBuf,
        known: String,
    },

    #[error(
        "dataset `{name}` is not in the cache {}: missing {missing}; run `mat data fetch {name}` (downloads from the official URLs) or `mat data fetch {name} --from DIR` (copies from a local folder)",
        dir.display()
    )]
    DatasetMissing {
        name: String,
        dir: PathBuf,
        missing: String,
    },

    /// Every source of a dataset file failed; `attempts` says how each failed.
    #[error("could not fetch `{file}` of dataset `{name}`:\n{attempts}\n{hint}")]
    Fetch {
        name: String,
        file: String,
        attempts: String,
        hint: String,
    },

    #[error("invalid device `{0}`: expected `auto`, `cpu`, `cuda` or `cuda:N`")]
    Device(String),

    #[error("{0}")]
    Invalid(String),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            what: what.into(),
        }
    }
}

/// Adds the file name to I/O errors, which std reports without one.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
