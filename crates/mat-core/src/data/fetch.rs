//! `mat data fetch`: bring a dataset's files into the cache from the official
//! URLs or from a local folder, verify every checksum, unpack, and write each
//! file atomically.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::manifest::{ArchiveSpec, DatasetSpec, FileSpec};
use super::DataDir;
use crate::artifact::write_atomic;
use crate::error::{Error, Result};

/// Where to take a dataset's files from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The URLs in the manifest.
    Official,
    /// A local folder holding the files as published (gzipped or not), or the
    /// archive, directly or in a sub-folder named after the dataset.
    Dir(PathBuf),
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub file: String,
    /// The path or URL it came from, or "cache" when it was already there.
    pub from: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Fetches dataset `name` of the manifest into the cache.
pub fn fetch(dir: &DataDir, name: &str, source: &Source) -> Result<Vec<Fetched>> {
    let manifest = dir.manifest()?;
    let spec = manifest.get(name)?;
    fetch_spec(dir, name, spec, source)
}

pub(crate) fn fetch_spec(
    dir: &DataDir,
    name: &str,
    spec: &DatasetSpec,
    source: &Source,
) -> Result<Vec<Fetched>> {
    let cache = dir.cache_dir(name);
    match &spec.archive {
        None => spec
            .files
            .iter()
            .map(|f| fetch_file(name, f, &cache, source))
            .collect(),
        Some(archive) => fetch_archive(name, spec, archive, &cache, source),
    }
}

/// Why the other source was not used, and what to do: part of every fetch error.
fn hint(name: &str, file: &str, source: &Source, urls: &[String]) -> String {
    match source {
        Source::Dir(_) => format!(
            "official URLs not tried because --from was given ({}). To fix: run `mat data fetch {name}` on a machine with internet, or put `{file}` (as published) into the --from folder.",
            urls.join(", ")
        ),
        Source::Official => format!(
            "--from DIR: not given. To fix: download {} elsewhere and run `mat data fetch {name} --from DIR` with the folder that holds it.",
            urls.first().map(String::as_str).unwrap_or(file)
        ),
    }
}

fn fetch_error(
    name: &str,
    file: &str,
    attempts: Vec<String>,
    source: &Source,
    urls: &[String],
) -> Error {
    Error::Fetch {
        name: name.to_string(),
        file: file.to_string(),
        attempts: attempts
            .iter()
            .map(|a| format!("  - {a}"))
            .collect::<Vec<_>>()
            .join("\n"),
        hint: hint(name, file, source, urls),
    }
}

fn gunzip_if_needed(bytes: Vec<u8>, origin: &str) -> std::result::Result<Vec<u8>, String> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| format!("{origin}: not a valid gzip file: {e}"))?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

fn check_sha(bytes: &[u8], expected: &str, origin: &str) -> std::result::Result<(), String> {
    let found = sha256_hex(bytes);
    if found != expected {
        return Err(Error::Checksum {
            path: PathBuf::from(origin),
            expected: expected.to_string(),
            found,
        }
        .to_string());
    }
    Ok(())
}

/// The first of `NAME.gz`, `NAME`, `DS/NAME.gz`, `DS/NAME` under `dir` that exists.
fn find_in_dir(dir: &Path, dataset: &str, names: &[&str]) -> Option<PathBuf> {
    [dir.to_path_buf(), dir.join(dataset)]
        .iter()
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

/// An error with its causes: reqwest's own message hides why (DNS, TLS, refused).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

fn download(url: &str) -> std::result::Result<Vec<u8>, String> {
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(20))
        .timeout(Duration::from_secs(3600))
        .build()
        .map_err(|e| format!("{url}: {e}"))?;
    let resp = client
        .get(url)
        .send()
        .map_err(|e| format!("{url}: {}", with_causes(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    let bar = indicatif::ProgressBar::new(resp.content_length().unwrap_or(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {eta}")
            .expect("valid template"),
    );
    bar.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
    let mut bytes = Vec::new();
    bar.wrap_read(resp)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{url}: {e}"))?;
    bar.finish_and_clear();
    Ok(bytes)
}

fn fetch_file(name: &str, spec: &FileSpec, cache: &Path, source: &Source) -> Result<Fetched> {
    let target = cache.join(&spec.name);
    let expected = spec
        .sha256
        .as_deref()
        .expect("manifest validation requires sha256");
    if let Ok(bytes) = std::fs::read(&target) {
        if sha256_hex(&bytes) == expected {
            return Ok(Fetched {
                file: spec.name.clone(),
                from: "cache".into(),
            });
        }
        tracing::warn!(
            "{}: checksum differs from the manifest; fetching again",
            target.display()
        );
    }
    let mut attempts = Vec::new();
    let candidates: Vec<(String, std::result::Result<Vec<u8>, String>)> = match source {
        Source::Dir(d) => {
            let gz = format!("{}.gz", spec.name);
            match find_in_dir(d, name, &[&gz, &spec.name]) {
                Some(p) => {
                    let origin = p.display().to_string();
                    let bytes = std::fs::read(&p).map_err(|e| format!("{origin}: {e}"));
                    vec![(origin, bytes)]
                }
                None => {
                    attempts.push(format!(
                        "--from {}: no `{gz}` or `{}` there (nor in its `{name}/` folder)",
                        d.display(),
                        spec.name
                    ));
                    vec![]
                }
            }
        }
        Source::Official => spec.urls.iter().map(|u| (u.clone(), download(u))).collect(),
    };
    for (origin, bytes) in candidates {
        let ok = bytes
            .and_then(|b| gunzip_if_needed(b, &origin))
            .and_then(|b| check_sha(&b, expected, &origin).map(|_| b));
        match ok {
            Ok(payload) => {
                write_atomic(&target, &payload)?;
                tracing::info!("{} <- {origin}", target.display());
                return Ok(Fetched {
                    file: spec.name.clone(),
                    from: origin,
                });
            }
            Err(e) => attempts.push(e),
        }
    }
    Err(fetch_error(name, &spec.name, attempts, source, &spec.urls))
}

fn cached_files_ok(spec: &DatasetSpec, cache: &Path) -> bool {
    spec.files.iter().all(|f| {
        std::fs::metadata(cache.join(&f.name))
            .map(|m| f.size.is_none_or(|s| s == m.len()))
            .unwrap_or(false)
    })
}

fn fetch_archive(
    name: &str,
    spec: &DatasetSpec,
    archive: &ArchiveSpec,
    cache: &Path,
    source: &Source,
) -> Result<Vec<Fetched>> {
    if cached_files_ok(spec, cache) {
        return Ok(spec
            .files
            .iter()
            .map(|f| Fetched {
                file: f.name.clone(),
                from: "cache".into(),
            })
            .collect());
    }
    let mut attempts = Vec::new();
    let candidates: Vec<(String, std::result::Result<Vec<u8>, String>)> = match source {
        Source::Dir(d) => {
            if let Some(p) = find_in_dir(d, name, &[&archive.name]) {
                let origin = p.display().to_string();
                vec![(
                    origin.clone(),
                    std::fs::read(&p).map_err(|e| format!("{origin}: {e}")),
                )]
            } else {
                return copy_extracted(name, spec, archive, d, cache);
            }
        }
        Source::Official => archive
            .urls
            .iter()
            .map(|u| (u.clone(), download(u)))
            .collect(),
    };
    for (origin, bytes) in candidates {
        match bytes.and_then(|b| check_sha(&b, &archive.sha256, &origin).map(|_| b)) {
            Ok(b) => return extract(spec, archive, &b, &origin, cache),
            Err(e) => attempts.push(e),
        }
    }
    Err(fetch_error(
        name,
        &archive.name,
        attempts,
        source,
        &archive.urls,
    ))
}

/// Unpacks the manifest's files from a verified `.tar.gz`.
fn extract(
    spec: &DatasetSpec,
    archive: &ArchiveSpec,
    bytes: &[u8],
    origin: &str,
    cache: &Path,
) -> Result<Vec<Fetched>> {
    let bad = |e: std::io::Error| Error::format(origin, format!("cannot read the archive: {e}"));
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut done = Vec::new();
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.to_path_buf();
        let Some(file) = path
            .file_name()
            .and_then(|f| f.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let in_dir = path
            .parent()
            .is_some_and(|p| p.ends_with(&archive.member_dir));
        if !in_dir || (spec.file(&file).is_none() && file != "batches.meta.txt") {
            continue;
        }
        let mut content = Vec::new();
        entry.read_to_end(&mut content).map_err(bad)?;
        write_atomic(&cache.join(&file), &content)?;
        done.push(Fetched {
            file,
            from: origin.to_string(),
        });
    }
    for f in &spec.files {
        if !done.iter().any(|d| d.file == f.name) {
            return Err(Error::format(
                origin,
                format!("the archive has no `{}/{}`", archive.member_dir, f.name),
            ));
        }
    }
    Ok(done)
}

/// Copies already-extracted CIFAR files; no per-file digest is published, so
/// their sizes are checked and the record layout is checked again at load.
fn copy_extracted(
    name: &str,
    spec: &DatasetSpec,
    archive: &ArchiveSpec,
    dir: &Path,
    cache: &Path,
) -> Result<Vec<Fetched>> {
    let roots = [
        dir.to_path_buf(),
        dir.join(&archive.member_dir),
        dir.join(name),
    ];
    let mut done = Vec::new();
    for f in &spec.files {
        let Some(p) = roots.iter().map(|r| r.join(&f.name)).find(|p| p.is_file()) else {
            let attempts = vec![format!(
                "--from {}: neither `{}` nor an extracted `{}` there",
                dir.display(),
                archive.name,
                f.name
            )];
            return Err(fetch_error(
                name,
                &f.name,
                attempts,
                &Source::Dir(dir.into()),
                &archive.urls,
            ));
        };
        let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
        if let Some(size) = f.size {
            if bytes.len() as u64 != size {
                return Err(Error::format(
                    &p,
                    format!("expected {size} bytes, found {}", bytes.len()),
                ));
            }
        }
        tracing::warn!(
            "{}: copied by size; no published checksum exists for extracted files",
            p.display()
        );
        write_atomic(&cache.join(&f.name), &bytes)?;
        done.push(Fetched {
            file: f.name.clone(),
            from: p.display().to_string(),
        });
    }
    Ok(done)
}
