//! Atomic writes: a temp file beside the target, then a rename.
//!
//! A stage killed mid-write leaves at most a hidden `.NAME.*.tmp` file, never
//! a truncated `NAME` that a later stage could take for a good artifact. The
//! rename is atomic on POSIX file systems because the temp file lives in the
//! target's own directory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// A file being written; it appears under its final name only on [`commit`].
///
/// Dropping it without committing removes the temp file.
///
/// [`commit`]: AtomicFile::commit
pub struct AtomicFile {
    target: PathBuf,
    temp: tempfile::NamedTempFile,
}

impl AtomicFile {
    pub fn create(target: &Path) -> Result<Self> {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).at(&dir)?;
        let name = target
            .file_name()
            .ok_or_else(|| Error::format(target, "not a file path"))?
            .to_string_lossy();
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        // A temp file is private (0600); an artifact is an ordinary file
        // (0666 less the umask), readable by whoever reads the results.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let temp = builder.tempfile_in(&dir).at(&dir)?;
        Ok(Self {
            target: target.to_path_buf(),
            temp,
        })
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// Flushes to disk and renames into place.
    pub fn commit(self) -> Result<()> {
        self.temp.as_file().sync_all().at(&self.target)?;
        self.temp
            .persist(&self.target)
            .map_err(|e| Error::io(&self.target, e.error))?;
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    {
        let mut w = BufWriter::new(f.file());
        w.write_all(bytes).at(path)?;
        w.flush().at(path)?;
    }
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_file_leaves_nothing_and_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        write_atomic(&path, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&path).unwrap();
            f.file().write_all(b"half-writ").unwrap();
            // dropped: the "stage" died before commit
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.bin")]);
    }

    #[test]
    fn commit_replaces_and_creates_parents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x/y/z.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
    }
}
