//! Borrowing, total parsers for raw envelopes and book bodies: every JSON shape is accepted (a wrong
//! shape becomes `None`/`NotObject`, never a parse error), strings borrow from the input line when
//! they carry no escapes, and scalar fields that enter the book hash are kept as raw JSON text.
//!
//! A string that is valid JSON text but not a Rust string (a lone surrogate such as `"\ud800"`)
//! fails only its own book: [`env`] and [`body`] parse fast first and, when that fails, parse again
//! element by element, so such a book becomes [`Item::Unreadable`] / [`Body::Unreadable`] with the
//! reason and every other book of the reply is kept.

use std::cell::Cell;

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// A raw envelope (`pmarchive.raw/1`): only the fields pm-normalize reads; others are skipped.
///
/// Why not [`crate::envelope::RawLine`] (the envelope's reader type): pm-normalize reads every
/// line first with its own one-pass reader ([`super::fast`], about twice as fast as serde on the
/// venue's lines); this type is what that reader returns and the serde definition it falls back
/// to. `RawLine` types every envelope field, so a line whose `tool`, `host`, `sent_at_utc`… has the
/// wrong JSON type fails as a whole there, while pm-normalize keeps its books (those fields are not
/// in the rows); and its `ctx` as `&RawValue` leaves it without a `Default`, which the hot-path
/// reader and pm-rebuild build on. What keeps the three in step: `fast::tests` (the hot-path
/// reader gives this type's exact value or leaves the line to serde) and
/// `tests::env_reads_the_envelope_like_raw_line` (the same lines accepted and rejected as
/// `RawLine`, the same values, except for exactly that difference).
#[derive(serde::Deserialize, Default)]
pub struct Env<'a> {
    #[serde(borrow, default)]
    pub schema: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub venue: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub run_id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(borrow, default)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub endpoint: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub collected_at_utc: Option<Cow<'a, str>>,
    #[serde(default)]
    pub attempt: Option<u64>,
    #[serde(default)]
    pub status: Option<u64>,
    #[serde(borrow, default)]
    pub body_kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub body: Option<Body<'a>>,
    #[serde(borrow, default)]
    pub body_text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub body_error: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub error: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub ctx: Option<&'a RawValue>,
}

/// The context fields pm-normalize uses (pm-books' `ctx`, docs/DATA_CONTRACT.md).
#[derive(serde::Deserialize, Default)]
pub struct Ctx<'a> {
    #[serde(default)]
    pub slot: Option<i64>,
    #[serde(borrow, default)]
    pub due_at_utc: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub gap: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub token_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub slug: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub outcome: Option<Cow<'a, str>>,
    /// kalshi-books: the market polled (http and gap lines).
    #[serde(borrow, default)]
    pub ticker: Option<Cow<'a, str>>,
}

/// `ctx` of a `track` line, owned (rare).
#[derive(serde::Deserialize, Default)]
pub struct TrackCtx {
    #[serde(default)]
    pub slug: Option<String>,
    #[serde(default)]
    pub condition_id: Option<String>,
    #[serde(default)]
    pub family: Option<String>,
    #[serde(default)]
    pub tokens: Vec<TokenRef>,
}

/// `{token_id, outcome}` as in track lines and market records.
#[derive(serde::Deserialize, Default, Clone)]
pub struct TokenRef {
    pub token_id: String,
    #[serde(default)]
    pub outcome: Option<String>,
}

/// Parses a raw envelope line; see the module docs for the element-by-element fallback. A line that
/// no parse accepts is parsed once more through the general side visitor ([`classic`]), so that its
/// error (the `detail` of its bad_input row) is worded exactly as before the fast side reader.
pub fn env(text: &str) -> Result<Env<'_>, serde_json::Error> {
    serde_json::from_str(text)
        .or_else(|_| careful(|| serde_json::from_str(text)))
        .or_else(|_| classic(|| serde_json::from_str(text)))
}

/// Parses a body given as text (`json_text`), with the same fallbacks as [`env`].
pub fn body(text: &str) -> Result<Body<'_>, serde_json::Error> {
    serde_json::from_str(text)
        .or_else(|_| careful(|| serde_json::from_str(text)))
        .or_else(|_| classic(|| serde_json::from_str(text)))
}

thread_local! {
    /// Set while [`env`]/[`body`] re-parse after a failure: bodies are then parsed element by element.
    static CAREFUL: Cell<bool> = const { Cell::new(false) };
    /// Set while [`env`]/[`body`] parse a line that failed for its error: sides through [`SideV`].
    static CLASSIC: Cell<bool> = const { Cell::new(false) };
}

fn classic<T>(f: impl FnOnce() -> T) -> T {
    let before = CLASSIC.replace(true);
    let r = f();
    CLASSIC.set(before);
    r
}

fn careful<T>(f: impl FnOnce() -> T) -> T {
    let before = CAREFUL.replace(true);
    let r = f();
    CAREFUL.set(before);
    r
}

/// The careful path of [`Body`]: the body is taken as raw JSON text (which accepts any escape), then
/// parsed fast; when that fails, an array is parsed one element at a time.
fn body_carefully<'de>(raw: &'de RawValue) -> Body<'de> {
    let fast = |t: &'de str| {
        let before = CAREFUL.replace(false);
        let r = serde_json::from_str::<Body<'de>>(t);
        CAREFUL.set(before);
        r
    };
    let text = raw.get();
    match fast(text) {
        Ok(b) => b,
        Err(e) => match serde_json::from_str::<Vec<&'de RawValue>>(text) {
            Ok(items) => Body::Array(
                items
                    .into_iter()
                    .map(|r| {
                        let before = CAREFUL.replace(false);
                        let item = serde_json::from_str::<Item<'de>>(r.get());
                        CAREFUL.set(before);
                        item.unwrap_or_else(|e| Item::Unreadable(e.to_string()))
                    })
                    .collect(),
            ),
            Err(_) => Body::Unreadable(e.to_string()),
        },
    }
}

/// A reply body as far as books go. (Lives on the stack while its line is handled: boxing the
/// book would cost an allocation per reply.)
#[allow(clippy::large_enum_variant)]
pub enum Body<'a> {
    /// `/books`: an array of book objects (or junk elements).
    Array(Vec<Item<'a>>),
    /// `/book` (or an error object such as `{"error":"…"}`).
    Object(Book<'a>),
    /// Any other JSON value.
    Other,
    /// A `/book` object that is valid JSON text but has a string no parser can hold (a lone
    /// surrogate escape); the reason.
    Unreadable(String),
}

/// One element of a `/books` array.
#[allow(clippy::large_enum_variant)]
pub enum Item<'a> {
    Book(Book<'a>),
    NotObject,
    /// A book that is valid JSON text but has a string no parser can hold (a lone surrogate
    /// escape); the reason. The other books of the reply are not affected.
    Unreadable(String),
}

/// One level as sent; `None` for a missing or non-string price/size (or a level that is not an object).
#[derive(Debug, Default)]
pub struct Level<'a> {
    pub price: Option<Cow<'a, str>>,
    pub size: Option<Cow<'a, str>>,
}

/// A book object as sent. Fields absent or of the wrong type are `None`.
#[derive(Default)]
pub struct Book<'a> {
    pub market: Option<Cow<'a, str>>,
    pub asset_id: Option<Cow<'a, str>>,
    pub timestamp: Option<Cow<'a, str>>,
    pub hash: Option<Cow<'a, str>>,
    /// None when missing or not an array.
    pub bids: Option<Vec<Level<'a>>>,
    pub asks: Option<Vec<Level<'a>>>,
    pub min_order_size: Option<&'a RawValue>,
    pub tick_size: Option<&'a RawValue>,
    pub neg_risk: Option<&'a RawValue>,
    pub last_trade_price: Option<&'a RawValue>,
    /// An `error` member (error replies such as `{"error":"Invalid token id"}`).
    pub error: Option<&'a RawValue>,
    /// Members not in the REST book schema (facts §4.1).
    pub unknown_fields: u32,
}

/// A string (borrowed when possible), or None for any other JSON value (consumed).
pub struct Str<'a>(pub Option<Cow<'a, str>>);

/// Visitor methods that take any scalar (bool, number, null) as `$v`; with `strings`, any string too.
/// Shared by the typed, borrowed parsers of pm-normalize, pm-rebuild and `manifest` (the body peek).
macro_rules! ignore_scalars {
    ($v:expr, strings) => {
        fn visit_borrowed_str<E>(self, _: &'de str) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($v)
        }
        $crate::normalize::parse::ignore_scalars!($v);
    };
    ($v:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok($v)
        }
    };
}
pub(crate) use ignore_scalars;

/// Consumes the rest of an array.
pub(crate) fn skip_seq<'de, A: SeqAccess<'de>>(mut a: A) -> Result<(), A::Error> {
    while a.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Consumes the rest of an object.
pub(crate) fn skip_map<'de, A: MapAccess<'de>>(mut a: A) -> Result<(), A::Error> {
    while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

struct StrV;

impl<'de> Visitor<'de> for StrV {
    type Value = Str<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Str(Some(Cow::Borrowed(v))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Str(Some(Cow::Owned(v.to_owned()))))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Str(Some(Cow::Owned(v))))
    }
    ignore_scalars!(Str(None));
    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        skip_seq(a)?;
        Ok(Str(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        skip_map(a)?;
        Ok(Str(None))
    }
}

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrV)
    }
}

struct LevelV;

impl<'de> Visitor<'de> for LevelV {
    type Value = Level<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a level")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut l = Level::default();
        while let Some(k) = a.next_key::<Str<'de>>()? {
            match k.0.as_deref() {
                Some("price") => l.price = a.next_value::<Str<'de>>()?.0,
                Some("size") => l.size = a.next_value::<Str<'de>>()?.0,
                _ => {
                    a.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(l)
    }
    ignore_scalars!(Level::default(), strings);
    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        skip_seq(a)?;
        Ok(Level::default())
    }
}

impl<'de> Deserialize<'de> for Level<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LevelV)
    }
}

/// A side: Some(levels) for an array, None for anything else.
pub struct Side<'a>(pub Option<Vec<Level<'a>>>);

struct SideV;

impl<'de> Visitor<'de> for SideV {
    type Value = Side<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a book side")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut v = Vec::with_capacity(a.size_hint().unwrap_or(16));
        while let Some(l) = a.next_element::<Level<'de>>()? {
            v.push(l);
        }
        Ok(Side(Some(v)))
    }
    ignore_scalars!(Side(None), strings);
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        skip_map(a)?;
        Ok(Side(None))
    }
}

/// A side through the general visitor ([`SideV`]).
struct SlowSide<'a>(Side<'a>);

impl<'de> Deserialize<'de> for SlowSide<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SideV).map(SlowSide)
    }
}

impl<'de> Deserialize<'de> for Side<'de> {
    /// The side is taken as raw JSON text (serde_json checks its syntax), then read by
    /// [`canonical_side`] when it has the venue's shape; any other text goes through the general
    /// visitor, which gives the same result for the canonical shape, only slower.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if CLASSIC.get() {
            return d.deserialize_any(SideV);
        }
        let raw = <&'de RawValue>::deserialize(d)?;
        match canonical_side(raw.get()) {
            Some(levels) => Ok(Side(Some(levels))),
            None => serde_json::from_str::<SlowSide<'de>>(raw.get()).map(|s| s.0).map_err(serde::de::Error::custom),
        }
    }
}

/// The levels of a side written exactly as the venue writes them, `[{"price":"…","size":"…"},…]`
/// (no blanks, these two keys in this order, strings without escapes), borrowed from `t`; None for
/// any other text. `t` is JSON already checked by serde_json, so a string without a backslash ends
/// at the next `"` and holds no control character.
fn canonical_side(t: &str) -> Option<Vec<Level<'_>>> {
    const PRICE: &[u8] = b"{\"price\":\"";
    const SIZE: &[u8] = b"\",\"size\":\"";
    let b = t.as_bytes();
    if b == b"[]" {
        return Some(Vec::new());
    }
    if b.first() != Some(&b'[') {
        return None;
    }
    // A string's end: the next `"`; None when a backslash comes first.
    let string_end = |from: usize| -> Option<usize> {
        let n = b[from..].iter().position(|&c| c == b'"' || c == b'\\')?;
        (b[from + n] == b'"').then_some(from + n)
    };
    let mut levels = Vec::with_capacity(b.len() / 36 + 1);
    let mut i = 1;
    loop {
        if !b[i..].starts_with(PRICE) {
            return None;
        }
        let p = i + PRICE.len();
        let pe = string_end(p)?;
        if !b[pe..].starts_with(SIZE) {
            return None;
        }
        let s = pe + SIZE.len();
        let se = string_end(s)?;
        if b.get(se + 1) != Some(&b'}') {
            return None;
        }
        levels.push(Level { price: Some(Cow::Borrowed(&t[p..pe])), size: Some(Cow::Borrowed(&t[s..se])) });
        i = se + 2;
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b']') if i + 1 == b.len() => return Some(levels),
            _ => return None,
        }
    }
}

fn book_from_map<'de, A: MapAccess<'de>>(mut a: A) -> Result<Book<'de>, A::Error> {
    let mut b = Book::default();
    while let Some(k) = a.next_key::<Str<'de>>()? {
        match k.0.as_deref() {
            Some("market") => b.market = a.next_value::<Str<'de>>()?.0,
            Some("asset_id") => b.asset_id = a.next_value::<Str<'de>>()?.0,
            Some("timestamp") => b.timestamp = a.next_value::<Str<'de>>()?.0,
            Some("hash") => b.hash = a.next_value::<Str<'de>>()?.0,
            Some("bids") => b.bids = a.next_value::<Side<'de>>()?.0,
            Some("asks") => b.asks = a.next_value::<Side<'de>>()?.0,
            Some("min_order_size") => b.min_order_size = Some(a.next_value()?),
            Some("tick_size") => b.tick_size = Some(a.next_value()?),
            Some("neg_risk") => b.neg_risk = Some(a.next_value()?),
            Some("last_trade_price") => b.last_trade_price = Some(a.next_value()?),
            Some("error") => b.error = Some(a.next_value()?),
            _ => {
                b.unknown_fields += 1;
                a.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(b)
}

struct ItemV;

impl<'de> Visitor<'de> for ItemV {
    type Value = Item<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a book")
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        Ok(Item::Book(book_from_map(a)?))
    }
    fn visit_borrowed_str<E>(self, _: &'de str) -> Result<Self::Value, E> {
        Ok(Item::NotObject)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Item::NotObject)
    }
    ignore_scalars!(Item::NotObject);
    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        skip_seq(a)?;
        Ok(Item::NotObject)
    }
}

impl<'de> Deserialize<'de> for Item<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemV)
    }
}

struct BodyV<'a>(std::marker::PhantomData<&'a ()>);

// Generic over 'de: 'a (like serde_json's `&RawValue`) so that `#[serde(borrow)]` works on it.
impl<'de: 'a, 'a> Visitor<'de> for BodyV<'a> {
    type Value = Body<'a>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a reply body")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut v = Vec::with_capacity(a.size_hint().unwrap_or(4));
        while let Some(i) = a.next_element::<Item<'de>>()? {
            v.push(i);
        }
        Ok(Body::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        Ok(Body::Object(book_from_map(a)?))
    }
    fn visit_borrowed_str<E>(self, _: &'de str) -> Result<Self::Value, E> {
        Ok(Body::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Body::Other)
    }
    ignore_scalars!(Body::Other);
}

impl<'de: 'a, 'a> Deserialize<'de> for Body<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if CAREFUL.get() {
            return Ok(body_carefully(<&'de RawValue>::deserialize(d)?));
        }
        d.deserialize_any(BodyV(std::marker::PhantomData))
    }
}

/// The JSON text `serde_json::Value::to_string` gives for a scalar (what the venue's hash uses):
/// the raw text itself for strings without escapes, booleans and null; re-printed otherwise.
pub fn hash_scalar_text(raw: &RawValue) -> Cow<'_, str> {
    let t = raw.get();
    let plain_string = t.len() >= 2 && t.starts_with('"') && !t.contains('\\');
    if plain_string || t == "true" || t == "false" || t == "null" {
        Cow::Borrowed(t)
    } else {
        match serde_json::from_str::<serde_json::Value>(t) {
            Ok(v) => Cow::Owned(v.to_string()),
            Err(_) => Cow::Borrowed(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_books_envelope_borrowing() {
        let line = br#"{"schema":"pmarchive.raw/1","kind":"http","endpoint":"books","seq":3,"status":200,"headers":{"x":"y"},"body":[{"market":"0x1","asset_id":"7","timestamp":"1","hash":"h","bids":[{"price":"0.1","size":"2"},{"price":3,"size":"1"},"junk"],"asks":"nope","min_order_size":"5","tick_size":"0.01","neg_risk":false,"last_trade_price":"","extra":{"a":[1]}},17],"ctx":{"slot":4}}"#;
        let e: Env = serde_json::from_slice(line).unwrap();
        assert_eq!(e.seq, Some(3));
        let Some(Body::Array(items)) = e.body else { panic!("array") };
        assert_eq!(items.len(), 2);
        let Item::Book(b) = &items[0] else { panic!("book") };
        assert!(matches!(b.asset_id, Some(Cow::Borrowed("7"))));
        let bids = b.bids.as_ref().unwrap();
        assert_eq!(bids.len(), 3);
        assert_eq!(bids[0].price.as_deref(), Some("0.1"));
        assert!(bids[1].price.is_none() && bids[2].size.is_none());
        assert!(b.asks.is_none());
        assert_eq!(b.unknown_fields, 1);
        assert_eq!(b.tick_size.unwrap().get(), "\"0.01\"");
        assert!(matches!(items[1], Item::NotObject));
    }

    #[test]
    fn a_lone_surrogate_spoils_only_its_own_book() {
        let book = |id: &str, m: &str| format!(r#"{{"market":"{m}","asset_id":"{id}","bids":[],"asks":[]}}"#);
        let reply = format!("[{},{},{}]", book("1", "0x1"), book("2", r"0x\ud800"), book("3", "0x3"));
        let line =
            format!(r#"{{"schema":"pmarchive.raw/1","kind":"http","endpoint":"books","status":200,"body":{reply}}}"#);
        assert!(serde_json::from_str::<Env>(&line).is_err(), "the plain parse fails on the whole line");
        let e = env(&line).unwrap();
        assert_eq!(e.status, Some(200));
        let Some(Body::Array(items)) = e.body else { panic!("array") };
        assert_eq!(items.len(), 3);
        assert!(matches!(&items[0], Item::Book(b) if b.asset_id.as_deref() == Some("1")));
        assert!(matches!(&items[1], Item::Unreadable(why) if why.contains("escape")), "flagged");
        assert!(matches!(&items[2], Item::Book(b) if b.asset_id.as_deref() == Some("3")));
        // The same as json_text, and a single /book object.
        let Ok(Body::Array(items)) = body(&reply) else { panic!("array") };
        assert_eq!(items.iter().filter(|i| matches!(i, Item::Book(_))).count(), 2);
        assert!(matches!(body(&book("2", r"\udc00")), Ok(Body::Unreadable(_))));
        // Not JSON at all is still an error (the first one).
        assert!(env("{not json").is_err());
    }

    #[test]
    fn canonical_sides_read_like_the_general_visitor() {
        let cases = [
            r#"[]"#,
            r#"[{"price":"0.01","size":"12.5"}]"#,
            r#"[{"price":"0.01","size":"12.5"},{"price":"0.02","size":"3"}]"#,
            r#"[ {"price":"0.01","size":"12.5"}]"#,
            r#"[{"size":"1","price":"0.5"}]"#,
            r#"[{"price":"0.\u0035","size":"1"}]"#,
            r#"[{"price":0.5,"size":"1"},"x",{"price":"","size":""}]"#,
            r#"[{"price":"0.5","size":"1","x":2}]"#,
            r#"{"price":"0.5"}"#,
            r#""nope""#,
            r#"[[]]"#,
        ];
        type Shown = Option<Vec<(Option<String>, Option<String>, bool)>>;
        let show = |s: &Side| -> Shown {
            s.0.as_ref().map(|v| {
                v.iter()
                    .map(|l| {
                        let borrowed =
                            matches!(l.price, Some(Cow::Borrowed(_))) && matches!(l.size, Some(Cow::Borrowed(_)));
                        (l.price.as_deref().map(String::from), l.size.as_deref().map(String::from), borrowed)
                    })
                    .collect()
            })
        };
        for c in cases {
            let fast: Side = serde_json::from_str(c).unwrap();
            let slow: SlowSide = serde_json::from_str(c).unwrap();
            assert_eq!(show(&fast), show(&slow.0), "{c}");
        }
        assert!(canonical_side(r#"[{"price":"0.01","size":"12.5"}]"#).is_some());
        assert!(canonical_side(r#"[{"price":"0.01","size":"12.5"},]"#).is_none());
        // A line no parse accepts keeps the general visitor's error (a bad_input row's `detail`).
        let head = r#"{"schema":"pmarchive.raw/1","kind":"http","status":200,"body":[{"asset_id":"1","bids":"#;
        for (side, want) in [
            (r#"[{"price":"0.5","size":"1"},]}]}"#, "trailing comma at line 1 column 115"),
            (r#"[{"price":"\ud800","size":"1"}],"asks":[]}]"#, "unexpected end of hex escape at line 1 column 104"),
        ] {
            let e = env(&format!("{head}{side}")).err().expect("not JSON");
            assert_eq!(e.to_string(), want);
        }
        // A lone surrogate in a level still fails the side (and only its book, see above).
        assert!(serde_json::from_str::<Side>(r#"[{"price":"\ud800","size":"1"}]"#).is_err());
    }

    /// [`Env`] and [`crate::envelope::RawLine`] read the envelope's fields alike: the same lines
    /// accepted, the same values; the one difference is a wrongly typed field pm-normalize does not
    /// use (kept here, refused by `RawLine`).
    #[test]
    fn env_reads_the_envelope_like_raw_line() {
        type Raw<'a> = crate::envelope::RawLine<'a>;
        let line = r#"{"schema":"pmarchive.raw/1","venue":"polymarket","tool":"pm-books","collector_version":"0.1.0","run_id":"r","host":"h","seq":4,"kind":"http","endpoint":"books","sent_at_utc":"2026-08-13T00:00:00.000000Z","collected_at_utc":"2026-08-13T00:00:00.100000Z","elapsed_ms":84.5,"attempt":2,"request":{"method":"POST"},"status":200,"headers":{},"body_kind":"json","body":[{"asset_id":"1","bids":[{"price":"0.5","size":"1"}]}],"ctx":{"slot":1}}"#;
        let show = |e: &Env| {
            let f = [&e.schema, &e.venue, &e.run_id, &e.kind, &e.endpoint, &e.collected_at_utc, &e.body_kind];
            format!(
                "{f:?} {:?} {:?} {:?} {:?} {:?} {:?}",
                e.seq, e.attempt, e.status, e.body_text, e.body_error, e.error
            )
        };
        let show_raw = |e: &Raw| {
            let f = [&e.schema, &e.venue, &e.run_id, &e.kind, &e.endpoint, &e.collected_at_utc, &e.body_kind];
            format!(
                "{f:?} {:?} {:?} {:?} {:?} {:?} {:?}",
                e.seq, e.attempt, e.status, e.body_text, e.body_error, e.error
            )
        };
        let same = [
            line.to_string(),
            line.replace(r#""seq":4"#, r#""seq":null"#),
            line.replace(r#""seq":4"#, r#""seq":-4"#),
            line.replace(r#""seq":4"#, r#""seq":4.5"#),
            line.replace(r#""seq":4"#, r#""seq":"4""#),
            line.replace(r#""kind":"http""#, r#""kind":7"#),
            line.replace(r#""run_id":"r""#, r#""run_id":"\u0072""#),
            line.replace(r#""run_id":"r","#, r#""run_id":"r","run_id":"s","#),
            line.replace(r#""body_kind":"json""#, r#""body_kind":"json_text","body_text":"[]""#),
            line.replace(r#""status":200"#, r#""status":null,"error":"timeout""#),
            line.replace(r#""elapsed_ms":84.5"#, r#""elapsed_ms":"x""#),
            line.replace(r#""request":{"method":"POST"}"#, r#""request":[1,{"a":null}]"#),
            format!("{line} x"),
            line[..line.len() - 2].to_string(),
            "[]".to_string(),
            "{}".to_string(),
        ];
        for l in &same {
            match (env(l), serde_json::from_str::<Raw>(l)) {
                (Ok(e), Ok(r)) => assert_eq!(show(&e), show_raw(&r), "{l}"),
                (Err(_), Err(_)) => {}
                (e, r) => panic!("accepted by one only ({}, {}): {l}", e.is_ok(), r.is_ok()),
            }
        }
        for l in [line.replace(r#""host":"h""#, r#""host":5"#), line.replace(r#""tool":"pm-books""#, r#""tool":[]"#)] {
            assert!(env(&l).is_ok() && serde_json::from_str::<Raw>(&l).is_err(), "{l}");
        }
    }

    #[test]
    fn scalar_text_for_hash() {
        let r: &RawValue = serde_json::from_str("5.00").unwrap();
        assert_eq!(hash_scalar_text(r), "5.0");
        let r: &RawValue = serde_json::from_str("\"0.01\"").unwrap();
        assert_eq!(hash_scalar_text(r), "\"0.01\"");
    }
}
