//! `mat audit MODEL --data NAME --eps E --out DIR`: the gradient-masking
//! checks of `mat_core::audit` on a seeded sample of the test split.

use std::path::PathBuf;

use mat_core::artifact::{hash_file, Metadata, TensorFile};
use mat_core::attacks::AdaptiveObjective;
use mat_core::audit::{self, AuditSpec, Models};
use mat_core::data::{self, DataDir};
use mat_core::models::Classifier;
use mat_core::DeviceSpec;

#[derive(clap::Args)]
pub struct AuditArgs {
    /// A model file written by mat-train.
    model: PathBuf,
    /// A dataset of data/datasets.yaml (its test split).
    #[arg(long)]
    data: String,
    /// The L∞ budget of the attacks.
    #[arg(long)]
    eps: f64,
    /// Audit a seeded sample of this many test points.
    #[arg(long, default_value_t = 500)]
    limit: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A natural model to transfer PGD examples from (the transfer check).
    #[arg(long, value_name = "FILE")]
    surrogate: Option<PathBuf>,
    /// Output folder: audit.parquet.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Override a setting, e.g. `--set square_queries=1000` or
    /// `--set thresholds.zero_gradient=0.1` (see README).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// auto | cpu | cuda | cuda:N
    #[arg(long, default_value = "auto")]
    device: DeviceSpec,
}

fn spec(a: &AuditArgs) -> anyhow::Result<AuditSpec> {
    let mut v = serde_yaml::to_value(AuditSpec {
        eps: a.eps,
        seed: a.seed,
        ..AuditSpec::default()
    })?;
    for s in &a.sets {
        mat_core::config::apply_set(&mut v, s).map_err(|e| anyhow::anyhow!("--set {s}: {e}"))?;
    }
    let spec: AuditSpec =
        serde_yaml::from_value(v).map_err(|e| anyhow::anyhow!("the audit's settings: {e}"))?;
    spec.validate()?;
    anyhow::ensure!(a.limit > 0, "--limit: expected at least 1, found 0");
    Ok(spec)
}

pub fn run(a: AuditArgs) -> anyhow::Result<()> {
    let spec = spec(&a)?;
    let device = a.device.open()?;
    let file = TensorFile::read(&a.model, &device)?;
    let model = Classifier::from_file(&file)?;
    // MAT and TRADES models carry their objective: the adaptive check.
    let objective = AdaptiveObjective::from_model_file(&file).ok();
    let surrogate = match &a.surrogate {
        Some(p) => Some(Classifier::load(p, &device)?),
        None => None,
    };
    let ds = data::load(&DataDir::locate(), &a.data)?;
    model
        .check_input(ds.test.images.dims())
        .map_err(|e| anyhow::anyhow!("{}: {e} (dataset `{}`)", a.model.display(), a.data))?;
    let split = ds
        .test
        .subset(Some(a.limit), Some(a.seed))?
        .to_device(&device)?;
    eprintln!(
        "mat audit: {} on {} test points of {}, eps {}",
        a.model.display(),
        split.len(),
        a.data,
        spec.eps
    );
    let models = Models {
        model: &model,
        objective: objective.as_ref(),
        surrogate: surrogate
            .as_ref()
            .map(|s| s as &dyn mat_core::attacks::Logits),
    };
    // Each check as it is made, with the time since the start: an audit
    // takes minutes per check on a CPU.
    let started = std::time::Instant::now();
    let checks = audit::run_with_progress(&models, &split, &spec, &mut |c| {
        eprintln!(
            "  {:<22} {} value {:.4} (reference {:.4}, threshold {}): {} [{:.0} s]",
            c.name,
            if c.pass { "pass" } else { "FAIL" },
            c.value,
            c.reference,
            c.threshold,
            c.detail,
            started.elapsed().as_secs_f64()
        );
    })?;
    let mut meta = Metadata::new();
    meta.insert("model_hash".into(), hash_file(&a.model)?);
    meta.insert("data".into(), a.data.clone());
    meta.insert("samples".into(), split.len().to_string());
    meta.insert("config".into(), serde_yaml::to_string(&spec)?);
    audit::write(&a.out, &checks, meta)?;
    println!("{}", audit::verdict(&checks));
    Ok(())
}
