//! Kalshi's order-book reply (`GET /markets/{ticker}/orderbook`) parsed into exact decimals: the one
//! parser of `kalshi-books` (which archives the reply raw and only checks that it is a book) and
//! `pm-normalize` (which turns it into `pmarchive.orderbook/1` rows). docs/KALSHI_FACTS.md §3.
//!
//! Three shapes, tried in this order (the first present wins):
//! 1. `{"orderbook_fp": {"yes_dollars": [["0.4200", "13.00"], …], "no_dollars": […]}}` — the current
//!    shape: price in dollars and count, both strings (`Fp`);
//! 2. `{"orderbook": {"yes_dollars": […], "no_dollars": […]}}` — dollar strings, counts an integer or a
//!    string (`Dollars`);
//! 3. `{"orderbook": {"yes": [[42, 13], …], "no": […]}}` — legacy integer cents and integer counts
//!    (`Cents`), removed from the live API on 2026-03-12 (facts §7) but present in older captures.
//!
//! Both sides are **bids**: `yes` bids for YES, `no` bids for NO; a YES ask at `1 − p` is a NO bid at
//! `p` (size: that NO level's count). A side that is absent or `null` is empty. Levels are sorted here
//! by price, ascending: the guide says "ascending, best last", the spec "best to worst" (facts §8.2),
//! so position is never trusted. Prices and counts are exact decimals ([`Dec`], never f64); a level
//! that is not a pair of decimals is left out and counted ([`OrderBook::bad_levels`]); a reply that
//! is not a book at all (not an object, no book member, a side that is not an array) is an `Err`.

use serde_json::Value;

use crate::normalize::dec::Dec;

/// Which of the three shapes a reply had (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `orderbook_fp.{yes_dollars,no_dollars}`.
    Fp,
    /// `orderbook.{yes_dollars,no_dollars}`.
    Dollars,
    /// `orderbook.{yes,no}` in integer cents.
    Cents,
}

/// One bid level: the price in dollars and the count, exact, with their text as a decimal string
/// (as sent for the dollar shapes; cents written as dollars, `42` → `"0.42"`; integer counts as
/// their digits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Level {
    pub price: Dec,
    pub size: Dec,
    pub price_text: String,
    pub size_text: String,
}

/// A parsed reply: both bid ladders, ascending by price.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderBook {
    pub shape: Shape,
    /// YES bids, price ascending (best last).
    pub yes: Vec<Level>,
    /// NO bids, price ascending (best last).
    pub no: Vec<Level>,
    /// Levels left out: not an array of two decimals (a price and a count).
    pub bad_levels: u32,
}

impl OrderBook {
    /// The YES asks derived from the NO bids: price `1 − p` at the scale of `p` (`0.4400` → `0.5600`,
    /// cents `44` → `0.56`), size the NO level's count; descending by price (best last), as the NO
    /// bids ascend.
    pub fn yes_asks(&self) -> Vec<Level> {
        const ONE: Dec = Dec { m: 1, s: 0 };
        self.no
            .iter()
            .filter_map(|l| {
                let price = ONE.checked_sub(l.price)?;
                Some(Level { price, size: l.size, price_text: price.to_fixed(), size_text: l.size_text.clone() })
            })
            .collect()
    }
}

/// Parses a reply body (JSON text).
pub fn parse(body: &str) -> Result<OrderBook, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    parse_value(&v)
}

/// Parses a reply body already read as JSON.
pub fn parse_value(v: &Value) -> Result<OrderBook, String> {
    let root = v.as_object().ok_or("the reply is not a JSON object")?;
    let obj = |k: &str| root.get(k).and_then(Value::as_object);
    let (shape, book, keys) = if let Some(b) = obj("orderbook_fp") {
        (Shape::Fp, b, ["yes_dollars", "no_dollars"])
    } else if let Some(b) = obj("orderbook") {
        let dollars = ["yes_dollars", "no_dollars"].iter().any(|k| b.get(*k).is_some_and(|s| !s.is_null()));
        let cents = ["yes", "no"].iter().any(|k| b.get(*k).is_some_and(|s| !s.is_null()));
        if cents && !dollars {
            (Shape::Cents, b, ["yes", "no"])
        } else {
            (Shape::Dollars, b, ["yes_dollars", "no_dollars"])
        }
    } else {
        return Err(match root.get("error").or_else(|| root.get("message")) {
            Some(e) => format!("an error reply, not a book: {e}"),
            None => "no orderbook_fp or orderbook object".to_string(),
        });
    };
    let mut bad_levels = 0;
    let mut side = |k: &str| -> Result<Vec<Level>, String> {
        let levels = match book.get(k) {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(a)) => a,
            Some(other) => return Err(format!("{k} is not an array: {}", kind(other))),
        };
        let mut out: Vec<Level> = levels
            .iter()
            .filter_map(|l| {
                let l = level(l, shape);
                bad_levels += u32::from(l.is_none());
                l
            })
            .collect();
        out.sort_by_key(|l| l.price);
        Ok(out)
    };
    let yes = side(keys[0])?;
    let no = side(keys[1])?;
    Ok(OrderBook { shape, yes, no, bad_levels })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One level `[price, count]` of a side of `shape`; None when it is not one.
fn level(v: &Value, shape: Shape) -> Option<Level> {
    let [p, c] = v.as_array()?.as_slice() else { return None };
    let (price, price_text) = match (shape, p) {
        (Shape::Fp | Shape::Dollars, Value::String(s)) => (Dec::parse(s)?, s.clone()),
        (Shape::Cents, Value::Number(n)) => {
            let price = Dec { m: i128::from(n.as_u64()?), s: 2 };
            (price, price.to_fixed())
        }
        _ => return None,
    };
    let (size, size_text) = match (shape, c) {
        (Shape::Fp, Value::String(s)) => (Dec::parse(s)?, s.clone()),
        (Shape::Dollars | Shape::Cents, Value::String(s)) => (Dec::parse(s)?, s.clone()),
        (Shape::Dollars | Shape::Cents, Value::Number(n)) => (Dec { m: i128::from(n.as_u64()?), s: 0 }, n.to_string()),
        _ => return None,
    };
    Some(Level { price, size, price_text, size_text })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = include_str!("../../tests/fixtures/kalshi/orderbook_fp_docs_example.json");
    const CENTS: &str = include_str!("../../tests/fixtures/kalshi/orderbook_legacy_cents_docs_example.json");

    /// (price, size) pairs as canonical decimals.
    fn values(side: &[Level]) -> Vec<(String, String)> {
        side.iter().map(|l| (l.price.to_canonical(), l.size.to_canonical())).collect()
    }

    #[test]
    fn the_fp_and_cents_docs_examples_are_the_same_book() {
        let fp = parse(FP).unwrap();
        let cents = parse(CENTS).unwrap();
        assert_eq!((fp.shape, cents.shape), (Shape::Fp, Shape::Cents));
        assert_eq!((fp.yes.len(), fp.no.len(), fp.bad_levels), (12, 10, 0));
        assert_eq!(values(&fp.yes), values(&cents.yes));
        assert_eq!(values(&fp.no), values(&cents.no));
        assert_eq!(values(&fp.yes_asks()), values(&cents.yes_asks()));
        // Best YES bid 0.42 × 13; best NO bid 0.56 × 17 → best YES ask 0.44 × 17.
        let best_bid = fp.yes.last().unwrap();
        assert_eq!((best_bid.price_text.as_str(), best_bid.size_text.as_str()), ("0.4200", "13.00"));
        let asks = fp.yes_asks();
        let best_ask = asks.last().unwrap();
        assert_eq!((best_ask.price_text.as_str(), best_ask.size_text.as_str()), ("0.4400", "17.00"));
        let c = cents.yes_asks();
        assert_eq!((c.last().unwrap().price_text.as_str(), c.last().unwrap().size_text.as_str()), ("0.44", "17"));
        assert_eq!((cents.yes[0].price_text.as_str(), cents.yes[0].size_text.as_str()), ("0.01", "200"));
    }

    #[test]
    fn the_dollars_shape_and_any_level_order() {
        let b = parse(
            r#"{"orderbook":{"yes_dollars":[["0.4200",13],["0.0100","200.50"]],"no_dollars":[["0.5600","17.00"],["0.0100",100]]}}"#,
        )
        .unwrap();
        assert_eq!(b.shape, Shape::Dollars);
        assert_eq!(values(&b.yes), [("0.01".into(), "200.5".into()), ("0.42".into(), "13".into())]);
        assert_eq!(values(&b.yes_asks()), [("0.99".into(), "100".into()), ("0.44".into(), "17".into())]);
        // Descending on the wire (the spec's reading) gives the same ladder.
        let desc = parse(r#"{"orderbook_fp":{"yes_dollars":[["0.4200","13.00"],["0.0100","200.00"]]}}"#).unwrap();
        let asc = parse(r#"{"orderbook_fp":{"yes_dollars":[["0.0100","200.00"],["0.4200","13.00"]]}}"#).unwrap();
        assert_eq!(desc, asc);
        // orderbook_fp wins over orderbook when both are present.
        let both = parse(r#"{"orderbook_fp":{"yes_dollars":[]},"orderbook":{"yes":[[42,13]]}}"#).unwrap();
        assert_eq!((both.shape, both.yes.len()), (Shape::Fp, 0));
    }

    #[test]
    fn empty_null_and_one_sided_books() {
        for body in [
            r#"{"orderbook_fp":{"yes_dollars":[],"no_dollars":[]}}"#,
            r#"{"orderbook_fp":{"yes_dollars":null,"no_dollars":null}}"#,
            r#"{"orderbook_fp":{}}"#,
            r#"{"orderbook":{"yes":null,"no":null}}"#,
        ] {
            let b = parse(body).unwrap();
            assert!(b.yes.is_empty() && b.no.is_empty() && b.bad_levels == 0, "{body}");
        }
        let one = parse(r#"{"orderbook_fp":{"yes_dollars":[["0.9530","813.44"]],"no_dollars":null}}"#).unwrap();
        assert_eq!((one.yes.len(), one.no.len()), (1, 0));
        assert_eq!(one.yes[0].price_text, "0.9530");
    }

    #[test]
    fn malformed_replies_are_errors_and_bad_levels_are_counted() {
        for (body, why) in [
            ("[]", "not a JSON object"),
            ("{\"error\":\"too many requests\"}", "error reply"),
            ("{\"code\":\"not_found\",\"message\":\"market not found\"}", "error reply"),
            ("{}", "no orderbook_fp"),
            ("{\"orderbook_fp\":{\"yes_dollars\":\"0.42\"}}", "not an array"),
            ("{\"orderbook_fp\":{\"yes_dollars\":[], \"no_dollars\":{}}}", "not an array"),
            ("nope", "not JSON"),
        ] {
            assert!(parse(body).unwrap_err().contains(why), "{body}");
        }
        let b = parse(
            r#"{"orderbook_fp":{"yes_dollars":[["0.42","13"],["0.43"],["x","1"],[0.44,"1"],{"price":"0.1"},["0.45","1","2"],["0.46",2.5]],
            "no_dollars":[["0.1","-1"]]}}"#,
        )
        .unwrap();
        assert_eq!((b.yes.len(), b.no.len(), b.bad_levels), (1, 1, 6));
        // Legacy cents: a fractional or negative number is not a level (no f64 anywhere).
        let c = parse(r#"{"orderbook":{"yes":[[42.5,1],[-3,1],[42,1.5],[41,"2.50"]]}}"#).unwrap();
        assert_eq!((c.yes.len(), c.bad_levels), (1, 3));
        assert_eq!((c.yes[0].price_text.as_str(), c.yes[0].size_text.as_str()), ("0.41", "2.50"));
    }
}
