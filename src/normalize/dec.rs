//! Exact decimals for prices and sizes (never f64), and fast UTC time conversion.
//!
//! The venue sends prices and sizes as decimal strings (`"0.001"`, `"3149725.72"`). pm-normalize keeps
//! those strings verbatim in the levels it outputs and computes derived values (mid, spread, depth) in
//! exact integer arithmetic, printed in one canonical form: optional `-`, integer digits, and a
//! fractional part only when non-zero, without trailing zeros (`0.5`, `12`, `0.015`, `-0.01`).

use std::cmp::Ordering;

/// A decimal number `m · 10^-s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dec {
    pub m: i128,
    pub s: u32,
}

/// At most this many digits and fractional digits: keeps every aligned value inside i128.
const MAX_DIGITS: u32 = 20;
const MAX_SCALE: u32 = 18;

/// 10^k for k = 0..=38 (all that fit in i128).
const POW10: [i128; 39] = {
    let mut t = [1i128; 39];
    let mut k = 1;
    while k < 39 {
        t[k] = t[k - 1] * 10;
        k += 1;
    }
    t
};

/// [`Dec::key18`] of 1.
pub const ONE_KEY18: u64 = POW10[18] as u64;

/// Writes the decimal digits of `v` at the end of `buf`; returns where they start.
fn digits_u64(buf: &mut [u8; 20], mut v: u64) -> usize {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return i;
        }
    }
}

/// Appends `v` in decimal (what `write!(out, "{v}")` writes, without the formatter).
pub fn write_u64(out: &mut Vec<u8>, v: u64) {
    let mut buf = [0u8; 20];
    let at = digits_u64(&mut buf, v);
    out.extend_from_slice(&buf[at..]);
}

/// Appends `v` in decimal (what `write!(out, "{v}")` writes).
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    write_u64(out, v.unsigned_abs());
}

/// "Is `k` a multiple of `d`" for a fixed `d > 0` by a multiply and a compare instead of a
/// division (Granlund–Montgomery: `d = odd · 2^shift`; for odd `d`, `n` is a multiple exactly when
/// `n · d⁻¹ mod 2^64 ≤ (2^64−1) / d`).
#[derive(Clone, Copy, Debug)]
pub struct Divisor {
    inv: u64,
    max_q: u64,
    shift: u32,
}

impl Divisor {
    /// None for 0.
    pub fn new(d: u64) -> Option<Divisor> {
        if d == 0 {
            return None;
        }
        let shift = d.trailing_zeros();
        let odd = d >> shift;
        // Newton's iteration for the inverse mod 2^64: each step doubles the correct low bits
        // (an odd number is its own inverse mod 8: 3 bits, then 6, 12, 24, 48, 96).
        let mut inv = odd;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(odd.wrapping_mul(inv)));
        }
        Some(Divisor { inv, max_q: u64::MAX / odd, shift })
    }

    #[inline]
    pub fn divides(self, k: u64) -> bool {
        k.trailing_zeros() >= self.shift && (k >> self.shift).wrapping_mul(self.inv) <= self.max_q
    }
}

impl Dec {
    pub const ZERO: Dec = Dec { m: 0, s: 0 };

    /// Parses `-?[0-9]+(\.[0-9]+)?` (no exponent, no `+`, no blanks). None otherwise.
    pub fn parse(t: &str) -> Option<Dec> {
        let b = t.as_bytes();
        let (neg, b) = match b.first() {
            Some(b'-') => (true, &b[1..]),
            _ => (false, b),
        };
        if b.len() > 19 {
            return Self::parse_wide(neg, b);
        }
        // At most 19 digits: the mantissa fits a u64 whatever they are. Integer digits, then
        // (after a '.') fractional ones: two tight loops, no per-byte test for the dot.
        let (mut m, mut i) = (0u64, 0);
        while let Some(d) = b.get(i).map(|c| c.wrapping_sub(b'0')).filter(|d| *d < 10) {
            m = m * 10 + d as u64;
            i += 1;
        }
        if i == 0 {
            return None;
        }
        let s = match b.get(i) {
            None => 0,
            Some(b'.') => {
                let frac = &b[i + 1..];
                if frac.is_empty() || frac.len() > MAX_SCALE as usize {
                    return None;
                }
                for &c in frac {
                    let d = c.wrapping_sub(b'0');
                    if d >= 10 {
                        return None;
                    }
                    m = m * 10 + d as u64;
                }
                frac.len() as u32
            }
            Some(_) => return None,
        };
        let m = m as i128;
        Some(Dec { m: if neg { -m } else { m }, s })
    }

    /// [`Self::parse`] for 20 or more characters (after the sign), in i128.
    fn parse_wide(neg: bool, b: &[u8]) -> Option<Dec> {
        let (mut m, mut s, mut digits, mut int_digits, mut dot) = (0i128, 0u32, 0u32, 0u32, false);
        for &c in b {
            match c {
                b'0'..=b'9' => {
                    m = m * 10 + (c - b'0') as i128;
                    digits += 1;
                    if dot {
                        s += 1;
                    } else {
                        int_digits += 1;
                    }
                    if digits > MAX_DIGITS {
                        return None;
                    }
                }
                b'.' if !dot => dot = true,
                _ => return None,
            }
        }
        if int_digits == 0 || (dot && s == 0) || s > MAX_SCALE {
            return None;
        }
        Some(Dec { m: if neg { -m } else { m }, s })
    }

    fn at_scale(self, s: u32) -> Option<i128> {
        self.m.checked_mul(*POW10.get((s - self.s) as usize)?)
    }

    /// Both values at their common scale.
    #[inline]
    fn aligned(self, o: Dec) -> Option<(i128, i128, u32)> {
        if self.s == o.s {
            return Some((self.m, o.m, self.s));
        }
        // Fast path: |m| < 2^63 times 10^k ≤ 10^18 < 2^60 cannot overflow i128 (a single widening
        // multiply instead of a checked i128 one).
        if let (Ok(a), Ok(b)) = (i64::try_from(self.m), i64::try_from(o.m)) {
            if self.s < o.s && o.s - self.s <= 18 {
                return Some((a as i128 * POW10[(o.s - self.s) as usize] as i64 as i128, b as i128, o.s));
            }
            if o.s < self.s && self.s - o.s <= 18 {
                return Some((a as i128, b as i128 * POW10[(self.s - o.s) as usize] as i64 as i128, self.s));
            }
        }
        let s = self.s.max(o.s);
        Some((self.at_scale(s)?, o.at_scale(s)?, s))
    }

    pub fn checked_add(self, o: Dec) -> Option<Dec> {
        let (a, b, s) = self.aligned(o)?;
        Some(Dec { m: a.checked_add(b)?, s })
    }

    pub fn checked_sub(self, o: Dec) -> Option<Dec> {
        let (a, b, s) = self.aligned(o)?;
        Some(Dec { m: a.checked_sub(b)?, s })
    }

    /// Exactly half (one more fractional digit when odd).
    pub fn half(self) -> Option<Dec> {
        if self.m % 2 == 0 {
            Some(Dec { m: self.m / 2, s: self.s })
        } else {
            Some(Dec { m: self.m.checked_mul(5)?, s: self.s + 1 })
        }
    }

    pub fn signum(self) -> i32 {
        self.m.signum() as i32
    }

    /// True when `self` is an integer multiple of `tick` (tick > 0).
    pub fn is_multiple_of(self, tick: Dec) -> bool {
        match self.aligned(tick) {
            // The venue's ticks (0.01, 0.001) align to 1 for prices of no finer scale: no division.
            Some((_, 1, _)) => true,
            // i64 remainder when it fits: i128 division is a slow library call.
            Some((a, t, _)) if t > 0 => match (i64::try_from(a), i64::try_from(t)) {
                (Ok(a), Ok(t)) => a % t == 0,
                _ => a % t == 0,
            },
            _ => false,
        }
    }

    /// Writes the canonical form (module docs).
    pub fn write(self, out: &mut Vec<u8>) {
        let (mut m, mut s) = (self.m, self.s);
        if m < 0 {
            out.push(b'-');
        }
        // Fast path: |m| < 2^64 (every price, size, mid, spread and depth of a real book) in u64.
        if let Ok(mut u) = u64::try_from(m.unsigned_abs()) {
            while s > 0 && u % 10 == 0 {
                u /= 10;
                s -= 1;
            }
            let mut buf = [0u8; 20];
            let at = digits_u64(&mut buf, u);
            Self::place(out, &buf[at..], s as usize);
            return;
        }
        while s > 0 && m % 10 == 0 {
            m /= 10;
            s -= 1;
        }
        Self::place(out, m.unsigned_abs().to_string().as_bytes(), s as usize);
    }

    /// Writes the digits `d` of the mantissa with `s` of them fractional.
    fn place(out: &mut Vec<u8>, d: &[u8], s: usize) {
        if s == 0 {
            out.extend_from_slice(d);
        } else if d.len() > s {
            out.extend_from_slice(&d[..d.len() - s]);
            out.push(b'.');
            out.extend_from_slice(&d[d.len() - s..]);
        } else {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', s - d.len()));
            out.extend_from_slice(d);
        }
    }

    /// The value times 10^18 as a u64 when it is ≥ 0 and fits (every price below 18.4): integers
    /// at one scale, so comparisons, range and tick checks need no alignment. Exact: two such keys
    /// compare as the values do, and divide as they do.
    #[inline]
    pub fn key18(self) -> Option<u64> {
        self.key(18)
    }

    /// The value times 10^`scale` as a u64 when it is ≥ 0, has at most `scale` fractional digits
    /// and fits.
    #[inline]
    pub fn key(self, scale: u32) -> Option<u64> {
        let m = u64::try_from(self.m).ok()?;
        // 10^k < 2^64 for k ≤ 19 (the key is None beyond).
        m.checked_mul(u64::try_from(*POW10.get(scale.checked_sub(self.s)? as usize)?).ok()?)
    }

    /// All `s` fractional digits, trailing zeros kept (`0.5600` stays `0.5600`): Kalshi's derived
    /// ask prices are printed at the scale of the NO bid they come from.
    pub fn to_fixed(self) -> String {
        let mut out = Vec::new();
        if self.m < 0 {
            out.push(b'-');
        }
        Self::place(&mut out, self.m.unsigned_abs().to_string().as_bytes(), self.s as usize);
        String::from_utf8(out).expect("ascii")
    }

    /// The canonical form as a String (tests, summaries).
    pub fn to_canonical(self) -> String {
        let mut v = Vec::new();
        self.write(&mut v);
        String::from_utf8(v).expect("ascii")
    }
}

impl PartialOrd for Dec {
    fn partial_cmp(&self, o: &Dec) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Dec {
    fn cmp(&self, o: &Dec) -> Ordering {
        // Parsed values (≤ 20 digits, scale ≤ 18) always align inside i128.
        match self.aligned(*o) {
            Some((a, b, _)) => a.cmp(&b),
            None => (self.m.signum()).cmp(&o.m.signum()),
        }
    }
}

// ---- time ------------------------------------------------------------------------------------

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + if m <= 2 { 1 } else { 0 }, m, d)
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() {
        return None;
    }
    let mut v = 0i64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as i64;
    }
    Some(v)
}

/// Unix microseconds of an RFC 3339 UTC time. Fast path for the archive's own form
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`; anything else goes through [`crate::clock::parse_rfc3339`].
pub fn parse_utc_micros(s: &str) -> Option<i64> {
    if let Some(us) = canonical_micros(s.as_bytes()) {
        return Some(us);
    }
    let t = crate::clock::parse_rfc3339(s)?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1000)).ok()
}

/// [`parse_utc_micros`]'s fast path: a time in the archive's form ([`crate::clock::is_canonical`]:
/// the separators in place, digits everywhere else) with its fields in range; None otherwise.
fn canonical_micros(b: &[u8]) -> Option<i64> {
    let b: &[u8; 27] = b.try_into().ok()?;
    if [b[4], b[7], b[10], b[13], b[16], b[19], b[26]] != *b"--T::.Z" {
        return None;
    }
    let (y, mo, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (h, mi, se, us) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?, digits(&b[20..26])?);
    if (1..=12).contains(&mo) && (1..=31).contains(&d) && h < 24 && mi < 60 && se < 61 {
        return Some(((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60_000_000 + se * 1_000_000 + us);
    }
    None
}

/// Writes Unix microseconds as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (the archive's timestamp form).
pub fn write_utc_micros(out: &mut Vec<u8>, us: i64) {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86400));
    let sod = secs.rem_euclid(86400);
    if !(0..=9999).contains(&y) {
        use std::io::Write;
        let _ = write!(
            out,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            y,
            m,
            d,
            sod / 3600,
            sod / 60 % 60,
            sod % 60,
            frac
        );
        return;
    }
    // `{:04}-{:02}-…` without the formatter (every field is in range here), into one fixed array.
    let mut t = *b"0000-00-00T00:00:00.000000Z";
    for (v, end, width) in
        [(y, 4, 4), (m, 7, 2), (d, 10, 2), (sod / 3600, 13, 2), (sod / 60 % 60, 16, 2), (sod % 60, 19, 2)]
    {
        let mut v = v as u32;
        for k in (end - width..end).rev() {
            t[k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    let mut f = frac as u32;
    for k in (20..26).rev() {
        t[k] = b'0' + (f % 10) as u8;
        f /= 10;
    }
    out.extend_from_slice(&t);
}

/// The venue's book timestamp (Unix ms as a decimal string, 1–16 digits).
pub fn parse_ms(s: &str) -> Option<i64> {
    if s.len() > 16 {
        return None;
    }
    digits(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Dec {
        Dec::parse(s).unwrap()
    }

    #[test]
    fn parse_and_canonical() {
        assert_eq!(d("0.001"), Dec { m: 1, s: 3 });
        assert_eq!(d("0.50").to_canonical(), "0.5");
        assert_eq!(d("12.000").to_canonical(), "12");
        assert_eq!(d("-0.010").to_canonical(), "-0.01");
        assert_eq!(d("0").to_canonical(), "0");
        for bad in ["", "-", ".5", "5.", "1e3", "+1", " 1", "0.5 ", "abc", "1.2.3", "123456789012345678901"] {
            assert!(Dec::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn fixed_keeps_the_scale() {
        for (v, want) in
            [("0.5600", "0.5600"), ("0.0010", "0.0010"), ("12", "12"), ("-0.050", "-0.050"), ("1.0", "1.0")]
        {
            assert_eq!(d(v).to_fixed(), want);
        }
        assert_eq!(Dec { m: 42, s: 2 }.to_fixed(), "0.42");
    }

    #[test]
    fn fast_paths_agree_with_i128() {
        // 19 digits (u64 path), 20 digits (i128 path), and alignment across every scale gap.
        assert_eq!(d("12345678901234567890"), Dec { m: 12345678901234567890, s: 0 });
        assert_eq!(d("-9999999999999999999.9"), Dec { m: -99999999999999999999, s: 1 });
        assert_eq!(d("0.000000000000000001"), Dec { m: 1, s: 18 });
        assert_eq!(d("-1234567890123456789"), Dec { m: -1234567890123456789, s: 0 });
        assert_eq!(d("123456789.012345678"), Dec { m: 123456789012345678, s: 9 });
        for bad in ["0.0000000000000000001", "1..2", "-", "-.", "1.", ".1", "--1", "1-", "1/2", "1:2"] {
            assert!(Dec::parse(bad).is_none(), "{bad}");
        }
        let vals = [
            "0",
            "0.5",
            "-0.5",
            "0.49",
            "1",
            "9223372036854775807",
            "9223372036854775808",
            "0.000000000000000001",
            "-12345678901234567890",
            "12.000000000000000001",
            "99999999999999999999",
        ];
        for a in vals {
            for b in vals {
                let (x, y) = (d(a), d(b));
                let s = x.s.max(y.s);
                let want = x.at_scale(s).zip(y.at_scale(s)).map(|(p, q)| p.cmp(&q));
                assert_eq!(x.aligned(y).map(|(p, q, _)| p.cmp(&q)), want, "{a} vs {b}");
                assert_eq!(
                    x.checked_add(y),
                    x.at_scale(s).zip(y.at_scale(s)).and_then(|(p, q)| p.checked_add(q)).map(|m| Dec { m, s })
                );
            }
        }
    }

    #[test]
    fn arithmetic_is_exact() {
        assert_eq!(d("0.48").checked_add(d("0.53")).unwrap().half().unwrap().to_canonical(), "0.505");
        assert_eq!(d("0.53").checked_sub(d("0.48")).unwrap().to_canonical(), "0.05");
        assert_eq!(d("0.48").checked_sub(d("0.53")).unwrap().to_canonical(), "-0.05");
        assert_eq!(d("667.12").checked_add(d("6.99")).unwrap().to_canonical(), "674.11");
        assert!(d("0.5") > d("0.49"));
        assert!(d("0.50") == d("0.5").checked_add(Dec::ZERO).unwrap() || d("0.50").cmp(&d("0.5")).is_eq());
        assert!(d("0.015").is_multiple_of(d("0.001")));
        assert!(!d("0.015").is_multiple_of(d("0.01")));
    }

    /// The formatter-free writers print what `write!` prints.
    #[test]
    fn digit_writers_match_fmt() {
        for v in [0i64, 1, -1, 9, 10, -10, 99, 1234567, i64::MAX, i64::MIN, -9_223_372_036_854_775_807] {
            let mut o = Vec::new();
            write_i64(&mut o, v);
            assert_eq!(String::from_utf8(o).unwrap(), v.to_string());
        }
        let mut o = Vec::new();
        write_u64(&mut o, u64::MAX);
        assert_eq!(String::from_utf8(o).unwrap(), u64::MAX.to_string());
        // Canonical decimals: the u64 path against the i128 one (values above 2^64 take the latter).
        let slow = |d: Dec| {
            let (mut m, mut s) = (d.m, d.s);
            while s > 0 && m % 10 == 0 {
                m /= 10;
                s -= 1;
            }
            let mut o = if m < 0 { vec![b'-'] } else { Vec::new() };
            Dec::place(&mut o, m.unsigned_abs().to_string().as_bytes(), s as usize);
            String::from_utf8(o).unwrap()
        };
        for m in [0i128, 1, -1, 5, 10, 100, -120, 123456789, 18446744073709551615, 18446744073709551616, -(1 << 100)] {
            for s in [0, 1, 2, 3, 9, 18, 19, 30] {
                assert_eq!(Dec { m, s }.to_canonical(), slow(Dec { m, s }), "{m} e-{s}");
            }
        }
        // Times: every field padded as `{:04}-{:02}…` pads it, the year outside 0..=9999 included.
        for us in [0i64, 1, 999_999, 1_785_734_468_581_000, 253_402_300_799_999_999, 253_402_300_800_000_000, -1] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            write_utc_micros(&mut a, us);
            let secs = us.div_euclid(1_000_000);
            let (y, m, d) = civil_from_days(secs.div_euclid(86400));
            let sod = secs.rem_euclid(86400);
            use std::io::Write;
            let f = us.rem_euclid(1_000_000);
            write!(b, "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", y, m, d, sod / 3600, sod / 60 % 60, sod % 60, f)
                .unwrap();
            assert_eq!(String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap());
        }
    }

    /// Keys compare and divide exactly as the decimals do ([`Dec::cmp`], [`Dec::is_multiple_of`]).
    #[test]
    fn keys_and_divisors_agree_with_decimals() {
        let vals = ["0", "0.5", "0.50", "0.49", "0.001", "0.015", "0.01", "0.1", "1", "1.000", "0.999999999999999999"];
        let ticks = ["0.01", "0.001", "0.1", "0.0001", "0.025", "0.03", "0.000000000000000007", "3", "0.5"];
        for a in vals {
            let x = d(a);
            let kx = x.key18().unwrap();
            assert_eq!(kx >= ONE_KEY18, x >= d("1"), "{a}");
            for b in vals {
                assert_eq!(kx.cmp(&d(b).key18().unwrap()), x.cmp(&d(b)), "{a} vs {b}");
            }
            for t in ticks {
                let div = Divisor::new(d(t).key18().unwrap()).unwrap();
                assert_eq!(div.divides(kx), x.is_multiple_of(d(t)), "{a} / {t}");
            }
        }
        assert_eq!(d("-0.5").key18(), None);
        assert_eq!(d("18.5").key18(), None);
        assert!(Divisor::new(0).is_none());
        for dv in [1u64, 2, 3, 6, 7, 10, 12, 1 << 40, 3 << 50, 999_999_937, u64::MAX] {
            let div = Divisor::new(dv).unwrap();
            for k in [
                0u64,
                1,
                2,
                3,
                6,
                7,
                10,
                12,
                14,
                36,
                1 << 40,
                3 << 50,
                6 << 50,
                999_999_937 * 5,
                u64::MAX,
                u64::MAX - 1,
            ] {
                assert_eq!(div.divides(k), k % dv == 0, "{k} % {dv}");
            }
        }
    }

    #[test]
    fn time_round_trip_matches_clock() {
        for s in ["2026-11-24T16:01:33.123456Z", "1970-01-01T00:00:00.000000Z", "2028-02-29T23:59:59.999999Z"] {
            let us = parse_utc_micros(s).unwrap();
            let t = crate::clock::parse_rfc3339(s).unwrap();
            assert_eq!(us as i128, t.unix_timestamp_nanos() / 1000);
            let mut v = Vec::new();
            write_utc_micros(&mut v, us);
            assert_eq!(String::from_utf8(v).unwrap(), s);
        }
        assert_eq!(
            parse_utc_micros("2026-11-24T16:01:33Z").unwrap(),
            parse_utc_micros("2026-11-24T16:01:33.000000Z").unwrap()
        );
        assert_eq!(parse_ms("1785734468581"), Some(1785734468581));
    }

    /// The fast path takes exactly the canonical form with its fields in range: every one-byte
    /// change of a canonical time gives what `clock::is_canonical` + `parse_rfc3339` give.
    #[test]
    fn the_fast_time_path_takes_exactly_the_canonical_form() {
        let reference = |s: &str| -> Option<i64> {
            let b = s.as_bytes();
            if crate::clock::is_canonical(b) {
                let n = |r: std::ops::Range<usize>| digits(&b[r]).unwrap();
                let (y, mo, d, h, mi, se) = (n(0..4), n(5..7), n(8..10), n(11..13), n(14..16), n(17..19));
                if (1..=12).contains(&mo) && (1..=31).contains(&d) && h < 24 && mi < 60 && se < 61 {
                    return Some(
                        ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60_000_000 + se * 1_000_000 + n(20..26),
                    );
                }
            }
            let t = crate::clock::parse_rfc3339(s)?;
            i64::try_from(t.unix_timestamp_nanos().div_euclid(1000)).ok()
        };
        let base = "2026-11-24T16:01:33.123456Z";
        let mut fast = 0;
        for i in 0..=base.len() {
            for c in ["0", "1", "3", "9", "-", ":", "T", ".", "Z", "z", " ", "+", "/", "é", ""] {
                let s = format!("{}{}{}", &base[..i], c, &base[(i + 1).min(base.len())..]);
                let ins = format!("{}{}{}", &base[..i], c, &base[i..]);
                for s in [s, ins] {
                    assert_eq!(parse_utc_micros(&s), reference(&s), "{s}");
                    fast += canonical_micros(s.as_bytes()).is_some() as usize;
                }
            }
        }
        assert!(fast > 100, "the fast path was taken: {fast}");
        assert_eq!(parse_ms("17857x"), None);
    }
}
