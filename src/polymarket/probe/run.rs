//! The prober: resolves the market on Gamma, then asks each CLOB endpoint once (at most
//! `max_attempts` tries), within the request cap and the spacing, recording one [`EndpointResult`]
//! per endpoint and, on request, every attempt's raw envelope. [`Prober::run`] returns the [`Report`].

use std::io::{self, Write};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::report::{AttemptSummary, EndpointResult, MarketNotes, Notes, Observed, Outcome, Report};
use super::shape::{book_notes, books_notes, describe, find_times, Shape};
use super::{run_kind, Config, UNKNOWN_TOKEN_ID};
use crate::envelope::Sequencer;
use crate::http::{Attempt, Client, Request, Verdict};
use crate::jsonl::LineWriter;
use crate::polymarket::market::{self, Family, Market};
use crate::{clock, signal, util};

/// The `ctx` of pm-probe's http lines (with the client's retry fields, [`crate::http::HttpCtx`]): the
/// probe's name (`gamma_market`, `clob_book`, …, the report's `endpoints[].name`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeCtx {
    pub probe: String,
}

/// An endpoint's result before it is probed (`not_probed`, nothing observed).
fn new_result(name: &str, family: &str, purpose: &str, req: &Request) -> EndpointResult {
    EndpointResult {
        name: name.into(),
        family: family.into(),
        purpose: purpose.into(),
        method: req.method.as_str().into(),
        url: req.full_url(),
        request_body: req.body.clone(),
        outcome: Outcome::NotProbed,
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
        notes: None,
    }
}

fn parsed_body(last: &Attempt) -> Option<Value> {
    last.json_text().and_then(|t| serde_json::from_str(t).ok())
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
        let mut r = new_result(name, req.family, purpose, &req);
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
        let ctx = ProbeCtx { probe: name.to_string() };
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
                Some(w) => w.write_raw(&a.envelope(seq, &req, Some(&ctx)).to_line()),
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
            Outcome::Answered
        } else if r.attempts.is_empty() {
            Outcome::NotProbed
        } else {
            Outcome::NoReply
        };
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
            let parsed = parsed_body(&last);
            match (&last.verdict, parsed) {
                (Verdict::Ok, Some(v)) => match market::parse_gamma_market(&v, &url, last.received_at) {
                    Ok(m) => {
                        self.results[i].notes = Some(Notes::Market(MarketNotes::of(&m)));
                        return Ok((tried, Some(m), None));
                    }
                    Err(e) => {
                        self.results[i].notes = Some(Notes::ParseError { parse_error: e.clone() });
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
        let get = |fam: &'static str, path: &str| Request::get(fam, format!("{clob}{path}"));
        for (name, purpose, req) in token_requests(&clob, &tokens) {
            if tokens.is_empty() {
                let r = new_result(name, req.family, purpose, &req);
                self.skip(r, "no token id resolved from Gamma");
                continue;
            }
            let (i, last) = self.probe(name, purpose, req)?;
            if let Some(v) = last.as_ref().and_then(parsed_body) {
                match name {
                    "clob_book" if v.is_object() => self.results[i].notes = Some(Notes::Book(book_notes(&v))),
                    "clob_books" => {
                        self.results[i].notes = Some(match books_notes(&tokens, &v) {
                            Ok(b) => Notes::Books(b),
                            Err(error) => Notes::Error { error },
                        })
                    }
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
        Ok(Report::new(Observed {
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
        }))
    }
}

/// The CLOB requests about the market's tokens: `/book` and the single-token endpoints ask about the
/// first token (the first outcome), `/books` about all of them.
fn token_requests(clob: &str, tokens: &[String]) -> Vec<(&'static str, &'static str, Request)> {
    let t = tokens.first().cloned().unwrap_or_default();
    let get = |fam: &'static str, path: &str| Request::get(fam, format!("{clob}{path}"));
    vec![
        (
            "clob_book",
            "current order book of one token (the first outcome)",
            get("book", "/book").query("token_id", &t),
        ),
        ("clob_books", "batch order books of both tokens", Request::post_books(format!("{clob}/books"), tokens)),
        ("clob_price_buy", "best price, side=BUY", get("price", "/price").query("token_id", &t).query("side", "BUY")),
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
}
