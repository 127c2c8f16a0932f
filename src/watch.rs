//! The watch mode of the market tools (pm-markets, kalshi-markets), once for both venues: which
//! markets are known, which ended ones wait for their resolution, and which resolutions were
//! reported; the `new` / `changed` / `expired` market lines; re-checking an ended market every
//! `resolve_every` until the venue reports a result (one resolution line) or `resolve_for` runs out
//! (one `unresolved` line); the outage start/end lines on stderr; the drift-free pass loop. Each
//! engine supplies its discovery pass and its refetch of one market; the market records implement
//! [`Watched`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::clock;
use crate::jsonl::LineWriter;
use crate::signal;

/// A venue's market record as watch mode sees it.
pub trait Watched: Clone {
    /// The venue's resolution record of this market.
    type Resolution;
    /// What the market is known by (Polymarket slug, Kalshi ticker).
    fn key(&self) -> &str;
    fn window_end(&self) -> Option<OffsetDateTime>;
    /// True when this fetch differs from the `old` one in what watch mode reports as `changed`.
    fn changed_from(&self, old: &Self) -> bool;
    /// Sets the record's `change` word (`new`, `changed`, `expired`).
    fn set_change(&mut self, change: &str);
    /// Sets the record's `fetched_at_utc` (an `expired` line is stamped with the pass's time).
    fn set_fetched_at(&mut self, at: &str);
    /// The resolution record saying no result came in time (`result: "unresolved"`).
    fn unresolved(&self, checks: u32) -> Self::Resolution;
    /// Fetches of the market after its window, the one that gave `r` included.
    fn set_checks(r: &mut Self::Resolution, checks: u32);
    fn set_resolution_fetched_at(r: &mut Self::Resolution, at: &str);
}

/// A market and its resolution when the venue already reports one.
pub type Found<M> = (M, Option<Box<<M as Watched>::Resolution>>);

/// One line a market tool writes: a market record or a resolution record, each serialized as its
/// own type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Line<M, R> {
    Market(Box<M>),
    Resolution(Box<R>),
}

/// The lines of one watch pass, in emission order.
pub type Lines<M> = Vec<Line<M, <M as Watched>::Resolution>>;

/// A market whose window ended, followed until the venue reports its result.
struct Pending<M> {
    market: M,
    /// Fetches since the window ended.
    checks: u32,
    /// When it was last fetched (by any pass).
    last_check: OffsetDateTime,
}

/// The watch state of one run: known, pending and reported markets, by key.
pub struct Watch<M: Watched> {
    /// Keep re-fetching a market this long after its window ended, then expire it.
    keep_after: Duration,
    /// After a market expired without a result, re-check it this often ...
    resolve_every: Duration,
    /// ... until this long after its window ended (zero: do not follow resolutions).
    resolve_for: Duration,
    known: BTreeMap<String, M>,
    pending: BTreeMap<String, Pending<M>>,
    /// Keys whose resolution was reported (kept while the market is known or pending).
    reported: BTreeSet<String>,
    /// Resolution lines written, and `unresolved` ones.
    pub resolved: u64,
    pub unresolved: u64,
}

impl<M: Watched> Watch<M> {
    pub fn new(keep_after: Duration, resolve_every: Duration, resolve_for: Duration) -> Watch<M> {
        Watch {
            keep_after,
            resolve_every,
            resolve_for,
            known: BTreeMap::new(),
            pending: BTreeMap::new(),
            reported: BTreeSet::new(),
            resolved: 0,
            unresolved: 0,
        }
    }

    /// Markets known or pending (what an outage line says stands).
    pub fn followed(&self) -> usize {
        self.known.len() + self.pending.len()
    }

    /// Markets followed for their resolution right now.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The summary's resolutions part (empty before any).
    pub fn summary(&self) -> String {
        if self.resolved + self.unresolved == 0 && self.pending.is_empty() {
            return String::new();
        }
        format!(
            "; resolutions: {} reported, {} unresolved when --resolve-for ran out, {} pending",
            self.resolved,
            self.unresolved,
            self.pending.len()
        )
    }

    /// One watch pass over `seen` (the engine's discovery pass at `now`): markets known earlier and
    /// no longer seen but not expired are re-fetched with `refetch` (given the market and
    /// [`Watch::followed`] at that moment), then the lines to emit: market records `new`, `changed`,
    /// `expired`, and resolution records.
    pub fn pass<F>(&mut self, mut seen: Vec<Found<M>>, now: OffsetDateTime, mut refetch: F) -> io::Result<Lines<M>>
    where
        F: FnMut(&M, usize) -> io::Result<Option<Found<M>>>,
    {
        let mut emit = Vec::new();
        // Markets found earlier that the pass no longer shows but not expired yet: re-fetch them so
        // that closing and resolution are reported.
        let wanted: BTreeSet<String> = seen.iter().map(|(m, _)| m.key().to_string()).collect();
        let older: Vec<M> = self.known.values().filter(|m| !wanted.contains(m.key())).cloned().collect();
        for m in older {
            if signal::stop_requested() {
                break;
            }
            if m.window_end().is_some_and(|e| e + self.keep_after < now) {
                continue;
            }
            if let Some(found) = refetch(&m, self.followed())? {
                seen.push(found);
            }
        }
        for (mut m, r) in seen {
            let change = match self.known.get(m.key()) {
                None => Some("new"),
                Some(old) if m.changed_from(old) => Some("changed"),
                Some(_) => None,
            };
            if let Some(c) = change {
                m.set_change(c);
                emit.push(Line::Market(Box::new(m.clone())));
            }
            if m.window_end().is_some_and(|e| e <= now) {
                self.follow(&m, r, now, &mut emit);
            }
            self.known.insert(m.key().to_string(), m);
        }
        self.expire(now, &mut emit);
        self.check_pending(now, &mut emit, refetch)?;
        Ok(emit)
    }

    /// Reports the known markets whose window ended more than `keep_after` ago as `expired`.
    fn expire(&mut self, now: OffsetDateTime, emit: &mut Lines<M>) {
        let expired: Vec<String> = self
            .known
            .values()
            .filter(|m| m.window_end().map(|e| e + self.keep_after < now).unwrap_or(true))
            .map(|m| m.key().to_string())
            .collect();
        for key in expired {
            let mut m = self.known.remove(&key).expect("present");
            m.set_change("expired");
            m.set_fetched_at(&clock::fmt_micros(now));
            emit.push(Line::Market(Box::new(m)));
            if !self.pending.contains_key(&key) {
                self.reported.remove(&key);
            }
        }
    }

    /// Notes a fetch of an ended market: reports its resolution once, or keeps it pending.
    fn follow(&mut self, m: &M, r: Option<Box<M::Resolution>>, now: OffsetDateTime, emit: &mut Lines<M>) {
        if self.resolve_for.is_zero() || self.reported.contains(m.key()) {
            return;
        }
        match r {
            Some(mut r) => {
                self.resolved += 1;
                M::set_checks(&mut r, self.pending.get(m.key()).map(|p| p.checks + 1).unwrap_or(1));
                emit.push(Line::Resolution(r));
                self.pending.remove(m.key());
                self.reported.insert(m.key().to_string());
            }
            None => {
                let p = self.pending.entry(m.key().to_string()).or_insert(Pending {
                    market: m.clone(),
                    checks: 0,
                    last_check: now,
                });
                p.market = m.clone();
                p.checks += 1;
                p.last_check = now;
            }
        }
    }

    /// Re-checks pending markets that left `known` (every `resolve_every`), and gives up on those
    /// whose `resolve_for` ran out (one `unresolved` record each).
    fn check_pending<F>(&mut self, now: OffsetDateTime, emit: &mut Lines<M>, mut refetch: F) -> io::Result<()>
    where
        F: FnMut(&M, usize) -> io::Result<Option<Found<M>>>,
    {
        let every = time::Duration::seconds_f64(self.resolve_every.as_secs_f64());
        let limit = time::Duration::seconds_f64(self.resolve_for.as_secs_f64());
        let keys: Vec<String> = self.pending.keys().cloned().collect();
        for key in keys {
            if signal::stop_requested() {
                break;
            }
            let p = &self.pending[&key];
            let end = p.market.window_end().unwrap_or(now);
            if end + limit < now {
                let p = self.pending.remove(&key).expect("present");
                self.unresolved += 1;
                let mut r = p.market.unresolved(p.checks);
                M::set_resolution_fetched_at(&mut r, &clock::fmt_micros(now));
                emit.push(Line::Resolution(Box::new(r)));
                // Reported once: a market still re-fetched as known is not followed again.
                if self.known.contains_key(&key) {
                    self.reported.insert(key);
                } else {
                    self.reported.remove(&key);
                }
                continue;
            }
            if self.known.contains_key(&key) || p.last_check + every > now {
                continue;
            }
            let m = p.market.clone();
            if let Some((nm, r)) = refetch(&m, self.followed())? {
                self.follow(&nm, r, now, emit);
                if !self.pending.contains_key(&key) {
                    self.reported.remove(&key);
                }
            } else if let Some(p) = self.pending.get_mut(&key) {
                p.last_check = now;
                p.checks += 1;
            }
        }
        Ok(())
    }
}

/// Outage bookkeeping of a market tool on the wall clock: one stderr line when the first request
/// gives up, one when the venue answers again (with how long it lasted and how many gave up).
pub struct Outage {
    /// The tool's name and the venue's, as the lines name them (`pm-markets`, `Gamma`).
    tool: &'static str,
    venue: &'static str,
    current: Option<Current>,
}

struct Current {
    since: OffsetDateTime,
    failed: u64,
    first_reason: String,
}

impl Outage {
    pub fn new(tool: &'static str, venue: &'static str) -> Outage {
        Outage { tool, venue, current: None }
    }

    /// True while every request gives up.
    pub fn active(&self) -> bool {
        self.current.is_some()
    }

    /// True when a request's own failure line is left out: an outage past its first failure (the
    /// outage lines say it once).
    pub fn quiet(&self) -> bool {
        self.current.as_ref().is_some_and(|o| o.failed > 1)
    }

    /// A request gave up at `at` for `reason`, with `followed` markets known (their records stand)
    /// and the client's longest backoff `backoff_max`.
    pub fn failed(&mut self, reason: &str, at: OffsetDateTime, followed: usize, backoff_max: Duration) {
        match &mut self.current {
            Some(o) => o.failed += 1,
            None => {
                let state = if followed == 0 {
                    "no market yet".to_string()
                } else {
                    format!("{followed} markets known, their records stand")
                };
                eprintln!(
                    "{}: outage: {} unreachable ({reason}); retrying with backoff (up to {:.0} s apart), {state}",
                    self.tool,
                    self.venue,
                    backoff_max.as_secs_f64()
                );
                self.current = Some(Current { since: at, failed: 1, first_reason: reason.to_string() });
            }
        }
    }

    /// The venue answered at `at` (any reply that is not a failure).
    pub fn answered(&mut self, at: OffsetDateTime) {
        if let Some(o) = self.current.take() {
            eprintln!(
                "{}: outage over: {} answers again after {:.1} s (requests that gave up: {}; first: {})",
                self.tool,
                self.venue,
                (at - o.since).as_seconds_f64().max(0.0),
                o.failed,
                o.first_reason
            );
        }
    }
}

/// What [`run`] needs of a market tool's engine.
pub trait Engine {
    /// The tool's name, as its stderr lines start.
    const TOOL: &'static str;
    type Line: Serialize;
    /// One watch pass at `now`: the lines to write.
    fn watch_pass(&mut self, now: OffsetDateTime) -> io::Result<Vec<Self::Line>>;
    /// Failures and malformed records so far (a pass that adds some prints the summary).
    fn bad(&self) -> u64;
    /// True while every request gives up (the outage lines speak for the pass).
    fn in_outage(&self) -> bool;
    fn summary(&self) -> String;
}

/// `--watch`: a pass every `every` (drift-free: pass k starts at start + k·every) until a stop is
/// requested or `duration` has passed, each pass's lines written to `out`. The summary goes to
/// stderr when a pass added a failure outside an outage (an outage reports itself), and once more
/// at the end.
pub fn run<E: Engine, W: Write>(
    e: &mut E,
    every: Duration,
    duration: Option<Duration>,
    out: &mut LineWriter<W>,
) -> io::Result<()> {
    let start = Instant::now();
    let end = duration.map(|d| start + d);
    let mut k: u32 = 0;
    let why = loop {
        if signal::stop_requested() {
            break format!("stopped by signal {}", signal::last_signal());
        }
        let before = e.bad();
        for l in e.watch_pass(clock::now())? {
            out.write(&l)?;
        }
        if e.bad() > before && !e.in_outage() {
            eprintln!("{}: {}", E::TOOL, e.summary());
        }
        k += 1;
        let due = start + every * k;
        let until = end.map_or(due, |e| e.min(due));
        let now = Instant::now();
        if until > now && !signal::sleep(until - now) {
            continue;
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            break "--duration reached".to_string();
        }
    };
    eprintln!("{}: {why}; {}", E::TOOL, e.summary());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A market as small as watch mode needs: a key, a window end, one state field.
    #[derive(Clone, Debug, PartialEq)]
    struct M {
        key: String,
        end: OffsetDateTime,
        state: u32,
        change: String,
        fetched: String,
    }

    /// (key, result, checks, fetched_at)
    type R = (String, String, u32, String);

    impl Watched for M {
        type Resolution = R;
        fn key(&self) -> &str {
            &self.key
        }
        fn window_end(&self) -> Option<OffsetDateTime> {
            Some(self.end)
        }
        fn changed_from(&self, old: &M) -> bool {
            self.state != old.state
        }
        fn set_change(&mut self, change: &str) {
            self.change = change.into();
        }
        fn set_fetched_at(&mut self, at: &str) {
            self.fetched = at.into();
        }
        fn unresolved(&self, checks: u32) -> R {
            (self.key.clone(), "unresolved".into(), checks, String::new())
        }
        fn set_checks(r: &mut R, checks: u32) {
            r.2 = checks;
        }
        fn set_resolution_fetched_at(r: &mut R, at: &str) {
            r.3 = at.into();
        }
    }

    const T0: i64 = 1_800_000_000;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(T0 + secs).unwrap()
    }

    fn m(state: u32) -> M {
        M { key: "a".into(), end: at(900), state, change: String::new(), fetched: String::new() }
    }

    fn found(state: u32, result: Option<&str>) -> Found<M> {
        (m(state), result.map(|r| Box::new(("a".to_string(), r.to_string(), 0, String::new()))))
    }

    /// The lines of a pass, as words: `new`, `changed`, `expired`, `resolution:<result>:<checks>`.
    fn words(lines: Lines<M>) -> Vec<String> {
        lines
            .into_iter()
            .map(|l| match l {
                Line::Market(m) => m.change.clone(),
                Line::Resolution(r) => format!("resolution:{}:{}", r.1, r.2),
            })
            .collect()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_market_is_new_changed_then_resolved_once_with_its_checks_then_expired() {
        let mut w: Watch<M> = Watch::new(secs(600), secs(60), secs(3600));
        let none = |_: &M, _: usize| -> io::Result<Option<Found<M>>> { Ok(None) };
        assert_eq!(words(w.pass(vec![found(0, None)], at(100), none).unwrap()), ["new"]);
        assert_eq!(words(w.pass(vec![found(0, None)], at(200), none).unwrap()), Vec::<String>::new());
        assert_eq!(words(w.pass(vec![found(1, None)], at(300), none).unwrap()), ["changed"]);
        // Ended without a result: pending, nothing written.
        assert_eq!(words(w.pass(vec![found(1, None)], at(960), none).unwrap()), Vec::<String>::new());
        assert_eq!((w.pending(), w.followed()), (1, 2));
        // Gone from the pass: re-fetched (the engine's refetch gets the market and what is followed),
        // and the result it gives is one resolution line, its second check.
        let mut asked = Vec::new();
        let resolved = |m: &M, followed: usize| {
            asked.push((m.key.clone(), followed));
            Ok(Some(found(2, Some("yes"))))
        };
        assert_eq!(words(w.pass(Vec::new(), at(1020), resolved).unwrap()), ["changed", "resolution:yes:2"]);
        assert_eq!(asked, [("a".to_string(), 2)]);
        assert_eq!((w.resolved, w.pending()), (1, 0));
        // Reported once: the same result again writes nothing.
        let again = |_: &M, _: usize| Ok(Some(found(2, Some("yes"))));
        assert!(w.pass(Vec::new(), at(1080), again).unwrap().is_empty());
        // keep_after (600 s) after the window end: expired, stamped with the pass's time.
        let lines = w.pass(Vec::new(), at(1501), none).unwrap();
        assert!(
            matches!(&lines[..], [Line::Market(m)] if m.change == "expired" && m.fetched == clock::fmt_micros(at(1501)))
        );
        assert_eq!(w.followed(), 0);
        assert_eq!(w.summary(), "; resolutions: 1 reported, 0 unresolved when --resolve-for ran out, 0 pending");
    }

    #[test]
    fn an_expired_market_is_rechecked_every_resolve_every_until_resolve_for_runs_out() {
        let mut w: Watch<M> = Watch::new(secs(60), secs(100), secs(1000));
        let calls = std::cell::Cell::new(0);
        let mut none = |_: &M, _: usize| -> io::Result<Option<Found<M>>> {
            calls.set(calls.get() + 1);
            Ok(None)
        };
        w.pass(vec![found(0, None)], at(910), &mut none).unwrap(); // new, pending (check 1)
        assert_eq!(words(w.pass(Vec::new(), at(961), &mut none).unwrap()), ["expired"]);
        // Pending and no longer known: re-checked when resolve_every (100 s) passed since the last check.
        for s in (1000..=1900).step_by(50) {
            assert!(w.pass(Vec::new(), at(s), &mut none).unwrap().is_empty(), "at {s}");
        }
        assert_eq!(calls.get(), 9, "one refetch per 100 s, from 1050 s to 1850 s");
        // resolve_for (1000 s) after the window end ran out: one unresolved line with every check.
        assert_eq!(words(w.pass(Vec::new(), at(1901), &mut none).unwrap()), ["resolution:unresolved:10"]);
        assert_eq!((w.unresolved, w.pending()), (1, 0));
        assert!(w.pass(Vec::new(), at(2500), &mut none).unwrap().is_empty());
        // resolve_for 0: no resolution is followed at all.
        let mut w: Watch<M> = Watch::new(secs(60), secs(100), Duration::ZERO);
        w.pass(vec![found(0, Some("no"))], at(910), &mut none).unwrap();
        assert_eq!((w.pending(), w.resolved), (0, 0));
    }
}
