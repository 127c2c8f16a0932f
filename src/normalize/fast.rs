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

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::parse::{Body, Book, Env, Item, Level};

/// Nesting this reader follows before it leaves a line to the serde reader.
const MAX_DEPTH: usize = 64;

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
    let mut p = P { t: text, b: text.as_bytes(), i: 0, sides };
    p.ws();
    let env = p.envelope()?;
    p.ws();
    (p.i == p.b.len()).then_some(env)
}

struct P<'a, 's> {
    t: &'a str,
    b: &'a [u8],
    i: usize,
    sides: &'s mut Vec<SideText>,
}

/// Index of the first byte of `h` that is `"`, `\` or a control character (SWAR, 8 bytes a step).
fn string_stop(h: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while i + 8 <= h.len() {
        let w = u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
        let has_zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
        // Bytes < 0x20: (w & 0xe0..) == 0 per byte; `"` and `\` as zero bytes of w ^ pattern.
        let t = has_zero(w ^ (LO * b'"' as u64)) | has_zero(w ^ (LO * b'\\' as u64)) | has_zero(w & (LO * 0xe0));
        if t != 0 {
            return Some(i + (t.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    h[i..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).map(|p| i + p)
}

impl<'a> P<'a, '_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// `c` after optional blanks.
    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// A string without escapes at `i` (which is `"`); its content.
    fn string(&mut self) -> Option<&'a str> {
        let s = self.i + 1;
        let n = string_stop(&self.b[s..])?;
        if self.b[s + n] != b'"' {
            return None;
        }
        self.i = s + n + 1;
        Some(&self.t[s..s + n])
    }

    fn digits(&mut self) -> usize {
        let s = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - s
    }

    /// A JSON number at `i`, syntax only (what serde_json accepts when it skips one).
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => {
                self.i += 1;
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    return None;
                }
            }
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b[self.i..].starts_with(word).then(|| self.i += word.len())
    }

    /// Skips one value after optional blanks (checking its syntax).
    fn skip(&mut self, depth: usize) -> Option<()> {
        self.ws();
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' if depth >= MAX_DEPTH => None,
            b'{' => {
                self.i += 1;
                self.members(|p, _| p.skip(depth + 1))
            }
            b'[' => {
                self.i += 1;
                self.elements(|p| p.skip(depth + 1))
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    /// One value's text (after blanks), as serde_json's `RawValue` takes it.
    fn raw(&mut self) -> Option<&'a RawValue> {
        self.ws();
        let s = self.i;
        self.skip(1)?;
        let t: &'a str = &self.t[s..self.i];
        // serde_json has no public constructor of a borrowed RawValue: it reads the text back (the
        // values taken this way are short: the four hash scalars of a book and the envelope `ctx`).
        serde_json::from_str::<&'a RawValue>(t).ok()
    }

    /// The items of an object or array whose opening bracket was read, up to `close`: `f` reads
    /// each (serde_json's rules: no trailing comma, blanks anywhere between tokens).
    fn items(&mut self, close: u8, mut f: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.ws();
        if self.peek()? == close {
            self.i += 1;
            return Some(());
        }
        loop {
            f(self)?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                c if c == close => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// The members of an object whose `{` was read: `f(p, key)` reads each value.
    fn members(&mut self, mut f: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.items(b'}', |p| {
            p.ws();
            if p.peek()? != b'"' {
                return None;
            }
            let key = p.string()?;
            p.eat(b':')?;
            f(p, key)
        })
    }

    /// The elements of an array whose `[` was read: `f(p)` reads each.
    fn elements(&mut self, f: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.items(b']', f)
    }

    /// An `Option<Cow<str>>` member of the envelope: a string or null (anything else fails serde).
    fn opt_str(&mut self) -> Option<Option<Cow<'a, str>>> {
        self.ws();
        match self.peek()? {
            b'"' => Some(Some(Cow::Borrowed(self.string()?))),
            b'n' => self.literal(b"null").map(|_| None),
            _ => None,
        }
    }

    /// An `Option<u64>` member: digits without fraction or exponent, or null.
    fn opt_u64(&mut self) -> Option<Option<u64>> {
        self.ws();
        if self.peek()? == b'n' {
            return self.literal(b"null").map(|_| None);
        }
        let s = self.i;
        self.number()?;
        self.t[s..self.i].parse::<u64>().ok().map(Some)
    }

    /// A value read through [`parse::Str`]: a string, or None for any other value. None overall
    /// for a number (serde would convert it, and could fail) and for anything this reader does not take.
    fn str_or_none(&mut self) -> Option<Option<Cow<'a, str>>> {
        self.ws();
        match self.peek()? {
            b'"' => Some(Some(Cow::Borrowed(self.string()?))),
            b'{' | b'[' | b't' | b'f' | b'n' => self.skip(2).map(|_| None),
            _ => None,
        }
    }

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
            if seen & (1 << bit) != 0 {
                return None; // serde: "duplicate field"
            }
            seen |= 1 << bit;
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
                "market" => b.market = p.str_or_none()?,
                "asset_id" => b.asset_id = p.str_or_none()?,
                "timestamp" => b.timestamp = p.str_or_none()?,
                "hash" => b.hash = p.str_or_none()?,
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
        if self.sides.len() <= index {
            self.sides.resize(index + 1, [None, None]);
        }
        self.sides[index] = text;
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
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
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

    #[test]
    fn string_stop_finds_the_first_stop() {
        let s = b"abcdefghijklmnop\"q\\r\x01";
        for start in 0..s.len() {
            let want = s[start..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
            assert_eq!(string_stop(&s[start..]), want, "{start}");
        }
        assert_eq!(string_stop("é\u{7f}xxxxxxxxx".as_bytes()), None);
    }
}
