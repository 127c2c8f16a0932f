//! The drift-free slot schedule of a polling tool: slot k is due at t0 + k·interval on the monotonic
//! clock, and its wall-clock due time is the start time + k·interval (exactly spaced). A slot that
//! overran skips the slots whose due time already passed; [`Schedule::next`] says which.
//!
//! pm-trades uses it; pm-books' engine (src/books.rs) has the same arithmetic inline and can switch
//! to this type.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::clock;

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
