//! kalshi-trades against the loopback Kalshi venue (tests/common/kalshi.rs, 127.0.0.1, prints
//! DERIVED from the real capture and the documented `Trade` shape, docs/KALSHI_FACTS.md §4). Market
//! records are the venue's markets parsed by `kalshi::market::parse_market`, as kalshi-markets writes
//! them. Runs that are not live are never called live.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use common::kalshi::{self as kv, CursorEnd, KalshiVenue};
use common::venue::{Fault, Venue};
use common::{assert_ctx_reads_as, jsonl, run_with_timeout, sigterm_after_http_lines, tool, Lines};
use pm_archive::http::HttpCtx;
use pm_archive::kalshi::market::{parse_market, TrackCtx, SERIES};
use pm_archive::kalshi::trades::PageCtx;
use pm_archive::track::GapCtx;
use serde_json::Value;
use time::macros::datetime;
use time::OffsetDateTime;

/// The market record lines of the windows trading at `at` (each as kalshi-markets writes it).
fn records(k: &KalshiVenue, at: &[OffsetDateTime]) -> Vec<String> {
    at.iter()
        .map(|t| {
            let ticker = k.ticker_at(*t);
            let wire = serde_json::to_value(k.market(&ticker).unwrap_or_else(|| panic!("{ticker} listed"))).unwrap();
            let m = parse_market(&wire, SERIES, &format!("{}/markets", k.url()), k.now()).unwrap();
            serde_json::to_string(&m).unwrap()
        })
        .collect()
}

/// Runs kalshi-trades on the venue's clock with these stdin lines; returns (exit code, lines, stderr).
fn run_trades(k: &KalshiVenue, spec: &str, args: &[&str], input: &[String]) -> (i32, Vec<Value>, String) {
    let mut c = tool("kalshi-trades");
    c.args(["--kalshi-url", &k.url()]).args(args).env("PMARCHIVE_CLOCK", spec);
    let stdin = input.iter().map(|l| format!("{l}\n")).collect::<String>();
    let out = run_with_timeout(c, Some(stdin.as_bytes()), Duration::from_secs(180));
    (out.status.code().unwrap_or(-1), jsonl(&out.stdout), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The trade ids of every 200 page in the raw lines, in order (repeats kept), with the walk of each.
fn archived(lines: &[Value]) -> Vec<(String, String)> {
    let mut ids = Vec::new();
    for l in lines.iter().filter(|l| l["kind"] == "http" && l["status"] == 200) {
        for t in l["body"]["trades"].as_array().into_iter().flatten() {
            ids.push((t["trade_id"].as_str().unwrap().to_string(), l["ctx"]["walk"].as_str().unwrap().to_string()));
        }
    }
    ids
}

fn gaps<'a>(lines: &'a [Value], g: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["kind"] == "gap" && l["ctx"]["gap"] == g).collect()
}

/// Every envelope is a kalshi-trades raw line numbered 0.. without a hole; every `ctx` reads back
/// through its Rust type; every request is loopback and sends its filters on every page.
fn check_envelopes(lines: &[Value]) {
    for (i, l) in lines.iter().enumerate() {
        match l["kind"].as_str().unwrap() {
            "http" => assert_ctx_reads_as::<HttpCtx<PageCtx>>(l),
            "gap" => assert_ctx_reads_as::<GapCtx>(l),
            "track" => assert_ctx_reads_as::<TrackCtx>(l),
            other => panic!("unexpected kind {other}"),
        }
        assert_eq!(l["schema"], "pmarchive.raw/1");
        assert_eq!((&l["tool"], &l["venue"]), (&"kalshi-trades".into(), &"kalshi".into()), "{l}");
        assert_eq!(l["seq"].as_u64(), Some(i as u64), "seq without holes");
        if l["kind"] == "http" {
            assert_eq!(l["endpoint"], "kalshi-trades");
            let url = l["request"]["url"].as_str().unwrap();
            assert!(url.starts_with("http://127.0.0.1:") && url.contains("/trade-api/v2/markets/trades"), "{url}");
            let p = &l["request"]["params"];
            assert_eq!((&p["ticker"], &p["limit"]), (&l["ctx"]["ticker"], &"1000".into()), "{p}");
            assert_eq!(p.get("cursor").is_some(), l["ctx"]["page"].as_u64() > Some(1), "{l}");
            match l["ctx"]["min_ts"].as_i64() {
                Some(ts) => assert_eq!(p["min_ts"], ts.to_string(), "min_ts on every page: {l}"),
                None => assert!(p.get("min_ts").is_none(), "{p}"),
            }
        }
    }
}

/// The stop line of each ticker.
fn stops<'a>(lines: &'a [Value], ticker: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["kind"] == "track" && l["ctx"]["ticker"] == ticker && l["ctx"]["action"] == "stop")
        .collect()
}

/// Two 15-minute windows on a simulated clock (60×): every print the venue has by the end is
/// archived, every trade id it served with 200 is in the archive (its own log), polls after the
/// first complete walk ask for recent prints only (min_ts), and each market is swept and stops.
#[test]
fn every_print_of_two_windows_is_archived_and_each_market_is_swept() {
    let v = Venue::start();
    let k = KalshiVenue::mount_on(&v);
    let start = datetime!(2026-08-17 04:57:00 UTC);
    let spec = v.simulate_clock(start, 60.0);
    k.set_trade_every(Duration::from_secs(5));
    let recs = records(&k, &[start, start + time::Duration::minutes(5)]);
    let (code, lines, err) = run_trades(&k, &spec, &["--interval", "0.5", "--settle", "30"], &recs);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("input ended and nothing left to track"), "{err}");
    check_envelopes(&lines);
    let ids: HashSet<String> = archived(&lines).into_iter().map(|(id, _)| id).collect();
    for t in [k.ticker_at(start), k.ticker_at(start + time::Duration::minutes(5))] {
        let prints = k.trades(&t);
        assert!(prints.len() > 50, "{t} traded: {}", prints.len());
        for p in &prints {
            assert!(ids.contains(&p.trade_id), "print of {t} not archived: {}", p.trade_id);
        }
        let s = stops(&lines, &t);
        assert_eq!(s.len(), 1, "{t}");
        assert_eq!(
            (&s[0]["ctx"]["reason"], &s[0]["ctx"]["final_sweep"]),
            (&"grace_elapsed".into(), &"complete".into())
        );
        assert!(lines.iter().any(|l| l["ctx"]["walk"] == "final" && l["ctx"]["ticker"] == t));
    }
    // The venue's own log: as many 200 pages served as archived, every id served is archived.
    let log: Vec<_> = v.log().into_iter().filter(|s| s.path.ends_with("/markets/trades")).collect();
    let served_ok: Vec<_> = log.iter().filter(|s| s.status == Some(200)).collect();
    let archived_ok = lines.iter().filter(|l| l["kind"] == "http" && l["status"] == 200).count();
    assert_eq!(served_ok.len(), archived_ok);
    for s in served_ok {
        let page: Value = serde_json::from_slice(&s.response).unwrap();
        for t in page["trades"].as_array().unwrap() {
            assert!(ids.contains(t["trade_id"].as_str().unwrap()), "served print not archived: {t}");
        }
    }
    // Polls after the first complete walk ask for recent prints only: a min_ts, one page each;
    // the final sweeps walk whole feeds of several pages.
    let polls_min_ts: Vec<&Value> =
        lines.iter().filter(|l| l["ctx"]["walk"] == "poll" && l["ctx"]["min_ts"].is_i64()).collect();
    assert!(polls_min_ts.len() > 10, "{} polls with min_ts", polls_min_ts.len());
    assert!(lines.iter().any(|l| l["ctx"]["walk"] == "final" && l["ctx"]["page"].as_u64() > Some(3)));
    eprintln!("{err}");
}

/// The poll walks of `ticker` in order: (slot, min_ts, complete) — complete when no gap of that
/// walk (same slot, walk poll, ticker) follows.
fn poll_walks(lines: &[Value], ticker: &str) -> Vec<(u64, Option<i64>, bool)> {
    let mut walks: Vec<(u64, Option<i64>, bool)> = Vec::new();
    for l in lines {
        let c = &l["ctx"];
        if c["walk"] != "poll" {
            continue;
        }
        let slot = c["slot"].as_u64().unwrap();
        if l["kind"] == "http" && c["ticker"] == ticker && c["page"] == 1 && l["attempt"] == 1 {
            if walks.last().is_none_or(|w| w.0 != slot) {
                walks.push((slot, c["min_ts"].as_i64(), true));
            }
        } else if l["kind"] == "gap" && c["ticker"] == ticker {
            walks.last_mut().unwrap().2 = false;
        }
    }
    walks
}

/// 429 without Retry-After (the documented Kalshi body), 5xx in the ErrorResponse shape, HTML, a
/// truncated body and a dropped connection are retried and recorded attempt by attempt; a 200 whose
/// JSON is not a trades page is kept raw with a failed_request gap naming why; the final sweep still
/// archives every print.
#[test]
fn every_fault_kind_is_recorded_retried_or_a_gap_and_nothing_is_lost() {
    let v = Venue::start();
    let k = KalshiVenue::mount_on(&v);
    // 30 s (real) before the close: the faults are used up by the polls, well before the sweep.
    let start = datetime!(2026-08-17 04:50:00 UTC);
    let spec = v.simulate_clock(start, 20.0);
    k.set_trade_every(Duration::from_secs(5));
    let recs = records(&k, &[start]);
    let not_a_page = br#"{"code": "internal_error", "message": "stand-in", "details": "", "service": "trade"}"#;
    // Each group ends in a success, so that the client's backoff (which grows with the failures in a
    // row) never outlasts the window.
    for f in [
        // Retried until the page gives up (its tries or its deadline): a failed_request gap.
        kv::too_many(),
        kv::server_error(503),
        Fault::Html,
        Fault::Truncated,
        Fault::Slow(Duration::ZERO),
        // Retried to a success.
        Fault::Reset,
        Fault::Slow(Duration::ZERO),
        kv::too_many(),
        Fault::Slow(Duration::ZERO),
        // A 200 that is not a trades page: not retried, a gap.
        Fault::Body(not_a_page.to_vec()),
    ] {
        v.fault(kv::TRADES, f);
    }
    let (code, lines, err) = run_trades(&k, &spec, &["--interval", "1", "--settle", "10", "--retries", "4"], &recs);
    assert_eq!(code, 0, "{err}");
    check_envelopes(&lines);
    let statuses: Vec<Option<u64>> =
        lines.iter().filter(|l| l["kind"] == "http").map(|l| l["status"].as_u64()).collect();
    for s in [429, 503] {
        assert!(statuses.contains(&Some(s)), "status {s} recorded: {statuses:?}");
    }
    assert!(statuses.contains(&None), "the dropped connection is an attempt without a status");
    let too_many = lines.iter().find(|l| l["status"] == 429).unwrap();
    assert_eq!(too_many["body"]["error"], "too many requests", "the reply body is kept");
    assert!(too_many["headers"].get("retry-after").is_none());
    let failed = gaps(&lines, "failed_request");
    assert!(failed.len() >= 2, "{err}");
    let bad = failed.iter().find(|g| g["error"].as_str().unwrap().contains("not a trades page")).expect("gap");
    let kept =
        lines.iter().find(|l| l["kind"] == "http" && l["body"]["code"] == "internal_error" && l["status"] == 200);
    assert!(kept.is_some_and(|l| l["seq"].as_u64() < bad["seq"].as_u64()), "the reply is kept raw before its gap");
    let ids: HashSet<String> = archived(&lines).into_iter().map(|(id, _)| id).collect();
    let t = k.ticker_at(start);
    let summary = err.lines().find(|l| l.starts_with("kalshi-trades: ") && l.contains("slots")).unwrap_or("");
    assert_eq!(stops(&lines, &t)[0]["ctx"]["final_sweep"], "complete", "{summary}");
    for p in k.trades(&t) {
        assert!(ids.contains(&p.trade_id), "{} ({}) not archived; {summary}", p.trade_id, p.created_time);
    }
}

/// With the venue's last page ending in `null`, then with no cursor at all, walks end there: no
/// cursor_unfollowable gap, every print archived.
#[test]
fn a_null_or_absent_cursor_ends_a_walk() {
    for end in [CursorEnd::Null, CursorEnd::Absent] {
        let v = Venue::start();
        let k = KalshiVenue::mount_on(&v);
        let start = datetime!(2026-08-17 04:59:00 UTC);
        let spec = v.simulate_clock(start, 30.0);
        k.set_cursor_end(end);
        k.set_trade_every(Duration::from_secs(5));
        let recs = records(&k, &[start]);
        let (code, lines, err) = run_trades(&k, &spec, &["--interval", "0.5", "--settle", "10"], &recs);
        assert_eq!(code, 0, "{err}");
        check_envelopes(&lines);
        assert!(gaps(&lines, "cursor_unfollowable").is_empty(), "{end:?}: {err}");
        assert!(lines.iter().any(|l| l["ctx"]["page"].as_u64() > Some(1)), "multi-page walks");
        let ids: HashSet<String> = archived(&lines).into_iter().map(|(id, _)| id).collect();
        for p in k.trades(&k.ticker_at(start)) {
            assert!(ids.contains(&p.trade_id), "{end:?}: {}", p.trade_id);
        }
    }
}

/// A poll walk that failed on a later page commits nothing: the next poll asks for the same min_ts
/// (a walk that committed its first pages would move min_ts past the prints it never fetched).
#[test]
fn a_walk_that_failed_half_way_commits_nothing_and_the_next_poll_asks_the_same_min_ts() {
    let v = Venue::start();
    let k = KalshiVenue::mount_on(&v);
    // Just before the open: the first walks are short and complete, later polls ask with min_ts.
    let start = datetime!(2026-08-17 04:44:55 UTC);
    let spec = v.simulate_clock(start, 10.0);
    k.set_trade_every(Duration::from_secs(3));
    k.set_page_sizes(2, 4);
    let open = start + time::Duration::seconds(5);
    let recs = records(&k, &[open]);
    // Every fifth request fails (one try each): some of them hit a later page of a poll walk.
    for i in 0..80 {
        v.fault(kv::TRADES, if i % 5 == 4 { kv::server_error(500) } else { Fault::Slow(Duration::ZERO) });
    }
    let args = ["--interval", "1", "--settle", "5", "--retries", "1", "--overlap", "10", "--duration", "25"];
    let (code, lines, err) = run_trades(&k, &spec, &args, &recs);
    assert_eq!(code, 0, "{err}");
    check_envelopes(&lines);
    let t = k.ticker_at(open);
    let late = gaps(&lines, "failed_request")
        .into_iter()
        .filter(|g| g["ctx"]["walk"] == "poll" && g["ctx"]["page"].as_u64() > Some(1))
        .count();
    assert!(late >= 1, "a poll walk broke off after its first page: {err}");
    let walks = poll_walks(&lines, &t);
    let mut checked = 0;
    for w in walks.windows(2) {
        if !w[0].2 && w[0].1.is_some() {
            assert_eq!(w[1].1, w[0].1, "after an incomplete walk at slot {} the min_ts stays", w[0].0);
            checked += 1;
        }
    }
    assert!(checked >= 1, "{walks:?}");
    // Complete walks move min_ts forward (never back).
    let ts: Vec<i64> = walks.iter().filter_map(|w| w.1).collect();
    assert!(ts.windows(2).all(|p| p[0] <= p[1]), "{ts:?}");
    assert!(ts.first() < ts.last(), "{ts:?}");
}

/// Bad stdin lines are bad_input gaps (reported with their line number) and exit 1; the good
/// record is still collected.
#[test]
fn bad_stdin_lines_are_gaps_and_exit_1() {
    let v = Venue::start();
    let k = KalshiVenue::mount_on(&v);
    let start = datetime!(2026-08-17 04:59:30 UTC);
    let spec = v.simulate_clock(start, 30.0);
    let mut input =
        vec!["not json".to_string(), r#"{"record":"market","schema":"pmarchive.market/1","slug":"x"}"#.into()];
    let mut bad_ticker: Value = serde_json::from_str(&records(&k, &[start])[0]).unwrap();
    bad_ticker["ticker"] = "../etc".into();
    input.push(bad_ticker.to_string());
    input.extend(records(&k, &[start]));
    let (code, lines, err) = run_trades(&k, &spec, &["--interval", "0.5", "--settle", "5"], &input);
    assert_eq!(code, 1, "{err}");
    check_envelopes(&lines);
    let bad: BTreeSet<u64> = gaps(&lines, "bad_input").iter().map(|g| g["ctx"]["line"].as_u64().unwrap()).collect();
    assert_eq!(bad, BTreeSet::from([1, 2, 3]), "{err}");
    assert!(err.contains("kalshi-trades: stdin line 3: skipped: ticker is not a safe token"), "{err}");
    assert_eq!(stops(&lines, &k.ticker_at(start)).len(), 1);
    assert!(!lines.iter().any(|l| l["request"]["url"].as_str().is_some_and(|u| u.contains(".."))));
}

/// The order of the prints is not documented: served oldest first, every print is still archived
/// by the polls themselves, not only by the final sweep (a rule that stopped at a page of prints
/// already seen would stop on the oldest page and miss every new print until the sweep).
#[test]
fn oldest_first_prints_are_all_archived_by_the_polls() {
    let v = Venue::start();
    let k = KalshiVenue::mount_on(&v);
    let start = datetime!(2026-08-17 04:55:00 UTC);
    let spec = v.simulate_clock(start, 20.0);
    k.set_trade_every(Duration::from_secs(5));
    // 120 prints by the start: the first walk takes two pages, fast enough to leave the polls work.
    k.set_page_sizes(2, 100);
    k.set_trades_oldest_first(true);
    let recs = records(&k, &[start]);
    let (code, lines, err) = run_trades(&k, &spec, &["--interval", "0.5", "--settle", "30"], &recs);
    assert_eq!(code, 0, "{err}");
    check_envelopes(&lines);
    let first = lines.iter().find(|l| l["kind"] == "http" && l["status"] == 200).unwrap();
    let times: Vec<&str> =
        first["body"]["trades"].as_array().unwrap().iter().map(|t| t["created_time"].as_str().unwrap()).collect();
    assert!(times.len() > 1 && times.first() < times.last(), "served oldest first: {times:?}");
    let by_polls: HashSet<String> =
        archived(&lines).into_iter().filter(|(_, w)| w == "poll").map(|(id, _)| id).collect();
    let t = k.ticker_at(start);
    let prints = k.trades(&t);
    assert!(prints.len() > 100, "{}", prints.len());
    for p in &prints {
        assert!(by_polls.contains(&p.trade_id), "print {} ({}) missed by the polls", p.trade_id, p.created_time);
    }
    assert_eq!(stops(&lines, &t)[0]["ctx"]["final_sweep"], "complete");
}

/// SIGTERM: the page in flight is finished, the stop record says `signal`, exit 0.
#[test]
fn sigterm_finishes_the_page_in_flight_and_exits_0() {
    let v = Venue::start();
    let k = KalshiVenue::mount_on(&v);
    let recs = records(&k, &[k.now()]);
    let mut c = tool("kalshi-trades");
    c.args(["--kalshi-url", &k.url(), "--interval", "0.2"]);
    let (code, lines, err) = sigterm_after_http_lines(c, &format!("{}\n", recs[0]), 3, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{err}");
    check_envelopes(&lines);
    let last = lines.last().unwrap();
    assert_eq!((&last["kind"], &last["ctx"]["reason"]), (&"track".into(), &"signal".into()));
    assert!(err.contains("stopped by signal 15"), "{err}");
}

/// The request rate at the default cadence (5 s) on the real clock for 60 s, with the current
/// window and the next one on stdin and the venue's default print every 20 s. A measurement
/// (`cargo test --test kalshi_trades -- --ignored --nocapture request_rate`), printed by
/// kalshi-trades itself; docs/KALSHI.md quotes it. Ignored by default: it runs 60 s.
#[test]
#[ignore]
fn request_rate_at_the_default_cadence() {
    let v = Venue::start();
    let k = KalshiVenue::mount_on(&v);
    let now = k.now();
    let recs = records(&k, &[now, now + time::Duration::minutes(15)]);
    let mut c = tool("kalshi-trades");
    c.args(["--kalshi-url", &k.url(), "--duration", "60"]);
    let stdin = recs.iter().map(|l| format!("{l}\n")).collect::<String>();
    let out = run_with_timeout(c, Some(stdin.as_bytes()), Duration::from_secs(180));
    let (lines, err) = (jsonl(&out.stdout), String::from_utf8_lossy(&out.stderr).into_owned());
    assert_eq!(out.status.code(), Some(0), "{err}");
    let attempts = lines.iter().filter(|l| l["kind"] == "http").count();
    let pages_min_ts = lines.iter().filter(|l| l["kind"] == "http" && l["ctx"]["min_ts"].is_i64()).count();
    let summary = err.lines().find(|l| l.starts_with("kalshi-trades: ")).unwrap_or("");
    println!(
        "MEASURED (loopback, real clock, 60 s, {} market records on stdin): {attempts} requests ({pages_min_ts} with min_ts); {summary}",
        recs.len()
    );
    // The client's own cap for the family is 2/s.
    assert!(attempts as f64 <= 60.0 * 2.0);
}

/// A final sweep that failed on a later page goes on from that page at the next slot (its cursor
/// and page number), instead of walking the whole feed again: under load a long sweep would
/// otherwise need every page to succeed in one try.
#[test]
fn a_final_sweep_that_failed_on_a_later_page_goes_on_from_that_page() {
    use std::io::Write;
    use std::process::Stdio;
    let v = Venue::start();
    let k = KalshiVenue::mount_on(&v);
    let start = datetime!(2026-08-17 04:59:40 UTC);
    let spec = v.simulate_clock(start, 10.0);
    k.set_trade_every(Duration::from_secs(5));
    k.set_page_sizes(2, 10);
    let recs = records(&k, &[start]);
    let mut c = tool("kalshi-trades");
    c.args(["--kalshi-url", &k.url(), "--interval", "1", "--settle", "5", "--retries", "1"]);
    c.env("PMARCHIVE_CLOCK", &spec);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(format!("{}\n", recs[0]).as_bytes()).unwrap();
    let (mut out, err) = (Lines::of(child.stdout.take().unwrap()), Lines::of(child.stderr.take().unwrap()));
    // The sweep's first page is in: its next request fails (one try).
    out.wait_for("the final sweep", Duration::from_secs(120), |l| l.contains("\"walk\":\"final\""));
    v.fault(kv::TRADES, kv::server_error(500));
    let lines: Vec<Value> = out.rest().iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let err = err.rest().join("\n");
    assert_eq!(child.wait().unwrap().code(), Some(0), "{err}");
    check_envelopes(&lines);
    let gap = gaps(&lines, "failed_request");
    assert_eq!(gap.len(), 1, "{err}");
    let (gap_page, gap_seq) = (gap[0]["ctx"]["page"].as_u64().unwrap(), gap[0]["seq"].as_u64());
    assert!(gap_page > 1, "the failure hit a later page of the sweep: {}", gap[0]);
    let finals: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "http" && l["ctx"]["walk"] == "final").collect();
    assert_eq!(finals.iter().filter(|l| l["ctx"]["page"] == 1).count(), 1, "page 1 was not asked for again");
    let next = finals.iter().find(|l| l["seq"].as_u64() > gap_seq).expect("the sweep went on");
    assert_eq!(next["ctx"]["page"].as_u64(), Some(gap_page), "{next}");
    assert!(next["request"]["params"]["cursor"].is_string(), "{next}");
    let t = k.ticker_at(start);
    assert_eq!(stops(&lines, &t)[0]["ctx"]["final_sweep"], "complete");
    let ids: HashSet<String> = archived(&lines).into_iter().map(|(id, _)| id).collect();
    for p in k.trades(&t) {
        assert!(ids.contains(&p.trade_id), "{}", p.trade_id);
    }
}
