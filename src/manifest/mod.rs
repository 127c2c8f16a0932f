//! The `manifest` tool: run manifests (`build`), archive verification (`verify`) and the health
//! status (`status`). Formats are documented in docs/DATA_CONTRACT.md ("Run manifest", "Health
//! status").
//!
//! This module holds what the three subcommands share: reading raw lines tolerantly, the tallies
//! over raw envelopes, walking the archive directory, loading manifests and the upload log.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{clock, jsonl};

pub mod build;
pub mod offload;
pub mod status;
pub mod verify;

pub const MANIFEST_SCHEMA: &str = "pmarchive.manifest/1";
pub const VERIFY_SCHEMA: &str = "pmarchive.verify/1";
pub const STATUS_SCHEMA: &str = "pmarchive.status/1";
pub const UPLOAD_SCHEMA: &str = "pmarchive.upload/1";

/// At most this many problem entries are kept in one document; the rest are only counted.
pub const MAX_PROBLEMS: usize = 200;

/// A timestamp in the archive's canonical form (`2026-11-24T16:01:33.123456Z`), so that string
/// comparison is time comparison. Non-canonical RFC 3339 is parsed and reformatted; None if unparseable.
pub fn canonical_time(s: &str) -> Option<String> {
    if clock::is_canonical(s.as_bytes()) {
        return Some(s.to_string());
    }
    clock::parse_rfc3339(s).map(clock::fmt_micros)
}

/// The later of two optional canonical times.
pub fn max_time(a: &mut Option<String>, b: Option<&str>) {
    if let Some(b) = b {
        if a.as_deref().is_none_or(|a| b > a) {
            *a = Some(b.to_string());
        }
    }
}

/// The earlier of two optional canonical times.
pub fn min_time(a: &mut Option<String>, b: Option<&str>) {
    if let Some(b) = b {
        if a.as_deref().is_none_or(|a| b < a) {
            *a = Some(b.to_string());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw lines

/// A `pmarchive.raw/1` line as the tallies read it: the one envelope reader type
/// ([`crate::envelope::RawLine`]) with the reply body peeked at ([`BodyPeek`], never built) and the
/// `ctx` fields the tallies use ([`RawCtx`]).
pub type RawLine<'a> = crate::envelope::RawLine<'a, BodyPeek, RawCtx>;

impl RawLine<'_> {
    /// True when the line carries successful data: a market or resolution record (stream
    /// `markets`), an HTTP 2xx reply whose body holds at least one
    /// order book (endpoints `books`/`book`) or at least one record (any other endpoint, e.g. a Gamma
    /// market), or a websocket frame (`ctx.event: "frame"`) with book data (`event_type` `book` or
    /// `price_change`, or `bids`/`asks`). Gaps, failed attempts, empty replies and connection events
    /// are not data: they must not keep a stream "fresh".
    pub fn is_data(&self) -> bool {
        // pm-markets' own records (stream `markets`): each is a market or resolution the venue
        // listed, so data (they are not envelopes and carry no body).
        if matches!(
            self.schema.as_deref(),
            Some(crate::polymarket::market::MARKET_SCHEMA | crate::polymarket::market::RESOLUTION_SCHEMA)
        ) {
            return true;
        }
        let Some(b) = &self.body else { return false };
        match self.kind.as_deref() {
            Some("http") => {
                self.status.is_some_and(|s| (200..300).contains(&s))
                    && match self.endpoint.as_deref() {
                        Some("books" | "book") => b.books > 0,
                        _ => b.items > 0,
                    }
            }
            Some("ws") => self.ctx.as_ref().and_then(|c| c.event.as_deref()) == Some("frame") && b.books > 0,
            _ => false,
        }
    }

    /// True for an HTTP attempt that got no answer: no reply at all, or an error status other than
    /// 404 (a 404 is an answer: "not listed (yet)").
    pub fn is_unanswered(&self) -> bool {
        self.kind.as_deref() == Some("http") && self.status.is_none_or(|s| s >= 400 && s != 404)
    }
}

/// The shape of a reply body, read without building it: `items` = elements of a top-level array
/// (or 1 for an object), `books` = those that look like an order book or a book event (an object
/// with `bids`/`asks`, or `event_type` `book`/`price_change`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BodyPeek {
    pub items: u64,
    pub books: u64,
}

/// One element of a body: is it an object that looks like a book?
struct BookItem(bool);

impl<'de> Deserialize<'de> for BookItem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = BookItem;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<BookItem, A::Error> {
                let mut book = false;
                while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    match k.as_ref() {
                        "bids" | "asks" => {
                            book = true;
                            m.next_value::<serde::de::IgnoredAny>()?;
                        }
                        "event_type" => {
                            let v = m.next_value::<Value>()?;
                            book |= matches!(v.as_str(), Some("book" | "price_change"));
                        }
                        _ => {
                            m.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(BookItem(book))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, s: A) -> Result<BookItem, A::Error> {
                crate::normalize::parse::skip_seq(s)?;
                Ok(BookItem(false))
            }
            crate::normalize::parse::ignore_scalars!(BookItem(false), strings);
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for BodyPeek {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = BodyPeek;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<BodyPeek, A::Error> {
                let mut p = BodyPeek::default();
                while let Some(BookItem(book)) = s.next_element::<BookItem>()? {
                    p.items += 1;
                    p.books += u64::from(book);
                }
                Ok(p)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<BodyPeek, A::Error> {
                let BookItem(book) = BookItem::deserialize(serde::de::value::MapAccessDeserializer::new(m))?;
                Ok(BodyPeek { items: 1, books: u64::from(book) })
            }
            crate::normalize::parse::ignore_scalars!(BodyPeek::default(), strings);
        }
        d.deserialize_any(V)
    }
}

/// The `ctx` fields the tallies use (gap type and size, tracking changes).
#[derive(Debug, Default, Deserialize)]
pub struct RawCtx {
    pub gap: Option<String>,
    pub count: Option<u64>,
    pub action: Option<String>,
    pub reason: Option<String>,
    pub slug: Option<String>,
    /// Kalshi's track lines name the market by `ticker` (no slug).
    pub ticker: Option<String>,
    pub family: Option<String>,
    pub condition_id: Option<String>,
    pub window_start_utc: Option<String>,
    pub window_end_utc: Option<String>,
    /// pm-stream: `frame` or a connection event.
    pub event: Option<String>,
    /// pm-stream's `stats` lines: websocket events by type (stream::StatsCtx).
    pub ws_event_types: Option<BTreeMap<String, u64>>,
}

/// One line of a data file, classified. (Returned once per line and never stored, so the size of
/// the `Line` variant does not matter.)
#[allow(clippy::large_enum_variant)]
pub enum Parsed<'a> {
    /// A JSON object with the expected field types (`collected_at_utc` made canonical).
    Line(RawLine<'a>),
    /// Valid JSON, but not shaped like an envelope (a field of the wrong type, not an object):
    /// counted as a row of kind `malformed`, with the reason.
    Malformed(String),
    /// Not JSON (or not UTF-8): counted as unparseable, with the reason.
    Unparseable(String),
}

/// A pm-markets record (stream `markets`): not an envelope; read as a data line timed by the time
/// pm-markets fetched it.
#[derive(Deserialize)]
struct RecordLine {
    schema: String,
    fetched_at_utc: Option<String>,
}

/// Classifies one line (without its newline).
pub fn parse_line(bytes: &[u8]) -> Parsed<'_> {
    let schemas = [crate::polymarket::market::MARKET_SCHEMA, crate::polymarket::market::RESOLUTION_SCHEMA];
    // Envelopes (the bulk, some of them megabytes) start with their schema and are not searched.
    let envelope = bytes.starts_with(br#"{"schema":"pmarchive.raw/1""#);
    if !envelope && schemas.iter().any(|s| bytes.windows(s.len()).any(|w| w == s.as_bytes())) {
        if let Ok(r) = serde_json::from_slice::<RecordLine>(bytes) {
            if schemas.contains(&r.schema.as_str()) {
                let collected_at_utc = r.fetched_at_utc.as_deref().and_then(canonical_time);
                return Parsed::Line(RawLine {
                    schema: Some(r.schema.into()),
                    collected_at_utc: collected_at_utc.map(Into::into),
                    ..RawLine::default()
                });
            }
        }
    }
    match serde_json::from_slice::<RawLine>(bytes) {
        Ok(mut l) => {
            l.collected_at_utc = l.collected_at_utc.as_deref().and_then(canonical_time).map(Into::into);
            Parsed::Line(l)
        }
        Err(e) => match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Parsed::Malformed(format!("not an envelope: {e}")),
            Err(_) => Parsed::Unparseable(format!("not JSON: {e}")),
        },
    }
}

/// What reading one data file found, besides the lines themselves.
#[derive(Debug, Default, Clone)]
pub struct ReadOutcome {
    /// Lines handed to the callback (complete lines, including unparseable ones).
    pub lines: u64,
    /// The decode error that ended the read early (corrupt gzip, truncated file), if any.
    pub error: Option<String>,
    /// Partial files only: bytes of an incomplete last line that were not counted.
    pub incomplete_tail_bytes: u64,
}

/// Reads a data file (plain or multi-member gzip) line by line, calling `f(line_number, parsed)`.
///
/// `partial`: the file is still being written (`*.partial`): a truncated last gzip member or an
/// incomplete last line is expected and not an error; only complete (`\n`-terminated) lines count.
/// For sealed files a last line without a newline is still read, and a decode error is reported.
pub fn read_data_file(path: &Path, partial: bool, mut f: impl FnMut(u64, Parsed<'_>)) -> io::Result<ReadOutcome> {
    let mut r = jsonl::open_lines(path)?;
    let mut out = ReadOutcome::default();
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        match r.next_into(&mut buf) {
            Ok(jsonl::Next::Eof) => break,
            Ok(jsonl::Next::TooLong(t)) => {
                if !t.terminated && partial {
                    out.incomplete_tail_bytes = t.bytes;
                    break;
                }
                // Longer than any tool reads (jsonl::MAX_LINE): counted as unparseable, never held.
                out.lines += 1;
                f(out.lines, Parsed::Unparseable(t.to_string()));
            }
            Ok(jsonl::Next::Line) => {
                let complete = buf.last() == Some(&b'\n');
                if !complete && partial {
                    out.incomplete_tail_bytes = buf.len() as u64;
                    break;
                }
                let line = if complete { &buf[..buf.len() - 1] } else { &buf[..] };
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                out.lines += 1;
                f(out.lines, parse_line(line));
            }
            Err(e) => {
                // The bytes of the unfinished line read before the error are in `buf`.
                out.incomplete_tail_bytes = buf.len() as u64;
                if !partial {
                    out.error = Some(format!("decode error after line {}: {e}", out.lines));
                }
                break;
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Tallies

/// HTTP attempts (`kind: "http"` lines).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct HttpTally {
    /// Every attempt (one line each).
    pub attempts: u64,
    /// Attempts with `attempt > 1`.
    pub retries: u64,
    /// Attempts without a reply (`status` absent: network error or timeout).
    pub network_errors: u64,
    /// Attempts without a reply or with status >= 400.
    pub errors: u64,
    /// Attempts answered 429.
    pub rate_limited_429: u64,
    /// Attempts without an answer: no reply, or an error status other than 404 (429, 403, 5xx, …).
    #[serde(default)]
    pub unanswered: u64,
    /// endpoint → status ("200", "429", … or "none") → attempts.
    pub by_endpoint_status: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Gaps (`kind: "gap"` lines).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct GapTally {
    /// `ctx.gap` type (`missing_token`, `failed_request`, `missed_slots`, … or "unknown") → lines.
    pub by_type: BTreeMap<String, u64>,
    /// Sum of `ctx.count` over `missed_slots` gaps: poll slots never started.
    pub missed_slots_total: u64,
}

/// One market's tracking history (`kind: "track"` lines).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct MarketTrack {
    pub slug: String,
    pub family: Option<String>,
    pub condition_id: Option<String>,
    pub window_start_utc: Option<String>,
    pub window_end_utc: Option<String>,
    pub starts: u64,
    pub stops: u64,
    pub first_start_at_utc: Option<String>,
    pub first_start_reason: Option<String>,
    pub last_stop_at_utc: Option<String>,
    pub last_stop_reason: Option<String>,
    /// The latest action (`start`/`stop`), when and by which run: "is it tracked now?".
    pub last_action: Option<String>,
    pub last_action_at_utc: Option<String>,
    pub last_action_run_id: Option<String>,
}

impl MarketTrack {
    fn merge(&mut self, o: &MarketTrack) {
        for (a, b) in [
            (&mut self.family, &o.family),
            (&mut self.condition_id, &o.condition_id),
            (&mut self.window_start_utc, &o.window_start_utc),
            (&mut self.window_end_utc, &o.window_end_utc),
        ] {
            if a.is_none() {
                a.clone_from(b);
            }
        }
        self.starts += o.starts;
        self.stops += o.stops;
        if o.first_start_at_utc.is_some()
            && (self.first_start_at_utc.is_none() || o.first_start_at_utc < self.first_start_at_utc)
        {
            self.first_start_at_utc.clone_from(&o.first_start_at_utc);
            self.first_start_reason.clone_from(&o.first_start_reason);
        }
        if o.last_stop_at_utc.is_some() && o.last_stop_at_utc >= self.last_stop_at_utc {
            self.last_stop_at_utc.clone_from(&o.last_stop_at_utc);
            self.last_stop_reason.clone_from(&o.last_stop_reason);
        }
        if o.last_action.is_some() && o.last_action_at_utc >= self.last_action_at_utc {
            self.last_action.clone_from(&o.last_action);
            self.last_action_at_utc.clone_from(&o.last_action_at_utc);
            self.last_action_run_id.clone_from(&o.last_action_run_id);
        }
    }
}

/// Counts over raw lines. Order-independent: the tally of a run is the merge of its files' tallies.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tally {
    /// Rows (complete lines that are JSON; unparseable lines are counted by the reader instead).
    pub rows: u64,
    /// `kind` → rows (`unknown` when absent, `malformed` for JSON that is not an envelope).
    pub rows_by_kind: BTreeMap<String, u64>,
    pub http: HttpTally,
    pub gaps: GapTally,
    /// slug → tracking history.
    pub markets: BTreeMap<String, MarketTrack>,
    /// `collector_version` → rows.
    pub collector_versions: BTreeMap<String, u64>,
    /// `tool` → rows.
    pub tools: BTreeMap<String, u64>,
    /// Websocket events by `event_type`, summed over pm-stream's `stats` lines (`ctx.ws_event_types`).
    #[serde(default)]
    pub ws_event_types: BTreeMap<String, u64>,
    pub first_collected_at_utc: Option<String>,
    pub last_collected_at_utc: Option<String>,
    /// Lines carrying successful data ([`RawLine::is_data`]) and the newest of them.
    #[serde(default)]
    pub data_rows: u64,
    #[serde(default)]
    pub last_data_at_utc: Option<String>,
}

fn bump(m: &mut BTreeMap<String, u64>, k: &str, n: u64) {
    *m.entry(k.to_string()).or_insert(0) += n;
}

impl Tally {
    /// Counts one envelope.
    pub fn add(&mut self, l: &RawLine) {
        self.rows += 1;
        let kind = l.kind.as_deref().unwrap_or("unknown");
        bump(&mut self.rows_by_kind, kind, 1);
        bump(&mut self.collector_versions, l.collector_version.as_deref().unwrap_or("unknown"), 1);
        bump(&mut self.tools, l.tool.as_deref().unwrap_or("unknown"), 1);
        min_time(&mut self.first_collected_at_utc, l.collected_at_utc.as_deref());
        max_time(&mut self.last_collected_at_utc, l.collected_at_utc.as_deref());
        if l.is_data() {
            self.data_rows += 1;
            max_time(&mut self.last_data_at_utc, l.collected_at_utc.as_deref());
        }
        if l.is_unanswered() {
            self.http.unanswered += 1;
        }
        let ctx = l.ctx.as_ref();
        match kind {
            "http" => {
                let h = &mut self.http;
                h.attempts += 1;
                if l.attempt.unwrap_or(1) > 1 {
                    h.retries += 1;
                }
                let status = match l.status {
                    None => {
                        h.network_errors += 1;
                        h.errors += 1;
                        "none".to_string()
                    }
                    Some(s) => {
                        if s >= 400 {
                            h.errors += 1;
                        }
                        if s == 429 {
                            h.rate_limited_429 += 1;
                        }
                        s.to_string()
                    }
                };
                let ep =
                    h.by_endpoint_status.entry(l.endpoint.as_deref().unwrap_or("unknown").to_string()).or_default();
                bump(ep, &status, 1);
            }
            "gap" => {
                let gap = ctx.and_then(|c| c.gap.as_deref()).unwrap_or("unknown");
                bump(&mut self.gaps.by_type, gap, 1);
                if gap == "missed_slots" {
                    self.gaps.missed_slots_total += ctx.and_then(|c| c.count).unwrap_or(0);
                }
            }
            "track" => {
                if let Some(c) = ctx {
                    self.track(l, c);
                }
            }
            "ws" => {
                for (k, n) in ctx.and_then(|c| c.ws_event_types.as_ref()).into_iter().flatten() {
                    bump(&mut self.ws_event_types, k, *n);
                }
            }
            _ => {}
        }
    }

    fn track(&mut self, l: &RawLine, c: &RawCtx) {
        let Some(slug) = c.slug.as_deref().or(c.ticker.as_deref()) else { return };
        let at = l.collected_at_utc.as_deref().map(str::to_string);
        let mut one = MarketTrack {
            slug: slug.to_string(),
            family: c.family.clone(),
            condition_id: c.condition_id.clone(),
            window_start_utc: c.window_start_utc.clone(),
            window_end_utc: c.window_end_utc.clone(),
            ..MarketTrack::default()
        };
        match c.action.as_deref() {
            Some("start") => {
                one.starts = 1;
                one.first_start_at_utc = at.clone();
                one.first_start_reason = c.reason.clone();
            }
            Some("stop") => {
                one.stops = 1;
                one.last_stop_at_utc = at.clone();
                one.last_stop_reason = c.reason.clone();
            }
            _ => {}
        }
        if let Some(a) = c.action.as_deref() {
            one.last_action = Some(a.to_string());
            one.last_action_at_utc = at;
            one.last_action_run_id = l.run_id.as_deref().map(str::to_string);
        }
        self.markets
            .entry(slug.to_string())
            .or_insert_with(|| MarketTrack { slug: slug.to_string(), ..MarketTrack::default() })
            .merge(&one);
    }

    /// Counts one line that is JSON but not an envelope.
    pub fn add_malformed(&mut self) {
        self.rows += 1;
        bump(&mut self.rows_by_kind, "malformed", 1);
    }

    /// Adds another tally's counts.
    pub fn merge(&mut self, o: &Tally) {
        self.rows += o.rows;
        for (k, n) in &o.rows_by_kind {
            bump(&mut self.rows_by_kind, k, *n);
        }
        let (h, oh) = (&mut self.http, &o.http);
        h.attempts += oh.attempts;
        h.retries += oh.retries;
        h.network_errors += oh.network_errors;
        h.errors += oh.errors;
        h.rate_limited_429 += oh.rate_limited_429;
        h.unanswered += oh.unanswered;
        for (ep, m) in &oh.by_endpoint_status {
            let e = h.by_endpoint_status.entry(ep.clone()).or_default();
            for (s, n) in m {
                bump(e, s, *n);
            }
        }
        for (k, n) in &o.gaps.by_type {
            bump(&mut self.gaps.by_type, k, *n);
        }
        self.gaps.missed_slots_total += o.gaps.missed_slots_total;
        for (slug, m) in &o.markets {
            self.markets
                .entry(slug.clone())
                .or_insert_with(|| MarketTrack { slug: slug.clone(), ..MarketTrack::default() })
                .merge(m);
        }
        for (k, n) in &o.collector_versions {
            bump(&mut self.collector_versions, k, *n);
        }
        for (k, n) in &o.tools {
            bump(&mut self.tools, k, *n);
        }
        for (k, n) in &o.ws_event_types {
            bump(&mut self.ws_event_types, k, *n);
        }
        min_time(&mut self.first_collected_at_utc, o.first_collected_at_utc.as_deref());
        max_time(&mut self.last_collected_at_utc, o.last_collected_at_utc.as_deref());
        self.data_rows += o.data_rows;
        max_time(&mut self.last_data_at_utc, o.last_data_at_utc.as_deref());
    }
}

// ---------------------------------------------------------------------------------------------
// The archive directory (the layout, walk and path rules live in crate::layout)

pub use crate::layout::{is_safe_rel_path, walk, ArchiveFile, FileKind};

// ---------------------------------------------------------------------------------------------
// The run manifest (pmarchive.manifest/1): one type, written by `manifest build`, read by
// `manifest unlisted`, `manifest offload` and (through [`load_manifests`]) verify and status.

/// Accepts `null` as the default value (hand-made or older manifests write `"sha256": null`).
fn null_default<'de, D: serde::Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One file as listed in a run manifest: what its sealed-file record said, plus what the re-hash
/// and the read-back found. (A different record from [`crate::layout::Sealed`]: `manifest build`
/// turns each sealed record into one of these.)
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FileEntry {
    #[serde(deserialize_with = "null_default")]
    pub path: String,
    pub venue: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub stream: String,
    pub host: Option<String>,
    pub run_id: Option<String>,
    pub n: Option<u64>,
    /// As sealed (from the record).
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    #[serde(deserialize_with = "null_default")]
    pub sha256: String,
    /// `ok` (re-hash matches the record), `mismatch` (sha256 or size differ) or `unreadable`.
    #[serde(deserialize_with = "null_default")]
    pub sha256_check: String,
    /// What the re-hash found, when it differs from the record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256_actual: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_actual: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_error: Option<String>,
    /// Complete lines read back from the file, and those that were not JSON.
    pub lines_read: u64,
    pub unparseable_lines: u64,
    pub first_collected_at_utc: Option<String>,
    pub last_collected_at_utc: Option<String>,
    pub opened_at_utc: Option<String>,
    pub sealed_at_utc: Option<String>,
    pub recovered: bool,
    /// Not listed by the run that sealed it (its manifest stage died); listed later by a recovery run.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
    pub tail_path: Option<String>,
    pub tail_bytes: u64,
    /// sha256 of the unreadable tail (computed by `manifest build`; the sealed record has none).
    pub tail_sha256: Option<String>,
    pub writer_version: Option<String>,
}

impl FileEntry {
    /// What this entry lists, as (path, sha256 recorded at sealing): the data file and its unreadable
    /// tail. A sha256 that is not 64 lowercase hex digits lists nothing.
    pub fn listed(&self) -> impl Iterator<Item = (&str, &str)> {
        let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let data = (!self.path.is_empty()).then_some((self.path.as_str(), self.sha256.as_str()));
        let tail = self.tail_path.as_deref().zip(self.tail_sha256.as_deref());
        data.into_iter().chain(tail).filter(move |(p, s)| !p.is_empty() && hex64(s))
    }
}

/// One problem a manifest build met (also printed on stderr as [`Problem::text`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Problem {
    /// `bad_input_line`, `sealed_twice`, `unreadable`, `sha256_mismatch`, `tail_unreadable`,
    /// `malformed_line`, `unparseable_line`, `decode_error`, `row_count_mismatch`, `input_error`.
    pub problem: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Problem {
    /// A problem about a file.
    pub fn file(problem: &str, path: &str, detail: impl Into<String>) -> Problem {
        Problem { problem: problem.into(), path: Some(path.into()), detail: Some(detail.into()), ..Problem::default() }
    }

    /// A problem about a line of the input.
    pub fn input(problem: &str, input_line: Option<u64>, detail: impl Into<String>) -> Problem {
        Problem { problem: problem.into(), input_line, detail: Some(detail.into()), ..Problem::default() }
    }

    /// One line of text (stderr).
    pub fn text(&self) -> String {
        let mut s = self.problem.clone();
        if let Some(p) = &self.path {
            s.push_str(&format!(" {p}"));
        }
        if let Some(l) = self.line {
            s.push_str(&format!(" line {l}"));
        }
        if let Some(l) = self.input_line {
            s.push_str(&format!(" (input line {l})"));
        }
        if let Some(d) = &self.detail {
            s.push_str(&format!(": {d}"));
        }
        s
    }
}

/// Totals of one stream of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamTotals {
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
    pub first_collected_at_utc: Option<String>,
    pub last_collected_at_utc: Option<String>,
}

/// One stream of a run: its totals, files and tally.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamEntry {
    pub totals: StreamTotals,
    pub files: Vec<FileEntry>,
    pub tally: Tally,
}

/// Versions seen in a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Versions {
    /// The `manifest` tool that wrote the document.
    pub manifest: String,
    /// jsonl-rotate versions (`writer_version` of the sealed records).
    pub writers: std::collections::BTreeSet<String>,
    /// `collector_version` → rows, `tool` → rows.
    pub collectors: BTreeMap<String, u64>,
    pub tools: BTreeMap<String, u64>,
}

/// Totals of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunTotals {
    pub files: u64,
    pub rows: u64,
    pub lines_read: u64,
    pub bytes: u64,
    pub unparseable_lines: u64,
    pub hash_mismatches: u64,
    pub unreadable_files: u64,
    pub input_lines: u64,
    pub bad_input_lines: u64,
    pub duplicate_records: u64,
    pub first_collected_at_utc: Option<String>,
    pub last_collected_at_utc: Option<String>,
}

/// The run's tallies over every file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunTallies {
    /// stream → kind → rows.
    pub rows_by_stream_kind: BTreeMap<String, BTreeMap<String, u64>>,
    pub http: HttpTally,
    pub gaps: GapTally,
    pub markets_tracked: u64,
    pub markets: Vec<MarketTrack>,
    pub collector_versions: BTreeMap<String, u64>,
    pub tools: BTreeMap<String, u64>,
    pub ws_event_types: BTreeMap<String, u64>,
}

/// A run manifest `ROOT/manifests/run-<host>-<run_id>.json` (pmarchive.manifest/1,
/// docs/DATA_CONTRACT.md "Run manifest"). Every field defaults when reading, so that a partial or
/// older document still yields its file list.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunManifest {
    pub schema: String,
    pub run_id: String,
    pub host: String,
    pub label: Option<String>,
    /// `running`, `complete` or `stopped`.
    pub status: String,
    pub outcome: build::Outcome,
    pub started_at_utc: String,
    pub updated_at_utc: String,
    pub finished_at_utc: Option<String>,
    pub manifest_version: u64,
    pub versions: Versions,
    pub config: Vec<build::ConfigFile>,
    pub totals: RunTotals,
    pub tallies: RunTallies,
    pub streams: BTreeMap<String, StreamEntry>,
    pub problems: Vec<Problem>,
    pub problems_dropped: u64,
}

impl RunManifest {
    /// Every file entry, stream by stream.
    pub fn files(&self) -> impl Iterator<Item = &FileEntry> {
        self.streams.values().flat_map(|s| s.files.iter())
    }
}

/// A manifest file read from `ROOT/manifests/`.
pub struct LoadedManifest {
    /// File name (`run-<host>-<run_id>.json`).
    pub name: String,
    pub doc: Result<RunManifest, String>,
}

/// Loads every `ROOT/manifests/run-*.json` (sorted by name). Unreadable or invalid ones are
/// returned with their error.
pub fn load_manifests(root: &Path) -> Vec<LoadedManifest> {
    let dir = root.join(crate::layout::MANIFESTS_DIR);
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return out,
        Err(e) => {
            out.push(LoadedManifest { name: "(directory)".into(), doc: Err(format!("cannot list manifests/: {e}")) });
            return out;
        }
    };
    for ent in rd.flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("run-") && name.ends_with(".json")) {
            continue;
        }
        let doc = std::fs::read(ent.path())
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| format!("not JSON: {e}")))
            .and_then(|v| {
                if v.get("schema").and_then(Value::as_str) == Some(MANIFEST_SCHEMA) {
                    RunManifest::deserialize(v).map_err(|e| format!("not a run manifest: {e}"))
                } else {
                    Err(format!("schema is not {MANIFEST_SCHEMA}"))
                }
            });
        out.push(LoadedManifest { name, doc });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

// ---------------------------------------------------------------------------------------------
// Upload log (pmarchive.upload/1): one type, written by `manifest offload append` (for the
// uploader script), read by verify, status and `manifest offload state`.

/// One line of `ROOT/manifests/uploads.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum UploadRecord {
    /// A file copied (or not: `skipped`) to the remote, and what its verification found.
    Upload(Upload),
    /// A local file deleted by retention after a verified remote copy (recorded before the unlink).
    LocalDelete(LocalDelete),
}

/// `record: "upload"`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Upload {
    pub schema: String,
    #[serde(default)]
    pub at_utc: Option<String>,
    pub local_path: String,
    #[serde(default)]
    pub bytes: u64,
    pub sha256: String,
    /// md5 of the local file (null on a skipped record: never hashed for the remote).
    #[serde(default)]
    pub md5: Option<String>,
    #[serde(default)]
    pub remote: String,
    #[serde(default)]
    pub remote_path: String,
    #[serde(default)]
    pub remote_md5: Option<String>,
    pub verified: bool,
    /// `md5`, `sha256`, `size`, or null (not on the remote).
    #[serde(default)]
    pub verified_by: Option<String>,
    #[serde(default)]
    pub rclone_exit: Option<i64>,
    #[serde(default)]
    pub dry_run: bool,
    /// Not uploaded because the local file cannot be trusted: `unlisted`, `manifest_mismatch`,
    /// `manifest_conflict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// With `skipped`: the sha256 its run manifest recorded at sealing (null when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// `reverify` or `retention`: a re-check of an earlier verified upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// The remote name a bad copy was renamed to before this upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined_as: Option<String>,
}

/// `record: "local_delete"`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LocalDelete {
    pub schema: String,
    #[serde(default)]
    pub at_utc: Option<String>,
    pub local_path: String,
    #[serde(default)]
    pub bytes: u64,
    pub sha256: String,
    #[serde(default)]
    pub remote: String,
    #[serde(default)]
    pub remote_path: String,
    #[serde(default)]
    pub reason: String,
}

impl UploadRecord {
    pub fn schema(&self) -> &str {
        match self {
            UploadRecord::Upload(u) => &u.schema,
            UploadRecord::LocalDelete(d) => &d.schema,
        }
    }
}

/// `ROOT/manifests/uploads.jsonl` (`pmarchive.upload/1`), dry-run records left out.
#[derive(Debug, Default)]
pub struct UploadLog {
    /// `record: "upload"` lines, in file order.
    pub uploads: Vec<Upload>,
    /// `record: "local_delete"` lines, in file order.
    pub deletes: Vec<LocalDelete>,
    pub dry_run_skipped: u64,
    /// (line number, reason) of lines that are not valid records.
    pub bad_lines: Vec<(u64, String)>,
}

/// `ROOT/manifests/uploads.jsonl`.
pub fn uploads_path(root: &Path) -> std::path::PathBuf {
    root.join(crate::layout::MANIFESTS_DIR).join("uploads.jsonl")
}

/// Reads the upload log; Ok(None) when it does not exist.
pub fn read_uploads(root: &Path) -> io::Result<Option<UploadLog>> {
    let mut r = match std::fs::File::open(uploads_path(root)) {
        Ok(f) => jsonl::LineReader::new(io::BufReader::new(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut log = UploadLog::default();
    while let Some(line) = r.next_line() {
        let n = r.line_no();
        let line = match line? {
            Ok(l) => l,
            Err(too_long) => {
                log.bad_lines.push((n, too_long.to_string()));
                continue;
            }
        };
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let rec: UploadRecord = match serde_json::from_slice(&line) {
            Ok(v) => v,
            Err(e) => {
                let why = match serde_json::from_slice::<serde::de::IgnoredAny>(&line) {
                    Ok(_) => format!("not a {UPLOAD_SCHEMA} record: {e}"),
                    Err(_) => format!("not JSON: {e}"),
                };
                log.bad_lines.push((n, why));
                continue;
            }
        };
        if rec.schema() != UPLOAD_SCHEMA {
            log.bad_lines.push((n, format!("schema is not {UPLOAD_SCHEMA}")));
            continue;
        }
        match rec {
            UploadRecord::Upload(u) if u.dry_run => log.dry_run_skipped += 1,
            UploadRecord::Upload(u) => log.uploads.push(u),
            UploadRecord::LocalDelete(d) => log.deletes.push(d),
        }
    }
    Ok(Some(log))
}

impl UploadLog {
    /// True when `path` (relative to the root) with this sha256 was uploaded and verified, and then
    /// deleted locally on purpose: its absence is an offload, not a loss.
    pub fn offloaded(&self, path: &str, sha256: &str) -> bool {
        self.deletes.iter().any(|d| d.local_path == path && d.sha256 == sha256)
            && self.uploads.iter().any(|u| u.local_path == path && u.sha256 == sha256 && u.verified)
    }
}

/// Human-readable byte count (binary units).
pub fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_times() {
        assert_eq!(canonical_time("2026-11-24T16:01:33.123456Z").unwrap(), "2026-11-24T16:01:33.123456Z");
        assert_eq!(canonical_time("2026-11-24T16:01:33Z").unwrap(), "2026-11-24T16:01:33.000000Z");
        assert_eq!(canonical_time("2026-11-24T17:01:33.5+01:00").unwrap(), "2026-11-24T16:01:33.500000Z");
        assert!(canonical_time("yesterday").is_none());
    }

    #[test]
    fn data_lines_are_replies_with_books_or_records_and_ws_book_frames() {
        let data = |l: &str| match parse_line(l.as_bytes()) {
            Parsed::Line(p) => p.is_data(),
            _ => panic!("{l}"),
        };
        assert!(data(
            r#"{"kind":"http","endpoint":"books","status":200,"body":[{"asset_id":"1","bids":[],"asks":[]}]}"#
        ));
        assert!(!data(r#"{"kind":"http","endpoint":"books","status":200,"body":[]}"#));
        assert!(!data(r#"{"kind":"http","endpoint":"books","status":200,"body":{"error":"Too Many Requests"}}"#));
        assert!(!data(r#"{"kind":"http","endpoint":"books","status":503,"body":[{"bids":[]}]}"#));
        assert!(!data(r#"{"kind":"http","endpoint":"books","status":200,"body_kind":"text","body_text":"<html>"}"#));
        assert!(data(r#"{"kind":"http","endpoint":"gamma","status":200,"body":{"slug":"s","clobTokenIds":"[]"}}"#));
        assert!(!data(r#"{"kind":"http","endpoint":"gamma","status":404,"body":{"error":"not found"}}"#));
        assert!(data(r#"{"kind":"ws","ctx":{"event":"frame"},"body":[{"event_type":"book","bids":[]}]}"#));
        assert!(data(
            r#"{"kind":"ws","ctx":{"event":"frame"},"body":{"event_type":"price_change","price_changes":[]}}"#
        ));
        assert!(!data(r#"{"kind":"ws","ctx":{"event":"frame"},"body_kind":"text","body_text":"PONG"}"#));
        assert!(!data(r#"{"kind":"ws","ctx":{"event":"open"}}"#));
        assert!(!data(r#"{"kind":"gap","ctx":{"gap":"failed_request"}}"#));
        assert!(data(r#"{"record":"market","schema":"pmarchive.market/1","slug":"s","status":"open"}"#));
        // As pm-markets writes them: keys in alphabetical order, the schema far from the start.
        let long = format!(
            r#"{{"accepting_orders":true,"a":"{}","schema":"pmarchive.market/1","status":"open"}}"#,
            "x".repeat(300)
        );
        assert!(data(&long));
        assert!(data(r#"{"record":"resolution","schema":"pmarchive.resolution/1","slug":"s"}"#));
    }

    /// The writer's envelope reads back through the one reader type, escapes and all.
    #[test]
    fn envelopes_read_back_through_the_reader_type() {
        use crate::envelope::{Body, Envelope, RunInfo};
        let run =
            RunInfo { venue: "polymarket", tool: "pm-books", version: "0.1.0", run_id: "r1".into(), host: "h".into() };
        let mut e = Envelope::new(&run, 7, "http")
            .with_body(Body::from_bytes(br#"[{"asset_id":"1","bids":[],"asks":[]}]"#.to_vec()))
            .with_ctx(serde_json::json!({"slot": 3, "slug": "s\"q"}))
            .with_error("a \"quoted\" error");
        e.endpoint = Some("books");
        e.status = Some(200);
        let line = e.to_line();
        let Parsed::Line(l) = parse_line(line.strip_suffix(b"\n").unwrap_or(&line)) else { panic!() };
        assert_eq!(
            (l.tool.as_deref(), l.run_id.as_deref(), l.seq, l.kind.as_deref()),
            (Some("pm-books"), Some("r1"), Some(7), Some("http"))
        );
        assert_eq!(l.error.as_deref(), Some("a \"quoted\" error"));
        assert_eq!(l.ctx.as_ref().and_then(|c| c.slug.as_deref()), Some("s\"q"));
        assert_eq!(l.body, Some(BodyPeek { items: 1, books: 1 }));
        assert!(l.is_data());
        assert_eq!(l.collected_at_utc.as_deref(), Some(e.collected_at_utc.as_str()));
    }

    #[test]
    fn tally_counts_and_merges_order_independently() {
        let lines = [
            r#"{"kind":"http","endpoint":"books","status":200,"attempt":1,"tool":"pm-books","collector_version":"0.1.0","collected_at_utc":"2026-01-01T00:00:01.000000Z"}"#,
            r#"{"kind":"http","endpoint":"books","status":429,"attempt":2,"collected_at_utc":"2026-01-01T00:00:02.000000Z"}"#,
            r#"{"kind":"http","endpoint":"books","attempt":3,"error":"reset"}"#,
            r#"{"kind":"gap","ctx":{"gap":"missed_slots","count":3}}"#,
            r#"{"kind":"track","run_id":"r","collected_at_utc":"2026-01-01T00:00:00.000000Z","ctx":{"action":"start","reason":"new","slug":"s1","family":"5m"}}"#,
            r#"{"kind":"track","run_id":"r","collected_at_utc":"2026-01-01T00:05:00.000000Z","ctx":{"action":"stop","reason":"expired","slug":"s1"}}"#,
        ];
        let mut all = Tally::default();
        let mut a = Tally::default();
        let mut b = Tally::default();
        for (i, l) in lines.iter().enumerate() {
            let Parsed::Line(p) = parse_line(l.as_bytes()) else { panic!("{l}") };
            all.add(&p);
            if i % 2 == 0 {
                a.add(&p)
            } else {
                b.add(&p)
            }
        }
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ba, all);
        assert_eq!(all.http.attempts, 3);
        assert_eq!(all.http.retries, 2);
        assert_eq!(all.http.network_errors, 1);
        assert_eq!(all.http.errors, 2);
        assert_eq!(all.http.rate_limited_429, 1);
        assert_eq!(all.http.by_endpoint_status["books"]["none"], 1);
        assert_eq!(all.gaps.missed_slots_total, 3);
        let m = &all.markets["s1"];
        assert_eq!((m.starts, m.stops), (1, 1));
        assert_eq!(m.last_action.as_deref(), Some("stop"));
        assert_eq!(m.family.as_deref(), Some("5m"));
        assert!(matches!(parse_line(b"[1,2]"), Parsed::Malformed(_)));
        assert!(matches!(parse_line(b"{\"kind\":"), Parsed::Unparseable(_)));
    }
}
