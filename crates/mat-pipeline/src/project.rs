//! The project a `mat` command works in: its root (the folder that holds
//! `pipelines/`), where runs and the run cache live, and the stage
//! programs the commands name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::IoContext;
use crate::{Error, Result};

/// Where runs and the run cache live, relative to the project root.
pub const RUNS: &str = "runs";

/// The run cache's folder, relative to the project root.
pub fn cache_dir() -> PathBuf {
    Path::new(RUNS).join(".cache")
}

/// The nearest folder, from the working folder up, that holds a
/// `pipelines/` folder; else the working folder.
pub fn root() -> Result<PathBuf> {
    let cwd = std::env::current_dir().at(Path::new("."))?;
    Ok(cwd
        .ancestors()
        .find(|d| d.join("pipelines").is_dir())
        .unwrap_or(&cwd)
        .to_path_buf())
}

/// Makes the project root the working folder. Stage commands name paths
/// relative to it, so `mat` works there whatever folder it was started in;
/// `file` comes back relative to it, and a pipeline outside it is refused
/// before anything is written.
pub fn enter(file: &Path) -> Result<PathBuf> {
    let root = root()?;
    let full = std::fs::canonicalize(file).map_err(|e| {
        Error::Invalid(format!(
            "{}: cannot read the pipeline file: {e}",
            file.display()
        ))
    })?;
    let canon_root = std::fs::canonicalize(&root).at(&root)?;
    let rel = full.strip_prefix(&canon_root).map_err(|_| {
        Error::Invalid(format!(
            "{}: the pipeline is outside the project root {} (the nearest folder up from here with a `pipelines/` folder, else this one); run mat from inside the project that holds it",
            file.display(),
            root.display()
        ))
    })?;
    std::env::set_current_dir(&root).at(&root)?;
    Ok(rel.to_path_buf())
}

/// Stage commands name the stage programs (`mat-train`, ...): the ones
/// built beside the running program come first on PATH.
pub fn put_stage_programs_on_path() {
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
    {
        let mut paths = vec![dir];
        if let Some(old) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&old));
        }
        if let Ok(joined) = std::env::join_paths(paths) {
            std::env::set_var("PATH", joined);
        }
    }
}

/// The cache keys that some lock file under `runs` (a run folder) refers to.
pub fn referenced_cache_keys(runs: &Path) -> Result<BTreeSet<String>> {
    fn walk(dir: &Path, keep: &mut BTreeSet<String>) -> Result<()> {
        if !dir.is_dir() {
            return Ok(());
        }
        for entry in std::fs::read_dir(dir).at(dir)? {
            let p = entry.at(dir)?.path();
            if p.is_dir() && p.file_name().is_some_and(|n| n != ".cache") {
                walk(&p, keep)?;
            } else if p.file_name().is_some_and(|n| n == crate::lock::LOCK_FILE) {
                let lock = crate::lock::Lock::read(p.parent().expect("a folder"))?;
                keep.extend(lock.stages.into_values().map(|s| s.cache_key));
            }
        }
        Ok(())
    }
    let mut keep = BTreeSet::new();
    walk(runs, &mut keep)?;
    Ok(keep)
}

/// Removes the run-cache entries of the project (the working folder) that
/// no lock file refers to, and temporary files of dead runs; returns
/// (removed, kept).
pub fn gc() -> Result<(usize, usize)> {
    let keep = referenced_cache_keys(Path::new(RUNS))?;
    let cache = crate::cache::RunCache::new(cache_dir());
    let removed = cache.gc(&keep)? + crate::runlock::remove_dead_cache_temps(&cache.root)?;
    Ok((removed, keep.len()))
}
