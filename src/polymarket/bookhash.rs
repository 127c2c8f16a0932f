//! The venue's order-book hash (facts §6.3): SHA-1 hex of the compact JSON of
//! `{"market","asset_id","timestamp","hash":"","bids":[{"price","size"}…],"asks":[…],
//! "min_order_size","tick_size","neg_risk","last_trade_price"}` in that key order, values as they
//! arrived (strings stay strings), levels in wire order (bids ascending, asks descending).
//! One implementation, used by pm-normalize (REST books) and the websocket book rebuild.

use serde_json::Value;
use sha1::{Digest, Sha1};

/// The fields of a book that enter the hash. Prices, sizes and timestamp are the wire strings.
#[derive(Clone, Debug, PartialEq)]
pub struct HashInput<'a> {
    pub market: &'a str,
    pub asset_id: &'a str,
    pub timestamp: &'a str,
    pub bids: Vec<(&'a str, &'a str)>,
    pub asks: Vec<(&'a str, &'a str)>,
    /// As on the wire (REST: string "5"); WS books lack it — pass the REST/Gamma value.
    pub min_order_size: &'a Value,
    pub tick_size: &'a Value,
    pub neg_risk: &'a Value,
    pub last_trade_price: &'a Value,
}

/// The exact text that is hashed (one writer: [`write_hash_text`]).
pub fn hash_text(b: &HashInput<'_>) -> String {
    let tail =
        [b.min_order_size.to_string(), b.tick_size.to_string(), b.neg_risk.to_string(), b.last_trade_price.to_string()];
    let mut out = Vec::with_capacity(256 + 48 * (b.bids.len() + b.asks.len()));
    write_hash_text(
        &mut out,
        b.market,
        b.asset_id,
        b.timestamp,
        b.bids.iter().copied(),
        b.asks.iter().copied(),
        [&tail[0], &tail[1], &tail[2], &tail[3]],
    );
    String::from_utf8(out).expect("JSON text is UTF-8")
}

/// 40 lowercase hex characters.
pub fn hash(b: &HashInput<'_>) -> String {
    crate::util::hex(&Sha1::digest(hash_text(b).as_bytes()))
}

/// Levels of a wire book side as (price, size) string pairs; None if any level is malformed.
pub fn levels(v: &Value) -> Option<Vec<(&str, &str)>> {
    v.as_array()?.iter().map(|l| Some((l.get("price")?.as_str()?, l.get("size")?.as_str()?))).collect()
}

/// Recomputes the hash of a REST `/book` object (as parsed). None when a field is missing.
pub fn hash_of_rest_book(v: &Value) -> Option<String> {
    let input = HashInput {
        market: v.get("market")?.as_str()?,
        asset_id: v.get("asset_id")?.as_str()?,
        timestamp: v.get("timestamp")?.as_str()?,
        bids: levels(v.get("bids")?)?,
        asks: levels(v.get("asks")?)?,
        min_order_size: v.get("min_order_size")?,
        tick_size: v.get("tick_size")?,
        neg_risk: v.get("neg_risk")?,
        last_trade_price: v.get("last_trade_price")?,
    };
    Some(hash(&input))
}

/// Appends `s` as a JSON string exactly as [`hash_text`] spells it (serde_json escaping; a fast path
/// copies strings that need no escaping).
pub fn put_json_str(out: &mut Vec<u8>, s: &str) {
    // Branch-free over 16-byte blocks (vectorizes): this runs for every string of every hash text.
    let needs_escape = |b: &[u8]| b.iter().fold(false, |acc, &c| acc | (c < 0x20) | (c == b'"') | (c == b'\\'));
    let (blocks, tail) = s.as_bytes().split_at(s.len() & !15);
    if !blocks.chunks_exact(16).any(needs_escape) && !needs_escape(tail) {
        // One capacity check for the three pieces.
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("string serializes");
    }
}

/// The same text as [`hash_text`], written into a reusable buffer (cleared first) without
/// allocating per level: for bulk normalization. `tail` holds the JSON text of `min_order_size`,
/// `tick_size`, `neg_risk` and `last_trade_price` exactly as `serde_json::Value::to_string` prints
/// them (for strings without escapes and for booleans that is the wire text).
pub fn write_hash_text<'s>(
    out: &mut Vec<u8>,
    market: &str,
    asset_id: &str,
    timestamp: &str,
    bids: impl Iterator<Item = (&'s str, &'s str)>,
    asks: impl Iterator<Item = (&'s str, &'s str)>,
    tail: [&str; 4],
) {
    write_hash_text_with(out, market, asset_id, timestamp, |o| put_levels(o, bids), |o| put_levels(o, asks), tail);
}

/// [`write_hash_text`] with the two level arrays written by the caller (`[` … `]`, each level as
/// [`put_level`] writes it): pm-rebuild keeps every level's text with its book.
pub fn write_hash_text_with(
    out: &mut Vec<u8>,
    market: &str,
    asset_id: &str,
    timestamp: &str,
    bids: impl FnOnce(&mut Vec<u8>),
    asks: impl FnOnce(&mut Vec<u8>),
    tail: [&str; 4],
) {
    out.clear();
    out.extend_from_slice(b"{\"market\":");
    put_json_str(out, market);
    out.extend_from_slice(b",\"asset_id\":");
    put_json_str(out, asset_id);
    out.extend_from_slice(b",\"timestamp\":");
    put_json_str(out, timestamp);
    out.extend_from_slice(b",\"hash\":\"\",\"bids\":");
    bids(out);
    out.extend_from_slice(b",\"asks\":");
    asks(out);
    for (key, text) in ["min_order_size", "tick_size", "neg_risk", "last_trade_price"].iter().zip(tail) {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(text.as_bytes());
    }
    out.push(b'}');
}

/// One level as it appears in the hash text: `{"price":…,"size":…}`.
pub fn put_level(out: &mut Vec<u8>, price: &str, size: &str) {
    out.extend_from_slice(b"{\"price\":");
    put_json_str(out, price);
    out.extend_from_slice(b",\"size\":");
    put_json_str(out, size);
    out.push(b'}');
}

fn put_levels<'s>(out: &mut Vec<u8>, levels: impl Iterator<Item = (&'s str, &'s str)>) {
    out.push(b'[');
    for (i, (p, s)) in levels.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        put_level(out, p, s);
    }
    out.push(b']');
}

/// SHA-1 of bytes as 40 lowercase hex characters, written into `out` (no allocation).
pub fn sha1_hex_into(bytes: &[u8], out: &mut [u8; 40]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = Sha1::digest(bytes);
    for (i, b) in d.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 15) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ../shared/fixtures/polymarket/clob_book_rest_empty_ask.json (real, captured 2026-08-03).
    const RECORDED_REST_BOOK: &str = r#"{"market":"0x9d839bf0aa31324b9848f5b89841b779238a7c07dee2f7fca675d934e8ab5bf2",
        "asset_id":"72610532355343625199299853218161700546393390326785971247545541945337255643692",
        "timestamp":"1785734468581","hash":"d7df883ae546b09533a4f485bfae0810da1af04e",
        "bids":[{"price":"0.001","size":"667.12"},{"price":"0.002","size":"6.99"}],"asks":[],
        "min_order_size":"5","tick_size":"0.001","neg_risk":true,"last_trade_price":""}"#;

    #[test]
    fn reproduces_the_recorded_rest_hash() {
        let v: Value = serde_json::from_str(RECORDED_REST_BOOK).unwrap();
        assert_eq!(hash_of_rest_book(&v).unwrap(), "d7df883ae546b09533a4f485bfae0810da1af04e");
    }

    #[test]
    fn missing_field_gives_none() {
        let v: Value = serde_json::from_str(r#"{"market":"0x1"}"#).unwrap();
        assert!(hash_of_rest_book(&v).is_none());
    }

    #[test]
    fn buffered_hash_text_equals_hash_text() {
        let v: Value = serde_json::from_str(RECORDED_REST_BOOK).unwrap();
        let bids = levels(&v["bids"]).unwrap();
        let mut buf = Vec::new();
        write_hash_text(
            &mut buf,
            v["market"].as_str().unwrap(),
            v["asset_id"].as_str().unwrap(),
            v["timestamp"].as_str().unwrap(),
            bids.iter().copied(),
            std::iter::empty(),
            ["\"5\"", "\"0.001\"", "true", "\"\""],
        );
        let input = HashInput {
            market: v["market"].as_str().unwrap(),
            asset_id: v["asset_id"].as_str().unwrap(),
            timestamp: v["timestamp"].as_str().unwrap(),
            bids,
            asks: vec![],
            min_order_size: &v["min_order_size"],
            tick_size: &v["tick_size"],
            neg_risk: &v["neg_risk"],
            last_trade_price: &v["last_trade_price"],
        };
        assert_eq!(String::from_utf8(buf.clone()).unwrap(), hash_text(&input));
        let mut hex = [0u8; 40];
        sha1_hex_into(&buf, &mut hex);
        assert_eq!(&hex, b"d7df883ae546b09533a4f485bfae0810da1af04e");
    }
}
