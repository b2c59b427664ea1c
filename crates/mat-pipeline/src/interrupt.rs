//! SIGINT, SIGTERM and SIGHUP for `mat repro`: the runner stops starting
//! stages, passes the signal on to the stages running (each runs in its own
//! process group, so its whole process tree gets it), waits for them (a
//! group still running 10 s later is killed), removes what they left of
//! their outputs and records nothing for them.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal received, or 0.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    RECEIVED.store(sig, Ordering::SeqCst);
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP. Call once, from the
/// binary, before `repro`. Without it a signal ends the runner at once and
/// the stage running goes on as an orphan.
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `on_signal` only stores to an atomic; `signal` with a
        // plain handler function is sound for these signals.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// The signal that asked the runner to stop, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Records `sig` as received (for tests, and for callers that learn of a
/// stop request another way).
pub fn request_stop(sig: i32) {
    RECEIVED.store(sig, Ordering::SeqCst);
}

/// Sends `sig` to the process group `pgid` (a stage and its children).
pub(crate) fn signal_group(pgid: u32, sig: i32) {
    // SAFETY: kill(2) with a negative pid addresses a process group; an
    // already-finished group makes it fail with ESRCH, which is fine.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), sig);
    }
}

/// Name of a signal for messages.
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
