//! Polymarket BTC up/down markets: the slug families computed from the clock (facts §3), Gamma's
//! market record parsed with its quirks (facts §2.3) and its Protocol V2 `version`
//! (docs/VENUE_FACTS_2026.md), the normalized market record (`pmarchive.market/1`) that `pm-markets`
//! writes and `pm-books`/`pm-stream` read, and the resolution record (`pmarchive.resolution/1`) that
//! `pm-markets` writes once Gamma says a market is resolved.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

use crate::clock;

pub const MARKET_SCHEMA: &str = "pmarchive.market/1";
pub const RESOLUTION_SCHEMA: &str = "pmarchive.resolution/1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Family {
    #[serde(rename = "5m")]
    M5,
    #[serde(rename = "15m")]
    M15,
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "4h")]
    H4,
    #[serde(rename = "daily")]
    Daily,
}

pub const ALL_FAMILIES: [Family; 5] = [Family::M5, Family::M15, Family::H1, Family::H4, Family::Daily];

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::M5 => "5m",
            Family::M15 => "15m",
            Family::H1 => "1h",
            Family::H4 => "4h",
            Family::Daily => "daily",
        }
    }

    pub fn parse(s: &str) -> Option<Family> {
        ALL_FAMILIES.into_iter().find(|f| f.name() == s)
    }

    /// Fixed length in seconds for the UTC-aligned families.
    fn period(self) -> Option<i64> {
        match self {
            Family::M5 => Some(300),
            Family::M15 => Some(900),
            Family::H1 => Some(3600),
            Family::H4 => Some(14_400),
            Family::Daily => None,
        }
    }

    /// Start of the window that contains `t`.
    ///
    /// Daily windows run noon ET → noon ET (16:00 UTC in summer, 17:00 UTC in winter). This is our
    /// assumption for computing the slug's date only (facts §3.1 cites a 3rd-party "16:00→16:00
    /// UTC"); the market's real window always comes from Gamma (`eventStartTime`..`endDate`).
    pub fn window_start(self, t: OffsetDateTime) -> OffsetDateTime {
        match self.period() {
            Some(p) => {
                let s = t.unix_timestamp().div_euclid(p) * p;
                clock::from_unix(s).expect("in range")
            }
            None => {
                let date = clock::to_eastern(t).date();
                let noon = noon_et(date);
                if noon <= t {
                    noon
                } else {
                    noon_et(date.previous_day().expect("in range"))
                }
            }
        }
    }

    /// Start of the window after the one starting at `start` (= end of that window).
    pub fn next_start(self, start: OffsetDateTime) -> OffsetDateTime {
        match self.period() {
            Some(p) => start + time::Duration::seconds(p),
            None => noon_et(clock::to_eastern(start).date().next_day().expect("in range")),
        }
    }

    /// The current window and the `ahead` windows after it: (start, end) pairs.
    pub fn windows(self, now: OffsetDateTime, ahead: u32) -> Vec<(OffsetDateTime, OffsetDateTime)> {
        let mut out = Vec::new();
        let mut s = self.window_start(now);
        for _ in 0..=ahead {
            let e = self.next_start(s);
            out.push((s, e));
            s = e;
        }
        out
    }

    /// Candidate slugs of the window starting at `start`, most likely first. Hourly and daily slugs
    /// are dated in US Eastern time; newer ones carry the year, older ones do not (facts §3.1).
    pub fn slugs(self, start: OffsetDateTime) -> Vec<String> {
        let unix = start.unix_timestamp();
        match self {
            Family::M5 => vec![format!("btc-updown-5m-{unix}")],
            Family::M15 => vec![format!("btc-updown-15m-{unix}")],
            Family::H4 => vec![format!("btc-updown-4h-{unix}")],
            Family::H1 => {
                let et = clock::to_eastern(start);
                let h = et.hour();
                let h12 = if h.is_multiple_of(12) { 12 } else { h % 12 };
                let ampm = if h < 12 { "am" } else { "pm" };
                let m = MONTHS[u8::from(et.month()) as usize - 1];
                vec![
                    format!("bitcoin-up-or-down-{m}-{}-{}-{h12}{ampm}-et", et.day(), et.year()),
                    format!("bitcoin-up-or-down-{m}-{}-{h12}{ampm}-et", et.day()),
                ]
            }
            Family::Daily => {
                let end = clock::to_eastern(self.next_start(start));
                let m = MONTHS[u8::from(end.month()) as usize - 1];
                vec![
                    format!("bitcoin-up-or-down-on-{m}-{}-{}", end.day(), end.year()),
                    format!("bitcoin-up-or-down-on-{m}-{}", end.day()),
                ]
            }
        }
    }
}

fn noon_et(date: Date) -> OffsetDateTime {
    clock::from_eastern(PrimitiveDateTime::new(date, Time::from_hms(12, 0, 0).unwrap()))
}

fn month_from_name(s: &str) -> Option<Month> {
    let i = MONTHS.iter().position(|m| *m == s)?;
    Month::try_from(i as u8 + 1).ok()
}

/// The inverse of [`Family::slugs`]: family and window of a slug. Year-less hourly/daily slugs take
/// the year of `now`.
pub fn window_of_slug(slug: &str, now: OffsetDateTime) -> Option<(Family, OffsetDateTime, OffsetDateTime)> {
    for (prefix, fam) in
        [("btc-updown-5m-", Family::M5), ("btc-updown-15m-", Family::M15), ("btc-updown-4h-", Family::H4)]
    {
        if let Some(rest) = slug.strip_prefix(prefix) {
            if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) || rest.len() > 12 {
                return None;
            }
            let t: i64 = rest.parse().ok()?;
            if t % fam.period()? != 0 {
                return None;
            }
            let s = clock::from_unix(t)?;
            return Some((fam, s, fam.next_start(s)));
        }
    }
    if let Some(rest) = slug.strip_prefix("bitcoin-up-or-down-on-") {
        let parts: Vec<&str> = rest.split('-').collect();
        let (m, d, y) = match parts.as_slice() {
            [m, d, y] => (*m, *d, y.parse::<i32>().ok()?),
            [m, d] => (*m, *d, clock::to_eastern(now).year()),
            _ => return None,
        };
        let end_date = Date::from_calendar_date(y, month_from_name(m)?, d.parse().ok()?).ok()?;
        let end = noon_et(end_date);
        return Some((Family::Daily, noon_et(end_date.previous_day()?), end));
    }
    if let Some(rest) = slug.strip_prefix("bitcoin-up-or-down-").and_then(|r| r.strip_suffix("-et")) {
        let parts: Vec<&str> = rest.split('-').collect();
        let (m, d, y, hm) = match parts.as_slice() {
            [m, d, y, hm] => (*m, *d, y.parse::<i32>().ok()?, *hm),
            [m, d, hm] => (*m, *d, clock::to_eastern(now).year(), *hm),
            _ => return None,
        };
        let (h, pm) = if let Some(h) = hm.strip_suffix("am") { (h, false) } else { (hm.strip_suffix("pm")?, true) };
        let h12: u8 = h.parse().ok()?;
        if !(1..=12).contains(&h12) {
            return None;
        }
        let h24 = (h12 % 12) + if pm { 12 } else { 0 };
        let date = Date::from_calendar_date(y, month_from_name(m)?, d.parse().ok()?).ok()?;
        let start = clock::from_eastern(PrimitiveDateTime::new(date, Time::from_hms(h24, 0, 0).ok()?));
        return Some((Family::H1, start, start + time::Duration::hours(1)));
    }
    None
}

/// The family of a slug, if it is a BTC up/down slug.
pub fn family_of_slug(slug: &str) -> Option<Family> {
    window_of_slug(slug, clock::now()).map(|(f, _, _)| f)
}

/// One outcome token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub token_id: String,
    pub outcome: String,
}

/// The normalized market record (one JSONL line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Market {
    pub record: String,
    pub schema: String,
    pub venue: String,
    pub family: Option<Family>,
    pub slug: String,
    pub question: Option<String>,
    pub market_id: Option<String>,
    pub condition_id: String,
    pub question_id: Option<String>,
    pub tokens: Vec<Token>,
    /// Gamma `version` as sent (`"v1"`, `"v2"`; None when the record has none, as older records).
    #[serde(default)]
    pub version: Option<String>,
    /// Where the outcome ids in `tokens` came from: `positionIds` (version `"v2"`) or `clobTokenIds`.
    #[serde(default = "default_id_field")]
    pub token_id_field: String,
    pub window_start_utc: String,
    pub window_end_utc: String,
    /// Gamma `startDate`: when the market was listed (not the window start).
    pub listed_at_utc: Option<String>,
    pub active: Option<bool>,
    pub closed: Option<bool>,
    pub archived: Option<bool>,
    /// As Gamma sent it: a market can keep accepting orders long after its window (docs/VENUE_FACTS_2026.md).
    pub accepting_orders: Option<bool>,
    pub enable_order_book: Option<bool>,
    /// Gamma `umaResolutionStatus` as sent (absent on most BTC up/down records).
    #[serde(default)]
    pub uma_resolution_status: Option<String>,
    /// Derived at fetch time: `upcoming` (before the window), `open`, `ended` (after the window,
    /// not yet closed), `closed` (Gamma `closed: true`, i.e. settled).
    pub status: String,
    /// Gamma `orderPriceMinTickSize`, as sent.
    pub tick_size: Value,
    /// Gamma `orderMinSize`, as sent.
    pub min_order_size: Value,
    pub neg_risk: Option<bool>,
    pub resolution_source: Option<String>,
    pub source_url: String,
    pub fetched_at_utc: String,
    /// Why this line was written: `snapshot` (--once), `new`, `changed`, `expired` (watch mode).
    pub change: String,
}

impl Market {
    pub fn window_start(&self) -> Option<OffsetDateTime> {
        clock::parse_rfc3339(&self.window_start_utc)
    }

    pub fn window_end(&self) -> Option<OffsetDateTime> {
        clock::parse_rfc3339(&self.window_end_utc)
    }

    /// The fields whose change watch mode reports.
    pub fn state_key(&self) -> (String, [Option<bool>; 5], Option<String>) {
        let flags = [self.active, self.closed, self.archived, self.accepting_orders, self.enable_order_book];
        (self.status.clone(), flags, self.uma_resolution_status.clone())
    }
}

/// What Gamma says about a market's outcome (one JSONL line, schema `pmarchive.resolution/1`),
/// written by `pm-markets --watch` once per market after its window: when Gamma first reports it
/// resolved, or when `--resolve-for` ran out without that (`result: "unresolved"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    /// Always `resolution`.
    pub record: String,
    pub schema: String,
    pub venue: String,
    pub family: Option<Family>,
    pub slug: String,
    pub market_id: Option<String>,
    pub condition_id: String,
    pub version: Option<String>,
    pub tokens: Vec<Token>,
    pub window_start_utc: String,
    pub window_end_utc: String,
    /// `resolved` (one token won), `split` (Gamma says resolved but no single token is at 1, e.g.
    /// 50/50), `unresolved` (not resolved when `--resolve-for` ran out).
    pub result: String,
    pub winning_token_id: Option<String>,
    pub winning_outcome: Option<String>,
    /// Gamma `outcomePrices`, decoded from its JSON string, in `tokens` order.
    pub outcome_prices: Option<Vec<String>>,
    /// Gamma `umaResolutionStatus` as sent (absent on most BTC up/down records).
    pub uma_resolution_status: Option<String>,
    /// Gamma `closedTime` as sent (`"YYYY-MM-DD HH:MM:SS+00"`), and the same instant in RFC 3339.
    pub closed_time: Option<String>,
    pub closed_at_utc: Option<String>,
    pub closed: Option<bool>,
    pub accepting_orders: Option<bool>,
    /// Gamma fetches of this market after its window, this one included.
    pub checks: u32,
    pub source_url: String,
    pub fetched_at_utc: String,
}

impl Resolution {
    /// The record for `m` with `result`; the outcome fields are filled by [`resolution_of`].
    pub fn of_market(m: &Market, result: &str, checks: u32) -> Resolution {
        Resolution {
            record: "resolution".into(),
            schema: RESOLUTION_SCHEMA.into(),
            venue: m.venue.clone(),
            family: m.family,
            slug: m.slug.clone(),
            market_id: m.market_id.clone(),
            condition_id: m.condition_id.clone(),
            version: m.version.clone(),
            tokens: m.tokens.clone(),
            window_start_utc: m.window_start_utc.clone(),
            window_end_utc: m.window_end_utc.clone(),
            result: result.into(),
            winning_token_id: None,
            winning_outcome: None,
            outcome_prices: None,
            uma_resolution_status: m.uma_resolution_status.clone(),
            closed_time: None,
            closed_at_utc: None,
            closed: m.closed,
            accepting_orders: m.accepting_orders,
            checks,
            source_url: m.source_url.clone(),
            fetched_at_utc: m.fetched_at_utc.clone(),
        }
    }
}

/// The resolution Gamma reports in market object `v` (already parsed as `m`), or None while it is
/// not resolved. Resolved means: `closed: true`, `umaResolutionStatus` absent or `"resolved"`, and
/// `outcomePrices` settled — exactly one token at 1 and the others at 0 (the winner), or, when
/// `umaResolutionStatus` says `"resolved"`, any other prices (`split`). Closed with trading prices
/// and no UMA status is not resolved yet: the winner is never guessed from prices.
pub fn resolution_of(v: &Value, m: &Market, checks: u32) -> Option<Resolution> {
    if m.closed != Some(true) {
        return None;
    }
    let uma = m.uma_resolution_status.as_deref();
    if uma.is_some_and(|s| s != "resolved") {
        return None;
    }
    let prices = string_array(v.get("outcomePrices"), "outcomePrices").ok()?;
    if prices.len() != m.tokens.len() {
        return None;
    }
    let nums: Vec<Option<f64>> = prices.iter().map(|p| p.trim().parse::<f64>().ok()).collect();
    let winners: Vec<usize> = (0..nums.len()).filter(|&i| nums[i] == Some(1.0)).collect();
    let zeros = nums.iter().filter(|p| **p == Some(0.0)).count();
    let winner = (winners.len() == 1 && zeros + 1 == nums.len()).then(|| winners[0]);
    let result = match (winner, uma) {
        (Some(_), _) => "resolved",
        (None, Some("resolved")) => "split",
        (None, _) => return None,
    };
    let mut r = Resolution::of_market(m, result, checks);
    if let Some(i) = winner {
        r.winning_token_id = Some(m.tokens[i].token_id.clone());
        r.winning_outcome = Some(m.tokens[i].outcome.clone());
    }
    r.outcome_prices = Some(prices);
    r.closed_time = opt_str(v, "closedTime");
    r.closed_at_utc = r.closed_time.as_deref().and_then(parse_gamma_time).map(clock::fmt_secs);
    Some(r)
}

fn default_id_field() -> String {
    CLOB_TOKEN_IDS.to_string()
}

pub const CLOB_TOKEN_IDS: &str = "clobTokenIds";
pub const POSITION_IDS: &str = "positionIds";

/// Which field holds a Gamma market's outcome ids, chosen by its `version` (Protocol V2 docs: "Choose
/// the ID field by `version`, even when both fields are present"): `"v2"` → `positionIds`; `"v1"`
/// or no `version` (records from before V2) → `clobTokenIds`. Any other value is an error — never a
/// guess; the caller counts it and keeps the reply raw.
pub fn id_field(v: &Value) -> Result<&'static str, String> {
    match v.get("version") {
        None | Some(Value::Null) => Ok(CLOB_TOKEN_IDS),
        Some(Value::String(s)) if s == "v1" => Ok(CLOB_TOKEN_IDS),
        Some(Value::String(s)) if s == "v2" => Ok(POSITION_IDS),
        Some(other) => Err(format!("unsupported market version {other} (known: \"v1\", \"v2\")")),
    }
}

/// A Gamma time: RFC 3339, or `closedTime`'s `"YYYY-MM-DD HH:MM:SS+00"` (facts §2.3).
pub fn parse_gamma_time(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    clock::parse_rfc3339(s).or_else(|| {
        let b = s.as_bytes();
        let n = b.len();
        (n > 3 && (b[n - 3] == b'+' || b[n - 3] == b'-') && b[n - 2..].iter().all(u8::is_ascii_digit))
            .then(|| clock::parse_rfc3339(&format!("{s}:00")))
            .flatten()
    })
}

/// A token id as the venue uses it: a decimal string (up to 78 digits, facts §2.3).
pub fn is_valid_token_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 100 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A condition id: `0x` + 64 hex.
pub fn is_valid_condition_id(s: &str) -> bool {
    s.len() == 66 && s.starts_with("0x") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Gamma's arrays-in-strings: accepts a JSON string holding a JSON array of strings, or a real array.
fn string_array(v: Option<&Value>, field: &str) -> Result<Vec<String>, String> {
    let v = v.ok_or_else(|| format!("missing {field}"))?;
    let arr: Vec<Value> = match v {
        Value::String(s) => {
            serde_json::from_str(s).map_err(|e| format!("{field} is not a JSON array inside its string: {e}"))?
        }
        Value::Array(a) => a.clone(),
        _ => return Err(format!("{field} is neither a string nor an array")),
    };
    arr.into_iter()
        .map(|x| x.as_str().map(str::to_string).ok_or_else(|| format!("{field} holds a non-string")))
        .collect()
}

fn opt_str(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

fn opt_bool(v: &Value, k: &str) -> Option<bool> {
    v.get(k).and_then(Value::as_bool)
}

fn time_field(v: &Value, k: &str) -> Result<OffsetDateTime, String> {
    let s = v.get(k).and_then(Value::as_str).ok_or_else(|| format!("missing {k}"))?;
    clock::parse_rfc3339(s).ok_or_else(|| format!("{k} is not a date: {s:?}"))
}

/// Parses one Gamma market object (the reply of `GET /markets/slug/{slug}`, or an element of an
/// event's `markets[]`). Errors are one-line reasons.
pub fn parse_gamma_market(v: &Value, source_url: &str, fetched_at: OffsetDateTime) -> Result<Market, String> {
    if !v.is_object() {
        return Err("not a JSON object".into());
    }
    let slug = opt_str(v, "slug").ok_or("missing slug")?;
    let condition_id = opt_str(v, "conditionId").ok_or("missing conditionId")?;
    if !is_valid_condition_id(&condition_id) {
        return Err(format!("conditionId is not 0x+64 hex: {condition_id:?}"));
    }
    let field = id_field(v)?;
    let ids = string_array(v.get(field), field)?;
    let outcomes = string_array(v.get("outcomes"), "outcomes")?;
    if ids.len() != outcomes.len() {
        return Err(format!("{} {field} but {} outcomes", ids.len(), outcomes.len()));
    }
    if ids.len() != 2 {
        return Err(format!("expected 2 outcome tokens, got {}", ids.len()));
    }
    if let Some(bad) = ids.iter().find(|t| !is_valid_token_id(t)) {
        return Err(format!("token id is not a decimal string: {bad:?}"));
    }
    let start = time_field(v, "eventStartTime")?;
    let end = time_field(v, "endDate")?;
    if end <= start {
        return Err("endDate is not after eventStartTime".into());
    }
    let listed = v.get("startDate").and_then(Value::as_str).and_then(clock::parse_rfc3339);
    let closed = opt_bool(v, "closed");
    let status = if closed == Some(true) {
        "closed"
    } else if fetched_at < start {
        "upcoming"
    } else if fetched_at < end {
        "open"
    } else {
        "ended"
    };
    Ok(Market {
        record: "market".into(),
        schema: MARKET_SCHEMA.into(),
        venue: crate::envelope::VENUE_POLYMARKET.into(),
        family: family_of_slug(&slug),
        question: opt_str(v, "question"),
        market_id: opt_str(v, "id"),
        condition_id,
        question_id: opt_str(v, "questionID"),
        tokens: ids.into_iter().zip(outcomes).map(|(token_id, outcome)| Token { token_id, outcome }).collect(),
        version: opt_str(v, "version"),
        token_id_field: field.into(),
        window_start_utc: clock::fmt_secs(start),
        window_end_utc: clock::fmt_secs(end),
        listed_at_utc: listed.map(clock::fmt_micros),
        active: opt_bool(v, "active"),
        closed,
        archived: opt_bool(v, "archived"),
        accepting_orders: opt_bool(v, "acceptingOrders"),
        enable_order_book: opt_bool(v, "enableOrderBook"),
        uma_resolution_status: opt_str(v, "umaResolutionStatus"),
        status: status.into(),
        tick_size: v.get("orderPriceMinTickSize").cloned().unwrap_or(Value::Null),
        min_order_size: v.get("orderMinSize").cloned().unwrap_or(Value::Null),
        neg_risk: opt_bool(v, "negRisk"),
        resolution_source: opt_str(v, "resolutionSource"),
        source_url: source_url.into(),
        fetched_at_utc: clock::fmt_micros(fetched_at),
        slug,
        change: "snapshot".into(),
    })
}

/// Checks a parsed market record enough to poll it (feed::Record).
fn validate(m: &Market) -> Result<(), String> {
    if m.schema != MARKET_SCHEMA || m.record != "market" {
        return Err(format!("not a {MARKET_SCHEMA} market record (record {:?}, schema {:?})", m.record, m.schema));
    }
    if m.tokens.is_empty() {
        return Err("no tokens".into());
    }
    if let Some(t) = m.tokens.iter().find(|t| !is_valid_token_id(&t.token_id)) {
        return Err(format!("token id is not a decimal string: {:?}", t.token_id));
    }
    let (Some(s), Some(e)) = (m.window_start(), m.window_end()) else {
        return Err(format!("window times are not RFC 3339: {:?} .. {:?}", m.window_start_utc, m.window_end_utc));
    };
    if e <= s {
        return Err("window_end_utc is not after window_start_utc".into());
    }
    Ok(())
}

impl crate::feed::Record for Market {
    const VENUE: &'static str = crate::envelope::VENUE_POLYMARKET;

    /// Parses one input line (blank lines and resolution records give None).
    fn parse_line(line: &[u8]) -> Option<Result<Market, String>> {
        let text = match std::str::from_utf8(line) {
            Ok(t) => t.trim(),
            Err(e) => return Some(Err(format!("not UTF-8: {e}"))),
        };
        if text.is_empty() || is_resolution(text) {
            return None;
        }
        Some(match serde_json::from_str::<Market>(text) {
            Ok(m) => validate(&m).map(|_| m),
            Err(e) => Err(format!("not a market record: {e}")),
        })
    }
}

/// A `pmarchive.resolution/1` line (pm-markets writes them into the same stream): not a market to
/// poll, skipped like a blank line.
fn is_resolution(text: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(borrow)]
        schema: Option<&'a str>,
    }
    text.contains(RESOLUTION_SCHEMA)
        && serde_json::from_str::<Kind>(text).is_ok_and(|k| k.schema == Some(RESOLUTION_SCHEMA))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn utc_aligned_slugs() {
        let now = datetime!(2025-12-31 17:07:12 UTC);
        let w = Family::M15.windows(now, 1);
        assert_eq!(w[0].0, datetime!(2025-12-31 17:00 UTC));
        assert_eq!(Family::M15.slugs(w[0].0), vec!["btc-updown-15m-1767200400"]);
        assert_eq!(Family::M15.slugs(w[1].0), vec!["btc-updown-15m-1767201300"]);
        let w5 = Family::M5.windows(datetime!(2026-08-22 16:04:59 UTC), 0);
        assert_eq!(Family::M5.slugs(w5[0].0), vec!["btc-updown-5m-1787414400"]);
        // 4h windows start at 00,04,..,20 UTC.
        assert_eq!(Family::H4.window_start(datetime!(2026-08-22 17:00 UTC)), datetime!(2026-08-22 16:00 UTC));
        assert_eq!(Family::H4.slugs(datetime!(2026-08-22 16:00 UTC)), vec!["btc-updown-4h-1787414400"]);
    }

    #[test]
    fn hourly_slugs_are_dated_in_eastern_time() {
        // Summer (EDT): 16:00Z = 12pm ET.
        assert_eq!(Family::H1.slugs(datetime!(2026-08-30 16:00 UTC))[0], "bitcoin-up-or-down-august-30-2026-12pm-et");
        assert_eq!(Family::H1.slugs(datetime!(2026-08-30 16:00 UTC))[1], "bitcoin-up-or-down-august-30-12pm-et");
        // Winter (EST): 17:00Z = 12pm ET; 05:00Z = 12am ET.
        assert_eq!(Family::H1.slugs(datetime!(2026-02-25 17:00 UTC))[1], "bitcoin-up-or-down-february-25-12pm-et");
        assert_eq!(Family::H1.slugs(datetime!(2026-02-25 05:00 UTC))[1], "bitcoin-up-or-down-february-25-12am-et");
        // Late evening ET is still the previous ET day while UTC has rolled over.
        assert_eq!(Family::H1.slugs(datetime!(2026-02-26 03:00 UTC))[0], "bitcoin-up-or-down-february-25-2026-10pm-et");
    }

    #[test]
    fn hourly_slugs_across_spring_forward_2026() {
        // 2026-03-08: 06:00Z = 1am EST, 07:00Z = 3am EDT (2am ET does not exist).
        assert_eq!(Family::H1.slugs(datetime!(2026-03-08 06:00 UTC))[0], "bitcoin-up-or-down-march-8-2026-1am-et");
        assert_eq!(Family::H1.slugs(datetime!(2026-03-08 07:00 UTC))[0], "bitcoin-up-or-down-march-8-2026-3am-et");
        let w = Family::H1.windows(datetime!(2026-03-08 06:30 UTC), 1);
        assert_eq!(w[1].0, datetime!(2026-03-08 07:00 UTC));
        assert_eq!(
            window_of_slug("bitcoin-up-or-down-march-8-2026-3am-et", datetime!(2026-03-08 00:00 UTC)).unwrap().1,
            datetime!(2026-03-08 07:00 UTC)
        );
        assert_eq!(
            window_of_slug("bitcoin-up-or-down-march-8-2026-1am-et", datetime!(2026-03-08 00:00 UTC)).unwrap().1,
            datetime!(2026-03-08 06:00 UTC)
        );
    }

    #[test]
    fn hourly_slugs_across_fall_back_2026() {
        // 2026-11-01: 05:00Z = 1am EDT, 06:00Z = 1am EST (the hour happens twice), 07:00Z = 2am EST.
        assert_eq!(Family::H1.slugs(datetime!(2026-11-01 04:00 UTC))[0], "bitcoin-up-or-down-november-1-2026-12am-et");
        assert_eq!(Family::H1.slugs(datetime!(2026-11-01 05:00 UTC))[0], "bitcoin-up-or-down-november-1-2026-1am-et");
        assert_eq!(Family::H1.slugs(datetime!(2026-11-01 06:00 UTC))[0], "bitcoin-up-or-down-november-1-2026-1am-et");
        assert_eq!(Family::H1.slugs(datetime!(2026-11-01 07:00 UTC))[0], "bitcoin-up-or-down-november-1-2026-2am-et");
    }

    #[test]
    fn daily_windows_and_slugs_across_dst() {
        // Summer: noon ET = 16:00Z; the window ending 2026-10-08 16:00Z is "…-on-october-8-2026".
        let s = Family::Daily.window_start(datetime!(2026-10-08 10:00 UTC));
        assert_eq!(s, datetime!(2026-10-07 16:00 UTC));
        assert_eq!(
            Family::Daily.slugs(s),
            vec!["bitcoin-up-or-down-on-october-8-2026", "bitcoin-up-or-down-on-october-8"]
        );
        // Across fall-back: window 2026-10-31 16:00Z → 2026-11-01 17:00Z (25 h).
        let s = Family::Daily.window_start(datetime!(2026-11-01 10:00 UTC));
        assert_eq!(s, datetime!(2026-10-31 16:00 UTC));
        assert_eq!(Family::Daily.next_start(s), datetime!(2026-11-01 17:00 UTC));
        assert_eq!(Family::Daily.slugs(s)[0], "bitcoin-up-or-down-on-november-1-2026");
        // Across spring-forward: window 2026-03-07 17:00Z → 2026-03-08 16:00Z (23 h).
        let s = Family::Daily.window_start(datetime!(2026-03-08 12:00 UTC));
        assert_eq!(s, datetime!(2026-03-07 17:00 UTC));
        assert_eq!(Family::Daily.next_start(s), datetime!(2026-03-08 16:00 UTC));
        let (f, ws, we) =
            window_of_slug("bitcoin-up-or-down-on-march-8-2026", datetime!(2026-01-01 00:00 UTC)).unwrap();
        assert_eq!((f, ws, we), (Family::Daily, datetime!(2026-03-07 17:00 UTC), datetime!(2026-03-08 16:00 UTC)));
    }

    #[test]
    fn inverse_slugs() {
        let now = datetime!(2026-08-30 00:00 UTC);
        assert_eq!(window_of_slug("btc-updown-5m-1787414400", now).unwrap().0, Family::M5);
        assert!(window_of_slug("btc-updown-5m-1787414401", now).is_none());
        assert!(window_of_slug("btc-updown-5m-../../x", now).is_none());
        assert_eq!(
            window_of_slug("bitcoin-up-or-down-august-30-2026-12pm-et", now).unwrap().1,
            datetime!(2026-08-30 16:00 UTC)
        );
        assert_eq!(
            window_of_slug("bitcoin-up-or-down-august-30-12pm-et", now).unwrap().1,
            datetime!(2026-08-30 16:00 UTC)
        );
        assert!(window_of_slug("bitcoin-up-or-down-august-30-13pm-et", now).is_none());
        assert!(window_of_slug("eth-updown-5m-1787414400", now).is_none());
        for f in ALL_FAMILIES {
            for (s, e) in f.windows(now, 3) {
                for slug in f.slugs(s) {
                    assert_eq!(window_of_slug(&slug, now), Some((f, s, e)), "{slug}");
                }
            }
        }
    }

    #[test]
    fn parses_the_recorded_gamma_record() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/polymarket/gamma_market_btc_updown_15m_1767200400.json"
        ))
        .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let m = parse_gamma_market(
            &v,
            "https://gamma-api.polymarket.com/markets/slug/btc-updown-15m-1767200400",
            datetime!(2025-12-31 17:07 UTC),
        )
        .unwrap();
        assert_eq!(m.family, Some(Family::M15));
        assert_eq!(m.tokens[0].outcome, "Up");
        assert_eq!(
            m.tokens[0].token_id,
            "8851848546962572193739008211889046036776198486765606333032192644001246174440"
        );
        assert_eq!(m.tokens[1].outcome, "Down");
        assert_eq!(m.window_start_utc, "2025-12-31T17:00:00Z");
        assert_eq!(m.window_end_utc, "2025-12-31T17:15:00Z");
        assert_eq!(m.listed_at_utc.as_deref(), Some("2025-12-30T17:10:15.861305Z"));
        assert_eq!(m.status, "open");
        assert_eq!(m.tick_size, serde_json::json!(0.01));
        assert_eq!(m.neg_risk, Some(false));
    }

    #[test]
    fn rejects_malformed_records() {
        let base = serde_json::json!({
            "slug": "btc-updown-5m-1787414400",
            "conditionId": format!("0x{}", "a".repeat(64)),
            "clobTokenIds": "[\"1\", \"2\"]", "outcomes": "[\"Up\", \"Down\"]",
            "eventStartTime": "2026-08-22T16:00:00Z", "endDate": "2026-08-22T16:05:00Z"
        });
        let t = datetime!(2026-08-22 16:00 UTC);
        assert!(parse_gamma_market(&base, "u", t).is_ok());
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            parse_gamma_market(&b, "u", t).unwrap_err()
        };
        assert!(with("clobTokenIds", Value::Null).contains("clobTokenIds"));
        assert!(with("clobTokenIds", "[\"1\", ".into()).contains("not a JSON array"));
        assert!(with("clobTokenIds", "[\"1\"]".into()).contains("1 clobTokenIds but 2 outcomes"));
        assert!(with("clobTokenIds", "[\"1\", \"../x\"]".into()).contains("decimal"));
        assert!(with("eventStartTime", "soon".into()).contains("not a date"));
        assert!(with("conditionId", "0x12".into()).contains("conditionId"));
        let mut no_start = base.clone();
        no_start.as_object_mut().unwrap().remove("eventStartTime");
        assert!(parse_gamma_market(&no_start, "u", t).unwrap_err().contains("missing eventStartTime"));
        // Real arrays are accepted too (WS new_market style).
        assert!(parse_gamma_market(
            &{
                let mut b = base.clone();
                b["clobTokenIds"] = serde_json::json!(["1", "2"]);
                b
            },
            "u",
            t
        )
        .is_ok());
    }

    fn base_record() -> Value {
        serde_json::json!({
            "slug": "btc-updown-5m-1787414400",
            "conditionId": format!("0x{}", "a".repeat(64)),
            "clobTokenIds": "[\"1\", \"2\"]", "outcomes": "[\"Up\", \"Down\"]",
            "eventStartTime": "2026-08-22T16:00:00Z", "endDate": "2026-08-22T16:05:00Z"
        })
    }

    /// Protocol V2: the id field follows `version`, even when both fields are present.
    #[test]
    fn outcome_ids_are_chosen_by_version() {
        let t = datetime!(2026-08-22 16:00 UTC);
        let mut v = base_record();
        v["positionIds"] = serde_json::json!(["31", "32"]);
        let m = parse_gamma_market(&v, "u", t).unwrap();
        assert_eq!((m.tokens[0].token_id.as_str(), m.version.as_deref()), ("1", None), "no version: clobTokenIds");
        assert_eq!(m.token_id_field, "clobTokenIds");
        v["version"] = "v1".into();
        assert_eq!(parse_gamma_market(&v, "u", t).unwrap().tokens[1].token_id, "2");
        v["version"] = "v2".into();
        let m = parse_gamma_market(&v, "u", t).unwrap();
        assert_eq!((m.tokens[0].token_id.as_str(), m.tokens[1].token_id.as_str()), ("31", "32"));
        assert_eq!((m.version.as_deref(), m.token_id_field.as_str()), (Some("v2"), "positionIds"));
        assert_eq!(m.tokens[0].outcome, "Up");
        // A V2 record without positionIds is malformed: clobTokenIds is not used instead.
        v.as_object_mut().unwrap().remove("positionIds");
        assert!(parse_gamma_market(&v, "u", t).unwrap_err().contains("missing positionIds"));
        for bad in [serde_json::json!("v3"), serde_json::json!(2), serde_json::json!("V2")] {
            v["version"] = bad.clone();
            assert!(id_field(&v).unwrap_err().contains("unsupported market version"), "{bad}");
        }
    }

    /// Tick sizes are kept as sent: 0.005 and 0.0025 exist since 2026 (no tick set is assumed).
    #[test]
    fn any_tick_size_is_kept_as_sent() {
        for tick in [serde_json::json!(0.0025), serde_json::json!(0.005), serde_json::json!("0.0001")] {
            let mut v = base_record();
            v["orderPriceMinTickSize"] = tick.clone();
            assert_eq!(parse_gamma_market(&v, "u", datetime!(2026-08-22 16:00 UTC)).unwrap().tick_size, tick);
        }
    }

    #[test]
    fn closed_time_in_gammas_own_format() {
        assert_eq!(parse_gamma_time("2026-05-25 23:57:11+00"), Some(datetime!(2026-05-25 23:57:11 UTC)));
        assert_eq!(parse_gamma_time("2026-05-25T23:57:11Z"), Some(datetime!(2026-05-25 23:57:11 UTC)));
        assert_eq!(parse_gamma_time("2026-05-25 23:57:11+02"), Some(datetime!(2026-05-25 21:57:11 UTC)));
        assert_eq!(parse_gamma_time("yesterday"), None);
    }

    #[test]
    fn resolution_only_when_gamma_says_so() {
        let t = datetime!(2026-08-22 16:20 UTC);
        let res = |f: &dyn Fn(&mut Value)| {
            let mut v = base_record();
            v["closed"] = true.into();
            v["outcomePrices"] = "[\"0\", \"1\"]".into();
            v["closedTime"] = "2026-08-22 16:06:03+00".into();
            f(&mut v);
            let m = parse_gamma_market(&v, "u", t).unwrap();
            resolution_of(&v, &m, 3)
        };
        let r = res(&|_| {}).expect("closed with settled prices");
        assert_eq!(
            (r.result.as_str(), r.winning_token_id.as_deref(), r.winning_outcome.as_deref()),
            ("resolved", Some("2"), Some("Down"))
        );
        assert_eq!(r.closed_at_utc.as_deref(), Some("2026-08-22T16:06:03Z"));
        assert_eq!(r.closed_time.as_deref(), Some("2026-08-22 16:06:03+00"));
        assert_eq!((r.checks, r.schema.as_str(), r.record.as_str()), (3, RESOLUTION_SCHEMA, "resolution"));
        // Not closed, UMA still proposed/disputed, trading prices: not resolved, never guessed.
        assert!(res(&|v| v["closed"] = false.into()).is_none());
        assert!(res(&|v| v["umaResolutionStatus"] = "proposed".into()).is_none());
        assert!(res(&|v| v["outcomePrices"] = "[\"0.97\", \"0.03\"]".into()).is_none());
        assert!(res(&|v| v["outcomePrices"] = "[\"1\", \"1\"]".into()).is_none());
        assert!(res(&|v| v["outcomePrices"] = "garbage".into()).is_none());
        assert!(res(&|v| v["outcomePrices"] = "[\"1\"]".into()).is_none());
        // UMA resolved: a winner, or a split without one.
        let r = res(&|v| v["umaResolutionStatus"] = "resolved".into()).unwrap();
        assert_eq!(r.winning_outcome.as_deref(), Some("Down"));
        let r = res(&|v| {
            v["umaResolutionStatus"] = "resolved".into();
            v["outcomePrices"] = "[\"0.5\", \"0.5\"]".into();
        })
        .unwrap();
        assert_eq!((r.result.as_str(), r.winning_token_id.as_ref()), ("split", None));
        // The record round-trips (one type, Serialize + Deserialize).
        let back: Resolution = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}

#[cfg(test)]
mod feed_tests {
    use super::*;
    use crate::feed::{spawn_reader, Input, Record};
    use serde_json::Value;

    fn record() -> Market {
        Market {
            record: "market".into(),
            schema: MARKET_SCHEMA.into(),
            venue: "polymarket".into(),
            family: Some(Family::M5),
            slug: "btc-updown-5m-1787414400".into(),
            question: None,
            market_id: None,
            condition_id: format!("0x{}", "ab".repeat(32)),
            question_id: None,
            tokens: vec![
                Token { token_id: "123".into(), outcome: "Up".into() },
                Token { token_id: "456".into(), outcome: "Down".into() },
            ],
            window_start_utc: "2026-08-22T16:00:00Z".into(),
            window_end_utc: "2026-08-22T16:05:00Z".into(),
            listed_at_utc: None,
            active: Some(true),
            closed: Some(false),
            archived: Some(false),
            accepting_orders: Some(true),
            enable_order_book: Some(true),
            uma_resolution_status: None,
            version: None,
            token_id_field: CLOB_TOKEN_IDS.into(),
            status: "open".into(),
            tick_size: Value::Null,
            min_order_size: Value::Null,
            neg_risk: None,
            resolution_source: None,
            source_url: "http://127.0.0.1/x".into(),
            fetched_at_utc: "2026-08-22T16:00:01.000000Z".into(),
            change: "new".into(),
        }
    }

    #[test]
    fn parses_and_validates_input_lines() {
        let good = serde_json::to_vec(&record()).unwrap();
        assert!(Market::parse_line(&good).unwrap().is_ok());
        assert!(Market::parse_line(b"   \n").is_none());
        assert!(Market::parse_line(b"not json").unwrap().unwrap_err().starts_with("not a market record"));
        assert!(Market::parse_line(&[0xff, 0xfe]).unwrap().unwrap_err().starts_with("not UTF-8"));
        let mut m = record();
        m.tokens[0].token_id = "12a".into();
        assert!(Market::parse_line(&serde_json::to_vec(&m).unwrap()).unwrap().unwrap_err().contains("decimal"));
        let mut m = record();
        m.window_end_utc = m.window_start_utc.clone();
        assert!(Market::parse_line(&serde_json::to_vec(&m).unwrap()).unwrap().is_err());
        let mut m = record();
        m.schema = "other/1".into();
        assert!(Market::parse_line(&serde_json::to_vec(&m).unwrap()).unwrap().is_err());
        // pm-markets' resolution records share the stream: skipped, not counted as bad lines.
        let r = Resolution::of_market(&record(), "resolved", 1);
        assert!(Market::parse_line(&serde_json::to_vec(&r).unwrap()).is_none());
    }

    #[test]
    fn reader_thread_numbers_lines_and_disconnects_at_eof() {
        let good = serde_json::to_string(&record()).unwrap();
        let input = format!("{good}\nnot json\n\n{good}\n");
        let rx = spawn_reader::<Market>(Box::new(std::io::Cursor::new(input.into_bytes())));
        let got: Vec<Input<Market>> = rx.iter().collect();
        assert_eq!(got.len(), 3);
        assert!(matches!(got[0], Input::Market { line: 1, .. }));
        assert!(matches!(got[1], Input::Bad { line: 2, .. }));
        assert!(matches!(got[2], Input::Market { line: 4, .. }));
    }
}
