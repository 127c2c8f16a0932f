//! `manifest build | verify | status` over a small archive written by the test itself.
//!
//! All archive data here is DERIVED/SYNTHETIC: raw envelope lines built with serde_json following
//! docs/DATA_CONTRACT.md (pmarchive.raw/1), written as multi-member gzip in the hive layout, with
//! pmarchive.sealed/1 records computed from the files, as jsonl-rotate would print them. No venue
//! data and no network are involved.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{run_with_timeout, tempdir, tool};
use flate2::write::GzEncoder;
use serde_json::{json, Value};

const RUN: &str = "20261124T150000Z-42-beef";
const HOST: &str = "testhost";
const LIMIT: Duration = Duration::from_secs(60);
/// The instant the synthetic archive is "fresh" at.
const NOW: &str = "2026-11-24T16:30:00Z";

fn books_dir(hour: &str) -> String {
    format!("venue=polymarket/stream=books/date=2026-11-24/hour={hour}")
}

/// A raw envelope line (synthetic) as pm-books / pm-markets write it.
fn env(tool: &str, kind: &str, seq: u64, at: &str, extra: Value) -> String {
    let mut v = json!({
        "schema": "pmarchive.raw/1", "venue": "polymarket", "tool": tool, "collector_version": "0.1.0",
        "run_id": RUN, "host": HOST, "seq": seq, "kind": kind, "collected_at_utc": at,
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::to_string(&v).unwrap()
}

fn http(seq: u64, at: &str, endpoint: &str, status: Option<u16>, attempt: u32) -> String {
    let mut extra = json!({"endpoint": endpoint, "sent_at_utc": at, "elapsed_ms": 12.5, "attempt": attempt,
        "request": {"method": "POST", "url": "http://127.0.0.1:9/books", "params": {}}, "ctx": {"slot": seq}});
    match status {
        Some(s) => {
            extra["status"] = json!(s);
            extra["body_kind"] = json!("json");
            extra["body"] = json!([{"market": "0xabc", "bids": [], "asks": []}]);
        }
        None => extra["error"] = json!("network: connection reset"),
    }
    let tool = if endpoint == "gamma" { "pm-markets" } else { "pm-books" };
    env(tool, "http", seq, at, extra)
}

fn track(seq: u64, at: &str, action: &str, slug: &str, family: &str, reason: &str) -> String {
    env(
        "pm-books",
        "track",
        seq,
        at,
        json!({"ctx": {"action": action, "reason": reason, "slug": slug, "condition_id": "0xc0nd",
        "family": family, "tokens": [{"token_id": "1", "outcome": "Up"}], "window_start_utc": "2026-11-24T15:50:00Z",
        "window_end_utc": "2026-11-24T16:25:00Z"}}),
    )
}

fn gap(seq: u64, at: &str, gap: &str, count: Option<u64>) -> String {
    let mut ctx = json!({"gap": gap, "slot": seq, "due_at_utc": at});
    if let Some(c) = count {
        ctx["count"] = json!(c);
    }
    env("pm-books", "gap", seq, at, json!({"error": format!("{gap} (synthetic)"), "ctx": ctx}))
}

/// Multi-member gzip: one member per group of lines (as jsonl-rotate flushes).
fn gzip_members(groups: &[Vec<String>]) -> Vec<u8> {
    let mut out = Vec::new();
    for g in groups {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for l in g {
            e.write_all(l.as_bytes()).unwrap();
            e.write_all(b"\n").unwrap();
        }
        out.extend(e.finish().unwrap());
    }
    out
}

fn sha256(path: &Path) -> (String, u64) {
    pm_archive::util::sha256_file(path).unwrap()
}

/// The sealed-file record jsonl-rotate prints for a file (derived from the file).
#[allow(clippy::too_many_arguments)]
fn sealed(
    root: &Path,
    rel: &str,
    stream: &str,
    n: u64,
    rows: u64,
    first: &str,
    last: &str,
    tail: Option<&str>,
) -> String {
    let (sha, bytes) = sha256(&root.join(rel));
    let tail_bytes = tail.map_or(0, |t| std::fs::metadata(root.join(t)).unwrap().len());
    serde_json::to_string(&json!({
        "record": "sealed_file", "schema": "pmarchive.sealed/1", "path": rel, "venue": "polymarket", "stream": stream,
        "host": HOST, "run_id": RUN, "n": n, "rows": rows, "bytes": bytes, "sha256": sha,
        "first_collected_at_utc": first, "last_collected_at_utc": last, "opened_at_utc": first, "sealed_at_utc": last,
        "recovered": tail.is_some(), "tail_path": tail, "tail_bytes": tail_bytes, "writer_version": "0.1.0",
    }))
    .unwrap()
}

struct Archive {
    root: PathBuf,
    /// Sealed records, one line each, as jsonl-rotate would print them.
    records: Vec<String>,
    books0: String,
    books1: String,
    gamma0: String,
    tail: String,
}

fn t(hms: &str) -> String {
    format!("2026-11-24T{hms}.000000Z")
}

/// Writes the synthetic archive: two sealed books files (hours 15 and 16), one recovered gamma file
/// with its unreadable tail, and an open books `.partial` whose last gzip member is truncated.
fn make_archive(tag: &str) -> Archive {
    let root = tempdir(tag);
    for d in [books_dir("15"), books_dir("16"), "venue=polymarket/stream=gamma/date=2026-11-24/hour=16".into()] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let books0 = format!("{}/{HOST}-{RUN}-0.jsonl.gz", books_dir("15"));
    let g1 = vec![
        track(0, &t("15:20:00"), "start", "btc-updown-15m-s2", "15m", "listed"),
        track(1, &t("15:50:00"), "start", "btc-updown-5m-s1", "5m", "listed"),
        http(2, &t("15:50:01"), "books", Some(200), 1),
        http(3, &t("15:50:02"), "books", Some(429), 1),
    ];
    let g2 = vec![
        http(4, &t("15:50:04"), "books", None, 2),
        http(5, &t("15:50:06"), "books", Some(200), 3),
        gap(6, &t("15:50:07"), "missed_slots", Some(3)),
        gap(7, &t("15:50:08"), "missing_token", None),
    ];
    std::fs::write(root.join(&books0), gzip_members(&[g1, g2])).unwrap();

    let books1 = format!("{}/{HOST}-{RUN}-1.jsonl.gz", books_dir("16"));
    let g = [
        http(8, &t("16:20:00"), "books", Some(200), 1),
        http(9, &t("16:20:01"), "books", Some(200), 1),
        gap(10, &t("16:21:00"), "missed_slots", Some(2)),
        "this is not json {".to_string(),
        track(11, &t("16:25:00"), "stop", "btc-updown-5m-s1", "5m", "window_ended"),
    ];
    std::fs::write(root.join(&books1), gzip_members(&[g[..2].to_vec(), g[2..].to_vec()])).unwrap();

    let gamma0 = format!("venue=polymarket/stream=gamma/date=2026-11-24/hour=16/{HOST}-{RUN}-0.jsonl.gz");
    let tail = format!("{gamma0}.unreadable-tail");
    std::fs::write(
        root.join(&gamma0),
        gzip_members(&[vec![
            http(0, &t("16:28:00"), "gamma", Some(200), 1),
            http(1, &t("16:28:01"), "gamma", Some(404), 1),
        ]]),
    )
    .unwrap();
    std::fs::write(root.join(&tail), b"\x1f\x8b\x08garbage").unwrap();

    // The open file: one complete member, then a member cut in half (a writer mid-flush).
    let partial = root.join(format!("{}/{HOST}-{RUN}-2.jsonl.gz.partial", books_dir("16")));
    let mut bytes = gzip_members(&[vec![
        http(12, &t("16:29:50"), "books", Some(200), 1),
        http(13, &t("16:29:55"), "books", None, 1),
    ]]);
    let cut = gzip_members(&[vec![http(14, &t("16:29:58"), "books", Some(200), 1)]]);
    bytes.extend_from_slice(&cut[..cut.len() / 2]);
    std::fs::write(&partial, bytes).unwrap();

    let records = vec![
        sealed(&root, &books0, "books", 0, 8, &t("15:20:00"), &t("15:50:08"), None),
        sealed(&root, &gamma0, "gamma", 0, 2, &t("16:28:00"), &t("16:28:01"), Some(&tail)),
        sealed(&root, &books1, "books", 1, 5, &t("16:20:00"), &t("16:25:00"), None),
    ];
    Archive { root, records, books0, books1, gamma0, tail }
}

fn manifest_path(root: &Path) -> PathBuf {
    root.join("manifests").join(format!("run-{HOST}-{RUN}.json"))
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn build_cmd(root: &Path, extra: &[&str]) -> Command {
    let mut c = tool("manifest");
    c.args(["build", "--root", root.to_str().unwrap(), "--run-id", RUN, "--host", HOST]).args(extra);
    c
}

/// Runs `manifest build` over all the archive's records; returns (exit code, stderr).
fn build(a: &Archive, extra: &[&str]) -> (i32, String) {
    let input = a.records.join("\n") + "\n";
    let out = run_with_timeout(build_cmd(&a.root, extra), Some(input.as_bytes()), LIMIT);
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn run_json(args: &[&str]) -> (i32, Value, String) {
    let mut c = tool("manifest");
    c.args(args);
    let out = run_with_timeout(c, None, LIMIT);
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap(), doc, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn verify(root: &Path) -> (i32, Value) {
    let (code, doc, err) = run_json(&["verify", root.to_str().unwrap(), "--json"]);
    assert!(doc.is_object(), "verify printed no JSON: {err}");
    (code, doc)
}

fn file_status<'a>(doc: &'a Value, path: &str) -> &'a str {
    doc["files"].as_array().unwrap().iter().find(|f| f["path"] == path).unwrap_or_else(|| panic!("{path} not in {doc}"))
        ["status"]
        .as_str()
        .unwrap()
}

#[test]
fn build_writes_tallies_files_and_drops_secrets() {
    let a = make_archive("mf-build");
    let cfg = a.root.join("collector.env");
    std::fs::write(
        &cfg,
        "# collector settings (synthetic)\nPMARCHIVE_ROOT=/srv/pm-archive\nexport POLL_INTERVAL_SECS=1\n\
         RCLONE_CONFIG_PASS=supersecret\nGDRIVE_TOKEN=tok-value-123\nAPI_KEY=sk9f8a7b6c5d4e3f2a1b0c\n",
    )
    .unwrap();
    let (code, err) = build(&a, &["--config", cfg.to_str().unwrap(), "--label", "synthetic test"]);
    assert_eq!(code, 0, "{err}");
    let m = read_json(&manifest_path(&a.root));
    assert_eq!(m["schema"], "pmarchive.manifest/1");
    assert_eq!(m["status"], "complete");
    assert_eq!(m["run_id"], RUN);
    assert_eq!(m["host"], HOST);
    assert_eq!(m["label"], "synthetic test");
    assert!(m["manifest_version"].as_u64().unwrap() >= 5, "initial + 3 records + final");
    assert!(m["finished_at_utc"].is_string());

    // Files: listed per stream with the sealed sha256, checked ok.
    let books = m["streams"]["books"]["files"].as_array().unwrap();
    assert_eq!(books.len(), 2);
    let b0 = books.iter().find(|f| f["path"] == a.books0.as_str()).unwrap();
    assert_eq!(b0["sha256"], sha256(&a.root.join(&a.books0)).0);
    assert_eq!(b0["sha256_check"], "ok");
    assert_eq!(b0["rows"], 8);
    assert_eq!(b0["lines_read"], 8);
    let b1 = books.iter().find(|f| f["path"] == a.books1.as_str()).unwrap();
    assert_eq!(b1["unparseable_lines"], 1);
    let g = &m["streams"]["gamma"]["files"][0];
    assert_eq!(g["recovered"], true);
    assert_eq!(g["tail_path"], a.tail.as_str());
    assert_eq!(g["tail_sha256"], sha256(&a.root.join(&a.tail)).0);
    assert_eq!(m["totals"]["files"], 3);
    assert_eq!(m["totals"]["rows"], 15);
    assert_eq!(m["totals"]["unparseable_lines"], 1);
    assert_eq!(m["totals"]["hash_mismatches"], 0);
    assert_eq!(m["totals"]["first_collected_at_utc"], t("15:20:00"));
    assert_eq!(m["totals"]["last_collected_at_utc"], t("16:28:01"));

    // Tallies.
    let ta = &m["tallies"];
    assert_eq!(ta["rows_by_stream_kind"], json!({"books": {"http": 6, "gap": 3, "track": 3}, "gamma": {"http": 2}}));
    assert_eq!(
        ta["http"]["by_endpoint_status"],
        json!({"books": {"200": 4, "429": 1, "none": 1}, "gamma": {"200": 1, "404": 1}})
    );
    assert_eq!(ta["http"]["attempts"], 8);
    assert_eq!(ta["http"]["retries"], 2);
    assert_eq!(ta["http"]["network_errors"], 1);
    assert_eq!(ta["http"]["rate_limited_429"], 1);
    assert_eq!(ta["http"]["errors"], 3);
    assert_eq!(ta["gaps"]["by_type"], json!({"missed_slots": 2, "missing_token": 1}));
    assert_eq!(ta["gaps"]["missed_slots_total"], 5);
    assert_eq!(ta["markets_tracked"], 2);
    let s1 = ta["markets"].as_array().unwrap().iter().find(|x| x["slug"] == "btc-updown-5m-s1").unwrap();
    assert_eq!(s1["family"], "5m");
    assert_eq!(s1["first_start_at_utc"], t("15:50:00"));
    assert_eq!(s1["first_start_reason"], "listed");
    assert_eq!(s1["last_stop_at_utc"], t("16:25:00"));
    assert_eq!(s1["last_stop_reason"], "window_ended");
    let s2 = ta["markets"].as_array().unwrap().iter().find(|x| x["slug"] == "btc-updown-15m-s2").unwrap();
    assert_eq!(s2["last_action"], "start");
    assert!(s2["last_stop_at_utc"].is_null());
    assert_eq!(ta["tools"], json!({"pm-books": 12, "pm-markets": 2}));
    assert_eq!(ta["collector_versions"], json!({"0.1.0": 14}));
    assert_eq!(m["versions"]["writers"], json!(["0.1.0"]));

    // Config: settings kept, secrets dropped (by name only; values never written).
    let c = &m["config"][0];
    assert_eq!(c["entries"], json!({"PMARCHIVE_ROOT": "/srv/pm-archive", "POLL_INTERVAL_SECS": "1"}));
    assert_eq!(c["dropped_keys"], json!(["RCLONE_CONFIG_PASS", "GDRIVE_TOKEN", "API_KEY"]));
    let text = std::fs::read_to_string(manifest_path(&a.root)).unwrap();
    for secret in ["supersecret", "tok-value-123", "sk9f8a7b6c5d4e3f2a1b0c"] {
        assert!(!text.contains(secret), "{secret} leaked into the manifest");
    }
    // Unparseable line reported with file and line number.
    assert!(m["problems"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["problem"] == "unparseable_line" && p["line"] == 4 && p["path"] == a.books1.as_str()));
    // The atomic write leaves exactly the manifest, no temp file.
    let names: Vec<String> = std::fs::read_dir(a.root.join("manifests"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![format!("run-{HOST}-{RUN}.json")]);
}

#[test]
fn build_reports_hash_mismatch_and_bad_input() {
    let a = make_archive("mf-mismatch");
    let mut rec: Value = serde_json::from_str(&a.records[0]).unwrap();
    rec["sha256"] = json!("0".repeat(64));
    let input =
        format!("{}\nnot a record\n{{\"record\":\"sealed_file\",\"path\":\"../etc/passwd\",\"sha256\":\"x\"}}\n", rec);
    let out = run_with_timeout(build_cmd(&a.root, &[]), Some(input.as_bytes()), LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("sha256_mismatch"), "{err}");
    let m = read_json(&manifest_path(&a.root));
    assert_eq!(m["streams"]["books"]["files"][0]["sha256_check"], "mismatch");
    assert_eq!(m["streams"]["books"]["files"][0]["sha256_actual"], sha256(&a.root.join(&a.books0)).0);
    assert_eq!(m["totals"]["hash_mismatches"], 1);
    assert_eq!(m["totals"]["bad_input_lines"], 2);
    assert_eq!(m["totals"]["files"], 1, "the unsafe path is not listed");
    // verify then reports the file as changed against the sealed sha256.
    assert_eq!(verify(&a.root).0, 1);
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_build(root: &Path, extra: &[&str]) -> Child {
    let mut c = build_cmd(root, extra);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c.spawn().unwrap()
}

fn manifest_now(root: &Path) -> Option<Value> {
    std::fs::read(manifest_path(root)).ok().and_then(|b| serde_json::from_slice(&b).ok())
}

#[test]
fn build_is_running_until_eof_then_complete() {
    let a = make_archive("mf-running");
    let mut child = spawn_build(&a.root, &["--refresh", "0.1"]);
    let mut stdin = child.stdin.take().unwrap();
    // Written at start, before any input.
    wait_for("the first manifest", || manifest_now(&a.root).is_some_and(|m| m["status"] == "running"));
    writeln!(stdin, "{}", a.records[0]).unwrap();
    stdin.flush().unwrap();
    wait_for("the first file", || {
        manifest_now(&a.root).is_some_and(|m| m["totals"]["files"] == 1 && m["status"] == "running")
    });
    // Rewritten on the refresh timer without new input.
    let v = manifest_now(&a.root).unwrap()["manifest_version"].as_u64().unwrap();
    wait_for("a refresh", || manifest_now(&a.root).is_some_and(|m| m["manifest_version"].as_u64().unwrap() > v));
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "nothing on stdout");
    let m = manifest_now(&a.root).unwrap();
    assert_eq!(m["status"], "complete");
    assert_eq!(m["totals"]["files"], 1);
}

#[test]
fn build_after_sigterm_drains_until_eof_or_deadline() {
    let a = make_archive("mf-term");
    let mut child = spawn_build(&a.root, &[]);
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", a.records[0]).unwrap();
    stdin.flush().unwrap();
    wait_for("the first file", || manifest_now(&a.root).is_some_and(|m| m["totals"]["files"] == 1));
    let st = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    // A record sealed after the signal (a rotator finishing) is still listed.
    std::thread::sleep(std::time::Duration::from_millis(300));
    writeln!(stdin, "{}", a.records[1]).unwrap();
    stdin.flush().unwrap();
    wait_for("the second file", || manifest_now(&a.root).is_some_and(|m| m["totals"]["files"] == 2));
    // With the input still open, the drain deadline (10 s) ends the run as `stopped`.
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    drop(stdin);
    let m = manifest_now(&a.root).unwrap();
    assert_eq!(m["status"], "stopped");
    assert_eq!(m["totals"]["files"], 2);
}

#[test]
fn verify_ok_then_changed_missing_unlisted() {
    let a = make_archive("mf-verify");
    assert_eq!(build(&a, &[]).0, 0);
    let (code, doc) = verify(&a.root);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["summary"]["files"]["ok"], 3);
    assert_eq!(doc["summary"]["tails"]["ok"], 1);
    assert_eq!(doc["partials_ignored"], 1, "the .partial is ignored");
    assert_eq!(file_status(&doc, &a.tail), "ok");

    // Flip one byte: changed (same size, other sha256).
    let p = a.root.join(&a.books1);
    let mut bytes = std::fs::read(&p).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    std::fs::write(&p, bytes).unwrap();
    let (code, doc) = verify(&a.root);
    assert_eq!(code, 1);
    assert_eq!(file_status(&doc, &a.books1), "changed");
    assert_eq!(doc["summary"]["files"]["ok"], 2);

    // Delete one: missing.
    std::fs::remove_file(a.root.join(&a.books0)).unwrap();
    let (code, doc) = verify(&a.root);
    assert_eq!(code, 1);
    assert_eq!(file_status(&doc, &a.books0), "missing");

    // An extra sealed file and an extra tail nobody lists: unlisted.
    let extra = format!("{}/{HOST}-otherrun-0.jsonl.gz", books_dir("16"));
    std::fs::write(a.root.join(&extra), gzip_members(&[vec![http(0, &t("16:00:00"), "books", Some(200), 1)]])).unwrap();
    std::fs::write(a.root.join(format!("{extra}.unreadable-tail")), b"junk").unwrap();
    let (code, doc) = verify(&a.root);
    assert_eq!(code, 1);
    assert_eq!(file_status(&doc, &extra), "unlisted");
    assert_eq!(file_status(&doc, &format!("{extra}.unreadable-tail")), "unlisted");

    // The human report names every problem.
    let mut c = tool("manifest");
    c.args(["verify", a.root.to_str().unwrap()]);
    let out = run_with_timeout(c, None, LIMIT);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["CHANGED", "MISSING", "UNLISTED", &a.books0, &a.books1, &extra, "RESULT: FAIL"] {
        assert!(text.contains(needle), "{needle} not in\n{text}");
    }
}

/// `manifest unlisted` prints a sealed record for each unlisted file (with its unlisted tail), and
/// `manifest build` over those records makes the archive verify; a bad manifest adopts nothing (exit 2).
#[test]
fn unlisted_records_adopt_files_no_manifest_lists() {
    let a = make_archive("mf-unlisted");
    // Only books0 is listed by a run manifest; books1, gamma0 and its tail were sealed after the
    // manifest stage died.
    let input = a.records[0].clone() + "\n";
    let out = run_with_timeout(build_cmd(&a.root, &[]), Some(input.as_bytes()), LIMIT);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(verify(&a.root).0, 1);

    let mut c = tool("manifest");
    c.args(["unlisted", a.root.to_str().unwrap()]);
    let out = run_with_timeout(c, None, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let recs: Vec<Value> =
        String::from_utf8(out.stdout.clone()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let paths: Vec<&str> = recs.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths, [a.books1.as_str(), a.gamma0.as_str()], "sorted, the partial and the listed file left out");
    for r in &recs {
        assert_eq!((r["record"].as_str(), r["schema"].as_str()), (Some("sealed_file"), Some("pmarchive.sealed/1")));
        assert_eq!(r["adopted"], true);
        assert_eq!((r["sha256"].clone(), r["bytes"].clone()), {
            let (s, n) = sha256(&a.root.join(r["path"].as_str().unwrap()));
            (json!(s), json!(n))
        });
    }
    assert_eq!(recs[1]["tail_path"], a.tail.as_str(), "the unlisted tail goes with its file");
    assert_eq!(recs[1]["stream"], "gamma");

    // A recovery run lists them: the archive verifies, and nothing is unlisted any more.
    let mut b = tool("manifest");
    b.args(["build", "--root", a.root.to_str().unwrap(), "--run-id", "recovery-1", "--host", HOST]);
    let built = run_with_timeout(b, Some(&out.stdout), LIMIT);
    assert_eq!(built.status.code(), Some(0), "{}", String::from_utf8_lossy(&built.stderr));
    let (code, doc) = verify(&a.root);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["summary"]["tails"]["ok"], 1);
    let m = read_json(&a.root.join("manifests").join(format!("run-{HOST}-recovery-1.json")));
    assert!(m.to_string().contains("\"adopted\":true"), "{m}");
    let mut c = tool("manifest");
    c.args(["unlisted", a.root.to_str().unwrap()]);
    let again = run_with_timeout(c, None, LIMIT);
    assert_eq!((again.status.code(), again.stdout.len()), (Some(0), 0));

    // An unreadable manifest: nothing adopted, exit 2, a message that names it.
    std::fs::write(a.root.join(&a.books1).with_extension("x.jsonl.gz"), b"x").unwrap();
    std::fs::write(a.root.join("manifests/run-bad.json"), b"{not json").unwrap();
    let mut c = tool("manifest");
    c.args(["unlisted", a.root.to_str().unwrap()]);
    let bad = run_with_timeout(c, None, LIMIT);
    assert_eq!((bad.status.code(), bad.stdout.len()), (Some(2), 0));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("run-bad.json"));
}

fn upload_line(rec: &str, path: &str, sha: &str, verified: bool, dry_run: bool) -> String {
    let v = if rec == "upload" {
        json!({"record": "upload", "schema": "pmarchive.upload/1", "at_utc": "2026-11-24T17:00:00.000000Z", "local_path": path,
            "bytes": 1, "sha256": sha, "md5": "d41d8cd98f00b204e9800998ecf8427e", "remote": "gdrive:pm-archive", "remote_path": path,
            "remote_md5": if verified { json!("d41d8cd98f00b204e9800998ecf8427e") } else { Value::Null }, "verified": verified,
            "verified_by": if verified { json!("md5") } else { Value::Null }, "rclone_exit": if verified { 0 } else { 1 }, "dry_run": dry_run})
    } else {
        json!({"record": "local_delete", "schema": "pmarchive.upload/1", "at_utc": "2026-11-24T17:01:00.000000Z", "local_path": path,
            "bytes": 1, "sha256": sha, "remote": "gdrive:pm-archive", "remote_path": path, "reason": "uploaded and verified", "dry_run": dry_run})
    };
    v.to_string()
}

#[test]
fn verify_offloaded_needs_verified_upload_and_delete_with_same_sha() {
    let a = make_archive("mf-offload");
    assert_eq!(build(&a, &[]).0, 0);
    let (sha0, _) = sha256(&a.root.join(&a.books0));
    let (sha1, _) = sha256(&a.root.join(&a.books1));
    let log = [
        upload_line("upload", &a.books0, &sha0, true, false),
        upload_line("local_delete", &a.books0, &sha0, true, false),
        // books1: the upload was not verified; a dry-run "verified" record does not count.
        upload_line("upload", &a.books1, &sha1, false, false),
        upload_line("upload", &a.books1, &sha1, true, true),
        upload_line("local_delete", &a.books1, &sha1, true, false),
        // gamma: verified upload, but the delete record names another sha256.
        upload_line("upload", &a.gamma0, &sha256(&a.root.join(&a.gamma0)).0, true, false),
        upload_line("local_delete", &a.gamma0, &"f".repeat(64), true, false),
    ];
    std::fs::write(a.root.join("manifests/uploads.jsonl"), log.join("\n") + "\n").unwrap();
    std::fs::remove_file(a.root.join(&a.books0)).unwrap();
    let (code, doc) = verify(&a.root);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(file_status(&doc, &a.books0), "offloaded");
    assert_eq!(doc["upload_log"]["dry_run_skipped"], 1);

    std::fs::remove_file(a.root.join(&a.books1)).unwrap();
    std::fs::remove_file(a.root.join(&a.gamma0)).unwrap();
    let (code, doc) = verify(&a.root);
    assert_eq!(code, 1);
    assert_eq!(file_status(&doc, &a.books1), "missing");
    assert_eq!(file_status(&doc, &a.gamma0), "missing");
    assert_eq!(file_status(&doc, &a.books0), "offloaded");
}

fn status(root: &Path, now: &str) -> (i32, Value) {
    let (code, doc, err) = run_json(&["status", root.to_str().unwrap(), "--json", "--now", now]);
    assert!(doc.is_object(), "status printed no JSON: {err}");
    (code, doc)
}

fn stream<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == name)
        .unwrap_or_else(|| panic!("{name} not in {doc}"))
}

#[test]
fn status_fresh_then_stale() {
    let a = make_archive("mf-status");
    assert_eq!(build(&a, &[]).0, 0);
    let log = upload_line("upload", &a.books0, &sha256(&a.root.join(&a.books0)).0, true, false);
    std::fs::write(a.root.join("manifests/uploads.jsonl"), log + "\n").unwrap();

    let (code, doc) = status(&a.root, NOW);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["schema"], "pmarchive.status/1");
    assert_eq!(doc["healthy"], true);
    let b = stream(&doc, "books");
    // The newest line is in the open .partial (its truncated last member is tolerated).
    assert_eq!(b["newest_collected_at_utc"], t("16:29:55"));
    assert_eq!(b["newest_source"], "partial");
    assert_eq!(b["age_s"], 5.0);
    assert_eq!(b["stale"], false);
    // Last hour = (15:30, 16:30]: everything but the 15:20 track start; the unparseable line is not a row.
    let lh = &b["last_hour"];
    assert_eq!(lh["rows"], 13);
    assert_eq!(lh["missed_slots"], 5);
    assert_eq!(lh["http_errors"], 3, "429 + two without status");
    assert_eq!(lh["http_429"], 1);
    assert_eq!(b["markets_tracked_now"], json!(["btc-updown-15m-s2"]));
    assert_eq!(b["markets_tracked_last_hour"], json!(["btc-updown-15m-s2", "btc-updown-5m-s1"]));
    let g = stream(&doc, "gamma");
    assert_eq!(g["last_hour"]["rows"], 2);
    assert_eq!(g["last_hour"]["http_errors"], 1);
    assert_eq!(g["stale"], false);
    // Archive size, disk, rate, last upload.
    let on_disk: u64 = [&a.books0, &a.books1, &a.gamma0, &a.tail]
        .iter()
        .map(|p| std::fs::metadata(a.root.join(p)).unwrap().len())
        .sum::<u64>()
        + std::fs::metadata(a.root.join(format!("{}/{HOST}-{RUN}-2.jsonl.gz.partial", books_dir("16")))).unwrap().len();
    assert_eq!(doc["archive_bytes"], on_disk);
    assert_eq!(doc["bytes_last_24h"], on_disk);
    assert!(doc["disk"]["free_bytes"].as_u64().unwrap() > 0, "{}", doc["disk"]);
    assert!(doc["disk"]["total_bytes"].as_u64().unwrap() >= doc["disk"]["free_bytes"].as_u64().unwrap());
    assert!(doc["days_left"].as_f64().unwrap() > 0.0);
    assert_eq!(doc["last_upload"]["local_path"], a.books0.as_str());
    assert_eq!(doc["last_upload"]["verified"], true);
    assert_eq!(doc["last_upload"]["rclone_exit"], 0);

    // One hour later nothing new arrived: stale, exit 1, and nothing is tracked by a live run.
    let (code, doc) = status(&a.root, "2026-11-24T17:30:00Z");
    assert_eq!(code, 1);
    assert_eq!(doc["healthy"], false);
    let b = stream(&doc, "books");
    assert_eq!(b["stale"], true);
    assert_eq!(b["last_hour"]["rows"], 0);
    assert_eq!(b["markets_tracked_now"], json!([]));
    assert!(doc["problems"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["reason"] == "stale" && p["stream"] == "polymarket/books"));

    // --stale-after decides: at NOW gamma's newest line is 119 s old, books' 5 s.
    let root = a.root.to_str().unwrap();
    let (code, doc, _) = run_json(&["status", root, "--json", "--now", NOW, "--stale-after", "60"]);
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(
        (stream(&doc, "gamma")["stale"].clone(), stream(&doc, "books")["stale"].clone()),
        (json!(true), json!(false))
    );
    // --streams: only the listed streams must be fresh; the others are shown, stale, not required.
    let (code, doc, _) =
        run_json(&["status", root, "--json", "--now", NOW, "--stale-after", "60", "--streams", "books"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(stream(&doc, "gamma")["stale"], true);
    assert_eq!(stream(&doc, "gamma")["required"], false);
    assert_eq!(stream(&doc, "books")["required"], true);
    // A required stream that has no file at all (e.g. ws_market when the capture never ran) fails.
    let (code, doc, _) = run_json(&["status", root, "--json", "--now", NOW, "--streams", "books,ws_market"]);
    assert_eq!(code, 1);
    assert!(doc["problems"].to_string().contains("ws_market: required"), "{doc:#}");
    // An empty list is the default (every stream), and a bad name is a usage error.
    let (code, doc, _) = run_json(&["status", root, "--json", "--now", NOW, "--stale-after", "60", "--streams", ""]);
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(run_json(&["status", root, "--streams", "../x"]).0, 2);
    assert_eq!(run_json(&["status", root, "--streams", "kalshi/books/x"]).0, 2);
    // VENUE/STREAM names one venue's stream; a bare name is Polymarket's. A second venue's stream
    // that has no file fails, and Polymarket's books never stand in for it.
    let (code, doc, _) =
        run_json(&["status", root, "--json", "--now", NOW, "--streams", "polymarket/books,kalshi/books"]);
    assert_eq!(code, 1, "{doc:#}");
    assert!(doc["problems"].to_string().contains("kalshi/books: required"), "{doc:#}");
    assert_eq!(stream(&doc, "books")["required"], true, "polymarket/books names Polymarket's books");

    // Human table.
    let mut c = tool("manifest");
    c.args(["status", a.root.to_str().unwrap(), "--now", NOW]);
    let out = run_with_timeout(c, None, LIMIT);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("polymarket/books") && text.contains("HEALTHY") && text.contains("disk:"), "{text}");
}

#[test]
fn status_without_manifests_reads_files_and_empty_root_is_unhealthy() {
    // No manifest build ran: the files alone are enough to see the newest line.
    let a = make_archive("mf-status-nomf");
    let (code, doc) = status(&a.root, NOW);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(stream(&doc, "books")["last_hour"]["rows"], 13);
    assert_eq!(stream(&doc, "books")["markets_tracked_now"], json!(["btc-updown-15m-s2"]));
    assert!(doc["last_upload"].is_null());

    let empty = tempdir("mf-empty");
    let (code, doc) = status(&empty, NOW);
    assert_eq!(code, 1);
    assert_eq!(doc["problems"][0]["reason"], "no_data");
    assert_eq!(doc["reasons"], json!(["no_data"]));
    // An empty archive verifies trivially.
    assert_eq!(verify(&empty).0, 0);
}

#[test]
fn bad_arguments_exit_2() {
    let missing = tempdir("mf-args").join("nope");
    let m = missing.to_str().unwrap();
    let root = tempdir("mf-args2");
    let r = root.to_str().unwrap();
    for args in [
        vec![],
        vec!["frobnicate"],
        vec!["status"],
        vec!["status", m],
        vec!["status", r, "--stale-after", "-1"],
        vec!["status", r, "--now", "yesterday"],
        vec!["status", r, "--bogus"],
        vec!["status", r, "--books-after", "0"],
        vec!["status", r, "--market-after", "x"],
        vec!["status", r, "--future-tolerance", "-5"],
        vec!["status", r, "--min-free-mib", "-1"],
        vec!["verify"],
        vec!["verify", m],
        vec!["verify", r, r],
        vec!["build"],
        vec!["build", "--root", m],
        vec!["build", "--root", r, "--run-id", "../x"],
        vec!["build", "--root", r, "--config", m],
        vec!["build", "--root", r, "--refresh", "0"],
    ] {
        let mut c = tool("manifest");
        c.args(&args);
        let out = run_with_timeout(c, Some(b""), LIMIT);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("manifest: "), "{args:?}");
    }
    let mut c = tool("manifest");
    c.arg("--help");
    let out = run_with_timeout(c, None, LIMIT);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("manifest verify ROOT"));
}

// ---------------------------------------------------------------------------------------------
// Health on archives recorded by the real tools (pm-markets, pm-books, jsonl-rotate, manifest build)
// against the loopback venue (tests/common/venue.rs, 127.0.0.1; recorded and derived replies, faults).
// These are LOOPBACK runs on the real clock, never live ones.

use common::venue::{Fault, Venue};

/// `jsonl-rotate --root ROOT --stream S` over these lines; returns its sealed records.
fn rotate_lines(root: &Path, stream: &str, lines: &[u8]) -> Vec<String> {
    let mut c = tool("jsonl-rotate");
    c.args(["--root", root.to_str().unwrap(), "--stream", stream, "--run-id", RUN]);
    let out = run_with_timeout(c, Some(lines), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

/// `manifest build` over sealed records; returns the manifest.
fn build_records(root: &Path, records: &[String]) -> Value {
    let input = records.join("\n") + "\n";
    let out = run_with_timeout(build_cmd(root, &[]), Some(input.as_bytes()), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    read_json(&manifest_path(root))
}

/// `pm-markets --once` (5m family) against the venue: (market records, raw Gamma lines).
fn discover(v: &Venue, root: &Path) -> (Vec<u8>, Vec<u8>) {
    let raw = root.join("gamma.raw.jsonl");
    let mut c = tool("pm-markets");
    c.args(["--once", "--gamma-url", &v.url(), "--families", "5m", "--raw-out", raw.to_str().unwrap()]);
    let out = run_with_timeout(c, None, LIMIT);
    let lines = std::fs::read(&raw).unwrap();
    std::fs::remove_file(&raw).unwrap();
    (out.stdout, lines)
}

/// `pm-books` for `secs` seconds at 0.5 s slots over these market records; returns its raw lines.
fn poll_books(clob: &str, markets: &[u8], secs: &str) -> Vec<u8> {
    let mut c = tool("pm-books");
    c.args(["--clob-url", clob, "--interval", "0.5", "--duration", secs, "--timeout", "2"]);
    let out = run_with_timeout(c, Some(markets), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn health(root: &Path, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["status", root.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let (code, doc, err) = run_json(&args);
    assert!(doc.is_object(), "status printed no JSON: {err}");
    (code, doc)
}

fn reasons(doc: &Value) -> Vec<String> {
    doc["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect()
}

/// A good loopback run: discovery finds the 5m markets, pm-books polls them for 3 s; everything is
/// rotated and listed. HEALTHY, the manifest's outcome is ok — and the same archive seen from a clock
/// 2 h behind it (the wall clock had stepped forward while it was written) is clock_ahead.
fn good_run(tag: &str) -> PathBuf {
    let v = Venue::start();
    let root = tempdir(tag);
    let (markets, gamma) = discover(&v, &root);
    assert!(!markets.is_empty(), "discovery found no market");
    let books = poll_books(&v.url(), &markets, "3");
    let mut records = rotate_lines(&root, "gamma", &gamma);
    records.extend(rotate_lines(&root, "books", &books));
    let m = build_records(&root, &records);
    assert_eq!(m["outcome"]["status"], "ok", "{:#}", m["outcome"]);
    assert!(m["outcome"]["data_rows"].as_u64().unwrap() > 2, "{:#}", m["outcome"]);
    root
}

#[test]
fn health_is_healthy_on_a_good_loopback_run_and_clock_ahead_when_its_lines_are_in_the_future() {
    let root = good_run("health-good");
    let (code, doc) = health(&root, &["--streams", "books,gamma"]);
    assert_eq!((code, doc["healthy"].clone()), (0, json!(true)), "{doc:#}");
    assert_eq!(doc["reasons"], json!([]));
    let b = stream(&doc, "books");
    assert!(b["newest_data_at_utc"].is_string() && b["last_hour"]["data_rows"].as_u64().unwrap() > 0, "{b:#}");
    let mut c = tool("manifest");
    c.args(["status", root.to_str().unwrap()]);
    let text = String::from_utf8(run_with_timeout(c, None, LIMIT).stdout).unwrap();
    assert_eq!(text.lines().last(), Some("HEALTHY"), "{text}");

    // Seen from 2 h earlier: every line is in the future. Not fresh, and the reason is named.
    let earlier = pm_archive::clock::fmt_secs(time::OffsetDateTime::now_utc() - time::Duration::hours(2));
    let (code, doc) = health(&root, &["--now", &earlier]);
    assert_eq!(code, 1, "{doc:#}");
    assert!(reasons(&doc).contains(&"clock_ahead".to_string()), "{doc:#}");
    assert!(stream(&doc, "books")["future_lines"].as_u64().unwrap() > 0);
    assert_eq!(stream(&doc, "books")["stale"], true, "future lines are not fresh");
    let mut c = tool("manifest");
    c.args(["status", root.to_str().unwrap(), "--now", &earlier]);
    let text = String::from_utf8(run_with_timeout(c, None, LIMIT).stdout).unwrap();
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("UNHEALTHY: ") && last.contains("clock_ahead"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("PROBLEM clock_ahead: polymarket/books: ")), "{text}");
}

#[test]
fn health_names_venue_unreachable_and_the_manifest_says_failed_when_every_attempt_failed() {
    // Markets found on the venue, then every /books request goes to a closed port (connection refused).
    let v = Venue::start();
    let root = tempdir("health-unreachable");
    let (markets, _) = discover(&v, &root);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let books = poll_books(&closed, &markets, "2");
    let records = rotate_lines(&root, "books", &books);
    let m = build_records(&root, &records);
    let o = &m["outcome"];
    assert_eq!(o["status"], "failed", "{o:#}");
    assert_eq!(o["data_rows"], 0);
    assert!(o["http_attempts"].as_u64().unwrap() > 0 && o["http_unanswered"] == o["http_attempts"], "{o:#}");
    assert_eq!(o["streams_without_data"], json!(["books"]));

    let (code, doc) = health(&root, &["--streams", "books"]);
    assert_eq!(code, 1, "{doc:#}");
    let r = reasons(&doc);
    assert!(r.contains(&"venue_unreachable".to_string()) && r.contains(&"stale".to_string()), "{doc:#}");
    let p = doc["problems"].as_array().unwrap().iter().find(|p| p["reason"] == "venue_unreachable").unwrap();
    assert_eq!(p["stream"], "polymarket/books");
    // The lines themselves are recent: only their content says nothing was collected.
    assert!(stream(&doc, "books")["age_s"].as_f64().unwrap() < 300.0);
}

#[test]
fn health_names_no_books_while_markets_are_tracked_and_replies_hold_no_book() {
    // The venue answers every /books with 200 and no book ({"error":…}): pm-books keeps tracking
    // and writing lines (replies, failed_request gaps), so the stream looks alive by its lines alone.
    let v = Venue::start();
    let root = tempdir("health-nobooks");
    let (markets, _) = discover(&v, &root);
    for _ in 0..2000 {
        v.fault("/books", Fault::ThrottledOk);
    }
    let mut books = tool("pm-books");
    books.args(["--clob-url", &v.url(), "--interval", "0.5", "--timeout", "2"]);
    books.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut books = books.spawn().unwrap();
    let mut stdin = books.stdin.take().unwrap();
    stdin.write_all(&markets).unwrap();
    let mut rot = tool("jsonl-rotate");
    rot.args(["--root", root.to_str().unwrap(), "--stream", "books", "--flush-secs", "0.5"]);
    rot.stdin(books.stdout.take().unwrap()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut rot = rot.spawn().unwrap();

    // Poll (generous deadline) until status sees lines in the open .partial and names no_books.
    let deadline = Instant::now() + Duration::from_secs(60);
    let doc = loop {
        let (code, doc) = health(&root, &["--streams", "books", "--books-after", "1"]);
        if reasons(&doc).contains(&"no_books".to_string()) {
            assert_eq!(code, 1);
            break doc;
        }
        assert!(Instant::now() < deadline, "no no_books reason within 60 s: {doc:#}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = books.kill();
    drop(stdin);
    let _ = books.wait();
    let _ = rot.wait();
    let b = stream(&doc, "books");
    assert!(!b["markets_tracked_now"].as_array().unwrap().is_empty(), "{b:#}");
    assert!(b["newest_data_at_utc"].is_null(), "{b:#}");
    assert!(b["age_s"].as_f64().unwrap() < 60.0, "the lines are fresh: {b:#}");
    // Answered (200), so not unreachable.
    assert!(!reasons(&doc).contains(&"venue_unreachable".to_string()), "{doc:#}");
}

#[test]
fn health_names_no_market_when_discovery_finds_none() {
    // Gamma answers 404 (not listed) for every slug: answered, so not unreachable, but no market.
    let v = Venue::start();
    let root = tempdir("health-nomarket");
    for _ in 0..50 {
        v.fault("/markets", Fault::Status(404));
    }
    let (markets, gamma) = discover(&v, &root);
    assert!(markets.is_empty());
    let records = rotate_lines(&root, "gamma", &gamma);
    assert_eq!(build_records(&root, &records)["outcome"]["status"], "failed");
    let (code, doc) = health(&root, &[]);
    assert_eq!(code, 1, "{doc:#}");
    let r = reasons(&doc);
    assert!(r.contains(&"no_market".to_string()), "{doc:#}");
    assert!(!r.contains(&"venue_unreachable".to_string()), "{doc:#}");
}

fn manifest_out(args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    let mut c = tool("manifest");
    c.args(args);
    let o = run_with_timeout(c, stdin, LIMIT);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// The uploader's questions, answered from a manifest written by `manifest build` itself (the run
/// manifest's one type, written and read back): the expected `path → sha256` list (the tail too),
/// the local check of sha256sum lines, and each file's class in the layout.
#[test]
fn offload_expected_and_local_check_read_what_build_wrote() {
    let a = make_archive("mf-offload-check");
    let input = a.records.join("\n") + "\n";
    let out = run_with_timeout(build_cmd(&a.root, &[]), Some(input.as_bytes()), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let root = a.root.to_str().unwrap();

    let (code, text, err) = manifest_out(&["offload", "expected", root], None);
    assert_eq!(code, 0, "{err}");
    let expected: Vec<(String, String)> =
        text.lines().map(|l| l.split_once('\t').map(|(s, p)| (p.to_string(), s.to_string())).unwrap()).collect();
    let paths: Vec<&str> = expected.iter().map(|(p, _)| p.as_str()).collect();
    for p in [&a.books0, &a.books1, &a.gamma0, &a.tail] {
        assert!(paths.contains(&p.as_str()), "{p} not expected: {text}");
        let want = sha256(&a.root.join(p)).0;
        assert!(expected.contains(&(p.to_string(), want)), "{p}: {text}");
    }

    // The local check: one ok, one changed, one nobody lists; the recorded sha256 of the changed one.
    let (books0_sha, _) = sha256(&a.root.join(&a.books0));
    let other = "0".repeat(64);
    let sums = format!(
        "{books0_sha}  {}\n{other}  {}\n{other}  venue=polymarket/stream=books/date=2026-11-24/hour=16/x-0.jsonl.gz\n",
        a.books0, a.books1
    );
    let (code, text, err) = manifest_out(&["offload", "check", root], Some(sums.as_bytes()));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("ok\t{}\t-", a.books0));
    assert_eq!(lines[1], format!("manifest_mismatch\t{}\t{}", a.books1, sha256(&a.root.join(&a.books1)).0));
    assert!(lines[2].starts_with("unlisted\t"), "{text}");

    // The layout's classes: sealed files and the tail are archive files; the partial is not.
    std::fs::write(a.root.join(books_dir("16")).join(".jsonl-rotate-x.lock"), b"").unwrap();
    std::fs::write(a.root.join("stray.txt"), b"").unwrap();
    let (code, text, err) = manifest_out(&["offload", "files", root], None);
    assert_eq!(code, 0, "{err}");
    let class = |p: &str| text.lines().find(|l| l.ends_with(&format!("\t{p}"))).map(|l| l.split('\t').next().unwrap());
    for p in [&a.books0, &a.books1, &a.gamma0, &a.tail] {
        assert_eq!(class(p), Some("archive"), "{p}: {text}");
    }
    assert_eq!(class("stray.txt"), Some("other"));
    assert_eq!(class(&format!("{}/.jsonl-rotate-x.lock", books_dir("16"))), Some("dot"));
    assert!(text.lines().any(|l| l.starts_with("partial\t")), "{text}");
    assert!(!text.contains("manifests/"), "{text}");
}

/// Upload records written by `manifest offload append` are the records verify and status read: one
/// type. A torn last line is closed first; a bad input line writes nothing (exit 2); `state` gives
/// the latest record per path and sha256.
#[test]
fn offload_append_writes_the_records_readers_read() {
    let a = make_archive("mf-offload-append");
    let root = a.root.to_str().unwrap();
    std::fs::create_dir_all(a.root.join("manifests")).unwrap();
    let log = a.root.join("manifests/uploads.jsonl");
    std::fs::write(&log, b"{\"record\":\"upload\",\"torn").unwrap();
    let (sha, bytes) = sha256(&a.root.join(&a.books0));
    let lines = format!(
        "upload\t{p}\t{bytes}\t{sha}\tmd5x\tgd:pm\tmd5x\ttrue\tmd5\t0\t\t\t\t\n\
         local_delete\t{p}\t{bytes}\t{sha}\tgd:pm\tretention: test\n",
        p = a.books0
    );
    let (code, _, err) = manifest_out(&["offload", "append", root], Some(lines.as_bytes()));
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&log).unwrap();
    let recs: Vec<&str> = text.lines().collect();
    assert_eq!(recs.len(), 3, "{text}");
    let up: Value = serde_json::from_str(recs[1]).unwrap();
    assert_eq!(
        (up["record"].as_str(), up["verified"].as_bool(), up["remote_path"].as_str()),
        (Some("upload"), Some(true), Some(a.books0.as_str()))
    );
    assert_eq!(up["rclone_exit"], 0);
    let del: Value = serde_json::from_str(recs[2]).unwrap();
    assert_eq!(del.as_object().unwrap().len(), 9, "{del}");

    // The readers: the file is offloaded once it is gone; the torn line is one bad line.
    std::fs::remove_file(a.root.join(&a.books0)).unwrap();
    let input = a.records[0].clone() + "\n";
    let out = run_with_timeout(build_cmd(&a.root, &[]), Some(input.as_bytes()), LIMIT);
    assert_eq!(out.status.code(), Some(1), "the file is gone: the build reports it");
    let (_, doc) = verify(&a.root);
    let f = doc["files"].as_array().unwrap().iter().find(|f| f["path"] == a.books0.as_str()).unwrap();
    assert_eq!(f["status"], "offloaded", "{doc}");
    assert_eq!(doc["upload_log"]["bad_lines"].as_array().unwrap().len(), 1, "{doc}");
    let (code, text, err) = manifest_out(&["offload", "state", root], None);
    assert_eq!(code, 0);
    assert_eq!(text, format!("{}\t{sha}\ttrue\tmd5\t-\tmd5x\n", a.books0));
    assert!(err.contains("1 line(s)"), "{err}");

    // A bad line: nothing appended.
    let before = std::fs::read(&log).unwrap();
    let bad = format!(
        "upload\t../escape\t1\t{sha}\t\tgd:pm\t\tfalse\t\t\t\t\t\t\nlocal_delete\t{}\tx\t{sha}\tgd\twhy\n",
        a.books0
    );
    let (code, _, err) = manifest_out(&["offload", "append", root], Some(bad.as_bytes()));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("input line 1"), "{err}");
    assert_eq!(std::fs::read(&log).unwrap(), before);
}

/// The layout's other answers: the streams of a venue (what the cycle script recovers), and run ids
/// from the one generator.
#[test]
fn streams_and_run_ids_come_from_the_tool() {
    let a = make_archive("mf-streams");
    let (code, text, err) = manifest_out(&["streams", a.root.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(text, "books\ngamma\n");
    let (code, text, _) = manifest_out(&["streams", a.root.to_str().unwrap(), "--venue", "other"], None);
    assert_eq!((code, text.as_str()), (0, ""));
    let (code, _, _) = manifest_out(&["streams", a.root.to_str().unwrap(), "--venue", "../x"], None);
    assert_eq!(code, 2);
    let (code, one, _) = manifest_out(&["run-id"], None);
    let (_, two, _) = manifest_out(&["run-id"], None);
    assert_eq!(code, 0);
    let id = one.trim_end();
    let parts: Vec<&str> = id.split('-').collect();
    assert_eq!(parts.len(), 3, "{id}");
    assert!(parts[0].len() == 16 && parts[0].ends_with('Z') && parts[0].as_bytes()[8] == b'T', "{id}");
    assert!(parts[1].parse::<u32>().is_ok() && parts[2].len() == 4, "{id}");
    assert!(pm_archive::util::is_safe_component(id));
    assert_ne!(one, two);
}
