//! `pm-markets`' engine: compute the slugs of the current and next windows of each family, fetch
//! them from Gamma (`GET /markets/slug/{slug}`), parse, and report what appeared, changed or expired.
//! Every HTTP attempt goes to the raw sink as an envelope, whatever happened.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Duration;

use time::OffsetDateTime;

use crate::clock;
use crate::envelope::Sequencer;
use crate::http::{Client, Request, Verdict};
use crate::jsonl::LineWriter;
use crate::market::{self, Family, Market};
use crate::signal;
use crate::util;

#[derive(Clone, Debug)]
pub struct Config {
    pub gamma_url: String,
    pub families: Vec<Family>,
    pub ahead: u32,
    /// Watch mode: keep re-fetching a market this long after its window ended, then expire it.
    pub keep_after: Duration,
}

/// Counters of one process run (printed as the summary line).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub windows: u64,
    pub found: u64,
    pub not_listed: u64,
    pub malformed: u64,
    pub failed: u64,
    pub requests: u64,
}

/// What fetching one slug gave.
enum Fetch {
    Found(Box<Market>),
    NotListed,
    Malformed(String),
    Failed(String),
}

pub struct Discoverer {
    cfg: Config,
    client: Client,
    seq: Sequencer,
    raw: Option<LineWriter<Box<dyn Write + Send>>>,
    /// Markets seen in watch mode, by slug.
    known: BTreeMap<String, Market>,
    /// Slugs already asked for in the current pass (the ET hour that happens twice on the DST
    /// fall-back day maps two UTC windows to one hourly slug).
    asked: std::collections::HashSet<String>,
    pub stats: Stats,
}

impl Discoverer {
    pub fn new(cfg: Config, client: Client, seq: Sequencer, raw: Option<Box<dyn Write + Send>>) -> Discoverer {
        Discoverer {
            cfg,
            client,
            seq,
            raw: raw.map(|w| LineWriter::new(w, true)),
            known: BTreeMap::new(),
            asked: Default::default(),
            stats: Stats::default(),
        }
    }

    fn fetch(&mut self, slug: &str, family: Family, window: (OffsetDateTime, OffsetDateTime)) -> io::Result<Fetch> {
        if !util::is_safe_component(slug) {
            return Ok(Fetch::Malformed(format!("unsafe slug {slug:?}")));
        }
        let url = format!("{}/markets/slug/{}", self.cfg.gamma_url, util::percent_encode(slug));
        let req = Request::get("gamma", url.clone());
        let ctx = serde_json::json!({
            "slug": slug, "family": family.name(),
            "window_start_utc": clock::fmt_secs(window.0), "window_end_utc": clock::fmt_secs(window.1),
        });
        let (seq, raw, stats) = (&mut self.seq, &mut self.raw, &mut self.stats);
        let last = self.client.execute(&req, None, |a| {
            stats.requests += 1;
            match raw.as_mut() {
                Some(w) => w.write_raw(&a.envelope(seq, &req, Some(ctx.clone())).to_line()),
                None => Ok(()),
            }
        })?;
        Ok(match (&last.verdict, last.status) {
            (Verdict::Ok, _) => {
                let text = last.json_text().unwrap_or("null");
                match serde_json::from_str::<serde_json::Value>(text)
                    .map_err(|e| e.to_string())
                    .and_then(|v| market::parse_gamma_market(&v, &url, last.received_at))
                {
                    Ok(m) if m.slug == slug => Fetch::Found(Box::new(m)),
                    Ok(m) => Fetch::Malformed(format!("asked for {slug} but the record's slug is {:?}", m.slug)),
                    Err(e) => Fetch::Malformed(e),
                }
            }
            (_, Some(404)) => Fetch::NotListed,
            (v, s) => Fetch::Failed(format!(
                "status {} ({})",
                s.map(|s| s.to_string()).unwrap_or_else(|| "none".into()),
                last.error.clone().unwrap_or_else(|| format!("{v:?}"))
            )),
        })
    }

    /// Tries the candidate slugs of one window in order; the first listed one wins.
    fn fetch_window(&mut self, family: Family, window: (OffsetDateTime, OffsetDateTime)) -> io::Result<Option<Market>> {
        let candidates = family.slugs(window.0);
        if candidates.iter().all(|s| self.asked.contains(s)) {
            return Ok(None);
        }
        self.asked.extend(candidates.iter().cloned());
        self.stats.windows += 1;
        for slug in &candidates {
            match self.fetch(slug, family, window)? {
                Fetch::Found(m) => {
                    self.stats.found += 1;
                    return Ok(Some(*m));
                }
                Fetch::NotListed => continue,
                Fetch::Malformed(reason) => {
                    self.stats.malformed += 1;
                    eprintln!("pm-markets: skipped {slug}: malformed Gamma record: {reason} (kept raw)");
                    return Ok(None);
                }
                Fetch::Failed(reason) => {
                    self.stats.failed += 1;
                    eprintln!("pm-markets: could not fetch {slug}: {reason}");
                    return Ok(None);
                }
            }
        }
        self.stats.not_listed += 1;
        Ok(None)
    }

    /// One pass over the wanted windows at `now`: the markets found, in family/window order.
    pub fn once(&mut self, now: OffsetDateTime) -> io::Result<Vec<Market>> {
        let mut out = Vec::new();
        self.asked.clear();
        for family in self.cfg.families.clone() {
            for window in family.windows(now, self.cfg.ahead) {
                if signal::stop_requested() {
                    return Ok(out);
                }
                if let Some(m) = self.fetch_window(family, window)? {
                    out.push(m);
                }
            }
        }
        Ok(out)
    }

    /// One watch pass: returns the records to emit (`new`, `changed`, `expired`).
    pub fn watch_pass(&mut self, now: OffsetDateTime) -> io::Result<Vec<Market>> {
        let mut emit = Vec::new();
        let mut seen: Vec<Market> = self.once(now)?;
        // Markets found earlier whose window is no longer wanted but not yet expired: re-fetch them so
        // that closing and resolution are reported.
        let wanted: Vec<String> = seen.iter().map(|m| m.slug.clone()).collect();
        let older: Vec<Market> = self.known.values().filter(|m| !wanted.contains(&m.slug)).cloned().collect();
        for m in older {
            if signal::stop_requested() {
                break;
            }
            let (Some(s), Some(e), Some(f)) = (m.window_start(), m.window_end(), m.family) else { continue };
            if e + self.cfg.keep_after < now {
                continue;
            }
            match self.fetch(&m.slug, f, (s, e))? {
                Fetch::Found(nm) => seen.push(*nm),
                Fetch::Malformed(r) => {
                    self.stats.malformed += 1;
                    eprintln!("pm-markets: skipped {}: malformed Gamma record: {r} (kept raw)", m.slug)
                }
                Fetch::Failed(r) => {
                    self.stats.failed += 1;
                    eprintln!("pm-markets: could not re-fetch {}: {r}", m.slug)
                }
                Fetch::NotListed => {}
            }
        }
        for mut m in seen {
            let change = match self.known.get(&m.slug) {
                None => Some("new"),
                Some(old) if old.state_key() != m.state_key() || old.tokens != m.tokens => Some("changed"),
                Some(_) => None,
            };
            if let Some(c) = change {
                m.change = c.into();
                emit.push(m.clone());
            }
            self.known.insert(m.slug.clone(), m);
        }
        let expired: Vec<String> = self
            .known
            .values()
            .filter(|m| m.window_end().map(|e| e + self.cfg.keep_after < now).unwrap_or(true))
            .map(|m| m.slug.clone())
            .collect();
        for slug in expired {
            let mut m = self.known.remove(&slug).expect("present");
            m.change = "expired".into();
            m.fetched_at_utc = clock::fmt_micros(now);
            emit.push(m);
        }
        Ok(emit)
    }

    pub fn summary(&self) -> String {
        let s = &self.stats;
        format!(
            "{} windows: {} found, {} not listed yet, {} malformed, {} failed; {} HTTP attempts",
            s.windows, s.found, s.not_listed, s.malformed, s.failed, s.requests
        )
    }
}
