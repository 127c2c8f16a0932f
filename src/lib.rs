//! pm-archive: the shared library behind the archive's small JSONL filters (`bin/`).
//!
//! The venues side by side: [`polymarket`] (BTC up/down markets: Gamma discovery, CLOB books, the
//! websocket channel, the Data API trades) and [`kalshi`] (KXBTC15M: discovery, order books, trades).
//! Mechanisms both use exist once, here: exit codes and errors ([`cli`]), time ([`clock`]), the raw
//! envelope ([`envelope`]), the HTTP client with rate limiting and backoff ([`http`]), JSONL
//! reading/writing ([`jsonl`]), signals ([`signal`]), the drift-free slot loop ([`schedule`]),
//! the market tools' watch mode ([`watch`]: pm-markets' and kalshi-markets'),
//! the pollers' raw lines and outage lines ([`poll`]),
//! tracking windows with the track/gap records' `ctx` ([`track`]), the archive layout with the
//! sealed-file record ([`layout`]), the manifest of a derived file ([`derived`]: pm-normalize's and
//! pm-tradeset's). Each tool's engine lives in the module named after it: [`normalize`]
//! (pm-normalize), [`rotate`] (jsonl-rotate), [`manifest`], [`soak`] (soak-report), and the venue
//! tools' engines in their venue's module.

pub mod cli;
pub mod clock;
pub mod derived;
pub mod envelope;
pub mod fastjson;
pub mod feed;
pub mod http;
pub mod jsonl;
pub mod kalshi;
pub mod layout;
pub mod manifest;
pub mod normalize;
pub mod poll;
pub mod polymarket;
pub mod rotate;
pub mod schedule;
pub mod signal;
pub mod soak;
pub mod track;
pub mod util;
pub mod watch;

/// The version every envelope and manifest records.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
