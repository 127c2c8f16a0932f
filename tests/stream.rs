//! pm-stream and pm-rebuild against a loopback websocket server (127.0.0.1, a thread per connection)
//! that replays the recorded frames in tests/fixtures/polymarket, plus the loopback REST venue for the
//! `/books` resync snapshots. Frames marked DERIVED below are built by the test from recorded ones.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::venue::{fixture, Venue};
use serde_json::{json, Value};
use tungstenite::Message;

const A7667: &str = "76670567130917723816490572615540605537878462672464291990940067659127658071111";
const PC_FIXTURE: &str = "ws_market_book_then_price_changes_trimmed.json";

/// What the server does after sending a connection's frames.
#[derive(Clone, Copy, Debug, PartialEq)]
enum After {
    /// Stay open; answer `PING` with `PONG`; send nothing else (a "silent freeze").
    Hold,
    /// Send a close frame.
    Close,
    /// Drop the TCP connection without a close frame.
    Drop,
    /// Stay open, answer `PING`, and send the script's first frame again every this many ms
    /// (a connection that never goes silent).
    Repeat(u64),
}

#[derive(Clone, Debug)]
struct Script {
    frames: Vec<String>,
    after: After,
}

/// A text message the server received, with the index of its connection.
#[derive(Clone, Debug)]
struct Got {
    conn: usize,
    text: String,
}

struct WsServer {
    port: u16,
    got: Arc<Mutex<Vec<Got>>>,
    conns: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl WsServer {
    /// Connection k follows `scripts[k]` (the last script for any later connection).
    fn start(scripts: Vec<Script>) -> WsServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, c, s) = (got.clone(), conns.clone(), stop.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = tcp else { continue };
                let k = c.fetch_add(1, Ordering::SeqCst);
                let script = scripts[k.min(scripts.len() - 1)].clone();
                let (g, s) = (g.clone(), s.clone());
                std::thread::spawn(move || serve(tcp, k, script, g, s));
            }
        });
        WsServer { port, got, conns, stop }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws/market", self.port)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for WsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(tcp: std::net::TcpStream, k: usize, script: Script, got: Arc<Mutex<Vec<Got>>>, stop: Arc<AtomicBool>) {
    let Ok(mut ws) = tungstenite::accept(tcp) else { return };
    ws.get_mut().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let log = |t: &str| got.lock().unwrap().push(Got { conn: k, text: t.to_string() });
    // Wait for the subscribe message before replaying (as the venue does).
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                log(t.as_str());
                break;
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return,
        }
    }
    for f in &script.frames {
        if ws.send(Message::text(f.clone())).is_err() {
            return;
        }
    }
    match script.after {
        After::Close => {
            let _ = ws.close(None);
            let _ = ws.flush();
            std::thread::sleep(Duration::from_millis(100));
            return;
        }
        After::Drop => {
            // FIN without a close frame; linger so that unread client bytes do not turn it into a RST.
            let _ = ws.get_mut().shutdown(std::net::Shutdown::Write);
            std::thread::sleep(Duration::from_millis(300));
            return;
        }
        After::Hold | After::Repeat(_) => {}
    }
    let mut next_send = std::time::Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if let (After::Repeat(ms), Some(f)) = (script.after, script.frames.first()) {
            if std::time::Instant::now() >= next_send {
                if ws.send(Message::text(f.clone())).is_err() {
                    return;
                }
                next_send += Duration::from_millis(ms);
            }
        }
        match ws.read() {
            Ok(Message::Text(t)) => {
                log(t.as_str());
                if t.as_str() == "PING" && ws.send(Message::text("PONG")).is_err() {
                    return;
                }
            }
            Ok(Message::Close(_)) => return,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return,
        }
    }
}

/// A file's text, as a frame (verbatim, line breaks included).
fn frame(name: &str) -> String {
    String::from_utf8(fixture(name)).unwrap()
}

/// The book + 15 price_change messages of the recorded capture, each element verbatim.
fn capture_messages() -> Vec<String> {
    let text = frame(PC_FIXTURE);
    let v: Vec<&serde_json::value::RawValue> = serde_json::from_str(&text).unwrap();
    v.iter().map(|r| r.get().to_string()).collect()
}

/// A market record (pmarchive.market/1) for these tokens and window (seconds from now).
fn market_line(cond: &str, tokens: &[&str], start_in: f64, end_in: f64) -> String {
    let now = time::OffsetDateTime::now_utc();
    let at = |s: f64| pm_archive::clock::fmt_micros(now + time::Duration::seconds_f64(s));
    let toks: Vec<Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"token_id": t, "outcome": if i == 0 {"Up"} else {"Down"}}))
        .collect();
    let m = json!({
        "record": "market", "schema": "pmarchive.market/1", "venue": "polymarket", "family": "5m",
        "slug": format!("test-{cond}"), "question": null, "market_id": null,
        "condition_id": format!("0x{:0>64}", cond), "question_id": null, "tokens": toks,
        "window_start_utc": at(start_in), "window_end_utc": at(end_in), "listed_at_utc": null,
        "active": true, "closed": false, "archived": false, "accepting_orders": true, "enable_order_book": true,
        "status": "open", "tick_size": "0.01", "min_order_size": "5", "neg_risk": false, "resolution_source": null,
        "source_url": "test (derived)", "fetched_at_utc": at(0.0), "change": "snapshot"
    });
    format!("{m}\n")
}

fn stream_cmd(server: &WsServer, venue: &Venue, extra: &[&str]) -> std::process::Command {
    let mut c = common::tool("pm-stream");
    c.args([
        "--ws-url",
        &server.url(),
        "--clob-url",
        &venue.url(),
        "--lead",
        "0",
        "--grace",
        "0",
        "--ping-secs",
        "0.2",
        "--backoff-base",
        "0.05",
        "--backoff-max",
        "0.2",
    ]);
    c.args(extra);
    c
}

fn events<'a>(lines: &'a [Value], ev: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["kind"] == "ws" && l["ctx"]["event"] == ev).collect()
}

fn frame_text(l: &Value) -> String {
    match l.get("body") {
        Some(b) => serde_json::to_string(b).unwrap(),
        None => l["body_text"].as_str().unwrap_or("").to_string(),
    }
}

fn rebuild(input: &[u8], dir: &Path, extra: &[&str]) -> (std::process::Output, Value, Vec<Value>) {
    let raw = dir.join(format!("raw-{}.jsonl", extra.len()));
    std::fs::write(&raw, input).unwrap();
    let summary = dir.join("summary.json");
    let mut c = common::tool("pm-rebuild");
    // The loopback replays recorded frames long after their exchange time: --max-lag (~3 years)
    // keeps `recv_far` out of these rows (that flag is pm-normalize's and tested there).
    c.args(["--summary", summary.to_str().unwrap(), "--depth", "1000", "--max-lag", "100000000"]).args(extra).arg(&raw);
    let out = common::run_with_timeout(c, None, Duration::from_secs(30));
    let s: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let rows = common::jsonl(&out.stdout);
    (out, s, rows)
}

/// Captures the recorded frames through pm-stream once: the basis for several tests.
fn capture(frames: Vec<String>, after: After, secs: f64) -> (Vec<Value>, Vec<Got>, std::process::Output) {
    let server = WsServer::start(vec![Script { frames, after }]);
    let venue = Venue::start();
    let input = market_line("7667", &[A7667, "54176"], -5.0, secs);
    let out = common::run_with_timeout(
        stream_cmd(&server, &venue, &["--silence-secs", "30"]),
        Some(input.as_bytes()),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    (common::jsonl(&out.stdout), server.got(), out)
}

#[test]
fn every_frame_is_archived_verbatim_and_the_recorded_hashes_verify() {
    let mut frames = vec![frame("ws_initial_book_frame_array_trimmed.json"), frame("ws_book_snapshot_captured.json")];
    frames.extend(capture_messages());
    for f in [
        "ws_last_trade_price_docs_example.json",
        "ws_tick_size_change_docs_example.json",
        "ws_new_market_docs_example.json",
        "ws_market_resolved_docs_example.json",
    ] {
        frames.push(frame(f));
    }
    frames.push("NO NEW ASSETS".into());
    let (lines, got, _) = capture(frames.clone(), After::Hold, 2.0);

    // The subscribe message the server saw (facts §6.1).
    let sub: Value = serde_json::from_str(&got[0].text).unwrap();
    assert_eq!(sub["type"], "market");
    assert_eq!(sub["initial_dump"], true);
    assert_eq!(sub["custom_feature_enabled"], true);
    let ids: Vec<&str> = sub["assets_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(ids.contains(&A7667) && ids.contains(&"54176"));
    assert!(got.iter().any(|g| g.text == "PING"), "client pings");

    // Every line is a raw envelope, seq numbered from 0 without gaps.
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["schema"], "pmarchive.raw/1");
        assert_eq!(l["tool"], "pm-stream");
        assert_eq!(l["seq"], i as u64);
    }
    // Every frame sent appears once, in order, verbatim, with a µs receive time and frame numbers.
    let fr = events(&lines, "frame");
    let data: Vec<&&Value> = fr.iter().filter(|l| l["body_text"] != "PONG").collect();
    assert_eq!(data.len(), frames.len());
    for (i, (l, sent)) in data.iter().zip(&frames).enumerate() {
        assert_eq!(&frame_text(l), sent, "frame {i}");
        assert_eq!(l["ctx"]["frame_no"], i as u64);
        assert_eq!(l["ctx"]["conn_id"], 0);
        let t = l["collected_at_utc"].as_str().unwrap();
        assert!(t.len() == 27 && t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
    }
    // Compact frames are embedded as JSON, multi-line ones kept as text, non-JSON as text.
    assert_eq!(data[2]["body_kind"], "json_text");
    assert_eq!(data.last().unwrap()["body_kind"], "text");
    assert_eq!(data.last().unwrap()["body_text"], "NO NEW ASSETS");
    assert!(fr.iter().any(|l| l["body_text"] == "PONG"), "PONG replies archived");
    // Connection events and the REST resync snapshot after connect.
    assert_eq!(events(&lines, "open").len(), 1);
    assert_eq!(events(&lines, "subscribe").len(), 1);
    assert!(lines.iter().any(|l| l["kind"] == "http"
        && l["endpoint"] == "books"
        && l["ctx"]["reason"] == "ws_resync"
        && l["ctx"]["conn_id"] == 0));
    let close = events(&lines, "close");
    assert_eq!(close.len(), 1);
    assert_eq!(close[0]["ctx"]["by"], "client");
    assert!(lines.iter().any(|l| l["kind"] == "track" && l["ctx"]["action"] == "stop"));

    // Rebuild: the 15 recorded price_change hashes of asset 7667…1111 verify.
    let dir = common::tempdir("stream-verify");
    let raw: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect();
    let trades = dir.join("trades.jsonl");
    let (out, s, rows) = rebuild(&raw, &dir, &["--trades-out", trades.to_str().unwrap()]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s["assets"][A7667]["matched"], 15, "{s:#}");
    assert_eq!(s["assets"][A7667]["mismatched"], 0);
    assert_eq!(s["assets"][A7667]["trusted_at_end"], true);
    assert_eq!(s["hashes_mismatched"], 0);
    assert_eq!(s["changes_without_book"], 15, "the sibling asset has no book in the capture");
    assert!(s["ws_book_hash_matched"].as_u64().unwrap() >= 2, "captured books verify: {s:#}");
    assert_eq!(s["text_frames"].as_u64().unwrap() as usize, fr.len() - data.len() + 1);
    let r7667: Vec<&Value> = rows.iter().filter(|r| r["asset_id"] == A7667).collect();
    assert_eq!(r7667.len(), 16);
    // The REST path's rows (pmarchive.orderbook/1), joined through the capture's `track` line.
    assert!(r7667.iter().all(|r| r["record"] == "book"
        && r["schema"] == "pmarchive.orderbook/1"
        && r["source"] == "ws"
        && r["hash_ok"] == true
        && r["flags"] == json!([])
        && r["slug"] == "test-7667"
        && r["outcome"] == "Up"
        && r["family"] == "5m"));
    // Provenance: (raw_run_id, raw_seq) names the frame line the state came from.
    for r in &r7667 {
        let src = &lines[r["raw_seq"].as_u64().unwrap() as usize];
        assert_eq!(src["ctx"]["event"], "frame");
        assert_eq!(r["raw_run_id"], src["run_id"]);
        assert_eq!(r["collected_at_utc"], src["collected_at_utc"]);
    }
    // Only the initial frame's probe book (asset "1111", zero hash) does not verify.
    assert_eq!(s["row_flags"]["hash_mismatch"], s["ws_book_hash_mismatched"], "{s:#}");
    assert!(s["row_flags"].get("untrusted").is_none(), "never raised: {s:#}");
    // Best-first levels, best bid < best ask, all levels with --depth 1000.
    let last = r7667.last().unwrap();
    assert_eq!(last["bids"][0]["price"], last["best_bid_price"]);
    assert_eq!(last["asks"][0]["price"], last["best_ask_price"]);
    assert_eq!(last["bids"].as_array().unwrap().len() as u64, last["bid_levels"].as_u64().unwrap());
    assert!(
        last["best_bid_price"].as_str().unwrap().parse::<f64>().unwrap()
            < last["best_ask_price"].as_str().unwrap().parse::<f64>().unwrap()
    );
    // Sampled: at most one price_change row per 10 s of exchange time (book rows always).
    let (_, s, rows) = rebuild(&raw, &dir, &["--every-ms", "10000"]);
    assert_eq!(s["assets"][A7667]["matched"], 15, "sampling does not skip verification");
    let ts: Vec<i64> =
        rows.iter().filter(|r| r["asset_id"] == A7667).map(|r| r["exchange_ts_ms"].as_i64().unwrap()).collect();
    assert_eq!(ts, vec![1790658661234, 1790658674035, 1790658690317, 1790658701463]);
    // --top: top of book only, as pm-normalize --top.
    let (_, _, rows) = rebuild(&raw, &dir, &["--top"]);
    let r = rows.iter().find(|r| r["asset_id"] == A7667).unwrap();
    assert_eq!(r["depth"], 0);
    assert!(r["bids"].is_null() && r["asks"].is_null(), "--top: bids/asks present and null");
    let t = common::read_jsonl(&trades);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0]["schema"], "pmarchive.trade/1");
    assert_eq!(t[0]["price"], "0.456");
    assert_eq!(t[0]["transaction_hash"], "0xeeefffggghhh");
}

/// Lines of a raw capture of book + price changes, with the rebuilt full state after message `k`
/// (DERIVED from the recorded capture via pm-rebuild's rows).
fn state_after(rows: &[Value], k: usize) -> Value {
    rows.iter().filter(|r| r["asset_id"] == A7667).nth(k).unwrap().clone()
}

/// A row's best-first levels back in wire order (bids ascending, asks descending).
fn rev(a: &Value) -> Vec<Value> {
    a.as_array().unwrap().iter().rev().cloned().collect()
}

fn rest_book_line(state: &Value) -> String {
    let b = json!({"market": state["market"], "asset_id": A7667, "timestamp": state["exchange_ts_ms"].to_string(), "hash": state["hash"],
        "bids": rev(&state["bids"]), "asks": rev(&state["asks"]), "min_order_size": "5", "tick_size": state["tick_size"], "neg_risk": false,
        "last_trade_price": state["last_trade_price"]});
    json!({"schema": "pmarchive.raw/1", "kind": "http", "endpoint": "books", "status": 200, "collected_at_utc": "2026-09-29T05:11:40.000000Z",
        "body": [b], "ctx": {"reason": "ws_resync", "conn_id": 9}})
    .to_string()
}

fn ws_book_line(state: &Value) -> String {
    let b = json!({"market": state["market"], "asset_id": A7667, "timestamp": state["exchange_ts_ms"].to_string(), "hash": state["hash"],
        "bids": rev(&state["bids"]), "asks": rev(&state["asks"]), "tick_size": state["tick_size"], "event_type": "book",
        "last_trade_price": state["last_trade_price"]});
    json!({"schema": "pmarchive.raw/1", "kind": "ws", "collected_at_utc": "2026-09-29T05:11:40.000000Z", "body": b,
        "ctx": {"event": "frame", "conn_id": 9, "frame_no": 99}})
    .to_string()
}

#[test]
fn a_dropped_frame_is_a_mismatch_and_is_resynced() {
    let msgs = capture_messages();
    let dir = common::tempdir("stream-drop");
    // Full capture → reference states.
    let (full, _, _) = capture(msgs.clone(), After::Hold, 1.0);
    let full_raw: Vec<u8> = full.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect();
    let (_, s, rows) = rebuild(&full_raw, &dir, &[]);
    assert_eq!(s["assets"][A7667]["matched"], 15);
    let after10 = state_after(&rows, 10); // row 0 is the book, row k the state after price_change k

    // Drop price_change #5 on the wire.
    let mut dropped = msgs.clone();
    dropped.remove(5);
    let (lines, _, _) = capture(dropped, After::Hold, 1.0);
    let mut raw: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let (out, s, rows) = rebuild(raw.join("\n").as_bytes(), &dir, &[]);
    assert_eq!(out.status.code(), Some(1), "a gap is a reported failure");
    assert_eq!(s["hashes_mismatched"], 1, "{s:#}");
    assert_eq!(s["assets"][A7667]["matched"], 4);
    assert_eq!(s["mismatches_while_untrusted"], 9);
    assert_eq!(s["assets"][A7667]["trusted_at_end"], false);
    let r7667: Vec<&Value> = rows.iter().filter(|r| r["asset_id"] == A7667).collect();
    assert_eq!(r7667.len(), 15);
    assert!(r7667[..5].iter().all(|r| r["hash_ok"] == true && r["flags"] == json!([])));
    // From the gap on: hash_mismatch, and untrusted until a resync (none in this capture).
    assert!(r7667[5..].iter().all(|r| r["hash_ok"] == false && r["flags"] == json!(["hash_mismatch", "untrusted"])));
    assert_eq!(s["row_flags"]["untrusted"], 10);

    // Resync from a REST snapshot (DERIVED: the state after message 10) inserted after message 10.
    let pos =
        raw.iter().position(|l| l.contains("\"frame_no\":9,") || l.contains("\"frame_no\":9}")).expect("frame 9") + 1;
    raw.insert(pos, rest_book_line(&after10));
    let (_, s, _) = rebuild(raw.join("\n").as_bytes(), &dir, &[]);
    assert_eq!(s["resyncs_rest"], 1, "{s:#}");
    assert_eq!(s["cross_checks_disagree"], 1, "the snapshot at the same exchange time disagrees with the gapped book");
    assert_eq!(s["rest_hash_matched"], 1);
    assert_eq!(s["assets"][A7667]["matched"], 4 + 5);
    assert_eq!(s["assets"][A7667]["trusted_at_end"], true);
    assert!(s["untrusted_s"].as_f64().unwrap() >= 0.0);

    // Resync from the next `book` instead (DERIVED book frame, same state).
    raw[pos] = ws_book_line(&after10);
    let (_, s, _) = rebuild(raw.join("\n").as_bytes(), &dir, &[]);
    assert_eq!(s["resyncs_ws_book"], 1, "{s:#}");
    assert_eq!(s["assets"][A7667]["matched"], 4 + 5);
    assert_eq!(s["assets"][A7667]["trusted_at_end"], true);

    // A REST snapshot that agrees with an intact rebuilt book is counted as an agreement.
    let mut good: Vec<String> = full.iter().map(|l| l.to_string()).collect();
    let p = good.iter().position(|l| l.contains("\"frame_no\":10,") || l.contains("\"frame_no\":10}")).unwrap() + 1;
    good.insert(p, rest_book_line(&after10));
    let (out, s, _) = rebuild(good.join("\n").as_bytes(), &dir, &[]);
    assert!(out.status.success());
    assert_eq!(s["cross_checks_agree"], 1, "{s:#}");
    assert_eq!(s["cross_checks_disagree"], 0);
    assert_eq!(s["assets"][A7667]["matched"], 15);
}

#[test]
fn a_silent_server_triggers_the_watchdog_and_a_reconnect() {
    let book = frame("ws_book_snapshot_captured.json");
    let server = WsServer::start(vec![Script { frames: vec![book], after: After::Hold }]);
    let venue = Venue::start();
    let input = market_line("aa", &[A7667], -5.0, 3.5);
    let out = common::run_with_timeout(
        stream_cmd(&server, &venue, &["--silence-secs", "1"]),
        Some(input.as_bytes()),
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    let lines = common::jsonl(&out.stdout);
    let wd = events(&lines, "watchdog");
    assert!(!wd.is_empty(), "watchdog fired");
    assert_eq!(wd[0]["ctx"]["reason"], "silence");
    assert!(events(&lines, "reconnect_wait").iter().any(|l| l["ctx"]["after"] == "watchdog"));
    let opens = events(&lines, "open");
    assert!(opens.len() >= 2, "reconnected");
    assert_ne!(opens[0]["ctx"]["conn_id"], opens[1]["ctx"]["conn_id"]);
    assert!(server.conns.load(Ordering::SeqCst) >= 2);
    assert!(
        server.got().iter().any(|g| g.conn == 1 && g.text.contains("\"assets_ids\"")),
        "re-subscribed on the new connection"
    );
    // PONGs kept arriving (answered PINGs) but did not count as data.
    assert!(events(&lines, "frame").iter().any(|l| l["body_text"] == "PONG"));
    // A REST resync after every connect.
    let resyncs = lines.iter().filter(|l| l["kind"] == "http" && l["ctx"]["reason"] == "ws_resync").count();
    assert!(resyncs >= 2);
}

#[test]
fn a_closed_connection_is_reconnected_and_the_gap_recorded() {
    let msgs = capture_messages();
    let server = WsServer::start(vec![
        Script { frames: msgs[..3].to_vec(), after: After::Close },
        Script { frames: msgs[3..5].to_vec(), after: After::Drop },
        Script { frames: msgs[5..].to_vec(), after: After::Hold },
    ]);
    let venue = Venue::start();
    let input = market_line("bb", &[A7667], -5.0, 2.0);
    let out = common::run_with_timeout(
        stream_cmd(&server, &venue, &["--silence-secs", "30"]),
        Some(input.as_bytes()),
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    let lines = common::jsonl(&out.stdout);
    let closes = events(&lines, "close");
    assert!(closes.iter().any(|l| l["ctx"]["by"] == "server" && l["ctx"]["conn_id"] == 0), "{closes:?}");
    let conn1_end = lines.iter().any(|l| {
        l["kind"] == "ws"
            && l["ctx"]["conn_id"] == 1
            && (l["ctx"]["event"] == "error" || (l["ctx"]["event"] == "close" && l["ctx"]["by"] != "client"))
    });
    assert!(conn1_end, "the dropped connection is recorded");
    assert!(events(&lines, "reconnect_wait").len() >= 2);
    assert_eq!(events(&lines, "open").len(), 3);
    // All 16 messages arrived across the three connections; frame numbers restart per connection.
    let data: Vec<&Value> = events(&lines, "frame").into_iter().filter(|l| l["body_text"] != "PONG").collect();
    assert_eq!(data.len(), 16);
    assert_eq!(data[3]["ctx"]["frame_no"], 0);
    assert_eq!(data[3]["ctx"]["conn_id"], 1);
    // The order of records tells the gap: close(0) < reconnect_wait < open(1).
    let pos = |pred: &dyn Fn(&Value) -> bool| lines.iter().position(pred).unwrap();
    let c0 = pos(&|l| l["ctx"]["event"] == "close" && l["ctx"]["conn_id"] == 0);
    let w0 = pos(&|l| l["ctx"]["event"] == "reconnect_wait" && l["ctx"]["conn_id"] == 0);
    let o1 = pos(&|l| l["ctx"]["event"] == "open" && l["ctx"]["conn_id"] == 1);
    assert!(c0 < w0 && w0 < o1);
    // The book rebuilt across the reconnects still verifies (no frame was lost).
    let dir = common::tempdir("stream-close");
    let raw: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect();
    let (out, s, _) = rebuild(&raw, &dir, &[]);
    assert!(out.status.success());
    assert_eq!(s["assets"][A7667]["matched"], 15);
}

#[test]
fn tokens_are_added_and_removed_without_a_reconnect() {
    let server =
        WsServer::start(vec![Script { frames: vec![frame("ws_book_snapshot_captured.json")], after: After::Hold }]);
    let venue = Venue::start();
    // Market A is tracked now and ends at +1.5 s; market B starts at +1.0 s and ends at +3.0 s.
    let mut input = market_line("a1", &["111", "112"], -10.0, 1.5);
    input.push_str(&market_line("b1", &["221", "222"], 1.0, 3.0));
    let out = common::run_with_timeout(
        stream_cmd(&server, &venue, &["--silence-secs", "30"]),
        Some(input.as_bytes()),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server.conns.load(Ordering::SeqCst), 1, "one connection throughout");
    let got: Vec<Value> =
        server.got().iter().filter(|g| g.text != "PING").map(|g| serde_json::from_str(&g.text).unwrap()).collect();
    assert_eq!(got[0]["assets_ids"], json!(["111", "112"]));
    assert_eq!(got[1], json!({"operation": "subscribe", "assets_ids": ["221", "222"]}));
    assert_eq!(got[2], json!({"operation": "unsubscribe", "assets_ids": ["111", "112"]}));
    let lines = common::jsonl(&out.stdout);
    assert_eq!(events(&lines, "subscribe").len(), 2);
    assert_eq!(events(&lines, "unsubscribe").len(), 1);
    assert_eq!(events(&lines, "open").len(), 1);
    let tracks: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| l["kind"] == "track")
        .map(|l| (l["ctx"]["slug"].as_str().unwrap(), l["ctx"]["action"].as_str().unwrap()))
        .collect();
    assert_eq!(tracks, vec![("test-a1", "start"), ("test-b1", "start"), ("test-a1", "stop"), ("test-b1", "stop")]);
    // The tokens added later get their own REST snapshot.
    assert!(lines.iter().any(|l| l["kind"] == "http" && l["ctx"]["reason"] == "ws_subscribe"));
}

#[test]
fn tokens_are_sharded_across_connections() {
    let server = WsServer::start(vec![Script { frames: vec![], after: After::Hold }]);
    let venue = Venue::start();
    let input = market_line("cc", &["1", "2", "3"], -5.0, 1.0);
    let out = common::run_with_timeout(
        stream_cmd(&server, &venue, &["--max-per-conn", "2"]),
        Some(input.as_bytes()),
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    assert_eq!(server.conns.load(Ordering::SeqCst), 2);
    let mut subs: Vec<Value> = server
        .got()
        .iter()
        .filter(|g| g.text != "PING")
        .map(|g| serde_json::from_str::<Value>(&g.text).unwrap()["assets_ids"].clone())
        .collect();
    subs.sort_by_key(|v| v.as_array().unwrap().len());
    assert_eq!(subs, vec![json!(["3"]), json!(["1", "2"])]);
}

#[test]
fn bad_input_is_reported_not_dropped() {
    let server = WsServer::start(vec![Script { frames: vec![], after: After::Hold }]);
    let venue = Venue::start();
    let mut input = String::from("{not json\n");
    input.push_str(&market_line("dd", &["1"], -5.0, 0.5));
    let out =
        common::run_with_timeout(stream_cmd(&server, &venue, &[]), Some(input.as_bytes()), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stdin line 1"));
    let lines = common::jsonl(&out.stdout);
    assert!(lines.iter().any(|l| l["kind"] == "gap" && l["ctx"]["gap"] == "bad_input" && l["ctx"]["line"] == 1));
    // pm-rebuild reports unreadable lines with file and line number.
    let dir = common::tempdir("stream-bad");
    let raw = dir.join("bad.jsonl");
    let mut f = std::fs::File::create(&raw).unwrap();
    writeln!(f, "{}", lines[0]).unwrap();
    writeln!(f, "{{truncated").unwrap();
    let mut c = common::tool("pm-rebuild");
    c.arg(&raw);
    let out = common::run_with_timeout(c, None, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.jsonl:2"));
}

#[test]
fn the_scheduled_reconnect_fires_on_a_busy_connection() {
    // The server never goes silent (a `book` every 100 ms), so only --max-conn-age can end a connection.
    let book = frame("ws_book_snapshot_captured.json");
    let server = WsServer::start(vec![Script { frames: vec![book], after: After::Repeat(100) }]);
    let venue = Venue::start();
    let input = market_line("ee", &[A7667], -5.0, 2.6);
    let out = common::run_with_timeout(
        stream_cmd(&server, &venue, &["--silence-secs", "30", "--max-conn-age", "1"]),
        Some(input.as_bytes()),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let lines = common::jsonl(&out.stdout);
    let wd = events(&lines, "watchdog");
    assert!(!wd.is_empty(), "the scheduled reconnect fired");
    assert!(wd.iter().all(|l| l["ctx"]["reason"] == "max_conn_age"), "no silence watchdog: {wd:?}");
    assert_eq!(wd[0]["ctx"]["limit_s"], 1.0);
    assert_eq!(wd[0]["ctx"]["conn_id"], 0);
    let closes = events(&lines, "close");
    assert!(closes
        .iter()
        .any(|l| l["ctx"]["conn_id"] == 0 && l["ctx"]["by"] == "client" && l["ctx"]["reason"] == "max_conn_age"));
    assert!(events(&lines, "reconnect_wait")
        .iter()
        .any(|l| l["ctx"]["after"] == "watchdog" && l["ctx"]["reason"] == "max_conn_age"));
    let opens = events(&lines, "open");
    assert!(opens.len() >= 2, "a second open");
    assert_eq!(opens[1]["ctx"]["conn_id"], 1);
    assert!(server.conns.load(Ordering::SeqCst) >= 2);
    // Frames kept being archived before and after the reconnect, and the gap is ordered in the file.
    let data = |conn: u64| {
        events(&lines, "frame").iter().filter(|l| l["ctx"]["conn_id"] == conn && l["body_text"] != "PONG").count()
    };
    assert!(data(0) >= 3 && data(1) >= 3, "frames on conn 0: {}, conn 1: {}", data(0), data(1));
    let pos = |pred: &dyn Fn(&Value) -> bool| lines.iter().position(pred).unwrap();
    let w0 = pos(&|l| l["ctx"]["event"] == "watchdog" && l["ctx"]["conn_id"] == 0);
    let o1 = pos(&|l| l["ctx"]["event"] == "open" && l["ctx"]["conn_id"] == 1);
    let f1 = pos(&|l| l["ctx"]["event"] == "frame" && l["ctx"]["conn_id"] == 1);
    assert!(w0 < o1 && o1 < f1);
    assert!(server.got().iter().any(|g| g.conn == 1 && g.text.contains("\"assets_ids\"")), "re-subscribed");
}

/// Raw envelopes as pm-stream writes them for these frame texts (DERIVED: no capture run; receive
/// times 05:12:00, 05:12:01, … on the capture's exchange day, so the lag stays under a minute).
fn frame_lines(frames: &[String]) -> Vec<String> {
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let body: Value = serde_json::from_str(f).unwrap();
            json!({"schema": "pmarchive.raw/1", "venue": "polymarket", "run_id": "derived", "seq": i, "kind": "ws",
                "collected_at_utc": format!("2026-09-29T05:12:{i:02}.000000Z"), "body_kind": "json", "body": body,
                "ctx": {"event": "frame", "conn_id": 0, "frame_no": i}})
            .to_string()
        })
        .collect()
}

#[test]
fn trust_returns_only_with_a_book_or_rest_snapshot_not_with_a_later_matching_hash() {
    let dir = common::tempdir("stream-trust");
    let mut msgs = capture_messages();
    let (_, _, full_rows) = rebuild(frame_lines(&msgs).join("\n").as_bytes(), &dir, &[]);
    let after10 = state_after(&full_rows, 10);
    // DERIVED: the venue hash of asset 7667…1111 in price_change #5 replaced by zeros. The rebuilt
    // state stays right, so the hashes of #6…#15 match again.
    let m5: Value = serde_json::from_str(&msgs[5]).unwrap();
    let h5 = m5["price_changes"].as_array().unwrap().iter().find(|e| e["asset_id"] == A7667).unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_string();
    msgs[5] = msgs[5].replace(&h5, &"0".repeat(40));
    let mut raw = frame_lines(&msgs);
    let (out, s, rows) = rebuild(raw.join("\n").as_bytes(), &dir, &[]);
    assert_eq!(out.status.code(), Some(1), "the mismatch is a reported failure");
    assert_eq!(s["hashes_mismatched"], 1, "{s:#}");
    assert_eq!(s["assets"][A7667]["matched"], 14);
    assert_eq!(s["matches_while_untrusted"], 10, "matches after the mismatch are counted…");
    assert_eq!(s["assets"][A7667]["trusted_at_end"], false, "…but do not restore trust");
    assert_eq!(s["resyncs_ws_book"], 0);
    assert!(s.get("recovered_by_hash").is_none());
    let r: Vec<&Value> = rows.iter().filter(|r| r["asset_id"] == A7667).collect();
    assert_eq!(r.len(), 16);
    assert!(r[..5].iter().all(|r| r["hash_ok"] == true && r["flags"] == json!([])));
    assert_eq!(r[5]["hash_ok"], false);
    assert_eq!(r[5]["flags"], json!(["hash_mismatch", "untrusted"]));
    assert!(r[6..].iter().all(|r| r["hash_ok"] == true && r["flags"] == json!(["untrusted"])));
    // untrusted from #5's receive time (05:12:05) to the last line (05:12:15).
    assert_eq!(s["untrusted_s"], 10.0);

    // A REST snapshot (DERIVED: the state after #10) after #10 agrees with the rebuilt book and
    // still resyncs it: from there on the rows are trusted again.
    raw.insert(11, rest_book_line(&after10));
    let (out, s, rows) = rebuild(raw.join("\n").as_bytes(), &dir, &[]);
    assert_eq!(out.status.code(), Some(1), "the earlier mismatch is still reported");
    assert_eq!(s["cross_checks_agree"], 1, "{s:#}");
    assert_eq!(s["resyncs_rest"], 1);
    assert_eq!(s["matches_while_untrusted"], 5);
    assert_eq!(s["assets"][A7667]["trusted_at_end"], true);
    let r: Vec<&Value> = rows.iter().filter(|r| r["asset_id"] == A7667).collect();
    assert_eq!(r.len(), 17);
    assert_eq!(r[11]["source"], "ws_rest");
    assert_eq!(r[11]["hash_ok"], true);
    // The same state as the row before it (pm-normalize's `duplicate`), now without `untrusted`.
    assert_eq!(r[11]["flags"], json!(["duplicate"]));
    assert!(r[12..].iter().all(|r| r["flags"] == json!([])), "trusted again");
    assert!(r[6..11].iter().all(|r| r["flags"] == json!(["untrusted"])));
}

/// Keys of a JSON object line, in the order written.
fn keys_in_order(line: &[u8]) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Keys, A::Error> {
                    let mut k = Vec::new();
                    while let Some(key) = a.next_key::<String>()? {
                        a.next_value::<serde::de::IgnoredAny>()?;
                        k.push(key);
                    }
                    Ok(Keys(k))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_slice::<Keys>(line).unwrap().0
}

#[test]
fn a_rebuilt_row_is_a_rest_row_for_the_same_book() {
    // The recorded websocket `book` (hash verifies) and a REST `/books` reply with the same book
    // (DERIVED: `event_type` dropped, the REST-only `min_order_size`/`neg_risk` added with the values
    // its hash verifies with). Same receive time and provenance on both lines.
    let dir = common::tempdir("stream-same-rows");
    let ws_book: Value = serde_json::from_slice(&fixture("ws_book_snapshot_captured.json")).unwrap();
    let token = ws_book["asset_id"].as_str().unwrap().to_string();
    let mut rest_book = ws_book.clone();
    rest_book.as_object_mut().unwrap().remove("event_type");
    rest_book["min_order_size"] = json!("5");
    rest_book["neg_risk"] = json!(false);
    let env = |kind: &str, body: Value, ctx: Value| {
        let mut e = json!({"schema": "pmarchive.raw/1", "venue": "polymarket", "run_id": "derived", "seq": 7,
            "kind": kind, "collected_at_utc": "2026-08-13T06:54:32.500000Z", "status": 200, "body_kind": "json",
            "body": body, "ctx": ctx});
        if kind == "http" {
            e["endpoint"] = json!("books");
        }
        format!("{e}\n")
    };
    let ws_raw = dir.join("ws.jsonl");
    std::fs::write(&ws_raw, env("ws", ws_book.clone(), json!({"event": "frame", "conn_id": 0, "frame_no": 0})))
        .unwrap();
    let rest_raw = dir.join("rest.jsonl");
    std::fs::write(&rest_raw, env("http", json!([rest_book]), json!({"reason": "ws_resync", "conn_id": 0}))).unwrap();
    let markets = dir.join("markets.jsonl");
    std::fs::write(&markets, market_line("ff", &[&token, "2"], -5.0, 60.0)).unwrap();

    for depth in ["10", "all", "3"] {
        let mut c = common::tool("pm-normalize");
        c.args(["--depth", depth, "--markets", markets.to_str().unwrap()]).arg(&rest_raw);
        let rest_out = common::run_with_timeout(c, None, Duration::from_secs(10));
        assert!(rest_out.status.success(), "{}", String::from_utf8_lossy(&rest_out.stderr));
        let mut c = common::tool("pm-rebuild");
        c.args(["--depth", depth, "--markets", markets.to_str().unwrap()]).arg(&ws_raw);
        let ws_out = common::run_with_timeout(c, None, Duration::from_secs(10));
        assert!(ws_out.status.success(), "{}", String::from_utf8_lossy(&ws_out.stderr));
        let (rest_line, ws_line) = (rest_out.stdout.trim_ascii_end(), ws_out.stdout.trim_ascii_end());
        assert!(!rest_line.contains(&b'\n') && !ws_line.contains(&b'\n'), "one row each");
        // Exactly the same keys in the same order.
        assert_eq!(keys_in_order(ws_line), keys_in_order(rest_line), "depth {depth}");
        let (mut w, r): (Value, Value) =
            (serde_json::from_slice(ws_line).unwrap(), serde_json::from_slice(rest_line).unwrap());
        assert_eq!(r["source"], "books");
        assert_eq!(w["source"], "ws");
        assert_eq!(w["hash_ok"], true);
        assert_eq!(w["slug"], "test-ff");
        assert_eq!(w["outcome"], "Up");
        for k in ["best_bid_price", "best_bid_size", "best_ask_price", "best_ask_size", "bids", "asks", "mid", "spread"]
        {
            assert_eq!(w[k], r[k], "{k} (depth {depth})");
        }
        // The rest is equal too: only `source` tells the two rows apart.
        w["source"] = r["source"].clone();
        assert_eq!(w, r, "depth {depth}");
    }
    // pm-normalize --check accepts pm-rebuild's output as pmarchive.orderbook/1.
    let rows = dir.join("rows.jsonl");
    let mut c = common::tool("pm-rebuild");
    c.args(["-", "--trades-out"]).arg(dir.join("t.jsonl"));
    let out = common::run_with_timeout(c, Some(&std::fs::read(&ws_raw).unwrap()), Duration::from_secs(10));
    std::fs::write(&rows, &out.stdout).unwrap();
    let mut c = common::tool("pm-normalize");
    c.arg("--check").arg(&rows);
    let out = common::run_with_timeout(c, None, Duration::from_secs(10));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["rows"]["book"], 1);
    assert_eq!(rep["hash"]["match"], 1);
}
