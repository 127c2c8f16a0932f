//! What the slot-polling engines share (pm-books, pm-trades; kalshi-books, kalshi-trades): their
//! raw output ([`SlotLines`]: http lines per attempt, track and gap lines stamped with the slot),
//! the outage lines on stderr ([`Outage`]) and the one-line text of a failed request
//! ([`failure_text`]). The slot loop itself is [`crate::schedule::run`]; the stdin reader
//! [`crate::feed`].

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::envelope::Sequencer;
use crate::http::{Attempt, Client, Request, Verdict};
use crate::jsonl::LineWriter;
use crate::schedule::Schedule;
use crate::track::{GapCtx, PollSlot, TrackCtx};

/// Outage announcements on stderr: one line when requests stop getting a usable reply (the first
/// failed request after a success, or since the start), one when a usable reply comes back, with
/// how long it lasted and how many attempts failed. Every failure is also a record on stdout; these
/// lines are for the journal, which is otherwise silent until the run ends.
#[derive(Debug, Default)]
pub struct Outage {
    /// When the current outage started (monotonic) and its failed attempts so far.
    current: Option<(Instant, u64)>,
}

impl Outage {
    /// A request ended without a usable reply after `failed` failed attempts. Returns the line that
    /// announces a new outage.
    pub fn failed(&mut self, failed: u64, what: &str, why: &str, interval: Duration) -> Option<String> {
        match &mut self.current {
            Some((_, n)) => {
                *n += failed;
                None
            }
            None => {
                self.current = Some((Instant::now(), failed));
                Some(format!(
                    "outage: {what}: {why}; retrying every slot ({} s), less often \
                     while failures repeat; each slot without a reply is a gap record; one more line when it \
                     answers again",
                    interval.as_secs_f64()
                ))
            }
        }
    }

    /// A request got a usable reply after `failed` failed attempts. Returns the line that announces
    /// the end of an outage.
    pub fn succeeded(&mut self, failed: u64, what: &str) -> Option<String> {
        let (since, n) = self.current.take()?;
        Some(format!(
            "outage over: {what} answered again after {:.1} s and {} failed attempt(s)",
            since.elapsed().as_secs_f64(),
            n + failed
        ))
    }

    /// The outage still going on: (seconds, failed attempts).
    pub fn ongoing(&self) -> Option<(f64, u64)> {
        self.current.map(|(since, n)| (since.elapsed().as_secs_f64(), n))
    }
}

/// The raw output of a slot-polling engine (pm-books, pm-trades): one sequencer numbers every line;
/// an http line per attempt with the caller's `ctx`; track and gap lines stamped with the slot, its
/// due time and the endpoint polled (every raw line names the endpoint it is about:
/// docs/POLYMARKET_COLLECTOR.md, Output).
pub struct SlotLines<W: Write> {
    pub seq: Sequencer,
    pub out: LineWriter<W>,
    pub sched: Schedule,
    pub endpoint_url: String,
}

impl<W: Write> SlotLines<W> {
    pub fn new(seq: Sequencer, out: LineWriter<W>, interval: Duration, endpoint_url: String) -> SlotLines<W> {
        SlotLines { seq, out, sched: Schedule::new(interval), endpoint_url }
    }

    /// Sends `req` (retries until `deadline`), writing each attempt as an http line with `ctx` and
    /// counting it by status (`none` when no reply arrived) in `requests`. Returns the last attempt
    /// and how many attempts failed.
    pub fn execute<C: Serialize>(
        &mut self,
        client: &Client,
        req: &Request,
        deadline: Instant,
        ctx: &C,
        requests: &mut BTreeMap<String, u64>,
    ) -> io::Result<(Attempt, u64)> {
        let (seq, out) = (&mut self.seq, &mut self.out);
        let mut failed: u64 = 0;
        let last = client.execute(req, Some(deadline), |a: &Attempt| -> io::Result<()> {
            let key = a.status.map_or_else(|| "none".to_string(), |s| s.to_string());
            *requests.entry(key).or_default() += 1;
            failed += u64::from(!a.is_ok());
            out.write_raw(&a.envelope(seq, req, Some(ctx)).to_line())
        })?;
        Ok((last, failed))
    }

    /// Slot `k`, its due time and the endpoint (the `poll` part of a track or gap line's ctx).
    pub fn slot_of_line(&self, k: u64) -> PollSlot {
        PollSlot {
            slot: Some(k),
            due_at_utc: Some(self.sched.due_utc(k)),
            endpoint_url: Some(self.endpoint_url.clone()),
        }
    }

    /// A track line at slot `k`.
    pub fn track(&mut self, k: u64, ctx: TrackCtx) -> io::Result<()> {
        let ctx = TrackCtx { poll: self.slot_of_line(k), ..ctx };
        self.out.write_raw(&self.seq.envelope("track").with_ctx(&ctx).to_line())
    }

    /// A gap line at slot `k`.
    pub fn gap(&mut self, k: u64, ctx: GapCtx, error: String) -> io::Result<()> {
        let ctx = GapCtx { poll: self.slot_of_line(k), ..ctx };
        self.out.write_raw(&self.seq.envelope("gap").with_ctx(&ctx).with_error(error).to_line())
    }

    /// The missed_slots gap of slots `from..=to`, written at slot `k`: they never started because the
    /// slot before them overran (`cause`).
    pub fn missed(&mut self, k: u64, from: u64, to: u64, cause: &str) -> io::Result<()> {
        let ctx = GapCtx::missed_slots(from, to, self.sched.due_utc(from));
        let error = format!("{} slot(s) not started: the previous slot overran ({cause})", to - from + 1);
        self.gap(k, ctx, error)
    }
}

/// Why a request gave no usable reply, in one line (pm-trades' too).
pub fn failure_text(a: &Attempt) -> String {
    let what = match (&a.verdict, a.status) {
        (Verdict::Ok, Some(s)) => format!("status {s} without a JSON body"),
        (Verdict::Retry(r) | Verdict::Final(r), _) => r.clone(),
        (Verdict::Ok, None) => "no reply".to_string(),
    };
    let mut s = format!("no usable reply after {} attempt(s): {what}", a.attempt);
    if let Some(e) = &a.error {
        s.push_str(&format!(" ({e})"));
    } else if let Some(g) = &a.gave_up {
        s.push_str(&format!(" (gave up: {g})"));
    }
    s
}
