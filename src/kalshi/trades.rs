//! `kalshi-trades`' engine: walk Kalshi's public trade prints (`GET {url}/markets/trades?ticker=T`)
//! of the tracked KXBTC15M markets and write every page, every gap and every tracking change as a
//! raw envelope (`pmarchive.raw/1`, venue `kalshi`, stream `trades`; docs/KALSHI_FACTS.md §4 has the
//! venue facts, docs/KALSHI.md "Trades" the design). The sibling of `pm-trades`
//! ([`crate::polymarket::trades`]), on the same mechanisms: the stdin reader ([`crate::feed`]), the
//! slot loop ([`crate::schedule`]), tracking windows on both clocks ([`crate::track::Window`]), the
//! shared HTTP client and raw lines ([`SlotLines`]).
//!
//! - A market is tracked from `lead` before its `open_time` until `settle` after its `close_time`.
//!   While tracked it is walked every slot: one walk per ticker (the endpoint takes one `ticker`),
//!   pages of `limit=1000` followed by `cursor` until the cursor is `""`, `null` or absent. The
//!   filters (`ticker`, `limit`, `min_ts`) are sent again with every page.
//! - **Stop rule**, independent of the order of the prints (not documented; newest first is only
//!   suggested by one capture): a walk always runs to the end of its cursor. A market's first
//!   complete walk has no `min_ts` (its whole feed); later poll walks ask for
//!   `min_ts = newest created_time of the completed walks − overlap`, so they fetch only the recent
//!   prints and the overlap (`--overlap`, a margin for the unknown inclusiveness of `min_ts` and for
//!   prints that become visible late) whatever their order. `trade_id` (a UUID) is the dedupe key:
//!   the summary counts the prints not seen before; the raw keeps every page as sent.
//! - A walk that failed half-way (no usable reply, a cursor that cannot be followed) commits
//!   nothing: neither its trade ids nor its newest time, so the next poll asks for the same `min_ts`
//!   and goes as deep again.
//! - **Final sweep**: once close + `settle` has passed on both clocks, the market's whole feed is
//!   walked once more without `min_ts` (catching any print the polls' overlap missed), then it stops
//!   (`grace_elapsed`, `final_sweep: complete|failed`). A sweep that failed on a page goes on from
//!   that page (its cursor) at the next slot; [`FINAL_TRIES`] tries in all. A cursor that cannot
//!   be followed starts the next try from the first page.
//! - Slot k is due at t0 + k·interval; skipped slots are one `missed_slots` gap; a slot inside a
//!   backoff (429s carry no `Retry-After`: the client's exponential backoff) is a `backoff` gap.
//! - SIGTERM/SIGINT: the request in flight is finished, no further page is asked for.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::clock;
use crate::envelope::Sequencer;
use crate::feed::{self, Fed, Input};
use crate::http::{Client, Request, Verdict};
use crate::jsonl::LineWriter;
use crate::kalshi::market::{Market, TrackCtx};
use crate::poll::{failure_text, Outage, SlotLines};
use crate::schedule::{self, End, Schedule, Slotted};
use crate::signal;
use crate::track::{Action, GapCtx, GapKind, Now, Phase, Reason, Sweep, Walk, Window};

/// The request family of the shared client (2 requests/s, `http::family_rate`).
pub const FAMILY: &str = "kalshi-trades";
/// `limit` of every page: the documented maximum (1–1000, default 100).
pub const MAX_PAGE: u32 = 1000;
/// Tries of a market's final sweep (one per slot) before it stops with the failure recorded.
pub const FINAL_TRIES: u32 = 3;
/// A walk never follows more pages than this (a cursor loop on the venue's side ends as a gap).
pub const MAX_PAGES: u32 = 10_000;

#[derive(Clone, Debug)]
pub struct Config {
    /// Kalshi REST base URL, `/trade-api/v2` included (no trailing slash).
    pub kalshi_url: String,
    pub interval: Duration,
    pub lead: Duration,
    /// The final sweep is due this long after the window end.
    pub settle: Duration,
    /// A poll walk's `min_ts` is this far before the newest print of the completed walks.
    pub overlap: Duration,
    pub duration: Option<Duration>,
}

impl Config {
    /// The CLI defaults: every 5 s, lead 60 s, settle 120 s, overlap 60 s.
    pub fn new(kalshi_url: impl Into<String>) -> Config {
        Config {
            kalshi_url: kalshi_url.into(),
            interval: Duration::from_secs(5),
            lead: Duration::from_secs(60),
            settle: Duration::from_secs(120),
            overlap: Duration::from_secs(60),
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
    /// `poll` or `final`.
    pub walk: Walk,
    /// 1-based within the walk.
    pub page: u32,
    pub ticker: String,
    /// The `min_ts` sent (Unix seconds); absent on a walk of the whole feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ts: Option<i64>,
}

/// The fields of a Kalshi `Trade` the lane reads (facts §4); the print itself stays in the raw
/// body as sent. Values are kept as JSON so that a field of an unexpected type never makes the
/// whole page unreadable.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TradeId {
    #[serde(default)]
    pub trade_id: Value,
    #[serde(default)]
    pub ticker: Value,
    #[serde(default)]
    pub created_time: Value,
}

impl TradeId {
    /// The dedupe key: `trade_id` as sent (a UUID string); None when absent, empty or not a string.
    pub fn key(&self) -> Option<&str> {
        self.trade_id.as_str().filter(|s| !s.is_empty())
    }

    /// `created_time` in Unix seconds (rounded down), None when absent or not RFC 3339.
    pub fn created_secs(&self) -> Option<i64> {
        clock::parse_rfc3339(self.created_time.as_str()?).map(|t| t.unix_timestamp())
    }
}

/// A `GET /markets/trades` reply: `{"trades": [Trade…], "cursor": "…"}`.
#[derive(Debug, Deserialize)]
pub struct Page {
    /// None: no `trades` key (not a trades page); Some(None): `"trades": null` (read as no prints,
    /// as a Go API may serialize an empty list).
    #[serde(default, deserialize_with = "present")]
    pub trades: Option<Option<Vec<TradeId>>>,
    /// The next page's cursor; `""`, `null` or absent end the walk.
    #[serde(default)]
    pub cursor: Option<Value>,
}

/// Deserializes a field that is present (possibly `null`) as Some.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The prints and cursor of a reply; Err(why) when the reply is not a trades page.
pub fn page_parts(text: &str, status: u16) -> Result<(Vec<TradeId>, Option<Value>), String> {
    let p =
        serde_json::from_str::<Page>(text).map_err(|e| format!("status {status} reply is not a trades page: {e}"))?;
    match p.trades {
        Some(trades) => Ok((trades.unwrap_or_default(), p.cursor)),
        None => Err(format!("status {status} reply is not a trades page: no `trades` field")),
    }
}

/// The cursor of the next page: None at the end of the walk (`""`, `null` or absent: the docs
/// disagree on the marker, facts §2.1), Err(why) when it cannot be followed (not a string, the
/// cursor just followed again, or the walk at [`MAX_PAGES`]).
pub fn next_cursor(cursor: Option<Value>, followed: Option<&str>, page: u32) -> Result<Option<String>, String> {
    match cursor {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(c)) if c.is_empty() => Ok(None),
        Some(Value::String(_)) if page >= MAX_PAGES => Err(format!("walk reached {MAX_PAGES} pages")),
        Some(Value::String(c)) if followed == Some(c.as_str()) => Err("cursor repeats the cursor just followed".into()),
        Some(Value::String(c)) => Ok(Some(c)),
        Some(other) => Err(format!("cursor is not a string: {other}")),
    }
}

/// Counters of one run (the summary line).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub slots: u64,
    pub slots_missed: u64,
    /// HTTP attempts by status (`none` when no reply arrived).
    pub requests: BTreeMap<String, u64>,
    pub pages: u64,
    /// Prints in the pages (repeats included).
    pub rows: u64,
    /// Prints whose `trade_id` was not seen before in this run.
    pub rows_new: u64,
    /// Prints without a usable `trade_id` (kept raw, not deduplicated).
    pub rows_without_id: u64,
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

#[derive(Clone, Debug)]
struct Entry {
    market: Market,
    window: Window,
    tracked: bool,
    /// A walk of this market reached the end of its cursor.
    completed: bool,
    /// Trade ids committed by completed walks.
    seen: HashSet<String>,
    /// The newest `created_time` (Unix seconds) of the completed walks.
    newest: Option<i64>,
    final_tries: u32,
    /// Where the next try of a failed final sweep starts: the cursor and page number of the page
    /// that failed (None: from the first page).
    resume: Option<(String, u32)>,
}

/// What a walk found, committed only when it completes.
#[derive(Debug, Default)]
struct Fresh {
    ids: HashSet<String>,
    newest: Option<i64>,
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
    /// Pending and tracked markets, by ticker.
    markets: HashMap<String, Entry>,
    /// Tickers swept and stopped (a later record of them restarts nothing).
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
        let lines = SlotLines::new(seq, out, cfg.interval, format!("{}/markets/trades", cfg.kalshi_url));
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
        for t in self.sorted(|e| e.tracked) {
            let m = self.markets[&t].market.clone();
            self.write_track(k, &m, Action::Stop, end.reason(), None)?;
        }
        self.lines.out.flush()?;
        Ok(end)
    }

    /// Stores a market record (new, or an update of a known market's record). The feed checked
    /// its ticker and window already.
    fn store(&mut self, m: Market) {
        let (Some(start), Some(end)) = (m.window_start(), m.window_end()) else {
            self.stats.input_ignored += 1;
            return;
        };
        if self.finished.contains(&m.ticker) {
            self.stats.input_ignored += 1;
            return;
        }
        let window = Window::new(start, end, self.cfg.lead, self.cfg.settle);
        match self.markets.get_mut(&m.ticker) {
            Some(e) => (e.market, e.window) = (m, window),
            None if m.change == "expired" || window.phase(&Now::read()) == Phase::Over => {
                // Its window and settle delay were over before it arrived: nothing left to poll.
                self.stats.input_ignored += 1;
            }
            None => {
                let e = Entry {
                    market: m,
                    window,
                    tracked: false,
                    completed: false,
                    seen: HashSet::new(),
                    newest: None,
                    final_tries: 0,
                    resume: None,
                };
                self.markets.insert(e.market.ticker.clone(), e);
            }
        }
    }

    /// Starts tracking markets whose tracking window opened; sweeps and stops those whose settle
    /// delay passed.
    fn update_tracking(&mut self, k: u64) -> io::Result<()> {
        let now = Now::read();
        for t in self.sorted(|_| true) {
            let e = &self.markets[&t];
            match e.window.phase(&now) {
                // Inside a backoff that outlasts this slot the sweep waits (the poll records the gap).
                Phase::Over if e.tracked && self.backing_off(k) => {}
                Phase::Over if e.tracked => self.final_sweep(k, &t)?,
                Phase::Over => {
                    self.markets.remove(&t);
                    self.stats.input_ignored += 1;
                }
                Phase::Open if !e.tracked => {
                    let m = e.market.clone();
                    self.markets.get_mut(&t).expect("present").tracked = true;
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
        self.client.backoff_until(FAMILY).is_some_and(|(until, _)| until > self.lines.sched.due(k + 1))
    }

    /// Tickers of the markets matching `f`, in a stable order (window start, ticker).
    fn sorted(&self, f: impl Fn(&Entry) -> bool) -> Vec<String> {
        let mut v: Vec<&Entry> = self.markets.values().filter(|e| f(e)).collect();
        v.sort_by(|a, b| (a.window.start, &a.market.ticker).cmp(&(b.window.start, &b.market.ticker)));
        v.into_iter().map(|e| e.market.ticker.clone()).collect()
    }

    /// The final sweep of one market: its whole feed, to the end of the cursor.
    fn final_sweep(&mut self, k: u64, ticker: &str) -> io::Result<()> {
        let done = self.walk(k, ticker, Walk::Final)? == Outcome::Complete;
        let e = self.markets.get_mut(ticker).expect("present");
        e.final_tries += 1;
        if !done && (e.final_tries < FINAL_TRIES || signal::stop_requested()) {
            // Retried at the next slot; after a signal the stop record at the end says why.
            return Ok(());
        }
        let e = self.markets.remove(ticker).expect("present");
        self.finished.insert(ticker.to_string());
        self.stats.markets_swept += u64::from(done);
        let sweep = if done { Sweep::Complete } else { Sweep::Failed };
        self.write_track(k, &e.market, Action::Stop, Reason::GraceElapsed, Some(sweep))
    }

    /// One slot: a poll walk per tracked market.
    fn poll_slot(&mut self, k: u64) -> io::Result<()> {
        let tickers = self.sorted(|e| e.tracked);
        if tickers.is_empty() {
            return Ok(());
        }
        if let Some((until, reason)) = self.client.backoff_until(FAMILY) {
            if self.backing_off(k) {
                // One gap per market not polled, as kalshi-books writes them.
                let wait = until.saturating_duration_since(Instant::now()).as_secs_f64();
                for t in tickers {
                    let mut ctx = GapCtx { ticker: Some(t), ..GapCtx::new(GapKind::Backoff) };
                    ctx.backoff_s = Some((wait * 1000.0).round() / 1000.0);
                    self.write_gap(k, ctx, format!("not polled: backing off for {wait:.3} s more after {reason}"))?;
                }
                return Ok(());
            }
        }
        for t in tickers {
            if signal::stop_requested() {
                break;
            }
            self.walk(k, &t, Walk::Poll)?;
        }
        Ok(())
    }

    /// The `min_ts` of a walk: none for the final sweep or before a complete walk; else the newest
    /// print of the completed walks minus the overlap.
    fn min_ts(&self, ticker: &str, walk: Walk) -> Option<i64> {
        let e = &self.markets[ticker];
        if walk != Walk::Poll || !e.completed {
            return None;
        }
        Some(e.newest?.saturating_sub(self.cfg.overlap.as_secs_f64().ceil() as i64))
    }

    /// Walks one market's prints page by page to the end of the cursor. Every attempt is an
    /// envelope; a page without a usable reply, or a cursor that cannot be followed, is a gap and
    /// leaves the walk incomplete (nothing committed).
    fn walk(&mut self, k: u64, ticker: &str, walk: Walk) -> io::Result<Outcome> {
        let mut ctx = PageCtx {
            slot: k,
            due_at_utc: self.lines.sched.due_utc(k),
            walk,
            page: 1,
            ticker: ticker.to_string(),
            min_ts: self.min_ts(ticker, walk),
        };
        let mut fresh = Fresh::default();
        let mut cursor: Option<String> = None;
        if walk == Walk::Final {
            // A sweep that failed on a later page goes on from that page (after the window, the
            // pages before it cannot change; they are archived already).
            if let Some((c, page)) = self.markets.get_mut(ticker).expect("present").resume.take() {
                (cursor, ctx.page) = (Some(c), page);
            }
        }
        let outcome = loop {
            let (rows, next) = match self.fetch_page(&ctx, cursor.as_deref())? {
                Ok(p) => p,
                Err(why) => {
                    if walk == Walk::Final {
                        self.markets.get_mut(ticker).expect("present").resume = cursor.map(|c| (c, ctx.page));
                    }
                    break self.broken_walk(GapKind::FailedRequest, &ctx, why)?;
                }
            };
            self.take_rows(ticker, &rows, &mut fresh);
            match next_cursor(next, cursor.as_deref(), ctx.page) {
                Ok(None) => break Outcome::Complete,
                Ok(Some(c)) => (cursor, ctx.page) = (Some(c), ctx.page + 1),
                Err(why) => break self.broken_walk(GapKind::CursorUnfollowable, &ctx, why)?,
            }
            // After SIGTERM/SIGINT the page in flight was finished; no further page is asked for.
            if signal::stop_requested() {
                break Outcome::Incomplete;
            }
        };
        self.commit(ticker, fresh, &outcome);
        Ok(outcome)
    }

    /// The request of one page: every filter on every page (the cursor does not keep them).
    fn page_request(&self, ctx: &PageCtx, cursor: Option<&str>) -> Request {
        let mut req = Request::get(FAMILY, self.lines.endpoint_url.clone())
            .query("ticker", &ctx.ticker)
            .query("limit", &MAX_PAGE.to_string());
        if let Some(ts) = ctx.min_ts {
            req = req.query("min_ts", &ts.to_string());
        }
        match cursor {
            Some(c) => req.query("cursor", c),
            None => req,
        }
    }

    /// Asks for one page (every attempt written as an envelope) and reads the reply; Err(why) when
    /// no usable page arrived (a reply that is not a trades page included: its body is in the
    /// http line, the gap line that follows says why it was not usable).
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
            eprintln!("kalshi-trades: {line}");
        }
        Ok(parsed)
    }

    /// Counts a page's prints and keeps the new trade ids and the newest time in `fresh`.
    fn take_rows(&mut self, ticker: &str, rows: &[TradeId], fresh: &mut Fresh) {
        self.stats.pages += 1;
        let seen = &self.markets[ticker].seen;
        for r in rows {
            self.stats.rows += 1;
            fresh.newest = fresh.newest.max(r.created_secs());
            match r.key() {
                None => self.stats.rows_without_id += 1,
                Some(id) if !seen.contains(id) && fresh.ids.insert(id.to_string()) => self.stats.rows_new += 1,
                Some(_) => {}
            }
        }
    }

    /// The gap of a walk that broke off at `ctx.page`.
    fn broken_walk(&mut self, gap: GapKind, ctx: &PageCtx, why: String) -> io::Result<Outcome> {
        let mut g = GapCtx::new(gap);
        (g.ticker, g.walk, g.page) = (Some(ctx.ticker.clone()), Some(ctx.walk), Some(ctx.page));
        self.write_gap(ctx.slot, g, why)?;
        Ok(Outcome::Incomplete)
    }

    /// A complete walk marks the market walked and commits its trade ids and newest time; an
    /// incomplete one commits nothing.
    fn commit(&mut self, ticker: &str, fresh: Fresh, outcome: &Outcome) {
        if *outcome == Outcome::Incomplete {
            self.stats.walks_incomplete += 1;
            return;
        }
        self.stats.walks_complete += 1;
        let e = self.markets.get_mut(ticker).expect("present");
        e.completed = true;
        e.seen.extend(fresh.ids);
        e.newest = e.newest.max(fresh.newest);
    }

    fn write_track(
        &mut self,
        k: u64,
        m: &Market,
        action: Action,
        reason: Reason,
        final_sweep: Option<Sweep>,
    ) -> io::Result<()> {
        let ctx = TrackCtx { poll: self.lines.slot_of_line(k), final_sweep, ..TrackCtx::new(action, reason, m) };
        self.lines.out.write_raw(&self.lines.seq.envelope("track").with_ctx(&ctx).to_line())
    }

    /// Markets currently tracked.
    pub fn tracked(&self) -> usize {
        self.markets.values().filter(|e| e.tracked).count()
    }

    /// The one-line summary printed on stderr at exit.
    pub fn summary(&self, end: End) -> String {
        let s = &self.stats;
        let attempts: u64 = s.requests.values().sum();
        let rate = match s.tracked_secs > 0.0 {
            true => format!("{:.2} requests per tracked market-minute", attempts as f64 / (s.tracked_secs / 60.0)),
            false => "no market tracked".to_string(),
        };
        format!(
            "{}; slots {} ({} missed); requests {}; pages {} prints {} ({} new, {} without trade_id); walks {} complete {} incomplete; gaps {}; markets tracked {} (swept {}, still tracked at exit {}); {rate}; input lines {} ({} bad, {} ignored); outages {}",
            end.describe(),
            s.slots,
            s.slots_missed,
            counts(&s.requests),
            s.pages,
            s.rows,
            s.rows_new,
            s.rows_without_id,
            s.walks_complete,
            s.walks_incomplete,
            counts(&s.gaps),
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

/// `key:count key:count …`, or `none`.
fn counts<K: std::fmt::Display>(m: &BTreeMap<K, u64>) -> String {
    let v: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(" ")
    }
}

/// The prints and the cursor of a page.
type PageParts = (Vec<TradeId>, Option<Value>);

impl<W: Write> Fed for Poller<W> {
    type Market = Market;
    const TOOL: &'static str = "kalshi-trades";

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

    /// The real KXBTC15M print of docs/KALSHI_FACTS.md §4 (C-trd, 2026-01-08), as one page.
    const CAPTURED: &str = r#"{"trades": [{"count_fp": "763.00", "created_time": "2026-01-08T02:59:57.96221Z", "no_price_dollars": "0.0100", "taker_side": "no", "ticker": "KXBTC15M-26JAN072200-00", "trade_id": "b06bc09f-38a5-7f1b-c6b5-aa3511319090", "yes_price_dollars": "0.9900"}], "cursor": ""}"#;

    #[test]
    fn reads_the_captured_print() {
        let (rows, cursor) = page_parts(CAPTURED, 200).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].key(), Some("b06bc09f-38a5-7f1b-c6b5-aa3511319090"));
        assert_eq!(rows[0].ticker, "KXBTC15M-26JAN072200-00");
        // 2026-01-08T02:59:57.96221Z, rounded down to the second.
        assert_eq!(rows[0].created_secs(), Some(1_767_841_197));
        assert_eq!(next_cursor(cursor, None, 1), Ok(None), "an empty cursor ends the walk");
    }

    #[test]
    fn the_newer_print_shape_and_odd_rows_still_read() {
        // 3.29.0 fields (taker_outcome_side, taker_book_side, is_block_trade); a row without a
        // trade_id, one with a numeric id and one with an unparseable time are kept, not fatal.
        let text = r#"{"cursor": "abc", "trades": [
            {"trade_id": "u1", "ticker": "T", "count_fp": "2.50", "yes_price_dollars": "0.4210",
             "no_price_dollars": "0.5790", "taker_outcome_side": "yes", "taker_book_side": "bid",
             "created_time": "2026-08-17T04:50:01Z", "is_block_trade": false},
            {"ticker": "T", "created_time": "2026-08-17T04:50:02.5Z"},
            {"trade_id": 7, "created_time": "yesterday"}]}"#;
        let (rows, cursor) = page_parts(text, 200).unwrap();
        let keys: Vec<Option<&str>> = rows.iter().map(TradeId::key).collect();
        assert_eq!(keys, [Some("u1"), None, None]);
        let times: Vec<Option<i64>> = rows.iter().map(TradeId::created_secs).collect();
        assert_eq!(times, [Some(1_786_942_201), Some(1_786_942_202), None]);
        assert_eq!(next_cursor(cursor, None, 1), Ok(Some("abc".to_string())));
    }

    #[test]
    fn a_reply_that_is_not_a_trades_page_is_an_error_and_null_trades_is_empty() {
        assert!(page_parts(r#"{"error": "too many requests"}"#, 200).unwrap_err().contains("no `trades` field"));
        assert!(page_parts(r#"{"code": "x", "message": "m", "details": "", "service": "s"}"#, 200).is_err());
        assert!(page_parts(r#"{"trades": {"a": 1}, "cursor": ""}"#, 200).is_err());
        assert!(page_parts("[1, 2]", 200).is_err());
        let (rows, cursor) = page_parts(r#"{"trades": null, "cursor": null}"#, 200).unwrap();
        assert!(rows.is_empty());
        assert_eq!(next_cursor(cursor, None, 1), Ok(None));
        let (rows, cursor) = page_parts(r#"{"trades": []}"#, 200).unwrap();
        assert!(rows.is_empty() && cursor.is_none());
    }

    #[test]
    fn cursor_end_markers_loops_and_odd_types() {
        let s = |v: &str| Some(Value::String(v.into()));
        assert_eq!(next_cursor(None, Some("a"), 2), Ok(None));
        assert_eq!(next_cursor(Some(Value::Null), Some("a"), 2), Ok(None));
        assert_eq!(next_cursor(s(""), Some("a"), 2), Ok(None));
        assert_eq!(next_cursor(s("b"), Some("a"), 2), Ok(Some("b".into())));
        assert!(next_cursor(s("a"), Some("a"), 2).unwrap_err().contains("repeats"));
        assert!(next_cursor(Some(Value::from(5)), None, 1).unwrap_err().contains("not a string"));
        assert!(next_cursor(s("b"), Some("a"), MAX_PAGES).unwrap_err().contains("pages"));
    }

    #[test]
    fn page_ctx_names_min_ts_only_when_sent() {
        let mut ctx =
            PageCtx { slot: 3, due_at_utc: "x".into(), walk: Walk::Final, page: 1, ticker: "T".into(), min_ts: None };
        assert_eq!(
            serde_json::to_string(&ctx).unwrap(),
            r#"{"slot":3,"due_at_utc":"x","walk":"final","page":1,"ticker":"T"}"#
        );
        ctx.min_ts = Some(1_786_942_141);
        let v = serde_json::to_value(&ctx).unwrap();
        assert_eq!(v["min_ts"], 1_786_942_141);
        assert_eq!(serde_json::from_value::<PageCtx>(v).unwrap(), ctx);
    }
}
