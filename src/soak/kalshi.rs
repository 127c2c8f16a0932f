//! Kalshi in the soak report (issue 17): what the loopback Kalshi API (`pm-venue --kalshi`, served
//! under `/trade-api/v2`) served vs what the archive holds under `venue=kalshi/`.
//!
//! - Books: every 200 `GET /markets/{ticker}/orderbook` reply without a fault (or a slow one) is
//!   known by the sha256 of its body (the venue log's `hashes`: Kalshi's book has no hash of its own);
//!   an archived one by the sha256 of the `body` of a 200 line in `venue=kalshi/stream=books` (the
//!   envelope keeps the body byte for byte), so a truncated or HTML reply is neither.
//! - Trades: by `trade_id`, from the venue log's `trades` and from the 200 lines of
//!   `venue=kalshi/stream=trades`.
//!
//! Counted only when the venue log has Kalshi replies: a Polymarket-only soak's report is unchanged.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::report::{reconcile_keys, Gate, KalshiReconcile, Loss, TradeReconcile};
use super::VenueLine;

/// The venue log's Kalshi replies: their paths start with this.
pub const PATH_PREFIX: &str = "/trade-api/";
/// `venue=` of the Kalshi archive.
pub const VENUE: &str = crate::envelope::VENUE_KALSHI;

/// A reply of the loopback Kalshi API in the venue log.
pub fn is_kalshi(l: &VenueLine) -> bool {
    l.path.as_deref().is_some_and(|p| p.starts_with(PATH_PREFIX))
}

/// What the report collects about Kalshi while it reads the venue log and the archive.
#[derive(Default)]
pub struct Collect {
    replies: u64,
    books: (u64, u64),
    trades: (u64, u64),
    served_books: BTreeMap<String, Vec<f64>>,
    slow_books: BTreeSet<String>,
    served_trades: BTreeMap<String, Vec<f64>>,
    archived_books: BTreeSet<String>,
    archived_trades: BTreeSet<String>,
}

impl Collect {
    /// One `served` venue line of the Kalshi API, at real time `at`.
    pub fn served(&mut self, l: &VenueLine, at: f64) {
        self.replies += 1;
        let path = l.path.as_deref().unwrap_or_default();
        let ok = l.status == Some(200);
        let slow = l.fault.as_deref().is_some_and(|f| f.starts_with("Slow"));
        if path.ends_with("/orderbook") {
            self.books.0 += 1;
            self.books.1 += u64::from(ok);
            if ok && (l.fault.is_none() || slow) {
                for h in &l.hashes {
                    self.served_books.entry(h.clone()).or_default().push(at);
                    if slow {
                        self.slow_books.insert(h.clone());
                    }
                }
            }
        } else if path.ends_with("/markets/trades") {
            self.trades.0 += 1;
            self.trades.1 += u64::from(ok);
            for k in &l.trades {
                self.served_trades.entry(k.clone()).or_default().push(at);
            }
        }
    }

    /// One archived 200 line of `venue=kalshi/stream=<stream>` with its JSON body.
    pub fn archived(&mut self, stream: &str, body: &RawValue) {
        match stream {
            "books" => {
                self.archived_books.insert(crate::util::hex(&Sha256::digest(body.get().as_bytes())));
            }
            "trades" => self.archived_trades.extend(trade_ids(body)),
            _ => {}
        }
    }

    /// The reconciliation, or None when the venue log has no Kalshi reply.
    pub(super) fn finish(&self, loss: &Loss) -> Option<KalshiReconcile> {
        if self.replies == 0 {
            return None;
        }
        // A slow reply the client gave up on is explained as such (as Polymarket's books are).
        let (slow_lost, served): (BTreeMap<_, _>, BTreeMap<_, _>) = self
            .served_books
            .clone()
            .into_iter()
            .partition(|(h, _)| self.slow_books.contains(h) && !self.archived_books.contains(h));
        let mut books = reconcile_keys(&served, &self.archived_books, loss);
        books.served += slow_lost.len() as u64;
        if !slow_lost.is_empty() {
            let why = "served in a reply slower than the client's timeout (injected Slow fault)".to_string();
            *books.missing.entry(why).or_default() += slow_lost.len() as u64;
        }
        (books.requests, books.ok_replies) = self.books;
        let mut trades = reconcile_keys(&self.served_trades, &self.archived_trades, loss);
        (trades.requests, trades.ok_replies) = self.trades;
        Some(KalshiReconcile { replies: self.replies, books, trades })
    }
}

/// The `trade_id`s of a `GET /markets/trades` reply body (`{"trades": [...]}`); none when it is not one.
fn trade_ids(body: &RawValue) -> Vec<String> {
    #[derive(Deserialize)]
    struct Id {
        trade_id: String,
    }
    #[derive(Deserialize)]
    struct Page {
        trades: Option<Vec<Id>>,
    }
    match serde_json::from_str::<Page>(body.get()) {
        Ok(p) => p.trades.unwrap_or_default().into_iter().map(|t| t.trade_id).collect(),
        Err(_) => Vec::new(),
    }
}

/// The endpoint word of the report's fault evidence for a Kalshi fault target (a venue path pattern).
pub fn evidence_endpoint(target: &str) -> Option<&'static str> {
    let t = target.strip_prefix("/trade-api/v2")?;
    Some(if t.ends_with("/orderbook") {
        "kalshi/books"
    } else if t.starts_with("/markets/trades") {
        "kalshi/trades"
    } else {
        "kalshi/discovery"
    })
}

/// The HTTP status of a `Reply { status: N, … }` fault (Kalshi's documented error replies).
pub fn reply_status(fault: &str) -> Option<u64> {
    let rest = fault.strip_prefix("Reply { status: ")?;
    rest[..rest.find(|c: char| !c.is_ascii_digit())?].parse().ok()
}

/// The two gate lines, books and trades (only in a report with Kalshi replies).
pub fn gates(k: &KalshiReconcile) -> Vec<Gate> {
    let line = |what: &str, t: &TradeReconcile| {
        let unexplained = t.missing.get("UNEXPLAINED").copied().unwrap_or(0);
        Gate {
            name: format!("every Kalshi {what} served is archived or its loss explained"),
            value: format!(
                "{} of {} distinct {what}s archived, {unexplained} unexplained, {} archived but not served ({} requests)",
                t.matched, t.served, t.not_served, t.requests
            ),
            pass: unexplained == 0 && t.not_served == 0 && t.served > 0,
            not_judgeable: false,
        }
    };
    vec![line("book", &k.books), line("trade", &k.trades)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kalshi_fault_names_and_targets() {
        assert_eq!(reply_status("Reply { status: 429, body: 30 bytes }"), Some(429));
        assert_eq!(reply_status("TooMany { retry_after: None }"), None);
        assert_eq!(evidence_endpoint("/trade-api/v2/markets/*/orderbook"), Some("kalshi/books"));
        assert_eq!(evidence_endpoint("/trade-api/v2/markets/trades"), Some("kalshi/trades"));
        assert_eq!(evidence_endpoint("/trade-api/v2/markets$"), Some("kalshi/discovery"));
        assert_eq!(evidence_endpoint("/trade-api/v2/markets/KXBTC15M-*$"), Some("kalshi/discovery"));
        assert_eq!(evidence_endpoint("/books"), None);
    }
}
