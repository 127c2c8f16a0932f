//! The docs are tied to the code (issue 13 §7): each check reads a doc and the code it describes and
//! fails when they drift apart.
//!
//! - docs/ORDERBOOK_SCHEMA.md's field tables list exactly the fields of the row types
//!   (src/normalize/rows.rs), in their order.
//! - The example configs (config/*.env) hold exactly the keys that the collector chain
//!   (pipelines/collect.sh, the cycle script, the systemd units, the tools) and the uploader read;
//!   the few variables that are not configuration are documented elsewhere. Every `PMARCHIVE_*` a doc
//!   names is read by something.
//! - Every flag in a tool's usage text (`--help`, the spec) is described in the docs that describe the tool.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{assert_exit, assert_stderr_lines, assert_stdout_empty, tool};
use pm_archive::normalize::rows::{BadInputRow, BookRow, ErrorRow, GapRow};
use serde::Serialize;

fn read(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Files of `dir` (relative to the crate) whose name ends with `suffix`, sorted, as relative paths.
fn files(dir: &str, suffix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(suffix))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    v.sort();
    v
}

/// The names between backticks in `s`.
fn backticked(s: &str) -> Vec<String> {
    s.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// The field names listed in the first column of the first table after the heading `heading`.
fn doc_table_fields(doc: &str, heading: &str) -> Vec<String> {
    let start = doc.find(&format!("\n{heading}\n")).unwrap_or_else(|| panic!("no heading {heading:?}"));
    let mut fields = Vec::new();
    let mut in_table = false;
    for line in doc[start + heading.len() + 2..].lines() {
        if line.starts_with('#') {
            break;
        }
        if let Some(row) = line.strip_prefix('|') {
            let first = row.split('|').next().unwrap().trim();
            if first == "field" || first.starts_with("---") {
                in_table = true;
                continue;
            }
            fields.extend(backticked(first));
        } else if in_table {
            break;
        }
    }
    assert!(!fields.is_empty(), "{heading}: no field table");
    fields
}

/// A row type's fields in declaration order (the order in which a row is written): the keys of its
/// serialized default, read in the order written.
fn type_fields<T: Default + Serialize>() -> Vec<String> {
    common::keys_in_order(&serde_json::to_vec(&T::default()).unwrap())
}

#[test]
fn orderbook_schema_lists_exactly_the_fields_of_each_row_type() {
    let doc = read("docs/ORDERBOOK_SCHEMA.md");
    let cases = [
        ("### `book` rows", type_fields::<BookRow>()),
        ("### `gap` rows", type_fields::<GapRow>()),
        ("### `error` rows", type_fields::<ErrorRow>()),
        ("### `bad_input` rows", type_fields::<BadInputRow>()),
    ];
    for (heading, fields) in cases {
        assert_eq!(
            doc_table_fields(&doc, heading),
            fields,
            "docs/ORDERBOOK_SCHEMA.md {heading} vs src/normalize/rows.rs"
        );
    }
    // The check is not vacuous: a drifted table is caught.
    let drifted = doc.replacen("| `mid` |", "| `midpoint` |", 1);
    assert_ne!(doc_table_fields(&drifted, "### `book` rows"), type_fields::<BookRow>());
}

/// `PMARCHIVE_*` (and `RCLONE_CONFIG`) names in `text`.
fn env_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("PMARCHIVE_").chain(text.match_indices("RCLONE_CONFIG")) {
        let name: String =
            text[i..].chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
        // RCLONE_CONFIG_<REMOTE>_<KEY> are rclone's own variables (config/rclone.example.md), not ours.
        if !name.ends_with('_') && !name.starts_with("RCLONE_CONFIG_") {
            out.insert(name);
        }
    }
    out
}

/// The keys an example config sets or shows (`KEY=…` or `#KEY=…` lines).
fn example_keys(rel: &str) -> BTreeSet<String> {
    read(rel)
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix('#').unwrap_or(l);
            let (k, _) = l.split_once('=')?;
            (!k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .then(|| k.to_string())
        })
        .collect()
}

fn names_in(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().flat_map(|p| env_names(&read(p))).collect()
}

/// Environment variables that are not settings of a config file, and the doc that explains each.
const NOT_CONFIG: [(&str, &str); 4] = [
    ("PMARCHIVE_ENV", "docs/POLYMARKET_COLLECTOR.md"), // names the config file itself
    ("PMARCHIVE_RUN_ID", "docs/DATA_CONTRACT.md"),     // set by collect.sh for all its stages
    ("PMARCHIVE_CLOCK", "docs/DATA_CONTRACT.md"),      // tests and replays only
    ("PMARCHIVE_PYTHON", "docs/OPERATIONS.md"),        // tests/readers.rs only
];

fn rust_sources() -> Vec<String> {
    let mut v = files("src", ".rs");
    for d in ["src/manifest", "src/normalize", "src/probe"] {
        if Path::new(env!("CARGO_MANIFEST_DIR")).join(d).is_dir() {
            v.extend(files(d, ".rs"));
        }
    }
    v.extend(files("bin", ".rs"));
    v
}

#[test]
fn example_configs_hold_exactly_the_keys_the_chain_and_the_uploader_read() {
    let not_config: BTreeSet<String> = NOT_CONFIG.iter().map(|(k, _)| k.to_string()).collect();
    let collect = names_in(&["pipelines/collect.sh"]);
    let vps_readers = names_in(&[
        "pipelines/collect.sh",
        "scripts/run_polymarket_collector_cycle.sh",
        "systemd/polymarket-orderbook-collector.service",
        "systemd/pm-archive-health.service",
    ]);
    let rust: BTreeSet<String> = rust_sources().iter().flat_map(|p| env_names(&read(p))).collect();
    let uploader_readers = names_in(&["scripts/upload_archive_rclone.sh", "systemd/pm-archive-upload.service"]);
    let dev = example_keys("config/polymarket_collector.example.env");
    let vps = example_keys("config/polymarket_collector.vps.example.env");
    let up = example_keys("config/uploader.example.env");

    let missing = |read: &BTreeSet<String>, example: &BTreeSet<String>| -> Vec<String> {
        read.difference(example).filter(|k| !not_config.contains(*k)).cloned().collect()
    };
    assert_eq!(missing(&collect, &dev), Vec::<String>::new(), "read by collect.sh, not in the development example");
    assert_eq!(missing(&vps_readers, &vps), Vec::<String>::new(), "read by the VPS chain, not in the VPS example");
    assert_eq!(missing(&uploader_readers, &up), Vec::<String>::new(), "read by the uploader, not in its example");

    let chain: BTreeSet<String> = vps_readers.union(&rust).cloned().collect();
    let unread = |example: &BTreeSet<String>, readers: &BTreeSet<String>| -> Vec<String> {
        example.difference(readers).cloned().collect()
    };
    assert_eq!(unread(&dev, &chain), Vec::<String>::new(), "development example keys nothing reads");
    assert_eq!(unread(&vps, &chain), Vec::<String>::new(), "VPS example keys nothing reads");
    assert_eq!(unread(&up, &uploader_readers), Vec::<String>::new(), "uploader example keys nothing reads");

    for (k, doc) in NOT_CONFIG {
        assert!(read(doc).contains(&format!("`{k}`")), "{k} is documented in {doc}");
        assert!(!dev.contains(k) && !vps.contains(k), "{k} is not a config file setting");
    }
}

#[test]
fn every_variable_a_doc_names_is_read_by_something() {
    let mut readers: BTreeSet<String> = rust_sources().iter().flat_map(|p| env_names(&read(p))).collect();
    for dir in ["pipelines", "scripts", "systemd", "tests", "tests/common", ".ci"] {
        for p in files(dir, "") {
            if Path::new(env!("CARGO_MANIFEST_DIR")).join(&p).is_file() && p != "tests/docs.rs" {
                readers.extend(env_names(&read(&p)));
            }
        }
    }
    let mut docs = files("docs", ".md");
    docs.extend(["README.md".to_string(), "config/rclone.example.md".to_string()]);
    docs.extend(files("config", ".env"));
    let mut stale = Vec::new();
    for d in &docs {
        for k in env_names(&read(d)) {
            if !readers.contains(&k) {
                stale.push(format!("{d}: {k}"));
            }
        }
    }
    assert!(stale.is_empty(), "variables the docs name that nothing reads:\n{}", stale.join("\n"));
}

/// The docs that describe each tool (the tool's own page first).
const TOOL_DOCS: [(&str, &[&str]); 15] = [
    ("kalshi-markets", &["docs/KALSHI.md"]),
    ("pm-markets", &["docs/POLYMARKET_COLLECTOR.md"]),
    ("pm-books", &["docs/POLYMARKET_COLLECTOR.md"]),
    ("kalshi-books", &["docs/KALSHI.md"]),
    ("pm-stream", &["docs/WEBSOCKET.md"]),
    ("pm-rebuild", &["docs/WEBSOCKET.md"]),
    ("pm-normalize", &["docs/ORDERBOOK_SCHEMA.md"]),
    ("pm-probe", &["docs/PROBE.md"]),
    ("pm-trades", &["docs/TRADES.md"]),
    ("pm-tradeset", &["docs/TRADES.md"]),
    ("kalshi-trades", &["docs/KALSHI.md"]),
    ("pm-venue", &["docs/SOAK.md"]),
    ("soak-report", &["docs/SOAK.md"]),
    ("jsonl-rotate", &["docs/DATA_CONTRACT.md", "docs/POLYMARKET_COLLECTOR.md", "docs/OPERATIONS.md"]),
    (
        "manifest",
        &[
            "docs/DATA_CONTRACT.md",
            "docs/POLYMARKET_COLLECTOR.md",
            "docs/GOOGLE_DRIVE_OFFLOAD.md",
            "docs/OPERATIONS.md",
        ],
    ),
];

/// The long flags of a usage text (`--help` and `--version` excepted).
fn flags(usage: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in usage.match_indices("--") {
        let before = usage[..i].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-') {
            continue;
        }
        let name: String =
            usage[i + 2..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-').collect();
        if !name.is_empty() && name != "help" && name != "version" {
            out.insert(format!("--{}", name.trim_end_matches('-')));
        }
    }
    out
}

/// Whether `doc` names `flag` as a whole flag (`--depth` is not found in `--depth-all`).
fn mentions_flag(doc: &str, flag: &str) -> bool {
    doc.match_indices(flag).any(|(i, _)| {
        let after = doc[i + flag.len()..].chars().next();
        !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

#[test]
fn every_flag_of_every_tool_is_described_in_its_docs() {
    let tools: Vec<String> = files("bin", ".rs").iter().map(|p| p["bin/".len()..p.len() - 3].to_string()).collect();
    let mapped: Vec<String> = TOOL_DOCS.iter().map(|(t, _)| t.to_string()).collect();
    assert_eq!(
        tools,
        mapped.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>(),
        "every tool has docs here"
    );
    let mut missing = Vec::new();
    for (name, docs) in TOOL_DOCS {
        // The usage text as the tool prints it (`--help`): the spec.
        let mut c = tool(name);
        c.arg("--help");
        let out = common::run_with_timeout(c, Some(b""), std::time::Duration::from_secs(20));
        assert_exit(&out, 0);
        let usage = String::from_utf8(out.stdout).unwrap();
        let texts: Vec<String> = docs.iter().map(|d| read(d)).collect();
        for f in flags(&usage) {
            if !texts.iter().any(|t| mentions_flag(t, &f)) {
                missing.push(format!("{name} {f} (looked in {})", docs.join(", ")));
            }
        }
    }
    assert!(missing.is_empty(), "flags in a usage text that its docs never name:\n{}", missing.join("\n"));
}

#[test]
fn the_flag_reader_sees_what_a_reader_sees() {
    let usage = "Usage: t [--depth N] [--top]\n  --max-lag MS  (see also pm-x --check-args)\n  a--b, 5--6";
    let want: BTreeSet<String> =
        ["--depth", "--top", "--max-lag", "--check-args"].iter().map(|s| s.to_string()).collect();
    assert_eq!(flags(usage), want);
    assert!(mentions_flag("use `--depth N`.", "--depth"));
    assert!(!mentions_flag("use `--depth-all`.", "--depth"));
}

fn pm_markets(args: &[&str]) -> std::process::Output {
    let mut c = tool("pm-markets");
    c.args(args);
    common::run_with_timeout(c, Some(b""), std::time::Duration::from_secs(20))
}

#[test]
fn the_families_the_example_configs_list_are_the_ones_pm_markets_accepts() {
    for example in ["config/polymarket_collector.example.env", "config/polymarket_collector.vps.example.env"] {
        let text = read(example);
        let line = text.lines().find(|l| l.trim_start_matches('#').starts_with("PMARCHIVE_FAMILIES=")).unwrap();
        let families = line.split_once('=').unwrap().1;
        let out = pm_markets(&["--watch", "60", "--families", families, "--check-args"]);
        assert_exit(&out, 0);
        assert_stdout_empty(&out);
    }
    // A family the docs do not list is refused with one line naming the flag, the value and the known ones.
    let out = pm_markets(&["--watch", "60", "--families", "5m,7m", "--check-args"]);
    assert_exit(&out, 2);
    assert_stdout_empty(&out);
    assert_stderr_lines(
        &out,
        &[
            "pm-markets: --families: unknown family '7m' (known: 5m,15m,1h,4h,daily)",
            "Try 'pm-markets --help' for more information.",
        ],
    );
}
