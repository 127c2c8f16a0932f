//! `pm-trades`' engine: walk the Data API trade feed (`GET {data-api}/v2/trades`) of the tracked BTC
//! up/down markets and write every page, every gap and every tracking change as a raw envelope
//! (`pmarchive.raw/1`, stream `trades`; docs/TRADES.md has the venue facts this relies on).
//!
//! - Market records arrive on a channel fed by the shared reader thread ([`crate::feed`]).
//! - A market is tracked from `lead` before its window start until `settle` after its window end,
//!   judged on both clocks ([`crate::track::Window`]). While tracked it is polled every slot: one
//!   request per batch of at most [`MAX_CONDITIONS`] condition ids, `taker_only=false`.
//! - **Stop rule** of a poll walk: pages are followed (`pagination.next_cursor`) until a page holds a
//!   row already seen in a *completed* walk of the same markets, or `has_more` is false. A walk that
//!   failed half-way commits nothing, so the next walk goes at least as deep again (the rows are
//!   fetched twice; the raw keeps both, the derived rows deduplicate). A market whose first walk has
//!   not completed yet is walked to the end of its feed.
//! - **Final sweep**: once window end + `settle` has passed on both clocks, the market's whole feed
//!   is walked once more to the end with `taker_only=false`, then with `taker_only=true` (the venue's
//!   own taker rows, from which the derived rows take their maker/taker role); then it stops
//!   (`grace_elapsed`). A sweep that fails is retried at the next slots, [`FINAL_TRIES`] times in all.
//! - Slot k is due at t0 + k·interval (monotonic clock, no drift); slots an overrunning walk skipped
//!   are one `missed_slots` gap. A slot inside a backoff the venue asked for is a `backoff` gap.
//! - SIGTERM/SIGINT: the request in flight is finished, no further page is asked for.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::Sequencer;
use crate::feed::{self, Fed, Input};
use crate::http::{Client, Request, Verdict};
use crate::jsonl::LineWriter;
use crate::poll::{failure_text, Outage, SlotLines};
use crate::polymarket::market::Market;
use crate::schedule::{self, End, Schedule, Slotted};
use crate::signal;
use crate::track::{Action, GapCtx, GapKind, Now, Phase, Reason, Sweep, TrackCtx, Walk, Window};

/// The real Data API host.
pub const DEFAULT_DATA_URL: &str = "https://data-api.polymarket.com";
/// The most condition ids one `/v2/trades` request may name ("at most 20 distinct values").
pub const MAX_CONDITIONS: usize = 20;
/// The largest documented page size (`limit` 0..=1000, "rejected-not-clamped").
pub const MAX_PAGE: u32 = 1000;
/// Tries of a market's final sweep (one per slot) before it stops with the failure recorded.
pub const FINAL_TRIES: u32 = 3;
/// A walk never follows more pages than this (a cursor loop on the venue's side ends as a gap).
pub const MAX_PAGES: u32 = 10_000;

#[derive(Clone, Debug)]
pub struct Config {
    /// Data API base URL (no trailing slash).
    pub data_url: String,
    pub interval: Duration,
    pub lead: Duration,
    /// The final sweep is due this long after the window end.
    pub settle: Duration,
    /// Condition ids per request (1..=20).
    pub batch: usize,
    /// `limit` of a poll walk's first page (1..=1000); the final sweep asks for [`MAX_PAGE`].
    pub page_size: u32,
    pub duration: Option<Duration>,
}

impl Config {
    /// The CLI defaults: every 5 s, lead 0, settle 120 s, 20 conditions, 100 rows a poll page.
    pub fn new(data_url: impl Into<String>) -> Config {
        Config {
            data_url: data_url.into(),
            interval: Duration::from_secs(5),
            lead: Duration::ZERO,
            settle: Duration::from_secs(120),
            batch: MAX_CONDITIONS,
            page_size: 100,
            duration: None,
        }
    }
}

/// The `ctx` of a trades page's http line (with the client's retry fields, [`crate::http::HttpCtx`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PageCtx {
    /// Slot k is due at t0 + k·interval.
    pub slot: u64,
    pub due_at_utc: String,
    pub walk: Walk,
    /// 1-based within the walk.
    pub page: u32,
    /// The markets asked for, in request order, and their slugs.
    pub condition_ids: Vec<String>,
    pub slugs: Vec<String>,
    pub taker_only: bool,
}

/// The fields of a Data API row that identify a fill (docs/TRADES.md, "Deduplication key"). The row
/// has no trade id, so the key is the fill's content; values are kept as the venue wrote them.
#[derive(Debug, Default, Deserialize)]
pub struct RowId {
    #[serde(default)]
    pub transaction_hash: Value,
    #[serde(default)]
    pub token_id: Value,
    #[serde(default)]
    pub condition_id: Value,
    #[serde(default)]
    pub proxy_wallet: Value,
    #[serde(default)]
    pub side: Value,
    #[serde(default)]
    pub price: Value,
    #[serde(default)]
    pub size: Value,
    #[serde(default)]
    pub timestamp: Value,
}

/// The deduplication key of a Data API row: transaction hash, token, wallet, side, price, size and
/// timestamp, as the venue wrote them, joined by `|`.
pub fn row_key(r: &RowId) -> String {
    let t = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    [&r.transaction_hash, &r.token_id, &r.proxy_wallet, &r.side, &r.price, &r.size, &r.timestamp].map(t).join("|")
}

/// The paging part of a `/v2/trades` reply.
#[derive(Debug, Deserialize)]
pub struct Pagination {
    #[serde(default)]
    pub has_more: Option<bool>,
    #[serde(default)]
    pub next_cursor: Option<Value>,
}

/// A `/v2/trades` reply: `{data: [...], pagination: {...}}`.
#[derive(Debug, Deserialize)]
pub struct Page {
    pub data: Option<Vec<RowId>>,
    pub pagination: Option<Pagination>,
}

/// Counters of one run (the summary line).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub slots: u64,
    pub slots_missed: u64,
    /// HTTP attempts by status (`none` when no reply arrived).
    pub requests: BTreeMap<String, u64>,
    pub pages: u64,
    pub rows: u64,
    /// Rows not seen before in this run (by [`row_key`]).
    pub rows_new: u64,
    pub walks_complete: u64,
    pub walks_incomplete: u64,
    pub gaps: BTreeMap<&'static str, u64>,
    pub outages: u64,
    pub markets_tracked: u64,
    pub markets_swept: u64,
    /// Σ over slots of interval × markets tracked (for the request rate per tracked market).
    pub tracked_secs: f64,
    pub input_lines: u64,
    pub input_bad: u64,
    pub input_ignored: u64,
}

impl Stats {
    /// All HTTP attempts.
    pub fn attempts(&self) -> u64 {
        self.requests.values().sum()
    }
}

#[derive(Clone, Debug)]
struct Entry {
    market: Market,
    window: Window,
    tracked: bool,
    /// A walk naming this market reached its stop (the feed end or rows seen before).
    completed: bool,
    /// Keys of the rows committed by completed walks.
    seen: HashSet<String>,
    final_tries: u32,
}

/// How a walk ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Complete,
    Incomplete,
}

pub struct Poller<W: Write> {
    cfg: Config,
    client: Client,
    lines: SlotLines<W>,
    input: Receiver<Input<Market>>,
    input_done: bool,
    /// Pending and tracked markets, by condition id.
    markets: HashMap<String, Entry>,
    /// Condition ids swept and stopped (a later record of them restarts nothing).
    finished: HashSet<String>,
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
        let lines = SlotLines::new(seq, out, cfg.interval, format!("{}/v2/trades", cfg.data_url));
        Poller {
            client,
            lines,
            input,
            input_done: false,
            markets: HashMap::new(),
            finished: HashSet::new(),
            outage: Outage::default(),
            cfg,
            stats: Stats::default(),
        }
    }

    /// Runs the schedule until a signal, the duration, or the end of the input (once nothing is
    /// tracked or waiting); then writes the stop records of what is still tracked.
    pub fn run(&mut self) -> io::Result<End> {
        self.lines.sched = Schedule::new(self.cfg.interval);
        let (end, k) = schedule::run(self, &self.lines.sched.clone(), self.cfg.duration)?;
        let mut tracked: Vec<Entry> = self.markets.values().filter(|e| e.tracked).cloned().collect();
        tracked.sort_by(|a, b| (a.window.start, &a.market.slug).cmp(&(b.window.start, &b.market.slug)));
        for e in tracked {
            self.write_track(k, &e.market, Action::Stop, end.reason(), None)?;
        }
        self.lines.out.flush()?;
        Ok(end)
    }

    /// Stores a market record (new, or an update of a known market's record).
    fn store(&mut self, m: Market) {
        let cid = m.condition_id.clone();
        if self.finished.contains(&cid) || !crate::polymarket::market::is_valid_condition_id(&cid) {
            self.stats.input_ignored += 1;
            return;
        }
        let Some(window) = Window::of(&m, self.cfg.lead, self.cfg.settle) else {
            self.stats.input_ignored += 1;
            return;
        };
        match self.markets.get_mut(&cid) {
            Some(e) => {
                e.market = m;
                e.window = window;
            }
            None if m.change == "expired" || window.phase(&Now::read()) == Phase::Over => {
                // Its window and settle delay were over before it arrived: nothing left to poll.
                self.stats.input_ignored += 1;
            }
            None => {
                let e =
                    Entry { market: m, window, tracked: false, completed: false, seen: HashSet::new(), final_tries: 0 };
                self.markets.insert(cid, e);
            }
        }
    }

    /// Starts tracking markets whose window opened; sweeps and stops those whose settle delay passed.
    fn update_tracking(&mut self, k: u64) -> io::Result<()> {
        let now = Now::read();
        for cid in self.sorted(|_| true) {
            let e = &self.markets[&cid];
            match e.window.phase(&now) {
                // Inside a backoff the venue asked for that outlasts this slot, the sweep waits for a
                // later slot (the poll of this slot records the backoff gap).
                Phase::Over if e.tracked && self.backing_off(k) => {}
                Phase::Over if e.tracked => self.final_sweep(k, &cid)?,
                Phase::Over => {
                    self.markets.remove(&cid);
                    self.stats.input_ignored += 1;
                }
                Phase::Open if !e.tracked => {
                    let m = e.market.clone();
                    self.markets.get_mut(&cid).expect("present").tracked = true;
                    self.stats.markets_tracked += 1;
                    self.write_track(k, &m, Action::Start, Reason::Window, None)?;
                }
                _ => {}
            }
            if signal::stop_requested() {
                break;
            }
        }
        Ok(())
    }

    /// True when the family's backoff lasts past the next slot's due time.
    fn backing_off(&self, k: u64) -> bool {
        self.client.backoff_until("trades").is_some_and(|(until, _)| until > self.lines.sched.due(k + 1))
    }

    /// Condition ids of the markets matching `f`, in a stable order (window start, slug).
    fn sorted(&self, f: impl Fn(&Entry) -> bool) -> Vec<String> {
        let mut v: Vec<&Entry> = self.markets.values().filter(|e| f(e)).collect();
        v.sort_by(|a, b| (a.window.start, &a.market.slug).cmp(&(b.window.start, &b.market.slug)));
        v.into_iter().map(|e| e.market.condition_id.clone()).collect()
    }

    /// The final sweep of one market: its whole feed with `taker_only=false`, then `true`.
    fn final_sweep(&mut self, k: u64, cid: &str) -> io::Result<()> {
        let ids = vec![cid.to_string()];
        let a = self.walk(k, &ids, Walk::Final)?;
        let b = if a == Outcome::Complete { self.walk(k, &ids, Walk::FinalTaker)? } else { Outcome::Incomplete };
        let e = self.markets.get_mut(cid).expect("present");
        e.final_tries += 1;
        let (done, tries) = (b == Outcome::Complete, e.final_tries);
        if done || tries >= FINAL_TRIES || signal::stop_requested() {
            if signal::stop_requested() && !done {
                // The run ends: the stop record at the end says why.
                return Ok(());
            }
            let e = self.markets.remove(cid).expect("present");
            self.finished.insert(cid.to_string());
            self.stats.markets_swept += u64::from(done);
            let sweep = if done { Sweep::Complete } else { Sweep::Failed };
            self.write_track(k, &e.market, Action::Stop, Reason::GraceElapsed, Some(sweep))?;
        }
        Ok(())
    }

    /// One slot: a poll walk per batch of tracked markets.
    fn poll_slot(&mut self, k: u64) -> io::Result<()> {
        let ids = self.sorted(|e| e.tracked);
        if ids.is_empty() {
            return Ok(());
        }
        if let Some((until, reason)) = self.client.backoff_until("trades") {
            if self.backing_off(k) {
                let wait = until.saturating_duration_since(Instant::now()).as_secs_f64();
                let mut ctx = GapCtx::new(GapKind::Backoff);
                ctx.backoff_s = Some((wait * 1000.0).round() / 1000.0);
                ctx.condition_ids = Some(ids);
                return self.write_gap(k, ctx, format!("not polled: backing off for {wait:.3} s more after {reason}"));
            }
        }
        for batch in ids.chunks(self.cfg.batch) {
            if signal::stop_requested() {
                break;
            }
            self.walk(k, batch, Walk::Poll)?;
        }
        Ok(())
    }

    /// Walks the feed of these markets page by page (see the module doc for when it stops). Every
    /// attempt is an envelope; a page without a usable reply, or a cursor that cannot be followed,
    /// is a gap and leaves the walk incomplete (nothing committed).
    fn walk(&mut self, k: u64, ids: &[String], walk: Walk) -> io::Result<Outcome> {
        let to_end = walk != Walk::Poll || ids.iter().any(|c| !self.markets[c].completed);
        let mut ctx = PageCtx {
            slot: k,
            due_at_utc: self.lines.sched.due_utc(k),
            walk,
            page: 1,
            condition_ids: ids.to_vec(),
            slugs: ids.iter().map(|c| self.markets[c].market.slug.clone()).collect(),
            taker_only: walk.taker_only(),
        };
        let mut fresh: Vec<(String, String)> = Vec::new();
        let mut cursor: Option<String> = None;
        let outcome = loop {
            let (rows, pagination) = match self.fetch_page(&ctx, cursor.as_deref())? {
                Ok(p) => p,
                Err(why) => break self.broken_walk(GapKind::FailedRequest, &ctx, why)?,
            };
            let reached_seen = self.take_rows(&rows, &mut fresh);
            let has_more = pagination.as_ref().and_then(|p| p.has_more).unwrap_or(false);
            if !has_more || (reached_seen && !to_end) {
                break Outcome::Complete;
            }
            match next_cursor(pagination, cursor.as_deref(), ctx.page) {
                Ok(c) => (cursor, ctx.page) = (Some(c), ctx.page + 1),
                Err(why) => break self.broken_walk(GapKind::CursorUnfollowable, &ctx, why)?,
            }
            // After SIGTERM/SIGINT the page in flight was finished; no further page is asked for.
            if signal::stop_requested() {
                break Outcome::Incomplete;
            }
        };
        self.commit(ids, fresh, &outcome);
        Ok(outcome)
    }

    /// The request of one page: the first page names its size, a later one the cursor.
    fn page_request(&self, ctx: &PageCtx, cursor: Option<&str>) -> Request {
        let req = Request::get("trades", self.lines.endpoint_url.clone())
            .query("condition", &ctx.condition_ids.join(","))
            .query("taker_only", if ctx.taker_only { "true" } else { "false" });
        match cursor {
            // The cursor carries the page size; `limit` is only sent on the first page.
            Some(c) => req.query("cursor", c),
            // Polls ask for small pages (most rows of a poll's first page were seen before);
            // the sweeps walk whole feeds with the largest documented page.
            None if ctx.walk == Walk::Poll => req.query("limit", &self.cfg.page_size.to_string()),
            None => req.query("limit", &MAX_PAGE.to_string()),
        }
    }

    /// Asks for one page (every attempt written as an envelope) and reads the reply; Err(why) when
    /// no usable page arrived.
    fn fetch_page(&mut self, ctx: &PageCtx, cursor: Option<&str>) -> io::Result<Result<PageParts, String>> {
        let req = self.page_request(ctx, cursor);
        // Retries of one page never wait past one interval from now.
        let deadline = Instant::now() + self.cfg.interval;
        let (last, failed) = self.lines.execute(&self.client, &req, deadline, ctx, &mut self.stats.requests)?;
        let parsed = match (&last.verdict, last.json_text()) {
            (Verdict::Ok, Some(text)) => page_parts(text, last.status.unwrap_or(0)),
            _ => Err(failure_text(&last)),
        };
        let line = match &parsed {
            Ok(_) => self.outage.succeeded(failed, &self.lines.endpoint_url),
            Err(why) => {
                self.outage.failed(failed.max(1), &self.lines.endpoint_url, why, self.cfg.interval).inspect(|_| {
                    self.stats.outages += 1;
                })
            }
        };
        if let Some(line) = line {
            eprintln!("pm-trades: {line}");
        }
        Ok(parsed)
    }

    /// Counts a page's rows and keeps the new ones in `fresh` (committed only when the walk
    /// completes); true when the page holds a row a completed walk had seen.
    fn take_rows(&mut self, rows: &[RowId], fresh: &mut Vec<(String, String)>) -> bool {
        self.stats.pages += 1;
        let mut reached_seen = false;
        for r in rows {
            self.stats.rows += 1;
            let key = row_key(r);
            let cid = r.condition_id.as_str().unwrap_or("").to_string();
            if self.markets.get(&cid).is_some_and(|e| e.seen.contains(&key)) {
                reached_seen = true;
            } else if !fresh.iter().any(|(c, k)| *c == cid && *k == key) {
                self.stats.rows_new += 1;
                fresh.push((cid, key));
            }
        }
        reached_seen
    }

    /// The gap of a walk that broke off at `ctx.page`.
    fn broken_walk(&mut self, gap: GapKind, ctx: &PageCtx, why: String) -> io::Result<Outcome> {
        let mut g = GapCtx::new(gap);
        (g.condition_ids, g.walk, g.page) = (Some(ctx.condition_ids.clone()), Some(ctx.walk), Some(ctx.page));
        self.write_gap(ctx.slot, g, why)?;
        Ok(Outcome::Incomplete)
    }

    /// A complete walk marks its markets walked and commits its new rows; an incomplete one
    /// commits nothing.
    fn commit(&mut self, ids: &[String], fresh: Vec<(String, String)>, outcome: &Outcome) {
        if *outcome == Outcome::Incomplete {
            self.stats.walks_incomplete += 1;
            return;
        }
        self.stats.walks_complete += 1;
        for c in ids {
            if let Some(e) = self.markets.get_mut(c) {
                e.completed = true;
            }
        }
        for (cid, key) in fresh {
            if let Some(e) = self.markets.get_mut(&cid) {
                e.seen.insert(key);
            }
        }
    }

    fn write_track(
        &mut self,
        k: u64,
        m: &Market,
        action: Action,
        reason: Reason,
        final_sweep: Option<Sweep>,
    ) -> io::Result<()> {
        self.lines.track(k, TrackCtx { final_sweep, ..TrackCtx::new(action, reason, m, m.tokens.clone()) })
    }

    /// Markets currently tracked.
    pub fn tracked(&self) -> usize {
        self.markets.values().filter(|e| e.tracked).count()
    }

    /// HTTP attempts per tracked market per minute over the run (None before any market was
    /// tracked).
    pub fn rate_per_market_minute(&self) -> Option<f64> {
        (self.stats.tracked_secs > 0.0).then(|| self.stats.attempts() as f64 / (self.stats.tracked_secs / 60.0))
    }

    /// The one-line summary printed on stderr at exit.
    pub fn summary(&self, end: End) -> String {
        let s = &self.stats;
        let join = |m: Vec<String>| if m.is_empty() { "none".to_string() } else { m.join(" ") };
        let requests = join(s.requests.iter().map(|(k, v)| format!("{k}:{v}")).collect());
        let gaps = join(s.gaps.iter().map(|(k, v)| format!("{k}:{v}")).collect());
        let ended = end.describe();
        let rate = match self.rate_per_market_minute() {
            Some(r) => format!("{r:.2} requests per tracked market-minute"),
            None => "no market tracked".to_string(),
        };
        format!(
            "{ended}; slots {} ({} missed); requests {requests}; pages {} rows {} ({} new); walks {} complete {} incomplete; gaps {gaps}; markets tracked {} (swept {}, still tracked at exit {}); {rate}; input lines {} ({} bad, {} ignored); outages {}",
            s.slots,
            s.slots_missed,
            s.pages,
            s.rows,
            s.rows_new,
            s.walks_complete,
            s.walks_incomplete,
            s.markets_tracked,
            s.markets_swept,
            self.tracked(),
            s.input_lines,
            s.input_bad,
            s.input_ignored,
            s.outages
        )
    }
}

/// The rows and paging of a `/v2/trades` reply; Err(why) when the reply is not a trades page.
type PageParts = (Vec<RowId>, Option<Pagination>);

fn page_parts(text: &str, status: u16) -> Result<PageParts, String> {
    let p =
        serde_json::from_str::<Page>(text).map_err(|e| format!("status {status} reply is not a trades page: {e}"))?;
    match (p.data, p.pagination) {
        (Some(rows), pagination) => Ok((rows, pagination)),
        // "A documented miss is `data: null` or an empty list, never an error."
        (None, Some(pagination)) => Ok((Vec::new(), Some(pagination))),
        (None, None) => Err(format!("status {status} reply is not a trades page")),
    }
}

/// The cursor of the next page, or why the walk cannot follow it: missing, empty, the cursor just
/// followed again (a loop), or the walk at [`MAX_PAGES`].
fn next_cursor(pagination: Option<Pagination>, followed: Option<&str>, page: u32) -> Result<String, String> {
    match pagination.and_then(|p| p.next_cursor).and_then(|c| c.as_str().map(str::to_string)) {
        None => Err("has_more is true but next_cursor is missing or not a string".to_string()),
        Some(c) if c.is_empty() => Err("has_more is true but next_cursor is empty".to_string()),
        Some(_) if page >= MAX_PAGES => Err(format!("walk reached {MAX_PAGES} pages")),
        Some(c) if followed == Some(c.as_str()) => Err("next_cursor repeats the cursor just followed".to_string()),
        Some(c) => Ok(c),
    }
}

impl<W: Write> Fed for Poller<W> {
    type Market = Market;
    const TOOL: &'static str = "pm-trades";

    fn input(&self) -> Receiver<Input<Market>> {
        self.input.clone()
    }

    fn count_input(&mut self, bad: bool) {
        self.stats.input_lines += 1;
        self.stats.input_bad += u64::from(bad);
    }

    fn accept(&mut self, _k: u64, m: Market) -> io::Result<()> {
        self.store(m);
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
        self.lines.missed(k, from, to, "long walk or retries")
    }

    fn slot(&mut self, k: u64) -> io::Result<bool> {
        self.stats.slots += 1;
        self.input_done |= feed::drain_input(self, k)?;
        self.update_tracking(k)?;
        if self.input_done && self.markets.is_empty() {
            return Ok(false);
        }
        self.stats.tracked_secs += self.cfg.interval.as_secs_f64() * self.tracked() as f64;
        self.poll_slot(k)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_key_uses_the_venue_values_and_ignores_profile_fields() {
        let a: RowId = serde_json::from_str(
            r#"{"transaction_hash":"0xab","token_id":"1","proxy_wallet":"0xw","side":"BUY","price":0.5,"size":"10","timestamp":1700000000,"name":"x"}"#,
        )
        .unwrap();
        let b: RowId = serde_json::from_str(
            r#"{"transaction_hash":"0xab","token_id":"1","proxy_wallet":"0xw","side":"BUY","price":0.5,"size":"10","timestamp":1700000000,"name":"y","bio":"z"}"#,
        )
        .unwrap();
        assert_eq!(row_key(&a), row_key(&b));
        assert_eq!(row_key(&a), "0xab|1|0xw|BUY|0.5|10|1700000000");
    }
}
