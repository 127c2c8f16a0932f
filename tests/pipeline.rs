//! End-to-end: pipelines/collect.sh (pm-markets → pm-books → jsonl-rotate → manifest) against the
//! loopback venue, with markets rolling over on a simulated clock, injected faults, and kill -9.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::dataapi::DataApi;
use common::venue::{Fault, Served, Venue};
use common::ws::{Behaviour, WsServer};
use common::{run_with_timeout, tempdir, tool};
use serde_json::value::RawValue;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn collect(v: &Venue, root: &Path, clock: &str, env: &[(&str, &str)]) -> Command {
    collect_as(Command::new(repo().join("pipelines/collect.sh")), v, root, clock, env)
}

/// `c` with the settings of a test chain on the loopback venue.
fn collect_as(mut c: Command, v: &Venue, root: &Path, clock: &str, env: &[(&str, &str)]) -> Command {
    c.env_remove("PMARCHIVE_RUN_ID")
        .env("PMARCHIVE_HOST", "testhost")
        .env("PMARCHIVE_CLOCK", clock)
        .env("PMARCHIVE_ROOT", root)
        .env("PMARCHIVE_BIN_DIR", common::bin("pm-markets").parent().unwrap())
        .env("PMARCHIVE_GAMMA_URL", v.url())
        .env("PMARCHIVE_CLOB_URL", v.url())
        // Loopback only: the venue answers /v2/trades with a stand-in 404 (tests that check trades
        // set a loopback Data API instead).
        .env("PMARCHIVE_DATA_URL", v.url())
        // Loopback only: the websocket lane is on by default; nothing listens on port 9 (pm-stream
        // records its failed connects and retries). Tests that check the lane set a loopback venue.
        .env("PMARCHIVE_WS_URL", "ws://127.0.0.1:9/ws/market")
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
    common::files_under(&root.join(format!("venue=polymarket/stream={stream}")), ".jsonl.gz")
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
        .filter(|s: &Served| s.path.starts_with(prefix) && s.status.is_some() && before.is_none_or(|b| s.at < b))
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
    // Markets resolve 20 simulated seconds after their window: pm-markets writes resolution records.
    v.resolve_after(Duration::from_secs(20));
    // The trade lane: a loopback Data API on the same simulated clock, trading the venue's 5m markets.
    let api = DataApi::start();
    api.simulate_clock(time::macros::datetime!(2026-08-22 16:04:00 UTC), 20.0);
    let t0 = time::macros::datetime!(2026-08-22 16:00:00 UTC);
    for k in 0..4 {
        let start = t0 + time::Duration::minutes(5 * k);
        let slug = format!("btc-updown-5m-{}", start.unix_timestamp());
        api.register_slug(&slug, start, start + time::Duration::minutes(5));
    }
    // The websocket lane (on by default, no PMARCHIVE_WS set here): the modelled loopback channel.
    let ws = WsServer::start_with(Behaviour::Model { events_per_sec: 20.0, seed: 7 }, Some(100));
    let ws_url = ws.url();
    let dir = Scratch::new("chain");
    let root = dir.0.join("root");
    let api_url = api.url();
    let trades_env = [
        ("PMARCHIVE_WS_URL", ws_url.as_str()),
        ("PMARCHIVE_DURATION", "24"),
        ("PMARCHIVE_DATA_URL", api_url.as_str()),
        ("PMARCHIVE_TRADES_INTERVAL", "0.5"),
        ("PMARCHIVE_TRADES_SETTLE", "20"),
    ];
    let c = collect(&v, &root, &clock, &trades_env);
    let mut chain = Chain::spawn(c, &dir.0.join("run.log"));
    let status = chain.wait(Duration::from_secs(120), "24 s run");
    assert_eq!(status.code(), Some(0), "{}", chain.stderr());
    assert!(partials(&root).is_empty(), "no partial file left after a clean stop");

    // Every reply the venue served is in the archive exactly once (bodies compared byte for byte).
    let books = lines(&root, "books");
    let gamma = lines(&root, "gamma");
    // /books replies go to stream books (pm-books' polls) and to ws_market (pm-stream's REST snapshots
    // after each connect, `ctx.reason: ws_resync`): together, every reply exactly once.
    let mut polled = archived(&books, "books");
    polled.extend(archived(&lines(&root, "ws_market"), "books"));
    assert_eq!(count(&polled), count(&served(&v, "/books", None)), "books replies");
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

    // pm-markets' own records are archived (stream markets), resolution records included.
    let markets = lines(&root, "markets");
    assert!(markets.iter().any(|l| l.contains("\"schema\":\"pmarchive.market/1\"")), "market records archived");
    assert!(
        markets.iter().any(|l| l.contains("\"schema\":\"pmarchive.resolution/1\"")),
        "a resolution record reached a sealed file: {} markets lines",
        markets.len()
    );
    // The trade lane: every row the Data API served is archived, and every market swept has all its
    // trades in the archive.
    let trades: Vec<Value> = lines(&root, "trades").iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut keys = std::collections::HashSet::new();
    for l in trades.iter().filter(|l| l["kind"] == "http" && l["status"] == 200) {
        for r in l["body"]["data"].as_array().unwrap() {
            keys.insert(pm_archive::polymarket::trades::row_key(&serde_json::from_value(r.clone()).unwrap()));
        }
    }
    let log = api.log();
    assert!(log.iter().filter(|s| s.status == Some(200)).count() >= 10, "the trade lane polled");
    for s in &log {
        for k in &s.rows {
            assert!(keys.contains(k), "a trade served by the Data API is missing from the archive: {k}");
        }
    }
    let swept: Vec<&Value> =
        trades.iter().filter(|l| l["kind"] == "track" && l["ctx"]["final_sweep"] == "complete").collect();
    assert!(swept.len() >= 2, "{} markets swept", swept.len());
    for s in swept {
        for r in api.rows(s["ctx"]["condition_id"].as_str().unwrap()) {
            let k = pm_archive::polymarket::trades::row_key(&serde_json::from_value(r.value).unwrap());
            assert!(keys.contains(&k), "{}: trade missing after the sweep", s["ctx"]["slug"]);
        }
    }

    // The websocket lane ran by default: its frames are archived in stream ws_market, with book data.
    let wsl: Vec<Value> = lines(&root, "ws_market").iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let frames: Vec<&Value> = wsl.iter().filter(|l| l["kind"] == "ws" && l["ctx"]["event"] == "frame").collect();
    assert!(ws.conns.load(std::sync::atomic::Ordering::SeqCst) >= 1, "pm-stream connected");
    assert!(
        frames.iter().any(|f| f["body"].to_string().contains("price_change")),
        "{} ws lines, {} frames: price changes archived",
        wsl.len(),
        frames.len()
    );

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

/// A temp dir removed when the test passes (kept for inspection when it fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        Scratch(tempdir(tag))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// collect.sh spawned as the leader of its own process group, stderr to a file. Dropping the guard
/// SIGKILLs the whole group, so a failing test never leaves a collector or a stage running.
struct Chain {
    child: std::process::Child,
    log: PathBuf,
}

impl Chain {
    fn spawn(mut c: Command, log: &Path) -> Chain {
        use std::os::unix::process::CommandExt;
        c.process_group(0).stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(log).unwrap());
        Chain { child: c.spawn().expect("spawn collect.sh"), log: log.to_path_buf() }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls for the exit of collect.sh; panics with its stderr after `limit`.
    fn wait(&mut self, limit: Duration, what: &str) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(start.elapsed() < limit, "{what}: collect.sh still running after {limit:?}:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Processes still in the chain's process group (collect.sh itself included until reaped).
    fn group(&self) -> Vec<String> {
        let out = Command::new("pgrep").args(["-g", &self.pid()]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    }

    fn signal(&self, sig: &str, pid: &str) {
        assert!(Command::new("kill").args([&format!("-{sig}"), pid]).status().unwrap().success(), "kill -{sig} {pid}");
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        let _ =
            Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).stderr(Stdio::null()).status();
        let _ = self.child.wait();
    }
}

/// The stages of the chain (PMARCHIVE_WS=1 adds the last three).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stage {
    Trades,
    Markets,
    Books,
    RotateBooks,
    RotateGamma,
    Manifest,
    Stream,
    Tee,
    RotateWs,
}

impl Stage {
    fn ws(self) -> bool {
        matches!(self, Stage::Stream | Stage::Tee | Stage::RotateWs)
    }

    /// `pgrep -f` pattern finding exactly this stage of the test's chain.
    fn pattern(self, root: &Path, tmp: &Path, url: &str) -> String {
        let r = root.display();
        match self {
            Stage::Trades => format!("pm-trades --data-url {url} "),
            Stage::Markets => format!("pm-markets --watch .* --gamma-url {url} "),
            Stage::Books => format!("pm-books --clob-url {url} "),
            Stage::RotateBooks => format!("jsonl-rotate --root {r} --venue polymarket --stream books "),
            Stage::RotateGamma => format!("jsonl-rotate --root {r} --venue polymarket --stream gamma "),
            Stage::RotateWs => format!("jsonl-rotate --root {r} --venue polymarket --stream ws_market "),
            Stage::Manifest => format!("manifest build --root {r} "),
            Stage::Stream => format!("pm-stream --ws-url .* --clob-url {url} "),
            Stage::Tee => format!("^tee {}/", tmp.display()),
        }
    }

    /// The stream whose open file this stage's kill -9 may leave partial (a rotator's).
    fn stream(self) -> Option<&'static str> {
        match self {
            Stage::RotateBooks => Some("books"),
            Stage::RotateGamma => Some("gamma"),
            Stage::RotateWs => Some("ws_market"),
            _ => None,
        }
    }

    /// A stand-in binary that passes `--check-args` to the real tool and otherwise dies of SIGKILL
    /// before writing anything (a failure before the first line). Returns (file name, script).
    fn failing_binary(self, real: &Path) -> (&'static str, String) {
        let r = real.display();
        let only = |name: &'static str, when: &str| {
            let script = format!(
                "#!/bin/sh\n# test stand-in: dies at start-up\nfor a in \"$@\"; do [ \"$a\" = --check-args ] && exec {r}/{name} \"$@\"; done\n\
                 case \" $* \" in {when}) kill -9 $$ ;; esac\nexec {r}/{name} \"$@\"\n"
            );
            (name, script)
        };
        match self {
            Stage::Trades => only("pm-trades", "*"),
            Stage::Markets => only("pm-markets", "*\" --watch \"*"),
            Stage::Books => only("pm-books", "*"),
            Stage::RotateBooks => only("jsonl-rotate", "*\" --stream books \"*"),
            Stage::RotateGamma => only("jsonl-rotate", "*\" --stream gamma \"*"),
            Stage::RotateWs => only("jsonl-rotate", "*\" --stream ws_market \"*"),
            Stage::Manifest => only("manifest", "\" build \"*"),
            Stage::Stream => only("pm-stream", "*"),
            Stage::Tee => ("tee", "#!/bin/sh\n# test stand-in: tee dies at start-up\nkill -9 $$\n".to_string()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Death {
    /// kill -9 of the stage while the chain runs.
    Kill9,
    /// kill -9 of the stage while collect.sh itself is SIGSTOPped; SIGCONT a second later.
    Kill9WhileSupervisorStopped,
    /// The stage dies of SIGKILL at start-up, before its first line.
    AtStartUp,
}

/// Settings of a matrix run: fast cadences, the stage's WS setting, temp files under the test dir.
fn matrix_env(stage: Stage, tmp: &Path) -> Vec<(String, String)> {
    let mut e: Vec<(String, String)> = vec![
        ("PMARCHIVE_ROTATE_SECS".into(), "3600".into()),
        ("PMARCHIVE_WS".into(), if stage.ws() { "1" } else { "0" }.into()),
        ("TMPDIR".into(), tmp.display().to_string()),
    ];
    if stage.ws() {
        // Nothing listens there: pm-stream keeps retrying (and recording its failures), which is all a
        // kill test needs from it.
        e.push(("PMARCHIVE_WS_URL".into(), "ws://127.0.0.1:9/ws/market".into()));
    }
    e
}

fn with_env<'a>(extra: &'a [(String, String)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(more.iter().copied()).collect()
}

/// One cell of the matrix: the stage dies (as `death` says), collect.sh exits 1 within a generous
/// deadline with no process of the chain left, then a restart seals/adopts what was left, collects,
/// stops cleanly, and the archive verifies. After a kill in steady state, nothing the venue served
/// more than the flush cadence (1 s, + 1 s for pipes) before the kill is missing. Returns the manifests.
fn stage_dies(stage: Stage, death: Death) -> Vec<Value> {
    let what = format!("{stage:?} {death:?}");
    let v = Venue::start();
    let clock = v.simulate_clock(time::macros::datetime!(2026-08-22 16:04:00 UTC), 1.0);
    let dir = Scratch::new("matrix");
    let (root, tmp) = (dir.0.join("root"), dir.0.join("tmp"));
    std::fs::create_dir_all(&tmp).unwrap();
    let env = matrix_env(stage, &tmp);
    let mut c = collect(&v, &root, &clock, &with_env(&env, &[]));
    if death == Death::AtStartUp {
        // A bin dir where this stage's binary dies at start-up (also first in PATH, for tee).
        let bin = dir.0.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let real = common::bin("pm-markets").parent().unwrap().to_path_buf();
        for b in ["pm-markets", "pm-books", "jsonl-rotate", "manifest", "pm-stream", "pm-trades"] {
            std::os::unix::fs::symlink(real.join(b), bin.join(b)).unwrap();
        }
        let (name, script) = stage.failing_binary(&real);
        let _ = std::fs::remove_file(bin.join(name));
        std::fs::write(bin.join(name), script).unwrap();
        std::fs::set_permissions(bin.join(name), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        c.env("PMARCHIVE_BIN_DIR", &bin).env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()));
    }
    let mut chain = Chain::spawn(c, &dir.0.join("run1.log"));

    let mut killed_at = None;
    if death != Death::AtStartUp {
        // Steady state: a /books reply and a Gamma reply served at least 3 s ago (so that the loss check
        // below has something to check), and the stage is running.
        let start = Instant::now();
        let pattern = stage.pattern(&root, &tmp, &v.url());
        let pid = loop {
            assert!(start.elapsed() < Duration::from_secs(90), "{what}: no steady state:\n{}", chain.stderr());
            assert!(chain.child.try_wait().unwrap().is_none(), "{what}: collect.sh ended early:\n{}", chain.stderr());
            std::thread::sleep(Duration::from_millis(200));
            let old = v.now() - time::Duration::seconds(3);
            if served(&v, "/books", Some(old)).is_empty() || served(&v, "/markets/slug/", Some(old)).is_empty() {
                continue;
            }
            let out = Command::new("pgrep").args(["-f", &pattern]).output().unwrap();
            let pids: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
            match pids.len() {
                1 => break pids[0].clone(),
                0 => continue,
                _ => panic!("{what}: pattern {pattern:?} matches several processes: {pids:?}"),
            }
        };
        killed_at = Some(v.now());
        if death == Death::Kill9WhileSupervisorStopped {
            chain.signal("STOP", &chain.pid());
            chain.signal("KILL", &pid);
            std::thread::sleep(Duration::from_secs(1));
            chain.signal("CONT", &chain.pid());
        } else {
            chain.signal("KILL", &pid);
        }
    }
    let died = Instant::now();
    let status = chain.wait(Duration::from_secs(60), &what);
    // A measurement for the report (`--nocapture`), never an assertion.
    let since = if death == Death::AtStartUp { "its start" } else { "the kill (SIGCONT when stopped)" };
    eprintln!("matrix: {what}: collect.sh exited {:.2} s after {since}", died.elapsed().as_secs_f64());
    let log = chain.stderr();
    assert_eq!(status.code(), Some(1), "{what}:\n{log}");
    let start = Instant::now();
    while !chain.group().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "{what}: left running: {:?}\n{log}", chain.group());
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(chain);
    // Only a killed rotator can leave its open file partial.
    for p in partials(&root) {
        let s = p.to_string_lossy();
        assert!(
            stage.stream().is_some_and(|st| s.contains(&format!("stream={st}/"))),
            "{what}: partial file left: {p:?}\n{log}"
        );
    }

    // Restart (as systemd would): the new run seals the dead run's partials (recovered), lists sealed
    // files no manifest lists (adopted), collects and stops cleanly.
    let c2 = collect(&v, &root, &clock, &with_env(&env, &[("PMARCHIVE_DURATION", "3")]));
    let mut chain2 = Chain::spawn(c2, &dir.0.join("run2.log"));
    let status = chain2.wait(Duration::from_secs(60), &what);
    assert_eq!(status.code(), Some(0), "{what}: restart:\n{}", chain2.stderr());
    assert!(partials(&root).is_empty(), "{what}: {:?}", partials(&root));
    if let Some(killed_at) = killed_at {
        let cutoff = killed_at - time::Duration::seconds(2);
        for (stream, prefix, endpoint) in [("books", "/books", "books"), ("gamma", "/markets/slug/", "gamma")] {
            let before = count(&served(&v, prefix, Some(cutoff)));
            let got = count(&archived(&lines(&root, stream), endpoint));
            assert!(!before.is_empty(), "{what}: {prefix} served before the kill");
            for (k, n) in &before {
                assert!(
                    got.get(k).copied().unwrap_or(0) >= *n,
                    "{what}: a {prefix} reply served before the kill is missing"
                );
            }
        }
    }
    let mut verify = tool("manifest");
    verify.args(["verify", root.to_str().unwrap()]);
    let vo = run_with_timeout(verify, None, Duration::from_secs(60));
    assert_eq!(vo.status.code(), Some(0), "{what}: {}", String::from_utf8_lossy(&vo.stdout));
    std::fs::read_dir(root.join("manifests"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().to_string_lossy().ends_with(".json"))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect()
}

/// Every way of dying for one stage.
fn stage_matrix(stage: Stage) {
    for death in [Death::Kill9, Death::Kill9WhileSupervisorStopped, Death::AtStartUp] {
        let manifests = stage_dies(stage, death);
        let text: Vec<String> = manifests.iter().map(Value::to_string).collect();
        let adopted = text.iter().any(|m| m.contains("\"adopted\":true"));
        let recovered = text.iter().any(|m| m.contains("\"recovered\":true"));
        match (stage, death) {
            // The rotators seal after the manifest stage died: the restart adopts their files.
            (Stage::Manifest, Death::Kill9 | Death::Kill9WhileSupervisorStopped) => assert!(adopted, "{death:?}"),
            // A killed rotator's open file is sealed by the restart.
            (Stage::RotateBooks | Stage::RotateGamma, Death::Kill9 | Death::Kill9WhileSupervisorStopped) => {
                assert!(recovered, "{stage:?} {death:?}")
            }
            // Died before reading anything: whether a rotator sealed a file before the stop is timing.
            (Stage::Manifest, Death::AtStartUp) => {}
            _ => assert!(!adopted, "{stage:?} {death:?}: nothing to adopt when the manifest stage lived"),
        }
    }
}

#[test]
fn chain_matrix_pm_trades_dies() {
    stage_matrix(Stage::Trades);
}

#[test]
fn chain_matrix_pm_markets_dies() {
    stage_matrix(Stage::Markets);
}

#[test]
fn chain_matrix_pm_books_dies() {
    stage_matrix(Stage::Books);
}

#[test]
fn chain_matrix_books_rotator_dies() {
    stage_matrix(Stage::RotateBooks);
}

#[test]
fn chain_matrix_gamma_rotator_dies() {
    stage_matrix(Stage::RotateGamma);
}

#[test]
fn chain_matrix_manifest_stage_dies() {
    stage_matrix(Stage::Manifest);
}

#[test]
fn chain_matrix_pm_stream_dies() {
    stage_matrix(Stage::Stream);
}

#[test]
fn chain_matrix_tee_dies() {
    stage_matrix(Stage::Tee);
}

#[test]
fn chain_matrix_ws_rotator_dies() {
    stage_matrix(Stage::RotateWs);
}

#[test]
fn sigterm_stops_the_chain_cleanly_even_during_start_up() {
    let v = Venue::start();
    let clock = v.simulate_clock(time::macros::datetime!(2026-08-22 16:04:00 UTC), 1.0);
    let dir = Scratch::new("sigterm");
    let root = dir.0.join("root");
    for delay_ms in [0u64, 300, 4000] {
        let mut chain = Chain::spawn(collect(&v, &root, &clock, &[("PMARCHIVE_WS", "0")]), &dir.0.join("run.log"));
        std::thread::sleep(Duration::from_millis(delay_ms));
        chain.signal("TERM", &chain.pid());
        let status = chain.wait(Duration::from_secs(60), "SIGTERM");
        // At 0 ms the signal may arrive before bash has read the script: it then ends by the signal.
        let by_signal = std::os::unix::process::ExitStatusExt::signal(&status) == Some(15) && delay_ms == 0;
        assert!(status.code() == Some(0) || by_signal, "after {delay_ms} ms: {status:?}\n{}", chain.stderr());
        assert!(chain.group().len() <= 1, "{:?}", chain.group());
    }
    assert!(partials(&root).is_empty());
    let mut verify = tool("manifest");
    verify.args(["verify", root.to_str().unwrap()]);
    assert_eq!(run_with_timeout(verify, None, Duration::from_secs(60)).status.code(), Some(0));
}

/// Runs in a private mount namespace with a 16 MiB tmpfs as the archive root (plain `unshare -m` as
/// root, as in CI; `unshare -rm` otherwise): a first run until the disk is full, a restart while it is
/// still full, then (space freed) a restart as systemd would do it, `manifest verify`, and a copy of
/// the archive out of the namespace. Prints `name=exit code` lines into OUT/rc.txt.
const DISK_FULL_SCRIPT: &str = r#"
set -u
root=$PMARCHIVE_ROOT; out=$1; collect=$2; manifest=$3
mount -t tmpfs -o size=16m pmtest "$root" || { echo "mount=97" >> "$out/rc.txt"; exit 97; }
echo "mount=0" >> "$out/rc.txt"
run() { # NAME [ENV...]: collect.sh bounded by timeout (124 = it hung)
  local name=$1; shift
  env "$@" timeout -k 5 120 "$collect" 2>> "$out/$name.log"; echo "$name=$?" >> "$out/rc.txt"
}
# 1. Collect; once the books stream has an open file, fill the disk.
( for _ in $(seq 300); do
    find "$root" -name '*.partial' -path '*stream=books*' | grep -q . && break; sleep 0.2
  done
  sleep 1; cat /dev/zero > "$root/filler" 2>/dev/null; echo "filled" >> "$out/rc.txt" ) &
run full
wait
# 2. A restart while the disk is still full must not hang either.
run still_full PMARCHIVE_DURATION=5
# 3. Space returns; the next start collects again by itself.
rm -f "$root/filler"
run recovered PMARCHIVE_DURATION=4
"$manifest" verify "$root" > "$out/verify.txt" 2>&1; echo "verify=$?" >> "$out/rc.txt"
cp -a "$root" "$out/archive"
"#;

/// §2, the chain's side: the disk fills → the chain stops (exit 1, no hang); a restart while it is full
/// does not hang; after space returns the next start collects again; the archive verifies.
#[test]
fn a_full_disk_stops_the_chain_and_the_next_start_after_space_returns_collects_again() {
    let v = Venue::start();
    let clock = v.simulate_clock(time::macros::datetime!(2026-08-22 16:04:00 UTC), 1.0);
    let dir = Scratch::new("diskfull");
    let (root, out) = (dir.0.join("root"), dir.0.join("out"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let is_root = String::from_utf8_lossy(&Command::new("id").arg("-u").output().unwrap().stdout).trim() == "0";
    let mut unshare = Command::new("unshare");
    unshare.arg(if is_root { "-m" } else { "-rm" }).args(["bash", "-c", DISK_FULL_SCRIPT, "disk-full"]);
    unshare.arg(&out).arg(repo().join("pipelines/collect.sh")).arg(common::bin("manifest"));
    let c = collect_as(unshare, &v, &root, &clock, &[("PMARCHIVE_WS", "0"), ("PMARCHIVE_ROTATE_SECS", "3600")]);
    let mut chain = Chain::spawn(c, &dir.0.join("unshare.log"));
    let status = chain.wait(Duration::from_secs(400), "disk-full script");
    let rc: HashMap<String, String> = std::fs::read_to_string(out.join("rc.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let logs = |n: &str| std::fs::read_to_string(out.join(format!("{n}.log"))).unwrap_or_default();
    assert_eq!(rc.get("mount").map(String::as_str), Some("0"), "tmpfs mount failed: {status:?} {}", chain.stderr());
    assert_eq!(status.code(), Some(0), "{}", chain.stderr());
    assert_eq!(rc["full"], "1", "the chain stops with exit 1 on a full disk:\n{}", logs("full"));
    let still = rc["still_full"].as_str();
    assert!(
        still != "124" && still != "0",
        "a restart on a full disk ends (non-zero), got {still}:\n{}",
        logs("still_full")
    );
    assert_eq!(rc["recovered"], "0", "after space returns the chain collects again:\n{}", logs("recovered"));
    // The recovered run collected books (its run id is in its log) and the archive verifies.
    let log3 = logs("recovered");
    let run_id = log3.split("collect.sh: run ").nth(1).and_then(|t| t.split(':').next()).unwrap().to_string();
    let books = lines(&out.join("archive"), "books");
    assert!(books.iter().any(|l| l.contains(&run_id) && l.contains("\"kind\":\"http\"")), "no books from {run_id}");
    assert_eq!(
        rc["verify"],
        "0",
        "manifest verify after recovery: {}",
        std::fs::read_to_string(out.join("verify.txt")).unwrap_or_default()
    );
}

/// Bad settings are refused by the tools' own parsers (`--check-args`) before anything starts: exit 2,
/// one line naming the setting, no stage started, no manifest written.
#[test]
fn collect_sh_rejects_bad_configuration_with_exit_2_before_anything_starts() {
    let dir = Scratch::new("badcfg");
    let bins = common::bin("pm-markets").parent().unwrap().to_path_buf();
    let cases: &[(&str, &str)] = &[
        ("PMARCHIVE_INTERVAL=fast\n", "PMARCHIVE_INTERVAL"),
        ("PMARCHIVE_INTERVAL=0.001\n", "PMARCHIVE_INTERVAL"),
        ("PMARCHIVE_FAMILIES=bogus\n", "PMARCHIVE_FAMILIES"),
        ("PMARCHIVE_FLUSH_SECS=61\n", "PMARCHIVE_FLUSH_SECS"),
        ("PMARCHIVE_ROTATE_SECS=0\n", "PMARCHIVE_ROTATE_SECS"),
        ("PMARCHIVE_MANIFEST_REFRESH=-1\n", "PMARCHIVE_MANIFEST_REFRESH"),
        ("PMARCHIVE_CLOB_URL=ftp://x\n", "PMARCHIVE_CLOB_URL"),
        ("PMARCHIVE_AHEAD=many\n", "PMARCHIVE_AHEAD"),
        ("PMARCHIVE_WS=2\n", "PMARCHIVE_WS"),
        ("PMARCHIVE_TRADES=yes\n", "PMARCHIVE_TRADES"),
        ("PMARCHIVE_DATA_URL=ftp://x\n", "PMARCHIVE_DATA_URL"),
        ("PMARCHIVE_TRADES_INTERVAL=0.001\n", "PMARCHIVE_TRADES_INTERVAL"),
        ("PMARCHIVE_DURATION=0\n", "PMARCHIVE_DURATION"),
    ];
    for (i, (body, setting)) in cases.iter().enumerate() {
        let env = dir.0.join(format!("bad{i}.env"));
        std::fs::write(&env, body).unwrap();
        let root = dir.0.join(format!("a{i}"));
        let mut c = Command::new(repo().join("pipelines/collect.sh"));
        c.arg(&env).env("PMARCHIVE_BIN_DIR", &bins).env("PMARCHIVE_ROOT", &root).env_remove("PMARCHIVE_WS");
        let out = run_with_timeout(c, None, Duration::from_secs(60));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body}: {err}");
        assert_eq!(err.lines().count(), 1, "{body}: one line: {err}");
        assert!(err.starts_with("collect.sh: ") && err.contains(setting), "{body}: {err}");
        assert!(!err.contains("collect.sh: started"), "{body}: {err}");
        assert!(!root.join("manifests").exists(), "{body}: nothing written");
    }
    for args in [vec!["/nonexistent.env".to_string()], vec!["--bogus".into()], vec!["a".into(), "b".into()]] {
        let mut c = Command::new(repo().join("pipelines/collect.sh"));
        c.args(&args).env("PMARCHIVE_BIN_DIR", &bins).env("PMARCHIVE_ROOT", dir.0.join("b"));
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

/// The env file is data, read with systemd's EnvironmentFile= rules: an unquoted value keeps its
/// spaces and a '#' inside it, quotes work, `$(…)` never runs, and a value in the file wins over the
/// environment. The label reaches the run manifest as systemd would pass it.
#[test]
fn the_env_file_is_read_as_data_like_systemd_does() {
    let v = Venue::start();
    let clock = v.simulate_clock(time::macros::datetime!(2026-08-22 16:04:00 UTC), 1.0);
    let dir = Scratch::new("envfile");
    let root = dir.0.join("root");
    let marker = dir.0.join("pwned");
    let env = dir.0.join("collector.env");
    std::fs::write(
        &env,
        format!(
            "# comment\n  ; another comment\nPMARCHIVE_LABEL=vps-fra1 soak #1   \n\
             PMARCHIVE_USER_AGENT=\"ua $(touch {m}) `touch {m}`\"\nPMARCHIVE_HOST='h1'\n\
             PMARCHIVE_FAMILIES = 5m\nPMARCHIVE_DURATION=2\nnot an assignment\n",
            m = marker.display()
        ),
    )
    .unwrap();
    let mut c = collect(&v, &root, &clock, &[("PMARCHIVE_WS", "0"), ("PMARCHIVE_FAMILIES", "15m")]);
    c.arg(&env);
    let mut chain = Chain::spawn(c, &dir.0.join("run.log"));
    let status = chain.wait(Duration::from_secs(60), "env file run");
    assert_eq!(status.code(), Some(0), "{}", chain.stderr());
    assert!(!marker.exists(), "$(…) or backticks in the env file ran");
    let manifests: Vec<Value> = std::fs::read_dir(root.join("manifests"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().to_string_lossy().ends_with(".json"))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect();
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0]["label"], "vps-fra1 soak #1", "{}", manifests[0]);
    assert_eq!(manifests[0]["host"], "h1", "{}", manifests[0]);
    // The file's FAMILIES (5m) won over the environment's (15m); the literal user agent was sent.
    let books = lines(&root, "books");
    assert!(books.iter().any(|l| l.contains("btc-updown-5m-")), "5m markets tracked");
    assert!(!books.iter().any(|l| l.contains("btc-updown-15m-")), "15m markets not tracked");
}

#[test]
fn discover_sh_writes_the_checkpoint_3_artefacts_labelled_loopback() {
    let v = Venue::start();
    let dir = Scratch::new("discover");
    let out_dir = dir.0.clone();
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

/// The cycle script (what systemd starts) reads the env file the same way as collect.sh: as data. The
/// label with a space and '#' reaches the manifest, `$(…)` does not run, and a bad setting is exit 2,
/// which the collector unit's RestartPreventExitStatus=2 turns into "stop restarting".
#[test]
fn the_cycle_script_reads_the_env_file_as_data_and_passes_exit_2_on() {
    let v = Venue::start();
    let clock = v.simulate_clock(time::macros::datetime!(2026-08-22 16:04:00 UTC), 1.0);
    let dir = Scratch::new("cycle");
    let root = dir.0.join("root");
    let marker = dir.0.join("pwned");
    let bins = common::bin("pm-markets").parent().unwrap().to_path_buf();
    let body = |extra: &str| {
        format!(
            "PMARCHIVE_ROOT={}\nPMARCHIVE_BIN_DIR={}\nPMARCHIVE_LABEL=vps-fra1 soak #1\n\
             PMARCHIVE_USER_AGENT=ua $(touch {})\nPMARCHIVE_DURATION=2\nPMARCHIVE_WS=0\n{extra}",
            root.display(),
            bins.display(),
            marker.display()
        )
    };
    let env = dir.0.join("collector.env");
    let cycle = || {
        let c = Command::new(repo().join("scripts/run_polymarket_collector_cycle.sh"));
        let mut c = collect_as(c, &v, &root, &clock, &[]);
        c.arg(&env).env_remove("PMARCHIVE_ROOT").env_remove("PMARCHIVE_BIN_DIR");
        c
    };
    std::fs::write(&env, body("")).unwrap();
    let mut chain = Chain::spawn(cycle(), &dir.0.join("run.log"));
    let status = chain.wait(Duration::from_secs(60), "cycle script");
    assert_eq!(status.code(), Some(0), "{}", chain.stderr());
    assert!(!marker.exists(), "$(…) in the env file ran");
    let labels: Vec<Value> = std::fs::read_dir(root.join("manifests"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().to_string_lossy().ends_with(".json"))
        .map(|e| serde_json::from_slice::<Value>(&std::fs::read(e.path()).unwrap()).unwrap()["label"].clone())
        .collect();
    assert_eq!(labels, vec![Value::from("vps-fra1 soak #1")]);

    std::fs::write(&env, body("PMARCHIVE_FLUSH_SECS=61\n")).unwrap();
    let mut chain = Chain::spawn(cycle(), &dir.0.join("run2.log"));
    let status = chain.wait(Duration::from_secs(60), "cycle script, bad setting");
    assert_eq!(status.code(), Some(2), "{}", chain.stderr());
    assert!(chain.stderr().contains("collect.sh: bad configuration in PMARCHIVE_FLUSH_SECS"), "{}", chain.stderr());

    let unit = std::fs::read_to_string(repo().join("systemd/polymarket-orderbook-collector.service")).unwrap();
    assert!(unit.lines().any(|l| l == "RestartPreventExitStatus=2"), "exit 2 stops systemd's restart loop");
}

/// discover.sh never hangs on its child either: SIGTERM stops pm-markets and ends the script with 143,
/// nothing written, no process left.
#[test]
fn discover_sh_stops_on_sigterm() {
    let v = Venue::start();
    for _ in 0..20 {
        v.fault("/markets/slug/", Fault::Slow(Duration::from_secs(4)));
    }
    let dir = Scratch::new("discover-term");
    let out_dir = dir.0.join("out");
    let mut c = Command::new(repo().join("pipelines/discover.sh"));
    c.args(["--out-dir", out_dir.to_str().unwrap(), "--gamma-url", &v.url(), "--bin-dir"])
        .arg(common::bin("pm-markets").parent().unwrap())
        .args(["--", "--families", "5m", "--timeout", "3"]);
    let mut chain = Chain::spawn(c, &dir.0.join("run.log"));
    let start = Instant::now();
    while v.count("/markets/slug/") == 0 {
        assert!(start.elapsed() < Duration::from_secs(60), "pm-markets never asked: {}", chain.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    chain.signal("TERM", &chain.pid());
    let status = chain.wait(Duration::from_secs(60), "discover.sh after SIGTERM");
    assert_eq!(status.code(), Some(143), "{}", chain.stderr());
    assert!(!out_dir.join("polymarket_btc_markets_latest.json").exists());
    assert!(chain.group().is_empty(), "left running: {:?}", chain.group());
}

/// scripts/read_env_file.sh follows systemd's EnvironmentFile= parser (src/basic/env-file.c) case by
/// case; nothing in the file runs.
#[test]
fn read_env_file_follows_systemd_rules() {
    let dir = Scratch::new("envrules");
    let env = dir.0.join("x.env");
    let marker = dir.0.join("ran");
    let m = marker.display();
    std::fs::write(
        &env,
        format!(
            "# comment\n; also a comment\n   \nA=vps-fra1 soak #1  \n  B = spaced\t \nC=\"q \\\"x\\\" \\$HOME \\\\ \\n `touch {m}`\"\n\
             D='lit $(touch {m}) \\n'\nE=a\\\nb\\\\c\nF=\nG\n1BAD=x\nH=x\"y\" 'z'\nI=\"two\nlines\"\nJ=$(touch {m})\nK=noeol"
        ),
    )
    .unwrap();
    let keys = ["A", "B", "C", "D", "E", "F", "H", "I", "J", "K"];
    let script = format!(
        ". \"$1\"; pm_read_env_file \"$2\" || exit 9; for k in {}; do printf '%s=[%s]\\n' \"$k\" \"${{!k}}\"; done; \
         printf 'G=%s\\n' \"${{G-unset}}\"; env | grep -c '^1BAD=' || true",
        keys.join(" ")
    );
    let mut c = Command::new("bash");
    c.args(["-c", &script, "t"]).arg(repo().join("scripts/read_env_file.sh")).arg(&env).env("A", "from-env");
    let out = run_with_timeout(c, None, Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = format!(
        "A=[vps-fra1 soak #1]\nB=[spaced]\nC=[q \"x\" $HOME \\ \\n `touch {m}`]\nD=[lit $(touch {m}) \\n]\nE=[ab\\c]\nF=[]\n\
         H=[x\"y\" 'z']\nI=[two\nlines]\nJ=[$(touch {m})]\nK=[noeol]\nG=unset\n0\n"
    );
    assert_eq!(text, expected, "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ignoring invalid assignment to \"1BAD\""));
    assert!(!marker.exists(), "nothing in the file may run");
}
