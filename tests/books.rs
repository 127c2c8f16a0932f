//! pm-books against the loopback venue (127.0.0.1): books DERIVED from the recorded websocket book,
//! served in reverse request order, with injected faults. Input market records come from running
//! pm-markets against the same venue. Runs that are not live are never called live.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::venue::{Fault, Venue};
use common::{assert_ctx_reads_as, jsonl, market_lines, run_with_timeout, tool};
use pm_archive::clock;
use serde_json::value::RawValue;
use serde_json::Value;
use time::macros::datetime;
use time::OffsetDateTime;

fn now_str() -> String {
    clock::fmt_secs(OffsetDateTime::now_utc())
}

fn books_cmd(v: &Venue, args: &[&str]) -> std::process::Command {
    let mut c = tool("pm-books");
    c.args(["--clob-url", &v.url()]).args(args);
    c
}

/// Runs a command to completion, feeding `stdin` and draining stdout/stderr while it runs (book
/// replies are large: a pipe left unread would block the tool). Returns (exit code, stdout, stderr).
fn run_drained(cmd: std::process::Command, stdin: &[u8], limit: Duration) -> (i32, Vec<u8>, String) {
    let out = common::run_with_timeout(cmd, Some(stdin), limit);
    (out.status.code().unwrap_or(-1), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn spawn_books_cmd(c: &mut std::process::Command) -> Child {
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c.spawn().unwrap()
}

/// Runs pm-books to completion with these stdin lines; returns (exit code, lines, raw lines, stderr).
fn run_books(v: &Venue, args: &[&str], input: &[String]) -> (i32, Vec<Value>, Vec<String>, String) {
    let stdin = input.iter().map(|l| format!("{l}\n")).collect::<String>();
    let (code, out, err) = run_drained(books_cmd(v, args), stdin.as_bytes(), Duration::from_secs(60));
    let text = String::from_utf8(out.clone()).unwrap();
    (code, jsonl(&out), text.lines().map(str::to_string).collect(), err)
}

fn kind<'a>(lines: &'a [Value], k: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["kind"] == k).collect()
}

fn gaps<'a>(lines: &'a [Value], g: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["kind"] == "gap" && l["ctx"]["gap"] == g).collect()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
}

fn tokens_of(record: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(record).unwrap();
    v["tokens"].as_array().unwrap().iter().map(|t| t["token_id"].as_str().unwrap().to_string()).collect()
}

fn slug_of(record: &str) -> String {
    let v: Value = serde_json::from_str(record).unwrap();
    v["slug"].as_str().unwrap().to_string()
}

fn t(s: &Value) -> OffsetDateTime {
    clock::parse_rfc3339(s.as_str().unwrap()).unwrap()
}

/// A JSON value's type, arrays with their elements' types (`[string]`, `[{object}]`): what a columnar
/// reader (pyarrow, DuckDB) infers for a field.
fn json_type(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(n) if n.is_f64() => "float".into(),
        Value::Number(_) => "int".into(),
        Value::String(_) => "string".into(),
        Value::Array(a) => {
            let mut t: Vec<String> = a.iter().map(json_type).collect();
            t.dedup();
            format!("[{}]", t.join("|"))
        }
        Value::Object(_) => "{object}".into(),
    }
}

/// Every `ctx` key keeps one JSON type across all lines (an empty array fits any array type).
fn check_one_type_per_ctx_key(lines: &[Value]) {
    let mut seen: HashMap<String, (String, u64)> = HashMap::new();
    for l in lines {
        for (k, v) in l["ctx"].as_object().into_iter().flatten() {
            let t = json_type(v);
            if t == "[]" {
                continue;
            }
            let (first, seq) = seen.entry(k.clone()).or_insert((t.clone(), l["seq"].as_u64().unwrap()));
            assert_eq!(*first, t, "ctx.{k} is {first} at seq {seq} but {t} at seq {}", l["seq"]);
        }
    }
}

/// Every `ctx` reads back through its Rust type (`HttpCtx<PollCtx>`, `GapCtx`, `TrackCtx`) and writes
/// again as the same JSON: no key without a type, none of another JSON type.
fn check_typed_ctx(lines: &[Value]) {
    use pm_archive::http::HttpCtx;
    use pm_archive::polymarket::books::PollCtx;
    use pm_archive::track::{GapCtx, TrackCtx};
    for l in lines {
        match l["kind"].as_str().unwrap() {
            "http" => assert_ctx_reads_as::<HttpCtx<PollCtx>>(l),
            "gap" => assert_ctx_reads_as::<GapCtx>(l),
            "track" => assert_ctx_reads_as::<TrackCtx>(l),
            other => panic!("unexpected kind {other}"),
        }
    }
}

/// Checks the invariants every pm-books output has: valid envelopes, seq 0.. without holes, one JSON
/// type per ctx key.
fn check_envelopes(lines: &[Value]) {
    check_one_type_per_ctx_key(lines);
    check_typed_ctx(lines);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["schema"], "pmarchive.raw/1");
        assert_eq!(l["tool"], "pm-books");
        assert_eq!(l["seq"], i as u64, "seq has no holes");
        assert!(l["collected_at_utc"].as_str().unwrap().ends_with('Z'));
        match l["kind"].as_str().unwrap() {
            "http" => {
                assert_eq!(l["endpoint"], "books");
                assert_eq!(l["request"]["method"], "POST");
                assert!(l["request"]["url"].as_str().unwrap().ends_with("/books"));
                assert!(l["ctx"]["slot"].is_u64() && l["ctx"]["due_at_utc"].is_string());
                assert!(l["ctx"]["batch"].is_u64() && l["ctx"]["batches"].is_u64());
                // The request body asks for exactly ctx.tokens, in that order.
                let asked: Vec<String> = l["request"]["body"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x["token_id"].as_str().unwrap().to_string())
                    .collect();
                assert_eq!(asked, strs(&l["ctx"]["token_ids"]));
            }
            "gap" => {
                assert!(l["ctx"]["endpoint_url"].as_str().unwrap().ends_with("/books"));
                assert!(l["ctx"]["slot"].is_u64() && l["ctx"]["due_at_utc"].is_string());
                assert!(l["error"].is_string());
            }
            "track" => {
                assert!(["start", "stop"].contains(&l["ctx"]["action"].as_str().unwrap()));
                assert!(l["ctx"]["slug"].is_string() && l["ctx"]["condition_id"].is_string());
                assert!(l["ctx"]["tokens"].is_array());
                // Every line names its endpoint (docs/POLYMARKET_COLLECTOR.md, Output).
                assert!(l["ctx"]["endpoint_url"].as_str().unwrap().ends_with("/books"));
            }
            other => panic!("unexpected kind {other}"),
        }
    }
}

#[test]
fn every_served_book_reply_is_recorded_once_byte_for_byte_on_a_drift_free_schedule() {
    let v = Venue::start();
    let recs = market_lines(&v, "5m,15m", "0", &now_str());
    assert_eq!(recs.len(), 2);
    let (code, lines, raw, err) = run_books(&v, &["--interval", "0.2", "--duration", "1.5"], &recs);
    assert_eq!(code, 0, "{err}");
    check_envelopes(&lines);
    let http = kind(&lines, "http");
    let served: Vec<_> = v.log().into_iter().filter(|s| s.path == "/books").collect();
    assert!(served.len() >= 4, "{} requests in 1.5 s at 0.2 s", served.len());
    assert_eq!(http.len(), served.len(), "one envelope per request");
    // Byte-for-byte: each 200 reply the venue sent is the `body` of exactly one line.
    let bodies: Vec<Vec<u8>> = raw
        .iter()
        .filter_map(|l| {
            serde_json::from_str::<HashMap<String, Box<RawValue>>>(l)
                .unwrap()
                .remove("body")
                .map(|b| b.get().as_bytes().to_vec())
        })
        .collect();
    for s in &served {
        assert_eq!(s.status, Some(200));
        assert_eq!(bodies.iter().filter(|b| **b == s.response).count(), 1, "reply recorded exactly once");
    }
    // Slots increase; due times are exactly start + k·0.2 s.
    let slots: Vec<u64> = http.iter().map(|l| l["ctx"]["slot"].as_u64().unwrap()).collect();
    assert!(slots.windows(2).all(|w| w[1] > w[0]), "{slots:?}");
    let (k0, d0) = (slots[0] as i64, t(&http[0]["ctx"]["due_at_utc"]));
    for l in &http {
        let k = l["ctx"]["slot"].as_i64().unwrap();
        assert_eq!(t(&l["ctx"]["due_at_utc"]) - d0, time::Duration::milliseconds(200 * (k - k0)));
        assert_eq!(l["status"], 200);
        assert_eq!(l["ctx"]["token_ids"].as_array().unwrap().len(), 4);
        assert_eq!((l["ctx"]["batch"].as_u64(), l["ctx"]["batches"].as_u64()), (Some(1), Some(1)));
    }
    assert!(gaps(&lines, "missing_token").is_empty() && kind(&lines, "gap").is_empty());
    // Tracking: both markets started (reason window) and stopped at the end (reason duration).
    let track = kind(&lines, "track");
    assert_eq!(track.len(), 4, "{track:?}");
    assert!(track[..2].iter().all(|l| l["ctx"]["action"] == "start" && l["ctx"]["reason"] == "window"));
    assert!(track[2..].iter().all(|l| l["ctx"]["action"] == "stop" && l["ctx"]["reason"] == "duration"));
    assert_eq!(track[0]["ctx"]["tokens"].as_array().unwrap().len(), 2);
    assert!(err.contains("duration reached") && err.contains("markets tracked 2"), "{err}");
}

#[test]
fn replies_are_matched_by_asset_id_and_unknown_tokens_are_missing_token_gaps() {
    let v = Venue::start();
    let recs = market_lines(&v, "5m", "0", &now_str());
    let real = recs[0].clone();
    // A market whose tokens the venue never issued; its slug sorts first so its tokens are asked
    // for first (a positional match of the reversed reply would blame the real tokens).
    let mut fake: Value = serde_json::from_str(&real).unwrap();
    let fake_ids = ["1".repeat(77), "2".repeat(77)];
    fake["slug"] = "a-fake-market".into();
    fake["condition_id"] = format!("0x{}", "cd".repeat(32)).into();
    fake["tokens"][0]["token_id"] = fake_ids[0].clone().into();
    fake["tokens"][1]["token_id"] = fake_ids[1].clone().into();
    let end = t(&fake["window_end_utc"]) + time::Duration::hours(1);
    fake["window_end_utc"] = clock::fmt_secs(end).into();
    let input = vec![fake.to_string(), real.clone()];
    let (code, lines, _, err) = run_books(&v, &["--interval", "0.2", "--duration", "1.2"], &input);
    assert_eq!(code, 0, "{err}");
    check_envelopes(&lines);
    let real_ids = tokens_of(&real);
    let http = kind(&lines, "http");
    assert!(http.len() >= 3);
    for l in &http {
        assert_eq!(
            strs(&l["ctx"]["token_ids"]),
            vec![fake_ids[0].clone(), fake_ids[1].clone(), real_ids[0].clone(), real_ids[1].clone()]
        );
        let got: Vec<String> =
            l["body"].as_array().unwrap().iter().map(|b| b["asset_id"].as_str().unwrap().to_string()).collect();
        assert_eq!(got, vec![real_ids[1].clone(), real_ids[0].clone()], "the venue answers in reverse order");
    }
    // One missing_token gap per unknown token per reply, naming the right token, slug and outcome.
    let missing = gaps(&lines, "missing_token");
    assert_eq!(missing.len(), 2 * http.len());
    for g in &missing {
        let id = g["ctx"]["token_id"].as_str().unwrap();
        let i = fake_ids.iter().position(|f| f == id).expect("only the unknown tokens are missing");
        assert_eq!(g["ctx"]["slug"], "a-fake-market");
        assert_eq!(g["ctx"]["outcome"], fake["tokens"][i]["outcome"]);
    }
    assert!(err.contains("missing_token:"), "{err}");
}

#[test]
fn faults_are_retried_within_the_slot_or_become_failed_request_gaps() {
    let v = Venue::start();
    let recs = market_lines(&v, "5m", "0", &now_str());
    let ok = || Fault::Slow(Duration::ZERO); // served normally
    v.fault("/books", Fault::TooMany { retry_after: Some("2".into()) }); // longer than the slot: give up
                                                                         // A success after it clears the backoff (failures in a row would otherwise make the next
                                                                         // fault's retry wait longer than a slot — tested by the backoff growth in src/http.rs).
    v.fault("/books", ok());
    for f in [
        Fault::Status(503),
        Fault::Reset,
        Fault::Html,
        Fault::Truncated,
        Fault::TooMany { retry_after: Some("0.3".into()) },
        Fault::ThrottledOk,
    ] {
        v.fault("/books", f);
        v.fault("/books", ok());
    }
    let (code, lines, _, err) = run_books(&v, &["--interval", "0.8", "--duration", "10"], &recs);
    assert_eq!(code, 0, "{err}");
    check_envelopes(&lines);
    let http = kind(&lines, "http");
    assert_eq!(http.len(), v.count("/books"), "every attempt is one envelope");
    // Group attempts by slot, in order.
    let mut groups: Vec<(u64, Vec<&Value>)> = Vec::new();
    for l in &http {
        let k = l["ctx"]["slot"].as_u64().unwrap();
        match groups.last_mut() {
            Some((s, g)) if *s == k => g.push(l),
            _ => groups.push((k, vec![l])),
        }
    }
    assert!(groups.len() >= 9, "{} polled slots", groups.len());
    // Slot 1: 429 Retry-After 2 s would pass the next slot's due time → one try, failed_request.
    let (s0, g0) = &groups[0];
    assert_eq!(g0.len(), 1);
    assert_eq!(g0[0]["status"], 429);
    assert_eq!(g0[0]["headers"]["retry-after"], "2");
    // Retry-After is honoured across slots: nothing is sent for 2 s; each skipped slot is a
    // `backoff` gap, and the next request goes out only after the 2 s.
    let backoff = gaps(&lines, "backoff");
    assert!(!backoff.is_empty(), "{backoff:?}");
    for b in &backoff {
        let k = b["ctx"]["slot"].as_u64().unwrap();
        assert!(k > *s0 && k < groups[1].0, "backoff slot {k} lies between the 429 and the next request");
        assert!(b["error"].as_str().unwrap().contains("backing off"), "{b}");
    }
    let at = |v: &Value, k: &str| clock::parse_rfc3339(v[k].as_str().unwrap()).unwrap();
    let quiet = at(groups[1].1[0], "sent_at_utc") - at(g0[0], "collected_at_utc");
    assert_eq!((groups[1].1.len(), groups[1].1[0]["status"].as_u64()), (1, Some(200)));
    assert!(quiet >= time::Duration::seconds(2), "next request only {quiet} after the 429");
    assert!(g0[0]["error"].as_str().unwrap().contains("would pass the deadline"), "{}", g0[0]);
    let failed = gaps(&lines, "failed_request");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["ctx"]["slot"], *s0);
    assert_eq!(strs(&failed[0]["ctx"]["token_ids"]), tokens_of(&recs[0]));
    assert!(failed[0]["error"].as_str().unwrap().contains("429"));
    // Slots 3..8: the fault, then a retry in the same slot that succeeds.
    for (i, (_, g)) in groups[2..8].iter().enumerate() {
        assert_eq!(g.len(), 2, "group {i}: {g:?}");
        assert!(g[0]["ctx"]["retryable"].is_string(), "{}", g[0]);
        assert_eq!((g[1]["status"].as_u64(), g[1]["attempt"].as_u64()), (Some(200), Some(2)));
        assert!(g[1]["ctx"]["waited_before_s"].as_f64().unwrap() > 0.0);
        assert_eq!(g[1]["body_kind"], "json");
    }
    assert_eq!(groups[2].1[0]["status"], 503);
    assert!(groups[3].1[0].get("status").is_none() && groups[3].1[0]["error"].as_str().unwrap().starts_with("network"));
    assert!(groups[4].1[0]["body_text"].as_str().unwrap().contains("<html>"));
    assert!(groups[5].1[0]["body_error"].as_str().unwrap().starts_with("not_json"));
    assert_eq!(groups[6].1[0]["status"], 429);
    assert!(groups[6].1[1]["ctx"]["waited_before_s"].as_f64().unwrap() >= 0.3);
    assert_eq!(groups[7].1[0]["body"]["error"], "Too Many Requests");
    // The schedule went on: every later slot is a single 200.
    for (_, g) in &groups[8..] {
        assert_eq!(g.len(), 1);
        assert_eq!(g[0]["status"], 200);
    }
    assert!(groups.windows(2).all(|w| w[1].0 > w[0].0));
    assert!(gaps(&lines, "missing_token").is_empty());
    assert!(err.contains("failed_request:1"), "{err}");
    assert!(err.contains("backoff:"), "{err}");
}

#[test]
fn a_slow_reply_is_kept_and_the_slots_it_overran_are_one_missed_slots_gap() {
    let v = Venue::start();
    let recs = market_lines(&v, "5m", "0", &now_str());
    v.fault("/books", Fault::Slow(Duration::from_millis(700)));
    let (code, lines, _, err) = run_books(&v, &["--interval", "0.2", "--duration", "2"], &recs);
    assert_eq!(code, 0, "{err}");
    check_envelopes(&lines);
    let http = kind(&lines, "http");
    let slow = http[0];
    assert_eq!(slow["status"], 200);
    assert!(slow["elapsed_ms"].as_f64().unwrap() >= 700.0);
    let missed = gaps(&lines, "missed_slots");
    assert_eq!(missed.len(), 1, "{missed:?}");
    let m = &missed[0]["ctx"];
    let s = slow["ctx"]["slot"].as_u64().unwrap();
    let next = http[1]["ctx"]["slot"].as_u64().unwrap();
    // 0.7 s at 0.2 s per slot: at least the 2 slots after the slow one never started.
    assert_eq!(m["from_slot"].as_u64(), Some(s + 1));
    assert_eq!(m["to_slot"].as_u64(), Some(next - 1));
    let count = m["count"].as_u64().unwrap();
    assert_eq!(count, next - s - 1);
    assert!(count >= 2, "{count}");
    // Noticed in the slot that ran next, with the first missed slot's due time.
    assert_eq!(m["slot"].as_u64(), Some(next));
    assert_eq!(t(&m["first_due_at_utc"]) - t(&slow["ctx"]["due_at_utc"]), time::Duration::milliseconds(200));
    assert!(err.contains(&format!("{count} missed")) && err.contains("missed_slots:1"), "{err}");
}

/// Spawns pm-books with piped stdin/stdout/stderr.
fn spawn_books(mut c: std::process::Command) -> Child {
    spawn_books_cmd(&mut c)
}

/// Collects a child's stdout lines on a thread.
fn collect_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

fn wait_exit(child: &mut Child, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().expect("exited normally");
        }
        assert!(start.elapsed() < limit, "did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    use std::io::Read;
    child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

#[test]
fn tracking_follows_the_simulated_clock_lead_book_gone_and_late_arrivals() {
    let v = Venue::start();
    let start = datetime!(2026-08-22 16:03:30 UTC);
    let spec = v.simulate_clock(start, 60.0); // 0.2 s real = 12 s simulated
    v.set_book_gone_after(Duration::from_secs(30));
    let recs = market_lines(&v, "5m,15m", "1", "2026-08-22T16:03:30Z");
    let find = |slug: &str| recs.iter().find(|r| slug_of(r) == slug).unwrap().clone();
    let a = find("btc-updown-5m-1787414400"); // 16:00–16:05, in its window
    let b = find("btc-updown-5m-1787414700"); // 16:05–16:10, lead 60 s → from 16:04:00
    let c = find("btc-updown-15m-1787414400"); // 16:00–16:15, arrives later on stdin
    let mut cmd = books_cmd(&v, &["--interval", "0.2", "--lead", "60", "--grace", "120", "--duration", "3.4"]);
    cmd.env("PMARCHIVE_CLOCK", &spec);
    let mut child = spawn_books(cmd);
    let rx = collect_lines(&mut child);
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{a}\n{b}").unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    writeln!(stdin, "{c}").unwrap();
    drop(stdin);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(30)), 0);
    let err = stderr_of(&mut child);
    assert!(err.contains("simulated clock active"), "{err}");
    let lines: Vec<Value> = rx.iter().map(|l| serde_json::from_str(&l).unwrap()).collect();
    check_envelopes(&lines);
    let track = |slug: &str, action: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["kind"] == "track" && l["ctx"]["slug"] == slug && l["ctx"]["action"] == action)
            .collect()
    };
    let pos = |l: &Value| l["seq"].as_u64().unwrap() as usize;
    let asks = |l: &Value, rec: &str| {
        l["kind"] == "http" && tokens_of(rec).iter().all(|tk| strs(&l["ctx"]["token_ids"]).contains(tk))
    };
    let (sa, sb, sc) = (slug_of(&a), slug_of(&b), slug_of(&c));
    // A: tracked from the first slot, in its window.
    assert_eq!(track(&sa, "start").len(), 1);
    // B: starts at window start − lead (16:04:00 simulated), not before; never asked for before that.
    let b_start = track(&sb, "start")[0];
    let b_at = t(&b_start["collected_at_utc"]);
    assert!(b_at >= datetime!(2026-08-22 16:04:00 UTC) && b_at < datetime!(2026-08-22 16:04:40 UTC), "{b_at}");
    assert!(lines[..pos(b_start)].iter().all(|l| !asks(l, &b)));
    assert!(lines[pos(b_start)..].iter().any(|l| asks(l, &b)));
    assert_eq!(b_start["ctx"]["window_start_utc"], "2026-08-22T16:05:00Z");
    assert_eq!(b_start["ctx"]["reason"], "window");
    // C: arrived ~1 s later on stdin; picked up then (not in the first slots).
    let c_start = track(&sc, "start")[0];
    let first_http = lines.iter().position(|l| l["kind"] == "http").unwrap();
    assert!(pos(c_start) > first_http + 2, "C started at line {}", pos(c_start));
    assert!(lines[pos(c_start)..].iter().any(|l| asks(l, &c)));
    // A: its book disappears 30 s after its window end (16:05:00); after 3 replies without it, it
    // stops (book_gone) — before its grace (16:07:00) would have stopped it.
    let a_stop = track(&sa, "stop");
    assert_eq!(a_stop.len(), 1, "{a_stop:?}");
    assert_eq!(a_stop[0]["ctx"]["reason"], "book_gone");
    assert_eq!(
        strs(&Value::Array(
            a_stop[0]["ctx"]["tokens"].as_array().unwrap().iter().map(|x| x["token_id"].clone()).collect()
        )),
        tokens_of(&a)
    );
    let a_stop_at = t(&a_stop[0]["collected_at_utc"]);
    assert!(
        a_stop_at > datetime!(2026-08-22 16:05:00 UTC) && a_stop_at < datetime!(2026-08-22 16:07:00 UTC),
        "{a_stop_at}"
    );
    let a_missing: Vec<&Value> =
        gaps(&lines, "missing_token").into_iter().filter(|g| g["ctx"]["slug"] == sa.as_str()).collect();
    assert!(a_missing.len() >= 6, "3 replies without each of the 2 tokens");
    assert!(lines[pos(a_stop[0])..]
        .iter()
        .all(|l| !(l["kind"] == "http" && strs(&l["ctx"]["token_ids"]).contains(&tokens_of(&a)[0]))));
    // B and C are still tracked when the duration ends.
    for s in [&sb, &sc] {
        let stop = track(s, "stop");
        assert_eq!(stop.len(), 1);
        assert_eq!(stop[0]["ctx"]["reason"], "duration");
    }
    assert!(err.contains("markets tracked 3"), "{err}");
}

#[test]
fn grace_ends_tracking_expired_records_start_nothing_and_end_of_input_ends_the_run() {
    let v = Venue::start();
    let spec = v.simulate_clock(datetime!(2026-08-22 16:04:50 UTC), 60.0);
    let recs = market_lines(&v, "5m,15m", "0", "2026-08-22T16:04:50Z");
    let a = recs.iter().find(|r| slug_of(r) == "btc-updown-5m-1787414400").unwrap().clone();
    let mut expired: Value =
        serde_json::from_str(recs.iter().find(|r| slug_of(r) == "btc-updown-15m-1787414400").unwrap()).unwrap();
    expired["change"] = "expired".into();
    let mut cmd = books_cmd(&v, &["--interval", "0.2", "--grace", "20"]);
    cmd.env("PMARCHIVE_CLOCK", &spec);
    let stdin = format!("{a}\n{expired}\n");
    let (code, out, err) = run_drained(cmd, stdin.as_bytes(), Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    let lines = jsonl(&out);
    check_envelopes(&lines);
    let track = kind(&lines, "track");
    assert_eq!(track.len(), 2, "only A is tracked: {track:?}");
    assert_eq!((&track[0]["ctx"]["action"], &track[1]["ctx"]["action"]), (&"start".into(), &"stop".into()));
    assert_eq!(track[1]["ctx"]["reason"], "grace_elapsed");
    assert!(t(&track[1]["collected_at_utc"]) >= datetime!(2026-08-22 16:05:20 UTC));
    assert!(gaps(&lines, "missing_token").is_empty(), "the book was still there");
    assert!(kind(&lines, "http").len() >= 2);
    assert_eq!(lines.last().unwrap()["ctx"]["action"], "stop", "nothing after the last stop");
    assert!(err.contains("input ended and nothing left to track") && err.contains("1 ignored"), "{err}");
}

#[test]
fn sigterm_finishes_flushes_and_exits_0() {
    let v = Venue::start();
    let recs = market_lines(&v, "5m", "0", &now_str());
    let mut child = spawn_books(books_cmd(&v, &["--interval", "0.2"]));
    let rx = collect_lines(&mut child);
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", recs[0]).unwrap();
    // stdin stays open: only the signal ends the run.
    let mut got = Vec::new();
    while got.iter().filter(|l: &&String| l.contains("\"kind\":\"http\"")).count() < 3 {
        got.push(rx.recv_timeout(Duration::from_secs(20)).expect("lines keep coming"));
    }
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), 0);
    got.extend(rx.iter());
    let lines: Vec<Value> =
        got.iter().map(|l| serde_json::from_str(l).expect("valid JSONL to the last line")).collect();
    check_envelopes(&lines);
    let last = lines.last().unwrap();
    assert_eq!(
        (&last["kind"], &last["ctx"]["action"], &last["ctx"]["reason"]),
        (&"track".into(), &"stop".into(), &"signal".into())
    );
    let err = stderr_of(&mut child);
    assert!(err.contains("stopped by signal 15") && err.contains("requests 200:"), "{err}");
    drop(stdin);
}

#[test]
fn a_closed_stdout_ends_the_run_with_0() {
    let v = Venue::start();
    let recs = market_lines(&v, "5m", "0", &now_str());
    let mut child = spawn_books(books_cmd(&v, &["--interval", "0.2"]));
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", recs[0]).unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    for _ in 0..3 {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        serde_json::from_str::<Value>(&l).unwrap();
    }
    drop(out);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), 0);
    let err = stderr_of(&mut child);
    assert!(!err.contains("error"), "quiet: {err}");
    drop(stdin);
}

#[test]
fn bad_stdin_lines_are_reported_counted_and_skipped() {
    let v = Venue::start();
    let recs = market_lines(&v, "5m", "0", &now_str());
    let input = vec!["this is not json".to_string(), "{\"record\":\"market\"}".to_string(), recs[0].clone()];
    let (code, lines, _, err) = run_books(&v, &["--interval", "0.2", "--duration", "0.8"], &input);
    assert_eq!(code, 1, "bad input lines are a finding (cli.rs exit rule): {err}");
    check_envelopes(&lines);
    assert!(err.contains("pm-books: stdin line 1: skipped: not a market record"), "{err}");
    assert!(err.contains("pm-books: stdin line 2: skipped:"), "{err}");
    assert!(err.contains("input lines 3 (2 bad, 0 ignored)"), "{err}");
    assert!(!kind(&lines, "http").is_empty(), "the good record is still polled");
    // Each bad line is also kept in the archive: a bad_input gap naming its stdin line number,
    // written before anything is polled, with the reason stderr gave.
    let bad = gaps(&lines, "bad_input");
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert_eq!((bad[0]["ctx"]["line"].as_u64(), bad[1]["ctx"]["line"].as_u64()), (Some(1), Some(2)));
    assert!(bad[0]["error"].as_str().unwrap().contains("not a market record"), "{}", bad[0]);
    for b in &bad {
        assert!(err.contains(&format!("stdin line {}: skipped: {}", b["ctx"]["line"], b["error"].as_str().unwrap())));
    }
    let first_http = lines.iter().position(|l| l["kind"] == "http").unwrap();
    assert!(bad.iter().all(|b| (b["seq"].as_u64().unwrap() as usize) < first_http));
    assert!(err.contains("gaps bad_input:2"), "{err}");
}

#[test]
fn bad_arguments_exit_2_and_help_version_exit_0() {
    let v = Venue::start();
    for args in [
        vec!["--interval", "0"],
        vec!["--interval", "abc"],
        vec!["--batch", "501"],
        vec!["--batch", "0"],
        vec!["--lead", "-1"],
        vec!["--retries", "0"],
        vec!["--clob-url", "ftp://x"],
        vec!["--bogus"],
    ] {
        let out = run_with_timeout(books_cmd(&v, &args), Some(b""), Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("pm-books: "), "{err}");
    }
    let out = run_with_timeout(books_cmd(&v, &["--help"]), None, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--interval SECS"));
    let out = run_with_timeout(books_cmd(&v, &["-V"]), None, Duration::from_secs(20));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pm-books "));
    // Empty stdin: nothing to track, nothing to do.
    let out = run_with_timeout(books_cmd(&v, &["--interval", "0.2"]), Some(b""), Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert_eq!(v.count("/books"), 0);
}

#[test]
fn tokens_are_split_into_batches_of_at_most_batch() {
    let v = Venue::start();
    let recs = market_lines(&v, "5m,15m,4h", "0", &now_str());
    assert_eq!(recs.len(), 3);
    let all: Vec<String> = recs.iter().flat_map(|r| tokens_of(r)).collect();
    let (code, lines, _, err) = run_books(&v, &["--interval", "0.5", "--duration", "1.4", "--batch", "4"], &recs);
    assert_eq!(code, 0, "{err}");
    check_envelopes(&lines);
    let http = kind(&lines, "http");
    assert!(http.len() >= 4 && http.len().is_multiple_of(2), "{}", http.len());
    for pair in http.chunks(2) {
        assert_eq!(pair[0]["ctx"]["slot"], pair[1]["ctx"]["slot"]);
        assert_eq!((pair[0]["ctx"]["batch"].as_u64(), pair[0]["ctx"]["batches"].as_u64()), (Some(1), Some(2)));
        assert_eq!((pair[1]["ctx"]["batch"].as_u64(), pair[1]["ctx"]["batches"].as_u64()), (Some(2), Some(2)));
        assert_eq!(pair[0]["ctx"]["token_ids"].as_array().unwrap().len(), 4);
        assert_eq!(pair[1]["ctx"]["token_ids"].as_array().unwrap().len(), 2);
        let mut asked: Vec<String> = strs(&pair[0]["ctx"]["token_ids"]);
        asked.extend(strs(&pair[1]["ctx"]["token_ids"]));
        let mut want = all.clone();
        asked.sort();
        want.sort();
        assert_eq!(asked, want, "every tracked token once per slot");
        assert!(pair.iter().all(|l| l["status"] == 200));
    }
    assert!(kind(&lines, "gap").is_empty());
}

/// SIGTERM while a reply is still coming: the request in flight is finished (its envelope, with the
/// whole reply, is written), then the stop records, flush, exit 0 — no further request is sent.
#[test]
fn sigterm_during_a_slow_reply_finishes_that_request_then_exits_0() {
    let v = Venue::start();
    let recs = market_lines(&v, "5m", "0", &now_str());
    v.fault("/books", Fault::Slow(Duration::from_millis(2500)));
    let mut child = spawn_books(books_cmd(&v, &["--interval", "0.2", "--timeout", "10"]));
    let rx = collect_lines(&mut child);
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", recs[0]).unwrap();
    // The track start line is written right before the slot's request is sent.
    let first = rx.recv_timeout(Duration::from_secs(20)).expect("a track start line");
    assert!(first.contains("\"kind\":\"track\""), "{first}");
    std::thread::sleep(Duration::from_millis(500));
    let killed_at = OffsetDateTime::now_utc();
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), 0);
    let mut got = vec![first];
    got.extend(rx.iter());
    let lines: Vec<Value> = got.iter().map(|l| serde_json::from_str(l).expect("valid JSONL")).collect();
    check_envelopes(&lines);
    let http = kind(&lines, "http");
    assert_eq!(http.len(), 1, "only the request in flight: {http:?}");
    let h = http[0];
    // It was in flight when the signal came, and its reply was still read in full.
    assert!(t(&h["sent_at_utc"]) < killed_at && killed_at < t(&h["collected_at_utc"]), "{h}");
    assert_eq!(h["status"], 200);
    assert!(h["elapsed_ms"].as_f64().unwrap() >= 2500.0);
    assert_eq!(h["body"].as_array().unwrap().len(), 2, "both books of the reply");
    assert_eq!(v.count("/books"), 1, "no request after the signal");
    let last = lines.last().unwrap();
    assert_eq!((&last["ctx"]["action"], &last["ctx"]["reason"]), (&"stop".into(), &"signal".into()));
    let err = stderr_of(&mut child);
    assert!(err.contains("stopped by signal 15") && err.contains("requests 200:1;"), "{err}");
    drop(stdin);
}

/// A reply slower than `--timeout`: the attempt ends at the timeout as an envelope without status
/// and with a network (timeout) error; it is retried within the slot, and polling goes on.
#[test]
fn a_reply_slower_than_the_timeout_is_a_recorded_network_error_and_polling_goes_on() {
    let v = Venue::start();
    let recs = market_lines(&v, "5m", "0", &now_str());
    v.fault("/books", Fault::Slow(Duration::from_secs(3)));
    let args = ["--interval", "1", "--timeout", "0.3", "--duration", "3"];
    let (code, lines, _, err) = run_books(&v, &args, &recs);
    assert_eq!(code, 0, "{err}");
    check_envelopes(&lines);
    let http = kind(&lines, "http");
    assert!(http.len() >= 3, "{} http lines; {err}", http.len());
    let cut = http[0];
    assert!(cut.get("status").is_none() && cut.get("body").is_none(), "{cut}");
    let e = cut["error"].as_str().unwrap();
    assert!(e.starts_with("network") && e.to_lowercase().contains("timeout"), "{e}");
    assert_eq!(cut["ctx"]["retryable"], "network");
    let ms = cut["elapsed_ms"].as_f64().unwrap();
    assert!((250.0..2900.0).contains(&ms), "cut at the 0.3 s timeout, not the venue's 3 s: {ms}");
    // Retried in the same slot (0.3 s + a backoff of at most 0.5 s ends before the next slot), successfully.
    let retry = http[1];
    assert_eq!(retry["ctx"]["slot"], cut["ctx"]["slot"]);
    assert_eq!((retry["attempt"].as_u64(), retry["status"].as_u64()), (Some(2), Some(200)));
    // The next slot is polled normally.
    assert!(http[2..].iter().all(|l| l["status"] == 200 && l["attempt"] == 1));
    assert!(http[2]["ctx"]["slot"].as_u64() > cut["ctx"]["slot"].as_u64());
    assert!(kind(&lines, "gap").is_empty(), "nothing lost: {:?}", kind(&lines, "gap"));
    assert!(err.contains("requests 200:") && err.contains("none:1"), "{err}");
}

/// Track lines of one market with this action.
fn tracks<'a>(lines: &'a [Value], slug: &str, action: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["kind"] == "track" && l["ctx"]["slug"] == slug && l["ctx"]["action"] == action).collect()
}

/// Issue 11 §4: the wall clock jumps +3 h for a while (NTP step, VM resume) and comes back. Every
/// live market keeps being polled in every slot — during the step and after it — and stops only at
/// the end of the run: no `grace_elapsed` stop, no restart, no window lost.
#[test]
fn a_wall_clock_step_forward_and_back_stops_no_live_market() {
    let v = Venue::start();
    // 0.2 s real = 12 s simulated; the venue's clock is the true one (it does not step).
    let spec = v.simulate_clock(datetime!(2026-08-22 16:03:30 UTC), 60.0);
    // The venue's clock runs ahead of the tool's by the time pm-markets takes: keep every book.
    v.set_book_gone_after(Duration::from_secs(3600));
    let recs = market_lines(&v, "5m,15m,4h", "0", "2026-08-22T16:03:30Z");
    assert_eq!(recs.len(), 3);
    let all: Vec<String> = recs.iter().flat_map(|r| tokens_of(r)).collect();
    // +3 h from 0.3 s to 1.5 s real (72 s simulated), then back.
    let mut cmd = books_cmd(&v, &["--interval", "0.2", "--lead", "60", "--grace", "120", "--duration", "2.4"]);
    cmd.env("PMARCHIVE_CLOCK", format!("{spec},+10800@0.3,-10800@1.5"));
    let input: String = recs.iter().map(|r| format!("{r}\n")).collect();
    let (code, out, err) = run_drained(cmd, input.as_bytes(), Duration::from_secs(60));
    assert_eq!(code, 0, "{err}");
    let lines = jsonl(&out);
    check_envelopes(&lines);
    let http = kind(&lines, "http");
    let at = |l: &Value| t(&l["collected_at_utc"]);
    let stepped = datetime!(2026-08-22 19:00 UTC);
    let during: Vec<&&Value> = http.iter().filter(|l| at(l) >= stepped).collect();
    assert!(!during.is_empty(), "polled while the wall clock was 3 h ahead");
    let last_during = during.last().unwrap()["seq"].as_u64().unwrap();
    let after: Vec<&&Value> =
        http.iter().filter(|l| l["seq"].as_u64().unwrap() > last_during && at(l) < stepped).collect();
    assert!(!after.is_empty(), "polled after the wall clock came back");
    // Every polled slot, before, during and after the step, asks for every token of every market.
    for l in &http {
        let mut asked = strs(&l["ctx"]["token_ids"]);
        asked.sort();
        let mut want = all.clone();
        want.sort();
        assert_eq!(asked, want, "slot {} asks for every tracked token", l["ctx"]["slot"]);
    }
    for r in &recs {
        let s = slug_of(r);
        let (start, stop) = (tracks(&lines, &s, "start"), tracks(&lines, &s, "stop"));
        assert_eq!(start.len(), 1, "{s}: started once: {start:?}");
        assert_eq!(stop.len(), 1, "{s}: stopped once: {stop:?}");
        assert_eq!(stop[0]["ctx"]["reason"], "duration", "{s}");
    }
    assert!(err.contains("markets tracked 3 (still tracked at exit 3)"), "{err}");
}

/// The wall clock jumps 3 h back and stays there: a market due to start (window start − lead)
/// starts on time by the monotonic clock, and a market whose window truly ended stops on the venue's
/// evidence (its book is gone), although the wall clock says its window has not even begun.
#[test]
fn a_wall_clock_step_back_starts_on_time_and_book_gone_still_stops() {
    let v = Venue::start();
    let spec = v.simulate_clock(datetime!(2026-08-22 16:03:30 UTC), 60.0);
    v.set_book_gone_after(Duration::from_secs(30));
    let recs = market_lines(&v, "5m", "1", "2026-08-22T16:03:30Z");
    let find = |slug: &str| recs.iter().find(|r| slug_of(r) == slug).unwrap().clone();
    let a = find("btc-updown-5m-1787414400"); // 16:00–16:05: its book is gone from 16:05:30
    let b = find("btc-updown-5m-1787414700"); // 16:05–16:10, lead 60 s → from 16:04:00
    let mut cmd = books_cmd(&v, &["--interval", "0.2", "--lead", "60", "--grace", "120", "--duration", "4.4"]);
    cmd.env("PMARCHIVE_CLOCK", format!("{spec},-10800@0.2"));
    let (code, out, err) = run_drained(cmd, format!("{a}\n{b}\n").as_bytes(), Duration::from_secs(60));
    assert_eq!(code, 0, "{err}");
    let lines = jsonl(&out);
    check_envelopes(&lines);
    let back = datetime!(2026-08-22 14:00 UTC);
    // B starts while the wall clock reads about 13:04 — three hours before its window.
    let b_start = tracks(&lines, &slug_of(&b), "start");
    assert_eq!(b_start.len(), 1, "{b_start:?}");
    assert!(t(&b_start[0]["collected_at_utc"]) < back, "{}", b_start[0]);
    assert!(lines.iter().any(|l| l["kind"] == "http" && strs(&l["ctx"]["token_ids"]).contains(&tokens_of(&b)[0])));
    // A stops because the venue no longer has its books, with the wall clock still 3 h behind.
    let a_stop = tracks(&lines, &slug_of(&a), "stop");
    assert_eq!(a_stop.len(), 1, "{a_stop:?}");
    assert_eq!(a_stop[0]["ctx"]["reason"], "book_gone");
    assert!(t(&a_stop[0]["collected_at_utc"]) < back);
    assert_eq!(tracks(&lines, &slug_of(&b), "stop")[0]["ctx"]["reason"], "duration");
}

/// A process started while the wall clock was 3 h ahead judges a market's window by that clock (it
/// has no other): the record of a market in its window is ignored as over. Once the clock is
/// corrected, the next record of that market (pm-markets re-sends it on any change) starts it.
#[test]
fn a_record_of_a_market_still_live_restarts_it_after_the_clock_is_corrected() {
    let v = Venue::start();
    v.simulate_clock(datetime!(2026-08-22 16:03:30 UTC), 60.0);
    let recs = market_lines(&v, "15m", "0", "2026-08-22T16:03:30Z");
    let a = recs[0].clone(); // 16:00–16:15
                             // Both readings start 3 h ahead; the wall clock is corrected after 0.5 s real.
    let spec = format!("{}x60,-10800@0.5", clock::fmt_micros(datetime!(2026-08-22 19:03:30 UTC)));
    let mut cmd = books_cmd(&v, &["--interval", "0.2", "--duration", "2"]);
    cmd.env("PMARCHIVE_CLOCK", &spec);
    let mut child = spawn_books(cmd);
    let rx = collect_lines(&mut child);
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{a}").unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    writeln!(stdin, "{a}").unwrap();
    assert_eq!(wait_exit(&mut child, Duration::from_secs(30)), 0);
    drop(stdin);
    let err = stderr_of(&mut child);
    let lines: Vec<Value> = rx.iter().map(|l| serde_json::from_str(&l).unwrap()).collect();
    check_envelopes(&lines);
    let start = tracks(&lines, &slug_of(&a), "start");
    assert_eq!(start.len(), 1, "{start:?}");
    assert!(t(&start[0]["collected_at_utc"]) < datetime!(2026-08-22 17:00 UTC), "started after the correction");
    assert!(kind(&lines, "http").iter().all(|l| strs(&l["ctx"]["token_ids"]) == tokens_of(&a)));
    assert!(!kind(&lines, "http").is_empty());
    assert!(err.contains("input lines 2 (0 bad, 1 ignored)"), "{err}");
}

/// Venue evidence: a record saying the market is closed (Gamma `closed: true`) stops it (reason
/// `closed`), and a later record of it does not restart it.
#[test]
fn a_closed_record_stops_the_market() {
    let v = Venue::start();
    let recs = market_lines(&v, "5m", "0", &now_str());
    let mut closed: Value = serde_json::from_str(&recs[0]).unwrap();
    closed["closed"] = true.into();
    closed["status"] = "closed".into();
    closed["change"] = "changed".into();
    let mut child = spawn_books(books_cmd(&v, &["--interval", "0.2", "--duration", "2.5"]));
    let rx = collect_lines(&mut child);
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", recs[0]).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    writeln!(stdin, "{closed}").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    writeln!(stdin, "{}", recs[0]).unwrap();
    drop(stdin);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(30)), 0);
    let err = stderr_of(&mut child);
    let lines: Vec<Value> = rx.iter().map(|l| serde_json::from_str(&l).unwrap()).collect();
    check_envelopes(&lines);
    let s = slug_of(&recs[0]);
    assert_eq!(tracks(&lines, &s, "start").len(), 1);
    let stop = tracks(&lines, &s, "stop");
    assert_eq!(stop.len(), 1, "{stop:?}");
    assert_eq!(stop[0]["ctx"]["reason"], "closed");
    assert_eq!(stop[0]["ctx"]["tokens"].as_array().unwrap().len(), 2);
    let stop_seq = stop[0]["seq"].as_u64().unwrap();
    assert!(kind(&lines, "http").iter().all(|l| l["seq"].as_u64().unwrap() < stop_seq), "nothing polled after");
    assert!(err.contains("input ended and nothing left to track"), "{err}");
    assert!(err.contains("input lines 3 (0 bad, 1 ignored)"), "{err}");
}

/// The `pm-books: outage…` lines of a stderr text.
fn outage_lines(err: &str) -> (Vec<&str>, Vec<&str>) {
    let starts = err.lines().filter(|l| l.starts_with("pm-books: outage: ")).collect();
    let ends = err.lines().filter(|l| l.starts_with("pm-books: outage over: ")).collect();
    (starts, ends)
}

/// Issue 11 §3: with no venue at all (nothing listens on the port: connection refused), the journal
/// says within seconds what is happening — one line, not one per slot — and the summary says the
/// outage is still going on.
#[test]
fn no_venue_one_outage_line_within_seconds_then_quiet() {
    let v = Venue::start();
    let recs = market_lines(&v, "5m", "0", &now_str());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let mut c = tool("pm-books");
    c.args(["--clob-url", &url, "--interval", "0.2"]);
    let mut child = spawn_books(c);
    let rx = collect_lines(&mut child);
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", recs[0]).unwrap();
    // Read stderr as it comes: the outage line arrives while the tool keeps running.
    let err = child.stderr.take().unwrap();
    let (etx, erx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines() {
            let Ok(l) = l else { return };
            if etx.send(l).is_err() {
                return;
            }
        }
    });
    let first = loop {
        let l = erx.recv_timeout(Duration::from_secs(30)).expect("an outage line on stderr while running");
        if l.starts_with("pm-books: outage: ") {
            break l;
        }
    };
    assert!(first.starts_with(&format!("pm-books: outage: {url}/books: no usable reply after ")), "{first}");
    assert!(first.contains("retrying") && first.contains("gap record"), "{first}");
    // Several failed slots later, still that one line.
    let mut failed = 0;
    while failed < 3 {
        let l = rx.recv_timeout(Duration::from_secs(30)).expect("gap lines keep coming");
        failed += usize::from(l.contains("\"gap\":\"failed_request\"") || l.contains("\"gap\":\"backoff\""));
    }
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), 0);
    drop(stdin);
    let rest: Vec<String> = erx.iter().collect();
    let all = format!("{first}\n{}", rest.join("\n"));
    let (starts, ends) = outage_lines(&all);
    assert_eq!((starts.len(), ends.len()), (1, 0), "{all}");
    assert!(all.contains("outages 1 (one still going on for"), "{all}");
}

/// A venue that fails for a few requests and then answers: one line when the outage starts, one
/// when it ends, naming how many attempts failed (every one of them is also an envelope on stdout).
#[test]
fn an_outage_is_one_line_when_it_starts_and_one_when_it_ends() {
    let v = Venue::start();
    let recs = market_lines(&v, "5m", "0", &now_str());
    // One good reply first (the outage starts after a success), then three failures in a row.
    v.fault("/books", Fault::Slow(Duration::ZERO));
    for _ in 0..3 {
        v.fault("/books", Fault::Status(503));
    }
    let (code, lines, _, err) = run_books(&v, &["--interval", "0.2", "--retries", "1", "--duration", "5"], &recs);
    assert_eq!(code, 0, "{err}");
    check_envelopes(&lines);
    let (starts, ends) = outage_lines(&err);
    assert_eq!((starts.len(), ends.len()), (1, 1), "{err}");
    assert!(starts[0].contains("/books: no usable reply after 1 attempt(s): 503"), "{}", starts[0]);
    let failed = kind(&lines, "http").iter().filter(|l| l["status"] == 503).count();
    assert_eq!(failed, 3);
    assert!(
        ends[0].contains("/books answered again after ") && ends[0].ends_with(" s and 3 failed attempt(s)"),
        "{}",
        ends[0]
    );
    let pos = |needle: &str| err.find(needle).unwrap();
    assert!(pos("pm-books: outage: ") < pos("pm-books: outage over: "));
    assert!(err.contains("; outages 1"), "{err}");
    // Polling went on after it.
    assert!(kind(&lines, "http").last().unwrap()["status"] == 200);
}
