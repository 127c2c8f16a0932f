//! jsonl-rotate: layout, sealed records, rotation on the (real and simulated) clock, crash recovery
//! (kill -9, crafted torn partials), input edge cases, signals, a closed stdout, bad arguments.
//! Input lines are synthetic envelope-like JSON (derived test data, not venue replies).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{files_under, jsonl, run_with_timeout, tempdir, tool};
use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(40);

/// An envelope-like line with a collected_at_utc (synthetic).
fn line(i: usize, ts: &str) -> String {
    format!(
        r#"{{"schema":"pmarchive.raw/1","venue":"polymarket","tool":"pm-books","seq":{i},"kind":"http","collected_at_utc":"{ts}","status":200,"body":[{{"asset_id":"{i}","bids":[{{"price":"0.5","size":"10"}}]}}]}}"#
    )
}

fn zcat(p: &Path) -> String {
    let o = Command::new("zcat").arg(p).output().unwrap();
    assert!(o.status.success(), "zcat {}: {}", p.display(), String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn gzip_ok(p: &Path) -> bool {
    Command::new("gzip").arg("-t").arg(p).status().unwrap().success()
}

fn sha256sum(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8(o.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// Checks a record against the file it names: bytes, sha256, gzip validity.
fn check_record(root: &Path, r: &Value) -> PathBuf {
    assert_eq!(r["record"], "sealed_file");
    assert_eq!(r["schema"], "pmarchive.sealed/1");
    let p = root.join(r["path"].as_str().unwrap());
    assert!(p.is_file(), "{}", p.display());
    assert_eq!(r["bytes"].as_u64().unwrap(), std::fs::metadata(&p).unwrap().len());
    assert_eq!(r["sha256"].as_str().unwrap(), sha256sum(&p));
    assert!(gzip_ok(&p), "gzip -t {}", p.display());
    assert_eq!(r["writer_version"], env!("CARGO_PKG_VERSION"));
    p
}

/// A running jsonl-rotate with its stdin open and its records arriving on a channel.
struct Live {
    child: Child,
    stdin: Option<ChildStdin>,
    recs: mpsc::Receiver<Value>,
    stderr: Arc<Mutex<String>>,
}

impl Live {
    fn spawn(mut cmd: Command) -> Live {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let (tx, recs) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let l = l.unwrap();
                tx.send(serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad record {l}: {e}"))).ok();
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (err, s2) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                s2.lock().unwrap().push_str(&(l + "\n"));
            }
        });
        Live { stdin: child.stdin.take(), child, recs, stderr }
    }

    fn send(&mut self, text: &str) {
        self.stdin.as_mut().unwrap().write_all(text.as_bytes()).unwrap();
        self.stdin.as_mut().unwrap().flush().unwrap();
    }

    fn next_rec(&self, within: Duration) -> Value {
        self.recs
            .recv_timeout(within)
            .unwrap_or_else(|_| panic!("no record within {within:?}; stderr:\n{}", self.stderr()))
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Closes stdin and waits for the exit code.
    fn finish(mut self) -> (i32, Vec<Value>, String) {
        drop(self.stdin.take());
        let start = Instant::now();
        let code = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s.code().unwrap_or(-1);
            }
            assert!(start.elapsed() < LIMIT, "did not exit; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(100)); // let the reader threads drain
        let recs: Vec<Value> = self.recs.try_iter().collect();
        (code, recs, self.stderr())
    }
}

fn rotate_cmd(root: &Path, extra: &[&str]) -> Command {
    let mut c = tool("jsonl-rotate");
    c.args(["--root", root.to_str().unwrap(), "--stream", "books"]).args(extra);
    c
}

#[test]
fn layout_names_and_sealed_record_match_the_file() {
    let root = tempdir("rotate-layout");
    let mut input = String::new();
    let mut times = Vec::new();
    for i in 0..2000 {
        // Not in time order: first/last are the earliest/latest.
        let ts = format!("2026-11-24T16:{:02}:{:02}.{:06}Z", 10 + (i * 7 % 40), i % 60, i);
        input += &line(i, &ts);
        input.push('\n');
        times.push(ts);
    }
    times.sort();
    let mut c = rotate_cmd(&root, &["--run-id", "r1"]);
    c.env("PMARCHIVE_CLOCK", "2026-11-24T16:10:00Z");
    let out = run_with_timeout(c, Some(input.as_bytes()), LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let recs = jsonl(&out.stdout);
    assert_eq!(recs.len(), 1, "{err}");
    let r = &recs[0];
    assert_eq!(r["path"], "venue=polymarket/stream=books/date=2026-11-24/hour=16/testhost-r1-0.jsonl.gz");
    let p = check_record(&root, r);
    assert_eq!(
        (r["venue"].as_str(), r["stream"].as_str(), r["host"].as_str()),
        (Some("polymarket"), Some("books"), Some("testhost"))
    );
    assert_eq!((r["run_id"].as_str(), r["n"].as_u64()), (Some("r1"), Some(0)));
    assert_eq!(r["rows"], 2000);
    assert_eq!(r["first_collected_at_utc"], times[0].as_str());
    assert_eq!(r["last_collected_at_utc"], times[1999].as_str());
    assert_eq!(times[0], "2026-11-24T16:10:00.000000Z");
    assert_eq!(
        (r["recovered"].as_bool(), r["tail_path"].is_null(), r["tail_bytes"].as_u64()),
        (Some(false), true, Some(0))
    );
    assert_eq!((r["invalid_lines"].as_u64(), r["empty_lines"].as_u64()), (Some(0), Some(0)));
    assert!(r["opened_at_utc"].as_str().unwrap().starts_with("2026-11-24T16:10:0"));
    assert!(r["sealed_at_utc"].as_str().unwrap() >= r["opened_at_utc"].as_str().unwrap());
    assert_eq!(zcat(&p), input, "content is the input, byte for byte");
    assert!(files_under(&root, ".partial").is_empty());
    assert_eq!(files_under(&root, ".gz").len(), 1);
}

#[test]
fn rotates_on_the_clock_even_without_new_lines() {
    let root = tempdir("rotate-clock");
    let mut live = Live::spawn(rotate_cmd(&root, &["--rotate-secs", "1", "--flush-secs", "1", "--run-id", "rc"]));
    let mut sent = Vec::new();
    for i in 0..3 {
        let l = line(i, "2026-11-24T16:00:00.000000Z");
        live.send(&format!("{l}\n"));
        sent.push(l);
        std::thread::sleep(Duration::from_millis(1200));
    }
    // Three 1-s periods, each sealed when its second ended; the last one with stdin still open.
    let recs: Vec<Value> = (0..3).map(|_| live.next_rec(Duration::from_secs(5))).collect();
    assert!(live.child.try_wait().unwrap().is_none(), "still running: the seal came from the clock");
    for (i, r) in recs.iter().enumerate() {
        let p = check_record(&root, r);
        assert_eq!(r["n"], i as u64);
        assert_eq!(r["rows"], 1);
        assert_eq!(zcat(&p), format!("{}\n", sent[i]));
        // Partition = the period start, which is within the file's open second.
        let opened = r["opened_at_utc"].as_str().unwrap();
        let part = format!("date={}/hour={}/", &opened[..10], &opened[11..13]);
        assert!(r["path"].as_str().unwrap().contains(&part), "{} vs {opened}", r["path"]);
    }
    let (code, more, err) = live.finish();
    assert_eq!(code, 0, "{err}");
    assert!(more.is_empty(), "no empty file at EOF: {more:?}");
    assert_eq!(files_under(&root, ".gz").len(), 3);
}

#[test]
fn simulated_clock_rolls_hour_and_date_partitions() {
    let root = tempdir("rotate-sim");
    let mut c = rotate_cmd(&root, &["--run-id", "sim"]);
    // 1 real second = 20 simulated minutes.
    c.env("PMARCHIVE_CLOCK", "2026-12-31T23:50:00Zx1200");
    let mut live = Live::spawn(c);
    live.send(&format!("{}\n", line(0, "2026-12-31T23:50:00.000000Z")));
    std::thread::sleep(Duration::from_millis(1500));
    live.send(&format!("{}\n", line(1, "2027-01-01T00:20:00.000000Z")));
    std::thread::sleep(Duration::from_millis(3000));
    live.send(&format!("{}\n", line(2, "2027-01-01T01:20:00.000000Z")));
    let (code, recs, err) = live.finish();
    assert_eq!(code, 0, "{err}");
    let paths: Vec<&str> = recs.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        vec![
            "venue=polymarket/stream=books/date=2026-12-31/hour=23/testhost-sim-0.jsonl.gz",
            "venue=polymarket/stream=books/date=2027-01-01/hour=00/testhost-sim-1.jsonl.gz",
            "venue=polymarket/stream=books/date=2027-01-01/hour=01/testhost-sim-2.jsonl.gz",
        ],
        "{err}"
    );
    for r in &recs {
        check_record(&root, r);
        assert_eq!(r["rows"], 1);
    }
    assert!(err.contains("simulated clock"));
}

#[test]
fn kill_9_keeps_flushed_lines_and_a_restart_recovers_them() {
    let root = tempdir("rotate-kill");
    let clock = "2026-11-24T16:10:00Z";
    let mut c = rotate_cmd(&root, &["--run-id", "dead", "--flush-secs", "1"]);
    c.env("PMARCHIVE_CLOCK", clock);
    let mut live = Live::spawn(c);
    let mut first = String::new();
    for i in 0..500 {
        first += &(line(i, "2026-11-24T16:10:01.000000Z") + "\n");
    }
    live.send(&first[..first.len() / 2]);
    std::thread::sleep(Duration::from_millis(300));
    live.send(&first[first.len() / 2..]);
    std::thread::sleep(Duration::from_millis(2500)); // > --flush-secs
    live.child.kill().unwrap(); // SIGKILL
    live.child.wait().unwrap();
    let partials = files_under(&root, ".partial");
    assert_eq!(partials.len(), 1);
    assert!(partials[0].ends_with("date=2026-11-24/hour=16/testhost-dead-0.jsonl.gz.partial"));
    assert!(gzip_ok(&partials[0]), "the partial is complete gzip members only");
    assert_eq!(zcat(&partials[0]), first, "every accepted line is in the partial");

    // Restart: a new run id; the dead run's partial is sealed first, then writing goes on.
    let mut more = String::new();
    for i in 500..600 {
        more += &(line(i, "2026-11-24T16:10:05.000000Z") + "\n");
    }
    let mut c = rotate_cmd(&root, &["--run-id", "alive"]);
    c.env("PMARCHIVE_CLOCK", clock);
    let out = run_with_timeout(c, Some(more.as_bytes()), LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let recs = jsonl(&out.stdout);
    assert_eq!(recs.len(), 2, "{err}");
    let (old, new) = (&recs[0], &recs[1]);
    assert_eq!(old["path"], "venue=polymarket/stream=books/date=2026-11-24/hour=16/testhost-dead-0.jsonl.gz");
    assert_eq!(
        (old["recovered"].as_bool(), old["run_id"].as_str(), old["rows"].as_u64()),
        (Some(true), Some("dead"), Some(500))
    );
    assert_eq!((old["tail_path"].is_null(), old["tail_bytes"].as_u64()), (true, Some(0)));
    assert_eq!(old["first_collected_at_utc"], "2026-11-24T16:10:01.000000Z");
    assert_eq!(zcat(&check_record(&root, old)), first);
    assert_eq!(new["path"], "venue=polymarket/stream=books/date=2026-11-24/hour=16/testhost-alive-0.jsonl.gz");
    assert_eq!(
        (new["recovered"].as_bool(), new["run_id"].as_str(), new["rows"].as_u64()),
        (Some(false), Some("alive"), Some(100))
    );
    assert_eq!(zcat(&check_record(&root, new)), more);
    assert!(files_under(&root, ".partial").is_empty());
    assert!(err.contains("recovered"), "{err}");
}

fn member(text: &str) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

#[test]
fn torn_partial_is_sealed_with_its_readable_prefix_and_tail_kept() {
    let root = tempdir("rotate-torn");
    let dir = root.join("venue=polymarket/stream=books/date=2026-11-24/hour=15");
    std::fs::create_dir_all(&dir).unwrap();
    let complete = format!(
        "{}\n{}\n{}\n",
        line(0, "2026-11-24T15:00:01.000000Z"),
        line(1, "2026-11-24T15:00:02.000000Z"),
        line(2, "2026-11-24T15:00:03.000000Z")
    );
    let (a, b) = complete.split_at(complete.find('\n').unwrap() + 1);
    let mut bytes = member(a);
    bytes.extend(member(b));
    let good = bytes.len();
    let torn = member(&(line(3, "2026-11-24T15:00:04.000000Z") + "\n"));
    bytes.extend(&torn[..torn.len() / 2]);
    bytes.extend(b"\x00\x00garbage after the torn member");
    let name = "testhost-20261124T150000Z-4242-beef-3.jsonl.gz";
    std::fs::write(dir.join(format!("{name}.partial")), &bytes).unwrap();
    // An empty tail left by an earlier version's recovery on a full disk (it created the file before
    // copying): it holds nothing, is removed, and the real tail takes its name.
    std::fs::write(dir.join(format!("{name}.unreadable-tail")), b"").unwrap();
    // No readable member at all.
    let junk = b"\x1f\x8b\x08 not really gzip".to_vec();
    std::fs::write(dir.join("testhost-old-0.jsonl.gz.partial"), &junk).unwrap();
    // Another host's partial: left alone.
    std::fs::write(dir.join("otherhost-x-0.jsonl.gz.partial"), b"whatever").unwrap();

    // --recover-only must not read stdin: keep it open and expect a prompt exit.
    let mut c = rotate_cmd(&root, &["--recover-only"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let _stdin = child.stdin.take();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < LIMIT, "--recover-only waited for stdin");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let recs = jsonl(&out.stdout);
    assert_eq!(recs.len(), 2, "{err}");
    let r = recs.iter().find(|r| r["run_id"] == "20261124T150000Z-4242-beef").unwrap();
    assert_eq!(r["path"], format!("venue=polymarket/stream=books/date=2026-11-24/hour=15/{name}"));
    let p = check_record(&root, r);
    assert_eq!((r["recovered"].as_bool(), r["n"].as_u64(), r["rows"].as_u64()), (Some(true), Some(3), Some(3)));
    assert_eq!(std::fs::read(&p).unwrap(), bytes[..good], "the final file is the readable prefix, byte for byte");
    assert_eq!(zcat(&p), complete);
    assert_eq!(r["first_collected_at_utc"], "2026-11-24T15:00:01.000000Z");
    assert_eq!(r["last_collected_at_utc"], "2026-11-24T15:00:03.000000Z");
    let tail_rel = format!("venue=polymarket/stream=books/date=2026-11-24/hour=15/{name}.unreadable-tail");
    assert_eq!(r["tail_path"], tail_rel.as_str());
    assert_eq!(r["tail_bytes"].as_u64().unwrap() as usize, bytes.len() - good);
    assert_eq!(std::fs::read(root.join(&tail_rel)).unwrap(), bytes[good..], "tail kept byte for byte");
    assert!(err.contains("unreadable") && err.contains("removed an empty unreadable-tail"), "{err}");

    let e = recs.iter().find(|r| r["run_id"] == "old").unwrap();
    let p = check_record(&root, e);
    assert_eq!(
        (e["rows"].as_u64(), e["recovered"].as_bool(), e["first_collected_at_utc"].is_null()),
        (Some(0), Some(true), true)
    );
    assert_eq!(zcat(&p), "", "a valid, empty gzip");
    assert_eq!(std::fs::read(root.join(e["tail_path"].as_str().unwrap())).unwrap(), junk);

    assert_eq!(files_under(&root, ".partial"), vec![dir.join("otherhost-x-0.jsonl.gz.partial")]);
    assert_eq!(std::fs::read(dir.join("otherhost-x-0.jsonl.gz.partial")).unwrap(), b"whatever");
    assert!(err.contains("left alone"), "{err}");
}

#[test]
fn non_json_kept_and_counted_empty_lines_skipped_last_newline_added() {
    let root = tempdir("rotate-input");
    let input = format!(
        "{}\nnot json at all\n\n   \n{{\"truncated\":\n{}",
        line(0, "2026-11-24T16:00:00.000000Z"),
        r#"{"no":"newline"}"#
    );
    let out = run_with_timeout(rotate_cmd(&root, &["--run-id", "in"]), Some(input.as_bytes()), LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let recs = jsonl(&out.stdout);
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(
        (r["rows"].as_u64(), r["invalid_lines"].as_u64(), r["empty_lines"].as_u64()),
        (Some(4), Some(2), Some(2))
    );
    let expected = format!(
        "{}\nnot json at all\n{{\"truncated\":\n{}\n",
        line(0, "2026-11-24T16:00:00.000000Z"),
        r#"{"no":"newline"}"#
    );
    assert_eq!(zcat(&check_record(&root, r)), expected);
    assert!(err.contains("input line 2: not valid JSON"), "{err}");
    assert!(err.contains("input line 5: not valid JSON"), "{err}");
}

#[test]
fn empty_input_creates_no_file() {
    let root = tempdir("rotate-empty");
    for input in [&b""[..], b"\n\n"] {
        let out = run_with_timeout(rotate_cmd(&root, &[]), Some(input), LIMIT);
        assert_eq!(out.status.code(), Some(0));
        assert!(out.stdout.is_empty());
        assert!(files_under(&root, ".gz").is_empty() && files_under(&root, ".partial").is_empty());
    }
}

#[test]
fn bad_arguments_exit_2() {
    let root = tempdir("rotate-args");
    let r = root.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["--root", r, "--stream", "../x"],
        vec!["--root", r, "--stream", "a/b"],
        vec!["--root", r, "--stream", "books", "--flush-secs", "0"],
        vec!["--root", r, "--stream", "books", "--flush-secs", "61"],
        vec!["--root", r, "--stream", "books", "--rotate-secs", "0"],
        vec!["--root", r, "--stream", "books", "--host", ".."],
        vec!["--root", r, "--stream", "books", "--run-id", "x y"],
        vec!["--root", r, "--stream", "books", "--venue", ""],
        vec!["--stream", "books"],
        vec!["--root", r],
        vec!["--root", r, "--stream", "books", "--bogus"],
        vec!["--root", r, "--stream", "books", "--level", "10"],
        vec!["--root", r, "--stream", "books", "--flush-bytes", "0"],
        vec!["--root", r, "--stream", "books", "--flush-bytes", "67108865"],
    ];
    for args in cases {
        let mut c = tool("jsonl-rotate");
        c.args(&args);
        let out = run_with_timeout(c, Some(b"{}\n"), LIMIT);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("jsonl-rotate: "), "{args:?}");
    }
    assert!(files_under(&root, ".gz").is_empty());
    let mut c = tool("jsonl-rotate");
    c.arg("--help");
    let out = run_with_timeout(c, None, LIMIT);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--recover-only"));
}

#[test]
fn sigterm_with_stdin_open_seals_and_exits_0() {
    let root = tempdir("rotate-term");
    let mut live = Live::spawn(rotate_cmd(&root, &["--run-id", "term"]));
    let text = format!("{}\n{}\n", line(0, "2026-11-24T16:00:00.000000Z"), line(1, "2026-11-24T16:00:01.000000Z"));
    live.send(&text);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &live.child.id().to_string()]).status().unwrap().success());
    // Lines sent after the signal (upstream still draining) are kept too.
    std::thread::sleep(Duration::from_millis(300));
    let late = format!("{}\n", line(2, "2026-11-24T16:00:02.000000Z"));
    live.send(&late);
    let rec = live.next_rec(Duration::from_secs(15));
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_secs(4), "drained stdin for ~5 s, not {waited:?}");
    assert_eq!(rec["rows"], 3);
    assert_eq!(zcat(&check_record(&root, &rec)), text + &late);
    let (code, _, err) = live.finish();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("signal 15"), "{err}");
}

#[test]
fn closed_stdout_does_not_stop_archiving() {
    let root = tempdir("rotate-epipe");
    let mut c = rotate_cmd(&root, &["--rotate-secs", "1", "--run-id", "ep"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    drop(child.stdout.take()); // nobody reads sealed records
    let mut stdin = child.stdin.take().unwrap();
    let mut sent = String::new();
    for i in 0..3 {
        let l = line(i, "2026-11-24T16:00:00.000000Z") + "\n";
        stdin.write_all(l.as_bytes()).unwrap();
        sent += &l;
        std::thread::sleep(Duration::from_millis(1100));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let gz = files_under(&root, ".gz");
    assert_eq!(gz.len(), 3, "{err}");
    let all: String = gz.iter().map(|p| zcat(p)).collect();
    assert_eq!(all, sent);
    assert!(err.contains("stdout closed"), "{err}");
    assert!(files_under(&root, ".partial").is_empty());
}

#[test]
fn recovery_never_replaces_an_existing_final_file() {
    let root = tempdir("rotate-taken");
    let dir = root.join("venue=polymarket/stream=books/date=2026-11-24/hour=16");
    std::fs::create_dir_all(&dir).unwrap();
    let old = member("{\"old\":1}\n");
    std::fs::write(dir.join("testhost-r-0.jsonl.gz"), &old).unwrap();
    std::fs::write(dir.join("testhost-r-0.jsonl.gz.partial"), member("{\"new\":1}\n")).unwrap();
    let out = run_with_timeout(rotate_cmd(&root, &["--recover-only"]), None, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let recs = jsonl(&out.stdout);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["path"], "venue=polymarket/stream=books/date=2026-11-24/hour=16/testhost-r-1.jsonl.gz");
    assert_eq!((recs[0]["n"].as_u64(), recs[0]["run_id"].as_str()), (Some(1), Some("r")));
    assert_eq!(zcat(&check_record(&root, &recs[0])), "{\"new\":1}\n");
    assert_eq!(std::fs::read(dir.join("testhost-r-0.jsonl.gz")).unwrap(), old, "existing file untouched");
}

// ---------------------------------------------------------------------------------------------
// A full disk: a size-limited tmpfs in a private mount namespace (`unshare -rm`, or `unshare -m` as
// root). The test is never skipped: when neither can mount a tmpfs it fails, naming why.

/// Runs `script` (sh) with a fresh tmpfs of `size` mounted at `$D`; returns its output.
fn with_tmpfs(size: &str, script: &str, env: &[(&str, &Path)]) -> std::process::Output {
    let d = tempdir("tmpfs");
    let full = format!("mount -t tmpfs -o size={size} tmpfs \"$D\" || exit 97\necho MOUNTED >&2\n{script}");
    let mut tried = Vec::new();
    for flags in [&["-r", "-m"][..], &["-m"][..]] {
        let mut c = Command::new("unshare");
        c.args(flags)
            .args(["sh", "-c", &full])
            .env("D", &d)
            .env("PMARCHIVE_HOST", "testhost")
            .env_remove("PMARCHIVE_CLOCK");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = run_with_timeout(c, None, Duration::from_secs(120));
        if String::from_utf8_lossy(&out.stderr).contains("MOUNTED") {
            return out;
        }
        tried.push(format!(
            "unshare {flags:?}: exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    panic!("cannot mount a size-limited tmpfs for the disk-full test (needs unshare -rm, or root): {tried:#?}");
}

/// `manifest offload append` on a full disk appends nothing: the upload log keeps exactly the bytes it
/// had (no torn record that readers would count as a bad line), and the exit status says it failed.
#[test]
fn an_upload_log_append_on_a_full_disk_leaves_no_torn_record() {
    let notes = tempdir("diskfull-append");
    let sha = "0".repeat(64);
    let lines: String = (0..4000)
        .map(|i| format!("upload\tvenue=polymarket/stream=books/date=2026-12-01/hour=08/h-{i}.jsonl.gz\t10\t{sha}\tmd5x\tgd:pm\tmd5x\ttrue\tmd5\t0\t\t\t\t\n"))
        .collect();
    std::fs::write(notes.join("lines.tsv"), lines).unwrap();
    let script = r#"
A="$D/arch"; mkdir -p "$A/manifests"
head -n 1 "$N/lines.tsv" | "$MAN" offload append "$A" 2> "$N/first.err"; echo "first=$?"
cp "$A/manifests/uploads.jsonl" "$N/before.jsonl"
dd if=/dev/zero of="$D/filler" bs=4096 2>/dev/null
"$MAN" offload append "$A" < "$N/lines.tsv" 2> "$N/full.err"; echo "full=$?"
cmp -s "$A/manifests/uploads.jsonl" "$N/before.jsonl"; echo "same=$?"
"#;
    let out = with_tmpfs("1m", script, &[("N", &notes), ("MAN", &common::bin("manifest"))]);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = std::fs::read_to_string(notes.join("full.err")).unwrap_or_default();
    assert!(text.contains("first=0"), "{text}");
    assert!(!text.contains("full=0"), "the append on a full disk must fail: {text} {err}");
    assert!(text.contains("same=0"), "the upload log changed: {text} {err}");
}

#[test]
fn a_full_disk_stops_the_writer_cleanly_leaves_no_empty_or_temp_file_and_recovery_resumes_after() {
    // A dead run's partial on the gamma stream: one complete member, then 5000 bytes of a torn one.
    let notes = tempdir("diskfull-notes");
    let mut torn = member(&(line(0, "2026-12-01T08:00:01.000000Z") + "\n"));
    let cut = member(&(0..200).map(|i| line(i, "2026-12-01T08:00:02.000000Z") + "\n").collect::<String>());
    torn.extend((0..5000).map(|i| cut[i % cut.len()] ^ 0x5a));
    std::fs::write(notes.join("torn.partial"), &torn).unwrap();
    let partial =
        "venue=polymarket/stream=gamma/date=2026-12-01/hour=08/testhost-20261201T080000Z-1-abcd-0.jsonl.gz.partial";
    let script = format!(
        r#"
A="$D/arch"; P="$A/{partial}"; mkdir -p "$(dirname "$P")"
cp "$N/torn.partial" "$P"
dd if=/dev/zero of="$D/filler" bs=1024 count=8192 2>/dev/null
st() {{ "$MAN" status "$A" --json --min-free-mib 1 --now 2026-12-01T08:30:00Z > "$N/$1.json"; }}
st status-before
# 1. The writer meets ENOSPC: incompressible lines until the disk is full.
base64 -w 100 /dev/urandom | head -n 200000 | sed 's/.*/{{"x":"&"}}/' \
  | "$ROT" --root "$A" --stream books --run-id 20261201T080500Z-2-beef --flush-secs 0.2 > "$N/sealed1" 2> "$N/rot1.err"
echo "writer=$?"
st status-full
# 2. manifest build cannot write its manifest: no temp file may stay.
"$MAN" build --root "$A" --run-id 20261201T080600Z-3-cafe < /dev/null 2> "$N/build-full.err"; echo "build_full=$?"
echo "manifest_tmp=$(ls -a "$A/manifests" 2>/dev/null | grep -c tmp)"
# 3. Recovery on the full disk cannot copy the tail out: no tail file, no temp file, partial intact.
"$ROT" --root "$A" --stream gamma --recover-only > /dev/null 2> "$N/rec-full.err"; echo "recover_full=$?"
echo "tails_full=$(find "$A" -name '*unreadable-tail*' -o -name '*tail-tmp*' | wc -l)"
echo "partial_bytes=$(wc -c < "$P")"
# 4. Space returns: recovery completes, collection resumes, everything verifies.
rm "$D/filler"
"$ROT" --root "$A" --stream gamma --recover-only > "$N/sealed2" 2> "$N/rec2.err"; echo "recover_gamma=$?"
"$ROT" --root "$A" --stream books --recover-only > "$N/sealed3" 2> "$N/rec3.err"; echo "recover_books=$?"
printf '{{"a":1}}\n{{"a":2}}\n' | "$ROT" --root "$A" --stream books --run-id 20261201T081000Z-4-f00d > "$N/sealed4" 2>/dev/null
echo "resumed=$?"
cat "$N/sealed1" "$N/sealed2" "$N/sealed3" "$N/sealed4" \
  | "$MAN" build --root "$A" --run-id 20261201T081100Z-5-d00d 2> "$N/build2.err"; echo "build_after=$?"
"$MAN" verify "$A" > "$N/verify.txt"; echo "verify=$?"
echo "empty_files=$(find "$A" -type f -size 0 ! -name '.*.lock' | wc -l)"
echo "tmp_files=$(find "$A" -name '*tmp*' | wc -l)"
echo "tail_5000=$(find "$A" -name '*.unreadable-tail' -size 5000c | wc -l)"
st status-after
"#
    );
    // The filler is half the disk: whatever the writer's torn tail (up to the rest of the disk) is, it
    // fits beside its partial once the filler is gone.
    let out = with_tmpfs(
        "16m",
        &script,
        &[("N", &notes), ("ROT", &common::bin("jsonl-rotate")), ("MAN", &common::bin("manifest"))],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let get = |k: &str| -> String {
        let pre = format!("{k}=");
        let v = text.lines().find_map(|l| l.strip_prefix(pre.as_str()));
        v.unwrap_or_else(|| panic!("{k} not printed:\n{text}\n{err}")).trim().to_string()
    };
    let note = |name: &str| std::fs::read_to_string(notes.join(name)).unwrap_or_default();
    let reasons = |name: &str| -> Vec<String> {
        let doc: Value = serde_json::from_str(&note(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        doc["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect()
    };
    let disk_full = "disk_full".to_string();
    // Before: 16 MiB with 8 MiB taken: not full.
    assert!(!reasons("status-before.json").contains(&disk_full), "{}", note("status-before.json"));
    // 1. jsonl-rotate on ENOSPC: exit 1 (not 2: a restart must follow), one clear line.
    assert_eq!(get("writer"), "1", "{text}\n{}", note("rot1.err"));
    assert!(note("rot1.err").contains("jsonl-rotate: disk full under "), "{}", note("rot1.err"));
    // Health names it.
    assert!(reasons("status-full.json").contains(&disk_full), "{}", note("status-full.json"));
    // 2. A failed manifest write leaves no .tmp-PID file.
    assert_eq!(get("build_full"), "1", "{}", note("build-full.err"));
    assert!(note("build-full.err").starts_with("manifest: disk full: "), "{}", note("build-full.err"));
    assert_eq!(get("manifest_tmp"), "0", "no .tmp-PID file after a failed manifest write");
    // 3. Recovery on the full disk fails cleanly: no 0-byte tail, no temp file, partial untouched.
    assert_eq!(get("recover_full"), "1", "{}", note("rec-full.err"));
    assert_eq!(get("tails_full"), "0", "{}", note("rec-full.err"));
    assert_eq!(get("partial_bytes"), torn.len().to_string(), "the partial is untouched");
    // 4. After space returns: recovered, resumed, listed, verified; the tail holds all its bytes.
    assert_eq!(get("recover_gamma"), "0", "{}", note("rec2.err"));
    assert_eq!(get("recover_books"), "0", "{}", note("rec3.err"));
    assert_eq!(get("resumed"), "0");
    assert_eq!(get("build_after"), "0", "{}", note("build2.err"));
    assert_eq!(get("verify"), "0", "{}", note("verify.txt"));
    assert_eq!(get("empty_files"), "0");
    assert_eq!(get("tmp_files"), "0");
    assert_eq!(get("tail_5000"), "1", "the tail exists with all its bytes");
    assert!(!reasons("status-after.json").contains(&disk_full), "{}", note("status-after.json"));
}

/// The partial's bytes once it holds exactly `want` (decoded), polled with a generous deadline.
fn partial_when_it_holds(root: &Path, want: &str, live: &Live) -> Vec<u8> {
    let start = Instant::now();
    loop {
        if let Some(p) = files_under(root, ".partial").first() {
            let bytes = std::fs::read(p).unwrap();
            let mut text = String::new();
            let decoded = flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_string(&mut text).is_ok();
            if decoded && text == want {
                return bytes;
            }
        }
        assert!(start.elapsed() < LIMIT, "the partial never held the lines sent; stderr:\n{}", live.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `--recover-only` on `root`; returns its one record.
fn recover_only(root: &Path) -> Value {
    let out = run_with_timeout(rotate_cmd(root, &["--recover-only"]), None, LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let recs = jsonl(&out.stdout);
    assert_eq!(recs.len(), 1, "{err}");
    recs.into_iter().next().unwrap()
}

/// Lines `from..to`, each batch with its own timestamp second.
fn lines(from: usize, to: usize) -> String {
    (from..to).map(|i| line(i, &format!("2026-11-24T16:10:{:02}.000000Z", i / 100)) + "\n").collect()
}

/// Reads each gzip file with Python's `gzip` and with DuckDB (`read_json`): the line counts of both,
/// per file. None (skipped) without a Python that has duckdb (`.ci/run` provides one in
/// `target/pyvenv`, named by `PMARCHIVE_PYTHON`); under `CI=true` that is a failure.
fn python_and_duckdb_line_counts(paths: &[PathBuf]) -> Option<Vec<(usize, usize)>> {
    let py = std::env::var("PMARCHIVE_PYTHON").unwrap_or_else(|_| "target/pyvenv/bin/python".into());
    let have = Command::new(&py).args(["-c", "import duckdb"]).output().is_ok_and(|o| o.status.success());
    if !have {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{py}: no duckdb under CI");
        eprintln!("{py}: cannot import duckdb: the Python gzip / DuckDB read check is skipped");
        return None;
    }
    const READ: &str = r#"
import duckdb, gzip, sys
con = duckdb.connect()
for p in sys.argv[1:]:
    with gzip.open(p, "rt") as f:
        n_py = sum(1 for _ in f)
    q = "select count(*) from read_json(?, format='newline_delimited', records=false)"
    n_db = con.execute(q, [p]).fetchone()[0]
    print(n_py, n_db)
"#;
    let o = Command::new(&py).args(["-c", READ]).args(paths).output().unwrap();
    assert!(o.status.success(), "python/duckdb: {}", String::from_utf8_lossy(&o.stderr));
    let counts = String::from_utf8(o.stdout).unwrap();
    Some(
        counts
            .lines()
            .map(|l| {
                let (a, b) = l.split_once(' ').unwrap();
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .collect(),
    )
}

#[test]
fn killed_between_two_sync_flushes_of_one_member_every_flushed_line_is_kept() {
    let root = tempdir("rotate-sync-kill");
    let clock = "2026-11-24T16:10:00Z";
    let mut c = rotate_cmd(&root, &["--run-id", "dead", "--flush-secs", "0.2"]);
    c.env("PMARCHIVE_CLOCK", clock);
    let mut live = Live::spawn(c);
    // Three flushes of one member: after each, the partial is a complete gzip file holding every
    // line sent so far, and each flush only adds to the bytes of the one before (minus its 10-byte
    // provisional end): the dictionary is kept across flushes.
    let mut sent = String::new();
    let mut snapshots: Vec<(Vec<u8>, String)> = Vec::new();
    for k in 0..3 {
        let batch = lines(k * 100, k * 100 + 100);
        live.send(&batch);
        sent += &batch;
        let bytes = partial_when_it_holds(&root, &sent, &live);
        if let Some((prev, _)) = snapshots.last() {
            assert_eq!(bytes[..prev.len() - 10], prev[..prev.len() - 10], "a flush only appends");
            assert!(bytes.len() > prev.len());
        }
        assert_eq!(&bytes[bytes.len() - 14..bytes.len() - 8], b"\x00\x00\xff\xff\x03\x00", "sync point, then end");
        snapshots.push((bytes, sent.clone()));
    }
    let partial = files_under(&root, ".partial")[0].clone();
    assert!(gzip_ok(&partial));
    let (last, _) = snapshots.last().unwrap();
    let mut one = flate2::read::GzDecoder::new(&last[..]);
    let mut text = String::new();
    one.read_to_string(&mut text).unwrap();
    assert_eq!(text, sent, "one gzip member holds all three flushes");
    // Killed between two flushes: lines sent after the last flush may be lost (at most the window).
    let unflushed = lines(300, 350);
    live.send(&unflushed);
    live.child.kill().unwrap(); // SIGKILL
    live.child.wait().unwrap();
    let on_disk = std::fs::read(&partial).unwrap();
    let r = recover_only(&root);
    let p = check_record(&root, &r);
    let text = zcat(&p);
    assert!(text == sent || text == sent.clone() + &unflushed, "lost more than the unflushed lines");
    if flate2::read::MultiGzDecoder::new(&on_disk[..]).read_to_end(&mut Vec::new()).is_ok() {
        // Not killed inside a write (the usual case): the partial was complete, sealed as it is.
        assert_eq!(std::fs::read(&p).unwrap(), on_disk, "an intact partial is sealed as it is");
        assert_eq!((r["recovered"].as_bool(), r["tail_bytes"].as_u64()), (Some(true), Some(0)));
    }
    assert_eq!(r["rows"].as_u64().unwrap() as usize, text.lines().count());
}

#[test]
fn a_member_cut_short_between_sync_points_is_ended_at_the_last_one_and_the_rest_kept() {
    // A real partial written by jsonl-rotate with three sync points, then cut (a write interrupted
    // by kill -9 or a power loss) at places inside the third flush's bytes and its end, with and
    // without garbage after the cut.
    let root = tempdir("rotate-sync-torn");
    let mut c = rotate_cmd(&root, &["--run-id", "dead", "--flush-secs", "0.2"]);
    c.env("PMARCHIVE_CLOCK", "2026-11-24T16:10:00Z");
    let mut live = Live::spawn(c);
    let mut sent = String::new();
    let mut snapshots: Vec<(Vec<u8>, String)> = Vec::new();
    for k in 0..3 {
        let batch = lines(k * 100, k * 100 + 100);
        live.send(&batch);
        sent += &batch;
        snapshots.push((partial_when_it_holds(&root, &sent, &live), sent.clone()));
    }
    live.child.kill().unwrap();
    live.child.wait().unwrap();
    let name = files_under(&root, ".partial")[0].file_name().unwrap().to_string_lossy().into_owned();
    let full = snapshots[2].0.clone();
    let sync = |k: usize| snapshots[k].0.len() - 10; // where flush k's provisional end starts
    let cases: Vec<(usize, &[u8], usize)> = vec![
        // (cut at, bytes after the cut, the flush whose data is the readable prefix)
        (sync(1) + 1, b"", 1),
        (sync(1) + (sync(2) - sync(1)) / 2, b"", 1),
        (sync(2) - 1, b"", 1),
        (sync(2) - 1, b"\x00\x00\xff\xff junk \x00\x00\x00\x00", 1),
        (sync(2), b"", 2),
        (sync(2) + 4, b"", 2),
        (sync(2) + 4, &[0u8; 4096], 2),
        (sync(0), b"", 0),
    ];
    let mut recovered = Vec::new();
    for (i, (cut, after, k)) in cases.into_iter().enumerate() {
        let case_root = tempdir(&format!("rotate-sync-torn-{i}"));
        let dir = case_root.join("venue=polymarket/stream=books/date=2026-11-24/hour=16");
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = full[..cut].to_vec();
        bytes.extend_from_slice(after);
        std::fs::write(dir.join(&name), &bytes).unwrap();
        let r = recover_only(&case_root);
        let p = check_record(&case_root, &r);
        let (want_bytes, want_text) = &snapshots[k];
        assert_eq!(&zcat(&p), want_text, "case {i}: the lines of every complete flush");
        assert_eq!(&std::fs::read(&p).unwrap(), want_bytes, "case {i}: ended exactly as the writer had");
        assert_eq!(r["rows"].as_u64().unwrap() as usize, want_text.lines().count(), "case {i}");
        let tail = &bytes[sync(k)..];
        if tail.is_empty() {
            assert!(r["tail_path"].is_null(), "case {i}");
        } else {
            assert_eq!(r["tail_bytes"].as_u64().unwrap() as usize, tail.len(), "case {i}");
            let kept = std::fs::read(case_root.join(r["tail_path"].as_str().unwrap())).unwrap();
            assert_eq!(kept, tail, "case {i}: every byte after the readable prefix kept");
        }
        assert!(files_under(&case_root, ".partial").is_empty(), "case {i}");
        recovered.push((p, want_text.lines().count()));
    }
    let (paths, want): (Vec<PathBuf>, Vec<usize>) = recovered.into_iter().unzip();
    if let Some(counts) = python_and_duckdb_line_counts(&paths) {
        assert_eq!(counts, want.iter().map(|&n| (n, n)).collect::<Vec<_>>(), "Python gzip and DuckDB read them");
    }
}

#[test]
fn flush_bytes_flushes_by_volume_at_line_ends_and_every_level_and_format_reads_back() {
    // --flush-secs 60 never fires here: only --flush-bytes makes the lines durable.
    let sent = lines(100, 140); // 40 lines of one length
    let line_len = sent.len() / 40;
    assert!(sent.lines().all(|l| l.len() + 1 == line_len));
    for extra in [&[][..], &["--level", "1"], &["--level", "9"], &["--member-per-flush", "--level", "6"]] {
        let root = tempdir("rotate-flush-bytes");
        let mut args = vec!["--run-id", "vol", "--flush-secs", "60", "--flush-bytes"];
        let window = (line_len * 10).to_string();
        args.push(&window);
        args.extend_from_slice(extra);
        let mut c = rotate_cmd(&root, &args);
        c.env("PMARCHIVE_CLOCK", "2026-11-24T16:10:00Z");
        let mut live = Live::spawn(c);
        live.send(&sent); // one batch of 40 lines: four windows of 10 lines, each flushed at once
        let bytes = partial_when_it_holds(&root, &sent, &live);
        if extra.is_empty() {
            // Four sync points in one member, each right after a whole line.
            let points = bytes.windows(4).filter(|w| *w == b"\x00\x00\xff\xff").count();
            assert!(points >= 4, "{extra:?}: {points} sync points");
        }
        let (code, recs, err) = live.finish();
        assert_eq!(code, 0, "{err}");
        assert_eq!(zcat(&check_record(&root, &recs[0])), sent, "{extra:?}");
    }
}
