use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A mistake in a pipeline file, located.
    #[error("{}:{line}:{column}: {what}", path.display())]
    Pipeline {
        path: PathBuf,
        line: usize,
        column: usize,
        what: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A stage's command failed.
    #[error("stage `{stage}` failed ({status}); nothing of it was recorded")]
    StageFailed { stage: String, status: String },
    #[error("{0}")]
    Invalid(String),
}

pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
