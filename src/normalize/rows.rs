//! The rows of `pmarchive.orderbook/1` as Rust types: one type per kind of row, field for field as
//! docs/ORDERBOOK_SCHEMA.md lists them (`Option` = the doc's `|null`). The engine writes rows with
//! its own allocation-free formatter ([`super::Normalizer`]); these types say what a row is.
//! `pm-normalize --check` reads every row into its type ([`validate`]): every key present, none
//! unknown, one JSON type per key — so a reader (jq, DuckDB, pyarrow) can rely on the documented
//! schema. Tests check that the formatter's rows pass.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A level of `bids`/`asks`: the venue's decimal strings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelRow {
    pub price: String,
    pub size: String,
}

/// `record: "book"`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookRow {
    pub record: String,
    pub schema: String,
    pub venue: Option<String>,
    pub source: Option<String>,
    pub collected_at_utc: Option<String>,
    pub exchange_at_utc: Option<String>,
    pub exchange_ts_ms: Option<i64>,
    pub recv_lag_ms: Option<f64>,
    pub market: Option<String>,
    pub asset_id: String,
    pub slug: Option<String>,
    pub outcome: Option<String>,
    pub family: Option<String>,
    pub slot: Option<i64>,
    pub due_at_utc: Option<String>,
    pub raw_run_id: Option<String>,
    pub raw_seq: Option<u64>,
    pub best_bid_price: Option<String>,
    pub best_bid_size: Option<String>,
    pub best_ask_price: Option<String>,
    pub best_ask_size: Option<String>,
    pub mid: Option<String>,
    pub spread: Option<String>,
    pub bid_levels: u64,
    pub ask_levels: u64,
    pub bid_depth: Option<String>,
    pub ask_depth: Option<String>,
    pub tick_size: Option<String>,
    pub min_order_size: Option<String>,
    pub neg_risk: Option<bool>,
    pub last_trade_price: Option<String>,
    pub hash: Option<String>,
    pub hash_ok: Option<bool>,
    pub flags: Vec<String>,
    /// Levels per side; null = all levels (`--depth all`). At most 2^32−1: exact for every reader.
    pub depth: Option<u32>,
    pub bids: Option<Vec<LevelRow>>,
    pub asks: Option<Vec<LevelRow>>,
}

/// `record: "gap"`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapRow {
    pub record: String,
    pub schema: String,
    pub venue: Option<String>,
    pub source: Option<String>,
    pub collected_at_utc: Option<String>,
    pub gap: String,
    pub slot: Option<i64>,
    pub due_at_utc: Option<String>,
    pub market: Option<String>,
    pub asset_id: Option<String>,
    pub slug: Option<String>,
    pub outcome: Option<String>,
    pub error: Option<String>,
    pub raw_run_id: Option<String>,
    pub raw_seq: Option<u64>,
    /// The raw `ctx`, verbatim (members vary by gap kind).
    pub ctx: Option<Map<String, Value>>,
}

/// `record: "error"`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRow {
    pub record: String,
    pub schema: String,
    pub venue: Option<String>,
    pub source: Option<String>,
    pub collected_at_utc: Option<String>,
    pub reason: String,
    pub status: Option<u64>,
    pub attempt: Option<u64>,
    pub slot: Option<i64>,
    pub due_at_utc: Option<String>,
    pub index: Option<u64>,
    pub asset_id: Option<String>,
    pub detail: Option<String>,
    pub body_kind: Option<String>,
    pub reply: Option<String>,
    pub raw_run_id: Option<String>,
    pub raw_seq: Option<u64>,
    pub ctx: Option<Map<String, Value>>,
}

/// `record: "bad_input"`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BadInputRow {
    pub record: String,
    pub schema: String,
    pub file: String,
    pub line: u64,
    pub reason: String,
    pub detail: String,
    pub bytes: u64,
    pub excerpt: String,
}

/// Reads `row` into its type `T`, and checks that every key of `T` is present (serde would take a
/// missing key of an `Option` field as null: the schema says every key is always there). `keys`
/// caches `T`'s field names.
fn typed<T>(row: &Value, keys: &OnceLock<Vec<String>>) -> Result<(), String>
where
    T: for<'de> Deserialize<'de> + Serialize + Default,
{
    T::deserialize(row).map_err(|e| e.to_string())?;
    let keys = keys.get_or_init(|| match serde_json::to_value(T::default()) {
        Ok(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    });
    match keys.iter().find(|k| row.get(k.as_str()).is_none()) {
        Some(k) => Err(format!("missing field `{k}`")),
        None => Ok(()),
    }
}

/// Checks a row against the type of its `record`: every key present, none unknown, each of its
/// documented JSON type. An unknown or absent `record` is an error too.
pub fn validate(row: &Value) -> Result<(), String> {
    static BOOK: OnceLock<Vec<String>> = OnceLock::new();
    static GAP: OnceLock<Vec<String>> = OnceLock::new();
    static ERROR: OnceLock<Vec<String>> = OnceLock::new();
    static BAD_INPUT: OnceLock<Vec<String>> = OnceLock::new();
    match row.get("record").and_then(Value::as_str) {
        Some("book") => typed::<BookRow>(row, &BOOK),
        Some("gap") => typed::<GapRow>(row, &GAP),
        Some("error") => typed::<ErrorRow>(row, &ERROR),
        Some("bad_input") => typed::<BadInputRow>(row, &BAD_INPUT),
        Some(other) => Err(format!("unknown record '{other}'")),
        None => Err("no record".into()),
    }
}
