//! kalshi-markets against the loopback Kalshi venue (tests/common/kalshi.rs: 127.0.0.1, rolling
//! KXBTC15M windows DERIVED from the docs examples and the captures in docs/KALSHI_FACTS.md).

mod common;

use std::time::Duration;

use common::kalshi::{self, CursorEnd, KalshiVenue};
use common::venue::{Fault, Venue};
use common::{assert_ctx_reads_as, jsonl, read_jsonl, run_with_timeout, sigterm, tempdir, tool, Lines};
use pm_archive::http::HttpCtx;
use pm_archive::kalshi::markets::{ListCtx, Record};
use serde_json::Value;
use time::macros::datetime;
use time::OffsetDateTime;

/// The window of the real capture C-mkt (docs/KALSHI_FACTS.md §2.2): 04:45Z–05:00Z on 2026-08-17.
const CAPTURE_TICKER: &str = "KXBTC15M-26AUG170100-00";
/// The window after it (05:00Z–05:15Z = 01:15 EDT).
const NEXT_TICKER: &str = "KXBTC15M-26AUG170115-15";

/// A venue with the Kalshi API mounted, its clock started at `at` running `rate` times real time.
fn venue_at(at: OffsetDateTime, rate: f64) -> (Venue, KalshiVenue, String) {
    let v = Venue::start();
    let spec = v.simulate_clock(at, rate);
    let k = KalshiVenue::mount_on(&v);
    (v, k, spec)
}

/// A venue nearly frozen at 04:50Z (the capture's window) and its clock spec for the tool.
fn venue_at_capture() -> (Venue, KalshiVenue, String) {
    venue_at(datetime!(2026-08-17 04:50:00 UTC), 1e-6)
}

/// `kalshi-markets --once` on the venue's clock: (exit code, records, raw envelopes, stderr).
fn once(k: &KalshiVenue, spec: &str, args: &[&str]) -> (i32, Vec<Value>, Vec<Value>, String) {
    let dir = tempdir("kalshi-markets");
    let raw = dir.join("discovery.jsonl");
    let mut c = tool("kalshi-markets");
    c.env("PMARCHIVE_CLOCK", spec)
        .args(["--once", "--kalshi-url", &k.url(), "--raw-out", raw.to_str().unwrap()])
        .args(args);
    let out = run_with_timeout(c, None, Duration::from_secs(120));
    let raw_lines = if raw.exists() { read_jsonl(&raw) } else { vec![] };
    (out.status.code().unwrap(), jsonl(&out.stdout), raw_lines, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn tickers(recs: &[Value]) -> Vec<&str> {
    recs.iter().map(|r| r["ticker"].as_str().unwrap()).collect()
}

/// The `GET /markets` requests the venue saw: (status filter, cursor sent, series filter).
fn list_requests(v: &Venue) -> Vec<(String, Option<String>, Option<String>)> {
    let param = |q: &str, k: &str| q.split('&').find_map(|kv| kv.strip_prefix(&format!("{k}=")).map(String::from));
    v.log()
        .iter()
        .filter(|s| s.path == format!("{}/markets", kalshi::BASE_PATH))
        .map(|s| {
            (param(&s.query, "status").unwrap_or_default(), param(&s.query, "cursor"), param(&s.query, "series_ticker"))
        })
        .collect()
}

#[test]
fn once_finds_the_current_and_next_window_and_archives_every_page() {
    let (v, k, spec) = venue_at_capture();
    let (code, recs, raw, err) = once(&k, &spec, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(tickers(&recs), [CAPTURE_TICKER, NEXT_TICKER]);
    let (cur, next) = (&recs[0], &recs[1]);
    assert_eq!((cur["schema"].as_str(), cur["venue"].as_str()), (Some("pmarchive.kalshi_market/1"), Some("kalshi")));
    assert_eq!(
        (cur["window_start_utc"].as_str(), cur["window_end_utc"].as_str()),
        (Some("2026-08-17T04:45:00Z"), Some("2026-08-17T05:00:00Z"))
    );
    assert_eq!((cur["venue_status"].as_str(), cur["status"].as_str()), (Some("active"), Some("open")));
    assert!(cur["floor_strike"].is_number(), "{cur}");
    assert_eq!((cur["change"].as_str(), cur["series_ticker"].as_str()), (Some("snapshot"), Some("KXBTC15M")));
    assert_eq!((next["venue_status"].as_str(), next["status"].as_str()), (Some("initialized"), Some("upcoming")));
    assert_eq!(next["floor_strike"], Value::Null, "no strike before the window opens");
    assert_eq!(next["window_start_utc"], "2026-08-17T05:00:00Z");
    // status=open: 1 market, one page; status=unopened: 4 windows at 2 a page, two pages, the cursor
    // followed with the filters sent again.
    let lists = list_requests(&v);
    assert_eq!(lists.len(), 3, "{lists:?}");
    assert_eq!((lists[0].0.as_str(), &lists[0].1), ("open", &None));
    assert_eq!((lists[1].0.as_str(), &lists[1].1), ("unopened", &None));
    assert_eq!(lists[2].0, "unopened");
    assert!(lists[2].1.as_deref().is_some_and(|c| !c.is_empty()), "{lists:?}");
    assert!(lists.iter().all(|l| l.2.as_deref() == Some("KXBTC15M")), "{lists:?}");
    // Every HTTP attempt is one raw envelope, venue kalshi, with the page it asked for.
    assert_eq!(raw.len(), 3);
    for (e, page) in raw.iter().zip([1, 1, 2]) {
        assert_eq!((e["schema"].as_str(), e["venue"].as_str()), (Some("pmarchive.raw/1"), Some("kalshi")));
        assert_eq!(
            (e["tool"].as_str(), e["endpoint"].as_str(), e["status"].as_u64()),
            (Some("kalshi-markets"), Some("kalshi-markets"), Some(200))
        );
        assert_eq!(e["ctx"]["page"], page);
        assert!(e["body"]["markets"].is_array());
        assert_ctx_reads_as::<HttpCtx<ListCtx>>(e);
    }
    assert_eq!(raw[2]["request"]["params"]["status"], "unopened");
    assert!(raw[2]["request"]["params"]["cursor"].is_string());
    // The source URL names the page the record came from.
    assert!(next["source_url"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{}/markets?series_ticker=KXBTC15M&status=unopened", k.url())));
}

#[test]
fn paging_ends_on_an_empty_null_or_absent_cursor() {
    for end in [CursorEnd::Empty, CursorEnd::Null, CursorEnd::Absent] {
        let (v, k, spec) = venue_at_capture();
        k.set_cursor_end(end);
        k.set_page_sizes(1, 20);
        let (code, recs, raw, err) = once(&k, &spec, &["--ahead", "3"]);
        assert_eq!(code, 0, "{end:?}: {err}");
        assert_eq!(recs.len(), 4, "{end:?}: current + 3: {recs:?}");
        assert_eq!(recs[3]["window_start_utc"], "2026-08-17T05:30:00Z");
        // open: 1 page; unopened: 4 windows, one a page; no request after the last page.
        let lists = list_requests(&v);
        assert_eq!(lists.len(), 5, "{end:?}: {lists:?}");
        assert_eq!(raw.len(), 5);
        assert!(err.contains("0 malformed, 0 failed"), "{err}");
    }
}

#[test]
fn a_429_without_retry_after_is_retried_with_backoff() {
    let (v, k, spec) = venue_at_capture();
    v.fault(kalshi::LIST, kalshi::too_many());
    let (code, recs, raw, err) = once(&k, &spec, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(tickers(&recs), [CAPTURE_TICKER, NEXT_TICKER]);
    assert_eq!(raw.len(), 4, "the 429 and its retry are both archived");
    assert_eq!(raw[0]["status"], 429);
    assert_eq!(raw[0]["body"]["error"], "too many requests");
    assert!(raw[0]["ctx"]["retryable"].as_str().unwrap().contains("429"), "{}", raw[0]);
    assert_eq!((raw[1]["status"].as_u64(), raw[1]["attempt"].as_u64()), (Some(200), Some(2)));
    assert_eq!(raw[1]["request"]["url"], raw[0]["request"]["url"]);
    assert!(raw[1]["ctx"]["waited_before_s"].as_f64().unwrap() > 0.0, "{}", raw[1]);
    assert!(err.contains("0 malformed, 0 failed"), "{err}");
}

#[test]
fn a_malformed_market_object_is_counted_kept_raw_and_never_used() {
    let (v, k, spec) = venue_at_capture();
    let good = serde_json::to_value(k.market(CAPTURE_TICKER).unwrap()).unwrap();
    let mut unsafe_ticker = good.clone();
    unsafe_ticker["ticker"] = "KXBTC15M-26AUG170100-00/../../orderbook".into();
    let mut no_times = good.clone();
    no_times.as_object_mut().unwrap().remove("open_time");
    no_times["ticker"] = "KXBTC15M-26AUG170100-99".into();
    let body = serde_json::json!({"markets": [unsafe_ticker, good, no_times], "cursor": ""});
    v.fault(kalshi::LIST, Fault::Body(body.to_string().into_bytes()));
    let (code, recs, raw, err) = once(&k, &spec, &[]);
    assert_eq!(code, 1, "something was malformed: {err}");
    assert_eq!(tickers(&recs), [CAPTURE_TICKER, NEXT_TICKER], "the usable markets of the page stand");
    assert!(err.contains("skipped market #1 of status=open page 1: ticker is not a safe token"), "{err}");
    assert!(err.contains("skipped market #3 of status=open page 1: no open_time (kept raw)"), "{err}");
    assert!(err.contains("2 malformed, 0 failed"), "{err}");
    // Kept raw: the reply as served, bad objects included.
    assert_eq!(raw[0]["body"]["markets"][0]["ticker"], "KXBTC15M-26AUG170100-00/../../orderbook");
    assert_eq!(raw[0]["body"], body);
    // The unsafe ticker never went into a request.
    assert!(v.log().iter().all(|s| !s.path.contains("..") && !s.path.contains("orderbook")));
}

/// A venue whose listings are not JSON: a failed listing, exit 1, nothing made up.
#[test]
fn a_listing_that_is_not_json_is_a_failure_not_a_guess() {
    let (v, k, spec) = venue_at_capture();
    // Every try of the first listing gets the HTML page (the client retries an unusable 200).
    for _ in 0..4 {
        v.fault(kalshi::LIST, Fault::Html);
    }
    let (code, recs, raw, err) = once(&k, &spec, &[]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(tickers(&recs), [NEXT_TICKER], "only the listing that answered is used");
    assert!(raw.iter().take(4).all(|e| e["ctx"]["status_filter"] == "open" && e["status"] == 200));
    assert!(err.contains("could not fetch status=open page 1"), "{err}");
}

/// A `kalshi-markets --watch` run on the venue's clock (10 simulated seconds a real second, one
/// listing page per filter, results `result_after` after close).
struct WatchRun {
    _v: Venue,
    k: KalshiVenue,
    child: std::process::Child,
    out: Lines,
    raw: std::path::PathBuf,
}

impl WatchRun {
    fn start(at: OffsetDateTime, result_after: Duration, args: &[&str]) -> WatchRun {
        let (v, k, spec) = venue_at(at, 10.0);
        k.set_result_after(result_after);
        k.set_page_sizes(10, 20);
        let raw = tempdir("kalshi-watch").join("discovery.jsonl");
        let mut c = tool("kalshi-markets");
        c.env("PMARCHIVE_CLOCK", spec)
            .args(["--watch", "0.5", "--kalshi-url", &k.url(), "--raw-out", raw.to_str().unwrap()])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        let out = Lines::of(child.stdout.take().unwrap());
        WatchRun { _v: v, k, child, out, raw }
    }

    /// Waits (generously) for the capture window's resolution record, then for its expiry.
    fn resolution_then_expiry(&mut self) -> Value {
        let limit = Duration::from_secs(120);
        let line = self.out.wait_for("resolution record", limit, |l| l.contains("pmarchive.kalshi_resolution/1"));
        self.out.wait_for("expiry", limit, |l| l.contains(CAPTURE_TICKER) && l.contains("\"change\":\"expired\""));
        serde_json::from_str(&line).unwrap()
    }

    /// SIGTERM; the run ends with 0. Returns its stdout lines and stderr.
    fn stop(mut self) -> (Vec<String>, String) {
        sigterm(&self.child);
        let lines = self.out.rest();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(self.child.wait().unwrap().code(), Some(0), "{err}");
        (lines, err)
    }
}

/// Watch mode: the capture's window is announced, changes when it ends, is followed after its close
/// with GET /markets/{ticker} until Kalshi sets `result` (one resolution record), then expires.
#[test]
fn watch_reports_new_changed_expired_and_one_resolution_after_close() {
    // The window closes at 05:00 (about 9 s in), the result comes 30 s later.
    let args = ["--keep-after", "60", "--resolve-every", "20", "--resolve-for", "1800"];
    let mut run = WatchRun::start(datetime!(2026-08-17 04:58:30 UTC), Duration::from_secs(30), &args);
    let r = run.resolution_then_expiry();
    // A few more passes: the resolution is not reported twice.
    run.out.wait_for("the window after next", Duration::from_secs(120), |l| l.contains("KXBTC15M-26AUG170130-30"));
    let (k, raw) = (run.k.url(), run.raw.clone());
    let (lines, err) = run.stop();
    // Each line is its record type, written as itself.
    for l in &lines {
        let rec: Record = serde_json::from_str(l).unwrap();
        assert_eq!(&serde_json::to_string(&rec).unwrap(), l);
    }
    assert_eq!(
        (r["ticker"].as_str(), r["result"].as_str()),
        (Some(CAPTURE_TICKER), Some(kalshi::result_of(CAPTURE_TICKER)))
    );
    assert!(["determined", "finalized"].contains(&r["venue_status"].as_str().unwrap()), "{r}");
    assert!(r["expiration_value"].is_string(), "{r}");
    assert!(r["checks"].as_u64().unwrap() >= 1);
    let resolutions: Vec<&String> = lines.iter().filter(|l| l.contains("pmarchive.kalshi_resolution/1")).collect();
    assert_eq!(resolutions.len(), 1, "reported once: {lines:#?}");
    let events: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["record"] == "market")
        .map(|v| {
            (
                v["ticker"].as_str().unwrap().into(),
                v["change"].as_str().unwrap().into(),
                v["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    let pos = |t: &str, c: &str| events.iter().position(|e| e.0 == t && e.1 == c);
    let new = pos(CAPTURE_TICKER, "new").expect("announced");
    let changed = pos(CAPTURE_TICKER, "changed").expect("its end reported");
    let expired = pos(CAPTURE_TICKER, "expired").expect("expired after keep-after");
    assert!(new < changed && changed < expired, "{events:#?}");
    assert_eq!(events[new].2, "open");
    assert!(["ended", "closed"].contains(&events[changed].2.as_str()), "{events:#?}");
    assert_eq!(events.iter().filter(|e| e.0 == CAPTURE_TICKER && e.1 == "new").count(), 1, "{events:#?}");
    // The reply that gave the result is archived, asked for by ticker.
    let raws = read_jsonl(&raw);
    assert!(raws.iter().any(|e| e["ctx"]["ticker"] == CAPTURE_TICKER
        && e["request"]["url"] == format!("{k}/markets/{CAPTURE_TICKER}")
        && e["body"]["market"]["result"] == r["result"]));
    assert!(err.contains("resolutions: 1 reported"), "{err}");
}

/// A market Kalshi sets no result for is given up after --resolve-for with one `unresolved` record.
#[test]
fn a_market_without_a_result_is_given_up_after_resolve_for() {
    // --resolve-for ends before --keep-after: the market is still re-fetched after it was given up,
    // and must not be followed (or reported) again.
    let args = ["--keep-after", "150", "--resolve-every", "10", "--resolve-for", "90"];
    let mut run = WatchRun::start(datetime!(2026-08-17 04:59:00 UTC), Duration::from_secs(86_400), &args);
    let r = run.resolution_then_expiry();
    let (lines, err) = run.stop();
    assert_eq!((r["ticker"].as_str(), r["result"].as_str()), (Some(CAPTURE_TICKER), Some("unresolved")));
    assert!(r["checks"].as_u64().unwrap() >= 2, "{r}");
    assert_eq!(lines.iter().filter(|l| l.contains("pmarchive.kalshi_resolution/1")).count(), 1, "{lines:#?}");
    assert!(err.contains("1 unresolved when --resolve-for ran out"), "{err}");
}

/// With no venue, one stderr line says Kalshi is unreachable and no market is known yet; one line
/// when it answers again.
#[test]
fn an_outage_is_one_line_when_it_starts_and_one_when_it_ends() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}{}", kalshi::BASE_PATH);
    let mut c = tool("kalshi-markets");
    c.args(["--watch", "0.5", "--kalshi-url", &url, "--timeout", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut err = Lines::of(child.stderr.take().unwrap());
    let line = err.wait_for("outage line", Duration::from_secs(60), |l| l.contains("outage:"));
    assert!(line.contains("Kalshi unreachable") && line.contains("no market yet"), "{line}");
    let v = Venue::start_on(port);
    let _k = KalshiVenue::mount_on(&v);
    let over = err.wait_for("outage-over line", Duration::from_secs(120), |l| l.contains("outage over"));
    assert!(over.contains("Kalshi answers again after"), "{over}");
    sigterm(&child);
    let lines = err.rest();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(lines.iter().filter(|l| l.contains("outage:")).count(), 1, "{lines:#?}");
    assert!(lines.iter().filter(|l| l.contains("could not fetch")).count() <= 1, "{lines:#?}");
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    for args in [
        vec!["--once", "--watch", "5"],
        vec![],
        vec!["--once", "--ahead", "501"],
        vec!["--watch", "60", "--resolve-for", "NaN"],
        vec!["--watch", "60", "--resolve-for", "2592001"],
        vec!["--once", "--series", "kx/../x"],
        vec!["--once", "--kalshi-url", "ftp://x"],
        vec!["--once", "--duration", "5"],
        vec!["--watch", "60", "--now", "2026-08-17T04:50:00Z"],
        vec!["--once", "--raw-out", "/nonexistent-dir/x.jsonl"],
    ] {
        let mut c = tool("kalshi-markets");
        c.args(&args);
        let out = run_with_timeout(c, None, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("kalshi-markets: "), "{err}");
    }
}
