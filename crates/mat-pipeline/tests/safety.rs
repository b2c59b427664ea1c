//! What a pipeline may not do, refused when it loads (before anything is
//! removed or run): outputs outside the run folder, outputs holding other
//! outputs, names that leave `runs/`, expansion bombs and deep nesting.

use std::path::Path;
use std::time::{Duration, Instant};

use mat_pipeline::Pipeline;

fn load(text: &str, profile: &str) -> mat_pipeline::Result<Pipeline> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, text).unwrap();
    Pipeline::load(&file, profile, Path::new("runs"))
}

fn refused(text: &str, want: &str) {
    let e = load(text, "default")
        .err()
        .unwrap_or_else(|| panic!("accepted:\n{text}"))
        .to_string();
    assert!(e.contains(want), "expected `{want}` in `{e}`");
    assert!(e.contains("p.yaml:"), "the file is not named: {e}");
}

/// Regression: `outs: [""]` removed the checkout, `../sibling` a folder
/// outside it, `runs` every run.
#[test]
fn outputs_outside_the_run_folder_are_refused_at_load() {
    for out in [
        "\"\"",
        ".",
        "./",
        "../sibling",
        "runs",
        "runs/p",
        ".git",
        "/tmp/x",
        "\"${out}\"",
        "\"${out}/\"",
        "\"${out}/..\"",
        "\"${out}/../../other/x\"",
        "src/main.rs",
    ] {
        let text = format!("stages:\n  a:\n    cmd: \"true\"\n    outs: [{out}]\n");
        refused(&text, "stage `a`: output");
    }
    // A var that expands to nothing is the same mistake.
    refused(
        "vars: {dir: \"\"}\nstages:\n  a:\n    cmd: \"true\"\n    outs: [\"${vars.dir}\"]\n",
        "is not inside the run folder",
    );
    // Inside the run folder is fine, however it is spelled.
    load(
        "stages:\n  a:\n    cmd: \"true\"\n    outs: [\"${out}/x\", \"${out}/./y/../z\"]\n",
        "default",
    )
    .unwrap();
}

#[test]
fn an_output_holding_another_stages_output_or_its_own_input_is_refused() {
    refused(
        "stages:\n  a:\n    cmd: \"true\"\n    outs: [\"${out}/mnist\"]\n  b:\n    cmd: \"true\"\n    outs: [\"${out}/mnist/train\"]\n",
        "removing one would delete the other",
    );
    refused(
        "stages:\n  a:\n    cmd: \"true\"\n    deps: [\"${out}/d/in.txt\"]\n    outs: [\"${out}/d\"]\n",
        "holds its own input",
    );
}

#[test]
fn declared_output_roots_are_checked_too() {
    let ok = load(
        "output_roots: [results]\nstages:\n  a:\n    cmd: \"true\"\n    outs: [results/a.txt]\n",
        "default",
    );
    assert!(ok.is_ok(), "{:?}", ok.err());
    for root in ["\"\"", ".", "..", "../x", ".git/objects", "/abs"] {
        let text = format!(
            "output_roots: [{root}]\nstages:\n  a:\n    cmd: \"true\"\n    outs: [\"${{out}}/a\"]\n"
        );
        refused(&text, "output_roots:");
    }
}

#[test]
fn a_profile_or_pipeline_name_that_is_not_a_plain_name_is_refused() {
    let e = load(
        "profiles:\n  \"../../x\": {params: {}}\nstages:\n  a:\n    cmd: \"true\"\n",
        "../../x",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("profile `../../x`: expected a plain name"),
        "{e}"
    );
}

/// Regression: vars that reference each other expanded a 33 KB file
/// towards 100 GB.
#[test]
fn vars_that_expand_without_bound_are_refused() {
    let mut text = String::from(
        "vars:\n  v0: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n",
    );
    for i in 1..4 {
        let refs = format!("${{vars.v{}}}", i - 1).repeat(400);
        text.push_str(&format!("  v{i}: \"{refs}\"\n"));
    }
    text.push_str("stages:\n  a:\n    cmd: echo ${vars.v3}\n");
    let start = Instant::now();
    let e = load(&text, "default").unwrap_err().to_string();
    assert!(e.contains("expands to more than"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(10));

    let text = "stages:\n  a:\n    matrix: {a: [1,2,3,4,5,6,7,8,9,10], b: [1,2,3,4,5,6,7,8,9,10], c: [1,2,3,4,5,6,7,8,9,10], d: [1,2,3,4,5,6,7,8,9,10], e: [1,2,3]}\n    cmd: \"true\"\n";
    let e = load(text, "default").unwrap_err().to_string();
    assert!(e.contains("more than 10000 combinations"), "{e}");
}

/// Regression: deeply nested YAML took quadratic time.
#[test]
fn deeply_nested_yaml_is_refused_at_once() {
    let depth = 20_000;
    let text = format!("vars:\n  x: {}{}\n", "[".repeat(depth), "]".repeat(depth));
    let start = Instant::now();
    let e = load(&text, "default").unwrap_err().to_string();
    assert!(e.contains("nested more than 64 deep"), "{e}");
    assert!(e.contains("p.yaml:2:"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(2));
    // Brackets inside quotes and commands do not count.
    load(
        "stages:\n  a:\n    cmd: \"echo '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[['\"\n",
        "default",
    )
    .unwrap();
}

/// A library caller may put runs under an absolute folder: outputs inside
/// it are accepted, absolute paths elsewhere are not.
#[test]
fn an_absolute_runs_root_accepts_only_its_own_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    let runs = dir.path().join("runs");
    std::fs::write(
        &file,
        "stages:\n  a:\n    cmd: \"true\"\n    outs: [\"${out}/x\"]\n",
    )
    .unwrap();
    let p = Pipeline::load(&file, "default", &runs).unwrap();
    assert_eq!(p.stages[0].outs, vec![runs.join("p/default/x")]);
    std::fs::write(
        &file,
        "stages:\n  a:\n    cmd: \"true\"\n    outs: [\"${out}/../../../x\"]\n",
    )
    .unwrap();
    let e = Pipeline::load(&file, "default", &runs)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not inside the run folder"), "{e}");
}
