//! The Slurm executor: a stage's command becomes a batch job (`sbatch
//! --parsable` of a generated job script) instead of a child process; the
//! runner polls the job (squeue, then scontrol or sacct for its end) and
//! records the stage exactly as the local executor does. Ctrl-C or SIGTERM
//! cancels the job (`scancel`). The project folder must be on a file system
//! the compute nodes share: the job runs in it and writes its outputs there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::IoContext;
use crate::interrupt;
use crate::spec::Stage;
use crate::{Error, Result};

/// How stages are handed to Slurm.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlurmOptions {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// More `sbatch` options, split on white space (e.g. `--qos=long`).
    pub extra: Vec<String>,
}

/// How a job ended.
pub struct JobEnd {
    pub id: String,
    pub success: bool,
    /// Slurm's words: `COMPLETED (exit 0:0)`, `FAILED (exit 1:0)`, …
    pub state: String,
    /// The signal that stopped the runner while the job ran (the job was
    /// cancelled).
    pub interrupted: Option<i32>,
}

/// How often the runner asks Slurm about its jobs.
fn poll_interval() -> Duration {
    std::env::var("MAT_SLURM_POLL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_millis(1000), Duration::from_millis)
}

/// Refuses, with what to do, where `sbatch` is not on PATH.
pub fn check_available() -> Result<()> {
    match Command::new("sbatch").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(Error::Invalid(format!(
            "--executor slurm: `sbatch --version` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
        Err(e) => Err(Error::Invalid(format!(
            "--executor slurm: cannot run `sbatch` ({e}); install Slurm's client commands (sbatch, squeue, scancel) on this machine, or run without --executor slurm"
        ))),
    }
}

/// `s` quoted for bash: inside single quotes, each `'` as `'\''`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `#SBATCH` lines of a stage: its name, log, folder and resources
/// (`gpu: N` → `--gres=gpu:N`, `cpus` → `--cpus-per-task`, `mem_gb` →
/// `--mem=NG`, `time_min` → `--time`), then the options of `opts`.
pub fn directives(stage: &Stage, opts: &SlurmOptions, workdir: &Path, log: &Path) -> Vec<String> {
    let mut d = vec![
        format!("--job-name=mat:{}", stage.name),
        format!("--output={}", log.display()),
        format!("--chdir={}", workdir.display()),
        "--nodes=1".to_string(),
        "--ntasks=1".to_string(),
    ];
    for (r, n) in &stage.resources {
        d.push(match r.as_str() {
            "gpu" => format!("--gres=gpu:{n}"),
            "cpus" => format!("--cpus-per-task={n}"),
            "mem_gb" => format!("--mem={n}G"),
            "time_min" => format!("--time={n}"),
            other => format!("--comment={other}:{n}"),
        });
    }
    if let Some(p) = &opts.partition {
        d.push(format!("--partition={p}"));
    }
    if let Some(a) = &opts.account {
        d.push(format!("--account={a}"));
    }
    d.extend(opts.extra.iter().cloned());
    d
}

/// The job script of a stage: its directives, then its command, run by
/// bash in the project folder with the runner's PATH (so the stage programs
/// are the ones the runner would run).
pub fn job_script(stage: &Stage, opts: &SlurmOptions, workdir: &Path, log: &Path) -> String {
    let mut s = String::from("#!/bin/bash\n");
    for d in directives(stage, opts, workdir, log) {
        s.push_str(&format!("#SBATCH {d}\n"));
    }
    let path = std::env::var("PATH").unwrap_or_default();
    s.push_str(&format!("# stage `{}` of a mat pipeline\n", stage.name));
    s.push_str(&format!("export PATH={}\n", quote(&path)));
    s.push_str(&format!("cd {}\n", quote(&workdir.display().to_string())));
    s.push_str(&format!("exec bash -c {}\n", quote(&stage.cmd)));
    s
}

/// Runs `cmd` and returns its standard output; an error names the command.
fn slurm(cmd: &str, args: &[&str]) -> Result<String> {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| Error::Invalid(format!("cannot run `{cmd}`: {e}")))?;
    if !o.status.success() {
        return Err(Error::Invalid(format!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A state a job does not leave.
fn terminal(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "FAILED"
            | "CANCELLED"
            | "TIMEOUT"
            | "OUT_OF_MEMORY"
            | "NODE_FAIL"
            | "PREEMPTED"
            | "BOOT_FAIL"
            | "DEADLINE"
    )
}

/// The job's state while squeue lists it; `None` once it left the queue.
fn queued_state(id: &str) -> Result<Option<String>> {
    let out = slurm("squeue", &["-h", "-j", id, "-o", "%T"]);
    match out {
        Ok(s) => Ok(s.lines().next().map(|l| l.trim().to_string())),
        // squeue refuses a job id it no longer knows: the job has left.
        Err(_) => Ok(None),
    }
}

/// How a job that left the queue ended: scontrol (kept for MinJobAge), else
/// sacct (where accounting exists).
fn final_state(id: &str) -> Result<(String, String)> {
    if let Ok(s) = slurm("scontrol", &["show", "job", "-o", id]) {
        let field = |k: &str| {
            s.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")))
                .map(str::to_string)
        };
        if let (Some(state), Some(code)) = (field("JobState"), field("ExitCode")) {
            return Ok((state, code));
        }
    }
    let s = slurm(
        "sacct",
        &["-n", "-X", "-P", "-j", id, "-o", "State,ExitCode"],
    )?;
    let line = s.lines().next().unwrap_or("").trim().to_string();
    let (state, code) = line.split_once('|').unwrap_or((line.as_str(), ""));
    if state.is_empty() {
        return Err(Error::Invalid(format!(
            "Slurm job {id}: neither scontrol nor sacct knows how it ended"
        )));
    }
    Ok((
        state.split_whitespace().next().unwrap_or(state).to_string(),
        code.to_string(),
    ))
}

/// Submits the stage as a job and waits for it; the job script is kept
/// beside the log as `<log>.sbatch`.
pub fn run(stage: &Stage, opts: &SlurmOptions, workdir: &Path, log: &Path) -> Result<JobEnd> {
    let workdir = std::fs::canonicalize(workdir).at(workdir)?;
    let log = workdir.join(log);
    let script_path: PathBuf = log.with_extension("sbatch");
    std::fs::write(&script_path, job_script(stage, opts, &workdir, &log)).at(&script_path)?;
    let out = slurm(
        "sbatch",
        &["--parsable", &script_path.display().to_string()],
    )?;
    // `--parsable` prints `id` or `id;cluster`.
    let id = out
        .trim()
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::Invalid(format!(
            "sbatch {}: expected a job id, got `{}`",
            script_path.display(),
            out.trim()
        )));
    }
    let mut interrupted = None;
    let (state, code) = loop {
        if let Some(sig) = interrupt::received() {
            // Cancel, then wait (bounded) until the job has left the queue,
            // so nothing of it still writes when the runner reports.
            let _ = slurm("scancel", &[&id]);
            interrupted = Some(sig);
            for _ in 0..120 {
                if queued_state(&id)?.is_none() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            break final_state(&id).unwrap_or_else(|e| ("CANCELLED".into(), e.to_string()));
        }
        if queued_state(&id)?.is_some_and(|s| !terminal(&s)) {
            std::thread::sleep(poll_interval());
            continue;
        }
        // Gone from squeue (or ended there): how it ended. A job that
        // squeue missed for a moment (a busy controller) is still running.
        let (state, code) = final_state(&id).unwrap_or_else(|e| ("UNKNOWN".into(), e.to_string()));
        if terminal(&state) || state == "UNKNOWN" {
            break (state, code);
        }
        std::thread::sleep(poll_interval());
    };
    Ok(JobEnd {
        success: interrupted.is_none() && state == "COMPLETED" && code.starts_with("0:0"),
        state: format!("{state} (exit {code})"),
        id,
        interrupted,
    })
}
