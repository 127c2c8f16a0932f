//! Wall-clock time: UTC timestamps with microseconds, RFC 3339 formatting/parsing, US Eastern time.
//!
//! Every timestamp the archive writes is UTC, RFC 3339, `Z`, exactly six fractional digits
//! (`2026-11-24T16:01:33.123456Z`), so that they sort as strings.
//!
//! Two readings of "now":
//! - [`now`]: the wall clock. It is what every record's timestamps say, and it can step (NTP
//!   correction, VM resume, an operator's `date -s`) by hours in either direction.
//! - [`steady`]: the wall clock as it was when the process first asked, advanced by the monotonic
//!   clock since. It never steps. Decisions that a clock step must not flip (tracking windows,
//!   src/track.rs) look at both readings; durations and schedules use [`std::time::Instant`].
//!
//! Simulated clock (tests and replays only): when the environment variable `PMARCHIVE_CLOCK` is set to
//! `<RFC 3339 start>[x<rate>][,<step>@<at>]…`, [`now`] and [`steady`] start at that instant and run
//! `rate` times faster than real time; each `<step>@<at>` (signed seconds, `@` real seconds since the
//! first reading, e.g. `+10800@1.5`) steps the wall clock [`now`] by that much at that moment, as an
//! NTP step would, while [`steady`] does not move. Only the readings are warped; timeouts, sleeps and
//! poll schedules stay in real time. Tools print a warning on stderr when it is active. Never set it
//! in production.

use std::sync::OnceLock;
use std::time::Instant;
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset, Weekday};

pub const CLOCK_ENV: &str = "PMARCHIVE_CLOCK";

struct Simulated {
    start_real: Instant,
    start_virtual: OffsetDateTime,
    rate: f64,
    /// (real seconds since `start_real`, wall-clock step in seconds), in the order given.
    steps: Vec<(f64, f64)>,
}

fn simulated() -> Option<&'static Simulated> {
    static SIM: OnceLock<Option<Simulated>> = OnceLock::new();
    SIM.get_or_init(|| {
        let spec = std::env::var(CLOCK_ENV).ok()?;
        match parse_clock_spec(&spec) {
            Some((start, rate, steps)) => {
                eprintln!("warning: {CLOCK_ENV}={spec}: simulated clock active (tests/replays only)");
                Some(Simulated { start_real: Instant::now(), start_virtual: start, rate, steps })
            }
            None => {
                eprintln!("error: {CLOCK_ENV}={spec}: expected <RFC3339>[x<rate>][,<±secs>@<secs>]…");
                std::process::exit(2);
            }
        }
    })
    .as_ref()
}

type Steps = Vec<(f64, f64)>;

fn parse_clock_spec(spec: &str) -> Option<(OffsetDateTime, f64, Steps)> {
    let mut parts = spec.split(',');
    let head = parts.next()?;
    let mut steps = Vec::new();
    for p in parts {
        let (step, at) = p.split_once('@')?;
        let (step, at): (f64, f64) = (step.trim().parse().ok()?, at.trim().parse().ok()?);
        if !(step.is_finite() && step.abs() < 1e9 && at.is_finite() && at >= 0.0) {
            return None;
        }
        steps.push((at, step));
    }
    let (start, rate) = parse_clock_head(head)?;
    Some((start, rate, steps))
}

fn parse_clock_head(spec: &str) -> Option<(OffsetDateTime, f64)> {
    let (start, rate) = match spec.rsplit_once('x') {
        Some((s, r)) if !s.is_empty() && r.parse::<f64>().is_ok() => (s, r.parse::<f64>().ok()?),
        _ => (spec, 1.0),
    };
    if !(rate.is_finite() && rate > 0.0) {
        return None;
    }
    Some((parse_rfc3339(start)?, rate))
}

/// True when the simulated clock is active.
pub fn is_simulated() -> bool {
    simulated().is_some()
}

/// The current UTC time on the wall clock (or the simulated clock's, steps included).
pub fn now() -> OffsetDateTime {
    match simulated() {
        None => OffsetDateTime::now_utc(),
        Some(s) => {
            let real = s.start_real.elapsed().as_secs_f64();
            let stepped: f64 = s.steps.iter().filter(|(at, _)| *at <= real).map(|(_, step)| step).sum();
            s.start_virtual + time::Duration::seconds_f64(real * s.rate + stepped)
        }
    }
}

/// The current UTC time as the monotonic clock sees it: the wall clock at the first call (of this
/// or, when simulated, of the simulated clock) plus the monotonic time elapsed since. A wall-clock
/// step after that first call does not move it; a lasting correction makes it differ from [`now`]
/// by the step for the rest of the process.
pub fn steady() -> OffsetDateTime {
    match simulated() {
        Some(s) => s.start_virtual + time::Duration::seconds_f64(s.start_real.elapsed().as_secs_f64() * s.rate),
        None => {
            static ANCHOR: OnceLock<(Instant, OffsetDateTime)> = OnceLock::new();
            let (t0, wall0) = ANCHOR.get_or_init(|| (Instant::now(), OffsetDateTime::now_utc()));
            *wall0 + t0.elapsed()
        }
    }
}

/// `2026-11-24T16:01:33.123456Z`.
pub fn fmt_micros(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// `2026-11-24T16:00:00Z` (whole seconds, for window boundaries): [`fmt_micros`] without the fraction.
pub fn fmt_secs(t: OffsetDateTime) -> String {
    let mut s = fmt_micros(t);
    s.replace_range(s.len() - 8..s.len() - 1, "");
    s
}

/// True when `b` is a timestamp in the archive's one form, as [`fmt_micros`] writes it:
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, 27 bytes, every separator in its place and digits elsewhere. Such
/// timestamps sort as strings. The one shape check (manifest, rotator and normalizer use it); it
/// does not check the ranges of the fields (month 13 passes).
pub fn is_canonical(b: &[u8]) -> bool {
    b.len() == 27
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            26 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Parses RFC 3339 / ISO 8601 with `Z` or an offset and any number of fractional digits
/// (Gamma sends 0–6). Also accepts a space instead of `T`.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.to_offset(UtcOffset::UTC));
    }
    if s.len() > 10 && s.as_bytes()[10] == b' ' {
        let mut fixed = s.to_string();
        fixed.replace_range(10..11, "T");
        return OffsetDateTime::parse(&fixed, &Rfc3339).ok().map(|t| t.to_offset(UtcOffset::UTC));
    }
    None
}

/// Unix seconds → UTC time.
pub fn from_unix(secs: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs).ok()
}

/// Unix milliseconds → UTC time.
pub fn from_unix_ms(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).ok()
}

/// The n-th (1-based) given weekday of a month.
fn nth_weekday(year: i32, month: Month, weekday: Weekday, n: u8) -> Date {
    let first = Date::from_calendar_date(year, month, 1).expect("valid date");
    let offset = (7 + weekday.number_days_from_monday() as i16 - first.weekday().number_days_from_monday() as i16) % 7;
    first + time::Duration::days(offset as i64 + 7 * (n as i64 - 1))
}

/// The UTC offset of US Eastern time (America/New_York) at a UTC instant: EDT (−4 h) from the second
/// Sunday of March 02:00 EST (07:00 UTC) until the first Sunday of November 02:00 EDT (06:00 UTC),
/// EST (−5 h) otherwise. The US rules in force since 2007.
pub fn eastern_offset(utc: OffsetDateTime) -> UtcOffset {
    let utc = utc.to_offset(UtcOffset::UTC);
    let y = utc.year();
    let dst_start =
        PrimitiveDateTime::new(nth_weekday(y, Month::March, Weekday::Sunday, 2), Time::from_hms(7, 0, 0).unwrap())
            .assume_utc();
    let dst_end =
        PrimitiveDateTime::new(nth_weekday(y, Month::November, Weekday::Sunday, 1), Time::from_hms(6, 0, 0).unwrap())
            .assume_utc();
    let hours = if utc >= dst_start && utc < dst_end { -4 } else { -5 };
    UtcOffset::from_hms(hours, 0, 0).unwrap()
}

/// A UTC instant seen in US Eastern time.
pub fn to_eastern(utc: OffsetDateTime) -> OffsetDateTime {
    utc.to_offset(eastern_offset(utc))
}

/// A US Eastern wall-clock time → UTC. For the hour that does not exist (spring forward) the EDT
/// reading is used; for the hour that happens twice (fall back) the first (EDT) one.
pub fn from_eastern(local: PrimitiveDateTime) -> OffsetDateTime {
    let as_edt = local.assume_offset(UtcOffset::from_hms(-4, 0, 0).unwrap());
    if eastern_offset(as_edt) == UtcOffset::from_hms(-4, 0, 0).unwrap() {
        return as_edt.to_offset(UtcOffset::UTC);
    }
    let as_est = local.assume_offset(UtcOffset::from_hms(-5, 0, 0).unwrap());
    if eastern_offset(as_est) == UtcOffset::from_hms(-5, 0, 0).unwrap() {
        return as_est.to_offset(UtcOffset::UTC);
    }
    as_edt.to_offset(UtcOffset::UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_with_micros() {
        let t = datetime!(2026-11-24 16:01:33.1234567 UTC);
        assert_eq!(fmt_micros(t), "2026-11-24T16:01:33.123456Z");
        assert_eq!(fmt_secs(t), "2026-11-24T16:01:33Z");
        assert_eq!(fmt_micros(datetime!(2026-01-02 03:04:05 +02:00)), "2026-01-02T01:04:05.000000Z");
    }

    #[test]
    fn canonical_shape() {
        assert!(is_canonical(fmt_micros(datetime!(2026-11-24 16:01:33.123456 UTC)).as_bytes()));
        assert!(is_canonical(b"0000-99-99T99:99:99.999999Z"), "shape only");
        for bad in [
            &b"2026-11-24T16:01:33Z"[..],
            b"2026-11-24T16:01:33.123456+00:00",
            b"2026-11-24 16:01:33.123456Z",
            b"2026-11-24T16:01:33.12345aZ",
            b"2026x11-24T16:01:33.123456Z",
            b"2026-11-24T16:01x33.123456Z",
            b"2026-11-24T16:01:33.123456z",
            b"2026-11-24T16:01:33.1234567Z",
            b"",
        ] {
            assert!(!is_canonical(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn parses_gamma_dates() {
        assert_eq!(parse_rfc3339("2025-12-30T17:10:15.861305Z"), Some(datetime!(2025-12-30 17:10:15.861305 UTC)));
        assert_eq!(parse_rfc3339("2025-12-31T17:00:00Z"), Some(datetime!(2025-12-31 17:00:00 UTC)));
        assert_eq!(parse_rfc3339("2025-12-31 17:00:00+00:00"), Some(datetime!(2025-12-31 17:00:00 UTC)));
        assert_eq!(parse_rfc3339("2025-12-31"), None);
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn eastern_time_across_both_2026_transitions() {
        // 2026: DST starts Sunday 8 March 07:00 UTC, ends Sunday 1 November 06:00 UTC.
        assert_eq!(eastern_offset(datetime!(2026-03-08 06:59:59 UTC)).whole_hours(), -5);
        assert_eq!(eastern_offset(datetime!(2026-03-08 07:00:00 UTC)).whole_hours(), -4);
        assert_eq!(eastern_offset(datetime!(2026-11-01 05:59:59 UTC)).whole_hours(), -4);
        assert_eq!(eastern_offset(datetime!(2026-11-01 06:00:00 UTC)).whole_hours(), -5);
        assert_eq!(eastern_offset(datetime!(2026-07-01 12:00 UTC)).whole_hours(), -4);
        assert_eq!(eastern_offset(datetime!(2026-01-15 12:00 UTC)).whole_hours(), -5);
        // Round trips through local time.
        assert_eq!(from_eastern(datetime!(2026-03-08 01:00)), datetime!(2026-03-08 06:00 UTC));
        assert_eq!(from_eastern(datetime!(2026-03-08 03:00)), datetime!(2026-03-08 07:00 UTC));
        assert_eq!(from_eastern(datetime!(2026-11-01 00:00)), datetime!(2026-11-01 04:00 UTC));
        assert_eq!(from_eastern(datetime!(2026-11-01 03:00)), datetime!(2026-11-01 08:00 UTC));
        // Ambiguous 01:00 on fall-back day: first occurrence (EDT).
        assert_eq!(from_eastern(datetime!(2026-11-01 01:00)), datetime!(2026-11-01 05:00 UTC));
    }

    #[test]
    fn clock_spec() {
        let (t, r, steps) = parse_clock_spec("2026-03-08T06:00:00Zx60").unwrap();
        assert_eq!(t, datetime!(2026-03-08 06:00 UTC));
        assert_eq!(r, 60.0);
        assert!(steps.is_empty());
        assert_eq!(parse_clock_spec("2026-03-08T06:00:00Z").unwrap().1, 1.0);
        assert!(parse_clock_spec("nonsense").is_none());
        assert!(parse_clock_spec("2026-03-08T06:00:00Zx0").is_none());
        // Steps: signed seconds @ real seconds, in the order given.
        let (t, r, steps) = parse_clock_spec("2026-03-08T06:00:00+00:00x2,+10800@1.5,-10800@3").unwrap();
        assert_eq!((t, r), (datetime!(2026-03-08 06:00 UTC), 2.0));
        assert_eq!(steps, vec![(1.5, 10800.0), (3.0, -10800.0)]);
        assert!(parse_clock_spec("2026-03-08T06:00:00Z,+5").is_none());
        assert!(parse_clock_spec("2026-03-08T06:00:00Z,x@1").is_none());
        assert!(parse_clock_spec("2026-03-08T06:00:00Z,5@-1").is_none());
    }
}
