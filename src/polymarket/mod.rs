//! Polymarket: the BTC up/down markets (slug families, Gamma discovery, the market and resolution
//! records), the CLOB order books (`POST /books`) and their hash, the websocket market channel and its
//! rebuild, and the Data API trade feed. Each tool's engine is the module named after it:
//! [`markets`] (pm-markets), [`books`] (pm-books), [`stream`] (pm-stream), [`trades`] (pm-trades),
//! [`tradeset`] (pm-tradeset), [`rebuild`] (pm-rebuild), [`probe`] (pm-probe); [`market`] holds the
//! records, [`bookhash`] the venue's book hash, [`crate::feed`] the reader of market records on stdin.

pub mod bookhash;
pub mod books;
pub mod market;
pub mod markets;
pub mod probe;
pub mod rebuild;
pub mod stream;
pub mod trades;
pub mod tradeset;
