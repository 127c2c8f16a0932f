//! kalshi-books on 127.0.0.1 only: an unreachable port, and the loopback Kalshi venue
//! (tests/common/kalshi.rs; everything it serves is DERIVED from Kalshi's docs examples and the
//! captures quoted in docs/KALSHI_FACTS.md), then pm-normalize on what it wrote. Market records are
//! DERIVED from the real `GET /markets` capture (§2.2) or parsed from what the loopback venue serves.
//! No run here is live.

mod common;

use std::time::Duration;

use common::kalshi::{BookShape, KalshiVenue};
use common::venue::Venue;
use common::{assert_ctx_reads_as, jsonl, run_with_timeout, tool};
use pm_archive::clock;
use pm_archive::http::HttpCtx;
use pm_archive::kalshi::books::PollCtx;
use pm_archive::kalshi::market::{parse_market, TrackCtx, SERIES};
use pm_archive::track::GapCtx;
use serde_json::{json, Value};
use time::macros::datetime;
use time::OffsetDateTime;

/// A kalshi market record line whose window is `start_min`..`end_min` minutes from now.
fn market_line(ticker: &str, start_min: i64, end_min: i64) -> String {
    let now = OffsetDateTime::now_utc();
    let at = |m: i64| clock::fmt_secs(now + time::Duration::minutes(m));
    let v = json!({"ticker": ticker, "event_ticker": ticker.rsplit_once('-').unwrap().0, "open_time": at(start_min),
        "close_time": at(end_min), "status": "active", "result": "", "floor_strike": 63441.03,
        "strike_type": "greater_or_equal", "price_level_structure": "tapered_deci_cent",
        "title": "BTC price up in next 15 mins?"});
    let m = parse_market(&v, SERIES, "http://127.0.0.1/trade-api/v2/markets", now).unwrap();
    serde_json::to_string(&m).unwrap()
}

fn run_books(args: &[&str], stdin: &str) -> (i32, Vec<Value>, String) {
    let mut c = tool("kalshi-books");
    c.args(args);
    let out = run_with_timeout(c, Some(stdin.as_bytes()), Duration::from_secs(60));
    (out.status.code().unwrap_or(-1), jsonl(&out.stdout), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn an_unreachable_venue_is_failed_request_gaps_named_by_ticker() {
    let ticker = "KXBTC15M-26AUG170100-00";
    let input = market_line(ticker, -5, 10) + "\n";
    let url = "http://127.0.0.1:9/trade-api/v2";
    let args = ["--kalshi-url", url, "--interval", "0.5", "--duration", "1.6", "--timeout", "0.3", "--retries", "1"];
    let (code, lines, err) = run_books(&args, &input);
    assert_eq!(code, 0, "{err}");
    assert!(lines.iter().all(|l| l["venue"] == "kalshi" && l["tool"] == "kalshi-books"), "{lines:?}");
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"track"));
    assert_eq!(kinds.last(), Some(&"track"));
    let (first, last) = (&lines[0]["ctx"], &lines[lines.len() - 1]["ctx"]);
    assert_eq!((first["action"].as_str(), first["reason"].as_str()), (Some("start"), Some("window")));
    assert_eq!((last["action"].as_str(), last["reason"].as_str()), (Some("stop"), Some("duration")));
    assert_eq!((first["ticker"].as_str(), first["series_ticker"].as_str()), (Some(ticker), Some("KXBTC15M")));
    let http: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "http").collect();
    let gaps: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "gap").collect();
    assert!(!http.is_empty(), "every attempt is archived");
    for h in &http {
        assert_eq!(h["endpoint"], "kalshi-books");
        assert_eq!(h["request"]["url"], format!("{url}/markets/{ticker}/orderbook"));
        assert!(h["status"].is_null());
        assert_eq!(h["ctx"]["ticker"], ticker);
    }
    assert!(!gaps.is_empty());
    for g in &gaps {
        assert!(matches!(g["ctx"]["gap"].as_str(), Some("failed_request" | "backoff" | "missed_slots")), "{g}");
        if g["ctx"]["gap"] != "missed_slots" {
            assert_eq!(g["ctx"]["ticker"], ticker, "{g}");
        }
    }
    assert!(err.contains("kalshi-books: outage:"), "{err}");
    assert!(err.contains("markets tracked 1"), "{err}");

    // pm-normalize: no book rows, an error row per failed attempt, the gaps named by ticker.
    let dir = common::tempdir("kbooks-norm");
    let raw = dir.join("raw.jsonl");
    let text: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(&raw, text.join("\n") + "\n").unwrap();
    let out = run_with_timeout(
        {
            let mut c = tool("pm-normalize");
            c.arg(&raw);
            c
        },
        None,
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let rows = jsonl(&out.stdout);
    let errors = rows.iter().filter(|r| r["record"] == "error" && r["reason"] == "no_reply").count();
    assert_eq!(errors, http.len());
    let gap_rows: Vec<&Value> = rows.iter().filter(|r| r["record"] == "gap").collect();
    assert_eq!(gap_rows.len(), gaps.len());
    assert!(gap_rows.iter().filter(|g| g["gap"] != "missed_slots").all(|g| g["asset_id"] == ticker));
}

#[test]
fn bad_input_is_a_gap_and_exit_1_and_a_past_market_is_ignored() {
    let input = format!(
        "not json\n{}\n{{\"schema\":\"pmarchive.market/1\"}}\n",
        market_line("KXBTC15M-26AUG170100-00", -60, -45)
    );
    let (code, lines, err) = run_books(&["--kalshi-url", "http://127.0.0.1:9/trade-api/v2"], &input);
    assert_eq!(code, 1, "{err}");
    let gaps: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "gap").collect();
    assert_eq!(lines.len(), 2, "two bad lines, nothing polled: {lines:?}");
    assert_eq!(gaps.iter().map(|g| g["ctx"]["line"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 3]);
    assert!(gaps.iter().all(|g| g["ctx"]["gap"] == "bad_input"));
    assert!(err.contains("kalshi-books: stdin line 1: skipped:"), "{err}");
    assert!(err.contains("input lines 3 (2 bad, 1 ignored)"), "{err}");
}

// ---- against the loopback Kalshi venue (tests/common/kalshi.rs: everything it serves is DERIVED
// from the docs examples and the captures in docs/KALSHI_FACTS.md) ----

/// A venue with the Kalshi API mounted, its clock started at `at` and running at `rate`; returns the
/// clock spec for the tools.
fn venue_at(at: OffsetDateTime, rate: f64) -> (Venue, KalshiVenue, String) {
    let v = Venue::start();
    let spec = v.simulate_clock(at, rate);
    let k = KalshiVenue::mount_on(&v);
    (v, k, spec)
}

/// The record kalshi-markets would write for the venue's market `ticker` (parsed from the object
/// the venue serves).
fn record_of(k: &KalshiVenue, ticker: &str) -> String {
    let w = serde_json::to_value(k.market(ticker).unwrap()).unwrap();
    let m = parse_market(&w, SERIES, &format!("{}/markets", k.url()), k.now()).unwrap();
    serde_json::to_string(&m).unwrap()
}

/// kalshi-books against `k` on the venue's clock; (exit code, raw lines as text, stderr).
fn run_on(k: &KalshiVenue, spec: &str, args: &[&str], stdin: &str) -> (i32, Vec<String>, String) {
    let mut c = tool("kalshi-books");
    c.env("PMARCHIVE_CLOCK", spec).args(["--kalshi-url", &k.url()]).args(args);
    let out = run_with_timeout(c, Some(stdin.as_bytes()), Duration::from_secs(60));
    let text = String::from_utf8(out.stdout).unwrap();
    (
        out.status.code().unwrap_or(-1),
        text.lines().map(String::from).collect(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// pm-normalize over raw lines (`args` first); (rows, the --check report of them).
fn normalize(raw: &[String], args: &[&str]) -> (Vec<Value>, Value) {
    let dir = common::tempdir("kbooks-venue");
    let (p, rows) = (dir.join("raw.jsonl"), dir.join("rows.jsonl"));
    std::fs::write(&p, raw.join("\n") + "\n").unwrap();
    let mut c = tool("pm-normalize");
    c.args(args).arg("-o").arg(&rows).arg(&p);
    let out = run_with_timeout(c, None, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let mut c = tool("pm-normalize");
    c.arg("--check").arg(&rows);
    let check = run_with_timeout(c, None, Duration::from_secs(60));
    (common::read_jsonl(&rows), serde_json::from_slice(&check.stdout).unwrap())
}

#[test]
fn polls_the_loopback_venue_every_slot_and_normalizes_the_yes_side() {
    let at = datetime!(2026-08-17 04:50:00 UTC);
    let (v, k, spec) = venue_at(at, 1.0);
    let (now, next) = (k.ticker_at(at), k.ticker_at(at + time::Duration::minutes(15)));
    assert_eq!(now, "KXBTC15M-26AUG170100-00", "the window of the capture C-mkt");
    let input = format!("{}\n{}\n", record_of(&k, &now), record_of(&k, &next));
    let (code, raw, err) = run_on(&k, &spec, &["--interval", "0.5", "--duration", "2.2"], &input);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = raw.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let http: Vec<usize> = (0..lines.len()).filter(|&i| lines[i]["kind"] == "http").collect();
    let served: Vec<_> = v.log().into_iter().filter(|s| s.path.ends_with("/orderbook")).collect();
    assert!(http.len() >= 2, "a couple of slots: {err}");
    assert_eq!(http.len(), served.len(), "every reply archived");
    for (&i, s) in http.iter().zip(&served) {
        let l = &lines[i];
        assert_eq!((l["status"].as_u64(), l["ctx"]["ticker"].as_str()), (Some(200), Some(now.as_str())));
        assert_eq!(s.path, format!("/trade-api/v2/markets/{now}/orderbook"), "no depth, no other ticker");
        assert_eq!(s.query, "");
        // The body byte for byte.
        #[derive(serde::Deserialize)]
        struct B<'a> {
            #[serde(borrow)]
            body: &'a serde_json::value::RawValue,
        }
        let b: B = serde_json::from_str(&raw[i]).unwrap();
        assert_eq!(b.body.get().as_bytes(), s.response.as_slice());
    }
    // Every ctx reads back through its type (docs/DATA_CONTRACT.md).
    for l in &lines {
        match l["kind"].as_str().unwrap() {
            "http" => assert_ctx_reads_as::<HttpCtx<PollCtx>>(l),
            "track" => assert_ctx_reads_as::<TrackCtx>(l),
            _ => assert_ctx_reads_as::<GapCtx>(l),
        }
    }
    let tracks: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "track").collect();
    let t: Vec<(&str, &str, &str)> = tracks
        .iter()
        .map(|l| {
            (
                l["ctx"]["action"].as_str().unwrap(),
                l["ctx"]["reason"].as_str().unwrap(),
                l["ctx"]["ticker"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        t,
        [("start", "window", now.as_str()), ("stop", "duration", now.as_str())],
        "the next window is not due yet"
    );
    // (A slot that overran under load is a missed_slots gap: allowed, and nothing else.)
    assert!(lines.iter().all(|l| l["kind"] != "gap" || l["ctx"]["gap"] == "missed_slots"), "{raw:?}");

    let (rows, check) = normalize(&raw, &[]);
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["unjoined_book_rows"], 0);
    let books: Vec<&Value> = rows.iter().filter(|r| r["record"] == "book").collect();
    assert_eq!(books.len(), http.len());
    for (r, s) in books.iter().zip(&served) {
        let body: Value = serde_json::from_slice(&s.response).unwrap();
        let side = |k: &str| body["orderbook_fp"][k].as_array().unwrap().clone();
        let (yes, no) = (side("yes_dollars"), side("no_dollars"));
        // Ascending on the wire (best last); the row is best first, the ask derived from the NO bid.
        assert_eq!(r["best_bid_price"], yes.last().unwrap()[0]);
        assert_eq!(r["best_bid_size"], yes.last().unwrap()[1]);
        let best_no = pm_archive::normalize::dec::Dec::parse(no.last().unwrap()[0].as_str().unwrap()).unwrap();
        let one = pm_archive::normalize::dec::Dec { m: 1, s: 0 };
        assert_eq!(r["best_ask_price"].as_str().unwrap(), one.checked_sub(best_no).unwrap().to_fixed());
        assert_eq!(r["best_ask_size"], no.last().unwrap()[1]);
        assert_eq!(
            (r["bid_levels"].as_u64(), r["ask_levels"].as_u64()),
            (Some(yes.len() as u64), Some(no.len() as u64))
        );
        assert_eq!((r["slug"].as_str(), r["outcome"].as_str()), (Some(now.as_str()), Some("yes")));
        assert_eq!(r["flags"], json!([]), "{r}");
    }
}

#[test]
fn the_three_book_shapes_give_the_same_top_of_book() {
    let at = datetime!(2026-08-17 04:50:00 UTC);
    // A frozen clock: the three replies describe one book.
    let (_v, k, spec) = venue_at(at, 1e-6);
    let ticker = k.ticker_at(at);
    let input = record_of(&k, &ticker) + "\n";
    let mut tops = Vec::new();
    for shape in [BookShape::Fp, BookShape::Dollars, BookShape::Cents] {
        k.set_shape(shape);
        let (code, raw, err) = run_on(&k, &spec, &["--interval", "0.5", "--duration", "1.2"], &input);
        assert_eq!(code, 0, "{err}");
        let (rows, check) = normalize(&raw, &[]);
        assert_eq!(check["ok"], true, "{check}");
        let book = rows.iter().find(|r| r["record"] == "book").unwrap_or_else(|| panic!("{shape:?}: {raw:?}"));
        tops.push((book["mid"].clone(), book["spread"].clone()));
    }
    assert!(tops[0].0.is_string());
    assert_eq!(tops[0], tops[1]);
    assert_eq!(tops[0], tops[2]);
}

#[test]
fn a_404_after_the_window_end_stops_the_market_and_a_429_is_retried() {
    let at = datetime!(2026-08-17 04:50:00 UTC);
    let (v, k, spec) = venue_at(at, 1.0);
    let live = k.ticker_at(at);
    // Two tickers the venue does not list (404): one whose window ended 30 s ago (in --grace),
    // one whose window is open.
    let rec = |ticker: &str, start: i64, end: i64| {
        let mut m: Value = serde_json::from_str(&record_of(&k, &live)).unwrap();
        m["ticker"] = ticker.into();
        m["window_start_utc"] = clock::fmt_secs(at + time::Duration::seconds(start)).into();
        m["window_end_utc"] = clock::fmt_secs(at + time::Duration::seconds(end)).into();
        m.to_string()
    };
    let input =
        [rec("KXBTC15M-99JAN010000-00", -930, -30), rec("KXBTC15M-99JAN010015-15", -60, 840), record_of(&k, &live)]
            .join("\n")
            + "\n";
    v.fault(common::kalshi::BOOKS, common::kalshi::too_many());
    let (code, raw, err) = run_on(&k, &spec, &["--interval", "1", "--duration", "3.5"], &input);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = raw.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let stops: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| l["kind"] == "track" && l["ctx"]["action"] == "stop")
        .map(|l| (l["ctx"]["ticker"].as_str().unwrap(), l["ctx"]["reason"].as_str().unwrap()))
        .collect();
    assert!(stops.contains(&("KXBTC15M-99JAN010000-00", "book_gone")), "{stops:?}");
    assert!(stops.contains(&("KXBTC15M-99JAN010015-15", "duration")), "an open window is not stopped by a 404");
    let replies = |t: &str, status: u64| {
        lines.iter().filter(|l| l["kind"] == "http" && l["ctx"]["ticker"] == t && l["status"] == status).count()
    };
    assert_eq!(replies("KXBTC15M-99JAN010000-00", 404), 1, "one 404, then stopped");
    for g in lines.iter().filter(|l| l["kind"] == "gap") {
        assert_ctx_reads_as::<GapCtx>(g);
    }
    let gaps = lines.iter().filter(|l| l["kind"] == "gap" && l["ctx"]["ticker"] == "KXBTC15M-99JAN010015-15").count();
    assert!(gaps >= 2, "each slot's 404 of the open window is a failed_request gap: {gaps}");
    // The 429 (first request of the run) is archived, and retried.
    let first = lines.iter().find(|l| l["kind"] == "http").unwrap();
    assert_eq!((first["status"].as_u64(), first["body"]["error"].as_str()), (Some(429), Some("too many requests")));
    assert!(lines.iter().any(|l| l["kind"] == "http" && l["status"] == 200 && l["ctx"]["ticker"] == live.as_str()));
}
