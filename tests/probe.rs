//! pm-probe against the loopback venue (recorded REST bodies, derived markets and books, injected
//! faults). Every run here is a loopback replay and must say so.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::venue::{self, Fault, Venue};
use common::{assert_ctx_reads_as, read_jsonl, run_with_timeout, tempdir, tool};
use pm_archive::http::HttpCtx;
use pm_archive::polymarket::probe::run::ProbeCtx;
use serde_json::Value;

const REPORT: &str = "polymarket_public_sources_probe_v1";

struct Run {
    code: i32,
    json: Value,
    md: String,
    raw: Vec<Value>,
    stderr: String,
    dir: PathBuf,
}

fn probe(v: &Venue, args: &[&str], clock: Option<&str>) -> Run {
    let dir = tempdir("probe");
    let raw = dir.join("raw.jsonl");
    let out = dir.join("out");
    let mut c = tool("pm-probe");
    c.args([
        "--gamma-url",
        &v.url(),
        "--clob-url",
        &v.url(),
        "--out-dir",
        out.to_str().unwrap(),
        "--raw-out",
        raw.to_str().unwrap(),
    ])
    .args(args);
    if let Some(spec) = clock {
        c.env("PMARCHIVE_CLOCK", spec);
    }
    let o = run_with_timeout(c, None, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let json = std::fs::read(out.join(format!("{REPORT}.json")))
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or(Value::Null);
    let md = std::fs::read_to_string(out.join(format!("{REPORT}.md"))).unwrap_or_default();
    let raw = if raw.exists() { read_jsonl(&raw) } else { vec![] };
    Run { code: o.status.code().unwrap(), json, md, raw, stderr, dir: out }
}

fn ep<'a>(r: &'a Run, name: &str) -> &'a Value {
    r.json["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no endpoint {name}: {}", r.json))
}

fn names(r: &Run) -> Vec<String> {
    r.json["endpoints"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect()
}

fn field_names(e: &Value) -> Vec<&str> {
    e["shape"]["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect()
}

fn field_type<'a>(e: &'a Value, name: &str) -> &'a str {
    e["shape"]["fields"].as_array().unwrap().iter().find(|f| f["name"] == name).unwrap()["type"].as_str().unwrap()
}

/// Start times of the venue's requests must be at least `spacing` apart (venue log times are taken
/// when each reply was written, i.e. after the request arrived; 40 ms tolerance for the log race).
fn assert_spacing(v: &Venue, spacing: f64) {
    let log = v.log();
    for w in log.windows(2) {
        let gap = (w[1].at - w[0].at).as_seconds_f64();
        assert!(gap >= spacing - 0.04, "requests {} and {} only {gap:.3} s apart", w[0].path, w[1].path);
    }
}

const ALL: [&str; 11] = [
    "gamma_market_slug_current",
    "clob_book",
    "clob_books",
    "clob_price_buy",
    "clob_price_sell",
    "clob_midpoint",
    "clob_spread",
    "clob_last_trade_price",
    "clob_tick_size",
    "clob_time",
    "clob_book_unknown_token",
];

#[test]
fn probes_every_endpoint_and_writes_both_reports() {
    let v = Venue::start();
    let r = probe(&v, &["--min-spacing", "0.25"], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = &r.json;
    assert_eq!(j["probe"], REPORT);
    assert_eq!(j["probe_version"], 1);
    assert_eq!(j["tool"], "pm-probe");
    assert_eq!(j["run_kind"], "loopback");
    assert_eq!(j["host"], "testhost");
    assert!(j["run_id"].as_str().unwrap().len() > 10);
    assert!(j["started_at_utc"].as_str().unwrap() <= j["finished_at_utc"].as_str().unwrap());
    assert_eq!(j["base_urls"]["gamma"], v.url());
    assert_eq!(j["base_urls"]["clob"], v.url());
    assert_eq!(j["complete"], true);
    assert_eq!(j["exit_code"], 0);
    assert!(j["stopped_reason"].is_null());
    assert_eq!(names(&r), ALL);
    // Exactly one request per endpoint, all counted, all within the cap.
    let served = v.log();
    assert_eq!(served.len(), 11);
    assert_eq!(j["requests"]["used"], 11);
    assert_eq!(j["requests"]["cap"], 30);
    assert_eq!(j["requests"]["cap_reached"], false);
    assert_eq!(r.raw.len(), 11, "one raw envelope per attempt");
    assert!(r
        .raw
        .iter()
        .all(|e| e["tool"] == "pm-probe" && e["schema"] == "pmarchive.raw/1" && e["ctx"]["probe"].is_string()));
    r.raw.iter().for_each(assert_ctx_reads_as::<HttpCtx<ProbeCtx>>);
    assert_spacing(&v, 0.25);
    // The market and its tokens come from the venue's (derived) Gamma record.
    let tokens: Vec<String> =
        j["market"]["tokens"].as_array().unwrap().iter().map(|t| t["token_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(tokens.len(), 2);
    let issued = v.issued_tokens();
    assert!(tokens.iter().all(|t| issued.contains(t)));
    assert!(served[1].query.contains(&tokens[0]), "/book asked for the first token: {}", served[1].query);
    assert!(served[2].body.contains(&tokens[0]) && served[2].body.contains(&tokens[1]), "/books asked for both");
    for name in ALL {
        let e = ep(&r, name);
        assert_eq!(e["outcome"], "answered", "{name}");
        // A real exchange over loopback takes time, and the report's latency is the recorded attempt's.
        let latency = e["latency_ms"].as_f64().unwrap();
        assert!(latency > 0.0 && latency < 60_000.0, "{name}: {latency}");
        assert!(
            r.raw.iter().any(|l| l["ctx"]["probe"] == name && l["elapsed_ms"].as_f64() == Some(latency)),
            "{name}: latency_ms {latency} is the elapsed_ms of its raw attempt"
        );
        assert_eq!(e["json_valid"], true, "{name}");
        assert!(e["body_bytes"].as_u64().unwrap() > 0, "{name}");
        assert!(e["content_type"].as_str().unwrap().starts_with("application/json"), "{name}");
        assert_eq!(e["attempts"].as_array().unwrap().len(), 1);
    }
    // Gamma: fields in wire order with the JSON-in-string quirk visible; time fields interpreted.
    let g = ep(&r, "gamma_market_slug_current");
    assert_eq!(g["status"], 200);
    assert_eq!(field_type(g, "clobTokenIds"), "string(json)");
    let gt: Vec<&str> = g["timestamps"].as_array().unwrap().iter().map(|t| t["path"].as_str().unwrap()).collect();
    assert!(gt.contains(&"eventStartTime") && gt.contains(&"endDate") && gt.contains(&"startDate"), "{gt:?}");
    assert!(g["timestamps"].as_array().unwrap().iter().all(|t| t["interpretation"] == "rfc3339"));
    // Single book: the book `timestamp` is a string of Unix milliseconds.
    let b = ep(&r, "clob_book");
    assert_eq!(b["status"], 200);
    assert_eq!(
        field_names(b),
        [
            "market",
            "asset_id",
            "timestamp",
            "hash",
            "bids",
            "asks",
            "min_order_size",
            "tick_size",
            "neg_risk",
            "last_trade_price"
        ]
    );
    assert_eq!(field_type(b, "timestamp"), "string(decimal)");
    let ts = b["timestamps"].as_array().unwrap().iter().find(|t| t["path"] == "timestamp").unwrap();
    assert_eq!(ts["interpretation"], "unix_ms");
    assert!(ts["age_s"].as_f64().unwrap().abs() < 30.0, "derived book is stamped now: {ts}");
    assert_eq!(b["notes"]["bids_order"], "ascending");
    assert_eq!(b["notes"]["hash_is_40_hex"], true);
    // Batch: an array of both books; the venue replies in reverse order and the probe notices.
    let bs = ep(&r, "clob_books");
    assert_eq!(bs["shape"]["kind"], "array");
    assert_eq!(bs["shape"]["array_len"], 2);
    assert_eq!(bs["notes"]["reply_order"], "reversed");
    assert_eq!(bs["notes"]["missing"], serde_json::json!([]));
    assert!(bs["timestamps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["path"] == "[0].timestamp" && t["interpretation"] == "unix_ms"));
    // Recorded bodies of the price endpoints.
    assert_eq!(field_names(ep(&r, "clob_midpoint")), ["mid"]);
    assert_eq!(field_type(ep(&r, "clob_midpoint"), "mid"), "string(decimal)");
    assert_eq!(field_names(ep(&r, "clob_last_trade_price")), ["price", "side"]);
    assert_eq!(field_type(ep(&r, "clob_tick_size"), "minimum_tick_size"), "number(float)");
    // /time: a bare number of Unix seconds.
    let t = ep(&r, "clob_time");
    assert_eq!(t["shape"]["kind"], "number");
    assert_eq!(t["timestamps"][0]["path"], "$");
    assert_eq!(t["timestamps"][0]["interpretation"], "unix_s");
    // Unknown token: the recorded 404.
    let u = ep(&r, "clob_book_unknown_token");
    assert_eq!(u["status"], 404);
    assert_eq!(u["expected_status"], 404);
    assert!(u["error"].as_str().unwrap().contains("No orderbook exists for the requested token id"));
    assert!(served[10].query.contains(pm_archive::polymarket::probe::UNKNOWN_TOKEN_ID));
    // The human report: banner first, table, the checkpoint questions, websocket not probed.
    let first_lines: String = r.md.lines().take(4).collect::<Vec<_>>().join("\n");
    assert!(first_lines.contains("LOOPBACK REPLAY OF RECORDED RESPONSES — NOT A LIVE PROBE"), "{first_lines}");
    assert!(r.md.contains("| clob_book_unknown_token |"));
    assert!(r.md.contains("How to resolve conditionId and token IDs?"));
    assert!(r.md.contains(&tokens[1]));
    assert!(r.md.contains("Is there a market websocket for order-book updates?"));
    assert!(r.md.contains("Not probed by this tool") && r.md.contains("§6"));
    assert!(r.md.contains("unix_ms"));
    assert!(r.md.contains("does not count"), "loopback never passes the gate");
    assert_eq!(j["answers"].as_array().unwrap().len(), 10);
    assert_eq!(j["checkpoint2_pass_condition"]["met_in_this_run"], true);
    assert_eq!(j["checkpoint2_pass_condition"]["counts_as_evidence"], false);
    // No temp files left beside the reports.
    assert_eq!(std::fs::read_dir(&r.dir).unwrap().count(), 2);
    // On request, keep this run's reports as a labelled loopback example (see data/probes/README.md).
    if let Ok(dest) = std::env::var("PMARCHIVE_PROBE_EXAMPLE_DIR") {
        std::fs::create_dir_all(&dest).unwrap();
        for ext in ["json", "md"] {
            let name = format!("{REPORT}.{ext}");
            std::fs::copy(r.dir.join(&name), Path::new(&dest).join(format!("loopback_example_{name}"))).unwrap();
        }
    }
}

#[test]
fn recorded_book_fields_and_ms_timestamp() {
    // A Gamma record (given with --slug) whose first token is the recorded REST book's token: /book
    // then serves the recorded body verbatim.
    let v = Venue::start();
    let mut rec = venue::fixture_json("gamma_market_btc_updown_5m_1787414400_twap_trimmed.json");
    rec["clobTokenIds"] = format!("[\"{}\", \"1\"]", venue::RECORDED_BOOK_TOKEN).into();
    v.gamma_override("btc-updown-5m-1787414400", 200, &serde_json::to_vec(&rec).unwrap());
    let r = probe(&v, &["--slug", "btc-updown-5m-1787414400", "--min-spacing", "0.05"], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json["slugs_tried"], serde_json::json!(["btc-updown-5m-1787414400"]));
    assert_eq!(names(&r)[0], "gamma_market_slug");
    let b = ep(&r, "clob_book");
    assert_eq!(b["body_kind"], "json_text", "the recorded body is pretty-printed");
    assert_eq!(b["json_valid"], true);
    let ts = &b["timestamps"][0];
    assert_eq!(ts["path"], "timestamp");
    assert_eq!(ts["value"], "1785734468581");
    assert_eq!(ts["interpretation"], "unix_ms");
    assert_eq!(ts["utc"], "2026-08-03T05:21:08.581000Z");
    assert_eq!(field_type(b, "last_trade_price"), "string(empty)");
    assert_eq!(field_type(b, "neg_risk"), "bool");
    assert_eq!(b["notes"]["ask_levels"], 0);
    // /books: the venue has no book for tokens it did not issue and omits them silently.
    let bs = ep(&r, "clob_books");
    assert_eq!(bs["status"], 200);
    assert_eq!(bs["notes"]["missing"].as_array().unwrap().len(), 2);
    assert!(r.md.contains("2026-08-03T05:21:08.581000Z"));
    // The market's window is long over: not an active market, so the pass condition is not met.
    assert_eq!(r.json["market"]["status"], "ended");
    assert_eq!(r.json["checkpoint2_pass_condition"]["met_in_this_run"], false);
}

#[test]
fn falls_back_to_the_next_window_when_the_current_is_not_listed() {
    let v = Venue::start();
    let start = time::macros::datetime!(2026-08-22 16:02:10 UTC);
    let spec = v.simulate_clock(start, 1.0);
    // STAND-IN body (Gamma's real 404 body was not recorded).
    v.gamma_override("btc-updown-5m-1787414400", 404, br#"{"type":"not found error","error":"not found (stand-in)"}"#);
    let r = probe(&v, &["--min-spacing", "0.05"], Some(&spec));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json["slugs_tried"], serde_json::json!(["btc-updown-5m-1787414400", "btc-updown-5m-1787414700"]));
    assert_eq!(ep(&r, "gamma_market_slug_current")["status"], 404);
    assert_eq!(ep(&r, "gamma_market_slug_next")["status"], 200);
    assert_eq!(r.json["market"]["slug"], "btc-updown-5m-1787414700");
    assert_eq!(r.json["requests"]["used"], 12);
    assert_eq!(v.log().len(), 12);
}

#[test]
fn faults_are_survived_and_count_against_the_cap() {
    let v = Venue::start();
    v.fault("/books", Fault::TooMany { retry_after: Some("1".into()) });
    v.fault("/midpoint", Fault::Reset);
    let r = probe(&v, &["--min-spacing", "0.2"], None);
    assert_eq!(r.code, 0, "both faults were retried once and then answered: {}", r.stderr);
    let served = v.log();
    assert_eq!(served.len(), 13, "11 endpoints + 2 retries");
    assert_eq!(r.json["requests"]["used"], 13);
    assert_eq!(r.raw.len(), 13);
    assert_spacing(&v, 0.2);
    let bs = ep(&r, "clob_books");
    let a = bs["attempts"].as_array().unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0]["status"], 429);
    assert_eq!(a[0]["retry_after"], "1");
    assert!(a[1]["waited_before_s"].as_f64().unwrap() >= 1.0, "Retry-After honoured");
    assert_eq!(bs["retry_after"], serde_json::json!(["1"]));
    assert_eq!(bs["status"], 200);
    let m = ep(&r, "clob_midpoint");
    let a = m["attempts"].as_array().unwrap();
    assert!(a[0]["status"].is_null() && a[0]["error"].as_str().unwrap().starts_with("network"));
    assert_eq!(m["outcome"], "answered");
    assert!(
        r.md.contains("throttled replies") && r.md.contains("1 (clob_books)"),
        "rate-limit answer names the Retry-After"
    );
}

#[test]
fn an_endpoint_that_never_answers_exits_1() {
    let v = Venue::start();
    v.fault("/spread", Fault::Reset);
    v.fault("/spread", Fault::Reset);
    let r = probe(&v, &["--min-spacing", "0.05"], None);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let s = ep(&r, "clob_spread");
    assert_eq!(s["outcome"], "no_reply");
    assert!(s["error"].as_str().unwrap().contains("gave up: 2 attempts"), "{s}");
    assert_eq!(r.json["complete"], false);
    assert!(r.json["stopped_reason"].as_str().unwrap().contains("no reply from: clob_spread"));
    // The rest still ran.
    assert_eq!(ep(&r, "clob_book_unknown_token")["status"], 404);
    assert_eq!(v.log().len(), 12);
}

#[test]
fn a_cap_of_3_stops_early_and_says_so() {
    let v = Venue::start();
    let r = probe(&v, &["--max-requests", "3", "--min-spacing", "0.05"], None);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(v.log().len(), 3);
    assert_eq!(r.raw.len(), 3);
    let j = &r.json;
    assert_eq!(j["requests"]["used"], 3);
    assert_eq!(j["requests"]["cap"], 3);
    assert_eq!(j["requests"]["cap_reached"], true);
    assert_eq!(j["complete"], false);
    assert_eq!(j["exit_code"], 1);
    assert!(j["stopped_reason"].as_str().unwrap().contains("request cap reached"), "{}", j["stopped_reason"]);
    // Every endpoint is listed; the ones after the cap are marked, not silently missing.
    assert_eq!(names(&r), ALL);
    assert_eq!(ep(&r, "clob_books")["outcome"], "answered");
    for name in &ALL[3..] {
        let e = ep(&r, name);
        assert_eq!(e["outcome"], "not_probed", "{name}");
        assert_eq!(e["not_probed_reason"], "request cap of 3 reached");
    }
    assert!(r.md.contains("Stopped early: the request cap (3) was reached"));
    assert!(r.md.contains("**incomplete**"));
    assert!(r.stderr.contains("request cap reached"));
}

#[test]
fn the_cap_also_cuts_retries_short() {
    let v = Venue::start();
    v.fault("/book", Fault::Status(503));
    let r = probe(&v, &["--max-requests", "2", "--min-spacing", "0.05"], None);
    assert_eq!(r.code, 1);
    assert_eq!(v.log().len(), 2, "gamma + one /book try; the retry would pass the cap");
    let b = ep(&r, "clob_book");
    assert_eq!(b["cap_limited"], true);
    assert_eq!(b["status"], 503);
    assert_eq!(b["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(r.json["requests"]["cap_reached"], true);
}

fn no_reports(dir: &Path) -> bool {
    !dir.join(format!("{REPORT}.json")).exists()
}

#[test]
fn bad_arguments_exit_2_and_write_nothing() {
    let v = Venue::start();
    for args in [
        vec!["--max-requests", "0"],
        vec!["--max-requests", "201"],
        vec!["--max-requests", "many"],
        vec!["--min-spacing", "-1"],
        vec!["--min-spacing", "61"],
        vec!["--gamma-url", "gamma-api.polymarket.com"],
        vec!["--clob-url", "http://h/x?y=1"],
        vec!["--slug", "../etc/passwd"],
        vec!["--timeout", "0"],
        vec!["--bogus"],
        vec!["extra"],
    ] {
        let r = probe(&v, &args, None);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.starts_with("pm-probe: "), "{args:?}: {}", r.stderr);
        assert!(no_reports(&r.dir), "{args:?}");
    }
    assert_eq!(v.log().len(), 0, "no request was made");
    let h = run_with_timeout(
        {
            let mut c = tool("pm-probe");
            c.arg("--help");
            c
        },
        None,
        Duration::from_secs(10),
    );
    assert_eq!(h.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&h.stdout).contains("--max-requests N"));
    let ver = run_with_timeout(
        {
            let mut c = tool("pm-probe");
            c.arg("-V");
            c
        },
        None,
        Duration::from_secs(10),
    );
    assert!(String::from_utf8_lossy(&ver.stdout).starts_with("pm-probe "));
}

/// The JSON report reads back into its one Rust type, and both files are renderings of that value
/// alone: re-rendering the read-back report gives the written bytes (the Markdown included), for a
/// complete run and for one the cap cut short (not_probed endpoints, a stopped reason).
#[test]
fn both_reports_are_renderings_of_the_typed_report() {
    use pm_archive::polymarket::probe::{render_json, render_md, Outcome, Report};
    let v = Venue::start();
    for args in [&["--min-spacing", "0.05"][..], &["--max-requests", "3", "--min-spacing", "0.05"][..]] {
        let r = probe(&v, args, None);
        let bytes = std::fs::read(r.dir.join(format!("{REPORT}.json"))).unwrap();
        let report: Report = serde_json::from_slice(&bytes).expect("the report reads back into probe::Report");
        assert_eq!(render_json::render(&report).unwrap(), bytes, "{args:?}");
        assert_eq!(render_md::render(&report), r.md, "{args:?}");
        assert_eq!(report.endpoints.len(), ALL.len());
        let not_probed = report.endpoints.iter().filter(|e| e.outcome == Outcome::NotProbed).count();
        assert_eq!((report.complete, not_probed == 0), (r.code == 0, r.code == 0), "{args:?}");
    }
}
