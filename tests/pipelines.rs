//! The shipped pipelines: each loads in each profile, and a stage that two
//! pipelines share has the same command, deps and params in both (what lets
//! the run cache hand one pipeline's results to the other).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mat_pipeline::{pipelines_of, Pipeline};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn load_all(profile: &str) -> Vec<Pipeline> {
    let suite = root().join("pipelines/all.yaml");
    let files = pipelines_of(&suite).unwrap();
    assert_eq!(files.len(), 8, "{files:?}");
    files
        .iter()
        .map(|f| {
            Pipeline::load(f, profile, Path::new("runs"))
                .unwrap_or_else(|e| panic!("{} ({profile}): {e}", f.display()))
        })
        .collect()
}

#[test]
fn every_pipeline_loads_in_every_profile_and_shared_stages_agree() {
    for profile in ["quick", "smoke", "paper"] {
        let pipelines = load_all(profile);
        // Stage name -> (pipeline, command with the run folder as ${out}).
        let mut seen: BTreeMap<String, (String, String, String)> = BTreeMap::new();
        for p in &pipelines {
            let out = p.out_dir.to_string_lossy().into_owned();
            for s in &p.stages {
                if s.name == "report" || s.name == "figure" {
                    continue;
                }
                let cmd = s.cmd.replace(&out, "${out}");
                let deps: Vec<String> = s
                    .deps
                    .iter()
                    .map(|d| d.to_string_lossy().replace(&out, "${out}"))
                    .collect();
                let key = format!("{deps:?} {:?}", s.params);
                if let Some((other, c, k)) = seen.get(&s.name) {
                    assert_eq!(
                        (c, k),
                        (&cmd, &key),
                        "{profile}: stage `{}` differs between {other} and {}",
                        s.name,
                        p.name
                    );
                } else {
                    seen.insert(s.name.clone(), (p.name.clone(), cmd, key));
                }
            }
        }
        // The paper profile adds CIFAR-10 stages; the others have none.
        let cifar = seen.keys().filter(|n| n.starts_with("cifar10-")).count();
        if profile == "paper" {
            assert!(cifar > 20, "{profile}: {cifar} CIFAR-10 stages");
        } else {
            assert_eq!(cifar, 0, "{profile}");
        }
    }
}

/// The quick profile's Table 2 commands, as the README documents them.
#[test]
fn table2_quick_commands_are_the_documented_ones() {
    let p = Pipeline::load(
        &root().join("pipelines/table2.yaml"),
        "quick",
        Path::new("runs"),
    )
    .unwrap();
    assert_eq!(p.stages.len(), 44);
    let train = p.stage("train@mat-ftc").unwrap();
    assert_eq!(
        train.cmd,
        "mat-train --quiet --resume --config pipelines/train/mnist/mat.yaml \
         --set centers=runs/table2/quick/centers.safetensors --set mat.alpha=0 --set mat.beta=0 \
         --set optim.epochs=14 --set \"optim.lr_milestones=[10]\" --set eval.pgd=null  --out runs/table2/quick/mnist/train/mat-ftc"
    );
    let cw = p.stage("cw@at").unwrap();
    assert!(
        cw.cmd
            .contains("--config pipelines/attack/mnist/cw-quick.yaml"),
        "{}",
        cw.cmd
    );
}
