//! Integration tests of scripts/upload_archive_rclone.sh with the real `rclone` binary, against a
//! local-backend remote, `rclone serve sftp` (answers md5, like Drive) and `rclone serve webdav`
//! (no hashes) on 127.0.0.1. Each test has its own RCLONE_CONFIG, HOME and cache in a temp dir; servers
//! run with a fixed start timeout and are killed by PID. Also runs scripts/check_systemd_units.sh.
//!
//! rclone missing: the tests fail with "apt-get install rclone", unless PMARCHIVE_SKIP_RCLONE_TESTS=1.

mod common;

use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

const HOUR: &str = "venue=polymarket/stream=books/date=2026-11-20/hour=13";
const HOUR2: &str = "venue=polymarket/stream=gamma/date=2026-11-20/hour=14";
const DAY: u64 = 86_400;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script() -> PathBuf {
    repo().join("scripts/upload_archive_rclone.sh")
}

/// True when rclone can be used; false (with a notice) when skipping is requested; panics otherwise.
fn rclone_ok() -> bool {
    let ok = Command::new("rclone")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        return true;
    }
    if std::env::var("PMARCHIVE_SKIP_RCLONE_TESTS").as_deref() == Ok("1") {
        eprintln!("NOTICE: rclone not on PATH; offload test SKIPPED (PMARCHIVE_SKIP_RCLONE_TESTS=1)");
        return false;
    }
    panic!("rclone not found on PATH: install it with `apt-get install rclone` (or set PMARCHIVE_SKIP_RCLONE_TESTS=1 to skip these tests)");
}

/// One test's world: archive root, a local remote dir, and an isolated rclone environment.
struct World {
    dir: PathBuf,
    root: PathBuf,
    remote_dir: PathBuf,
    /// extra env (remote definitions)
    env: Vec<(String, String)>,
    /// Files listed in this world's run manifest: path -> entry (see `list`).
    listed: RefCell<BTreeMap<String, Value>>,
}

impl World {
    fn new(tag: &str) -> World {
        let dir = common::tempdir(tag);
        let root = dir.join("archive");
        std::fs::create_dir_all(root.join("manifests")).unwrap();
        std::fs::write(dir.join("rclone.conf"), "").unwrap();
        std::fs::create_dir_all(dir.join("home")).unwrap();
        World { remote_dir: dir.join("remote"), dir, root, env: Vec::new(), listed: RefCell::new(BTreeMap::new()) }
    }

    /// An rclone (or script) command with this world's isolated environment.
    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env("RCLONE_CONFIG", self.dir.join("rclone.conf"))
            .env("HOME", self.dir.join("home"))
            .env("XDG_CACHE_HOME", self.dir.join("home/cache"))
            .env("XDG_CONFIG_HOME", self.dir.join("home/config"))
            .env("TMPDIR", &self.dir);
        for (k, _) in std::env::vars() {
            if k.starts_with("PMARCHIVE_") || (k.starts_with("RCLONE_") && k != "RCLONE_CONFIG") {
                c.env_remove(k);
            }
        }
        // The uploader asks the `manifest` tool of this build (CARGO_TARGET_DIR may be anywhere).
        c.env("PMARCHIVE_BIN_DIR", common::bin("manifest").parent().unwrap());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// The uploader against `remote` with `args`, min-age 0 unless given.
    fn upload(&self, remote: &str, args: &[&str]) -> Output {
        let mut c = self.command(&script());
        c.arg("--root").arg(&self.root).arg("--remote").arg(remote);
        if !args.contains(&"--min-age") {
            c.args(["--min-age", "0"]);
        }
        c.args(args);
        common::run_with_timeout(c, None, Duration::from_secs(90))
    }

    fn local_remote(&self) -> String {
        self.remote_dir.to_str().unwrap().to_string()
    }

    /// Writes an archive file with `len` bytes of deterministic data, modified `age_s` seconds ago, and
    /// lists it (with its sha256 as sealed) in the world's run manifest unless it is a `.partial`.
    fn file(&self, rel: &str, len: usize, seed: u64, age_s: u64) -> PathBuf {
        let p = self.file_unlisted(rel, len, seed, age_s);
        if !rel.ends_with(".partial") {
            self.list(rel);
        }
        p
    }

    /// Writes an archive file that no manifest lists.
    fn file_unlisted(&self, rel: &str, len: usize, seed: u64, age_s: u64) -> PathBuf {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data(len, seed)).unwrap();
        age(&p, age_s);
        p
    }

    /// Lists `rel` with its current sha256 in `manifests/run-testhost-20261120T130000Z-1-ab.json`, shaped
    /// like manifest build's output (pmarchive.manifest/1, `streams.<s>.files[]`, an unreadable tail as
    /// `tail_path`/`tail_sha256` of its file's entry) and written the same way (serde_json, pretty).
    /// Derived test data, not a manifest build run.
    fn list(&self, rel: &str) {
        let sha = sha256_hex(&self.root.join(rel));
        let mut listed = self.listed.borrow_mut();
        if let Some(file) = rel.strip_suffix(".unreadable-tail") {
            let e = listed.entry(file.to_string()).or_insert_with(|| json!({"path": file, "sha256": null}));
            e["tail_path"] = json!(rel);
            e["tail_sha256"] = json!(sha);
        } else {
            let e = listed.entry(rel.to_string()).or_insert_with(|| json!({"tail_path": null, "tail_sha256": null}));
            e["path"] = json!(rel);
            e["sha256"] = json!(sha);
            e["sha256_check"] = json!("ok");
        }
        let mut streams = serde_json::Map::new();
        for (path, e) in listed.iter() {
            let stream = path.split('/').nth(1).unwrap().trim_start_matches("stream=").to_string();
            let s = streams.entry(stream).or_insert_with(|| json!({"files": [], "totals": {"files": 0}}));
            s["files"].as_array_mut().unwrap().push(e.clone());
        }
        let doc = json!({"schema": "pmarchive.manifest/1", "run_id": "20261120T130000Z-1-ab", "host": "testhost",
            "label": "derived test manifest {\"not\": \"a file\"}", "problems": [], "config": [], "streams": streams});
        let text = serde_json::to_string_pretty(&doc).unwrap();
        std::fs::write(self.root.join("manifests/run-testhost-20261120T130000Z-1-ab.json"), text + "\n").unwrap();
    }

    fn records(&self) -> Vec<Value> {
        let p = self.root.join("manifests/uploads.jsonl");
        if p.exists() {
            common::read_jsonl(&p)
        } else {
            Vec::new()
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so files do not compress and differ by seed.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn age(p: &Path, age_s: u64) {
    let t = SystemTime::now() - Duration::from_secs(age_s);
    std::fs::File::options().write(true).open(p).unwrap().set_modified(t).unwrap();
}

fn md5_hex(p: &Path) -> String {
    let out = Command::new("md5sum").arg(p).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

fn sha256_hex(p: &Path) -> String {
    pm_archive::util::sha256_file(p).unwrap().0
}

/// Every file under `dir` with its bytes and mtime (a snapshot to prove "nothing changed").
fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, SystemTime)> {
    let mut m = BTreeMap::new();
    fn walk(base: &Path, d: &Path, m: &mut BTreeMap<String, (Vec<u8>, SystemTime)>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                m.insert(format!("{}/", p.strip_prefix(base).unwrap().display()), (Vec::new(), SystemTime::UNIX_EPOCH));
                walk(base, &p, m);
            } else {
                let meta = std::fs::metadata(&p).unwrap();
                m.insert(
                    p.strip_prefix(base).unwrap().display().to_string(),
                    (std::fs::read(&p).unwrap(), meta.modified().unwrap()),
                );
            }
        }
    }
    walk(dir, dir, &mut m);
    m
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit status\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
}

/// Upload records for `rel` (in file order).
fn uploads_of<'a>(recs: &'a [Value], rel: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["record"] == "upload" && r["local_path"] == rel).collect()
}

fn deletes_of<'a>(recs: &'a [Value], rel: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["record"] == "local_delete" && r["local_path"] == rel).collect()
}

/// Checks one upload record's shape and its hashes against the local file content `bytes`.
fn check_upload_record(r: &Value, rel: &str, bytes: &[u8], remote: &str, by: &str) {
    // A directory of its own: tests run in parallel threads of one process (a per-process name raced).
    let dir = common::tempdir("offload-hash");
    let tmp = dir.join("content");
    std::fs::write(&tmp, bytes).unwrap();
    let (md5, sha) = (md5_hex(&tmp), sha256_hex(&tmp));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(r["schema"], "pmarchive.upload/1");
    assert_eq!(r["local_path"], rel);
    assert_eq!(r["remote_path"], rel);
    assert_eq!(r["remote"], remote);
    assert_eq!(r["bytes"], bytes.len() as u64);
    assert_eq!(r["sha256"], sha);
    assert_eq!(r["md5"], md5);
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["verified_by"], by);
    assert_eq!(r["dry_run"], false);
    assert_eq!(r["rclone_exit"], 0);
    if by == "md5" {
        assert_eq!(r["remote_md5"], md5);
    } else {
        assert!(r["remote_md5"].is_null());
    }
    let at = r["at_utc"].as_str().unwrap();
    assert!(at.len() == 27 && at.ends_with('Z') && at.as_bytes()[19] == b'.', "at_utc {at}");
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(keys.len(), 14, "fields: {keys:?}");
}

// ------------------------------------------------------------------------------------------- servers

/// An `rclone serve` process on 127.0.0.1, killed by PID on drop.
struct Serve {
    child: Child,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `rclone serve <kind>` on a served dir and defines remote `srv:` for it in `w.env`.
fn serve(w: &mut World, kind: &str, dir: &Path) -> Serve {
    std::fs::create_dir_all(dir).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(w.dir.join(format!("serve-{kind}.log"))).unwrap();
    let mut c = w.command(Path::new("rclone"));
    c.args(["serve", kind])
        .arg(dir)
        .args(["--addr", &addr, "--user", "u", "--pass", "p"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let child = c.spawn().expect("spawn rclone serve");
    let s = Serve { child };
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "rclone serve {kind} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let obscured = w.command(Path::new("rclone")).args(["obscure", "p"]).output().unwrap();
    let pass = String::from_utf8(obscured.stdout).unwrap().trim().to_string();
    let mut env = vec![("RCLONE_CONFIG_SRV_USER", "u".to_string()), ("RCLONE_CONFIG_SRV_PASS", pass)];
    match kind {
        "sftp" => env.extend([
            ("RCLONE_CONFIG_SRV_TYPE", "sftp".to_string()),
            ("RCLONE_CONFIG_SRV_HOST", "127.0.0.1".to_string()),
            ("RCLONE_CONFIG_SRV_PORT", port.to_string()),
        ]),
        _ => env.extend([
            ("RCLONE_CONFIG_SRV_TYPE", "webdav".to_string()),
            ("RCLONE_CONFIG_SRV_URL", format!("http://{addr}")),
            ("RCLONE_CONFIG_SRV_VENDOR", "other".to_string()),
        ]),
    }
    w.env.extend(env.into_iter().map(|(k, v)| (k.to_string(), v)));
    s
}

// --------------------------------------------------------------------------------------------- tests

#[test]
fn help_and_bad_arguments() {
    let out = Command::new(script()).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--dry-run",
        "--retention-days",
        "--allow-size-only-delete",
        "--immutable",
        "uploads.jsonl",
        "--reverify",
        "--reverify-every",
        "--no-repair",
        "manifest unlisted",
    ] {
        assert!(help.contains(word), "--help lacks {word}");
    }
    for bad in
        [&["--bogus"][..], &["--min-age", "soon"], &["--retention-days", "-1"], &["--root"], &["--reverify-every", "x"]]
    {
        let out = Command::new(script()).args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
        assert!(stderr(&out).starts_with("upload_archive_rclone: "), "{}", stderr(&out));
    }
}

/// A dry run uploads nothing, appends nothing, deletes nothing, creates nothing.
#[test]
fn local_dry_run_changes_nothing() {
    if !rclone_ok() {
        return;
    }
    let w = World::new("offload-dry");
    w.file(&format!("{HOUR}/h-r1-0.jsonl.gz"), 1000, 1, 10 * DAY);
    w.file(&format!("{HOUR}/h-r1-1.jsonl.gz.partial"), 500, 2, 10 * DAY);
    let before = snapshot(&w.root);
    let out = w.upload(&w.local_remote(), &["--dry-run", "--retention-days", "0"]);
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains(&format!("dry-run: would upload {HOUR}/h-r1-0.jsonl.gz (1000 bytes)")),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("h-r1-1.jsonl.gz.partial"), "{}", stderr(&out));
    assert_eq!(snapshot(&w.root), before, "the archive changed in a dry run");
    assert!(!w.remote_dir.exists(), "the remote was created in a dry run");

    // And after a real upload, a dry run with retention still deletes and appends nothing.
    assert_exit(&w.upload(&w.local_remote(), &[]), 0);
    let (root_before, remote_before) = (snapshot(&w.root), snapshot(&w.remote_dir));
    let out = w.upload(&w.local_remote(), &["--dry-run", "--retention-days", "0"]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains(&format!("dry-run: would delete local {HOUR}/h-r1-0.jsonl.gz")), "{}", stderr(&out));
    assert_eq!(snapshot(&w.root), root_before);
    assert_eq!(snapshot(&w.remote_dir), remote_before);
}

/// A small upload lands with the hive layout and verifies by md5; `.partial` files and files younger
/// than --min-age are never uploaded; a second run uploads and records nothing new.
#[test]
fn local_upload_verifies_and_second_run_is_a_no_op() {
    if !rclone_ok() {
        return;
    }
    let w = World::new("offload-upload");
    let a = format!("{HOUR}/host1-20261120T130000Z-1-ab-0.jsonl.gz");
    let b = format!("{HOUR2}/host1-20261120T130000Z-1-ab-1.jsonl.gz");
    let tail = format!("{b}.unreadable-tail");
    let partial = format!("{HOUR2}/host1-20261120T130000Z-1-ab-2.jsonl.gz.partial");
    let young = format!("{HOUR2}/host1-20261120T130000Z-1-ab-3.jsonl.gz");
    for (i, rel) in [&a, &b, &tail, &partial].iter().enumerate() {
        w.file(rel, 2000 + i, i as u64 + 10, DAY);
    }
    w.file(&young, 100, 99, 0);
    std::fs::write(w.root.join("manifests/run-host1-20261120T130000Z-1-ab.json"), b"{\"v\":1}\n").unwrap();
    std::fs::write(w.root.join("manifests/.run-host1.json.tmp"), b"temp").unwrap();
    std::fs::write(w.root.join("manifests/recovered-files.jsonl"), b"{\"record\":\"sealed_file\"}\n").unwrap();

    let remote = w.local_remote();
    let out = w.upload(&remote, &["--min-age", "15m"]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("rclone: rclone v"), "logs rclone version: {err}");
    assert!(err.contains("summary dry_run=0 candidates=3 already_verified=0 uploaded=3 verified=3"), "{err}");
    assert!(err.contains("skipped_partial=1 skipped_young=1"), "{err}");

    let recs = w.records();
    assert_eq!(recs.len(), 3, "{recs:?}");
    for rel in [&a, &b, &tail] {
        let bytes = std::fs::read(w.root.join(rel)).unwrap();
        assert_eq!(std::fs::read(w.remote_dir.join(rel)).unwrap(), bytes, "remote copy of {rel}");
        let ups = uploads_of(&recs, rel);
        assert_eq!(ups.len(), 1);
        check_upload_record(ups[0], rel, &bytes, &remote, "md5");
    }
    assert!(!w.remote_dir.join(&partial).exists(), "a .partial was uploaded");
    assert!(!w.remote_dir.join(&young).exists(), "a file younger than --min-age was uploaded");
    assert!(w.root.join(&a).exists(), "default retention keeps everything");
    // Manifests go to <remote>/manifests/, temp files do not.
    assert!(w.remote_dir.join("manifests/run-host1-20261120T130000Z-1-ab.json").exists());
    assert!(w.remote_dir.join("manifests/uploads.jsonl").exists());
    assert!(!w.remote_dir.join("manifests/.run-host1.json.tmp").exists());
    assert!(!w.remote_dir.join("manifests/.upload.lock").exists());
    assert!(w.remote_dir.join("manifests/recovered-files.jsonl").exists(), "recovered-files.jsonl not offloaded");
    assert!(w.root.join("manifests/.upload-reverify").exists());
    assert!(!w.remote_dir.join("manifests/.upload-reverify").exists());
    assert!(!w.remote_dir.join("manifests/run-testhost-20261120T130000Z-1-ab.json.tmp").exists());

    // Second run: nothing new uploaded or recorded; the remote files are untouched. A changed run
    // manifest is uploaded again (manifests are not immutable).
    std::fs::write(w.root.join("manifests/run-host1-20261120T130000Z-1-ab.json"), b"{\"v\":2}\n").unwrap();
    let remote_before = snapshot(&w.remote_dir.join("venue=polymarket"));
    let out = w.upload(&remote, &["--min-age", "15m"]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("candidates=3 already_verified=3 uploaded=0 verified=0"), "{}", stderr(&out));
    assert_eq!(w.records().len(), 3);
    assert_eq!(snapshot(&w.remote_dir.join("venue=polymarket")), remote_before);
    assert_eq!(
        std::fs::read(w.remote_dir.join("manifests/run-host1-20261120T130000Z-1-ab.json")).unwrap(),
        b"{\"v\":2}\n"
    );
}

/// An upload killed midway (the whole process group, rclone included, SIGKILLed while a throttled
/// transfer is in flight) leaves a torn remote file and no record; the lock stops a second run while
/// the first is in flight; the next run replaces the torn copy, verifies and records it.
#[test]
fn local_killed_upload_is_completed_by_next_run_and_lock_prevents_overlap() {
    if !rclone_ok() {
        return;
    }
    let w = World::new("offload-kill");
    let big = format!("{HOUR}/h-r1-0.jsonl.gz");
    let small = format!("{HOUR}/h-r1-1.jsonl.gz");
    w.file(&big, 3 << 20, 7, 10 * DAY);
    w.file(&small, 300, 8, 10 * DAY);
    let big_bytes = std::fs::read(w.root.join(&big)).unwrap();
    let remote = w.local_remote();

    let mut c = w.command(&script());
    c.arg("--root").arg(&w.root).args(["--remote", &remote, "--min-age", "0", "--bwlimit", "256k"]);
    c.args(["--retention-days", "0", "--transfers", "1"]);
    c.stdin(Stdio::null())
        .stdout(std::fs::File::create(w.dir.join("run1.out")).unwrap())
        .stderr(std::fs::File::create(w.dir.join("run1.err")).unwrap())
        .process_group(0);
    let mut child = c.spawn().unwrap();
    let pid = child.id();

    // Wait until the big file is partly on the remote.
    let start = Instant::now();
    let remote_big = w.remote_dir.join(&big);
    loop {
        let len = std::fs::metadata(&remote_big).map(|m| m.len()).unwrap_or(0);
        if len > 0 && len < big_bytes.len() as u64 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "throttled run ended early");
        assert!(start.elapsed() < Duration::from_secs(30), "upload never started");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A second run while the first holds the lock: refused, nothing touched.
    let second = w.upload(&remote, &[]);
    assert_exit(&second, 1);
    assert!(stderr(&second).contains("another upload run holds the lock"), "{}", stderr(&second));

    let killed = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status().unwrap();
    assert!(killed.success());
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(200));

    let torn = std::fs::metadata(&remote_big).unwrap().len();
    assert!(torn < big_bytes.len() as u64, "remote copy is torn ({torn} bytes)");
    assert!(w.records().is_empty(), "a killed run left records: {:?}", w.records());
    assert!(w.root.join(&big).exists() && w.root.join(&small).exists(), "deleted before verification");
    let inflight = std::fs::read_to_string(w.root.join("manifests/.upload-inflight")).unwrap();
    assert!(inflight.lines().any(|l| l == big), "inflight journal: {inflight}");

    // The next run completes the upload (torn copy replaced), verifies, records, then applies retention.
    let out = w.upload(&remote, &["--retention-days", "0"]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains(&format!("removing torn remote copy of {big}")), "{}", stderr(&out));
    assert_eq!(std::fs::read(&remote_big).unwrap(), big_bytes);
    let recs = w.records();
    let ups = uploads_of(&recs, &big);
    assert_eq!(ups.len(), 1, "{recs:?}");
    check_upload_record(ups[0], &big, &big_bytes, &remote, "md5");
    assert_eq!(deletes_of(&recs, &big).len(), 1);
    assert!(!w.root.join("manifests/.upload-inflight").exists());
    assert!(!w.root.join(&big).exists());
}

/// A remote file corrupted after a verified upload is caught by the fresh check retention makes before
/// deleting: recorded verified:false, exit 1, local file kept; and it stays unverified on later runs
/// (rclone's --immutable refuses to overwrite it: exit 6, recorded).
#[test]
fn local_corrupted_remote_is_detected_and_never_counts_as_verified() {
    if !rclone_ok() {
        return;
    }
    let w = World::new("offload-corrupt");
    let good = format!("{HOUR}/h-r1-0.jsonl.gz");
    let bad = format!("{HOUR}/h-r1-1.jsonl.gz");
    w.file(&good, 5000, 1, 10 * DAY);
    w.file(&bad, 5000, 2, 10 * DAY);
    let remote = w.local_remote();
    assert_exit(&w.upload(&remote, &[]), 0);

    // Same size, different bytes: only a hash catches it.
    let rb = w.remote_dir.join(&bad);
    let mut bytes = std::fs::read(&rb).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&rb, &bytes).unwrap();
    let corrupt_md5 = md5_hex(&rb);

    let out = w.upload(&remote, &["--retention-days", "0"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("RE-VERIFICATION FAILED"), "{}", stderr(&out));
    assert!(w.root.join(&bad).exists(), "a file whose remote copy is corrupt was deleted");
    assert!(!w.root.join(&good).exists(), "the good file is past retention and verified");
    let recs = w.records();
    let ups = uploads_of(&recs, &bad);
    assert_eq!(ups.len(), 2, "{recs:?}");
    let last = ups[1];
    assert_eq!(last["verified"], false);
    assert_eq!(last["verified_by"], "md5");
    assert_eq!(last["remote_md5"], corrupt_md5.as_str());
    assert_ne!(last["remote_md5"], last["md5"]);
    assert!(deletes_of(&recs, &bad).is_empty());
    assert_eq!(deletes_of(&recs, &good).len(), 1);
    // The delete record comes after the verified upload record of the same sha256.
    let pos = |pred: &dyn Fn(&Value) -> bool| recs.iter().position(pred).unwrap();
    let up_pos = pos(&|r| r["record"] == "upload" && r["local_path"] == good.as_str() && r["verified"] == true);
    let del_pos = pos(&|r| r["record"] == "local_delete" && r["local_path"] == good.as_str());
    assert!(up_pos < del_pos);
    assert_eq!(recs[up_pos]["sha256"], recs[del_pos]["sha256"]);

    // Next run with --no-repair: still not verified, still not deleted, still exit 1.
    let out = w.upload(&remote, &["--retention-days", "0", "--no-repair"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("VERIFICATION FAILED"), "{}", stderr(&out));
    assert!(stderr(&out).contains("--no-repair is set"), "{}", stderr(&out));
    let recs = w.records();
    let ups = uploads_of(&recs, &bad);
    assert_eq!(ups.len(), 3);
    assert_eq!(ups[2]["verified"], false);
    assert_eq!(ups[2]["rclone_exit"], 6);
    assert!(w.root.join(&bad).exists());
    assert_eq!(std::fs::read(&rb).unwrap(), bytes, "the remote copy was overwritten");

    // Default (repair): the bad copy is renamed aside (kept), the local file (which matches its run
    // manifest) is uploaded again, verified, and only then deleted by retention.
    let out = w.upload(&remote, &["--retention-days", "0"]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("QUARANTINED the bad remote copy"), "{}", stderr(&out));
    let recs = w.records();
    let last = *uploads_of(&recs, &bad).last().unwrap();
    assert_eq!(last["verified"], true, "{last}");
    let q = last["quarantined_as"].as_str().unwrap();
    assert!(q.starts_with(&format!("{bad}.corrupt-")), "{q}");
    assert_eq!(std::fs::read(w.remote_dir.join(q)).unwrap(), bytes, "the bad copy is kept under its new name");
    assert_eq!(std::fs::read(&rb).unwrap(), data(5000, 2));
    assert_eq!(deletes_of(&recs, &bad).len(), 1);
    assert!(!w.root.join(&bad).exists());
}

/// Issue 6 under the DEFAULT retention (keep): a remote copy corrupted after a verified upload is found by
/// the re-verification (daily by default, or --reverify), recorded verified:false with "check":"reverify",
/// not counted as verified, and the local file is kept; with --no-repair --immutable refuses to replace
/// it; by default the bad copy is renamed aside and the file uploaded again.
#[test]
fn local_corruption_is_detected_by_reverification_under_default_retention() {
    if !rclone_ok() {
        return;
    }
    let w = World::new("offload-reverify");
    let a = format!("{HOUR}/h-r1-0.jsonl.gz");
    let b = format!("{HOUR}/h-r1-1.jsonl.gz");
    w.file(&a, 4000, 1, 10 * DAY);
    w.file(&b, 4000, 2, 10 * DAY);
    let remote = w.local_remote();
    let out = w.upload(&remote, &[]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("reverify=1 reverified=0"), "first run starts the daily clock: {}", stderr(&out));

    let corrupt = |rel: &str| -> (Vec<u8>, String) {
        let p = w.remote_dir.join(rel);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[200] ^= 0x55;
        std::fs::write(&p, &bytes).unwrap();
        (bytes, md5_hex(&p))
    };
    let (bad_b, bad_b_md5) = corrupt(&b);

    // Within a day of the last complete re-check a default run does not list verified files again.
    let out = w.upload(&remote, &[]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("already_verified=2 uploaded=0"), "{}", stderr(&out));
    assert!(stderr(&out).contains("reverify=0 reverified=0 revoked=0"), "{}", stderr(&out));

    // --reverify --no-repair: detected, recorded, not verified, local kept, remote not overwritten.
    let out = w.upload(&remote, &["--reverify", "--no-repair"]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains(&format!("RE-VERIFICATION FAILED: {}", w.remote_dir.join(&b).display())), "{err}");
    assert!(err.contains("verified=0 mismatched=2"), "{err}");
    assert!(err.contains("reverify=1 reverified=1 revoked=1 quarantined=0"), "{err}");
    let recs = w.records();
    let ups = uploads_of(&recs, &b);
    assert_eq!(ups.len(), 3, "{recs:?}");
    assert_eq!(ups[1]["verified"], false);
    assert_eq!(ups[1]["check"], "reverify");
    assert_eq!(ups[1]["remote_md5"], bad_b_md5.as_str());
    assert_eq!(ups[1]["rclone_exit"], 0);
    assert_eq!(ups[2]["verified"], false, "an --immutable copy cannot replace the bad one");
    assert_eq!(ups[2]["rclone_exit"], 6);
    assert_eq!(uploads_of(&recs, &a).len(), 1, "a good file gets no new record");
    assert!(w.root.join(&b).exists());
    assert_eq!(std::fs::read(w.remote_dir.join(&b)).unwrap(), bad_b);
    assert!(recs.iter().all(|r| r["record"] == "upload"), "nothing deleted");

    // Default flags again: the repair renames the bad copy aside and uploads the file again.
    let out = w.upload(&remote, &[]);
    assert_exit(&out, 0);
    let recs = w.records();
    let last = *uploads_of(&recs, &b).last().unwrap();
    assert_eq!(last["verified"], true, "{last}");
    let q = last["quarantined_as"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read(w.remote_dir.join(&q)).unwrap(), bad_b);
    assert_eq!(std::fs::read(w.remote_dir.join(&b)).unwrap(), std::fs::read(w.root.join(&b)).unwrap());

    // A day later (the state file says when the last complete re-check ran), a default run re-checks
    // by itself: a freshly corrupted copy of `a` is caught with no flag at all.
    let (bad_a, _) = corrupt(&a);
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    std::fs::write(w.root.join("manifests/.upload-reverify"), format!("{}\n", now - DAY - 60)).unwrap();
    let out = w.upload(&remote, &[]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("reverify=1 reverified=1 revoked=1 quarantined=1"), "{err}");
    let recs = w.records();
    let ups = uploads_of(&recs, &a);
    assert_eq!(ups.len(), 3, "{recs:?}");
    assert_eq!((ups[1]["verified"].clone(), ups[1]["check"].clone()), (json!(false), json!("reverify")));
    assert_eq!(ups[2]["verified"], true);
    assert_eq!(std::fs::read(w.remote_dir.join(ups[2]["quarantined_as"].as_str().unwrap())).unwrap(), bad_a);
    assert!(w.root.join(&a).exists() && w.root.join(&b).exists(), "default retention keeps everything");
    // --reverify-every 0 re-checks on every run; all good now.
    let out = w.upload(&remote, &["--reverify-every", "0"]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("reverify=1 reverified=2 revoked=0"), "{}", stderr(&out));
}

/// A local file whose bytes differ from the sha256 its run manifest recorded at sealing (rot on disk) is
/// never uploaded and never deleted, also when it was uploaded and verified before it rotted; a file
/// no manifest lists is not uploaded until a manifest lists it. Each case is recorded once.
#[test]
fn local_files_are_checked_against_their_run_manifest() {
    if !rclone_ok() {
        return;
    }
    let w = World::new("offload-localcheck");
    let a = format!("{HOUR}/h-r1-0.jsonl.gz");
    let rotten = format!("{HOUR}/h-r1-1.jsonl.gz");
    let later = format!("{HOUR}/h-r1-2.jsonl.gz");
    let unlisted = format!("{HOUR2}/h-r2-0.jsonl.gz");
    let tail = format!("{a}.unreadable-tail");
    w.file(&a, 3000, 1, 10 * DAY);
    w.file(&tail, 30, 9, 10 * DAY);
    w.file(&rotten, 3000, 2, 10 * DAY);
    w.file(&later, 3000, 3, 10 * DAY);
    w.file_unlisted(&unlisted, 3000, 4, 10 * DAY);
    let flip = |rel: &str| {
        let p = w.root.join(rel);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[7] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        age(&p, 10 * DAY);
    };
    let sealed_sha = sha256_hex(&w.root.join(&rotten));
    flip(&rotten);

    let remote = w.local_remote();
    let out = w.upload(&remote, &[]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains(&format!("LOCAL CHECK FAILED: {rotten} has sha256")), "{err}");
    assert!(err.contains(&format!("LOCAL CHECK FAILED: {unlisted} is listed in no run manifest")), "{err}");
    assert!(err.contains("candidates=3 already_verified=0 uploaded=3 verified=3"), "{err}");
    assert!(err.contains("local_mismatch=1 unlisted=1"), "{err}");
    assert!(w.remote_dir.join(&tail).exists(), "an unreadable tail listed as tail_path is uploaded");
    assert!(!w.remote_dir.join(&rotten).exists() && !w.remote_dir.join(&unlisted).exists());
    let recs = w.records();
    let r = uploads_of(&recs, &rotten);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["skipped"], "manifest_mismatch");
    assert_eq!(r[0]["verified"], false);
    assert_eq!(r[0]["manifest_sha256"], sealed_sha.as_str());
    assert_eq!(r[0]["sha256"], sha256_hex(&w.root.join(&rotten)).as_str());
    assert!(r[0]["rclone_exit"].is_null());
    let u = uploads_of(&recs, &unlisted);
    assert_eq!(
        (u.len(), u[0]["skipped"].clone(), u[0]["manifest_sha256"].clone()),
        (1, json!("unlisted"), Value::Null)
    );

    // `later` rots after its verified upload: retention must not delete it (its remote copy is the good
    // one); nothing is uploaded over it; the skips of the first run are not recorded again.
    let later_remote = std::fs::read(w.remote_dir.join(&later)).unwrap();
    flip(&later);
    let out = w.upload(&remote, &["--retention-days", "0"]);
    assert_exit(&out, 1);
    for rel in [&rotten, &later, &unlisted] {
        assert!(w.root.join(rel).exists(), "{rel} deleted");
        assert!(deletes_of(&w.records(), rel).is_empty());
    }
    assert!(!w.root.join(&a).exists() && !w.root.join(&tail).exists(), "verified, listed, past retention");
    assert_eq!(std::fs::read(w.remote_dir.join(&later)).unwrap(), later_remote);
    let recs = w.records();
    assert_eq!(uploads_of(&recs, &rotten).len(), 1, "recorded once");
    assert_eq!(uploads_of(&recs, &unlisted).len(), 1, "recorded once");
    let l = uploads_of(&recs, &later);
    assert_eq!((l.len(), l[1]["skipped"].clone()), (2, json!("manifest_mismatch")));

    // Adopted into a manifest (as `manifest unlisted | manifest build` would): uploaded, verified, pruned.
    w.list(&unlisted);
    let out = w.upload(&remote, &["--retention-days", "0"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("local_mismatch=2 unlisted=0"), "{}", stderr(&out));
    let recs = w.records();
    assert_eq!(uploads_of(&recs, &unlisted).last().unwrap()["verified"], true);
    assert_eq!(deletes_of(&recs, &unlisted).len(), 1);
    assert!(w.remote_dir.join(&unlisted).exists() && !w.root.join(&unlisted).exists());
}

/// The real loopback sample archive (data/loopback_sample, written by the real tools, LOOPBACK data):
/// its run manifest, as manifest build wrote it, lists every sealed file, so all of them pass the local
/// check, upload and verify; after retention 0, `manifest verify` calls every file offloaded (exit 0).
#[test]
fn local_real_manifest_archive_uploads_and_verify_calls_it_offloaded() {
    if !rclone_ok() {
        return;
    }
    let w = World::new("offload-sample");
    let src = repo().join("data/loopback_sample/archive");
    let st = Command::new("cp").arg("-a").arg(format!("{}/.", src.display())).arg(&w.root).status().unwrap();
    assert!(st.success());
    let files: Vec<PathBuf> =
        snapshot(&w.root).keys().filter(|k| k.ends_with(".jsonl.gz")).map(|k| w.root.join(k)).collect();
    assert!(files.len() >= 5, "{files:?}");
    for f in &files {
        age(f, 2 * DAY);
    }
    let out = w.upload(&w.local_remote(), &["--retention-days", "0"]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    let n = files.len();
    assert!(err.contains(&format!("candidates={n} already_verified=0 uploaded={n} verified={n}")), "{err}");
    assert!(err.contains(&format!("deleted={n}")), "{err}");
    assert!(err.contains("local_mismatch=0 unlisted=0"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_manifest")).arg("verify").arg(&w.root).output().unwrap();
    assert_exit(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("offloaded"), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Retention deletes exactly the verified files older than N days, records each deletion before the
/// unlink, and never touches partial, young or unverified files. A remote that cannot be written
/// (copy fails) deletes nothing even with --retention-days 0.
#[test]
fn local_retention_deletes_exactly_what_it_should() {
    if !rclone_ok() {
        return;
    }
    let w = World::new("offload-retention");
    let old1 = format!("{HOUR}/h-r1-0.jsonl.gz");
    let old2 = format!("{HOUR}/h-r1-0.jsonl.gz.unreadable-tail");
    let recent = format!("{HOUR}/h-r1-1.jsonl.gz");
    let partial = format!("{HOUR}/h-r1-2.jsonl.gz.partial");
    let young = format!("{HOUR2}/h-r2-0.jsonl.gz");
    w.file(&old1, 700, 1, 10 * DAY);
    w.file(&old2, 70, 2, 8 * DAY);
    w.file(&recent, 700, 3, 2 * DAY);
    w.file(&partial, 700, 4, 30 * DAY);
    w.file(&young, 700, 5, 0);

    // First, a remote that cannot be written: nothing verified, nothing deleted.
    let blocked = w.dir.join("blocked");
    std::fs::write(&blocked, b"a file, not a directory").unwrap();
    let out = w.upload(&format!("{}/sub", blocked.display()), &["--retention-days", "0", "--min-age", "15m"]);
    assert_exit(&out, 1);
    for rel in [&old1, &old2, &recent, &partial, &young] {
        assert!(w.root.join(rel).exists(), "{rel} deleted although nothing was verified");
    }
    let recs = w.records();
    assert!(recs.iter().all(|r| r["record"] == "upload" && r["verified"] == false), "{recs:?}");

    let remote = w.local_remote();
    let out = w.upload(&remote, &["--retention-days", "5", "--min-age", "15m"]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("deleted=2"), "{}", stderr(&out));
    for rel in [&old1, &old2] {
        assert!(!w.root.join(rel).exists(), "{rel} should be deleted");
        assert!(w.remote_dir.join(rel).exists());
    }
    for rel in [&recent, &partial, &young] {
        assert!(w.root.join(rel).exists(), "{rel} should be kept");
    }
    assert!(!w.remote_dir.join(&young).exists() && !w.remote_dir.join(&partial).exists());
    let recs = w.records();
    let dels: Vec<&Value> = recs.iter().filter(|r| r["record"] == "local_delete").collect();
    assert_eq!(dels.len(), 2);
    for d in &dels {
        let rel = d["local_path"].as_str().unwrap();
        let up = uploads_of(&recs, rel).into_iter().rfind(|u| u["verified"] == true).unwrap();
        assert_eq!(d["sha256"], up["sha256"]);
        assert_eq!(d["bytes"], up["bytes"]);
        assert_eq!(d["schema"], "pmarchive.upload/1");
        assert_eq!(d["remote"], remote.as_str());
        assert_eq!(d["remote_path"], rel);
        assert!(d["reason"].as_str().unwrap().starts_with("retention"));
        assert_eq!(d.as_object().unwrap().len(), 9);
    }
    // A later run deletes nothing more and records nothing more.
    let n = recs.len();
    let out = w.upload(&remote, &["--retention-days", "5", "--min-age", "15m"]);
    assert_exit(&out, 0);
    assert_eq!(w.records().len(), n);
    assert!(w.root.join(&recent).exists());
}

/// `rclone serve sftp` answers md5 (like Drive): upload, verify by md5, no-op rerun, corruption caught.
#[test]
fn sftp_hashing_remote_upload_verify_and_corruption() {
    if !rclone_ok() {
        return;
    }
    let mut w = World::new("offload-sftp");
    let served = w.dir.join("sftp-served");
    let _srv = serve(&mut w, "sftp", &served);
    let a = format!("{HOUR}/h-r1-0.jsonl.gz");
    let b = format!("{HOUR}/h-r1-1.jsonl.gz");
    w.file(&a, 4000, 1, 10 * DAY);
    w.file(&b, 4000, 2, 10 * DAY);
    w.file(&format!("{HOUR}/h-r1-2.jsonl.gz.partial"), 10, 3, 10 * DAY);
    let remote = "srv:pm-archive";

    let before = snapshot(&w.root);
    assert_exit(&w.upload(remote, &["--dry-run"]), 0);
    assert_eq!(snapshot(&w.root), before);
    assert!(!served.join("pm-archive").exists());

    let out = w.upload(remote, &[]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("remote verification: md5"), "{}", stderr(&out));
    let recs = w.records();
    for rel in [&a, &b] {
        let bytes = std::fs::read(w.root.join(rel)).unwrap();
        assert_eq!(std::fs::read(served.join("pm-archive").join(rel)).unwrap(), bytes);
        check_upload_record(uploads_of(&recs, rel)[0], rel, &bytes, remote, "md5");
    }
    assert!(!served.join("pm-archive").join(format!("{HOUR}/h-r1-2.jsonl.gz.partial")).exists());
    let out = w.upload(remote, &[]);
    assert_exit(&out, 0);
    assert_eq!(w.records().len(), 2);

    let rb = served.join("pm-archive").join(&b);
    let mut bytes = std::fs::read(&rb).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&rb, &bytes).unwrap();
    let out = w.upload(remote, &["--retention-days", "0"]);
    assert_exit(&out, 1);
    assert!(w.root.join(&b).exists() && !w.root.join(&a).exists());
    let recs = w.records();
    assert_eq!(uploads_of(&recs, &b).last().unwrap()["verified"], false);
    assert_eq!(deletes_of(&recs, &a).len(), 1);
    assert!(deletes_of(&recs, &b).is_empty());
}

/// `rclone serve webdav` has no hashes: verification falls back to size (recorded verified_by "size",
/// remote_md5 null), and retention deletes such files only with --allow-size-only-delete.
#[test]
fn webdav_size_only_verification_needs_explicit_delete_flag() {
    if !rclone_ok() {
        return;
    }
    let mut w = World::new("offload-webdav");
    let served = w.dir.join("dav-served");
    let _srv = serve(&mut w, "webdav", &served);
    let a = format!("{HOUR}/h-r1-0.jsonl.gz");
    w.file(&a, 3000, 1, 10 * DAY);
    let remote = "srv:pm-archive";

    let out = w.upload(remote, &["--retention-days", "0"]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("verification falls back to size"), "{}", stderr(&out));
    assert!(stderr(&out).contains("kept 1 file(s) past retention that are verified by size only"), "{}", stderr(&out));
    assert!(w.root.join(&a).exists(), "size-only verification allowed a deletion");
    let bytes = std::fs::read(w.root.join(&a)).unwrap();
    assert_eq!(std::fs::read(served.join("pm-archive").join(&a)).unwrap(), bytes);
    let recs = w.records();
    assert_eq!(recs.len(), 1);
    check_upload_record(&recs[0], &a, &bytes, remote, "size");

    let out = w.upload(remote, &["--retention-days", "0", "--allow-size-only-delete"]);
    assert_exit(&out, 0);
    assert!(!w.root.join(&a).exists());
    let recs = w.records();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1]["record"], "local_delete");
    assert_eq!(recs[1]["sha256"], recs[0]["sha256"]);
}

/// Every unit in systemd/ passes `systemd-analyze verify` with no output and the security threshold; a unit
/// with an inline comment (only a warning or a parse error for systemd) fails the check.
#[test]
fn systemd_units_pass_the_offline_checks() {
    if !common::require_tool("systemd-analyze") {
        return;
    }
    let check = repo().join("scripts/check_systemd_units.sh");
    // No unit arguments: every unit in systemd/ (collector, health, uploader) — the CI gate. The binaries the
    // units start are the ones this test run built (wherever CARGO_TARGET_DIR put them).
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_manifest")).parent().unwrap().to_path_buf();
    let mut c = Command::new(&check);
    c.arg("--bin-dir").arg(&bin_dir);
    let out = common::run_with_timeout(c, None, Duration::from_secs(120));
    assert_exit(&out, 0);
    for unit in ["pm-archive-upload.service", "polymarket-orderbook-collector.service", "pm-archive-health.service"] {
        assert!(stderr(&out).contains(&format!("ok   security {unit}")), "{unit}: {}", stderr(&out));
    }

    let dir = common::tempdir("offload-units");
    let bad = dir.join("inline-comment.service");
    std::fs::write(&bad, "[Service]\nType=oneshot\nExecStart=/bin/true\nRestart=no  # never\n").unwrap();
    let mut c = Command::new(&check);
    c.arg(&bad);
    let out = common::run_with_timeout(c, None, Duration::from_secs(60));
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("FAIL verify inline-comment.service"), "{}", stderr(&out));
}
