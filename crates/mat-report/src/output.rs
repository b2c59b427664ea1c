//! Where a table goes: the note under its title, and its Markdown and CSV
//! files, each written atomically.

use std::path::Path;

use crate::{Error, Result};

/// Today's UTC date, YYYY-MM-DD, or that of `SOURCE_DATE_EPOCH` (the
/// reproducible-builds convention), so a rerun can produce the same bytes.
pub fn today() -> String {
    let now = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or_else(std::time::SystemTime::now, |secs| {
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
        });
    humantime::format_rfc3339_seconds(now).to_string()[..10].to_string()
}

/// The note under a table's title, with the date and the run folder.
pub fn note_line(note: &str, runs: &Path) -> String {
    format!("{note} Generated {} from {}.", today(), runs.display())
        .trim()
        .to_string()
}

/// A run folder that does not exist is a mistake (a typo, a run not yet
/// made), not a table of "not run" cells.
pub fn existing_folder(runs: &Path) -> Result<()> {
    if !runs.is_dir() {
        return Err(Error::content(
            runs,
            "no such folder (expected the run folder of a pipeline, e.g. runs/table2/quick)",
        ));
    }
    Ok(())
}

/// Writes `<out>.md` (never-run columns moved to a table of the paper's
/// numbers, see [`crate::layout`]) and `<out>.csv`, each atomically.
pub fn write_table(out: &Path, md: &str, csv: &str) -> Result<()> {
    use mat_core::artifact::write_atomic;
    let md = crate::layout::split_unrun_columns(md);
    write_atomic(&out.with_extension("md"), md.as_bytes())?;
    write_atomic(&out.with_extension("csv"), csv.as_bytes())?;
    Ok(())
}
