//! Content hashes (blake3, hex) of files, folders and values.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::error::{IoContext, Result};

/// What identifies one version of a file: path, size, modification time
/// and inode. Stage programs write their outputs by rename (a new inode),
/// and an edit changes the time or the size.
type FileVersion = (PathBuf, u64, Option<SystemTime>, u64);

/// File hashes already computed by this process. One `mat repro` hashes a
/// stage program once per stage that runs it and a model folder once per
/// stage that reads it: Table 2's 30 stages read six programs of about
/// 240 MB each, and hashing them again for every stage took most of a
/// no-op rerun.
static KNOWN: LazyLock<Mutex<HashMap<FileVersion, String>>> = LazyLock::new(Default::default);

fn known() -> MutexGuard<'static, HashMap<FileVersion, String>> {
    // A panic elsewhere cannot leave the map half-updated: use it as it is.
    KNOWN.lock().unwrap_or_else(|e| e.into_inner())
}

fn version_of(p: &Path) -> Result<FileVersion> {
    let m = std::fs::metadata(p).at(p)?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Ok((p.to_path_buf(), m.len(), m.modified().ok(), ino))
}

fn file(p: &Path) -> Result<String> {
    let version = version_of(p)?;
    if let Some(h) = known().get(&version) {
        return Ok(h.clone());
    }
    let mut h = blake3::Hasher::new();
    let mut f = std::fs::File::open(p).at(p)?;
    std::io::copy(&mut f, &mut h).at(p)?;
    let hex = h.finalize().to_hex().to_string();
    // The file may have changed while it was read: keep the hash only if
    // it is still the version that was looked up.
    if version_of(p)? == version {
        known().insert(version, hex.clone());
    }
    Ok(hex)
}

/// The hash of a file's bytes, or of a folder: the sorted relative paths
/// of its files with their hashes. `None` when the path does not exist.
pub fn path(p: &Path) -> Result<Option<String>> {
    if !p.exists() {
        return Ok(None);
    }
    if p.is_file() {
        return file(p).map(Some);
    }
    let mut files = Vec::new();
    walk(p, p, &mut files)?;
    files.sort();
    let mut h = blake3::Hasher::new();
    for rel in files {
        let sub = path(&p.join(&rel))?.unwrap_or_default();
        h.update(rel.as_bytes());
        h.update(b"\0");
        h.update(sub.as_bytes());
        h.update(b"\n");
    }
    Ok(Some(h.finalize().to_hex().to_string()))
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).at(dir)? {
        let p = entry.at(dir)?.path();
        if p.is_dir() {
            walk(root, &p, out)?;
        } else {
            let rel = p.strip_prefix(root).unwrap_or(&p);
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

/// The hash of a string.
pub fn text(s: &str) -> String {
    blake3::hash(s.as_bytes()).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file replaced by rename (as every stage writes) or edited in place
    /// with another size hashes anew, though the old version was hashed
    /// before in the same process.
    #[test]
    fn a_changed_file_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("model.bin");
        std::fs::write(&f, b"first").unwrap();
        let first = path(&f).unwrap().unwrap();
        assert_eq!(path(&f).unwrap().unwrap(), first);
        let tmp = dir.path().join(".model.bin.tmp");
        std::fs::write(&tmp, b"other").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        let renamed = path(&f).unwrap().unwrap();
        assert_ne!(renamed, first);
        assert_eq!(renamed, text("other"));
        std::fs::write(&f, b"longer text").unwrap();
        assert_eq!(path(&f).unwrap().unwrap(), text("longer text"));
    }
}
