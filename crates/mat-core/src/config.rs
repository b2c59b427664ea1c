//! Stage configs: YAML files read into typed structs that refuse unknown
//! keys, with `--set key.path=value` overrides from the command line.
//!
//! Errors name the file, the line and column (for the file itself) or the
//! `--set` that caused them, and what was expected.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use crate::error::IoContext;
use crate::{Error, Result};

// The same limits as pipeline files (one source file, compiled into both).
#[path = "../../mat-pipeline/src/yaml_limits.rs"]
mod yaml_limits;

/// [`load`], then `check`s the value; a problem it finds names the file.
pub fn load_checked<T: DeserializeOwned, R>(
    path: &Path,
    sets: &[String],
    check: impl FnOnce(&T) -> Result<R>,
) -> Result<T> {
    let value: T = load(path, sets)?;
    check(&value).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        what: e.to_string(),
    })?;
    Ok(value)
}

/// Reads `path` into `T`, then applies each `key.path=value` of `sets`
/// (the value is YAML: `0.5`, `true`, `[10, 20]`, `null`, `text`).
pub fn load<T: DeserializeOwned>(path: &Path, sets: &[String]) -> Result<T> {
    let text = std::fs::read_to_string(path).at(path)?;
    if let Some((line, column, what)) = yaml_limits::yaml_too_large(&text) {
        return Err(Error::Yaml {
            path: path.to_path_buf(),
            line,
            column,
            what,
        });
    }
    let located = |e: serde_yaml::Error| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        Error::Yaml {
            path: path.to_path_buf(),
            line,
            column,
            what: e.to_string(),
        }
    };
    // The file alone first, so its own mistakes come with a line and column.
    let alone: std::result::Result<T, _> = serde_yaml::from_str(&text);
    if sets.is_empty() {
        return alone.map_err(located);
    }
    let mut value: Value = serde_yaml::from_str(&text).map_err(located)?;
    for set in sets {
        apply_set(&mut value, set)
            .map_err(|what| Error::Invalid(format!("--set {set}: {what}")))?;
    }
    serde_yaml::from_value(value).map_err(|e| match alone {
        // A key the file lacks may come from --set (a config without the
        // model, given on the command line); any other mistake of the
        // file is reported where it is.
        Err(file_error) if !file_error.to_string().starts_with("missing field") => {
            located(file_error)
        }
        _ => Error::Invalid(format!(
            "{} with --set {}: {e}",
            path.display(),
            sets.join(" --set ")
        )),
    })
}

/// Sets `key.path` in a YAML mapping to the YAML value after `=`,
/// creating intermediate mappings.
pub fn apply_set(root: &mut Value, set: &str) -> std::result::Result<(), String> {
    let (key, raw) = set
        .split_once('=')
        .ok_or_else(|| "expected key=value (e.g. mat.beta=2.0)".to_string())?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(format!("`{key}` is not a key path (e.g. optim.lr)"));
    }
    let value: Value =
        serde_yaml::from_str(raw).map_err(|e| format!("`{raw}` is not a YAML value: {e}"))?;
    let mut node = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if node.is_null() {
            *node = Value::Mapping(Mapping::new());
        }
        let map = node.as_mapping_mut().ok_or_else(|| {
            format!(
                "`{}` is not a mapping, so it has no key `{part}`",
                parts[..i].join(".")
            )
        })?;
        let k = Value::String(part.to_string());
        if i + 1 == parts.len() {
            map.insert(k, value);
            return Ok(());
        }
        node = map.entry(k).or_insert(Value::Null);
    }
    unreachable!("a key path has at least one part")
}

/// The stable hash of a config: blake3 of its YAML serialisation.
pub fn hash<T: serde::Serialize>(config: &T) -> Result<String> {
    let text = serde_yaml::to_string(config)
        .map_err(|e| Error::Invalid(format!("cannot serialise the config: {e}")))?;
    Ok(blake3::hash(text.as_bytes()).to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        lr: f64,
        #[serde(default)]
        milestones: Vec<usize>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        optim: Inner,
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn sets_override_nested_keys() {
        let f = write("name: a\noptim:\n  lr: 0.1\n");
        let sets = ["optim.lr=0.5".to_string(), "optim.milestones=[3, 4]".into()];
        let o: Outer = load(f.path(), &sets).unwrap();
        assert_eq!(o.optim.lr, 0.5);
        assert_eq!(o.optim.milestones, vec![3, 4]);
        assert_eq!(o.name, "a");
    }

    #[test]
    fn unknown_keys_are_located() {
        let f = write("name: a\noptim:\n  lr: 0.1\n  lrr: 3\n");
        let e = load::<Outer>(f.path(), &[]).unwrap_err().to_string();
        let file = f.path().display().to_string();
        assert!(e.starts_with(&format!("{file}:4:")), "{e}");
        assert!(e.contains("unknown field `lrr`"), "{e}");
        let f = write("name: a\noptim:\n  lr: 0.1\n");
        let e = load::<Outer>(f.path(), &["optim.momentum=0.9".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--set optim.momentum=0.9"), "{e}");
        assert!(e.contains("unknown field `momentum`"), "{e}");
        let e = load::<Outer>(f.path(), &["name.x=1".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`name` is not a mapping"), "{e}");
        let e = load::<Outer>(f.path(), &["novalue".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected key=value"), "{e}");
    }

    /// A file may leave a required key to the command line (an attack
    /// config without its model); its own mistakes stay located.
    #[test]
    fn a_set_can_supply_a_key_the_file_lacks() {
        let f = write("optim:\n  lr: 0.1\n");
        let o: Outer = load(f.path(), &["name=b".to_string()]).unwrap();
        assert_eq!(o.name, "b");
        let f = write("optim:\n  lr: 0.1\n  lrr: 3\n");
        let e = load::<Outer>(f.path(), &["name=b".to_string()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":3:") && e.contains("unknown field `lrr`"),
            "{e}"
        );
    }
}
