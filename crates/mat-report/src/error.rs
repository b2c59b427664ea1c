//! The report library's error: each variant names the file at fault.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An artifact that cannot be read (from mat-core, with its file).
    #[error(transparent)]
    Artifact(#[from] mat_core::Error),

    /// An artifact that reads but lacks what a table needs (a row, a
    /// config), or a folder with nothing to draw.
    #[error("{}: {what}", path.display())]
    Content { path: PathBuf, what: String },

    /// A figure that could not be drawn or written.
    #[error("{}: {what}", path.display())]
    Figure { path: PathBuf, what: String },
}

impl Error {
    pub(crate) fn content(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Content {
            path: path.into(),
            what: what.into(),
        }
    }

    pub(crate) fn figure(path: impl Into<PathBuf>, what: impl std::fmt::Display) -> Self {
        Error::Figure {
            path: path.into(),
            what: what.to_string(),
        }
    }
}
