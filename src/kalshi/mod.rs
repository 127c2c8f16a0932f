//! Kalshi: the `KXBTC15M` series (BTC up or down in the next 15 minutes), public REST market data
//! without keys (docs/KALSHI_FACTS.md). [`market`] holds the market and resolution records,
//! [`orderbook`] the one parser of the order-book reply; each
//! tool's engine is the module named after it.

pub mod books;
pub mod market;
pub mod orderbook;
