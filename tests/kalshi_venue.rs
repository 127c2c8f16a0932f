//! The loopback Kalshi venue (tests/common/kalshi.rs) over plain HTTP: what the Kalshi tools'
//! tests rely on — paging, status filters, the three book shapes, the result after close, faults.
mod common;

use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::Digest;
use time::macros::datetime;
use time::OffsetDateTime;

use common::kalshi::{self, BookShape, CursorEnd, KalshiVenue, MarketReply, MarketsPage, TradesPage};
use common::venue::{Fault, Venue};

/// The window of the real capture C-mkt (docs/KALSHI_FACTS.md §2.2): 04:45Z–05:00Z on 2026-08-17.
const CAPTURE_TICKER: &str = "KXBTC15M-26AUG170100-00";

struct Reply {
    status: u16,
    retry_after: Option<String>,
    body: Vec<u8>,
}

/// GET over HTTP; None when the connection was closed without a reply.
fn get(url: &str) -> Option<Reply> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut r = agent.get(url).call().ok()?;
    let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let body = r.body_mut().read_to_vec().ok()?;
    Some(Reply { status: r.status().as_u16(), retry_after, body })
}

fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> T {
    let r = get(url).expect("a reply");
    assert_eq!(r.status, 200, "{url}: {}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{url}: {e}: {}", String::from_utf8_lossy(&r.body)))
}

/// A venue with the Kalshi API mounted, its clock started at `at` (nearly frozen: rate 1e-6).
fn venue_at(at: OffsetDateTime) -> (Venue, KalshiVenue) {
    let v = Venue::start();
    v.simulate_clock(at, 1e-6);
    let k = KalshiVenue::mount_on(&v);
    (v, k)
}

/// Every market of a `GET /markets` query, following the cursor (filters sent again on each page).
fn all_markets(k: &KalshiVenue, query: &str) -> (Vec<kalshi::WireMarket>, usize, Option<Option<String>>) {
    let mut out = Vec::new();
    let mut cursor = String::new();
    for pages in 1.. {
        let sep = if cursor.is_empty() { String::new() } else { format!("&cursor={cursor}") };
        let p: MarketsPage = get_json(&format!("{}/markets?{query}{sep}", k.url()));
        out.extend(p.markets);
        match &p.cursor {
            Some(Some(c)) if !c.is_empty() => cursor = c.clone(),
            _ => return (out, pages, p.cursor),
        }
    }
    unreachable!()
}

#[test]
fn status_filters_and_cursor_paging() {
    let (_v, k) = venue_at(datetime!(2026-08-17 04:50:00 UTC));
    let (open, pages, end) = all_markets(&k, "series_ticker=KXBTC15M&status=open");
    assert_eq!((open.len(), pages), (1, 1));
    assert_eq!(end, Some(Some(String::new())), "the last page's cursor is \"\" by default");
    let m = &open[0];
    assert_eq!(m.ticker, CAPTURE_TICKER, "the ticker names the close in US Eastern time (EDT)");
    assert_eq!(m.event_ticker, "KXBTC15M-26AUG170100");
    assert_eq!((m.open_time.as_str(), m.close_time.as_str()), ("2026-08-17T04:45:00Z", "2026-08-17T05:00:00Z"));
    assert_eq!(m.status, "active");
    assert!(m.floor_strike.is_some() && m.yes_sub_title.starts_with("Target Price: $"), "{m:?}");

    // The next windows are `initialized` until they open: status=unopened, 4 of them, 2 a page.
    let (next, pages, _) = all_markets(&k, "series_ticker=KXBTC15M&status=unopened&limit=1000");
    assert_eq!(pages, 2);
    let opens: Vec<&str> = next.iter().map(|m| m.open_time.as_str()).collect();
    assert_eq!(opens, ["2026-08-17T05:00:00Z", "2026-08-17T05:15:00Z", "2026-08-17T05:30:00Z", "2026-08-17T05:45:00Z"]);
    assert!(next
        .iter()
        .all(|m| m.status == "initialized" && m.floor_strike.is_none() && m.yes_sub_title == "Target price: TBD"));

    // The cursor stores no filter: the second page asked without them is a page of every market.
    let first: MarketsPage = get_json(&format!("{}/markets?series_ticker=KXBTC15M&status=unopened", k.url()));
    let c = first.cursor.flatten().unwrap();
    let unfiltered: MarketsPage = get_json(&format!("{}/markets?cursor={c}", k.url()));
    assert!(unfiltered.markets.iter().any(|m| m.status != "initialized"), "{:?}", unfiltered.markets);

    // Past windows: closed within the last hour (90 s to the result, 60 more to finalized).
    let (closed, _, _) = all_markets(&k, "series_ticker=KXBTC15M&status=closed");
    assert!(closed.is_empty(), "{closed:?}");
    let (settled, _, _) = all_markets(&k, "series_ticker=KXBTC15M&status=settled");
    assert_eq!(settled.len(), 4, "closes 03:45..04:45 are within the hour kept");
    assert!(settled.iter().all(|m| m.status == "finalized" && (m.result == "yes" || m.result == "no")));
    let (all, _, _) = all_markets(&k, "series_ticker=KXBTC15M");
    assert_eq!(all.len(), 1 + 4 + 4);
    let (other, _, _) = all_markets(&k, "series_ticker=KXETH");
    assert!(other.is_empty());
    assert_eq!(get(&format!("{}/markets?status=bogus", k.url())).unwrap().status, 400);

    // The other end markers.
    k.set_cursor_end(CursorEnd::Null);
    assert_eq!(all_markets(&k, "status=open").2, Some(None));
    k.set_cursor_end(CursorEnd::Absent);
    let raw = get(&format!("{}/markets?status=open", k.url())).unwrap();
    let v: Value = serde_json::from_slice(&raw.body).unwrap();
    assert!(v.get("cursor").is_none(), "{v}");
}

#[test]
fn tickers_follow_us_eastern_time_across_dst() {
    // 2026-11-01: EDT ends at 06:00Z. The window closing 05:45Z is 01:45 EDT; 06:15Z is 01:15 EST.
    assert_eq!(kalshi::ticker_of(datetime!(2026-11-01 05:45 UTC)), "KXBTC15M-26NOV010145-45");
    assert_eq!(kalshi::ticker_of(datetime!(2026-11-01 06:15 UTC)), "KXBTC15M-26NOV010115-15");
    // The real third-party examples of docs/KALSHI_FACTS.md §2.2.
    assert_eq!(kalshi::ticker_of(datetime!(2026-01-08 03:00 UTC)), "KXBTC15M-26JAN072200-00");
    assert_eq!(kalshi::ticker_of(datetime!(2026-09-07 02:45 UTC)), "KXBTC15M-26SEP062245-45");
    for close in [datetime!(2026-03-08 07:00 UTC), datetime!(2026-08-17 05:00 UTC), datetime!(2026-12-31 23:45 UTC)] {
        assert_eq!(kalshi::close_of_ticker(&kalshi::ticker_of(close)), Some(close));
    }
    assert_eq!(kalshi::close_of_ticker("KXBTC15M-26AUG170100-15"), None, "suffix must repeat the minute");
    assert_eq!(kalshi::close_of_ticker("KXBTC15M-26AUG170110-10"), None, "not on the 15-minute grid");
}

#[test]
fn market_by_ticker_result_after_close_and_404() {
    // 05:00:30: the 04:45–05:00 window closed 30 s ago, no result yet.
    let (v, k) = venue_at(datetime!(2026-08-17 05:00:30 UTC));
    let r: MarketReply = get_json(&format!("{}/markets/{CAPTURE_TICKER}", k.url()));
    assert_eq!((r.market.status.as_str(), r.market.result.as_str()), ("closed", ""));
    assert!(r.market.settlement_ts.is_none() && r.market.expiration_value.is_empty());
    drop((v, k));

    // 05:02:00: determined (90 s after close) with its result; 05:03:00: finalized.
    let (v, k) = venue_at(datetime!(2026-08-17 05:02:00 UTC));
    let m = get_json::<MarketReply>(&format!("{}/markets/{CAPTURE_TICKER}", k.url())).market;
    assert_eq!(m.status, "determined");
    assert_eq!(m.result, kalshi::result_of(CAPTURE_TICKER));
    let (strike, settle): (f64, f64) = (m.floor_strike.unwrap(), m.expiration_value.parse().unwrap());
    assert_eq!(m.result == "yes", settle >= strike, "the result follows the strike ({strike}) vs the value ({settle})");
    drop((v, k));
    let (_v, k) = venue_at(datetime!(2026-08-17 05:03:00 UTC));
    let m = get_json::<MarketReply>(&format!("{}/markets/{CAPTURE_TICKER}", k.url())).market;
    assert_eq!(m.status, "finalized");
    assert_eq!(m.settlement_ts.as_deref(), Some("2026-08-17T05:02:30Z"));

    for unknown in ["KXBTC15M-26AUG180100-00", "KXBTC15M-26AUG170100-15", "NOPE", "KXBTC15M-26AUG170100-00/x"] {
        let r = get(&format!("{}/markets/{unknown}", k.url())).unwrap();
        assert_eq!(r.status, 404, "{unknown}");
        let e: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(e["code"].is_string() && e["message"].is_string(), "ErrorResponse shape: {e}");
        assert_eq!(get(&format!("{}/markets/{unknown}/orderbook", k.url())).unwrap().status, 404);
    }
}

/// (price, count) levels of one side of an `orderbook_fp` reply.
fn fp_side(v: &Value, side: &str) -> Vec<(String, String)> {
    serde_json::from_value(v["orderbook_fp"][side].clone()).unwrap()
}

#[test]
fn three_book_shapes_ascending_subpenny_fractional_and_evolving() {
    let v = Venue::start();
    v.simulate_clock(datetime!(2026-08-17 04:50:00 UTC), 5.0);
    let k = KalshiVenue::mount_on(&v);
    let url = format!("{}/markets/{CAPTURE_TICKER}/orderbook", k.url());
    let fp: Value = get_json(&url);
    let (yes, no) = (fp_side(&fp, "yes_dollars"), fp_side(&fp, "no_dollars"));
    for side in [&yes, &no] {
        assert!(side.len() >= 8, "{fp}");
        assert!(side.iter().all(|(p, c)| p.len() == 6 && p.starts_with("0.") && c.contains('.')), "{side:?}");
        let prices: Vec<f64> = side.iter().map(|(p, _)| p.parse().unwrap()).collect();
        assert!(prices.windows(2).all(|w| w[0] < w[1]), "ascending, best last: {prices:?}");
        assert!(prices[0] < 0.01, "a sub-penny tail level: {prices:?}");
    }
    assert!(yes.iter().chain(&no).any(|(_, c)| !c.ends_with(".00")), "fractional counts");
    let best_yes: f64 = yes.last().unwrap().0.parse().unwrap();
    let best_no: f64 = no.last().unwrap().0.parse().unwrap();
    assert!(best_yes < 1.0 - best_no, "YES bid {best_yes} below the YES ask 1 - {best_no}");

    // The book changes with the clock (5 venue seconds a real second).
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(&url).unwrap().body == serde_json::to_vec(&fp).unwrap() {
        assert!(Instant::now() < deadline, "the book never changed");
        std::thread::sleep(Duration::from_millis(300));
    }

    k.set_shape(BookShape::Dollars);
    let d: Value = get_json(&url);
    let levels = d["orderbook"]["yes_dollars"].as_array().unwrap();
    assert!(levels.iter().all(|l| l[0].is_string() && l[1].is_u64()), "{d}");
    assert!(d.get("orderbook_fp").is_none());

    k.set_shape(BookShape::Cents);
    let c: Value = get_json(&url);
    for side in ["yes", "no"] {
        let l = c["orderbook"][side].as_array().unwrap();
        assert!(
            !l.is_empty() && l.iter().all(|l| l[0].as_u64().is_some_and(|p| (1..=99).contains(&p)) && l[1].is_u64()),
            "{c}"
        );
    }

    // Best first, as the spec's prose says: the same levels, reversed.
    k.set_shape(BookShape::Fp);
    k.set_descending(true);
    let desc: Value = get_json(&url);
    let prices: Vec<f64> = fp_side(&desc, "no_dollars").iter().map(|(p, _)| p.parse().unwrap()).collect();
    assert!(prices.windows(2).all(|w| w[0] > w[1]), "descending: {prices:?}");
    k.set_descending(false);

    // Outside its window a book is empty.
    k.set_shape(BookShape::Fp);
    let next = k.ticker_at(datetime!(2026-08-17 05:20:00 UTC));
    let e: Value = get_json(&format!("{}/markets/{next}/orderbook", k.url()));
    assert_eq!(e, serde_json::json!({"orderbook_fp": {"yes_dollars": [], "no_dollars": []}}));
}

#[test]
fn trades_newest_first_with_cursor_and_min_ts() {
    // 04:56:00: the 04:45 window has traded for 11 minutes (a print every 20 s).
    let (_v, k) = venue_at(datetime!(2026-08-17 04:56:00 UTC));
    let expected = k.trades(CAPTURE_TICKER);
    assert!(expected.len() >= 30, "{}", expected.len());
    let mut got = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let c = if cursor.is_empty() { String::new() } else { format!("&cursor={cursor}") };
        let p: TradesPage = get_json(&format!("{}/markets/trades?ticker={CAPTURE_TICKER}&limit=1000{c}", k.url()));
        pages += 1;
        got.extend(p.trades);
        match p.cursor.flatten() {
            Some(c) if !c.is_empty() => cursor = c,
            _ => break,
        }
    }
    assert!(pages >= 2, "pages of 20");
    assert_eq!(got, expected, "every print once, newest first");
    let times: Vec<&str> = got.iter().map(|t| t.created_time.as_str()).collect();
    assert!(times.windows(2).all(|w| clock_of(w[0]) > clock_of(w[1])), "{times:?}");
    let secs: Vec<&str> = times.iter().map(|t| &t[..19]).collect();
    assert!(secs.windows(2).any(|w| w[0] == w[1]), "two prints in one second");
    let t = &got[0];
    assert_eq!(t.ticker, CAPTURE_TICKER);
    assert_eq!((t.trade_id.len(), t.trade_id.matches('-').count()), (36, 4), "a UUID: {}", t.trade_id);
    let (y, n): (f64, f64) = (t.yes_price_dollars.parse().unwrap(), t.no_price_dollars.parse().unwrap());
    assert!((y + n - 1.0).abs() < 1e-9);
    assert_eq!(t.taker_book_side == "bid", t.taker_outcome_side == "yes");

    // min_ts keeps the prints of that second and later.
    let min = clock_of(&got[5].created_time).unix_timestamp();
    let p: TradesPage = get_json(&format!("{}/markets/trades?ticker={CAPTURE_TICKER}&min_ts={min}", k.url()));
    assert!(p.trades.len() >= 6 && p.trades.iter().all(|t| clock_of(&t.created_time).unix_timestamp() >= min));
    // The January shape of the real capture: taker_side only.
    k.set_trade_shape(kalshi::TradeShape::January);
    let jan: Value = get_json(&format!("{}/markets/trades?ticker={CAPTURE_TICKER}&limit=1", k.url()));
    let keys: Vec<&str> = jan["trades"][0].as_object().unwrap().keys().map(String::as_str).collect();
    let want =
        ["count_fp", "created_time", "no_price_dollars", "taker_side", "ticker", "trade_id", "yes_price_dollars"];
    assert_eq!(keys, want);
    assert_eq!(jan["trades"][0]["trade_id"].as_str(), Some(got[0].trade_id.as_str()));
    k.set_trade_shape(kalshi::TradeShape::Current);
    let future: TradesPage =
        get_json(&format!("{}/markets/trades?ticker={}", k.url(), k.ticker_at(datetime!(2026-08-17 05:10 UTC))));
    assert!(future.trades.is_empty());
}

fn clock_of(s: &str) -> OffsetDateTime {
    pm_archive::clock::parse_rfc3339(s).unwrap_or_else(|| panic!("{s}"))
}

#[test]
fn faults_per_path_pattern_are_served_and_logged() {
    let (v, k) = venue_at(datetime!(2026-08-17 04:50:00 UTC));
    let book = format!("{}/markets/{CAPTURE_TICKER}/orderbook", k.url());
    let list = format!("{}/markets?series_ticker=KXBTC15M&status=open", k.url());
    v.fault(kalshi::BOOKS, kalshi::too_many());
    // A book fault does not hit the market list or the market itself.
    assert_eq!(get(&list).unwrap().status, 200);
    assert_eq!(get(&format!("{}/markets/{CAPTURE_TICKER}", k.url())).unwrap().status, 200);
    let r = get(&book).unwrap();
    assert_eq!((r.status, r.retry_after.as_deref()), (429, None));
    assert_eq!(r.body, br#"{"error": "too many requests"}"#);
    assert_eq!(get(&book).unwrap().status, 200, "one fault, one reply");

    v.fault(kalshi::LIST, kalshi::server_error(503));
    let r = get(&list).unwrap();
    let e: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(r.status, 503);
    assert!(["code", "message", "details", "service"].iter().all(|f| e[f].is_string()), "{e}");

    v.fault(kalshi::TRADES, Fault::Html);
    let r = get(&format!("{}/markets/trades?ticker={CAPTURE_TICKER}", k.url())).unwrap();
    assert!(r.status == 200 && r.body.starts_with(b"<!DOCTYPE html>"));
    v.fault(kalshi::MARKET, Fault::Truncated);
    let r = get(&format!("{}/markets/{CAPTURE_TICKER}", k.url())).unwrap();
    assert!(serde_json::from_slice::<Value>(&r.body).is_err() && !r.body.is_empty());
    v.fault(kalshi::BOOKS, Fault::Reset);
    assert!(get(&book).is_none(), "the connection was closed without a reply");

    // A reply is logged once sent (threads may log out of order): wait for all 8, compare as sets.
    let deadline = Instant::now() + Duration::from_secs(60);
    while v.log().len() < 8 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = v.log();
    assert_eq!(log.len(), 8, "every reply is logged");
    let mut faults: Vec<(String, Option<u16>)> =
        log.iter().filter(|s| s.fault.is_some()).map(|s| (s.path.clone(), s.status)).collect();
    faults.sort();
    let book_path = format!("/trade-api/v2/markets/{CAPTURE_TICKER}/orderbook");
    let mut want = vec![
        (book_path.clone(), Some(429)),
        ("/trade-api/v2/markets".to_string(), Some(503)),
        ("/trade-api/v2/markets/trades".to_string(), Some(200)),
        (format!("/trade-api/v2/markets/{CAPTURE_TICKER}"), Some(200)),
        (book_path, None),
    ];
    want.sort();
    assert_eq!(faults, want);
}

#[test]
fn soak_log_lines_carry_book_digests_and_trade_ids() {
    let dir = common::tempdir("kvenue-log");
    let (v, k) = venue_at(datetime!(2026-08-17 04:56:00 UTC));
    v.log_to(&dir.join("venue.jsonl")).unwrap();
    let book = get(&format!("{}/markets/{CAPTURE_TICKER}/orderbook", k.url())).unwrap();
    let page: TradesPage = get_json(&format!("{}/markets/trades?ticker={CAPTURE_TICKER}", k.url()));
    // A reply is logged once it was sent: wait for both lines.
    let deadline = Instant::now() + Duration::from_secs(60);
    let lines: Vec<pm_archive::soak::VenueLine> = loop {
        let text = std::fs::read_to_string(dir.join("venue.jsonl")).unwrap();
        if text.lines().count() >= 2 || Instant::now() > deadline {
            break text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let digest = pm_archive::util::hex(&sha2::Sha256::digest(&book.body));
    assert_eq!(lines[0].hashes, [digest]);
    let ids: Vec<String> = page.trades.iter().map(|t| t.trade_id.clone()).collect();
    assert_eq!(lines[1].trades, ids);
    assert_eq!(lines.len(), 2);
}

/// (target, fault) of the fault lines of a pm-venue log.
type Faults = Vec<(String, String)>;

/// Every fault line of a pm-venue log, split into Polymarket's and Kalshi's.
fn fault_lines(log: &std::path::Path) -> (Faults, Faults) {
    let text = std::fs::read_to_string(log).unwrap();
    let lines = text.lines().map(|l| serde_json::from_str::<pm_archive::soak::VenueLine>(l).unwrap());
    let faults: Vec<(String, String)> = lines
        .filter(|l| l.kind == "fault")
        .map(|l| (l.detail.unwrap_or_default(), l.fault.unwrap_or_default()))
        .collect();
    faults.into_iter().partition(|(target, _)| !target.starts_with("/trade-api/"))
}

/// `pm-venue --faults soak --kalshi` injects Kalshi faults beside the Polymarket cycle, whose order is
/// the same as without --kalshi (so that Polymarket-only soak reports stay reproducible).
#[test]
fn pm_venue_soak_cycle_adds_kalshi_faults_and_keeps_the_polymarket_order() {
    let dir = common::tempdir("kvenue-cycle");
    let run = |name: &str, kalshi: bool| {
        let log = dir.join(name);
        let mut cmd = std::process::Command::new(common::bin("pm-venue"));
        cmd.arg("--log").arg(&log).args(["--faults", "soak", "--fault-every", "0.2", "--duration", "4"]);
        if kalshi {
            cmd.arg("--kalshi");
        }
        let o = common::run_with_timeout(cmd, None, Duration::from_secs(120));
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        let urls = String::from_utf8(o.stdout).unwrap();
        (fault_lines(&log), urls)
    };
    let ((poly_only, none), urls) = run("plain.jsonl", false);
    assert!(none.is_empty() && urls.lines().count() == 2, "{urls}");
    let ((poly, kal), urls) = run("kalshi.jsonl", true);
    assert!(urls.lines().nth(2).is_some_and(|u| u.starts_with("http://127.0.0.1:") && u.ends_with("/trade-api/v2")));
    let n = poly.len().min(poly_only.len());
    assert!(n >= 3, "faults injected: {n}");
    assert_eq!(poly[..n], poly_only[..n], "the Polymarket cycle is unchanged");
    assert!(kal.len() >= 3, "{kal:?}");
    assert_eq!(kal[0].0, kalshi::BOOKS);
    assert_eq!(kal[0].1, "Reply { status: 429, body: 30 bytes }", "the fault's name, not its body");
    let injected: Vec<&str> = kal.iter().map(|(t, _)| t.as_str()).collect();
    for target in [kalshi::BOOKS, kalshi::LIST] {
        assert!(injected.contains(&target), "{injected:?}");
    }
}
