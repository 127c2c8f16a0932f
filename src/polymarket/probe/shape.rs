//! What a reply body looks like: its kind and fields in wire order with refined JSON types, the
//! time-like values in it with an interpretation, and what a book (or a `/books` batch) says about
//! itself. Pure functions of the body; the prober ([`super::run`]) calls them.

use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use time::OffsetDateTime;

use crate::clock;

/// One field of a JSON object, in wire order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    /// JSON type; strings are refined: `string(decimal)` (a number in a string), `string(json)`
    /// (JSON inside the string, e.g. Gamma's `clobTokenIds`), `string(empty)`.
    #[serde(rename = "type")]
    pub ty: String,
}

/// The shape of a reply body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    /// `object`, `array`, `string`, `number`, `bool`, `null`, or `not_json`.
    pub kind: String,
    /// Arrays: number of elements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub array_len: Option<usize>,
    /// Arrays: JSON type of the first element.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub element_kind: Option<String>,
    /// Top-level keys with their types (objects), or those of the first element (arrays).
    pub fields: Vec<Field>,
}

/// A time-like value found in a reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimeSeen {
    /// Where: `timestamp`, `[0].timestamp`, `events[0].startDate`, `$` (the whole body).
    pub path: String,
    pub value: Value,
    /// `unix_ms`, `unix_s`, `unix_us`, `rfc3339`, `sql_timestamp`, `date`, `empty`, `other`.
    pub interpretation: String,
    /// The instant in UTC (RFC 3339, µs) when the value is one.
    pub utc: Option<String>,
    /// Our receive time minus that instant, seconds (positive = in the past).
    pub age_s: Option<f64>,
}
/// Keys of a JSON object in wire order (serde_json's `Value` sorts them). Duplicates are kept.
struct Ordered(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Ordered, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = m.next_entry::<String, Box<RawValue>>()? {
                    v.push((k, val));
                }
                Ok(Ordered(v))
            }
        }
        d.deserialize_map(V)
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Null => "null",
    }
}

/// The JSON type of a value, strings refined (see [`Field::ty`]).
pub fn type_name(v: &Value) -> String {
    match v {
        Value::String(s) if s.is_empty() => "string(empty)".into(),
        Value::String(s) if s.trim().parse::<f64>().is_ok_and(f64::is_finite) => "string(decimal)".into(),
        Value::String(s) if (s.starts_with('[') || s.starts_with('{')) && serde_json::from_str::<Value>(s).is_ok() => {
            "string(json)".into()
        }
        Value::Number(n) if n.is_f64() => "number(float)".into(),
        Value::Number(_) => "number(integer)".into(),
        Value::Array(a) => format!("array[{}]", a.len()),
        other => kind_of(other).into(),
    }
}

fn object_fields(text: &str) -> Vec<Field> {
    match serde_json::from_str::<Ordered>(text) {
        Ok(Ordered(kv)) => kv
            .into_iter()
            .map(|(name, raw)| {
                let ty = serde_json::from_str::<Value>(raw.get())
                    .map(|v| type_name(&v))
                    .unwrap_or_else(|_| "invalid".into());
                Field { name, ty }
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The shape of a JSON body: kind, keys in wire order with types (of the first element for arrays).
pub fn describe(text: &str) -> Shape {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return Shape { kind: "not_json".into(), ..Shape::default() };
    };
    match &v {
        Value::Object(_) => Shape { kind: "object".into(), fields: object_fields(text), ..Shape::default() },
        Value::Array(a) => {
            let fields =
                match serde_json::from_str::<Vec<Box<RawValue>>>(text).ok().and_then(|els| els.into_iter().next()) {
                    Some(first) if first.get().trim_start().starts_with('{') => object_fields(first.get()),
                    _ => Vec::new(),
                };
            Shape {
                kind: "array".into(),
                array_len: Some(a.len()),
                element_kind: a.first().map(|e| kind_of(e).to_string()),
                fields,
            }
        }
        other => Shape { kind: kind_of(other).into(), ..Shape::default() },
    }
}

fn is_time_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("time") || n.contains("date")
}

/// Interprets a time-like value: `(interpretation, instant)`.
///
/// Integers (as numbers or decimal strings) are read as Unix epochs by magnitude: 1e9..1e11 seconds
/// (2001..5138), 1e12..1e14 milliseconds, 1e15..1e17 microseconds. Strings are tried as RFC 3339, as
/// Gamma's SQL-style `YYYY-MM-DD HH:MM:SS+00` (`closedTime`) and as a bare date.
pub fn interpret_time(v: &Value) -> (String, Option<OffsetDateTime>) {
    let (digits, float) = match v {
        Value::Number(n) if n.is_u64() || n.is_i64() => (Some(n.to_string()), None),
        Value::Number(n) => (None, n.as_f64()),
        Value::String(s) if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => {
            (Some(s.clone()), None)
        }
        Value::String(s) => return interpret_time_text(s),
        other => return (format!("other ({})", kind_of(other)), None),
    };
    if let Some(d) = digits {
        let Ok(n) = d.parse::<i64>() else { return ("other (integer out of range)".into(), None) };
        let (unit, t) = match n {
            1_000_000_000..=99_999_999_999 => ("unix_s", clock::from_unix(n)),
            1_000_000_000_000..=99_999_999_999_999 => ("unix_ms", clock::from_unix_ms(n)),
            1_000_000_000_000_000..=99_999_999_999_999_999 => {
                ("unix_us", OffsetDateTime::from_unix_timestamp_nanos(n as i128 * 1000).ok())
            }
            _ => return ("other (integer, not a plausible epoch)".into(), None),
        };
        return (unit.into(), t);
    }
    match float {
        Some(f) if (1e9..1e11).contains(&f) => {
            ("unix_s".into(), OffsetDateTime::from_unix_timestamp_nanos((f * 1e9) as i128).ok())
        }
        _ => ("other (number, not a plausible epoch)".into(), None),
    }
}

fn interpret_time_text(s: &str) -> (String, Option<OffsetDateTime>) {
    if s.is_empty() {
        return ("empty".into(), None);
    }
    if let Some(t) = clock::parse_rfc3339(s) {
        return ("rfc3339".into(), Some(t));
    }
    // Gamma's `closedTime`: "2025-12-31 17:15:04+00".
    if let Some(t) = s.strip_suffix("+00").and_then(|p| clock::parse_rfc3339(&format!("{p}+00:00"))) {
        return ("sql_timestamp".into(), Some(t));
    }
    if s.len() == 10 {
        if let Some(t) = clock::parse_rfc3339(&format!("{s}T00:00:00Z")) {
            return ("date".into(), Some(t));
        }
    }
    ("other (unrecognised text)".into(), None)
}

/// Walks a body for fields whose name contains `time`/`date` (case-insensitive), down to depth 4,
/// looking only at the first element of arrays; at most 40 hits. A scalar body (e.g. `/time`) is
/// reported as `$` when it reads as an epoch.
pub fn find_times(v: &Value, received: OffsetDateTime) -> Vec<TimeSeen> {
    let mut out = Vec::new();
    let push = |path: String, val: &Value, out: &mut Vec<TimeSeen>| {
        let (interp, t) = interpret_time(val);
        out.push(TimeSeen {
            path,
            value: val.clone(),
            interpretation: interp,
            utc: t.map(clock::fmt_micros),
            age_s: t.map(|t| ((received - t).as_seconds_f64() * 1000.0).round() / 1000.0),
        });
    };
    if matches!(v, Value::Number(_) | Value::String(_)) {
        let (interp, _) = interpret_time(v);
        if interp.starts_with("unix_") {
            push("$".into(), v, &mut out);
        }
        return out;
    }
    fn walk(v: &Value, path: &str, depth: u32, out: &mut Vec<(String, Value)>) {
        if depth > 4 || out.len() >= 40 {
            return;
        }
        match v {
            Value::Object(m) => {
                for (k, val) in m {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    if is_time_name(k) && !val.is_object() && !val.is_array() {
                        if out.len() < 40 {
                            out.push((p, val.clone()));
                        }
                    } else {
                        walk(val, &p, depth + 1, out);
                    }
                }
            }
            Value::Array(a) => {
                if let Some(first) = a.first() {
                    walk(first, &format!("{path}[0]"), depth + 1, out);
                }
            }
            _ => {}
        }
    }
    let mut hits = Vec::new();
    walk(v, "", 0, &mut hits);
    for (p, val) in hits {
        push(p, &val, &mut out);
    }
    out
}

/// What a book object says about itself (`notes` of `clob_book`, and each of `clob_books`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BookNotes {
    /// As the venue sent them (null when absent).
    #[serde(default)]
    pub asset_id: Value,
    #[serde(default)]
    pub market: Value,
    pub bid_levels: usize,
    pub ask_levels: usize,
    /// See [`price_order`].
    pub bids_order: String,
    pub asks_order: String,
    pub hash_is_40_hex: bool,
}

/// `/books`: which ids were asked for, which came back, in which order (`notes` of `clob_books`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BooksNotes {
    pub asked: Vec<String>,
    pub returned_asset_ids: Vec<String>,
    pub missing: Vec<String>,
    /// `same as request`, `reversed`, or `other (or partial)`.
    pub reply_order: String,
    pub books: Vec<BookNotes>,
}

/// Order of a book side's prices: `ascending`, `descending`, `unordered`, or `n/a` (< 2 levels).
pub fn price_order(levels: &[Value]) -> &'static str {
    let p: Vec<f64> = levels.iter().filter_map(|l| l["price"].as_str().and_then(|s| s.parse().ok())).collect();
    if p.len() < 2 {
        "n/a"
    } else if p.windows(2).all(|w| w[0] < w[1]) {
        "ascending"
    } else if p.windows(2).all(|w| w[0] > w[1]) {
        "descending"
    } else {
        "unordered"
    }
}

/// What a book object says about itself (level counts and order, hash form, token).
pub fn book_notes(b: &Value) -> BookNotes {
    let side = |k: &str| b[k].as_array().cloned().unwrap_or_default();
    let (bids, asks) = (side("bids"), side("asks"));
    BookNotes {
        asset_id: b["asset_id"].clone(),
        market: b["market"].clone(),
        bid_levels: bids.len(),
        ask_levels: asks.len(),
        bids_order: price_order(&bids).into(),
        asks_order: price_order(&asks).into(),
        hash_is_40_hex: b["hash"].as_str().is_some_and(|h| h.len() == 40 && h.bytes().all(|c| c.is_ascii_hexdigit())),
    }
}

/// `/books`: which ids were asked for, which came back, in which order; `Err` when the reply is not
/// an array.
pub fn books_notes(asked: &[String], reply: &Value) -> Result<BooksNotes, String> {
    let Some(arr) = reply.as_array() else { return Err("reply is not an array".into()) };
    let got: Vec<String> = arr.iter().filter_map(|b| b["asset_id"].as_str().map(str::to_string)).collect();
    let missing: Vec<String> = asked.iter().filter(|t| !got.contains(t)).cloned().collect();
    let order = if got.as_slice() == asked {
        "same as request"
    } else if got.iter().rev().eq(asked.iter()) {
        "reversed"
    } else {
        "other (or partial)"
    };
    Ok(BooksNotes {
        asked: asked.to_vec(),
        returned_asset_ids: got,
        missing,
        reply_order: order.into(),
        books: arr.iter().map(book_notes).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    #[test]
    fn shapes_keep_wire_order_and_refine_string_types() {
        let s = describe(
            r#"{"market":"0x9d","timestamp":"1785734468581","bids":[],"neg_risk":true,"tick":0.01,"ids":"[\"1\", \"2\"]","ltp":""}"#,
        );
        assert_eq!(s.kind, "object");
        let got: Vec<(&str, &str)> = s.fields.iter().map(|f| (f.name.as_str(), f.ty.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("market", "string"),
                ("timestamp", "string(decimal)"),
                ("bids", "array[0]"),
                ("neg_risk", "bool"),
                ("tick", "number(float)"),
                ("ids", "string(json)"),
                ("ltp", "string(empty)")
            ]
        );
        let a = describe(r#"[{"z":1,"a":"x"},{"b":2}]"#);
        assert_eq!((a.kind.as_str(), a.array_len, a.element_kind.as_deref()), ("array", Some(2), Some("object")));
        assert_eq!(a.fields.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), vec!["z", "a"]);
        assert_eq!(describe("1787414400").kind, "number");
        assert_eq!(describe("{oops").kind, "not_json");
    }

    #[test]
    fn interprets_times() {
        let (k, t) = interpret_time(&json!("1785734468581"));
        assert_eq!(k, "unix_ms");
        assert_eq!(clock::fmt_micros(t.unwrap()), "2026-08-03T05:21:08.581000Z");
        let (k, t) = interpret_time(&json!(1787414400));
        assert_eq!((k.as_str(), t), ("unix_s", Some(datetime!(2026-08-22 16:00 UTC))));
        assert_eq!(interpret_time(&json!("2025-12-30T17:10:15.861305Z")).0, "rfc3339");
        let (k, t) = interpret_time(&json!("2025-12-31 17:15:04+00"));
        assert_eq!((k.as_str(), t), ("sql_timestamp", Some(datetime!(2025-12-31 17:15:04 UTC))));
        assert_eq!(interpret_time(&json!("2025-12-30")).0, "date");
        assert_eq!(interpret_time(&json!("")).0, "empty");
        assert!(interpret_time(&json!(42)).0.starts_with("other"));
        assert!(interpret_time(&json!(true)).0.starts_with("other"));
    }

    #[test]
    fn finds_time_fields_in_objects_arrays_and_scalars() {
        let now = datetime!(2026-08-03 05:21:10 UTC);
        let v = json!([{"asset_id": "1", "timestamp": "1785734468581", "nested": {"updatedAt": "2026-08-03T05:00:00Z"}}, {"timestamp": "1"}]);
        let t = find_times(&v, now);
        assert_eq!(t.len(), 2);
        let ts = t.iter().find(|x| x.path == "[0].timestamp").unwrap();
        assert_eq!(ts.interpretation, "unix_ms");
        assert!((ts.age_s.unwrap() - 1.419).abs() < 1e-6);
        assert!(t.iter().any(|x| x.path == "[0].nested.updatedAt" && x.interpretation == "rfc3339"));
        assert_eq!(find_times(&json!(1787414400), now)[0].path, "$");
        assert!(find_times(&json!({"mid": "0.425"}), now).is_empty());
    }

    #[test]
    fn book_order_and_books_matching() {
        let b = json!({"asset_id": "7", "bids": [{"price": "0.1", "size": "1"}, {"price": "0.2", "size": "1"}], "asks": [{"price": "0.9", "size": "1"}, {"price": "0.8", "size": "1"}], "hash": "d7df883ae546b09533a4f485bfae0810da1af04e"});
        let n = book_notes(&b);
        assert_eq!((n.bids_order.as_str(), n.asks_order.as_str()), ("ascending", "descending"));
        assert!(n.hash_is_40_hex);
        assert_eq!(n.asset_id, json!("7"));
        let asked = vec!["1".to_string(), "2".to_string()];
        let r = books_notes(&asked, &json!([{"asset_id": "2"}, {"asset_id": "1"}])).unwrap();
        assert_eq!(r.reply_order, "reversed");
        let r = books_notes(&asked, &json!([{"asset_id": "1"}])).unwrap();
        assert_eq!(r.missing, ["2"]);
        assert!(books_notes(&asked, &json!({"error": "x"})).is_err());
    }
}
