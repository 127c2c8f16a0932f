//! Every binary's command-line contract: `--help`/`-h` prints the usage text (the `USAGE` constant at
//! the top of its source file, the tool's spec) on stdout and exits 0; `--version`/`-V` prints
//! `<tool> <version>`; an unknown flag is a one-line message on stderr naming the tool and the flag
//! (plus the `--help` hint) and exit 2, with nothing on stdout.
//!
//! And the one exit-code rule of every tool (src/cli.rs, AGENTS.md §7) as one table: a closed stdout
//! is exit 0 (also for `--help`, `--version`, reports), a directory on stdin or an input that cannot
//! be opened is 2, damaged input (a truncated gzip) is 1 — and never 101 (panic) or 134 (abort).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_exit, assert_stderr_contains, assert_stdout_empty, run_with_timeout, tool};

/// Every binary of the crate, with options its usage text must mention.
const TOOLS: [(&str, &[&str]); 15] = [
    ("kalshi-markets", &["--once", "--watch SECS", "--series TICKER", "--kalshi-url URL", "--raw-out PATH"]),
    ("pm-markets", &["--once", "--watch SECS", "--gamma-url URL", "--user-agent UA"]),
    ("pm-probe", &["--max-requests N", "--min-spacing SECS", "--timeout SECS"]),
    ("pm-books", &["--interval SECS", "--batch N", "--timeout SECS", "--user-agent UA"]),
    ("kalshi-books", &["--kalshi-url URL", "--interval SECS", "--lead SECS", "--grace SECS", "--user-agent UA"]),
    ("jsonl-rotate", &["--root DIR", "--stream NAME", "--rotate-secs N", "--recover-only"]),
    ("manifest", &["build", "verify", "status"]),
    ("pm-normalize", &["--depth N|all", "--markets FILE", "--check", "--manifest PATH"]),
    ("pm-stream", &["--ws-url URL", "--max-per-conn N", "--silence-secs SECS", "--user-agent UA"]),
    ("pm-rebuild", &["--depth N", "--every-ms MS", "--trades-out FILE", "--summary FILE"]),
    ("pm-tradeset", &["--check", "--manifest PATH", "--match-secs SECS"]),
    ("pm-trades", &["--data-url URL", "--interval SECS", "--settle SECS", "--batch N", "--page-size N"]),
    ("kalshi-trades", &["--kalshi-url URL", "--interval SECS", "--settle SECS", "--overlap SECS", "--lead SECS"]),
    ("pm-venue", &["--log FILE", "--faults PROFILE", "--outage AT:SECS", "--clock SPEC"]),
    ("soak-report", &["--archive ROOT", "--venue-log FILE", "--supervisor-log FILE", "--out FILE.md"]),
];

/// The `USAGE` constant of `bin/<name>.rs`, as the program prints it (leading blank line trimmed).
fn usage_in_source(name: &str) -> String {
    let path = format!("{}/bin/{name}.rs", env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(&path).unwrap();
    let start = src.find("const USAGE: &str = \"").unwrap_or_else(|| panic!("{path}: no USAGE")) + 21;
    let end = start + src[start..].find("\n\";").expect("USAGE ends with a line holding only \";") + 1;
    assert!(!src[start..end].replace("\\\"", "").contains('\\'), "{path}: unexpected escape in USAGE");
    src[start..end].replace("\\\"", "\"").trim_start().to_string()
}

fn run(name: &str, args: &[&str]) -> Output {
    let mut c = tool(name);
    c.args(args);
    // Empty stdin: a tool that wrongly started working would see the end of its input at once.
    run_with_timeout(c, Some(b""), Duration::from_secs(20))
}

#[test]
fn help_prints_the_usage_text_and_exits_0() {
    for (name, options) in TOOLS {
        let usage = usage_in_source(name);
        for flag in ["--help", "-h"] {
            let out = run(name, &[flag]);
            assert_exit(&out, 0);
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                usage,
                "{name} {flag}: stdout is the USAGE of bin/{name}.rs"
            );
            assert!(out.stderr.is_empty(), "{name} {flag}: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert!(usage.starts_with(&format!("{name} — ")), "{name}: the first line names the tool");
        assert!(usage.contains("Usage:"), "{name}");
        for o in options.iter().chain(&["-h, --help", "-V, --version"]) {
            assert!(usage.contains(o), "{name}: usage mentions {o}");
        }
    }
}

#[test]
fn version_prints_the_tool_and_crate_version() {
    for (name, _) in TOOLS {
        for flag in ["--version", "-V"] {
            let out = run(name, &[flag]);
            assert_exit(&out, 0);
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                format!("{name} {}\n", pm_archive::VERSION),
                "{name} {flag}"
            );
        }
    }
}

#[test]
fn an_unknown_flag_is_a_one_line_error_and_exit_2() {
    for (name, _) in TOOLS {
        let out = run(name, &["--no-such-flag"]);
        assert_exit(&out, 2);
        assert_stdout_empty(&out);
        assert_stderr_contains(&out, &format!("Try '{name} --help' for more information."));
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{name}: the message and the --help hint: {err}");
        assert!(lines[0].starts_with(&format!("{name}: ")) && lines[0].contains("--no-such-flag"), "{name}: {err}");
        assert_eq!(lines[1], format!("Try '{name} --help' for more information."));
    }
}

#[derive(Clone, Copy, Debug)]
enum In {
    /// Empty stdin.
    Empty,
    /// A directory opened as stdin (`tool < dir`).
    Dir,
}

#[derive(Clone, Copy, Debug)]
enum Out {
    Piped,
    /// The read end of stdout's pipe is closed before the tool starts: every write is EPIPE.
    Closed,
}

/// Runs one case; returns (exit code, stdout, stderr). A tool still running after the deadline is a failure.
fn run_case(name: &str, args: &[String], stdin: In, stdout: Out, dir: &Path) -> (Option<i32>, String, String) {
    use std::io::Read;
    let mut c: Command = tool(name);
    c.args(args).stderr(Stdio::piped());
    match stdin {
        In::Empty => c.stdin(Stdio::piped()),
        In::Dir => c.stdin(Stdio::from(std::fs::File::open(dir).unwrap())),
    };
    match stdout {
        Out::Piped => c.stdout(Stdio::piped()),
        Out::Closed => {
            let (r, w) = std::io::pipe().unwrap();
            drop(r);
            c.stdout(w)
        }
    };
    let mut child = c.spawn().unwrap();
    drop(child.stdin.take()); // empty stdin: EOF at once
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut b);
            }
            String::from_utf8_lossy(&b).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|o| Box::new(o) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|o| Box::new(o) as Box<dyn Read + Send>));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} {args:?}: still running after 60 s: {}", err.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), out.join().unwrap(), err.join().unwrap())
}

/// One row of the exit-code table: (what, tool, args, stdin, stdout, expected exit code).
type Case<'a> = (&'a str, &'a str, Vec<String>, In, Out, i32);

#[test]
fn one_exit_code_rule_for_every_tool() {
    let dir = common::tempdir("exit-table");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    // A sealed-looking gzip cut in half (damage), a good normalized file for --check, a missing file.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, "{\"a\":1}\n".repeat(5000).as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    std::fs::write(p("cut.jsonl.gz"), &gz[..gz.len() / 2]).unwrap();
    std::fs::write(p("empty.jsonl"), b"").unwrap();
    std::fs::create_dir_all(p("root")).unwrap();
    std::fs::create_dir_all(p("a_dir")).unwrap();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let loopback = "http://127.0.0.1:9";
    let stdin_args: Vec<(&str, Vec<String>)> = vec![
        ("pm-books", s(&["--clob-url", loopback])),
        ("kalshi-books", s(&["--kalshi-url", loopback])),
        ("pm-stream", s(&["--ws-url", "ws://127.0.0.1:9"])),
        ("pm-trades", s(&["--data-url", loopback])),
        ("kalshi-trades", s(&["--kalshi-url", loopback])),
        ("jsonl-rotate", s(&["--root", &p("root"), "--stream", "s"])),
        ("manifest", s(&["build", "--root", &p("root")])),
        ("pm-normalize", vec![]),
        ("pm-rebuild", vec![]),
        ("pm-tradeset", vec![]),
    ];

    let mut table: Vec<Case> = Vec::new();
    for (name, _) in TOOLS {
        table.push(("--help, stdout closed", name, s(&["--help"]), In::Empty, Out::Closed, 0));
        table.push(("--version, stdout closed", name, s(&["--version"]), In::Empty, Out::Closed, 0));
        table.push(("unknown flag", name, s(&["--no-such-flag"]), In::Empty, Out::Piped, 2));
    }
    for (name, args) in &stdin_args {
        table.push(("stdin is a directory", name, args.clone(), In::Dir, Out::Piped, 2));
    }
    table.push((
        "--check report, stdout closed",
        "pm-normalize",
        s(&["--check", &p("empty.jsonl")]),
        In::Empty,
        Out::Closed,
        0,
    ));
    for name in ["pm-normalize", "pm-rebuild", "pm-tradeset"] {
        table.push(("truncated gzip", name, s(&[&p("cut.jsonl.gz")]), In::Empty, Out::Piped, 1));
        table.push(("missing input file", name, s(&[&p("no-such.jsonl")]), In::Empty, Out::Piped, 2));
        table.push(("input is a directory", name, s(&[&p("a_dir")]), In::Empty, Out::Piped, 2));
    }

    let raw_dir = s(&["--once", "--kalshi-url", loopback, "--raw-out", &p("a_dir")]);
    table.push(("--raw-out is a directory", "kalshi-markets", raw_dir, In::Empty, Out::Piped, 2));

    let sr = |log: &str| {
        s(&["--archive", &p("root"), "--venue-log", log, "--supervisor-log", &p("empty.jsonl"), "--out", &p("r.md")])
    };
    table.push(("missing input file", "soak-report", sr(&p("no-such.jsonl")), In::Empty, Out::Piped, 2));
    table.push(("input is a directory", "soak-report", sr(&p("a_dir")), In::Empty, Out::Piped, 2));
    let mut wrong = Vec::new();
    for (what, name, args, stdin, stdout, expected) in &table {
        let (code, _, err) = run_case(name, args, *stdin, *stdout, &dir.join("a_dir"));
        let panicked = err.contains("panicked") || err.contains("RUST_BACKTRACE");
        if code != Some(*expected) || panicked {
            wrong.push(format!("{name} {args:?} ({what}): expected {expected}, got {code:?}; stderr: {err}"));
        } else if *expected == 2 {
            assert!(
                err.lines().next().is_some_and(|l| l.starts_with(&format!("{name}: "))),
                "{name} ({what}): one line naming the tool: {err}"
            );
        }
    }
    assert!(wrong.is_empty(), "{} of {} cases wrong:\n{}", wrong.len(), table.len(), wrong.join("\n"));
}
