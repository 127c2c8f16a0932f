//! pm-rebuild's engine: order books rebuilt from raw websocket frames (and REST `/books` replies),
//! every change verified with the venue's hash (facts §6.3, [`crate::book`]).
//!
//! Per asset: a `book` event (or a REST book) sets the state; each `price_change` entry sets the
//! absolute size at one level (`"0"` removes it; BUY = bid, SELL = ask); after the last entry of a
//! message for an asset (entries of one message that share a hash describe one state) the hash of the
//! rebuilt book is compared with the venue's. A mismatch marks the asset **untrusted until the next
//! `book` event or REST snapshot** (issue 7's rule): a later hash that happens to match again does
//! not restore trust; it is counted (`matches_while_untrusted`). `tick_size_change` updates the tick
//! size and `last_trade_price` offers a new `last_trade_price` for the hash (both enter it).
//!
//! Output: the REST path's rows, `pmarchive.orderbook/1` `book` rows written by pm-normalize's one
//! row formatter ([`Normalizer::state_row`]) with `source` `ws` / `ws_rest` and the flag
//! `untrusted`; `pmarchive.trade/1` rows; and a [`Stats`] summary. Fields: docs/ORDERBOOK_SCHEMA.md
//! ("Derived websocket streams") and docs/WEBSOCKET.md.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use serde::{Deserialize, Serialize};
use serde_json::value::{to_raw_value, RawValue};
use serde_json::Value;

use crate::bookhash as book;
use crate::clock;
use crate::normalize::{self, dec, parse, Normalizer};

pub const TRADE_SCHEMA: &str = "pmarchive.trade/1";
/// `source` of a row holding the rebuilt state after a websocket message (`book` or `price_change`).
pub const SOURCE_WS: &str = "ws";
/// `source` of a row holding the rebuilt state as set from a REST book reply in the stream.
pub const SOURCE_WS_REST: &str = "ws_rest";

/// Rows are handed to the writer once this much is buffered.
const OUT_CHUNK: usize = 1 << 16;

/// Rebuild options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Row shape, exactly as pm-normalize's (`depth`: levels per side, `max_lag_ms` for `recv_far`).
    pub rows: normalize::Options,
    /// At most one row per asset per this many ms of exchange time (None: a row per state).
    pub every_ms: Option<i64>,
    /// Used for the hash when no REST book of the asset has been seen (WS books lack the field).
    pub min_order_size: Value,
    pub neg_risk: Value,
    /// False: verify only, format no rows (`--no-rows`).
    pub write_rows: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rows: normalize::Options::default(),
            every_ms: None,
            min_order_size: Value::from("5"),
            neg_risk: Value::Bool(false),
            write_rows: true,
        }
    }
}

/// Verification summary (also `--summary FILE`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub lines: u64,
    pub bad_lines: u64,
    /// Lines that are neither ws frames nor REST book replies (tracking records, other endpoints, …).
    pub other_lines: u64,
    /// `track` lines (their tokens feed the slug/outcome join; also counted in `other_lines`).
    pub track_lines: u64,
    pub ws_frames: u64,
    /// Non-JSON frames (`PONG`, `NO NEW ASSETS`).
    pub text_frames: u64,
    pub ws_events: BTreeMap<String, u64>,
    /// Events that could not be used (missing fields).
    pub bad_events: u64,
    pub ws_books: u64,
    pub ws_book_hash_matched: u64,
    pub ws_book_hash_mismatched: u64,
    pub rest_books: u64,
    pub rest_hash_matched: u64,
    pub rest_hash_mismatched: u64,
    /// REST books older than the rebuilt state (not applied).
    pub rest_stale: u64,
    pub changes_applied: u64,
    /// price_change entries for an asset without a known book yet (not applied).
    pub changes_without_book: u64,
    pub hash_checks: u64,
    pub hashes_matched: u64,
    /// Mismatches on a trusted book: each one is a detected gap.
    pub hashes_mismatched: u64,
    /// Further mismatches while the asset was already untrusted.
    pub mismatches_while_untrusted: u64,
    /// Matches on an untrusted book (also in `hashes_matched`): they do not restore trust.
    pub matches_while_untrusted: u64,
    /// Matches reached only with a `last_trade_price` from a trade event.
    pub matched_with_trade_price: u64,
    /// Untrusted → trusted transitions, by cause (the only two).
    pub resyncs_ws_book: u64,
    pub resyncs_rest: u64,
    /// Receive-time seconds summed over assets while untrusted.
    pub untrusted_s: f64,
    /// REST snapshots at the same exchange timestamp as the rebuilt book.
    pub cross_checks_agree: u64,
    pub cross_checks_disagree: u64,
    /// `book` rows written (pmarchive.orderbook/1).
    pub rows: u64,
    /// Quality flags over the rows written (pm-normalize's counts, plus `untrusted` when raised).
    pub row_flags: BTreeMap<&'static str, u64>,
    /// Rows without a joined slug (no `track` line or `--markets` record for the token).
    pub unjoined_rows: u64,
    pub trades: u64,
    pub assets: BTreeMap<String, AssetStats>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct AssetStats {
    pub changes: u64,
    pub matched: u64,
    pub mismatched: u64,
    pub trusted_at_end: bool,
}

#[derive(Clone, Debug)]
struct Level {
    key: f64,
    price: String,
    size: String,
}

/// A hash-relevant scalar as JSON text (what the row writer copies verbatim).
type Raw = Box<RawValue>;

fn raw(v: &Value) -> Raw {
    to_raw_value(v).expect("a JSON value serializes")
}

#[derive(Clone, Debug)]
struct Book {
    market: String,
    timestamp: String,
    ts_ms: i64,
    /// Ascending (wire order).
    bids: Vec<Level>,
    /// Descending (wire order).
    asks: Vec<Level>,
    tick_size: Raw,
    ltp: Raw,
    /// Prices of trades seen since the last match, tried when the hash does not match.
    ltp_candidates: Vec<Raw>,
    /// The venue's hash of this state; None after a change that came without one.
    hash: Option<String>,
    verified: Option<bool>,
    trusted: bool,
    untrusted_since_us: Option<i64>,
    last_row_ms: Option<i64>,
}

#[derive(Deserialize)]
struct Ctx {
    event: Option<String>,
    conn_id: Option<u64>,
}

#[derive(Deserialize)]
struct Line<'a> {
    venue: Option<&'a str>,
    run_id: Option<&'a str>,
    seq: Option<u64>,
    kind: Option<&'a str>,
    endpoint: Option<&'a str>,
    status: Option<u16>,
    collected_at_utc: Option<&'a str>,
    #[serde(borrow)]
    body: Option<&'a RawValue>,
    body_text: Option<String>,
    ctx: Option<Ctx>,
}

/// A `track` line's context, as JSON text (re-read only for those rare lines).
#[derive(Deserialize)]
struct TrackLine<'a> {
    #[serde(borrow)]
    ctx: Option<&'a RawValue>,
}

fn parse_level(v: &Value) -> Option<Level> {
    let price = v.get("price")?.as_str()?;
    let size = v.get("size")?.as_str()?;
    Some(Level { key: price.trim().parse().ok()?, price: price.to_string(), size: size.to_string() })
}

fn parse_side(v: Option<&Value>) -> Option<Vec<Level>> {
    v?.as_array()?.iter().map(parse_level).collect()
}

fn is_zero(size: &str) -> bool {
    size.trim().parse::<f64>().map(|x| x == 0.0).unwrap_or(false)
}

/// Sets the absolute size at a level; keeps `ascending` (bids) or descending (asks) order.
fn set_level(side: &mut Vec<Level>, ascending: bool, price: &str, size: &str) -> Option<()> {
    let key: f64 = price.trim().parse().ok()?;
    let pos = side.iter().position(|l| l.key == key);
    match (pos, is_zero(size)) {
        (Some(i), true) => {
            side.remove(i);
        }
        (Some(i), false) => side[i].size = size.to_string(),
        (None, true) => {}
        (None, false) => {
            let at = side.iter().position(|l| if ascending { l.key > key } else { l.key < key }).unwrap_or(side.len());
            side.insert(at, Level { key, price: price.to_string(), size: size.to_string() });
        }
    }
    Some(())
}

/// A rebuilt side as the row writer's levels (borrowed, wire order).
fn view_side(s: &[Level]) -> Option<Vec<parse::Level<'_>>> {
    Some(
        s.iter()
            .map(|l| parse::Level {
                price: Some(Cow::Borrowed(l.price.as_str())),
                size: Some(Cow::Borrowed(l.size.as_str())),
            })
            .collect(),
    )
}

#[derive(Serialize)]
struct Trade<'a> {
    schema: &'static str,
    ts_recv: &'a str,
    ts_event: String,
    ts_event_ms: i64,
    asset_id: &'a str,
    market: &'a str,
    price: &'a str,
    size: &'a str,
    side: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    fee_rate_bps: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_hash: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conn_id: Option<u64>,
}

fn ts_event(ms: i64) -> String {
    clock::from_unix_ms(ms).map(clock::fmt_micros).unwrap_or_default()
}

/// The receive context and provenance of the line being processed.
struct Recv<'a> {
    at: Option<&'a str>,
    conn_id: Option<u64>,
    venue: Option<&'a str>,
    run_id: Option<&'a str>,
    seq: Option<u64>,
}

impl Recv<'_> {
    fn us(&self) -> Option<i64> {
        self.at.and_then(dec::parse_utc_micros)
    }
}

/// (min_order_size, neg_risk) for an asset's hash and row: the latest REST book's, else the defaults.
fn meta_of<'m>(
    meta: &'m HashMap<String, (Raw, Raw)>,
    default: &'m (Raw, Raw),
    asset: &str,
) -> (&'m RawValue, &'m RawValue) {
    let (m, n) = meta.get(asset).unwrap_or(default);
    (m, n)
}

/// SHA-1 hex of the rebuilt state with `ltp` as `last_trade_price` (the one hash text writer,
/// [`book::write_hash_text`], as pm-normalize uses it).
fn hash_hex(buf: &mut Vec<u8>, asset: &str, b: &Book, meta: (&RawValue, &RawValue), ltp: &RawValue) -> [u8; 40] {
    let tail = [meta.0, &*b.tick_size, meta.1, ltp].map(parse::hash_scalar_text);
    book::write_hash_text(
        buf,
        &b.market,
        asset,
        &b.timestamp,
        b.bids.iter().map(|l| (l.price.as_str(), l.size.as_str())),
        b.asks.iter().map(|l| (l.price.as_str(), l.size.as_str())),
        [&tail[0], &tail[1], &tail[2], &tail[3]],
    );
    let mut hex = [0u8; 40];
    book::sha1_hex_into(buf, &mut hex);
    hex
}

/// Checks the rebuilt state against the venue's hash, trying trade prices for `last_trade_price`
/// when the current one does not match. Returns (matched, index of the trade price that matched).
fn check(buf: &mut Vec<u8>, asset: &str, b: &Book, meta: (&RawValue, &RawValue), venue: &str) -> (bool, Option<usize>) {
    if hash_hex(buf, asset, b, meta, &b.ltp) == venue.as_bytes() {
        return (true, None);
    }
    for (i, c) in b.ltp_candidates.iter().enumerate().rev() {
        if hash_hex(buf, asset, b, meta, c) == venue.as_bytes() {
            return (true, Some(i));
        }
    }
    (false, None)
}

/// The rebuild state machine over a stream of raw lines.
pub struct Rebuilder {
    opts: Options,
    books: HashMap<String, Book>,
    /// (min_order_size, neg_risk) from REST books, per asset.
    meta: HashMap<String, (Raw, Raw)>,
    default_meta: (Raw, Raw),
    /// pm-normalize's row writer and its per-asset state (join, duplicate/ts_backwards).
    nor: Normalizer,
    buf: Vec<u8>,
    hash_buf: Vec<u8>,
    rows: Box<dyn Write>,
    trades: Option<Box<dyn Write>>,
    pub stats: Stats,
    /// Receive time of the last line that had one (closes untrusted spans at the end).
    last_at: String,
}

impl Rebuilder {
    pub fn new(opts: Options, rows: Box<dyn Write>, trades: Option<Box<dyn Write>>) -> Rebuilder {
        let default_meta = (raw(&opts.min_order_size), raw(&opts.neg_risk));
        Rebuilder {
            nor: Normalizer::new(opts.rows.clone()),
            opts,
            books: HashMap::new(),
            meta: HashMap::new(),
            default_meta,
            buf: Vec::with_capacity(OUT_CHUNK + (16 << 10)),
            hash_buf: Vec::with_capacity(8192),
            rows,
            trades,
            stats: Stats::default(),
            last_at: String::new(),
        }
    }

    /// The row writer, for loading the slug/outcome join ([`normalize::load_markets`]).
    pub fn normalizer(&mut self) -> &mut Normalizer {
        &mut self.nor
    }

    /// Processes one raw line. Err: the line is unusable (reason); the caller reports it.
    pub fn line(&mut self, text: &str) -> io::Result<Result<(), String>> {
        self.stats.lines += 1;
        let l: Line = match serde_json::from_str(text) {
            Ok(l) => l,
            Err(e) => {
                self.stats.bad_lines += 1;
                return Ok(Err(format!("not a raw envelope: {e}")));
            }
        };
        if let Some(at) = l.collected_at_utc {
            self.last_at.clear();
            self.last_at.push_str(at);
        }
        let recv = Recv {
            at: l.collected_at_utc,
            conn_id: l.ctx.as_ref().and_then(|c| c.conn_id),
            venue: l.venue,
            run_id: l.run_id,
            seq: l.seq,
        };
        let body: Option<&str> = l.body.map(RawValue::get).or(l.body_text.as_deref());
        match (l.kind, l.endpoint) {
            (Some("ws"), _) if l.ctx.as_ref().and_then(|c| c.event.as_deref()) == Some("frame") => {
                self.stats.ws_frames += 1;
                let Some(text) = body else {
                    self.stats.text_frames += 1;
                    return Ok(Ok(()));
                };
                match serde_json::from_str::<Value>(text) {
                    Ok(Value::Array(events)) => {
                        for ev in &events {
                            self.event(ev, &recv)?;
                        }
                    }
                    Ok(ev @ Value::Object(_)) => self.event(&ev, &recv)?,
                    Ok(_) => self.stats.bad_events += 1,
                    Err(_) => self.stats.text_frames += 1,
                }
            }
            (Some("http"), Some("books" | "book")) if l.status == Some(200) => {
                let Some(text) = body else { return Ok(Ok(())) };
                match serde_json::from_str::<Value>(text) {
                    Ok(Value::Array(bs)) => {
                        for b in &bs {
                            self.rest_book(b, &recv)?;
                        }
                    }
                    Ok(b @ Value::Object(_)) => self.rest_book(&b, &recv)?,
                    _ => self.stats.other_lines += 1,
                }
            }
            (Some("track"), _) => {
                self.stats.track_lines += 1;
                self.stats.other_lines += 1;
                if let Ok(TrackLine { ctx: Some(ctx) }) = serde_json::from_str::<TrackLine>(text) {
                    self.nor.learn_track_ctx(ctx.get());
                }
            }
            _ => self.stats.other_lines += 1,
        }
        Ok(Ok(()))
    }

    fn event(&mut self, ev: &Value, recv: &Recv) -> io::Result<()> {
        let et = ev.get("event_type").and_then(Value::as_str).unwrap_or("(none)");
        *self.stats.ws_events.entry(et.to_string()).or_default() += 1;
        let ok = match et {
            "book" => self.ws_book(ev, recv)?,
            "price_change" if ev.get("price_changes").is_some() => self.price_change(ev, recv)?,
            "price_change" => self.legacy_price_change(ev, recv)?,
            "last_trade_price" => self.trade(ev, recv)?,
            "tick_size_change" => {
                let a = ev.get("asset_id").and_then(Value::as_str);
                let n = ev.get("new_tick_size");
                match (a, n) {
                    (Some(a), Some(n)) => {
                        if let Some(b) = self.books.get_mut(a) {
                            b.tick_size = raw(n);
                        }
                        true
                    }
                    _ => false,
                }
            }
            _ => true,
        };
        if !ok {
            self.stats.bad_events += 1;
        }
        Ok(())
    }

    /// [`check`] of the asset's current rebuilt state.
    fn check_asset(&mut self, asset: &str, venue: &str) -> (bool, Option<usize>) {
        let b = &self.books[asset];
        let meta = meta_of(&self.meta, &self.default_meta, asset);
        check(&mut self.hash_buf, asset, b, meta, venue)
    }

    /// Marks an asset trusted again (only a full book does this); adds its untrusted time.
    fn retrust(&mut self, asset: &str, now_us: Option<i64>) -> bool {
        let Some(b) = self.books.get_mut(asset) else { return false };
        let was = !b.trusted;
        if was {
            if let (Some(s), Some(n)) = (b.untrusted_since_us, now_us) {
                self.stats.untrusted_s += (n - s).max(0) as f64 / 1e6;
            }
        }
        b.trusted = true;
        b.untrusted_since_us = None;
        was
    }

    fn ws_book(&mut self, ev: &Value, recv: &Recv) -> io::Result<bool> {
        let g = |k: &str| ev.get(k).and_then(Value::as_str);
        let (Some(asset), Some(market), Some(ts), Some(hash)) = (g("asset_id"), g("market"), g("timestamp"), g("hash"))
        else {
            return Ok(false);
        };
        let (Some(bids), Some(asks)) = (parse_side(ev.get("bids")), parse_side(ev.get("asks"))) else {
            return Ok(false);
        };
        let Ok(ts_ms) = ts.parse::<i64>() else { return Ok(false) };
        self.stats.ws_books += 1;
        let prev = self.books.remove(asset);
        let b = Book {
            market: market.to_string(),
            timestamp: ts.to_string(),
            ts_ms,
            bids,
            asks,
            tick_size: raw(ev.get("tick_size").unwrap_or(&Value::Null)),
            ltp: raw(ev.get("last_trade_price").unwrap_or(&Value::from(""))),
            ltp_candidates: Vec::new(),
            hash: Some(hash.to_string()),
            verified: None,
            trusted: prev.as_ref().is_none_or(|p| p.trusted),
            untrusted_since_us: prev.as_ref().and_then(|p| p.untrusted_since_us),
            last_row_ms: prev.as_ref().and_then(|p| p.last_row_ms),
        };
        self.books.insert(asset.to_string(), b);
        let (ok, _) = self.check_asset(asset, hash);
        self.books.get_mut(asset).expect("inserted").verified = Some(ok);
        if ok {
            self.stats.ws_book_hash_matched += 1;
        } else {
            self.stats.ws_book_hash_mismatched += 1;
        }
        // A full book is a known state, verified or not.
        if self.retrust(asset, recv.us()) {
            self.stats.resyncs_ws_book += 1;
        }
        self.stats.assets.entry(asset.to_string()).or_default();
        self.row(asset, recv, SOURCE_WS, true)?;
        Ok(true)
    }

    fn rest_book(&mut self, v: &Value, recv: &Recv) -> io::Result<()> {
        let g = |k: &str| v.get(k).and_then(Value::as_str);
        let (Some(asset), Some(market), Some(ts), Some(hash)) = (g("asset_id"), g("market"), g("timestamp"), g("hash"))
        else {
            self.stats.bad_events += 1;
            return Ok(());
        };
        let (Some(bids), Some(asks), Ok(ts_ms)) =
            (parse_side(v.get("bids")), parse_side(v.get("asks")), ts.parse::<i64>())
        else {
            self.stats.bad_events += 1;
            return Ok(());
        };
        self.stats.rest_books += 1;
        let rest_ok = book::hash_of_rest_book(v).as_deref() == Some(hash);
        if rest_ok {
            self.stats.rest_hash_matched += 1;
        } else {
            self.stats.rest_hash_mismatched += 1;
        }
        if let (Some(m), Some(n)) = (v.get("min_order_size"), v.get("neg_risk")) {
            self.meta.insert(asset.to_string(), (raw(m), raw(n)));
        }
        let rest = Book {
            market: market.to_string(),
            timestamp: ts.to_string(),
            ts_ms,
            bids,
            asks,
            tick_size: raw(v.get("tick_size").unwrap_or(&Value::Null)),
            ltp: raw(v.get("last_trade_price").unwrap_or(&Value::from(""))),
            ltp_candidates: Vec::new(),
            hash: Some(hash.to_string()),
            verified: Some(rest_ok),
            trusted: true,
            untrusted_since_us: None,
            last_row_ms: None,
        };
        let apply = match self.books.get(asset).map(|c| (c.ts_ms, c.trusted)) {
            None => true,
            Some((cur_ms, _)) if ts_ms > cur_ms => true,
            Some((cur_ms, trusted)) if ts_ms == cur_ms => {
                // Same exchange instant: the rebuilt book must equal the snapshot.
                let agree = self.check_asset(asset, hash).0;
                if agree {
                    self.stats.cross_checks_agree += 1;
                } else {
                    self.stats.cross_checks_disagree += 1;
                }
                // An untrusted book is resynced by the snapshot even when they agree.
                !agree || !trusted
            }
            Some(_) => {
                self.stats.rest_stale += 1;
                false
            }
        };
        if apply {
            let prev = self.books.remove(asset);
            let mut b = rest;
            if let Some(p) = prev {
                b.trusted = p.trusted;
                b.untrusted_since_us = p.untrusted_since_us;
                b.last_row_ms = p.last_row_ms;
            }
            self.books.insert(asset.to_string(), b);
            if self.retrust(asset, recv.us()) {
                self.stats.resyncs_rest += 1;
            }
            self.stats.assets.entry(asset.to_string()).or_default();
            self.row(asset, recv, SOURCE_WS_REST, true)?;
        }
        Ok(())
    }

    fn price_change(&mut self, ev: &Value, recv: &Recv) -> io::Result<bool> {
        let (Some(ts), Some(entries)) =
            (ev.get("timestamp").and_then(Value::as_str), ev.get("price_changes").and_then(Value::as_array))
        else {
            return Ok(false);
        };
        let Ok(ts_ms) = ts.parse::<i64>() else { return Ok(false) };
        let mut all_ok = true;
        for (i, e) in entries.iter().enumerate() {
            let g = |k: &str| e.get(k).and_then(Value::as_str);
            let (Some(asset), Some(price), Some(size), Some(side)) = (g("asset_id"), g("price"), g("size"), g("side"))
            else {
                all_ok = false;
                continue;
            };
            let hash = g("hash");
            let Some(b) = self.books.get_mut(asset) else {
                self.stats.changes_without_book += 1;
                continue;
            };
            let r = match side {
                "BUY" => set_level(&mut b.bids, true, price, size),
                "SELL" => set_level(&mut b.asks, false, price, size),
                _ => None,
            };
            if r.is_none() {
                all_ok = false;
                continue;
            }
            b.timestamp.clear();
            b.timestamp.push_str(ts);
            b.ts_ms = ts_ms;
            self.stats.changes_applied += 1;
            self.stats.assets.entry(asset.to_string()).or_default().changes += 1;
            // Entries of one message that share the hash describe one state: verify after the last.
            let later_same = entries[i + 1..].iter().any(|x| {
                x.get("asset_id").and_then(Value::as_str) == Some(asset)
                    && x.get("hash").and_then(Value::as_str) == hash
            });
            if later_same {
                continue;
            }
            self.state_done(asset, hash, recv)?;
        }
        Ok(all_ok)
    }

    fn legacy_price_change(&mut self, ev: &Value, recv: &Recv) -> io::Result<bool> {
        let g = |k: &str| ev.get(k).and_then(Value::as_str);
        let (Some(asset), Some(ts), Some(changes)) =
            (g("asset_id"), g("timestamp"), ev.get("changes").and_then(Value::as_array))
        else {
            return Ok(false);
        };
        let Ok(ts_ms) = ts.parse::<i64>() else { return Ok(false) };
        let Some(b) = self.books.get_mut(asset) else {
            self.stats.changes_without_book += changes.len() as u64;
            return Ok(true);
        };
        for c in changes {
            let (Some(p), Some(s), Some(side)) = (
                c.get("price").and_then(Value::as_str),
                c.get("size").and_then(Value::as_str),
                c.get("side").and_then(Value::as_str),
            ) else {
                return Ok(false);
            };
            match side {
                "BUY" => set_level(&mut b.bids, true, p, s),
                "SELL" => set_level(&mut b.asks, false, p, s),
                _ => None,
            };
        }
        b.timestamp = ts.to_string();
        b.ts_ms = ts_ms;
        self.stats.changes_applied += changes.len() as u64;
        self.stats.assets.entry(asset.to_string()).or_default().changes += changes.len() as u64;
        self.state_done(asset, g("hash"), recv)?;
        Ok(true)
    }

    /// A message's changes to an asset are applied: verify against its hash (if it has one), row.
    fn state_done(&mut self, asset: &str, hash: Option<&str>, recv: &Recv) -> io::Result<()> {
        match hash {
            Some(h) => self.verify(asset, h, recv),
            None => {
                // No venue hash for this state: the row says so (hash null, hash_unverifiable).
                let b = self.books.get_mut(asset).expect("present");
                b.hash = None;
                b.verified = None;
                self.row(asset, recv, SOURCE_WS, false)
            }
        }
    }

    /// Compares the rebuilt state with the venue's hash and updates trust: a mismatch on a trusted
    /// book makes it untrusted; a match never makes it trusted again (only a full book does).
    fn verify(&mut self, asset: &str, venue: &str, recv: &Recv) -> io::Result<()> {
        let (ok, via) = self.check_asset(asset, venue);
        self.stats.hash_checks += 1;
        let trusted = {
            let b = self.books.get_mut(asset).expect("present");
            match &mut b.hash {
                Some(h) => {
                    h.clear();
                    h.push_str(venue);
                }
                None => b.hash = Some(venue.to_string()),
            }
            b.verified = Some(ok);
            if let Some(i) = via {
                b.ltp = b.ltp_candidates[i].clone();
            }
            if ok {
                b.ltp_candidates.clear();
            }
            b.trusted
        };
        let a = self.stats.assets.entry(asset.to_string()).or_default();
        if ok {
            a.matched += 1;
            self.stats.hashes_matched += 1;
            if via.is_some() {
                self.stats.matched_with_trade_price += 1;
            }
            if !trusted {
                self.stats.matches_while_untrusted += 1;
            }
        } else if trusted {
            a.mismatched += 1;
            self.stats.hashes_mismatched += 1;
            let now_us = recv.us();
            let b = self.books.get_mut(asset).expect("present");
            b.trusted = false;
            b.untrusted_since_us = now_us;
        } else {
            a.mismatched += 1;
            self.stats.mismatches_while_untrusted += 1;
        }
        self.row(asset, recv, SOURCE_WS, false)
    }

    fn trade(&mut self, ev: &Value, recv: &Recv) -> io::Result<bool> {
        let g = |k: &str| ev.get(k).and_then(Value::as_str);
        let (Some(asset), Some(price)) = (g("asset_id"), g("price")) else { return Ok(false) };
        if let Some(b) = self.books.get_mut(asset) {
            b.ltp_candidates.push(raw(&Value::from(price)));
            // The REST/WS books sometimes carry a trailing zero ("0.430", facts §4.1).
            if let Some((_, frac)) = price.split_once('.') {
                if frac.len() < 3 {
                    b.ltp_candidates.push(raw(&Value::from(format!("{price}{}", "0".repeat(3 - frac.len())))));
                }
            }
            if b.ltp_candidates.len() > 8 {
                let cut = b.ltp_candidates.len() - 8;
                b.ltp_candidates.drain(..cut);
            }
        }
        self.stats.trades += 1;
        if let Some(w) = self.trades.as_mut() {
            let ms = g("timestamp").and_then(|t| t.parse::<i64>().ok()).unwrap_or(0);
            let t = Trade {
                schema: TRADE_SCHEMA,
                ts_recv: recv.at.unwrap_or(""),
                ts_event: ts_event(ms),
                ts_event_ms: ms,
                asset_id: asset,
                market: g("market").unwrap_or(""),
                price,
                size: g("size").unwrap_or(""),
                side: g("side").unwrap_or(""),
                fee_rate_bps: g("fee_rate_bps"),
                transaction_hash: g("transaction_hash"),
                conn_id: recv.conn_id,
            };
            serde_json::to_writer(&mut *w, &t)?;
            w.write_all(b"\n")?;
        }
        Ok(true)
    }

    /// Writes the asset's rebuilt state as a `pmarchive.orderbook/1` `book` row through
    /// pm-normalize's row writer (unless sampled out by `--every-ms`; `force` for full books).
    fn row(&mut self, asset: &str, recv: &Recv, source: &'static str, force: bool) -> io::Result<()> {
        if !self.opts.write_rows {
            return Ok(());
        }
        let every = self.opts.every_ms;
        let Some(b) = self.books.get_mut(asset) else { return Ok(()) };
        if let (Some(every), Some(last), false) = (every, b.last_row_ms, force) {
            if b.ts_ms - last < every {
                return Ok(());
            }
        }
        b.last_row_ms = Some(b.ts_ms);
        let b = &self.books[asset];
        let (mos, neg) = meta_of(&self.meta, &self.default_meta, asset);
        let view = parse::Book {
            market: Some(Cow::Borrowed(&b.market)),
            asset_id: Some(Cow::Borrowed(asset)),
            timestamp: Some(Cow::Borrowed(&b.timestamp)),
            hash: b.hash.as_deref().map(Cow::Borrowed),
            bids: view_side(&b.bids),
            asks: view_side(&b.asks),
            min_order_size: Some(mos),
            tick_size: Some(&b.tick_size),
            neg_risk: Some(neg),
            last_trade_price: Some(&b.ltp),
            error: None,
            unknown_fields: 0,
        };
        let env = parse::Env {
            venue: recv.venue.map(Cow::Borrowed),
            run_id: recv.run_id.map(Cow::Borrowed),
            seq: recv.seq,
            endpoint: Some(Cow::Borrowed(source)),
            collected_at_utc: recv.at.map(Cow::Borrowed),
            ..Default::default()
        };
        let flags = if b.trusted { 0 } else { normalize::UNTRUSTED };
        self.nor.state_row(&env, &view, b.verified, flags, &mut self.buf);
        self.stats.rows += 1;
        if self.buf.len() >= OUT_CHUNK {
            self.rows.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Closes the books: untrusted time up to the last receive time, flags per asset; flushes.
    pub fn finish(&mut self) -> io::Result<Stats> {
        let end = dec::parse_utc_micros(&self.last_at);
        for (asset, b) in &self.books {
            if !b.trusted {
                if let (Some(s), Some(e)) = (b.untrusted_since_us, end) {
                    self.stats.untrusted_s += (e - s).max(0) as f64 / 1e6;
                }
            }
            self.stats.assets.entry(asset.clone()).or_default().trusted_at_end = b.trusted;
        }
        self.stats.untrusted_s = (self.stats.untrusted_s * 1e6).round() / 1e6;
        if self.opts.write_rows {
            self.stats.row_flags = self.nor.stats.flags.clone();
            self.stats.unjoined_rows = self.nor.stats.unjoined_book_rows;
        }
        self.rows.write_all(&self.buf)?;
        self.buf.clear();
        self.rows.flush()?;
        if let Some(t) = self.trades.as_mut() {
            t.flush()?;
        }
        Ok(self.stats.clone())
    }

    /// True when the verification found a problem (a mismatch on a trusted book or a REST
    /// cross-check disagreement).
    pub fn found_problems(&self) -> bool {
        self.stats.hashes_mismatched > 0 || self.stats.cross_checks_disagree > 0
    }
}

impl Stats {
    /// One line for stderr.
    pub fn line(&self) -> String {
        format!(
            "lines={} frames={} books(ws/rest)={}/{} changes={} hashes matched={} mismatched={} (+{} while untrusted; {} matches while untrusted) resyncs(book/rest)={}/{} untrusted_s={:.3} cross_checks agree={} disagree={} rows={} trades={} bad_lines={} changes_without_book={}",
            self.lines,
            self.ws_frames,
            self.ws_books,
            self.rest_books,
            self.changes_applied,
            self.hashes_matched,
            self.hashes_mismatched,
            self.mismatches_while_untrusted,
            self.matches_while_untrusted,
            self.resyncs_ws_book,
            self.resyncs_rest,
            self.untrusted_s,
            self.cross_checks_agree,
            self.cross_checks_disagree,
            self.rows,
            self.trades,
            self.bad_lines,
            self.changes_without_book
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_keep_wire_order() {
        let mut bids = vec![];
        set_level(&mut bids, true, "0.3", "10").unwrap();
        set_level(&mut bids, true, "0.1", "5").unwrap();
        set_level(&mut bids, true, "0.2", "7").unwrap();
        assert_eq!(bids.iter().map(|l| l.price.as_str()).collect::<Vec<_>>(), ["0.1", "0.2", "0.3"]);
        set_level(&mut bids, true, "0.2", "0").unwrap();
        set_level(&mut bids, true, "0.30", "11").unwrap();
        assert_eq!(
            bids.iter().map(|l| (l.price.as_str(), l.size.as_str())).collect::<Vec<_>>(),
            [("0.1", "5"), ("0.3", "11")]
        );
        let mut asks = vec![];
        set_level(&mut asks, false, "0.5", "1").unwrap();
        set_level(&mut asks, false, "0.9", "1").unwrap();
        set_level(&mut asks, false, "0.7", "1").unwrap();
        assert_eq!(asks.iter().map(|l| l.price.as_str()).collect::<Vec<_>>(), ["0.9", "0.7", "0.5"]);
        // Removing an absent level is a no-op.
        set_level(&mut asks, false, "0.6", "0").unwrap();
        assert_eq!(asks.len(), 3);
    }
}
