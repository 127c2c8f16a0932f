//! The HTTP client every tool uses (ureq, blocking): a descriptive User-Agent, connect and call
//! timeouts, a client-side rate limiter per endpoint family, and retries with exponential backoff and
//! jitter on network errors, 5xx, 429 (honouring `Retry-After`), 425 ("service not ready", seen
//! around the 5-minute windows, docs/VENUE_FACTS_2026.md) and unusable 200 replies. Never a
//! tight loop: every retry waits at least `backoff_base` (jittered), the limiter spaces requests, and
//! the backoff outlives a request: after a request gave up, the family's next request waits until the
//! backoff (grown over the failures in a row, at least `Retry-After`) has passed — or, when the caller's
//! deadline comes first, is not sent at all (pm-books records such slots as `backoff` gaps).
//!
//! Every attempt — successful, failed, retried — is handed to the caller so that it becomes one raw
//! envelope: nothing the venue said, and no failure to reach it, goes unrecorded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;

use crate::clock;
use crate::envelope::{Body, Envelope, ReplyHeaders, RequestInfo, Sequencer};
use crate::signal;
use crate::util;

/// The User-Agent sent by default. Cloudflare answers 403 to some default agents (facts §1).
pub const DEFAULT_USER_AGENT: &str =
    concat!("pm-archive/", env!("CARGO_PKG_VERSION"), " (public market-data archiver; read-only; no trading)");

pub const DEFAULT_GAMMA_URL: &str = "https://gamma-api.polymarket.com";
pub const DEFAULT_CLOB_URL: &str = "https://clob.polymarket.com";

/// The largest reply body read (64 MiB); a longer reply is recorded as a gap naming this limit
/// (`error: "body: reply larger than the 67108864-byte limit …"`), never embedded.
pub const MAX_BODY: u64 = 64 << 20;

/// Requests per second we allow ourselves per endpoint family. Documented limits (facts §5, per 10 s):
/// Gamma /markets 300, CLOB /books 500, /book 1 500, /price & /midpoint 1 500, tick size 200.
/// Our budget is ≤ 20 % of each (and /books at 5/s covers 2 500 tokens a second).
pub fn family_rate(family: &str) -> f64 {
    match family {
        "gamma" => 5.0,
        "books" => 5.0,
        "book" => 15.0,
        "price" | "midpoint" | "spread" | "last-trade-price" => 10.0,
        "tick-size" => 2.0,
        "time" => 2.0,
        // Data API `/v2/trades`: documented 200 / 10 s; 4/s is 20 % of it (docs/TRADES.md).
        "trades" => 4.0,
        // Kalshi: the basic tier allows about 20 reads/s per account or IP, shared by every endpoint
        // (docs/KALSHI_FACTS.md §5). The three tools together stay at ≤ 11/s: 55 % of it.
        "kalshi-books" => 8.0,
        "kalshi-trades" => 2.0,
        "kalshi-markets" => 1.0,
        _ => 5.0,
    }
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub user_agent: String,
    pub connect_timeout: Duration,
    /// Whole request (connect, send, headers, body).
    pub call_timeout: Duration,
    /// Tries per request, the first included.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The longest `Retry-After` we honour; longer values are capped (and the cap is logged in ctx).
    pub retry_after_max: Duration,
    /// Multiplies every family rate (e.g. 0.5 = half as fast). Tests raise it.
    pub rate_scale: f64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            user_agent: DEFAULT_USER_AGENT.to_string(),
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(15),
            max_attempts: 4,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(120),
            rate_scale: 1.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// One logical request.
#[derive(Clone, Debug)]
pub struct Request {
    /// Endpoint family for the rate limiter and the envelope (`gamma`, `books`, `book`, …).
    pub family: &'static str,
    pub method: Method,
    /// URL without the query string.
    pub url: String,
    pub query: Vec<(String, String)>,
    /// JSON body (POST).
    pub body: Option<String>,
}

impl Request {
    pub fn get(family: &'static str, url: impl Into<String>) -> Request {
        Request { family, method: Method::Get, url: url.into(), query: Vec::new(), body: None }
    }

    pub fn post_json(family: &'static str, url: impl Into<String>, body: String) -> Request {
        Request { family, method: Method::Post, url: url.into(), query: Vec::new(), body: Some(body) }
    }

    /// `POST <url>` with the `/books` body `[{"token_id": "…"}, …]` (pm-books' polls, pm-stream's snapshots).
    pub fn post_books(url: impl Into<String>, token_ids: &[impl AsRef<str>]) -> Request {
        #[derive(Serialize)]
        struct Param<'a> {
            token_id: &'a str,
        }
        let params: Vec<Param> = token_ids.iter().map(|t| Param { token_id: t.as_ref() }).collect();
        Request::post_json("books", url, serde_json::to_string(&params).expect("serializes"))
    }

    pub fn query(mut self, k: &str, v: &str) -> Request {
        self.query.push((k.to_string(), v.to_string()));
        self
    }

    /// The URL as sent, query percent-encoded.
    pub fn full_url(&self) -> String {
        if self.query.is_empty() {
            return self.url.clone();
        }
        let q: Vec<String> = self
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", util::percent_encode(k), util::percent_encode(v)))
            .collect();
        format!("{}?{}", self.url, q.join("&"))
    }

    pub fn info(&self) -> RequestInfo {
        let params = self.query.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        RequestInfo {
            method: self.method.as_str(),
            url: self.full_url(),
            params,
            body: self.body.as_ref().and_then(|b| RawValue::from_string(b.clone()).ok()),
        }
    }
}

/// What an attempt means for the caller.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// 2xx with a usable JSON body.
    Ok,
    /// Worth retrying (network error, 5xx, 429, 425, unusable 200).
    Retry(String),
    /// A definitive answer that is not a success (4xx other than 425 and 429).
    Final(String),
}

/// One try of a request, with everything that becomes the envelope.
#[derive(Debug)]
pub struct Attempt {
    pub attempt: u32,
    pub sent_at: OffsetDateTime,
    pub received_at: OffsetDateTime,
    pub elapsed: Duration,
    pub status: Option<u16>,
    pub headers: ReplyHeaders,
    pub body: Option<Body>,
    /// Network/timeout/body-read error.
    pub error: Option<String>,
    pub verdict: Verdict,
    /// Set on the last attempt when retries stopped (attempts exhausted, deadline, shutdown).
    pub gave_up: Option<String>,
    /// Seconds we waited before this attempt because of backoff/Retry-After (0 for the first).
    pub waited_before: f64,
}

impl Attempt {
    /// A try started at `sent_at`, nothing known yet.
    fn blank(attempt: u32, sent_at: OffsetDateTime, waited_before: f64) -> Attempt {
        Attempt {
            attempt,
            sent_at,
            received_at: sent_at,
            elapsed: Duration::ZERO,
            status: None,
            headers: ReplyHeaders::default(),
            body: None,
            error: None,
            verdict: Verdict::Ok,
            gave_up: None,
            waited_before,
        }
    }

    /// A try that was not sent (backing off past the deadline, shutdown): recorded like any other,
    /// `error: "not sent: <why>"`.
    fn not_sent(attempt: u32, waited_before: f64, gave_up: &str, why: String) -> Attempt {
        Attempt {
            error: Some(format!("not sent: {why}")),
            verdict: Verdict::Retry("not sent".into()),
            gave_up: Some(gave_up.into()),
            ..Attempt::blank(attempt, clock::now(), waited_before)
        }
    }

    pub fn is_ok(&self) -> bool {
        self.verdict == Verdict::Ok
    }

    /// The body text when it is JSON (embedded or kept as text).
    pub fn json_text(&self) -> Option<&str> {
        match &self.body {
            Some(b) if b.kind == "json" || b.kind == "json_text" => b.as_str(),
            _ => None,
        }
    }

    /// The raw envelope of this attempt. `ctx` is the caller's context (a type with named fields:
    /// slot, tokens, slug…), written with the client's [`RetryCtx`] as one [`HttpCtx`].
    pub fn envelope<C: Serialize>(&self, seq: &mut Sequencer, req: &Request, ctx: Option<C>) -> Envelope {
        let mut env = seq.envelope("http");
        env.endpoint = Some(req.family);
        env.sent_at_utc = Some(clock::fmt_micros(self.sent_at));
        env.collected_at_utc = clock::fmt_micros(self.received_at);
        env.elapsed_ms = Some((self.elapsed.as_secs_f64() * 1e6).round() / 1e3);
        env.attempt = Some(self.attempt);
        env.request = Some(req.info());
        env.status = self.status;
        if self.status.is_some() {
            env.headers = Some(self.headers.clone());
        }
        if let Some(b) = &self.body {
            env = env.with_body(b.clone());
        }
        let mut error = self.error.clone();
        if let Some(g) = &self.gave_up {
            let reason = match &self.verdict {
                Verdict::Retry(r) | Verdict::Final(r) => format!("{r}; gave up: {g}"),
                Verdict::Ok => format!("gave up: {g}"),
            };
            error = Some(match error {
                Some(e) => format!("{e}; {reason}"),
                None => reason,
            });
        }
        env.error = error;
        let retry = RetryCtx {
            retryable: match &self.verdict {
                Verdict::Retry(r) => Some(r.clone()),
                _ => None,
            },
            final_: match &self.verdict {
                Verdict::Final(r) => Some(r.clone()),
                _ => None,
            },
            waited_before_s: (self.waited_before > 0.0).then(|| (self.waited_before * 1000.0).round() / 1000.0),
        };
        let ctx = serde_json::to_value(HttpCtx { caller: ctx, retry }).expect("an http ctx is a JSON object");
        if ctx.as_object().is_some_and(|o| !o.is_empty()) {
            env.ctx = Some(ctx);
        }
        env
    }
}

/// The `ctx` of an http line: the caller's fields (pm-books' [`crate::polymarket::books::PollCtx`], pm-stream's
/// [`crate::polymarket::stream::SnapshotCtx`], pm-markets' and pm-probe's) and the client's [`RetryCtx`], in
/// one object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpCtx<C> {
    #[serde(flatten)]
    pub caller: Option<C>,
    #[serde(flatten)]
    pub retry: RetryCtx,
}

/// What the client adds to the `ctx` of an http line about the try.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RetryCtx {
    /// A failed try worth retrying, and why (`429`, `network`, `425 service not ready`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<String>,
    /// A definitive failure (a 4xx other than 425 and 429): the status.
    #[serde(rename = "final", default, skip_serializing_if = "Option::is_none")]
    pub final_: Option<String>,
    /// Seconds waited (backoff, `Retry-After`) before this try; absent for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_before_s: Option<f64>,
}

/// Spaces request starts per family (a minimum interval = 1 / rate).
#[derive(Debug, Default)]
struct Limiter {
    next: Mutex<HashMap<&'static str, Instant>>,
}

impl Limiter {
    /// Blocks until the family may send; returns false when a stop was requested (before or meanwhile).
    fn acquire(&self, family: &'static str, rate: f64) -> bool {
        if signal::stop_requested() {
            return false;
        }
        let wait = {
            let mut next = self.next.lock().unwrap();
            let now = Instant::now();
            let slot = next.get(family).copied().unwrap_or(now).max(now);
            next.insert(family, slot + Duration::from_secs_f64(1.0 / rate));
            slot - now
        };
        wait.is_zero() || signal::sleep(wait)
    }
}

pub struct Client {
    agent: ureq::Agent,
    pub cfg: HttpConfig,
    limiter: Limiter,
    /// Per family: the backoff that outlives one request (see [`Client::backoff_until`]).
    backoff: Mutex<HashMap<&'static str, Backoff>>,
}

/// A family's failures in a row (across requests) and when it may send again.
#[derive(Clone, Debug, Default)]
struct Backoff {
    failures: u32,
    not_before: Option<Instant>,
    reason: String,
}

impl Client {
    pub fn new(cfg: HttpConfig) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(cfg.user_agent.as_str())
            .timeout_connect(Some(cfg.connect_timeout))
            .timeout_global(Some(cfg.call_timeout))
            .max_redirects(3)
            .build()
            .into();
        Client { agent, cfg, limiter: Limiter::default(), backoff: Mutex::new(HashMap::new()) }
    }

    /// Performs one try (after the rate limiter).
    fn try_once(&self, req: &Request, attempt: u32, waited_before: f64) -> Attempt {
        let url = req.full_url();
        let sent_at = clock::now();
        let start = Instant::now();
        let result = match req.method {
            Method::Get => self.agent.get(&url).call(),
            Method::Post => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(req.body.clone().unwrap_or_default()),
        };
        let mut a = Attempt::blank(attempt, sent_at, waited_before);
        match result {
            Err(e) => {
                a.error = Some(format!("network: {e}"));
                a.verdict = Verdict::Retry("network".into());
            }
            Ok(mut resp) => {
                let h = resp.headers();
                let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
                a.headers = ReplyHeaders {
                    date: get("date"),
                    retry_after: get("retry-after"),
                    content_type: get("content-type"),
                    content_encoding: get("content-encoding"),
                    cf_ray: get("cf-ray"),
                    ratelimit: {
                        let m: std::collections::BTreeMap<String, String> = h
                            .iter()
                            .filter(|(k, _)| k.as_str().contains("ratelimit"))
                            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                            .collect();
                        (!m.is_empty()).then_some(m)
                    },
                };
                let status = resp.status().as_u16();
                a.status = Some(status);
                match resp.body_mut().with_config().limit(MAX_BODY).read_to_vec() {
                    Ok(bytes) => a.body = Some(Body::from_bytes(bytes)),
                    Err(ureq::Error::BodyExceedsLimit(_)) => {
                        a.error = Some(format!("body: reply larger than the {MAX_BODY}-byte limit; body not kept"))
                    }
                    Err(e) => a.error = Some(format!("body: {e}")),
                }
                a.verdict = classify(status, a.body.as_ref(), a.error.is_some());
            }
        }
        a.received_at = clock::now();
        a.elapsed = start.elapsed();
        a
    }

    /// Runs a request with retries. `on_attempt` sees every try (write it as an envelope there); the
    /// last try is returned. `deadline`: never start a wait that would end after it (pm-books uses the
    /// next slot's due time). Stops early, with `gave_up = "shutdown"`, when SIGTERM/SIGINT arrives.
    pub fn execute<E>(
        &self,
        req: &Request,
        deadline: Option<Instant>,
        mut on_attempt: impl FnMut(&Attempt) -> Result<(), E>,
    ) -> Result<Attempt, E> {
        let rate = family_rate(req.family) * self.cfg.rate_scale;
        let mut waited = 0.0;
        // A backoff left by earlier requests of this family (429, 5xx, network errors): wait it out,
        // or — when it lasts past the caller's deadline — do not send at all.
        if let Some((until, reason)) = self.backoff_until(req.family) {
            let now = Instant::now();
            if deadline.is_some_and(|d| until > d) {
                let more = (until - now).as_secs_f64();
                let a = Attempt::not_sent(
                    1,
                    0.0,
                    "backing off",
                    format!("backing off for {more:.3} s more after {reason}"),
                );
                on_attempt(&a)?;
                return Ok(a);
            }
            if !signal::sleep(until - now) {
                let a = Attempt::not_sent(1, 0.0, "shutdown", "shutdown requested during backoff".into());
                on_attempt(&a)?;
                return Ok(a);
            }
            waited = (until - now).as_secs_f64();
        }
        let earlier = self.backoff.lock().unwrap().get(req.family).map(|b| b.failures).unwrap_or(0);
        let mut n = 1;
        loop {
            if !self.limiter.acquire(req.family, rate) {
                let a = Attempt::not_sent(n, waited, "shutdown before sending", "shutdown requested".into());
                on_attempt(&a)?;
                return Ok(a);
            }
            let mut a = self.try_once(req, n, waited);
            let retry_reason = match &a.verdict {
                Verdict::Retry(r) => Some(r.clone()),
                _ => None,
            };
            let Some(reason) = retry_reason else {
                // A definitive answer (success or a 4xx): the family is healthy again.
                self.backoff.lock().unwrap().remove(req.family);
                on_attempt(&a)?;
                return Ok(a);
            };
            // Decide whether and how long to wait; failures of earlier requests count too, so
            // that the wait keeps growing while the venue keeps failing.
            let delay = self.retry_delay(earlier + n, a.headers.retry_after.as_deref());
            let give_up = if n >= self.cfg.max_attempts {
                Some(format!("{n} attempts"))
            } else if signal::stop_requested() {
                Some("shutdown".to_string())
            } else if deadline.is_some_and(|d| Instant::now() + delay > d) {
                Some(format!("next try ({:.3} s away) would pass the deadline", delay.as_secs_f64()))
            } else {
                None
            };
            if let Some(g) = give_up {
                self.backoff.lock().unwrap().insert(
                    req.family,
                    Backoff {
                        failures: earlier + n,
                        not_before: Some(Instant::now() + delay),
                        reason: format!("{reason} (attempt {n})"),
                    },
                );
                a.gave_up = Some(g);
                on_attempt(&a)?;
                return Ok(a);
            }
            on_attempt(&a)?;
            if !signal::sleep(delay) {
                let p = Attempt::not_sent(
                    n + 1,
                    delay.as_secs_f64(),
                    "shutdown",
                    "shutdown requested during backoff".into(),
                );
                on_attempt(&p)?;
                return Ok(p);
            }
            waited = delay.as_secs_f64();
            n += 1;
        }
    }

    /// When the family may send again after failed requests, and why (None: it may send now).
    /// The wait is the jittered exponential backoff over the failures in a row, at least the last
    /// `Retry-After`; a success or a definitive 4xx clears it.
    pub fn backoff_until(&self, family: &str) -> Option<(Instant, String)> {
        let b = self.backoff.lock().unwrap();
        let b = b.get(family)?;
        let until = b.not_before?;
        (until > Instant::now()).then(|| (until, b.reason.clone()))
    }

    /// Backoff before try `n + 1`: [`backoff`] from `backoff_base` to `backoff_max`, at least the
    /// (capped) `Retry-After`, never under 50 ms.
    pub fn retry_delay(&self, n: u32, retry_after: Option<&str>) -> Duration {
        let ra = retry_after.and_then(parse_retry_after).map(|d| d.min(self.cfg.retry_after_max)).unwrap_or_default();
        backoff(self.cfg.backoff_base, self.cfg.backoff_max, n).max(ra).max(Duration::from_millis(50))
    }
}

/// The one backoff formula (HTTP retries here, pm-stream's reconnects): capped exponential with
/// jitter in [½, 1] — failure `n` (1-based) waits between half and all of `min(base·2ⁿ⁻¹, max)`.
pub fn backoff(base: Duration, max: Duration, n: u32) -> Duration {
    let exp = base.as_secs_f64() * 2f64.powi(n.saturating_sub(1).min(30) as i32);
    Duration::from_secs_f64(exp.min(max.as_secs_f64()) * (0.5 + 0.5 * util::random_unit()))
}

/// Classifies a reply.
pub fn classify(status: u16, body: Option<&Body>, body_error: bool) -> Verdict {
    if body_error {
        return Verdict::Retry("body read failed".into());
    }
    match status {
        429 => Verdict::Retry("429".into()),
        // "service not ready": the CLOB says it around the 5m windows (py-clob-client#273).
        425 => Verdict::Retry("425 service not ready".into()),
        500..=599 => Verdict::Retry(format!("{status}")),
        200..=299 => match body {
            Some(b) if b.kind == "json" || b.kind == "json_text" => {
                let text = b.as_str().unwrap_or("");
                if looks_throttled(text) {
                    Verdict::Retry("throttled (error body with 2xx)".into())
                } else {
                    Verdict::Ok
                }
            }
            Some(b) => Verdict::Retry(format!("unusable {status} body ({})", b.kind)),
            None => Verdict::Retry(format!("no {status} body")),
        },
        _ => Verdict::Final(format!("{status}")),
    }
}

/// A 2xx body that says "Too Many Requests" (seen from the Data API, facts §5).
fn looks_throttled(text: &str) -> bool {
    text.len() < 200
        && text.trim_start().starts_with('{')
        && text.contains("\"error\"")
        && text.to_ascii_lowercase().contains("too many requests")
}

/// `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let t = OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let d = t - clock::now();
    Some(if d.is_positive() { d.try_into().unwrap_or(Duration::ZERO) } else { Duration::ZERO })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_replies() {
        let ok = Body::from_bytes(br#"{"a":1}"#.to_vec());
        let html = Body::from_bytes(b"<html>".to_vec());
        let thr = Body::from_bytes(br#"{"error":"Too Many Requests"}"#.to_vec());
        assert_eq!(classify(200, Some(&ok), false), Verdict::Ok);
        assert!(matches!(classify(200, Some(&html), false), Verdict::Retry(_)));
        assert!(matches!(classify(200, Some(&thr), false), Verdict::Retry(_)));
        assert!(matches!(classify(429, Some(&thr), false), Verdict::Retry(_)));
        let not_ready = Body::from_bytes(br#"{"error":"service not ready"}"#.to_vec());
        assert_eq!(classify(425, Some(&not_ready), false), Verdict::Retry("425 service not ready".into()));
        assert!(matches!(classify(503, None, false), Verdict::Retry(_)));
        assert!(matches!(classify(404, Some(&ok), false), Verdict::Final(_)));
        assert!(matches!(classify(200, Some(&ok), true), Verdict::Retry(_)));
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        for n in 1..40 {
            let d = backoff(Duration::from_secs(1), Duration::from_secs(60), n).as_secs_f64();
            let full = 2f64.powi((n as i32 - 1).min(30)).min(60.0);
            assert!(d >= full * 0.5 - 1e-9 && d <= full + 1e-9, "n={n} d={d}");
        }
    }

    /// The ctx of an http line: the caller's fields (a type, or a JSON object) plus the retry fields.
    #[test]
    fn http_ctx_is_the_callers_fields_and_the_retry_fields() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Caller {
            slot: u64,
        }
        let run = crate::envelope::RunInfo {
            venue: "polymarket",
            tool: "test",
            version: "0",
            run_id: "r".into(),
            host: "h".into(),
        };
        let mut seq = Sequencer::new(run);
        let req = Request::get("test", "http://127.0.0.1:9/x");
        let mut a = Attempt::blank(2, clock::now(), 0.5);
        a.verdict = Verdict::Retry("429".into());
        let ctx = a.envelope(&mut seq, &req, Some(&Caller { slot: 3 })).ctx.unwrap();
        assert_eq!(ctx.to_string(), r#"{"retryable":"429","slot":3,"waited_before_s":0.5}"#);
        let back: HttpCtx<Caller> = serde_json::from_value(ctx).unwrap();
        assert_eq!(back.caller, Some(Caller { slot: 3 }));
        assert_eq!(back.retry.retryable.as_deref(), Some("429"));
        a.verdict = Verdict::Final("404".into());
        let ctx = a.envelope(&mut seq, &req, Some(serde_json::json!({"probe": "book"}))).ctx.unwrap();
        assert_eq!(ctx, serde_json::json!({"probe": "book", "final": "404", "waited_before_s": 0.5}));
        a.verdict = Verdict::Ok;
        a.waited_before = 0.0;
        assert!(a.envelope(&mut seq, &req, None::<()>).ctx.is_none(), "nothing to say: no ctx");
        let post = Request::post_books("http://127.0.0.1:9/books", &["1", "2"]);
        assert_eq!(post.body.as_deref(), Some(r#"[{"token_id":"1"},{"token_id":"2"}]"#));
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_honours_retry_after() {
        let c = Client::new(HttpConfig::default());
        for n in 1..6 {
            let d = c.retry_delay(n, None).as_secs_f64();
            let full = (0.5 * 2f64.powi(n as i32 - 1)).min(30.0);
            assert!(d >= full * 0.5 - 1e-9 && d <= full + 1e-9, "n={n} d={d}");
        }
        assert!(c.retry_delay(1, Some("7")).as_secs_f64() >= 7.0);
        // Capped at retry_after_max.
        assert!(c.retry_delay(1, Some("100000")).as_secs_f64() <= 120.0);
        assert!(c.retry_delay(40, None).as_secs_f64() <= 30.0);
    }

    /// A 127.0.0.1 server answering the given statuses in order, one connection each.
    fn serve(statuses: Vec<u16>) -> String {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/x", l.local_addr().unwrap());
        std::thread::spawn(move || {
            for status in statuses {
                let (mut c, _) = l.accept().unwrap();
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let body = "{}";
                let _ = write!(
                    c,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    #[test]
    fn backoff_outlives_a_request_grows_with_failures_and_clears_on_success() {
        let cfg = HttpConfig {
            max_attempts: 1,
            backoff_base: Duration::from_millis(100),
            rate_scale: 100.0,
            ..HttpConfig::default()
        };
        let c = Client::new(cfg);
        let url = serve(vec![503, 503, 200]);
        let req = Request::get("test", url);
        let run = |deadline| c.execute(&req, deadline, |_| Ok::<(), ()>(())).unwrap();
        assert_eq!(run(None).status, Some(503));
        let (until1, why) = c.backoff_until("test").expect("a backoff after giving up");
        assert!(why.contains("503"), "{why}");
        let d1 = until1 - Instant::now();
        assert!(d1 <= Duration::from_millis(100), "{d1:?}");
        // A caller whose deadline comes first is not sent at all (no connection is made).
        let skipped = run(Some(Instant::now()));
        assert_eq!(skipped.status, None);
        assert!(skipped.error.as_deref().unwrap().starts_with("not sent: backing off"));
        // Without a deadline the next request waits the backoff out, then fails again: the wait grows.
        let start = Instant::now();
        assert_eq!(run(None).status, Some(503));
        assert!(start.elapsed() + Duration::from_millis(5) >= d1);
        let (until2, _) = c.backoff_until("test").unwrap();
        let d2 = until2 - Instant::now();
        assert!(
            d2 >= Duration::from_millis(60) && d2 <= Duration::from_millis(200),
            "second failure in a row: 100–200 ms (less the time to measure), got {d2:?}"
        );
        std::thread::sleep(d2);
        assert_eq!(run(None).status, Some(200));
        assert!(c.backoff_until("test").is_none(), "a success clears the backoff");
    }

    /// 425 "service not ready" is retried by the shared client (pm-books, pm-markets, pm-probe) and
    /// every attempt is handed over to be recorded, the 425 marked retryable.
    #[test]
    fn a_425_is_retried_and_every_attempt_is_seen() {
        let cfg = HttpConfig { backoff_base: Duration::from_millis(20), rate_scale: 100.0, ..HttpConfig::default() };
        let c = Client::new(cfg);
        let req = Request::get("test425", serve(vec![425, 425, 200]));
        let mut seen = Vec::new();
        let last = c
            .execute(&req, None, |a| {
                seen.push((a.status, a.verdict.clone()));
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!((last.status, last.attempt), (Some(200), 3));
        let not_ready = Verdict::Retry("425 service not ready".into());
        assert_eq!(seen, vec![(Some(425), not_ready.clone()), (Some(425), not_ready), (Some(200), Verdict::Ok)]);
    }

    /// The real limiter settings (no `rate_scale`): 6 `books` requests at 5/s cannot finish in less
    /// than 5 intervals of 0.2 s. Lower bounds only: the limiter promises spacing, never speed.
    #[test]
    fn the_limiter_spaces_requests_of_a_family_at_its_real_rate() {
        let c = Client::new(HttpConfig::default());
        assert_eq!(c.cfg.rate_scale, 1.0);
        let n = 6;
        let interval = 1.0 / family_rate("books");
        assert_eq!(interval, 0.2);
        let url = serve(vec![200; n]);
        let req = Request::get("books", url);
        let start = Instant::now();
        let mut sent = Vec::new();
        for _ in 0..n {
            let a = c.execute(&req, None, |_| Ok::<(), ()>(())).unwrap();
            assert_eq!(a.status, Some(200));
            sent.push(a.sent_at);
        }
        // Request k starts no earlier than its slot, start + k·interval (a hard bound).
        let total = start.elapsed().as_secs_f64();
        assert!(total >= (n - 1) as f64 * interval, "{n} requests in {total:.3} s");
        let span = (sent[n - 1] - sent[0]).as_seconds_f64();
        assert!(span / (n - 1) as f64 >= interval * 0.9, "mean spacing {:.3} s", span / (n - 1) as f64);
        // Each gap on its own (generously: a late start of one request may shorten the next gap).
        for w in sent.windows(2) {
            let gap = (w[1] - w[0]).as_seconds_f64();
            assert!(gap >= interval * 0.5, "gap {gap:.3} s");
        }
    }

    /// Families do not share slots: a family whose next slot is an hour away does not hold up
    /// another family's request (it would hang for an hour if they shared one limiter).
    #[test]
    fn limiter_families_are_independent() {
        let c = std::sync::Arc::new(Client::new(HttpConfig::default()));
        let far = Instant::now() + Duration::from_secs(3600);
        c.limiter.next.lock().unwrap().insert("tick-size", far);
        let url = serve(vec![200]);
        let (tx, rx) = std::sync::mpsc::channel();
        let c2 = c.clone();
        std::thread::spawn(move || {
            let a = c2.execute(&Request::get("books", url), None, |_| Ok::<(), ()>(())).unwrap();
            let _ = tx.send(a.status);
        });
        let status = rx.recv_timeout(Duration::from_secs(5)).expect("books is not held up by tick-size");
        assert_eq!(status, Some(200));
        let next = c.limiter.next.lock().unwrap();
        assert_eq!(next["tick-size"], far, "the other family's slot is untouched");
        assert!(next["books"] < far - Duration::from_secs(3000));
    }

    #[test]
    fn full_url_encodes_query() {
        let r = Request::get("book", "https://clob.polymarket.com/book").query("token_id", "12 3&x");
        assert_eq!(r.full_url(), "https://clob.polymarket.com/book?token_id=12%203%26x");
        assert_eq!(r.info().params["token_id"], "12 3&x");
    }
}
