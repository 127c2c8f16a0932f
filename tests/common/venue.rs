//! A loopback test venue (127.0.0.1 only) that plays Polymarket's Gamma and CLOB REST APIs from the
//! real recorded responses in `tests/fixtures/polymarket/`, with fault injection.
//!
//! What is served, and how much of it is recorded vs derived:
//! - `GET /markets/slug/{slug}`: for `btc-updown-15m-1767200400` the recorded record **verbatim**
//!   (file bytes); for any other BTC up/down slug whose window is within the listing horizon, a record
//!   DERIVED from the recorded 5m TWAP market (same fields and quirks — `clobTokenIds`/`outcomes` as
//!   JSON strings) with slug, window, listing time, conditionId, token ids and flags replaced;
//!   otherwise 404 with a STAND-IN body (Gamma's real 404 body was not recorded).
//!   Options (all DERIVED, see docs/VENUE_FACTS_2026.md for the facts they model):
//!   [`Venue::set_version`] serves slugs as Protocol V2 (`version: "v2"`, outcome ids in a real
//!   `positionIds` array that differ from the `clobTokenIds` also present; books exist only for the
//!   position ids) or with any other `version`; [`Venue::resolve_after`] makes markets resolve that
//!   long after their window (`closed: true`, `acceptingOrders: false`, `outcomePrices` 1/0 for
//!   [`winner_of`], `umaResolutionStatus: "resolved"`, `closedTime` in Gamma's `+00` format);
//!   [`Venue::stay_open`] keeps markets open past `endDate` (`closed: false`, `acceptingOrders:
//!   true`, books kept). Without options a derived market reads `closed: true` one minute after its
//!   window, with its trading prices unchanged (never resolved).
//! - `GET /book?token_id=`: for the recorded token `7261…3692` the recorded body **verbatim**; for
//!   tokens this venue issued, a book DERIVED from the recorded websocket book capture (its real levels,
//!   best-bid size nudged per request, timestamp = now, hash recomputed with the venue's algorithm);
//!   unknown → the recorded 404 body; missing token_id → the recorded 400 body.
//! - `POST /books`: derived books as above for known, live tokens, **in reverse request order**
//!   (clients must match by `asset_id`); tokens without a book are silently omitted (as measured
//!   live, facts §4.2); > 500 tokens → 400 with a STAND-IN body (text from the measurement note).
//! - `/midpoint`, `/spread`, `/tick-size`, `/last-trade-price`, `/price`: the recorded bodies.
//! - `/time`: STAND-IN (unix seconds as text; no recorded body).
//!
//! Faults (consumed first-come per path prefix): 429 with/without Retry-After, 425 "service not
//! ready" (STAND-IN body), any status with a STAND-IN body, an HTML page with 200, truncated JSON, a slow reply, a connection closed without a
//! reply, a 200 `{"error":"Too Many Requests"}` (the Data-API behaviour of facts §5), and a `/books`
//! reply that silently omits one token's book (facts §4.2). [`Venue::outage`] closes every HTTP
//! connection without a reply for a while. [`Venue::log_to`] streams the log as JSONL
//! (`pm_archive::soak::VenueLine`, one line per reply) instead of keeping it in memory: the soak
//! venue (`pm-venue`, which includes this file by path) reconciles the archive against it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use pm_archive::clock;
use pm_archive::polymarket::{bookhash, market};

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/polymarket")
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

/// The recorded REST book's token (clob_book_rest_empty_ask.json).
pub const RECORDED_BOOK_TOKEN: &str = "72610532355343625199299853218161700546393390326785971247545541945337255643692";
/// The recorded 15m market (gamma_market_btc_updown_15m_1767200400.json).
pub const RECORDED_15M_SLUG: &str = "btc-updown-15m-1767200400";

#[derive(Clone, Debug)]
pub enum Fault {
    /// 429 `{"error":"Too Many Requests"}` (docs body), optionally with `Retry-After`.
    TooMany { retry_after: Option<String> },
    /// This status with a STAND-IN JSON body.
    Status(u16),
    /// 200 with an HTML page (STAND-IN for a Cloudflare page).
    Html,
    /// 200 with the real reply cut in half.
    Truncated,
    /// Wait this long, then serve normally.
    Slow(Duration),
    /// Read the request and close the connection without replying.
    Reset,
    /// 200 with `{"error":"Too Many Requests"}`.
    ThrottledOk,
    /// 200 with exactly these bytes as `application/json` (hostile replies: deep, huge, bad escapes).
    Body(Vec<u8>),
    /// 425 with a STAND-IN `{"error":"service not ready"}` (the status and message users reported
    /// around the 5m windows, py-clob-client#273; the wire body was not recorded).
    NotReady,
    /// The normal reply minus its first book (`/books`: a token silently missing, facts §4.2).
    OmitOne,
    /// This status with exactly this body as `application/json`, no `Retry-After` (another venue's
    /// documented error bodies, e.g. Kalshi's 429 `{"error": "too many requests"}`).
    Reply { status: u16, body: FaultBody },
}

/// The body a [`Fault::Reply`] serves. Its `Debug` (part of the fault's name in the logs and the soak
/// report) is its length only: `Reply { status: 429, body: 30 bytes }`.
#[derive(Clone)]
pub struct FaultBody(pub String);

impl std::fmt::Debug for FaultBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}

/// One request the venue answered (or dropped).
#[derive(Clone, Debug)]
pub struct Served {
    pub at: OffsetDateTime,
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: String,
    /// The request's `User-Agent` header (None when absent).
    pub user_agent: Option<String>,
    /// None when the connection was closed without a reply.
    pub status: Option<u16>,
    pub response: Vec<u8>,
    pub fault: Option<String>,
}

#[derive(Clone, Debug)]
struct TokenInfo {
    condition_id: String,
    window_end: OffsetDateTime,
    /// The market stays open past its window: its book does not go away.
    open_late: bool,
}

struct State {
    faults: Vec<(String, Fault)>,
    log: Vec<Served>,
    tokens: HashMap<String, TokenInfo>,
    gamma_override: HashMap<String, (u16, Vec<u8>)>,
    listing_horizon: Duration,
    book_gone_after: Duration,
    nudge: u64,
    clock_start: SimClock,
    /// (slug prefix, `version` to serve).
    versions: Vec<(String, String)>,
    resolve_after: Option<Duration>,
    /// Slug prefixes of markets that stay open past their window.
    open_late: Vec<String>,
    /// Every HTTP connection is closed without a reply until then.
    down_until: Option<Instant>,
    /// When set, the log is written here as JSONL and not kept in memory.
    sink: Option<std::io::LineWriter<std::fs::File>>,
    /// Other APIs served on this port (the Data API, [`Venue::mount`]; Kalshi, [`Venue::mount_prefix`]):
    /// (path, is a prefix, handler).
    mounts: Vec<(String, bool, Handler)>,
    /// Add what a mounted API knows about a reply to its soak log line ([`Venue::annotate`]).
    annotators: Vec<Annotator>,
    /// Called for every market a Gamma reply issued ([`Venue::on_market`]).
    market_hooks: Vec<MarketHook>,
}

/// The simulated clock of a loopback server: (real start, simulated start, rate); None = wall clock.
pub type SimClock = Option<(Instant, OffsetDateTime, f64)>;

/// A mounted API: the request in, (status, JSON body) out. Faults and the log stay the venue's.
pub type Handler = Arc<dyn Fn(&Req) -> (u16, Vec<u8>) + Send + Sync>;

/// A market the venue issued through Gamma: what another loopback API needs to serve its trades.
#[derive(Clone, Debug)]
pub struct MarketSeen {
    pub condition_id: String,
    pub slug: String,
    /// (token id, outcome) in Gamma's order.
    pub tokens: Vec<(String, String)>,
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
}

pub type MarketHook = Arc<dyn Fn(&MarketSeen) + Send + Sync>;

/// Fills a soak log line's fields from a reply (request, status, body) of a mounted API.
pub type Annotator = Arc<dyn Fn(&Req, Option<u16>, &[u8], &mut pm_archive::soak::VenueLine) + Send + Sync>;

/// The venue's clock, for a mounted API that serves on it.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

pub struct Venue {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Venue {
    /// Starts the venue on 127.0.0.1 with an ephemeral port.
    pub fn start() -> Venue {
        Venue::start_on(0)
    }

    /// Starts the venue on 127.0.0.1:`port` (0 = ephemeral).
    pub fn start_on(port: u16) -> Venue {
        Venue::try_start_on(port).expect("bind 127.0.0.1")
    }

    /// As [`Venue::start_on`], with the bind error.
    pub fn try_start_on(port: u16) -> std::io::Result<Venue> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            faults: Vec::new(),
            log: Vec::new(),
            tokens: HashMap::new(),
            gamma_override: HashMap::new(),
            listing_horizon: Duration::from_secs(24 * 3600 + 600),
            book_gone_after: Duration::from_secs(120),
            nudge: 0,
            clock_start: None,
            versions: Vec::new(),
            resolve_after: None,
            open_late: Vec::new(),
            down_until: None,
            sink: None,
            mounts: Vec::new(),
            annotators: Vec::new(),
            market_hooks: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let st = state.clone();
        accept_loop(listener, stop.clone(), move |conn| handle(conn, st.clone()));
        Ok(Venue { addr, state, stop })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes the venue's clock a simulated one (same meaning as `PMARCHIVE_CLOCK`); returns the spec
    /// to pass to the tools so that both clocks agree.
    pub fn simulate_clock(&self, start: OffsetDateTime, rate: f64) -> String {
        clock_start(&mut self.state.lock().unwrap().clock_start, start, rate)
    }

    pub fn now(&self) -> OffsetDateTime {
        now_of(&self.state.lock().unwrap())
    }

    /// Queues a fault for the next request whose path starts with `path_prefix`; a `*` in it stands
    /// for any run of characters but `/` (`/trade-api/v2/markets/*/orderbook`), a final `$` asks for
    /// the whole path (`/trade-api/v2/markets$`).
    pub fn fault(&self, path_prefix: &str, f: Fault) {
        self.state.lock().unwrap().faults.push((path_prefix.to_string(), f));
    }

    /// Serves these bytes with this status for one Gamma slug (malformed-record tests).
    pub fn gamma_override(&self, slug: &str, status: u16, body: &[u8]) {
        self.state.lock().unwrap().gamma_override.insert(slug.to_string(), (status, body.to_vec()));
    }

    /// How far ahead of its window a market is listed (default 24 h 10 min, facts §3.2).
    pub fn set_listing_horizon(&self, d: Duration) {
        self.state.lock().unwrap().listing_horizon = d;
    }

    /// How long after its window ends a token still has a book (default 120 s).
    pub fn set_book_gone_after(&self, d: Duration) {
        self.state.lock().unwrap().book_gone_after = d;
    }

    /// Serves the derived markets whose slug starts with `slug_prefix` with this `version`; "v2" adds
    /// `positionIds` (the ids that have books) beside `clobTokenIds`.
    pub fn set_version(&self, slug_prefix: &str, version: &str) {
        self.state.lock().unwrap().versions.push((slug_prefix.to_string(), version.to_string()));
    }

    /// Derived markets resolve this long after their window ends (see the module doc).
    pub fn resolve_after(&self, d: Duration) {
        self.state.lock().unwrap().resolve_after = Some(d);
    }

    /// Derived markets whose slug starts with `slug_prefix` stay open past `endDate`.
    pub fn stay_open(&self, slug_prefix: &str) {
        self.state.lock().unwrap().open_late.push(slug_prefix.to_string());
    }

    /// Serves `path` (exact) with this handler, behind the venue's faults, outages and log.
    pub fn mount(&self, path: &str, h: Handler) {
        self.state.lock().unwrap().mounts.push((path.to_string(), false, h));
    }

    /// Serves every path that starts with `prefix` with this handler (an API under a base path).
    pub fn mount_prefix(&self, prefix: &str, h: Handler) {
        self.state.lock().unwrap().mounts.push((prefix.to_string(), true, h));
    }

    /// Lets a mounted API add its keys (book identities, trade ids) to the soak log's lines.
    pub fn annotate(&self, a: Annotator) {
        self.state.lock().unwrap().annotators.push(a);
    }

    /// The venue's clock (simulated or wall), for a mounted API.
    pub fn clock(&self) -> Clock {
        let st = self.state.clone();
        Arc::new(move || now_of(&st.lock().unwrap()))
    }

    /// Calls `h` for every market a Gamma reply issues (again at every reply of it).
    pub fn on_market(&self, h: MarketHook) {
        self.state.lock().unwrap().market_hooks.push(h);
    }

    /// Every HTTP connection is closed without a reply for this long from now (an outage).
    pub fn outage(&self, d: Duration) {
        self.state.lock().unwrap().down_until = Some(Instant::now() + d);
    }

    /// Streams the log to this file as JSONL (`pm_archive::soak::VenueLine`) instead of keeping it.
    pub fn log_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        self.state.lock().unwrap().sink = Some(std::io::LineWriter::new(f));
        Ok(())
    }

    /// Writes one line to the JSONL log (no-op without [`Venue::log_to`]).
    pub fn note(&self, line: &pm_archive::soak::VenueLine) {
        let mut s = self.state.lock().unwrap();
        if let Some(w) = s.sink.as_mut() {
            let _ = writeln!(w, "{}", serde_json::to_string(line).unwrap());
        }
    }

    pub fn log(&self) -> Vec<Served> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn count(&self, path_prefix: &str) -> usize {
        self.state.lock().unwrap().log.iter().filter(|s| s.path.starts_with(path_prefix)).count()
    }

    /// Token ids the venue issued so far (through Gamma replies).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().tokens.keys().cloned().collect()
    }
}

impl Drop for Venue {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn now_of(st: &State) -> OffsetDateTime {
    clock_now(&st.clock_start)
}

/// Starts a loopback server's simulated clock at `start`, `rate` times real time; returns the spec to
/// pass to the tools (`PMARCHIVE_CLOCK`) so that both clocks agree.
pub fn clock_start(c: &mut SimClock, start: OffsetDateTime, rate: f64) -> String {
    *c = Some((Instant::now(), start, rate));
    format!("{}x{}", clock::fmt_micros(start), rate)
}

/// The time on a loopback server's clock.
pub fn clock_now(c: &SimClock) -> OffsetDateTime {
    match *c {
        None => OffsetDateTime::now_utc(),
        Some((real, virt, rate)) => virt + time::Duration::seconds_f64(real.elapsed().as_secs_f64() * rate),
    }
}

/// The accept loop of the loopback HTTP servers: one thread per connection until `stop` is set
/// (and one more connection arrives: [`Drop`] connects once).
pub fn accept_loop<H>(listener: TcpListener, stop: Arc<AtomicBool>, handler: H)
where
    H: Fn(TcpStream) + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if let Ok(conn) = conn {
                let h = handler.clone();
                std::thread::spawn(move || h(conn));
            }
        }
    });
}

/// One HTTP request as the loopback servers read it (the venue here, the Data API in dataapi.rs).
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: String,
    pub user_agent: Option<String>,
}

/// Reads one HTTP/1.1 request (request line, headers, a Content-Length body); None when the peer went
/// away or sent something that is not a request.
pub fn read_request(conn: &mut BufReader<TcpStream>) -> Option<Req> {
    let mut line = String::new();
    conn.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut len = 0usize;
    let mut user_agent = None;
    loop {
        let mut h = String::new();
        conn.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            } else if k.eq_ignore_ascii_case("user-agent") {
                user_agent = Some(v.trim().to_string());
            }
        }
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body).ok()?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    Some(Req { method, path, query, body: String::from_utf8_lossy(&body).into_owned(), user_agent })
}

fn query_param(q: &str, key: &str) -> Option<String> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn handle(stream: TcpStream, st: Arc<Mutex<State>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let Some(req) = read_request(&mut reader) else { return };
    let fault = {
        let mut s = st.lock().unwrap();
        if s.down_until.is_some_and(|t| Instant::now() < t) {
            drop(s);
            log(&st, &req, None, Vec::new(), Some("outage".into()));
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
        let pos = s.faults.iter().position(|(p, _)| path_matches(p, &req.path));
        pos.map(|i| s.faults.remove(i).1)
    };
    if let Some(Fault::Slow(d)) = &fault {
        std::thread::sleep(*d);
    }
    let (status, ctype, body, retry_after) = match &fault {
        Some(Fault::Reset) => {
            log(&st, &req, None, Vec::new(), Some("Reset".into()));
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
        Some(Fault::TooMany { retry_after }) => (429, "application/json", br#"{"error":"Too Many Requests"}"#.to_vec(), retry_after.clone()),
        // STAND-IN body: no recorded 5xx body exists.
        Some(Fault::Status(code)) => (*code, "application/json", format!("{{\"error\":\"stand-in {code}\"}}").into_bytes(), None),
        // STAND-IN: an HTML page like Cloudflare's.
        Some(Fault::Html) => (200, "text/html", b"<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>stand-in challenge page</body></html>".to_vec(), None),
        Some(Fault::ThrottledOk) => (200, "application/json", br#"{"error":"Too Many Requests"}"#.to_vec(), None),
        Some(Fault::Body(b)) => (200, "application/json", b.clone(), None),
        Some(Fault::Reply { status, body }) => (*status, "application/json", body.0.clone().into_bytes(), None),
        // STAND-IN body: only the status and the message "service not ready" were reported.
        Some(Fault::NotReady) => (425, "application/json", br#"{"error":"service not ready"}"#.to_vec(), None),
        Some(Fault::OmitOne) => {
            let (s, c, b) = route(&st, &req);
            let mut items: Vec<Box<serde_json::value::RawValue>> = serde_json::from_slice(&b).unwrap_or_default();
            if !items.is_empty() {
                items.remove(0);
            }
            (s, c, serde_json::to_vec(&items).unwrap(), None)
        }
        Some(Fault::Truncated) => {
            let (s, c, b) = route(&st, &req);
            let cut = b.len() / 2;
            (s, c, b[..cut].to_vec(), None)
        }
        _ => {
            let (s, c, b) = route(&st, &req);
            (s, c, b, None)
        }
    };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\nDate: {}\r\n",
        reason(status),
        body.len(),
        http_date(OffsetDateTime::now_utc())
    );
    if let Some(ra) = &retry_after {
        head.push_str(&format!("Retry-After: {ra}\r\n"));
    }
    head.push_str("\r\n");
    let mut w = stream;
    let _ = w.write_all(head.as_bytes());
    let _ = w.write_all(&body);
    let _ = w.flush();
    log(&st, &req, Some(status), body, fault.map(|f| format!("{f:?}")));
}

/// A fault's path pattern: a prefix, where `*` matches any run of characters but `/` and a final `$`
/// the end of the path.
fn path_matches(pattern: &str, path: &str) -> bool {
    match pattern.split_once('*') {
        None => match pattern.strip_suffix('$') {
            Some(exact) => path == exact,
            None => path.starts_with(pattern),
        },
        Some((head, tail)) => path.strip_prefix(head).is_some_and(|rest| {
            let run = rest.find('/').unwrap_or(rest.len());
            (0..=run).any(|i| rest.is_char_boundary(i) && path_matches(tail, &rest[i..]))
        }),
    }
}

fn log(st: &Arc<Mutex<State>>, req: &Req, status: Option<u16>, response: Vec<u8>, fault: Option<String>) {
    let mut s = st.lock().unwrap();
    let at = now_of(&s);
    let annotators = s.annotators.clone();
    if let Some(w) = s.sink.as_mut() {
        let mut line = pm_archive::soak::VenueLine {
            schema: pm_archive::soak::VENUE_SCHEMA.into(),
            kind: "served".into(),
            at_utc: clock::fmt_micros(at),
            real_utc: clock::fmt_micros(OffsetDateTime::now_utc()),
            method: Some(req.method.clone()),
            path: Some(req.path.clone()),
            status,
            bytes: status.map(|_| response.len() as u64),
            fault,
            hashes: book_hashes(&req.path, &response),
            trades: trade_keys(&req.path, status, &response),
            slug: req.path.strip_prefix("/markets/slug/").map(percent_decode),
            detail: None,
        };
        annotators.iter().for_each(|a| a(req, status, &response, &mut line));
        let _ = writeln!(w, "{}", serde_json::to_string(&line).unwrap());
        return;
    }
    s.log.push(Served {
        at,
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        body: req.body.clone(),
        user_agent: req.user_agent.clone(),
        status,
        response,
        fault,
    });
}

/// The `hash` of every book in a `/book` or `/books` reply (none for anything else or a bad body).
fn book_hashes(path: &str, body: &[u8]) -> Vec<String> {
    if path != "/book" && path != "/books" {
        return Vec::new();
    }
    let hash = |v: &Value| v.get("hash").and_then(Value::as_str).map(str::to_string);
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) => items.iter().filter_map(hash).collect(),
        Ok(v) => hash(&v).into_iter().collect(),
        Err(_) => Vec::new(),
    }
}

/// The key (`pm_archive::polymarket::trades::row_key`) of every row of a 200 `/v2/trades` reply.
fn trade_keys(path: &str, status: Option<u16>, body: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Page {
        data: Option<Vec<pm_archive::polymarket::trades::RowId>>,
    }
    if path != "/v2/trades" || status != Some(200) {
        return Vec::new();
    }
    match serde_json::from_slice::<Page>(body) {
        Ok(p) => p.data.unwrap_or_default().iter().map(pm_archive::polymarket::trades::row_key).collect(),
        Err(_) => Vec::new(),
    }
}

fn reason(s: u16) -> &'static str {
    match s {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        425 => "Too Early",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn http_date(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc2822).unwrap_or_default()
}

fn json(status: u16, v: &impl Serialize) -> (u16, &'static str, Vec<u8>) {
    (status, "application/json", serde_json::to_vec(v).unwrap())
}

fn recorded(status: u16, name: &str) -> (u16, &'static str, Vec<u8>) {
    (status, "application/json", fixture(name))
}

/// The router: one arm per (method, path). A new API (e.g. the Data API) is one more arm here and
/// one handler function below.
fn route(st: &Arc<Mutex<State>>, req: &Req) -> (u16, &'static str, Vec<u8>) {
    let mounted = {
        let s = st.lock().unwrap();
        let hit = |(p, prefix, _): &&(String, bool, Handler)| {
            if *prefix {
                req.path.starts_with(p.as_str())
            } else {
                *p == req.path
            }
        };
        s.mounts.iter().find(hit).map(|(_, _, h)| h.clone())
    };
    if let Some(h) = mounted {
        let (status, body) = h(req);
        return (status, "application/json", body);
    }
    let related = || fixture_json("clob_related_endpoints_2026-08-10.json")["responses"].clone();
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", p) if p.starts_with("/markets/slug/") => gamma(st, &percent_decode(&p["/markets/slug/".len()..])),
        ("GET", "/book") => match query_param(&req.query, "token_id") {
            None => recorded(400, "clob_error_book_400_invalid_token.json"),
            Some(t) if t == RECORDED_BOOK_TOKEN => recorded(200, "clob_book_rest_empty_ask.json"),
            Some(t) => match derived_book(st, &t) {
                Some(b) => (200, "application/json", b),
                None => recorded(404, "clob_error_book_404_no_orderbook.json"),
            },
        },
        ("POST", "/books") => {
            let Ok(items) = serde_json::from_str::<Vec<Value>>(&req.body) else {
                return json(400, &serde_json::json!({"error": "Invalid payload"}));
            };
            if items.len() > 500 {
                // STAND-IN: text from the 2026-05-28 measurement note; no recorded body.
                return json(400, &serde_json::json!({"error": "Payload exceeds the limit"}));
            }
            let mut out: Vec<Vec<u8>> = Vec::new();
            for it in items.iter().rev() {
                if let Some(t) = it.get("token_id").and_then(Value::as_str) {
                    if let Some(b) = derived_book(st, t) {
                        out.push(b);
                    }
                }
            }
            let mut body = b"[".to_vec();
            for (i, b) in out.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(b);
            }
            body.push(b']');
            (200, "application/json", body)
        }
        ("GET", "/midpoint") => json(200, &related()["GET /midpoint?token_id=<fed_yes>"]),
        ("GET", "/spread") => json(200, &related()["GET /spread?token_id=<fed_yes>"]),
        ("GET", "/tick-size") => json(200, &related()["GET /tick-size?token_id=<fed_yes>"]),
        ("GET", "/last-trade-price") => json(200, &related()["GET /last-trade-price?token_id=<fed_yes>"]),
        ("GET", "/price") => match query_param(&req.query, "side").as_deref() {
            Some("SELL") => json(200, &related()["GET /price?token_id=<fed_yes>&side=SELL"]),
            _ => json(200, &related()["GET /price?token_id=<fed_yes>&side=BUY"]),
        },
        // STAND-IN: no recorded /time body; facts §1 says "server unix seconds".
        ("GET", "/time") => {
            (200, "application/json", OffsetDateTime::now_utc().unix_timestamp().to_string().into_bytes())
        }
        // STAND-IN 404 body.
        _ => json(404, &serde_json::json!({"error": "not found (stand-in)"})),
    }
}

pub fn sha_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A decimal token id derived from the slug (77–78 digits like real ones).
fn derived_token(slug: &str, outcome: &str) -> String {
    let h = Sha256::digest(format!("{slug}/{outcome}").as_bytes());
    let a = u128::from_be_bytes(h[..16].try_into().unwrap());
    let b = u128::from_be_bytes(h[16..].try_into().unwrap());
    format!("{}{:038}", a % 10u128.pow(38) + 10u128.pow(37), b % 10u128.pow(38))
}

fn gamma(st: &Arc<Mutex<State>>, slug: &str) -> (u16, &'static str, Vec<u8>) {
    if let Some((s, b)) = st.lock().unwrap().gamma_override.get(slug).cloned() {
        return (s, "application/json", b);
    }
    let not_found = || json(404, &serde_json::json!({"type": "not found error", "error": "not found (stand-in)"}));
    if slug == RECORDED_15M_SLUG {
        // The recorded record, verbatim, minus the file's final newline.
        let mut b = fixture("gamma_market_btc_updown_15m_1767200400.json");
        while b.last() == Some(&b'\n') {
            b.pop();
        }
        let v: Value = serde_json::from_slice(&b).unwrap();
        register(st, &v);
        return (200, "application/json", b);
    }
    let now = now_of(&st.lock().unwrap());
    let Some((_fam, start, end)) = market::window_of_slug(slug, now) else { return not_found() };
    let horizon = st.lock().unwrap().listing_horizon;
    if start - time::Duration::seconds_f64(horizon.as_secs_f64()) > now {
        return not_found();
    }
    // DERIVED from the recorded 5m TWAP record.
    let mut v = fixture_json("gamma_market_btc_updown_5m_1787414400_twap_trimmed.json");
    let up = derived_token(slug, "Up");
    let down = derived_token(slug, "Down");
    v["slug"] = slug.into();
    v["question"] = format!("Bitcoin Up or Down (derived test record for {slug})").into();
    v["conditionId"] = format!("0x{}", sha_hex(slug)).into();
    v["clobTokenIds"] = format!("[\"{up}\", \"{down}\"]").into();
    v["eventStartTime"] = clock::fmt_secs(start).into();
    v["endDate"] = clock::fmt_secs(end).into();
    v["startDate"] =
        clock::fmt_micros(start - time::Duration::hours(24) + time::Duration::seconds_f64(518.248161)).into();
    let (version, resolve_after, open_late) = {
        let s = st.lock().unwrap();
        let version = s.versions.iter().rev().find(|(p, _)| slug.starts_with(p.as_str())).map(|(_, v)| v.clone());
        (version, s.resolve_after, s.open_late.iter().any(|p| slug.starts_with(p.as_str())))
    };
    if let Some(ver) = version {
        v["version"] = ver.as_str().into();
        if ver == "v2" {
            // DERIVED: V2 outcome ids are a real JSON array (docs: "Array of decimal strings").
            v["positionIds"] = serde_json::json!([derived_token(slug, "Up/v2"), derived_token(slug, "Down/v2")]);
        }
    }
    if open_late {
        // docs/VENUE_FACTS_2026.md: a market stayed open 68 days past endDate with acceptingOrders=true.
        v["acceptingOrders"] = true.into();
        v["closed"] = false.into();
    } else if let Some(after) = resolve_after {
        let at = end + time::Duration::seconds_f64(after.as_secs_f64());
        v["acceptingOrders"] = (now < end).into();
        v["closed"] = (now >= at).into();
        if now >= at {
            let up_won = winner_of(slug) == "Up";
            v["outcomePrices"] = if up_won { "[\"1\", \"0\"]" } else { "[\"0\", \"1\"]" }.into();
            v["umaResolutionStatus"] = "resolved".into();
            v["closedTime"] = gamma_closed_time(at).into();
        }
    } else {
        v["acceptingOrders"] = (now < end).into();
        v["closed"] = (now > end + time::Duration::minutes(1)).into();
    }
    register_as(st, &v, open_late);
    json(200, &v)
}

/// The outcome a derived market resolves to (`resolve_after`): "Up" or "Down", fixed per slug.
pub fn winner_of(slug: &str) -> &'static str {
    if Sha256::digest(slug.as_bytes())[0] % 2 == 0 {
        "Up"
    } else {
        "Down"
    }
}

/// Gamma's `closedTime` format, `"YYYY-MM-DD HH:MM:SS+00"` (facts §2.3).
fn gamma_closed_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}+00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn register(st: &Arc<Mutex<State>>, v: &Value) {
    register_as(st, v, false)
}

/// Registers the ids that have books: `positionIds` for a "v2" record, else `clobTokenIds`.
fn register_as(st: &Arc<Mutex<State>>, v: &Value, open_late: bool) {
    let ids: Vec<String> = match v.get("version").and_then(Value::as_str) {
        Some("v2") => serde_json::from_value(v["positionIds"].clone()).unwrap(),
        _ => serde_json::from_str(v["clobTokenIds"].as_str().unwrap()).unwrap(),
    };
    let end = clock::parse_rfc3339(v["endDate"].as_str().unwrap()).unwrap();
    let cid = v["conditionId"].as_str().unwrap().to_string();
    let mut s = st.lock().unwrap();
    for id in &ids {
        s.tokens.insert(id.clone(), TokenInfo { condition_id: cid.clone(), window_end: end, open_late });
    }
    let hooks = s.market_hooks.clone();
    drop(s);
    let start = v.get("eventStartTime").and_then(Value::as_str).and_then(clock::parse_rfc3339);
    let outcomes: Vec<String> =
        v.get("outcomes").and_then(Value::as_str).and_then(|o| serde_json::from_str(o).ok()).unwrap_or_default();
    if let (Some(start), false) = (start, hooks.is_empty()) {
        let slug = v.get("slug").and_then(Value::as_str).unwrap_or_default().to_string();
        let tokens = ids.into_iter().zip(outcomes).collect();
        let m = MarketSeen { condition_id: cid, slug, tokens, start, end };
        hooks.iter().for_each(|h| h(&m));
    }
}

#[derive(Serialize)]
struct WireBook<'a> {
    market: &'a str,
    asset_id: &'a str,
    timestamp: String,
    hash: String,
    bids: Vec<WireLevel>,
    asks: Vec<WireLevel>,
    min_order_size: &'a str,
    tick_size: &'a str,
    neg_risk: bool,
    last_trade_price: &'a str,
}

#[derive(Serialize)]
struct WireLevel {
    price: String,
    size: String,
}

/// A REST book DERIVED from the recorded websocket book capture, or None when the token has none.
fn derived_book(st: &Arc<Mutex<State>>, token: &str) -> Option<Vec<u8>> {
    let (info, nudge, now, gone) = {
        let mut s = st.lock().unwrap();
        let info = s.tokens.get(token)?.clone();
        s.nudge += 1;
        (info, s.nudge, now_of(&s), s.book_gone_after)
    };
    if !info.open_late && now > info.window_end + time::Duration::seconds_f64(gone.as_secs_f64()) {
        return None;
    }
    let cap = fixture_json("ws_book_snapshot_captured.json");
    let lv = |side: &str| -> Vec<WireLevel> {
        cap[side]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| WireLevel { price: l["price"].as_str().unwrap().into(), size: l["size"].as_str().unwrap().into() })
            .collect()
    };
    let mut bids = lv("bids");
    let asks = lv("asks");
    // Nudge the best bid (last element: bids ascending) so consecutive snapshots differ.
    if let Some(best) = bids.last_mut() {
        best.size = format!("{}.{:02}", 100 + nudge % 50, nudge % 100);
    }
    let ts = (now.unix_timestamp_nanos() / 1_000_000).to_string();
    let (mos, tick, ltp) = (Value::from("5"), Value::from("0.01"), Value::from("0.920"));
    let hash = bookhash::hash(&bookhash::HashInput {
        market: &info.condition_id,
        asset_id: token,
        timestamp: &ts,
        bids: bids.iter().map(|l| (l.price.as_str(), l.size.as_str())).collect(),
        asks: asks.iter().map(|l| (l.price.as_str(), l.size.as_str())).collect(),
        min_order_size: &mos,
        tick_size: &tick,
        neg_risk: &Value::Bool(false),
        last_trade_price: &ltp,
    });
    let b = WireBook {
        market: &info.condition_id,
        asset_id: token,
        timestamp: ts,
        hash,
        bids,
        asks,
        min_order_size: "5",
        tick_size: "0.01",
        neg_risk: false,
        last_trade_price: "0.920",
    };
    Some(serde_json::to_vec(&b).unwrap())
}
