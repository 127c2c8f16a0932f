//! The drift-free slot schedule of a polling tool: slot k is due at t0 + k·interval on the monotonic
//! clock, and its wall-clock due time is the start time + k·interval (exactly spaced). A slot that
//! overran skips the slots whose due time already passed; [`Schedule::next`] says which.
//!
//! [`run`] is the slot loop of pm-books and pm-trades: the wait for each slot's due time, the stop
//! on a signal, `--duration` or the end of the input, and the missed-slot records; the engine
//! supplies one slot's work ([`Slotted`]).

use std::io;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::clock;
use crate::signal;
use crate::track::Reason;

/// How a slot loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// SIGTERM/SIGINT (the signal number).
    Signal(i32),
    /// `--duration` reached.
    Duration,
    /// The input ended and nothing is tracked or waiting to be tracked.
    InputDone,
}

impl End {
    /// The `reason` of the stop records written at the end.
    pub fn reason(self) -> Reason {
        match self {
            End::Signal(_) => Reason::Signal,
            End::Duration => Reason::Duration,
            End::InputDone => Reason::InputDone,
        }
    }

    /// How the run ended, for the summary line.
    pub fn describe(self) -> String {
        match self {
            End::Signal(sig) => format!("stopped by signal {sig}"),
            End::Duration => "duration reached".to_string(),
            End::InputDone => "input ended and nothing left to track".to_string(),
        }
    }
}

/// A polling engine driven by [`run`].
pub trait Slotted {
    /// Records slots `from..=to` as never started (written at slot `k`).
    fn write_missed(&mut self, k: u64, from: u64, to: u64) -> io::Result<()>;
    /// Slot `k`'s work (after the missed slots before it were recorded); `Ok(false)` when the input
    /// ended and nothing is left to track (the loop ends with [`End::InputDone`]).
    fn slot(&mut self, k: u64) -> io::Result<bool>;
}

/// Runs the slots of `e` on `sched` until a signal, `duration`, or the end of its input; records the
/// slots skipped just before the stop too. Returns how it ended and the last slot.
pub fn run<E: Slotted>(e: &mut E, sched: &Schedule, duration: Option<Duration>) -> io::Result<(End, u64)> {
    // Anchors the monotonic reading of the clock now, before any market is judged.
    clock::steady();
    let mut k: u64 = 0;
    let mut missed: Option<(u64, u64)> = None;
    let end = loop {
        if duration.is_some_and(|d| sched.offset(k) >= d) {
            break End::Duration;
        }
        let now = Instant::now();
        let due = sched.due(k);
        if due > now && !signal::sleep(due - now) {
            break End::Signal(signal::last_signal());
        }
        if signal::stop_requested() {
            break End::Signal(signal::last_signal());
        }
        if let Some((from, to)) = missed.take() {
            e.write_missed(k, from, to)?;
        }
        if !e.slot(k)? {
            break End::InputDone;
        }
        (k, missed) = sched.next(k);
    };
    // Slots skipped just before the stop are still recorded.
    if let Some((from, to)) = missed.take() {
        e.write_missed(k, from, to)?;
    }
    Ok((end, k))
}

#[derive(Clone, Debug)]
pub struct Schedule {
    interval: Duration,
    t0: Instant,
    wall0: OffsetDateTime,
}

impl Schedule {
    /// A schedule starting now.
    pub fn new(interval: Duration) -> Schedule {
        Schedule { interval, t0: Instant::now(), wall0: clock::now() }
    }

    /// Slot k's offset from the start.
    pub fn offset(&self, k: u64) -> Duration {
        Duration::from_nanos((self.interval.as_nanos() as u64).saturating_mul(k))
    }

    /// When slot k is due (monotonic).
    pub fn due(&self, k: u64) -> Instant {
        self.t0 + self.offset(k)
    }

    /// Slot k's due time on the wall clock (RFC 3339 µs).
    pub fn due_utc(&self, k: u64) -> String {
        clock::fmt_micros(self.wall0 + self.offset(k))
    }

    /// After slot k ran: the next slot to run (k + 1 while it is still ahead, else the latest slot
    /// already due, run at once) and the slots skipped in between (first, last), if any.
    pub fn next(&self, k: u64) -> (u64, Option<(u64, u64)>) {
        let next = k + 1;
        let now = Instant::now();
        if self.due(next) > now {
            return (next, None);
        }
        let latest = ((now - self.t0).as_nanos() / self.interval.as_nanos()) as u64;
        let missed = (latest > next).then(|| (next, latest - 1));
        (latest.max(next), missed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_exactly_spaced_and_an_overrun_skips_the_passed_ones() {
        let mut s = Schedule::new(Duration::from_millis(100));
        assert_eq!(s.offset(3), Duration::from_millis(300));
        assert_eq!(s.due(2) - s.due(1), Duration::from_millis(100));
        assert_eq!(s.next(0), (1, None));
        // As if slot 0 had started 1.05 s ago and just ended: slots 1..=9 passed, 10 runs now.
        s.t0 -= Duration::from_millis(1050);
        assert_eq!(s.next(0), (10, Some((1, 9))));
        // One slot late: the next one runs at once, nothing skipped.
        assert_eq!(s.next(9), (10, None));
    }
}
