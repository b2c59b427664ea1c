//! `mat repro`: decides which stages must run, runs them in dependency
//! order (independent ones in parallel, within `--jobs` and the resources
//! they claim), and records each finished stage in the lock file.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cache::{remove, RunCache};
use crate::error::{Error, IoContext, Result};
use crate::hash;
use crate::interrupt;
use crate::lock::{Lock, StageLock};
use crate::slurm::{self, SlurmOptions};
use crate::spec::{Pipeline, Stage};

/// Why a stage runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    NeverRun,
    Forced,
    CommandChanged,
    ParamsChanged(Vec<String>),
    DepChanged(PathBuf),
    DepMissing(PathBuf),
    ProgramChanged,
    OutMissing(PathBuf),
    OutChanged(PathBuf),
    /// Dry run: an upstream stage would run first.
    Upstream(String),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NeverRun => write!(f, "not in the lock file"),
            Self::Forced => write!(f, "forced"),
            Self::CommandChanged => write!(f, "its command changed"),
            Self::ParamsChanged(k) => write!(f, "params changed: {}", k.join(", ")),
            Self::DepChanged(p) => write!(f, "{} changed", p.display()),
            Self::DepMissing(p) => write!(f, "{} is missing", p.display()),
            Self::ProgramChanged => write!(f, "its program changed"),
            Self::OutMissing(p) => write!(f, "output {} is missing", p.display()),
            Self::OutChanged(p) => write!(f, "output {} changed", p.display()),
            Self::Upstream(s) => write!(f, "upstream stage `{s}` runs first"),
        }
    }
}

/// What happened to a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    UpToDate,
    Ran(Reason),
    /// Outputs copied from the run cache.
    Restored(Reason),
    WouldRun(Reason),
    Failed(String),
    /// An upstream stage failed.
    NotRun,
}

impl std::fmt::Display for Outcome {
    /// How `mat repro` reports the stage.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::UpToDate => write!(f, "up to date, skipped"),
            Outcome::Ran(r) => write!(f, "ran ({r})"),
            Outcome::Restored(r) => write!(f, "restored from the run cache ({r})"),
            Outcome::WouldRun(r) => write!(f, "would run: {r}"),
            Outcome::Failed(e) => write!(f, "FAILED: {e}"),
            Outcome::NotRun => write!(f, "not run (an upstream stage failed)"),
        }
    }
}

#[derive(Clone)]
pub struct Options {
    pub dry_run: bool,
    pub force: BTreeSet<String>,
    pub jobs: usize,
    pub keep_going: bool,
    /// The run cache; `None` turns it off.
    pub cache: Option<PathBuf>,
    /// Capacity of each resource (`gpu: 1`); unnamed resources have 1.
    pub capacity: BTreeMap<String, u32>,
    /// Where a stage's command runs.
    pub workdir: PathBuf,
    /// A descriptor every stage inherits (the run folder's lock), so a
    /// stage that outlives the runner keeps the folder locked.
    pub inherit_fd: Option<i32>,
    /// Who runs a stage's command.
    pub executor: Executor,
    /// The cores that locally run stages share, or `None` to leave each
    /// stage its own thread count. A stage started while `W` stages run or
    /// could start (at most `jobs`) gets `RAYON_NUM_THREADS` = cores / `W`,
    /// at least 1: on 2 cores, two stages on one thread each finished
    /// Table 2's quick profile 1.37x sooner than one stage at a time on
    /// both, and their outputs do not depend on the thread count.
    pub cores: Option<usize>,
}

/// Who runs a stage's command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Executor {
    /// A child process of the runner (the default).
    #[default]
    Local,
    /// A Slurm batch job per stage.
    Slurm(SlurmOptions),
}

impl Default for Options {
    fn default() -> Self {
        Self {
            dry_run: false,
            force: BTreeSet::new(),
            jobs: 1,
            keep_going: false,
            cache: None,
            capacity: BTreeMap::new(),
            workdir: PathBuf::from("."),
            inherit_fd: None,
            executor: Executor::Local,
            cores: None,
        }
    }
}

/// The first word of a command, resolved to a file (in the work dir or on
/// PATH): the stage program whose change reruns the stage.
fn program_of(cmd: &str, workdir: &Path) -> Option<PathBuf> {
    let first = cmd.split_whitespace().next()?;
    if first.contains('/') {
        let p = workdir.join(first);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(first))
            .find(|p| p.is_file())
    })
}

/// The stage's inputs as they are now.
struct Current {
    params: BTreeMap<String, String>,
    deps: BTreeMap<PathBuf, Option<String>>,
    program: Option<String>,
}

fn current(stage: &Stage, workdir: &Path) -> Result<Current> {
    let mut deps = BTreeMap::new();
    for d in &stage.deps {
        deps.insert(d.clone(), hash::path(&workdir.join(d))?);
    }
    let program = match program_of(&stage.cmd, workdir) {
        Some(p) => hash::path(&p)?,
        None => None,
    };
    Ok(Current {
        params: stage.params.clone(),
        deps,
        program,
    })
}

/// The run-cache key: command, params, dependency contents, outputs and
/// program, with the run's own folder written as `${out}`, so the same
/// stage in another pipeline or profile (whose outputs land in another
/// folder) finds the entry.
fn cache_key(stage: &Stage, cur: &Current, out_dir: &Path) -> String {
    let out = out_dir.to_string_lossy();
    let norm = |s: &str| -> String {
        if out.is_empty() {
            s.to_string()
        } else {
            s.replace(out.as_ref(), "${out}")
        }
    };
    let deps: BTreeMap<String, &Option<String>> = cur
        .deps
        .iter()
        .map(|(p, h)| (norm(&p.to_string_lossy()), h))
        .collect();
    let outs: Vec<String> = stage
        .outs
        .iter()
        .map(|o| norm(&o.to_string_lossy()))
        .collect();
    let text = serde_json::json!({
        "cmd": norm(&stage.cmd),
        "params": cur.params,
        "deps": deps,
        "outs": outs,
        "program": cur.program,
    });
    hash::text(&text.to_string())
}

/// Why `stage` must run, or `None` when it is up to date.
fn reason(
    stage: &Stage,
    cur: &Current,
    lock: Option<&StageLock>,
    workdir: &Path,
    forced: bool,
) -> Result<Option<Reason>> {
    if forced {
        return Ok(Some(Reason::Forced));
    }
    let Some(l) = lock else {
        return Ok(Some(Reason::NeverRun));
    };
    if l.params != cur.params {
        let keys: Vec<String> = cur
            .params
            .keys()
            .chain(l.params.keys())
            .filter(|k| cur.params.get(*k) != l.params.get(*k))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        return Ok(Some(Reason::ParamsChanged(keys)));
    }
    // After params: a command that interpolates a param changes with it,
    // and the param is the better reason.
    if l.cmd != stage.cmd {
        return Ok(Some(Reason::CommandChanged));
    }
    for (d, h) in &cur.deps {
        match h {
            None => return Ok(Some(Reason::DepMissing(d.clone()))),
            Some(h) if l.deps.get(d) != Some(h) => return Ok(Some(Reason::DepChanged(d.clone()))),
            _ => {}
        }
    }
    if l.deps.keys().any(|d| !cur.deps.contains_key(d)) {
        return Ok(Some(Reason::CommandChanged));
    }
    if l.program != cur.program {
        return Ok(Some(Reason::ProgramChanged));
    }
    for o in &stage.outs {
        match hash::path(&workdir.join(o))? {
            None => return Ok(Some(Reason::OutMissing(o.clone()))),
            Some(h) if l.outs.get(o) != Some(&h) => return Ok(Some(Reason::OutChanged(o.clone()))),
            _ => {}
        }
    }
    Ok(None)
}

/// How long a stage may take to exit after the runner passed a signal on,
/// before its process group is killed.
const KILL_AFTER: Duration = Duration::from_secs(10);

/// Where the runner notes that a `persist` stage started with the inputs
/// of run-cache key `KEY`: its outputs are then partial work to resume.
fn partial_marker(out_dir: &Path, stage: &Stage) -> PathBuf {
    out_dir
        .join(".partial")
        .join(stage.name.replace(['/', '@'], "_"))
}

/// Runs one stage's command; on failure removes whatever it left of its
/// outputs (a `persist` stage keeps them, to resume). `keep` leaves the
/// outputs a `persist` stage left before, from the same inputs.
fn execute(
    stage: &Stage,
    opts: &Options,
    threads: Option<usize>,
    log_dir: &Path,
    keep: bool,
) -> Result<()> {
    let workdir = &opts.workdir;
    for o in &stage.outs {
        let p = workdir.join(o);
        if p.exists() && !keep {
            remove(&p)?;
        }
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).at(parent)?;
        }
    }
    std::fs::create_dir_all(log_dir).at(log_dir)?;
    let log_path = log_dir.join(format!("{}.log", stage.name.replace(['/', '@'], "_")));
    let (success, status, interrupted) = match &opts.executor {
        Executor::Local => run_local(stage, opts, threads, &log_path)?,
        Executor::Slurm(s) => {
            let end = slurm::run(stage, s, workdir, &log_path)?;
            let status = format!("Slurm job {} ended {}", end.id, end.state);
            (
                end.success,
                status,
                end.interrupted.or_else(interrupt::received),
            )
        }
    };
    let missing: Vec<&PathBuf> = stage
        .outs
        .iter()
        .filter(|o| !workdir.join(o).exists())
        .collect();
    if success && missing.is_empty() && interrupted.is_none() {
        return Ok(());
    }
    if !stage.persist {
        for o in &stage.outs {
            let p = workdir.join(o);
            if p.exists() {
                remove(&p)?;
            }
        }
    }
    let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
    let tail: Vec<&str> = tail.lines().rev().take(10).collect();
    let left = if stage.persist {
        "its outputs were kept for the next run to resume"
    } else {
        "its outputs were removed"
    };
    let what = if let Some(sig) = interrupted {
        format!("stopped by {}: {left}", interrupt::name(sig))
    } else if success {
        format!(
            "exited 0 but did not write {}",
            missing
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        status
    };
    Err(Error::StageFailed {
        stage: stage.name.clone(),
        status: format!(
            "{what}; log {}:\n{}",
            log_path.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ),
    })
}

/// Runs a stage's command as a child process in its own process group, on
/// `threads` threads where given; returns (success, exit status, the signal
/// that stopped it).
fn run_local(
    stage: &Stage,
    opts: &Options,
    threads: Option<usize>,
    log_path: &Path,
) -> Result<(bool, String, Option<i32>)> {
    let workdir = &opts.workdir;
    let log = std::fs::File::create(log_path).at(log_path)?;
    // Its own process group: a signal to the runner is passed on to the
    // stage's whole process tree, and only by the runner.
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(&stage.cmd)
        .current_dir(workdir)
        .stdout(log.try_clone().at(log_path)?)
        .stderr(log)
        .process_group(0);
    if let Some(n) = threads {
        command.env("RAYON_NUM_THREADS", n.to_string());
    }
    let parent = std::process::id() as libc::pid_t;
    let inherit = opts.inherit_fd;
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (prctl, getppid, fcntl).
    unsafe {
        command.pre_exec(move || {
            // The stage dies with the runner, even when the runner is
            // killed (SIGKILL, the OOM killer): no orphan keeps writing the
            // run folder. `bash -c` execs a simple command, which keeps it.
            #[cfg(target_os = "linux")]
            {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(std::io::Error::other(
                        "the runner ended before the stage started",
                    ));
                }
            }
            #[cfg(not(target_os = "linux"))]
            let _ = parent;
            if let Some(fd) = inherit {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command.spawn().at(Path::new("bash"))?;
    let mut forwarded: Option<(i32, Instant)> = None;
    let status = loop {
        if let Some(st) = child.try_wait().at(Path::new("bash"))? {
            break st;
        }
        match (forwarded, interrupt::received()) {
            (None, Some(sig)) => {
                interrupt::signal_group(child.id(), sig);
                forwarded = Some((sig, Instant::now()));
            }
            // A stage that ignores the signal is killed after a grace period.
            (Some((_, at)), _) if at.elapsed() > KILL_AFTER => {
                interrupt::signal_group(child.id(), libc::SIGKILL);
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let forwarded = forwarded.map(|(sig, _)| sig);
    let interrupted = forwarded.or_else(interrupt::received);
    Ok((status.success(), format!("{status}"), interrupted))
}

/// Decides, restores from the cache, or runs one stage; returns the outcome
/// and the lock entry to record.
fn process(
    stage: &Stage,
    lock: Option<&StageLock>,
    opts: &Options,
    threads: Option<usize>,
    log_dir: &Path,
    out_dir: &Path,
) -> Result<(Outcome, Option<StageLock>)> {
    let wd = &opts.workdir;
    let cur = current(stage, wd)?;
    let Some(why) = reason(stage, &cur, lock, wd, opts.force.contains(&stage.name))? else {
        return Ok((Outcome::UpToDate, None));
    };
    let key = cache_key(stage, &cur, out_dir);
    let cache = opts.cache.as_ref().map(RunCache::new);
    // A stage without outputs has nothing to restore: it always runs.
    let from_cache = why != Reason::Forced
        && !stage.outs.is_empty()
        && cur.deps.values().all(Option::is_some)
        && cache
            .as_ref()
            .is_some_and(|c| c.has(&key, stage.outs.len()));
    let outs_abs: Vec<PathBuf> = stage.outs.iter().map(|o| wd.join(o)).collect();
    let outcome = if from_cache {
        cache.as_ref().expect("checked").restore(&key, &outs_abs)?;
        let marker = partial_marker(&wd.join(out_dir), stage);
        if marker.exists() {
            std::fs::remove_file(&marker).at(&marker)?;
        }
        Outcome::Restored(why)
    } else {
        // A persist stage resumes only what it began with these same inputs.
        let marker = partial_marker(&wd.join(out_dir), stage);
        let keep = stage.persist
            && why != Reason::Forced
            && std::fs::read_to_string(&marker).is_ok_and(|k| k == key);
        if stage.persist {
            if let Some(parent) = marker.parent() {
                std::fs::create_dir_all(parent).at(parent)?;
            }
            std::fs::write(&marker, &key).at(&marker)?;
        }
        execute(stage, opts, threads, log_dir, keep)?;
        if stage.persist {
            std::fs::remove_file(&marker).at(&marker)?;
        }
        if let Some(c) = &cache {
            c.store(&key, &outs_abs)?;
        }
        Outcome::Ran(why)
    };
    // Dependencies are hashed again: a stage may not change its inputs, but
    // if it did the lock must say what the outputs were made from.
    let cur = current(stage, wd)?;
    let mut outs = BTreeMap::new();
    for o in &stage.outs {
        outs.insert(o.clone(), hash::path(&wd.join(o))?.unwrap_or_default());
    }
    Ok((
        outcome,
        Some(StageLock {
            cmd: stage.cmd.clone(),
            params: cur.params,
            deps: cur
                .deps
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect(),
            outs,
            program: cur.program,
            cache_key: key,
        }),
    ))
}

/// Resources that only size a Slurm job (`cpus`, `mem_gb`, `time_min`)
/// are not counted by the local scheduler.
fn counted(resource: &str) -> bool {
    !matches!(resource, "cpus" | "mem_gb" | "time_min")
}

/// Runs `pipeline`. `report` hears each stage's outcome as it happens, with
/// the wall time of the stage's command where one ran (or of restoring its
/// outputs from the run cache).
pub fn repro(
    pipeline: &Pipeline,
    opts: &Options,
    report: &mut dyn FnMut(&str, &Outcome, Option<Duration>),
) -> Result<Vec<(String, Outcome)>> {
    for f in &opts.force {
        if pipeline.stage(f).is_none() {
            return Err(Error::Invalid(format!(
                "--force {f}: no such stage in {} (stages: {})",
                pipeline.path.display(),
                pipeline
                    .stages
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let lock_dir = opts.workdir.join(&pipeline.out_dir);
    let mut lock = Lock::read(&lock_dir)?;
    let log_dir = lock_dir.join("logs");
    let mut results: BTreeMap<String, Outcome> = BTreeMap::new();

    if opts.dry_run {
        let mut runs: BTreeSet<String> = BTreeSet::new();
        for s in &pipeline.stages {
            // Inputs are hashed only where no upstream stage decides it.
            let why = match s.upstream.iter().find(|u| runs.contains(*u)) {
                Some(u) if !opts.force.contains(&s.name) => Some(Reason::Upstream(u.clone())),
                _ => reason(
                    s,
                    &current(s, &opts.workdir)?,
                    lock.stages.get(&s.name),
                    &opts.workdir,
                    opts.force.contains(&s.name),
                )?,
            };
            let o = match why {
                Some(w) => {
                    runs.insert(s.name.clone());
                    Outcome::WouldRun(w)
                }
                None => Outcome::UpToDate,
            };
            report(&s.name, &o, None);
            results.insert(s.name.clone(), o);
        }
        return Ok(pipeline
            .stages
            .iter()
            .map(|s| (s.name.clone(), results[&s.name].clone()))
            .collect());
    }

    // A simple scheduler: start every stage whose producers finished, as
    // long as jobs and resources allow; wait for one to finish; repeat.
    let jobs = opts.jobs.max(1);
    let mut pending: Vec<&Stage> = pipeline.stages.iter().collect();
    let mut running: BTreeSet<String> = BTreeSet::new();
    let mut in_use: BTreeMap<String, u32> = BTreeMap::new();
    let mut first_error: Option<Error> = None;
    type Done = (String, Duration, Result<(Outcome, Option<StageLock>)>);
    let (tx, rx) = mpsc::channel::<Done>();
    std::thread::scope(|scope| -> Result<()> {
        loop {
            // Stages blocked by a failure are settled first.
            let mut i = 0;
            while i < pending.len() {
                let s = pending[i];
                let blocked = s
                    .upstream
                    .iter()
                    .any(|u| matches!(results.get(u), Some(Outcome::Failed(_) | Outcome::NotRun)));
                let stopping = interrupt::received().is_some();
                if blocked || stopping || (first_error.is_some() && !opts.keep_going) {
                    results.insert(s.name.clone(), Outcome::NotRun);
                    report(&s.name, &Outcome::NotRun, None);
                    pending.remove(i);
                } else {
                    i += 1;
                }
            }
            // The cores are shared among the stages that run or can start
            // now: a stage that starts alone keeps them all.
            let ready_now = pending
                .iter()
                .filter(|s| s.upstream.iter().all(|u| results.contains_key(u)))
                .count();
            let width = jobs.min(running.len() + ready_now).max(1);
            let threads = opts.cores.map(|c| (c / width).max(1));
            let mut i = 0;
            while i < pending.len() && running.len() < jobs {
                let s = pending[i];
                let ready = s.upstream.iter().all(|u| results.contains_key(u));
                // Under Slurm, Slurm allocates; locally only counted
                // resources (`gpu`, names of the pipeline's own) limit.
                let fits = opts.executor != Executor::Local
                    || s.resources
                        .iter()
                        .filter(|(r, _)| counted(r))
                        .all(|(r, n)| {
                            in_use.get(r).copied().unwrap_or(0) + n
                                <= opts.capacity.get(r).copied().unwrap_or(1)
                        });
                if ready && fits {
                    for (r, n) in &s.resources {
                        *in_use.entry(r.clone()).or_default() += n;
                    }
                    running.insert(s.name.clone());
                    pending.remove(i);
                    let tx = tx.clone();
                    let entry = lock.stages.get(&s.name).cloned();
                    let log_dir = log_dir.clone();
                    scope.spawn(move || {
                        let start = Instant::now();
                        let r = process(
                            s,
                            entry.as_ref(),
                            opts,
                            threads,
                            &log_dir,
                            &pipeline.out_dir,
                        );
                        let _ = tx.send((s.name.clone(), start.elapsed(), r));
                    });
                } else {
                    i += 1;
                }
            }
            if running.is_empty() {
                if pending.is_empty() {
                    return Ok(());
                }
                // Nothing runs and nothing can start: a resource claim
                // exceeds its capacity.
                let s = pending[0];
                return Err(Error::Invalid(format!(
                    "stage `{}` claims {:?}, more than the capacity {:?}",
                    s.name, s.resources, opts.capacity
                )));
            }
            let (name, took, r) = rx.recv().expect("a worker reports");
            running.remove(&name);
            let stage = pipeline.stage(&name).expect("a known stage");
            for (res, n) in &stage.resources {
                *in_use.entry(res.clone()).or_default() -= n;
            }
            let outcome = match r {
                Ok((o, entry)) => {
                    if let Some(e) = entry {
                        lock.stages.insert(name.clone(), e);
                        lock.write(&lock_dir)?;
                    }
                    o
                }
                Err(e) => {
                    let o = Outcome::Failed(e.to_string());
                    first_error.get_or_insert(e);
                    o
                }
            };
            let took = match outcome {
                Outcome::Ran(_) | Outcome::Restored(_) | Outcome::Failed(_) => Some(took),
                _ => None,
            };
            report(&name, &outcome, took);
            results.insert(name, outcome);
        }
    })?;
    if let Some(sig) = interrupt::received() {
        return Err(Error::Invalid(format!(
            "stopped by {}: stages finished before it are in the lock file, the ones it stopped left nothing",
            interrupt::name(sig)
        )));
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(pipeline
        .stages
        .iter()
        .map(|s| (s.name.clone(), results[&s.name].clone()))
        .collect())
}
