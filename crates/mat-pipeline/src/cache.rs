//! The content-addressed run cache (`runs/.cache/<key>/`): a stage whose
//! command, params, dependency contents and program hash to a key already
//! there reuses those outputs instead of running. Entries are written to a
//! temporary folder and renamed, so a killed run leaves no half entry.

use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

pub struct RunCache {
    pub root: PathBuf,
}

fn copy_path(from: &Path, to: &Path) -> Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to).at(to)?;
        for entry in std::fs::read_dir(from).at(from)? {
            let p = entry.at(from)?.path();
            copy_path(&p, &to.join(p.file_name().expect("a named entry")))?;
        }
        Ok(())
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).at(parent)?;
        }
        // Into a temporary name first: a reader never sees a partial file.
        let tmp = to.with_extension("mat-tmp");
        std::fs::copy(from, &tmp).at(from)?;
        std::fs::rename(&tmp, to).at(to)
    }
}

impl RunCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn entry(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    pub fn has(&self, key: &str, outs: usize) -> bool {
        (0..outs).all(|i| self.entry(key).join(i.to_string()).exists())
    }

    /// Copies the outputs of `key` to `outs`.
    pub fn restore(&self, key: &str, outs: &[PathBuf]) -> Result<()> {
        for (i, o) in outs.iter().enumerate() {
            if o.exists() {
                remove(o)?;
            }
            copy_path(&self.entry(key).join(i.to_string()), o)?;
        }
        Ok(())
    }

    /// Stores `outs` under `key`.
    pub fn store(&self, key: &str, outs: &[PathBuf]) -> Result<()> {
        let dest = self.entry(key);
        if dest.exists() {
            return Ok(());
        }
        let tmp = self.root.join(format!(".tmp-{key}-{}", std::process::id()));
        if tmp.exists() {
            remove(&tmp)?;
        }
        std::fs::create_dir_all(&tmp).at(&tmp)?;
        for (i, o) in outs.iter().enumerate() {
            copy_path(o, &tmp.join(i.to_string()))?;
        }
        match std::fs::rename(&tmp, &dest) {
            Ok(()) => Ok(()),
            // Another runner (another pipeline or profile) stored the same
            // key meanwhile: same inputs, so the same outputs; keep theirs.
            Err(_) if dest.is_dir() => remove(&tmp),
            Err(e) => Err(e).at(&dest),
        }
    }

    /// Removes every entry whose key is not in `keep`; returns how many.
    pub fn gc(&self, keep: &std::collections::BTreeSet<String>) -> Result<usize> {
        if !self.root.exists() {
            return Ok(0);
        }
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.root).at(&self.root)? {
            let p = entry.at(&self.root)?.path();
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Unfinished entries belong to a runner that may be writing them;
            // `runlock::remove_dead_cache_temps` removes those of dead ones.
            if !keep.contains(&name) && !name.starts_with(".tmp-") {
                remove(&p)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

pub(crate) fn remove(p: &Path) -> Result<()> {
    if p.is_dir() {
        std::fs::remove_dir_all(p).at(p)
    } else {
        std::fs::remove_file(p).at(p)
    }
}
