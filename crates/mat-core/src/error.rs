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

    /// A value of a config (or a flag) that is out of range, unknown, or
    /// does not fit the rest: the key, what it must be and what it was.
    #[error("{field}: expected {expected}, found {found}")]
    Field {
        field: String,
        expected: String,
        found: String,
    },

    /// A name that is not in a registry, or whose numbers are out of range.
    #[error("unknown {kind} `{name}`: expected {expected}")]
    UnknownName {
        kind: &'static str,
        name: String,
        expected: String,
    },

    /// A problem with the value of one field of a config (an unknown
    /// architecture name, say), named by the field.
    #[error("{field}: {source}")]
    In {
        field: String,
        #[source]
        source: Box<Error>,
    },

    /// A batch of the wrong shape for the model or the operation.
    #[error("{what} takes {expected}, got {found}")]
    Shape {
        what: String,
        expected: String,
        found: String,
    },

    /// Training produced a non-finite loss.
    #[error("epoch {epoch}, batch {batch}: the loss is {value} (terms {terms}); lower the learning rate")]
    Diverged {
        epoch: usize,
        batch: usize,
        value: f64,
        terms: String,
    },

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

    /// A [`Error::Field`].
    pub fn field(
        field: impl Into<String>,
        expected: impl Into<String>,
        found: impl std::fmt::Display,
    ) -> Self {
        Error::Field {
            field: field.into(),
            expected: expected.into(),
            found: found.to_string(),
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
