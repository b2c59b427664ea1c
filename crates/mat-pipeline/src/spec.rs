//! Pipeline files: parsing (unknown keys are errors with line and column),
//! `foreach`/`matrix` expansion, `${...}` interpolation, profiles, and the
//! dependency graph (missing references and cycles are located errors).
//!
//! Interpolation inside `cmd`, `deps`, `outs` and `params`:
//! `${item}` (foreach), `${item.AXIS}` (matrix), `${vars.NAME}`,
//! `${params.KEY.PATH}` (after the profile's overrides), `${out}` (the
//! run's folder `runs/<pipeline>/<profile>`), `${profile}`, `${pipeline}`.
//! A `foreach`, a matrix axis, or an entry of one of them or of `deps`/`outs`
//! that is exactly `${params.NAME}` or `${vars.NAME}` naming a list stands
//! for that list's items, so a profile can add stages (the CIFAR-10 half of
//! the paper profile) or remove them; inside a command such a list reads as
//! its items separated by spaces. References nest and reach into mappings
//! (`${vars.model.${item}.config}`). `include:` folds other files' vars,
//! params, profiles and stages in, the including file's own values winning.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

use crate::error::{Error, IoContext, Result};
use crate::yaml_limits::yaml_too_large;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    /// Files whose vars, params, profiles and stages this one adds to its
    /// own (paths relative to this file's folder); its own win.
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    vars: BTreeMap<String, Value>,
    #[serde(default)]
    params: Option<Value>,
    #[serde(default)]
    profiles: BTreeMap<String, Value>,
    #[serde(default)]
    stages: BTreeMap<String, RawStage>,
    /// Folders besides the run's own (`${out}`) that stages may write
    /// (and the runner may therefore remove), relative to the project root.
    #[serde(default)]
    output_roots: Vec<String>,
}

/// A pipeline file with its includes folded in; each stage remembers the
/// file (and its text) it came from, for located errors.
struct Merged {
    vars: BTreeMap<String, Value>,
    params: Value,
    profiles: BTreeMap<String, Value>,
    stages: BTreeMap<String, (RawStage, usize)>,
    /// Declared output roots, each with the file that declared it.
    output_roots: Vec<(String, usize)>,
    /// (path, text) of every file read; index 0 is the pipeline itself.
    sources: Vec<(PathBuf, String)>,
}

impl Merged {
    fn read(path: &Path) -> Result<Self> {
        let mut m = Merged {
            vars: BTreeMap::new(),
            params: Value::Mapping(Default::default()),
            profiles: BTreeMap::new(),
            stages: BTreeMap::new(),
            output_roots: Vec::new(),
            sources: Vec::new(),
        };
        m.add(path, 0)?;
        Ok(m)
    }

    /// Folds in `path`: its includes first, then its own entries over them.
    fn add(&mut self, path: &Path, depth: usize) -> Result<()> {
        let text = std::fs::read_to_string(path).at(path)?;
        let raw: RawPipeline = parse_yaml(path, &text)?;
        let index = self.sources.len();
        self.sources.push((path.to_path_buf(), text.clone()));
        let err = |key: &str, what: String| {
            let (line, column) = locate(&text, key);
            Error::Pipeline {
                path: path.to_path_buf(),
                line,
                column,
                what,
            }
        };
        for inc in &raw.include {
            let target = path.parent().unwrap_or(Path::new(".")).join(inc);
            if depth >= 4 || self.sources.iter().any(|(p, _)| p == &target) {
                return Err(err(
                    "include",
                    format!("include `{inc}`: included twice or nested more than 4 deep"),
                ));
            }
            if !target.is_file() {
                return Err(err(
                    "include",
                    format!("include `{inc}`: no such file ({})", target.display()),
                ));
            }
            self.add(&target, depth + 1)?;
        }
        self.vars.extend(raw.vars);
        self.output_roots
            .extend(raw.output_roots.into_iter().map(|r| (r, index)));
        if let Some(p) = &raw.params {
            merge(&mut self.params, p);
        }
        for (name, over) in raw.profiles {
            match self.profiles.get_mut(&name) {
                Some(base) => merge(base, &over),
                None => {
                    self.profiles.insert(name, over);
                }
            }
        }
        for (name, stage) in raw.stages {
            if let Some((_, from)) = self.stages.get(&name) {
                return Err(err(
                    &name,
                    format!(
                        "stage `{name}` is also defined in {}",
                        self.sources[*from].0.display()
                    ),
                ));
            }
            self.stages.insert(name, (stage, index));
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    cmd: String,
    #[serde(default)]
    deps: Vec<String>,
    #[serde(default)]
    params: Vec<String>,
    #[serde(default)]
    outs: Vec<String>,
    /// A list, or `${params.NAME}` / `${vars.NAME}` naming one (so a profile
    /// can add or remove items; an empty list gives no stages).
    #[serde(default)]
    foreach: Option<Value>,
    #[serde(default)]
    matrix: Option<BTreeMap<String, Value>>,
    /// Claims on named resources, e.g. `gpu: 1`.
    #[serde(default)]
    resources: BTreeMap<String, u32>,
    /// DVC's word: the outputs survive an interrupted run, so a program that
    /// resumes (`mat-train --resume`) continues where it was stopped.
    #[serde(default)]
    persist: bool,
}

/// One stage after expansion and interpolation.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub name: String,
    pub cmd: String,
    pub deps: Vec<PathBuf>,
    pub outs: Vec<PathBuf>,
    /// Each declared param with its value (JSON).
    pub params: BTreeMap<String, String>,
    pub resources: BTreeMap<String, u32>,
    /// Outputs are kept when the stage is interrupted, for a program that
    /// resumes; removed as usual when its inputs changed.
    pub persist: bool,
    /// Names of the stages whose outputs this stage reads.
    pub upstream: Vec<String>,
}

/// A pipeline, expanded for one profile, its stages in dependency order.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub path: PathBuf,
    pub name: String,
    pub profile: String,
    /// `runs/<pipeline>/<profile>`: the lock file and, by convention, the
    /// outputs.
    pub out_dir: PathBuf,
    pub stages: Vec<Stage>,
}

/// Parses YAML `text` read from `path`; a mistake comes with its line and
/// column.
fn parse_yaml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    if let Some((line, column, what)) = yaml_too_large(text) {
        return Err(Error::Pipeline {
            path: path.to_path_buf(),
            line,
            column,
            what,
        });
    }
    serde_yaml::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        Error::Pipeline {
            path: path.to_path_buf(),
            line,
            column,
            what: e.to_string(),
        }
    })
}

/// The most stages one pipeline may expand to.
pub const MAX_STAGES: usize = 10_000;
/// The longest text one interpolated entry may expand to: vars that
/// reference each other a few levels deep can otherwise grow without bound.
pub const MAX_EXPANDED: usize = 1 << 20;
/// The line and column of the first `key:` in `text` (for errors about a
/// key that parsed but means something wrong).
fn locate(text: &str, key: &str) -> (usize, usize) {
    let pat = format!("{key}:");
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with(&pat) {
            return (i + 1, line.len() - t.len() + 1);
        }
    }
    (0, 0)
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .trim_start_matches("---")
            .trim()
            .to_string(),
    }
}

/// A value as it reads inside a string: a list of scalars becomes its
/// items separated by spaces (the paths a report reads, say).
fn inline_text(v: &Value) -> String {
    match v.as_sequence() {
        Some(list) if list.iter().all(|e| !e.is_sequence() && !e.is_mapping()) => {
            list.iter().map(value_text).collect::<Vec<_>>().join(" ")
        }
        _ => value_text(v),
    }
}

/// The index of the `}` that closes a `${` whose body starts `s`, skipping
/// nested `${...}`.
fn closing_brace(s: &str) -> Option<usize> {
    let mut open = 0usize;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && b.get(i + 1) == Some(&b'{') {
            open += 1;
            i += 2;
            continue;
        }
        if b[i] == b'}' {
            if open == 0 {
                return Some(i);
            }
            open -= 1;
        }
        i += 1;
    }
    None
}

/// `NAME` or `NAME.PATH` in the `vars` mapping.
fn lookup_var<'a>(vars: &'a BTreeMap<String, Value>, key: &str) -> Option<&'a Value> {
    match key.split_once('.') {
        None => vars.get(key),
        Some((name, rest)) => lookup(vars.get(name)?, rest),
    }
}

/// Looks up a dotted key in a YAML mapping.
fn lookup<'a>(root: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(root, |node, part| node.get(part))
}

/// Deep merge of `over` into `base` (mappings merge, anything else replaces).
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

struct Scope<'a> {
    item: Option<&'a Value>,
    vars: &'a BTreeMap<String, Value>,
    params: &'a Value,
    out: &'a str,
    profile: &'a str,
    pipeline: &'a str,
}

impl<'a> Scope<'a> {
    /// The list that `s` names when it is exactly one `${params.NAME}` or
    /// `${vars.NAME}` reference to a YAML sequence.
    /// A param may itself name a list of `vars` (`models: ${vars.models}`),
    /// followed a few levels deep.
    fn list_ref(&self, s: &str) -> Option<&'a [Value]> {
        self.list_ref_depth(s, 0)
    }

    fn list_ref_depth(&self, s: &str, depth: usize) -> Option<&'a [Value]> {
        let expr = s.trim().strip_prefix("${")?.strip_suffix('}')?;
        if expr.contains("${") || depth > 4 {
            return None;
        }
        let v = match expr.trim().split_once('.')? {
            ("params", k) => lookup(self.params, k)?,
            ("vars", k) => lookup_var(self.vars, k)?,
            _ => return None,
        };
        match v {
            Value::String(inner) => self.list_ref_depth(inner, depth + 1),
            _ => v.as_sequence().map(Vec::as_slice),
        }
    }

    /// A `foreach` or matrix axis: a list whose entries naming a list are
    /// spliced in, or a single reference to a list.
    fn items(&self, v: &Value) -> std::result::Result<Vec<Value>, String> {
        match v {
            Value::String(s) => self.list_ref(s).map(<[Value]>::to_vec).ok_or_else(|| {
                format!(
                    "`{s}`: expected a list, or `${{params.NAME}}` / `${{vars.NAME}}` naming one"
                )
            }),
            Value::Sequence(list) => Ok(list
                .iter()
                .flat_map(|e| match e.as_str().and_then(|s| self.list_ref(s)) {
                    Some(inner) => inner.to_vec(),
                    None => vec![e.clone()],
                })
                .collect()),
            other => Err(format!(
                "expected a list, or `${{params.NAME}}` naming one, got `{}`",
                value_text(other)
            )),
        }
    }

    /// Interpolates a `deps`/`outs` entry; one that is exactly a reference
    /// to a list becomes its items, each interpolated.
    fn paths(&self, entry: &str) -> std::result::Result<Vec<PathBuf>, String> {
        match self.list_ref(entry) {
            Some(list) => list
                .iter()
                .map(|v| self.interpolate(&value_text(v)).map(PathBuf::from))
                .collect(),
            None => Ok(vec![PathBuf::from(self.interpolate(entry)?)]),
        }
    }

    fn resolve(&self, expr: &str) -> std::result::Result<String, String> {
        let expr = expr.trim();
        let (head, rest) = match expr.split_once('.') {
            Some((h, r)) => (h, Some(r)),
            None => (expr, None),
        };
        let found = match (head, rest) {
            ("out", None) => Some(self.out.to_string()),
            ("profile", None) => Some(self.profile.to_string()),
            ("pipeline", None) => Some(self.pipeline.to_string()),
            ("item", None) => self.item.map(inline_text),
            ("item", Some(k)) => self.item.and_then(|i| lookup(i, k)).map(inline_text),
            ("vars", Some(k)) => lookup_var(self.vars, k).map(inline_text),
            ("params", Some(k)) => lookup(self.params, k).map(inline_text),
            _ => None,
        };
        found.ok_or_else(|| {
            let vars: Vec<&str> = self.vars.keys().map(String::as_str).collect();
            format!(
                "`${{{expr}}}` refers to nothing (known: item{}, vars.{{{}}}, params.*, out, profile, pipeline)",
                if self.item.is_some() { ", item.*" } else { " (this stage has no foreach/matrix)" },
                vars.join(", ")
            )
        })
    }

    fn interpolate(&self, s: &str) -> std::result::Result<String, String> {
        self.interpolate_depth(s, 0)
    }

    /// Values may themselves contain `${...}` (a foreach item naming
    /// `${out}`); they are expanded in turn, a few levels deep.
    fn interpolate_depth(&self, s: &str, depth: usize) -> std::result::Result<String, String> {
        if depth > 4 {
            return Err(format!("`{s}`: `${{...}}` nested more than 4 levels"));
        }
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = closing_brace(after)
                .ok_or_else(|| format!("`{s}`: `${{` without a closing `}}`"))?;
            // A reference may hold references: `${vars.model.${item}.config}`.
            let expr = &after[..end];
            let expr = if expr.contains("${") {
                self.interpolate_depth(expr, depth + 1)?
            } else {
                expr.to_string()
            };
            let value = self.resolve(&expr)?;
            out.push_str(&self.interpolate_depth(&value, depth + 1)?);
            if out.len() > MAX_EXPANDED {
                return Err(format!(
                    "`{}...` expands to more than {MAX_EXPANDED} bytes (do vars refer to each other?)",
                    s.chars().take(40).collect::<String>()
                ));
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

impl Pipeline {
    /// The stages in dependency order, one line each: `name` or
    /// `name <- upstream, ...` (`mat dag`).
    pub fn dag(&self) -> String {
        let mut text = String::new();
        for s in &self.stages {
            if s.upstream.is_empty() {
                text.push_str(&format!("{}\n", s.name));
            } else {
                text.push_str(&format!("{} <- {}\n", s.name, s.upstream.join(", ")));
            }
        }
        text
    }

    /// Reads and expands `path` for `profile`; outputs go under `runs_root`
    /// (`runs/<pipeline>/<profile>`).
    pub fn load(path: &Path, profile: &str, runs_root: &Path) -> Result<Self> {
        let raw = Merged::read(path)?;
        let text = raw.sources[0].1.clone();
        let err = |line: usize, column: usize, what: String| Error::Pipeline {
            path: path.to_path_buf(),
            line,
            column,
            what,
        };
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pipeline".into());
        let mut params = raw.params.clone();
        if !raw.profiles.is_empty() || profile != "default" {
            let over = raw.profiles.get(profile).ok_or_else(|| {
                let (l, c) = locate(&text, "profiles");
                let known: Vec<&str> = raw.profiles.keys().map(String::as_str).collect();
                err(
                    l,
                    c,
                    format!(
                        "profile `{profile}` is not defined (profiles: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                )
            })?;
            if let Some(p) = over.get("params") {
                merge(&mut params, p);
            } else if !over.is_null() && over.as_mapping().is_none_or(|m| !m.is_empty()) {
                let (l, c) = locate(&text, profile);
                return Err(err(
                    l,
                    c,
                    format!("profile `{profile}`: expected `params:` overrides"),
                ));
            }
        }
        for (what, value) in [("pipeline name", name.as_str()), ("profile", profile)] {
            if !plain_name(value) {
                return Err(err(
                    1,
                    1,
                    format!("{what} `{value}`: expected a plain name (letters, digits, `-`, `_`, `.`), as it names the run folder"),
                ));
            }
        }
        let out_dir = runs_root.join(&name).join(profile);
        let out_text = out_dir.to_string_lossy().into_owned();

        let mut stages = Vec::new();
        for (stage_name, (rs, from)) in &raw.stages {
            let (src_path, src_text) = &raw.sources[*from];
            let (line, column) = locate(src_text, stage_name);
            let fail = |what: String| Error::Pipeline {
                path: src_path.clone(),
                line,
                column,
                what: format!("stage `{stage_name}`: {what}"),
            };
            // Lists may come from params, so they are read in the stage-less scope.
            let outer = Scope {
                item: None,
                vars: &raw.vars,
                params: &params,
                out: &out_text,
                profile,
                pipeline: &name,
            };
            let items: Vec<(String, Option<Value>)> = match (&rs.foreach, &rs.matrix) {
                (Some(_), Some(_)) => return Err(fail("has both `foreach` and `matrix`".into())),
                // A mapping item is named by its `name` key.
                (Some(list), None) => outer
                    .items(list)
                    .map_err(|e| fail(format!("foreach: {e}")))?
                    .iter()
                    .map(|v| {
                        let label = v
                            .get("name")
                            .map(value_text)
                            .unwrap_or_else(|| value_text(v));
                        (format!("{stage_name}@{label}"), Some(v.clone()))
                    })
                    .collect(),
                (None, Some(axes)) => {
                    let mut combos: Vec<(Vec<String>, serde_yaml::Mapping)> =
                        vec![(vec![], serde_yaml::Mapping::new())];
                    for (axis, values) in axes {
                        let values = outer
                            .items(values)
                            .map_err(|e| fail(format!("matrix axis `{axis}`: {e}")))?;
                        let mut next = Vec::new();
                        for (names, map) in &combos {
                            for v in &values {
                                let mut n = names.clone();
                                n.push(value_text(v));
                                let mut m = map.clone();
                                m.insert(Value::String(axis.clone()), v.clone());
                                next.push((n, m));
                            }
                        }
                        if next.len() > MAX_STAGES {
                            return Err(fail(format!(
                                "matrix: more than {MAX_STAGES} combinations"
                            )));
                        }
                        combos = next;
                    }
                    combos
                        .into_iter()
                        .map(|(n, m)| {
                            (
                                format!("{stage_name}@{}", n.join("-")),
                                Some(Value::Mapping(m)),
                            )
                        })
                        .collect()
                }
                (None, None) => vec![(stage_name.clone(), None)],
            };
            for (full, item) in items {
                let scope = Scope {
                    item: item.as_ref(),
                    vars: &raw.vars,
                    params: &params,
                    out: &out_text,
                    profile,
                    pipeline: &name,
                };
                let interp = |s: &String| scope.interpolate(s).map_err(&fail);
                let paths = |entries: &[String]| -> Result<Vec<PathBuf>> {
                    let mut v = Vec::new();
                    for e in entries {
                        v.extend(scope.paths(e).map_err(&fail)?);
                    }
                    Ok(v)
                };
                let mut ps = BTreeMap::new();
                for key in &rs.params {
                    let key = interp(key)?;
                    let v = lookup(&params, &key).ok_or_else(|| {
                        fail(format!("param `{key}` is not defined under `params:`"))
                    })?;
                    ps.insert(key, serde_json::to_string(v).unwrap_or_default());
                }
                stages.push(Stage {
                    name: full,
                    cmd: interp(&rs.cmd)?,
                    deps: paths(&rs.deps)?,
                    outs: paths(&rs.outs)?,
                    params: ps,
                    resources: rs.resources.clone(),
                    persist: rs.persist,
                    upstream: vec![],
                });
                if stages.len() > MAX_STAGES {
                    return Err(fail(format!(
                        "the pipeline expands to more than {MAX_STAGES} stages"
                    )));
                }
            }
        }
        let roots = output_roots(&raw, &out_dir)?;
        check_outputs(&stages, &roots, &raw)?;
        let stages = order(stages, &text, path)?;
        Ok(Self {
            path: path.to_path_buf(),
            name,
            profile: profile.to_string(),
            out_dir,
            stages,
        })
    }

    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == name)
    }
}

/// A run-folder name: one path component, not `.` or `..`.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `p` with `.` dropped and `..` applied, or `None` when it climbs above
/// where it starts (the project root, or `/`).
fn normalize(p: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
            // An absolute path stays absolute: it is inside an output root
            // only when that root is (a library caller's absolute runs root).
            Component::RootDir | Component::Prefix(_) => out.push(c.as_os_str()),
        }
    }
    Some(out)
}

/// The folders stages may write into: the run's own and the declared
/// `output_roots`, each checked to be a folder the runner may own.
fn output_roots(raw: &Merged, out_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut roots = vec![normalize(out_dir).unwrap_or_else(|| out_dir.to_path_buf())];
    for (root, from) in &raw.output_roots {
        let (src_path, src_text) = &raw.sources[*from];
        let (line, column) = locate(src_text, "output_roots");
        let fail = |what: &str| Error::Pipeline {
            path: src_path.clone(),
            line,
            column,
            what: format!("output_roots: `{root}` {what}"),
        };
        if Path::new(root).is_absolute() {
            return Err(fail(
                "is absolute; an output root is a folder of the project",
            ));
        }
        let p =
            normalize(Path::new(root)).ok_or_else(|| fail("leaves the project (`..` above it)"))?;
        if p.as_os_str().is_empty() {
            return Err(fail("is the project root itself"));
        }
        if p.components().any(|c| c.as_os_str() == ".git") {
            return Err(fail("is inside `.git`"));
        }
        if let Some((file, _)) = raw
            .sources
            .iter()
            .find(|(f, _)| f.is_relative() && normalize(f).is_some_and(|f| f.starts_with(&p)))
        {
            return Err(fail(&format!("holds the pipeline file {}", file.display())));
        }
        roots.push(p);
    }
    Ok(roots)
}

/// Every output must lie strictly inside an output root, must not hold a
/// pipeline file, another stage's output or the stage's own input: the
/// runner removes a stage's outputs before it runs, and only these checks
/// make that safe.
fn check_outputs(stages: &[Stage], roots: &[PathBuf], raw: &Merged) -> Result<()> {
    let mut owner: BTreeMap<PathBuf, &str> = BTreeMap::new();
    let fail = |stage: &str, what: String| {
        let base = stage.split('@').next().unwrap_or(stage);
        let (src_path, src_text) = raw
            .stages
            .get(base)
            .map(|(_, from)| &raw.sources[*from])
            .unwrap_or(&raw.sources[0]);
        let (line, column) = locate(src_text, base);
        Error::Pipeline {
            path: src_path.clone(),
            line,
            column,
            what: format!("stage `{stage}`: {what}"),
        }
    };
    let shown = |roots: &[PathBuf]| {
        roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for s in stages {
        for o in &s.outs {
            let text = o.display().to_string();
            let Some(p) = normalize(o) else {
                return Err(fail(
                    &s.name,
                    format!("output `{text}` leaves the project (`..` above it)"),
                ));
            };
            if !roots.iter().any(|r| p.starts_with(r) && &p != r) {
                return Err(fail(
                    &s.name,
                    format!(
                        "output `{text}` is not inside the run folder or a declared output root ({}); the runner removes outputs before a stage runs, so it writes only there",
                        shown(roots)
                    ),
                ));
            }
            if let Some((file, _)) = raw
                .sources
                .iter()
                .find(|(f, _)| f.is_relative() && normalize(f).is_some_and(|f| f.starts_with(&p)))
            {
                return Err(fail(
                    &s.name,
                    format!("output `{text}` holds the pipeline file {}", file.display()),
                ));
            }
            if let Some(d) = s
                .deps
                .iter()
                .find(|d| normalize(d).is_some_and(|d| d.starts_with(&p)))
            {
                return Err(fail(
                    &s.name,
                    format!("output `{text}` holds its own input {}", d.display()),
                ));
            }
            owner.entry(p).or_insert(&s.name);
        }
    }
    // An output inside another stage's output would be removed with it.
    for (p, stage) in &owner {
        for a in p.ancestors().skip(1) {
            if let Some(other) = owner.get(a).filter(|o| *o != stage) {
                return Err(fail(
                    other,
                    format!(
                        "output `{}` holds `{}`, an output of stage `{stage}`; removing one would delete the other",
                        a.display(),
                        p.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Links each stage to the producers of its deps and sorts them so every
/// stage follows its producers (ties by name). Two producers of one path
/// and cycles are errors.
fn order(mut stages: Vec<Stage>, text: &str, path: &Path) -> Result<Vec<Stage>> {
    let located = |stage: &str, what: String| {
        let base = stage.split('@').next().unwrap_or(stage);
        let (line, column) = locate(text, base);
        Error::Pipeline {
            path: path.to_path_buf(),
            line,
            column,
            what,
        }
    };
    let mut producer: BTreeMap<PathBuf, String> = BTreeMap::new();
    for s in &stages {
        for o in &s.outs {
            if let Some(other) = producer.insert(o.clone(), s.name.clone()) {
                return Err(located(
                    &s.name,
                    format!(
                        "stages `{other}` and `{}` both write {}",
                        s.name,
                        o.display()
                    ),
                ));
            }
        }
    }
    for s in stages.iter_mut() {
        let mut up = BTreeSet::new();
        for d in &s.deps {
            // A dep is produced by a stage that writes it, a folder holding
            // it, or (a folder dep) anything inside it.
            for (o, p) in &producer {
                if (d == o || d.starts_with(o) || o.starts_with(d)) && p != &s.name {
                    up.insert(p.clone());
                }
            }
            if producer.get(d).is_some_and(|p| p == &s.name) {
                return Err(located(
                    &s.name,
                    format!("stage `{}` reads its own output {}", s.name, d.display()),
                ));
            }
        }
        s.upstream = up.into_iter().collect();
    }
    // Kahn's algorithm, smallest name first among the ready ones.
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut sorted = Vec::new();
    let mut rest = stages;
    while !rest.is_empty() {
        let next = rest
            .iter()
            .enumerate()
            .filter(|(_, s)| s.upstream.iter().all(|u| done.contains(u)))
            .min_by(|a, b| a.1.name.cmp(&b.1.name))
            .map(|(i, _)| i);
        match next {
            Some(i) => {
                let s = rest.remove(i);
                done.insert(s.name.clone());
                sorted.push(s);
            }
            None => {
                let names: Vec<&str> = rest.iter().map(|s| s.name.as_str()).collect();
                return Err(located(
                    &rest[0].name,
                    format!(
                        "the stages {} depend on each other in a cycle",
                        names.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(sorted)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    pipelines: Vec<String>,
}

/// A suite file (`pipelines: [table2.yaml, ...]`, paths relative to the
/// suite) lists pipelines to run in turn; any other file is one pipeline.
/// Returns the pipelines `path` stands for.
pub fn pipelines_of(path: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(path).at(path)?;
    let value: Value = parse_yaml(path, &text)?;
    if value.get("pipelines").is_none() {
        return Ok(vec![path.to_path_buf()]);
    }
    let suite: RawSuite = parse_yaml(path, &text)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for p in suite.pipelines {
        let full = dir.join(&p);
        if !full.is_file() {
            let (line, column) = locate(&text, "pipelines");
            return Err(Error::Pipeline {
                path: path.to_path_buf(),
                line,
                column,
                what: format!("pipeline `{p}` is not a file ({})", full.display()),
            });
        }
        out.push(full);
    }
    Ok(out)
}
