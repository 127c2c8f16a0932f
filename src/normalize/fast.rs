//! pm-normalize's hot-path reader: one hand-written pass over a raw line that gives exactly the
//! [`Env`] the serde reader ([`super::parse::env`]) gives, plus where each book's `bids`/`asks` text is in
//! the line (the venue's hash text of a side in its canonical shape is that text, so the hash input
//! is copied, not re-written: [`super::Rows`]).
//!
//! Why a second reader: the serde reader scans each side twice (once as raw JSON text, once for its
//! shape) and cannot say where a side is in the line; this one reads the line once and is about
//! twice as fast on the venue's lines (perf, bench input: ~0.09 against ~0.19 CPU-s for reading the
//! lines; scripts/bench_normalize.sh measures the whole tool). It only accepts a subset of
//! JSON it is sure about — compact or spaced JSON without backslash escapes, sides in the venue's
//! shape, no number where the serde reader would have to convert one — and answers `None` for
//! anything else; the caller then uses [`super::parse::env`], which stays the definition. What keeps the
//! two in step: for every line this reader accepts, the serde reader gives the same [`Env`]
//! (tests below compare both, field by field, on hand-made lines and on 20,000 random mutations of
//! the venue's line; tests/normalize.rs checks the rows of the recorded loopback sample against
//! their golden sha256), and a line the serde
//! reader rejects is never accepted here (it would have to be invalid JSON, which this reader
//! checks as strictly as serde_json: strings, numbers, literals, nesting, trailing characters).
//! The cursor (strings, numbers, skipping, members) is [`crate::fastjson`], shared with
//! pm-rebuild's reader; this file is the REST book schema on it.

use std::borrow::Cow;

use super::parse::{Body, Book, Env, Item, Level};
use crate::fastjson::{once, Cursor};

/// The byte ranges of a book's `bids` and `asks` text in the line (when each is an array in the
/// venue's shape), by body element (`Body::Object`: element 0).
pub type SideText = [Option<(u32, u32)>; 2];

/// Reads `text` (one raw line) like [`super::parse::env`]; `sides` gets each book's [`SideText`].
/// `None`: the line is left to [`super::parse::env`] (see the module docs).
pub fn env<'a>(text: &'a str, sides: &mut Vec<SideText>) -> Option<Env<'a>> {
    sides.clear();
    if text.len() >= u32::MAX as usize {
        return None;
    }
    let mut p = Cursor::new(text, sides);
    p.ws();
    let env = p.envelope()?;
    p.at_end().then_some(env)
}

/// The reader: the shared cursor with the side ranges it finds.
type P<'a, 's> = Cursor<'a, &'s mut Vec<SideText>>;

impl<'a> P<'a, '_> {
    fn envelope(&mut self) -> Option<Env<'a>> {
        if self.peek()? != b'{' {
            return None;
        }
        self.i += 1;
        let mut e = Env::default();
        let mut seen = 0u32;
        self.members(|p, key| {
            let bit = match key {
                "schema" => 0,
                "venue" => 1,
                "run_id" => 2,
                "seq" => 3,
                "kind" => 4,
                "endpoint" => 5,
                "collected_at_utc" => 6,
                "attempt" => 7,
                "status" => 8,
                "body_kind" => 9,
                "body" => 10,
                "body_text" => 11,
                "body_error" => 12,
                "error" => 13,
                "ctx" => 14,
                _ => return p.skip(1),
            };
            once(&mut seen, bit)?;
            match bit {
                0 => e.schema = p.opt_str()?,
                1 => e.venue = p.opt_str()?,
                2 => e.run_id = p.opt_str()?,
                3 => e.seq = p.opt_u64()?,
                4 => e.kind = p.opt_str()?,
                5 => e.endpoint = p.opt_str()?,
                6 => e.collected_at_utc = p.opt_str()?,
                7 => e.attempt = p.opt_u64()?,
                8 => e.status = p.opt_u64()?,
                9 => e.body_kind = p.opt_str()?,
                10 => e.body = p.body()?,
                11 => e.body_text = p.opt_str()?,
                12 => e.body_error = p.opt_str()?,
                13 => e.error = p.opt_str()?,
                _ => {
                    p.ws();
                    e.ctx = match p.peek()? {
                        b'n' => p.literal(b"null").map(|_| None)?,
                        _ => Some(p.raw()?),
                    };
                }
            }
            Some(())
        })?;
        Some(e)
    }

    /// `body`: null, an array of items, a book object, or another value ([`Body::Other`]).
    fn body(&mut self) -> Option<Option<Body<'a>>> {
        self.ws();
        match self.peek()? {
            b'n' => self.literal(b"null").map(|_| None),
            b'[' => {
                self.i += 1;
                let mut items = Vec::with_capacity(4);
                self.elements(|p| {
                    p.ws();
                    let item = match p.peek()? {
                        b'{' => Item::Book(p.book(items.len())?),
                        b'"' | b'[' | b't' | b'f' | b'n' => p.skip(2).map(|_| Item::NotObject)?,
                        _ => return None,
                    };
                    items.push(item);
                    Some(())
                })?;
                Some(Some(Body::Array(items)))
            }
            b'{' => Some(Some(Body::Object(self.book(0)?))),
            b'"' | b't' | b'f' => self.skip(1).map(|_| Some(Body::Other)),
            _ => None,
        }
    }

    /// A book object at `i`; its side texts go to `sides[index]`.
    fn book(&mut self, index: usize) -> Option<Book<'a>> {
        self.i += 1;
        let mut b = Book::default();
        let mut text: SideText = [None, None];
        self.members(|p, key| {
            match key {
                "market" => b.market = p.str_or_none(2)?,
                "asset_id" => b.asset_id = p.str_or_none(2)?,
                "timestamp" => b.timestamp = p.str_or_none(2)?,
                "hash" => b.hash = p.str_or_none(2)?,
                "bids" => (b.bids, text[0]) = p.side()?,
                "asks" => (b.asks, text[1]) = p.side()?,
                "min_order_size" => b.min_order_size = Some(p.raw()?),
                "tick_size" => b.tick_size = Some(p.raw()?),
                "neg_risk" => b.neg_risk = Some(p.raw()?),
                "last_trade_price" => b.last_trade_price = Some(p.raw()?),
                "error" => b.error = Some(p.raw()?),
                _ => {
                    b.unknown_fields += 1;
                    p.skip(2)?;
                }
            }
            Some(())
        })?;
        if self.x.len() <= index {
            self.x.resize(index + 1, [None, None]);
        }
        self.x[index] = text;
        Some(b)
    }

    /// A side: an array in the venue's shape (its levels and text range), or a non-array value
    /// (no levels). None for an array of another shape (left to the serde reader).
    #[allow(clippy::type_complexity)]
    fn side(&mut self) -> Option<(Option<Vec<Level<'a>>>, Option<(u32, u32)>)> {
        self.ws();
        match self.peek()? {
            b'[' => {
                let s = self.i;
                let levels = self.canonical_side()?;
                Some((Some(levels), Some((s as u32, self.i as u32))))
            }
            b'{' | b'"' | b't' | b'f' | b'n' => self.skip(2).map(|_| (None, None)),
            _ => None,
        }
    }

    /// `[{"price":"…","size":"…"},…]` exactly (no blanks, these keys in this order, strings
    /// without escapes): the levels, borrowed.
    fn canonical_side(&mut self) -> Option<Vec<Level<'a>>> {
        const PRICE: &[u8] = b"{\"price\":\"";
        const SIZE: &[u8] = b"\",\"size\":\"";
        self.i += 1;
        let mut levels = Vec::with_capacity(32);
        if self.peek()? == b']' {
            self.i += 1;
            return Some(levels);
        }
        loop {
            if !self.b[self.i..].starts_with(PRICE) {
                return None;
            }
            self.i += PRICE.len() - 1;
            let price = self.string()?;
            if !self.b[self.i - 1..].starts_with(SIZE) {
                return None;
            }
            self.i += SIZE.len() - 2;
            let size = self.string()?;
            if self.peek()? != b'}' {
                return None;
            }
            self.i += 1;
            levels.push(Level { price: Some(Cow::Borrowed(price)), size: Some(Cow::Borrowed(size)) });
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(levels);
                }
                _ => return None,
            }
        }
    }
}

/// The text of a side range in `line`.
pub fn side_text(line: &str, r: (u32, u32)) -> &str {
    &line[r.0 as usize..r.1 as usize]
}

/// [`super::parse::env`] for the tests' comparisons.
#[cfg(test)]
fn serde_env(text: &str) -> Option<Env<'_>> {
    super::parse::env(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    /// Every field of an [`Env`] as text, for comparing two readers.
    fn show(e: &Env) -> String {
        fn lv(v: &Option<Vec<Level>>) -> String {
            match v {
                None => "None".into(),
                Some(v) => v.iter().map(|l| format!("({:?},{:?})", l.price, l.size)).collect::<Vec<_>>().join(""),
            }
        }
        fn bk(b: &Book) -> String {
            let raw = |r: Option<&RawValue>| r.map(|r| r.get().to_string());
            format!(
                "book[{:?} {:?} {:?} {:?} {} {} {:?} {:?} {:?} {:?} {:?} {}]",
                b.market,
                b.asset_id,
                b.timestamp,
                b.hash,
                lv(&b.bids),
                lv(&b.asks),
                raw(b.min_order_size),
                raw(b.tick_size),
                raw(b.neg_risk),
                raw(b.last_trade_price),
                raw(b.error),
                b.unknown_fields
            )
        }
        let body = match &e.body {
            None => "None".into(),
            Some(Body::Other) => "Other".into(),
            Some(Body::Unreadable(w)) => format!("Unreadable({w})"),
            Some(Body::Object(b)) => bk(b),
            Some(Body::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Item::Book(b) => bk(b),
                    Item::NotObject => "NotObject".into(),
                    Item::Unreadable(w) => format!("Unreadable({w})"),
                })
                .collect::<Vec<_>>()
                .join(","),
        };
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {} {:?} {:?} {:?} {:?}",
            e.schema,
            e.venue,
            e.run_id,
            e.seq,
            e.kind,
            e.endpoint,
            e.collected_at_utc,
            e.attempt,
            e.status,
            e.body_kind,
            body,
            e.body_text,
            e.body_error,
            e.error,
            e.ctx.map(|c| c.get())
        )
    }

    /// Both readers on `line`: same acceptance, same result when this reader takes it. Returns
    /// whether this reader took it.
    fn agree(line: &str) -> bool {
        let mut sides = Vec::new();
        let fast = env(line, &mut sides);
        let slow = serde_env(line);
        match (&fast, &slow) {
            (Some(f), Some(s)) => assert_eq!(show(f), show(s), "{line}"),
            (Some(_), None) => panic!("the hot-path reader accepts a line the serde reader rejects: {line}"),
            _ => {}
        }
        fast.is_some()
    }

    const LINE: &str = r#"{"schema":"pmarchive.raw/1","venue":"polymarket","tool":"pm-books","run_id":"r1","seq":7,"kind":"http","endpoint":"books","collected_at_utc":"2026-08-13T00:00:01.000000Z","elapsed_ms":84.5,"attempt":1,"request":{"method":"POST","params":{},"body":[{"token_id":"1"}]},"status":200,"headers":{"content-type":"application/json"},"body_kind":"json","body":[{"market":"0x1","asset_id":"1","timestamp":"1786604072222","hash":"ab","bids":[{"price":"0.01","size":"5"},{"price":"0.02","size":"7.5"}],"asks":[],"min_order_size":"5","tick_size":"0.01","neg_risk":false,"last_trade_price":"0.5"}],"ctx":{"slot":3,"due_at_utc":"2026-08-13T00:00:00Z"}}"#;

    #[test]
    fn the_venue_line_reads_like_serde_and_sides_are_located() {
        assert!(agree(LINE));
        let mut sides = Vec::new();
        env(LINE, &mut sides).unwrap();
        let [Some(b), Some(a)] = sides[0] else { panic!("both sides located") };
        assert_eq!(side_text(LINE, b), r#"[{"price":"0.01","size":"5"},{"price":"0.02","size":"7.5"}]"#);
        assert_eq!(side_text(LINE, a), "[]");
    }

    #[test]
    fn both_readers_agree_or_the_line_goes_to_serde() {
        let body = |b: &str| LINE.replace(r#""body":[{"market""#, &format!(r#""body":{b},"x":[{{"market""#));
        let taken = vec![
            LINE.to_string(),
            // blanks everywhere but inside the sides (a side with blanks is not in the venue's shape)
            LINE.replace(r#"{"price":"0.01","size":"5"},{"price":"0.02","size":"7.5"}"#, "")
                .replace("\":", "\" :\t")
                .replace(",\"", " ,\r\n\"")
                .replace(",{", ", {"),
            format!("  {LINE}\r\n "),
            LINE.replace(r#""asks":[]"#, r#""asks":null"#),
            LINE.replace(r#""asks":[]"#, r#""asks":{"a":[1,2.5e-3,{}]}"#),
            LINE.replace(r#""asks":[]"#, r#""asks":"none""#),
            LINE.replace(r#""market":"0x1""#, r#""market":null"#),
            LINE.replace(r#""market":"0x1""#, r#""market":[1,"x"]"#),
            LINE.replace(r#""neg_risk":false"#, r#""neg_risk":null,"extra":-0.5E+3"#),
            LINE.replace(r#""tick_size":"0.01""#, r#""tick_size":0.010"#),
            LINE.replace(r#""seq":7"#, r#""seq":null"#),
            LINE.replace(r#""ctx":{"slot":3,"#, r#""ctx":{ "slot" : 3 ,"#),
            LINE.replace(r#""ctx":{"slot":3,"due_at_utc":"2026-08-13T00:00:00Z"}"#, r#""ctx":null"#),
            body("[]"),
            body(r#"["s",true,null,[1]]"#),
            body(r#"{"error":"not found"}"#),
            body(r#""text""#),
            body("true"),
            body("null"),
            "{}".into(),
        ];
        for line in &taken {
            assert!(agree(line), "taken: {line}");
        }
        // Left to serde (it reads them, or rejects them).
        let left = vec![
            LINE.replace(r#""seq":7"#, r#""seq":7.0"#),
            LINE.replace(r#""seq":7"#, r#""seq":-7"#),
            LINE.replace(r#""seq":7"#, r#""seq":18446744073709551616"#),
            LINE.replace(r#""seq":7"#, r#""seq":07"#),
            LINE.replace(r#""seq":7"#, r#""seq":"7""#),
            LINE.replace(r#""kind":"http""#, r#""kind":5"#),
            LINE.replace(r#""run_id":"r1""#, r#""run_id":"r\u0031""#),
            LINE.replace(r#""venue":"polymarket""#, r#""venue":"poly\nmarket""#),
            LINE.replace(r#""run_id":"r1","#, r#""run_id":"r1","run_id":"r2","#),
            LINE.replace(r#""market":"0x1""#, r#""market":1e400"#),
            LINE.replace(r#""market":"0x1""#, r#""market":5"#),
            LINE.replace(r#""asks":[]"#, r#""asks":[ ]"#),
            LINE.replace(r#""size":"5"}"#, r#""size" : "5"}"#),
            LINE.replace(r#""asks":[]"#, r#""asks":[{"size":"1","price":"0.5"}]"#),
            LINE.replace(r#""asks":[]"#, r#""asks":[{"price":"0.5","size":"1"},]"#),
            LINE.replace(r#""asks":[]"#, r#""asks":[{"price":0.5,"size":"1"}]"#),
            LINE.replace(r#""asks":[]"#, r#""asks":7"#),
            LINE.replace(r#""elapsed_ms":84.5"#, r#""elapsed_ms":84."#),
            LINE.replace(r#""elapsed_ms":84.5"#, r#""elapsed_ms":-"#),
            LINE.replace(r#""elapsed_ms":84.5"#, r#""elapsed_ms":1e"#),
            LINE.replace(r#""elapsed_ms":84.5"#, r#""elapsed_ms":tru"#),
            LINE.replace(r#""params":{}"#, r#""params":{,}"#),
            LINE.replace(r#""params":{}"#, r#""params":{"a"}"#),
            LINE.replace(r#""params":{}"#, r#""params":[1 2]"#),
            LINE.replace(r#""params":{}"#, &format!(r#""params":{}{}"#, "[".repeat(100), "]".repeat(100))),
            body("12"),
            body("[17]"),
            format!("{LINE} x"),
            format!("{LINE}{{}}"),
            LINE[..LINE.len() - 1].to_string(),
            "[]".into(),
            "".into(),
        ];
        for line in &left {
            assert!(!agree(line), "left to serde: {line}");
        }
    }

    #[test]
    fn every_prefix_of_a_line_is_rejected_like_serde() {
        for cut in 0..LINE.len() {
            agree(&LINE[..cut]);
        }
    }

    /// 20,000 lines made from the venue's line by deleting, inserting and replacing JSON tokens at
    /// random places (a fixed seed): every one either reads exactly like the serde reader or is
    /// left to it.
    #[test]
    fn mutated_lines_read_like_serde_or_are_left_to_it() {
        const TOKENS: [&str; 22] = [
            "\"",
            "\\",
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "0",
            "-",
            "e",
            ".",
            "null",
            "\\u0041",
            "\\ud800",
            "\u{1}",
            "é",
            "1e400",
            "\"x\"",
            "true",
            "{\"price\":\"1\",\"size\":\"2\"}",
        ];
        let mut rnd = crate::util::test_rand(0x9e37_79b9_7f4a_7c15);
        let (mut taken, mut n) = (0, 0);
        while n < 20_000 {
            let mut l = LINE.to_string();
            for _ in 0..1 + rnd(3) {
                let mut i = rnd(l.len());
                while !l.is_char_boundary(i) {
                    i -= 1;
                }
                let t = TOKENS[rnd(TOKENS.len())];
                match rnd(3) {
                    0 => {
                        let mut j = (i + 1 + rnd(5)).min(l.len());
                        while !l.is_char_boundary(j) {
                            j -= 1;
                        }
                        l.replace_range(i..j, "");
                    }
                    1 => l.insert_str(i, t),
                    _ => {
                        let mut j = (i + 1).min(l.len());
                        while !l.is_char_boundary(j) {
                            j += 1;
                        }
                        l.replace_range(i..j, t);
                    }
                }
            }
            taken += agree(&l) as usize;
            n += 1;
        }
        assert!(taken > 1000, "some mutated lines are still the venue's shape: {taken}");
    }
}
