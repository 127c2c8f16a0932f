//! A loopback Kalshi Trade API v2 (127.0.0.1 only), mounted on the loopback [`Venue`] under
//! `/trade-api/v2` (so the tools' configurable base URL is `http://127.0.0.1:PORT/trade-api/v2`):
//! rolling `KXBTC15M` windows on the venue's clock, behind the venue's faults, outages and log.
//!
//! **Nothing here is recorded from Kalshi.** Everything served is DERIVED from what
//! docs/KALSHI_FACTS.md quotes: the order-book docs examples (`../shared/fixtures/kalshi/`, their
//! levels are [`DOCS_YES`]/[`DOCS_NO`]), the real `GET /markets` capture C-mkt (the market record's
//! fields and formats, §2.2), the real trade prints C-trd and the 3.29.0 `Trade` schema (§4), and the
//! documented rules (paging §2.1, lifecycle, 429 body §5). Values (strikes, sizes, trade ids, results)
//! are made up deterministically from the ticker and the clock.
//!
//! - Windows: one market per 15 minutes, `open_time` on :00/:15/:30/:45 UTC, `close_time` 15 min
//!   later; ticker `KXBTC15M-{YY}{MON}{DD}{HHMM}-{MM}` from the close in US Eastern time (DST
//!   included), event ticker without the `-{MM}`. A market exists from [`KalshiVenue::set_ahead`]
//!   windows before the current one's close (`created_time`) and for 7 days after its close.
//!   Lifecycle (`status`): `initialized` before open, `active` in the window, `closed` after it,
//!   `determined` with `result` `yes`/`no` and `expiration_value` [`KalshiVenue::set_result_after`]
//!   after close, `finalized` (plus `settlement_ts`) 60 s later. `floor_strike` (a JSON number) and
//!   the `yes_sub_title` target appear at open; before, the subtitles say `Target price: TBD`.
//! - `GET /markets`: `series_ticker`, `event_ticker` and `status` (`unopened` → initialized, `open` →
//!   active, `closed` → closed or determined, `settled` → finalized, `paused` → none; anything else →
//!   400) filters; every existing window from `ahead` windows ahead back to those closed within
//!   [`KalshiVenue::set_keep`]; ascending close; at most [`KalshiVenue::set_page_sizes`] markets a
//!   page whatever `limit` asks (a loopback choice, so that clients must follow the cursor); the
//!   cursor is an offset that stores no filters (they must be sent again, as documented); the last
//!   page's cursor is `""`, `null` or absent ([`KalshiVenue::set_cursor_end`]).
//! - `GET /markets/{ticker}`: `{"market": …}`; 404 for a ticker that is not a listed window.
//! - `GET /markets/{ticker}/orderbook`: in the window, the docs example's levels shifted by the
//!   clock (±5 ¢ in 6-s steps, YES up when NO down), sizes with a fractional part that changes every
//!   second, plus a sub-penny tail level on each side (tapered deci-cent grid: $0.001 below $0.10);
//!   levels ascending (best last; [`KalshiVenue::set_descending`] serves them best first, as the spec's
//!   prose says). Outside the window both sides are empty. Shapes
//!   ([`KalshiVenue::set_shape`]): `orderbook_fp` (default: `["0.4200","13.37"]`), the older
//!   `orderbook.{yes_dollars,no_dollars}` (integer counts) and legacy cents `orderbook.{yes,no}`
//!   (`[42,13]`, whole-cent levels only). No hash, no timestamp (as documented).
//! - `GET /markets/trades`: one print every [`KalshiVenue::set_trade_every`] seconds of each window
//!   (every 4th in the same second as the one before: a page boundary can fall inside a second),
//!   shown once the clock has passed it; the 3.29.0 `Trade` shape (`taker_outcome_side`,
//!   `taker_book_side`, `is_block_trade`; [`KalshiVenue::set_trade_shape`]: the January shape of C-trd
//!   with `taker_side` only), UUID `trade_id`, `created_time` with 0–6 fractional digits;
//!   newest first ([`KalshiVenue::set_trades_oldest_first`] switches); `ticker`, `min_ts`/`max_ts`
//!   (Unix seconds, both inclusive: undocumented, chosen here) filters; keyset cursor; page size as
//!   for markets.
//! - Errors: 400/404 in the documented `ErrorResponse` shape `{code, message, details, service}`
//!   (STAND-IN values). Faults: [`too_many`] is the docs' 429 `{"error": "too many requests"}` without
//!   `Retry-After`; [`server_error`]; and the venue's HTML, truncated, slow and reset faults, on the
//!   path patterns [`LIST`], [`MARKET`], [`BOOKS`], [`TRADES`].
//!
//! Log: each reply is logged by the venue like every other; with a soak log the orderbook replies
//! carry the sha256 of their body (`hashes`) and the trades replies their `trade_id`s (`trades`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use pm_archive::clock;

use super::venue::{percent_decode, sha_hex, Clock, Fault, FaultBody, Req, Venue};

/// Where the API is mounted on the venue (the path part of the base URL).
pub const BASE_PATH: &str = "/trade-api/v2";
pub const SERIES: &str = "KXBTC15M";
/// Fault path patterns ([`Venue::fault`]): the market list, one market, the books, the trades.
pub const LIST: &str = "/trade-api/v2/markets$";
pub const MARKET: &str = "/trade-api/v2/markets/KXBTC15M-*$";
pub const BOOKS: &str = "/trade-api/v2/markets/*/orderbook";
pub const TRADES: &str = "/trade-api/v2/markets/trades";
/// The 429 body of Kalshi's rate-limit docs (`../shared/fixtures/kalshi/rate_limited_429_body.json`).
pub const TOO_MANY_BODY: &str = r#"{"error": "too many requests"}"#;

/// The YES and NO bid levels of the docs example (`orderbook_fp_docs_example.json`), as
/// (price in $0.001, count in 0.01 contracts).
pub const DOCS_YES: [(u32, u64); 12] = [
    (10, 20000),
    (150, 10000),
    (200, 5000),
    (250, 2000),
    (300, 1100),
    (310, 1000),
    (320, 1000),
    (330, 1100),
    (340, 900),
    (350, 1100),
    (410, 1000),
    (420, 1300),
];
pub const DOCS_NO: [(u32, u64); 10] = [
    (10, 10000),
    (160, 300),
    (250, 5000),
    (280, 1900),
    (360, 500),
    (370, 5000),
    (380, 30000),
    (440, 2900),
    (450, 2000),
    (560, 1700),
];

const WINDOW: i64 = 900;

/// Bid levels, ascending: (price in $0.001, count in 0.01 contracts).
type Levels = Vec<(u32, u64)>;
const MONTHS: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];

/// The documented 429 (no `Retry-After`).
pub fn too_many() -> Fault {
    Fault::Reply { status: 429, body: FaultBody(TOO_MANY_BODY.into()) }
}

/// A 5xx in the documented `ErrorResponse` shape (STAND-IN values).
pub fn server_error(status: u16) -> Fault {
    Fault::Reply { status, body: FaultBody(error_body("internal_error", "stand-in server error")) }
}

/// The order-book reply shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BookShape {
    /// `{"orderbook_fp": {"yes_dollars": [["0.4200","13.00"]…], "no_dollars": […]}}` (current).
    Fp,
    /// `{"orderbook": {"yes_dollars": [["0.4200",13]…], "no_dollars": […]}}` (migration period).
    Dollars,
    /// `{"orderbook": {"yes": [[42,13]…], "no": […]}}` (legacy cents).
    Cents,
}

/// The trade print shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TradeShape {
    /// Spec 3.29.0: `taker_outcome_side`, `taker_book_side`, `is_block_trade` ([`WireTrade`]).
    Current,
    /// The real capture C-trd (2026-01-08): `taker_side` only ([`JanuaryTrade`]).
    January,
}

/// What the last page's `cursor` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CursorEnd {
    Empty,
    Null,
    Absent,
}

#[derive(Clone, Debug)]
struct Config {
    shape: BookShape,
    /// Levels best first (the spec's prose) instead of ascending (the guide, live observations).
    descending: bool,
    trade_shape: TradeShape,
    cursor_end: CursorEnd,
    ahead: i64,
    keep: Duration,
    result_after: Duration,
    markets_page: usize,
    trades_page: usize,
    trade_every: Duration,
    /// `GET /markets/trades` oldest first (the order is not documented; newest first by default).
    trades_oldest_first: bool,
}

/// The Kalshi API mounted on a [`Venue`] (see the module doc).
pub struct KalshiVenue {
    base: String,
    clock: Clock,
    cfg: Arc<Mutex<Config>>,
}

impl KalshiVenue {
    /// Mounts the API on `v` under [`BASE_PATH`], on its clock, behind its faults and log.
    pub fn mount_on(v: &Venue) -> KalshiVenue {
        let cfg = Arc::new(Mutex::new(Config {
            shape: BookShape::Fp,
            descending: false,
            trade_shape: TradeShape::Current,
            cursor_end: CursorEnd::Empty,
            ahead: 4,
            keep: Duration::from_secs(3600),
            result_after: Duration::from_secs(90),
            markets_page: 2,
            trades_page: 20,
            trade_every: Duration::from_secs(20),
            trades_oldest_first: false,
        }));
        let clock = v.clock();
        let (c, now) = (cfg.clone(), clock.clone());
        v.mount_prefix(
            &format!("{BASE_PATH}/"),
            Arc::new(move |req: &Req| {
                let cfg = c.lock().unwrap().clone();
                serve(&cfg, now(), req)
            }),
        );
        v.annotate(Arc::new(|req, status, body, line| {
            if status != Some(200) || !req.path.starts_with(BASE_PATH) {
                return;
            }
            if req.path.ends_with("/orderbook") {
                line.hashes = vec![pm_archive::util::hex(&Sha256::digest(body))];
            } else if req.path == format!("{BASE_PATH}/markets/trades") {
                #[derive(Deserialize)]
                struct Id {
                    trade_id: String,
                }
                #[derive(Deserialize)]
                struct Ids {
                    trades: Vec<Id>,
                }
                let page: Option<Ids> = serde_json::from_slice(body).ok();
                line.trades = page.map(|p| p.trades.into_iter().map(|t| t.trade_id).collect()).unwrap_or_default();
            }
        }));
        KalshiVenue { base: format!("{}{BASE_PATH}", v.url()), clock, cfg }
    }

    /// The base URL to give the tools (`--kalshi-url`).
    pub fn url(&self) -> String {
        self.base.clone()
    }

    pub fn now(&self) -> OffsetDateTime {
        (self.clock)()
    }

    pub fn set_shape(&self, s: BookShape) {
        self.cfg.lock().unwrap().shape = s;
    }

    /// Serves book levels best first (descending YES and NO bids), the order the spec's prose says.
    pub fn set_descending(&self, on: bool) {
        self.cfg.lock().unwrap().descending = on;
    }

    pub fn set_trade_shape(&self, s: TradeShape) {
        self.cfg.lock().unwrap().trade_shape = s;
    }

    pub fn set_cursor_end(&self, c: CursorEnd) {
        self.cfg.lock().unwrap().cursor_end = c;
    }

    /// Windows listed after the current one (default 4).
    pub fn set_ahead(&self, n: u32) {
        self.cfg.lock().unwrap().ahead = i64::from(n);
    }

    /// How long after its close a window stays in `GET /markets` (default 1 h).
    pub fn set_keep(&self, d: Duration) {
        self.cfg.lock().unwrap().keep = d;
    }

    /// `result` is set this long after close (default 90 s); `finalized` 60 s later.
    pub fn set_result_after(&self, d: Duration) {
        self.cfg.lock().unwrap().result_after = d;
    }

    /// Most markets and trades on one page (default 2 and 20).
    pub fn set_page_sizes(&self, markets: usize, trades: usize) {
        let mut c = self.cfg.lock().unwrap();
        (c.markets_page, c.trades_page) = (markets.max(1), trades.max(1));
    }

    /// Time between two trade prints of a window (default 20 s).
    pub fn set_trade_every(&self, d: Duration) {
        self.cfg.lock().unwrap().trade_every = d.max(Duration::from_secs(1));
    }

    /// Serve `GET /markets/trades` oldest first (Kalshi does not document the order; facts §9.6).
    pub fn set_trades_oldest_first(&self, on: bool) {
        self.cfg.lock().unwrap().trades_oldest_first = on;
    }

    /// The ticker of the window trading at `t`.
    pub fn ticker_at(&self, t: OffsetDateTime) -> String {
        ticker_of(close_after(t))
    }

    /// The market record as served now (None when the ticker is not a listed window).
    pub fn market(&self, ticker: &str) -> Option<WireMarket> {
        let cfg = self.cfg.lock().unwrap().clone();
        let now = self.now();
        close_of_ticker(ticker).filter(|c| exists(&cfg, *c, now)).map(|c| market(&cfg, c, now))
    }

    /// Every trade of a window that exists by now, newest first.
    pub fn trades(&self, ticker: &str) -> Vec<WireTrade> {
        let cfg = self.cfg.lock().unwrap().clone();
        let now = self.now();
        let Some(close) = close_of_ticker(ticker) else { return Vec::new() };
        let mut t = prints(&cfg, close, now);
        t.sort_by(|a, b| b.key.cmp(&a.key));
        t.into_iter().map(|p| p.trade).collect()
    }
}

/// A market as Kalshi's `Market` object, fields as in the capture C-mkt (alphabetical there too).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireMarket {
    pub can_close_early: bool,
    pub close_time: String,
    pub created_time: String,
    pub custom_strike: HashMap<String, String>,
    pub event_ticker: String,
    pub exchange_index: u32,
    pub expected_expiration_time: String,
    pub expiration_time: String,
    pub expiration_value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_strike: Option<f64>,
    pub last_price_dollars: String,
    pub latest_expiration_time: String,
    pub liquidity_dollars: String,
    pub market_type: String,
    pub no_ask_dollars: String,
    pub no_bid_dollars: String,
    pub no_sub_title: String,
    pub notional_value_dollars: String,
    pub occurrence_datetime: String,
    pub open_interest_fp: String,
    pub open_time: String,
    pub previous_price_dollars: String,
    pub previous_yes_ask_dollars: String,
    pub previous_yes_bid_dollars: String,
    pub price_level_structure: String,
    pub result: String,
    pub rules_primary: String,
    pub rules_secondary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_ts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_value_dollars: Option<String>,
    pub settlement_timer_seconds: u32,
    pub status: String,
    pub strike_type: String,
    pub ticker: String,
    pub title: String,
    pub updated_time: String,
    pub volume_24h_fp: String,
    pub volume_fp: String,
    pub yes_ask_dollars: String,
    pub yes_ask_size_fp: String,
    pub yes_bid_dollars: String,
    pub yes_bid_size_fp: String,
    pub yes_sub_title: String,
}

/// A public trade print (spec 3.29.0 `Trade`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireTrade {
    pub count_fp: String,
    pub created_time: String,
    pub is_block_trade: bool,
    pub no_price_dollars: String,
    pub taker_book_side: String,
    pub taker_outcome_side: String,
    pub ticker: String,
    pub trade_id: String,
    pub yes_price_dollars: String,
}

/// A trade print in the January 2026 shape of the real capture C-trd (`taker_side`, nothing newer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JanuaryTrade {
    pub count_fp: String,
    pub created_time: String,
    pub no_price_dollars: String,
    pub taker_side: String,
    pub ticker: String,
    pub trade_id: String,
    pub yes_price_dollars: String,
}

impl From<WireTrade> for JanuaryTrade {
    fn from(t: WireTrade) -> JanuaryTrade {
        JanuaryTrade {
            count_fp: t.count_fp,
            created_time: t.created_time,
            no_price_dollars: t.no_price_dollars,
            taker_side: t.taker_outcome_side,
            ticker: t.ticker,
            trade_id: t.trade_id,
            yes_price_dollars: t.yes_price_dollars,
        }
    }
}

#[derive(Serialize)]
struct JanuaryPage {
    trades: Vec<JanuaryTrade>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<Option<String>>,
}

/// `GET /markets` → `{"markets": […], "cursor": …}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct MarketsPage {
    pub markets: Vec<WireMarket>,
    /// None = absent, Some(None) = null.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "null_kept")]
    pub cursor: Option<Option<String>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MarketReply {
    pub market: WireMarket,
}

/// `GET /markets/trades` → `{"trades": […], "cursor": …}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TradesPage {
    pub trades: Vec<WireTrade>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "null_kept")]
    pub cursor: Option<Option<String>>,
}

/// A present field (`null` included) is `Some`; an absent one is `None` (by `default`).
fn null_kept<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Serialize)]
struct ErrorResponse<'a> {
    code: &'a str,
    message: &'a str,
    details: &'a str,
    service: &'a str,
}

#[derive(Serialize)]
struct Sides<T> {
    yes_dollars: Vec<T>,
    no_dollars: Vec<T>,
}

#[derive(Serialize)]
struct CentsSides {
    yes: Vec<(u32, u64)>,
    no: Vec<(u32, u64)>,
}

#[derive(Serialize)]
struct FpBook {
    orderbook_fp: Sides<(String, String)>,
}

#[derive(Serialize)]
struct DollarsBook {
    orderbook: Sides<(String, u64)>,
}

#[derive(Serialize)]
struct CentsBook {
    orderbook: CentsSides,
}

fn error_body(code: &str, message: &str) -> String {
    let e = ErrorResponse { code, message, details: "loopback stand-in", service: "loopback" };
    serde_json::to_string(&e).unwrap()
}

fn error(status: u16, code: &str, message: &str) -> (u16, Vec<u8>) {
    (status, error_body(code, message).into_bytes())
}

fn ok(v: &impl Serialize) -> (u16, Vec<u8>) {
    (200, serde_json::to_vec(v).unwrap())
}

fn params(q: &str) -> HashMap<String, String> {
    q.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), percent_decode(v))).collect()
}

/// The router under [`BASE_PATH`].
fn serve(cfg: &Config, now: OffsetDateTime, req: &Req) -> (u16, Vec<u8>) {
    let rest = req.path.strip_prefix(BASE_PATH).unwrap_or_default();
    let q = params(&req.query);
    if req.method != "GET" {
        return error(404, "not_found", "no such route");
    }
    match rest {
        "/markets" => list(cfg, now, &q),
        "/markets/trades" => trades(cfg, now, &q),
        r => {
            let Some(t) = r.strip_prefix("/markets/") else { return error(404, "not_found", "no such route") };
            let (ticker, book) = match t.strip_suffix("/orderbook") {
                Some(t) => (t, true),
                None => (t, false),
            };
            let Some(close) = close_of_ticker(ticker).filter(|c| exists(cfg, *c, now)) else {
                return error(404, "not_found", "market not found");
            };
            match book {
                true => orderbook(cfg, close, now),
                false => ok(&MarketReply { market: market(cfg, close, now) }),
            }
        }
    }
}

/// The close of the window trading at `t` (the next :00/:15/:30/:45 after it).
fn close_after(t: OffsetDateTime) -> OffsetDateTime {
    let s = t.unix_timestamp();
    OffsetDateTime::from_unix_timestamp(s - s.rem_euclid(WINDOW) + WINDOW).unwrap()
}

pub fn ticker_of(close: OffsetDateTime) -> String {
    let e = clock::to_eastern(close);
    format!(
        "{SERIES}-{:02}{}{:02}{:02}{:02}-{:02}",
        e.year() % 100,
        MONTHS[usize::from(u8::from(e.month())) - 1],
        e.day(),
        e.hour(),
        e.minute(),
        e.minute()
    )
}

fn event_of(ticker: &str) -> &str {
    ticker.rsplit_once('-').map(|(e, _)| e).unwrap_or(ticker)
}

/// The close time a ticker names (None unless it is a well-formed KXBTC15M ticker of this venue).
pub fn close_of_ticker(t: &str) -> Option<OffsetDateTime> {
    let rest = t.strip_prefix(SERIES)?.strip_prefix('-')?;
    let (ev, mm) = rest.split_once('-')?;
    if ev.len() != 11 || !ev.is_ascii() {
        return None;
    }
    let num = |s: &str| s.parse::<u8>().ok();
    let month = MONTHS.iter().position(|m| *m == &ev[2..5])? as u8 + 1;
    let date =
        time::Date::from_calendar_date(2000 + i32::from(num(&ev[0..2])?), month.try_into().ok()?, num(&ev[5..7])?);
    let tm = time::Time::from_hms(num(&ev[7..9])?, num(mm)?, 0).ok()?;
    let close = clock::from_eastern(time::PrimitiveDateTime::new(date.ok()?, tm));
    (close.unix_timestamp() % WINDOW == 0 && ticker_of(close) == t).then_some(close)
}

/// A window exists (GET-able) from `ahead` windows after the current one until 7 days after close.
fn exists(cfg: &Config, close: OffsetDateTime, now: OffsetDateTime) -> bool {
    close <= close_after(now) + time::Duration::seconds(cfg.ahead * WINDOW) && close + time::Duration::days(7) > now
}

fn after(close: OffsetDateTime, d: Duration) -> OffsetDateTime {
    close + time::Duration::seconds_f64(d.as_secs_f64())
}

fn status(cfg: &Config, close: OffsetDateTime, now: OffsetDateTime) -> &'static str {
    let determined = after(close, cfg.result_after);
    if now < close - time::Duration::seconds(WINDOW) {
        "initialized"
    } else if now < close {
        "active"
    } else if now < determined {
        "closed"
    } else if now < determined + time::Duration::seconds(60) {
        "determined"
    } else {
        "finalized"
    }
}

fn hash_u64(s: &str) -> u64 {
    u64::from_be_bytes(Sha256::digest(s.as_bytes())[..8].try_into().unwrap())
}

/// The derived strike in cents (the opening BRTI average, made up from the ticker).
fn strike_cents(ticker: &str) -> u64 {
    6_000_000 + hash_u64(ticker) % 3_000_000
}

/// `yes` or `no`, fixed per ticker.
pub fn result_of(ticker: &str) -> &'static str {
    if hash_u64(&format!("{ticker}/result")).is_multiple_of(2) {
        "yes"
    } else {
        "no"
    }
}

fn dollars(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// `63,441.03`.
fn with_commas(cents: u64) -> String {
    let whole = (cents / 100).to_string();
    let mut out = String::new();
    for (i, ch) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{out}.{:02}", cents % 100)
}

/// A price in $0.001 as Kalshi's 4-decimal dollar string (`"0.4200"`, `"0.0030"`).
fn price(milli: u32) -> String {
    format!("{}.{:03}0", milli / 1000, milli % 1000)
}

fn count(hundredths: u64) -> String {
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

/// RFC 3339 with 0–6 fractional digits, trailing zeros dropped (as Kalshi prints them).
fn kalshi_time(t: OffsetDateTime) -> String {
    let s = clock::fmt_micros(t);
    let (head, frac) = s.trim_end_matches('Z').split_once('.').unwrap();
    match frac.trim_end_matches('0') {
        "" => format!("{head}Z"),
        f => format!("{head}.{f}Z"),
    }
}

fn market(cfg: &Config, close: OffsetDateTime, now: OffsetDateTime) -> WireMarket {
    let ticker = ticker_of(close);
    let open = close - time::Duration::seconds(WINDOW);
    let st = status(cfg, close, now);
    let strike = (st != "initialized").then(|| strike_cents(&ticker));
    let target = |s: &str| strike.map(|c| format!("Target {s}: ${}", with_commas(c)));
    let determined = matches!(st, "determined" | "finalized");
    let result = if determined { result_of(&ticker) } else { "" };
    let (yes, no) = book(&ticker, close, now.min(close - time::Duration::seconds(1)).max(open));
    let best = |l: &[(u32, u64)]| l.last().copied().unwrap_or((0, 0));
    let ((yb, ybs), (nb, nbs)) = (best(&yes), best(&no));
    let last = prints(cfg, close, now).last().map(|p| p.trade.yes_price_dollars.clone());
    let volume: u64 = prints(cfg, close, now).iter().map(|p| p.hundredths).sum();
    let expiration_value = strike.filter(|_| determined).map(|c| match result {
        "yes" => dollars(c + hash_u64(&ticker) % 5000),
        _ => dollars(c - 1 - hash_u64(&ticker) % 5000),
    });
    let fmt = |t: OffsetDateTime| clock::fmt_secs(t);
    let et = clock::to_eastern(close);
    WireMarket {
        can_close_early: true,
        close_time: fmt(close),
        created_time: kalshi_time(open - time::Duration::seconds(cfg.ahead * WINDOW) + time::Duration::microseconds(45_397_234)),
        custom_strike: HashMap::from([("round_digits".to_string(), "2".to_string())]),
        event_ticker: event_of(&ticker).into(),
        exchange_index: 0,
        expected_expiration_time: fmt(close + time::Duration::minutes(5)),
        expiration_time: fmt(close + time::Duration::days(7)),
        expiration_value: expiration_value.unwrap_or_default(),
        floor_strike: strike.map(|c| dollars(c).parse().unwrap()),
        last_price_dollars: last.unwrap_or_else(|| price(0)),
        latest_expiration_time: fmt(close + time::Duration::days(7)),
        liquidity_dollars: price(0),
        market_type: "binary".into(),
        no_ask_dollars: price(if yb > 0 { 1000 - yb } else { 0 }),
        no_bid_dollars: price(nb),
        no_sub_title: target("price").filter(|_| st != "active").unwrap_or("Target price: TBD".into()),
        notional_value_dollars: "1.0000".into(),
        occurrence_datetime: fmt(close + time::Duration::minutes(5)),
        open_interest_fp: count(volume / 3),
        open_time: fmt(open),
        previous_price_dollars: price(0),
        previous_yes_ask_dollars: price(0),
        previous_yes_bid_dollars: price(0),
        price_level_structure: "tapered_deci_cent".into(),
        result: result.into(),
        rules_primary: format!(
            "LOOPBACK (derived): If the simple average of the sixty seconds of CF Benchmarks' BRTI before {:02}:{:02} ET is at least the one before the window opened, then the market resolves to Yes.",
            et.hour(),
            et.minute()
        ),
        rules_secondary: "LOOPBACK (derived): 60 RTI prices are collected; the final value is their average, rounded to 2 decimals.".into(),
        settlement_ts: (st == "finalized").then(|| fmt(after(close, cfg.result_after) + time::Duration::seconds(60))),
        settlement_value_dollars: determined.then(|| if result == "yes" { "1.0000" } else { "0.0000" }.into()),
        settlement_timer_seconds: 1,
        status: st.into(),
        strike_type: "greater_or_equal".into(),
        ticker: ticker.clone(),
        title: "BTC price up in next 15 mins?".into(),
        updated_time: kalshi_time(open.max(now.min(close)) + time::Duration::microseconds(707_862)),
        volume_24h_fp: count(volume),
        volume_fp: count(volume),
        yes_ask_dollars: price(if nb > 0 { 1000 - nb } else { 0 }),
        yes_ask_size_fp: count(nbs),
        yes_bid_dollars: price(yb),
        yes_bid_size_fp: count(ybs),
        yes_sub_title: target("Price").unwrap_or("Target price: TBD".into()),
    }
}

/// `GET /markets`.
fn list(cfg: &Config, now: OffsetDateTime, q: &HashMap<String, String>) -> (u16, Vec<u8>) {
    let wanted: &[&str] = match q.get("status").map(String::as_str) {
        None => &["initialized", "active", "closed", "determined", "finalized"],
        Some("unopened") => &["initialized"],
        Some("open") => &["active"],
        Some("closed") => &["closed", "determined"],
        Some("settled") => &["finalized"],
        Some("paused") => &[],
        Some(_) => return error(400, "invalid_parameters", "invalid status filter"),
    };
    let Some(limit) = limit(q) else { return error(400, "invalid_parameters", "invalid limit") };
    let offset = match q.get("cursor").filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => match c.strip_prefix("mk").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => return error(400, "invalid_parameters", "invalid cursor"),
        },
    };
    let last = close_after(now) + time::Duration::seconds(cfg.ahead * WINDOW);
    let mut all = Vec::new();
    let mut c = last;
    while after(c, cfg.keep) > now && exists(cfg, c, now) {
        all.push(c);
        c -= time::Duration::seconds(WINDOW);
    }
    all.reverse();
    let series_ok = q.get("series_ticker").is_none_or(|s| s == SERIES);
    let markets: Vec<WireMarket> = all
        .into_iter()
        .filter(|c| series_ok && wanted.contains(&status(cfg, *c, now)))
        .map(|c| market(cfg, c, now))
        .filter(|m| q.get("event_ticker").is_none_or(|e| *e == m.event_ticker))
        .collect();
    let n = limit.min(cfg.markets_page);
    let page: Vec<WireMarket> = markets.iter().skip(offset).take(n).cloned().collect();
    let more = offset + n < markets.len();
    let cursor = more.then(|| format!("mk{}", offset + n));
    ok(&MarketsPage { markets: page, cursor: end(cfg, cursor) })
}

/// `limit`: absent → 100; 1..=1000 (above is clamped: the live answer is unknown); not a number → None.
fn limit(q: &HashMap<String, String>) -> Option<usize> {
    match q.get("limit") {
        None => Some(100),
        Some(l) => l.parse::<usize>().ok().map(|n| if n == 0 { 100 } else { n.min(1000) }),
    }
}

fn end(cfg: &Config, next: Option<String>) -> Option<Option<String>> {
    match (next, cfg.cursor_end) {
        (Some(c), _) => Some(Some(c)),
        (None, CursorEnd::Empty) => Some(Some(String::new())),
        (None, CursorEnd::Null) => Some(None),
        (None, CursorEnd::Absent) => None,
    }
}

/// The book of a window at `now`: (YES bids, NO bids), ascending, (price $0.001, count 0.01).
fn book(ticker: &str, close: OffsetDateTime, now: OffsetDateTime) -> (Levels, Levels) {
    let open = close - time::Duration::seconds(WINDOW);
    if now < open || now >= close {
        return (Vec::new(), Vec::new());
    }
    let s = (now - open).whole_seconds() + (hash_u64(ticker) % 60) as i64;
    let shift = 10 * ((s / 6) % 10 - 5);
    let side = |levels: &[(u32, u64)], sign: i64, tail: (u32, u64)| {
        let mut out: Vec<(u32, u64)> = levels
            .iter()
            .enumerate()
            .filter_map(|(i, &(p, c))| {
                let p = i64::from(p) + sign * shift;
                let frac = (s as u64 * 37 + i as u64 * 11) % 100;
                (p > 0 && p < 1000).then_some((p as u32, c + frac))
            })
            .collect();
        out.push(tail);
        out.sort();
        out
    };
    let su = s as u64;
    let yes = side(&DOCS_YES, 1, (1 + (su % 9) as u32, 12_345 + su % 100));
    let no = side(&DOCS_NO, -1, (2 + (su % 7) as u32, 80_000 + su % 100));
    (yes, no)
}

fn orderbook(cfg: &Config, close: OffsetDateTime, now: OffsetDateTime) -> (u16, Vec<u8>) {
    let (mut yes, mut no) = book(&ticker_of(close), close, now);
    if cfg.descending {
        yes.reverse();
        no.reverse();
    }
    match cfg.shape {
        BookShape::Fp => {
            let f = |l: &[(u32, u64)]| l.iter().map(|&(p, c)| (price(p), count(c))).collect();
            ok(&FpBook { orderbook_fp: Sides { yes_dollars: f(&yes), no_dollars: f(&no) } })
        }
        BookShape::Dollars => {
            let f = |l: &[(u32, u64)]| l.iter().map(|&(p, c)| (price(p), c / 100)).collect();
            ok(&DollarsBook { orderbook: Sides { yes_dollars: f(&yes), no_dollars: f(&no) } })
        }
        BookShape::Cents => {
            let f = |l: &[(u32, u64)]| l.iter().filter(|(p, _)| p % 10 == 0).map(|&(p, c)| (p / 10, c / 100)).collect();
            ok(&CentsBook { orderbook: CentsSides { yes: f(&yes), no: f(&no) } })
        }
    }
}

/// One print with its sort key (created µs, ticker, index).
struct Print {
    key: (i128, String, u64),
    hundredths: u64,
    trade: WireTrade,
}

/// The prints of a window that exist at `now`, oldest first.
fn prints(cfg: &Config, close: OffsetDateTime, now: OffsetDateTime) -> Vec<Print> {
    let ticker = ticker_of(close);
    let open = close - time::Duration::seconds(WINDOW);
    let every = cfg.trade_every.as_secs() as i64;
    let mut out = Vec::new();
    for i in 0u64.. {
        let burst = i % 4 == 3;
        let off = every * (i as i64 - i64::from(burst));
        let h = hash_u64(&format!("{ticker}/{i}"));
        let micros = if burst { 500_000 + h % 499_999 } else { h % 500_000 };
        let t = open + time::Duration::seconds(off) + time::Duration::microseconds(micros as i64);
        if t >= close || off >= WINDOW {
            break;
        }
        if t > now {
            break;
        }
        let (yes, no) = book(&ticker, close, t);
        let taker_yes = !h.is_multiple_of(3);
        let yes_price = match (taker_yes, yes.last(), no.last()) {
            (true, _, Some(&(n, _))) => 1000 - n,
            (false, Some(&(y, _)), _) => y,
            _ => 500,
        };
        let hundredths = 100 + (h >> 8) % 30_000;
        let id = sha_hex(&format!("{ticker}/{i}"));
        let trade = WireTrade {
            count_fp: count(hundredths),
            created_time: kalshi_time(t),
            is_block_trade: false,
            no_price_dollars: price(1000 - yes_price),
            taker_book_side: if taker_yes { "bid" } else { "ask" }.into(),
            taker_outcome_side: if taker_yes { "yes" } else { "no" }.into(),
            ticker: ticker.clone(),
            trade_id: format!("{}-{}-{}-{}-{}", &id[0..8], &id[8..12], &id[12..16], &id[16..20], &id[20..32]),
            yes_price_dollars: price(yes_price),
        };
        out.push(Print { key: (t.unix_timestamp_nanos() / 1000, ticker.clone(), i), hundredths, trade });
    }
    out
}

/// `GET /markets/trades`.
fn trades(cfg: &Config, now: OffsetDateTime, q: &HashMap<String, String>) -> (u16, Vec<u8>) {
    let Some(limit) = limit(q) else { return error(400, "invalid_parameters", "invalid limit") };
    let ts = |k: &str| q.get(k).map(|v| v.parse::<i64>().ok());
    let (Some(min_ts), Some(max_ts)) = (ts("min_ts").unwrap_or(Some(i64::MIN)), ts("max_ts").unwrap_or(Some(i64::MAX)))
    else {
        return error(400, "invalid_parameters", "invalid timestamp");
    };
    let closes: Vec<OffsetDateTime> = match q.get("ticker") {
        Some(t) => close_of_ticker(t).filter(|c| exists(cfg, *c, now)).into_iter().collect(),
        None => {
            let mut c = close_after(now);
            let mut v = Vec::new();
            while after(c, cfg.keep) > now {
                v.push(c);
                c -= time::Duration::seconds(WINDOW);
            }
            v
        }
    };
    let mut all: Vec<Print> = closes.into_iter().flat_map(|c| prints(cfg, c, now)).collect();
    all.retain(|p| {
        let s = p.key.0.div_euclid(1_000_000) as i64;
        s >= min_ts && s <= max_ts
    });
    all.sort_by(|a, b| b.key.cmp(&a.key));
    if cfg.trades_oldest_first {
        all.reverse();
    }
    let start = match q.get("cursor").filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => match parse_trade_cursor(c) {
            Some(k) => all
                .iter()
                .position(|p| if cfg.trades_oldest_first { p.key > k } else { p.key < k })
                .unwrap_or(all.len()),
            None => return error(400, "invalid_parameters", "invalid cursor"),
        },
    };
    let n = limit.min(cfg.trades_page);
    let page: Vec<&Print> = all.iter().skip(start).take(n).collect();
    let more = start + n < all.len();
    let cursor = more.then(|| page.last().map(|p| format!("{}.{}.{}", p.key.0, p.key.2, p.key.1))).flatten();
    let trades = page.into_iter().map(|p| p.trade.clone());
    match cfg.trade_shape {
        TradeShape::Current => ok(&TradesPage { trades: trades.collect(), cursor: end(cfg, cursor) }),
        TradeShape::January => ok(&JanuaryPage { trades: trades.map(Into::into).collect(), cursor: end(cfg, cursor) }),
    }
}

fn parse_trade_cursor(c: &str) -> Option<(i128, String, u64)> {
    let mut it = c.splitn(3, '.');
    let micros = it.next()?.parse().ok()?;
    let i = it.next()?.parse().ok()?;
    Some((micros, it.next()?.to_string(), i))
}
