//! The runner on toy pipelines of shell commands.

use std::collections::BTreeSet;
use std::path::Path;

use mat_pipeline::{repro, Options, Outcome, Pipeline, Reason};

struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path().join(name), text).unwrap();
    }
    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).unwrap()
    }
    fn load(&self, file: &str, profile: &str) -> mat_pipeline::Result<Pipeline> {
        Pipeline::load(&self.path().join(file), profile, Path::new("runs"))
    }
    fn opts(&self) -> Options {
        Options {
            workdir: self.path().to_path_buf(),
            cache: Some(self.path().join("runs/.cache")),
            ..Options::default()
        }
    }
    fn repro(&self, file: &str, profile: &str, opts: &Options) -> Vec<(String, Outcome)> {
        repro(&self.load(file, profile).unwrap(), opts, &mut |_, _, _| {}).unwrap()
    }
}

const TWO_STAGES: &str = r#"
params:
  scale: 2
profiles:
  quick: {params: {scale: 3}}
  big: {params: {scale: 10}}
stages:
  double:
    cmd: echo $(( $(cat input.txt) * ${params.scale} )) > ${out}/doubled.txt
    deps: [input.txt]
    params: [scale]
    outs: ["${out}/doubled.txt"]
  report:
    cmd: echo "result $(cat ${out}/doubled.txt)" > ${out}/report.txt
    deps: ["${out}/doubled.txt"]
    outs: ["${out}/report.txt"]
"#;

fn ran(o: &Outcome) -> bool {
    matches!(o, Outcome::Ran(_))
}

#[test]
fn skips_when_up_to_date_and_reruns_on_a_changed_dep_param_or_command() {
    let w = Work::new();
    w.write("input.txt", "7");
    w.write("p.yaml", TWO_STAGES);
    let opts = w.opts();
    let first = w.repro("p.yaml", "quick", &opts);
    assert!(first.iter().all(|(_, o)| ran(o)), "{first:?}");
    assert_eq!(w.read("runs/p/quick/report.txt").trim(), "result 21");

    let again = w.repro("p.yaml", "quick", &opts);
    assert!(
        again.iter().all(|(_, o)| *o == Outcome::UpToDate),
        "{again:?}"
    );

    // A changed dependency reruns the stage that reads it; the report reruns
    // because its input changed.
    w.write("input.txt", "8");
    let r = w.repro("p.yaml", "quick", &opts);
    assert_eq!(r[0].1, Outcome::Ran(Reason::DepChanged("input.txt".into())));
    assert!(ran(&r[1].1));
    assert_eq!(w.read("runs/p/quick/report.txt").trim(), "result 24");

    // A changed param (another profile's value, in its own run folder).
    let r = w.repro("p.yaml", "big", &opts);
    assert!(r.iter().all(|(_, o)| ran(o)));
    let mut text = TWO_STAGES.replace("quick: {params: {scale: 3}}", "quick: {params: {scale: 4}}");
    w.write("p.yaml", &text);
    let r = w.repro("p.yaml", "quick", &opts);
    assert_eq!(
        r[0].1,
        Outcome::Ran(Reason::ParamsChanged(vec!["scale".into()]))
    );
    assert_eq!(w.read("runs/p/quick/report.txt").trim(), "result 32");

    // A changed command reruns only its stage when its output is the same.
    text = text.replace("echo \"result", "echo \"total");
    w.write("p.yaml", &text);
    let r = w.repro("p.yaml", "quick", &opts);
    assert_eq!(r[0].1, Outcome::UpToDate);
    assert_eq!(r[1].1, Outcome::Ran(Reason::CommandChanged));

    // A deleted or edited output reruns its stage.
    std::fs::remove_file(w.path().join("runs/p/quick/report.txt")).unwrap();
    let r = w.repro("p.yaml", "quick", &opts);
    assert!(matches!(
        &r[1].1,
        Outcome::Ran(Reason::OutMissing(_)) | Outcome::Restored(Reason::OutMissing(_))
    ));

    // --dry-run says why and touches nothing.
    w.write("input.txt", "9");
    let dry = Options {
        dry_run: true,
        ..w.opts()
    };
    let r = w.repro("p.yaml", "quick", &dry);
    assert_eq!(
        r[0].1,
        Outcome::WouldRun(Reason::DepChanged("input.txt".into()))
    );
    assert_eq!(r[1].1, Outcome::WouldRun(Reason::Upstream("double".into())));
    assert_eq!(w.read("runs/p/quick/doubled.txt").trim(), "32");

    // --force runs a stage that is up to date.
    w.write("input.txt", "8");
    let forced = Options {
        force: BTreeSet::from(["report".to_string()]),
        ..w.opts()
    };
    let r = w.repro("p.yaml", "quick", &forced);
    assert_eq!(r[0].1, Outcome::UpToDate);
    assert_eq!(r[1].1, Outcome::Ran(Reason::Forced));
}

#[test]
fn a_failing_stage_records_nothing_and_leaves_no_output() {
    let w = Work::new();
    w.write(
        "f.yaml",
        r#"
stages:
  good:
    cmd: echo ok > ${out}/good.txt
    outs: ["${out}/good.txt"]
  bad:
    cmd: echo half > ${out}/bad.txt && exit 3
    deps: ["${out}/good.txt"]
    outs: ["${out}/bad.txt"]
  after:
    cmd: cp ${out}/bad.txt ${out}/after.txt
    deps: ["${out}/bad.txt"]
    outs: ["${out}/after.txt"]
"#,
    );
    let p = w.load("f.yaml", "default").unwrap();
    let mut seen = Vec::new();
    let mut timed = Vec::new();
    let e = repro(&p, &w.opts(), &mut |n, o, took| {
        seen.push((n.to_string(), o.clone()));
        timed.push((n.to_string(), took.is_some()));
    })
    .unwrap_err();
    assert!(e.to_string().contains("stage `bad` failed"), "{e}");
    assert!(
        !w.path().join("runs/f/default/bad.txt").exists(),
        "half-written output left"
    );
    assert!(seen.contains(&("after".to_string(), Outcome::NotRun)));
    // The report carries a wall time for every stage whose command ran,
    // failed ones included, and none for a stage that never started.
    for (stage, has_time) in [("good", true), ("bad", true), ("after", false)] {
        assert!(
            timed.contains(&(stage.to_string(), has_time)),
            "{stage}: {timed:?}"
        );
    }
    let lock = w.read("runs/f/default/mat.lock");
    assert!(lock.contains("\"good\""));
    assert!(!lock.contains("\"bad\""), "{lock}");
    // A stage that exits 0 without writing its output fails too.
    w.write(
        "g.yaml",
        "stages:\n  lazy:\n    cmd: \"true\"\n    outs: [\"${out}/x.txt\"]\n",
    );
    let p = w.load("g.yaml", "default").unwrap();
    let e = repro(&p, &w.opts(), &mut |_, _, _| {}).unwrap_err();
    assert!(e.to_string().contains("did not write"), "{e}");
}

#[test]
fn parallel_stages_respect_resources() {
    let w = Work::new();
    // Each GPU stage fails if another holds the marker while it runs.
    let gpu = |n: &str| {
        format!(
            "  {n}:\n    cmd: \"if [ -e gpu.busy ]; then echo overlap > overlap.txt; fi; touch gpu.busy; sleep 0.3; rm gpu.busy; echo {n} > ${{out}}/{n}.txt\"\n    outs: [\"${{out}}/{n}.txt\"]\n    resources: {{gpu: 1}}\n"
        )
    };
    let cpu = |n: &str, other: &str| {
        format!(
            "  {n}:\n    cmd: \"touch {n}.started; sleep 0.5; if [ -e {other}.started ]; then echo together > {n}.saw; fi; echo {n} > ${{out}}/{n}.txt\"\n    outs: [\"${{out}}/{n}.txt\"]\n"
        )
    };
    w.write(
        "r.yaml",
        &format!(
            "stages:\n{}{}{}{}",
            gpu("g1"),
            gpu("g2"),
            cpu("c1", "c2"),
            cpu("c2", "c1")
        ),
    );
    let opts = Options {
        jobs: 4,
        ..w.opts()
    };
    let r = w.repro("r.yaml", "default", &opts);
    assert!(r.iter().all(|(_, o)| ran(o)), "{r:?}");
    assert!(
        !w.path().join("overlap.txt").exists(),
        "two gpu stages overlapped"
    );
    assert!(
        w.path().join("c1.saw").exists() || w.path().join("c2.saw").exists(),
        "independent stages did not run in parallel"
    );
}

#[test]
fn the_run_cache_reuses_a_stage_run_by_another_pipeline() {
    let w = Work::new();
    w.write("input.txt", "5");
    // Each pipeline writes into its own run folder: the cache key reads
    // that folder as ${out}, so the second pipeline finds the first's run.
    let stage = "stages:\n  train:\n    cmd: \"echo run >> runs.log; cp input.txt ${out}/model.txt\"\n    deps: [input.txt]\n    outs: [\"${out}/model.txt\"]\n";
    w.write("a.yaml", stage);
    w.write("b.yaml", stage);
    let r = w.repro("a.yaml", "default", &w.opts());
    assert!(ran(&r[0].1));
    let r = w.repro("b.yaml", "default", &w.opts());
    assert!(
        matches!(r[0].1, Outcome::Restored(Reason::NeverRun)),
        "{r:?}"
    );
    assert_eq!(w.read("runs/b/default/model.txt"), "5");

    // A stage without outputs runs every time it is stale, never restored.
    w.write(
        "c.yaml",
        "stages:\n  note:\n    cmd: \"echo note >> notes.log\"\n    deps: [input.txt]\n",
    );
    w.write(
        "d.yaml",
        "stages:\n  note:\n    cmd: \"echo note >> notes.log\"\n    deps: [input.txt]\n",
    );
    w.repro("c.yaml", "default", &w.opts());
    let r = w.repro("d.yaml", "default", &w.opts());
    assert!(ran(&r[0].1), "{r:?}");
    assert_eq!(w.read("notes.log").lines().count(), 2);
    assert_eq!(
        w.read("runs.log").lines().count(),
        1,
        "the command ran twice"
    );
}

#[test]
fn foreach_and_matrix_expand_with_generated_names() {
    let w = Work::new();
    w.write(
        "m.yaml",
        r#"
vars: {dataset: mnist}
stages:
  train:
    matrix: {method: [at, mat], seed: [0, 1]}
    cmd: echo ${item.method} ${item.seed} ${vars.dataset} > ${out}/${item.method}-${item.seed}.txt
    outs: ["${out}/${item.method}-${item.seed}.txt"]
  attack:
    foreach: [at, mat]
    cmd: cat ${out}/${item}-0.txt > ${out}/${item}.adv
    deps: ["${out}/${item}-0.txt"]
    outs: ["${out}/${item}.adv"]
  label:
    foreach:
      - {name: first, text: one}
      - {name: second, text: two}
    cmd: echo ${item.text} > ${out}/${item.name}.txt
    outs: ["${out}/${item.name}.txt"]
"#,
    );
    let p = w.load("m.yaml", "default").unwrap();
    let names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        // Dependency order, ties by name.
        [
            "label@first",
            "label@second",
            "train@at-0",
            "attack@at",
            "train@at-1",
            "train@mat-0",
            "attack@mat",
            "train@mat-1"
        ]
    );
    assert_eq!(
        p.stage("attack@mat").unwrap().upstream,
        vec!["train@mat-0".to_string()]
    );
    w.repro("m.yaml", "default", &w.opts());
    assert_eq!(w.read("runs/m/default/mat.adv").trim(), "mat 0 mnist");
    assert_eq!(w.read("runs/m/default/second.txt").trim(), "two");
}

/// A profile adds stages through a list param: `foreach: ${params.extra}`,
/// a list entry naming a list, a matrix axis from params, and a `deps` entry
/// naming a list of paths.
#[test]
fn lists_from_params_let_a_profile_add_stages() {
    let w = Work::new();
    w.write(
        "l.yaml",
        r#"
vars:
  base: [a]
  more: [b, c]
params:
  extra: []
  seeds: [0]
  report_deps: ["${out}/a.txt"]
profiles:
  small: {params: {}}
  big:
    params:
      extra: ${vars.more}
      seeds: [0, 1]
      report_deps: ["${out}/a.txt", "${out}/b.txt", "${out}/c.txt"]
stages:
  make:
    foreach: ["${vars.base}", "${params.extra}"]
    cmd: echo ${item} > ${out}/${item}.txt
    outs: ["${out}/${item}.txt"]
  more:
    foreach: ${params.extra}
    cmd: cat ${out}/${item}.txt > ${out}/${item}.more
    deps: ["${out}/${item}.txt"]
    outs: ["${out}/${item}.more"]
  seeded:
    matrix: {seed: "${params.seeds}"}
    cmd: echo ${item.seed} > ${out}/seed-${item.seed}.txt
    outs: ["${out}/seed-${item.seed}.txt"]
  report:
    cmd: cat ${params.report_deps} > ${out}/report.txt
    deps: ["${params.report_deps}"]
    outs: ["${out}/report.txt"]
"#,
    );
    let small = w.load("l.yaml", "small").unwrap();
    let names: Vec<&str> = small.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["make@a", "report", "seeded@0"]);
    let big = w.load("l.yaml", "big").unwrap();
    let names: Vec<&str> = big.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["make@a", "make@b", "make@c", "more@b", "more@c", "report", "seeded@0", "seeded@1"]
    );
    let report = big.stage("report").unwrap();
    assert_eq!(report.deps.len(), 3);
    assert_eq!(report.upstream, ["make@a", "make@b", "make@c"]);
    w.repro("l.yaml", "big", &w.opts());
    assert_eq!(w.read("runs/l/big/report.txt"), "a\nb\nc\n");
    // Not a list: a located error.
    w.write(
        "bad.yaml",
        "params: {one: 1}\nstages:\n  s:\n    foreach: ${params.one}\n    cmd: 'true'\n",
    );
    let e = w.load("bad.yaml", "default").unwrap_err().to_string();
    assert!(
        e.contains("bad.yaml:3:3") && e.contains("expected a list"),
        "{e}"
    );
}

/// `include:` folds in another file's vars, params, profiles and stages
/// (the including file's own values win); references nest and reach into
/// mappings; a stage defined in both files is a located error.
#[test]
fn includes_share_stages_and_nested_references_pick_items() {
    let w = Work::new();
    std::fs::create_dir_all(w.path().join("common")).unwrap();
    w.write(
        "common/base.yaml",
        r#"
vars:
  model:
    small: {size: 1}
    big: {size: 9}
params:
  models: []
  factor: 2
profiles:
  quick: {params: {factor: 3}}
stages:
  make:
    foreach: ${params.models}
    cmd: echo $(( ${vars.model.${item}.size} * ${params.factor} )) > ${out}/${item}.txt
    params: [factor]
    outs: ["${out}/${item}.txt"]
"#,
    );
    w.write(
        "top.yaml",
        r#"
include: [common/base.yaml]
params:
  models: [small, big]
stages:
  sum:
    cmd: cat ${out}/small.txt ${out}/big.txt > ${out}/sum.txt
    deps: ["${out}/small.txt", "${out}/big.txt"]
    outs: ["${out}/sum.txt"]
"#,
    );
    let p = w.load("top.yaml", "quick").unwrap();
    let names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["make@big", "make@small", "sum"]);
    w.repro("top.yaml", "quick", &w.opts());
    assert_eq!(w.read("runs/top/quick/sum.txt"), "3\n27\n");

    w.write(
        "twice.yaml",
        "include: [common/base.yaml]\nstages:\n  make:\n    cmd: 'true'\n",
    );
    let e = w.load("twice.yaml", "quick").unwrap_err().to_string();
    assert!(
        e.contains("twice.yaml:3:3") && e.contains("also defined in"),
        "{e}"
    );
    w.write("missing.yaml", "include: [nowhere.yaml]\n");
    let e = w.load("missing.yaml", "quick").unwrap_err().to_string();
    assert!(
        e.contains("missing.yaml:1:1") && e.contains("no such file"),
        "{e}"
    );
    // A mistake inside the included file is located there.
    w.write(
        "common/bad.yaml",
        "stages:\n  oops:\n    cmd: echo ${vars.nothing}\n",
    );
    w.write("usesbad.yaml", "include: [common/bad.yaml]\n");
    let e = w.load("usesbad.yaml", "default").unwrap_err().to_string();
    assert!(
        e.contains("bad.yaml:2:3") && e.contains("refers to nothing"),
        "{e}"
    );
}

#[test]
fn mistakes_are_located() {
    let w = Work::new();
    let cases = [
        (
            "stages:\n  a:\n    cmd: x\n    outz: [y]\n",
            "default",
            ":4:5: stages.a: unknown field `outz`",
        ),
        (
            "stages:\n  a:\n    cmd: echo ${vars.nope}\n",
            "default",
            ":2:3: stage `a`: `${vars.nope}` refers to nothing",
        ),
        (
            "stages:\n  a:\n    cmd: x\n    deps: [\"${out}/b.txt\"]\n    outs: [\"${out}/a.txt\"]\n  b:\n    cmd: y\n    deps: [\"${out}/a.txt\"]\n    outs: [\"${out}/b.txt\"]\n",
            "default",
            "depend on each other in a cycle",
        ),
        (
            "profiles:\n  quick: {params: {}}\nstages:\n  a:\n    cmd: x\n",
            "paper",
            ":1:1: profile `paper` is not defined (profiles: quick)",
        ),
        (
            "stages:\n  a:\n    cmd: x\n    params: [lr]\n",
            "default",
            "param `lr` is not defined",
        ),
    ];
    for (i, (text, profile, want)) in cases.iter().enumerate() {
        let name = format!("e{i}.yaml");
        w.write(&name, text);
        let e = w.load(&name, profile).unwrap_err().to_string();
        assert!(e.contains(want), "case {i}: expected `{want}` in `{e}`");
        assert!(e.contains(&name), "case {i}: the file is not named: {e}");
    }
}
