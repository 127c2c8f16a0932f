//! pm-archive: the shared library behind the archive's small JSONL filters (`bin/`).
//!
//! Mechanisms exist once, here: exit codes and errors ([`cli`]), time ([`clock`]), the raw envelope
//! ([`envelope`]), the HTTP client with rate limiting and backoff ([`http`]), JSONL reading/writing
//! ([`jsonl`]), signals ([`signal`]), the book hash ([`book`]), market discovery ([`market`]) and
//! tracking windows with the track/gap records' `ctx` ([`track`]).
//! Each tool's own logic lives in the module named after it.

pub mod book;
pub mod books;
pub mod cli;
pub mod clock;
pub mod discover;
pub mod envelope;
pub mod feed;
pub mod http;
pub mod jsonl;
pub mod manifest;
pub mod market;
pub mod normalize;
pub mod probe;
pub mod rotate;
pub mod signal;
pub mod soak;
pub mod stream;
pub mod track;
pub mod util;
pub mod wsbook;

/// The version every envelope and manifest records.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
