//! The artifact contract between stages (DESIGN.md, "Artifacts"):
//! safetensors for tensors, Parquet for per-sample tables, both with
//! key-value provenance metadata, every write atomic.

pub mod atomic;
pub mod inspect;
pub mod table;
pub mod tensors;

use std::collections::BTreeMap;

pub use atomic::{write_atomic, AtomicFile};
pub use inspect::inspect;
pub use table::{write_table, Columns, Table, TableWriter};
pub use tensors::{write_tensors, TensorFile};

/// Key-value provenance metadata (sorted, so files are byte-reproducible).
pub type Metadata = BTreeMap<String, String>;

/// The blake3 hash of a file's contents, hex-encoded: how artifacts name the
/// model and data they were made from.
pub fn hash_file(path: &std::path::Path) -> crate::error::Result<String> {
    use crate::error::IoContext;
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(std::fs::File::open(path).at(path)?)
        .at(path)?;
    Ok(hasher.finalize().to_hex().to_string())
}
