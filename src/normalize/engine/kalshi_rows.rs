//! pm-normalize's Kalshi rows: a `kalshi-books` http line (venue `kalshi`, endpoint `kalshi-books`)
//! becomes one `book` row for the YES side of the market, written by the same formatter as
//! Polymarket's rows ([`Rows::book_row`]), so every field, flag and format is the same
//! (docs/ORDERBOOK_SCHEMA.md, "Kalshi rows"):
//! - bids are the YES bids, asks are derived from the NO bids (a NO bid at `p` is a YES ask at
//!   `1 − p`, with that NO level's size), both best first ([`crate::kalshi::orderbook`] parses the
//!   three reply shapes and sorts the levels by price);
//! - `market` and `asset_id` are the ticker (joined: `slug` the ticker, `outcome` `yes`);
//! - no hash, no timestamp, no tick: `hash`, `hash_ok`, `exchange_*`, `recv_lag_ms`, `tick_size`,
//!   `min_order_size`, `neg_risk`, `last_trade_price` are null and the flags that judge them are
//!   never raised ([`NOT_KALSHI`]).

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::{ctx, error_row, failed_reply, Dest, Part, Rows, BAD_LEVEL};
use crate::kalshi::orderbook::{self, Level as KLevel};
use crate::normalize::parse::{Book, Env, Level};

#[cfg(doc)]
use super::NOT_KALSHI;

/// The outcome a Kalshi row describes: the market's YES contract.
pub const OUTCOME: &str = "yes";

impl Rows {
    /// The rows of one kalshi-books http line: a book row, or an error row saying why not.
    pub(super) fn kalshi_books(&mut self, env: &Env, text: &str, part: &mut Part) {
        let line = text.as_bytes();
        let ctx = ctx(env);
        if failed_reply(part, env, &ctx, line) {
            return;
        }
        let Some(ticker) = ctx.ticker.as_deref() else {
            return error_row(part, env, &ctx, "no_ticker", None, None, line);
        };
        let Some(body) = reply_body(text) else {
            return error_row(part, env, &ctx, "not_json", None, None, line);
        };
        let ob = match orderbook::parse(&body) {
            Ok(ob) => ob,
            Err(_) => return error_row(part, env, &ctx, "bad_book", None, None, line),
        };
        // The formatter's wire order (bids ascending, asks descending): the YES bids ascend, and so
        // do the NO bids, whose YES asks therefore descend.
        let asks = ob.yes_asks();
        let book = Book {
            market: Some(Cow::Borrowed(ticker)),
            asset_id: Some(Cow::Borrowed(ticker)),
            bids: Some(wire(&ob.yes)),
            asks: Some(wire(&asks)),
            ..Book::default()
        };
        let extra = if ob.bad_levels > 0 { BAD_LEVEL } else { 0 };
        self.book_row(env, &ctx, &book, None, None, extra, Dest::Part(part));
    }
}

/// A side as the formatter's levels, borrowing the parsed text.
fn wire(side: &[KLevel]) -> Vec<Level<'_>> {
    side.iter()
        .map(|l| Level { price: Some(Cow::Borrowed(&l.price_text)), size: Some(Cow::Borrowed(&l.size_text)) })
        .collect()
}

/// The reply body of an http line as JSON text (`body`, or `body_text` when it was kept as text);
/// None when the reply was not JSON.
fn reply_body(line: &str) -> Option<Cow<'_, str>> {
    #[derive(serde::Deserialize)]
    struct Reply<'a> {
        #[serde(borrow, default)]
        body_kind: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        body: Option<&'a RawValue>,
        #[serde(borrow, default)]
        body_text: Option<Cow<'a, str>>,
    }
    let r: Reply = serde_json::from_str(line).ok()?;
    match r.body_kind.as_deref() {
        Some("json") => r.body.map(|b| Cow::Borrowed(b.get())),
        Some("json_text") => r.body_text,
        _ => None,
    }
}
