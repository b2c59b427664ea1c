//! One writer per run folder: `mat repro` holds an exclusive `flock(2)` on
//! `runs/<pipeline>/<profile>/.mat-run.lock` while it works. The file says
//! who holds it (pid and start time), so a second run can say so.
//!
//! The lock's descriptor is handed down to every stage (not closed on
//! exec), and the kernel releases a `flock` only when the last descriptor
//! of it closes. A stage that outlives a killed runner therefore keeps the
//! folder locked, and a restart cannot run beside it.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

pub const RUN_LOCK: &str = ".mat-run.lock";

/// A held run-folder lock; released when dropped (and when every stage it
/// was handed to has exited).
pub struct RunLock {
    file: File,
    path: PathBuf,
}

/// `true` when a process with this pid exists.
fn alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks for existence/permission.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

fn flock(file: &File, nonblocking: bool) -> std::io::Result<bool> {
    let op = libc::LOCK_EX | if nonblocking { libc::LOCK_NB } else { 0 };
    loop {
        // SAFETY: flock(2) on a descriptor this process owns.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) if nonblocking => return Ok(false),
            Some(libc::EINTR) if !nonblocking => {
                // A signal while waiting: give up if it asks the runner to stop.
                if crate::interrupt::received().is_some() {
                    return Err(e);
                }
            }
            _ => return Err(e),
        }
    }
}

impl RunLock {
    /// Takes the run folder `out` for this run ([`RunLock::acquire`]) and
    /// removes what an interrupted run left there and in the run `cache`;
    /// returns the lock and how many files were removed.
    pub fn take_over(out: &Path, cache: Option<&Path>, wait: bool) -> Result<(RunLock, usize)> {
        let held = RunLock::acquire(out, wait)?;
        let left = remove_leftovers(out)?
            + match cache {
                Some(c) => remove_dead_cache_temps(c)?,
                None => 0,
            };
        Ok((held, left))
    }

    /// Takes the lock of `dir` (created if missing). Held by another run:
    /// an error naming it, or with `wait` a blocking wait for it.
    pub fn acquire(dir: &Path, wait: bool) -> Result<Self> {
        std::fs::create_dir_all(dir).at(dir)?;
        let path = dir.join(RUN_LOCK);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at(&path)?;
        if !flock(&file, true).at(&path)? {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim().to_string();
            let pid: Option<i32> = holder
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok());
            let who = match pid {
                Some(p) if alive(p) => format!("another `mat repro` ({holder})"),
                Some(_) => format!(
                    "a stage still running from an earlier run whose runner has ended ({holder}); stop it before starting again"
                ),
                None => "another process".to_string(),
            };
            if !wait {
                return Err(Error::Invalid(format!(
                    "{} is in use by {who}; wait for it, or pass --wait to queue behind it",
                    dir.display()
                )));
            }
            eprintln!("{} is in use by {who}; waiting", dir.display());
            flock(&file, false).at(&path)?;
        }
        let since = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        file.set_len(0).at(&path)?;
        file.rewind().at(&path)?;
        writeln!(file, "pid {} since {since}", std::process::id()).at(&path)?;
        file.flush().at(&path)?;
        Ok(Self { file, path })
    }

    /// The descriptor to hand down to stages.
    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes what killed writers left in the run folder `dir`: the hidden
/// temp files of atomic writes (`.NAME.*.tmp`, `.NAME.tmp.EXT`, `*.mat-tmp`) and of the lock
/// file. Only called with the folder's lock held, so no writer is running.
pub fn remove_leftovers(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    if !dir.is_dir() {
        return Ok(0);
    }
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let p = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type().at(&p)?;
        if kind.is_dir() {
            removed += remove_leftovers(&p)?;
        } else if (name.starts_with('.') && (name.ends_with(".tmp") || name.contains(".tmp.")))
            || name.ends_with(".mat-tmp")
        {
            std::fs::remove_file(&p).at(&p)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes the run cache's unfinished entries (`.tmp-KEY-PID`) whose
/// writer (PID) is gone; another pipeline's live runner keeps its own.
pub fn remove_dead_cache_temps(cache: &Path) -> Result<usize> {
    let mut removed = 0;
    if !cache.is_dir() {
        return Ok(0);
    }
    for entry in std::fs::read_dir(cache).at(cache)? {
        let entry = entry.at(cache)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(".tmp-") else {
            continue;
        };
        let pid = rest.rsplit('-').next().and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| !alive(p)) {
            crate::cache::remove(&entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}
