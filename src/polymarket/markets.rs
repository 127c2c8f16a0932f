//! `pm-markets`' engine: compute the slugs of the current and next windows of each family, fetch
//! them from Gamma (`GET /markets/slug/{slug}`), parse, and report what appeared, changed or expired.
//! After a market's window ends, watch mode keeps re-checking it (every `resolve_every`, for at most
//! `resolve_for`) until Gamma says it is resolved, and reports the outcome once. Every HTTP attempt
//! goes to the raw sink as an envelope, whatever happened. An outage (a request that gave up after
//! its retries) is reported on stderr once when it starts and once when it ends.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::clock;
use crate::envelope::Sequencer;
use crate::http::{Client, Request, Verdict};
use crate::jsonl::LineWriter;
use crate::polymarket::market::{self, Family, Market, Resolution};
use crate::signal;
use crate::util;

#[derive(Clone, Debug)]
pub struct Config {
    pub gamma_url: String,
    pub families: Vec<Family>,
    pub ahead: u32,
    /// Watch mode: keep re-fetching a market this long after its window ended, then expire it.
    pub keep_after: Duration,
    /// Watch mode: after a market expired unresolved, re-check it this often ...
    pub resolve_every: Duration,
    /// ... until this long after its window ended (zero: do not follow resolutions).
    pub resolve_for: Duration,
}

/// One line pm-markets writes: a market record (`pmarchive.market/1`) or a resolution record
/// (`pmarchive.resolution/1`), each serialized as its own type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Record {
    Market(Box<Market>),
    Resolution(Box<Resolution>),
}

/// The `ctx` of pm-markets' http lines (with the client's retry fields, [`crate::http::HttpCtx`]): the
/// market asked for and the window its slug names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GammaCtx {
    pub slug: String,
    pub family: Family,
    pub window_start_utc: String,
    pub window_end_utc: String,
}

/// Counters of one process run (printed as the summary line).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub windows: u64,
    pub found: u64,
    pub not_listed: u64,
    pub malformed: u64,
    /// Records whose `version` is neither "v1", "v2" nor absent (kept raw, not used).
    pub unknown_version: u64,
    pub failed: u64,
    pub requests: u64,
    pub resolved: u64,
    pub unresolved: u64,
}

/// What fetching one slug gave.
enum Fetch {
    /// The market, and its resolution when Gamma already reports one.
    Found(Box<Market>, Option<Box<Resolution>>),
    NotListed,
    Malformed(String),
    UnknownVersion(String),
    Failed(String),
    /// Not answered because a stop was requested (SIGTERM): neither a failure nor an outage.
    Stopped,
}

/// A market whose window ended, followed until Gamma says it is resolved.
struct Pending {
    market: Market,
    /// Gamma fetches since the window ended.
    checks: u32,
    /// When it was last fetched (by any pass).
    last_check: OffsetDateTime,
}

/// Outage bookkeeping: since when every request gave up, and how many.
struct Outage {
    since: OffsetDateTime,
    failed: u64,
    first_reason: String,
}

pub struct Discoverer {
    cfg: Config,
    client: Client,
    seq: Sequencer,
    raw: Option<LineWriter<Box<dyn Write + Send>>>,
    /// Markets seen in watch mode, by slug.
    known: BTreeMap<String, Market>,
    /// Ended markets not resolved yet, by slug (watch mode).
    pending: BTreeMap<String, Pending>,
    /// Slugs whose resolution was reported (kept while the market is known or pending).
    reported: BTreeSet<String>,
    /// Slugs already asked for in the current pass (the ET hour that happens twice on the DST
    /// fall-back day maps two UTC windows to one hourly slug).
    asked: std::collections::HashSet<String>,
    outage: Option<Outage>,
    pub stats: Stats,
}

impl Discoverer {
    pub fn new(cfg: Config, client: Client, seq: Sequencer, raw: Option<Box<dyn Write + Send>>) -> Discoverer {
        Discoverer {
            cfg,
            client,
            seq,
            raw: raw.map(|w| LineWriter::new(w, true)),
            known: BTreeMap::new(),
            pending: BTreeMap::new(),
            reported: BTreeSet::new(),
            asked: Default::default(),
            outage: None,
            stats: Stats::default(),
        }
    }

    /// True while every request gives up (no reply from Gamma that ends an outage).
    pub fn in_outage(&self) -> bool {
        self.outage.is_some()
    }

    fn fetch(&mut self, slug: &str, family: Family, window: (OffsetDateTime, OffsetDateTime)) -> io::Result<Fetch> {
        if !util::is_safe_component(slug) {
            return Ok(Fetch::Malformed(format!("unsafe slug {slug:?}")));
        }
        let url = format!("{}/markets/slug/{}", self.cfg.gamma_url, util::percent_encode(slug));
        let req = Request::get("gamma", url.clone());
        let ctx = GammaCtx {
            slug: slug.to_string(),
            family,
            window_start_utc: clock::fmt_secs(window.0),
            window_end_utc: clock::fmt_secs(window.1),
        };
        let (seq, raw, stats) = (&mut self.seq, &mut self.raw, &mut self.stats);
        let last = self.client.execute(&req, None, |a| {
            stats.requests += 1;
            match raw.as_mut() {
                Some(w) => w.write_raw(&a.envelope(seq, &req, Some(&ctx)).to_line()),
                None => Ok(()),
            }
        })?;
        let checks = self.pending.get(slug).map(|p| p.checks + 1).unwrap_or(1);
        let fetch = match (&last.verdict, last.status) {
            (Verdict::Ok, _) => {
                let text = last.json_text().unwrap_or("null");
                match serde_json::from_str::<Value>(text) {
                    Err(e) => Fetch::Malformed(e.to_string()),
                    Ok(v) => match market::id_field(&v) {
                        Err(e) => Fetch::UnknownVersion(e),
                        Ok(_) => match market::parse_gamma_market(&v, &url, last.received_at) {
                            Ok(m) if m.slug == slug => {
                                let r = market::resolution_of(&v, &m, checks).map(Box::new);
                                Fetch::Found(Box::new(m), r)
                            }
                            Ok(m) => {
                                Fetch::Malformed(format!("asked for {slug} but the record's slug is {:?}", m.slug))
                            }
                            Err(e) => Fetch::Malformed(e),
                        },
                    },
                }
            }
            (_, Some(404)) => Fetch::NotListed,
            _ if signal::stop_requested() => Fetch::Stopped,
            (v, s) => {
                let why = last.error.clone().unwrap_or_else(|| format!("{v:?}"));
                Fetch::Failed(match s {
                    Some(s) => format!("status {s} ({why})"),
                    None => why,
                })
            }
        };
        self.note_outage(&fetch, last.received_at);
        Ok(fetch)
    }

    /// One stderr line when the first request gives up, one when Gamma answers again.
    fn note_outage(&mut self, f: &Fetch, at: OffsetDateTime) {
        match (f, &mut self.outage) {
            (Fetch::Failed(reason), None) => {
                let known = self.known.len() + self.pending.len();
                let state = if known == 0 {
                    "no market yet".to_string()
                } else {
                    format!("{known} markets known, their records stand")
                };
                eprintln!(
                    "pm-markets: outage: Gamma unreachable ({reason}); retrying with backoff (up to {:.0} s apart), {state}",
                    self.client.cfg.backoff_max.as_secs_f64()
                );
                self.outage = Some(Outage { since: at, failed: 1, first_reason: reason.clone() });
            }
            (Fetch::Failed(_), Some(o)) => o.failed += 1,
            (Fetch::Found(..) | Fetch::NotListed | Fetch::Malformed(_) | Fetch::UnknownVersion(_), Some(o)) => {
                eprintln!(
                    "pm-markets: outage over: Gamma answers again after {:.1} s (requests that gave up: {}; first: {})",
                    (at - o.since).as_seconds_f64().max(0.0),
                    o.failed,
                    o.first_reason
                );
                self.outage = None;
            }
            (Fetch::Stopped, _) | (_, None) => {}
        }
    }

    /// Counts and reports a fetch that gave no market. Per-window failure lines are left out
    /// during an outage (the outage lines say it once).
    fn report_miss(&mut self, slug: &str, f: &Fetch) {
        match f {
            Fetch::Malformed(reason) => {
                self.stats.malformed += 1;
                eprintln!("pm-markets: skipped {slug}: malformed Gamma record: {reason} (kept raw)");
            }
            Fetch::UnknownVersion(reason) => {
                self.stats.unknown_version += 1;
                eprintln!("pm-markets: skipped {slug}: {reason}; its ids are not guessed (kept raw)");
            }
            Fetch::Failed(reason) => {
                self.stats.failed += 1;
                if self.outage.as_ref().is_none_or(|o| o.failed <= 1) {
                    eprintln!("pm-markets: could not fetch {slug}: {reason}");
                }
            }
            Fetch::Found(..) | Fetch::NotListed | Fetch::Stopped => {}
        }
    }

    /// Tries the candidate slugs of one window in order; the first listed one wins.
    fn fetch_window(
        &mut self,
        family: Family,
        window: (OffsetDateTime, OffsetDateTime),
    ) -> io::Result<Option<(Market, Option<Box<Resolution>>)>> {
        let candidates = family.slugs(window.0);
        if candidates.iter().all(|s| self.asked.contains(s)) {
            return Ok(None);
        }
        self.asked.extend(candidates.iter().cloned());
        self.stats.windows += 1;
        for slug in &candidates {
            match self.fetch(slug, family, window)? {
                Fetch::Found(m, r) => {
                    self.stats.found += 1;
                    return Ok(Some((*m, r)));
                }
                Fetch::NotListed => continue,
                miss => {
                    self.report_miss(slug, &miss);
                    return Ok(None);
                }
            }
        }
        self.stats.not_listed += 1;
        Ok(None)
    }

    fn pass(&mut self, now: OffsetDateTime) -> io::Result<Vec<(Market, Option<Box<Resolution>>)>> {
        let mut out = Vec::new();
        self.asked.clear();
        for family in self.cfg.families.clone() {
            for window in family.windows(now, self.cfg.ahead) {
                if signal::stop_requested() {
                    return Ok(out);
                }
                if let Some(m) = self.fetch_window(family, window)? {
                    out.push(m);
                }
            }
        }
        Ok(out)
    }

    /// One pass over the wanted windows at `now`: the markets found, in family/window order.
    pub fn once(&mut self, now: OffsetDateTime) -> io::Result<Vec<Market>> {
        Ok(self.pass(now)?.into_iter().map(|(m, _)| m).collect())
    }

    /// Re-fetches a market found earlier (closing, resolution).
    fn refetch(&mut self, m: &Market) -> io::Result<Option<(Market, Option<Box<Resolution>>)>> {
        let (Some(s), Some(e), Some(f)) = (m.window_start(), m.window_end(), m.family) else { return Ok(None) };
        Ok(match self.fetch(&m.slug, f, (s, e))? {
            Fetch::Found(nm, r) => Some((*nm, r)),
            Fetch::NotListed => None,
            miss => {
                self.report_miss(&m.slug, &miss);
                None
            }
        })
    }

    /// One watch pass: returns the lines to emit (market records `new`, `changed`, `expired`, and
    /// resolution records), in emission order.
    pub fn watch_pass(&mut self, now: OffsetDateTime) -> io::Result<Vec<Record>> {
        let mut emit: Vec<Record> = Vec::new();
        let mut seen = self.pass(now)?;
        // Markets found earlier whose window is no longer wanted but not yet expired: re-fetch them so
        // that closing and resolution are reported.
        let wanted: Vec<String> = seen.iter().map(|(m, _)| m.slug.clone()).collect();
        let older: Vec<Market> = self.known.values().filter(|m| !wanted.contains(&m.slug)).cloned().collect();
        for m in older {
            if signal::stop_requested() {
                break;
            }
            if m.window_end().is_some_and(|e| e + self.cfg.keep_after < now) {
                continue;
            }
            if let Some(found) = self.refetch(&m)? {
                seen.push(found);
            }
        }
        for (mut m, r) in seen {
            let change = match self.known.get(&m.slug) {
                None => Some("new"),
                Some(old) if old.state_key() != m.state_key() || old.tokens != m.tokens => Some("changed"),
                Some(_) => None,
            };
            if let Some(c) = change {
                m.change = c.into();
                emit.push(Record::Market(Box::new(m.clone())));
            }
            if m.window_end().is_some_and(|e| e <= now) {
                self.follow(&m, r, now, &mut emit);
            }
            self.known.insert(m.slug.clone(), m);
        }
        let expired: Vec<String> = self
            .known
            .values()
            .filter(|m| m.window_end().map(|e| e + self.cfg.keep_after < now).unwrap_or(true))
            .map(|m| m.slug.clone())
            .collect();
        for slug in expired {
            let mut m = self.known.remove(&slug).expect("present");
            m.change = "expired".into();
            m.fetched_at_utc = clock::fmt_micros(now);
            emit.push(Record::Market(Box::new(m.clone())));
            if !self.pending.contains_key(&slug) {
                self.reported.remove(&slug);
            }
        }
        self.check_pending(now, &mut emit)?;
        Ok(emit)
    }

    /// Notes a fetch of an ended market: reports its resolution once, or keeps it pending.
    fn follow(&mut self, m: &Market, r: Option<Box<Resolution>>, now: OffsetDateTime, emit: &mut Vec<Record>) {
        if self.cfg.resolve_for.is_zero() || self.reported.contains(&m.slug) {
            return;
        }
        match r {
            Some(r) => {
                self.stats.resolved += 1;
                emit.push(Record::Resolution(r));
                self.pending.remove(&m.slug);
                self.reported.insert(m.slug.clone());
            }
            None => {
                let p = self.pending.entry(m.slug.clone()).or_insert(Pending {
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
    fn check_pending(&mut self, now: OffsetDateTime, emit: &mut Vec<Record>) -> io::Result<()> {
        let every = time::Duration::seconds_f64(self.cfg.resolve_every.as_secs_f64());
        let limit = time::Duration::seconds_f64(self.cfg.resolve_for.as_secs_f64());
        let slugs: Vec<String> = self.pending.keys().cloned().collect();
        for slug in slugs {
            if signal::stop_requested() {
                break;
            }
            let p = &self.pending[&slug];
            let end = p.market.window_end().unwrap_or(now);
            if end + limit < now {
                let p = self.pending.remove(&slug).expect("present");
                self.stats.unresolved += 1;
                let mut r = Resolution::of_market(&p.market, "unresolved", p.checks);
                r.fetched_at_utc = clock::fmt_micros(now);
                emit.push(Record::Resolution(Box::new(r)));
                // Reported once: a market still re-fetched as known is not followed again.
                if self.known.contains_key(&slug) {
                    self.reported.insert(slug);
                } else {
                    self.reported.remove(&slug);
                }
                continue;
            }
            if self.known.contains_key(&slug) || p.last_check + every > now {
                continue;
            }
            let m = p.market.clone();
            if let Some((nm, r)) = self.refetch(&m)? {
                self.follow(&nm, r, now, emit);
                if !self.pending.contains_key(&slug) {
                    self.reported.remove(&slug);
                }
            } else if let Some(p) = self.pending.get_mut(&slug) {
                p.last_check = now;
                p.checks += 1;
            }
        }
        Ok(())
    }

    /// `--once`: one pass at `now`, every market found written to `out`, the summary on stderr.
    /// Returns true when a window failed or its record was malformed or of an unknown version.
    pub fn run_once<W: Write>(&mut self, now: OffsetDateTime, out: &mut LineWriter<W>) -> io::Result<bool> {
        for m in self.once(now)? {
            out.write(&m)?;
        }
        eprintln!("pm-markets: {}", self.summary());
        Ok(self.stats.failed + self.stats.malformed + self.stats.unknown_version > 0)
    }

    /// `--watch`: a pass every `every` (drift-free: pass k starts at start + k·every) until a stop is
    /// requested, each pass's lines written to `out`. The summary goes to stderr when a pass added a
    /// failure outside an outage (an outage reports itself), and once more at the end.
    pub fn run_watch<W: Write>(&mut self, every: Duration, out: &mut LineWriter<W>) -> io::Result<()> {
        let start = Instant::now();
        let mut k: u32 = 0;
        let bad = |s: &Stats| s.failed + s.malformed + s.unknown_version;
        while !signal::stop_requested() {
            let before = bad(&self.stats);
            for m in self.watch_pass(clock::now())? {
                out.write(&m)?;
            }
            if bad(&self.stats) > before && !self.in_outage() {
                eprintln!("pm-markets: {}", self.summary());
            }
            k += 1;
            let due = start + every * k;
            let now = Instant::now();
            if due > now && !signal::sleep(due - now) {
                break;
            }
        }
        eprintln!("pm-markets: stopped by signal {}; {}", signal::last_signal(), self.summary());
        Ok(())
    }

    /// Markets followed for their resolution right now.
    pub fn pending_resolutions(&self) -> usize {
        self.pending.len()
    }

    pub fn summary(&self) -> String {
        let s = &self.stats;
        let mut line = format!(
            "{} windows: {} found, {} not listed yet, {} malformed, {} failed; {} HTTP attempts",
            s.windows, s.found, s.not_listed, s.malformed, s.failed, s.requests
        );
        if s.unknown_version > 0 {
            line.push_str(&format!("; {} with an unsupported version", s.unknown_version));
        }
        if s.resolved + s.unresolved > 0 || !self.pending.is_empty() {
            line.push_str(&format!(
                "; resolutions: {} reported, {} unresolved when --resolve-for ran out, {} pending",
                s.resolved,
                s.unresolved,
                self.pending.len()
            ));
        }
        line
    }
}
