//! pm-stream and pm-rebuild against the loopback websocket venue (tests/common/ws.rs: 127.0.0.1, a
//! thread per connection) that replays the recorded frames in tests/fixtures/polymarket or runs the
//! modelled venue, plus the loopback REST venue for the `/books` resync snapshots. Frames marked
//! DERIVED below are built by the test from recorded ones.

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::venue::{fixture, Venue};
use common::ws::{After, Behaviour, Got, Script, WsServer};
use serde_json::{json, Value};

const A7667: &str = "76670567130917723816490572615540605537878462672464291990940067659127658071111";
const PC_FIXTURE: &str = "ws_market_book_then_price_changes_trimmed.json";

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

/// Every `ctx` pm-stream wrote reads back through its Rust type and writes again as the same JSON:
/// no key the type does not know (a `WsCtx` refuses unknown keys; the others would drop them and
/// differ), no key whose JSON type differs. One type per record, for its writer and its readers.
fn assert_typed_ctx(lines: &[Value]) {
    use common::assert_ctx_reads_as as again;
    use pm_archive::http::HttpCtx;
    use pm_archive::polymarket::stream::{SnapshotCtx, StatsCtx, WsCtx};
    use pm_archive::track::{GapCtx, TrackCtx};
    for l in lines {
        match (l["kind"].as_str().unwrap(), l["ctx"]["event"].as_str()) {
            ("ws", Some("stats")) => again::<StatsCtx>(l),
            ("ws", _) => again::<WsCtx>(l),
            ("http", _) => again::<HttpCtx<SnapshotCtx>>(l),
            ("track", _) => again::<TrackCtx>(l),
            ("gap", _) => again::<GapCtx>(l),
            (k, _) => panic!("unexpected kind {k}: {l}"),
        }
    }
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
    // Untrusted from the mismatch to the end of the capture: a real, positive time.
    let untrusted_to_end = s["untrusted_s"].as_f64().unwrap();
    assert!(untrusted_to_end > 0.0, "{s:#}");
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
    // The resync ends the untrusted time: shorter than without it.
    assert!(s["untrusted_s"].as_f64().unwrap() < untrusted_to_end, "{s:#}");

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
    assert_typed_ctx(&lines);
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
    assert_typed_ctx(&lines);
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
    assert_eq!(got[1], json!({"operation": "subscribe", "assets_ids": ["221", "222"], "custom_feature_enabled": true}));
    assert_eq!(got[2], json!({"operation": "unsubscribe", "assets_ids": ["111", "112"]}));
    let lines = common::jsonl(&out.stdout);
    assert_typed_ctx(&lines);
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
    assert_typed_ctx(&lines);
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
    assert_typed_ctx(&lines);
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
        assert_eq!(common::keys_in_order(ws_line), common::keys_in_order(rest_line), "depth {depth}");
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

/// pm-stream's `stats` lines summed: websocket events by type.
fn summed_event_types(lines: &[Value]) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    for l in events(lines, "stats") {
        let ctx: pm_archive::polymarket::stream::StatsCtx =
            serde_json::from_value(l["ctx"].clone()).expect("a StatsCtx");
        for (k, n) in ctx.ws_event_types.0 {
            *m.entry(k).or_insert(0) += n;
        }
    }
    m
}

/// Archives `raw` lines with jsonl-rotate and builds the run manifest from its sealed records.
fn manifest_of(raw: &[u8], dir: &Path) -> Value {
    let root = dir.join("archive");
    let mut c = common::tool("jsonl-rotate");
    c.args(["--root", root.to_str().unwrap(), "--stream", "ws_market", "--run-id", "wsrun", "--host", "testhost"]);
    let sealed = common::run_with_timeout(c, Some(raw), Duration::from_secs(30));
    assert!(sealed.status.success(), "{}", String::from_utf8_lossy(&sealed.stderr));
    let mut c = common::tool("manifest");
    c.args(["build", "--root", root.to_str().unwrap(), "--run-id", "wsrun", "--host", "testhost"]);
    let out = common::run_with_timeout(c, Some(&sealed.stdout), Duration::from_secs(30));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&std::fs::read(root.join("manifests/run-testhost-wsrun.json")).unwrap()).unwrap()
}

#[test]
fn every_event_type_is_kept_raw_and_counted_in_the_manifest() {
    let mut frames = vec![frame("ws_initial_book_frame_array_trimmed.json"), frame("ws_book_snapshot_captured.json")];
    for f in [
        "ws_price_change_docs_example.json",
        "ws_best_bid_ask_docs_example.json",
        "ws_last_trade_price_docs_example.json",
        "ws_tick_size_change_docs_example.json",
        "ws_new_market_docs_example.json",
        "ws_market_resolved_docs_example.json",
    ] {
        frames.push(frame(f));
    }
    // DERIVED: an event type no client knows yet, and a frame that is not an event at all.
    frames.push(r#"{"event_type":"brand_new_thing","market":"0x01","timestamp":"1790658661234"}"#.into());
    frames.push("[]".into());
    frames.push("NO NEW ASSETS".into());
    let (lines, _, _) = capture(frames.clone(), After::Hold, 1.5);
    assert_typed_ctx(&lines);
    // Every frame is archived verbatim, whatever its type.
    let data: Vec<String> =
        events(&lines, "frame").iter().filter(|l| l["body_text"] != "PONG").map(|l| frame_text(l)).collect();
    assert_eq!(data, frames);
    // The stats lines count every event by type (the initial array counts per element).
    let counts = summed_event_types(&lines);
    let pongs = events(&lines, "frame").iter().filter(|l| l["body_text"] == "PONG").count() as u64;
    for (k, n) in [
        ("book", 3),
        ("price_change", 1),
        ("best_bid_ask", 1),
        ("last_trade_price", 1),
        ("tick_size_change", 1),
        ("new_market", 1),
        ("market_resolved", 1),
        ("brand_new_thing", 1),
        ("(empty_array)", 1),
        ("(no_new_assets)", 1),
    ] {
        assert_eq!(counts.get(k), Some(&n), "{k}: {counts:?}");
    }
    assert_eq!(counts.get("(pong)").copied().unwrap_or(0), pongs);
    let stats = events(&lines, "stats");
    let frames_in_stats: u64 = stats.iter().map(|l| l["ctx"]["frames"].as_u64().unwrap()).sum();
    assert_eq!(frames_in_stats as usize, events(&lines, "frame").len(), "every frame is in a stats line");
    // A stats line is written when the connection ends, after its close.
    let close = lines.iter().position(|l| l["ctx"]["event"] == "close").unwrap();
    assert!(lines.iter().rposition(|l| l["ctx"]["event"] == "stats").unwrap() > close);
    // manifest build sums them per stream and per run.
    let m = manifest_of(&pm_lines(&lines), &common::tempdir("stream-manifest"));
    let want: Value = serde_json::to_value(&counts).unwrap();
    assert_eq!(m["tallies"]["ws_event_types"], want, "{:#}", m["tallies"]);
    assert_eq!(m["streams"]["ws_market"]["tally"]["ws_event_types"], want);
}

fn pm_lines(lines: &[Value]) -> Vec<u8> {
    lines.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect()
}

/// A market record with `n` tokens ("9000", "9001", …).
fn many_tokens(n: usize) -> Vec<String> {
    (0..n).map(|i| (9000 + i).to_string()).collect()
}

#[test]
fn subscribe_frames_are_batched_so_the_venue_does_not_close_the_socket() {
    let toks = many_tokens(250);
    let refs: Vec<&str> = toks.iter().map(String::as_str).collect();
    let venue = Venue::start();
    // The venue closes a connection right after a subscribe frame with more than 100 ids.
    let run = |per_frame: &str| {
        let server =
            WsServer::start_with(Behaviour::Scripts(vec![Script { frames: vec![], after: After::Hold }]), Some(100));
        let input = market_line("ab", &refs, -5.0, 1.5);
        let out = common::run_with_timeout(
            stream_cmd(&server, &venue, &["--max-per-conn", "500", "--max-ids-per-frame", per_frame, "--no-rest"]),
            Some(input.as_bytes()),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (
            server.got(),
            server.conns.load(Ordering::SeqCst),
            server.closed_too_big.load(Ordering::SeqCst),
            common::jsonl(&out.stdout),
        )
    };
    // Batched (the default, 100): one connection, three frames, every id once.
    let (got, conns, closed, lines) = run("100");
    assert_eq!((conns, closed), (1, 0), "no close for a batched subscribe");
    let subs: Vec<Value> =
        got.iter().filter(|g| g.text != "PING").map(|g| serde_json::from_str(&g.text).unwrap()).collect();
    assert_eq!(subs.len(), 3, "{subs:?}");
    assert_eq!(subs[0]["type"], "market");
    assert!(subs[1..].iter().all(|s| s["operation"] == "subscribe" && s["custom_feature_enabled"] == true));
    let sizes: Vec<usize> = subs.iter().map(|s| s["assets_ids"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, vec![100, 100, 50]);
    let mut all: Vec<String> = subs
        .iter()
        .flat_map(|s| s["assets_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()))
        .collect();
    all.sort();
    assert_eq!(all, toks);
    let recs = events(&lines, "subscribe");
    assert_eq!(recs.len(), 3);
    assert!(recs
        .iter()
        .enumerate()
        .all(|(i, r)| r["ctx"]["batch"] == i && r["ctx"]["batches"] == 3 && r["ctx"]["initial"] == true));
    assert!(recs.iter().zip(&got).all(|(r, g)| r["ctx"]["message"] == g.text.as_str()), "each frame recorded verbatim");
    // One frame with all 250 ids (what rs-clob-client-v2#116 did): closed after every subscribe,
    // reconnected again and again — recorded, with back-off, never a crash.
    let (_, conns, closed, lines) = run("250");
    assert!(closed >= 2 && conns >= 2, "closed {closed} of {conns}");
    assert!(events(&lines, "close").iter().any(|l| l["ctx"]["by"] == "server"));
    assert!(events(&lines, "reconnect_wait").len() >= 2);
}

#[test]
fn a_half_open_connection_is_ended_by_the_inbound_silence_watchdog() {
    // Connection 0 freezes after its first frame (no close, no FIN, no PONG); connection 1 holds and
    // answers PING: its PONGs alone keep the inbound-silence watchdog quiet.
    let book = frame("ws_book_snapshot_captured.json");
    let server = WsServer::start(vec![
        Script { frames: vec![book.clone()], after: After::Freeze },
        Script { frames: vec![book], after: After::Hold },
    ]);
    let venue = Venue::start();
    let input = market_line("ac", &[A7667], -5.0, 4.0);
    let out = common::run_with_timeout(
        stream_cmd(&server, &venue, &["--idle-secs", "1", "--silence-secs", "30"]),
        Some(input.as_bytes()),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = common::jsonl(&out.stdout);
    assert_typed_ctx(&lines);
    let wd = events(&lines, "watchdog");
    assert!(!wd.is_empty(), "the watchdog fired");
    assert_eq!(wd[0]["ctx"]["reason"], "inbound_silence");
    assert_eq!(wd[0]["ctx"]["conn_id"], 0);
    assert_eq!(wd[0]["ctx"]["limit_s"], 1.0);
    assert!(events(&lines, "close").iter().any(|l| l["ctx"]["conn_id"] == 0
        && l["ctx"]["by"] == "client"
        && l["ctx"]["reason"] == "watchdog_inbound_silence"));
    assert!(events(&lines, "reconnect_wait")
        .iter()
        .any(|l| l["ctx"]["after"] == "watchdog" && l["ctx"]["reason"] == "inbound_silence"));
    // Reconnected and re-subscribed; the healthy connection (PONGs only after its book) was not cut.
    assert!(server.got().iter().any(|g| g.conn == 1 && g.text.contains("\"assets_ids\"")), "re-subscribed");
    assert!(wd.iter().all(|l| l["ctx"]["conn_id"] == 0), "only the frozen connection: {wd:?}");
    let pongs1 =
        events(&lines, "frame").iter().filter(|l| l["ctx"]["conn_id"] == 1 && l["body_text"] == "PONG").count();
    assert!(pongs1 >= 2, "PONGs on the healthy connection: {pongs1}");
}

#[test]
fn a_reconnect_subscribes_the_wanted_set_from_scratch() {
    // Market A is tracked at start and ends at +1 s; market B is tracked from +0.5 s to +6 s. The
    // server closes connection 0 after 3 s: connection 1 must subscribe exactly B's tokens (added
    // and removed on connection 0 meanwhile) in its first frame.
    let server = WsServer::start(vec![
        Script { frames: vec![], after: After::CloseAfterMs(3000) },
        Script { frames: vec![], after: After::Hold },
    ]);
    let venue = Venue::start();
    let mut input = market_line("ad", &["111", "112"], -10.0, 1.0);
    input.push_str(&market_line("ae", &["221", "222"], 0.5, 6.0));
    let out = common::run_with_timeout(
        stream_cmd(&server, &venue, &["--silence-secs", "30"]),
        Some(input.as_bytes()),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = server.got();
    let on = |k: usize| -> Vec<Value> {
        got.iter().filter(|g| g.conn == k && g.text != "PING").map(|g| serde_json::from_str(&g.text).unwrap()).collect()
    };
    let c0 = on(0);
    assert_eq!(c0[0]["assets_ids"], json!(["111", "112"]));
    assert!(c0.iter().any(|m| m["operation"] == "subscribe" && m["assets_ids"] == json!(["221", "222"])), "{c0:?}");
    assert!(c0.iter().any(|m| m["operation"] == "unsubscribe" && m["assets_ids"] == json!(["111", "112"])), "{c0:?}");
    let c1 = on(1);
    assert_eq!(
        c1[0],
        serde_json::from_str::<Value>(&pm_archive::polymarket::stream::subscribe_message(&[
            "221".into(),
            "222".into()
        ]))
        .unwrap()
    );
    assert_eq!(c1.len(), 1, "nothing else to send: {c1:?}");
    let lines = common::jsonl(&out.stdout);
    assert!(events(&lines, "close").iter().any(|l| l["ctx"]["conn_id"] == 0 && l["ctx"]["by"] == "server"));
    let sub1: Vec<&Value> = events(&lines, "subscribe").into_iter().filter(|l| l["ctx"]["conn_id"] == 1).collect();
    assert_eq!(sub1.len(), 1);
    assert_eq!(sub1[0]["ctx"]["token_ids"], json!(["221", "222"]));
    assert_eq!(sub1[0]["ctx"]["initial"], true);
}

#[test]
fn the_modelled_venue_streams_what_real_captures_show_and_pm_rebuild_reads_it() {
    // Two windows back to back on one connection, 200 events/s from the modelled venue.
    let server = WsServer::start_with(Behaviour::Model { events_per_sec: 200.0, seed: 7 }, Some(100));
    let venue = Venue::start();
    let mut input = market_line("af", &["31", "32"], -5.0, 1.5);
    input.push_str(&market_line("ag", &["41", "42"], 1.5, 3.0));
    let out = common::run_with_timeout(
        stream_cmd(&server, &venue, &["--silence-secs", "30", "--no-rest"]),
        Some(input.as_bytes()),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = common::jsonl(&out.stdout);
    let texts: Vec<String> = events(&lines, "frame").iter().map(|l| frame_text(l)).collect();
    // Initial dumps are arrays of books with tick_size and last_trade_price, one per (re)subscribe.
    let dumps: Vec<&String> = texts.iter().filter(|t| t.starts_with("[{")).collect();
    assert!(dumps.len() >= 2, "one per subscribe: {}", dumps.len());
    assert!(dumps.iter().all(|t| t.contains("\"tick_size\"") && t.contains("\"last_trade_price\"")));
    // price_change frames with `", "` / `": "` separators and `event_type` last, kept as sent.
    let out_text = String::from_utf8_lossy(&out.stdout);
    let pc =
        out_text.lines().find(|l| l.contains("\"price_changes\": [{\"asset_id\": ")).expect("a spaced price_change");
    assert!(pc.contains("\"body\":{\"market\": \"0x") && pc.contains(", \"event_type\": \"price_change\"}"), "{pc}");
    // Refreshes after trades: `book` without tick_size / last_trade_price, right after a last_trade_price.
    let bodies: Vec<Value> = texts.iter().filter_map(|t| serde_json::from_str(t).ok()).collect();
    let refresh = bodies.windows(2).any(|w| {
        w[0]["event_type"] == "last_trade_price"
            && w[1]["event_type"] == "book"
            && w[1].get("tick_size").is_none()
            && w[1].get("last_trade_price").is_none()
    });
    assert!(refresh, "a trade followed by a refresh book");
    // Same-timestamp bursts: consecutive price_change messages of one asset with one timestamp and hash.
    let burst = bodies.windows(3).any(|w| {
        w.iter().all(|b| b["event_type"] == "price_change")
            && w[0]["timestamp"] == w[1]["timestamp"]
            && w[1]["timestamp"] == w[2]["timestamp"]
            && w[0]["price_changes"][0]["hash"] == w[2]["price_changes"][0]["hash"]
    });
    assert!(burst, "a same-timestamp burst");
    let counts = summed_event_types(&lines);
    for k in ["book", "price_change", "last_trade_price", "best_bid_ask", "future_event"] {
        assert!(counts.get(k).is_some_and(|n| *n > 0), "{k}: {counts:?}");
    }
    // The modelled hashes follow the venue's routine: pm-rebuild verifies the books and the changes.
    let dir = common::tempdir("stream-model");
    let (out, s, _) = rebuild(&pm_lines(&lines), &dir, &[]);
    assert!(out.status.code().is_some(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(s["ws_book_hash_matched"].as_u64().unwrap() >= 4, "{s:#}");
    assert!(s["hashes_matched"].as_u64().unwrap() > 0, "{s:#}");
}

#[test]
fn the_modelled_venue_hashes_verify_under_an_independent_check() {
    // An oracle independent of pm-rebuild: apply the model's frames to books kept here, verify a
    // same-timestamp burst once at its end, and carry `tick_size`/the traded price over into the
    // refresh books that lack them. Every hash the model sends must verify.
    use std::collections::BTreeMap;
    let mut m = common::ws::Model::new(11);
    let ids: Vec<String> = vec!["501".into(), "502".into(), "503".into()];
    let mut msgs: Vec<Value> = serde_json::from_str(&m.initial_dump(&ids)).unwrap();
    for i in 0..3000 {
        for f in m.event(&ids[i % 3]) {
            msgs.push(serde_json::from_str(&f).unwrap());
        }
    }
    // asset → (market, bids, asks, last_trade_price), levels in wire order.
    type Side = Vec<(String, String)>;
    let mut books: BTreeMap<String, (String, Side, Side, String)> = BTreeMap::new();
    let side = |v: &Value| -> Side {
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| (l["price"].as_str().unwrap().into(), l["size"].as_str().unwrap().into()))
            .collect()
    };
    let check = |b: &(String, Side, Side, String), asset: &str, ts: &str| -> String {
        let (mos, tick, neg, ltp) = (json!("5"), json!("0.01"), json!(false), json!(b.3));
        pm_archive::polymarket::bookhash::hash(&pm_archive::polymarket::bookhash::HashInput {
            market: &b.0,
            asset_id: asset,
            timestamp: ts,
            bids: b.1.iter().map(|(p, s)| (p.as_str(), s.as_str())).collect(),
            asks: b.2.iter().map(|(p, s)| (p.as_str(), s.as_str())).collect(),
            min_order_size: &mos,
            tick_size: &tick,
            neg_risk: &neg,
            last_trade_price: &ltp,
        })
    };
    let (mut ok, mut bursts, mut refreshes) = (0, 0, 0);
    let mut i = 0;
    while i < msgs.len() {
        let m = &msgs[i];
        match m["event_type"].as_str().unwrap() {
            "book" => {
                let a = m["asset_id"].as_str().unwrap().to_string();
                let ltp = match m.get("last_trade_price") {
                    Some(v) => v.as_str().unwrap().to_string(),
                    None => {
                        assert!(m.get("tick_size").is_none());
                        refreshes += 1;
                        books[&a].3.clone()
                    }
                };
                let b = (m["market"].as_str().unwrap().to_string(), side(&m["bids"]), side(&m["asks"]), ltp);
                assert_eq!(check(&b, &a, m["timestamp"].as_str().unwrap()), m["hash"], "book {i}");
                books.insert(a, b);
                ok += 1;
            }
            "last_trade_price" => {
                books.get_mut(m["asset_id"].as_str().unwrap()).unwrap().3 = m["price"].as_str().unwrap().into();
            }
            "price_change" => {
                let ts = m["timestamp"].clone();
                let mut j = i;
                while j < msgs.len() && msgs[j]["event_type"] == "price_change" && msgs[j]["timestamp"] == ts {
                    for e in msgs[j]["price_changes"].as_array().unwrap() {
                        let b = books.get_mut(e["asset_id"].as_str().unwrap()).unwrap();
                        let bid = e["side"] == "BUY";
                        let lv = if bid { &mut b.1 } else { &mut b.2 };
                        let p = e["price"].as_str().unwrap();
                        lv.retain(|(q, _)| q != p);
                        if e["size"] != "0" {
                            lv.push((p.into(), e["size"].as_str().unwrap().into()));
                        }
                        let num = |s: &str| s.parse::<f64>().unwrap();
                        lv.sort_by(|x, y| num(&x.0).partial_cmp(&num(&y.0)).unwrap());
                        if !bid {
                            lv.reverse();
                        }
                    }
                    j += 1;
                }
                if j - i > 1 {
                    bursts += 1;
                }
                let last = msgs[j - 1]["price_changes"].as_array().unwrap().last().unwrap().clone();
                let a = last["asset_id"].as_str().unwrap();
                assert_eq!(check(&books[a], a, ts.as_str().unwrap()), last["hash"], "price_change {i}..{j}");
                ok += 1;
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    assert!(bursts > 50 && refreshes > 30, "bursts {bursts}, refreshes {refreshes}");
    assert!(ok > 2500, "{ok} hashes verified");
}
