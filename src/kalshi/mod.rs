//! Kalshi: the `KXBTC15M` series (BTC up or down in the next 15 minutes), public REST market data
//! without keys (docs/KALSHI_FACTS.md). [`market`] holds the market and resolution records,
//! [`orderbook`] the one parser of the order-book reply; each
//! tool's engine is the module named after it.

pub mod books;
pub mod market;
pub mod markets;
pub mod orderbook;
pub mod trades;

/// Kalshi's REST base URL (the shared host, "also supported"); the documented alternative is
/// `https://external-api.kalshi.com/trade-api/v2` (docs/KALSHI_FACTS.md §1). Request paths are
/// appended to it (`/markets`, `/markets/{ticker}/orderbook`, `/markets/trades`).
pub const DEFAULT_URL: &str = "https://api.elections.kalshi.com/trade-api/v2";
