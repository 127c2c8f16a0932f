//! `pm-probe`'s engine: a bounded probe of each public Polymarket endpoint the archive may use
//! (roadmap checkpoint 2). It resolves the current 5-minute BTC up/down market on Gamma, then asks the
//! CLOB for its book (single and batch), prices, midpoint, spread, last trade price, tick size and
//! server time, plus one book of an unknown token to record the 404 behaviour.
//!
//! Bounded: a hard cap on HTTP attempts (retries included; the cap also limits how many tries one
//! request may take), a minimum spacing between attempts on top of the client's own per-family
//! limiter, and at most two tries per request. For every endpoint it records status, latency,
//! content type, the fields seen (in wire order) with their types, the time-like fields with an
//! interpretation, rate-limit headers, body size and JSON validity. The report is written as
//! `polymarket_public_sources_probe_v1.json` and `.md`.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::envelope::Sequencer;
use crate::http::{Attempt, Client, Request, Verdict};
use crate::jsonl::LineWriter;
use crate::market::{self, Family, Market};
use crate::{clock, signal, util};

/// Name of the report (and of its two files, `.json` and `.md`).
pub const PROBE_NAME: &str = "polymarket_public_sources_probe_v1";
/// Version of the report's JSON structure.
pub const PROBE_VERSION: u32 = 1;
/// A syntactically valid token id (77 decimal digits) that no market uses: its `/book` shows how the
/// venue answers an unknown token (recorded: 404 `No orderbook exists for the requested token id`).
pub const UNKNOWN_TOKEN_ID: &str = "10000000000000000000000000000000000000000000000000000000000000000000000000001";
/// The banner of a report made against 127.0.0.1 (never to be mistaken for a live probe).
pub const LOOPBACK_BANNER: &str = "LOOPBACK REPLAY OF RECORDED RESPONSES — NOT A LIVE PROBE";

/// What to probe and how hard.
#[derive(Clone, Debug)]
pub struct Config {
    pub gamma_url: String,
    pub clob_url: String,
    /// Probe this Gamma slug instead of the current (then next) 5m BTC window.
    pub slug: Option<String>,
    /// Hard cap on HTTP attempts, retries included.
    pub max_requests: u32,
    /// Minimum time between the end of one attempt and the start of the next.
    pub min_spacing: Duration,
    /// Tries per request (the cap may allow fewer).
    pub max_attempts: u32,
    pub out_dir: PathBuf,
}

/// One try of a request, as the report shows it.
#[derive(Clone, Debug, Serialize)]
pub struct AttemptSummary {
    pub attempt: u32,
    pub sent_at_utc: String,
    pub status: Option<u16>,
    pub latency_ms: f64,
    pub retry_after: Option<String>,
    /// `ok`, `retryable: <reason>` or `final: <reason>`.
    pub verdict: String,
    pub error: Option<String>,
    pub waited_before_s: f64,
}

/// One field of a JSON object, in wire order.
#[derive(Clone, Debug, Serialize)]
pub struct Field {
    pub name: String,
    /// JSON type; strings are refined: `string(decimal)` (a number in a string), `string(json)`
    /// (JSON inside the string, e.g. Gamma's `clobTokenIds`), `string(empty)`.
    #[serde(rename = "type")]
    pub ty: String,
}

/// The shape of a reply body.
#[derive(Clone, Debug, Default, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
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

/// Everything recorded about one endpoint.
#[derive(Clone, Debug, Serialize)]
pub struct EndpointResult {
    /// Stable id (`gamma_market_slug_current`, `clob_book`, …).
    pub name: String,
    /// Endpoint family of the HTTP client and the raw envelope.
    pub family: String,
    pub purpose: String,
    pub method: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    /// `answered` (a reply arrived, whatever its status), `no_reply` (network error/timeout on the
    /// last try), `not_probed` (cap reached, interrupted, or no token id to ask about).
    pub outcome: String,
    pub not_probed_reason: Option<String>,
    pub status: Option<u16>,
    /// What the probe expected (only for deliberate error probes).
    pub expected_status: Option<u16>,
    pub latency_ms: Option<f64>,
    pub content_type: Option<String>,
    pub body_bytes: Option<usize>,
    /// `json`, `json_text`, `text`, `hex`, `empty` (as in the raw envelope).
    pub body_kind: Option<String>,
    pub json_valid: Option<bool>,
    pub shape: Option<Shape>,
    pub timestamps: Vec<TimeSeen>,
    /// Every `*ratelimit*` header seen on any try (last value wins).
    pub ratelimit_headers: std::collections::BTreeMap<String, String>,
    /// `Retry-After` values seen, one per try that carried one.
    pub retry_after: Vec<String>,
    /// `Date` header of the last reply.
    pub date_header: Option<String>,
    pub error: Option<String>,
    /// True when the request cap cut the retries of this request short.
    pub cap_limited: bool,
    pub attempts: Vec<AttemptSummary>,
    /// Endpoint-specific observations (book level counts and order, /books request-vs-reply ids).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub notes: Value,
}

impl EndpointResult {
    fn new(name: &str, family: &str, purpose: &str, req: &Request) -> EndpointResult {
        EndpointResult {
            name: name.into(),
            family: family.into(),
            purpose: purpose.into(),
            method: req.method.as_str().into(),
            url: req.full_url(),
            request_body: req.body.clone(),
            outcome: "not_probed".into(),
            not_probed_reason: None,
            status: None,
            expected_status: None,
            latency_ms: None,
            content_type: None,
            body_bytes: None,
            body_kind: None,
            json_valid: None,
            shape: None,
            timestamps: Vec::new(),
            ratelimit_headers: Default::default(),
            retry_after: Vec::new(),
            date_header: None,
            error: None,
            cap_limited: false,
            attempts: Vec::new(),
            notes: Value::Null,
        }
    }

    fn answered(&self) -> bool {
        self.outcome == "answered"
    }

    fn parsed_body(&self, last: &Attempt) -> Option<Value> {
        last.json_text().and_then(|t| serde_json::from_str(t).ok())
    }
}

/// The whole report.
#[derive(Debug)]
pub struct Report {
    pub run_id: String,
    pub host: String,
    pub run_kind: &'static str,
    pub started_at_utc: String,
    pub finished_at_utc: String,
    pub gamma_url: String,
    pub clob_url: String,
    pub user_agent: String,
    pub slug_given: bool,
    pub slugs_tried: Vec<String>,
    pub market: Option<Market>,
    pub market_error: Option<String>,
    pub requests_used: u32,
    pub max_requests: u32,
    pub min_spacing_s: f64,
    pub max_attempts: u32,
    /// True when an endpoint (or a retry) was left out because the cap was reached.
    pub cap_reached: bool,
    pub interrupted: bool,
    pub endpoints: Vec<EndpointResult>,
}

/// `loopback` when any base URL points at 127.0.0.1 / localhost / ::1, else `live`.
pub fn run_kind(urls: &[&str]) -> &'static str {
    if urls.iter().any(|u| is_loopback_host(&url_host(u))) {
        "loopback"
    } else {
        "live"
    }
}

/// The host of a URL (`http://[::1]:8080/x` → `::1`), lowercase.
pub fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host.to_ascii_lowercase()
}

fn is_loopback_host(h: &str) -> bool {
    matches!(h, "127.0.0.1" | "localhost" | "::1") || h.ends_with(".localhost")
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

/// Order of a book side's prices: `ascending`, `descending`, `unordered`, or `n/a` (< 2 levels).
fn price_order(levels: &[Value]) -> &'static str {
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
fn book_notes(b: &Value) -> Value {
    let side = |k: &str| b[k].as_array().cloned().unwrap_or_default();
    let (bids, asks) = (side("bids"), side("asks"));
    json!({
        "asset_id": b["asset_id"],
        "market": b["market"],
        "bid_levels": bids.len(),
        "ask_levels": asks.len(),
        "bids_order": price_order(&bids),
        "asks_order": price_order(&asks),
        "hash_is_40_hex": b["hash"].as_str().is_some_and(|h| h.len() == 40 && h.bytes().all(|c| c.is_ascii_hexdigit())),
    })
}

/// `/books`: which ids were asked for, which came back, in which order.
fn books_notes(asked: &[String], reply: &Value) -> Value {
    let Some(arr) = reply.as_array() else { return json!({"error": "reply is not an array"}) };
    let got: Vec<String> = arr.iter().filter_map(|b| b["asset_id"].as_str().map(str::to_string)).collect();
    let missing: Vec<&String> = asked.iter().filter(|t| !got.contains(t)).collect();
    let order = if got.as_slice() == asked {
        "same as request"
    } else if got.iter().rev().eq(asked.iter()) {
        "reversed"
    } else {
        "other (or partial)"
    };
    json!({
        "asked": asked,
        "returned_asset_ids": got,
        "missing": missing,
        "reply_order": order,
        "books": arr.iter().map(book_notes).collect::<Vec<_>>(),
    })
}

/// What a non-2xx or unusable reply said, in one line.
fn error_summary(last: &Attempt) -> Option<String> {
    let body_error = last
        .json_text()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string));
    let mut parts = Vec::new();
    match (&last.verdict, last.status) {
        (Verdict::Ok, _) => {}
        (_, Some(s)) => parts.push(format!("HTTP {s}{}", body_error.map(|e| format!(": {e}")).unwrap_or_default())),
        (_, None) => {}
    }
    if let Some(e) = &last.error {
        parts.push(e.clone());
    }
    if let Some(b) = last.body.as_ref().and_then(|b| b.error.clone()) {
        parts.push(b.chars().take(200).collect());
    }
    if let Some(g) = &last.gave_up {
        parts.push(format!("gave up: {g}"));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn body_len(last: &Attempt) -> usize {
    match &last.body {
        None => 0,
        Some(b) => match (b.json.as_ref(), b.text.as_ref(), b.hex.as_ref()) {
            (Some(j), _, _) => j.get().len(),
            (_, Some(t), _) => t.len(),
            (_, _, Some(h)) => h.len() / 2,
            _ => 0,
        },
    }
}

/// Runs the probe.
pub struct Prober {
    cfg: Config,
    client: Client,
    seq: Sequencer,
    raw: Option<LineWriter<Box<dyn Write + Send>>>,
    used: u32,
    last_end: Option<Instant>,
    cap_reached: bool,
    interrupted: bool,
    results: Vec<EndpointResult>,
}

impl Prober {
    /// `client`'s retry settings are adjusted: at most `cfg.max_attempts` tries, and a backoff long
    /// enough that a retry also keeps `cfg.min_spacing`.
    pub fn new(cfg: Config, mut client: Client, seq: Sequencer, raw: Option<Box<dyn Write + Send>>) -> Prober {
        // Backoff before try 2 is backoff_base × jitter in [½, 1]: twice the spacing keeps it.
        let base = (cfg.min_spacing * 2).max(Duration::from_millis(500));
        client.cfg.backoff_base = base;
        client.cfg.backoff_max = client.cfg.backoff_max.max(base * 2);
        client.cfg.max_attempts = cfg.max_attempts;
        Prober {
            cfg,
            client,
            seq,
            raw: raw.map(|w| LineWriter::new(w, true)),
            used: 0,
            last_end: None,
            cap_reached: false,
            interrupted: false,
            results: Vec::new(),
        }
    }

    /// Sleeps so that the next attempt starts at least `min_spacing` after the previous one ended.
    /// False when a stop was requested meanwhile.
    fn space(&self) -> bool {
        match self.last_end {
            Some(t) => {
                let due = t + self.cfg.min_spacing;
                let now = Instant::now();
                due <= now || signal::sleep(due - now)
            }
            None => true,
        }
    }

    fn skip(&mut self, mut r: EndpointResult, reason: &str) -> usize {
        r.not_probed_reason = Some(reason.into());
        self.results.push(r);
        self.results.len() - 1
    }

    /// Probes one endpoint (within the cap); returns the index of its result and the last attempt.
    fn probe(&mut self, name: &str, purpose: &str, req: Request) -> io::Result<(usize, Option<Attempt>)> {
        let mut r = EndpointResult::new(name, req.family, purpose, &req);
        if signal::stop_requested() || self.interrupted {
            self.interrupted = true;
            return Ok((self.skip(r, "interrupted (SIGINT/SIGTERM)"), None));
        }
        let remaining = self.cfg.max_requests.saturating_sub(self.used);
        if remaining == 0 {
            self.cap_reached = true;
            let reason = format!("request cap of {} reached", self.cfg.max_requests);
            return Ok((self.skip(r, &reason), None));
        }
        if !self.space() {
            self.interrupted = true;
            return Ok((self.skip(r, "interrupted (SIGINT/SIGTERM)"), None));
        }
        let allowed = self.cfg.max_attempts.min(remaining);
        self.client.cfg.max_attempts = allowed;
        let ctx = json!({"probe": name});
        let (seq, raw, used, last_end, attempts) =
            (&mut self.seq, &mut self.raw, &mut self.used, &mut self.last_end, &mut r.attempts);
        let last = self.client.execute(&req, None, |a| {
            let sent = !a.error.as_deref().is_some_and(|e| e.starts_with("not sent"));
            if sent {
                *used += 1;
                *last_end = Some(Instant::now());
                attempts.push(AttemptSummary {
                    attempt: a.attempt,
                    sent_at_utc: clock::fmt_micros(a.sent_at),
                    status: a.status,
                    latency_ms: (a.elapsed.as_secs_f64() * 1e6).round() / 1e3,
                    retry_after: a.headers.retry_after.clone(),
                    verdict: match &a.verdict {
                        Verdict::Ok => "ok".into(),
                        Verdict::Retry(x) => format!("retryable: {x}"),
                        Verdict::Final(x) => format!("final: {x}"),
                    },
                    error: a.error.clone(),
                    waited_before_s: (a.waited_before * 1000.0).round() / 1000.0,
                });
            }
            match raw.as_mut() {
                Some(w) => w.write_raw(&a.envelope(seq, &req, Some(ctx.clone())).to_line()),
                None => Ok(()),
            }
        })?;
        self.fill(&mut r, &last, allowed);
        self.results.push(r);
        Ok((self.results.len() - 1, Some(last)))
    }

    /// Fills a result from the attempts and the last try.
    fn fill(&mut self, r: &mut EndpointResult, last: &Attempt, allowed: u32) {
        if last.error.as_deref().is_some_and(|e| e.starts_with("not sent")) {
            self.interrupted = true;
            r.not_probed_reason = Some("interrupted (SIGINT/SIGTERM)".into());
        }
        let retry_failed = matches!(last.verdict, Verdict::Retry(_));
        if retry_failed && allowed < self.cfg.max_attempts && r.attempts.len() as u32 >= allowed {
            r.cap_limited = true;
            self.cap_reached = true;
        }
        r.outcome = if last.status.is_some() {
            "answered"
        } else if r.attempts.is_empty() {
            "not_probed"
        } else {
            "no_reply"
        }
        .into();
        r.status = last.status;
        if !r.attempts.is_empty() {
            r.latency_ms = Some((last.elapsed.as_secs_f64() * 1e6).round() / 1e3);
        }
        if last.status.is_some() {
            r.content_type = last.headers.content_type.clone();
            r.body_bytes = Some(body_len(last));
            r.body_kind = last.body.as_ref().map(|b| b.kind.to_string()).or(Some("empty".into()));
            r.json_valid = Some(last.json_text().is_some());
            r.date_header = last.headers.date.clone();
        }
        if let Some(text) = last.json_text() {
            r.shape = Some(describe(text));
            if let Ok(v) = serde_json::from_str::<Value>(text) {
                r.timestamps = find_times(&v, last.received_at);
            }
        } else if last.status.is_some() {
            r.shape = Some(Shape { kind: "not_json".into(), ..Shape::default() });
        }
        r.error = error_summary(last);
        // Rate-limit headers: the last try's map, plus Retry-After of every try (from the summaries).
        if let Some(m) = &last.headers.ratelimit {
            r.ratelimit_headers.extend(m.clone());
        }
        r.retry_after = r.attempts.iter().filter_map(|a| a.retry_after.clone()).collect();
    }

    /// Gamma: the given slug, or the current 5m window and — if that is not listed — the next.
    fn resolve_market(&mut self, now: OffsetDateTime) -> io::Result<(Vec<String>, Option<Market>, Option<String>)> {
        let candidates: Vec<(String, &str, &str)> = match &self.cfg.slug {
            Some(s) => vec![(s.clone(), "gamma_market_slug", "market metadata for the given slug")],
            None => {
                let w = Family::M5.windows(now, 1);
                vec![
                    (
                        Family::M5.slugs(w[0].0).remove(0),
                        "gamma_market_slug_current",
                        "market metadata of the current 5m BTC window",
                    ),
                    (
                        Family::M5.slugs(w[1].0).remove(0),
                        "gamma_market_slug_next",
                        "market metadata of the next 5m BTC window (asked because the current one was not listed)",
                    ),
                ]
            }
        };
        let mut tried = Vec::new();
        let mut error = None;
        for (slug, name, purpose) in candidates {
            let url = format!("{}/markets/slug/{}", self.cfg.gamma_url, util::percent_encode(&slug));
            tried.push(slug.clone());
            let (i, last) = self.probe(name, purpose, Request::get("gamma", url.clone()))?;
            let Some(last) = last else {
                error = Some(self.results[i].not_probed_reason.clone().unwrap_or_default());
                break;
            };
            let parsed = self.results[i].parsed_body(&last);
            match (&last.verdict, parsed) {
                (Verdict::Ok, Some(v)) => match market::parse_gamma_market(&v, &url, last.received_at) {
                    Ok(m) => {
                        self.results[i].notes = json!({
                            "slug": m.slug, "condition_id": m.condition_id, "tokens": m.tokens,
                            "window_start_utc": m.window_start_utc, "window_end_utc": m.window_end_utc,
                            "status": m.status, "active": m.active, "closed": m.closed,
                            "accepting_orders": m.accepting_orders, "enable_order_book": m.enable_order_book,
                        });
                        return Ok((tried, Some(m), None));
                    }
                    Err(e) => {
                        self.results[i].notes = json!({"parse_error": e});
                        error = Some(format!("{slug}: record not usable: {e}"));
                    }
                },
                _ => {
                    error = Some(format!(
                        "{slug}: {}",
                        self.results[i].error.clone().unwrap_or_else(|| "no usable reply".into())
                    ));
                    // Only a definitive "not listed" makes the next window worth a request.
                    if last.status != Some(404) {
                        break;
                    }
                }
            }
        }
        Ok((tried, None, error))
    }

    /// Probes everything; the report is complete even when the cap or a signal stopped it early.
    pub fn run(mut self) -> io::Result<Report> {
        let started = clock::now();
        let (tried, market, market_error) = self.resolve_market(started)?;
        let clob = self.cfg.clob_url.clone();
        let tokens: Vec<String> =
            market.as_ref().map(|m| m.tokens.iter().map(|t| t.token_id.clone()).collect()).unwrap_or_default();
        let tok = tokens.first().cloned();
        let get = |fam: &'static str, path: &str| Request::get(fam, format!("{clob}{path}"));
        let per_token: Vec<(&str, &str, Request)> = {
            let t = tok.clone().unwrap_or_default();
            let books_body = serde_json::to_string(&tokens.iter().map(|t| json!({"token_id": t})).collect::<Vec<_>>())
                .unwrap_or_default();
            vec![
                (
                    "clob_book",
                    "current order book of one token (the first outcome)",
                    get("book", "/book").query("token_id", &t),
                ),
                (
                    "clob_books",
                    "batch order books of both tokens",
                    Request::post_json("books", format!("{clob}/books"), books_body),
                ),
                (
                    "clob_price_buy",
                    "best price, side=BUY",
                    get("price", "/price").query("token_id", &t).query("side", "BUY"),
                ),
                (
                    "clob_price_sell",
                    "best price, side=SELL",
                    get("price", "/price").query("token_id", &t).query("side", "SELL"),
                ),
                ("clob_midpoint", "midpoint price", get("midpoint", "/midpoint").query("token_id", &t)),
                ("clob_spread", "bid-ask spread", get("spread", "/spread").query("token_id", &t)),
                (
                    "clob_last_trade_price",
                    "last trade price and side (the only trade data probed)",
                    get("last-trade-price", "/last-trade-price").query("token_id", &t),
                ),
                ("clob_tick_size", "minimum tick size", get("tick-size", "/tick-size").query("token_id", &t)),
            ]
        };
        for (name, purpose, req) in per_token {
            if tok.is_none() {
                let r = EndpointResult::new(name, req.family, purpose, &req);
                self.skip(r, "no token id resolved from Gamma");
                continue;
            }
            let (i, last) = self.probe(name, purpose, req)?;
            if let Some(v) = last.as_ref().and_then(|l| self.results[i].parsed_body(l)) {
                match name {
                    "clob_book" if v.is_object() => self.results[i].notes = book_notes(&v),
                    "clob_books" => self.results[i].notes = books_notes(&tokens, &v),
                    _ => {}
                }
            }
        }
        self.probe("clob_time", "server time", get("time", "/time"))?;
        let (i, _) = self.probe(
            "clob_book_unknown_token",
            "book of a syntactically valid but unknown token id: records the not-found behaviour",
            get("book", "/book").query("token_id", UNKNOWN_TOKEN_ID),
        )?;
        self.results[i].expected_status = Some(404);
        if let Some(w) = self.raw.as_mut() {
            w.flush()?;
        }
        let finished = clock::now();
        Ok(Report {
            run_id: self.seq.run.run_id.clone(),
            host: self.seq.run.host.clone(),
            run_kind: run_kind(&[&self.cfg.gamma_url, &self.cfg.clob_url]),
            started_at_utc: clock::fmt_micros(started),
            finished_at_utc: clock::fmt_micros(finished),
            gamma_url: self.cfg.gamma_url.clone(),
            clob_url: self.cfg.clob_url.clone(),
            user_agent: self.client.cfg.user_agent.clone(),
            slug_given: self.cfg.slug.is_some(),
            slugs_tried: tried,
            market,
            market_error,
            requests_used: self.used,
            max_requests: self.cfg.max_requests,
            min_spacing_s: self.cfg.min_spacing.as_secs_f64(),
            max_attempts: self.cfg.max_attempts,
            cap_reached: self.cap_reached,
            interrupted: self.interrupted,
            endpoints: self.results,
        })
    }
}

impl Report {
    /// Every endpoint answered (any status) and none was left out.
    pub fn complete(&self) -> bool {
        self.endpoints.iter().all(EndpointResult::answered) && !self.cap_reached && !self.interrupted
    }

    /// Why the probe is incomplete, in one line (None when complete).
    pub fn stopped_reason(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.cap_reached {
            let left = self.endpoints.iter().filter(|e| e.outcome == "not_probed").count();
            parts.push(format!(
                "request cap reached: {} of {} requests used before all endpoints were probed ({left} endpoint(s) not probed)",
                self.requests_used, self.max_requests
            ));
        }
        if self.interrupted {
            parts.push("interrupted by a signal".into());
        }
        let unreached: Vec<&str> =
            self.endpoints.iter().filter(|e| e.outcome == "no_reply").map(|e| e.name.as_str()).collect();
        if !unreached.is_empty() {
            parts.push(format!("no reply from: {}", unreached.join(", ")));
        }
        let skipped: Vec<&str> = self
            .endpoints
            .iter()
            .filter(|e| e.not_probed_reason.as_deref() == Some("no token id resolved from Gamma"))
            .map(|e| e.name.as_str())
            .collect();
        if !skipped.is_empty() {
            parts.push(format!("no token id resolved, so not probed: {}", skipped.join(", ")));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// The roadmap's checkpoint-2 pass condition, as far as this run shows it: an active (open or
    /// upcoming) market's metadata record and a current order book (200 from /book with a book
    /// object, or /books with at least one book) were fetched. A loopback run never counts.
    pub fn pass_condition_met(&self) -> bool {
        let active = self.market.as_ref().is_some_and(|m| m.status == "open" || m.status == "upcoming");
        let book = self.ep("clob_book").is_some_and(|e| e.status == Some(200) && e.notes.get("bid_levels").is_some())
            || self
                .ep("clob_books")
                .is_some_and(|e| e.status == Some(200) && e.notes["books"].as_array().is_some_and(|b| !b.is_empty()));
        active && book
    }

    /// 0 when complete, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.complete() {
            0
        } else {
            1
        }
    }

    fn ep(&self, name: &str) -> Option<&EndpointResult> {
        self.endpoints.iter().find(|e| e.name == name && e.answered())
    }

    fn status_text(e: Option<&EndpointResult>) -> String {
        match e {
            Some(e) => format!("HTTP {}", e.status.map(|s| s.to_string()).unwrap_or_else(|| "—".into())),
            None => "not answered in this run".into(),
        }
    }

    /// The roadmap's checkpoint-2 questions with what this run observed (plus where the fact sheet
    /// answers what the probe cannot).
    pub fn answers(&self) -> Vec<(&'static str, String)> {
        let gamma = self.endpoints.iter().rfind(|e| e.family == "gamma" && e.answered());
        let book = self.ep("clob_book");
        let books = self.ep("clob_books");
        let ltp = self.ep("clob_last_trade_price");
        let mut out = Vec::new();
        out.push((
            "How to discover active Polymarket markets?",
            format!(
                "Gamma `GET {}/markets/slug/<slug>` {}: tried {}; last reply {}.",
                self.gamma_url,
                if self.slug_given {
                    "for the slug given with --slug"
                } else {
                    "with the slug computed from the clock (current 5m window, then the next if not listed)"
                },
                self.slugs_tried.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", "),
                Self::status_text(gamma)
            ),
        ));
        out.push((
            "How to filter BTC up/down markets?",
            match &self.market {
                Some(m) => format!(
                    "By slug family: `btc-updown-5m-<window start unix s>` (also 15m/4h, hourly/daily ET-dated slugs; see market::Family). This run: `{}` → family {}, question {:?}.",
                    m.slug,
                    m.family.map(|f| f.name()).unwrap_or("unknown"),
                    m.question.clone().unwrap_or_default()
                ),
                None => "By slug family (`btc-updown-5m-<window start unix s>` etc.); no market record was obtained in this run.".into(),
            },
        ));
        out.push((
            "How to resolve conditionId and token IDs?",
            match &self.market {
                Some(m) => format!(
                    "From the Gamma record: `conditionId` = {}; `clobTokenIds` (a JSON string inside JSON) zipped with `outcomes`: {}. Window {} → {} (eventStartTime..endDate), status {}.",
                    m.condition_id,
                    m.tokens.iter().map(|t| format!("{} = {}", t.outcome, t.token_id)).collect::<Vec<_>>().join(", "),
                    m.window_start_utc,
                    m.window_end_utc,
                    m.status
                ),
                None => format!("Not resolved in this run: {}.", self.market_error.clone().unwrap_or_else(|| "no reply".into())),
            },
        ));
        out.push((
            "How to fetch the current order book for one token?",
            match book {
                Some(e) => format!(
                    "`GET {}/book?token_id=<id>`: {}, {} ms, {} bytes; {}.",
                    self.clob_url,
                    Self::status_text(Some(e)),
                    e.latency_ms.unwrap_or(0.0),
                    e.body_bytes.unwrap_or(0),
                    notes_line(&e.notes)
                ),
                None => format!("`GET {}/book?token_id=<id>`: not answered in this run.", self.clob_url),
            },
        ));
        out.push((
            "Is there a batch order-book endpoint?",
            match books {
                Some(e) => format!(
                    "Yes: `POST {}/books` with body `[{{\"token_id\":\"…\"}},…]` (≤ 500 per facts §4.2): {}, {} ms; reply order: {}; missing ids: {}.",
                    self.clob_url,
                    Self::status_text(Some(e)),
                    e.latency_ms.unwrap_or(0.0),
                    e.notes["reply_order"].as_str().unwrap_or("n/a"),
                    e.notes["missing"].as_array().map(|a| a.len()).unwrap_or(0)
                ),
                None => format!("`POST {}/books` exists (facts §4.2) but was not answered in this run.", self.clob_url),
            },
        ));
        out.push((
            "Is there a market websocket for order-book updates?",
            "Not probed by this tool (REST only). The market channel `wss://ws-subscriptions-clob.polymarket.com/ws/market` and its event types are documented in the API fact sheet (polymarket_api_facts.md §6); pm-stream records it.".into(),
        ));
        out.push((
            "Is there a trade websocket or recent-trades endpoint?",
            match ltp {
                Some(e) => format!(
                    "Only `GET /last-trade-price` was probed: {}, fields {}. Trade prints on the websocket (`last_trade_price` events, facts §6.2) and the Data API `/trades` were not probed.",
                    Self::status_text(Some(e)),
                    field_list(e, 10)
                ),
                None => "Only `GET /last-trade-price` is in scope, and it was not answered in this run; websocket trade prints (facts §6.2) and the Data API were not probed.".into(),
            },
        ));
        out.push(("What rate limits are documented or observed?", self.rate_limit_answer()));
        out.push((
            "What fields are returned?",
            "See the per-endpoint field lists below (wire order, with JSON types; `string(decimal)` = a number sent as a string, `string(json)` = JSON inside a string).".into(),
        ));
        out.push(("What timestamps exist?", self.timestamps_answer()));
        out
    }

    fn rate_limit_answer(&self) -> String {
        let mut headers = std::collections::BTreeSet::new();
        let mut retry_after = Vec::new();
        let mut throttled = 0;
        for e in &self.endpoints {
            headers.extend(e.ratelimit_headers.keys().cloned());
            retry_after.extend(e.retry_after.iter().map(|r| format!("{} ({})", r, e.name)));
            throttled += e.attempts.iter().filter(|a| a.status == Some(429) || a.verdict.contains("throttled")).count();
        }
        format!(
            "Documented (facts §5): per-IP Cloudflare sliding 10 s windows, e.g. /book 1 500, /books 500, /price and /midpoint 1 500, tick size 200, Gamma /markets 300; excess is delayed rather than rejected. Observed in this run ({} requests, ≥ {} s apart): {} throttled replies (429 or 200 with a Too-Many-Requests body); rate-limit headers: {}; Retry-After: {}.",
            self.requests_used,
            self.min_spacing_s,
            throttled,
            if headers.is_empty() { "none".to_string() } else { headers.into_iter().collect::<Vec<_>>().join(", ") },
            if retry_after.is_empty() { "none".to_string() } else { retry_after.join(", ") }
        )
    }

    fn timestamps_answer(&self) -> String {
        let mut parts = Vec::new();
        for e in self.endpoints.iter().filter(|e| !e.timestamps.is_empty()) {
            let mut seen: Vec<String> = Vec::new();
            for t in &e.timestamps {
                let s = format!("`{}` ({})", t.path, t.interpretation);
                if !seen.contains(&s) {
                    seen.push(s);
                }
            }
            parts.push(format!("{}: {}", e.name, seen.join(", ")));
        }
        if parts.is_empty() {
            "No time-like field was seen in this run.".into()
        } else {
            format!(
                "{}. Our own receive time is each reply's `collected_at_utc` in the raw envelope.",
                parts.join("; ")
            )
        }
    }

    /// The machine-readable report.
    pub fn to_json(&self) -> Value {
        json!({
            "probe": PROBE_NAME,
            "probe_version": PROBE_VERSION,
            "tool": "pm-probe",
            "collector_version": crate::VERSION,
            "run_id": self.run_id,
            "host": self.host,
            "run_kind": self.run_kind,
            "run_kind_note": if self.run_kind == "loopback" { LOOPBACK_BANNER } else { "live: base URLs are not loopback addresses" },
            "started_at_utc": self.started_at_utc,
            "finished_at_utc": self.finished_at_utc,
            "base_urls": {"gamma": self.gamma_url, "clob": self.clob_url},
            "user_agent": self.user_agent,
            "slug_given": self.slug_given,
            "slugs_tried": self.slugs_tried,
            "market": self.market,
            "market_error": self.market_error,
            "requests": {
                "used": self.requests_used,
                "cap": self.max_requests,
                "cap_reached": self.cap_reached,
                "min_spacing_s": self.min_spacing_s,
                "max_attempts_per_request": self.max_attempts,
            },
            "complete": self.complete(),
            "checkpoint2_pass_condition": {
                "met_in_this_run": self.pass_condition_met(),
                "counts_as_evidence": self.run_kind == "live",
                "condition": "one active market metadata record and one current order book fetched",
            },
            "stopped_reason": self.stopped_reason(),
            "exit_code": self.exit_code(),
            "endpoints": self.endpoints,
            "not_probed_by_design": {
                "websocket": "wss://ws-subscriptions-clob.polymarket.com/ws/market is not probed by pm-probe (REST only); see the API fact sheet §6",
                "trades": "only GET /last-trade-price; Data API /trades and websocket last_trade_price events are not probed",
            },
            "answers": self.answers().into_iter().map(|(q, a)| json!({"question": q, "answer": a})).collect::<Vec<_>>(),
        })
    }

    /// The human report (Markdown).
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln_md(w, &format!("# Polymarket public sources probe (v{PROBE_VERSION})\n"));
        if self.run_kind == "loopback" {
            let _ = writeln_md(w, &format!("> **{LOOPBACK_BANNER}.** The base URLs point at this machine (127.0.0.1/localhost): the replies are the test venue's recorded (and derived) responses, not Polymarket's. Nothing below says anything about the live venue.\n"));
        }
        let _ = writeln_md(
            w,
            &format!(
                "- run kind: **{}**\n- run id: `{}`, host: `{}`\n- started {} — finished {} (UTC)\n- Gamma: `{}`; CLOB: `{}`\n- User-Agent: `{}`\n- requests: {} of a cap of {} (at most {} tries per request, ≥ {:.3} s between requests)\n- result: {}\n",
                self.run_kind,
                self.run_id,
                self.host,
                self.started_at_utc,
                self.finished_at_utc,
                self.gamma_url,
                self.clob_url,
                self.user_agent,
                self.requests_used,
                self.max_requests,
                self.max_attempts,
                self.min_spacing_s,
                match self.stopped_reason() {
                    None => "**complete** — every endpoint answered (exit 0)".to_string(),
                    Some(r) => format!("**incomplete** — {r} (exit 1)"),
                }
            ),
        );
        if self.cap_reached {
            let _ = writeln_md(
                w,
                &format!(
                    "**Stopped early: the request cap ({}) was reached before all endpoints were probed.**\n",
                    self.max_requests
                ),
            );
        }
        let gate = self.pass_condition_met();
        let _ = writeln_md(
            w,
            &format!(
                "Checkpoint-2 pass condition (one active market metadata record and one current order book fetched): **{}**{}\n",
                if gate { "met in this run" } else { "not met in this run" },
                if self.run_kind == "loopback" { " (loopback replay: it does not count either way)" } else { "" }
            ),
        );
        let _ = writeln_md(w, "## Endpoints\n");
        let _ = writeln_md(w, "| endpoint | request | outcome | status | latency ms | tries | bytes | JSON | fields |");
        let _ = writeln_md(w, "|---|---|---|---|---|---|---|---|---|");
        for e in &self.endpoints {
            let path =
                e.url.split_once("://").map(|(_, r)| r).and_then(|r| r.find('/').map(|i| &r[i..])).unwrap_or(&e.url);
            let _ = writeln_md(
                w,
                &format!(
                    "| {} | {} `{}` | {} | {} | {} | {} | {} | {} | {} |",
                    e.name,
                    e.method,
                    md_cell(&shorten(path, 70)),
                    e.outcome,
                    e.status.map(|s| s.to_string()).unwrap_or_else(|| "—".into()),
                    e.latency_ms.map(|l| format!("{l:.1}")).unwrap_or_else(|| "—".into()),
                    e.attempts.len(),
                    e.body_bytes.map(|b| b.to_string()).unwrap_or_else(|| "—".into()),
                    e.json_valid.map(|j| if j { "yes" } else { "no" }).unwrap_or("—"),
                    md_cell(&field_list(e, 8)),
                ),
            );
        }
        let _ = writeln_md(w, "");
        let _ = writeln_md(w, "## Checkpoint-2 questions\n");
        for (q, a) in self.answers() {
            let _ = writeln_md(w, &format!("**{q}**  \n{a}\n"));
        }
        let _ = writeln_md(w, "## Per endpoint: fields, timestamps, headers, errors\n");
        for e in &self.endpoints {
            let _ = writeln_md(w, &format!("### {}\n", e.name));
            let _ = writeln_md(w, &format!("{} — `{} {}`\n", e.purpose, e.method, e.url));
            if let Some(b) = &e.request_body {
                let _ = writeln_md(w, &format!("- request body: `{}`", shorten(b, 300)));
            }
            if let Some(r) = &e.not_probed_reason {
                let _ = writeln_md(w, &format!("- **not probed**: {r}\n"));
                continue;
            }
            let _ = writeln_md(
                w,
                &format!(
                    "- outcome: {}; status {}{}; content-type {}; {} bytes; body kind {}",
                    e.outcome,
                    e.status.map(|s| s.to_string()).unwrap_or_else(|| "none".into()),
                    e.expected_status
                        .map(|x| format!(
                            " (expected {x}{})",
                            if e.status == Some(x) { ", as expected" } else { ", NOT as expected" }
                        ))
                        .unwrap_or_default(),
                    e.content_type.as_deref().map(|c| format!("`{c}`")).unwrap_or_else(|| "none".into()),
                    e.body_bytes.unwrap_or(0),
                    e.body_kind.as_deref().unwrap_or("none"),
                ),
            );
            for a in &e.attempts {
                let _ = writeln_md(
                    w,
                    &format!(
                        "- try {}: sent {}, status {}, {:.1} ms, {}{}{}",
                        a.attempt,
                        a.sent_at_utc,
                        a.status.map(|s| s.to_string()).unwrap_or_else(|| "none".into()),
                        a.latency_ms,
                        a.verdict,
                        a.retry_after.as_deref().map(|r| format!(", Retry-After {r}")).unwrap_or_default(),
                        if a.waited_before_s > 0.0 {
                            format!(", waited {:.3} s before", a.waited_before_s)
                        } else {
                            String::new()
                        }
                    ),
                );
            }
            if e.cap_limited {
                let _ = writeln_md(w, "- retries cut short by the request cap");
            }
            if let Some(err) = &e.error {
                let _ = writeln_md(w, &format!("- error: {}", md_cell(&shorten(err, 300))));
            }
            let _ = writeln_md(
                w,
                &format!(
                    "- rate-limit headers: {}; Retry-After: {}; Date: {}",
                    if e.ratelimit_headers.is_empty() {
                        "none".to_string()
                    } else {
                        e.ratelimit_headers.iter().map(|(k, v)| format!("`{k}: {v}`")).collect::<Vec<_>>().join(", ")
                    },
                    if e.retry_after.is_empty() { "none".to_string() } else { e.retry_after.join(", ") },
                    e.date_header.as_deref().unwrap_or("none")
                ),
            );
            if let Some(sh) = &e.shape {
                let mut line = format!("- body: {}", sh.kind);
                if let Some(n) = sh.array_len {
                    line.push_str(&format!(" of {n} {}", sh.element_kind.as_deref().unwrap_or("elements")));
                }
                let _ = writeln_md(w, &line);
                if !sh.fields.is_empty() {
                    let list: Vec<String> = sh.fields.iter().map(|f| format!("`{}`: {}", f.name, f.ty)).collect();
                    let _ = writeln_md(
                        w,
                        &format!(
                            "- fields ({}{}): {}",
                            sh.fields.len(),
                            if sh.array_len.is_some() { ", of the first element" } else { "" },
                            list.join(", ")
                        ),
                    );
                }
            }
            for t in &e.timestamps {
                let _ = writeln_md(
                    w,
                    &format!(
                        "- time field `{}` = `{}` → {}{}{}",
                        t.path,
                        shorten(&t.value.to_string(), 60),
                        t.interpretation,
                        t.utc.as_deref().map(|u| format!(" = {u}")).unwrap_or_default(),
                        t.age_s.map(|a| format!(" ({a:.3} s before our receive time)")).unwrap_or_default()
                    ),
                );
            }
            if !e.notes.is_null() {
                let _ = writeln_md(w, &format!("- notes: `{}`", shorten(&e.notes.to_string(), 1200)));
            }
            let _ = writeln_md(w, "");
        }
        let _ = writeln_md(w, "Not probed by design: the market websocket (see the API fact sheet §6; recorded by pm-stream) and trade endpoints other than `/last-trade-price`.\n");
        let _ = writeln_md(
            w,
            &format!("Machine-readable twin: `{PROBE_NAME}.json`. Raw replies: the `--raw-out` file, if one was given (schema pmarchive.raw/1)."),
        );
        s
    }

    /// Writes `<dir>/polymarket_public_sources_probe_v1.{json,md}` atomically; returns both paths.
    pub fn write(&self, dir: &Path) -> io::Result<(PathBuf, PathBuf)> {
        let jp = dir.join(format!("{PROBE_NAME}.json"));
        let mp = dir.join(format!("{PROBE_NAME}.md"));
        let mut j = serde_json::to_vec_pretty(&self.to_json()).map_err(io::Error::other)?;
        j.push(b'\n');
        util::write_atomic(&jp, &j)?;
        util::write_atomic(&mp, self.to_markdown().as_bytes())?;
        Ok((jp, mp))
    }

    /// One line for stderr.
    pub fn summary(&self) -> String {
        let answered = self.endpoints.iter().filter(|e| e.answered()).count();
        format!(
            "run_kind={}, {} of {} requests, {}/{} endpoints answered{}",
            self.run_kind,
            self.requests_used,
            self.max_requests,
            answered,
            self.endpoints.len(),
            self.stopped_reason().map(|r| format!("; incomplete: {r}")).unwrap_or_default()
        )
    }
}

fn writeln_md(w: &mut String, line: &str) -> fmt::Result {
    use std::fmt::Write as _;
    writeln!(w, "{line}")
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// Escapes a table cell (pipes, line breaks).
fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// `a, b, c (+N more)` from an endpoint's fields.
fn field_list(e: &EndpointResult, n: usize) -> String {
    let Some(sh) = &e.shape else { return "—".into() };
    if sh.fields.is_empty() {
        return sh.kind.clone();
    }
    let mut names: Vec<String> = sh.fields.iter().take(n).map(|f| f.name.clone()).collect();
    if sh.fields.len() > n {
        names.push(format!("(+{} more)", sh.fields.len() - n));
    }
    names.join(", ")
}

fn notes_line(notes: &Value) -> String {
    if notes.is_null() {
        return "no book object".into();
    }
    format!(
        "{} bid levels ({}), {} ask levels ({}), 40-hex hash: {}",
        notes["bid_levels"],
        notes["bids_order"].as_str().unwrap_or("?"),
        notes["ask_levels"],
        notes["asks_order"].as_str().unwrap_or("?"),
        notes["hash_is_40_hex"]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn hosts_and_run_kind() {
        assert_eq!(url_host("http://127.0.0.1:8080/x"), "127.0.0.1");
        assert_eq!(url_host("http://[::1]:9/"), "::1");
        assert_eq!(url_host("https://clob.polymarket.com"), "clob.polymarket.com");
        assert_eq!(url_host("http://LOCALHOST"), "localhost");
        assert_eq!(run_kind(&["https://gamma-api.polymarket.com", "https://clob.polymarket.com"]), "live");
        assert_eq!(run_kind(&["https://gamma-api.polymarket.com", "http://127.0.0.1:1"]), "loopback");
        assert_eq!(run_kind(&["http://[::1]:5", "https://clob.polymarket.com"]), "loopback");
        assert_eq!(run_kind(&["http://127.0.0.1.example.com"]), "live");
    }

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
        assert_eq!((n["bids_order"].as_str(), n["asks_order"].as_str()), (Some("ascending"), Some("descending")));
        assert_eq!(n["hash_is_40_hex"], true);
        let asked = vec!["1".to_string(), "2".to_string()];
        let r = books_notes(&asked, &json!([{"asset_id": "2"}, {"asset_id": "1"}]));
        assert_eq!(r["reply_order"], "reversed");
        let r = books_notes(&asked, &json!([{"asset_id": "1"}]));
        assert_eq!(r["missing"], json!(["2"]));
    }
}
