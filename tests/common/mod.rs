//! Shared test helpers: the loopback venue, temp dirs, running the tools.
#![allow(dead_code)]

pub mod dataapi;
pub mod kalshi;
pub mod venue;
pub mod ws;

use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Path of one of the crate's binaries (built by cargo for integration tests).
pub fn bin(name: &str) -> PathBuf {
    let p = match name {
        "pm-markets" => env!("CARGO_BIN_EXE_pm-markets"),
        "kalshi-markets" => env!("CARGO_BIN_EXE_kalshi-markets"),
        "pm-probe" => env!("CARGO_BIN_EXE_pm-probe"),
        "pm-books" => env!("CARGO_BIN_EXE_pm-books"),
        "kalshi-books" => env!("CARGO_BIN_EXE_kalshi-books"),
        "jsonl-rotate" => env!("CARGO_BIN_EXE_jsonl-rotate"),
        "manifest" => env!("CARGO_BIN_EXE_manifest"),
        "pm-normalize" => env!("CARGO_BIN_EXE_pm-normalize"),
        "pm-stream" => env!("CARGO_BIN_EXE_pm-stream"),
        "pm-rebuild" => env!("CARGO_BIN_EXE_pm-rebuild"),
        "pm-trades" => env!("CARGO_BIN_EXE_pm-trades"),
        "pm-tradeset" => env!("CARGO_BIN_EXE_pm-tradeset"),
        "kalshi-trades" => env!("CARGO_BIN_EXE_kalshi-trades"),
        "pm-venue" => env!("CARGO_BIN_EXE_pm-venue"),
        "soak-report" => env!("CARGO_BIN_EXE_soak-report"),
        other => panic!("unknown binary {other}"),
    };
    PathBuf::from(p)
}

/// A fresh empty directory under the system temp dir. It is removed when the test that made it
/// passes, and kept (its path printed) when the test fails, for inspection.
pub fn tempdir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "pmarchive-test-{}-{}-{}",
        tag,
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    cleanup::register(d.clone());
    d
}

/// Removes a test's temp dirs when its thread ends, unless that thread panicked (libtest runs each
/// test on its own thread; a panic hook marks the failing thread).
mod cleanup {
    use std::cell::{Cell, RefCell};
    use std::path::PathBuf;

    thread_local! {
        static FAILED: Cell<bool> = const { Cell::new(false) };
        static DIRS: Dirs = const { Dirs(RefCell::new(Vec::new())) };
    }

    struct Dirs(RefCell<Vec<PathBuf>>);

    impl Drop for Dirs {
        fn drop(&mut self) {
            let failed = FAILED.with(Cell::get);
            for d in self.0.borrow().iter() {
                if failed {
                    eprintln!("test failed: temp dir kept: {}", d.display());
                } else {
                    let _ = std::fs::remove_dir_all(d);
                }
            }
        }
    }

    pub fn register(d: PathBuf) {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                FAILED.with(|f| f.set(true));
                previous(info)
            }));
        });
        DIRS.with(|v| v.0.borrow_mut().push(d));
    }
}

/// Whether the external tool `name` can be run (`name --version`). When it cannot: under `CI=true`
/// the test fails (CI promises its tools; a missing one is not a pass); elsewhere a notice is printed
/// and false returned, and the caller skips the part that needs the tool.
pub fn require_tool(name: &str) -> bool {
    let ok = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{name} is not installed but CI=true: a missing tool is a failure here (.ci/run installs it)");
    }
    eprintln!(
        "NOTICE: {name} not installed; the part of this test that needs it was SKIPPED (CI=true makes this fail)"
    );
    false
}

/// A command for a tool with a clean environment for the archive's variables.
pub fn tool(name: &str) -> Command {
    let mut c = Command::new(bin(name));
    c.env_remove("PMARCHIVE_CLOCK").env_remove("PMARCHIVE_RUN_ID").env("PMARCHIVE_HOST", "testhost");
    c
}

/// Runs to completion with a hard timeout (kills the child and panics when it is exceeded).
/// stdout and stderr are drained by threads while the child runs, so a large output never blocks it.
pub fn run_with_timeout(cmd: Command, stdin: Option<&[u8]>, limit: Duration) -> Output {
    use std::io::Write;
    let feed = stdin.map(|input| {
        let input = input.to_vec();
        Box::new(move |mut si: ChildStdin| {
            let _ = si.write_all(&input);
        }) as Box<dyn FnOnce(ChildStdin) + Send>
    });
    run_feeding(cmd, feed, limit)
}

/// [`run_with_timeout`] with stdin written by `feed` on its own thread (e.g. more bytes than fit in
/// memory); stdin is closed when `feed` returns. None: stdin is /dev/null.
pub fn run_feeding(mut cmd: Command, feed: Option<Box<dyn FnOnce(ChildStdin) + Send>>, limit: Duration) -> Output {
    use std::io::Read;
    cmd.stdin(if feed.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    if let Some(feed) = feed {
        let si = child.stdin.take().unwrap();
        std::thread::spawn(move || feed(si));
    }
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = r.read_to_end(&mut b);
            b
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let (o, e) = (out.join().unwrap(), err.join().unwrap());
            panic!(
                "timed out after {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&o),
                String::from_utf8_lossy(&e)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// A stdin-fed poller ended by SIGTERM: runs `cmd` with `input` written on its stdin (kept open, so
/// only the signal can end the run), sends SIGTERM once it has written `n` http lines, and returns
/// its exit code, every stdout line (each must be whole JSON) and its stderr. Panics when the lines
/// stop coming or the tool does not exit within `limit`.
pub fn sigterm_after_http_lines(
    mut cmd: Command,
    input: &str,
    n: usize,
    limit: Duration,
) -> (Option<i32>, Vec<serde_json::Value>, String) {
    use std::io::Write;
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let (mut out, err) = (Lines::of(child.stdout.take().unwrap()), Lines::of(child.stderr.take().unwrap()));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    let seen = std::cell::Cell::new(0);
    out.wait_for(&format!("{n} http lines"), limit, |l| {
        seen.set(seen.get() + usize::from(l.contains("\"kind\":\"http\"")));
        seen.get() >= n
    });
    sigterm(&child);
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the tool did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(stdin);
    let lines = out.rest().iter().map(|l| serde_json::from_str(l).expect("whole lines")).collect();
    (status.code(), lines, err.rest().join("\n"))
}

/// fd-style assertion: the tool exited with `code` (a signal or another code fails, showing stderr).
#[track_caller]
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status {:?}, expected {code}; stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// fd-style assertion: stderr contains `needle` (the whole stderr is shown when it does not).
#[track_caller]
pub fn assert_stderr_contains(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "stderr does not contain {needle:?}:\n{err}");
}

/// fd-style assertion: nothing was written on stdout.
#[track_caller]
pub fn assert_stdout_empty(out: &Output) {
    assert!(out.stdout.is_empty(), "stdout is not empty:\n{}", String::from_utf8_lossy(&out.stdout));
}

/// fd-style assertion: stderr is exactly `lines` (each line compared, the whole stderr shown on a difference).
#[track_caller]
pub fn assert_stderr_lines(out: &Output, lines: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().collect::<Vec<_>>(), lines, "stderr:\n{err}");
}

/// Keys of a JSON object line, in the order written (serde_json::Value sorts them).
pub fn keys_in_order(line: &[u8]) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Keys, A::Error> {
                    let mut k = Vec::new();
                    while let Some(key) = a.next_key::<String>()? {
                        a.next_value::<serde::de::IgnoredAny>()?;
                        k.push(key);
                    }
                    Ok(Keys(k))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_slice::<Keys>(line).unwrap().0
}

/// Files under `dir` (recursively; none when it does not exist) whose name ends with `suffix`, sorted.
pub fn files_under(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Parses JSONL text into values (panics on a bad line, naming it).
pub fn jsonl(text: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(text)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSONL line {l:?}: {e}")))
        .collect()
}

pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    jsonl(&std::fs::read(path).unwrap())
}

/// Asserts that a raw line's `ctx` reads back through its Rust type `T` and writes again as the same
/// JSON: no key without a type, none of another JSON type.
pub fn assert_ctx_reads_as<T: serde::de::DeserializeOwned + serde::Serialize>(line: &serde_json::Value) {
    let t: T = serde_json::from_value(line["ctx"].clone()).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(serde_json::to_value(t).unwrap(), line["ctx"], "{line}");
}

/// Market record lines from `pm-markets --once` against the loopback venue, as of `now`.
pub fn market_lines(v: &venue::Venue, families: &str, ahead: &str, now: &str) -> Vec<String> {
    let mut c = tool("pm-markets");
    c.args(["--once", "--gamma-url", &v.url(), "--families", families, "--ahead", ahead, "--now", now]);
    let out = run_with_timeout(c, None, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

/// Lines of a running tool's stdout or stderr, collected by a thread.
pub struct Lines(std::sync::mpsc::Receiver<String>, Vec<String>);

impl Lines {
    pub fn of(r: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(r).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Lines(rx, Vec::new())
    }

    /// Waits (generously) for a line satisfying `f`; all lines read so far stay in `.1`.
    pub fn wait_for(&mut self, what: &str, limit: Duration, f: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + limit;
        if let Some(l) = self.1.iter().find(|l| f(l)) {
            return l.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.0.recv_timeout(left) {
                Ok(l) => {
                    self.1.push(l.clone());
                    if f(&l) {
                        return l;
                    }
                }
                Err(_) => panic!("no {what} within {limit:?}; lines so far: {:#?}", self.1),
            }
        }
    }

    /// Everything left once the writer has ended.
    pub fn rest(mut self) -> Vec<String> {
        while let Ok(l) = self.0.recv_timeout(Duration::from_secs(30)) {
            self.1.push(l);
        }
        self.1
    }
}

/// Asks a running tool to stop (SIGTERM), as systemd does.
pub fn sigterm(child: &std::process::Child) {
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
}

/// The Python interpreter that imports `modules` (`PMARCHIVE_PYTHON`, else target/pyvenv, else
/// python3), or None (skip) outside CI. Under `CI=true` a missing
/// module fails the test.
pub fn python(modules: &str) -> Option<String> {
    let py = std::env::var("PMARCHIVE_PYTHON").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| {
        let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python");
        if venv.exists() {
            venv.to_string_lossy().into_owned()
        } else {
            "python3".into()
        }
    });
    let ok = Command::new(&py).args(["-c", &format!("import {modules}")]).output().is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    let msg = format!("{py}: cannot import {modules} (install: .ci/run, or pip install duckdb pyarrow)");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("{msg}: skipped");
    None
}
