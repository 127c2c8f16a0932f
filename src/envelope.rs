//! The raw envelope: one JSONL line per exchange with the venue (and per gap, tracking change or
//! websocket frame), schema `pmarchive.raw/1`. Documented field by field in docs/DATA_CONTRACT.md.
//!
//! The reply body is embedded **byte-for-byte** as JSON (`body`) when the bytes are valid JSON with
//! no surrounding whitespace, no line break (so the line stays one JSONL line) and a nesting depth of
//! at most [`MAX_BODY_DEPTH`] (so that every documented reader can read the line: serde_json, DuckDB
//! and others stop at depth 128, and one unreadable line makes some of them reject the whole file).
//! Otherwise it is kept losslessly as a string: `body_text` (valid UTF-8) or `body_hex` (not UTF-8),
//! with `body_error` saying why (`not_json: …`, `too_deep: …`) — or nothing when it is valid JSON that
//! merely could not be embedded (`body_kind: "json_text"`).
//!
//! Size: every encoding is at most twice the body's bytes (hex is 2×; text that JSON escaping would
//! blow up beyond 2× — control characters become `\u00XX` — is kept as hex instead, with
//! `body_error` saying so), so with [`crate::http::MAX_BODY`] a line always fits in
//! [`crate::jsonl::MAX_LINE`].

use serde::Serialize;
use serde_json::value::RawValue;

use crate::clock;
use crate::util;

pub const SCHEMA: &str = "pmarchive.raw/1";

/// The deepest body embedded as JSON (arrays and objects nested in each other; a `/books` reply is 4
/// deep). The line adds one level (the envelope object), so an embedded line is at most 101 deep,
/// within the 128 of serde_json and DuckDB, jq's 10000 and Python's recursion limit.
pub const MAX_BODY_DEPTH: usize = 100;
pub const VENUE_POLYMARKET: &str = "polymarket";
pub const VENUE_KALSHI: &str = "kalshi";

/// Who is writing: constant for one process run.
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub venue: &'static str,
    pub tool: &'static str,
    pub version: &'static str,
    pub run_id: String,
    pub host: String,
}

impl RunInfo {
    pub fn new(tool: &'static str) -> RunInfo {
        RunInfo {
            venue: VENUE_POLYMARKET,
            tool,
            version: crate::VERSION,
            run_id: std::env::var("PMARCHIVE_RUN_ID")
                .ok()
                .filter(|s| util::is_safe_component(s))
                .unwrap_or_else(util::new_run_id),
            host: util::hostname(),
        }
    }
}

/// What the request was.
#[derive(Clone, Debug, Serialize)]
pub struct RequestInfo {
    pub method: &'static str,
    /// Full URL including the query string.
    pub url: String,
    /// Query parameters as an object (empty object when none).
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Request body (JSON) when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Box<RawValue>>,
}

/// The reply headers worth keeping.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ReplyHeaders {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(rename = "retry-after", skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    #[serde(rename = "content-type", skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(rename = "content-encoding", skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(rename = "cf-ray", skip_serializing_if = "Option::is_none")]
    pub cf_ray: Option<String>,
    /// Any header whose name contains `ratelimit` (e.g. `x-ratelimit-remaining`), lowercase names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratelimit: Option<std::collections::BTreeMap<String, String>>,
}

/// How the body is kept (see module docs).
#[derive(Clone, Debug, Default)]
pub struct Body {
    pub kind: &'static str,
    pub json: Option<Box<RawValue>>,
    pub text: Option<String>,
    pub hex: Option<String>,
    pub error: Option<String>,
}

impl Body {
    /// Classifies reply bytes; never loses a byte.
    pub fn from_bytes(bytes: Vec<u8>) -> Body {
        if bytes.is_empty() {
            return Body { kind: "empty", ..Body::default() };
        }
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                return Body {
                    kind: "hex",
                    hex: Some(util::hex(e.as_bytes())),
                    error: Some(format!("not_utf8: {}", e.utf8_error())),
                    ..Body::default()
                }
            }
        };
        match serde_json::from_str::<&RawValue>(&text) {
            Ok(_) => {
                let depth = json_depth(text.as_bytes());
                if depth > MAX_BODY_DEPTH {
                    let error = format!("too_deep: nesting depth {depth} > {MAX_BODY_DEPTH}; kept as text");
                    return Body { kind: "text", text: Some(text), error: Some(error), ..Body::default() };
                }
                let embeddable = !text.contains(['\n', '\r']) && text.trim() == text;
                if embeddable {
                    // Valid and exact: embed the very bytes.
                    let raw = RawValue::from_string(text).expect("validated above");
                    Body { kind: "json", json: Some(raw), ..Body::default() }
                } else {
                    Body { kind: "json_text", text: Some(text), ..Body::default() }
                }
            }
            Err(e) => {
                let escaped = escaped_len(&text);
                if escaped > 2 * text.len() {
                    let error = format!("not_json: {e}; kept as hex: as a JSON string it would take {escaped} bytes");
                    return Body {
                        kind: "hex",
                        hex: Some(util::hex(text.as_bytes())),
                        error: Some(error),
                        ..Body::default()
                    };
                }
                Body { kind: "text", text: Some(text), error: Some(format!("not_json: {e}")), ..Body::default() }
            }
        }
    }

    /// The body as text, whichever way it is kept (None for hex/empty).
    pub fn as_str(&self) -> Option<&str> {
        self.json.as_deref().map(RawValue::get).or(self.text.as_deref())
    }
}

/// The deepest nesting of arrays/objects in JSON text (brackets inside strings do not count).
pub fn json_depth(json: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &b in json {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Bytes of `s` as the inside of a JSON string (serde_json's escaping).
fn escaped_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// The reader's view of a raw line (`pmarchive.raw/1`): the envelope's fields as written by
/// [`Envelope`], every one optional (a reader keeps a line it cannot use, with a reason), strings
/// borrowed from the line when they have no escapes. Each reader chooses how to read the reply body
/// `B` and the tool's context `C` (skipped by default); fields it does not name are skipped.
/// pm-rebuild also fills it with a fast reader of its own (`src/polymarket/rebuild/scan.rs`, tested
/// against serde_json), which names every field: a field added here does not compile there until
/// it is read there too.
#[derive(Debug, Default, serde::Deserialize)]
pub struct RawLine<'a, B = serde::de::IgnoredAny, C = serde::de::IgnoredAny> {
    #[serde(borrow, default)]
    pub schema: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub venue: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub tool: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub collector_version: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub run_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub host: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(borrow, default)]
    pub kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub endpoint: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub sent_at_utc: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub collected_at_utc: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub attempt: Option<u64>,
    #[serde(default)]
    pub status: Option<u64>,
    #[serde(borrow, default)]
    pub body_kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub body: Option<B>,
    #[serde(borrow, default)]
    pub body_text: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub body_error: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub error: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub ctx: Option<C>,
}

/// One raw line. Build with [`Envelope::new`] and the `with_*` setters, write with [`Envelope::to_line`].
#[derive(Clone, Debug, Serialize)]
pub struct Envelope {
    pub schema: &'static str,
    pub venue: &'static str,
    pub tool: &'static str,
    pub collector_version: &'static str,
    pub run_id: String,
    pub host: String,
    /// Line number within this run and tool (0-based), so a reader sees any loss.
    pub seq: u64,
    /// `http` (an exchange with the venue), `gap` (something that should have been there and is not),
    /// `track` (a market/token started or stopped being collected), `ws` (websocket frame or event).
    pub kind: &'static str,
    /// Endpoint family (`gamma`, `books`, `book`, …) for http lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at_utc: Option<String>,
    /// When the reply arrived (or the event happened): RFC 3339 UTC, microseconds.
    pub collected_at_utc: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<f64>,
    /// 1 for the first try of a request, 2.. for retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestInfo>,
    /// HTTP status; absent when no reply arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<ReplyHeaders>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_hex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_error: Option<String>,
    /// Why the exchange failed (network error, timeout, retry given up, …) or what the gap is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Tool-specific context: slot number and due time, tokens asked for, slug, connection id, …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctx: Option<serde_json::Value>,
}

impl Envelope {
    pub fn new(run: &RunInfo, seq: u64, kind: &'static str) -> Envelope {
        Envelope {
            schema: SCHEMA,
            venue: run.venue,
            tool: run.tool,
            collector_version: run.version,
            run_id: run.run_id.clone(),
            host: run.host.clone(),
            seq,
            kind,
            endpoint: None,
            sent_at_utc: None,
            collected_at_utc: clock::fmt_micros(clock::now()),
            elapsed_ms: None,
            attempt: None,
            request: None,
            status: None,
            headers: None,
            body_kind: None,
            body: None,
            body_text: None,
            body_hex: None,
            body_error: None,
            error: None,
            ctx: None,
        }
    }

    pub fn with_body(mut self, body: Body) -> Envelope {
        self.body_kind = Some(body.kind);
        self.body = body.json;
        self.body_text = body.text;
        self.body_hex = body.hex;
        self.body_error = body.error;
        self
    }

    /// Sets `ctx` from its type (`track::TrackCtx`, `track::GapCtx`, `stream::WsCtx`, …; or a JSON value).
    pub fn with_ctx(mut self, ctx: impl Serialize) -> Envelope {
        self.ctx = Some(serde_json::to_value(ctx).expect("a ctx type serializes to JSON"));
        self
    }

    pub fn with_error(mut self, e: impl Into<String>) -> Envelope {
        self.error = Some(e.into());
        self
    }

    /// The line, with its trailing newline.
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("envelope serializes");
        v.push(b'\n');
        v
    }
}

/// Numbers each line of one run: `seq` starts at 0.
#[derive(Debug)]
pub struct Sequencer {
    pub run: RunInfo,
    next: u64,
}

impl Sequencer {
    pub fn new(run: RunInfo) -> Sequencer {
        Sequencer { run, next: 0 }
    }

    /// A new envelope with the next sequence number.
    pub fn envelope(&mut self, kind: &'static str) -> Envelope {
        let e = Envelope::new(&self.run, self.next, kind);
        self.next += 1;
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunInfo {
        RunInfo { venue: "polymarket", tool: "test", version: "0.0.0", run_id: "r1".into(), host: "h".into() }
    }

    #[test]
    fn embeds_json_byte_for_byte() {
        let raw = br#"{"market":"0x9d","bids":[{"price":"0.001","size":"667.12"}],"n":1.50,"e":1e3}"#.to_vec();
        let env = Envelope::new(&run(), 0, "http").with_body(Body::from_bytes(raw.clone()));
        let line = env.to_line();
        let line = String::from_utf8(line).unwrap();
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        // The exact bytes, including number spellings serde would normalize (1.50, 1e3), are inside.
        assert!(line.contains(&format!("\"body\":{}", String::from_utf8(raw).unwrap())));
        assert!(line.contains("\"body_kind\":\"json\""));
    }

    #[test]
    fn keeps_non_json_as_text_with_error() {
        let html = b"<html><body>error code: 1010</body></html>".to_vec();
        let b = Body::from_bytes(html);
        assert_eq!(b.kind, "text");
        assert!(b.error.as_deref().unwrap().starts_with("not_json"));
        let truncated = br#"{"market":"0x9d","bids":[{"pri"#.to_vec();
        let b = Body::from_bytes(truncated.clone());
        assert_eq!(b.kind, "text");
        assert_eq!(b.text.as_deref().unwrap().as_bytes(), &truncated[..]);
    }

    #[test]
    fn multi_line_json_is_kept_as_text_without_error() {
        let pretty = b"{\n  \"a\": 1\n}\n".to_vec();
        let b = Body::from_bytes(pretty.clone());
        assert_eq!(b.kind, "json_text");
        assert!(b.error.is_none());
        assert_eq!(b.text.unwrap().as_bytes(), &pretty[..]);
    }

    #[test]
    fn a_body_deeper_than_readers_accept_is_kept_verbatim_as_text() {
        let n = 200_000;
        let deep = format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes();
        let b = Body::from_bytes(deep.clone());
        assert_eq!(b.kind, "text");
        assert!(b.json.is_none());
        assert_eq!(b.text.as_deref().unwrap().as_bytes(), &deep[..], "the exact bytes");
        assert!(b.error.as_deref().unwrap().starts_with("too_deep: nesting depth 200000 > 100"), "{:?}", b.error);
        // The line is readable by a depth-limited parser (serde_json: 128).
        let line = Envelope::new(&run(), 0, "http").with_body(b).to_line();
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["body_text"].as_str().unwrap().len(), 2 * n);
        // At the limit it is still embedded; brackets inside strings do not count.
        let at = format!("{}\"]]]]\"{}", "[".repeat(MAX_BODY_DEPTH), "]".repeat(MAX_BODY_DEPTH));
        assert_eq!(json_depth(at.as_bytes()), MAX_BODY_DEPTH);
        assert_eq!(Body::from_bytes(at.into_bytes()).kind, "json");
    }

    #[test]
    fn text_that_escaping_would_blow_up_is_kept_as_hex() {
        let ctl = vec![0x01u8; 1000];
        let b = Body::from_bytes(ctl);
        assert_eq!(b.kind, "hex");
        assert_eq!(b.hex.as_deref().unwrap(), "01".repeat(1000));
        assert!(b.error.as_deref().unwrap().contains("kept as hex"), "{:?}", b.error);
        // Ordinary text with a few escapes stays text.
        assert_eq!(Body::from_bytes(b"line 1\nline \"2\"\n".to_vec()).kind, "text");
    }

    #[test]
    fn non_utf8_is_hex() {
        let b = Body::from_bytes(vec![0xff, 0x00, 0x41]);
        assert_eq!(b.kind, "hex");
        assert_eq!(b.hex.as_deref(), Some("ff0041"));
    }

    #[test]
    fn sequencer_numbers_lines() {
        let mut s = Sequencer::new(run());
        assert_eq!(s.envelope("gap").seq, 0);
        assert_eq!(s.envelope("gap").seq, 1);
    }

    #[test]
    fn network_failure_envelope_has_no_status() {
        let env = Envelope::new(&run(), 3, "http").with_error("network: connection reset");
        let v: serde_json::Value = serde_json::from_slice(&env.to_line()).unwrap();
        assert!(v.get("status").is_none());
        assert_eq!(v["error"], "network: connection reset");
        assert_eq!(v["schema"], SCHEMA);
        assert!(v["collected_at_utc"].as_str().unwrap().ends_with('Z'));
    }
}
