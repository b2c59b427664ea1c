//! `mat audit`: the gradient-masking checks flag a deliberately masked
//! model (a natural SmallCNN whose logits are multiplied by 1e4, so the
//! softmax saturates and the cross-entropy gradient vanishes) and pass the
//! natural model itself.

mod common;

use candle_core::Tensor;
use mat_core::artifact::Table;
use mat_core::attacks::Logits;
use mat_core::audit::{self, AuditSpec, Models};

/// Small budgets: the checks, not their strength, are under test.
fn small() -> AuditSpec {
    AuditSpec {
        eps: 0.3,
        steps: 10,
        long_steps: 20,
        long_restarts: 2,
        apgd_steps: 20,
        square_queries: 300,
        ..AuditSpec::default()
    }
}

#[test]
fn the_audit_flags_a_masked_model_and_passes_a_natural_one() {
    let (ds, _cache) = common::mnist_10k();
    let (p, _, dir) = common::train(
        "method: natural\narch: small-cnn\ndataset: mnist-10k\n\
         optim: {epochs: 2, batch_size: 128, lr: 0.05, momentum: 0.9}\n",
        |_| {},
    );
    let natural = &p.model;
    let split = ds.test.subset(Some(100), Some(0)).unwrap();

    let show = |name: &str, checks: &[audit::Check]| {
        for c in checks {
            eprintln!(
                "{name}: {:<22} {} {:.4} vs {:.4} ({})",
                c.name, c.pass, c.value, c.reference, c.detail
            );
        }
        audit::verdict(checks)
    };
    let ok = audit::run(
        &Models {
            model: natural,
            objective: None,
            surrogate: Some(natural),
        },
        &split,
        &small(),
    )
    .unwrap();
    assert_eq!(show("natural", &ok), "ok");

    // Same predictions, logits x 1e4: the softmax saturates in f32.
    let masked = |x: &Tensor| natural.logits(x)? * 1e4;
    let bad = audit::run(
        &Models {
            model: &masked,
            objective: None,
            surrogate: Some(natural),
        },
        &split,
        &small(),
    )
    .unwrap();
    let verdict = show("masked", &bad);
    for check in [
        "zero_gradient_ce",
        "logit_margin",
        "large_eps",
        "dlr_vs_ce",
        "black_box",
        "transfer",
    ] {
        assert!(verdict.contains(check), "{check} not in `{verdict}`");
    }
    let failed = |n: &str| !bad.iter().find(|c| c.name == n).unwrap().pass;
    // The margin loss is linear in the logits: its gradient survives.
    assert!(!failed("zero_gradient_margin"), "{verdict}");

    // The command: a model file in, audit.parquet and the verdict out.
    let out = dir.path().join("audit");
    let o = common::mat(
        dir.path(),
        &[
            "audit",
            dir.path().join("out/model.safetensors").to_str().unwrap(),
            "--data",
            "mnist-10k",
            "--eps",
            "0.3",
            "--limit",
            "50",
            "--set",
            "steps=5",
            "--set",
            "long_steps=10",
            "--set",
            "long_restarts=1",
            "--set",
            "apgd_steps=10",
            "--set",
            "square_queries=100",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let t = Table::read(&out.join("audit.parquet")).unwrap();
    assert_eq!(t.num_rows(), 9);
    assert_eq!(common::stdout(&o).trim(), t.meta("verdict").unwrap());
    assert!(t
        .strings("check")
        .unwrap()
        .contains(&"transfer".to_string()));

    let bad_set = common::mat(
        dir.path(),
        &[
            "audit",
            "m.safetensors",
            "--data",
            "mnist-10k",
            "--eps",
            "0.3",
            "--set",
            "thresholds.zero_gradiant=0.1",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let err = common::assert_clean_failure(&bad_set);
    assert!(err.contains("zero_gradiant"), "{err}");
}
