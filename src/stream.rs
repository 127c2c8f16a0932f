//! pm-stream's engine: raw capture of the websocket market channel (facts §6).
//!
//! Threads (all blocking):
//! - a **reader** turns market records on stdin into [`Input`] messages;
//! - the **controller** ([`run`]) decides which tokens are tracked (a market from `lead` before its
//!   window to `grace` after it, plus fixed `--token`s) and shards them over connections
//!   (≤ `max_per_conn` each), sending add/remove commands to the connection threads;
//! - one **connection thread** per shard connects, subscribes, pings, reads frames, runs the silence
//!   watchdog and the scheduled reconnect, and reconnects forever with capped, jittered back-off;
//! - short-lived **snapshot threads** take the REST `/books` snapshot after every (re)connect;
//! - one **writer** numbers every record (`seq`) and writes it to the output.
//!
//! Every frame becomes one raw envelope (`kind:"ws"`, `ctx.event:"frame"`); every open, close, error,
//! subscription change, back-off wait and watchdog firing is a record too, so gaps are explicit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::envelope::{Body, Envelope, RunInfo, Sequencer};
use crate::feed::Input;
use crate::http::{Client, Request};
use crate::market::Market;
use crate::{clock, signal, track, util};

pub const DEFAULT_WS_URL: &str = "wss://ws-subscriptions-clob.polymarket.com/ws/market";
/// The raw stream name (archive layout `stream=ws_market`).
pub const STREAM_NAME: &str = "ws_market";
pub const TOOL: &str = "pm-stream";

/// Everything the engine needs; the CLI fills it.
#[derive(Clone, Debug)]
pub struct Config {
    pub ws_url: String,
    /// CLOB REST base URL for the `/books` resync snapshot; None disables it.
    pub clob_url: Option<String>,
    pub lead: Duration,
    pub grace: Duration,
    pub max_per_conn: usize,
    /// Asset ids per subscribe frame: a frame with a few thousand ids makes the venue close the
    /// socket (rs-clob-client-v2#116), so every subscription is sent in batches of at most this many.
    pub max_ids_per_frame: usize,
    pub ping_every: Duration,
    /// No inbound frame of any kind (PONG included) for this long → the connection is half-open:
    /// terminate and reconnect (rs-clob-client-v2#60).
    pub idle: Duration,
    /// No data frame for this long → reconnect.
    pub silence: Duration,
    /// Reconnect a connection once it is this old.
    pub max_conn_age: Duration,
    /// A subscribed asset without any event for this long → `asset_silence` record + REST snapshot.
    pub asset_silence: Option<Duration>,
    pub connect_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Tokens tracked for the whole run, whatever stdin says.
    pub fixed_tokens: Vec<String>,
    /// Stop after this many data frames in total (benchmarks, tests).
    pub max_frames: Option<u64>,
    pub user_agent: String,
    /// How often the controller re-evaluates tracking windows.
    pub tick: Duration,
    /// How often each connection writes its `stats` record (event counts by type).
    pub stats_every: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ws_url: DEFAULT_WS_URL.to_string(),
            clob_url: Some(crate::http::DEFAULT_CLOB_URL.to_string()),
            lead: Duration::from_secs(60),
            grace: Duration::from_secs(120),
            max_per_conn: 200,
            max_ids_per_frame: 100,
            ping_every: Duration::from_secs(10),
            idle: Duration::from_secs(30),
            silence: Duration::from_secs(60),
            max_conn_age: Duration::from_secs(3600),
            asset_silence: Some(Duration::from_secs(300)),
            connect_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            fixed_tokens: Vec::new(),
            max_frames: None,
            user_agent: crate::http::DEFAULT_USER_AGENT.to_string(),
            tick: Duration::from_millis(200),
            stats_every: Duration::from_secs(60),
        }
    }
}

/// Counters shared by all threads (reported on stderr at the end).
#[derive(Debug, Default)]
pub struct Counters {
    pub frames: AtomicU64,
    pub data_frames: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub disconnects: AtomicU64,
    pub watchdogs: AtomicU64,
    pub snapshots: AtomicU64,
}

impl Counters {
    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "frames={} data_frames={} connects={} connect_failures={} disconnects={} watchdogs={} rest_snapshots={}",
            g(&self.frames),
            g(&self.data_frames),
            g(&self.connects),
            g(&self.connect_failures),
            g(&self.disconnects),
            g(&self.watchdogs),
            g(&self.snapshots)
        )
    }
}

/// Handle through which threads emit records: the writer numbers them.
#[derive(Clone)]
pub struct Sink {
    tx: Sender<Envelope>,
    run: Arc<RunInfo>,
}

impl Sink {
    /// A `kind:"ws"` record stamped now, with this context.
    pub fn ws(&self, ctx: Value) -> Envelope {
        Envelope::new(&self.run, 0, "ws").with_ctx(ctx)
    }

    pub fn envelope(&self, kind: &'static str) -> Envelope {
        Envelope::new(&self.run, 0, kind)
    }

    /// Hands a record to the writer. False when the writer is gone (output closed).
    pub fn send(&self, e: Envelope) -> bool {
        self.tx.send(e).is_ok()
    }
}

/// Starts the writer thread over `out`. Lines are flushed whenever the queue runs empty, so a
/// quiet stream is always fully written while a burst is written in large blocks.
pub fn start_writer(run: RunInfo, out: Box<dyn Write + Send>) -> (Sink, std::thread::JoinHandle<io::Result<u64>>) {
    let (tx, rx) = crossbeam_channel::bounded::<Envelope>(65_536);
    let run = Arc::new(run);
    let h = std::thread::spawn(move || {
        let mut w = io::BufWriter::with_capacity(1 << 20, out);
        let mut n = 0u64;
        let res = (|| -> io::Result<()> {
            while let Ok(mut e) = rx.recv() {
                e.seq = n;
                serde_json::to_writer(&mut w, &e)?;
                w.write_all(b"\n")?;
                n += 1;
                if rx.is_empty() {
                    w.flush()?;
                }
            }
            w.flush()
        })();
        if res.is_err() {
            // The reader of our output went away: the whole tool stops.
            signal::request_stop();
        }
        res.map(|_| n)
    });
    (Sink { tx, run }, h)
}

/// Commands from the controller to a connection thread.
#[derive(Debug)]
enum Cmd {
    Add(Vec<String>),
    Remove(Vec<String>),
    Stop,
}

/// Capped exponential back-off with jitter in [½, 1]: attempt 1 waits about `base`.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = base.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
    let capped = exp.min(max.as_secs_f64());
    Duration::from_secs_f64((capped * (0.5 + 0.5 * util::random_unit())).max(0.001))
}

/// True for frames that carry market data. `PONG` and `NO NEW ASSETS` (facts §6.1) do not, so they
/// never keep the silence watchdog quiet.
pub fn is_data_frame(text: &str) -> bool {
    let t = text.trim();
    !(t.eq_ignore_ascii_case("PONG") || t.eq_ignore_ascii_case("NO NEW ASSETS") || t.is_empty())
}

/// Asset ids mentioned in a frame (`"asset_id":"…"`), found by a plain scan (no JSON parse).
pub fn asset_ids_in(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices("\"asset_id\"").filter_map(move |(i, k)| {
        let rest = text[i + k.len()..].trim_start();
        let rest = rest.strip_prefix(':')?.trim_start().strip_prefix('"')?;
        let end = rest.find('"')?;
        Some(&rest[..end])
    })
}

/// The subscribe message sent first on every connection (facts §6.1; `initial_dump` so that every
/// asset starts with a book, anchors §3.4).
pub fn subscribe_message(tokens: &[String]) -> String {
    json!({"assets_ids": tokens, "type": "market", "custom_feature_enabled": true, "initial_dump": true}).to_string()
}

/// A subscription change on an open connection (dynamic subscribe/unsubscribe, shipped by the venue
/// about 2025-12: nevuamarkets/poly-websockets#20). A subscribe names `custom_feature_enabled` again:
/// the venue applies the flag a subscribe carries to the live connection ("re-naming any active asset
/// toggles the flag in place", venue_changes_2026 §3 A9), so one without it might turn the custom
/// events off.
pub fn operation_message(op: &str, tokens: &[String]) -> String {
    if op == "subscribe" {
        json!({"operation": op, "assets_ids": tokens, "custom_feature_enabled": true}).to_string()
    } else {
        json!({"operation": op, "assets_ids": tokens}).to_string()
    }
}

/// The frames that subscribe `tokens` on a fresh connection, at most `max` ids each: the first is
/// the [`subscribe_message`], the rest are `subscribe` operations (rs-clob-client-v2#116/#117).
pub fn subscribe_frames(tokens: &[String], max: usize) -> Vec<(Vec<String>, String)> {
    tokens
        .chunks(max.max(1))
        .enumerate()
        .map(|(i, c)| {
            let msg = if i == 0 { subscribe_message(c) } else { operation_message("subscribe", c) };
            (c.to_vec(), msg)
        })
        .collect()
}

/// Counts of websocket events by type, as a connection's `stats` record carries them and
/// `manifest build` sums them (`ws_event_types`). Every event of a frame is counted: an array frame
/// (the initial dump) counts each element. Venue types are counted under their own name, unknown ones
/// included; what is not a venue event is counted under a name in parentheses: `(pong)`,
/// `(no_new_assets)`, `(not_json)`, `(empty_array)`, `(no_event_type)`, `(binary)`, `(ws_ping)`,
/// `(ws_pong)`. Names come from the venue, so they are bounded: longer than 64 bytes or not
/// `[A-Za-z0-9_.-]` → `(bad_name)`; more than [`MAX_EVENT_TYPES`] names in one record → `(other)`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventCounts(pub BTreeMap<String, u64>);

pub const MAX_EVENT_TYPES: usize = 64;

impl EventCounts {
    /// Counts a name the venue sent (checked).
    fn venue(&mut self, name: &str) {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
        self.bump(if ok { name } else { "(bad_name)" });
    }

    fn bump(&mut self, key: &str) {
        if let Some(n) = self.0.get_mut(key) {
            *n += 1;
        } else if self.0.len() < MAX_EVENT_TYPES {
            self.0.insert(key.to_string(), 1);
        } else {
            *self.0.entry("(other)".to_string()).or_insert(0) += 1;
        }
    }

    /// Counts the events of one text frame.
    pub fn add_text(&mut self, text: &str) {
        #[derive(Deserialize)]
        struct Tag<'a> {
            #[serde(borrow)]
            event_type: Option<&'a serde_json::value::RawValue>,
        }
        let count = |me: &mut Self, t: Tag<'_>| match t.event_type.map(|r| serde_json::from_str::<String>(r.get())) {
            Some(Ok(s)) => me.venue(&s),
            Some(Err(_)) => me.bump("(bad_name)"),
            None => me.bump("(no_event_type)"),
        };
        let t = text.trim_start();
        if t.starts_with('[') {
            match serde_json::from_str::<Vec<&serde_json::value::RawValue>>(t) {
                Ok(items) if items.is_empty() => self.bump("(empty_array)"),
                Ok(items) => {
                    for it in items {
                        match serde_json::from_str::<Tag>(it.get()) {
                            Ok(tag) => count(self, tag),
                            Err(_) => self.bump("(no_event_type)"),
                        }
                    }
                }
                Err(_) => self.bump("(not_json)"),
            }
        } else if t.starts_with('{') {
            match serde_json::from_str::<Tag>(t) {
                Ok(tag) => count(self, tag),
                Err(_) => self.bump("(not_json)"),
            }
        } else if t.trim_end().eq_ignore_ascii_case("PONG") {
            self.bump("(pong)");
        } else if t.trim_end().eq_ignore_ascii_case("NO NEW ASSETS") {
            self.bump("(no_new_assets)");
        } else {
            self.bump("(not_json)");
        }
    }

    pub fn add(&mut self, name: &str) {
        self.bump(name)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The `ctx` of a `kind:"ws"`, `event:"stats"` record: what one connection received since its
/// previous stats record (so records sum across files and runs). Written every `--stats-secs` and
/// when the connection ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsCtx {
    /// Always `"stats"`.
    pub event: String,
    pub conn_id: u64,
    pub shard: u32,
    /// Seconds covered by this record.
    pub interval_s: f64,
    /// Frames received (every opcode), and their payload bytes.
    pub frames: u64,
    pub bytes: u64,
    pub ws_event_types: EventCounts,
}

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

/// Opens the websocket: TCP connect with timeout, TLS for wss://, handshake with a deadline.
fn connect(cfg: &Config) -> Result<(Ws, u16), String> {
    let mut req = cfg.ws_url.as_str().into_client_request().map_err(|e| format!("bad url: {e}"))?;
    if let Ok(v) = cfg.user_agent.parse() {
        req.headers_mut().insert("User-Agent", v);
    }
    let uri = req.uri().clone();
    let host = uri.host().ok_or("url has no host")?.trim_start_matches('[').trim_end_matches(']').to_string();
    let tls = uri.scheme_str() == Some("wss");
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addrs: Vec<SocketAddr> =
        (host.as_str(), port).to_socket_addrs().map_err(|e| format!("resolve {host}: {e}"))?.collect();
    let mut last = format!("no address for {host}");
    let mut tcp = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, cfg.connect_timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = format!("connect {a}: {e}"),
        }
    }
    let tcp = tcp.ok_or(last)?;
    let _ = tcp.set_nodelay(true);
    tcp.set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(cfg.connect_timeout)).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + cfg.connect_timeout;
    let mut hs = tungstenite::client_tls_with_config(req, tcp, None, None);
    loop {
        match hs {
            Ok((ws, resp)) => return Ok((ws, resp.status().as_u16())),
            Err(HandshakeError::Failure(e)) => return Err(format!("handshake: {e}")),
            Err(HandshakeError::Interrupted(mid)) => {
                if Instant::now() > deadline || signal::stop_requested() {
                    return Err("handshake: timed out".into());
                }
                hs = mid.handshake();
            }
        }
    }
}

fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

/// Shared by the connection threads.
struct Shared {
    cfg: Config,
    sink: Sink,
    client: Option<Arc<Client>>,
    counters: Arc<Counters>,
    next_conn_id: AtomicU64,
}

impl Shared {
    /// Takes a REST `/books` snapshot of `tokens` on its own thread (frames keep being read meanwhile);
    /// every HTTP attempt becomes a normal http envelope with `ctx.reason` and the conn id.
    fn snapshot(self: &Arc<Self>, conn_id: u64, reason: &'static str, tokens: Vec<String>) {
        let (Some(client), Some(base)) = (self.client.clone(), self.cfg.clob_url.clone()) else { return };
        if tokens.is_empty() {
            return;
        }
        let me = self.clone();
        std::thread::spawn(move || {
            for chunk in tokens.chunks(500) {
                let body: Vec<Value> = chunk.iter().map(|t| json!({"token_id": t})).collect();
                let req = Request::post_json("books", format!("{base}/books"), Value::Array(body).to_string());
                let ctx = json!({"reason": reason, "conn_id": conn_id, "token_ids": chunk});
                let mut dummy = Sequencer::new((*me.sink.run).clone());
                let _ = client.execute(&req, None, |a| {
                    let env = a.envelope(&mut dummy, &req, Some(ctx.clone()));
                    if me.sink.send(env) {
                        Ok(())
                    } else {
                        Err(())
                    }
                });
                me.counters.snapshots.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// Why a connection ended.
enum End {
    Stop,
    Reconnect { event: &'static str, reason: String, immediate: bool },
}

/// One shard: connects, reads, reconnects forever until told to stop.
fn conn_thread(shared: Arc<Shared>, shard: u32, rx: Receiver<Cmd>, initial: Vec<String>) {
    let cfg = &shared.cfg;
    let sink = &shared.sink;
    let mut tokens: BTreeSet<String> = initial.into_iter().collect();
    let mut attempt: u32 = 0;
    let mut stopping = false;
    while !stopping && !signal::stop_requested() {
        if tokens.is_empty() {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Cmd::Add(t)) => tokens.extend(t),
                Ok(Cmd::Remove(t)) => t.iter().for_each(|x| {
                    tokens.remove(x);
                }),
                Ok(Cmd::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            continue;
        }
        let conn_id = shared.next_conn_id.fetch_add(1, Ordering::SeqCst);
        attempt += 1;
        let end = match connect(cfg) {
            Err(e) => {
                shared.counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                sink.send(sink.ws(json!({"event": "error", "conn_id": conn_id, "shard": shard, "phase": "connect", "attempt": attempt})).with_error(e));
                End::Reconnect { event: "connect_failed", reason: "connect failed".into(), immediate: false }
            }
            Ok((ws, status)) => {
                shared.counters.connects.fetch_add(1, Ordering::Relaxed);
                sink.send(sink.ws(json!({"event": "open", "conn_id": conn_id, "shard": shard, "attempt": attempt, "http_status": status, "url": cfg.ws_url})));
                let mut c = Conn::new(&shared, shard, conn_id, ws);
                let end = c.serve(&rx, &mut tokens);
                if c.got_data {
                    attempt = 0; // a connection that delivered data resets the back-off
                }
                end
            }
        };
        match end {
            End::Stop => stopping = true,
            End::Reconnect { event, reason, immediate } => {
                if signal::stop_requested() {
                    break;
                }
                let wait = if immediate && attempt <= 1 {
                    Duration::from_millis(10)
                } else {
                    backoff(cfg.backoff_base, cfg.backoff_max, attempt.max(1))
                };
                sink.send(sink.ws(json!({"event": "reconnect_wait", "conn_id": conn_id, "shard": shard, "after": event, "reason": reason,
                    "wait_s": (wait.as_secs_f64() * 1000.0).round() / 1000.0, "attempt": attempt})));
                // Wait, still following subscription changes.
                let until = Instant::now() + wait;
                while Instant::now() < until && !signal::stop_requested() {
                    match rx.recv_timeout((until - Instant::now()).min(Duration::from_millis(50))) {
                        Ok(Cmd::Add(t)) => tokens.extend(t),
                        Ok(Cmd::Remove(t)) => t.iter().for_each(|x| {
                            tokens.remove(x);
                        }),
                        Ok(Cmd::Stop) | Err(RecvTimeoutError::Disconnected) => {
                            stopping = true;
                            break;
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                    }
                }
            }
        }
    }
}

/// One open connection.
struct Conn<'a> {
    shared: &'a Arc<Shared>,
    shard: u32,
    conn_id: u64,
    ws: Ws,
    frame_no: u64,
    got_data: bool,
    /// What has been sent on *this* connection: starts empty on every connection, so a reconnect
    /// always subscribes the whole wanted set again (nautilus_trader PR #4895).
    subscribed: BTreeSet<String>,
    /// Received since the last `stats` record.
    counts: EventCounts,
    stats_frames: u64,
    stats_bytes: u64,
    stats_since: Instant,
}

impl Conn<'_> {
    fn new(shared: &Arc<Shared>, shard: u32, conn_id: u64, ws: Ws) -> Conn<'_> {
        Conn {
            shared,
            shard,
            conn_id,
            ws,
            frame_no: 0,
            got_data: false,
            subscribed: BTreeSet::new(),
            counts: EventCounts::default(),
            stats_frames: 0,
            stats_bytes: 0,
            stats_since: Instant::now(),
        }
    }

    fn ctx(&self, event: &str) -> Value {
        json!({"event": event, "conn_id": self.conn_id, "shard": self.shard})
    }

    fn record(&self, event: &str, extra: Value) {
        let mut ctx = self.ctx(event);
        if let (Some(o), Some(x)) = (ctx.as_object_mut(), extra.as_object()) {
            o.extend(x.clone());
        }
        self.shared.sink.send(self.shared.sink.ws(ctx));
    }

    /// Writes the `stats` record for what arrived since the last one (if anything did).
    fn flush_stats(&mut self) {
        if self.stats_frames == 0 && self.counts.is_empty() {
            self.stats_since = Instant::now();
            return;
        }
        let ctx = StatsCtx {
            event: "stats".into(),
            conn_id: self.conn_id,
            shard: self.shard,
            interval_s: (self.stats_since.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            frames: self.stats_frames,
            bytes: self.stats_bytes,
            ws_event_types: std::mem::take(&mut self.counts),
        };
        self.stats_frames = 0;
        self.stats_bytes = 0;
        self.stats_since = Instant::now();
        let ctx = serde_json::to_value(ctx).expect("stats serialize");
        self.shared.sink.send(self.shared.sink.ws(ctx));
    }

    fn send_text(&mut self, text: String) -> Result<(), tungstenite::Error> {
        self.ws.send(Message::text(text))
    }

    /// Closes politely (best effort) and records the close.
    fn close(&mut self, reason: &str) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
        self.shared.counters.disconnects.fetch_add(1, Ordering::Relaxed);
        self.record("close", json!({"by": "client", "reason": reason, "frames": self.frame_no}));
    }

    /// Sends `op` (`subscribe`/`unsubscribe`) for `tokens` in frames of at most `max_ids_per_frame`
    /// ids, each recorded with its exact text; `initial` uses [`subscribe_frames`].
    fn send_batched(&mut self, op: &str, tokens: Vec<String>, initial: bool) -> Result<(), End> {
        let max = self.shared.cfg.max_ids_per_frame;
        let frames = if initial {
            subscribe_frames(&tokens, max)
        } else {
            tokens.chunks(max.max(1)).map(|c| (c.to_vec(), operation_message(op, c))).collect()
        };
        let n = frames.len();
        for (i, (ids, msg)) in frames.into_iter().enumerate() {
            if let Err(e) = self.send_text(msg.clone()) {
                self.shared.counters.disconnects.fetch_add(1, Ordering::Relaxed);
                self.record("error", json!({"phase": op, "error": e.to_string()}));
                return Err(End::Reconnect { event: "error", reason: format!("{op} failed: {e}"), immediate: true });
            }
            for t in &ids {
                if op == "subscribe" {
                    self.subscribed.insert(t.clone());
                } else {
                    self.subscribed.remove(t);
                }
            }
            let mut extra = json!({"token_ids": ids, "message": msg, "batch": i, "batches": n});
            if initial {
                extra["initial"] = true.into();
            }
            self.record(op, extra);
        }
        Ok(())
    }

    /// Subscribes, then reads until something ends the connection; the last `stats` record is
    /// written whatever ended it.
    fn serve(&mut self, rx: &Receiver<Cmd>, wanted: &mut BTreeSet<String>) -> End {
        let end = self.serve_inner(rx, wanted);
        self.flush_stats();
        end
    }

    fn serve_inner(&mut self, rx: &Receiver<Cmd>, wanted: &mut BTreeSet<String>) -> End {
        let cfg = &self.shared.cfg;
        let list: Vec<String> = wanted.iter().cloned().collect();
        if let Err(end) = self.send_batched("subscribe", list.clone(), true) {
            return end;
        }
        self.shared.snapshot(self.conn_id, "ws_resync", list);

        let opened = Instant::now();
        let mut last_data = Instant::now();
        let mut last_inbound = Instant::now();
        let mut next_ping = Instant::now() + cfg.ping_every;
        let mut last_seen: HashMap<String, Instant> = HashMap::new();
        let mut silent_reported: BTreeSet<String> = BTreeSet::new();
        let mut next_asset_check = Instant::now() + Duration::from_secs(1);
        loop {
            if signal::stop_requested() {
                self.close("shutdown");
                return End::Stop;
            }
            // Subscription changes on the open connection: the wanted set changes, then what this
            // connection has subscribed is brought to it.
            let mut changed = false;
            while let Ok(cmd) = rx.try_recv() {
                changed = true;
                match cmd {
                    Cmd::Stop => {
                        self.close("no_tokens");
                        return End::Stop;
                    }
                    Cmd::Add(t) => wanted.extend(t),
                    Cmd::Remove(t) => t.iter().for_each(|x| {
                        wanted.remove(x);
                    }),
                }
            }
            if changed {
                let add: Vec<String> = wanted.difference(&self.subscribed).cloned().collect();
                let remove: Vec<String> = self.subscribed.difference(wanted).cloned().collect();
                if !remove.is_empty() {
                    if let Err(end) = self.send_batched("unsubscribe", remove.clone(), false) {
                        return end;
                    }
                    remove.iter().for_each(|x| {
                        last_seen.remove(x);
                        silent_reported.remove(x);
                    });
                }
                if !add.is_empty() {
                    if let Err(end) = self.send_batched("subscribe", add.clone(), false) {
                        return end;
                    }
                    self.shared.snapshot(self.conn_id, "ws_subscribe", add);
                }
            }
            if signal::stop_requested() {
                continue;
            }
            let now = Instant::now();
            if now >= next_ping {
                if let Err(e) = self.send_text("PING".into()) {
                    self.shared.counters.disconnects.fetch_add(1, Ordering::Relaxed);
                    self.record("error", json!({"phase": "ping", "error": e.to_string()}));
                    return End::Reconnect { event: "error", reason: format!("ping failed: {e}"), immediate: true };
                }
                next_ping = now + cfg.ping_every;
            }
            if now.duration_since(self.stats_since) >= cfg.stats_every {
                self.flush_stats();
            }
            if now.duration_since(last_inbound) >= cfg.idle {
                // Half-open: not even a PONG came back. Terminate (the close frame is best effort;
                // the socket is dropped right after) and reconnect.
                self.shared.counters.watchdogs.fetch_add(1, Ordering::Relaxed);
                let secs = now.duration_since(last_inbound).as_secs_f64();
                self.record("watchdog", json!({"reason": "inbound_silence", "silent_s": (secs * 1000.0).round() / 1000.0, "limit_s": cfg.idle.as_secs_f64()}));
                self.close("watchdog_inbound_silence");
                return End::Reconnect { event: "watchdog", reason: "inbound_silence".into(), immediate: true };
            }
            if now.duration_since(last_data) >= cfg.silence {
                self.shared.counters.watchdogs.fetch_add(1, Ordering::Relaxed);
                let secs = now.duration_since(last_data).as_secs_f64();
                self.record("watchdog", json!({"reason": "silence", "silent_s": (secs * 1000.0).round() / 1000.0, "limit_s": cfg.silence.as_secs_f64()}));
                self.close("watchdog_silence");
                return End::Reconnect { event: "watchdog", reason: "silence".into(), immediate: true };
            }
            if now.duration_since(opened) >= cfg.max_conn_age {
                self.shared.counters.watchdogs.fetch_add(1, Ordering::Relaxed);
                self.record(
                    "watchdog",
                    json!({"reason": "max_conn_age", "age_s": now.duration_since(opened).as_secs(), "limit_s": cfg.max_conn_age.as_secs_f64()}),
                );
                self.close("max_conn_age");
                return End::Reconnect { event: "watchdog", reason: "max_conn_age".into(), immediate: true };
            }
            if let Some(limit) = cfg.asset_silence {
                if now >= next_asset_check {
                    next_asset_check = now + Duration::from_secs(1);
                    let silent: Vec<String> = self
                        .subscribed
                        .iter()
                        .filter(|t| !silent_reported.contains(*t))
                        .filter(|t| now.duration_since(*last_seen.get(*t).unwrap_or(&opened)) >= limit)
                        .cloned()
                        .collect();
                    if !silent.is_empty() {
                        self.record("asset_silence", json!({"token_ids": silent, "limit_s": limit.as_secs_f64()}));
                        silent_reported.extend(silent.iter().cloned());
                        self.shared.snapshot(self.conn_id, "asset_silence", silent);
                    }
                }
            }
            match self.ws.read() {
                Ok(msg) => {
                    let at = clock::now();
                    last_inbound = Instant::now();
                    let (opcode, bytes, data) = match msg {
                        Message::Text(t) => {
                            let s = t.as_str();
                            let data = is_data_frame(s);
                            if data && cfg.asset_silence.is_some() {
                                for a in asset_ids_in(s) {
                                    if let Some(v) = last_seen.get_mut(a) {
                                        *v = Instant::now();
                                    } else if self.subscribed.contains(a) {
                                        last_seen.insert(a.to_string(), Instant::now());
                                    }
                                    silent_reported.remove(a);
                                }
                            }
                            self.counts.add_text(s);
                            ("text", t.as_bytes().to_vec(), data)
                        }
                        Message::Binary(b) => {
                            self.counts.add("(binary)");
                            ("binary", b.to_vec(), true)
                        }
                        Message::Ping(b) => {
                            self.counts.add("(ws_ping)");
                            ("ping", b.to_vec(), false)
                        }
                        Message::Pong(b) => {
                            self.counts.add("(ws_pong)");
                            ("pong", b.to_vec(), false)
                        }
                        Message::Close(cf) => {
                            self.shared.counters.disconnects.fetch_add(1, Ordering::Relaxed);
                            let (code, reason) =
                                cf.map(|c| (u16::from(c.code), c.reason.to_string())).unwrap_or((1005, String::new()));
                            self.record(
                                "close",
                                json!({"by": "server", "code": code, "reason": reason, "frames": self.frame_no}),
                            );
                            let _ = self.ws.flush();
                            return End::Reconnect {
                                event: "close",
                                reason: format!("server close {code}"),
                                immediate: true,
                            };
                        }
                        Message::Frame(_) => continue,
                    };
                    self.stats_frames += 1;
                    self.stats_bytes += bytes.len() as u64;
                    self.write_frame(at, opcode, bytes);
                    if data {
                        last_data = Instant::now();
                        self.got_data = true;
                        let n = self.shared.counters.data_frames.fetch_add(1, Ordering::Relaxed) + 1;
                        if cfg.max_frames.is_some_and(|m| n >= m) {
                            signal::request_stop();
                        }
                    }
                }
                Err(e) if is_timeout(&e) => {}
                Err(e) => {
                    self.shared.counters.disconnects.fetch_add(1, Ordering::Relaxed);
                    let closed = matches!(e, tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed);
                    self.record(
                        if closed { "close" } else { "error" },
                        json!({"phase": "read", "error": e.to_string(), "frames": self.frame_no, "by": "network"}),
                    );
                    return End::Reconnect { event: "error", reason: e.to_string(), immediate: true };
                }
            }
        }
    }

    fn write_frame(&mut self, at: OffsetDateTime, opcode: &str, bytes: Vec<u8>) {
        let mut ctx = json!({"event": "frame", "conn_id": self.conn_id, "frame_no": self.frame_no});
        if opcode != "text" {
            ctx["opcode"] = opcode.into();
        }
        self.frame_no += 1;
        self.shared.counters.frames.fetch_add(1, Ordering::Relaxed);
        let mut env = self.shared.sink.ws(ctx).with_body(Body::from_bytes(bytes));
        env.collected_at_utc = clock::fmt_micros(at);
        self.shared.sink.send(env);
    }
}

/// A market being followed, with its tracking window (src/track.rs, shared with pm-books).
struct Tracked {
    market: Market,
    window: track::Window,
    active: bool,
}

/// One shard as the controller sees it.
struct Shard {
    tokens: BTreeSet<String>,
    tx: Sender<Cmd>,
    handle: std::thread::JoinHandle<()>,
}

/// The controller: runs until stdin ended and nothing is left to track, a signal, `max_frames`, or a
/// closed output. Returns the number of bad input lines.
pub fn run(cfg: Config, inputs: Receiver<Input>, sink: Sink, client: Option<Client>, counters: Arc<Counters>) -> u64 {
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        sink: sink.clone(),
        client: client.map(Arc::new),
        counters,
        next_conn_id: AtomicU64::new(0),
    });
    let mut markets: BTreeMap<String, Tracked> = BTreeMap::new();
    let mut shards: Vec<Option<Shard>> = Vec::new();
    let mut owner: HashMap<String, usize> = HashMap::new();
    let mut eof = false;
    let mut bad = 0u64;
    let fixed: BTreeSet<String> = cfg.fixed_tokens.iter().cloned().collect();
    loop {
        if signal::stop_requested() {
            break;
        }
        // After the end of input the channel answers at once: wait one tick instead of spinning.
        let next = if eof {
            std::thread::sleep(cfg.tick);
            Err(RecvTimeoutError::Timeout)
        } else {
            inputs.recv_timeout(cfg.tick)
        };
        match next {
            Ok(Input::Market { market: m, .. }) => {
                let Some(window) = track::Window::of(&m, cfg.lead, cfg.grace) else { continue };
                let key = m.condition_id.clone();
                let active = markets.get(&key).map(|t| t.active).unwrap_or(false);
                markets.insert(key, Tracked { market: *m, window, active });
            }
            Ok(Input::Bad { line: n, reason: why }) => {
                bad += 1;
                eprintln!("{TOOL}: stdin line {n}: skipped: {why}");
                let e = sink.envelope("gap").with_ctx(json!({"gap": "bad_input", "line": n})).with_error(why);
                sink.send(e);
            }
            Err(RecvTimeoutError::Disconnected) => eof = true,
            Err(RecvTimeoutError::Timeout) => {}
        }
        // Drain whatever else is queued before re-evaluating.
        if !inputs.is_empty() && !eof {
            continue;
        }
        // Both clock readings (src/track.rs): a wall-clock step neither starts late nor stops early.
        let now = track::Now::read();
        for t in markets.values_mut() {
            let phase = t.window.phase(&now);
            let want = if t.active { phase != track::Phase::Over } else { phase == track::Phase::Open };
            if want != t.active {
                t.active = want;
                let (action, reason) = if want {
                    (track::Action::Start, track::Reason::Window)
                } else {
                    (track::Action::Stop, track::Reason::GraceElapsed)
                };
                let mut ctx = track::TrackCtx::new(action, reason, &t.market, t.market.tokens.clone());
                ctx.stream = Some(STREAM_NAME.to_string());
                sink.send(sink.envelope("track").with_ctx(ctx.to_value()));
            }
        }
        // Forget markets whose tracking is over.
        markets.retain(|_, t| t.active || t.window.phase(&now) != track::Phase::Over);
        let mut want: BTreeSet<String> = fixed.clone();
        for t in markets.values().filter(|t| t.active) {
            want.extend(t.market.tokens.iter().map(|x| x.token_id.clone()));
        }
        // A connection thread that ended on its own (it only ends on Stop, so this is a panic or
        // a bug) must not orphan its tokens: record it and hand its tokens to a new connection.
        for (i, slot) in shards.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|s| s.handle.is_finished()) {
                let dead = slot.take().expect("present");
                let toks: Vec<String> = dead.tokens.iter().cloned().collect();
                let _ = dead.handle.join();
                owner.retain(|_, &mut j| j != i);
                sink.send(
                    sink.envelope("ws")
                        .with_ctx(
                            json!({"event": "error", "phase": "connection_thread", "shard": i, "token_ids": toks}),
                        )
                        .with_error("connection thread ended unexpectedly; its tokens move to a new connection"),
                );
            }
        }
        // Removals, grouped per shard.
        let mut removals: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (tok, &i) in owner.iter() {
            if !want.contains(tok) {
                removals.entry(i).or_default().push(tok.clone());
            }
        }
        for (i, mut toks) in removals {
            toks.sort();
            for t in &toks {
                owner.remove(t);
            }
            if let Some(s) = shards[i].as_mut() {
                toks.iter().for_each(|t| {
                    s.tokens.remove(t);
                });
                if s.tokens.is_empty() {
                    let s = shards[i].take().expect("present");
                    let _ = s.tx.send(Cmd::Stop);
                    let _ = s.handle.join();
                } else {
                    let _ = s.tx.send(Cmd::Remove(toks));
                }
            }
        }
        // Additions: fill existing shards, then open new ones.
        let mut adds: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let new: Vec<String> = want.iter().filter(|t| !owner.contains_key(*t)).cloned().collect();
        for tok in new {
            let pending = |i: usize, adds: &BTreeMap<usize, Vec<String>>| adds.get(&i).map_or(0, Vec::len);
            let slot = (0..shards.len())
                .find(|&i| shards[i].as_ref().is_some_and(|s| s.tokens.len() + pending(i, &adds) < cfg.max_per_conn));
            let i = match slot
                .or_else(|| (0..shards.len()).find(|&i| shards[i].is_none() && pending(i, &adds) < cfg.max_per_conn))
            {
                Some(i) => i,
                None => {
                    shards.push(None);
                    shards.len() - 1
                }
            };
            adds.entry(i).or_default().push(tok.clone());
            owner.insert(tok, i);
        }
        for (i, toks) in adds {
            match shards[i].as_mut() {
                Some(s) => {
                    s.tokens.extend(toks.iter().cloned());
                    let _ = s.tx.send(Cmd::Add(toks));
                }
                None => {
                    let (tx, rx) = crossbeam_channel::unbounded();
                    let sh = shared.clone();
                    let init = toks.clone();
                    let handle = std::thread::spawn(move || conn_thread(sh, i as u32, rx, init));
                    shards[i] = Some(Shard { tokens: toks.into_iter().collect(), tx, handle });
                }
            }
        }
        if eof && markets.is_empty() && fixed.is_empty() {
            break;
        }
    }
    for s in shards.into_iter().flatten() {
        let _ = s.tx.send(Cmd::Stop);
        let _ = s.handle.join();
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_frames_and_asset_scan() {
        assert!(!is_data_frame("PONG"));
        assert!(!is_data_frame("NO NEW ASSETS"));
        assert!(is_data_frame("[]"));
        assert!(is_data_frame(r#"{"event_type":"book"}"#));
        let t = r#"[{"asset_id":"11","x":1},{"asset_id" : "22"}, {"price_changes":[{"asset_id":"33"}]}]"#;
        assert_eq!(asset_ids_in(t).collect::<Vec<_>>(), vec!["11", "22", "33"]);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        for n in 1..40 {
            let d = backoff(Duration::from_secs(1), Duration::from_secs(60), n).as_secs_f64();
            let full = 2f64.powi((n as i32 - 1).min(30)).min(60.0);
            assert!(d >= full * 0.5 - 1e-9 && d <= full + 1e-9, "n={n} d={d}");
        }
    }

    #[test]
    fn messages() {
        let t = vec!["1".to_string(), "2".to_string()];
        let v: Value = serde_json::from_str(&subscribe_message(&t)).unwrap();
        assert_eq!(v["type"], "market");
        assert_eq!(v["assets_ids"][1], "2");
        assert_eq!(v["initial_dump"], true);
        assert_eq!(v["custom_feature_enabled"], true);
        let v: Value = serde_json::from_str(&operation_message("unsubscribe", &t)).unwrap();
        assert_eq!(v, json!({"operation": "unsubscribe", "assets_ids": ["1", "2"]}));
        let v: Value = serde_json::from_str(&operation_message("subscribe", &t)).unwrap();
        assert_eq!(v, json!({"operation": "subscribe", "assets_ids": ["1", "2"], "custom_feature_enabled": true}));
    }

    #[test]
    fn subscriptions_are_batched() {
        let t: Vec<String> = (0..250).map(|i| i.to_string()).collect();
        let f = subscribe_frames(&t, 100);
        assert_eq!(f.iter().map(|(ids, _)| ids.len()).collect::<Vec<_>>(), vec![100, 100, 50]);
        let first: Value = serde_json::from_str(&f[0].1).unwrap();
        assert_eq!(first["type"], "market");
        assert_eq!(first["assets_ids"].as_array().unwrap().len(), 100);
        for (ids, msg) in &f[1..] {
            let v: Value = serde_json::from_str(msg).unwrap();
            assert_eq!(v["operation"], "subscribe");
            assert_eq!(v["assets_ids"], json!(ids));
        }
        let all: Vec<String> = f.into_iter().flat_map(|(ids, _)| ids).collect();
        assert_eq!(all, t, "every id once, in order");
        assert!(subscribe_frames(&[], 100).is_empty());
    }

    #[test]
    fn events_are_counted_by_type_unknown_ones_included() {
        let mut c = EventCounts::default();
        c.add_text(r#"[{"event_type":"book","asset_id":"1"}, {"asset_id":"2","event_type":"book"}]"#);
        c.add_text(r#"{"market": "0x1", "price_changes": [{"asset_id": "1"}], "event_type": "price_change"}"#);
        c.add_text(r#"{"event_type":"best_bid_ask"}"#);
        c.add_text(r#"{"event_type":"some_future_event","x":{"event_type":"nested"}}"#);
        c.add_text("[]");
        c.add_text("PONG");
        c.add_text("NO NEW ASSETS");
        c.add_text("{truncated");
        c.add_text(r#"{"no":"type"}"#);
        c.add_text(r#"{"event_type":"../../etc/passwd"}"#);
        c.add_text(r#"{"event_type":7}"#);
        let want: BTreeMap<String, u64> = [
            ("book", 2),
            ("price_change", 1),
            ("best_bid_ask", 1),
            ("some_future_event", 1),
            ("(empty_array)", 1),
            ("(pong)", 1),
            ("(no_new_assets)", 1),
            ("(not_json)", 1),
            ("(no_event_type)", 1),
            ("(bad_name)", 2),
        ]
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect();
        assert_eq!(c.0, want);
        // Bounded: a venue inventing names cannot grow the record without limit.
        let mut c = EventCounts::default();
        for i in 0..200 {
            c.add_text(&format!(r#"{{"event_type":"t{i}"}}"#));
        }
        assert_eq!(c.0.len(), MAX_EVENT_TYPES + 1);
        assert_eq!(c.0["(other)"], 200 - MAX_EVENT_TYPES as u64);
    }
}
