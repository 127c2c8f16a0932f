//! `pm-tradeset`'s engine: normalized trade rows (`pmarchive.trade/1`) from the two raw trade
//! sources, deduplicated, in a deterministic order, and the reconciliation of the websocket prints
//! against the Data API fills per market window (docs/TRADES.md).
//!
//! - Data API rows: every 200 page of `pm-trades` (stream `trades`). Role: a row whose key is among
//!   the market's `taker_only=true` rows (the final sweep's taker pass) is `taker`, any other row of a
//!   market whose sweep completed is `maker`; without a completed sweep the role is null.
//! - Websocket prints: every `last_trade_price` event in a `pm-stream` frame (stream `ws_market`).
//! - Deduplication key ([`TradeRow::key`]): Data API — [`crate::polymarket::trades::row_key`] (transaction hash,
//!   token, wallet, side, price, size, timestamp: the row has no trade id); websocket — asset, price,
//!   size, side, ms timestamp and transaction hash. Copies are counted (`copies`), never lost: the
//!   raw keeps each.
//! - Wallet profile fields (`name`, `pseudonym`, `bio`, `profile_image*`) are never read into a row.
//! - Order: exchange time (ms), source (`data_api` before `ws`), asset, key. Same input → same bytes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::clock;
use crate::envelope::RawLine;
use crate::http::HttpCtx;
use crate::jsonl::{self, LineReader, Next};
use crate::polymarket::stream::{WsCtx, WsEvent};
use crate::polymarket::trades::{row_key, PageCtx, RowId};
use crate::track::{Sweep, TrackCtx};

pub const SCHEMA: &str = "pmarchive.trade/1";
pub const RECONCILIATION_SCHEMA: &str = "pmarchive.trade_reconciliation/1";
pub const SOURCE_DATA_API: &str = "data_api";
pub const SOURCE_WS: &str = "ws";

/// One normalized trade row. Every key is always present (null when unknown), one JSON type each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TradeRow {
    pub schema: String,
    /// `data_api` (a fill row of `/v2/trades`) or `ws` (a `last_trade_price` print).
    pub source: String,
    /// Our receive time of the page or frame (RFC 3339 UTC, µs); the earliest copy's.
    pub ts_recv: String,
    /// Exchange time (RFC 3339 UTC, µs).
    pub ts_event: String,
    /// Exchange time in ms (Data API: its epoch seconds × 1000).
    pub ts_event_ms: i64,
    /// `s` (Data API) or `ms` (websocket): the resolution the venue gave.
    pub ts_event_resolution: String,
    pub asset_id: String,
    /// The condition id.
    pub market: String,
    /// Price and size as the venue wrote them (a JSON number as its shortest text).
    pub price: String,
    pub size: String,
    /// `BUY` or `SELL` as the venue wrote it (Data API: this row's order side; websocket: the
    /// print's side, whose meaning the venue does not document precisely — docs/TRADES.md).
    pub side: String,
    /// Data API: `taker` or `maker` (see the module doc), null when unknown; websocket: null.
    pub role: Option<String>,
    pub outcome: Option<String>,
    pub outcome_index: Option<i64>,
    /// Data API: the proxy wallet of the filled order (part of the key); never a profile field.
    pub proxy_wallet: Option<String>,
    pub fee_rate_bps: Option<String>,
    pub transaction_hash: Option<String>,
    /// Websocket: the connection the print arrived on (first copy).
    pub conn_id: Option<u64>,
    pub slug: Option<String>,
    /// The deduplication key (see the module doc).
    pub key: String,
    /// How many raw copies this row stands for (pages overlap, connections overlap).
    pub copies: u64,
}

/// A market window as the track lines describe it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WindowInfo {
    pub slug: Option<String>,
    pub window_start_utc: Option<String>,
    pub window_end_utc: Option<String>,
}

/// Counts of one run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Counts {
    pub lines: u64,
    pub bad_lines: u64,
    pub pages: u64,
    pub frames: u64,
    pub data_api_copies: u64,
    pub ws_copies: u64,
    pub rows: BTreeMap<String, u64>,
}

/// The offset distribution (ws exchange ms − Data API exchange s × 1000) of matched prints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Offsets {
    pub n: u64,
    pub min_ms: Option<i64>,
    pub p10_ms: Option<i64>,
    pub p50_ms: Option<i64>,
    pub p90_ms: Option<i64>,
    pub max_ms: Option<i64>,
}

impl Offsets {
    fn of(mut v: Vec<i64>) -> Offsets {
        v.sort_unstable();
        let q = |p: f64| -> Option<i64> { (!v.is_empty()).then(|| v[((v.len() - 1) as f64 * p).round() as usize]) };
        Offsets { n: v.len() as u64, min_ms: q(0.0), p10_ms: q(0.1), p50_ms: q(0.5), p90_ms: q(0.9), max_ms: q(1.0) }
    }
}

/// One market window's reconciliation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MarketReconciliation {
    pub market: String,
    #[serde(flatten)]
    pub window: WindowInfo,
    pub data_api_rows: u64,
    pub data_api_taker_rows: u64,
    /// Whether the market's final sweep (both passes) completed: only then are roles known.
    pub swept: bool,
    #[serde(flatten)]
    pub matches: Matches,
    pub offset: Offsets,
}

/// How the websocket prints and the Data API fills of a market (or of all) matched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matches {
    pub ws_prints: u64,
    pub matched_by_hash: u64,
    pub matched_by_fields: u64,
    pub unmatched_ws: u64,
    /// Data API taker rows (all rows when roles are unknown) that no websocket print matched.
    pub data_api_only: u64,
}

impl Matches {
    fn add(&mut self, o: &Matches) {
        self.ws_prints += o.ws_prints;
        self.matched_by_hash += o.matched_by_hash;
        self.matched_by_fields += o.matched_by_fields;
        self.unmatched_ws += o.unmatched_ws;
        self.data_api_only += o.data_api_only;
    }
}

/// The reconciliation report (`--check` output, and in the manifest).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reconciliation {
    pub schema: String,
    pub match_window_ms: i64,
    pub markets: Vec<MarketReconciliation>,
    pub totals: MarketTotals,
}

/// pm-tradeset's `options` in its manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Options {
    /// `--match-secs`: the largest |offset| of a price/size/time match, in seconds.
    pub match_secs: f64,
}

/// pm-tradeset's own key in its manifest (`pmarchive.tradeset_manifest/1`): the reconciliation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManifestExtra {
    pub reconciliation: Reconciliation,
}

/// pm-tradeset's manifest: the derived-file manifest ([`crate::derived`]) with its options, counts
/// and reconciliation.
pub type Manifest = crate::derived::DerivedManifest<Options, Counts, ManifestExtra>;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MarketTotals {
    pub markets: u64,
    #[serde(flatten)]
    pub matches: Matches,
    pub offset: Offsets,
}

/// A raw line, read through the envelope's reader type: the reply body as JSON, the `ctx` raw until
/// the line's kind and tool say which type it is (pm-books'/pm-stream's/pm-trades' [`TrackCtx`],
/// pm-trades' [`PageCtx`], pm-stream's [`WsCtx`]).
type Line<'a> = RawLine<'a, Value, Box<RawValue>>;

/// The line's `ctx` as its writer's type; None when absent or not of that type.
fn ctx<T: serde::de::DeserializeOwned>(l: &Line) -> Option<T> {
    l.ctx.as_ref().and_then(|c| serde_json::from_str(c.get()).ok())
}

/// A Data API row's fields that go into a trade row (profile fields are not among them).
#[derive(Deserialize)]
struct ApiRow {
    #[serde(flatten)]
    id: RowId,
    #[serde(default)]
    outcome: Option<String>,
    #[serde(default)]
    outcome_index: Option<i64>,
    #[serde(default)]
    slug: Option<String>,
}

#[derive(Default)]
pub struct TradeSet {
    rows: HashMap<String, TradeRow>,
    /// Per condition: keys served by `taker_only=true` pages.
    taker_keys: HashMap<String, HashSet<String>>,
    /// Conditions whose final sweep completed.
    swept: HashSet<String>,
    windows: HashMap<String, WindowInfo>,
    pub counts: Counts,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn opt_text(v: &Value) -> Option<String> {
    (!v.is_null()).then(|| text(v)).filter(|s| !s.is_empty())
}

/// The row of a Data API fill (`key`: its [`row_key`]), received at `recv`.
fn api_row(a: ApiRow, key: &str, recv: &str) -> TradeRow {
    let secs = match &a.id.timestamp {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    let ms = secs.unwrap_or(0).saturating_mul(1000);
    TradeRow {
        schema: SCHEMA.into(),
        source: SOURCE_DATA_API.into(),
        ts_recv: recv.to_string(),
        ts_event: clock::from_unix_ms(ms).map(clock::fmt_micros).unwrap_or_default(),
        ts_event_ms: ms,
        ts_event_resolution: "s".into(),
        asset_id: text(&a.id.token_id),
        market: text(&a.id.condition_id),
        price: text(&a.id.price),
        size: text(&a.id.size),
        side: text(&a.id.side),
        role: None,
        outcome: a.outcome,
        outcome_index: a.outcome_index,
        proxy_wallet: opt_text(&a.id.proxy_wallet),
        fee_rate_bps: None,
        transaction_hash: opt_text(&a.id.transaction_hash),
        conn_id: None,
        slug: a.slug,
        key: format!("{SOURCE_DATA_API}|{key}"),
        copies: 1,
    }
}

/// The row of a websocket `last_trade_price` event that arrived on connection `conn_id` at `recv`.
fn ws_row(e: &Value, conn_id: Option<u64>, recv: &str) -> TradeRow {
    let ms = match &e["timestamp"] {
        Value::String(s) => s.parse::<i64>().unwrap_or(0),
        v => v.as_i64().unwrap_or(0),
    };
    let g = |k: &str| text(&e[k]);
    let key = [g("asset_id"), g("price"), g("size"), g("side"), ms.to_string(), g("transaction_hash")].join("|");
    TradeRow {
        schema: SCHEMA.into(),
        source: SOURCE_WS.into(),
        ts_recv: recv.to_string(),
        ts_event: clock::from_unix_ms(ms).map(clock::fmt_micros).unwrap_or_default(),
        ts_event_ms: ms,
        ts_event_resolution: "ms".into(),
        asset_id: g("asset_id"),
        market: g("market"),
        price: g("price"),
        size: g("size"),
        side: g("side"),
        role: None,
        outcome: None,
        outcome_index: None,
        proxy_wallet: None,
        fee_rate_bps: opt_text(&e["fee_rate_bps"]),
        transaction_hash: opt_text(&e["transaction_hash"]),
        conn_id,
        slug: None,
        key: format!("{SOURCE_WS}|{key}"),
        copies: 1,
    }
}

impl TradeSet {
    pub fn new() -> TradeSet {
        TradeSet::default()
    }

    /// Reads one input (plain or gzip JSONL; `-` = stdin). Unusable lines are counted and reported
    /// on stderr, never fatal.
    pub fn read(&mut self, name: &str) -> io::Result<()> {
        let src: Box<dyn io::BufRead + Send> =
            if name == "-" { jsonl::reader(Box::new(io::stdin()))? } else { jsonl::open(std::path::Path::new(name))? };
        let mut r = LineReader::new(src);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.next_into(&mut buf) {
                Ok(Next::Eof) => return Ok(()),
                Ok(Next::Line) => {
                    if buf.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    self.counts.lines += 1;
                    match serde_json::from_slice::<Line<'_>>(&buf) {
                        Ok(l) => self.line(l),
                        Err(e) => {
                            self.counts.bad_lines += 1;
                            eprintln!("pm-tradeset: {name}: line {}: skipped: not a raw line: {e}", r.line_no());
                        }
                    }
                }
                Ok(Next::TooLong(t)) => {
                    self.counts.bad_lines += 1;
                    eprintln!("pm-tradeset: {name}: {t}");
                }
                Err(e) => {
                    self.counts.bad_lines += 1;
                    eprintln!("pm-tradeset: {name}: read error after line {}: {e}", r.line_no());
                    return Ok(());
                }
            }
        }
    }

    fn line(&mut self, l: Line) {
        let recv = l.collected_at_utc.as_deref().unwrap_or_default();
        let by_trades = l.tool.as_deref() == Some("pm-trades");
        match l.kind.as_deref() {
            Some("track") => {
                if let Some(c) = ctx::<TrackCtx>(&l) {
                    self.track(c, by_trades);
                }
            }
            Some("http") if by_trades && l.status == Some(200) => {
                if let Some(rows) = l.body.as_ref().and_then(|b| b.get("data")).and_then(Value::as_array) {
                    let page = ctx::<HttpCtx<PageCtx>>(&l).and_then(|c| c.caller);
                    self.page(rows, page.is_some_and(|p| p.taker_only), recv);
                }
            }
            Some("ws") => match (ctx::<WsCtx>(&l), &l.body) {
                (Some(c @ WsCtx { event: WsEvent::Frame, .. }), Some(Value::Array(a))) => {
                    self.frame(a.iter(), c.conn_id, recv)
                }
                (Some(c @ WsCtx { event: WsEvent::Frame, .. }), Some(v @ Value::Object(_))) => {
                    self.frame(std::iter::once(v), c.conn_id, recv)
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// A track line: the market's window and slug; pm-trades' stop after a complete final sweep
    /// makes the market's roles known.
    fn track(&mut self, c: TrackCtx, by_trades: bool) {
        if by_trades && c.final_sweep == Some(Sweep::Complete) {
            self.swept.insert(c.condition_id.clone());
        }
        let w = self.windows.entry(c.condition_id).or_default();
        w.slug = Some(c.slug);
        w.window_start_utc = Some(c.window_start_utc);
        w.window_end_utc = Some(c.window_end_utc);
    }

    /// A 200 page of pm-trades: one row per Data API fill (a `taker_only=true` page also marks its
    /// rows as the taker's).
    fn page(&mut self, rows: &[Value], taker_only: bool, recv: &str) {
        self.counts.pages += 1;
        for r in rows {
            let Ok(a) = serde_json::from_value::<ApiRow>(r.clone()) else { continue };
            self.counts.data_api_copies += 1;
            let key = row_key(&a.id);
            if taker_only {
                self.taker_keys.entry(text(&a.id.condition_id)).or_default().insert(key.clone());
            }
            self.add(api_row(a, &key, recv));
        }
    }

    /// A websocket frame of pm-stream: one row per `last_trade_price` event.
    fn frame<'a>(&mut self, events: impl Iterator<Item = &'a Value>, conn_id: Option<u64>, recv: &str) {
        self.counts.frames += 1;
        for e in events.filter(|e| e["event_type"] == "last_trade_price") {
            self.counts.ws_copies += 1;
            self.add(ws_row(e, conn_id, recv));
        }
    }

    /// Adds a row; a copy of a known row only counts (the earliest receive time is kept, so the
    /// result does not depend on the order of the inputs).
    fn add(&mut self, row: TradeRow) {
        match self.rows.get_mut(&row.key) {
            Some(r) => {
                r.copies += 1;
                if row.ts_recv < r.ts_recv {
                    (r.ts_recv, r.conn_id) = (row.ts_recv, row.conn_id);
                }
            }
            None => {
                self.rows.insert(row.key.clone(), row);
            }
        }
    }

    /// The rows after the last input, counted by source in [`Counts::rows`] (call it once).
    pub fn finish(&mut self) -> Vec<TradeRow> {
        let rows = self.rows();
        for r in &rows {
            *self.counts.rows.entry(r.source.clone()).or_default() += 1;
        }
        rows
    }

    /// The rows, roles and slugs filled in, in the documented order.
    pub fn rows(&self) -> Vec<TradeRow> {
        let mut out: Vec<TradeRow> = self.rows.values().cloned().collect();
        for r in &mut out {
            if r.source == SOURCE_DATA_API && self.swept.contains(&r.market) {
                let raw_key = &r.key[SOURCE_DATA_API.len() + 1..];
                let taker = self.taker_keys.get(&r.market).is_some_and(|k| k.contains(raw_key));
                r.role = Some(if taker { "taker" } else { "maker" }.into());
            }
            if r.slug.is_none() {
                r.slug = self.windows.get(&r.market).and_then(|w| w.slug.clone());
            }
        }
        out.sort_by(|a, b| {
            (a.ts_event_ms, &a.source, &a.asset_id, &a.key).cmp(&(b.ts_event_ms, &b.source, &b.asset_id, &b.key))
        });
        out
    }

    /// Matches websocket prints to Data API fills per market (see docs/TRADES.md, Reconciliation):
    /// first by transaction hash (same asset), then by asset, price, size and |offset| ≤ `window_ms`
    /// — each fill used once, taker rows only when roles are known.
    pub fn reconcile(&self, rows: &[TradeRow], window_ms: i64) -> Reconciliation {
        let mut by_market: BTreeMap<&str, (Vec<&TradeRow>, Vec<&TradeRow>)> = BTreeMap::new();
        for r in rows {
            let e = by_market.entry(r.market.as_str()).or_default();
            if r.source == SOURCE_WS {
                e.0.push(r);
            } else {
                e.1.push(r);
            }
        }
        let mut markets = Vec::new();
        let mut all_offsets = Vec::new();
        let mut totals = MarketTotals::default();
        for (market, (ws, api)) in by_market {
            let swept = self.swept.contains(market);
            let fills: Vec<&TradeRow> =
                api.iter().copied().filter(|r| !swept || r.role.as_deref() == Some("taker")).collect();
            let (matches, offsets) = match_prints(&ws, &fills, window_ms);
            all_offsets.extend_from_slice(&offsets);
            totals.markets += 1;
            totals.matches.add(&matches);
            markets.push(MarketReconciliation {
                market: market.to_string(),
                window: self.windows.get(market).cloned().unwrap_or_default(),
                data_api_rows: api.len() as u64,
                data_api_taker_rows: api.iter().filter(|r| r.role.as_deref() == Some("taker")).count() as u64,
                swept,
                matches,
                offset: Offsets::of(offsets),
            });
        }
        totals.offset = Offsets::of(all_offsets);
        Reconciliation { schema: RECONCILIATION_SCHEMA.to_string(), match_window_ms: window_ms, markets, totals }
    }
}

/// Matches each websocket print of a market to at most one of its Data API fills: by transaction
/// hash (and asset), else by asset, price, size and the nearest time within `window_ms`; returns the
/// counts and the offsets (ws ms − fill ms) of the matches.
fn match_prints(ws: &[&TradeRow], fills: &[&TradeRow], window_ms: i64) -> (Matches, Vec<i64>) {
    let num = |s: &str| s.parse::<f64>().ok();
    let mut used = vec![false; fills.len()];
    let mut m = Matches { ws_prints: ws.len() as u64, ..Matches::default() };
    let mut offsets = Vec::new();
    for p in ws {
        let hash_hit = p.transaction_hash.as_ref().and_then(|h| {
            (0..fills.len())
                .find(|&i| !used[i] && fills[i].transaction_hash.as_ref() == Some(h) && fills[i].asset_id == p.asset_id)
        });
        let hit = hash_hit.map(|i| (i, true)).or_else(|| {
            (0..fills.len())
                .filter(|&i| {
                    let f = fills[i];
                    !used[i]
                        && f.asset_id == p.asset_id
                        && num(&f.price).is_some()
                        && num(&f.price) == num(&p.price)
                        && num(&f.size) == num(&p.size)
                        && (p.ts_event_ms - f.ts_event_ms).abs() <= window_ms
                })
                .min_by_key(|&i| ((p.ts_event_ms - fills[i].ts_event_ms).abs(), i))
                .map(|i| (i, false))
        });
        match hit {
            Some((i, by_hash)) => {
                used[i] = true;
                if by_hash {
                    m.matched_by_hash += 1;
                } else {
                    m.matched_by_fields += 1;
                }
                offsets.push(p.ts_event_ms - fills[i].ts_event_ms);
            }
            None => m.unmatched_ws += 1,
        }
    }
    m.data_api_only = used.iter().filter(|u| !**u).count() as u64;
    (m, offsets)
}

/// The rows as JSONL text.
pub fn to_jsonl(rows: &[TradeRow]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in rows {
        serde_json::to_writer(&mut out, r).expect("serializes");
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_nearest_rank_quantiles() {
        let o = Offsets::of(vec![300, 100, 200, 400, 500]);
        assert_eq!((o.n, o.min_ms, o.p50_ms, o.max_ms), (5, Some(100), Some(300), Some(500)));
        assert_eq!(Offsets::of(vec![]).p50_ms, None);
    }

    /// pm-stream's track lines before the one reason vocabulary (commit 3c32ffe) said `window_lead`
    /// and `window_grace_over`: they still name the market's window and slug.
    #[test]
    fn old_pm_stream_track_lines_with_the_retired_reason_words_still_name_the_window() {
        let mut s = TradeSet::new();
        let track = |m: &str, action: &str, reason: &str| {
            format!(
                r#"{{"kind":"track","tool":"pm-stream","ctx":{{"action":"{action}","reason":"{reason}","slug":"btc-updown-5m-{m}","condition_id":"0x{m}","family":"5m","tokens":[{{"token_id":"1","outcome":"Up"}}],"window_start_utc":"2026-01-01T00:00:00Z","window_end_utc":"2026-01-01T00:05:00Z","stream":"ws_market"}}}}"#
            )
        };
        let start = track("a", "start", "window_lead");
        let stop = track("b", "stop", "window_grace_over");
        for l in [&start, &stop] {
            let c: TrackCtx = serde_json::from_str::<Line>(l).ok().as_ref().and_then(ctx).expect(l);
            assert!(matches!(c.reason, crate::track::Reason::Window | crate::track::Reason::GraceElapsed), "{l}");
            s.line(serde_json::from_str(l).unwrap());
        }
        for m in ["a", "b"] {
            s.line(serde_json::from_str(&format!(r#"{{"kind":"ws","collected_at_utc":"2026-01-01T00:00:01.000000Z","body":{{"event_type":"last_trade_price","asset_id":"{m}1","market":"0x{m}","price":"0.5","size":"10","side":"BUY","timestamp":"1767225600500"}},"ctx":{{"event":"frame","conn_id":1}}}}"#)).unwrap());
        }
        let rows = s.rows();
        let slugs: Vec<Option<&str>> = rows.iter().map(|r| r.slug.as_deref()).collect();
        assert_eq!(slugs, [Some("btc-updown-5m-a"), Some("btc-updown-5m-b")]);
        let rec = s.reconcile(&rows, 5000);
        assert_eq!(rec.markets[1].window.window_end_utc.as_deref(), Some("2026-01-01T00:05:00Z"));
    }

    #[test]
    fn a_row_round_trips_and_has_every_key() {
        let mut s = TradeSet::new();
        s.line(serde_json::from_str(r#"{"kind":"ws","collected_at_utc":"2026-01-01T00:00:01.000000Z","body":{"event_type":"last_trade_price","asset_id":"1","market":"0xm","price":"0.5","size":"10","side":"BUY","timestamp":"1767225600500","transaction_hash":"0xt"},"ctx":{"event":"frame","conn_id":2}}"#).unwrap());
        let rows = s.rows();
        assert_eq!(rows.len(), 1);
        let v = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 21);
        assert!(v["role"].is_null() && v["outcome"].is_null());
        assert_eq!(serde_json::from_value::<TradeRow>(v).unwrap(), rows[0]);
    }
}
