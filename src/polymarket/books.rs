//! `pm-books`' engine: poll the order books of the tracked BTC up/down markets with batched
//! `POST {clob}/books` on a drift-free schedule, and write every exchange, every gap and every
//! tracking change as a raw envelope (`pmarchive.raw/1`, docs/DATA_CONTRACT.md).
//!
//! - Market records (`pmarchive.market/1`, from `pm-markets --watch`) arrive on a channel fed by a
//!   reader thread ([`crate::feed::spawn_reader`]), so polling never waits on stdin.
//! - A market is tracked from `lead` before its window start until `grace` after its window end, or
//!   until the venue no longer has its books (after the window end, a token absent from
//!   [`Config::gone_after`] consecutive successful replies stops being polled: `book_gone`) or a
//!   record says it is closed. The window is judged on both the wall clock and the monotonic clock
//!   ([`crate::track`]), so a wall-clock step never stops a live market.
//! - An outage (requests without a usable reply) is announced by one stderr line when it starts and
//!   one when it ends ([`Outage`]).
//! - Slot k is due at t0 + k·interval (monotonic clock). Retries inside a slot never wait past the next
//!   slot's due time. Slots that could not start because an earlier one overran are recorded as one
//!   `missed_slots` gap; a slot without a usable reply as `failed_request`; a token asked for and absent
//!   from a 200 reply as `missing_token`.
//! - Replies are matched to tokens by `asset_id`, never by position.
//! - Memory stays bounded: a market is forgotten once it stops being tracked (a market stopped on
//!   venue evidence is remembered until its window end + grace, so that a late record update does
//!   not restart it; any other market that is still live is restarted by its next record).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::envelope::Sequencer;
use crate::feed::{self, Fed, Input};
use crate::http::{Client, Request, Verdict};
use crate::jsonl::LineWriter;
use crate::polymarket::market::{Market, Token};
use crate::schedule::{self, Schedule, Slotted};
use crate::signal;
use crate::track::{Action, GapCtx, GapKind, Now, Phase, Reason, TrackCtx, Window};

/// The caller's part of the `ctx` of pm-books' http lines (one `POST /books` of a slot); the
/// client adds its retry fields ([`crate::http::HttpCtx`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PollCtx {
    /// Slot k is due at t0 + k·interval.
    pub slot: u64,
    pub due_at_utc: String,
    /// The ids asked for, in request order.
    pub token_ids: Vec<String>,
    /// 1-based, of `batches` requests in this slot.
    pub batch: usize,
    pub batches: usize,
}

/// The most tokens one `POST /books` may ask for (the venue answers 400 above it, facts §4.2).
pub const MAX_BATCH: usize = 500;

#[derive(Clone, Debug)]
pub struct Config {
    /// CLOB base URL (no trailing slash).
    pub clob_url: String,
    pub interval: Duration,
    /// Start tracking this long before the window start.
    pub lead: Duration,
    /// Stop tracking this long after the window end.
    pub grace: Duration,
    /// Tokens per request (1..=500).
    pub batch: usize,
    /// Stop after this long (None: run until a signal or the end of the input).
    pub duration: Option<Duration>,
    /// After the window end, a token absent from this many consecutive successful replies is gone.
    pub gone_after: u32,
}

impl Config {
    /// The defaults of the CLI (clob.polymarket.com, 1 s, lead 60 s, grace 120 s, batch 500).
    pub fn new(clob_url: impl Into<String>) -> Config {
        Config {
            clob_url: clob_url.into(),
            interval: Duration::from_secs(1),
            lead: Duration::from_secs(60),
            grace: Duration::from_secs(120),
            batch: MAX_BATCH,
            duration: None,
            gone_after: 3,
        }
    }
}

/// The per-request timeout used when `--timeout` is not given: 5 intervals, at least 2 s, at most
/// 15 s (a full 500-token reply took 3.2 s when measured, facts §4.2).
pub fn default_timeout(interval: Duration) -> Duration {
    (interval * 5).clamp(Duration::from_secs(2), Duration::from_secs(15))
}

use crate::poll::{failure_text, Outage, SlotLines};
pub use crate::schedule::End;

/// Counters of one run (the summary line).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Slots started.
    pub slots: u64,
    /// Slots that could not start because an earlier one overran.
    pub slots_missed: u64,
    /// Slots that sent at least one request.
    pub slots_polled: u64,
    /// HTTP attempts by status (`none` when no reply arrived).
    pub requests: BTreeMap<String, u64>,
    pub gaps: BTreeMap<&'static str, u64>,
    /// Outages (see [`Outage`]) that started.
    pub outages: u64,
    /// Markets that started being tracked.
    pub markets_tracked: u64,
    pub input_lines: u64,
    pub input_bad: u64,
    /// Records that changed nothing: `expired` records of unknown markets, updates of markets that
    /// already stopped, markets whose window + grace was over when they arrived.
    pub input_ignored: u64,
}

/// Polling state of one token of a tracked market.
#[derive(Clone, Debug)]
struct TokenState {
    token: Token,
    gone: bool,
    /// Consecutive successful replies after the window end that lacked this token.
    misses: u32,
}

/// A market known to the poller (pending or tracked).
#[derive(Clone, Debug)]
struct Entry {
    market: Market,
    window: Window,
    tracked: bool,
    tokens: Vec<TokenState>,
}

impl Entry {
    fn new(market: Market, cfg: &Config) -> Option<Entry> {
        let window = Window::of(&market, cfg.lead, cfg.grace)?;
        let tokens = market.tokens.iter().map(|t| TokenState { token: t.clone(), gone: false, misses: 0 }).collect();
        Some(Entry { market, window, tracked: false, tokens })
    }

    /// The tokens still polled.
    fn live_tokens(&self) -> Vec<Token> {
        self.tokens.iter().filter(|t| !t.gone).map(|t| t.token.clone()).collect()
    }

    fn closed(&self) -> bool {
        self.market.closed == Some(true)
    }
}

/// Only the field replies are matched on; the rest of each book is skipped, not parsed.
#[derive(Deserialize)]
struct BookId {
    #[serde(default)]
    asset_id: Option<String>,
}

/// One token asked for in a request: which market and outcome it belongs to.
#[derive(Clone, Debug)]
struct Asked {
    token_id: String,
    slug: String,
    outcome: String,
}

pub struct Poller<W: Write> {
    cfg: Config,
    client: Client,
    lines: SlotLines<W>,
    input: Receiver<Input<Market>>,
    input_done: bool,
    /// Pending and tracked markets, by slug.
    markets: HashMap<String, Entry>,
    /// Slugs stopped on venue evidence (book_gone, closed) → their tracking window end (end + grace),
    /// until which a record of them restarts nothing.
    finished: HashMap<String, OffsetDateTime>,
    outage: Outage,
    pub stats: Stats,
}

impl<W: Write> Poller<W> {
    pub fn new(
        cfg: Config,
        client: Client,
        seq: Sequencer,
        out: LineWriter<W>,
        input: Receiver<Input<Market>>,
    ) -> Poller<W> {
        let lines = SlotLines::new(seq, out, cfg.interval, format!("{}/books", cfg.clob_url));
        Poller {
            cfg,
            client,
            lines,
            input,
            input_done: false,
            markets: HashMap::new(),
            finished: HashMap::new(),
            outage: Outage::default(),
            stats: Stats::default(),
        }
    }

    /// Runs the schedule until a signal, the duration, or the end of the input; then writes the stop
    /// records of what is still tracked. I/O errors (e.g. a closed stdout) end it.
    pub fn run(&mut self) -> io::Result<End> {
        self.lines.sched = Schedule::new(self.cfg.interval);
        let (end, k) = schedule::run(self, &self.lines.sched.clone(), self.cfg.duration)?;
        self.stop_all(end, k)?;
        self.lines.out.flush()?;
        Ok(end)
    }

    /// Starts and stops tracking by the tracking window (window start − lead, window end + grace,
    /// judged on both clocks: [`Window::phase`]) and by a record saying the market is closed.
    fn update_tracking(&mut self, k: u64, now: Now) -> io::Result<()> {
        self.finished.retain(|_, until| !now.passed(*until));
        let mut slugs: Vec<String> = self.markets.keys().cloned().collect();
        slugs.sort_by_key(|s| (self.markets[s].window.start, s.clone()));
        for slug in slugs {
            let e = &self.markets[&slug];
            let stop = match e.window.phase(&now) {
                Phase::Over => Some(Reason::GraceElapsed),
                _ if e.closed() => Some(Reason::Closed),
                _ => None,
            };
            if let Some(reason) = stop {
                let e = self.markets.remove(&slug).expect("present");
                if e.tracked {
                    self.write_track(k, &e.market, Action::Stop, reason, e.live_tokens())?;
                    if reason == Reason::Closed {
                        self.finished.insert(slug, e.window.until);
                    }
                } else {
                    // Closed before it started, or its whole tracking span passed between two slots
                    // (possible only when slots were missed): never polled.
                    self.stats.input_ignored += 1;
                }
            } else if !e.tracked && e.window.phase(&now) == Phase::Open {
                let (market, toks) = (e.market.clone(), e.market.tokens.clone());
                self.markets.get_mut(&slug).expect("present").tracked = true;
                self.stats.markets_tracked += 1;
                self.write_track(k, &market, Action::Start, Reason::Window, toks)?;
            }
        }
        Ok(())
    }

    /// The tokens to ask for in this slot, in a stable order (window start, slug, outcome order);
    /// a token listed by two markets is asked for once.
    fn asked_tokens(&self) -> Vec<Asked> {
        let mut entries: Vec<&Entry> = self.markets.values().filter(|e| e.tracked).collect();
        entries.sort_by(|a, b| (a.window.start, &a.market.slug).cmp(&(b.window.start, &b.market.slug)));
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for e in entries {
            for t in e.tokens.iter().filter(|t| !t.gone) {
                if seen.insert(t.token.token_id.clone()) {
                    out.push(Asked {
                        token_id: t.token.token_id.clone(),
                        slug: e.market.slug.clone(),
                        outcome: t.token.outcome.clone(),
                    });
                }
            }
        }
        out
    }

    /// Polls every tracked token once, in batches.
    fn poll_slot(&mut self, k: u64) -> io::Result<()> {
        let asked = self.asked_tokens();
        if asked.is_empty() {
            return Ok(());
        }
        // The venue asked us to back off (429/5xx/network errors in a row) for longer than this slot:
        // do not send; record the slot as a gap instead (the client honours Retry-After across slots).
        if let Some((until, reason)) = self.client.backoff_until("books") {
            if until > self.lines.sched.due(k + 1) {
                let wait = until.saturating_duration_since(Instant::now()).as_secs_f64();
                let mut ctx = GapCtx::new(GapKind::Backoff);
                ctx.token_ids = Some(asked.iter().map(|a| a.token_id.clone()).collect());
                ctx.backoff_s = Some((wait * 1000.0).round() / 1000.0);
                return self.write_gap(k, ctx, format!("not polled: backing off for {wait:.3} s more after {reason}"));
            }
        }
        self.stats.slots_polled += 1;
        let batches: Vec<&[Asked]> = asked.chunks(self.cfg.batch).collect();
        let n = batches.len();
        for (i, batch) in batches.into_iter().enumerate() {
            // After SIGTERM/SIGINT: the request in flight was finished; start no more (the stop
            // records written at the end say why polling ended).
            if i > 0 && signal::stop_requested() {
                break;
            }
            self.poll_batch(k, batch, i + 1, n)?;
        }
        Ok(())
    }

    /// One `POST /books` (with retries until the next slot is due), its envelopes and its gaps.
    fn poll_batch(&mut self, k: u64, batch: &[Asked], i: usize, n: usize) -> io::Result<()> {
        let ids: Vec<&str> = batch.iter().map(|a| a.token_id.as_str()).collect();
        let req = Request::post_books(self.lines.endpoint_url.clone(), &ids);
        let ctx = PollCtx {
            slot: k,
            due_at_utc: self.lines.sched.due_utc(k),
            token_ids: ids.iter().map(|t| t.to_string()).collect(),
            batch: i,
            batches: n,
        };
        let deadline = self.lines.sched.due(k + 1);
        let (last, failed) = self.lines.execute(&self.client, &req, deadline, &ctx, &mut self.stats.requests)?;
        let received = match (&last.verdict, last.json_text()) {
            (Verdict::Ok, Some(text)) => serde_json::from_str::<Vec<BookId>>(text)
                .map(|books| books.into_iter().filter_map(|b| b.asset_id).collect::<HashSet<String>>())
                .map_err(|e| format!("status {} reply is not a JSON array of books: {e}", last.status.unwrap_or(0))),
            _ => Err(failure_text(&last)),
        };
        match received {
            Ok(got) => {
                if let Some(line) = self.outage.succeeded(failed, &self.lines.endpoint_url) {
                    eprintln!("pm-books: {line}");
                }
                self.after_reply(k, batch, &got)
            }
            Err(why) => {
                // A 200 whose body is not a JSON array counts as a failed attempt too.
                let failed = failed.max(1);
                if let Some(line) = self.outage.failed(failed, &self.lines.endpoint_url, &why, self.cfg.interval) {
                    self.stats.outages += 1;
                    eprintln!("pm-books: {line}");
                }
                let mut ctx = GapCtx::new(GapKind::FailedRequest);
                ctx.token_ids = Some(ids.iter().map(|t| t.to_string()).collect());
                if n > 1 {
                    (ctx.batch, ctx.batches) = (Some(i), Some(n));
                }
                self.write_gap(k, ctx, why)
            }
        }
    }

    /// Matches a successful reply to the tokens asked for (by `asset_id`): gaps for the missing
    /// ones, and `book_gone` stops for tokens missing too long after their window end.
    fn after_reply(&mut self, k: u64, batch: &[Asked], got: &HashSet<String>) -> io::Result<()> {
        let mut gone: Vec<(String, Token)> = Vec::new();
        let now = Now::read();
        for a in batch {
            let present = got.contains(&a.token_id);
            if !present {
                let mut ctx = GapCtx::new(GapKind::MissingToken);
                (ctx.token_id, ctx.slug, ctx.outcome) =
                    (Some(a.token_id.clone()), Some(a.slug.clone()), Some(a.outcome.clone()));
                self.write_gap(k, ctx, "token asked for is absent from the 200 reply".to_string())?;
            }
            let gone_after = self.cfg.gone_after;
            let Some(e) = self.markets.get_mut(&a.slug) else { continue };
            let after_end = e.window.ended(&now);
            let Some(t) = e.tokens.iter_mut().find(|t| t.token.token_id == a.token_id) else { continue };
            if present {
                t.misses = 0;
            } else if after_end {
                t.misses += 1;
                if t.misses >= gone_after {
                    t.gone = true;
                    gone.push((a.slug.clone(), t.token.clone()));
                }
            }
        }
        // One stop record per market, listing the tokens that stop being polled.
        let mut by_slug: BTreeMap<String, Vec<Token>> = BTreeMap::new();
        for (slug, tok) in gone {
            by_slug.entry(slug).or_default().push(tok);
        }
        for (slug, toks) in by_slug {
            let market = self.markets[&slug].market.clone();
            self.write_track(k, &market, Action::Stop, Reason::BookGone, toks)?;
            if self.markets[&slug].tokens.iter().all(|t| t.gone) {
                let e = self.markets.remove(&slug).expect("present");
                self.finished.insert(slug, e.window.until);
            }
        }
        Ok(())
    }

    /// Writes the stop records of everything still tracked (end of run).
    fn stop_all(&mut self, end: End, k: u64) -> io::Result<()> {
        let mut tracked: Vec<Entry> = self.markets.values().filter(|e| e.tracked).cloned().collect();
        tracked.sort_by(|a, b| (a.window.start, &a.market.slug).cmp(&(b.window.start, &b.market.slug)));
        for e in tracked {
            self.write_track(k, &e.market, Action::Stop, end.reason(), e.live_tokens())?;
        }
        Ok(())
    }

    fn write_track(
        &mut self,
        k: u64,
        m: &Market,
        action: Action,
        reason: Reason,
        tokens: Vec<Token>,
    ) -> io::Result<()> {
        self.lines.track(k, TrackCtx::new(action, reason, m, tokens))
    }

    /// Markets currently tracked.
    pub fn tracked(&self) -> usize {
        self.markets.values().filter(|e| e.tracked).count()
    }

    /// The one-line summary printed on stderr at exit.
    pub fn summary(&self, end: End) -> String {
        self.stats.summary(end, &self.outage, self.tracked())
    }
}

impl Stats {
    /// The one-line summary of a slot-polling run (pm-books, kalshi-books) that ended with `end`,
    /// `tracked` markets still tracked.
    pub fn summary(&self, end: End, outage: &Outage, tracked: usize) -> String {
        let s = self;
        let join = |m: Vec<String>| if m.is_empty() { "none".to_string() } else { m.join(" ") };
        let requests = join(s.requests.iter().map(|(k, v)| format!("{k}:{v}")).collect());
        let gaps = join(s.gaps.iter().map(|(k, v)| format!("{k}:{v}")).collect());
        let ended = end.describe();
        let outage = match outage.ongoing() {
            Some((secs, n)) => {
                format!("; outages {} (one still going on for {secs:.1} s, {n} failed attempts)", s.outages)
            }
            None => format!("; outages {}", s.outages),
        };
        format!(
            "{ended}; slots {} ({} polled, {} missed); requests {requests}; gaps {gaps}; markets tracked {} (still tracked at exit {}); input lines {} ({} bad, {} ignored){outage}",
            s.slots,
            s.slots_polled,
            s.slots_missed,
            s.markets_tracked,
            tracked,
            s.input_lines,
            s.input_bad,
            s.input_ignored
        )
    }
}

impl<W: Write> Fed for Poller<W> {
    type Market = Market;
    const TOOL: &'static str = "pm-books";

    fn input(&self) -> Receiver<Input<Market>> {
        self.input.clone()
    }

    fn count_input(&mut self, bad: bool) {
        self.stats.input_lines += 1;
        self.stats.input_bad += u64::from(bad);
    }

    /// Stores a market record: a new market, or an update that replaces the stored record.
    fn accept(&mut self, k: u64, m: Market) -> io::Result<()> {
        let slug = m.slug.clone();
        if self.finished.contains_key(&slug) {
            self.stats.input_ignored += 1;
            return Ok(());
        }
        // `expired` only says pm-markets stopped watching: tracking keeps its own lead/grace.
        let informational = m.change == "expired";
        let Some(new) = Entry::new(m, &self.cfg) else {
            self.stats.input_ignored += 1;
            return Ok(());
        };
        // Too late to matter (its tracking window is over on both clocks, or the venue closed it):
        // nothing to do. Any other record of a market not known (any more) starts it.
        if !self.markets.contains_key(&slug) && (new.window.phase(&Now::read()) == Phase::Over || new.closed()) {
            self.stats.input_ignored += 1;
            return Ok(());
        }
        match self.markets.get_mut(&slug) {
            None if informational => self.stats.input_ignored += 1,
            None => {
                self.markets.insert(slug, new);
            }
            Some(old) if old.market.tokens == new.market.tokens => {
                old.market = new.market;
                old.window = new.window;
            }
            Some(old) => {
                // Different tokens for the same slug: stop the old ones, start over with the new.
                let was_tracked = old.tracked;
                let old = std::mem::replace(old, new);
                if was_tracked {
                    self.write_track(k, &old.market, Action::Stop, Reason::TokensChanged, old.live_tokens())?;
                }
            }
        }
        Ok(())
    }

    fn write_gap(&mut self, k: u64, ctx: GapCtx, error: String) -> io::Result<()> {
        *self.stats.gaps.entry(ctx.gap.name()).or_default() += 1;
        self.lines.gap(k, ctx, error)
    }
}

impl<W: Write> Slotted for Poller<W> {
    fn write_missed(&mut self, k: u64, from: u64, to: u64) -> io::Result<()> {
        self.stats.slots_missed += to - from + 1;
        *self.stats.gaps.entry(GapKind::MissedSlots.name()).or_default() += 1;
        self.lines.missed(k, from, to, "slow reply or retries")
    }

    fn slot(&mut self, k: u64) -> io::Result<bool> {
        self.stats.slots += 1;
        self.input_done |= feed::drain_input(self, k)?;
        self.update_tracking(k, Now::read())?;
        if self.input_done && self.markets.is_empty() {
            return Ok(false);
        }
        self.poll_slot(k)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timeout_is_clamped() {
        assert_eq!(default_timeout(Duration::from_millis(200)), Duration::from_secs(2));
        assert_eq!(default_timeout(Duration::from_secs(1)), Duration::from_secs(5));
        assert_eq!(default_timeout(Duration::from_secs(10)), Duration::from_secs(15));
    }
}
