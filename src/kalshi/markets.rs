//! `kalshi-markets`' engine: list a Kalshi series' markets (`GET /markets?series_ticker=S&status=open`,
//! then `status=unopened`: the next window is `initialized` until its `open_time`, docs/KALSHI_FACTS.md
//! §2.1), following the cursor until it is `""`, `null` or absent and sending the filters again with
//! every page; keep the current window and the next `ahead` ones, and report what appeared, changed
//! or expired. After a market's window ends, watch mode re-checks it (`GET /markets/{ticker}`, every
//! `resolve_every`, for at most `resolve_for`) until Kalshi sets its `result`, and reports the outcome
//! once. Every HTTP attempt goes to the raw sink as an envelope (venue `kalshi`), whatever happened. A
//! market object that cannot be used is counted and reported (its page is archived raw); a ticker
//! that is not a safe token is never put in a request. An outage (a request that gave up after its
//! retries) is reported on stderr once when it starts and once when it ends.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::envelope::{RunInfo, Sequencer, VENUE_KALSHI};
use crate::http::{Client, Request, Verdict};
use crate::jsonl::LineWriter;
use crate::kalshi::market::{self, Market, Resolution};
use crate::signal;
use crate::watch::{self, Engine, Outage, Watch, Watched};

/// The request family (rate limit, envelope `endpoint`) of every request of this tool.
pub const FAMILY: &str = "kalshi-markets";
/// The `status` filters one discovery pass lists, in order.
pub const STATUS_FILTERS: [&str; 2] = ["open", "unopened"];
/// Pages followed per listing at most (a cursor that never ends is reported, not followed forever).
pub const MAX_PAGES: u32 = 100;

#[derive(Clone, Debug)]
pub struct Config {
    /// Base URL, paths appended (`{url}/markets`).
    pub kalshi_url: String,
    pub series: String,
    /// Windows after the current one to keep.
    pub ahead: u32,
    /// Watch mode: keep re-fetching a market this long after its window ended, then expire it.
    pub keep_after: Duration,
    /// Watch mode: after a market expired without a result, re-check it this often ...
    pub resolve_every: Duration,
    /// ... until this long after its window ended (zero: do not follow resolutions).
    pub resolve_for: Duration,
}

/// One line kalshi-markets writes: a market record (`pmarchive.kalshi_market/1`) or a resolution
/// record (`pmarchive.kalshi_resolution/1`), each serialized as its own type.
pub type Record = watch::Line<Market, Resolution>;

impl Watched for Market {
    type Resolution = Resolution;
    fn key(&self) -> &str {
        &self.ticker
    }
    fn window_end(&self) -> Option<OffsetDateTime> {
        Market::window_end(self)
    }
    fn changed_from(&self, old: &Market) -> bool {
        old.state_key() != self.state_key()
    }
    fn set_change(&mut self, change: &str) {
        self.change = change.into();
    }
    fn set_fetched_at(&mut self, at: &str) {
        self.fetched_at_utc = at.into();
    }
    fn unresolved(&self, checks: u32) -> Resolution {
        Resolution::unresolved(self, checks)
    }
    fn set_checks(r: &mut Resolution, checks: u32) {
        r.checks = checks;
    }
    fn set_resolution_fetched_at(r: &mut Resolution, at: &str) {
        r.fetched_at_utc = at.into();
    }
}

/// The `ctx` of kalshi-markets' http lines (with the client's retry fields, [`crate::http::HttpCtx`]):
/// what was asked for — a page of a listing (`status_filter`, `page` from 1) or one market (`ticker`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListCtx {
    pub series: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticker: Option<String>,
}

/// Counters of one process run (printed as the summary line).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub passes: u64,
    /// Passes that found no market whose window contains the pass's instant.
    pub no_current: u64,
    pub pages: u64,
    /// Market objects in the listings (usable or not).
    pub listed: u64,
    /// Markets kept (current and next windows) over all passes.
    pub found: u64,
    /// Market objects, pages or cursors that could not be used (kept raw, counted, reported).
    pub malformed: u64,
    /// Requests that gave up (listings and single markets).
    pub failed: u64,
    pub requests: u64,
}

/// A market and its resolution when Kalshi already reports one.
pub type Found = watch::Found<Market>;

/// One page of `GET /markets`: each market object parsed (or why it is unusable), and the cursor
/// of the next page (None: the last page).
#[derive(Debug)]
pub struct Page {
    pub markets: Vec<Result<Found, String>>,
    pub cursor: Option<String>,
    /// A `cursor` that is neither a string nor null: paging ends, and this says why.
    pub bad_cursor: Option<String>,
}

/// Parses one `GET /markets` reply of series `series`. Err: the reply is not a listing at all.
pub fn parse_page(text: &str, series: &str, url: &str, fetched_at: OffsetDateTime) -> Result<Page, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let list = v.get("markets").and_then(Value::as_array).ok_or("no \"markets\" array")?;
    let markets = list.iter().map(|m| parse_object(m, series, url, fetched_at)).collect();
    let (cursor, bad_cursor) = match v.get("cursor") {
        None | Some(Value::Null) => (None, None),
        Some(Value::String(s)) if s.is_empty() => (None, None),
        Some(Value::String(s)) => (Some(s.clone()), None),
        Some(other) => (None, Some(format!("cursor is not a string: {other}"))),
    };
    Ok(Page { markets, cursor, bad_cursor })
}

/// One Kalshi market object of series `series`, with its resolution when `result` is set.
fn parse_object(v: &Value, series: &str, url: &str, fetched_at: OffsetDateTime) -> Result<Found, String> {
    let m = market::parse_market(v, series, url, fetched_at)?;
    if !m.ticker.starts_with(&format!("{series}-")) {
        return Err(format!("ticker {:?} is not of series {series}", m.ticker));
    }
    let r = Resolution::of(v, &m, 1).map(Box::new);
    Ok((m, r))
}

/// The markets one pass keeps at `now`: every market whose window started (the current one; an
/// `active` market our clock sees as ended too), and those of the `ahead` nearest window starts after
/// `now`. Ordered by window start, then ticker.
pub fn select(mut markets: Vec<Found>, now: OffsetDateTime, ahead: u32) -> Vec<Found> {
    markets.sort_by(|(a, _), (b, _)| (a.window_start(), &a.ticker).cmp(&(b.window_start(), &b.ticker)));
    let later: BTreeSet<OffsetDateTime> =
        markets.iter().filter_map(|(m, _)| m.window_start()).filter(|s| *s > now).collect();
    let last = later.into_iter().take(ahead as usize).next_back();
    markets.retain(|(m, _)| m.window_start().is_some_and(|s| s <= now || last.is_some_and(|l| s <= l)));
    markets
}

/// What one request gave.
enum Reply {
    /// A usable JSON reply: its text and when it was received.
    Json(String, OffsetDateTime),
    NotFound,
    Failed(String),
    /// Not answered because a stop was requested (SIGTERM): neither a failure nor an outage.
    Stopped,
}

/// What fetching one market by ticker gave.
enum Fetch {
    Found(Box<Found>),
    NotListed,
    Malformed(String),
    Failed(String),
    Stopped,
}

/// Kalshi's side of kalshi-markets: the requests, their raw lines, the counters and the outage lines.
struct Lister {
    cfg: Config,
    client: Client,
    seq: Sequencer,
    raw: Option<LineWriter<Box<dyn Write + Send>>>,
    outage: Outage,
    /// Markets watch mode follows right now (what an outage line says stands).
    followed: usize,
    stats: Stats,
}

pub struct Discoverer {
    lister: Lister,
    watch: Watch<Market>,
}

impl Discoverer {
    pub fn new(cfg: Config, client: Client, raw: Option<Box<dyn Write + Send>>) -> Discoverer {
        let run = RunInfo { venue: VENUE_KALSHI, ..RunInfo::new("kalshi-markets") };
        let watch = Watch::new(cfg.keep_after, cfg.resolve_every, cfg.resolve_for);
        let lister = Lister {
            cfg,
            client,
            seq: Sequencer::new(run),
            raw: raw.map(|w| LineWriter::new(w, true)),
            outage: Outage::new("kalshi-markets", "Kalshi"),
            followed: 0,
            stats: Stats::default(),
        };
        Discoverer { lister, watch }
    }

    /// The run's counters so far.
    pub fn stats(&self) -> &Stats {
        &self.lister.stats
    }

    /// One pass over the wanted windows at `now`: the markets found, by window start.
    pub fn once(&mut self, now: OffsetDateTime) -> io::Result<Vec<Market>> {
        Ok(self.lister.pass(now)?.into_iter().map(|(m, _)| m).collect())
    }

    /// `--once`: one pass at `now`, every market kept written to `out`, the summary on stderr.
    /// Returns true when a request failed or something was malformed.
    pub fn run_once<W: Write>(&mut self, now: OffsetDateTime, out: &mut LineWriter<W>) -> io::Result<bool> {
        for m in self.once(now)? {
            out.write(&m)?;
        }
        eprintln!("kalshi-markets: {}", self.summary());
        Ok(self.bad() > 0)
    }

    /// `--watch`: see [`watch::run`].
    pub fn run_watch<W: Write>(
        &mut self,
        every: Duration,
        duration: Option<Duration>,
        out: &mut LineWriter<W>,
    ) -> io::Result<()> {
        watch::run(self, every, duration, out)
    }

    /// Markets followed for their resolution right now.
    pub fn pending_resolutions(&self) -> usize {
        self.watch.pending()
    }
}

impl Engine for Discoverer {
    const TOOL: &'static str = "kalshi-markets";
    type Line = Record;

    /// One watch pass: the lines to emit (market records `new`, `changed`, `expired`, and
    /// resolution records), in emission order. Markets the listings no longer show (closed) are
    /// re-fetched by ticker.
    fn watch_pass(&mut self, now: OffsetDateTime) -> io::Result<Vec<Record>> {
        self.lister.followed = self.watch.followed();
        let seen = self.lister.pass(now)?;
        let lister = &mut self.lister;
        self.watch.pass(seen, now, |m, followed| {
            lister.followed = followed;
            lister.refetch(&m.ticker)
        })
    }

    fn bad(&self) -> u64 {
        self.lister.stats.failed + self.lister.stats.malformed
    }

    fn in_outage(&self) -> bool {
        self.lister.outage.active()
    }

    fn summary(&self) -> String {
        let s = &self.lister.stats;
        format!(
            "{} passes ({} without a current window): {} markets listed on {} pages, {} kept, {} malformed, {} failed; {} HTTP attempts",
            s.passes, s.no_current, s.listed, s.pages, s.found, s.malformed, s.failed, s.requests
        ) + &self.watch.summary()
    }
}

impl Lister {
    fn ctx(&self, status_filter: Option<&str>, page: Option<u32>, ticker: Option<&str>) -> ListCtx {
        ListCtx {
            series: self.cfg.series.clone(),
            status_filter: status_filter.map(String::from),
            page,
            ticker: ticker.map(String::from),
        }
    }

    /// Sends one request with the client's retries, every attempt written raw.
    fn get(&mut self, req: &Request, ctx: &ListCtx) -> io::Result<Reply> {
        let (seq, raw, stats) = (&mut self.seq, &mut self.raw, &mut self.stats);
        let last = self.client.execute(req, None, |a| {
            stats.requests += 1;
            match raw.as_mut() {
                Some(w) => w.write_raw(&a.envelope(seq, req, Some(ctx)).to_line()),
                None => Ok(()),
            }
        })?;
        let reply = match (&last.verdict, last.status) {
            (Verdict::Ok, _) => Reply::Json(last.json_text().unwrap_or("null").to_string(), last.received_at),
            (_, Some(404)) => Reply::NotFound,
            _ if signal::stop_requested() => Reply::Stopped,
            (v, s) => {
                let why = last.error.clone().unwrap_or_else(|| format!("{v:?}"));
                Reply::Failed(match s {
                    Some(s) => format!("status {s} ({why})"),
                    None => why,
                })
            }
        };
        match &reply {
            Reply::Failed(reason) => {
                self.outage.failed(reason, last.received_at, self.followed, self.client.cfg.backoff_max)
            }
            Reply::Stopped => {}
            Reply::Json(..) | Reply::NotFound => self.outage.answered(last.received_at),
        }
        Ok(reply)
    }

    fn malformed(&mut self, what: &str, reason: &str) {
        self.stats.malformed += 1;
        eprintln!("kalshi-markets: skipped {what}: {reason} (kept raw)");
    }

    /// A request that gave up; its line is left out during an outage (the outage lines say it once).
    fn failed(&mut self, what: &str, reason: &str) {
        self.stats.failed += 1;
        if !self.outage.quiet() {
            eprintln!("kalshi-markets: could not fetch {what}: {reason}");
        }
    }

    /// Lists the series' markets with `status` filter `status`, every page. None: a page could not
    /// be fetched (the markets of the pages before it are not used either: the listing is partial).
    fn list(&mut self, status: &str) -> io::Result<Option<Vec<Found>>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for page in 1..=MAX_PAGES {
            if signal::stop_requested() {
                return Ok(None);
            }
            let mut req = Request::get(FAMILY, format!("{}/markets", self.cfg.kalshi_url))
                .query("series_ticker", &self.cfg.series)
                .query("status", status);
            if let Some(c) = &cursor {
                req = req.query("cursor", c);
            }
            let what = format!("status={status} page {page}");
            let ctx = self.ctx(Some(status), Some(page), None);
            let reply = self.get(&req, &ctx)?;
            let (text, at) = match reply {
                Reply::Json(text, at) => (text, at),
                Reply::NotFound => {
                    self.failed(&what, "status 404");
                    return Ok(None);
                }
                Reply::Failed(reason) => {
                    self.failed(&what, &reason);
                    return Ok(None);
                }
                Reply::Stopped => return Ok(None),
            };
            let p = match parse_page(&text, &self.cfg.series, &req.full_url(), at) {
                Ok(p) => p,
                Err(e) => {
                    self.malformed(&what, &format!("not a market listing: {e}"));
                    return Ok(Some(out));
                }
            };
            self.stats.pages += 1;
            self.stats.listed += p.markets.len() as u64;
            for (i, m) in p.markets.into_iter().enumerate() {
                match m {
                    Ok(f) => out.push(f),
                    Err(e) => self.malformed(&format!("market #{} of {what}", i + 1), &e),
                }
            }
            if let Some(why) = p.bad_cursor {
                self.malformed(&format!("the cursor of {what}"), &format!("{why}; paging ends"));
            }
            match p.cursor {
                None => return Ok(Some(out)),
                Some(c) if cursor.as_ref() == Some(&c) => {
                    self.malformed(&format!("the cursor of {what}"), "the same cursor again; paging ends");
                    return Ok(Some(out));
                }
                Some(c) => cursor = Some(c),
            }
        }
        self.malformed(&format!("status={status}"), &format!("more than {MAX_PAGES} pages; paging ends"));
        Ok(Some(out))
    }

    /// One discovery pass at `now`: both listings, the wanted windows kept (see [`select`]).
    fn pass(&mut self, now: OffsetDateTime) -> io::Result<Vec<Found>> {
        self.stats.passes += 1;
        let mut all: BTreeMap<String, Found> = BTreeMap::new();
        for status in STATUS_FILTERS {
            for f in self.list(status)?.unwrap_or_default() {
                // A market listed under both filters (it opened between the two requests): the
                // first reply stands.
                all.entry(f.0.ticker.clone()).or_insert(f);
            }
        }
        let kept = select(all.into_values().collect(), now, self.cfg.ahead);
        if !kept.iter().any(|(m, _)| m.window_start().is_some_and(|s| s <= now) && m.window_end() > Some(now)) {
            self.stats.no_current += 1;
        }
        self.stats.found += kept.len() as u64;
        Ok(kept)
    }

    /// Fetches one market found earlier (`GET /markets/{ticker}`: closing, resolution).
    fn by_ticker(&mut self, ticker: &str) -> io::Result<Fetch> {
        if !market::is_valid_ticker(ticker) {
            return Ok(Fetch::Malformed(format!("ticker is not a safe token: {ticker:?}")));
        }
        let req = Request::get(FAMILY, format!("{}/markets/{ticker}", self.cfg.kalshi_url));
        let ctx = self.ctx(None, None, Some(ticker));
        Ok(match self.get(&req, &ctx)? {
            Reply::Json(text, at) => match serde_json::from_str::<Value>(&text) {
                Err(e) => Fetch::Malformed(format!("not JSON: {e}")),
                Ok(v) => match v.get("market") {
                    None => Fetch::Malformed("no \"market\" object".into()),
                    Some(o) => match parse_object(o, &self.cfg.series, &req.url, at) {
                        Ok((m, _)) if m.ticker != ticker => {
                            Fetch::Malformed(format!("asked for {ticker} but the record's ticker is {:?}", m.ticker))
                        }
                        Ok(found) => Fetch::Found(Box::new(found)),
                        Err(e) => Fetch::Malformed(e),
                    },
                },
            },
            Reply::NotFound => Fetch::NotListed,
            Reply::Failed(reason) => Fetch::Failed(reason),
            Reply::Stopped => Fetch::Stopped,
        })
    }

    /// Re-fetches a market found earlier; None when it gave nothing usable (reported).
    fn refetch(&mut self, ticker: &str) -> io::Result<Option<Found>> {
        Ok(match self.by_ticker(ticker)? {
            Fetch::Found(f) => Some(*f),
            Fetch::NotListed | Fetch::Stopped => None,
            Fetch::Malformed(reason) => {
                self.malformed(ticker, &reason);
                None
            }
            Fetch::Failed(reason) => {
                self.failed(ticker, &reason);
                None
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;
    use crate::kalshi::market::SERIES;

    /// The real `GET /markets` capture quoted in docs/KALSHI_FACTS.md §2.2 (C-mkt, 2026-08-17; the
    /// rules texts and a few price fields dropped), as one market object.
    const CAPTURED: &str = r#"{"can_close_early": true, "close_time": "2026-08-17T05:00:00Z",
        "created_time": "2026-08-17T00:00:45.397234Z", "custom_strike": {"round_digits": "2"},
        "event_ticker": "KXBTC15M-26AUG170100", "exchange_index": 0,
        "expected_expiration_time": "2026-08-17T05:05:00Z", "expiration_time": "2026-08-24T05:00:00Z",
        "expiration_value": "", "floor_strike": 63441.03, "last_price_dollars": "0.9530",
        "market_type": "binary", "no_sub_title": "Target price: TBD", "open_interest_fp": "522100.53",
        "open_time": "2026-08-17T04:45:00Z", "price_level_structure": "tapered_deci_cent", "result": "",
        "settlement_timer_seconds": 1, "status": "active", "strike_type": "greater_or_equal",
        "ticker": "KXBTC15M-26AUG170100-00", "title": "BTC price up in next 15 mins?",
        "updated_time": "2026-08-17T04:45:00.707862Z", "yes_ask_dollars": "0.9530",
        "yes_ask_size_fp": "813.44", "yes_bid_dollars": "0.9520", "yes_bid_size_fp": "8.00",
        "yes_sub_title": "Target Price: $63,441.03"}"#;

    fn at(s: &str) -> OffsetDateTime {
        clock::parse_rfc3339(s).unwrap()
    }

    fn captured() -> Value {
        serde_json::from_str(CAPTURED).unwrap()
    }

    /// The captured market moved by `k` windows of 15 minutes (tickers and times shifted alike; the
    /// ticker's ET close is not recomputed: only its uniqueness matters here).
    fn shifted(k: i64) -> Value {
        let mut v = captured();
        let q = time::Duration::minutes(15 * k);
        for f in ["open_time", "close_time"] {
            v[f] = clock::fmt_secs(at(v[f].as_str().unwrap()) + q).into();
        }
        v["ticker"] = format!("KXBTC15M-26AUG170100-{k:02}").into();
        if k > 0 {
            v["status"] = "initialized".into();
            v["floor_strike"] = Value::Null;
        }
        v
    }

    fn page(markets: Vec<Value>, cursor: Option<Value>) -> String {
        let mut p = serde_json::Map::new();
        p.insert("markets".into(), Value::Array(markets));
        if let Some(c) = cursor {
            p.insert("cursor".into(), c);
        }
        Value::Object(p).to_string()
    }

    #[test]
    fn parses_a_listing_of_the_captured_market() {
        let text = format!(r#"{{"cursor": "", "markets": [{CAPTURED}]}}"#);
        let p =
            parse_page(&text, SERIES, "http://127.0.0.1:1/trade-api/v2/markets?x", at("2026-08-17T04:50:00Z")).unwrap();
        assert_eq!(p.cursor, None, "an empty cursor is the last page");
        assert_eq!(p.bad_cursor, None);
        assert_eq!(p.markets.len(), 1);
        let (m, r) = p.markets[0].as_ref().unwrap();
        assert_eq!(m.ticker, "KXBTC15M-26AUG170100-00");
        assert_eq!(
            (m.window_start_utc.as_str(), m.window_end_utc.as_str()),
            ("2026-08-17T04:45:00Z", "2026-08-17T05:00:00Z")
        );
        assert_eq!((m.venue.as_str(), m.status.as_str(), m.venue_status.as_str()), ("kalshi", "open", "active"));
        assert_eq!(m.floor_strike.to_string(), "63441.03");
        assert_eq!(m.source_url, "http://127.0.0.1:1/trade-api/v2/markets?x");
        assert!(r.is_none(), "no result yet");
    }

    #[test]
    fn the_cursor_ends_on_empty_null_or_absent_and_continues_otherwise() {
        let now = at("2026-08-17T04:50:00Z");
        for (cursor, want) in [
            (Some(Value::from("")), None),
            (Some(Value::Null), None),
            (None, None),
            (Some(Value::from("CgsI2Ns")), Some("CgsI2Ns")),
        ] {
            let p = parse_page(&page(vec![captured()], cursor.clone()), SERIES, "u", now).unwrap();
            assert_eq!(p.cursor.as_deref(), want, "{cursor:?}");
            assert_eq!(p.bad_cursor, None);
        }
        // A cursor of another type ends the paging with a reason; the page's markets stand.
        let p = parse_page(&page(vec![captured()], Some(Value::from(7))), SERIES, "u", now).unwrap();
        assert_eq!((p.cursor, p.bad_cursor.as_deref()), (None, Some("cursor is not a string: 7")));
        assert!(p.markets[0].is_ok());
        // An empty listing is a listing.
        assert!(parse_page(r#"{"markets": [], "cursor": null}"#, SERIES, "u", now).unwrap().markets.is_empty());
    }

    #[test]
    fn a_bad_market_object_is_refused_alone_and_a_bad_listing_as_a_whole() {
        let now = at("2026-08-17T04:50:00Z");
        let mut unsafe_ticker = captured();
        unsafe_ticker["ticker"] = "KXBTC15M-../../x".into();
        let mut other_series = captured();
        other_series["ticker"] = "KXETH15M-26AUG170100-00".into();
        let mut no_times = captured();
        no_times.as_object_mut().unwrap().remove("close_time");
        let markets = vec![captured(), unsafe_ticker, Value::from(42), other_series, no_times, shifted(1)];
        let p = parse_page(&page(markets, None), SERIES, "u", now).unwrap();
        let errs: Vec<String> = p.markets.iter().filter_map(|m| m.as_ref().err().cloned()).collect();
        assert_eq!(p.markets.len(), 6);
        assert!(p.markets[0].is_ok() && p.markets[5].is_ok());
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].contains("not a safe token"), "{errs:?}");
        assert_eq!(errs[1], "no ticker");
        assert!(errs[2].contains("not of series KXBTC15M"), "{errs:?}");
        assert_eq!(errs[3], "no close_time");
        for bad in ["", "null", "[]", r#"{"cursor": ""}"#, r#"{"markets": {}}"#, "<html>"] {
            assert!(parse_page(bad, SERIES, "u", now).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_listed_result_is_a_resolution() {
        let mut v = captured();
        v["status"] = "finalized".into();
        v["result"] = "no".into();
        v["expiration_value"] = "63400.00".into();
        let p = parse_page(&page(vec![v], None), SERIES, "u", at("2026-08-17T05:06:00Z")).unwrap();
        let (m, r) = p.markets[0].as_ref().unwrap();
        assert_eq!(m.status, "closed");
        let r = r.as_ref().unwrap();
        assert_eq!((r.result.as_str(), r.expiration_value.as_deref()), ("no", Some("63400.00")));
    }

    #[test]
    fn select_keeps_the_current_window_and_the_next_n() {
        let now = at("2026-08-17T04:50:00Z");
        let listed = |ks: &[i64]| -> Vec<Found> {
            ks.iter().map(|k| parse_object(&shifted(*k), SERIES, "u", now).unwrap()).collect()
        };
        let tickers =
            |f: Vec<Found>| -> Vec<String> { f.into_iter().map(|(m, _)| m.ticker[21..].to_string()).collect() };
        // Listed out of order; the current window (k = 0) and the next one by default.
        assert_eq!(tickers(select(listed(&[3, 1, 0, 2]), now, 1)), ["00", "01"]);
        assert_eq!(tickers(select(listed(&[3, 1, 0, 2]), now, 0)), ["00"]);
        assert_eq!(tickers(select(listed(&[3, 1, 0, 2]), now, 3)), ["00", "01", "02", "03"]);
        // No current window listed yet: the next ones still count from the clock's side.
        assert_eq!(tickers(select(listed(&[2, 1]), now, 1)), ["01"]);
        // A market Kalshi still lists as open after its close by our clock is kept (the venue's word).
        assert_eq!(tickers(select(listed(&[0, 1]), at("2026-08-17T05:00:01Z"), 1)), ["00", "01"]);
    }
}
