//! CIFAR-10 binary version: size checks with precise messages, then loading
//! through `candle_datasets::vision::cifar::load_dir`.

use std::path::Path;

use candle_core::DType;

use super::manifest::CIFAR_FILES;
use super::{Dataset, Split};
use crate::error::{Error, IoContext, Result};

/// One record: a label byte and 3 x 32 x 32 channel-major pixel bytes.
pub const RECORD_BYTES: u64 = 1 + 3 * 32 * 32;
/// candle-datasets reads batch files of exactly this many records.
pub const RECORDS_PER_FILE: u64 = 10_000;

/// Checks that a batch file holds whole records, and exactly as many as the
/// official batch files (which is what the loader reads).
pub fn check_cifar_file(path: &Path) -> Result<()> {
    let len = std::fs::metadata(path).at(path)?.len();
    if len % RECORD_BYTES != 0 {
        return Err(Error::format(
            path,
            format!(
                "size {len} bytes is not a multiple of {RECORD_BYTES} (1 label byte + 3072 pixel bytes per record): not a CIFAR-10 binary batch, or truncated"
            ),
        ));
    }
    if len / RECORD_BYTES != RECORDS_PER_FILE {
        return Err(Error::format(
            path,
            format!(
                "{} records; a CIFAR-10 batch file has {RECORDS_PER_FILE} ({} bytes)",
                len / RECORD_BYTES,
                RECORDS_PER_FILE * RECORD_BYTES
            ),
        ));
    }
    Ok(())
}

/// Loads the six batch files in `dir` as `(N, 3, 32, 32)` images.
pub fn load_cifar_dir(dir: &Path, name: &str, class_names: &[String]) -> Result<Dataset> {
    for f in CIFAR_FILES {
        check_cifar_file(&dir.join(f))?;
    }
    let ds = candle_datasets::vision::cifar::load_dir(dir).map_err(|e| {
        Error::format(
            dir,
            format!("candle-datasets could not load the CIFAR-10 files: {e}"),
        )
    })?;
    Dataset::new(
        name,
        Split::new(ds.train_images, ds.train_labels.to_dtype(DType::U32)?)?,
        Split::new(ds.test_images, ds.test_labels.to_dtype(DType::U32)?)?,
        class_names.to_vec(),
        dir,
    )
}
