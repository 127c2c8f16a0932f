//! Readers without our code (issue 12 §4): the DuckDB, jq and Python examples of the docs run, as
//! written in the docs, against an archive sample that has gaps, errors, bad input and flagged rows.
//!
//! The sample is built once per test run from the real tools: pm-markets and pm-books against the
//! loopback venue (127.0.0.1, recorded responses, tests/common/venue.rs) with injected faults, on a
//! simulated clock that crosses midnight (two dates, hours `23` and `00`), archived by jsonl-rotate;
//! plus one DERIVED raw file (`hour=01`) around the recorded REST book (empty asks), a crossed copy of
//! it and a line that is not JSON. The normalized stream is made by the docs' own "deriving only what
//! is missing" loop, after two files were normalized with `--depth all` and `--top` (so the archive
//! mixes row shapes as a real one can; the first hour has failures only, no book row at all).
//!
//! Examples are taken FROM the docs (so docs and tests cannot drift): fenced blocks whose info string
//! carries the word `test` (`sql test`, `sh test`, `python test`), and every inline `jq '…'` filter
//! of any doc. A fenced `sql` or `python` block without `test` fails the
//! suite. DuckDB and pyarrow come from PyPI (`.ci/run` installs them into `target/pyvenv`;
//! `PMARCHIVE_PYTHON` names the interpreter). Without them the DuckDB/pyarrow tests are skipped with
//! a message — except under `CI=true`, where a missing module fails the test.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::venue::{fixture_json, Fault, Venue, RECORDED_BOOK_TOKEN};
use common::{python, run_with_timeout, tool};
use serde_json::{json, Value};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Docs whose examples are run.
fn docs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    v.push(repo().join("README.md"));
    v.sort();
    v
}

/// A fenced block of a doc: (doc, first line number, info string, text).
struct Block {
    doc: String,
    line: usize,
    info: String,
    text: String,
}

fn blocks() -> Vec<Block> {
    let mut out = Vec::new();
    for d in docs() {
        let text = std::fs::read_to_string(&d).unwrap();
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        let mut cur: Option<Block> = None;
        for (i, l) in text.lines().enumerate() {
            match (&mut cur, l.trim_start().strip_prefix("```")) {
                (None, Some(info)) => {
                    cur = Some(Block { doc: name.clone(), line: i + 1, info: info.trim().into(), text: String::new() })
                }
                (Some(_), Some(_)) => out.push(cur.take().unwrap()),
                (Some(b), None) => {
                    b.text.push_str(l);
                    b.text.push('\n');
                }
                (None, None) => {}
            }
        }
    }
    out
}

/// Blocks of a language (first word of the info string) marked `test`.
fn tested(lang: &str) -> Vec<Block> {
    blocks()
        .into_iter()
        .filter(|b| {
            let mut w = b.info.split_whitespace();
            w.next() == Some(lang) && w.any(|x| x == "test")
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The sample archive.

const START: time::OffsetDateTime = time::macros::datetime!(2026-08-13 23:59:20 UTC);

fn gz_write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = std::fs::File::create(path).unwrap();
    let mut g = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    g.write_all(text.as_bytes()).unwrap();
    g.finish().unwrap();
}

/// Raw lines DERIVED around the recorded REST book (clob_book_rest_empty_ask.json): a track line,
/// the book itself (empty asks), a copy with one ask below the best bid (crossed; its hash no
/// longer recomputes) and a line that is not JSON.
fn derived_raw() -> String {
    let env = |seq: u64, at: &str, rest: &str| {
        format!(
            r#"{{"schema":"pmarchive.raw/1","venue":"polymarket","tool":"pm-books","collector_version":"0.1.0","run_id":"derived","host":"testhost","seq":{seq},{rest},"collected_at_utc":"{at}""#
        )
    };
    let book = fixture_json("clob_book_rest_empty_ask.json");
    let mut crossed = book.clone();
    crossed["asks"] = json!([{"price": "0.001", "size": "10"}]);
    let ctx = r#""ctx":{"slot":0,"due_at_utc":"2026-08-14T01:00:01Z","tokens":["x"],"batch":1,"batches":1}"#;
    let books = |seq: u64, at: &str, b: &Value| {
        env(seq, at, r#""kind":"http","endpoint":"books""#)
            + &format!(r#","attempt":1,"status":200,"body_kind":"json","body":[{b}],{ctx}}}"#)
    };
    let track = env(0, "2026-08-14T01:00:00.000000Z", r#""kind":"track""#)
        + &format!(
            r#","ctx":{{"action":"start","reason":"window","slug":"btc-updown-5m-derived","condition_id":"{}","family":"5m","tokens":[{{"token_id":"{RECORDED_BOOK_TOKEN}","outcome":"Up"}}]}}}}"#,
            book["market"].as_str().unwrap()
        );
    [
        track,
        books(1, "2026-08-14T01:00:01.000000Z", &book),
        books(2, "2026-08-14T01:00:02.000000Z", &crossed),
        "this line is not JSON".to_string(),
    ]
    .join("\n")
        + "\n"
}

/// Builds the sample once: `<dir>/archive/venue=polymarket/stream={books,books_normalized}/…` and
/// `<dir>/markets.jsonl`; also `normalized.jsonl` (all normalized rows) and `raw.jsonl` (the raw
/// lines of the tools' run) for the jq examples, and `<dir>/clean/archive/…` (hour 00 alone).
fn sample() -> &'static Path {
    static S: OnceLock<PathBuf> = OnceLock::new();
    S.get_or_init(build_sample)
}

fn build_sample() -> PathBuf {
    // Shared by every test of this file, so not a `tempdir` (removed when the test that made it
    // passes, while the others still read it): a fixed folder of this build's target, remade per run.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("readers-sample");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let v = Venue::start();
    // 10 simulated seconds per real second; each tool's simulated clock starts at START when the
    // tool starts, and slots, --duration and rotation periods follow it (14 s ≈ 23:59:20 → 00:01:40).
    // The faults below can leave the poller backing off for up to ~4 s (jittered, and longer in
    // slots on a loaded machine): the run is long enough for 20+ book rows after that.
    let clock = v.simulate_clock(START, 10.0);
    // With --retries 2: the first slot fails twice (an error row per attempt, a failed_request
    // gap), the next two recover on their retry (error rows, then books).
    for f in [Fault::Status(503), Fault::Html, Fault::Truncated, Fault::Reset] {
        v.fault("/books", f);
    }
    let mut c = tool("pm-markets");
    c.args(["--once", "--gamma-url", &v.url(), "--families", "5m", "--ahead", "1"]);
    c.args(["--now", &pm_archive::clock::fmt_secs(START)]);
    let out = run_with_timeout(c, None, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "pm-markets: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(dir.join("markets.jsonl"), &out.stdout).unwrap();
    let bins = common::bin("pm-books").parent().unwrap().to_path_buf();
    let script = format!(
        "set -o pipefail; pm-books --clob-url {url} --interval 0.5 --lead 60 --grace 150 --retries 2 --duration 14 \
         < markets.jsonl | jsonl-rotate --root archive --stream books --flush-secs 1 --rotate-secs 3600 > sealed.jsonl",
        url = v.url()
    );
    let mut c = Command::new("bash");
    c.arg("-c").arg(&script).current_dir(&dir).env("PMARCHIVE_CLOCK", &clock).env("PMARCHIVE_HOST", "testhost");
    c.env("PATH", format!("{}:{}", bins.display(), std::env::var("PATH").unwrap_or_default()));
    c.env_remove("PMARCHIVE_RUN_ID");
    let out = run_with_timeout(c, None, Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(0), "pm-books | jsonl-rotate: {}", String::from_utf8_lossy(&out.stderr));
    let books = dir.join("archive/venue=polymarket/stream=books");
    gz_write(&books.join("date=2026-08-14/hour=01/testhost-derived-0.jsonl.gz"), &derived_raw());
    let raw_files = common::files_under(&books, ".jsonl.gz");
    let hours: BTreeSet<String> =
        raw_files.iter().map(|p| p.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(
        hours.iter().map(String::as_str).collect::<Vec<_>>(),
        ["hour=00", "hour=01", "hour=23"],
        "{raw_files:?}"
    );
    // Two files normalized with other shapes first; the docs' loop derives the rest.
    // hour=23 holds only failures (gap/error rows, no book row at all), hour=00 the books.
    let first_00 = raw_files.iter().find(|p| p.to_string_lossy().contains("hour=00")).unwrap();
    let derived = raw_files.iter().find(|p| p.to_string_lossy().contains("derived")).unwrap();
    for (f, args) in [(first_00, &["--depth", "all"][..]), (derived, &["--top"][..])] {
        let out_path = PathBuf::from(f.to_string_lossy().replace("stream=books", "stream=books_normalized"));
        let mut c = tool("pm-normalize");
        c.args(args).arg("--markets").arg(dir.join("markets.jsonl")).arg(f).arg("-o").arg(&out_path);
        let o = run_with_timeout(c, None, Duration::from_secs(60));
        assert!(o.status.code().unwrap() <= 1, "{}", String::from_utf8_lossy(&o.stderr));
    }
    let loop_block = tested("sh")
        .into_iter()
        .find(|b| b.text.contains("stream=books_normalized") && b.text.contains("for f in"))
        .expect("ORDERBOOK_SCHEMA.md: a ```sh test block with the 'deriving only what is missing' loop");
    let mut c = Command::new("bash");
    c.arg("-c").arg(&loop_block.text).current_dir(&dir);
    c.env("PATH", format!("{}:{}", bins.display(), std::env::var("PATH").unwrap_or_default()));
    let o = run_with_timeout(c, None, Duration::from_secs(120));
    assert!(o.status.success(), "{}: {}", loop_block.doc, String::from_utf8_lossy(&o.stderr));
    let norm_files = common::files_under(&dir.join("archive/venue=polymarket/stream=books_normalized"), ".jsonl.gz");
    assert_eq!(norm_files.len(), raw_files.len(), "one normalized file per raw file");
    let cat = |files: &[PathBuf], to: &str| {
        let mut all = Vec::new();
        for f in files {
            all.extend(Command::new("zcat").arg(f).output().unwrap().stdout);
        }
        std::fs::write(dir.join(to), all).unwrap();
    };
    cat(&norm_files, "normalized.jsonl");
    // Raw lines of the tools' run (the derived file's non-JSON line would stop jq, as it would in a
    // `zcat | jq` over an archive holding one).
    let tool_raw: Vec<PathBuf> =
        raw_files.iter().filter(|p| !p.to_string_lossy().contains("derived")).cloned().collect();
    cat(&tool_raw, "raw.jsonl");
    // The clean part alone (hour 00: no flag, no error row), for queries over part of an archive.
    for f in raw_files.iter().chain(&norm_files).filter(|p| p.to_string_lossy().contains("hour=00")) {
        let rel = f.strip_prefix(&dir).unwrap();
        std::fs::create_dir_all(dir.join("clean").join(rel).parent().unwrap()).unwrap();
        std::fs::copy(f, dir.join("clean").join(rel)).unwrap();
    }
    dir
}

fn rows(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(sample().join(name)).unwrap();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

// ---------------------------------------------------------------------------------------------
// The sample itself, and the row schema.

/// The sample has what the queries must cope with: gaps, errors, bad input, flagged and clean rows,
/// rows with and without levels.
#[test]
fn the_sample_has_gaps_errors_bad_input_and_flags() {
    let rows = rows("normalized.jsonl");
    let count = |f: &dyn Fn(&Value) -> bool| rows.iter().filter(|r| f(r)).count();
    assert!(count(&|r| r["record"] == "book") >= 20, "book rows");
    assert!(count(&|r| r["record"] == "gap") >= 1, "gap rows");
    assert!(count(&|r| r["record"] == "error") >= 2, "error rows");
    assert!(count(&|r| r["record"] == "bad_input") == 1, "bad_input rows");
    let has = |f: &str| rows.iter().any(|r| r["flags"].as_array().is_some_and(|a| a.iter().any(|x| x == f)));
    assert!(has("crossed") && has("empty_asks") && has("hash_mismatch"));
    assert!(count(&|r| r["record"] == "book" && r["flags"] == json!([])) >= 10, "clean rows");
    assert!(count(&|r| r["record"] == "book" && r["depth"].is_null()) >= 2, "--depth all rows");
    assert!(count(&|r| r["record"] == "book" && r["depth"] == 0) >= 1, "--top rows");
}

/// The JSON type of a value, for the schema check.
fn jtype(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every row of a kind has the same keys in the same order, and each key one JSON type (or null)
/// across all files — whatever the options (`--top`, `--depth all`) and whatever went wrong.
#[test]
fn normalized_rows_keep_one_type_per_field() {
    let rows = rows("normalized.jsonl");
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut types: BTreeMap<(String, String), BTreeSet<&'static str>> = BTreeMap::new();
    for r in &rows {
        let rec = r["record"].as_str().unwrap().to_string();
        let ks: Vec<String> = r.as_object().unwrap().keys().cloned().collect();
        let want = keys.entry(rec.clone()).or_insert_with(|| ks.clone());
        assert_eq!(&ks, want, "{rec} rows differ in keys: {r}");
        for (k, v) in r.as_object().unwrap() {
            types.entry((rec.clone(), k.clone())).or_default().insert(jtype(v));
            if k == "bids" || k == "asks" {
                for l in v.as_array().into_iter().flatten() {
                    assert!(l["price"].is_string() && l["size"].is_string() && l.as_object().unwrap().len() == 2);
                }
            }
            if k == "flags" {
                assert!(v.as_array().unwrap().iter().all(Value::is_string));
            }
        }
    }
    assert_eq!(keys.len(), 4, "{:?}", keys.keys());
    for ((rec, k), ts) in &types {
        let non_null: Vec<_> = ts.iter().filter(|t| **t != "null").collect();
        assert!(non_null.len() <= 1, "{rec}.{k} has types {ts:?}");
    }
    // pm-normalize --check reads every row into its Rust type (src/normalize/rows.rs).
    let mut c = tool("pm-normalize");
    c.arg("--check")
        .args(common::files_under(&sample().join("archive/venue=polymarket/stream=books_normalized"), ".jsonl.gz"));
    let o = run_with_timeout(c, None, Duration::from_secs(60));
    let rep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((o.status.code(), &rep["invalid_rows"]), (Some(0), &json!(0)), "{}", rep["problems"]);
    // Integers stay integers readers can hold exactly (no 2^64-1 for --depth all).
    for r in &rows {
        for k in ["depth", "exchange_ts_ms", "slot", "raw_seq", "bid_levels", "ask_levels", "status", "attempt"] {
            if let Some(n) = r.get(k).and_then(Value::as_u64) {
                assert!(n < 1 << 53, "{k} = {n}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Python: DuckDB and pyarrow.

/// Runs every statement of the given SQL in one DuckDB connection in `dir`; returns per statement
/// (first line of the statement, result rows as JSON arrays).
const RUN_SQL: &str = r#"
import duckdb, json, re, sys
con = duckdb.connect()
sql = open(sys.argv[1]).read()
for stmt in [s for s in re.split(r";\s*(?:\n|$)", sql) if re.sub(r"--[^\n]*", "", s).strip()]:
    cur = con.execute(stmt)
    rows = cur.fetchall() if cur.description else []
    head = [l for l in stmt.strip().splitlines() if not l.startswith("--")][0]
    print(json.dumps({"stmt": head, "rows": [[str(x) for x in r] for r in rows]}))
"#;

fn run_sql(py: &str, sql: &str, dir: &Path) -> Vec<(String, Vec<Vec<String>>)> {
    let f = sample().join(format!("q-{}.sql", std::process::id()));
    std::fs::write(&f, sql).unwrap();
    let mut c = Command::new(py);
    c.args(["-c", RUN_SQL]).arg(&f).current_dir(dir);
    let o = run_with_timeout(c, None, Duration::from_secs(180));
    assert!(o.status.success(), "duckdb failed in {dir:?}:\n{sql}\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let rows = v["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect())
                .collect();
            (v["stmt"].as_str().unwrap().to_string(), rows)
        })
        .collect()
}

/// Every ```sql test block of the docs runs in DuckDB against the sample, each SELECT returns rows,
/// and the answers agree with the rows themselves.
#[test]
fn duckdb_queries_in_the_docs_run_on_the_sample() {
    let Some(py) = python("duckdb") else { return };
    let blocks = tested("sql");
    assert!(blocks.len() >= 2, "ORDERBOOK_SCHEMA.md and DATA_CONTRACT.md have ```sql test blocks");
    let norm = rows("normalized.jsonl");
    for b in &blocks {
        // The clean hour alone (no flag, no error row): every statement runs (the hour may or may
        // not hold gap rows, depending on when the backoff ended, so rows are not required here).
        let clean = run_sql(&py, &b.text, &sample().join("clean"));
        assert!(clean.len() >= 2, "{}:{}: no statement ran", b.doc, b.line);
        // The whole sample: every SELECT answers with rows.
        let results = run_sql(&py, &b.text, sample());
        for (stmt, rows) in &results {
            if stmt.trim_start().to_uppercase().starts_with("SELECT") {
                assert!(!rows.is_empty(), "{}:{}: no rows from {stmt}", b.doc, b.line);
            }
        }
        // Cross-checks where the doc's answer can be recomputed from the rows.
        for (stmt, rows) in &results {
            if stmt.contains("date, count(*) AS rows") {
                let crossed: u64 = rows.iter().map(|r| r[3].parse::<u64>().unwrap()).sum();
                let want = norm.iter().filter(|r| r["flags"].to_string().contains("\"crossed\"")).count() as u64;
                assert_eq!(crossed, want, "crossed per day: {rows:?}");
                assert!(crossed >= 1);
            }
            if stmt.contains("date, hour, record") {
                let whats: BTreeSet<&str> = rows.iter().map(|r| r[3].as_str()).collect();
                assert!(whats.contains("not_json") && whats.iter().any(|w| w.contains("failed_request")), "{whats:?}");
                assert!(rows.iter().any(|r| r[1] == "01"), "hour is the partition text '01': {rows:?}");
            }
        }
    }
}

/// Every ```python test block of the docs runs in the sample directory and prints something.
#[test]
fn python_examples_in_the_docs_run_on_the_sample() {
    let Some(py) = python("duckdb, pyarrow") else { return };
    let blocks = tested("python");
    assert!(!blocks.is_empty(), "a ```python test block (pyarrow)");
    for b in blocks {
        let mut c = Command::new(&py);
        c.arg("-c").arg(&b.text).current_dir(sample());
        let o = run_with_timeout(c, None, Duration::from_secs(180));
        assert!(o.status.success(), "{}:{}: {}", b.doc, b.line, String::from_utf8_lossy(&o.stderr));
        assert!(!o.stdout.is_empty(), "{}:{}: no output", b.doc, b.line);
    }
}

/// No SQL or Python example in the docs escapes the tests: every fenced `sql`/`python` block is
/// marked `test` (and so runs above) or `crossvenue` (docs/KALSHI.md: run by tests/crossvenue.rs on a
/// chain with both venues).
#[test]
fn every_sql_and_python_block_in_the_docs_is_tested() {
    for b in blocks() {
        let mut w = b.info.split_whitespace();
        let lang = w.next().unwrap_or("");
        if matches!(lang, "sql" | "python" | "py") {
            assert!(
                w.any(|x| x == "test" || x == "crossvenue"),
                "{}:{}: ```{} block without `test`",
                b.doc,
                b.line,
                b.info
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// jq.

fn jq_available() -> bool {
    Command::new("jq").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Every line starting with `jq ` in a ```sh test block runs in the sample directory (files
/// `normalized.jsonl`, `raw.jsonl`) and prints something.
#[test]
fn jq_lines_of_sh_test_blocks_run_on_the_sample() {
    if !jq_available() {
        eprintln!("jq not installed: skipped");
        return;
    }
    let mut n = 0;
    for b in tested("sh") {
        for l in b.text.lines().filter(|l| l.starts_with("jq ")) {
            n += 1;
            let o = Command::new("bash").args(["-c", l]).current_dir(sample()).output().unwrap();
            assert!(o.status.success(), "{}: {l}: {}", b.doc, String::from_utf8_lossy(&o.stderr));
            assert!(!o.stdout.is_empty(), "{}: {l}: no output", b.doc);
        }
    }
    assert!(n >= 7, "{n} jq examples");
}

/// Every inline `jq … '<filter>'` of any doc (e.g. the quick looks in OPERATIONS.md) is a valid
/// filter that runs over the raw and the normalized sample.
#[test]
fn inline_jq_filters_in_all_docs_run() {
    if !jq_available() {
        eprintln!("jq not installed: skipped");
        return;
    }
    let mut n = 0;
    for d in docs() {
        // Outside fenced blocks (those run above), inline code spans only.
        let mut text = String::new();
        let mut fenced = false;
        for l in std::fs::read_to_string(&d).unwrap().lines() {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
            } else if !fenced {
                text.push_str(l);
                text.push('\n');
            }
        }
        for span in text.split('`').skip(1).step_by(2) {
            let Some(i) = span.find("jq ") else { continue };
            let Some(q) = span[i..].find('\'') else { continue };
            let rest = &span[i + q + 1..];
            let Some(end) = rest.find('\'') else { continue };
            // Inside a Markdown table a literal `|` is written `\|`.
            let filter = &rest[..end].replace("\\|", "|");
            n += 1;
            for input in ["raw.jsonl", "normalized.jsonl"] {
                let o = Command::new("jq").args(["-c", filter]).arg(input).current_dir(sample()).output().unwrap();
                assert!(o.status.success(), "{d:?}: jq '{filter}' on {input}: {}", String::from_utf8_lossy(&o.stderr));
            }
        }
    }
    assert!(n >= 3, "{n} inline jq filters");
}

/// Raw lines keep one JSON type per envelope field and per `ctx` member (absent fields are omitted,
/// never null), so pyarrow and DuckDB can type them; `body` is the venue's reply and varies by
/// nature. Today pm-books' `ctx.tokens` is an array of ids on http/gap lines and of
/// `{token_id, outcome}` objects on track lines: the `clock` branch changes what pm-books writes.
#[test]
fn raw_lines_keep_one_type_per_field() {
    let mut types: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let elem = |v: &Value| match v {
        Value::Array(a) => format!("array<{}>", a.first().map_or("?", jtype)),
        v => jtype(v).to_string(),
    };
    for r in rows("raw.jsonl") {
        for (k, v) in r.as_object().unwrap() {
            if k == "body" {
                continue;
            }
            types.entry(k.clone()).or_default().insert(elem(v));
        }
        for (k, v) in r["ctx"].as_object().into_iter().flatten() {
            types.entry(format!("ctx.{k}")).or_default().insert(elem(v));
        }
    }
    for (k, ts) in &types {
        let ts: BTreeSet<&String> = ts.iter().filter(|t| !t.ends_with("<?>")).collect();
        assert!(ts.len() <= 1, "{k} has types {ts:?}");
    }
}
