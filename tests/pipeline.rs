//! End-to-end: pipelines/collect.sh (pm-markets → pm-books → jsonl-rotate → manifest) against the
//! loopback venue, with markets rolling over on a simulated clock, injected faults, and kill -9.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::venue::{Fault, Served, Venue};
use common::{run_with_timeout, tempdir, tool};
use serde_json::value::RawValue;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn collect(v: &Venue, root: &Path, clock: &str, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(repo().join("pipelines/collect.sh"));
    c.env_remove("PMARCHIVE_RUN_ID")
        .env("PMARCHIVE_HOST", "testhost")
        .env("PMARCHIVE_CLOCK", clock)
        .env("PMARCHIVE_ROOT", root)
        .env("PMARCHIVE_BIN_DIR", common::bin("pm-markets").parent().unwrap())
        .env("PMARCHIVE_GAMMA_URL", v.url())
        .env("PMARCHIVE_CLOB_URL", v.url())
        .env("PMARCHIVE_FAMILIES", "5m")
        .env("PMARCHIVE_AHEAD", "1")
        .env("PMARCHIVE_DISCOVERY_EVERY", "1")
        .env("PMARCHIVE_KEEP_AFTER", "60")
        .env("PMARCHIVE_INTERVAL", "0.5")
        .env("PMARCHIVE_LEAD", "30")
        .env("PMARCHIVE_GRACE", "30")
        .env("PMARCHIVE_FLUSH_SECS", "1")
        .env("PMARCHIVE_ROTATE_SECS", "60")
        .env("PMARCHIVE_MANIFEST_REFRESH", "2");
    for (k, val) in env {
        c.env(k, val);
    }
    c
}

/// All archive files of a stream (sealed, `.jsonl.gz`).
fn files(root: &Path, stream: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.join(format!("venue=polymarket/stream={stream}"))];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".jsonl.gz") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn partials(root: &Path) -> Vec<PathBuf> {
    let out = Command::new("find").arg(root).args(["-name", "*.partial"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from).collect()
}

/// Every line of every file of a stream.
fn lines(root: &Path, stream: &str) -> Vec<String> {
    let mut all = Vec::new();
    for f in files(root, stream) {
        let t = Command::new("gzip").arg("-t").arg(&f).status().unwrap();
        assert!(t.success(), "gzip -t {f:?}");
        let out = Command::new("zcat").arg(&f).output().unwrap();
        all.extend(String::from_utf8(out.stdout).unwrap().lines().map(str::to_string));
    }
    all
}

/// The reply body of a raw line exactly as archived (embedded JSON bytes or the kept text).
fn archived_body(line: &str) -> Option<String> {
    let f: HashMap<String, Box<RawValue>> = serde_json::from_str(line).unwrap();
    if let Some(b) = f.get("body") {
        return Some(b.get().to_string());
    }
    f.get("body_text").map(|t| serde_json::from_str::<String>(t.get()).unwrap())
}

/// (status, body) of each reply the venue served on a path prefix.
fn served(v: &Venue, prefix: &str, before: Option<time::OffsetDateTime>) -> Vec<(u16, String)> {
    v.log()
        .into_iter()
        .filter(|s: &Served| s.path.starts_with(prefix) && s.status.is_some() && before.map_or(true, |b| s.at < b))
        .map(|s| (s.status.unwrap(), String::from_utf8(s.response).unwrap()))
        .collect()
}

fn archived(lines: &[String], endpoint: &str) -> Vec<(u16, String)> {
    lines
        .iter()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["kind"] == "http" && v["endpoint"] == endpoint && v["status"].is_u64())
                .then(|| (v["status"].as_u64().unwrap() as u16, archived_body(l).unwrap_or_default()))
        })
        .collect()
}

fn count(items: &[(u16, String)]) -> HashMap<(u16, String), usize> {
    let mut m = HashMap::new();
    for i in items {
        *m.entry(i.clone()).or_insert(0) += 1;
    }
    m
}

#[test]
fn the_chain_archives_every_reply_exactly_once_while_markets_roll_over() {
    let v = Venue::start();
    // 20 simulated seconds per real second: 5-minute windows roll every 15 s of the test.
    let clock = v.simulate_clock(time::macros::datetime!(2026-08-22 16:04:00 UTC), 20.0);
    for f in [
        Fault::TooMany { retry_after: Some("1".into()) },
        Fault::Status(503),
        Fault::Reset,
        Fault::Truncated,
        Fault::Html,
        Fault::Slow(Duration::from_millis(800)),
    ] {
        v.fault("/books", f);
    }
    v.fault("/markets/slug/", Fault::Status(502));
    let root = tempdir("chain");
    let c = collect(&v, &root, &clock, &[("PMARCHIVE_DURATION", "24")]);
    let out = run_with_timeout(c, None, Duration::from_secs(120));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(partials(&root).is_empty(), "no partial file left after a clean stop");

    // Every reply the venue served is in the archive exactly once (bodies compared byte for byte).
    let books = lines(&root, "books");
    let gamma = lines(&root, "gamma");
    assert_eq!(count(&archived(&books, "books")), count(&served(&v, "/books", None)), "books replies");
    assert_eq!(count(&archived(&gamma, "gamma")), count(&served(&v, "/markets/slug/", None)), "gamma replies");
    assert!(served(&v, "/books", None).len() >= 20, "the chain polled");

    // Lines of one run and tool are numbered without holes.
    let mut seqs: Vec<u64> =
        books.iter().map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap()).collect();
    seqs.sort();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());

    // Markets rolled over without a restart: at least three 5m windows were tracked, the first stopped.
    let track: Vec<Value> =
        books.iter().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|v| v["kind"] == "track").collect();
    let started: std::collections::BTreeSet<String> = track
        .iter()
        .filter(|t| t["ctx"]["action"] == "start")
        .map(|t| t["ctx"]["slug"].as_str().unwrap().to_string())
        .collect();
    assert!(started.len() >= 3, "{started:?}");
    assert!(
        track.iter().any(|t| t["ctx"]["action"] == "stop" && t["ctx"]["slug"] == "btc-updown-5m-1787414400"),
        "{track:?}"
    );
    // Several files: rotation every 60 simulated seconds.
    assert!(files(&root, "books").len() >= 3);

    // The manifest is complete and verifies.
    let manifests: Vec<PathBuf> = std::fs::read_dir(root.join("manifests"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".json"))
        .collect();
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    let m: Value = serde_json::from_slice(&std::fs::read(&manifests[0]).unwrap()).unwrap();
    assert_eq!(m["schema"], "pmarchive.manifest/1");
    assert_eq!(m["status"], "complete");
    let mut verify = tool("manifest");
    verify.args(["verify", root.to_str().unwrap()]);
    let vo = run_with_timeout(verify, None, Duration::from_secs(60));
    assert_eq!(
        vo.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&vo.stdout),
        String::from_utf8_lossy(&vo.stderr)
    );

    // The health command on this archive: fresh right after the run, stale an hour later.
    let status = |now: time::OffsetDateTime| {
        let mut c = tool("manifest");
        c.args(["status", root.to_str().unwrap(), "--json", "--now", &pm_archive::clock::fmt_micros(now)]);
        let o = run_with_timeout(c, None, Duration::from_secs(60));
        (o.status.code(), serde_json::from_slice::<Value>(&o.stdout).unwrap_or(Value::Null))
    };
    let now = v.now();
    let (code, fresh) = status(now);
    assert_eq!(code, Some(0), "fresh archive is healthy: {fresh}");
    let books_status = fresh.to_string();
    assert!(fresh["disk"]["free_bytes"].as_u64().unwrap() > 0, "{fresh}");
    assert!(books_status.contains("\"books\""), "{fresh}");
    let (code, stale) = status(now + time::Duration::hours(1));
    assert_eq!(code, Some(1), "an hour without lines is stale: {stale}");
    assert!(!stale["problems"].as_array().unwrap().is_empty(), "{stale}");
}

fn pid_of(pattern: &str) -> Option<String> {
    let out = Command::new("pgrep").args(["-f", pattern]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_string)
}

/// kill -9 of the stage whose command line `pgrep -f` finds with `pattern(root, venue url)`, then a
/// restart: nothing served more than the flush cadence before the kill is lost, `partials_left` partial
/// files were left and are sealed by the restart, and the archive verifies. Returns the manifests.
fn kill_9_then_restart(stage: &str, pattern: &dyn Fn(&Path, &str) -> String, partials_left: usize) -> Vec<Value> {
    let v = Venue::start();
    let clock = v.simulate_clock(time::macros::datetime!(2026-08-22 16:04:00 UTC), 1.0);
    let root = tempdir("kill9");
    let mut c = collect(&v, &root, &clock, &[("PMARCHIVE_ROTATE_SECS", "3600")]);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let pid = pid_of(&pattern(&root, &v.url())).unwrap_or_else(|| panic!("{stage} running"));
    let killed_at = v.now();
    Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    // The supervisor notices, stops the other stages and exits 1.
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "collect.sh did not stop after {stage} died");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(1), "{stage}");
    let left = partials(&root);
    assert_eq!(left.len(), partials_left, "{stage}: partial files left: {left:?}");

    // Restart: the new run seals the dead run's partials (recovered), lists sealed files no manifest
    // lists (adopted), and goes on collecting.
    let c2 = collect(&v, &root, &clock, &[("PMARCHIVE_DURATION", "4"), ("PMARCHIVE_ROTATE_SECS", "3600")]);
    let out = run_with_timeout(c2, None, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{stage}: {}", String::from_utf8_lossy(&out.stderr));
    assert!(partials(&root).is_empty(), "{stage}");
    // Every /books reply served more than the flush cadence (1 s, + 1 s margin for pipes) before the
    // kill is in the archive, and so is every Gamma reply.
    let cutoff = killed_at - time::Duration::seconds(2);
    for (stream, prefix, endpoint) in [("books", "/books", "books"), ("gamma", "/markets/slug/", "gamma")] {
        let before = count(&served(&v, prefix, Some(cutoff)));
        let got = count(&archived(&lines(&root, stream), endpoint));
        assert!(!before.is_empty(), "{stage}: {prefix} served before the kill");
        for (k, n) in &before {
            assert!(
                got.get(k).copied().unwrap_or(0) >= *n,
                "{stage}: a {prefix} reply served before the kill is missing"
            );
        }
    }
    let mut verify = tool("manifest");
    verify.args(["verify", root.to_str().unwrap()]);
    let vo = run_with_timeout(verify, None, Duration::from_secs(60));
    assert_eq!(vo.status.code(), Some(0), "{stage}: {}", String::from_utf8_lossy(&vo.stdout));
    std::fs::read_dir(root.join("manifests"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().to_string_lossy().ends_with(".json"))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect()
}

#[test]
fn kill_9_of_a_stage_loses_nothing_older_than_the_flush_cadence() {
    // The books rotator: its open file is left partial and sealed (recovered) by the restart.
    let manifests =
        kill_9_then_restart("books rotator", &|r, _| format!("jsonl-rotate --root {} --stream books", r.display()), 1);
    assert!(manifests.iter().any(|m| m.to_string().contains("\"recovered\":true")), "recovered file listed");
}

#[test]
fn kill_9_of_the_manifest_stage_then_restart_adopts_the_unlisted_files() {
    // The rotators seal their files after the manifest stage died: no manifest lists them until the
    // restart adopts them.
    let manifests = kill_9_then_restart("manifest", &|r, _| format!("manifest build --root {}", r.display()), 0);
    assert!(manifests.iter().any(|m| m.to_string().contains("\"adopted\":true")), "adopted file listed");
}

#[test]
fn kill_9_of_a_producer_loses_nothing() {
    // pm-books and pm-markets: the rotators see end-of-input and seal; nothing is left partial.
    let books = |_: &Path, url: &str| format!("pm-books --clob-url {url} ");
    let markets = |_: &Path, url: &str| format!("pm-markets --watch .* --gamma-url {url} ");
    for (stage, pattern) in [("pm-books", &books as &dyn Fn(&Path, &str) -> String), ("pm-markets", &markets)] {
        let manifests = kill_9_then_restart(stage, pattern, 0);
        assert!(!manifests.iter().any(|m| m.to_string().contains("\"adopted\":true")), "{stage}");
    }
}

#[test]
fn collect_sh_rejects_bad_configuration_with_exit_2() {
    let dir = tempdir("badcfg");
    let env = dir.join("bad.env");
    std::fs::write(&env, "PMARCHIVE_INTERVAL=fast\n").unwrap();
    for args in [vec![env.to_str().unwrap().to_string()], vec!["/nonexistent.env".into()], vec!["--bogus".into()]] {
        let mut c = Command::new(repo().join("pipelines/collect.sh"));
        c.args(&args)
            .env("PMARCHIVE_BIN_DIR", common::bin("pm-markets").parent().unwrap())
            .env("PMARCHIVE_ROOT", dir.join("a"));
        let out = run_with_timeout(c, None, Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("collect.sh: "));
    }
    let mut c = Command::new(repo().join("pipelines/collect.sh"));
    c.arg("--help");
    let out = run_with_timeout(c, None, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: pipelines/collect.sh"));
}

#[test]
fn discover_sh_writes_the_checkpoint_3_artefacts_labelled_loopback() {
    let v = Venue::start();
    let out_dir = tempdir("discover");
    let mut c = Command::new(repo().join("pipelines/discover.sh"));
    c.args(["--out-dir", out_dir.to_str().unwrap(), "--gamma-url", &v.url(), "--bin-dir"])
        .arg(common::bin("pm-markets").parent().unwrap())
        .args(["--", "--families", "5m,15m", "--ahead", "1"]);
    let out = run_with_timeout(c, None, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let latest: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("polymarket_btc_markets_latest.json")).unwrap()).unwrap();
    assert_eq!(latest.as_array().unwrap().len(), 4);
    let m: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("polymarket_btc_markets_manifest.json")).unwrap()).unwrap();
    assert_eq!(m["run_kind"], "loopback");
    assert_eq!(m["markets"], 4);
    for f in m["files"].as_array().unwrap() {
        let (sha, bytes) = pm_archive::util::sha256_file(&out_dir.join(f["path"].as_str().unwrap())).unwrap();
        assert_eq!(f["sha256"], sha.as_str());
        assert_eq!(f["bytes"], bytes);
    }
    let md = std::fs::read_to_string(out_dir.join("polymarket_btc_markets.md")).unwrap();
    assert!(md.contains("LOOPBACK REPLAY OF RECORDED RESPONSES"));
    assert!(md.contains("btc-updown-15m-"));
}
