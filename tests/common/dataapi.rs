//! A loopback Data API (127.0.0.1 only): `GET /v2/trades` in the documented v2 shape, with faults.
//!
//! **Everything served here is DERIVED**, not recorded: no real `/v2/trades` reply is in
//! tests/fixtures. The shape follows the venue's documented OpenAPI (docs/TRADES.md):
//! `{data: [row…], pagination: {limit, has_more, next_cursor}}`, snake_case rows with
//! `proxy_wallet, side, token_id, condition_id, size, price, timestamp (epoch s), title, slug, icon,
//! event_slug, outcome, outcome_index, name, pseudonym, bio, profile_image,
//! profile_image_optimized, transaction_hash`; newest first (keyset on `(timestamp, sequence)`);
//! `condition` = up to 20 comma-separated ids (more, or a malformed id → 400); `offset` → 400;
//! `limit` 0..=1000 on the first page (above → 400), the cursor carries it afterwards;
//! `taker_only` defaults to true (taker rows only), `false` adds the maker rows.
//!
//! Trades: every condition id asked for trades [`DataApi::set_spacing`] apart on the API's clock,
//! from its registered window start ([`DataApi::register`]) or, unregistered, from the first time it
//! was asked for, until its window end (or [`DataApi::set_matches`] matches). One match = one taker
//! row plus two maker rows (opposite side, sizes summing to the taker's), one transaction hash — the
//! rule "one row is one order's fill" of docs/TRADES.md. A trade is served once the clock is
//! [`DataApi::set_lag`] past its timestamp (indexing lag).
//!
//! Faults (consumed first-come): 429 with/without Retry-After, 425, any status (STAND-IN bodies),
//! 200 `{"error":"Too Many Requests"}`, a connection closed without a reply, and a page whose
//! `has_more` is true with no `next_cursor`. [`DataApi::duplicate_across_pages`] makes every
//! followed page start with the previous page's last row again. The log ([`DataApi::log`]) records
//! every request with the keys (pm_archive::polymarket::trades::row_key) of the rows it served.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use time::OffsetDateTime;

use pm_archive::polymarket::trades;

use super::venue::{
    accept_loop, clock_now, clock_start, percent_decode, read_request, sha_hex, MarketSeen, SimClock, Venue,
};

#[derive(Clone, Debug)]
pub enum Fault {
    /// 429 `{"error":"Too Many Requests"}`, optionally with `Retry-After`.
    TooMany { retry_after: Option<String> },
    /// 425 `{"error":"service not ready"}` (STAND-IN body).
    NotReady,
    /// This status with a STAND-IN JSON body.
    Status(u16),
    /// 200 with `{"error":"Too Many Requests"}` (Data API behaviour reported by users).
    ThrottledOk,
    /// Read the request, close without a reply.
    Reset,
    /// A normal reply (consumes a place in the queue: faults after it hit later requests).
    Pass,
    /// 200 `{"data":null,"pagination":{…,"has_more":false,"next_cursor":null}}` (a documented miss).
    NullData,
    /// A normal page whose pagination says `has_more: true, next_cursor: null`.
    BrokenCursor,
}

/// One request the API answered (or dropped).
#[derive(Clone, Debug)]
pub struct Served {
    pub at: OffsetDateTime,
    pub query: String,
    pub status: Option<u16>,
    pub fault: Option<String>,
    /// Keys of the rows served in a 200 page.
    pub rows: Vec<String>,
    pub taker_only: bool,
}

#[derive(Clone, Debug)]
struct Spec {
    slug: String,
    tokens: Vec<(String, String)>,
    start: OffsetDateTime,
    end: Option<OffsetDateTime>,
}

struct State {
    specs: HashMap<String, Spec>,
    faults: Vec<Fault>,
    log: Vec<Served>,
    spacing: Duration,
    matches: u32,
    lag: Duration,
    dup: bool,
    /// Every this many matches of a market, one shares the previous one's timestamp (0 = never).
    burst_every: u64,
    clock_start: SimClock,
}

pub struct DataApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

/// One derived row with its keyset position.
#[derive(Clone, Debug)]
pub struct Row {
    pub ts: i64,
    pub seq: u64,
    pub taker: bool,
    pub value: Value,
}

impl DataApi {
    pub fn start() -> DataApi {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let state = new_state();
        let stop = Arc::new(AtomicBool::new(false));
        let st = state.clone();
        accept_loop(listener, stop.clone(), move |conn| handle(conn, st.clone()));
        DataApi { addr, state, stop }
    }

    /// The Data API served by the venue itself, on its port (`url()` is the venue's): `/v2/trades`
    /// behind the venue's faults, outages and log, for the markets the venue issues through Gamma,
    /// each traded inside its window. It has no listener of its own.
    pub fn mount_on(v: &Venue) -> DataApi {
        let state = new_state();
        let st = state.clone();
        v.on_market(Arc::new(move |m: &MarketSeen| {
            let spec = Spec { slug: m.slug.clone(), tokens: m.tokens.clone(), start: m.start, end: Some(m.end) };
            if !spec.tokens.is_empty() {
                st.lock().unwrap().specs.insert(m.condition_id.clone(), spec);
            }
        }));
        let st = state.clone();
        v.mount(
            "/v2/trades",
            Arc::new(move |req| {
                let (status, body, _, _) = page(&mut st.lock().unwrap(), &req.query, false);
                (status, body)
            }),
        );
        // Already stopped: dropping it wakes no listener.
        DataApi { addr: v.addr, state, stop: Arc::new(AtomicBool::new(true)) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes the API's clock a simulated one (same meaning as `PMARCHIVE_CLOCK`).
    pub fn simulate_clock(&self, start: OffsetDateTime, rate: f64) -> String {
        clock_start(&mut self.state.lock().unwrap().clock_start, start, rate)
    }

    pub fn now(&self) -> OffsetDateTime {
        now_of(&self.state.lock().unwrap())
    }

    /// A market whose trades fall inside its window (tokens: (token_id, outcome)).
    pub fn register(&self, cid: &str, slug: &str, tokens: &[(&str, &str)], start: OffsetDateTime, end: OffsetDateTime) {
        let tokens = tokens.iter().map(|(t, o)| (t.to_string(), o.to_string())).collect();
        self.state.lock().unwrap().specs.insert(cid.into(), Spec { slug: slug.into(), tokens, start, end: Some(end) });
    }

    /// A market of the loopback venue by its slug: the condition id as the venue derives it
    /// (`0x` + sha256 of the slug), tokens derived here; trades inside [start, end).
    pub fn register_slug(&self, slug: &str, start: OffsetDateTime, end: OffsetDateTime) -> String {
        let cid = format!("0x{}", sha_hex(slug));
        let (up, down) = (derived_token(&format!("{cid}|Up")), derived_token(&format!("{cid}|Down")));
        self.register(&cid, slug, &[(&up, "Up"), (&down, "Down")], start, end);
        cid
    }

    /// Time between two matches of a market (API clock). Default 20 s.
    pub fn set_spacing(&self, d: Duration) {
        self.state.lock().unwrap().spacing = d;
    }

    /// Matches of an unregistered market. Default 12.
    pub fn set_matches(&self, n: u32) {
        self.state.lock().unwrap().matches = n;
    }

    /// A trade is served only once the clock is this far past its timestamp. Default 0.
    pub fn set_lag(&self, d: Duration) {
        self.state.lock().unwrap().lag = d;
    }

    /// Every `n`-th match of a market has the timestamp of the match before it (0 = never). Default 0.
    pub fn set_burst_every(&self, n: u64) {
        self.state.lock().unwrap().burst_every = n;
    }

    pub fn duplicate_across_pages(&self, on: bool) {
        self.state.lock().unwrap().dup = on;
    }

    pub fn fault(&self, f: Fault) {
        self.state.lock().unwrap().faults.push(f);
    }

    pub fn log(&self) -> Vec<Served> {
        self.state.lock().unwrap().log.clone()
    }

    /// Every row of a market that exists by now (both roles), newest first.
    pub fn rows(&self, cid: &str) -> Vec<Row> {
        let st = self.state.lock().unwrap();
        let now = now_of(&st);
        rows_of(&st, cid, now)
    }

    /// The condition ids the API has generated trades for.
    pub fn conditions(&self) -> Vec<String> {
        self.state.lock().unwrap().specs.keys().cloned().collect()
    }
}

impl Drop for DataApi {
    fn drop(&mut self) {
        // Wake the accept loop (a mounted API has none: it starts stopped).
        if !self.stop.swap(true, Ordering::SeqCst) {
            let _ = TcpStream::connect(self.addr);
        }
    }
}

fn new_state() -> Arc<Mutex<State>> {
    Arc::new(Mutex::new(State {
        specs: HashMap::new(),
        faults: Vec::new(),
        log: Vec::new(),
        spacing: Duration::from_secs(20),
        matches: 12,
        lag: Duration::ZERO,
        dup: false,
        burst_every: 0,
        clock_start: None,
    }))
}

fn now_of(st: &State) -> OffsetDateTime {
    clock_now(&st.clock_start)
}

/// A decimal token id derived from a string (for unregistered markets).
fn derived_token(s: &str) -> String {
    sha_hex(s).bytes().take(40).map(|b| char::from(b'0' + b % 10)).collect::<String>().trim_start_matches('0').into()
}

fn wallet(s: &str) -> String {
    format!("0x{}", &sha_hex(s)[..40])
}

/// The rows of one market that exist at `now` (trade time + lag ≤ now), newest first.
fn rows_of(st: &State, cid: &str, now: OffsetDateTime) -> Vec<Row> {
    let Some(spec) = st.specs.get(cid) else { return Vec::new() };
    let spacing = st.spacing.as_secs_f64();
    let mut out = Vec::new();
    for i in 0..10_000u64 {
        // With bursts, every `burst_every`-th match shares the timestamp of the one before it.
        let n = i + 1 - (i + 1).checked_div(st.burst_every).unwrap_or(0);
        let t = spec.start + time::Duration::seconds_f64(spacing * n as f64);
        let past_end = match spec.end {
            Some(end) => t >= end,
            None => i >= u64::from(st.matches),
        };
        if past_end || t + time::Duration::seconds_f64(st.lag.as_secs_f64()) > now {
            break;
        }
        let ts = t.unix_timestamp();
        let tx = format!("0x{}", sha_hex(&format!("{cid}|{i}")));
        let (tok, outcome) = spec.tokens[(i % spec.tokens.len() as u64) as usize].clone();
        let oi = i % spec.tokens.len() as u64;
        let taker_side = if i % 3 == 1 { "SELL" } else { "BUY" };
        let maker_side = if taker_side == "BUY" { "SELL" } else { "BUY" };
        let price = (40 + (i % 20)) as f64 / 100.0;
        let sizes = [(10 + i % 7) as f64 * 2.5, (3 + i % 4) as f64 * 1.5];
        let total = sizes[0] + sizes[1];
        let row = |who: &str, side: &str, size: f64| {
            json!({
                "proxy_wallet": wallet(&format!("{cid}|{i}|{who}")), "side": side, "token_id": tok,
                "condition_id": cid, "size": size, "price": price, "timestamp": ts,
                "title": "Bitcoin Up or Down (derived)", "slug": spec.slug, "icon": "https://example.invalid/icon.png",
                "event_slug": spec.slug, "outcome": outcome, "outcome_index": oi,
                "name": format!("name-{who}"), "pseudonym": format!("Pseudo-{who}"), "bio": "derived bio",
                "profile_image": "https://example.invalid/p.png", "profile_image_optimized": "https://example.invalid/p.webp",
                "transaction_hash": tx,
            })
        };
        // Within a timestamp the keyset sequence orders the taker row after its makers.
        out.push(Row { ts, seq: i * 3, taker: false, value: row("m1", maker_side, sizes[0]) });
        out.push(Row { ts, seq: i * 3 + 1, taker: false, value: row("m2", maker_side, sizes[1]) });
        out.push(Row { ts, seq: i * 3 + 2, taker: true, value: row("t", taker_side, total) });
    }
    out.reverse();
    out
}

fn key_of(v: &Value) -> String {
    trades::row_key(&serde_json::from_value(v.clone()).unwrap())
}

fn params(q: &str) -> HashMap<String, String> {
    q.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), percent_decode(v))).collect()
}

/// The opaque cursor: the keyset anchor (timestamp, sequence), the page size and the role filter.
fn cursor_of(ts: i64, seq: u64, limit: usize, taker_only: bool) -> String {
    format!("c1.{ts}.{seq}.{limit}.{}", u8::from(taker_only))
}

fn parse_cursor(c: &str) -> Option<(i64, u64, usize, bool)> {
    let p: Vec<&str> = c.strip_prefix("c1.")?.split('.').collect();
    (p.len() == 4).then_some(())?;
    Some((p[0].parse().ok()?, p[1].parse().ok()?, p[2].parse().ok()?, p[3] == "1"))
}

fn bad(msg: &str) -> (u16, Vec<u8>, Vec<String>) {
    (400, serde_json::to_vec(&json!({ "error": msg })).unwrap(), Vec::new())
}

/// The `/v2/trades` handler (no fault): status, body, keys of the rows served.
fn page(st: &mut State, query: &str, broken_cursor: bool) -> (u16, Vec<u8>, Vec<String>, bool) {
    let p = params(query);
    let taker_q = p.get("taker_only").map(|v| v != "false").unwrap_or(true);
    let with = |(s, b, r): (u16, Vec<u8>, Vec<String>)| (s, b, r, taker_q);
    if p.contains_key("offset") {
        return with(bad("offset is not supported: pagination is cursor-only"));
    }
    let Some(conds) = p.get("condition").or(p.get("condition_id")).or(p.get("conditionId")) else {
        return with(bad("this loopback API serves the condition shape only"));
    };
    let mut ids: Vec<String> = conds.split(',').map(str::to_string).collect();
    ids.sort();
    ids.dedup();
    if ids.len() > 20 {
        return with(bad("condition: at most 20 distinct values"));
    }
    if let Some(badid) = ids.iter().find(|c| !pm_archive::polymarket::market::is_valid_condition_id(c)) {
        return with(bad(&format!("condition: malformed id {badid}")));
    }
    let now = now_of(st);
    for c in &ids {
        if !st.specs.contains_key(c) {
            let tokens = vec![
                (derived_token(&format!("{c}|Up")), "Up".into()),
                (derived_token(&format!("{c}|Down")), "Down".into()),
            ];
            st.specs
                .insert(c.clone(), Spec { slug: format!("unregistered-{}", &c[2..10]), tokens, start: now, end: None });
        }
    }
    let (anchor, limit, taker_only) = match p.get("cursor") {
        Some(c) => match parse_cursor(c) {
            Some((ts, seq, limit, t)) => (Some((ts, seq)), limit, t),
            None => return with(bad("cursor: not a cursor of this endpoint")),
        },
        None => {
            let limit = match p.get("limit").map(|l| l.parse::<usize>()) {
                None => 100,
                Some(Ok(l)) if l <= 1000 => l,
                _ => return with(bad("limit: 0..=1000")),
            };
            (None, limit, taker_q)
        }
    };
    let mut rows: Vec<Row> = ids.iter().flat_map(|c| rows_of(st, c, now)).filter(|r| !taker_only || r.taker).collect();
    rows.sort_by_cached_key(|r| std::cmp::Reverse((r.ts, r.seq, key_of(&r.value))));
    let rest: Vec<Row> = match anchor {
        None => rows,
        // Strictly older than the anchor; with duplicates on, the anchor row itself again.
        Some(a) => rows.into_iter().filter(|r| (r.ts, r.seq) < a || (st.dup && (r.ts, r.seq) == a)).collect(),
    };
    let served: Vec<Row> = rest.iter().take(limit).cloned().collect();
    let has_more = rest.len() > served.len();
    let next = match (has_more, served.last()) {
        (true, Some(last)) if !broken_cursor => json!(cursor_of(last.ts, last.seq, limit, taker_only)),
        _ => Value::Null,
    };
    let keys = served.iter().map(|r| key_of(&r.value)).collect();
    let data: Vec<Value> = served.into_iter().map(|r| r.value).collect();
    let body = json!({ "data": data, "pagination": { "limit": limit, "has_more": has_more || broken_cursor, "next_cursor": next } });
    (200, serde_json::to_vec(&body).unwrap(), keys, taker_only)
}

fn handle(stream: TcpStream, st: Arc<Mutex<State>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let Some(req) = read_request(&mut reader).filter(|r| r.path == "/v2/trades") else {
        let mut w = stream;
        let body = br#"{"error":"not found (stand-in)"}"#;
        let _ = write!(w, "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
        let _ = w.write_all(body);
        return;
    };
    let mut s = st.lock().unwrap();
    let fault = (!s.faults.is_empty()).then(|| s.faults.remove(0));
    let at = now_of(&s);
    let mut retry_after = None;
    let (status, body, rows, taker_only) = match &fault {
        Some(Fault::Reset) => {
            s.log.push(Served {
                at,
                query: req.query,
                status: None,
                fault: Some("Reset".into()),
                rows: vec![],
                taker_only: false,
            });
            drop(s);
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
        Some(Fault::TooMany { retry_after: ra }) => {
            retry_after = ra.clone();
            (429, br#"{"error":"Too Many Requests"}"#.to_vec(), vec![], false)
        }
        Some(Fault::NotReady) => (425, br#"{"error":"service not ready"}"#.to_vec(), vec![], false),
        Some(Fault::Status(c)) => (*c, format!("{{\"error\":\"stand-in {c}\"}}").into_bytes(), vec![], false),
        Some(Fault::ThrottledOk) => (200, br#"{"error":"Too Many Requests"}"#.to_vec(), vec![], false),
        Some(Fault::NullData) => (
            200,
            br#"{"data":null,"pagination":{"limit":100,"has_more":false,"next_cursor":null}}"#.to_vec(),
            vec![],
            false,
        ),
        Some(Fault::BrokenCursor) => page(&mut s, &req.query, true),
        None | Some(Fault::Pass) => page(&mut s, &req.query, false),
    };
    s.log.push(Served {
        at,
        query: req.query,
        status: Some(status),
        fault: fault.map(|f| format!("{f:?}")),
        rows,
        taker_only,
    });
    drop(s);
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(ra) = retry_after {
        head.push_str(&format!("Retry-After: {ra}\r\n"));
    }
    head.push_str("\r\n");
    let mut w = stream;
    let _ = w.write_all(head.as_bytes());
    let _ = w.write_all(&body);
    let _ = w.flush();
}
