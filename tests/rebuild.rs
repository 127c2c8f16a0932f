//! pm-rebuild on real captures (issue 12 §1): same-timestamp bursts, book refreshes without
//! `tick_size`/`last_trade_price`, trades the capture does not hold, REST books with missing
//! fields, numeric timestamps, and what the summary counts. No network: the raw lines are built
//! here from recorded frames (DERIVED envelopes, as pm-stream writes them).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::venue::fixture;
use serde_json::{json, Value};

/// Asset 7667…1111 of the crossing-burst capture (the one whose `book` the capture holds).
const A: &str = "76670567130917723816490572615540605537878462672464291990940067659127658071111";
const BURST: &str = "ws_market_price_change_crossing_burst_full.json";
/// Exchange time of the same-timestamp burst (three `price_change` messages, one hash).
const BURST_TS: i64 = 1790658827000;

/// The messages of a recorded file (a JSON array of messages), each as a JSON value.
fn messages(name: &str) -> Vec<Value> {
    serde_json::from_slice(&fixture(name)).unwrap()
}

/// Raw envelopes as pm-stream writes them for these frame bodies (DERIVED: receive times one
/// second apart from `start`, HH:MM:SS on the capture's day).
fn frame_lines(bodies: &[Value], day: &str, start_s: u32) -> Vec<String> {
    bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let s = start_s + i as u32;
            json!({"schema": "pmarchive.raw/1", "venue": "polymarket", "run_id": "derived", "seq": i, "kind": "ws",
                "collected_at_utc": format!("{day}T{:02}:{:02}:{:02}.000000Z", s / 3600, s / 60 % 60, s % 60),
                "body_kind": "json", "body": b, "ctx": {"event": "frame", "conn_id": 0, "frame_no": i}})
            .to_string()
        })
        .collect()
}

fn write_lines(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

/// Runs pm-rebuild over files; returns (output, summary, rows).
fn rebuild(dir: &Path, files: &[&Path], extra: &[&str]) -> (Output, Value, Vec<Value>) {
    let summary = dir.join("summary.json");
    let mut c = common::tool("pm-rebuild");
    // The captures are replayed long after their exchange time: --max-lag keeps `recv_far` out.
    c.args(["--summary", summary.to_str().unwrap(), "--depth", "all", "--max-lag", "100000000"]).args(extra);
    c.args(files);
    let out = common::run_with_timeout(c, None, Duration::from_secs(60));
    let s: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    (out.clone(), s, common::jsonl(&out.stdout))
}

fn flags(r: &Value) -> Vec<&str> {
    r["flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect()
}

/// A `last_trade_price` event of asset A (DERIVED: the trade the capture did not keep, at the price
/// the venue's hash after the burst needs).
fn trade_0301() -> Value {
    json!({"market": "0x285746de0e4f751fd4dc8f9dc2cecd0101ba9ad0096a43145ed9643b09514f01", "asset_id": A,
        "price": "0.301", "size": "45.83", "side": "SELL", "fee_rate_bps": "0", "timestamp": BURST_TS.to_string(),
        "event_type": "last_trade_price"})
}

#[test]
fn the_full_crossing_burst_capture_verifies_with_one_row_per_burst() {
    let dir = common::tempdir("rebuild-burst");
    let msgs = messages(BURST);
    assert_eq!(msgs.len(), 51);
    let raw = write_lines(&dir, "raw.jsonl", &frame_lines(&msgs, "2026-09-29", 5 * 3600 + 11 * 60));
    let (out, s, rows) = rebuild(&dir, &[&raw], &[]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));

    // Every hash the capture holds for asset A verifies: its `book`, the 46 states of single
    // price_change messages, the burst's end state, and the refresh after the trade.
    assert_eq!(s["hash_checks"], 49, "{s:#}");
    assert_eq!(s["hash_checks_matched"], 49);
    assert_eq!(s["hash_checks_mismatched"], 0);
    assert_eq!(s["hash_checks_unverifiable"], 0);
    assert_eq!(s["verified_rate"], 1.0);
    assert_eq!(s["hashes_mismatched"], 0);
    assert_eq!(s["assets"][A]["trusted_at_end"], true);
    // The burst's end state needs `last_trade_price` "0.301", from a trade the source did not keep:
    // found on the tick grid (the hash proves it); the refresh then verifies with that price.
    assert_eq!(s["matched_with_inferred_trade_price"], 1);
    assert_eq!(s["books_without_tick_size"], 1);
    assert_eq!(s["books_without_last_trade_price"], 1);
    // The three burst messages are one state: two changes merged, one check, one row.
    assert_eq!(s["changes_merged"], 2);
    assert_eq!(s["files"].as_array().unwrap().len(), 1);
    assert_eq!(s["files"][0]["hash_checks"], 49);
    assert_eq!(s["files"][0]["verified_rate"], 1.0);

    let ra: Vec<&Value> = rows.iter().filter(|r| r["asset_id"] == A).collect();
    assert_eq!(ra.len(), 1 + 46 + 1 + 1, "book, 46 single states, the burst, the refresh");
    assert!(ra.iter().all(|r| r["hash_ok"] == true), "every row verified");
    assert!(ra.iter().all(|r| r["tick_size"] == "0.001"), "the refresh's tick size is carried over");
    assert!(
        ra.iter().all(|r| !flags(r).iter().any(|f| ["crossed", "locked", "hash_mismatch", "untrusted"].contains(f))),
        "no false crossed/locked rows: {:#?}",
        ra.iter().map(|r| &r["flags"]).collect::<Vec<_>>()
    );
    let burst: Vec<&&Value> = ra.iter().filter(|r| r["exchange_ts_ms"] == BURST_TS).collect();
    assert_eq!(burst.len(), 2);
    // The burst's row is the state after its last message (frame 49), then the refresh (frame 50).
    assert_eq!(burst[0]["raw_seq"], 49);
    assert_eq!(burst[0]["last_trade_price"], "0.301");
    assert_eq!((&burst[0]["best_bid_price"], &burst[0]["best_ask_price"]), (&json!("0.29"), &json!("0.301")));
    assert_eq!(burst[1]["raw_seq"], 50);
    assert_eq!(burst[1]["flags"], json!(["duplicate"]), "the refresh repeats the burst's state");

    // With the trade in the input (DERIVED) before the burst's end is settled, the price comes from
    // it; arriving only after the refresh, it is too late for the burst and the grid finds it.
    for at in [46, 50, 51] {
        let mut m = msgs.clone();
        m.insert(at, trade_0301());
        let raw = write_lines(&dir, "raw-trade.jsonl", &frame_lines(&m, "2026-09-29", 5 * 3600 + 11 * 60));
        let (out, s, _) = rebuild(&dir, &[&raw], &[]);
        assert!(out.status.success());
        assert_eq!(s["hash_checks_matched"], 49, "trade at {at}: {s:#}");
        let via_trade = u64::from(at < 51);
        assert_eq!(s["matched_with_trade_price"], via_trade, "trade at {at}");
        assert_eq!(s["matched_with_inferred_trade_price"], 1 - via_trade, "trade at {at}");
    }
}

#[test]
fn a_refresh_whose_trade_price_cannot_be_found_is_unverifiable_not_a_gap() {
    // DERIVED: the refresh's hash replaced by one no trade price reproduces. Its levels are the
    // venue's, so the asset stays trusted; the check is unverifiable, the exit status 0.
    let dir = common::tempdir("rebuild-unverifiable");
    let mut msgs = messages(BURST);
    msgs[50]["hash"] = json!("1".repeat(40));
    let raw = write_lines(&dir, "raw.jsonl", &frame_lines(&msgs, "2026-09-29", 5 * 3600 + 11 * 60));
    let (out, s, rows) = rebuild(&dir, &[&raw], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s["hash_checks"], 49, "{s:#}");
    assert_eq!(s["hash_checks_matched"], 48);
    assert_eq!(s["unverifiable"]["trade_price_unknown"], 1);
    assert_eq!(s["ws_book_hash_unverifiable"], 1);
    assert_eq!(s["hashes_mismatched"], 0);
    let last = rows.iter().rfind(|r| r["asset_id"] == A).unwrap();
    assert_eq!(last["hash_ok"], Value::Null);
    assert_eq!(last["tick_size"], "0.001", "never a null tick size when a state had one");
    assert_eq!(flags(last), ["hash_unverifiable"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("trade_price_unknown=1"));
}

#[test]
fn another_real_capture_verifies_book_change_and_refresh() {
    // tests/fixtures/external: three real frames of 2025-12-23 (initial books without tick_size,
    // a price_change whose hashes need a trade at 0.490 the capture does not hold, a refresh
    // without tick_size/last_trade_price whose hash needs 0.500).
    let dir = common::tempdir("rebuild-external");
    let text = std::fs::read_to_string(
        common::venue::fixtures_dir().join("../external/ws_market_frames_polybot_go_2025-12-23.txt"),
    )
    .unwrap();
    let bodies: Vec<Value> =
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(bodies.len(), 3);
    let raw = write_lines(&dir, "raw.jsonl", &frame_lines(&bodies, "2025-12-23", 9 * 3600 + 19 * 60 + 7));

    // The initial books carry no tick size and nothing earlier has one: unverifiable, said so.
    let (out, s, rows) = rebuild(&dir, &[&raw], &[]);
    assert!(out.status.success());
    assert_eq!(s["hash_checks"], 5, "{s:#}");
    assert_eq!(s["unverifiable"]["tick_size_unknown"], 5);
    assert!(rows.iter().all(|r| r["hash_ok"].is_null() && flags(r).contains(&"missing_field")));

    // With the market's tick size (Gamma `orderPriceMinTickSize`), all five verify.
    let (out, s, rows) = rebuild(&dir, &[&raw], &["--tick-size", "0.01"]);
    assert!(out.status.success());
    assert_eq!(s["hash_checks_matched"], 5, "{s:#}");
    assert_eq!(s["matched_with_inferred_trade_price"], 3);
    let ltp: Vec<&str> = rows.iter().map(|r| r["last_trade_price"].as_str().unwrap()).collect();
    assert_eq!(ltp, ["0.500", "0.500", "0.490", "0.490", "0.500"]);
    assert!(rows.iter().all(|r| r["tick_size"] == "0.01" && r["hash_ok"] == true));
}

#[test]
fn a_rest_book_with_missing_fields_is_unverifiable_as_in_pm_normalize() {
    // The recorded REST book (clob_book_rest_empty_ask.json) without min_order_size and neg_risk
    // (DERIVED): pm-normalize says hash_ok null + hash_unverifiable; pm-rebuild must agree, invent
    // nothing and count no mismatch.
    let dir = common::tempdir("rebuild-rest-missing");
    let mut book: Value = serde_json::from_slice(&fixture("clob_book_rest_empty_ask.json")).unwrap();
    book.as_object_mut().unwrap().remove("min_order_size");
    book.as_object_mut().unwrap().remove("neg_risk");
    let line = json!({"schema": "pmarchive.raw/1", "venue": "polymarket", "run_id": "derived", "seq": 3, "kind": "http",
        "endpoint": "books", "status": 200, "collected_at_utc": "2026-08-03T05:27:48.100000Z", "body_kind": "json",
        "body": [book], "ctx": {"reason": "ws_resync", "conn_id": 0}});
    let raw = write_lines(&dir, "raw.jsonl", &[line.to_string()]);
    let (out, s, rows) = rebuild(&dir, &[&raw], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s["rest_books"], 1);
    assert_eq!(s["rest_hash_unverifiable"], 1, "{s:#}");
    assert_eq!(s["rest_hash_mismatched"], 0);
    assert_eq!(s["hash_checks"], 1);
    assert_eq!(s["unverifiable"]["rest_fields_missing"], 1);
    assert_eq!(rows.len(), 1);
    let mut c = common::tool("pm-normalize");
    c.args(["--depth", "all", "--max-lag", "100000000"]).arg(&raw);
    let n = common::run_with_timeout(c, None, Duration::from_secs(10));
    let nrows = common::jsonl(&n.stdout);
    assert_eq!(nrows.len(), 1);
    let (mut w, r) = (rows[0].clone(), nrows[0].clone());
    assert_eq!(w["source"], "ws_rest");
    assert_eq!(w["hash_ok"], Value::Null);
    assert_eq!(w["min_order_size"], Value::Null, "nothing invented");
    assert_eq!(w["neg_risk"], Value::Null);
    assert!(flags(&w).contains(&"hash_unverifiable") && flags(&w).contains(&"missing_field"));
    w["source"] = r["source"].clone();
    assert_eq!(w, r, "the rows differ only in source");
}

#[test]
fn numeric_timestamps_are_accepted_and_counted() {
    // DERIVED: the capture's first 16 messages with every `timestamp` as a JSON number.
    let dir = common::tempdir("rebuild-numeric-ts");
    let mut msgs: Vec<Value> = messages(BURST).into_iter().take(16).collect();
    for m in &mut msgs {
        let t: i64 = m["timestamp"].as_str().unwrap().parse().unwrap();
        m["timestamp"] = json!(t);
    }
    let raw = write_lines(&dir, "raw.jsonl", &frame_lines(&msgs, "2026-09-29", 5 * 3600 + 11 * 60));
    let (out, s, rows) = rebuild(&dir, &[&raw], &[]);
    assert!(out.status.success());
    assert_eq!(s["numeric_timestamps"], 16, "{s:#}");
    assert_eq!(s["hash_checks_matched"], 16, "the hash is over the digits, as for strings");
    assert_eq!(rows.len(), 16);
    assert!(String::from_utf8_lossy(&out.stderr).contains("numeric_timestamps=16"));
}

/// A REST `/books` reply line (DERIVED) holding the state of one of pm-rebuild's own rows of asset
/// A (levels back in wire order), received at `at`.
fn rest_snapshot(row: &Value, at: &str) -> Value {
    let rev = |a: &Value| a.as_array().unwrap().iter().rev().cloned().collect::<Vec<_>>();
    json!({"schema": "pmarchive.raw/1", "kind": "http", "endpoint": "books", "status": 200,
        "collected_at_utc": at, "body": [{"market": row["market"], "asset_id": A,
        "timestamp": row["exchange_ts_ms"].to_string(), "hash": row["hash"], "bids": rev(&row["bids"]),
        "asks": rev(&row["asks"]), "min_order_size": "5", "tick_size": "0.001", "neg_risk": false,
        "last_trade_price": row["last_trade_price"]}], "ctx": {"reason": "ws_resync", "conn_id": 1}})
}

#[test]
fn untrusted_time_is_counted_per_file_and_every_check_is_in_the_summary() {
    // DERIVED: the venue hash of asset A in message 5 zeroed (a detected gap, untrusted from its
    // receive time to the end of file 1); file 2 holds the next messages a day later, then a REST
    // snapshot (DERIVED from pm-rebuild's own row) that resyncs.
    let dir = common::tempdir("rebuild-per-file");
    let mut msgs = messages(BURST);
    for e in msgs[5]["price_changes"].as_array_mut().unwrap() {
        if e["asset_id"] == A {
            e["hash"] = json!("0".repeat(40));
        }
    }
    let f1 = write_lines(&dir, "f1.jsonl", &frame_lines(&msgs[..11], "2026-09-29", 5 * 3600 + 12 * 60));
    let (_, _, ref_rows) =
        rebuild(&dir, &[&write_lines(&dir, "all.jsonl", &frame_lines(&messages(BURST), "2026-09-29", 0))], &[]);
    let after15 = ref_rows.iter().filter(|r| r["asset_id"] == A).nth(15).unwrap();
    let rest = rest_snapshot(after15, "2026-09-30T06:00:05.000000Z");
    let mut l2 = frame_lines(&msgs[11..16], "2026-09-30", 6 * 3600);
    l2.push(rest.to_string());
    let f2 = write_lines(&dir, "f2.jsonl", &l2);
    let (out, s, _) = rebuild(&dir, &[&f1, &f2], &[]);
    assert_eq!(out.status.code(), Some(1), "the gap is a finding");
    assert_eq!(s["hashes_mismatched"], 1, "{s:#}");
    assert_eq!(s["resyncs_rest"], 1);
    assert_eq!(s["assets"][A]["trusted_at_end"], true);
    // File 1: untrusted from message 5 (05:12:05) to its last line (05:12:10); file 2: from its
    // first line (06:00:00) to the REST snapshot (06:00:05) — not the day in between.
    let files = s["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["untrusted_s"], 5.0, "{s:#}");
    assert_eq!(files[1]["untrusted_s"], 5.0);
    assert_eq!(s["untrusted_s"], 10.0);
    // Every check is counted: book + 10 states in file 1; 5 states + the REST book in file 2.
    assert_eq!(files[0]["hash_checks"], 11);
    assert_eq!(files[1]["hash_checks"], 6);
    assert_eq!(s["hash_checks"], 17);
    assert_eq!(s["rest_hash_matched"], 1);
    assert_eq!(files[0]["mismatched"], 1, "the gap; the states after it match again (still untrusted)");
    assert_eq!(s["matches_while_untrusted"], 10);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hash_checks=17"), "{stderr}");
}

#[test]
fn trades_out_writes_pm_tradesets_row_type_atomically() {
    // Two DERIVED prints in the recorded capture: one without a transaction hash, one with.
    let dir = common::tempdir("rebuild-trades");
    let mut msgs = messages(BURST);
    let mut second = trade_0301();
    second["timestamp"] = json!((BURST_TS + 5).to_string());
    second["side"] = json!("BUY");
    second["transaction_hash"] = json!("0x5eed");
    msgs.insert(1, second);
    msgs.insert(1, trade_0301());
    let raw = write_lines(&dir, "raw.jsonl", &frame_lines(&msgs, "2026-09-29", 5 * 3600 + 11 * 60));
    let out_dir = dir.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let trades = out_dir.join("trades.jsonl");
    let (out, s, _) = rebuild(&dir, &[&raw], &["--trades-out", trades.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s["trades"], 2);
    // Written through the atomic write: the final file only, no temp file left beside it.
    let names: Vec<String> =
        std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["trades.jsonl"]);
    // One type for pmarchive.trade/1: the rows are pm-tradeset's TradeRow ...
    let text = std::fs::read_to_string(&trades).unwrap();
    let rows: Vec<pm_archive::polymarket::tradeset::TradeRow> =
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].source.as_str(), rows[0].transaction_hash.as_deref()), ("ws", None));
    assert_eq!(rows[1].key, format!("ws|{A}|0.301|45.83|BUY|{}|0x5eed", BURST_TS + 5));
    // ... byte for byte what pm-tradeset writes for the same raw file.
    let mut c = common::tool("pm-tradeset");
    c.arg(&raw);
    let ts = common::run_with_timeout(c, None, Duration::from_secs(60));
    assert!(ts.status.success(), "{}", String::from_utf8_lossy(&ts.stderr));
    assert_eq!(String::from_utf8(ts.stdout).unwrap(), text);
}

/// sha256 of the rows pm-rebuild wrote for the golden input below with the code before issue 14's
/// rebuild work (commit 911f5d2, release build): the rows must stay byte-identical.
const GOLDEN_ROWS_SHA256: &str = "a244a906432863d98e79232a78e95a842352083c51cdc815d0558c650ff8ecfd";

/// The golden input: the recorded crossing burst with a DERIVED trade (a match through a trade
/// price, a grid search, a refresh) and the external capture (inferred trade prices, --tick-size).
fn golden_inputs(dir: &Path) -> [PathBuf; 2] {
    let mut msgs = messages(BURST);
    msgs.insert(46, trade_0301());
    let burst = write_lines(dir, "burst.jsonl", &frame_lines(&msgs, "2026-09-29", 5 * 3600 + 11 * 60));
    let text = std::fs::read_to_string(
        common::venue::fixtures_dir().join("../external/ws_market_frames_polybot_go_2025-12-23.txt"),
    )
    .unwrap();
    let bodies: Vec<Value> =
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
    [burst, write_lines(dir, "external.jsonl", &frame_lines(&bodies, "2025-12-23", 9 * 3600 + 19 * 60 + 7))]
}

#[test]
fn rows_are_byte_identical_to_the_golden_rows() {
    // Every level; with the SHA-1 on the rebuilding thread (--threads 1, 2) and on a thread of its
    // own (3: besides the rebuilding and the row thread).
    let dir = common::tempdir("rebuild-golden");
    let [burst, external] = golden_inputs(&dir);
    for threads in ["1", "2", "3"] {
        let (out, s, rows) = rebuild(&dir, &[&burst, &external], &["--tick-size", "0.01", "--threads", threads]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!((s["hash_checks"].as_u64(), s["hash_checks_matched"].as_u64()), (Some(54), Some(54)), "{s:#}");
        assert_eq!(rows.len(), 54);
        let sha = pm_archive::util::hex(&<sha2::Sha256 as sha2::Digest>::digest(&out.stdout));
        assert_eq!(sha, GOLDEN_ROWS_SHA256, "--threads {threads}");
    }
}

/// SHA-1 on a thread of its own (verdicts reached later, in settle order) changes nothing: the
/// same rows, trades, summary and exit status as on the rebuild thread, on inputs with trade
/// prices found late, refreshes, a detected gap, untrusted spans over two files, a REST resync,
/// a cross-check and `track` lines between states.
#[test]
fn every_thread_count_writes_the_same_rows_trades_and_summary() {
    let dir = common::tempdir("rebuild-threads");
    let [burst, external] = golden_inputs(&dir);
    // DERIVED: a gap (asset A's hash zeroed in message 5), `track` lines between messages, the
    // rest of the capture, a REST snapshot of the last state (a cross-check at the same time),
    // then the capture again a day later.
    let mut msgs = messages(BURST);
    for e in msgs[5]["price_changes"].as_array_mut().unwrap() {
        if e["asset_id"] == A {
            e["hash"] = json!("0".repeat(40));
        }
    }
    let (_, _, ref_rows) = rebuild(&dir, &[&burst], &["--threads", "1"]);
    let last = ref_rows.iter().rfind(|r| r["asset_id"] == A).unwrap();
    let rest = rest_snapshot(last, "2026-09-29T06:00:05.000000Z");
    let track = json!({"schema": "pmarchive.raw/1", "kind": "track", "collected_at_utc": "2026-09-29T05:11:30.000000Z",
        "ctx": {"token_id": A, "slug": "btc-updown-15m-derived", "outcome": "Up"}});
    let mut lines = frame_lines(&msgs, "2026-09-29", 5 * 3600 + 11 * 60);
    lines.insert(20, track.to_string());
    lines.insert(9, track.to_string());
    lines.push(rest.to_string());
    let gap = write_lines(&dir, "gap.jsonl", &lines);
    // DERIVED, a day later: the burst's state settled by a change (without a hash) before the trade
    // its hash needs arrives — found on the tick grid, never through that later trade's price.
    let mut later = messages(BURST);
    let change = json!({"event_type": "price_change", "market": later[49]["market"], "timestamp": (BURST_TS + 1).to_string(),
        "price_changes": [{"asset_id": A, "price": "0.2", "size": "1", "side": "BUY"}]});
    later.splice(50..50, [change, trade_0301()]);
    let again = write_lines(&dir, "again.jsonl", &frame_lines(&later, "2026-09-30", 5 * 3600));
    let inputs: [&[&Path]; 2] = [&[&burst, &external], &[&gap, &again, &burst]];
    for files in inputs {
        let mut runs = Vec::new();
        // A hashing thread (and the row thread hashing between rows) with rows from --threads 3,
        // without rows from 2.
        let variants = [("1", true), ("2", true), ("3", true), ("4", true), ("1", false), ("2", false)];
        for (threads, rows) in variants {
            let trades = dir.join(format!("trades-{threads}-{rows}.jsonl"));
            let mut args = vec!["--tick-size", "0.01", "--threads", threads, "--trades-out", trades.to_str().unwrap()];
            if !rows {
                args.push("--no-rows");
            }
            let (out, s, _) = rebuild(&dir, files, &args);
            runs.push((out.status.code(), out.stdout, s, std::fs::read(&trades).unwrap()));
        }
        assert!(runs[0].2["hash_checks"].as_u64().unwrap() > 50, "{:#}", runs[0].2);
        for (i, r) in runs.iter().enumerate().skip(1) {
            let first = &runs[if i < 4 { 0 } else { 4 }];
            assert_eq!(r.0, first.0, "exit status");
            assert!(r.1 == first.1, "rows differ");
            assert_eq!(r.2, first.2, "summary");
            assert!(r.3 == first.3, "trades differ");
        }
        let (mut with_rows, mut without) = (runs[0].2.clone(), runs[4].2.clone());
        for k in ["rows", "row_flags", "unjoined_rows"] {
            with_rows.as_object_mut().unwrap().remove(k);
            without.as_object_mut().unwrap().remove(k);
        }
        assert_eq!(with_rows, without, "the verification does not depend on the rows");
    }
}

/// The row writer keeps what it found on a side until that side changes (normalize::SideMemo):
/// a tick change must still re-check the side it did not touch. Here the asks never change, and
/// their 0.55 is off the new 0.1 tick, while every bid (0.4, then 0.3) is on it.
#[test]
fn a_tick_change_rechecks_the_side_that_did_not_change() {
    let dir = common::tempdir("rebuild-tick-memo");
    let (a, m) = ("123", "0xabc");
    let bodies = [
        json!({"event_type": "book", "market": m, "asset_id": a, "timestamp": "1795708800000", "hash": "x",
            "bids": [{"price": "0.40", "size": "10"}], "asks": [{"price": "0.55", "size": "10"}],
            "tick_size": "0.01", "min_order_size": "5", "neg_risk": false, "last_trade_price": "0.5"}),
        json!({"event_type": "tick_size_change", "market": m, "asset_id": a, "old_tick_size": "0.01",
            "new_tick_size": "0.1", "timestamp": "1795708801000"}),
        json!({"event_type": "price_change", "market": m, "timestamp": "1795708802000", "price_changes": [
            {"asset_id": a, "price": "0.3", "size": "7", "side": "BUY", "hash": "y", "best_bid": "0.4", "best_ask": "0.55"}]}),
    ];
    let f = write_lines(&dir, "tick.jsonl", &frame_lines(&bodies, "2026-11-24", 57600));
    let (out, _, rows) = rebuild(&dir, &[&f], &[]);
    assert!(out.status.code().is_some(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let books: Vec<&Value> = rows.iter().filter(|r| r["record"] == "book").collect();
    assert_eq!(books.len(), 2, "{rows:?}");
    assert_eq!((books[0]["tick_size"].as_str(), flags(books[0]).contains(&"off_tick")), (Some("0.01"), false));
    assert_eq!((books[1]["tick_size"].as_str(), books[1]["bid_levels"].as_u64()), (Some("0.1"), Some(2)));
    assert!(flags(books[1]).contains(&"off_tick"), "{}", books[1]);
}

/// The hashing stage keeps its own copy of each book from the level changes sent with each hashed
/// state: states that are not hashed (no tick size known yet) leave theirs queued for the next one
/// that is — past 64 KiB replaced by the whole book. DERIVED: a `book` without `tick_size`, 6000
/// unhashed changes (over 64 KiB of them), a tick size, then one change with the venue's hash of
/// the rebuilt state (computed here with the one hash routine): it matches, on every thread count.
#[test]
fn changes_of_unhashed_states_reach_the_hashing_copy() {
    use pm_archive::polymarket::bookhash::{hash, HashInput};
    let dir = common::tempdir("rebuild-unhashed");
    let (a, m, t0) = ("123", "0xabc", 1795708800000i64);
    let mut bodies = vec![json!({"event_type": "book", "market": m, "asset_id": a, "timestamp": t0.to_string(),
        "hash": "x", "bids": [{"price": "0.40", "size": "10"}], "asks": [{"price": "0.55", "size": "10"}],
        "last_trade_price": "0.5"})];
    let mut bids = std::collections::BTreeMap::new();
    bids.insert(400, ("0.40".to_string(), "10".to_string()));
    for k in 0..6000i64 {
        let (p, z) = (format!("0.{:03}", 100 + k % 50), (k + 1).to_string());
        bids.entry(100 + k % 50).or_insert((p.clone(), String::new())).1 = z.clone();
        bodies.push(json!({"event_type": "price_change", "market": m, "timestamp": (t0 + 1 + k).to_string(),
            "price_changes": [{"asset_id": a, "price": p, "size": z, "side": "BUY", "hash": "y"}]}));
    }
    bodies.push(json!({"event_type": "tick_size_change", "market": m, "asset_id": a, "old_tick_size": "0.01",
        "new_tick_size": "0.001", "timestamp": (t0 + 7000).to_string()}));
    bids.insert(50, ("0.05".to_string(), "1".to_string()));
    let ts = (t0 + 7001).to_string();
    let levels: Vec<(&str, &str)> = bids.values().map(|(p, z)| (p.as_str(), z.as_str())).collect();
    let want = hash(&HashInput {
        market: m,
        asset_id: a,
        timestamp: &ts,
        bids: levels,
        asks: vec![("0.55", "10")],
        min_order_size: &json!("5"),
        tick_size: &json!("0.001"),
        neg_risk: &json!(false),
        last_trade_price: &json!("0.5"),
    });
    bodies.push(json!({"event_type": "price_change", "market": m, "timestamp": ts,
        "price_changes": [{"asset_id": a, "price": "0.05", "size": "1", "side": "BUY", "hash": want}]}));
    let f = write_lines(&dir, "unhashed.jsonl", &frame_lines(&bodies, "2026-11-24", 0));
    let mut runs = Vec::new();
    for threads in ["1", "3"] {
        let (out, s, rows) = rebuild(&dir, &[&f], &["--threads", threads]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(s["hash_checks_matched"].as_u64(), Some(1), "{s:#}");
        assert_eq!(s["unverifiable"]["tick_size_unknown"].as_u64(), Some(6001), "{s:#}");
        assert_eq!(rows.last().unwrap()["hash_ok"], json!(true));
        runs.push((out.stdout, s));
    }
    assert!(runs[0] == runs[1], "the same rows and summary on one thread and with a hashing thread");
}

/// Level changes travel between the threads' copies length-prefixed: a size of any length (a
/// malformed reply: 80 000 bytes of two-byte characters) reaches every copy whole — nothing panics
/// (it did when the length was cut to 16 bits inside a character) and every thread count writes
/// the same rows, the level flagged in the row, not lost from the book.
#[test]
fn a_huge_size_string_reaches_every_copy_whole() {
    let dir = common::tempdir("rebuild-huge-size");
    let (a, m) = ("123", "0xabc");
    let huge = "é".repeat(40_000);
    let bodies = [
        json!({"event_type": "book", "market": m, "asset_id": a, "timestamp": "1795708800000", "hash": "x",
            "bids": [{"price": "0.40", "size": "10"}], "asks": [{"price": "0.55", "size": "10"}],
            "tick_size": "0.01", "min_order_size": "5", "neg_risk": false, "last_trade_price": "0.5"}),
        json!({"event_type": "price_change", "market": m, "timestamp": "1795708801000", "price_changes": [
            {"asset_id": a, "price": "0.3", "size": huge, "side": "BUY", "hash": "y"}]}),
        json!({"event_type": "price_change", "market": m, "timestamp": "1795708802000", "price_changes": [
            {"asset_id": a, "price": "0.2", "size": "1", "side": "BUY", "hash": "z"}]}),
    ];
    let f = write_lines(&dir, "huge.jsonl", &frame_lines(&bodies, "2026-11-24", 57600));
    let mut runs = Vec::new();
    for threads in ["1", "3"] {
        let (out, s, rows) = rebuild(&dir, &[&f], &["--threads", threads]);
        assert!(out.status.code().is_some_and(|c| c < 2), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(s["hash_checks"].as_u64(), Some(3), "{s:#}");
        let books: Vec<&Value> = rows.iter().filter(|r| r["record"] == "book").collect();
        assert_eq!(books.len(), 3);
        // The huge level stays in the book (the next state has it too): `bad_level`, not counted.
        assert_eq!(books[2]["bid_levels"].as_u64(), Some(2), "{}", &books[2].to_string()[..300]);
        assert!(flags(books[2]).contains(&"bad_level"), "{:?}", flags(books[2]));
        runs.push(out.stdout);
    }
    assert!(runs[0] == runs[1], "the same rows on one thread and with a hashing thread");
}
