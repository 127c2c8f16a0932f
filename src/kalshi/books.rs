//! `kalshi-books`' engine: poll the order book of every tracked Kalshi market with
//! `GET {kalshi}/markets/{ticker}/orderbook` (no `depth`: the whole book) once per slot on a
//! drift-free schedule, and write every exchange, every gap and every tracking change as a raw
//! envelope (`pmarchive.raw/1`, venue `kalshi`; docs/KALSHI.md, "Order books").
//!
//! The mechanisms are shared with pm-books, not copies: the slot loop ([`crate::schedule::run`]),
//! the stdin reader and its `drain_input` ([`crate::feed`]), the tracking window and its vocabulary
//! ([`crate::track`]), the raw lines of a slot ([`SlotLines`]) and the outage lines ([`Outage`])
//! ([`crate::poll`]), and pm-books' run counters ([`Stats`], src/polymarket/books.rs). What differs from pm-books:
//! - one request per market (Kalshi has no batch endpoint), all of a slot's requests retried at
//!   most until the next slot is due;
//! - a 200 reply is checked with the one order-book parser ([`super::orderbook`]); a reply that is
//!   not a book is a `failed_request` gap (the raw reply is in the http line before it);
//! - a 404 after the window end stops the market (`book_gone`): Kalshi no longer has its book; a
//!   record with a `result` stops it too (`closed`).

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::market::{Market, TrackCtx};
use super::orderbook;
use crate::envelope::Sequencer;
use crate::feed::{self, Fed, Input};
use crate::http::{Client, Request, Verdict};
use crate::jsonl::LineWriter;
use crate::poll::{failure_text, Outage, SlotLines};
use crate::polymarket::books::Stats;
use crate::schedule::{self, End, Schedule, Slotted};
use crate::signal;
use crate::track::{Action, GapCtx, GapKind, Now, Phase, Reason, Window};

/// The request family (rate limit: `http::family_rate`) and the `endpoint` of the http lines.
pub const FAMILY: &str = "kalshi-books";

const TOOL: &str = "kalshi-books";

#[derive(Clone, Debug)]
pub struct Config {
    /// Kalshi Trade API base URL (no trailing slash), e.g. `…/trade-api/v2`.
    pub kalshi_url: String,
    pub interval: Duration,
    /// Start tracking this long before the window start (`open_time`).
    pub lead: Duration,
    /// Stop tracking this long after the window end (`close_time`).
    pub grace: Duration,
    /// Stop after this long (None: run until a signal or the end of the input).
    pub duration: Option<Duration>,
}

impl Config {
    /// The defaults of the CLI (1 s, lead 60 s, grace 120 s).
    pub fn new(kalshi_url: impl Into<String>) -> Config {
        Config {
            kalshi_url: kalshi_url.into(),
            interval: Duration::from_secs(1),
            lead: Duration::from_secs(60),
            grace: Duration::from_secs(120),
            duration: None,
        }
    }
}

/// The caller's part of the `ctx` of kalshi-books' http lines (the client adds its retry fields).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PollCtx {
    pub slot: u64,
    pub due_at_utc: String,
    pub ticker: String,
    pub event_ticker: String,
}

/// A market known to the poller (pending or tracked).
#[derive(Clone, Debug)]
struct Entry {
    market: Market,
    window: Window,
    tracked: bool,
}

impl Entry {
    fn new(market: Market, cfg: &Config) -> Option<Entry> {
        let window = Window::new(market.window_start()?, market.window_end()?, cfg.lead, cfg.grace);
        Some(Entry { market, window, tracked: false })
    }

    /// Kalshi reported the window's result: nothing more will trade.
    fn closed(&self) -> bool {
        !self.market.result.is_empty()
    }
}

pub struct Poller<W: Write> {
    cfg: Config,
    client: Client,
    lines: SlotLines<W>,
    input: Receiver<Input<Market>>,
    input_done: bool,
    /// Pending and tracked markets, by ticker.
    markets: HashMap<String, Entry>,
    /// Tickers stopped on venue evidence (book_gone, closed) → their tracking window end, until
    /// which a record of them restarts nothing.
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
        // The endpoint every track/gap line names (the ticker goes in its place in each request).
        let endpoint = format!("{}/markets/{{ticker}}/orderbook", cfg.kalshi_url);
        let lines = SlotLines::new(seq, out, cfg.interval, endpoint);
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

    /// Starts and stops tracking by the tracking window (judged on both clocks: [`Window::phase`])
    /// and by a record carrying the window's result.
    fn update_tracking(&mut self, k: u64, now: Now) -> io::Result<()> {
        self.finished.retain(|_, until| !now.passed(*until));
        for ticker in self.ordered(false) {
            let e = &self.markets[&ticker];
            let stop = match e.window.phase(&now) {
                Phase::Over => Some(Reason::GraceElapsed),
                _ if e.closed() => Some(Reason::Closed),
                _ => None,
            };
            if let Some(reason) = stop {
                let e = self.markets.remove(&ticker).expect("present");
                if !e.tracked {
                    self.stats.input_ignored += 1;
                    continue;
                }
                self.write_track(k, &e.market, Action::Stop, reason)?;
                if reason == Reason::Closed {
                    self.finished.insert(ticker, e.window.until);
                }
            } else if !e.tracked && e.window.phase(&now) == Phase::Open {
                let market = e.market.clone();
                self.markets.get_mut(&ticker).expect("present").tracked = true;
                self.stats.markets_tracked += 1;
                self.write_track(k, &market, Action::Start, Reason::Window)?;
            }
        }
        Ok(())
    }

    /// Tickers in a stable order (window start, ticker): all, or only the tracked ones.
    fn ordered(&self, tracked_only: bool) -> Vec<String> {
        let mut v: Vec<(&Entry, &String)> =
            self.markets.iter().filter(|(_, e)| e.tracked || !tracked_only).map(|(t, e)| (e, t)).collect();
        v.sort_by_key(|(e, t)| (e.window.start, *t));
        v.into_iter().map(|(_, t)| t.clone()).collect()
    }

    /// Polls every tracked market once.
    fn poll_slot(&mut self, k: u64) -> io::Result<()> {
        let tickers = self.ordered(true);
        if tickers.is_empty() {
            return Ok(());
        }
        // The venue asked us to back off for longer than this slot: a gap per market, nothing sent.
        if let Some((until, reason)) = self.client.backoff_until(FAMILY) {
            if until > self.lines.sched.due(k + 1) {
                let wait = until.saturating_duration_since(Instant::now()).as_secs_f64();
                for t in tickers {
                    let ctx = GapCtx {
                        ticker: Some(t),
                        backoff_s: Some((wait * 1000.0).round() / 1000.0),
                        ..GapCtx::new(GapKind::Backoff)
                    };
                    self.write_gap(k, ctx, format!("not polled: backing off for {wait:.3} s more after {reason}"))?;
                }
                return Ok(());
            }
        }
        self.stats.slots_polled += 1;
        for (i, t) in tickers.into_iter().enumerate() {
            // After SIGTERM/SIGINT: the request in flight was finished; start no more.
            if i > 0 && signal::stop_requested() {
                break;
            }
            self.poll_market(k, &t)?;
        }
        Ok(())
    }

    /// One `GET /markets/{ticker}/orderbook` (with retries until the next slot is due), its
    /// envelopes, and its gap or stop.
    fn poll_market(&mut self, k: u64, ticker: &str) -> io::Result<()> {
        let Some(e) = self.markets.get(ticker) else { return Ok(()) };
        let (event_ticker, window) = (e.market.event_ticker.clone(), e.window);
        // The ticker passed `is_valid_ticker` ([A-Z0-9._-]): safe as a path segment.
        let req = Request::get(FAMILY, format!("{}/markets/{ticker}/orderbook", self.cfg.kalshi_url));
        let ctx = PollCtx { slot: k, due_at_utc: self.lines.sched.due_utc(k), ticker: ticker.into(), event_ticker };
        let deadline = self.lines.sched.due(k + 1);
        let (last, failed) = self.lines.execute(&self.client, &req, deadline, &ctx, &mut self.stats.requests)?;
        let outcome = match (&last.verdict, last.status, last.json_text()) {
            (Verdict::Ok, _, Some(text)) => orderbook::parse(text)
                .map(|_| ())
                .map_err(|e| format!("status {} reply is not a Kalshi order book: {e}", last.status.unwrap_or(0))),
            (_, Some(404), _) if window.ended(&Now::read()) => {
                if let Some(line) = self.outage.succeeded(failed, &self.lines.endpoint_url) {
                    eprintln!("{TOOL}: {line}");
                }
                let e = self.markets.remove(ticker).expect("present");
                self.finished.insert(ticker.to_string(), e.window.until);
                return self.write_track(k, &e.market, Action::Stop, Reason::BookGone);
            }
            _ => Err(failure_text(&last)),
        };
        match outcome {
            Ok(()) => {
                if let Some(line) = self.outage.succeeded(failed, &self.lines.endpoint_url) {
                    eprintln!("{TOOL}: {line}");
                }
                Ok(())
            }
            Err(why) => {
                // A 200 that is not a book counts as a failed attempt too.
                if let Some(line) = self.outage.failed(failed.max(1), &self.lines.endpoint_url, &why, self.cfg.interval)
                {
                    self.stats.outages += 1;
                    eprintln!("{TOOL}: {line}");
                }
                let ctx = GapCtx { ticker: Some(ticker.to_string()), ..GapCtx::new(GapKind::FailedRequest) };
                self.write_gap(k, ctx, why)
            }
        }
    }

    /// Writes the stop records of everything still tracked (end of run).
    fn stop_all(&mut self, end: End, k: u64) -> io::Result<()> {
        for t in self.ordered(true) {
            let m = self.markets[&t].market.clone();
            self.write_track(k, &m, Action::Stop, end.reason())?;
        }
        Ok(())
    }

    fn write_track(&mut self, k: u64, m: &Market, action: Action, reason: Reason) -> io::Result<()> {
        let ctx = TrackCtx { poll: self.lines.slot_of_line(k), ..TrackCtx::new(action, reason, m) };
        let line = self.lines.seq.envelope("track").with_ctx(&ctx).to_line();
        self.lines.out.write_raw(&line)
    }

    /// Markets currently tracked.
    pub fn tracked(&self) -> usize {
        self.markets.values().filter(|e| e.tracked).count()
    }

    /// The one-line summary printed on stderr at exit (pm-books' format).
    pub fn summary(&self, end: End) -> String {
        self.stats.summary(end, &self.outage, self.tracked())
    }
}

impl<W: Write> Fed for Poller<W> {
    type Market = Market;
    const TOOL: &'static str = TOOL;

    fn input(&self) -> Receiver<Input<Market>> {
        self.input.clone()
    }

    fn count_input(&mut self, bad: bool) {
        self.stats.input_lines += 1;
        self.stats.input_bad += u64::from(bad);
    }

    /// Stores a market record: a new market, or an update of a known one.
    fn accept(&mut self, _k: u64, m: Market) -> io::Result<()> {
        let ticker = m.ticker.clone();
        // `expired` only says kalshi-markets stopped watching: tracking keeps its own lead/grace.
        let informational = m.change == "expired";
        let new = match Entry::new(m, &self.cfg) {
            Some(e) if !self.finished.contains_key(&ticker) => e,
            _ => {
                self.stats.input_ignored += 1;
                return Ok(());
            }
        };
        match self.markets.get_mut(&ticker) {
            Some(old) => {
                old.market = new.market;
                old.window = new.window;
            }
            None if informational || new.closed() || new.window.phase(&Now::read()) == Phase::Over => {
                self.stats.input_ignored += 1
            }
            None => {
                self.markets.insert(ticker, new);
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
