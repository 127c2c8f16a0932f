//! pm-markets against the loopback venue (recorded Gamma responses, derived windows, injected faults).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::venue::{self, Fault, Venue};
use common::{assert_ctx_reads_as, jsonl, read_jsonl, run_with_timeout, sigterm, tempdir, tool, Lines};
use pm_archive::http::HttpCtx;
use pm_archive::polymarket::markets::GammaCtx;
use serde_json::value::RawValue;
use serde_json::Value;

fn markets_once(v: &Venue, args: &[&str]) -> (i32, Vec<Value>, Vec<Value>, String) {
    let dir = tempdir("markets");
    let raw = dir.join("gamma.jsonl");
    let mut c = tool("pm-markets");
    c.args(["--once", "--gamma-url", &v.url(), "--raw-out", raw.to_str().unwrap()]).args(args);
    let out = run_with_timeout(c, None, Duration::from_secs(120));
    let raw_lines = if raw.exists() { read_jsonl(&raw) } else { vec![] };
    (out.status.code().unwrap(), jsonl(&out.stdout), raw_lines, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn discovers_current_and_next_windows_of_every_family() {
    let v = Venue::start();
    let (code, recs, raw, err) = markets_once(&v, &["--ahead", "1", "--now", "2026-08-22T16:02:10Z"]);
    assert_eq!(code, 0, "{err}");
    let slugs: Vec<&str> = recs.iter().map(|r| r["slug"].as_str().unwrap()).collect();
    assert_eq!(
        slugs,
        vec![
            "btc-updown-5m-1787414400",
            "btc-updown-5m-1787414700",
            "btc-updown-15m-1787414400",
            "btc-updown-15m-1787415300",
            "bitcoin-up-or-down-august-22-2026-12pm-et",
            "bitcoin-up-or-down-august-22-2026-1pm-et",
            "btc-updown-4h-1787414400",
            "btc-updown-4h-1787428800",
            "bitcoin-up-or-down-on-august-23-2026",
            "bitcoin-up-or-down-on-august-24-2026",
        ]
    );
    let issued = v.issued_tokens();
    for r in &recs {
        assert_eq!(r["record"], "market");
        assert_eq!(r["schema"], "pmarchive.market/1");
        assert_eq!(r["change"], "snapshot");
        let toks = r["tokens"].as_array().unwrap();
        assert_eq!(toks.len(), 2);
        assert_eq!(toks[0]["outcome"], "Up");
        assert_eq!(toks[1]["outcome"], "Down");
        for t in toks {
            assert!(issued.contains(&t["token_id"].as_str().unwrap().to_string()));
        }
        assert!(r["condition_id"].as_str().unwrap().starts_with("0x"));
        assert!(r["source_url"].as_str().unwrap().starts_with(&v.url()));
        assert!(r["fetched_at_utc"].as_str().unwrap().ends_with('Z'));
        assert_eq!(r["tick_size"], serde_json::json!(0.01));
        assert_eq!(r["min_order_size"], serde_json::json!(5));
        assert_eq!(r["neg_risk"], false);
        assert!(r["listed_at_utc"].is_string());
    }
    assert_eq!(recs[0]["window_start_utc"], "2026-08-22T16:00:00Z");
    assert_eq!(recs[0]["window_end_utc"], "2026-08-22T16:05:00Z");
    assert_eq!(recs[0]["family"], "5m");
    assert_eq!(recs[8]["window_start_utc"], "2026-08-22T16:00:00Z");
    assert_eq!(recs[8]["window_end_utc"], "2026-08-23T16:00:00Z");
    // Every HTTP attempt is one raw envelope; all were 200 here.
    assert_eq!(raw.len(), v.count("/markets/slug/"));
    assert_eq!(raw.len(), 10);
    for e in &raw {
        assert_eq!(e["schema"], "pmarchive.raw/1");
        assert_eq!(e["tool"], "pm-markets");
        assert_eq!(e["endpoint"], "gamma");
        assert_eq!(e["status"], 200);
        assert_eq!(e["request"]["method"], "GET");
        assert!(e["ctx"]["slug"].is_string());
        assert_ctx_reads_as::<HttpCtx<GammaCtx>>(e);
    }
}

#[test]
fn raw_envelope_embeds_the_recorded_gamma_body_byte_for_byte() {
    let v = Venue::start();
    let (code, recs, raw, err) =
        markets_once(&v, &["--families", "15m", "--ahead", "0", "--now", "2025-12-31T17:07:12Z"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    // The JSON-in-string quirks parsed, and the window is eventStartTime..endDate (not startDate).
    assert_eq!(r["slug"], venue::RECORDED_15M_SLUG);
    assert_eq!(
        r["tokens"][0]["token_id"],
        "8851848546962572193739008211889046036776198486765606333032192644001246174440"
    );
    assert_eq!(
        r["tokens"][1]["token_id"],
        "10181859819235412241349111952383458602722012323104397550162049365057126390549"
    );
    assert_eq!(r["window_start_utc"], "2025-12-31T17:00:00Z");
    assert_eq!(r["window_end_utc"], "2025-12-31T17:15:00Z");
    assert_eq!(r["listed_at_utc"], "2025-12-30T17:10:15.861305Z");
    assert_eq!(r["market_id"], "1066851");
    assert_eq!(r["question"], "Bitcoin Up or Down - December 31, 12:00PM-12:15PM ET");
    // Byte-for-byte: read the envelope's body as a RawValue and compare with the fixture bytes.
    let dir = tempdir("markets-raw");
    let rawfile = dir.join("g.jsonl");
    let mut c = tool("pm-markets");
    c.args([
        "--once",
        "--families",
        "15m",
        "--ahead",
        "0",
        "--now",
        "2025-12-31T17:07:12Z",
        "--gamma-url",
        &v.url(),
        "--raw-out",
        rawfile.to_str().unwrap(),
    ]);
    run_with_timeout(c, None, Duration::from_secs(60));
    let text = std::fs::read_to_string(&rawfile).unwrap();
    let line = text.lines().next().unwrap();
    let fields: HashMap<String, Box<RawValue>> = serde_json::from_str(line).unwrap();
    let mut expected = venue::fixture("gamma_market_btc_updown_15m_1767200400.json");
    while expected.last() == Some(&b'\n') {
        expected.pop();
    }
    assert_eq!(fields["body"].get().as_bytes(), &expected[..]);
    assert_eq!(raw[0]["body_kind"], "json");
}

#[test]
fn not_yet_listed_is_normal() {
    let v = Venue::start();
    v.set_listing_horizon(Duration::from_secs(0));
    let (code, recs, raw, err) = markets_once(&v, &["--families", "5m,1h", "--ahead", "2", "--now", &now_plus(0)]);
    assert_eq!(code, 0, "{err}");
    // Only the current windows have started; the 2 next ones of each family are not listed.
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert!(err.contains("4 not listed yet"), "{err}");
    // 5m: 1 found + 2 unlisted; hourly: 1 found + 2 unlisted windows that each try both slug forms.
    assert_eq!(raw.len(), 3 + 5);
    assert_eq!(raw.iter().filter(|e| e["status"] == 404).count(), 6);
}

fn now_plus(secs: i64) -> String {
    pm_archive::clock::fmt_secs(time::OffsetDateTime::now_utc() + time::Duration::seconds(secs))
}

#[test]
fn every_injected_fault_is_retried_and_recorded() {
    let v = Venue::start();
    // At most 3 faults per slug, so that each window succeeds within its 4 attempts.
    let p = |s: &str| format!("/markets/slug/{s}");
    v.fault(&p("btc-updown-5m-1787414400"), Fault::TooMany { retry_after: Some("1".into()) });
    v.fault(&p("btc-updown-5m-1787414400"), Fault::TooMany { retry_after: None });
    v.fault(&p("btc-updown-5m-1787414700"), Fault::Status(503));
    v.fault(&p("btc-updown-5m-1787414700"), Fault::Html);
    v.fault(&p("btc-updown-15m-1787414400"), Fault::Truncated);
    v.fault(&p("btc-updown-15m-1787415300"), Fault::Reset);
    v.fault(&p("btc-updown-4h-1787414400"), Fault::ThrottledOk);
    v.fault(&p("btc-updown-4h-1787428800"), Fault::Slow(Duration::from_millis(700)));
    let (code, recs, raw, err) =
        markets_once(&v, &["--families", "5m,15m,4h", "--ahead", "1", "--now", "2026-08-22T16:02:10Z"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(recs.len(), 6, "all six windows found despite 8 faults: {err}");
    let served = v.log();
    assert_eq!(raw.len(), served.len(), "one envelope per attempt");
    assert_eq!(raw.len(), 6 + 7, "7 faulty attempts retried (the slow one succeeds)");
    let statuses: Vec<Value> = raw.iter().map(|e| e["status"].clone()).collect();
    assert!(statuses.contains(&serde_json::json!(429)));
    assert!(statuses.contains(&serde_json::json!(503)));
    // The 429 with Retry-After: the header is kept and the next try waited at least 1 s.
    let i = raw.iter().position(|e| e["headers"]["retry-after"] == "1").expect("retry-after kept");
    assert!(raw[i + 1]["ctx"]["waited_before_s"].as_f64().unwrap() >= 1.0);
    // HTML and truncated JSON are kept as text with an error marker.
    let html = raw.iter().find(|e| e["body_text"].as_str().is_some_and(|t| t.contains("<html>"))).unwrap();
    assert!(html["body_error"].as_str().unwrap().starts_with("not_json"));
    assert_eq!(html["status"], 200);
    assert!(raw.iter().any(|e| e["body_kind"] == "text" && e["body_text"].as_str().unwrap().starts_with("{")));
    // The dropped connection is an envelope with no status and an error.
    let reset = raw.iter().find(|e| e.get("status").is_none()).unwrap();
    assert!(reset["error"].as_str().unwrap().starts_with("network"));
    // Every failed attempt says it is retryable.
    assert_eq!(raw.iter().filter(|e| e["ctx"]["retryable"].is_string()).count(), 7);
}

#[test]
fn exhausted_retries_fail_the_window_but_not_the_run() {
    let v = Venue::start();
    for _ in 0..4 {
        v.fault("/markets/slug/btc-updown-5m-1787414700", Fault::Status(502));
    }
    let (code, recs, raw, err) =
        markets_once(&v, &["--families", "5m", "--ahead", "1", "--now", "2026-08-22T16:02:10Z"]);
    assert_eq!(code, 1, "a window that could not be fetched makes --once exit 1");
    assert_eq!(recs.len(), 1);
    assert!(err.contains("could not fetch btc-updown-5m-1787414700"), "{err}");
    let last = raw.last().unwrap();
    assert_eq!(last["status"], 502);
    assert!(last["error"].as_str().unwrap().contains("gave up: 4 attempts"), "{last}");
    assert_eq!(raw.len(), 5);
}

#[test]
fn malformed_gamma_records_are_kept_raw_skipped_and_counted() {
    let v = Venue::start();
    let good = venue::fixture_json("gamma_market_btc_updown_5m_1787414400_twap_trimmed.json");
    let mut no_ids = good.clone();
    no_ids.as_object_mut().unwrap().remove("clobTokenIds");
    let mut mismatch = good.clone();
    mismatch["slug"] = "btc-updown-5m-1787414700".into();
    mismatch["outcomes"] = "[\"Up\", \"Down\", \"Maybe\"]".into();
    let mut bad_date = good.clone();
    bad_date["slug"] = "btc-updown-5m-1787415000".into();
    bad_date["eventStartTime"] = "tomorrow-ish".into();
    let mut not_json_ids = good.clone();
    not_json_ids["slug"] = "btc-updown-5m-1787415300".into();
    not_json_ids["clobTokenIds"] = "[\"1130133824, oops".into();
    v.gamma_override("btc-updown-5m-1787414400", 200, &serde_json::to_vec(&no_ids).unwrap());
    v.gamma_override("btc-updown-5m-1787414700", 200, &serde_json::to_vec(&mismatch).unwrap());
    v.gamma_override("btc-updown-5m-1787415000", 200, &serde_json::to_vec(&bad_date).unwrap());
    v.gamma_override("btc-updown-5m-1787415300", 200, &serde_json::to_vec(&not_json_ids).unwrap());
    let (code, recs, raw, err) =
        markets_once(&v, &["--families", "5m", "--ahead", "4", "--now", "2026-08-22T16:02:10Z"]);
    assert_eq!(code, 1);
    assert_eq!(recs.len(), 1, "only the 5th window is well-formed");
    assert_eq!(recs[0]["slug"], "btc-updown-5m-1787415600");
    assert!(err.contains("skipped btc-updown-5m-1787414400: malformed Gamma record: missing clobTokenIds"), "{err}");
    assert!(err.contains("2 clobTokenIds but 3 outcomes"), "{err}");
    assert!(err.contains("eventStartTime is not a date"), "{err}");
    assert!(err.contains("clobTokenIds is not a JSON array"), "{err}");
    assert!(err.contains("4 malformed"), "{err}");
    // Kept raw: 5 envelopes, all 200.
    assert_eq!(raw.len(), 5);
    assert!(raw.iter().all(|e| e["status"] == 200));
}

#[test]
fn eastern_time_slugs_across_the_2026_dst_changes() {
    let v = Venue::start();
    // Spring forward, 2026-03-08: 06:00Z is 1am EST, the next hour starts 07:00Z = 3am EDT.
    let (code, recs, _, err) = markets_once(&v, &["--families", "1h", "--ahead", "1", "--now", "2026-03-08T06:30:00Z"]);
    assert_eq!(code, 0, "{err}");
    let got: Vec<(&str, &str)> =
        recs.iter().map(|r| (r["slug"].as_str().unwrap(), r["window_start_utc"].as_str().unwrap())).collect();
    assert_eq!(
        got,
        vec![
            ("bitcoin-up-or-down-march-8-2026-1am-et", "2026-03-08T06:00:00Z"),
            ("bitcoin-up-or-down-march-8-2026-3am-et", "2026-03-08T07:00:00Z")
        ]
    );
    // Fall back, 2026-11-01: 05:00Z and 06:00Z are both "1am ET"; the slug is asked once.
    let (code, recs, raw, err) =
        markets_once(&v, &["--families", "1h", "--ahead", "2", "--now", "2026-11-01T05:10:00Z"]);
    assert_eq!(code, 0, "{err}");
    let got: Vec<&str> = recs.iter().map(|r| r["slug"].as_str().unwrap()).collect();
    assert_eq!(got, vec!["bitcoin-up-or-down-november-1-2026-1am-et", "bitcoin-up-or-down-november-1-2026-2am-et"]);
    assert_eq!(raw.len(), 2);
    // Daily across fall-back: window 2026-10-31 16:00Z → 2026-11-01 17:00Z, dated November 1.
    let (_, recs, _, _) = markets_once(&v, &["--families", "daily", "--ahead", "0", "--now", "2026-11-01T10:00:00Z"]);
    assert_eq!(recs[0]["slug"], "bitcoin-up-or-down-on-november-1-2026");
    assert_eq!(recs[0]["window_end_utc"], "2026-11-01T17:00:00Z");
}

#[test]
fn watch_mode_rolls_over_as_the_clock_moves() {
    let v = Venue::start();
    let start = time::macros::datetime!(2026-08-22 16:03:30 UTC);
    // 30 simulated seconds per real second: 16:03:30 → 16:07:30 in 8 s.
    let spec = v.simulate_clock(start, 30.0);
    let mut c = tool("pm-markets");
    c.env("PMARCHIVE_CLOCK", &spec)
        .args(["--watch", "0.5", "--families", "5m", "--ahead", "0", "--keep-after", "60", "--gamma-url", &v.url()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    std::thread::sleep(Duration::from_secs(8));
    let pid = child.id().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "SIGTERM ends watch mode cleanly: {}", String::from_utf8_lossy(&out.stderr));
    let recs = jsonl(&out.stdout);
    let events: Vec<(String, String, String)> = recs
        .iter()
        .map(|r| {
            (
                r["slug"].as_str().unwrap().into(),
                r["change"].as_str().unwrap().into(),
                r["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    let first = "btc-updown-5m-1787414400".to_string();
    let second = "btc-updown-5m-1787414700".to_string();
    let pos = |s: &String, c: &str| events.iter().position(|e| &e.0 == s && e.1 == c);
    let new1 = pos(&first, "new").expect("first window announced");
    let new2 = pos(&second, "new").expect("next window announced after roll-over");
    let changed1 = pos(&first, "changed").expect("first window's status change reported");
    let expired1 = pos(&first, "expired").expect("first window expired after keep-after");
    assert!(new1 < new2 && new2 <= changed1 + 1 && changed1 < expired1, "{events:?}");
    assert_eq!(events[new1].2, "open");
    assert!(["ended", "closed"].contains(&events[changed1].2.as_str()), "{events:?}");
    // No duplicates: a market is announced once.
    assert_eq!(events.iter().filter(|e| e.1 == "new").count(), 2, "{events:?}");
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    for args in [
        vec!["--once", "--watch", "5"],
        vec![],
        vec!["--once", "--ahead", "many"],
        vec!["--once", "--gamma-url", "ftp://x"],
        vec!["--once", "--now", "yesterday"],
        vec!["--watch", "0"],
        vec!["--once", "--raw-out", "/nonexistent-dir/x.jsonl"],
    ] {
        let mut c = tool("pm-markets");
        c.args(&args);
        let out = run_with_timeout(c, None, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("pm-markets: "), "{err}");
    }
    let mut c = tool("pm-markets");
    c.arg("--help");
    let out = run_with_timeout(c, None, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage:"));
}

/// The loopback venue records each request's `User-Agent` header: by default every Gamma request
/// carries the project's descriptive agent (Cloudflare answers 403 to some default agents, facts §1),
/// and `--user-agent` replaces it on every request, retries included.
#[test]
fn the_descriptive_user_agent_is_sent_and_user_agent_overrides_it() {
    let args = ["--families", "5m", "--ahead", "1", "--now", "2026-08-22T16:02:10Z"];
    let v = Venue::start();
    let (code, recs, _, err) = markets_once(&v, &args);
    assert_eq!((code, recs.len()), (0, 2), "{err}");
    let agents: Vec<Option<String>> = v.log().into_iter().map(|s| s.user_agent).collect();
    assert_eq!(agents.len(), 2);
    for a in &agents {
        let a = a.as_deref().expect("a User-Agent header is sent");
        assert_eq!(a, pm_archive::http::DEFAULT_USER_AGENT);
        assert!(a.starts_with(&format!("pm-archive/{} (", pm_archive::VERSION)), "{a}");
        assert!(a.contains("read-only") && a.contains("no trading"), "{a}");
    }
    let v = Venue::start();
    // A retried attempt carries the override too.
    v.fault("/markets/slug/btc-updown-5m-1787414400", Fault::Status(503));
    let mut with_ua = args.to_vec();
    with_ua.extend(["--user-agent", "pm-archive-test/9 (loopback)"]);
    let (code, recs, raw, err) = markets_once(&v, &with_ua);
    assert_eq!((code, recs.len()), (0, 2), "{err}");
    let served = v.log();
    assert_eq!((served.len(), raw.len()), (3, 3), "one retry after the 503");
    for s in &served {
        assert_eq!(s.user_agent.as_deref(), Some("pm-archive-test/9 (loopback)"), "{} {:?}", s.path, s.status);
    }
}

/// A reply slower than `--timeout` ends the attempt: it is an envelope with no status and a network
/// (timeout) error, marked retryable; the next attempt succeeds and the run ends normally, long
/// before the slow reply would have been complete.
#[test]
fn a_reply_slower_than_the_timeout_is_a_recorded_network_error_then_retried() {
    let v = Venue::start();
    let slug = "btc-updown-5m-1787414400";
    v.fault(&format!("/markets/slug/{slug}"), Fault::Slow(Duration::from_secs(3)));
    let (code, recs, raw, err) =
        markets_once(&v, &["--families", "5m", "--ahead", "0", "--now", "2026-08-22T16:02:10Z", "--timeout", "0.5"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(recs.len(), 1, "{err}");
    assert_eq!(recs[0]["slug"], slug);
    assert_eq!(raw.len(), 2, "{raw:?}");
    let (first, second) = (&raw[0], &raw[1]);
    assert!(first.get("status").is_none(), "no reply within the timeout: {first}");
    assert!(first.get("body").is_none() && first.get("headers").is_none(), "{first}");
    let e = first["error"].as_str().unwrap();
    assert!(e.starts_with("network") && e.to_lowercase().contains("timeout"), "{e}");
    assert_eq!(first["ctx"]["retryable"], "network");
    assert_eq!(first["attempt"], 1);
    // Cut off at the timeout (0.5 s), not at the venue's 3 s.
    let ms = first["elapsed_ms"].as_f64().unwrap();
    assert!((400.0..2900.0).contains(&ms), "{ms}");
    assert_eq!((second["attempt"].as_u64(), second["status"].as_u64()), (Some(2), Some(200)));
    assert!(second["ctx"]["waited_before_s"].as_f64().unwrap() > 0.0);
}

/// Protocol V2: a "v2" record's outcome ids are its `positionIds` (a real array), even though it also
/// carries `clobTokenIds`; the market record says so, and pm-books polls the position ids (the
/// loopback venue has books for those only). A resolution line in pm-books' input is skipped.
#[test]
fn v2_markets_use_position_ids_and_pm_books_polls_them() {
    let v = Venue::start();
    v.set_version("btc-updown-5m-", "v2");
    let (code, recs, raw, err) = markets_once(&v, &["--families", "5m,15m", "--ahead", "0", "--now", &now_plus(0)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(recs.len(), 2, "{err}");
    let (m5, m15) = (&recs[0], &recs[1]);
    let body5 = &raw.iter().find(|e| e["ctx"]["slug"] == m5["slug"]).unwrap()["body"];
    let position_ids: Vec<Value> = body5["positionIds"].as_array().unwrap().clone();
    let clob_ids: Vec<String> = serde_json::from_str(body5["clobTokenIds"].as_str().unwrap()).unwrap();
    let ids =
        |r: &Value| -> Vec<Value> { r["tokens"].as_array().unwrap().iter().map(|t| t["token_id"].clone()).collect() };
    assert_eq!(ids(m5), position_ids);
    assert!(clob_ids.iter().all(|c| !position_ids.contains(&Value::from(c.as_str()))), "the two id sets differ");
    assert_eq!((m5["version"].as_str(), m5["token_id_field"].as_str()), (Some("v2"), Some("positionIds")));
    // A record without `version` (the 15m one, as every record before V2) uses clobTokenIds.
    assert_eq!((m15["version"].clone(), m15["token_id_field"].as_str()), (Value::Null, Some("clobTokenIds")));

    // pm-books reads both records plus a resolution line, and asks for the V2 market's position ids.
    let resolution = serde_json::json!({"record": "resolution", "schema": "pmarchive.resolution/1", "slug": "x"});
    let input =
        format!("{}\n{}\n{}\n", serde_json::to_string(m5).unwrap(), resolution, serde_json::to_string(m15).unwrap());
    let mut c = tool("pm-books");
    c.args(["--clob-url", &v.url(), "--interval", "0.3", "--duration", "1.5"]);
    let out = run_with_timeout(c, Some(input.as_bytes()), Duration::from_secs(60));
    let books_err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{books_err}");
    assert!(!books_err.contains("line 2"), "the resolution line is not a bad input line: {books_err}");
    let envs = jsonl(&out.stdout);
    let polled: Vec<&Value> = envs.iter().filter(|e| e["kind"] == "http" && e["status"] == 200).collect();
    assert!(!polled.is_empty(), "{books_err}");
    for e in &polled {
        let asked: Vec<Value> =
            e["request"]["body"].as_array().unwrap().iter().map(|x| x["token_id"].clone()).collect();
        for p in &position_ids {
            assert!(asked.contains(p), "position id {p} polled: {asked:?}");
        }
        for c in &clob_ids {
            assert!(!asked.contains(&Value::from(c.as_str())), "V2 clobTokenId {c} is not polled");
        }
        let got: Vec<Value> = e["body"].as_array().unwrap().iter().map(|b| b["asset_id"].clone()).collect();
        for p in &position_ids {
            assert!(got.contains(p), "the venue answered with the V2 market's book: {got:?}");
        }
    }
}

/// An unknown `version` is never guessed: counted, on stderr, kept raw, and --once exits 1.
#[test]
fn unknown_versions_are_counted_kept_raw_and_never_guessed() {
    let v = Venue::start();
    v.set_version("btc-updown-5m-1787414700", "v3");
    let (code, recs, raw, err) =
        markets_once(&v, &["--families", "5m", "--ahead", "1", "--now", "2026-08-22T16:02:10Z"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["slug"], "btc-updown-5m-1787414400");
    assert!(err.contains("skipped btc-updown-5m-1787414700: unsupported market version \"v3\""), "{err}");
    assert!(err.contains("1 with an unsupported version"), "{err}");
    assert_eq!(raw.len(), 2);
    assert!(raw.iter().all(|e| e["status"] == 200));
    assert!(raw.iter().any(|e| e["body"]["version"] == "v3"), "the reply is kept raw");
}

/// 425 "service not ready" is retried within the run like 429/5xx and recorded as such.
#[test]
fn a_425_service_not_ready_is_retried_and_recorded() {
    let v = Venue::start();
    let slug = "btc-updown-5m-1787414400";
    v.fault(&format!("/markets/slug/{slug}"), Fault::NotReady);
    v.fault(&format!("/markets/slug/{slug}"), Fault::NotReady);
    let (code, recs, raw, err) =
        markets_once(&v, &["--families", "5m", "--ahead", "0", "--now", "2026-08-22T16:02:10Z"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(recs.len(), 1, "{err}");
    assert_eq!(raw.len(), 3, "{raw:?}");
    for e in &raw[..2] {
        assert_eq!(e["status"], 425);
        assert_eq!(e["ctx"]["retryable"], "425 service not ready");
        assert_eq!(e["body"]["error"], "service not ready");
    }
    assert_eq!((raw[2]["status"].as_u64(), raw[2]["attempt"].as_u64()), (Some(200), Some(3)));
    assert!(raw[2]["ctx"]["waited_before_s"].as_f64().unwrap() > 0.0);
}

/// A market can stay open long after `endDate`: the record carries what Gamma said (closed false,
/// accepting orders) beside the window-derived status.
#[test]
fn markets_open_past_end_date_are_recorded_as_seen() {
    let an_hour_ago = now_plus(-3600);
    let v = Venue::start();
    v.stay_open("btc-updown-5m-");
    let (code, recs, _, err) = markets_once(&v, &["--families", "5m,15m", "--ahead", "0", "--now", &an_hour_ago]);
    assert_eq!(code, 0, "{err}");
    let (m5, m15) = (&recs[0], &recs[1]);
    assert_eq!(
        (m5["status"].as_str(), m5["closed"].as_bool(), m5["accepting_orders"].as_bool()),
        (Some("ended"), Some(false), Some(true))
    );
    assert_eq!(
        (m15["status"].as_str(), m15["closed"].as_bool(), m15["accepting_orders"].as_bool()),
        (Some("closed"), Some(true), Some(false))
    );
}

fn watch(v: &Venue, spec: &str, args: &[&str], raw: &std::path::Path) -> std::process::Child {
    let mut c = tool("pm-markets");
    c.env("PMARCHIVE_CLOCK", spec)
        .args(["--watch", "0.3", "--gamma-url", &v.url(), "--raw-out", raw.to_str().unwrap()])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    c.spawn().unwrap()
}

/// After its window a market is re-checked until Gamma says it is resolved; then one resolution
/// record (winning token, closedTime) follows, and the replies that said so are in the raw file.
#[test]
fn resolutions_are_followed_after_the_window_and_recorded_once() {
    let v = Venue::start();
    v.resolve_after(Duration::from_secs(90));
    let slug = "btc-updown-5m-1787414400";
    // 30 simulated seconds per real second; the window ends 16:05, Gamma resolves it at 16:06:30.
    let spec = v.simulate_clock(time::macros::datetime!(2026-08-22 16:03:30 UTC), 30.0);
    let dir = tempdir("markets-resolve");
    let raw = dir.join("gamma.jsonl");
    let args =
        ["--families", "5m", "--ahead", "0", "--keep-after", "30", "--resolve-every", "10", "--resolve-for", "3600"];
    let mut child = watch(&v, &spec, &args, &raw);
    let mut out = Lines::of(child.stdout.take().unwrap());
    let line = out.wait_for("resolution record", Duration::from_secs(90), |l| l.contains("pmarchive.resolution/1"));
    // Let a few more passes run: the resolution is not reported twice.
    out.wait_for("a later window's record", Duration::from_secs(90), |l| l.contains("btc-updown-5m-1787415000"));
    sigterm(&child);
    let lines = out.rest();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    // Each line is its record type (markets::Record: a market or a resolution) written as itself.
    for l in std::iter::once(&line).chain(&lines) {
        let rec: pm_archive::polymarket::markets::Record = serde_json::from_str(l).unwrap();
        assert_eq!(&serde_json::to_string(&rec).unwrap(), l);
    }
    assert!(matches!(serde_json::from_str(&line).unwrap(), pm_archive::polymarket::markets::Record::Resolution(_)));
    let r: Value = serde_json::from_str(&line).unwrap();
    let market: Value =
        lines.iter().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|m| m["slug"] == slug).unwrap();
    let winner = venue::winner_of(slug);
    let i = if winner == "Up" { 0 } else { 1 };
    assert_eq!(
        (r["record"].as_str(), r["slug"].as_str(), r["result"].as_str()),
        (Some("resolution"), Some(slug), Some("resolved"))
    );
    assert_eq!(r["winning_outcome"], winner);
    assert_eq!(r["winning_token_id"], market["tokens"][i]["token_id"]);
    assert_eq!(r["outcome_prices"][i], "1");
    assert_eq!(
        (r["closed_time"].as_str(), r["closed_at_utc"].as_str()),
        (Some("2026-08-22 16:06:30+00"), Some("2026-08-22T16:06:30Z"))
    );
    assert_eq!(r["uma_resolution_status"], "resolved");
    assert!(r["checks"].as_u64().unwrap() >= 1);
    let count = lines.iter().filter(|l| l.contains("pmarchive.resolution/1")).count();
    assert_eq!(count, 1, "reported once: {lines:#?}");
    // The raw reply that said so is kept.
    let raws = read_jsonl(&raw);
    assert!(raws.iter().any(|e| e["ctx"]["slug"] == slug && e["body"]["umaResolutionStatus"] == "resolved"));
    // pm-markets' stdout, resolution lines included, is a usable `pm-normalize --markets` file.
    let records = dir.join("markets.jsonl");
    std::fs::write(&records, lines.join("\n") + "\n").unwrap();
    let mut c = tool("pm-normalize");
    c.args(["--markets", records.to_str().unwrap()]);
    let out = run_with_timeout(c, Some(b""), Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("skipped line"), "{err}");
}

/// A market Gamma never reports resolved (closed, prices still trading) is given up after
/// --resolve-for with one `unresolved` record; the winner is never guessed from prices.
#[test]
fn an_unresolved_market_is_given_up_after_resolve_for() {
    let v = Venue::start();
    let slug = "btc-updown-5m-1787414400";
    let spec = v.simulate_clock(time::macros::datetime!(2026-08-22 16:04:30 UTC), 30.0);
    let dir = tempdir("markets-unresolved");
    let raw = dir.join("gamma.jsonl");
    // --resolve-for ends before --keep-after: the market is still re-fetched after it gave up, and
    // must not be followed (or reported) again.
    let args =
        ["--families", "5m", "--ahead", "0", "--keep-after", "90", "--resolve-every", "10", "--resolve-for", "40"];
    let mut child = watch(&v, &spec, &args, &raw);
    let mut out = Lines::of(child.stdout.take().unwrap());
    let line = out.wait_for("unresolved record", Duration::from_secs(90), |l| l.contains("pmarchive.resolution/1"));
    out.wait_for("expiry", Duration::from_secs(90), |l| l.contains(slug) && l.contains("\"change\":\"expired\""));
    sigterm(&child);
    let lines = out.rest();
    assert_eq!(lines.iter().filter(|l| l.contains("pmarchive.resolution/1")).count(), 1, "{lines:#?}");
    let err = {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut s).unwrap();
        s
    };
    assert_eq!(child.wait().unwrap().code(), Some(0), "{err}");
    let r: Value = serde_json::from_str(&line).unwrap();
    assert_eq!((r["slug"].as_str(), r["result"].as_str()), (Some(slug), Some("unresolved")));
    assert_eq!(r["winning_token_id"], Value::Null);
    assert_eq!(r["closed"], true, "closed, but not resolved");
    assert!(r["checks"].as_u64().unwrap() >= 2, "{r}");
    assert!(err.contains("1 unresolved when --resolve-for ran out"), "{err}");
}

/// With no venue at all, pm-markets says within seconds that it is retrying and has no market yet
/// (one line, not one per window and pass), and one line when the venue answers again.
#[test]
fn an_outage_is_one_line_when_it_starts_and_one_when_it_ends() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let mut c = tool("pm-markets");
    c.args(["--watch", "0.5", "--families", "5m,15m", "--ahead", "1", "--gamma-url", &url, "--timeout", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let started = std::time::Instant::now();
    let mut child = c.spawn().unwrap();
    let mut err = Lines::of(child.stderr.take().unwrap());
    let line = err.wait_for("outage line", Duration::from_secs(60), |l| l.contains("outage:"));
    eprintln!("outage line after {:.1} s: {line}", started.elapsed().as_secs_f64());
    assert!(
        line.contains("Gamma unreachable") && line.contains("retrying") && line.contains("no market yet"),
        "{line}"
    );
    let v = Venue::start_on(port);
    let over = err.wait_for("outage-over line", Duration::from_secs(120), |l| l.contains("outage over"));
    assert!(over.contains("Gamma answers again after"), "{over}");
    sigterm(&child);
    let lines = err.rest();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(lines.iter().filter(|l| l.contains("outage:")).count(), 1, "{lines:#?}");
    assert!(lines.iter().filter(|l| l.contains("could not fetch")).count() <= 1, "{lines:#?}");
    assert!(v.count("/markets/slug/") > 0);
}
