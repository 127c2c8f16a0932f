//! Both venues in one chain (issue 17): `pipelines/collect.sh` with `PMARCHIVE_KALSHI=1` against one
//! loopback venue (127.0.0.1) that serves Polymarket (Gamma, CLOB `/books`, Data API `/v2/trades`) and
//! Kalshi (`/trade-api/v2`: KXBTC15M markets, order books, trades) on one simulated clock, through
//! several 15-minute windows. Every Kalshi reply is archived exactly once, the run manifest keeps the
//! venues' streams apart, one `pm-normalize` run makes rows for both venues and `--check`s them,
//! and the cross-venue DuckDB query of docs/KALSHI.md (the ```sql crossvenue block) answers with the
//! spread of both venues' markets for the same windows. LOOPBACK only: nothing here is live data.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::dataapi::DataApi;
use common::kalshi::KalshiVenue;
use common::venue::Venue;
use common::{run_with_timeout, tempdir, tool};
use serde_json::value::RawValue;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every line of every sealed file of one venue's stream (each file `gzip -t` clean).
fn lines(root: &Path, venue: &str, stream: &str) -> Vec<String> {
    let mut all = Vec::new();
    for f in common::files_under(&root.join(format!("venue={venue}/stream={stream}")), ".jsonl.gz") {
        assert!(Command::new("gzip").arg("-t").arg(&f).status().unwrap().success(), "gzip -t {f:?}");
        let out = Command::new("zcat").arg(&f).output().unwrap();
        all.extend(String::from_utf8(out.stdout).unwrap().lines().map(str::to_string));
    }
    all
}

/// (status, body) of every http line of `endpoint`, the body as archived.
fn archived(lines: &[String], endpoint: &str) -> HashMap<(u16, String), usize> {
    let mut m = HashMap::new();
    for l in lines {
        let f: HashMap<String, Box<RawValue>> = serde_json::from_str(l).unwrap();
        let get = |k: &str| f.get(k).map(|v| v.get().to_string());
        if get("kind").as_deref() != Some("\"http\"") || get("endpoint") != Some(format!("\"{endpoint}\"")) {
            continue;
        }
        let Some(status) = get("status").and_then(|s| s.parse::<u16>().ok()) else { continue };
        let body = match (f.get("body"), f.get("body_text")) {
            (Some(b), _) => b.get().to_string(),
            (None, Some(t)) => serde_json::from_str::<String>(t.get()).unwrap(),
            _ => String::new(),
        };
        *m.entry((status, body)).or_insert(0) += 1;
    }
    m
}

/// (status, body) of every reply the venue served on a path that `keep` accepts.
fn served(v: &Venue, keep: impl Fn(&str) -> bool) -> HashMap<(u16, String), usize> {
    let mut m = HashMap::new();
    for s in v.log().into_iter().filter(|s| keep(&s.path)) {
        if let Some(status) = s.status {
            *m.entry((status, String::from_utf8(s.response).unwrap())).or_insert(0) += 1;
        }
    }
    m
}

/// The ```sql crossvenue block of docs/KALSHI.md.
fn crossvenue_sql() -> String {
    let doc = std::fs::read_to_string(repo().join("docs/KALSHI.md")).unwrap();
    let start = doc.find("```sql crossvenue\n").expect("docs/KALSHI.md has a ```sql crossvenue block");
    let body = &doc[start + "```sql crossvenue\n".len()..];
    body[..body.find("```").unwrap()].to_string()
}

const RUN_SQL: &str = r#"
import duckdb, json, sys
con = duckdb.connect()
rows = []
for stmt in [s for s in open(sys.argv[1]).read().split(";\n") if s.strip()]:
    cur = con.execute(stmt)
    if cur.description:
        rows = [[None if x is None else str(x) for x in r] for r in cur.fetchall()]
print(json.dumps(rows))
"#;

#[test]
fn both_venues_in_one_chain_archive_normalize_and_answer_the_cross_venue_query() {
    let v = Venue::start();
    // 30 simulated seconds per real second: a 15-minute window every 30 s of the test.
    let start = time::macros::datetime!(2026-08-22 16:13:30 UTC);
    let clock = v.simulate_clock(start, 30.0);
    let api = DataApi::mount_on(&v);
    api.simulate_clock(start, 30.0);
    let kx = KalshiVenue::mount_on(&v);
    kx.set_result_after(Duration::from_secs(60));
    v.resolve_after(Duration::from_secs(60));
    let dir = tempdir("crossvenue");
    let root = dir.join("archive");
    let kalshi_url = kx.url();
    let mut c = Command::new(repo().join("pipelines/collect.sh"));
    c.env_remove("PMARCHIVE_RUN_ID");
    for (k, val) in [
        ("PMARCHIVE_HOST", "testhost"),
        ("PMARCHIVE_CLOCK", clock.as_str()),
        ("PMARCHIVE_ROOT", root.to_str().unwrap()),
        ("PMARCHIVE_BIN_DIR", common::bin("pm-markets").parent().unwrap().to_str().unwrap()),
        ("PMARCHIVE_GAMMA_URL", &v.url()),
        ("PMARCHIVE_CLOB_URL", &v.url()),
        ("PMARCHIVE_DATA_URL", &v.url()),
        ("PMARCHIVE_WS", "0"),
        ("PMARCHIVE_FAMILIES", "15m"),
        ("PMARCHIVE_AHEAD", "1"),
        ("PMARCHIVE_DISCOVERY_EVERY", "1"),
        ("PMARCHIVE_KEEP_AFTER", "120"),
        ("PMARCHIVE_INTERVAL", "0.5"),
        ("PMARCHIVE_LEAD", "30"),
        ("PMARCHIVE_GRACE", "30"),
        ("PMARCHIVE_TRADES_INTERVAL", "1"),
        ("PMARCHIVE_TRADES_SETTLE", "30"),
        ("PMARCHIVE_FLUSH_SECS", "1"),
        ("PMARCHIVE_ROTATE_SECS", "600"),
        ("PMARCHIVE_MANIFEST_REFRESH", "2"),
        ("PMARCHIVE_KALSHI", "1"),
        ("PMARCHIVE_KALSHI_URL", &kalshi_url),
        ("PMARCHIVE_KALSHI_INTERVAL", "0.5"),
        ("PMARCHIVE_KALSHI_TRADES_INTERVAL", "1"),
        ("PMARCHIVE_DURATION", "75"),
    ] {
        c.env(k, val);
    }
    let o = run_with_timeout(c, None, Duration::from_secs(300));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("started kalshi-books") && stderr.contains("started kalshi-trades"), "{stderr}");

    // Every Kalshi reply the venue served is archived exactly once, in its stream.
    let (books, trades, disc) =
        (lines(&root, "kalshi", "books"), lines(&root, "kalshi", "trades"), lines(&root, "kalshi", "discovery"));
    let is_book = |p: &str| p.starts_with("/trade-api/v2/markets/") && p.ends_with("/orderbook");
    let is_trades = |p: &str| p == "/trade-api/v2/markets/trades";
    let is_disc = |p: &str| p.starts_with("/trade-api/v2/markets") && !is_book(p) && !is_trades(p);
    assert_eq!(archived(&books, "kalshi-books"), served(&v, is_book), "kalshi order-book replies");
    assert_eq!(archived(&trades, "kalshi-trades"), served(&v, is_trades), "kalshi trade pages");
    assert_eq!(archived(&disc, "kalshi-markets"), served(&v, is_disc), "kalshi discovery replies");

    // Several windows: order books of at least three KXBTC15M tickers, trades of at least two.
    let tickers = |ls: &[String], key: &str| -> BTreeSet<String> {
        ls.iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|l| l["kind"] == "http" && l["status"] == 200)
            .filter_map(|l| l["ctx"][key].as_str().map(str::to_string))
            .collect()
    };
    let book_tickers = tickers(&books, "ticker");
    assert!(book_tickers.len() >= 3, "{book_tickers:?}");
    assert!(book_tickers.iter().all(|t| t.starts_with("KXBTC15M-")), "{book_tickers:?}");
    let mut printed = BTreeSet::new();
    for l in trades.iter().map(|l| serde_json::from_str::<Value>(l).unwrap()) {
        for t in l["body"]["trades"].as_array().into_iter().flatten() {
            printed.insert(t["ticker"].as_str().unwrap().to_string());
        }
    }
    assert!(printed.len() >= 2, "trades of several windows: {printed:?}");
    // Kalshi's records (markets and at least one resolution) are archived.
    let kx_markets = lines(&root, "kalshi", "markets");
    assert!(kx_markets.iter().any(|l| l.contains("\"schema\":\"pmarchive.kalshi_market/1\"")));
    assert!(
        kx_markets.iter().any(|l| l.contains("\"schema\":\"pmarchive.kalshi_resolution/1\"")),
        "a Kalshi resolution record"
    );

    // The run manifest keeps the venues apart, and the archive verifies.
    let manifests = common::files_under(&root.join("manifests"), ".json");
    let m: Value = serde_json::from_slice(&std::fs::read(&manifests[0]).unwrap()).unwrap();
    let keys: BTreeSet<&str> = m["streams"].as_object().unwrap().keys().map(String::as_str).collect();
    for k in
        ["books", "gamma", "markets", "trades", "kalshi/books", "kalshi/discovery", "kalshi/markets", "kalshi/trades"]
    {
        assert!(keys.contains(k), "manifest streams {keys:?} lack {k}");
    }
    let o = run_with_timeout(
        {
            let mut c = tool("manifest");
            c.arg("verify").arg(&root);
            c
        },
        None,
        Duration::from_secs(120),
    );
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));

    // One pm-normalize run over both venues' books, joined to both venues' market records.
    let norm = dir.join("normalized");
    std::fs::create_dir_all(&norm).unwrap();
    let mut c = tool("pm-normalize");
    c.arg("-o").arg(norm.join("rows.jsonl"));
    for venue in ["polymarket", "kalshi"] {
        for f in common::files_under(&root.join(format!("venue={venue}/stream=markets")), ".jsonl.gz") {
            c.arg("--markets").arg(f);
        }
    }
    c.args(common::files_under(&root.join("venue=polymarket/stream=books"), ".jsonl.gz"));
    c.args(common::files_under(&root.join("venue=kalshi/stream=books"), ".jsonl.gz"));
    let o = run_with_timeout(c, None, Duration::from_secs(120));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let mut c = tool("pm-normalize");
    c.arg("--check").arg(norm.join("rows.jsonl"));
    let o = run_with_timeout(c, None, Duration::from_secs(120));
    assert_eq!(o.status.code(), Some(0), "--check: {}", String::from_utf8_lossy(&o.stdout));
    let rows: Vec<Value> = std::fs::read_to_string(norm.join("rows.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &Value| r["record"] == "book")
        .collect();
    let kalshi_rows: Vec<&Value> = rows.iter().filter(|r| r["venue"] == "kalshi").collect();
    assert!(rows.iter().any(|r| r["venue"] == "polymarket"), "Polymarket rows");
    assert!(!kalshi_rows.is_empty(), "Kalshi rows");
    assert!(kalshi_rows.iter().all(|r| r["slug"] == r["market"] && r["outcome"] == "yes" && r["hash"].is_null()));

    // The documented cross-venue query, in DuckDB, from the directory that holds archive/ and normalized/.
    let Some(py) = common::python("duckdb") else { return };
    let sql = dir.join("crossvenue.sql");
    std::fs::write(&sql, crossvenue_sql()).unwrap();
    let mut c = Command::new(py);
    c.args(["-c", RUN_SQL]).arg(&sql).current_dir(&dir);
    let o = run_with_timeout(c, None, Duration::from_secs(180));
    assert!(o.status.success(), "duckdb: {}", String::from_utf8_lossy(&o.stderr));
    let answer: Vec<Vec<Option<String>>> = serde_json::from_slice(&o.stdout).unwrap();
    // window_start, polymarket spread, kalshi spread, polymarket rows, kalshi rows.
    assert!(answer.len() >= 2, "two or more windows seen by both venues: {answer:?}");
    for r in &answer {
        assert!(r[1].is_some() && r[2].is_some(), "both spreads: {r:?}");
        let kx: f64 = r[2].as_deref().unwrap().parse().unwrap();
        assert!(kx > 0.0 && kx < 1.0, "a Kalshi spread in dollars: {r:?}");
    }
}

/// Each venue can be switched off: Kalshi alone writes only venue=kalshi streams; no venue at all is a
/// configuration error (exit 2, nothing started).
#[test]
fn kalshi_alone_and_no_venue_at_all() {
    let v = Venue::start();
    let clock = v.simulate_clock(time::macros::datetime!(2026-08-22 16:14:00 UTC), 30.0);
    let kx = KalshiVenue::mount_on(&v);
    let dir = tempdir("kalshi-alone");
    let root = dir.join("archive");
    let chain = |extra: &[(&str, &str)]| {
        let mut c = Command::new(repo().join("pipelines/collect.sh"));
        c.env_remove("PMARCHIVE_RUN_ID");
        c.env("PMARCHIVE_HOST", "testhost").env("PMARCHIVE_CLOCK", &clock).env("PMARCHIVE_ROOT", &root);
        c.env("PMARCHIVE_BIN_DIR", common::bin("kalshi-books").parent().unwrap());
        c.env("PMARCHIVE_GAMMA_URL", "http://127.0.0.1:9").env("PMARCHIVE_CLOB_URL", "http://127.0.0.1:9");
        c.env("PMARCHIVE_KALSHI_URL", kx.url()).env("PMARCHIVE_DISCOVERY_EVERY", "1");
        c.env("PMARCHIVE_KALSHI_INTERVAL", "0.5").env("PMARCHIVE_FLUSH_SECS", "1");
        for (k, val) in extra {
            c.env(k, val);
        }
        run_with_timeout(c, None, Duration::from_secs(120))
    };
    let o = chain(&[("PMARCHIVE_POLYMARKET", "0"), ("PMARCHIVE_KALSHI", "1"), ("PMARCHIVE_DURATION", "8")]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("started pm-") && stderr.contains("started kalshi-books"), "{stderr}");
    let venues: BTreeSet<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("venue="))
        .collect();
    assert_eq!(venues, BTreeSet::from(["venue=kalshi".to_string()]));
    assert!(!lines(&root, "kalshi", "books").is_empty());
    let o = chain(&[("PMARCHIVE_POLYMARKET", "0"), ("PMARCHIVE_KALSHI", "0")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no venue is on"), "{}", String::from_utf8_lossy(&o.stderr));
}
