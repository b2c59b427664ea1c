//! The lock file of a run (`runs/<pipeline>/<profile>/mat.lock`): per
//! stage, the hashes it last ran with. Rewritten atomically after every
//! stage that finishes, so a killed run keeps what completed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

pub const LOCK_FILE: &str = "mat.lock";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageLock {
    pub cmd: String,
    pub params: BTreeMap<String, String>,
    pub deps: BTreeMap<PathBuf, String>,
    pub outs: BTreeMap<PathBuf, String>,
    /// The stage program's hash (the command's first word, where it is a
    /// file).
    pub program: Option<String>,
    /// The run-cache entry holding this stage's outputs.
    pub cache_key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lock {
    pub stages: BTreeMap<String, StageLock>,
}

impl Lock {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        if !path.exists() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(&path).at(&path)?;
        serde_json::from_str(&text).map_err(|e| {
            Error::Invalid(format!(
                "{}: not a lock file ({e}); it was damaged outside mat. Remove it: every stage then runs again, or is restored from the run cache when its inputs are unchanged",
                path.display()
            ))
        })
    }

    /// Writes atomically (temp file, then rename).
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).at(dir)?;
        let path = dir.join(LOCK_FILE);
        let tmp = dir.join(format!(".{LOCK_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).expect("a lock serialises");
        let mut f = std::fs::File::create(&tmp).at(&tmp)?;
        f.write_all(text.as_bytes()).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        std::fs::rename(&tmp, &path).at(&path)
    }
}
