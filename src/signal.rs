//! SIGTERM/SIGINT as a flag: the tools finish the request in flight, flush and exit 0.
//!
//! Uses the C library's `signal(2)` (std links libc already); the handler only stores to an atomic,
//! which is async-signal-safe.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
static LAST: AtomicI32 = AtomicI32::new(0);

pub const SIGINT: i32 = 2;
pub const SIGTERM: i32 = 15;

extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
}

extern "C" fn on_signal(sig: i32) {
    LAST.store(sig, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
}

const SIG_IGN: usize = 1;

/// Installs the handler for SIGTERM and SIGINT. An inherited "ignore SIGINT" is kept: a
/// non-interactive shell starts background jobs that way, so that Ctrl-C on a pipeline script
/// reaches the script (which stops its stages in order) and not every stage at once.
pub fn install() {
    let handler = on_signal as extern "C" fn(i32) as usize;
    unsafe {
        signal(SIGTERM, handler);
        if signal(SIGINT, handler) == SIG_IGN {
            signal(SIGINT, SIG_IGN);
        }
    }
}

/// True once SIGTERM or SIGINT arrived (or [`request_stop`] was called).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// The last signal received (0 if none).
pub fn last_signal() -> i32 {
    LAST.load(Ordering::SeqCst)
}

/// Asks the process to stop, as a signal would.
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Sleeps for `d` in short steps, returning early (false) when a stop is requested.
pub fn sleep(d: std::time::Duration) -> bool {
    let end = std::time::Instant::now() + d;
    loop {
        if stop_requested() {
            return false;
        }
        let now = std::time::Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(std::time::Duration::from_millis(50)));
    }
}
