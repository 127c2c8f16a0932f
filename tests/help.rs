//! Every binary's command-line contract: `--help`/`-h` prints the usage text (the `USAGE` constant at
//! the top of its source file, the tool's spec) on stdout and exits 0; `--version`/`-V` prints
//! `<tool> <version>`; an unknown flag is a one-line message on stderr naming the tool and the flag
//! (plus the `--help` hint) and exit 2, with nothing on stdout.

mod common;

use std::time::Duration;

use common::{run_with_timeout, tool};

/// Every binary of the crate, with options its usage text must mention.
const TOOLS: [(&str, &[&str]); 8] = [
    ("pm-markets", &["--once", "--watch SECS", "--gamma-url URL", "--user-agent UA"]),
    ("pm-probe", &["--max-requests N", "--min-spacing SECS", "--timeout SECS"]),
    ("pm-books", &["--interval SECS", "--batch N", "--timeout SECS", "--user-agent UA"]),
    ("jsonl-rotate", &["--root DIR", "--stream NAME", "--rotate-secs N", "--recover-only"]),
    ("manifest", &["build", "verify", "status"]),
    ("pm-normalize", &["--depth N|all", "--markets FILE", "--check", "--manifest PATH"]),
    ("pm-stream", &["--ws-url URL", "--max-per-conn N", "--silence-secs SECS", "--user-agent UA"]),
    ("pm-rebuild", &["--depth N", "--every-ms MS", "--trades-out FILE", "--summary FILE"]),
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

fn run(name: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut c = tool(name);
    c.args(args);
    // Empty stdin: a tool that wrongly started working would see the end of its input at once.
    let out = run_with_timeout(c, Some(b""), Duration::from_secs(20));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_prints_the_usage_text_and_exits_0() {
    for (name, options) in TOOLS {
        let usage = usage_in_source(name);
        for flag in ["--help", "-h"] {
            let (code, out, err) = run(name, &[flag]);
            assert_eq!(code, Some(0), "{name} {flag}: {err}");
            assert_eq!(out, usage, "{name} {flag}: stdout is the USAGE text of bin/{name}.rs");
            assert!(err.is_empty(), "{name} {flag}: {err}");
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
            let (code, out, err) = run(name, &[flag]);
            assert_eq!(code, Some(0), "{name} {flag}: {err}");
            assert_eq!(out, format!("{name} {}\n", pm_archive::VERSION), "{name} {flag}");
        }
    }
}

#[test]
fn an_unknown_flag_is_a_one_line_error_and_exit_2() {
    for (name, _) in TOOLS {
        let (code, out, err) = run(name, &["--no-such-flag"]);
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(out.is_empty(), "{name}: nothing on stdout: {out}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{name}: the message and the --help hint: {err}");
        assert!(lines[0].starts_with(&format!("{name}: ")) && lines[0].contains("--no-such-flag"), "{name}: {err}");
        assert_eq!(lines[1], format!("Try '{name} --help' for more information."));
    }
}
