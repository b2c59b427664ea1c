//! Pipelines of stage programs in the spirit of `dvc.yaml`: named stages
//! with a command, the files they read (`deps`), the values they read
//! (`params`) and the files they write (`outs`); `foreach`/`matrix`
//! expansion, `vars`, named profiles that override params. A stage runs
//! only when the hash of its expanded command, its params, its
//! dependencies' contents or its program changed, or an output is missing
//! or changed; the hashes live in a lock file beside the run's outputs, and
//! a content-addressed run cache lets any pipeline reuse a stage already run
//! with the same inputs.

pub mod cache;
pub mod error;
pub mod hash;
pub mod interrupt;
pub mod lock;
pub mod project;
pub mod run;
pub mod runlock;
pub mod slurm;
pub mod spec;
pub mod yaml_limits;

pub use error::{Error, Result};
pub use run::{repro, Executor, Options, Outcome, Reason};
pub use slurm::SlurmOptions;
pub use spec::{pipelines_of, Pipeline, Stage};
