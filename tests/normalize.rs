//! pm-normalize on raw lines DERIVED from the recorded fixtures: the real REST book
//! (clob_book_rest_empty_ask.json, hash known) and the real captured book with 7 bid / 57 ask levels
//! (ws_book_snapshot_captured.json, given the REST-only fields min_order_size "5" / neg_risk false,
//! facts §6.3). The envelopes around them, and the altered books used for flags, are derived.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::{jsonl, tempdir, tool};
use serde_json::{json, Value};

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/polymarket");
const REST_HASH: &str = "d7df883ae546b09533a4f485bfae0810da1af04e";

/// The real REST book, compact.
fn rest_book() -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{FIX}/clob_book_rest_empty_ask.json")).unwrap()).unwrap()
}

/// The real captured book with deep levels, as a REST-shaped book (derived: event_type removed,
/// min_order_size/neg_risk added as facts §6.3 says the hash needs).
fn deep_book() -> Value {
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{FIX}/ws_book_snapshot_captured.json")).unwrap())
            .unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("event_type");
    o.insert("min_order_size".into(), json!("5"));
    o.insert("neg_risk".into(), json!(false));
    v
}

/// A book object in the wire key order (serde_json would sort keys; the order is irrelevant to the
/// hash but we keep the venue's for realism).
fn wire(b: &Value) -> String {
    let keys = [
        "market",
        "asset_id",
        "timestamp",
        "hash",
        "bids",
        "asks",
        "min_order_size",
        "tick_size",
        "neg_risk",
        "last_trade_price",
    ];
    let mut parts: Vec<String> = keys.iter().filter_map(|k| b.get(*k).map(|v| format!("\"{k}\":{v}"))).collect();
    for (k, v) in b.as_object().unwrap() {
        if !keys.contains(&k.as_str()) {
            parts.push(format!("\"{k}\":{v}"));
        }
    }
    format!("{{{}}}", parts.join(","))
}

fn head(seq: u64, kind: &str, at: &str) -> String {
    format!(
        r#"{{"schema":"pmarchive.raw/1","venue":"polymarket","tool":"pm-books","collector_version":"0.1.0","run_id":"run1","host":"h","seq":{seq},"kind":"{kind}""#
    ) + &format!(r#","collected_at_utc":"{at}""#)
}

/// A `/books` 200 envelope around the given book objects.
fn books_line(seq: u64, at: &str, books: &[Value]) -> String {
    let body: Vec<String> = books.iter().map(wire).collect();
    let h = head(seq, "http", at).replacen(r#","collected_at_utc""#, r#","endpoint":"books","collected_at_utc""#, 1);
    format!(
        r#"{h},"attempt":1,"status":200,"body_kind":"json","body":[{}],"ctx":{{"slot":{seq},"due_at_utc":"2026-08-13T06:54:00Z","tokens":["x"]}}}}"#,
        body.join(",")
    )
}

fn http_line(seq: u64, endpoint: &str, rest: &str) -> String {
    let h = head(seq, "http", "2026-08-13T06:55:00.000000Z").replacen(
        r#","collected_at_utc""#,
        &format!(r#","endpoint":"{endpoint}","collected_at_utc""#),
        1,
    );
    format!(r#"{h},"attempt":1{rest},"ctx":{{"slot":{seq},"due_at_utc":"2026-08-13T06:55:00Z","tokens":["x"]}}}}"#)
}

fn normalize(input: &str, args: &[&str]) -> (i32, Vec<u8>, String) {
    let dir = tempdir("norm");
    let p = dir.join("raw.jsonl");
    std::fs::write(&p, input).unwrap();
    normalize_files(&[&p], args)
}

/// Runs pm-normalize to completion (60 s limit).
fn normalize_files(files: &[&Path], args: &[&str]) -> (i32, Vec<u8>, String) {
    let mut c = tool("pm-normalize");
    c.args(args).args(files);
    let out = common::run_with_timeout(c, None, Duration::from_secs(60));
    (out.status.code().unwrap(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn flags(row: &Value) -> Vec<String> {
    row["flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect()
}

fn prices(side: &Value) -> Vec<String> {
    side.as_array().unwrap().iter().map(|l| l["price"].as_str().unwrap().to_string()).collect()
}

#[test]
fn real_books_sorted_best_first_and_hashes_recompute() {
    let line = books_line(0, "2026-08-13T06:54:33.123456Z", &[rest_book(), deep_book()]);
    let (code, out, err) = normalize(&format!("{line}\n"), &[]);
    assert_eq!(code, 0, "{err}");
    let rows = jsonl(&out);
    assert_eq!(rows.len(), 2);
    let (r, d) = (&rows[0], &rows[1]);
    // The real REST book: its recorded hash recomputes; bids wire-ascending become best-first.
    assert_eq!(r["hash"], REST_HASH);
    assert_eq!(r["hash_ok"], true);
    assert_eq!(prices(&r["bids"]), vec!["0.002", "0.001"]);
    assert_eq!(r["best_bid_price"], "0.002");
    assert_eq!(r["best_bid_size"], "6.99");
    assert_eq!(r["best_ask_price"], Value::Null);
    assert_eq!(r["bid_depth"], "674.11");
    assert_eq!(r["exchange_at_utc"], "2026-08-03T05:21:08.581000Z");
    assert_eq!(flags(r), vec!["empty_asks", "recv_far"]);
    // The deep real book: asks wire-descending (0.99 … 0.08) become ascending from the best.
    assert_eq!(d["hash_ok"], true);
    assert_eq!(d["ask_levels"], 57);
    assert_eq!(d["bid_levels"], 7);
    let asks = prices(&d["asks"]);
    assert_eq!(asks.len(), 10, "default depth 10");
    assert_eq!(asks[..3], ["0.08", "0.09", "0.1"]);
    assert_eq!(prices(&d["bids"])[..3], ["0.07", "0.06", "0.05"]);
    assert_eq!(d["mid"], "0.075");
    assert_eq!(d["spread"], "0.01");
    assert_eq!(d["recv_lag_ms"].to_string(), "901.456");
    assert_eq!(d["slot"], 0);
    assert_eq!(d["raw_run_id"], "run1");
    assert!(flags(d).is_empty(), "{:?}", flags(d));
    // Sizes are the venue's strings, verbatim (no float printing).
    assert_eq!(d["asks"][0]["size"], "228198.28");

    let (_, out, _) = normalize(&format!("{line}\n"), &["--depth", "all"]);
    let rows = jsonl(&out);
    assert!(rows[1]["depth"].is_null(), "all levels: depth null, not 2^64-1 (lossy in jq, pyarrow)");
    assert!(!String::from_utf8_lossy(&out).contains("18446744073709551615"));
    let all = prices(&rows[1]["asks"]);
    assert_eq!(all.len(), 57);
    assert_eq!(all.last().unwrap(), "0.99");
    let mut sorted = all.clone();
    sorted.sort_by(|a, b| a.parse::<f64>().unwrap().partial_cmp(&b.parse::<f64>().unwrap()).unwrap());
    assert_eq!(all, sorted);

    let (_, out, _) = normalize(&format!("{line}\n"), &["--top"]);
    let rows = jsonl(&out);
    assert!(rows[1]["bids"].is_null() && rows[1]["asks"].is_null(), "present and null with --top");
    assert_eq!(rows[1]["depth"], 0);
    assert_eq!(rows[1]["best_ask_price"], "0.08");
}

/// A small derived book (hash deliberately wrong unless fixed up).
fn book(asset: &str, ts: &str, bids: &[(&str, &str)], asks: &[(&str, &str)]) -> Value {
    let lv = |v: &[(&str, &str)]| v.iter().map(|(p, s)| json!({"price": p, "size": s})).collect::<Vec<_>>();
    json!({"market": "0xabc", "asset_id": asset, "timestamp": ts, "hash": "0000000000000000000000000000000000000000",
           "bids": lv(bids), "asks": lv(asks), "min_order_size": "5", "tick_size": "0.01", "neg_risk": false, "last_trade_price": "0.5"})
}

#[test]
fn every_flag_is_raised_where_it_applies() {
    let at = "2026-08-13T06:54:33.000000Z";
    let ts = "1786604073000"; // 06:54:33.000 — no recv_far
    let ok_b = [("0.40", "10")];
    let ok_a = [("0.60", "10")];
    let mut cases: Vec<(&str, Value)> = vec![
        ("crossed", book("1", ts, &[("0.61", "1")], &ok_a)),
        ("locked", book("2", ts, &[("0.60", "1")], &ok_a)),
        ("empty_bids", book("3", ts, &[], &ok_a)),
        ("empty_asks", book("4", ts, &ok_b, &[])),
        ("price_out_of_range", book("5", ts, &[("0", "1"), ("0.40", "1")], &[("1.20", "3"), ("0.60", "1")])),
        ("off_tick", book("6", ts, &[("0.405", "1")], &ok_a)),
        ("nonpositive_size", book("7", ts, &[("0.40", "0")], &ok_a)),
        ("bad_level", book("8", ts, &[("abc", "1"), ("0.40", "1")], &ok_a)),
        ("unsorted_wire", book("9", ts, &[("0.40", "1"), ("0.30", "1")], &ok_a)),
        ("duplicate_price", book("10", ts, &[("0.40", "1"), ("0.40", "2")], &ok_a)),
        ("bad_timestamp", book("11", "yesterday", &ok_b, &ok_a)),
        ("recv_far", book("12", "1786600000000", &ok_b, &ok_a)),
    ];
    let mut unknown = book("13", ts, &ok_b, &ok_a);
    unknown.as_object_mut().unwrap().insert("surprise".into(), json!({"new": 1}));
    cases.push(("unknown_fields", unknown));
    let mut missing = book("14", ts, &ok_b, &ok_a);
    missing.as_object_mut().unwrap().remove("last_trade_price");
    cases.push(("missing_field", missing));
    let mut wrong_hash = rest_book();
    wrong_hash["hash"] = json!("1111111111111111111111111111111111111111");
    let mut lines: Vec<String> =
        cases.iter().enumerate().map(|(i, (_, b))| books_line(i as u64, at, std::slice::from_ref(b))).collect();
    lines.push(books_line(100, at, &[wrong_hash]));
    // duplicate: the real book twice; ts_backwards: an older state of the same asset afterwards.
    lines.push(books_line(101, "2026-08-13T06:54:34.000000Z", &[rest_book()]));
    lines.push(books_line(102, "2026-08-13T06:54:35.000000Z", &[rest_book()]));
    let mut older = rest_book();
    older["timestamp"] = json!("1785734468000");
    lines.push(books_line(103, "2026-08-13T06:54:36.000000Z", &[older]));
    let (code, out, err) = normalize(&(lines.join("\n") + "\n"), &[]);
    assert_eq!(code, 0, "{err}");
    let rows = jsonl(&out);
    assert_eq!(rows.len(), cases.len() + 4);
    for (i, (flag, _)) in cases.iter().enumerate() {
        assert!(flags(&rows[i]).contains(&flag.to_string()), "row {i} should carry {flag}: {:?}", flags(&rows[i]));
    }
    // Derived books carry a placeholder hash: it does not recompute (except where unverifiable).
    assert!(flags(&rows[0]).contains(&"hash_mismatch".to_string()));
    assert_eq!(rows[13]["hash_ok"], Value::Null);
    assert!(flags(&rows[13]).contains(&"hash_unverifiable".to_string()));
    assert_eq!(rows[7]["bid_levels"], 1, "the non-numeric level is left out of the numbers");
    assert_eq!(prices(&rows[8]["bids"]), vec!["0.40", "0.30"], "unsorted wire side is sorted explicitly");
    let n = cases.len();
    assert!(flags(&rows[n]).contains(&"hash_mismatch".to_string()));
    assert_eq!(rows[n]["hash_ok"], false);
    assert!(!flags(&rows[n + 1]).contains(&"duplicate".to_string()), "first sight after a different hash");
    assert_eq!(rows[n + 1]["hash_ok"], true);
    assert!(flags(&rows[n + 2]).contains(&"duplicate".to_string()));
    assert!(flags(&rows[n + 3]).contains(&"ts_backwards".to_string()));
    // The summary counts every flag, and --check sees all of them.
    let summary: Value =
        serde_json::from_str(err.lines().find_map(|l| l.strip_prefix("pm-normalize: summary ")).unwrap()).unwrap();
    let dir = tempdir("flags");
    let norm = dir.join("n.jsonl");
    std::fs::write(&norm, &out).unwrap();
    let (code, rep, _) = normalize_files(&[&norm], &["--check"]);
    assert_eq!(code, 0);
    let rep: Value = serde_json::from_slice(&rep).unwrap();
    for f in pm_archive::normalize::FLAGS {
        assert!(summary["flags"][f].as_u64().unwrap() >= 1, "summary: {f}");
        assert_eq!(rep["flags"][f], summary["flags"][f], "check vs summary: {f}");
    }
}

/// One JSON type per field whatever the venue sends (issue 12 §4): tick_size, min_order_size and
/// last_trade_price are strings (a JSON number keeps its digits, in quotes), neg_risk a boolean; any
/// other value is null and flags `missing_field`. A raw `ctx` that is not an object becomes null.
#[test]
fn scalar_fields_keep_one_json_type() {
    let at = "2026-08-13T06:54:33.000000Z";
    let ts = "1786604073000";
    let base = book("1", ts, &[("0.40", "10")], &[("0.60", "10")]);
    let mut numbers = base.clone();
    numbers["tick_size"] = json!(0.01);
    numbers["min_order_size"] = json!(5);
    numbers["last_trade_price"] = json!(0.5);
    let mut wrong = book("2", ts, &[("0.40", "10")], &[("0.60", "10")]);
    wrong["tick_size"] = json!({"v": "0.01"});
    wrong["neg_risk"] = json!("false");
    wrong["last_trade_price"] = Value::Null;
    let lines = [base, numbers, wrong].into_iter().enumerate().map(|(i, b)| books_line(i as u64, at, &[b]));
    let gap = head(9, "gap", at) + r#","error":"x","ctx":[1,2]}"#;
    let raw = lines.chain([gap]).collect::<Vec<_>>().join("\n") + "\n";
    let (code, out, err) = normalize(&raw, &[]);
    assert_eq!(code, 0, "{err}");
    let rows = jsonl(&out);
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["tick_size"], "0.01");
    assert!(!flags(&rows[0]).contains(&"missing_field".to_string()));
    assert_eq!(
        (&rows[1]["tick_size"], &rows[1]["min_order_size"], &rows[1]["last_trade_price"], &rows[1]["neg_risk"]),
        (&json!("0.01"), &json!("5"), &json!("0.5"), &json!(false))
    );
    assert!(!flags(&rows[1]).contains(&"missing_field".to_string()), "{:?}", flags(&rows[1]));
    assert!(rows[2]["tick_size"].is_null() && rows[2]["neg_risk"].is_null() && rows[2]["last_trade_price"].is_null());
    assert_eq!(rows[2]["min_order_size"], "5");
    assert!(flags(&rows[2]).contains(&"missing_field".to_string()));
    assert_eq!(rows[3]["record"], "gap");
    assert!(rows[3]["ctx"].is_null(), "{}", rows[3]);
}

#[test]
fn gaps_errors_and_failed_replies_become_rows() {
    let err404 = std::fs::read_to_string(format!("{FIX}/clob_error_book_404_no_orderbook.json")).unwrap();
    let lines = [
        head(0, "gap", "2026-08-13T06:55:00.000000Z")
            + r#","error":"token absent from reply","ctx":{"gap":"missing_token","slot":4,"due_at_utc":"2026-08-13T06:55:00Z","token_id":"123","slug":"btc-updown-5m-1","outcome":"Up"}}"#,
        head(1, "gap", "2026-08-13T06:55:01.000000Z")
            + r#","error":"gave up","ctx":{"gap":"failed_request","slot":5,"due_at_utc":"2026-08-13T06:55:01Z","tokens":["1","2"]}}"#,
        head(2, "gap", "2026-08-13T06:55:02.000000Z")
            + r#","error":"overran","ctx":{"gap":"missed_slots","slot":8,"from_slot":6,"to_slot":7,"count":2}}"#,
        http_line(3, "book", &format!(r#","status":404,"body_kind":"json","body":{}"#, err404.trim())),
        http_line(4, "books", r#","error":"network: connection reset""#),
        http_line(
            5,
            "books",
            r#","status":200,"body_kind":"text","body_text":"<html>oops","body_error":"not_json: expected value""#,
        ),
        http_line(6, "books", r#","status":200,"body_kind":"json","body":{"error":"Too Many Requests"}"#),
        http_line(7, "books", &format!(r#","status":200,"body_kind":"json","body":[17,{}]"#, wire(&rest_book()))),
        http_line(8, "gamma", r#","status":200,"body_kind":"json","body":{}"#),
    ];
    let (code, out, err) = normalize(&(lines.join("\n") + "\n"), &[]);
    assert_eq!(code, 0, "{err}");
    let rows = jsonl(&out);
    let kinds: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (r["record"].as_str().unwrap().into(), r["gap"].as_str().or(r["reason"].as_str()).unwrap_or("").into())
        })
        .collect();
    let want = [
        ("gap", "missing_token"),
        ("gap", "failed_request"),
        ("gap", "missed_slots"),
        ("error", "http_status"),
        ("error", "no_reply"),
        ("error", "not_json"),
        ("error", "error_body"),
        ("error", "bad_book"),
        ("book", ""),
    ];
    assert_eq!(kinds, want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>());
    assert_eq!(rows[0]["asset_id"], "123");
    assert_eq!(rows[0]["slug"], "btc-updown-5m-1");
    assert_eq!(rows[3]["status"], 404);
    assert_eq!(rows[3]["reply"], r#"{"error":"No orderbook exists for the requested token id"}"#);
    assert_eq!(rows[4]["detail"], "network: connection reset");
    assert_eq!(rows[4]["status"], Value::Null);
    assert_eq!(rows[5]["detail"], "not_json: expected value");
    assert_eq!(rows[7]["index"], 0);
    assert_eq!(rows[8]["hash_ok"], true, "the good element of a partly bad reply is kept");
    assert!(err.contains(r#""skipped":{"http/gamma":1}"#), "{err}");
    // --check counts these rows by gap type and error reason.
    let norm = tempdir("gapcheck").join("norm.jsonl");
    std::fs::write(&norm, &out).unwrap();
    let (code, rep, _) = normalize_files(&[&norm], &["--check"]);
    let rep: Value = serde_json::from_slice(&rep).unwrap();
    // The derived input stamps seq 3.. at 06:55:00, after seq 2 at 06:55:02: --check sees exactly
    // that one row out of order (and so fails), and nothing else.
    assert_eq!((code, &rep["ok"], &rep["out_of_order_rows"]), (1, &json!(false), &json!(1)));
    assert_eq!(rep["problems"].as_array().unwrap().len(), 1);
    assert_eq!(
        (&rep["problems"][0]["line"], &rep["unparseable_lines"], &rep["invalid_rows"]),
        (&json!(4), &json!(0), &json!(0))
    );
    assert_eq!(rep["rows"], json!({"book": 1, "gap": 3, "error": 5, "bad_input": 0}));
    assert_eq!(rep["gaps"], json!({"failed_request": 1, "missed_slots": 1, "missing_token": 1}));
    assert_eq!(rep["errors"], json!({"bad_book": 1, "error_body": 1, "http_status": 1, "no_reply": 1, "not_json": 1}));
    assert_eq!(rep["hash"]["match"], 1);
    assert_eq!(rep["hash"]["match_rate"], json!(1.0));
}

#[test]
fn slug_and_outcome_join_from_track_lines_and_market_records() {
    let rb = rest_book();
    let asset = rb["asset_id"].as_str().unwrap().to_string();
    let deep = deep_book();
    let deep_asset = deep["asset_id"].as_str().unwrap().to_string();
    let track = head(0, "track", "2026-08-13T06:50:00.000000Z")
        + &format!(
            r#","ctx":{{"action":"start","reason":"discovered","slug":"btc-updown-5m-1786604100","condition_id":"0x9d83","family":"5m","tokens":[{{"token_id":"{asset}","outcome":"Up"}}]}}}}"#
        );
    let books = books_line(1, "2026-08-13T06:54:33.123456Z", &[rb, deep]);
    let dir = tempdir("join");
    let markets = dir.join("markets.jsonl");
    let rec = json!({"record": "market", "schema": "pmarchive.market/1", "venue": "polymarket", "family": "15m", "slug": "btc-updown-15m-1786603500",
        "condition_id": "0x6bd5", "tokens": [{"token_id": deep_asset, "outcome": "Down"}], "window_start_utc": "2026-08-13T06:45:00Z", "window_end_utc": "2026-08-13T07:00:00Z"});
    std::fs::write(&markets, format!("{rec}\n")).unwrap();
    let (code, out, err) = normalize(&format!("{track}\n{books}\n"), &["--markets", markets.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let rows = jsonl(&out);
    assert_eq!(rows.len(), 2, "the track line itself is not a row");
    assert_eq!(
        (rows[0]["slug"].as_str(), rows[0]["outcome"].as_str(), rows[0]["family"].as_str()),
        (Some("btc-updown-5m-1786604100"), Some("Up"), Some("5m"))
    );
    assert_eq!(
        (rows[1]["slug"].as_str(), rows[1]["outcome"].as_str()),
        (Some("btc-updown-15m-1786603500"), Some("Down"))
    );
}

fn gz(data: &[u8], members: usize) -> Vec<u8> {
    let mut all = Vec::new();
    let step = data.len().div_ceil(members);
    for part in data.chunks(step.max(1)) {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(part).unwrap();
        all.extend(e.finish().unwrap());
    }
    all
}

fn sample_raw() -> String {
    let mut s = String::new();
    for i in 0..50u64 {
        let mut b = deep_book();
        if i % 3 == 0 {
            b["timestamp"] = json!((1786604072222u64 + i * 1000).to_string());
        }
        s += &books_line(i, &format!("2026-08-13T06:54:{:02}.000000Z", i % 60), &[rest_book(), b]);
        s.push('\n');
    }
    s
}

#[test]
fn output_is_deterministic_and_gzip_input_reads_the_same() {
    let raw = sample_raw();
    let dir = tempdir("det");
    let plain = dir.join("raw.jsonl");
    let gzp = dir.join("raw.jsonl.gz");
    std::fs::write(&plain, &raw).unwrap();
    std::fs::write(&gzp, gz(raw.as_bytes(), 7)).unwrap();
    let (c1, a, _) = normalize_files(&[&plain], &[]);
    let (c2, b, _) = normalize_files(&[&plain], &[]);
    let (c3, c, _) = normalize_files(&[&gzp], &[]);
    assert_eq!((c1, c2, c3), (0, 0, 0));
    assert_eq!(a, b, "byte-identical across runs");
    assert_eq!(a, c, "multi-member gzip input gives the same rows");
    assert_eq!(jsonl(&a).len(), 100);
    // Files written with -o (gzip) are byte-identical too, and --manifest records their sha256.
    let (o1, o2, m) = (dir.join("o1.jsonl.gz"), dir.join("o2.jsonl.gz"), dir.join("manifest.json"));
    let (code, _, err) = normalize_files(&[&gzp], &["-o", o1.to_str().unwrap(), "--manifest", m.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    normalize_files(&[&gzp], &["-o", o2.to_str().unwrap()]);
    assert_eq!(std::fs::read(&o1).unwrap(), std::fs::read(&o2).unwrap());
    let man: Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    let (sha, bytes) = pm_archive::util::sha256_file(&o1).unwrap();
    assert_eq!(man["schema"], "pmarchive.normalize_manifest/1");
    assert_eq!(man["outputs"][0]["sha256"], sha.as_str());
    assert_eq!(man["outputs"][0]["bytes"], bytes);
    assert_eq!(man["outputs"][0]["rows"], 100);
    assert_eq!(man["inputs"][0]["sha256"], pm_archive::util::sha256_file(&gzp).unwrap().0.as_str());
    assert_eq!(man["tool_version"], pm_archive::VERSION);
    assert_eq!(man["options"]["depth"], 10);
    let (code, _, err) =
        normalize_files(&[&gzp], &["--depth", "all", "-o", o2.to_str().unwrap(), "--manifest", m.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let man: Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    assert!(man["options"]["depth"].is_null(), "all levels: null, as in the rows: {}", man["options"]);
    // --manifest without -o is refused.
    let (code, _, _) = normalize_files(&[&gzp], &["--manifest", m.to_str().unwrap()]);
    assert_eq!(code, 2);
}

#[test]
fn bad_input_is_flagged_or_counted_with_file_and_line_never_a_crash() {
    let raw = sample_raw();
    let mut bad_level = rest_book();
    bad_level["bids"][0]["price"] = json!("zero point one");
    let text = format!(
        "{}{}\n{{\"half\":\n{}\n\n{}\n[1,2]\n",
        raw,
        books_line(50, "2026-08-13T06:55:00.000000Z", &[bad_level]),
        r#"{"schema":"something/else","kind":"http"}"#,
        r#"{"schema":"pmarchive.raw/1","kind":"http","endpoint":"books","seq":"not a number"}"#
    );
    let (code, out, err) = normalize(&text, &[]);
    assert_eq!(code, 1, "damaged input is a reported failure: {err}");
    let rows = jsonl(&out);
    let bad: Vec<&Value> = rows.iter().filter(|r| r["record"] == "bad_input").collect();
    let lines: Vec<(u64, &str)> =
        bad.iter().map(|r| (r["line"].as_u64().unwrap(), r["reason"].as_str().unwrap())).collect();
    assert_eq!(lines, vec![(52, "not_json"), (53, "not_raw_envelope"), (55, "not_json"), (56, "not_json")]);
    assert!(bad[0]["file"].as_str().unwrap().ends_with("raw.jsonl"));
    let lvl = rows.iter().find(|r| r["raw_seq"] == 50).unwrap();
    assert!(flags(lvl).contains(&"bad_level".to_string()));
    assert_eq!(lvl["hash_ok"], false, "the string is hashed as sent, so it no longer matches");
    assert!(err.contains(r#""blank_lines":1"#));

    // Truncated gzip: the rows before the cut are kept and the cut is a read_error row.
    let dir = tempdir("trunc");
    let full = gz(raw.as_bytes(), 1);
    let cut = dir.join("cut.jsonl.gz");
    std::fs::write(&cut, &full[..full.len() * 2 / 3]).unwrap();
    let (code, out, err) = normalize_files(&[&cut], &[]);
    assert_eq!(code, 1, "{err}");
    let rows = jsonl(&out);
    let last = rows.last().unwrap();
    assert_eq!(last["record"], "bad_input");
    assert_eq!(last["reason"], "read_error");
    let books = rows.iter().filter(|r| r["record"] == "book").count() as u64;
    assert!(books > 10 && books < 100, "{books}");
    assert_eq!(last["line"].as_u64().unwrap(), books / 2 + 1, "the line after the last complete one");
}

#[test]
fn check_reports_counts_and_fails_on_broken_invariants() {
    let dir = tempdir("check");
    let raw = dir.join("raw.jsonl");
    std::fs::write(&raw, sample_raw()).unwrap();
    let (_, out, _) = normalize_files(&[&raw], &[]);
    let good = dir.join("good.jsonl");
    std::fs::write(&good, &out).unwrap();
    let (code, rep, _) = normalize_files(&[&good], &["--check"]);
    assert_eq!(code, 0);
    let rep: Value = serde_json::from_slice(&rep).unwrap();
    assert_eq!(rep["ok"], true);
    assert_eq!(rep["rows"]["book"], 100);
    assert_eq!(rep["tokens"], 2);
    assert_eq!(rep["markets"], 2);
    assert_eq!(rep["hash"]["match"], 84);
    assert_eq!(rep["hash"]["mismatch"], 16, "timestamps altered in every 3rd deep book (derived)");
    assert_eq!(rep["hash"]["unverifiable"], 0);
    assert_eq!(rep["hash"]["match_rate"], json!(0.84), "84 of the 100 verifiable rows");
    assert_eq!(
        (&rep["rows"]["gap"], &rep["rows"]["error"], &rep["rows"]["bad_input"]),
        (&json!(0), &json!(0), &json!(0))
    );
    assert_eq!((&rep["gaps"], &rep["errors"]), (&json!({}), &json!({})), "no gap or error rows in this input");
    assert_eq!(rep["collected_at_utc"]["first"], "2026-08-13T06:54:00.000000Z");
    // REST book: 49 repeats; deep book: i = 1, 2 and every i = 3k+2 (k = 1..15) repeat the previous state.
    assert_eq!(rep["flags"]["duplicate"], 49 + 2 + 15);
    assert_eq!(rep["flags"]["ts_backwards"], 16);

    // Out of order: swap two rows of the same raw run; plus one unparseable line.
    let text = String::from_utf8(out).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.swap(10, 20);
    lines.push("{not json");
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    let (code, rep, _) = normalize_files(&[&bad], &["--check"]);
    assert_eq!(code, 1);
    let rep: Value = serde_json::from_slice(&rep).unwrap();
    assert_eq!(rep["ok"], false);
    assert_eq!(rep["unparseable_lines"], 1);
    assert!(rep["out_of_order_rows"].as_u64().unwrap() >= 1);
    assert_eq!(rep["problems"][0]["line"], 12);

    // Rows off their documented type are invalid: a key missing, a key unknown, a value of another
    // JSON type, the former 2^64-1 depth of --depth all, a level that is not {price,size} strings.
    let row: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let mut broken = Vec::new();
    for (what, f) in [
        ("missing", &(|r: &mut Value| drop(r.as_object_mut().unwrap().remove("bids"))) as &dyn Fn(&mut Value)),
        ("unknown", &|r: &mut Value| r["surprise"] = json!(1)),
        ("type", &|r: &mut Value| r["tick_size"] = json!(0.01)),
        ("depth", &|r: &mut Value| r["depth"] = json!(u64::MAX)),
        ("level", &|r: &mut Value| r["bids"][0]["price"] = json!(0.4)),
    ] {
        let mut r = row.clone();
        f(&mut r);
        broken.push((what, r.to_string()));
    }
    let bad = dir.join("types.jsonl");
    std::fs::write(&bad, broken.iter().map(|(_, l)| format!("{l}\n")).collect::<String>()).unwrap();
    let (code, rep, _) = normalize_files(&[&bad], &["--check"]);
    assert_eq!(code, 1);
    let rep: Value = serde_json::from_slice(&rep).unwrap();
    assert_eq!(rep["invalid_rows"], broken.len(), "{}", rep["problems"]);
    assert!(rep["problems"][0]["problem"].as_str().unwrap().contains("missing field `bids`"), "{}", rep["problems"]);
}

/// Rows from stdin (no FILE, and '-') are byte-for-byte the rows from the same bytes given as a file,
/// plain and gzip.
#[test]
fn stdin_input_gives_the_same_rows_as_a_file() {
    let raw = sample_raw();
    let dir = tempdir("stdin");
    let plain = dir.join("raw.jsonl");
    std::fs::write(&plain, &raw).unwrap();
    let (code, from_file, err) = normalize_files(&[&plain], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(jsonl(&from_file).len(), 100);
    let gzipped = gz(raw.as_bytes(), 3);
    for (args, input) in [(&[][..], raw.as_bytes()), (&["-"][..], raw.as_bytes()), (&[][..], &gzipped[..])] {
        let mut c = tool("pm-normalize");
        c.args(args);
        let out = common::run_with_timeout(c, Some(input), Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout == from_file, "{args:?}: stdin rows differ from the file's");
    }
}

#[test]
fn help_version_and_bad_arguments() {
    let (code, out, err) = normalize_files(&[], &["--help"]);
    assert_eq!(code, 0, "{err}");
    let help = String::from_utf8(out).unwrap();
    assert!(help.starts_with("pm-normalize — "), "{help}");
    for o in [
        "Usage:",
        "--depth N|all",
        "--top",
        "--markets FILE",
        "--max-lag SECS",
        "-o, --output PATH",
        "--manifest PATH",
        "--threads N",
        "--check",
    ] {
        assert!(help.contains(o), "usage mentions {o}");
    }
    let (code, out, _) = normalize_files(&[], &["--version"]);
    assert_eq!(code, 0);
    assert_eq!(String::from_utf8(out).unwrap(), format!("pm-normalize {}\n", pm_archive::VERSION));
    let missing = tempdir("args").join("missing.jsonl");
    for args in [
        vec!["--depth", "deep"],
        vec!["--max-lag", "soon"],
        vec!["--bogus"],
        vec!["--check", "-o", "x.jsonl"],
        vec![missing.to_str().unwrap()],
    ] {
        let (code, out, err) = normalize_files(&[], &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}");
        let first = err.lines().next().unwrap_or("");
        assert!(first.starts_with("pm-normalize: "), "{args:?}: {err}");
    }
}

/// Parsing on several threads gives the rows of one thread, byte for byte, also where a row
/// depends on earlier lines in other chunks (chunks are about 1 MiB: this input spans several):
/// `duplicate`/`ts_backwards` against the asset's previous row, the join learnt from a `track`
/// line, gap rows joined, line numbers of bad lines, and a truncated gzip input.
#[test]
fn threads_and_chunks_change_nothing() {
    let (rb, deep) = (rest_book(), deep_book());
    let rest_asset = rb["asset_id"].as_str().unwrap().to_string();
    let (n, track_at, bad_at) = (900usize, 400usize, 600usize);
    let mut lines = Vec::new();
    let mut bad_line_no = 0;
    for i in 0..n {
        if i == track_at {
            lines.push(head(0, "track", "2026-08-13T06:50:00.000000Z") + &format!(
                r#","ctx":{{"action":"start","reason":"window","slug":"btc-updown-5m-1","condition_id":"0x9d83","family":"5m","tokens":[{{"token_id":"{rest_asset}","outcome":"Up"}}]}}}}"#
            ));
        }
        if i == track_at - 100 || i == track_at + 100 {
            lines.push(
                head(i as u64, "gap", "2026-08-13T06:54:00.000000Z")
                    + &format!(r#","ctx":{{"gap":"missed_slot","slot":{i},"token_id":"{rest_asset}"}}}}"#),
            );
        }
        if i == bad_at {
            lines.push("not json".to_string());
            bad_line_no = lines.len();
        }
        let mut d = deep.clone();
        // A new exchange time every 100 lines, and ten lines that go back in time.
        let ts = if (450..460).contains(&i) { 1786604000000 } else { 1786604072222 + (i / 100) as u64 * 1000 };
        d["timestamp"] = json!(ts.to_string());
        lines.push(books_line(i as u64, &format!("2026-08-13T06:54:{:02}.000000Z", i % 60), &[rb.clone(), d]));
    }
    let raw = lines.join("\n") + "\n";
    assert!(raw.len() > 2 << 20, "spans several chunks: {} bytes", raw.len());
    let dir = tempdir("threads");
    let (plain, cut) = (dir.join("a.jsonl"), dir.join("b.jsonl.gz"));
    std::fs::write(&plain, &raw).unwrap();
    let z = gz(raw.as_bytes(), 1);
    std::fs::write(&cut, &z[..z.len() * 2 / 3]).unwrap();

    let (code, one, err1) = normalize_files(&[&plain, &cut], &["--threads", "1"]);
    assert_eq!(code, 1, "the truncated gzip is damaged input: {err1}");
    for t in ["2", "3", "7"] {
        let (code, many, err) = normalize_files(&[&plain, &cut], &["--threads", t]);
        assert_eq!(code, 1, "{err}");
        assert!(one == many, "--threads {t}: the same bytes as --threads 1");
        assert_eq!(err, err1, "--threads {t}: the same summary");
    }
    assert_eq!(jsonl(&one).last().unwrap()["reason"], "read_error", "the truncated file ends in a read_error row");
    // What the rows of the whole file say (parsed on 3 threads).
    let (code, out, err) = normalize_files(&[&plain], &["--threads", "3"]);
    assert_eq!(code, 1, "one bad line: {err}");
    let rows = jsonl(&out);
    let first: Vec<&Value> = rows.iter().collect();
    let rest_rows: Vec<&&Value> =
        first.iter().filter(|r| r["record"] == "book" && r["asset_id"] == rest_asset.as_str()).collect();
    assert_eq!(rest_rows.len(), n);
    // The same REST book on every line: each row after the first is a duplicate of the previous one.
    assert_eq!(rest_rows.iter().filter(|r| flags(r).contains(&"duplicate".to_string())).count(), n - 1);
    // Joined from the track line on, whichever chunk the rows are in.
    assert_eq!(rest_rows.iter().filter(|r| r["slug"] == "btc-updown-5m-1").count(), n - track_at);
    assert!(rest_rows[..track_at].iter().all(|r| r["slug"].is_null()));
    let gaps: Vec<&&Value> = first.iter().filter(|r| r["record"] == "gap").collect();
    assert_eq!((gaps[0]["slug"].as_str(), gaps[1]["slug"].as_str()), (None, Some("btc-updown-5m-1")));
    let deep_back = first.iter().filter(|r| r["record"] == "book" && flags(r).contains(&"ts_backwards".to_string()));
    assert_eq!(deep_back.count(), 1, "only the first row that goes back in time");
    let bad: Vec<&&Value> = first.iter().filter(|r| r["record"] == "bad_input").collect();
    assert_eq!((bad.len(), bad[0]["line"].as_u64()), (1, Some(bad_line_no as u64)));

    // Bad values for --threads are usage errors.
    for v in ["0", "65", "many"] {
        let (code, _, err) = normalize_files(&[&plain], &["--threads", v]);
        assert_eq!(code, 2, "--threads {v}: {err}");
    }
}

/// The rows of the committed LOOPBACK sample (data/loopback_sample, 4 raw books files, 3,356 book
/// rows) are exactly the bytes pm-normalize wrote before the hot-path reader (src/normalize/fast.rs)
/// and the copied hash text: sha256 of the output of main at 911f5d2 (= the committed
/// normalized/orderbook_snapshots.jsonl.gz), for the default depth, `--top` and `--depth all`,
/// parsed on 1 and 2 threads.
#[test]
fn loopback_sample_rows_match_their_golden_sha256() {
    use sha2::{Digest, Sha256};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/loopback_sample/archive/venue=polymarket/stream=books");
    let (mut files, mut dirs) = (Vec::new(), vec![dir]);
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.to_string_lossy().ends_with(".jsonl.gz") {
                files.push(p);
            }
        }
    }
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    let files: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    for (args, want) in [
        (&[][..], "3e50be22043d7b6188bcd5af5df371839c7c6c56e13651bc01ece3d88994d77a"),
        (&["--top"][..], "5de85333c60beae1e57993f1aca82bb9c7144ddd76ab863412080fdc92d723c2"),
        (&["--depth", "all"][..], "da9f6d8f80b13763aa6d4cf750a8288cb763f4b42774dcf06d7ec3310a3f66c0"),
    ] {
        for threads in ["1", "2"] {
            let mut a = args.to_vec();
            a.extend(["--threads", threads]);
            let (code, out, err) = normalize_files(&files, &a);
            assert_eq!(code, 0, "{a:?}: {err}");
            assert!(err.contains(r#""hash_match":3356,"hash_mismatch":0"#), "{a:?}: {err}");
            let got = pm_archive::util::hex(&Sha256::digest(&out));
            assert_eq!(got, want, "{a:?}: rows differ from the golden output");
        }
    }
}

/// `--check` writes its typed report (normalize::check::CheckReport) exactly as the committed
/// report of the LOOPBACK sample (data/loopback_sample/normalized/check.json, written when the
/// report was built as untyped JSON), and the report reads back into its type.
#[test]
fn check_report_of_the_loopback_sample_is_the_committed_one() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut c = tool("pm-normalize");
    c.current_dir(root).args(["--check", "data/loopback_sample/normalized/orderbook_snapshots.jsonl.gz"]);
    let out = common::run_with_timeout(c, None, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let want = std::fs::read(Path::new(root).join("data/loopback_sample/normalized/check.json")).unwrap();
    assert!(out.stdout == want, "report differs:\n{}", String::from_utf8_lossy(&out.stdout));
    let rep: pm_archive::normalize::check::CheckReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((rep.ok, rep.hash.r#match, rep.hash.match_rate, rep.rows["book"]), (true, 3356, Some(1.0), 3356));
}

const KALSHI_FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kalshi");
const KX_TICKER: &str = "KXBTC15M-26AUG170100-00";

/// A kalshi-books raw line (envelope DERIVED: the shape kalshi-books writes) of `kind` with `rest`
/// (status, body, …) and `ctx`.
fn kalshi_line(seq: u64, kind: &str, rest: &str, ctx: &str) -> String {
    let endpoint = if kind == "http" { r#""endpoint":"kalshi-books","# } else { "" };
    format!(
        r#"{{"schema":"pmarchive.raw/1","venue":"kalshi","tool":"kalshi-books","collector_version":"0.1.0","run_id":"krun","host":"h","seq":{seq},"kind":"{kind}",{endpoint}"collected_at_utc":"2026-08-17T04:50:0{seq}.000000Z"{rest},"ctx":{ctx}}}"#
    )
}

/// A 200 kalshi-books reply with `body` (JSON text).
fn kalshi_reply(seq: u64, body: &str) -> String {
    let body: Value = serde_json::from_str(body).unwrap();
    let ctx = format!(
        r#"{{"slot":{seq},"due_at_utc":"2026-08-17T04:50:0{seq}Z","ticker":"{KX_TICKER}","event_ticker":"KXBTC15M-26AUG170100"}}"#
    );
    kalshi_line(seq, "http", &format!(r#","attempt":1,"status":200,"body_kind":"json","body":{body}"#), &ctx)
}

#[test]
fn kalshi_books_become_yes_side_rows_with_derived_asks() {
    let fp = std::fs::read_to_string(format!("{KALSHI_FIX}/orderbook_fp_docs_example.json")).unwrap();
    let cents = std::fs::read_to_string(format!("{KALSHI_FIX}/orderbook_legacy_cents_docs_example.json")).unwrap();
    let track = kalshi_line(
        0,
        "track",
        "",
        &format!(
            r#"{{"action":"start","reason":"window","series_ticker":"KXBTC15M","event_ticker":"KXBTC15M-26AUG170100","ticker":"{KX_TICKER}","window_start_utc":"2026-08-17T04:45:00Z","window_end_utc":"2026-08-17T05:00:00Z","slot":0}}"#
        ),
    );
    let gap = kalshi_line(
        5,
        "gap",
        r#","error":"no usable reply""#,
        &format!(r#"{{"gap":"failed_request","ticker":"{KX_TICKER}","slot":5}}"#),
    );
    let input = [
        track,
        kalshi_reply(1, &fp),
        kalshi_reply(2, &cents),
        // Descending on the wire, a bad level, a NO bid at 0.42 that crosses the YES bid at 0.60.
        kalshi_reply(3, r#"{"orderbook_fp":{"yes_dollars":[["0.6000","1.50"],["0.0010","5.00"],["x","1"]],"no_dollars":[["0.4200","2.00"]]}}"#),
        kalshi_reply(4, r#"{"error":"too many requests"}"#),
        gap,
        // Polymarket in the same run: its rows are unchanged by the Kalshi ones.
        books_line(6, "2026-08-13T06:54:33.123456Z", &[rest_book()]),
    ]
    .join("\n");
    let (code, out, err) = normalize(&format!("{input}\n"), &[]);
    assert_eq!(code, 0, "{err}");
    let rows = jsonl(&out);
    assert_eq!(rows.len(), 6, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r["record"], "book");
    assert_eq!((r["venue"].as_str(), r["source"].as_str()), (Some("kalshi"), Some("kalshi-books")));
    for k in ["market", "asset_id", "slug"] {
        assert_eq!(r[k], KX_TICKER, "{k}");
    }
    assert_eq!((r["outcome"].as_str(), r["slot"].as_i64()), (Some("yes"), Some(1)));
    // Best YES bid 0.42 × 13; best YES ask = 1 − best NO bid (0.56 × 17) = 0.44 × 17.
    assert_eq!((r["best_bid_price"].as_str(), r["best_bid_size"].as_str()), (Some("0.4200"), Some("13.00")));
    assert_eq!((r["best_ask_price"].as_str(), r["best_ask_size"].as_str()), (Some("0.4400"), Some("17.00")));
    assert_eq!((r["mid"].as_str(), r["spread"].as_str()), (Some("0.43"), Some("0.02")));
    assert_eq!((r["bid_levels"].as_u64(), r["ask_levels"].as_u64()), (Some(12), Some(10)));
    assert_eq!((r["bid_depth"].as_str(), r["ask_depth"].as_str()), (Some("455"), Some("593")));
    assert_eq!(prices(&r["bids"])[..3], ["0.4200", "0.4100", "0.3500"]);
    assert_eq!(prices(&r["asks"])[..4], ["0.4400", "0.5500", "0.5600", "0.6200"]);
    assert_eq!(flags(r), Vec::<String>::new(), "no hash, no timestamp: nothing to flag");
    for k in ["hash", "hash_ok", "exchange_at_utc", "exchange_ts_ms", "recv_lag_ms", "tick_size", "family"] {
        assert!(r[k].is_null(), "{k}");
    }
    // The legacy cents reply is the same book, in dollars.
    let c = &rows[1];
    assert_eq!((c["best_bid_price"].as_str(), c["best_bid_size"].as_str()), (Some("0.42"), Some("13")));
    assert_eq!((c["best_ask_price"].as_str(), c["best_ask_size"].as_str()), (Some("0.44"), Some("17")));
    for k in ["mid", "spread", "bid_depth", "ask_depth", "bid_levels", "ask_levels"] {
        assert_eq!(c[k], r[k], "{k}");
    }
    let x = &rows[2];
    assert_eq!(prices(&x["bids"]), ["0.6000", "0.0010"]);
    assert_eq!(prices(&x["asks"]), ["0.5800"]);
    assert_eq!(flags(x), ["crossed", "bad_level"]);
    assert_eq!((rows[3]["record"].as_str(), rows[3]["reason"].as_str()), (Some("error"), Some("bad_book")));
    let g = &rows[4];
    assert_eq!((g["record"].as_str(), g["gap"].as_str()), (Some("gap"), Some("failed_request")));
    assert_eq!(
        (g["asset_id"].as_str(), g["slug"].as_str(), g["market"].as_str()),
        (Some(KX_TICKER), Some(KX_TICKER), Some(KX_TICKER))
    );
    assert_eq!((rows[5]["venue"].as_str(), rows[5]["hash_ok"].as_bool()), (Some("polymarket"), Some(true)));
    // --check passes on the rows of both venues.
    let dir = tempdir("kcheck");
    let p = dir.join("rows.jsonl");
    std::fs::write(&p, &out).unwrap();
    let (code, rep, err) = normalize_files(&[&p], &["--check"]);
    let rep: Value = serde_json::from_slice(&rep).unwrap();
    assert_eq!((code, rep["ok"].as_bool()), (0, Some(true)), "{rep} {err}");
    assert_eq!(rep["unjoined_book_rows"], 1, "only the Polymarket row, which has no track line here");

    // Without the track line, a Kalshi market record given with --markets joins the ticker.
    let markets = dir.join("kalshi_markets.jsonl");
    let rec =
        json!({"record": "market", "schema": "pmarchive.kalshi_market/1", "venue": "kalshi", "ticker": KX_TICKER});
    std::fs::write(&markets, format!("{rec}\n")).unwrap();
    let (code, out, err) = normalize(&format!("{}\n", kalshi_reply(1, &fp)), &[]);
    assert_eq!((code, jsonl(&out)[0]["slug"].is_null()), (0, true), "{err}");
    let (code, out, err) = normalize(&format!("{}\n", kalshi_reply(1, &fp)), &["--markets", markets.to_str().unwrap()]);
    let row = &jsonl(&out)[0];
    assert_eq!((code, row["slug"].as_str(), row["outcome"].as_str()), (0, Some(KX_TICKER), Some("yes")), "{err}");
}
