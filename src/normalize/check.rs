//! `pm-normalize --check`: reads normalized files and reports every count and flag as one JSON
//! document. Hard invariants (a failure makes `ok` false and the tool exit 1): every line parses as
//! a JSON object of schema `pmarchive.orderbook/1` with a known `record` whose keys and types are
//! exactly those of its type in [`super::rows`], and within each file the rows of one raw run are in order (`raw_seq` never decreases,
//! `collected_at_utc` never goes back).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::engine::{FLAGS, SCHEMA};
use crate::jsonl;

/// At most this many problems are listed (all are counted).
const MAX_PROBLEMS: usize = 50;

/// The `--check` report (`pmarchive.orderbook_check/1`). Fields in alphabetical order: the
/// report's keys have always been printed sorted (docs/ORDERBOOK_SCHEMA.md shows it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckReport {
    /// bad_input rows by reason.
    pub bad_input: BTreeMap<String, u64>,
    pub collected_at_utc: Span,
    /// error rows by reason.
    pub errors: BTreeMap<String, u64>,
    pub exchange_at_utc: Span,
    pub files: Vec<FileLines>,
    /// Book rows by flag (every flag of [`FLAGS`], 0 included).
    pub flags: BTreeMap<String, u64>,
    /// gap rows by kind.
    pub gaps: BTreeMap<String, u64>,
    pub hash: HashCounts,
    pub invalid_rows: u64,
    pub lines: u64,
    pub markets: u64,
    /// No unparseable line, no invalid row, nothing out of order.
    pub ok: bool,
    pub out_of_order_rows: u64,
    /// The first 50 problems (`MAX_PROBLEMS`; all are counted above).
    pub problems: Vec<Problem>,
    /// Rows by `record` (book, gap, error, bad_input; 0 included).
    pub rows: BTreeMap<String, u64>,
    pub schema: String,
    pub slugs: u64,
    pub tokens: u64,
    pub unjoined_book_rows: u64,
    pub unparseable_lines: u64,
}

/// The first and last of a time column (strings compare in time order: one fixed format).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Span {
    pub first: Option<String>,
    pub last: Option<String>,
}

/// A checked file and its lines.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLines {
    pub lines: u64,
    pub path: String,
}

/// A problem found at a line (0: the file itself).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Problem {
    pub file: String,
    pub line: u64,
    pub problem: String,
}

/// Book rows by `hash_ok`: true, false, null; `match_rate` = match / (match + mismatch), null
/// when no hash was verified.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashCounts {
    pub r#match: u64,
    pub match_rate: Option<f64>,
    pub mismatch: u64,
    pub unverifiable: u64,
}

#[derive(Default)]
struct Acc {
    lines: u64,
    unparseable: u64,
    invalid: u64,
    out_of_order: u64,
    problems: Vec<Problem>,
    rows: BTreeMap<String, u64>,
    tokens: BTreeSet<String>,
    markets: BTreeSet<String>,
    slugs: BTreeSet<String>,
    unjoined: u64,
    collected: Span,
    exchange: Span,
    hash: [u64; 3],
    flags: BTreeMap<String, u64>,
    gaps: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    bad_input: BTreeMap<String, u64>,
    files: Vec<FileLines>,
}

fn span(s: &mut Span, v: &str) {
    if s.first.as_deref().is_none_or(|f| v < f) {
        s.first = Some(v.to_string());
    }
    if s.last.as_deref().is_none_or(|l| v > l) {
        s.last = Some(v.to_string());
    }
}

impl Acc {
    fn problem(&mut self, file: &str, line: u64, what: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(Problem { file: file.to_string(), line, problem: what });
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
        // Order is checked per venue and raw run within this file: (last raw_seq, last
        // collected_at_utc). One chain run numbers each venue's tool on its own (pm-books and
        // kalshi-books share a run id, not a seq).
        let mut runs: HashMap<(String, String), (u64, String)> = HashMap::new();
        let mut r = match jsonl::open_lines(Path::new(name)) {
            Ok(r) => r,
            Err(e) => {
                self.unparseable += 1;
                self.problem(name, 0, format!("cannot read: {e}"));
                self.files.push(FileLines { lines: 0, path: name.to_string() });
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
                let key = (v["venue"].as_str().unwrap_or_default().to_string(), run.to_string());
                if let Some((ls, la)) = runs.get(&key) {
                    if seq < *ls || at < la.as_str() {
                        self.out_of_order += 1;
                        let what = format!("out of order: run {run} seq {seq} at {at} after seq {ls} at {la}");
                        self.problem(name, lines, what);
                    }
                }
                runs.insert(key, (seq, at.to_string()));
            }
        }
        self.lines += lines;
        self.files.push(FileLines { lines, path: name.to_string() });
    }
}

/// Checks the files (names; `-` = stdin) and returns (report, ok).
pub fn check(inputs: &[String]) -> (CheckReport, bool) {
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
    let report = CheckReport {
        bad_input: a.bad_input,
        collected_at_utc: a.collected,
        errors: a.errors,
        exchange_at_utc: a.exchange,
        files: a.files,
        flags: a.flags,
        gaps: a.gaps,
        hash: HashCounts {
            r#match: a.hash[0],
            match_rate: (verified > 0).then(|| a.hash[0] as f64 / verified as f64),
            mismatch: a.hash[1],
            unverifiable: a.hash[2],
        },
        invalid_rows: a.invalid,
        lines: a.lines,
        markets: a.markets.len() as u64,
        ok,
        out_of_order_rows: a.out_of_order,
        problems: a.problems,
        rows: a.rows,
        schema: "pmarchive.orderbook_check/1".to_string(),
        slugs: a.slugs.len() as u64,
        tokens: a.tokens.len() as u64,
        unjoined_book_rows: a.unjoined,
        unparseable_lines: a.unparseable,
    };
    (report, ok)
}
