//! Kalshi KXBTC15M markets: Kalshi's `Market` object (`GET /markets`, `GET /markets/{ticker}`) parsed
//! into the normalized market record (`pmarchive.kalshi_market/1`) that `kalshi-markets` writes and
//! `kalshi-books`/`kalshi-trades` read, and the resolution record (`pmarchive.kalshi_resolution/1`)
//! written once Kalshi reports a window's `result` (docs/KALSHI_FACTS.md §2).
//!
//! - The window is `open_time`..`close_time` as sent (RFC 3339 UTC); the ticker is never parsed for
//!   times (it encodes the close in US Eastern time, DST included).
//! - The ticker goes into request paths (`/markets/{ticker}/orderbook`), so it must be a safe token
//!   ([`is_valid_ticker`]); a record whose ticker is not is refused, never used.
//! - Prices and strikes stay as sent (`floor_strike` is a JSON number in the live capture, a string
//!   in one third-party test): kept as the JSON value, never converted through f64.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::clock;
use crate::envelope::VENUE_KALSHI;
use crate::track::{Action, PollSlot, Reason, Sweep};

pub const MARKET_SCHEMA: &str = "pmarchive.kalshi_market/1";
pub const RESOLUTION_SCHEMA: &str = "pmarchive.kalshi_resolution/1";
/// The series this lane collects: BTC up or down in the next 15 minutes.
pub const SERIES: &str = "KXBTC15M";

/// The normalized market record (one JSONL line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Market {
    /// Always `market`.
    pub record: String,
    pub schema: String,
    /// Always `kalshi`.
    pub venue: String,
    /// The series queried (`KXBTC15M`); Kalshi's market object does not carry it.
    pub series_ticker: String,
    pub event_ticker: String,
    pub ticker: String,
    pub title: Option<String>,
    /// Kalshi `open_time` and `close_time`, as parsed and re-printed (RFC 3339, `Z`).
    pub window_start_utc: String,
    pub window_end_utc: String,
    /// Kalshi `status` as sent (`initialized`, `active`, `closed`, `determined`, `finalized`, …).
    pub venue_status: String,
    /// Derived at fetch time, the same words as Polymarket's record: `upcoming` (before the window),
    /// `open`, `ended` (after the window, no result yet), `closed` (a `result` is set).
    pub status: String,
    /// `floor_strike` as sent (the opening BRTI average; null until known).
    pub floor_strike: Value,
    pub strike_type: Option<String>,
    /// `price_level_structure` as sent (`tapered_deci_cent` for KXBTC15M).
    pub price_level_structure: Option<String>,
    /// `result` as sent: `""` until determined, then `yes` / `no`.
    pub result: String,
    pub source_url: String,
    pub fetched_at_utc: String,
    /// Why this line was written: `snapshot` (--once), `new`, `changed`, `expired` (watch mode).
    pub change: String,
}

impl Market {
    pub fn window_start(&self) -> Option<OffsetDateTime> {
        clock::parse_rfc3339(&self.window_start_utc)
    }

    pub fn window_end(&self) -> Option<OffsetDateTime> {
        clock::parse_rfc3339(&self.window_end_utc)
    }

    /// What a watcher compares to decide that a market `changed`.
    pub fn state_key(&self) -> (String, String, Value, String) {
        (self.venue_status.clone(), self.status.clone(), self.floor_strike.clone(), self.result.clone())
    }
}

/// What Kalshi says about a window's outcome (one JSONL line), written by `kalshi-markets --watch`
/// once per market after its window: when `result` is first non-empty, or `unresolved` when
/// `--resolve-for` ran out without it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    /// Always `resolution`.
    pub record: String,
    pub schema: String,
    pub venue: String,
    pub series_ticker: String,
    pub event_ticker: String,
    pub ticker: String,
    pub window_start_utc: String,
    pub window_end_utc: String,
    /// `yes` / `no` as Kalshi sent it (`scalar` is in the enum, never seen on KXBTC15M), or
    /// `unresolved`.
    pub result: String,
    /// Kalshi `status` as sent in the reply that gave the result.
    pub venue_status: String,
    /// `expiration_value` as sent (the settlement BRTI average, a string), when present.
    pub expiration_value: Option<String>,
    pub floor_strike: Value,
    /// Fetches of this market after its window, this one included.
    pub checks: u32,
    pub source_url: String,
    pub fetched_at_utc: String,
}

impl Resolution {
    /// The resolution in Kalshi market object `v` (already parsed as `m`), or None while `result`
    /// is empty.
    pub fn of(v: &Value, m: &Market, checks: u32) -> Option<Resolution> {
        if m.result.is_empty() {
            return None;
        }
        let mut r = Resolution::unresolved(m, checks);
        r.result = m.result.clone();
        r.expiration_value =
            v.get("expiration_value").and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from);
        Some(r)
    }

    /// The record for a market whose result did not come in time (`result: "unresolved"`).
    pub fn unresolved(m: &Market, checks: u32) -> Resolution {
        Resolution {
            record: "resolution".into(),
            schema: RESOLUTION_SCHEMA.into(),
            venue: m.venue.clone(),
            series_ticker: m.series_ticker.clone(),
            event_ticker: m.event_ticker.clone(),
            ticker: m.ticker.clone(),
            window_start_utc: m.window_start_utc.clone(),
            window_end_utc: m.window_end_utc.clone(),
            result: "unresolved".into(),
            venue_status: m.venue_status.clone(),
            expiration_value: None,
            floor_strike: m.floor_strike.clone(),
            checks,
            source_url: m.source_url.clone(),
            fetched_at_utc: m.fetched_at_utc.clone(),
        }
    }
}

/// The `ctx` of the `track` lines of kalshi-books and kalshi-trades (the Kalshi counterpart of
/// [`crate::track::TrackCtx`], same `action`/`reason` words): the market's tickers and window, and
/// the slot, its due time and the endpoint polled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackCtx {
    pub action: Action,
    pub reason: Reason,
    pub series_ticker: String,
    pub event_ticker: String,
    pub ticker: String,
    pub window_start_utc: String,
    pub window_end_utc: String,
    #[serde(flatten)]
    pub poll: PollSlot,
    /// kalshi-trades, on the stop after the final sweep: whether the sweep completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_sweep: Option<Sweep>,
}

impl TrackCtx {
    pub fn new(action: Action, reason: Reason, m: &Market) -> TrackCtx {
        TrackCtx {
            action,
            reason,
            series_ticker: m.series_ticker.clone(),
            event_ticker: m.event_ticker.clone(),
            ticker: m.ticker.clone(),
            window_start_utc: m.window_start_utc.clone(),
            window_end_utc: m.window_end_utc.clone(),
            poll: PollSlot::default(),
            final_sweep: None,
        }
    }
}

/// A ticker safe to put in a request path: 1–64 characters of `A-Z`, `0-9`, `-`, `_`, `.`, not
/// starting with `.` or `-`.
pub fn is_valid_ticker(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with(['.', '-'])
        && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
}

/// The derived status at `now` (see [`Market::status`]).
pub fn status_at(start: OffsetDateTime, end: OffsetDateTime, result: &str, now: OffsetDateTime) -> &'static str {
    if !result.is_empty() {
        "closed"
    } else if now < start {
        "upcoming"
    } else if now < end {
        "open"
    } else {
        "ended"
    }
}

/// Parses one Kalshi `Market` object (an element of `GET /markets`' `markets`, or `GET
/// /markets/{ticker}`'s `market`) of series `series`. Err says why it is unusable (the raw reply
/// is archived either way).
pub fn parse_market(v: &Value, series: &str, source_url: &str, fetched_at: OffsetDateTime) -> Result<Market, String> {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    let ticker = s("ticker").ok_or("no ticker")?;
    if !is_valid_ticker(ticker) {
        return Err(format!("ticker is not a safe token: {ticker:?}"));
    }
    let event_ticker = s("event_ticker").unwrap_or_default();
    let time = |k: &str| -> Result<OffsetDateTime, String> {
        let t = s(k).ok_or_else(|| format!("no {k}"))?;
        clock::parse_rfc3339(t).ok_or_else(|| format!("{k} is not RFC 3339: {t:?}"))
    };
    let (start, end) = (time("open_time")?, time("close_time")?);
    if end <= start {
        return Err("close_time is not after open_time".into());
    }
    let result = s("result").unwrap_or_default().to_string();
    Ok(Market {
        record: "market".into(),
        schema: MARKET_SCHEMA.into(),
        venue: VENUE_KALSHI.into(),
        series_ticker: series.into(),
        event_ticker: event_ticker.into(),
        ticker: ticker.into(),
        title: s("title").map(String::from),
        window_start_utc: clock::fmt_secs(start),
        window_end_utc: clock::fmt_secs(end),
        venue_status: s("status").unwrap_or_default().into(),
        status: status_at(start, end, &result, fetched_at).into(),
        floor_strike: v.get("floor_strike").cloned().unwrap_or(Value::Null),
        strike_type: s("strike_type").map(String::from),
        price_level_structure: s("price_level_structure").map(String::from),
        result,
        source_url: source_url.into(),
        fetched_at_utc: clock::fmt_micros(fetched_at),
        change: "snapshot".into(),
    })
}

fn validate(m: &Market) -> Result<(), String> {
    if m.schema != MARKET_SCHEMA || m.record != "market" {
        return Err(format!("not a {MARKET_SCHEMA} market record (record {:?}, schema {:?})", m.record, m.schema));
    }
    if !is_valid_ticker(&m.ticker) {
        return Err(format!("ticker is not a safe token: {:?}", m.ticker));
    }
    let (Some(s), Some(e)) = (m.window_start(), m.window_end()) else {
        return Err(format!("window times are not RFC 3339: {:?} .. {:?}", m.window_start_utc, m.window_end_utc));
    };
    if e <= s {
        return Err("window_end_utc is not after window_start_utc".into());
    }
    Ok(())
}

impl crate::feed::Record for Market {
    const VENUE: &'static str = VENUE_KALSHI;

    /// Parses one input line (blank lines and resolution records give None).
    fn parse_line(line: &[u8]) -> Option<Result<Market, String>> {
        let text = match std::str::from_utf8(line) {
            Ok(t) => t.trim(),
            Err(e) => return Some(Err(format!("not UTF-8: {e}"))),
        };
        if text.is_empty() || (text.contains(RESOLUTION_SCHEMA) && is_resolution(text)) {
            return None;
        }
        Some(match serde_json::from_str::<Market>(text) {
            Ok(m) => validate(&m).map(|_| m),
            Err(e) => Err(format!("not a kalshi market record: {e}")),
        })
    }
}

fn is_resolution(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Kind<'a> {
        #[serde(borrow)]
        schema: Option<&'a str>,
    }
    serde_json::from_str::<Kind>(text).is_ok_and(|k| k.schema == Some(RESOLUTION_SCHEMA))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::Record;

    /// The real `GET /markets` capture quoted in docs/KALSHI_FACTS.md §2.2 (rules texts dropped).
    fn captured() -> Value {
        serde_json::from_str(
            r#"{"can_close_early": true, "close_time": "2026-08-17T05:00:00Z",
            "created_time": "2026-08-17T00:00:45.397234Z", "custom_strike": {"round_digits": "2"},
            "event_ticker": "KXBTC15M-26AUG170100", "exchange_index": 0,
            "expected_expiration_time": "2026-08-17T05:05:00Z", "expiration_time": "2026-08-24T05:00:00Z",
            "expiration_value": "", "floor_strike": 63441.03, "last_price_dollars": "0.9530",
            "market_type": "binary", "open_time": "2026-08-17T04:45:00Z",
            "price_level_structure": "tapered_deci_cent", "result": "", "status": "active",
            "strike_type": "greater_or_equal", "ticker": "KXBTC15M-26AUG170100-00",
            "title": "BTC price up in next 15 mins?", "yes_ask_dollars": "0.9530"}"#,
        )
        .unwrap()
    }

    fn at(s: &str) -> OffsetDateTime {
        clock::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn parses_the_captured_market() {
        let m = parse_market(&captured(), SERIES, "http://127.0.0.1/x", at("2026-08-17T04:50:00Z")).unwrap();
        assert_eq!(m.ticker, "KXBTC15M-26AUG170100-00");
        assert_eq!(m.event_ticker, "KXBTC15M-26AUG170100");
        assert_eq!(
            (m.window_start_utc.as_str(), m.window_end_utc.as_str()),
            ("2026-08-17T04:45:00Z", "2026-08-17T05:00:00Z")
        );
        assert_eq!((m.venue_status.as_str(), m.status.as_str(), m.result.as_str()), ("active", "open", ""));
        assert_eq!(m.floor_strike.to_string(), "63441.03");
        assert_eq!(m.venue, "kalshi");
        let line = serde_json::to_vec(&m).unwrap();
        assert_eq!(Market::parse_line(&line).unwrap().unwrap(), m);
        assert!(Resolution::of(&captured(), &m, 1).is_none(), "no result yet");
    }

    #[test]
    fn status_follows_the_window_and_the_result() {
        let mut v = captured();
        let m = parse_market(&v, SERIES, "u", at("2026-08-17T04:00:00Z")).unwrap();
        assert_eq!(m.status, "upcoming");
        let m = parse_market(&v, SERIES, "u", at("2026-08-17T05:00:00Z")).unwrap();
        assert_eq!(m.status, "ended");
        v["result"] = "yes".into();
        v["status"] = "finalized".into();
        v["expiration_value"] = "63500.12".into();
        let m = parse_market(&v, SERIES, "u", at("2026-08-17T05:03:00Z")).unwrap();
        assert_eq!(m.status, "closed");
        let r = Resolution::of(&v, &m, 3).unwrap();
        assert_eq!((r.result.as_str(), r.expiration_value.as_deref(), r.checks), ("yes", Some("63500.12"), 3));
        // The stream carries resolutions too: not a market to poll, not a bad line.
        assert!(Market::parse_line(&serde_json::to_vec(&r).unwrap()).is_none());
    }

    #[test]
    fn refuses_unsafe_tickers_and_bad_windows() {
        for bad in ["../etc", "KX/1", "", "kxbtc15m-lower", ".X", "A B"] {
            assert!(!is_valid_ticker(bad), "{bad}");
            let mut v = captured();
            v["ticker"] = bad.into();
            assert!(parse_market(&v, SERIES, "u", at("2026-08-17T04:50:00Z")).is_err(), "{bad}");
        }
        let mut v = captured();
        v["close_time"] = "2026-08-17T04:45:00Z".into();
        assert!(parse_market(&v, SERIES, "u", at("2026-08-17T04:50:00Z")).is_err());
        let mut v = captured();
        v["open_time"] = "yesterday".into();
        assert!(parse_market(&v, SERIES, "u", at("2026-08-17T04:50:00Z")).unwrap_err().contains("open_time"));
        assert!(Market::parse_line(b"{\"schema\":\"pmarchive.market/1\"}").unwrap().is_err());
        assert!(Market::parse_line(b"  ").is_none());
    }
}
