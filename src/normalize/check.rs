//! `pm-normalize --check`: reads normalized files and reports every count and flag as one JSON
//! document. Hard invariants (a failure makes `ok` false and the tool exit 1): every line parses as
//! a JSON object of schema `pmarchive.orderbook/1` with a known `record` whose keys and types are
//! exactly those of its type in [`super::rows`], and within each file the rows of one raw run are in order (`raw_seq` never decreases,
//! `collected_at_utc` never goes back).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde_json::{json, Value};

use super::engine::{FLAGS, SCHEMA};
use crate::jsonl;

/// At most this many problems are listed (all are counted).
const MAX_PROBLEMS: usize = 50;

#[derive(Default)]
struct Acc {
    lines: u64,
    unparseable: u64,
    invalid: u64,
    out_of_order: u64,
    problems: Vec<Value>,
    rows: BTreeMap<String, u64>,
    tokens: BTreeSet<String>,
    markets: BTreeSet<String>,
    slugs: BTreeSet<String>,
    unjoined: u64,
    collected: (Option<String>, Option<String>),
    exchange: (Option<String>, Option<String>),
    hash: [u64; 3],
    flags: BTreeMap<String, u64>,
    gaps: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    bad_input: BTreeMap<String, u64>,
    files: Vec<Value>,
}

fn span(s: &mut (Option<String>, Option<String>), v: &str) {
    if s.0.as_deref().is_none_or(|f| v < f) {
        s.0 = Some(v.to_string());
    }
    if s.1.as_deref().is_none_or(|l| v > l) {
        s.1 = Some(v.to_string());
    }
}

impl Acc {
    fn problem(&mut self, file: &str, line: u64, what: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(json!({"file": file, "line": line, "problem": what}));
        }
    }

    /// Validates one row; returns why it is invalid.
    fn row(&mut self, v: &Value) -> Result<(), String> {
        let obj = v.as_object().ok_or("not a JSON object")?;
        if obj.get("schema").and_then(Value::as_str) != Some(SCHEMA) {
            return Err(format!("schema is not {SCHEMA}"));
        }
        super::rows::validate(v)?;
        let record = obj.get("record").and_then(Value::as_str).ok_or("no record")?;
        let s = |k: &str| obj.get(k).and_then(Value::as_str);
        let count = |m: &mut BTreeMap<String, u64>, k: &str| *m.entry(k.to_string()).or_insert(0) += 1;
        match record {
            "book" => {
                let asset = s("asset_id").ok_or("book row without asset_id")?;
                let collected = s("collected_at_utc").ok_or("book row without collected_at_utc")?;
                let flags = obj.get("flags").and_then(Value::as_array).ok_or("book row without flags array")?;
                self.tokens.insert(asset.to_string());
                if let Some(m) = s("market") {
                    self.markets.insert(m.to_string());
                }
                match s("slug") {
                    Some(sl) => {
                        self.slugs.insert(sl.to_string());
                    }
                    None => self.unjoined += 1,
                }
                span(&mut self.collected, collected);
                if let Some(e) = s("exchange_at_utc") {
                    span(&mut self.exchange, e);
                }
                match obj.get("hash_ok") {
                    Some(Value::Bool(true)) => self.hash[0] += 1,
                    Some(Value::Bool(false)) => self.hash[1] += 1,
                    Some(Value::Null) => self.hash[2] += 1,
                    _ => return Err("book row without hash_ok".into()),
                }
                for f in flags {
                    count(&mut self.flags, f.as_str().ok_or("flag is not a string")?);
                }
            }
            "gap" => count(&mut self.gaps, s("gap").ok_or("gap row without gap")?),
            "error" => count(&mut self.errors, s("reason").ok_or("error row without reason")?),
            "bad_input" => count(&mut self.bad_input, s("reason").ok_or("bad_input row without reason")?),
            other => return Err(format!("unknown record '{other}'")),
        }
        count(&mut self.rows, record);
        Ok(())
    }

    fn file(&mut self, name: &str) {
        let mut lines = 0u64;
        // Order is checked per raw run within this file: (last raw_seq, last collected_at_utc).
        let mut runs: HashMap<String, (u64, String)> = HashMap::new();
        let mut r = match jsonl::open_lines(Path::new(name)) {
            Ok(r) => r,
            Err(e) => {
                self.unparseable += 1;
                self.problem(name, 0, format!("cannot read: {e}"));
                self.files.push(json!({"path": name, "lines": 0}));
                return;
            }
        };
        while let Some(line) = r.next_line() {
            let line = match line {
                Ok(Ok(l)) => l,
                Ok(Err(too_long)) => {
                    lines += 1;
                    self.unparseable += 1;
                    self.problem(name, lines, format!("unparseable: {too_long}"));
                    continue;
                }
                Err(e) => {
                    self.unparseable += 1;
                    self.problem(name, lines + 1, format!("read error: {e}"));
                    break;
                }
            };
            lines += 1;
            let v: Value = match serde_json::from_slice(&line) {
                Ok(v) => v,
                Err(e) => {
                    self.unparseable += 1;
                    self.problem(name, lines, format!("unparseable: {e}"));
                    continue;
                }
            };
            if let Err(e) = self.row(&v) {
                self.invalid += 1;
                self.problem(name, lines, format!("invalid row: {e}"));
                continue;
            }
            if let (Some(run), Some(seq), Some(at)) =
                (v["raw_run_id"].as_str(), v["raw_seq"].as_u64(), v["collected_at_utc"].as_str())
            {
                if let Some((ls, la)) = runs.get(run) {
                    if seq < *ls || at < la.as_str() {
                        self.out_of_order += 1;
                        let what = format!("out of order: run {run} seq {seq} at {at} after seq {ls} at {la}");
                        self.problem(name, lines, what);
                    }
                }
                runs.insert(run.to_string(), (seq, at.to_string()));
            }
        }
        self.lines += lines;
        self.files.push(json!({"path": name, "lines": lines}));
    }
}

/// Checks the files (names; `-` = stdin) and returns (report, ok).
pub fn check(inputs: &[String]) -> (Value, bool) {
    let mut a = Acc::default();
    for f in FLAGS {
        a.flags.insert(f.to_string(), 0);
    }
    for r in ["book", "gap", "error", "bad_input"] {
        a.rows.insert(r.to_string(), 0);
    }
    for name in inputs {
        a.file(name);
    }
    let ok = a.unparseable == 0 && a.invalid == 0 && a.out_of_order == 0;
    let verified = a.hash[0] + a.hash[1];
    let report = json!({
        "schema": "pmarchive.orderbook_check/1",
        "ok": ok,
        "files": a.files,
        "lines": a.lines,
        "unparseable_lines": a.unparseable,
        "invalid_rows": a.invalid,
        "out_of_order_rows": a.out_of_order,
        "problems": a.problems,
        "rows": a.rows,
        "tokens": a.tokens.len(),
        "markets": a.markets.len(),
        "slugs": a.slugs.len(),
        "unjoined_book_rows": a.unjoined,
        "collected_at_utc": {"first": a.collected.0, "last": a.collected.1},
        "exchange_at_utc": {"first": a.exchange.0, "last": a.exchange.1},
        "hash": {
            "match": a.hash[0],
            "mismatch": a.hash[1],
            "unverifiable": a.hash[2],
            "match_rate": if verified > 0 { json!(a.hash[0] as f64 / verified as f64) } else { Value::Null },
        },
        "flags": a.flags,
        "gaps": a.gaps,
        "errors": a.errors,
        "bad_input": a.bad_input,
    });
    (report, ok)
}
