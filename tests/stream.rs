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
        After::Hold => {}
    }
    while !stop.load(Ordering::SeqCst) {
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
    c.args(["--summary", summary.to_str().unwrap(), "--depth", "1000"]).args(extra).arg(&raw);
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
    assert!(r7667
        .iter()
        .all(|r| r["hash_verified"] == true && r["trusted"] == true && r["schema"] == "pmarchive.wsbook/1"));
    // Best-first levels, best bid < best ask.
    let last = r7667.last().unwrap();
    assert_eq!(last["bids"][0][0], last["bid_px"]);
    assert!(
        last["bid_px"].as_str().unwrap().parse::<f64>().unwrap()
            < last["ask_px"].as_str().unwrap().parse::<f64>().unwrap()
    );
    // Sampled: at most one price_change row per 10 s of exchange time (book rows always).
    let (_, s, rows) = rebuild(&raw, &dir, &["--every-ms", "10000"]);
    assert_eq!(s["assets"][A7667]["matched"], 15, "sampling does not skip verification");
    let ts: Vec<i64> =
        rows.iter().filter(|r| r["asset_id"] == A7667).map(|r| r["ts_event_ms"].as_i64().unwrap()).collect();
    assert_eq!(ts, vec![1790658661234, 1790658674035, 1790658690317, 1790658701463]);
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

fn rest_book_line(state: &Value) -> String {
    let rev = |a: &Value| -> Vec<Value> {
        a.as_array().unwrap().iter().rev().map(|l| json!({"price": l[0], "size": l[1]})).collect()
    };
    let b = json!({"market": state["market"], "asset_id": A7667, "timestamp": state["ts_event_ms"].to_string(), "hash": state["hash"],
        "bids": rev(&state["bids"]), "asks": rev(&state["asks"]), "min_order_size": "5", "tick_size": state["tick_size"], "neg_risk": false,
        "last_trade_price": state["last_trade_price"]});
    json!({"schema": "pmarchive.raw/1", "kind": "http", "endpoint": "books", "status": 200, "collected_at_utc": "2026-09-29T05:11:40.000000Z",
        "body": [b], "ctx": {"reason": "ws_resync", "conn_id": 9}})
    .to_string()
}

fn ws_book_line(state: &Value) -> String {
    let rev = |a: &Value| -> Vec<Value> {
        a.as_array().unwrap().iter().rev().map(|l| json!({"price": l[0], "size": l[1]})).collect()
    };
    let b = json!({"market": state["market"], "asset_id": A7667, "timestamp": state["ts_event_ms"].to_string(), "hash": state["hash"],
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
    assert!(rows.iter().any(|r| r["asset_id"] == A7667 && r["trusted"] == false && r["hash_verified"] == false));

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
