//! `pm-probe`'s engine: a bounded probe of each public Polymarket endpoint the archive may use
//! (roadmap checkpoint 2). It resolves the current 5-minute BTC up/down market on Gamma, then asks the
//! CLOB for its book (single and batch), prices, midpoint, spread, last trade price, tick size and
//! server time, plus one book of an unknown token to record the 404 behaviour.
//!
//! Bounded: a hard cap on HTTP attempts (retries included; the cap also limits how many tries one
//! request may take), a minimum spacing between attempts on top of the client's own per-family
//! limiter, and at most two tries per request. For every endpoint it records status, latency,
//! content type, the fields seen (in wire order) with their types, the time-like fields with an
//! interpretation, rate-limit headers, body size and JSON validity.
//!
//! The parts, in pipeline order: [`shape`] (what a reply body looks like: fields in wire order, times,
//! book notes), [`run`] (the [`Prober`]: requests within the bounds, one [`EndpointResult`] each),
//! [`report`] (the typed [`Report`], Serialize + Deserialize, with every derived answer computed once)
//! and one renderer per format: [`render_json`] (`polymarket_public_sources_probe_v1.json`) and
//! [`render_md`] (`.md`). Renderers read the report's fields only.

pub mod render_json;
pub mod render_md;
pub mod report;
pub mod run;
pub mod shape;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use report::{AttemptSummary, EndpointResult, Notes, Observed, Outcome, Report};
pub use run::Prober;
pub use shape::{describe, find_times, interpret_time, type_name, Field, Shape, TimeSeen};

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

/// Whether a run talked to the venue or to a loopback replay (never to be mistaken for each other).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Live,
    Loopback,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Live => "live",
            RunKind::Loopback => "loopback",
        }
    }
}

/// `loopback` when any base URL points at 127.0.0.1 / localhost / ::1, else `live`.
pub fn run_kind(urls: &[&str]) -> RunKind {
    if urls.iter().any(|u| is_loopback_host(&url_host(u))) {
        RunKind::Loopback
    } else {
        RunKind::Live
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_run_kind() {
        assert_eq!(url_host("http://127.0.0.1:8080/x"), "127.0.0.1");
        assert_eq!(url_host("http://[::1]:9/"), "::1");
        assert_eq!(url_host("https://clob.polymarket.com"), "clob.polymarket.com");
        assert_eq!(url_host("http://LOCALHOST"), "localhost");
        assert_eq!(run_kind(&["https://gamma-api.polymarket.com", "https://clob.polymarket.com"]).as_str(), "live");
        assert_eq!(run_kind(&["https://gamma-api.polymarket.com", "http://127.0.0.1:1"]).as_str(), "loopback");
        assert_eq!(run_kind(&["http://[::1]:5", "https://clob.polymarket.com"]).as_str(), "loopback");
        assert_eq!(run_kind(&["http://127.0.0.1.example.com"]).as_str(), "live");
    }
}
