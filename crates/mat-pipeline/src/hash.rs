//! Content hashes (blake3, hex) of files, folders and values.

use std::path::Path;

use crate::error::{IoContext, Result};

/// The hash of a file's bytes, or of a folder: the sorted relative paths
/// of its files with their hashes. `None` when the path does not exist.
pub fn path(p: &Path) -> Result<Option<String>> {
    if !p.exists() {
        return Ok(None);
    }
    if p.is_file() {
        let mut h = blake3::Hasher::new();
        let mut f = std::fs::File::open(p).at(p)?;
        std::io::copy(&mut f, &mut h).at(p)?;
        return Ok(Some(h.finalize().to_hex().to_string()));
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
