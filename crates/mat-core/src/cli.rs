//! What every stage binary shares around its own work: the start of `main`,
//! the exit code and error line, and the progress bar.

use std::fmt::Display;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};

/// Runs a stage's `run` with the allocator set up (see
/// [`crate::alloc::keep_freed_memory`]); an error is printed as one
/// `error: ...` line with its causes (`{:#}`), and the exit code is 1.
pub fn main<E: Display>(run: impl FnOnce() -> Result<(), E>) -> ExitCode {
    crate::alloc::keep_freed_memory();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A progress bar in `template` (indicatif's syntax), hidden with `quiet`
/// (a hidden bar prints nothing; stages then print one line per unit of
/// work through [`say`]).
pub fn progress_bar(quiet: bool, template: &str) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Prints a line above `bar`, or on stderr when the bar is hidden.
pub fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}
