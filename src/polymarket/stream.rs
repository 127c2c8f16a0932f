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
use time::OffsetDateTime;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::envelope::{Body, Envelope, RunInfo, Sequencer};
use crate::feed::Input;
use crate::http::{self, Client, Request};
use crate::polymarket::market::Market;
use crate::{clock, signal, track};

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
    /// A `kind:"ws"` record stamped now, with this context ([`WsCtx`] or [`StatsCtx`]).
    pub fn ws(&self, ctx: &impl Serialize) -> Envelope {
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

/// A message we send on the market channel (facts §6.1). The fields are in alphabetical order, the
/// order the texts recorded in `ctx.message` have always had.
#[derive(Serialize)]
struct ChannelMessage<'a> {
    assets_ids: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    custom_feature_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    initial_dump: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
}

impl ChannelMessage<'_> {
    fn text(&self) -> String {
        serde_json::to_string(self).expect("serializes")
    }
}

/// The subscribe message sent first on every connection (facts §6.1; `initial_dump` so that every
/// asset starts with a book, anchors §3.4).
pub fn subscribe_message(tokens: &[String]) -> String {
    ChannelMessage {
        assets_ids: tokens,
        custom_feature_enabled: Some(true),
        initial_dump: Some(true),
        operation: None,
        kind: Some("market"),
    }
    .text()
}

/// A subscription change on an open connection (dynamic subscribe/unsubscribe, shipped by the venue
/// about 2025-12: nevuamarkets/poly-websockets#20). A subscribe names `custom_feature_enabled` again:
/// the venue applies the flag a subscribe carries to the live connection ("re-naming any active asset
/// toggles the flag in place", venue_changes_2026 §3 A9), so one without it might turn the custom
/// events off.
pub fn operation_message(op: &str, tokens: &[String]) -> String {
    let custom_feature_enabled = (op == "subscribe").then_some(true);
    ChannelMessage { assets_ids: tokens, custom_feature_enabled, initial_dump: None, operation: Some(op), kind: None }
        .text()
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
    /// Always [`WsEvent::Stats`].
    pub event: WsEvent,
    pub conn_id: u64,
    pub shard: u32,
    /// Seconds covered by this record.
    pub interval_s: f64,
    /// Frames received (every opcode), and their payload bytes.
    pub frames: u64,
    pub bytes: u64,
    pub ws_event_types: EventCounts,
}

/// `ctx.event` of a `kind:"ws"` line: a frame, a connection event or a connection's stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WsEvent {
    /// A frame as received (the body).
    #[default]
    Frame,
    Open,
    Subscribe,
    Unsubscribe,
    Close,
    Error,
    Watchdog,
    ReconnectWait,
    AssetSilence,
    /// [`StatsCtx`].
    Stats,
}

/// `ctx.phase` of an `error` (or network `close`) line: what was being done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WsPhase {
    Connect,
    Subscribe,
    Unsubscribe,
    Ping,
    Read,
    /// The controller found a connection thread ended (its tokens move to a new connection).
    ConnectionThread,
}

/// `ctx.by` of a `close` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedBy {
    Client,
    Server,
    Network,
}

/// The `ctx` of pm-stream's `kind:"ws"` lines except `stats` ([`StatsCtx`]): the event and the
/// fields of that event (docs/DATA_CONTRACT.md, "websocket lines"); absent fields are omitted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsCtx {
    pub event: WsEvent,
    /// Every line but the controller's `error`: the connection (a reconnect is a new id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_id: Option<u64>,
    /// Connection events: the shard (token group) the connection serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    /// `frame`: the 0-based frame counter of the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_no: Option<u64>,
    /// `frame`: only for non-text frames (`binary`, `ping`, `pong`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opcode: Option<String>,
    /// `open`, connect `error`, `reconnect_wait`: connection attempts since the last one that
    /// delivered data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// `open`: the handshake's HTTP status and the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `subscribe`/`unsubscribe`: the ids of the frame; `asset_silence`: the silent ones; the
    /// controller's `error`: the ids of the connection that ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<String>>,
    /// `subscribe`/`unsubscribe`: the exact text sent, its batch (0-based) of `batches`, and
    /// `initial` on the frames that open a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batches: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<bool>,
    /// `error` and network `close`: what was being done, and the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<WsPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `close`: who closed, the server's close code, and frames received on the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<ClosedBy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<u64>,
    /// `close`: the close reason; `watchdog`: `inbound_silence`, `silence` or `max_conn_age`;
    /// `reconnect_wait`: why the connection ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `watchdog`: seconds without a frame (silences) or the connection's age, and the limit;
    /// `asset_silence`: the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_s: Option<f64>,
    /// `reconnect_wait`: the event that ended the connection (`close`, `error`, `watchdog`,
    /// `connect_failed`) and the seconds waited before the next attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_s: Option<f64>,
}

impl WsCtx {
    /// An event with no other field set.
    pub fn new(event: WsEvent) -> WsCtx {
        WsCtx { event, ..WsCtx::default() }
    }
}

/// `ctx.reason` of a REST `/books` snapshot taken by pm-stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotReason {
    /// After every (re)connect, for every token of the connection.
    WsResync,
    /// For tokens added to an open connection.
    WsSubscribe,
    /// For assets silent for `--asset-silence`.
    AssetSilence,
}

/// The caller's part of the `ctx` of pm-stream's http lines (the `/books` snapshots); the client
/// adds its retry fields ([`crate::http::HttpCtx`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotCtx {
    pub reason: SnapshotReason,
    pub conn_id: u64,
    pub token_ids: Vec<String>,
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
    /// every HTTP attempt becomes a normal http envelope with a [`SnapshotCtx`].
    fn snapshot(self: &Arc<Self>, conn_id: u64, reason: SnapshotReason, tokens: Vec<String>) {
        let (Some(client), Some(base)) = (self.client.clone(), self.cfg.clob_url.clone()) else { return };
        if tokens.is_empty() {
            return;
        }
        let me = self.clone();
        std::thread::spawn(move || {
            for chunk in tokens.chunks(500) {
                let req = Request::post_books(format!("{base}/books"), chunk);
                let ctx = SnapshotCtx { reason, conn_id, token_ids: chunk.to_vec() };
                let mut dummy = Sequencer::new((*me.sink.run).clone());
                let _ = client.execute(&req, None, |a| {
                    let env = a.envelope(&mut dummy, &req, Some(&ctx));
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

impl Cmd {
    /// Applies an add or remove to `tokens`; true for [`Cmd::Stop`].
    fn apply(self, tokens: &mut BTreeSet<String>) -> bool {
        match self {
            Cmd::Add(t) => tokens.extend(t),
            Cmd::Remove(t) => t.iter().for_each(|x| {
                tokens.remove(x);
            }),
            Cmd::Stop => return true,
        }
        false
    }

    /// Waits up to `timeout` for one command and applies it; true when told to stop (or the
    /// controller is gone).
    fn follow(rx: &Receiver<Cmd>, timeout: Duration, tokens: &mut BTreeSet<String>) -> bool {
        match rx.recv_timeout(timeout) {
            Ok(cmd) => cmd.apply(tokens),
            Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => false,
        }
    }
}

/// Seconds rounded to the millisecond, as the ws records carry durations.
fn secs_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// One shard: connects, reads, reconnects forever until told to stop.
fn conn_thread(shared: Arc<Shared>, shard: u32, rx: Receiver<Cmd>, initial: Vec<String>) {
    let cfg = &shared.cfg;
    let sink = &shared.sink;
    let mut tokens: BTreeSet<String> = initial.into_iter().collect();
    let mut attempt: u32 = 0;
    while !signal::stop_requested() {
        if tokens.is_empty() {
            if Cmd::follow(&rx, Duration::from_millis(200), &mut tokens) {
                break;
            }
            continue;
        }
        let conn_id = shared.next_conn_id.fetch_add(1, Ordering::SeqCst);
        attempt += 1;
        let ctx = move |event| WsCtx {
            conn_id: Some(conn_id),
            shard: Some(shard),
            attempt: Some(attempt),
            ..WsCtx::new(event)
        };
        let end = match connect(cfg) {
            Err(e) => {
                shared.counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                sink.send(sink.ws(&WsCtx { phase: Some(WsPhase::Connect), ..ctx(WsEvent::Error) }).with_error(e));
                End::Reconnect { event: "connect_failed", reason: "connect failed".into(), immediate: false }
            }
            Ok((ws, status)) => {
                shared.counters.connects.fetch_add(1, Ordering::Relaxed);
                let open = WsCtx { http_status: Some(status), url: Some(cfg.ws_url.clone()), ..ctx(WsEvent::Open) };
                sink.send(sink.ws(&open));
                let mut c = Conn::new(&shared, shard, conn_id, ws);
                let end = c.serve(&rx, &mut tokens);
                if c.got_data {
                    attempt = 0; // a connection that delivered data resets the back-off
                }
                end
            }
        };
        let End::Reconnect { event, reason, immediate } = end else { break };
        if signal::stop_requested() {
            break;
        }
        let wait = if immediate && attempt <= 1 {
            Duration::from_millis(10)
        } else {
            http::backoff(cfg.backoff_base, cfg.backoff_max, attempt.max(1)).max(Duration::from_millis(1))
        };
        let waiting = WsCtx {
            after: Some(event.into()),
            reason: Some(reason),
            wait_s: Some(secs_ms(wait)),
            attempt: Some(attempt),
            ..ctx(WsEvent::ReconnectWait)
        };
        sink.send(sink.ws(&waiting));
        // Wait, still following subscription changes.
        let until = Instant::now() + wait;
        while Instant::now() < until && !signal::stop_requested() {
            if Cmd::follow(&rx, (until - Instant::now()).min(Duration::from_millis(50)), &mut tokens) {
                return;
            }
        }
    }
}

/// A subscription change sent on an open connection.
#[derive(Clone, Copy)]
enum Op {
    Subscribe,
    Unsubscribe,
}

impl Op {
    fn word(self) -> &'static str {
        match self {
            Op::Subscribe => "subscribe",
            Op::Unsubscribe => "unsubscribe",
        }
    }
}

/// The connection's watchdogs (see [`Config`]): what fired, since when, against which limit.
struct Watchdog {
    reason: &'static str,
    close_reason: &'static str,
    since: Instant,
    limit: Duration,
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
    opened: Instant,
    last_data: Instant,
    /// Any inbound frame, PONG included.
    last_inbound: Instant,
    next_ping: Instant,
    /// Per subscribed asset: when it last appeared in a data frame (`--asset-silence`).
    last_seen: HashMap<String, Instant>,
    silent_reported: BTreeSet<String>,
    next_asset_check: Instant,
}

impl Conn<'_> {
    fn new(shared: &Arc<Shared>, shard: u32, conn_id: u64, ws: Ws) -> Conn<'_> {
        let now = Instant::now();
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
            stats_since: now,
            opened: now,
            last_data: now,
            last_inbound: now,
            next_ping: now + shared.cfg.ping_every,
            last_seen: HashMap::new(),
            silent_reported: BTreeSet::new(),
            next_asset_check: now + Duration::from_secs(1),
        }
    }

    /// A connection event's ctx: the event, this connection and its shard.
    fn ctx(&self, event: WsEvent) -> WsCtx {
        WsCtx { conn_id: Some(self.conn_id), shard: Some(self.shard), ..WsCtx::new(event) }
    }

    fn record(&self, ctx: &WsCtx) {
        self.shared.sink.send(self.shared.sink.ws(ctx));
    }

    /// Writes the `stats` record for what arrived since the last one (if anything did).
    fn flush_stats(&mut self) {
        if self.stats_frames == 0 && self.counts.is_empty() {
            self.stats_since = Instant::now();
            return;
        }
        let ctx = StatsCtx {
            event: WsEvent::Stats,
            conn_id: self.conn_id,
            shard: self.shard,
            interval_s: secs_ms(self.stats_since.elapsed()),
            frames: self.stats_frames,
            bytes: self.stats_bytes,
            ws_event_types: std::mem::take(&mut self.counts),
        };
        self.stats_frames = 0;
        self.stats_bytes = 0;
        self.stats_since = Instant::now();
        self.shared.sink.send(self.shared.sink.ws(&ctx));
    }

    fn send_text(&mut self, text: String) -> Result<(), tungstenite::Error> {
        self.ws.send(Message::text(text))
    }

    /// Records a failed send (`phase`) and ends the connection.
    fn send_failed(&mut self, phase: WsPhase, what: &str, e: tungstenite::Error) -> End {
        self.shared.counters.disconnects.fetch_add(1, Ordering::Relaxed);
        self.record(&WsCtx { phase: Some(phase), error: Some(e.to_string()), ..self.ctx(WsEvent::Error) });
        End::Reconnect { event: "error", reason: format!("{what} failed: {e}"), immediate: true }
    }

    /// Closes politely (best effort) and records the close.
    fn close(&mut self, reason: &str) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
        self.shared.counters.disconnects.fetch_add(1, Ordering::Relaxed);
        self.record(&WsCtx {
            by: Some(ClosedBy::Client),
            reason: Some(reason.into()),
            frames: Some(self.frame_no),
            ..self.ctx(WsEvent::Close)
        });
    }

    /// Sends `op` for `tokens` in frames of at most `max_ids_per_frame` ids, each recorded with its
    /// exact text; `initial` uses [`subscribe_frames`].
    fn send_batched(&mut self, op: Op, tokens: Vec<String>, initial: bool) -> Result<(), End> {
        let max = self.shared.cfg.max_ids_per_frame;
        let frames = if initial {
            subscribe_frames(&tokens, max)
        } else {
            tokens.chunks(max.max(1)).map(|c| (c.to_vec(), operation_message(op.word(), c))).collect()
        };
        let n = frames.len();
        let (event, phase) = match op {
            Op::Subscribe => (WsEvent::Subscribe, WsPhase::Subscribe),
            Op::Unsubscribe => (WsEvent::Unsubscribe, WsPhase::Unsubscribe),
        };
        for (i, (ids, msg)) in frames.into_iter().enumerate() {
            if let Err(e) = self.send_text(msg.clone()) {
                return Err(self.send_failed(phase, op.word(), e));
            }
            for t in &ids {
                match op {
                    Op::Subscribe => self.subscribed.insert(t.clone()),
                    Op::Unsubscribe => self.subscribed.remove(t),
                };
            }
            self.record(&WsCtx {
                token_ids: Some(ids),
                message: Some(msg),
                batch: Some(i),
                batches: Some(n),
                initial: initial.then_some(true),
                ..self.ctx(event)
            });
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
        let list: Vec<String> = wanted.iter().cloned().collect();
        if let Err(end) = self.send_batched(Op::Subscribe, list.clone(), true) {
            return end;
        }
        self.shared.snapshot(self.conn_id, SnapshotReason::WsResync, list);
        loop {
            if signal::stop_requested() {
                self.close("shutdown");
                return End::Stop;
            }
            if let Err(end) = self.step(rx, wanted) {
                return end;
            }
        }
    }

    /// One turn of the connection's loop: subscription changes, timers, one read.
    fn step(&mut self, rx: &Receiver<Cmd>, wanted: &mut BTreeSet<String>) -> Result<(), End> {
        self.follow_changes(rx, wanted)?;
        if signal::stop_requested() {
            return Ok(());
        }
        let now = Instant::now();
        self.ping(now)?;
        if now.duration_since(self.stats_since) >= self.shared.cfg.stats_every {
            self.flush_stats();
        }
        self.watchdogs(now)?;
        self.check_asset_silence(now);
        self.read_one()
    }

    /// Subscription changes on the open connection: the wanted set changes, then what this
    /// connection has subscribed is brought to it.
    fn follow_changes(&mut self, rx: &Receiver<Cmd>, wanted: &mut BTreeSet<String>) -> Result<(), End> {
        let mut changed = false;
        while let Ok(cmd) = rx.try_recv() {
            changed = true;
            if cmd.apply(wanted) {
                self.close("no_tokens");
                return Err(End::Stop);
            }
        }
        if !changed {
            return Ok(());
        }
        let add: Vec<String> = wanted.difference(&self.subscribed).cloned().collect();
        let remove: Vec<String> = self.subscribed.difference(wanted).cloned().collect();
        if !remove.is_empty() {
            self.send_batched(Op::Unsubscribe, remove.clone(), false)?;
            remove.iter().for_each(|x| {
                self.last_seen.remove(x);
                self.silent_reported.remove(x);
            });
        }
        if !add.is_empty() {
            self.send_batched(Op::Subscribe, add.clone(), false)?;
            self.shared.snapshot(self.conn_id, SnapshotReason::WsSubscribe, add);
        }
        Ok(())
    }

    fn ping(&mut self, now: Instant) -> Result<(), End> {
        if now >= self.next_ping {
            if let Err(e) = self.send_text("PING".into()) {
                return Err(self.send_failed(WsPhase::Ping, "ping", e));
            }
            self.next_ping = now + self.shared.cfg.ping_every;
        }
        Ok(())
    }

    /// The first watchdog that fires ends the connection: no inbound frame at all for `idle` (half
    /// open: not even a PONG came back; the close frame is best effort, the socket is dropped right
    /// after), no data frame for `silence`, or the connection is `max_conn_age` old.
    fn watchdogs(&mut self, now: Instant) -> Result<(), End> {
        let cfg = &self.shared.cfg;
        let dogs = [
            Watchdog {
                reason: "inbound_silence",
                close_reason: "watchdog_inbound_silence",
                since: self.last_inbound,
                limit: cfg.idle,
            },
            Watchdog { reason: "silence", close_reason: "watchdog_silence", since: self.last_data, limit: cfg.silence },
            Watchdog {
                reason: "max_conn_age",
                close_reason: "max_conn_age",
                since: self.opened,
                limit: cfg.max_conn_age,
            },
        ];
        let Some(dog) = dogs.into_iter().find(|d| now.duration_since(d.since) >= d.limit) else { return Ok(()) };
        self.shared.counters.watchdogs.fetch_add(1, Ordering::Relaxed);
        let elapsed = now.duration_since(dog.since);
        let mut ctx = WsCtx {
            reason: Some(dog.reason.into()),
            limit_s: Some(dog.limit.as_secs_f64()),
            ..self.ctx(WsEvent::Watchdog)
        };
        if dog.reason == "max_conn_age" {
            ctx.age_s = Some(elapsed.as_secs());
        } else {
            ctx.silent_s = Some(secs_ms(elapsed));
        }
        self.record(&ctx);
        self.close(dog.close_reason);
        Err(End::Reconnect { event: "watchdog", reason: dog.reason.into(), immediate: true })
    }

    /// Subscribed assets without an event for `--asset-silence`: one record and a REST snapshot
    /// (checked once a second; each silence is reported once, until the asset speaks again).
    fn check_asset_silence(&mut self, now: Instant) {
        let Some(limit) = self.shared.cfg.asset_silence else { return };
        if now < self.next_asset_check {
            return;
        }
        self.next_asset_check = now + Duration::from_secs(1);
        let silent: Vec<String> = self
            .subscribed
            .iter()
            .filter(|t| !self.silent_reported.contains(*t))
            .filter(|t| now.duration_since(*self.last_seen.get(*t).unwrap_or(&self.opened)) >= limit)
            .cloned()
            .collect();
        if !silent.is_empty() {
            self.record(&WsCtx {
                token_ids: Some(silent.clone()),
                limit_s: Some(limit.as_secs_f64()),
                ..self.ctx(WsEvent::AssetSilence)
            });
            self.silent_reported.extend(silent.iter().cloned());
            self.shared.snapshot(self.conn_id, SnapshotReason::AssetSilence, silent);
        }
    }

    /// Reads one frame (or times out after the socket's read timeout) and records it.
    fn read_one(&mut self) -> Result<(), End> {
        match self.ws.read() {
            Ok(msg) => self.on_message(clock::now(), msg),
            Err(e) if is_timeout(&e) => Ok(()),
            Err(e) => {
                self.shared.counters.disconnects.fetch_add(1, Ordering::Relaxed);
                let closed = matches!(e, tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed);
                self.record(&WsCtx {
                    phase: Some(WsPhase::Read),
                    error: Some(e.to_string()),
                    frames: Some(self.frame_no),
                    by: Some(ClosedBy::Network),
                    ..self.ctx(if closed { WsEvent::Close } else { WsEvent::Error })
                });
                Err(End::Reconnect { event: "error", reason: e.to_string(), immediate: true })
            }
        }
    }

    /// Counts and records one frame received at `at`; a close frame ends the connection.
    fn on_message(&mut self, at: OffsetDateTime, msg: Message) -> Result<(), End> {
        self.last_inbound = Instant::now();
        let (opcode, bytes, data) = match msg {
            Message::Text(t) => {
                let data = self.on_text(t.as_str());
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
                self.record(&WsCtx {
                    by: Some(ClosedBy::Server),
                    code: Some(code),
                    reason: Some(reason),
                    frames: Some(self.frame_no),
                    ..self.ctx(WsEvent::Close)
                });
                let _ = self.ws.flush();
                return Err(End::Reconnect { event: "close", reason: format!("server close {code}"), immediate: true });
            }
            Message::Frame(_) => return Ok(()),
        };
        self.stats_frames += 1;
        self.stats_bytes += bytes.len() as u64;
        self.write_frame(at, opcode, bytes);
        if data {
            self.last_data = Instant::now();
            self.got_data = true;
            let n = self.shared.counters.data_frames.fetch_add(1, Ordering::Relaxed) + 1;
            if self.shared.cfg.max_frames.is_some_and(|m| n >= m) {
                signal::request_stop();
            }
        }
        Ok(())
    }

    /// Counts a text frame's events and notes the assets it names; true when it carries data.
    fn on_text(&mut self, s: &str) -> bool {
        let data = is_data_frame(s);
        if data && self.shared.cfg.asset_silence.is_some() {
            for a in asset_ids_in(s) {
                if let Some(v) = self.last_seen.get_mut(a) {
                    *v = Instant::now();
                } else if self.subscribed.contains(a) {
                    self.last_seen.insert(a.to_string(), Instant::now());
                }
                self.silent_reported.remove(a);
            }
        }
        self.counts.add_text(s);
        data
    }

    fn write_frame(&mut self, at: OffsetDateTime, opcode: &'static str, bytes: Vec<u8>) {
        let ctx = WsCtx {
            conn_id: Some(self.conn_id),
            frame_no: Some(self.frame_no),
            opcode: (opcode != "text").then(|| opcode.to_string()),
            ..WsCtx::new(WsEvent::Frame)
        };
        self.frame_no += 1;
        self.shared.counters.frames.fetch_add(1, Ordering::Relaxed);
        let mut env = self.shared.sink.ws(&ctx).with_body(Body::from_bytes(bytes));
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

/// The controller's state: the markets followed, the shards and which shard owns which token.
struct Controller {
    shared: Arc<Shared>,
    markets: BTreeMap<String, Tracked>,
    shards: Vec<Option<Shard>>,
    owner: HashMap<String, usize>,
    /// `--token`s, tracked for the whole run.
    fixed: BTreeSet<String>,
    /// Bad stdin lines.
    bad: u64,
}

/// The controller: runs until stdin ended and nothing is left to track, a signal, `max_frames`, or a
/// closed output. Returns the number of bad input lines.
pub fn run(
    cfg: Config,
    inputs: Receiver<Input<Market>>,
    sink: Sink,
    client: Option<Client>,
    counters: Arc<Counters>,
) -> u64 {
    let mut c = Controller {
        fixed: cfg.fixed_tokens.iter().cloned().collect(),
        shared: Arc::new(Shared {
            cfg: cfg.clone(),
            sink,
            client: client.map(Arc::new),
            counters,
            next_conn_id: AtomicU64::new(0),
        }),
        markets: BTreeMap::new(),
        shards: Vec::new(),
        owner: HashMap::new(),
        bad: 0,
    };
    let mut eof = false;
    while !signal::stop_requested() {
        // After the end of input the channel answers at once: wait one tick instead of spinning.
        let next = if eof {
            std::thread::sleep(cfg.tick);
            Err(RecvTimeoutError::Timeout)
        } else {
            inputs.recv_timeout(cfg.tick)
        };
        match next {
            Ok(input) => {
                if !c.on_input(input) {
                    continue;
                }
            }
            Err(RecvTimeoutError::Disconnected) => eof = true,
            Err(RecvTimeoutError::Timeout) => {}
        }
        // Drain whatever else is queued before re-evaluating.
        if !inputs.is_empty() && !eof {
            continue;
        }
        let want = c.track(&track::Now::read());
        c.reap_dead_shards();
        c.remove_unwanted(&want);
        c.add_wanted(&want);
        if eof && c.markets.is_empty() && c.fixed.is_empty() {
            break;
        }
    }
    for s in c.shards.into_iter().flatten() {
        let _ = s.tx.send(Cmd::Stop);
        let _ = s.handle.join();
    }
    c.bad
}

impl Controller {
    /// Takes one stdin message: a market (its latest record wins) or a bad line (a gap record).
    /// False for a market whose window does not parse (nothing to re-evaluate).
    fn on_input(&mut self, input: Input<Market>) -> bool {
        let cfg = &self.shared.cfg;
        match input {
            Input::Market { market: m, .. } => {
                let Some(window) = track::Window::of(&m, cfg.lead, cfg.grace) else { return false };
                let key = m.condition_id.clone();
                let active = self.markets.get(&key).map(|t| t.active).unwrap_or(false);
                self.markets.insert(key, Tracked { market: *m, window, active });
            }
            Input::Bad { line: n, reason: why } => {
                self.bad += 1;
                let ctx = crate::feed::bad_line(TOOL, n, &why);
                let sink = &self.shared.sink;
                sink.send(sink.envelope("gap").with_ctx(&ctx).with_error(why));
            }
        }
        true
    }

    /// Starts and stops markets by their tracking windows on both clock readings (src/track.rs: a
    /// wall-clock step neither starts late nor stops early), writing a `track` line for each change,
    /// and forgets markets whose tracking is over. Returns the tokens wanted now.
    fn track(&mut self, now: &track::Now) -> BTreeSet<String> {
        let sink = &self.shared.sink;
        for t in self.markets.values_mut() {
            let phase = t.window.phase(now);
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
                sink.send(sink.envelope("track").with_ctx(&ctx));
            }
        }
        self.markets.retain(|_, t| t.active || t.window.phase(now) != track::Phase::Over);
        let mut want: BTreeSet<String> = self.fixed.clone();
        for t in self.markets.values().filter(|t| t.active) {
            want.extend(t.market.tokens.iter().map(|x| x.token_id.clone()));
        }
        want
    }

    /// A connection thread that ended on its own (it only ends on Stop, so this is a panic or a
    /// bug) must not orphan its tokens: record it and hand its tokens to a new connection.
    fn reap_dead_shards(&mut self) {
        let sink = &self.shared.sink;
        for (i, slot) in self.shards.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|s| s.handle.is_finished()) {
                let dead = slot.take().expect("present");
                let toks: Vec<String> = dead.tokens.iter().cloned().collect();
                let _ = dead.handle.join();
                self.owner.retain(|_, &mut j| j != i);
                let ctx = WsCtx {
                    phase: Some(WsPhase::ConnectionThread),
                    shard: Some(i as u32),
                    token_ids: Some(toks),
                    ..WsCtx::new(WsEvent::Error)
                };
                let why = "connection thread ended unexpectedly; its tokens move to a new connection";
                sink.send(sink.ws(&ctx).with_error(why));
            }
        }
    }

    /// Removals, grouped per shard; a shard left without tokens is stopped.
    fn remove_unwanted(&mut self, want: &BTreeSet<String>) {
        let mut removals: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (tok, &i) in self.owner.iter() {
            if !want.contains(tok) {
                removals.entry(i).or_default().push(tok.clone());
            }
        }
        for (i, mut toks) in removals {
            toks.sort();
            for t in &toks {
                self.owner.remove(t);
            }
            let Some(s) = self.shards[i].as_mut() else { continue };
            toks.iter().for_each(|t| {
                s.tokens.remove(t);
            });
            if s.tokens.is_empty() {
                let s = self.shards[i].take().expect("present");
                let _ = s.tx.send(Cmd::Stop);
                let _ = s.handle.join();
            } else {
                let _ = s.tx.send(Cmd::Remove(toks));
            }
        }
    }

    /// Additions: fill existing shards (at most `max_per_conn` tokens each), then open new ones.
    fn add_wanted(&mut self, want: &BTreeSet<String>) {
        let max = self.shared.cfg.max_per_conn;
        let mut adds: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let new: Vec<String> = want.iter().filter(|t| !self.owner.contains_key(*t)).cloned().collect();
        for tok in new {
            let shards = &mut self.shards;
            let pending = |i: usize, adds: &BTreeMap<usize, Vec<String>>| adds.get(&i).map_or(0, Vec::len);
            let slot = (0..shards.len())
                .find(|&i| shards[i].as_ref().is_some_and(|s| s.tokens.len() + pending(i, &adds) < max))
                .or_else(|| (0..shards.len()).find(|&i| shards[i].is_none() && pending(i, &adds) < max));
            let i = slot.unwrap_or_else(|| {
                shards.push(None);
                shards.len() - 1
            });
            adds.entry(i).or_default().push(tok.clone());
            self.owner.insert(tok, i);
        }
        for (i, toks) in adds {
            match self.shards[i].as_mut() {
                Some(s) => {
                    s.tokens.extend(toks.iter().cloned());
                    let _ = s.tx.send(Cmd::Add(toks));
                }
                None => {
                    let (tx, rx) = crossbeam_channel::unbounded();
                    let sh = self.shared.clone();
                    let init = toks.clone();
                    let handle = std::thread::spawn(move || conn_thread(sh, i as u32, rx, init));
                    self.shards[i] = Some(Shard { tokens: toks.into_iter().collect(), tx, handle });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn data_frames_and_asset_scan() {
        assert!(!is_data_frame("PONG"));
        assert!(!is_data_frame("NO NEW ASSETS"));
        assert!(is_data_frame("[]"));
        assert!(is_data_frame(r#"{"event_type":"book"}"#));
        let t = r#"[{"asset_id":"11","x":1},{"asset_id" : "22"}, {"price_changes":[{"asset_id":"33"}]}]"#;
        assert_eq!(asset_ids_in(t).collect::<Vec<_>>(), vec!["11", "22", "33"]);
    }

    /// The typed ctx writes what the `json!` objects before it wrote: same keys, same JSON types.
    #[test]
    fn ws_ctx_keeps_keys_and_types() {
        let frame = WsCtx { conn_id: Some(0), frame_no: Some(3), ..WsCtx::new(WsEvent::Frame) };
        assert_eq!(serde_json::to_value(&frame).unwrap(), json!({"event": "frame", "conn_id": 0, "frame_no": 3}));
        let dog = WsCtx {
            conn_id: Some(1),
            shard: Some(0),
            reason: Some("silence".into()),
            silent_s: Some(1.5),
            limit_s: Some(1.0),
            ..WsCtx::new(WsEvent::Watchdog)
        };
        let v = serde_json::to_value(&dog).unwrap();
        assert_eq!(
            v.to_string(),
            r#"{"conn_id":1,"event":"watchdog","limit_s":1.0,"reason":"silence","shard":0,"silent_s":1.5}"#
        );
        assert_eq!(serde_json::from_value::<WsCtx>(v).unwrap(), dog);
        let err =
            WsCtx { phase: Some(WsPhase::ConnectionThread), by: Some(ClosedBy::Network), ..WsCtx::new(WsEvent::Error) };
        let v = serde_json::to_value(&err).unwrap();
        assert_eq!(v, json!({"event": "error", "phase": "connection_thread", "by": "network"}));
        assert!(
            serde_json::from_value::<WsCtx>(json!({"event": "frame", "typo": 1})).is_err(),
            "unknown keys are refused"
        );
        let snap = SnapshotCtx { reason: SnapshotReason::WsResync, conn_id: 2, token_ids: vec!["1".into()] };
        assert_eq!(
            serde_json::to_value(&snap).unwrap(),
            json!({"reason": "ws_resync", "conn_id": 2, "token_ids": ["1"]})
        );
    }

    /// The JSON type of every `WsCtx` key, as written before the type existed (docs/DATA_CONTRACT.md;
    /// tests/readers.rs wants one type per key): a field whose Rust type changes fails here.
    #[test]
    fn ws_ctx_json_types_are_pinned() {
        let all = WsCtx {
            event: WsEvent::Watchdog,
            conn_id: Some(1),
            shard: Some(2),
            frame_no: Some(3),
            opcode: Some("ping".into()),
            attempt: Some(4),
            http_status: Some(101),
            url: Some("ws://127.0.0.1:1/ws/market".into()),
            token_ids: Some(vec!["7".into()]),
            message: Some("{}".into()),
            batch: Some(0),
            batches: Some(1),
            initial: Some(true),
            phase: Some(WsPhase::Read),
            error: Some("e".into()),
            by: Some(ClosedBy::Server),
            code: Some(1000),
            frames: Some(5),
            reason: Some("silence".into()),
            silent_s: Some(1.5),
            age_s: Some(3600),
            limit_s: Some(60.0),
            after: Some("watchdog".into()),
            wait_s: Some(0.25),
        };
        let v = serde_json::to_value(&all).unwrap();
        let jtype = |v: &Value| match v {
            Value::Number(n) if n.is_f64() => "float",
            Value::Number(_) => "integer",
            Value::String(_) => "string",
            Value::Bool(_) => "boolean",
            Value::Array(a) if a.iter().all(Value::is_string) => "array<string>",
            _ => "other",
        };
        let got: BTreeMap<&str, &str> = v.as_object().unwrap().iter().map(|(k, x)| (k.as_str(), jtype(x))).collect();
        let want: BTreeMap<&str, &str> = [
            ("event", "string"),
            ("conn_id", "integer"),
            ("shard", "integer"),
            ("frame_no", "integer"),
            ("opcode", "string"),
            ("attempt", "integer"),
            ("http_status", "integer"),
            ("url", "string"),
            ("token_ids", "array<string>"),
            ("message", "string"),
            ("batch", "integer"),
            ("batches", "integer"),
            ("initial", "boolean"),
            ("phase", "string"),
            ("error", "string"),
            ("by", "string"),
            ("code", "integer"),
            ("frames", "integer"),
            ("reason", "string"),
            ("silent_s", "float"),
            ("age_s", "integer"),
            ("limit_s", "float"),
            ("after", "string"),
            ("wait_s", "float"),
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn messages() {
        let t = vec!["1".to_string(), "2".to_string()];
        // The exact texts (recorded in ctx.message), as before they had a type.
        assert_eq!(
            subscribe_message(&t),
            r#"{"assets_ids":["1","2"],"custom_feature_enabled":true,"initial_dump":true,"type":"market"}"#
        );
        assert_eq!(operation_message("unsubscribe", &t), r#"{"assets_ids":["1","2"],"operation":"unsubscribe"}"#);
        assert_eq!(
            operation_message("subscribe", &t),
            r#"{"assets_ids":["1","2"],"custom_feature_enabled":true,"operation":"subscribe"}"#
        );
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
