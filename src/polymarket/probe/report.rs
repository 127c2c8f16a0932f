//! The probe's typed result. [`Observed`] is what the prober saw; [`Report`] is the document written
//! as `polymarket_public_sources_probe_v1.json` (Serialize + Deserialize), with every derived value
//! (completeness, the checkpoint-2 pass condition, the answers) computed once in [`Report::new`].
//! The renderers ([`super::render_json`], [`super::render_md`]) read its fields, nothing else.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::shape::{BookNotes, BooksNotes, Shape, TimeSeen};
use super::{render_json, render_md, RunKind, LOOPBACK_BANNER, PROBE_NAME, PROBE_VERSION};
use crate::polymarket::market::{Market, Token};
use crate::util;

/// One try of a request, as the report shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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

/// What became of one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A reply arrived, whatever its status.
    Answered,
    /// Network error or timeout on the last try.
    NoReply,
    /// Cap reached, interrupted, or no token id to ask about.
    NotProbed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::NoReply => "no_reply",
            Outcome::NotProbed => "not_probed",
        }
    }
}

/// The Gamma market a slug resolved to (`notes` of the `gamma_market_slug*` endpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarketNotes {
    pub slug: String,
    pub condition_id: String,
    pub tokens: Vec<Token>,
    pub window_start_utc: String,
    pub window_end_utc: String,
    pub status: String,
    pub active: Option<bool>,
    pub closed: Option<bool>,
    pub accepting_orders: Option<bool>,
    pub enable_order_book: Option<bool>,
}

impl MarketNotes {
    pub fn of(m: &Market) -> MarketNotes {
        MarketNotes {
            slug: m.slug.clone(),
            condition_id: m.condition_id.clone(),
            tokens: m.tokens.clone(),
            window_start_utc: m.window_start_utc.clone(),
            window_end_utc: m.window_end_utc.clone(),
            status: m.status.clone(),
            active: m.active,
            closed: m.closed,
            accepting_orders: m.accepting_orders,
            enable_order_book: m.enable_order_book,
        }
    }
}

/// Endpoint-specific observations (`notes`), one shape per endpoint kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Notes {
    /// `clob_books`: ids asked for vs returned, and each book's notes.
    Books(BooksNotes),
    /// `clob_book`: level counts and order, hash form.
    Book(BookNotes),
    /// Gamma: the market the slug resolved to.
    Market(MarketNotes),
    /// Gamma: the record could not be used.
    ParseError { parse_error: String },
    /// `clob_books`: the reply was not an array.
    Error { error: String },
}

/// Everything recorded about one endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointResult {
    /// Stable id (`gamma_market_slug_current`, `clob_book`, …).
    pub name: String,
    /// Endpoint family of the HTTP client and the raw envelope.
    pub family: String,
    pub purpose: String,
    pub method: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    /// `answered` (a reply arrived, whatever its status), `no_reply` (network error/timeout on the
    /// last try), `not_probed` (cap reached, interrupted, or no token id to ask about).
    pub outcome: Outcome,
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
    pub ratelimit_headers: BTreeMap<String, String>,
    /// `Retry-After` values seen, one per try that carried one.
    pub retry_after: Vec<String>,
    /// `Date` header of the last reply.
    pub date_header: Option<String>,
    pub error: Option<String>,
    /// True when the request cap cut the retries of this request short.
    pub cap_limited: bool,
    pub attempts: Vec<AttemptSummary>,
    /// Endpoint-specific observations (book level counts and order, /books request-vs-reply ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<Notes>,
}

impl EndpointResult {
    pub fn answered(&self) -> bool {
        self.outcome == Outcome::Answered
    }
}

/// What one probe run observed: the facts a [`Report`] is derived from.
#[derive(Debug)]
pub struct Observed {
    pub run_id: String,
    pub host: String,
    pub run_kind: RunKind,
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

impl Observed {
    /// Every endpoint answered (any status) and none was left out.
    pub fn complete(&self) -> bool {
        self.endpoints.iter().all(EndpointResult::answered) && !self.cap_reached && !self.interrupted
    }

    /// Why the probe is incomplete, in one line (None when complete).
    pub fn stopped_reason(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.cap_reached {
            let left = self.endpoints.iter().filter(|e| e.outcome == Outcome::NotProbed).count();
            parts.push(format!(
                "request cap reached: {} of {} requests used before all endpoints were probed ({left} endpoint(s) not probed)",
                self.requests_used, self.max_requests
            ));
        }
        if self.interrupted {
            parts.push("interrupted by a signal".into());
        }
        let unreached: Vec<&str> =
            self.endpoints.iter().filter(|e| e.outcome == Outcome::NoReply).map(|e| e.name.as_str()).collect();
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
        let ok = |name: &str| self.ep(name).filter(|e| e.status == Some(200)).and_then(|e| e.notes.as_ref());
        let book = matches!(ok("clob_book"), Some(Notes::Book(_)))
            || matches!(ok("clob_books"), Some(Notes::Books(b)) if !b.books.is_empty());
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
        vec![
            ("How to discover active Polymarket markets?", self.discovery_answer()),
            ("How to filter BTC up/down markets?", self.filter_answer()),
            ("How to resolve conditionId and token IDs?", self.ids_answer()),
            ("How to fetch the current order book for one token?", self.book_answer()),
            ("Is there a batch order-book endpoint?", self.books_answer()),
            (
                "Is there a market websocket for order-book updates?",
                "Not probed by this tool (REST only). The market channel `wss://ws-subscriptions-clob.polymarket.com/ws/market` and its event types are documented in the API fact sheet (polymarket_api_facts.md §6); pm-stream records it.".into(),
            ),
            ("Is there a trade websocket or recent-trades endpoint?", self.trades_answer()),
            ("What rate limits are documented or observed?", self.rate_limit_answer()),
            (
                "What fields are returned?",
                "See the per-endpoint field lists below (wire order, with JSON types; `string(decimal)` = a number sent as a string, `string(json)` = JSON inside a string).".into(),
            ),
            ("What timestamps exist?", self.timestamps_answer()),
        ]
    }

    fn discovery_answer(&self) -> String {
        let gamma = self.endpoints.iter().rfind(|e| e.family == "gamma" && e.answered());
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
        )
    }

    fn filter_answer(&self) -> String {
        match &self.market {
            Some(m) => format!(
                "By slug family: `btc-updown-5m-<window start unix s>` (also 15m/4h, hourly/daily ET-dated slugs; see market::Family). This run: `{}` → family {}, question {:?}.",
                m.slug,
                m.family.map(|f| f.name()).unwrap_or("unknown"),
                m.question.clone().unwrap_or_default()
            ),
            None => "By slug family (`btc-updown-5m-<window start unix s>` etc.); no market record was obtained in this run.".into(),
        }
    }

    fn ids_answer(&self) -> String {
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
        }
    }

    fn book_answer(&self) -> String {
        match self.ep("clob_book") {
            Some(e) => format!(
                "`GET {}/book?token_id=<id>`: {}, {} ms, {} bytes; {}.",
                self.clob_url,
                Self::status_text(Some(e)),
                e.latency_ms.unwrap_or(0.0),
                e.body_bytes.unwrap_or(0),
                notes_line(e.notes.as_ref())
            ),
            None => format!("`GET {}/book?token_id=<id>`: not answered in this run.", self.clob_url),
        }
    }

    fn books_answer(&self) -> String {
        let Some(e) = self.ep("clob_books") else {
            return format!("`POST {}/books` exists (facts §4.2) but was not answered in this run.", self.clob_url);
        };
        let (order, missing) = match &e.notes {
            Some(Notes::Books(b)) => (b.reply_order.as_str(), b.missing.len()),
            _ => ("n/a", 0),
        };
        format!(
            "Yes: `POST {}/books` with body `[{{\"token_id\":\"…\"}},…]` (≤ 500 per facts §4.2): {}, {} ms; reply order: {order}; missing ids: {missing}.",
            self.clob_url,
            Self::status_text(Some(e)),
            e.latency_ms.unwrap_or(0.0),
        )
    }

    fn trades_answer(&self) -> String {
        match self.ep("clob_last_trade_price") {
            Some(e) => format!(
                "Only `GET /last-trade-price` was probed: {}, fields {}. Trade prints on the websocket (`last_trade_price` events, facts §6.2) and the Data API `/trades` were not probed.",
                Self::status_text(Some(e)),
                field_list(e, 10)
            ),
            None => "Only `GET /last-trade-price` is in scope, and it was not answered in this run; websocket trade prints (facts §6.2) and the Data API were not probed.".into(),
        }
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
}

/// The base URLs the run used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaseUrls {
    pub gamma: String,
    pub clob: String,
}

/// The request budget and how much of it was used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Requests {
    pub used: u32,
    pub cap: u32,
    pub cap_reached: bool,
    pub min_spacing_s: f64,
    pub max_attempts_per_request: u32,
}

/// The roadmap's checkpoint-2 pass condition as this run shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PassCondition {
    pub met_in_this_run: bool,
    /// Only a live run counts.
    pub counts_as_evidence: bool,
    pub condition: String,
}

/// What pm-probe leaves out by design.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NotProbedByDesign {
    pub websocket: String,
    pub trades: String,
}

/// One checkpoint-2 question with this run's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub question: String,
    pub answer: String,
}

/// The report (`polymarket_public_sources_probe_v1.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`PROBE_NAME`].
    pub probe: String,
    /// [`PROBE_VERSION`].
    pub probe_version: u32,
    pub tool: String,
    pub collector_version: String,
    pub run_id: String,
    pub host: String,
    pub run_kind: RunKind,
    pub run_kind_note: String,
    pub started_at_utc: String,
    pub finished_at_utc: String,
    pub base_urls: BaseUrls,
    pub user_agent: String,
    pub slug_given: bool,
    pub slugs_tried: Vec<String>,
    pub market: Option<Market>,
    pub market_error: Option<String>,
    pub requests: Requests,
    /// Every endpoint answered (any status) and none was left out.
    pub complete: bool,
    pub checkpoint2_pass_condition: PassCondition,
    /// Why the probe is incomplete, in one line (null when complete).
    pub stopped_reason: Option<String>,
    /// 0 when complete, 1 otherwise.
    pub exit_code: i32,
    pub endpoints: Vec<EndpointResult>,
    pub not_probed_by_design: NotProbedByDesign,
    pub answers: Vec<Answer>,
}

impl Report {
    /// The report of what a run observed, every derived value computed here once.
    pub fn new(o: Observed) -> Report {
        let answers = o.answers().into_iter().map(|(q, a)| Answer { question: q.into(), answer: a }).collect();
        Report {
            probe: PROBE_NAME.into(),
            probe_version: PROBE_VERSION,
            tool: "pm-probe".into(),
            collector_version: crate::VERSION.into(),
            run_kind_note: match o.run_kind {
                RunKind::Loopback => LOOPBACK_BANNER,
                RunKind::Live => "live: base URLs are not loopback addresses",
            }
            .into(),
            base_urls: BaseUrls { gamma: o.gamma_url.clone(), clob: o.clob_url.clone() },
            requests: Requests {
                used: o.requests_used,
                cap: o.max_requests,
                cap_reached: o.cap_reached,
                min_spacing_s: o.min_spacing_s,
                max_attempts_per_request: o.max_attempts,
            },
            complete: o.complete(),
            checkpoint2_pass_condition: PassCondition {
                met_in_this_run: o.pass_condition_met(),
                counts_as_evidence: o.run_kind == RunKind::Live,
                condition: "one active market metadata record and one current order book fetched".into(),
            },
            stopped_reason: o.stopped_reason(),
            exit_code: o.exit_code(),
            not_probed_by_design: NotProbedByDesign {
                websocket: "wss://ws-subscriptions-clob.polymarket.com/ws/market is not probed by pm-probe (REST only); see the API fact sheet §6".into(),
                trades: "only GET /last-trade-price; Data API /trades and websocket last_trade_price events are not probed".into(),
            },
            answers,
            run_id: o.run_id,
            host: o.host,
            run_kind: o.run_kind,
            started_at_utc: o.started_at_utc,
            finished_at_utc: o.finished_at_utc,
            user_agent: o.user_agent,
            slug_given: o.slug_given,
            slugs_tried: o.slugs_tried,
            market: o.market,
            market_error: o.market_error,
            endpoints: o.endpoints,
        }
    }

    /// Writes `<dir>/polymarket_public_sources_probe_v1.{json,md}` atomically; returns both paths.
    pub fn write(&self, dir: &Path) -> io::Result<(PathBuf, PathBuf)> {
        let jp = dir.join(format!("{PROBE_NAME}.json"));
        let mp = dir.join(format!("{PROBE_NAME}.md"));
        util::write_atomic(&jp, &render_json::render(self)?)?;
        util::write_atomic(&mp, render_md::render(self).as_bytes())?;
        Ok((jp, mp))
    }

    /// One line for stderr.
    pub fn summary(&self) -> String {
        let answered = self.endpoints.iter().filter(|e| e.answered()).count();
        format!(
            "run_kind={}, {} of {} requests, {}/{} endpoints answered{}",
            self.run_kind.as_str(),
            self.requests.used,
            self.requests.cap,
            answered,
            self.endpoints.len(),
            self.stopped_reason.as_deref().map(|r| format!("; incomplete: {r}")).unwrap_or_default()
        )
    }
}

/// `s` cut to `n` characters (with `…` when cut).
pub(crate) fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// `a, b, c (+N more)` from an endpoint's fields.
pub(crate) fn field_list(e: &EndpointResult, n: usize) -> String {
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

fn notes_line(notes: Option<&Notes>) -> String {
    let Some(Notes::Book(b)) = notes else { return "no book object".into() };
    format!(
        "{} bid levels ({}), {} ask levels ({}), 40-hex hash: {}",
        b.bid_levels, b.bids_order, b.ask_levels, b.asks_order, b.hash_is_40_hex
    )
}
