//! The cursor of the hand-written fast readers of raw lines: pm-normalize's
//! (`src/normalize/fast.rs`) and pm-rebuild's (`src/polymarket/rebuild/scan.rs`). Each reader
//! gives exactly what its serde reader (the definition) gives, or `None`: then the caller reads the
//! line with serde_json. So every method here answers `None` for anything it is not sure about:
//! a string with a `\` escape or a control character, a number where serde would have to convert
//! it, nesting deeper than [`MAX_DEPTH`], and anything that is not JSON (checked as strictly as
//! serde_json checks it: strings, numbers, literals, commas, trailing characters).
//!
//! A reader keeps its own state in `x` and writes its schema (which members, read how) as methods
//! of `Cursor<'a, ItsState>`.

use std::borrow::Cow;

use serde_json::value::RawValue;

/// Nesting a reader follows before it leaves a line to serde_json (whose own limit is 128).
pub const MAX_DEPTH: usize = 64;

/// A position in one line of text; `x`: the reader's own state.
pub struct Cursor<'a, X> {
    pub t: &'a str,
    pub b: &'a [u8],
    pub i: usize,
    pub x: X,
}

/// Marks field `k` (bit `k` of `seen`) read; None when it was read before: a serde derive
/// rejects a duplicate field, so the reader gives the line up.
pub fn once(seen: &mut u32, k: u32) -> Option<()> {
    let bit = 1 << k;
    if *seen & bit != 0 {
        return None;
    }
    *seen |= bit;
    Some(())
}

/// Index of the first byte of `h` that is `"`, `\` or a control character: sixteen bytes a step
/// with SSE2 (part of x86_64), eight a step elsewhere (SWAR).
pub fn string_stop(h: &[u8]) -> Option<usize> {
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        while i + 16 <= h.len() {
            // SAFETY: i + 16 <= h.len(): an unaligned load of 16 bytes of `h`; SSE2 is always
            // present on x86_64.
            let m = unsafe {
                let v = _mm_loadu_si128(h.as_ptr().add(i).cast());
                let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
                let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
                // Control characters: the bytes 0x00..=0x1f, those with max(byte, 0x1f) == 0x1f.
                let ctl = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f));
                _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), ctl)) as u32
            };
            if m != 0 {
                return Some(i + m.trailing_zeros() as usize);
            }
            i += 16;
        }
    }
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    while i + 8 <= h.len() {
        let w = u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
        let has_zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
        // Bytes < 0x20: (w & 0xe0..) == 0 per byte; `"` and `\` as zero bytes of w ^ pattern. The
        // lowest flagged byte of each test is exact (a false flag only follows a true one).
        let t = has_zero(w ^ (LO * b'"' as u64)) | has_zero(w ^ (LO * b'\\' as u64)) | has_zero(w & (LO * 0xe0));
        if t != 0 {
            return Some(i + (t.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    h[i..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).map(|p| i + p)
}

impl<'a, X> Cursor<'a, X> {
    pub fn new(t: &'a str, x: X) -> Self {
        Cursor { t, b: t.as_bytes(), i: 0, x }
    }

    /// True when only blanks are left (serde_json: no trailing characters).
    pub fn at_end(&mut self) -> bool {
        self.ws();
        self.i == self.b.len()
    }

    /// The byte at the cursor (blanks not skipped).
    pub fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    pub fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// The byte after blanks (not taken).
    pub fn after_ws(&mut self) -> Option<u8> {
        self.ws();
        self.peek()
    }

    /// `c` after optional blanks.
    pub fn eat(&mut self, c: u8) -> Option<()> {
        (self.after_ws()? == c).then(|| self.i += 1)
    }

    /// A string without escapes at `i` (which is `"`); its content.
    pub fn string(&mut self) -> Option<&'a str> {
        let s = self.i + 1;
        let n = string_stop(self.b.get(s..)?)?;
        if self.b[s + n] != b'"' {
            return None;
        }
        self.i = s + n + 1;
        // Both ends are ASCII `"`, so they are char boundaries of the &str.
        Some(&self.t[s..s + n])
    }

    fn digits(&mut self) -> usize {
        let s = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - s
    }

    /// A JSON number at `i`, syntax only (what serde_json accepts when it skips one): whether it is
    /// a plain integer (no fraction, no exponent).
    pub fn number(&mut self) -> Option<bool> {
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
        let mut plain = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
            plain = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
            plain = false;
        }
        Some(plain)
    }

    /// A number at `i` read as a value: only plain integers of up to 18 digits, which every serde
    /// visitor takes alike (serde_json reads `-0` as a float, and can reject a float that overflows).
    pub fn int(&mut self) -> Option<i64> {
        let s = self.i;
        let plain = self.number()?;
        let t = &self.t[s..self.i];
        if !plain || t.len() > 18 || t == "-0" {
            return None;
        }
        t.parse().ok()
    }

    pub fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b[self.i..].starts_with(word).then(|| self.i += word.len())
    }

    /// Skips one value after optional blanks (checking its syntax); `depth`: its nesting.
    pub fn skip(&mut self, depth: usize) -> Option<()> {
        match self.after_ws()? {
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
            _ => self.number().map(drop),
        }
    }

    /// One value's text (after blanks), as serde_json's `RawValue` takes it.
    pub fn raw(&mut self) -> Option<&'a RawValue> {
        self.ws();
        let s = self.i;
        self.skip(1)?;
        let t: &'a str = &self.t[s..self.i];
        // serde_json has no public constructor of a borrowed RawValue: it reads the text back (the
        // values taken this way are short: the hash scalars of a book, an envelope's `ctx`).
        serde_json::from_str::<&'a RawValue>(t).ok()
    }

    /// The items of an object or array whose opening bracket was read, up to `close`: `f` reads
    /// each (serde_json's rules: no trailing comma, blanks anywhere between tokens).
    pub fn items(&mut self, close: u8, mut f: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if self.after_ws()? == close {
            self.i += 1;
            return Some(());
        }
        loop {
            f(self)?;
            match self.after_ws()? {
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
    pub fn members(&mut self, mut f: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.items(b'}', |p| {
            if p.after_ws()? != b'"' {
                return None;
            }
            let key = p.string()?;
            p.eat(b':')?;
            f(p, key)
        })
    }

    /// The elements of an array whose `[` was read: `f(p)` reads each.
    pub fn elements(&mut self, f: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.items(b']', f)
    }

    /// An `Option<Cow<str>>` field of a serde derive: a string or null (anything else fails serde).
    pub fn opt_str(&mut self) -> Option<Option<Cow<'a, str>>> {
        match self.after_ws()? {
            b'"' => Some(Some(Cow::Borrowed(self.string()?))),
            b'n' => self.literal(b"null").map(|_| None),
            _ => None,
        }
    }

    /// An `Option<u64>` field: digits without fraction or exponent, or null.
    pub fn opt_u64(&mut self) -> Option<Option<u64>> {
        if self.after_ws()? == b'n' {
            return self.literal(b"null").map(|_| None);
        }
        let s = self.i;
        self.number()?;
        self.t[s..self.i].parse::<u64>().ok().map(Some)
    }

    /// A value read through [`crate::normalize::parse::Str`]: a string, or None for any other
    /// value. None overall for a number (serde would convert it, and could fail) and for anything
    /// this reader does not take.
    pub fn str_or_none(&mut self, depth: usize) -> Option<Option<Cow<'a, str>>> {
        match self.after_ws()? {
            b'"' => Some(Some(Cow::Borrowed(self.string()?))),
            b'{' | b'[' | b't' | b'f' | b'n' => self.skip(depth).map(|_| None),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_stop_finds_the_first_stop() {
        let s = b"abcdefghijklmnopqrstuvwxyz0123456789abcdef\"q\\r\x01";
        for start in 0..s.len() {
            let want = s[start..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
            assert_eq!(string_stop(&s[start..]), want, "{start}");
        }
        assert_eq!(string_stop("é\u{7f}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".as_bytes()), None);
        for stop in [b'"', b'\\', 0, 0x1f, b'\n'] {
            for at in 0..40 {
                let mut h = vec![b'a'; 40];
                h[at] = stop;
                assert_eq!(string_stop(&h), Some(at), "{stop} at {at}");
            }
        }
    }
}
