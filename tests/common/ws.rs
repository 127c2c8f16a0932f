//! The loopback websocket venue (127.0.0.1 only, a thread per connection): the one implementation
//! used by tests/stream.rs and examples/ws_replay_server.rs (which includes this file by path).
//!
//! Three behaviours:
//! - [`Behaviour::Scripts`]: connection k replays `scripts[k]` (recorded frames, verbatim), then does
//!   what [`After`] says (hold, close, drop, freeze, …);
//! - [`Behaviour::Model`] / [`Behaviour::Books`]: a modelled venue with **one book per asset** for
//!   all its connections ([`Books`] over one [`Model`]; `Books` also shared with the REST venue by
//!   pm-venue and tests/venue_model.rs): it follows the subscription of each connection (first
//!   message, then `{"operation":"subscribe"|"unsubscribe"}`) and streams the dumps and changes of
//!   the subscribed assets as the real captures show them (see [`Model`]);
//! - [`Behaviour::Blast`]: the recorded frames cycled N times as fast as possible (throughput).
//!
//! In every behaviour the server waits for the subscribe message first (as the venue does), answers
//! the text `PING` with `PONG`, logs every text message it received ([`Got`]), and — when
//! `max_ids_per_frame` of [`WsServer::start_with`] is set — closes the connection right after a subscribe frame that
//! names more asset ids than that (the venue does so for "a few thousand" ids:
//! Polymarket/rs-clob-client-v2#116; the real limit is not published, the test picks one).
//!
//! [`WsServer::inject`] applies a [`WsFault`] to every open modelled connection at once (the soak
//! venue, `pm-venue`, schedules them): a freeze (no frame, no `PONG`, no close) or a server close.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// What the server does after sending a connection's scripted frames.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum After {
    /// Stay open; answer `PING` with `PONG`; send nothing else (a "silent freeze" with a live link).
    Hold,
    /// Send a close frame.
    Close,
    /// Drop the TCP connection without a close frame.
    Drop,
    /// Stay open, answer `PING`, and send the script's first frame again every this many ms
    /// (a connection that never goes silent).
    Repeat(u64),
    /// Half-open: keep the socket but never read, write or answer `PING` again (no close, no FIN).
    Freeze,
    /// As `Hold`, then a close frame after this many ms.
    CloseAfterMs(u64),
}

#[derive(Clone, Debug)]
pub struct Script {
    pub frames: Vec<String>,
    pub after: After,
}

#[derive(Clone, Debug)]
pub enum Behaviour {
    Scripts(Vec<Script>),
    /// The modelled venue on the wall clock: one [`Books`] of its own, `events_per_sec` events per
    /// second over the assets any connection subscribed to (a trade is one event of two frames, a
    /// burst one of three), seeded.
    Model {
        events_per_sec: f64,
        seed: u64,
    },
    /// The modelled venue reading these [`Books`] (shared with the REST venue: `pm-venue`).
    Books(Books),
    /// `frames` cycled until `n` were sent, written in batches of 64; then as `Hold`.
    Blast {
        frames: Vec<String>,
        n: u64,
    },
}

/// A text message the server received, with the index of its connection.
#[derive(Clone, Debug)]
pub struct Got {
    pub conn: usize,
    pub text: String,
}

pub struct WsServer {
    pub port: u16,
    pub got: Arc<Mutex<Vec<Got>>>,
    /// Connections accepted, and connections whose thread has ended.
    pub conns: Arc<AtomicUsize>,
    pub finished: Arc<AtomicUsize>,
    /// Connections the server closed because a subscribe frame named too many ids.
    pub closed_too_big: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    fault: Arc<Mutex<(usize, Option<WsFault>)>>,
}

struct Shared {
    behaviour: Behaviour,
    /// The book model every `Model`/`Books` connection reads (one per server).
    books: Option<Books>,
    max_ids_per_frame: Option<usize>,
    got: Arc<Mutex<Vec<Got>>>,
    stop: Arc<AtomicBool>,
    closed_too_big: Arc<AtomicUsize>,
    /// (generation, fault): a connection applies each new generation once.
    fault: Arc<Mutex<(usize, Option<WsFault>)>>,
}

/// A fault applied to every open `Model` connection ([`WsServer::inject`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WsFault {
    /// Silent for this long: nothing sent, nothing read (no `PONG`), no close; then the TCP
    /// connection is dropped.
    Freeze(Duration),
    /// A close frame from the server.
    Close,
}

impl WsServer {
    /// Applies `f` to every `Model` connection open now (see [`WsFault`]).
    pub fn inject(&self, f: WsFault) {
        let mut g = self.fault.lock().unwrap();
        *g = (g.0 + 1, Some(f));
    }

    /// Connection k follows `scripts[k]` (the last script for any later connection).
    pub fn start(scripts: Vec<Script>) -> WsServer {
        WsServer::start_with(Behaviour::Scripts(scripts), None)
    }

    /// Any behaviour; `max_ids_per_frame` makes the server close on a too-big subscribe frame.
    pub fn start_with(behaviour: Behaviour, max_ids_per_frame: Option<usize>) -> WsServer {
        WsServer::start_with_port(0, behaviour, max_ids_per_frame).expect("bind 127.0.0.1")
    }

    /// As [`WsServer::start_with`] on 127.0.0.1:`port` (0 = any free port).
    pub fn start_with_port(
        port: u16,
        behaviour: Behaviour,
        max_ids_per_frame: Option<usize>,
    ) -> std::io::Result<WsServer> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let port = listener.local_addr()?.port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let closed_too_big = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let fault = Arc::new(Mutex::new((0, None)));
        let books = match &behaviour {
            Behaviour::Model { events_per_sec, seed } => Some(Books::new(Model::new(*seed), *events_per_sec)),
            Behaviour::Books(b) => Some(b.clone()),
            _ => None,
        };
        let shared = Arc::new(Shared {
            books,
            behaviour,
            max_ids_per_frame,
            got: got.clone(),
            stop: stop.clone(),
            closed_too_big: closed_too_big.clone(),
            fault: fault.clone(),
        });
        let (c, f) = (conns.clone(), finished.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = tcp else { continue };
                let k = c.fetch_add(1, Ordering::SeqCst);
                let (sh, f) = (shared.clone(), f.clone());
                std::thread::spawn(move || {
                    serve(tcp, k, &sh);
                    f.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Ok(WsServer { port, got, conns, finished, closed_too_big, stop, fault })
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws/market", self.port)
    }

    pub fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for WsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

type Ws = WebSocket<TcpStream>;

fn timed_out(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io)
        if io.kind() == std::io::ErrorKind::WouldBlock || io.kind() == std::io::ErrorKind::TimedOut)
}

/// A client text message, as the server understands it.
enum Sub {
    Subscribe(Vec<String>),
    Unsubscribe(Vec<String>),
    Ping,
    Other,
}

fn parse_sub(text: &str) -> Sub {
    if text == "PING" {
        return Sub::Ping;
    }
    let Ok(v) = serde_json::from_str::<Value>(text) else { return Sub::Other };
    let ids: Vec<String> = v["assets_ids"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    match v["operation"].as_str() {
        Some("unsubscribe") => Sub::Unsubscribe(ids),
        Some("subscribe") | None if v.get("assets_ids").is_some() => Sub::Subscribe(ids),
        _ => Sub::Other,
    }
}

/// One connection. Returns when it ends.
fn serve(tcp: TcpStream, k: usize, sh: &Shared) {
    let Ok(mut ws) = tungstenite::accept(tcp) else { return };
    ws.get_mut().set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    let mut conn =
        Conn { ws, k, sh, subscribed: BTreeSet::new(), new_ids: Vec::new(), gone_ids: Vec::new(), out: None };
    // Wait for the subscribe message before sending anything (as the venue does).
    loop {
        if sh.stop.load(Ordering::SeqCst) {
            return;
        }
        match conn.read_one() {
            Ok(true) => break,
            Ok(false) => {}
            Err(()) => return,
        }
    }
    match &sh.behaviour {
        Behaviour::Scripts(scripts) => conn.script(&scripts[k.min(scripts.len() - 1)]),
        Behaviour::Model { .. } | Behaviour::Books(_) => conn.model(sh.books.as_ref().expect("a model")),
        Behaviour::Blast { frames, n } => conn.blast(frames, *n),
    }
}

struct Conn<'a> {
    ws: Ws,
    k: usize,
    sh: &'a Shared,
    subscribed: BTreeSet<String>,
    /// Ids subscribed since the model last looked (they get an initial dump).
    new_ids: Vec<String>,
    /// Ids unsubscribed since the model last looked.
    gone_ids: Vec<String>,
    /// A modelled connection's writing half (see [`Conn::model`]).
    out: Option<Out>,
}

impl Conn<'_> {
    /// Reads one message if there is one. Ok(true) when it was a subscription message; Err when the
    /// connection is over (closed by either side, or closed here for a too-big frame).
    fn read_one(&mut self) -> Result<bool, ()> {
        match self.ws.read() {
            Ok(Message::Text(t)) => {
                let text = t.as_str().to_string();
                self.sh.got.lock().unwrap().push(Got { conn: self.k, text: text.clone() });
                match parse_sub(&text) {
                    Sub::Ping => {
                        self.send_text("PONG")?;
                        Ok(false)
                    }
                    Sub::Subscribe(ids) | Sub::Unsubscribe(ids)
                        if self.sh.max_ids_per_frame.is_some_and(|m| ids.len() > m) =>
                    {
                        self.sh.closed_too_big.fetch_add(1, Ordering::SeqCst);
                        let _ = self.ws.close(None);
                        let _ = self.ws.flush();
                        std::thread::sleep(Duration::from_millis(50));
                        Err(())
                    }
                    Sub::Subscribe(ids) => {
                        for id in ids {
                            if self.subscribed.insert(id.clone()) {
                                self.new_ids.push(id);
                            }
                        }
                        Ok(true)
                    }
                    Sub::Unsubscribe(ids) => {
                        for id in &ids {
                            self.subscribed.remove(id);
                        }
                        self.new_ids.retain(|x| !ids.contains(x));
                        self.gone_ids.extend(ids);
                        Ok(true)
                    }
                    Sub::Other => Ok(false),
                }
            }
            Ok(Message::Close(_)) => Err(()),
            Ok(_) => Ok(false),
            Err(e) if timed_out(&e) => Ok(false),
            Err(_) => Err(()),
        }
    }

    fn stopping(&self) -> bool {
        self.sh.stop.load(Ordering::SeqCst)
    }

    fn script(&mut self, script: &Script) {
        for f in &script.frames {
            if self.ws.send(Message::text(f.clone())).is_err() {
                return;
            }
        }
        let start = Instant::now();
        match script.after {
            After::Close => {
                let _ = self.ws.close(None);
                let _ = self.ws.flush();
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
            After::Drop => {
                // FIN without a close frame; linger so that unread client bytes do not turn it into a RST.
                let _ = self.ws.get_mut().shutdown(std::net::Shutdown::Write);
                std::thread::sleep(Duration::from_millis(300));
                return;
            }
            After::Freeze => {
                while !self.stopping() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            After::Hold | After::Repeat(_) | After::CloseAfterMs(_) => {}
        }
        let mut next_send = Instant::now();
        while !self.stopping() {
            if let (After::Repeat(ms), Some(f)) = (script.after, script.frames.first()) {
                if Instant::now() >= next_send {
                    if self.ws.send(Message::text(f.clone())).is_err() {
                        return;
                    }
                    next_send += Duration::from_millis(ms);
                }
            }
            if let After::CloseAfterMs(ms) = script.after {
                if start.elapsed() >= Duration::from_millis(ms) {
                    let _ = self.ws.close(None);
                    let _ = self.ws.flush();
                    std::thread::sleep(Duration::from_millis(100));
                    return;
                }
            }
            if self.read_one().is_err() {
                return;
            }
        }
    }

    fn blast(&mut self, frames: &[String], n: u64) {
        let start = Instant::now();
        for i in 0..n {
            // write() queues without flushing; flush in batches.
            if self.ws.write(Message::text(frames[(i % frames.len() as u64) as usize].clone())).is_err() {
                return;
            }
            if i % 64 == 63 && self.ws.flush().is_err() {
                return;
            }
        }
        let _ = self.ws.flush();
        eprintln!("ws_replay_server: sent {n} frames in {:.3} s", start.elapsed().as_secs_f64());
        while !self.stopping() {
            if self.read_one().is_err() {
                return;
            }
        }
    }

    /// A connection of the modelled venue: the `book` dumps and the changes of the one [`Books`] for
    /// the assets it subscribed to, and the [`WsFault`]s injected.
    fn model(&mut self, books: &Books) {
        // Every server frame of this connection goes through `out` (the model's driver writes the
        // changes itself, under the book lock: a REST reply never reads a change before it was sent).
        let Ok(tcp) = self.ws.get_ref().try_clone() else { return };
        let _ = tcp.set_write_timeout(Some(Duration::from_secs(2)));
        let out: Out = Arc::new(Mutex::new(tcp));
        self.out = Some(out.clone());
        let sub = books.join(out.clone());
        let _leave = Leave(books, sub);
        let mut seen = self.sh.fault.lock().unwrap().0;
        while !self.stopping() {
            let (generation, fault) = *self.sh.fault.lock().unwrap();
            if generation != seen {
                seen = generation;
                match fault {
                    Some(WsFault::Close) => {
                        let _g = out.lock().unwrap();
                        let _ = self.ws.close(None);
                        let _ = self.ws.flush();
                        drop(_g);
                        std::thread::sleep(Duration::from_millis(100));
                        return;
                    }
                    Some(WsFault::Freeze(d)) => {
                        books.leave(sub);
                        let until = Instant::now() + d;
                        while Instant::now() < until && !self.stopping() {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        return;
                    }
                    None => {}
                }
            }
            if !self.gone_ids.is_empty() {
                books.unsubscribe(sub, &std::mem::take(&mut self.gone_ids));
            }
            // Every (re)subscribe pushes a fresh `book` per asset, as one array frame.
            if !self.new_ids.is_empty() && books.subscribe(sub, &std::mem::take(&mut self.new_ids)).is_err() {
                return;
            }
            if self.read_one().is_err() {
                return;
            }
        }
    }

    /// Sends a text frame: through `out` for a modelled connection, else through the websocket.
    fn send_text(&mut self, text: &str) -> Result<(), ()> {
        match &self.out {
            Some(out) => write_frames(out, &[text.to_string()]).map_err(|_| ()),
            None => self.ws.send(Message::text(text)).map_err(|_| ()),
        }
    }
}

/// The writing half of a modelled connection (a clone of its TCP stream); one frame at a time.
type Out = Arc<Mutex<TcpStream>>;

/// Writes `texts` as unmasked websocket text frames (server to client) in one write.
fn write_frames(out: &Out, texts: &[String]) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for t in texts {
        let f = tungstenite::protocol::frame::Frame::message(
            t.clone().into_bytes(),
            tungstenite::protocol::frame::coding::OpCode::Data(tungstenite::protocol::frame::coding::Data::Text),
            true,
        );
        f.format(&mut buf).map_err(std::io::Error::other)?;
    }
    std::io::Write::write_all(&mut *out.lock().unwrap(), &buf)
}

/// Takes a connection out of the [`Books`] when it ends, however it ends.
struct Leave<'a>(&'a Books, usize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.leave(self.1);
    }
}

// ---------------------------------------------------------------------------------------------
// The venue-wide book model

/// The venue's book model: **one book per asset** that the REST venue (`/books`, `/book`: venue.rs
/// `Venue::books_from`) and every websocket connection read, as on the real venue, where pm-stream's
/// REST snapshot after a connect and the websocket changes that follow describe the same book.
///
/// A driver thread makes `events_per_sec` events per second (real time) of the [`Model`], each about
/// one asset picked among the assets any open connection subscribed to, and writes each event's
/// frames to every connection subscribed to that asset while it holds the model's lock: a REST reply
/// (which takes that lock) never reads a change before it was sent. A connection that subscribes
/// gets a `book` dump of the current state first; the REST venue serves the same state with the same
/// timestamp and hash (the time of the book's last change). The driver stops when the last handle is
/// dropped.
#[derive(Clone)]
pub struct Books(Arc<Hub>);

struct Hub {
    st: Mutex<HubState>,
    events_per_sec: f64,
    /// No events while set ([`Books::pause`]).
    paused: AtomicBool,
}

struct HubState {
    model: Model,
    /// Connection → (its assets, its writing half).
    subs: BTreeMap<usize, (BTreeSet<String>, Out)>,
    next: usize,
}

impl std::fmt::Debug for Books {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Books({} events/s)", self.0.events_per_sec)
    }
}

impl Books {
    pub fn new(model: Model, events_per_sec: f64) -> Books {
        let st = Mutex::new(HubState { model, subs: BTreeMap::new(), next: 0 });
        let hub = Arc::new(Hub { st, events_per_sec, paused: AtomicBool::new(false) });
        let weak = Arc::downgrade(&hub);
        std::thread::spawn(move || drive(weak));
        Books(hub)
    }

    /// Stops (true) or resumes the events: a quiet venue, so that a client can stop between two
    /// events (a stop inside a same-timestamp burst leaves a state no hash describes).
    pub fn pause(&self, paused: bool) {
        self.0.paused.store(paused, Ordering::SeqCst);
    }

    /// An asset's book as the REST venue serves it (see [`Model::rest_book`]).
    pub fn rest_book(&self, id: &str) -> RestBook {
        self.0.st.lock().unwrap().model.rest_book(id)
    }

    /// A new connection, written to through `out`: its id.
    fn join(&self, out: Out) -> usize {
        let mut s = self.0.st.lock().unwrap();
        s.next += 1;
        let id = s.next;
        s.subs.insert(id, (BTreeSet::new(), out));
        id
    }

    fn leave(&self, sub: usize) {
        self.0.st.lock().unwrap().subs.remove(&sub);
    }

    /// Adds `ids` to connection `sub`'s assets and writes their `book` dump (one array frame), under
    /// the model's lock: every change after the dump reaches the connection after it, none before.
    fn subscribe(&self, sub: usize, ids: &[String]) -> std::io::Result<()> {
        let mut s = self.0.st.lock().unwrap();
        let dump = s.model.initial_dump(ids);
        let Some((assets, out)) = s.subs.get_mut(&sub) else { return Ok(()) };
        assets.extend(ids.iter().cloned());
        write_frames(out, &[dump])
    }

    fn unsubscribe(&self, sub: usize, ids: &[String]) {
        if let Some((assets, _)) = self.0.st.lock().unwrap().subs.get_mut(&sub) {
            ids.iter().for_each(|id| {
                assets.remove(id);
            });
        }
    }
}

/// The driver of a [`Books`]: events due on real time, until the last handle is gone.
fn drive(hub: std::sync::Weak<Hub>) {
    let start = Instant::now();
    let mut sent = 0u64;
    loop {
        std::thread::sleep(Duration::from_millis(5));
        let Some(hub) = hub.upgrade() else { return };
        let due = (start.elapsed().as_secs_f64() * hub.events_per_sec) as u64;
        let mut s = hub.st.lock().unwrap();
        let ids: Vec<String> =
            s.subs.values().flat_map(|(a, _)| a.iter().cloned()).collect::<BTreeSet<_>>().into_iter().collect();
        if ids.is_empty() || hub.paused.load(Ordering::SeqCst) {
            sent = due;
            continue;
        }
        while sent < due {
            let id = &ids[s.model.below(ids.len() as u64) as usize];
            let frames = s.model.event(id);
            // A connection that cannot be written to (gone, or not reading for 2 s) leaves.
            let dead: Vec<usize> = s
                .subs
                .iter()
                .filter(|(_, (assets, out))| assets.contains(id) && write_frames(out, &frames).is_err())
                .map(|(k, _)| *k)
                .collect();
            dead.iter().for_each(|k| {
                s.subs.remove(k);
            });
            sent += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The modelled venue

/// A writer of Python `json.dumps` style text (`", "` and `": "` separators): how some real captures
/// spell `price_change` frames.
struct PySeparators;

impl serde_json::ser::Formatter for PySeparators {
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

// Wire messages, fields in the order live frames show them (`event_type` near the end; facts §6.1).
#[derive(serde::Serialize)]
struct Level {
    price: String,
    size: String,
}

#[derive(serde::Serialize)]
struct BookMsg {
    market: String,
    asset_id: String,
    timestamp: String,
    hash: String,
    bids: Vec<Level>,
    asks: Vec<Level>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tick_size: Option<String>,
    event_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_trade_price: Option<String>,
}

#[derive(serde::Serialize)]
struct Entry {
    asset_id: String,
    price: String,
    size: String,
    side: &'static str,
    hash: String,
    best_bid: String,
    best_ask: String,
}

#[derive(serde::Serialize)]
struct PriceChangeMsg<'a> {
    market: &'a str,
    price_changes: Vec<Entry>,
    timestamp: &'a str,
    event_type: &'static str,
}

/// Prices in ticks of 0.01, spelled without trailing zeros ("0.5", "0.45", "0.01").
fn price(t: u32) -> String {
    let s = format!("{}.{:02}", t / 100, t % 100);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

struct Book {
    market: String,
    /// The exchange timestamp (ms) of the book's last change: what its `book` dumps and REST replies
    /// carry, so that both describe one state with one hash.
    ts: u64,
    /// ticks → size (wire strings).
    bids: BTreeMap<u32, String>,
    asks: BTreeMap<u32, String>,
    last_trade_price: String,
}

/// An asset's book as the REST venue serves it: (market, timestamp, bids ascending, asks descending,
/// last_trade_price), levels as (price, size) wire strings; the same tuple as venue.rs `ModelBook`.
pub type RestBook = (String, String, Vec<(String, String)>, Vec<(String, String)>, String);

/// The `min_order_size`, `neg_risk` and `tick_size` of every modelled book (pm-rebuild's defaults for
/// the first two).
pub const MODEL_MIN_ORDER_SIZE: &str = "5";
pub const MODEL_TICK_SIZE: &str = "0.01";

/// A modelled venue stream, per asset (no real market is implied: every asset gets its own market id
/// and a seeded book). It produces what the real captures show (../shared/fixtures/polymarket,
/// SOURCES.md; venue_changes_2026 §2.1–2.2, §3 A9/A11):
/// - the initial dump as a JSON **array** of `book` objects with `tick_size` and `last_trade_price`;
/// - `price_change` messages spelled with `", "` / `": "` separators, `event_type` last, entries with
///   the hash of the book after the change and `best_bid`/`best_ask`;
/// - **same-timestamp bursts**: three `price_change` messages with one `timestamp`, all carrying the
///   hash of the state after the last of them;
/// - **trades**: a `last_trade_price` event, then a `book` refresh **without** `tick_size` and
///   `last_trade_price` (the hash still covers both, with the new trade price);
/// - `best_bid_ask`, an event type no client knows (`future_event`), and now and then the docs'
///   `new_market` example (broadcast, not about a subscribed asset).
///
/// Event mix per 1000: 860 price_change (of which 60 start a burst), 30 trades, 80 best_bid_ask,
/// 25 future_event, 5 new_market (the live BTC sample counted mostly price_change, then
/// best_bid_ask, book and last_trade_price: polymarket_api_facts §6.2).
pub struct Model {
    rng: u64,
    books: BTreeMap<String, Book>,
    last_ts: u64,
    new_market: String,
    pub events: u64,
    clock: Clock,
    market_of: Option<MarketOf>,
}

/// The clock of the model's timestamps (the venue's: simulated or wall).
pub type Clock = Arc<dyn Fn() -> time::OffsetDateTime + Send + Sync>;
/// The market (condition id) the venue issued an asset under, if it did.
pub type MarketOf = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

impl Model {
    /// A model on the wall clock; every asset gets a market id of its own.
    pub fn new(seed: u64) -> Model {
        Model::on_clock(seed, Arc::new(time::OffsetDateTime::now_utc), None)
    }

    /// A model whose timestamps come from `clock` and whose books carry the market `market_of` names
    /// (the REST venue's condition id; else a market id of the asset's own).
    pub fn on_clock(seed: u64, clock: Clock, market_of: Option<MarketOf>) -> Model {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/polymarket/ws_new_market_docs_example.json");
        let nm: Value = serde_json::from_slice(&std::fs::read(path).expect("new_market fixture")).expect("json");
        Model {
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
            books: BTreeMap::new(),
            last_ts: 0,
            new_market: nm.to_string(),
            events: 0,
            clock,
            market_of,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn size(&mut self) -> String {
        let whole = 5 + self.below(5000);
        if self.below(3) == 0 {
            format!("{whole}.{:02}", 1 + self.below(99))
        } else {
            whole.to_string()
        }
    }

    /// A new timestamp (ms) on the model's clock, later than every one before.
    fn ts(&mut self) -> u64 {
        let now = ((self.clock)().unix_timestamp_nanos() / 1_000_000).max(0) as u64;
        self.last_ts = now.max(self.last_ts + 1);
        self.last_ts
    }

    fn book_mut(&mut self, id: &str) -> &mut Book {
        if !self.books.contains_key(id) {
            let mid = 30 + self.below(40) as u32;
            let mut bids = BTreeMap::new();
            let mut asks = BTreeMap::new();
            for d in 1..=8 {
                let (b, a) = (self.size(), self.size());
                bids.insert(mid - d, b);
                asks.insert(mid + d, a);
            }
            let market = self.market_of.as_ref().and_then(|f| f(id)).unwrap_or_else(|| {
                let h = pm_archive::util::hex(&<sha1::Sha1 as sha1::Digest>::digest(id.as_bytes()));
                format!("0x{h:0<64}")
            });
            let ts = self.ts();
            self.books.insert(id.to_string(), Book { market, ts, bids, asks, last_trade_price: price(mid) });
        }
        self.books.get_mut(id).unwrap()
    }

    fn hash(&self, id: &str, ts: &str) -> String {
        let b = &self.books[id];
        let bids: Vec<(String, &str)> = b.bids.iter().map(|(t, s)| (price(*t), s.as_str())).collect();
        let asks: Vec<(String, &str)> = b.asks.iter().rev().map(|(t, s)| (price(*t), s.as_str())).collect();
        let (mos, tick, neg, ltp) =
            (json!(MODEL_MIN_ORDER_SIZE), json!(MODEL_TICK_SIZE), json!(false), json!(b.last_trade_price));
        pm_archive::polymarket::bookhash::hash(&pm_archive::polymarket::bookhash::HashInput {
            market: &b.market,
            asset_id: id,
            timestamp: ts,
            bids: bids.iter().map(|(p, s)| (p.as_str(), *s)).collect(),
            asks: asks.iter().map(|(p, s)| (p.as_str(), *s)).collect(),
            min_order_size: &mos,
            tick_size: &tick,
            neg_risk: &neg,
            last_trade_price: &ltp,
        })
    }

    /// The `book` object of an asset's current state, at the time of its last change; `refresh` = as
    /// sent after a trade (no `tick_size`, no `last_trade_price`).
    fn book_msg(&mut self, id: &str, refresh: bool) -> BookMsg {
        let ts = self.book_mut(id).ts.to_string();
        let hash = self.hash(id, &ts);
        let b = &self.books[id];
        let lv = |t: &u32, s: &String| Level { price: price(*t), size: s.clone() };
        BookMsg {
            market: b.market.clone(),
            asset_id: id.to_string(),
            timestamp: ts,
            hash,
            bids: b.bids.iter().map(|(t, s)| lv(t, s)).collect(),
            asks: b.asks.iter().rev().map(|(t, s)| lv(t, s)).collect(),
            tick_size: (!refresh).then(|| MODEL_TICK_SIZE.to_string()),
            event_type: "book",
            last_trade_price: (!refresh).then(|| b.last_trade_price.clone()),
        }
    }

    /// The initial dump for newly subscribed assets: one array frame.
    pub fn initial_dump(&mut self, ids: &[String]) -> String {
        let books: Vec<BookMsg> = ids.iter().map(|id| self.book_msg(id, false)).collect();
        serde_json::to_string(&books).unwrap()
    }

    /// Stamps `id`'s book with a new timestamp (it is about to change); returns it.
    fn touch(&mut self, id: &str) -> u64 {
        self.book_mut(id);
        let ts = self.ts();
        self.books.get_mut(id).unwrap().ts = ts;
        ts
    }

    /// An asset's book as the REST venue serves it (venue.rs `ModelBook`): its market, the timestamp
    /// of its last change, bids ascending and asks descending (wire order), its last trade price.
    pub fn rest_book(&mut self, id: &str) -> RestBook {
        let b = self.book_mut(id);
        let lv = |(t, s): (&u32, &String)| (price(*t), s.clone());
        (
            b.market.clone(),
            b.ts.to_string(),
            b.bids.iter().map(lv).collect(),
            b.asks.iter().rev().map(lv).collect(),
            b.last_trade_price.clone(),
        )
    }

    fn best(&self, id: &str) -> (String, String) {
        let b = &self.books[id];
        (
            b.bids.keys().next_back().map(|t| price(*t)).unwrap_or_default(),
            b.asks.keys().next().map(|t| price(*t)).unwrap_or_default(),
        )
    }

    /// Applies one random order-book change to `id` (never crossing the book); returns the entry
    /// with the new best bid/ask, without its hash.
    fn change(&mut self, id: &str) -> Entry {
        let bid_side = self.below(2) == 0;
        let (best_bid, best_ask) = {
            let b = self.book_mut(id);
            (b.bids.keys().next_back().copied().unwrap_or(0), b.asks.keys().next().copied().unwrap_or(100))
        };
        let pick = self.below(10);
        let size = self.size();
        let b = self.books.get_mut(id).unwrap();
        let side = if bid_side { &mut b.bids } else { &mut b.asks };
        let existing: Vec<u32> = side.keys().copied().collect();
        let (tick, new_size) = if pick < 3 && existing.len() > 2 {
            (existing[(pick as usize * 7) % existing.len()], "0".to_string()) // remove a level
        } else if pick < 7 && !existing.is_empty() {
            (existing[(pick as usize * 5) % existing.len()], size) // resize a level
        } else if bid_side {
            ((best_bid + 1).min(best_ask - 1).max(1), size) // new or improved bid, never crossing
        } else {
            ((best_ask - 1).max(best_bid + 1).min(99), size)
        };
        if new_size == "0" {
            side.remove(&tick);
        } else {
            side.insert(tick, new_size.clone());
        }
        let (best_bid, best_ask) = self.best(id);
        Entry {
            asset_id: id.to_string(),
            price: price(tick),
            size: new_size,
            side: if bid_side { "BUY" } else { "SELL" },
            hash: String::new(),
            best_bid,
            best_ask,
        }
    }

    fn price_change(&self, market: &str, entries: Vec<Entry>, ts: &str) -> String {
        let m = PriceChangeMsg { market, price_changes: entries, timestamp: ts, event_type: "price_change" };
        let mut out = Vec::new();
        serde::Serialize::serialize(&m, &mut serde_json::Serializer::with_formatter(&mut out, PySeparators)).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The frames of one event about `id` (or a broadcast).
    pub fn event(&mut self, id: &str) -> Vec<String> {
        self.events += 1;
        self.book_mut(id);
        let market = self.books[id].market.clone();
        let roll = self.below(1000);
        if roll < 800 {
            let mut e = self.change(id);
            let ts = self.touch(id).to_string();
            e.hash = self.hash(id, &ts);
            vec![self.price_change(&market, vec![e], &ts)]
        } else if roll < 860 {
            // A same-timestamp burst: three messages, one timestamp, the final state's hash on all.
            let ts = self.touch(id).to_string();
            let entries: Vec<Entry> = (0..3).map(|_| self.change(id)).collect();
            let h = self.hash(id, &ts);
            entries
                .into_iter()
                .map(|mut e| {
                    e.hash = h.clone();
                    self.price_change(&market, vec![e], &ts)
                })
                .collect()
        } else if roll < 890 {
            // A trade at the best ask (BUY) or best bid (SELL), then the refreshed book.
            let buy = self.below(2) == 0;
            let ts = self.ts().to_string();
            self.touch(id);
            let b = self.books.get_mut(id).unwrap();
            let side = if buy { &mut b.asks } else { &mut b.bids };
            let top = if buy { side.keys().next().copied() } else { side.keys().next_back().copied() };
            let Some(top) = top else { return vec![] };
            let avail: f64 = side[&top].parse().unwrap_or(0.0);
            let qty = (avail / 2.0).floor().max(1.0);
            if side.len() > 1 && qty >= avail {
                side.remove(&top);
            } else {
                let left = (avail - qty).max(1.0);
                side.insert(top, format!("{}", (left * 100.0).round() / 100.0));
            }
            b.last_trade_price = price(top);
            let trade = json!({"asset_id": id, "event_type": "last_trade_price", "fee_rate_bps": "0", "market": market,
                "price": price(top), "side": if buy {"BUY"} else {"SELL"}, "size": format!("{qty}"), "timestamp": ts,
                "transaction_hash": format!("0x{:064x}", self.events)});
            let refresh = self.book_msg(id, true);
            vec![trade.to_string(), serde_json::to_string(&refresh).unwrap()]
        } else if roll < 970 {
            let (bb, ba) = self.best(id);
            let spread = match (bb.parse::<f64>(), ba.parse::<f64>()) {
                (Ok(b), Ok(a)) => format!("{}", ((a - b) * 100.0).round() / 100.0),
                _ => String::new(),
            };
            let ts = self.ts().to_string();
            vec![json!({"market": market, "asset_id": id, "best_bid": bb, "best_ask": ba, "spread": spread,
                "timestamp": ts, "event_type": "best_bid_ask"})
            .to_string()]
        } else if roll < 995 {
            let ts = self.ts().to_string();
            vec![json!({"event_type": "future_event", "market": market, "asset_id": id, "timestamp": ts}).to_string()]
        } else {
            vec![self.new_market.clone()]
        }
    }
}
