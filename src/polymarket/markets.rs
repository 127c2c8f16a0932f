//! `pm-markets`' engine: compute the slugs of the current and next windows of each family, fetch
//! them from Gamma (`GET /markets/slug/{slug}`), parse, and report what appeared, changed or expired.
//! After a market's window ends, watch mode keeps re-checking it (every `resolve_every`, for at most
//! `resolve_for`) until Gamma says it is resolved, and reports the outcome once. Every HTTP attempt
//! goes to the raw sink as an envelope, whatever happened. An outage (a request that gave up after
//! its retries) is reported on stderr once when it starts and once when it ends.

use std::io::{self, Write};
use std::time::Duration;

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
use crate::watch::{self, Engine, Outage, Watch, Watched};

/// A market and its resolution when Gamma already reports one.
type Found = watch::Found<Market>;

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
pub type Record = watch::Line<Market, Resolution>;

impl Watched for Market {
    type Resolution = Resolution;
    fn key(&self) -> &str {
        &self.slug
    }
    fn window_end(&self) -> Option<OffsetDateTime> {
        Market::window_end(self)
    }
    fn changed_from(&self, old: &Market) -> bool {
        old.state_key() != self.state_key() || old.tokens != self.tokens
    }
    fn set_change(&mut self, change: &str) {
        self.change = change.into();
    }
    fn set_fetched_at(&mut self, at: &str) {
        self.fetched_at_utc = at.into();
    }
    fn unresolved(&self, checks: u32) -> Resolution {
        Resolution::of_market(self, "unresolved", checks)
    }
    fn set_checks(r: &mut Resolution, checks: u32) {
        r.checks = checks;
    }
    fn set_resolution_fetched_at(r: &mut Resolution, at: &str) {
        r.fetched_at_utc = at.into();
    }
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

/// Gamma's side of pm-markets: the requests, their raw lines, the counters and the outage lines.
struct Gamma {
    cfg: Config,
    client: Client,
    seq: Sequencer,
    raw: Option<LineWriter<Box<dyn Write + Send>>>,
    /// Slugs already asked for in the current pass (the ET hour that happens twice on the DST
    /// fall-back day maps two UTC windows to one hourly slug).
    asked: std::collections::HashSet<String>,
    outage: Outage,
    /// Markets watch mode follows right now (what an outage line says stands).
    followed: usize,
    stats: Stats,
}

pub struct Discoverer {
    gamma: Gamma,
    watch: Watch<Market>,
}

impl Gamma {
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
        let fetch = match (&last.verdict, last.status) {
            (Verdict::Ok, _) => {
                let text = last.json_text().unwrap_or("null");
                match serde_json::from_str::<Value>(text) {
                    Err(e) => Fetch::Malformed(e.to_string()),
                    Ok(v) => match market::id_field(&v) {
                        Err(e) => Fetch::UnknownVersion(e),
                        Ok(_) => match market::parse_gamma_market(&v, &url, last.received_at) {
                            // The resolution's `checks` is set by the watch (watch::Watched::set_checks).
                            Ok(m) if m.slug == slug => {
                                let r = market::resolution_of(&v, &m, 1).map(Box::new);
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
        match &fetch {
            Fetch::Failed(reason) => {
                self.outage.failed(reason, last.received_at, self.followed, self.client.cfg.backoff_max)
            }
            Fetch::Stopped => {}
            _ => self.outage.answered(last.received_at),
        }
        Ok(fetch)
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
                if !self.outage.quiet() {
                    eprintln!("pm-markets: could not fetch {slug}: {reason}");
                }
            }
            Fetch::Found(..) | Fetch::NotListed | Fetch::Stopped => {}
        }
    }

    /// Tries the candidate slugs of one window in order; the first listed one wins.
    fn fetch_window(&mut self, family: Family, window: (OffsetDateTime, OffsetDateTime)) -> io::Result<Option<Found>> {
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

    fn pass(&mut self, now: OffsetDateTime) -> io::Result<Vec<Found>> {
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

    /// Re-fetches a market found earlier (closing, resolution).
    fn refetch(&mut self, m: &Market) -> io::Result<Option<Found>> {
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
}

impl Discoverer {
    pub fn new(cfg: Config, client: Client, seq: Sequencer, raw: Option<Box<dyn Write + Send>>) -> Discoverer {
        let watch = Watch::new(cfg.keep_after, cfg.resolve_every, cfg.resolve_for);
        let gamma = Gamma {
            cfg,
            client,
            seq,
            raw: raw.map(|w| LineWriter::new(w, true)),
            asked: Default::default(),
            outage: Outage::new("pm-markets", "Gamma"),
            followed: 0,
            stats: Stats::default(),
        };
        Discoverer { gamma, watch }
    }

    /// The run's counters so far.
    pub fn stats(&self) -> &Stats {
        &self.gamma.stats
    }

    /// One pass over the wanted windows at `now`: the markets found, in family/window order.
    pub fn once(&mut self, now: OffsetDateTime) -> io::Result<Vec<Market>> {
        Ok(self.gamma.pass(now)?.into_iter().map(|(m, _)| m).collect())
    }

    /// `--once`: one pass at `now`, every market found written to `out`, the summary on stderr.
    /// Returns true when a window failed or its record was malformed or of an unknown version.
    pub fn run_once<W: Write>(&mut self, now: OffsetDateTime, out: &mut LineWriter<W>) -> io::Result<bool> {
        for m in self.once(now)? {
            out.write(&m)?;
        }
        eprintln!("pm-markets: {}", self.summary());
        Ok(self.bad() > 0)
    }

    /// `--watch`: see [`watch::run`] (no `--duration`: until a stop is requested).
    pub fn run_watch<W: Write>(&mut self, every: Duration, out: &mut LineWriter<W>) -> io::Result<()> {
        watch::run(self, every, None, out)
    }

    /// Markets followed for their resolution right now.
    pub fn pending_resolutions(&self) -> usize {
        self.watch.pending()
    }
}

impl Engine for Discoverer {
    const TOOL: &'static str = "pm-markets";
    type Line = Record;

    /// One watch pass: the lines to emit (market records `new`, `changed`, `expired`, and
    /// resolution records), in emission order.
    fn watch_pass(&mut self, now: OffsetDateTime) -> io::Result<Vec<Record>> {
        self.gamma.followed = self.watch.followed();
        let seen = self.gamma.pass(now)?;
        let gamma = &mut self.gamma;
        self.watch.pass(seen, now, |m, followed| {
            gamma.followed = followed;
            gamma.refetch(m)
        })
    }

    fn bad(&self) -> u64 {
        let s = &self.gamma.stats;
        s.failed + s.malformed + s.unknown_version
    }

    fn in_outage(&self) -> bool {
        self.gamma.outage.active()
    }

    fn summary(&self) -> String {
        let s = &self.gamma.stats;
        let mut line = format!(
            "{} windows: {} found, {} not listed yet, {} malformed, {} failed; {} HTTP attempts",
            s.windows, s.found, s.not_listed, s.malformed, s.failed, s.requests
        );
        if s.unknown_version > 0 {
            line.push_str(&format!("; {} with an unsupported version", s.unknown_version));
        }
        line + &self.watch.summary()
    }
}
