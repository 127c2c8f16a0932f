//! Kalshi: the `KXBTC15M` series (BTC up or down in the next 15 minutes), public REST market data
//! without keys (docs/KALSHI_FACTS.md). [`market`] holds the market and resolution records; each
//! tool's engine is the module named after it.

pub mod market;
pub mod orderbook;
