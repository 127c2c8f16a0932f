//! kalshi-books on 127.0.0.1 only. Market records are DERIVED from the real `GET /markets` capture
//! quoted in docs/KALSHI_FACTS.md §2.2 (times moved around "now"). No run here is live.

mod common;

use std::time::Duration;

use common::{jsonl, run_with_timeout, tool};
use pm_archive::clock;
use pm_archive::kalshi::market::{parse_market, SERIES};
use serde_json::{json, Value};
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
