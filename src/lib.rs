//! pm-archive: the shared library behind the archive's small JSONL filters (`bin/`).
//!
//! Mechanisms exist once, here: exit codes and errors ([`cli`]), time ([`clock`]), the raw envelope
//! ([`envelope`]), the HTTP client with rate limiting and backoff ([`http`]), JSONL reading/writing
//! ([`jsonl`]), signals ([`signal`]), the venue's book hash ([`bookhash`]), the market records and slug
//! families ([`market`]), tracking windows with the track/gap records' `ctx` ([`track`]), and the
//! archive layout with the sealed-file record ([`layout`]), the manifest of a derived file
//! ([`derived`]: pm-normalize's and pm-tradeset's).
//! Each tool's engine lives in the module named after it: [`markets`] (pm-markets), [`books`]
//! (pm-books), [`stream`] (pm-stream), [`normalize`], [`probe`], [`rotate`] (jsonl-rotate),
//! [`manifest`], and [`rebuild`] (pm-rebuild).

pub mod bookhash;
pub mod books;
pub mod cli;
pub mod clock;
pub mod derived;
pub mod envelope;
pub mod feed;
pub mod http;
pub mod jsonl;
pub mod layout;
pub mod manifest;
pub mod market;
pub mod markets;
pub mod normalize;
pub mod probe;
pub mod rebuild;
pub mod rotate;
pub mod schedule;
pub mod signal;
pub mod soak;
pub mod stream;
pub mod track;
pub mod trades;
pub mod tradeset;
pub mod util;

/// The version every envelope and manifest records.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
