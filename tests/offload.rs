//! Integration tests of scripts/upload_archive_rclone.sh with the real `rclone` binary, against a
//! local-backend remote, `rclone serve sftp` (answers md5, like Drive) and `rclone serve webdav`
//! (no hashes) on 127.0.0.1. Each test has its own RCLONE_CONFIG, HOME and cache in a temp dir; servers
//! run with a fixed start timeout and are killed by PID. Also runs scripts/check_systemd_units.sh.
//!
//! rclone missing: the tests fail with "apt-get install rclone", unless PMARCHIVE_SKIP_RCLONE_TESTS=1.

mod common;

use serde_json::Value;
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
}

impl World {
    fn new(tag: &str) -> World {
        let dir = common::tempdir(tag);
        let root = dir.join("archive");
        std::fs::create_dir_all(root.join("manifests")).unwrap();
        std::fs::write(dir.join("rclone.conf"), "").unwrap();
        std::fs::create_dir_all(dir.join("home")).unwrap();
        World { remote_dir: dir.join("remote"), dir, root, env: Vec::new() }
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

    /// Writes an archive file with `len` bytes of deterministic data, modified `age_s` seconds ago.
    fn file(&self, rel: &str, len: usize, seed: u64, age_s: u64) -> PathBuf {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data(len, seed)).unwrap();
        age(&p, age_s);
        p
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
    for word in ["--dry-run", "--retention-days", "--allow-size-only-delete", "--immutable", "uploads.jsonl"] {
        assert!(help.contains(word), "--help lacks {word}");
    }
    for bad in [&["--bogus"][..], &["--min-age", "soon"], &["--retention-days", "-1"], &["--root"]] {
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
    let pos = |pred: &dyn Fn(&Value) -> bool| recs.iter().position(|r| pred(r)).unwrap();
    let up_pos = pos(&|r| r["record"] == "upload" && r["local_path"] == good.as_str() && r["verified"] == true);
    let del_pos = pos(&|r| r["record"] == "local_delete" && r["local_path"] == good.as_str());
    assert!(up_pos < del_pos);
    assert_eq!(recs[up_pos]["sha256"], recs[del_pos]["sha256"]);

    // Next run: still not verified, still not deleted, still exit 1.
    let out = w.upload(&remote, &["--retention-days", "0"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("VERIFICATION FAILED"), "{}", stderr(&out));
    let recs = w.records();
    let ups = uploads_of(&recs, &bad);
    assert_eq!(ups.len(), 3);
    assert_eq!(ups[2]["verified"], false);
    assert_eq!(ups[2]["rclone_exit"], 6);
    assert!(w.root.join(&bad).exists());
    assert_eq!(std::fs::read(&rb).unwrap(), bytes, "the remote copy was overwritten");
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
    let have = Command::new("systemd-analyze").arg("--version").output().map(|o| o.status.success());
    if have.map(|ok| !ok).unwrap_or(true) {
        eprintln!("NOTICE: systemd-analyze not found; systemd unit check SKIPPED");
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
