//! Raw envelope lines in, normalized rows out (schema `pmarchive.orderbook/1`, docs/ORDERBOOK_SCHEMA.md).
//!
//! The work is split in two so that lines can be parsed on several threads (src/normalize/mod.rs):
//! - [`Rows`] (one per worker, no state across lines) parses lines and writes every row into a
//!   [`Part`], except what depends on earlier lines: a `book` row is written with two holes (the
//!   join `slug`/`outcome`/`family`, and the names in `flags`) recorded as an [`Op`]; `track` and
//!   `gap` lines (which read or change the join) are kept whole for the sequential stage.
//! - One [`Normalizer`] holds the state that spans lines: the token → slug/outcome join (from `track`
//!   lines and `--markets` files) and, per asset, the previous row's exchange time and hash (for the
//!   `duplicate` and `ts_backwards` flags). [`Normalizer::apply`] takes the parts in input order,
//!   fills the holes and appends the final rows to a caller-owned buffer.
//!
//! The output text is a pure function of the input lines and the options, whatever the number of
//! threads or the chunking, so re-running gives byte-identical output.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::rc::Rc;

use serde::Serialize;
use serde_json::value::RawValue;

use super::dec::{self, Dec, Divisor};
use super::fast::{self, SideText};
use super::parse::{self, Body, Book, Ctx, Env, Item, Level, TrackCtx};
use crate::envelope::VENUE_KALSHI;
use crate::kalshi::books::FAMILY as KALSHI_BOOKS;
use crate::kalshi::market::{MARKET_SCHEMA as KALSHI_MARKET, RESOLUTION_SCHEMA as KALSHI_RESOLUTION};
use crate::polymarket::bookhash as book;

mod kalshi_rows;

/// Schema id of every normalized row.
pub const SCHEMA: &str = "pmarchive.orderbook/1";

/// Quality flags in their fixed output order (bit i = `FLAGS[i]`).
pub const FLAGS: [&str; 18] = [
    "crossed",
    "locked",
    "empty_bids",
    "empty_asks",
    "price_out_of_range",
    "off_tick",
    "nonpositive_size",
    "bad_level",
    "unsorted_wire",
    "duplicate_price",
    "hash_mismatch",
    "hash_unverifiable",
    "duplicate",
    "ts_backwards",
    "recv_far",
    "bad_timestamp",
    "missing_field",
    "unknown_fields",
];

const CROSSED: u32 = 1 << 0;
const LOCKED: u32 = 1 << 1;
const EMPTY_BIDS: u32 = 1 << 2;
const EMPTY_ASKS: u32 = 1 << 3;
const OUT_OF_RANGE: u32 = 1 << 4;
const OFF_TICK: u32 = 1 << 5;
const NONPOS_SIZE: u32 = 1 << 6;
const BAD_LEVEL: u32 = 1 << 7;
const UNSORTED: u32 = 1 << 8;
const DUP_PRICE: u32 = 1 << 9;
const HASH_MISMATCH: u32 = 1 << 10;
const HASH_UNVERIFIABLE: u32 = 1 << 11;
const DUPLICATE: u32 = 1 << 12;
const TS_BACKWARDS: u32 = 1 << 13;
const RECV_FAR: u32 = 1 << 14;
const BAD_TS: u32 = 1 << 15;
const MISSING_FIELD: u32 = 1 << 16;
const UNKNOWN_FIELDS: u32 = 1 << 17;

/// Flags that never apply to a Kalshi book: it has no hash, no timestamp and none of the
/// Polymarket book's scalar fields (docs/ORDERBOOK_SCHEMA.md, "Kalshi rows").
const NOT_KALSHI: u32 = HASH_UNVERIFIABLE | BAD_TS | MISSING_FIELD | UNKNOWN_FIELDS;

/// Flags only rows of the websocket rebuild (pm-rebuild, [`Normalizer::state_row`]) can raise; in
/// the output they follow [`FLAGS`] (bit 18 + i = `WS_FLAGS[i]`). Kept apart from [`FLAGS`] so that
/// REST rows, their summary and `--check` report stay exactly as they were.
pub const WS_FLAGS: [&str; 1] = ["untrusted"];

/// The rebuilt book is not trusted: a hash mismatch happened since its last full snapshot.
pub const UNTRUSTED: u32 = 1 << 18;

/// Every flag name, bit i = the i-th name ([`FLAGS`] then [`WS_FLAGS`]).
fn flag_names() -> impl Iterator<Item = &'static str> {
    FLAGS.iter().chain(WS_FLAGS.iter()).copied()
}

/// The name of flag bit `i` ([`flag_names`]), None past the last.
fn flag_name(i: u32) -> Option<&'static str> {
    let i = i as usize;
    FLAGS.get(i).or_else(|| WS_FLAGS.get(i - FLAGS.len())).copied()
}

/// Options that shape the rows.
#[derive(Clone, Debug, Serialize)]
pub struct Options {
    /// Levels per side in `bids`/`asks`; 0 = top of book only (the arrays are null); `usize::MAX` =
    /// all levels (`--depth all`, written as `null`: readers get one integer type, never 2^64−1).
    #[serde(serialize_with = "depth_json")]
    pub depth: usize,
    /// `recv_far` when |receive time − exchange time| exceeds this (ms).
    pub max_lag_ms: i64,
}

/// `depth` as rows and manifests write it: the number of levels, or null for all levels.
fn depth_json<S: serde::Serializer>(d: &usize, s: S) -> Result<S::Ok, S::Error> {
    match *d {
        usize::MAX => s.serialize_none(),
        d => s.serialize_u64(d as u64),
    }
}

impl Default for Options {
    fn default() -> Options {
        Options { depth: 10, max_lag_ms: 60_000 }
    }
}

/// What the join knows about a token.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JoinInfo {
    pub slug: Option<String>,
    pub outcome: Option<String>,
    pub condition_id: Option<String>,
    pub family: Option<String>,
}

struct TokenState {
    join: Option<Rc<JoinInfo>>,
    last_ts: Option<i64>,
    last_hash: Option<String>,
}

/// The state that spans lines: the join (token → what is known of it) and, per asset seen in a
/// `book` row, its join and its previous row's exchange time and hash.
#[derive(Default)]
struct Tokens {
    joins: HashMap<String, Rc<JoinInfo>>,
    tokens: HashMap<Box<str>, TokenState>,
}

impl Tokens {
    /// The per-asset part of a `book` row: `duplicate`/`ts_backwards` against the asset's previous
    /// row, the state update and the counts. Returns all flags and the asset's join.
    fn book_state(
        &mut self,
        asset: &str,
        hash: Option<&str>,
        ts: Option<i64>,
        mut flags: u32,
        stats: &mut Stats,
    ) -> (u32, Option<Rc<JoinInfo>>) {
        let st = match self.tokens.get_mut(asset) {
            Some(st) => st,
            None => {
                let join = self.joins.get(asset).cloned();
                self.tokens.entry(asset.into()).or_insert(TokenState { join, last_ts: None, last_hash: None })
            }
        };
        if let (Some(prev), Some(t)) = (st.last_ts, ts) {
            if t < prev {
                flags |= TS_BACKWARDS;
            } else if t == prev && st.last_hash.as_deref() == hash {
                flags |= DUPLICATE;
            }
        }
        if ts.is_some() {
            st.last_ts = ts;
            match (&mut st.last_hash, hash) {
                (Some(h), Some(n)) => {
                    h.clear();
                    h.push_str(n);
                }
                (slot, n) => *slot = n.map(String::from),
            }
        }
        let j = st.join.clone();
        if j.as_ref().and_then(|j| j.slug.as_ref()).is_none() {
            stats.unjoined_book_rows += 1;
        }
        // FLAGS are pre-set to 0; a WS_FLAGS name appears once raised (REST summaries unchanged).
        let mut rest = flags;
        while rest != 0 {
            let i = rest.trailing_zeros();
            rest &= rest - 1;
            if let Some(name) = flag_name(i) {
                count_static(&mut stats.flags, name);
            }
        }
        (flags, j)
    }
}

/// The join fields of a `book` row (hole 1).
fn put_join(out: &mut Vec<u8>, j: Option<&JoinInfo>) {
    out.extend_from_slice(b",\"slug\":");
    put_opt(out, j.and_then(|j| j.slug.as_deref()));
    out.extend_from_slice(b",\"outcome\":");
    put_opt(out, j.and_then(|j| j.outcome.as_deref()));
    out.extend_from_slice(b",\"family\":");
    put_opt(out, j.and_then(|j| j.family.as_deref()));
}

/// Counts of one run (printed as the summary and stored in the manifest).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub files: u64,
    pub lines: u64,
    pub blank_lines: u64,
    pub rows: BTreeMap<&'static str, u64>,
    pub book_rows_by_source: BTreeMap<String, u64>,
    pub flags: BTreeMap<&'static str, u64>,
    pub hash_match: u64,
    pub hash_mismatch: u64,
    pub hash_unverifiable: u64,
    pub unjoined_book_rows: u64,
    pub gaps: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub bad_input: BTreeMap<String, u64>,
    pub track_lines: u64,
    /// Raw lines that are not about books (other kinds/endpoints), by `kind` or `kind/endpoint`.
    pub skipped: BTreeMap<String, u64>,
}

/// A level's price and size as [`Dec::parse`] gives them (None: not a decimal).
pub type Parsed = (Option<Dec>, Option<Dec>);

impl Stats {
    /// Adds the counts of `o` (a [`Part`]'s) to these.
    fn merge(&mut self, o: &Stats) {
        fn add<K: Ord + Clone>(a: &mut BTreeMap<K, u64>, b: &BTreeMap<K, u64>) {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(n) => *n += v,
                    None => {
                        a.insert(k.clone(), *v);
                    }
                }
            }
        }
        self.files += o.files;
        self.lines += o.lines;
        self.blank_lines += o.blank_lines;
        add(&mut self.rows, &o.rows);
        add(&mut self.book_rows_by_source, &o.book_rows_by_source);
        add(&mut self.flags, &o.flags);
        self.hash_match += o.hash_match;
        self.hash_mismatch += o.hash_mismatch;
        self.hash_unverifiable += o.hash_unverifiable;
        self.unjoined_book_rows += o.unjoined_book_rows;
        add(&mut self.gaps, &o.gaps);
        add(&mut self.errors, &o.errors);
        add(&mut self.bad_input, &o.bad_input);
        self.track_lines += o.track_lines;
        add(&mut self.skipped, &o.skipped);
    }
}

/// `*map[key] += 1`, allocating the key only the first time.
fn count(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_string(), 1);
        }
    }
}

fn count_static(map: &mut BTreeMap<&'static str, u64>, key: &'static str) {
    *map.entry(key).or_insert(0) += 1;
}

/// What [`Rows`] made of a run of lines: row text with holes, the holes in order, and counts.
/// Reused (cleared by [`Normalizer::apply`]); holds nothing borrowed from the input.
#[derive(Default)]
pub struct Part {
    out: Vec<u8>,
    ops: Vec<Op>,
    /// Text the ops point into: asset ids, hashes, deferred lines.
    arena: String,
    stats: Stats,
}

/// Where [`Rows::book_row`] writes a row.
enum Dest<'d> {
    /// Into a part, with holes for the sequential stage ([`Normalizer::apply`]).
    Part(&'d mut Part),
    /// Straight into the output, the holes filled from the sequential state (one thread:
    /// [`Normalizer::state_row`]; the row is written once, not copied again).
    Out { out: &'d mut Vec<u8>, tokens: &'d mut Tokens, stats: &'d mut Stats },
}

/// A place in [`Part::out`] where the sequential stage has to write something.
enum Op {
    /// A `book` row: the join fields go at `join_at`, the flag names at `flags_at`. `asset` and
    /// `hash` are ranges of [`Part::arena`]; `flags` are the flags known without earlier lines.
    Book {
        join_at: usize,
        flags_at: usize,
        asset: (usize, usize),
        hash: Option<(usize, usize)>,
        ts: Option<i64>,
        flags: u32,
    },
    /// A `track` or `gap` line (a range of [`Part::arena`]): handled at `at` by the sequential stage.
    Line { at: usize, text: (usize, usize) },
}

impl Part {
    /// Bytes of row text it can hold without growing (a part grown by a huge line is not reused).
    pub fn capacity(&self) -> usize {
        self.out.capacity()
    }

    fn keep(&mut self, s: &str) -> (usize, usize) {
        let a = self.arena.len();
        self.arena.push_str(s);
        (a, self.arena.len())
    }
}

/// The normalizer's sequential state (module docs).
pub struct Normalizer {
    tokens: Tokens,
    pub stats: Stats,
    /// The formatter used on this thread (single-threaded runs, [`Self::state_row`]).
    rows: Rows,
    scratch: Part,
}

/// The per-line formatter (module docs): owns only scratch space, so one can run on each thread.
pub struct Rows {
    opts: Options,
    hash_buf: Vec<u8>,
    /// Where the current line's book sides are ([`fast::env`]).
    sides: Vec<SideText>,
    /// [`side`]'s results for books without a caller's [`Pre`] (recomputed for every book).
    memo: [SideMemo; 2],
    last: Last,
}

/// What the last book row had, as text and value: its receive time and exchange time (rows of
/// one reply or one websocket message share them) and its tick (the same row after row).
#[derive(Default)]
struct Last {
    recv_text: String,
    recv: Option<i64>,
    ts: Option<i64>,
    /// `exchange_at_utc` of `ts` (without quotes).
    ts_text: Vec<u8>,
    /// `tick_size` as JSON text ("": absent).
    tick_text: String,
    tick: Option<(Dec, Option<Divisor>)>,
}

impl Last {
    /// The tick of a book's `tick_size` (a JSON string of a decimal > 0) with its [`Divisor`]
    /// when its [`Dec::key18`] fits.
    fn tick(&mut self, raw: Option<&RawValue>) -> Option<(Dec, Option<Divisor>)> {
        let text = raw.map_or("", RawValue::get);
        if text != self.tick_text {
            self.tick = raw
                .and_then(|r| serde_json::from_str::<&str>(r.get()).ok())
                .and_then(Dec::parse)
                .filter(|t| t.signum() > 0)
                .map(|t| (t, t.key18().and_then(Divisor::new)));
            self.tick_text.clear();
            self.tick_text.push_str(text);
        }
        self.tick
    }

    /// [`dec::parse_utc_micros`] of `t`.
    fn recv(&mut self, t: Option<&str>) -> Option<i64> {
        let t = t?;
        if t != self.recv_text {
            self.recv = dec::parse_utc_micros(t);
            self.recv_text.clear();
            self.recv_text.push_str(t);
        }
        self.recv
    }

    /// [`dec::write_utc_micros`] of `ts` (ms).
    fn exchange_at(&mut self, ts: i64) -> &[u8] {
        if self.ts != Some(ts) {
            self.ts_text.clear();
            dec::write_utc_micros(&mut self.ts_text, ts.saturating_mul(1000));
            self.ts = Some(ts);
        }
        &self.ts_text
    }
}

/// What [`side`] found on one side of a book at its last row: its flags, valid levels best first,
/// best price and size sum, and (for a caller's memo) the side's `bids`/`asks` array as last
/// written. pm-rebuild keeps one per side of each book and calls [`SideMemo::stale`] when a level
/// of that side changes, so a side that did not change (a websocket change touches one) is
/// neither scanned nor written again; the row is the same, as every input of [`side`] and of the
/// array is the same.
#[derive(Default)]
pub struct SideMemo {
    fresh: bool,
    /// The tick the flags were found with.
    tick: Option<Dec>,
    flags: u32,
    /// The valid levels, best first: indices into the wire side.
    lvls: Vec<u32>,
    /// The best valid price.
    best: Option<Dec>,
    /// The valid levels' size sum (`bid_depth`/`ask_depth`).
    depth: Option<Dec>,
    /// The levels' (price, size) parsed again for a book without a caller's [`Pre`] whose side
    /// needs sorting or the exact size sum.
    parsed: Vec<Parsed>,
    /// The side's array as last written, and the depth it was written with (None: not since the
    /// last scan).
    text: Vec<u8>,
    text_depth: Option<usize>,
}

impl SideMemo {
    /// The side's levels changed: scan it again at the next row.
    pub fn stale(&mut self) {
        self.fresh = false;
    }
}

/// A book's levels as pm-rebuild keeps them: (price, size) parsed with [`Dec::parse`] in wire
/// order, and a [`SideMemo`] per side (bids, asks).
pub struct Pre<'p> {
    pub parsed: [&'p [Parsed]; 2],
    pub memo: &'p mut [SideMemo; 2],
}

const ONE: Dec = Dec { m: 1, s: 0 };

impl Normalizer {
    pub fn new(opts: Options) -> Normalizer {
        let mut stats = Stats::default();
        for f in FLAGS {
            stats.flags.insert(f, 0);
        }
        for r in ["book", "gap", "error", "bad_input"] {
            stats.rows.insert(r, 0);
        }
        Normalizer { tokens: Tokens::default(), stats, rows: Rows::new(opts), scratch: Part::default() }
    }

    /// [`Rows::verify_hash`] (pm-rebuild checks REST books with it, so both tools agree).
    pub fn verify_hash(&mut self, b: &Book) -> Option<bool> {
        self.rows.verify_hash(b)
    }

    /// A formatter with the same options, for another thread.
    pub fn rows(&self) -> Rows {
        Rows::new(self.rows.opts.clone())
    }

    /// Records what is known about a token (later information replaces earlier).
    pub fn add_join(&mut self, token_id: &str, info: JoinInfo) {
        let info = Rc::new(info);
        if let Some(st) = self.tokens.tokens.get_mut(token_id) {
            st.join = Some(info.clone());
        }
        self.tokens.joins.insert(token_id.to_string(), info);
    }

    /// Loads one line of a `--markets` file: a market or resolution record (pm-markets) or a raw `track`
    /// envelope. Returns the number of tokens learnt, or why the line was not usable.
    pub fn load_join_line(&mut self, line: &[u8]) -> Result<usize, String> {
        let v: serde_json::Value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
        let kalshi = v.get("venue").and_then(|s| s.as_str()) == Some(VENUE_KALSHI);
        let ctx = match v.get("schema").and_then(|s| s.as_str()) {
            Some(KALSHI_MARKET | KALSHI_RESOLUTION) => return Ok(self.learn_kalshi(&v.to_string())),
            Some(crate::envelope::SCHEMA) if kalshi && v.get("kind").and_then(|k| k.as_str()) == Some("track") => {
                return Ok(self.learn_kalshi(&v.get("ctx").cloned().unwrap_or_default().to_string()));
            }
            Some(crate::polymarket::market::MARKET_SCHEMA | crate::polymarket::market::RESOLUTION_SCHEMA) => v.clone(),
            Some(crate::envelope::SCHEMA) if v.get("kind").and_then(|k| k.as_str()) == Some("track") => {
                v.get("ctx").cloned().unwrap_or_default()
            }
            Some(crate::envelope::SCHEMA) => return Ok(0),
            other => return Err(format!("not a market record or raw envelope (schema {other:?})")),
        };
        let mut t: TrackCtx = serde_json::from_value(ctx.clone()).map_err(|e| format!("bad tokens: {e}"))?;
        if t.slug.is_none() {
            t.slug = ctx.get("slug").and_then(|s| s.as_str()).map(String::from);
        }
        Ok(self.learn(t))
    }

    fn learn(&mut self, t: TrackCtx) -> usize {
        let n = t.tokens.len();
        for tok in t.tokens {
            let info = JoinInfo {
                slug: t.slug.clone(),
                outcome: tok.outcome.clone(),
                condition_id: t.condition_id.clone(),
                family: t.family.clone(),
            };
            self.add_join(&tok.token_id, info);
        }
        n
    }

    /// Learns a Kalshi market from a kalshi-books `track` line's `ctx` or a Kalshi market or
    /// resolution record (JSON text): its book rows are the YES side of `ticker` (`market`,
    /// `asset_id` and `slug` are the ticker, `outcome` is `yes`). Returns 1, or 0 without a ticker.
    pub fn learn_kalshi(&mut self, text: &str) -> usize {
        #[derive(serde::Deserialize)]
        struct Ticker {
            ticker: String,
        }
        let Ok(t) = serde_json::from_str::<Ticker>(text) else { return 0 };
        let info = JoinInfo {
            slug: Some(t.ticker.clone()),
            outcome: Some(kalshi_rows::OUTCOME.into()),
            condition_id: Some(t.ticker.clone()),
            family: None,
        };
        self.add_join(&t.ticker, info);
        1
    }

    /// Learns the tokens of a raw `track` line's `ctx` (JSON text); returns how many (0 when the
    /// text is not a track context).
    pub fn learn_track_ctx(&mut self, ctx: &str) -> usize {
        match serde_json::from_str::<TrackCtx>(ctx) {
            Ok(t) => self.learn(t),
            Err(_) => 0,
        }
    }

    /// Starts a new input file.
    pub fn start_file(&mut self) {
        self.stats.files += 1;
    }

    /// Normalizes one raw line (without its `\n`), appending zero or more rows to `out`
    /// (single-threaded: [`Rows::line`] then [`Self::apply`]).
    pub fn line(&mut self, file: &str, lineno: u64, line: &[u8], out: &mut Vec<u8>) {
        let mut part = std::mem::take(&mut self.scratch);
        self.rows.line(file, lineno, line, &mut part);
        self.apply(&mut part, out);
        self.scratch = part;
    }

    /// Appends the rows of `part` (made by a [`Rows`] from the next lines of the input) to `out`,
    /// filling in what depends on earlier lines, and adds its counts; `part` is left empty.
    pub fn apply(&mut self, part: &mut Part, out: &mut Vec<u8>) {
        self.stats.merge(&part.stats);
        part.stats = Stats::default();
        let mut pos = 0;
        for op in part.ops.drain(..) {
            match op {
                Op::Book { join_at, flags_at, asset, hash, ts, flags } => {
                    out.extend_from_slice(&part.out[pos..join_at]);
                    let asset = &part.arena[asset.0..asset.1];
                    let hash = hash.map(|h| &part.arena[h.0..h.1]);
                    let (flags, join) = self.tokens.book_state(asset, hash, ts, flags, &mut self.stats);
                    put_join(out, join.as_deref());
                    out.extend_from_slice(&part.out[join_at..flags_at]);
                    put_flags(out, flags);
                    pos = flags_at;
                }
                Op::Line { at, text } => {
                    out.extend_from_slice(&part.out[pos..at]);
                    pos = at;
                    self.stateful_line(&part.arena[text.0..text.1], out);
                }
            }
        }
        out.extend_from_slice(&part.out[pos..]);
        part.out.clear();
        part.arena.clear();
    }

    /// A `track` or `gap` line that [`Rows::line`] deferred (it already counted the line).
    fn stateful_line(&mut self, text: &str, out: &mut Vec<u8>) {
        let Ok(env) = parse::env(text) else { return };
        match env.kind.as_deref() {
            Some("gap") => self.gap_row(&env, out),
            Some("track") => {
                self.stats.track_lines += 1;
                match env.ctx {
                    Some(ctx) if env.venue.as_deref() == Some(VENUE_KALSHI) => _ = self.learn_kalshi(ctx.get()),
                    Some(ctx) => _ = self.learn_track_ctx(ctx.get()),
                    None => {}
                }
            }
            _ => {}
        }
    }

    fn gap_row(&mut self, env: &Env, out: &mut Vec<u8>) {
        let ctx = ctx(env);
        let kind = ctx.gap.as_deref().unwrap_or("unknown");
        count_static(&mut self.stats.rows, "gap");
        count(&mut self.stats.gaps, kind);
        // Polymarket gaps name a token, kalshi-books' a ticker.
        let asset = ctx.token_id.as_deref().or(ctx.ticker.as_deref());
        let join = asset.and_then(|t| self.tokens.joins.get(t)).cloned();
        head(out, "gap", env);
        out.extend_from_slice(b",\"gap\":");
        book::put_json_str(out, kind);
        put_slot(out, &ctx);
        out.extend_from_slice(b",\"market\":");
        put_opt(out, join.as_ref().and_then(|j| j.condition_id.as_deref()));
        out.extend_from_slice(b",\"asset_id\":");
        put_opt(out, asset);
        out.extend_from_slice(b",\"slug\":");
        put_opt(out, ctx.slug.as_deref().or(join.as_ref().and_then(|j| j.slug.as_deref())));
        out.extend_from_slice(b",\"outcome\":");
        put_opt(out, ctx.outcome.as_deref().or(join.as_ref().and_then(|j| j.outcome.as_deref())));
        out.extend_from_slice(b",\"error\":");
        put_opt(out, env.error.as_deref());
        put_prov(out, env);
        out.extend_from_slice(b",\"ctx\":");
        put_raw(out, env.ctx.filter(|c| c.get().starts_with('{')));
        out.extend_from_slice(b"}\n");
    }

    /// The input ended in a read error (truncated gzip, I/O error): one bad_input row at the line
    /// that could not be completed, with the bytes that were read of it.
    pub fn read_error(&mut self, file: &str, lineno: u64, partial: &[u8], err: &str, out: &mut Vec<u8>) {
        let mut part = std::mem::take(&mut self.scratch);
        self.rows.read_error(file, lineno, partial, err, &mut part);
        self.apply(&mut part, out);
        self.scratch = part;
    }

    /// A line over the maximum line length (skipped by the reader): one bad_input row.
    pub fn line_too_long(&mut self, file: &str, t: &crate::jsonl::TooLong, out: &mut Vec<u8>) {
        let mut part = std::mem::take(&mut self.scratch);
        self.rows.line_too_long(file, t, &mut part);
        self.apply(&mut part, out);
        self.scratch = part;
    }

    /// Writes a `book` row for a book state that did not come from a REST reply as such: pm-rebuild's
    /// websocket rebuild. Same fields, order, flags and per-asset state as REST rows (one writer:
    /// [`Rows::book_row`]); `env.endpoint` becomes the row's `source` (`ws`, `ws_rest`),
    /// `env.collected_at_utc`/`run_id`/`seq` the receive time and provenance. `hash_ok` is the
    /// caller's verification of `b.hash` (the rebuild may have matched it with a trade price, so it
    /// is not recomputed here); `ws_flags` are [`WS_FLAGS`] bits (e.g. [`UNTRUSTED`]). `b.asset_id`
    /// must be set. `pre`: the bid and ask levels already parsed, with their memos, or None.
    pub fn state_row(
        &mut self,
        env: &Env,
        b: &Book,
        pre: Option<Pre>,
        hash_ok: Option<bool>,
        ws_flags: u32,
        out: &mut Vec<u8>,
    ) {
        debug_assert!(b.asset_id.is_some());
        let extra = ws_flags & !((1u32 << FLAGS.len()) - 1);
        let dest = Dest::Out { out, tokens: &mut self.tokens, stats: &mut self.stats };
        self.rows.book_row(env, &Ctx::default(), b, pre, hash_ok, extra, dest);
    }
}

fn ctx<'a>(env: &'a Env<'a>) -> Ctx<'a> {
    env.ctx.and_then(|c| serde_json::from_str::<Ctx>(c.get()).ok()).unwrap_or_default()
}

impl Rows {
    pub fn new(opts: Options) -> Rows {
        Rows {
            opts,
            hash_buf: Vec::with_capacity(8192),
            sides: Vec::new(),
            memo: Default::default(),
            last: Last::default(),
        }
    }

    /// Parses one raw line (without its `\n`) into `part`: rows, holes, counts (module docs).
    pub fn line(&mut self, file: &str, lineno: u64, line: &[u8], part: &mut Part) {
        part.stats.lines += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            part.stats.blank_lines += 1;
            return;
        }
        // One UTF-8 check per line, then the str parser (cheaper than checking every string).
        let text = match std::str::from_utf8(line) {
            Ok(t) => t,
            Err(e) => return bad_input(part, file, lineno, "not_json", &format!("not UTF-8: {e}"), line),
        };
        // The hot-path reader first; any line it does not take is read by serde (src/normalize/fast.rs).
        let env: Env = match fast::env(text, &mut self.sides) {
            Some(e) => e,
            None => {
                self.sides.clear();
                match parse::env(text) {
                    Ok(e) => e,
                    Err(e) => return bad_input(part, file, lineno, "not_json", &e.to_string(), line),
                }
            }
        };
        if env.schema.as_deref() != Some(crate::envelope::SCHEMA) {
            let detail = format!("schema is {:?}, expected {}", env.schema.as_deref(), crate::envelope::SCHEMA);
            return bad_input(part, file, lineno, "not_raw_envelope", &detail, line);
        }
        match (env.kind.as_deref(), env.endpoint.as_deref()) {
            (Some("http"), Some("books" | "book")) => self.http_books(&env, text, part),
            (Some("http"), Some(KALSHI_BOOKS)) if env.venue.as_deref() == Some(VENUE_KALSHI) => {
                self.kalshi_books(&env, text, part)
            }
            (Some("gap" | "track"), _) => {
                let (at, text) = (part.out.len(), part.keep(text));
                part.ops.push(Op::Line { at, text });
            }
            (k, e) => {
                let key = match e {
                    Some(e) => format!("{}/{}", k.unwrap_or("?"), e),
                    None => k.unwrap_or("?").to_string(),
                };
                count(&mut part.stats.skipped, &key);
            }
        }
    }

    /// The input ended in a read error (truncated gzip, I/O error): one bad_input row at the line
    /// that could not be completed, with the bytes that were read of it.
    pub fn read_error(&mut self, file: &str, lineno: u64, partial: &[u8], err: &str, part: &mut Part) {
        bad_input(part, file, lineno, "read_error", err, partial);
    }

    /// A line over the maximum line length (skipped by the reader): one bad_input row.
    pub fn line_too_long(&mut self, file: &str, t: &crate::jsonl::TooLong, part: &mut Part) {
        part.stats.lines += 1;
        let (head, bytes) = (t.head.as_bytes(), t.bytes);
        bad_input_row(part, file, t.line_no, "line_too_long", &t.to_string(), head, bytes);
    }

    fn http_books(&mut self, env: &Env, text: &str, part: &mut Part) {
        let line = text.as_bytes();
        let ctx = ctx(env);
        if failed_reply(part, env, &ctx, line) {
            return;
        }
        match (env.body_kind.as_deref(), &env.body, &env.body_text) {
            (Some("json"), Some(body), _) => self.body(env, &ctx, body, text, part),
            (Some("json_text"), _, Some(body_text)) => match parse::body(body_text) {
                Ok(body) => {
                    self.sides.clear(); // its sides are not in the line
                    self.body(env, &ctx, &body, text, part)
                }
                Err(_) => error_row(part, env, &ctx, "not_json", None, None, line),
            },
            _ => error_row(part, env, &ctx, "not_json", None, None, line),
        }
    }

    /// The rows of a reply body; `text` is the line (its book sides may be in it: `self.sides`).
    fn body(&mut self, env: &Env, ctx: &Ctx, body: &Body, text: &str, part: &mut Part) {
        let line = text.as_bytes();
        // The wire text of element i's sides when both are in the venue's shape.
        let wire = |sides: &[SideText], i: usize| match sides.get(i) {
            Some([Some(b), Some(a)]) => Some([fast::side_text(text, *b), fast::side_text(text, *a)]),
            _ => None,
        };
        match body {
            Body::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Item::Book(b) if b.asset_id.is_some() => {
                            let w = wire(&self.sides, i);
                            self.rest_book(env, ctx, b, w, part)
                        }
                        Item::Book(b) if b.error.is_some() => {
                            error_row(part, env, ctx, "error_body", Some(i), None, line)
                        }
                        Item::Unreadable(_) => error_row(part, env, ctx, "unreadable_book", Some(i), None, line),
                        _ => error_row(part, env, ctx, "bad_book", Some(i), None, line),
                    }
                }
            }
            Body::Object(b) if b.asset_id.is_some() => {
                let w = wire(&self.sides, 0);
                self.rest_book(env, ctx, b, w, part)
            }
            Body::Object(b) if b.error.is_some() => error_row(part, env, ctx, "error_body", None, None, line),
            Body::Unreadable(_) => error_row(part, env, ctx, "unreadable_book", None, None, line),
            _ => error_row(part, env, ctx, "bad_book", None, None, line),
        }
    }

    /// A REST book: its hash recomputed here, then the row. `wire`: the text of its two sides
    /// when both are in the venue's shape (then that text is the hash text of the sides).
    fn rest_book(&mut self, env: &Env, ctx: &Ctx, b: &Book, wire: Option<[&str; 2]>, part: &mut Part) {
        let hash_ok = self.hash_ok(b, wire);
        self.book_row(env, ctx, b, None, hash_ok, 0, Dest::Part(part));
    }

    /// The one formatter of `book` rows (REST and rebuilt): the flags known from this book alone,
    /// the counts, and the row, into a part with its two holes ([`Op::Book`]) or straight into the
    /// output with the holes filled ([`Dest`]).
    /// `pre`: the bid and ask levels already parsed, with their memos ([`SideMemo`]), or None.
    #[allow(clippy::too_many_arguments)]
    fn book_row(
        &mut self,
        env: &Env,
        ctx: &Ctx,
        b: &Book,
        pre: Option<Pre>,
        hash_ok: Option<bool>,
        extra: u32,
        mut dest: Dest,
    ) {
        let asset = b.asset_id.as_deref().expect("caller checked");
        let ts = b.timestamp.as_deref().and_then(dec::parse_ms);
        let recv = self.last.recv(env.collected_at_utc.as_deref());
        let mut own = std::mem::take(&mut self.memo);
        let (parsed, memo) = match pre {
            Some(Pre { parsed, memo }) => (Some(parsed), memo),
            None => {
                own.iter_mut().for_each(SideMemo::stale);
                (None, &mut own)
            }
        };
        let mut flags = extra | self.book_flags(b, parsed, ts, recv, memo);
        let stats = match &mut dest {
            Dest::Part(part) => &mut part.stats,
            Dest::Out { stats, .. } => &mut **stats,
        };
        match hash_ok {
            Some(true) => stats.hash_match += 1,
            Some(false) => {
                stats.hash_mismatch += 1;
                flags |= HASH_MISMATCH;
            }
            None => {
                stats.hash_unverifiable += 1;
                flags |= HASH_UNVERIFIABLE;
            }
        }
        if env.venue.as_deref() == Some(VENUE_KALSHI) {
            flags &= !NOT_KALSHI;
        }
        count_static(&mut stats.rows, "book");
        count(&mut stats.book_rows_by_source, env.endpoint.as_deref().unwrap_or("?"));
        // A caller's memo keeps each side's array for the next rows; ours is scanned every time.
        let keep = parsed.is_some();
        let exchange_at = ts.map(|t| self.last.exchange_at(t));
        let row = BookText { env, ctx, b, asset, ts, exchange_at, recv, hash_ok, sides: memo, keep };
        match dest {
            Dest::Part(part) => {
                let (join_at, flags_at) = row.write(&mut part.out, self.opts.depth, None);
                let asset = part.keep(asset);
                let hash = b.hash.as_deref().map(|h| part.keep(h));
                part.ops.push(Op::Book { join_at, flags_at, asset, hash, ts, flags });
            }
            Dest::Out { out, tokens, stats } => {
                let (flags, join) = tokens.book_state(asset, b.hash.as_deref(), ts, flags, stats);
                row.write(out, self.opts.depth, Some((join.as_deref(), flags)));
            }
        }
        self.memo = own;
    }

    /// The flags a book raises on its own (all but the hash's and the per-asset ones); its valid
    /// levels, best first, and the sums of their sizes go to `memo` (kept when still fresh).
    fn book_flags(
        &mut self,
        b: &Book,
        pre: Option<[&[Parsed]; 2]>,
        ts: Option<i64>,
        recv: Option<i64>,
        memo: &mut [SideMemo; 2],
    ) -> u32 {
        let mut flags = 0;
        if ts.is_none() {
            flags |= BAD_TS;
        }
        let tick = self.last.tick(b.tick_size);
        for (k, (m, levels)) in memo.iter_mut().zip([b.bids.as_ref(), b.asks.as_ref()]).enumerate() {
            let t = tick.map(|t| t.0);
            if !m.fresh || m.tick != t {
                m.flags = side(levels, pre.map(|p| p[k]), k == 0, tick, m);
                (m.fresh, m.tick) = (true, t);
            }
            flags |= m.flags;
        }
        if memo[0].lvls.is_empty() {
            flags |= EMPTY_BIDS;
        }
        if memo[1].lvls.is_empty() {
            flags |= EMPTY_ASKS;
        }
        if let (Some(bb), Some(ba)) = (memo[0].best, memo[1].best) {
            match bb.cmp(&ba) {
                std::cmp::Ordering::Greater => flags |= CROSSED,
                std::cmp::Ordering::Equal => flags |= LOCKED,
                _ => {}
            }
        }
        if b.market.is_none()
            || b.hash.is_none()
            || b.timestamp.is_none()
            || !b.neg_risk.is_some_and(|r| matches!(r.get(), "true" | "false"))
            || [b.min_order_size, b.tick_size, b.last_trade_price].iter().any(|r| !str_or_number(*r))
        {
            flags |= MISSING_FIELD;
        }
        if b.unknown_fields > 0 {
            flags |= UNKNOWN_FIELDS;
        }
        if let (Some(r), Some(t)) = (recv, ts) {
            if (r - t * 1000).abs() > self.opts.max_lag_ms * 1000 {
                flags |= RECV_FAR;
            }
        }
        flags
    }

    /// Recomputes the venue hash (facts §6.3). None when a field it needs is missing or a level
    /// is not a pair of strings. Public: pm-rebuild checks REST books with it, so both tools agree.
    pub fn verify_hash(&mut self, b: &Book) -> Option<bool> {
        self.hash_ok(b, None)
    }

    /// [`Self::verify_hash`]; `wire`: the sides' text in the venue's shape (copied as the hash text).
    fn hash_ok(&mut self, b: &Book, wire: Option<[&str; 2]>) -> Option<bool> {
        let (market, asset, ts, want) =
            (b.market.as_deref()?, b.asset_id.as_deref()?, b.timestamp.as_deref()?, b.hash.as_deref()?);
        let strs = |side: &Option<Vec<Level>>| -> Option<()> {
            side.as_ref()?.iter().all(|l| l.price.is_some() && l.size.is_some()).then_some(())
        };
        strs(&b.bids)?;
        strs(&b.asks)?;
        let tail = [b.min_order_size?, b.tick_size?, b.neg_risk?, b.last_trade_price?].map(parse::hash_scalar_text);
        let tail = [&*tail[0], &*tail[1], &*tail[2], &*tail[3]];
        match wire {
            Some([bids, asks]) => book::write_hash_text_with(
                &mut self.hash_buf,
                market,
                asset,
                ts,
                |o| o.extend_from_slice(bids.as_bytes()),
                |o| o.extend_from_slice(asks.as_bytes()),
                tail,
            ),
            None => book::write_hash_text(&mut self.hash_buf, market, asset, ts, pairs(&b.bids), pairs(&b.asks), tail),
        }
        let mut hex = [0u8; 40];
        book::sha1_hex_into(&self.hash_buf, &mut hex);
        Some(want.as_bytes() == hex)
    }
}

/// What a `book` row shows of a book ([`Rows::book_row`] writes it).
struct BookText<'r, 'a> {
    env: &'r Env<'a>,
    ctx: &'r Ctx<'r>,
    b: &'r Book<'a>,
    asset: &'r str,
    ts: Option<i64>,
    /// `exchange_at_utc` of `ts`.
    exchange_at: Option<&'r [u8]>,
    recv: Option<i64>,
    hash_ok: Option<bool>,
    /// What [`side`] found on the bids and the asks.
    sides: &'r mut [SideMemo; 2],
    /// Keep each side's array in its memo (a caller's memo, [`Pre`]).
    keep: bool,
}

impl BookText<'_, '_> {
    /// Appends the row (with `depth` levels a side) to `out`; returns where the join fields and
    /// the flag names go (hole 1, hole 2). They are written there when `fill` has them (the join
    /// and all flags), else left out.
    fn write(self, out: &mut Vec<u8>, depth: usize, fill: Option<(Option<&JoinInfo>, u32)>) -> (usize, usize) {
        let BookText { env, ctx, b, asset, ts, exchange_at, recv, hash_ok, sides, keep } = self;
        let [bids, asks] = sides;
        head(out, "book", env);
        out.extend_from_slice(b",\"exchange_at_utc\":");
        match exchange_at {
            Some(t) => {
                out.push(b'"');
                out.extend_from_slice(t);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"exchange_ts_ms\":");
        put_i64(out, ts);
        out.extend_from_slice(b",\"recv_lag_ms\":");
        put_lag(out, recv, ts);
        out.extend_from_slice(b",\"market\":");
        put_opt(out, b.market.as_deref());
        out.extend_from_slice(b",\"asset_id\":");
        book::put_json_str(out, asset);
        // Hole 1: `slug`, `outcome`, `family` (Tokens::book_state).
        let join_at = out.len();
        if let Some((join, _)) = fill {
            put_join(out, join);
        }
        put_slot(out, ctx);
        put_prov(out, env);
        let bb = best(bids, b.bids.as_ref());
        let ba = best(asks, b.asks.as_ref());
        // A valid level's price and size parsed as decimals (digits, '.', '-'): no escapes.
        out.extend_from_slice(b",\"best_bid_price\":");
        put_plain(out, bb.and_then(|(l, _)| l.price.as_deref()));
        out.extend_from_slice(b",\"best_bid_size\":");
        put_plain(out, bb.and_then(|(l, _)| l.size.as_deref()));
        out.extend_from_slice(b",\"best_ask_price\":");
        put_plain(out, ba.and_then(|(l, _)| l.price.as_deref()));
        out.extend_from_slice(b",\"best_ask_size\":");
        put_plain(out, ba.and_then(|(l, _)| l.size.as_deref()));
        let (mid, spread) = match (bb, ba) {
            (Some((_, b)), Some((_, a))) => (b.checked_add(a).and_then(Dec::half), a.checked_sub(b)),
            _ => (None, None),
        };
        out.extend_from_slice(b",\"mid\":");
        put_dec(out, mid);
        out.extend_from_slice(b",\"spread\":");
        put_dec(out, spread);
        out.extend_from_slice(b",\"bid_levels\":");
        dec::write_u64(out, bids.lvls.len() as u64);
        out.extend_from_slice(b",\"ask_levels\":");
        dec::write_u64(out, asks.lvls.len() as u64);
        out.extend_from_slice(b",\"bid_depth\":");
        put_dec(out, bids.depth);
        out.extend_from_slice(b",\"ask_depth\":");
        put_dec(out, asks.depth);
        out.extend_from_slice(b",\"tick_size\":");
        put_str_or_number(out, b.tick_size);
        out.extend_from_slice(b",\"min_order_size\":");
        put_str_or_number(out, b.min_order_size);
        out.extend_from_slice(b",\"neg_risk\":");
        put_raw(out, b.neg_risk.filter(|r| matches!(r.get(), "true" | "false")));
        out.extend_from_slice(b",\"last_trade_price\":");
        put_str_or_number(out, b.last_trade_price);
        out.extend_from_slice(b",\"hash\":");
        put_opt(out, b.hash.as_deref());
        out.extend_from_slice(b",\"hash_ok\":");
        out.extend_from_slice(match hash_ok {
            Some(true) => b"true",
            Some(false) => b"false",
            None => b"null",
        });
        out.extend_from_slice(b",\"flags\":[");
        // Hole 2: the flag names (Tokens::book_state adds `duplicate`/`ts_backwards`).
        let flags_at = out.len();
        if let Some((_, flags)) = fill {
            put_flags(out, flags);
        }
        match depth {
            0 => out.extend_from_slice(b"],\"depth\":0,\"bids\":null,\"asks\":null"),
            d => {
                out.extend_from_slice(b"],\"depth\":");
                put_u64(out, (d != usize::MAX).then_some(d as u64));
                out.extend_from_slice(b",\"bids\":");
                put_side(out, bids, b.bids.as_ref(), d, keep);
                out.extend_from_slice(b",\"asks\":");
                put_side(out, asks, b.asks.as_ref(), d, keep);
            }
        }
        out.extend_from_slice(b"}\n");
        (join_at, flags_at)
    }
}

/// `recv_lag_ms`: receive time (µs) minus exchange time (ms), in ms with 3 decimals, or null.
fn put_lag(out: &mut Vec<u8>, recv: Option<i64>, ts: Option<i64>) {
    match (recv, ts) {
        (Some(r), Some(t)) => {
            let lag = r - t * 1000;
            let a = lag.abs();
            if lag < 0 {
                out.push(b'-');
            }
            // `{}.{:03}` of a / 1000, a % 1000 without the formatter.
            dec::write_u64(out, (a / 1000) as u64);
            let ms = a % 1000;
            out.extend_from_slice(&[
                b'.',
                b'0' + (ms / 100) as u8,
                b'0' + (ms / 10 % 10) as u8,
                b'0' + (ms % 10) as u8,
            ]);
        }
        _ => out.extend_from_slice(b"null"),
    }
}

/// The flag names of `flags` inside the row's `flags` array.
fn put_flags(out: &mut Vec<u8>, flags: u32) {
    let mut first = true;
    for (i, name) in flag_names().enumerate() {
        if flags & (1 << i) != 0 {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.push(b'"');
        }
    }
}

fn bad_input(part: &mut Part, file: &str, lineno: u64, reason: &str, detail: &str, line: &[u8]) {
    bad_input_row(part, file, lineno, reason, detail, line, line.len() as u64);
}

fn bad_input_row(part: &mut Part, file: &str, lineno: u64, reason: &str, detail: &str, line: &[u8], bytes: u64) {
    count_static(&mut part.stats.rows, "bad_input");
    count(&mut part.stats.bad_input, reason);
    let out = &mut part.out;
    out.extend_from_slice(b"{\"record\":\"bad_input\",\"schema\":\"");
    out.extend_from_slice(SCHEMA.as_bytes());
    out.extend_from_slice(b"\",\"file\":");
    book::put_json_str(out, file);
    let _ = write!(out, ",\"line\":{lineno},\"reason\":");
    book::put_json_str(out, reason);
    out.extend_from_slice(b",\"detail\":");
    book::put_json_str(out, detail);
    let cut = line.len().min(200);
    let _ = write!(out, ",\"bytes\":{bytes},\"excerpt\":");
    book::put_json_str(out, &String::from_utf8_lossy(&line[..cut]));
    out.extend_from_slice(b"}\n");
}

/// The error row of an http line without a 200 reply (`no_reply`, `http_status`); true when it
/// wrote one.
fn failed_reply(part: &mut Part, env: &Env, ctx: &Ctx, line: &[u8]) -> bool {
    match env.status {
        Some(200) => return false,
        None => error_row(part, env, ctx, "no_reply", None, None, line),
        Some(_) => error_row(part, env, ctx, "http_status", None, None, line),
    }
    true
}

#[allow(clippy::too_many_arguments)]
fn error_row(
    part: &mut Part,
    env: &Env,
    ctx: &Ctx,
    reason: &str,
    index: Option<usize>,
    asset: Option<&str>,
    line: &[u8],
) {
    count_static(&mut part.stats.rows, "error");
    count(&mut part.stats.errors, reason);
    let out = &mut part.out;
    head(out, "error", env);
    out.extend_from_slice(b",\"reason\":");
    book::put_json_str(out, reason);
    out.extend_from_slice(b",\"status\":");
    put_u64(out, env.status);
    out.extend_from_slice(b",\"attempt\":");
    put_u64(out, env.attempt);
    put_slot(out, ctx);
    out.extend_from_slice(b",\"index\":");
    put_u64(out, index.map(|i| i as u64));
    out.extend_from_slice(b",\"asset_id\":");
    put_opt(out, asset);
    out.extend_from_slice(b",\"detail\":");
    put_opt(out, env.error.as_deref().or(env.body_error.as_deref()));
    out.extend_from_slice(b",\"body_kind\":");
    put_opt(out, env.body_kind.as_deref());
    out.extend_from_slice(b",\"reply\":");
    put_opt(out, reply_excerpt(line, index).as_deref());
    put_prov(out, env);
    out.extend_from_slice(b",\"ctx\":");
    put_raw(out, env.ctx.filter(|c| c.get().starts_with('{')));
    out.extend_from_slice(b"}\n");
}

/// Scans a side: its valid levels best first, best price and size sum go to `m`; returns its
/// flags. `pre`: the levels' (price, size) already parsed with [`Dec::parse`], same order
/// (pm-rebuild keeps them with its book); parsed here otherwise. `tick`: the book's tick (> 0)
/// with its [`Divisor`] when its [`Dec::key18`] fits.
fn side(
    levels: Option<&Vec<Level>>,
    pre: Option<&[Parsed]>,
    bids: bool,
    tick: Option<(Dec, Option<Divisor>)>,
    m: &mut SideMemo,
) -> u32 {
    m.lvls.clear();
    m.parsed.clear();
    m.text_depth = None;
    let Some(levels) = levels else {
        (m.best, m.depth) = (None, Some(Dec { m: 0, s: DEPTH_SCALE }));
        return BAD_LEVEL | MISSING_FIELD;
    };
    let parse = |l: &Level| (l.price.as_deref().and_then(Dec::parse), l.size.as_deref().and_then(Dec::parse));
    let (f, sum) = match pre {
        Some(p) => scan(p[..levels.len()].iter().copied(), bids, tick, &mut m.lvls),
        None => scan(levels.iter().map(parse), bids, tick, &mut m.lvls),
    };
    // The parsed levels for what follows: the caller's, or ours (parsed again) when the side
    // needs sorting or the exact sum; else the best price alone is parsed again.
    let parsed: &[Parsed] = match pre {
        Some(p) => p,
        None if f & UNSORTED != 0 || sum.is_none() => {
            m.parsed.extend(levels.iter().map(parse));
            &m.parsed
        }
        None => &[],
    };
    let px = |i: u32| {
        let i = i as usize;
        parsed.get(i).map_or_else(|| parse(&levels[i]).0, |p| p.0).expect("a valid level's price")
    };
    // Best first: reversing the wire order sorts a well-formed side; otherwise sort explicitly.
    m.lvls.reverse();
    if f & UNSORTED != 0 {
        if bids {
            m.lvls.sort_by_key(|&i| std::cmp::Reverse(px(i)));
        } else {
            m.lvls.sort_by_key(|&i| px(i));
        }
    }
    m.best = m.lvls.first().map(|&i| px(i));
    // The sizes' sum: `sum` (at DEPTH_SCALE) or, without it, the exact fold. Both give the same
    // value: the sizes of `sum` are ≥ 0 and their sum fits in u64, so no step of the fold
    // overflows; a row prints only the value (canonical form).
    m.depth = match sum {
        Some(s) => Some(Dec { m: s as i128, s: DEPTH_SCALE }),
        None => m.lvls.iter().try_fold(Dec::ZERO, |acc, &i| acc.checked_add(parsed[i as usize].1?)),
    };
    f
}

/// [`side`]'s loop over the levels' (price, size) in wire order: the indices of the valid ones
/// go to `dst` (wire order); returns the flags and the sizes' sum at [`DEPTH_SCALE`] while every
/// size has a key there and it fits.
#[inline(never)]
fn scan(
    levels: impl Iterator<Item = Parsed>,
    bids: bool,
    tick: Option<(Dec, Option<Divisor>)>,
    dst: &mut Vec<u32>,
) -> (u32, Option<u64>) {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let mut f = 0;
    let mut sum = Some(0u64);
    // The previous valid price and its key (None: no previous level yet).
    let mut prev: Option<(Dec, Option<u64>)> = None;
    for (i, parsed) in levels.enumerate() {
        let (Some(px), Some(sz)) = parsed else {
            f |= BAD_LEVEL;
            continue;
        };
        // Prices as keys (every price in [0, 18.4)): integer compares, a multiply for the tick.
        // A price without a key (negative, huge) takes the decimal path; both agree exactly.
        let key = px.key18();
        let out_of_range = match key {
            Some(k) => k == 0 || k >= dec::ONE_KEY18,
            None => px.signum() <= 0 || px >= ONE,
        };
        if out_of_range {
            f |= OUT_OF_RANGE;
        }
        if sz.signum() <= 0 {
            f |= NONPOS_SIZE;
        }
        sum = sum.and_then(|a| a.checked_add(sz.key(DEPTH_SCALE)?));
        let on_tick = match (tick, key) {
            (Some((_, Some(d))), Some(k)) => d.divides(k),
            (Some((t, _)), _) => px.is_multiple_of(t),
            (None, _) => true,
        };
        if !on_tick {
            f |= OFF_TICK;
        }
        if let Some((p, pk)) = prev {
            let ord = match (key, pk) {
                (Some(a), Some(b)) => a.cmp(&b),
                _ => px.cmp(&p),
            };
            // Wire order: bids ascending, asks descending (best last), facts §4.1.
            match (ord, bids) {
                (Equal, _) => f |= DUP_PRICE,
                (Less, true) | (Greater, false) => f |= UNSORTED,
                _ => {}
            }
        }
        prev = Some((px, key));
        dst.push(i as u32);
    }
    (f, sum)
}

/// The scale of [`side`]'s size sums: sizes of at most 6 fractional digits (the venue sends 2).
const DEPTH_SCALE: u32 = 6;

/// The best level of a side: the wire level and its parsed price.
fn best<'b, 'a>(side: &SideMemo, wire: Option<&'b Vec<Level<'a>>>) -> Option<(&'b Level<'a>, Dec)> {
    let &i = side.lvls.first()?;
    Some((&wire?[i as usize], side.best?))
}

/// A side's levels as (price, size) strings in wire order (callers checked that all are strings).
fn pairs<'b>(side: &'b Option<Vec<Level<'_>>>) -> impl Iterator<Item = (&'b str, &'b str)> {
    side.iter().flatten().map(|l| (l.price.as_deref().unwrap_or_default(), l.size.as_deref().unwrap_or_default()))
}

/// The reply (or the failing element of it) as at most 500 characters of text, for error rows.
fn reply_excerpt(line: &[u8], index: Option<usize>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct R<'a> {
        #[serde(borrow, default)]
        body: Option<&'a RawValue>,
        #[serde(default)]
        body_text: Option<String>,
        #[serde(default)]
        body_hex: Option<String>,
    }
    let r: R = serde_json::from_slice(line).ok()?;
    let text: String = match (r.body, index) {
        (Some(b), Some(i)) => serde_json::from_str::<Vec<&RawValue>>(b.get()).ok()?.get(i)?.get().to_string(),
        (Some(b), None) => b.get().to_string(),
        (None, _) => r.body_text.or(r.body_hex)?,
    };
    Some(match text.char_indices().nth(500) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    })
}

/// `{"record":R,"schema":…,"venue":…,"source":endpoint,"collected_at_utc":…` (no closing brace).
fn head(out: &mut Vec<u8>, record: &str, env: &Env) {
    out.extend_from_slice(b"{\"record\":\"");
    out.extend_from_slice(record.as_bytes());
    out.extend_from_slice(b"\",\"schema\":\"");
    out.extend_from_slice(SCHEMA.as_bytes());
    out.extend_from_slice(b"\",\"venue\":");
    put_opt(out, env.venue.as_deref());
    out.extend_from_slice(b",\"source\":");
    put_opt(out, env.endpoint.as_deref());
    out.extend_from_slice(b",\"collected_at_utc\":");
    put_opt(out, env.collected_at_utc.as_deref());
}

fn put_slot(out: &mut Vec<u8>, ctx: &Ctx) {
    out.extend_from_slice(b",\"slot\":");
    put_i64(out, ctx.slot);
    out.extend_from_slice(b",\"due_at_utc\":");
    put_opt(out, ctx.due_at_utc.as_deref());
}

fn put_prov(out: &mut Vec<u8>, env: &Env) {
    out.extend_from_slice(b",\"raw_run_id\":");
    put_opt(out, env.run_id.as_deref());
    out.extend_from_slice(b",\"raw_seq\":");
    put_u64(out, env.seq);
}

/// A side's `bids`/`asks` array (its first `n` valid levels); `keep`: kept in its memo and
/// written from there while the side does not change.
fn put_side(out: &mut Vec<u8>, m: &mut SideMemo, wire: Option<&Vec<Level>>, n: usize, keep: bool) {
    if !keep {
        return put_levels(out, &m.lvls, wire, n);
    }
    if m.text_depth != Some(n) {
        m.text.clear();
        put_levels(&mut m.text, &m.lvls, wire, n);
        m.text_depth = Some(n);
    }
    out.extend_from_slice(&m.text);
}

fn put_levels(out: &mut Vec<u8>, side: &[u32], wire: Option<&Vec<Level>>, n: usize) {
    out.push(b'[');
    if let Some(wire) = wire {
        for (k, &i) in side.iter().take(n).enumerate() {
            if k > 0 {
                out.push(b',');
            }
            let w = &wire[i as usize];
            // Both parsed as decimals, so they hold only digits, '.', '-': copied verbatim.
            out.extend_from_slice(b"{\"price\":\"");
            out.extend_from_slice(w.price.as_deref().unwrap_or_default().as_bytes());
            out.extend_from_slice(b"\",\"size\":\"");
            out.extend_from_slice(w.size.as_deref().unwrap_or_default().as_bytes());
            out.extend_from_slice(b"\"}");
        }
    }
    out.push(b']');
}

/// A string known to need no escapes (a decimal), or null.
fn put_plain(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => book::put_json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn put_raw(out: &mut Vec<u8>, r: Option<&RawValue>) {
    match r {
        Some(r) => out.extend_from_slice(r.get().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

/// Whether a field is a JSON string or number (the fields [`put_str_or_number`] keeps).
fn str_or_number(r: Option<&RawValue>) -> bool {
    r.is_some_and(|r| r.get().starts_with(|c: char| c == '"' || c == '-' || c.is_ascii_digit()))
}

/// A field the row keeps as a string: a JSON string verbatim, a JSON number as its text in quotes
/// (digits as sent, never re-printed), anything else (or absent) as null. One JSON type per field.
fn put_str_or_number(out: &mut Vec<u8>, r: Option<&RawValue>) {
    match r.filter(|r| str_or_number(Some(r))).map(RawValue::get) {
        Some(t) if t.starts_with('"') => out.extend_from_slice(t.as_bytes()),
        Some(t) => {
            out.push(b'"');
            out.extend_from_slice(t.as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

fn put_u64(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => dec::write_u64(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

fn put_i64(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        Some(v) => dec::write_i64(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

fn put_dec(out: &mut Vec<u8>, d: Option<Dec>) {
    match d {
        Some(d) => {
            out.push(b'"');
            d.write(out);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    /// A book of owned level texts (wire order: bids ascending, asks descending, unless a test
    /// breaks it on purpose) with one of a few ticks.
    #[derive(Clone)]
    struct Owned {
        sides: [Vec<(String, String)>; 2],
        tick: Option<Box<RawValue>>,
    }

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_string()).unwrap()
    }

    fn levels(side: &[(String, String)]) -> Vec<Level<'_>> {
        side.iter().map(|(p, s)| Level { price: Some(Cow::Borrowed(p)), size: Some(Cow::Borrowed(s)) }).collect()
    }

    fn parsed(side: &[(String, String)]) -> Vec<Parsed> {
        side.iter().map(|(p, s)| (Dec::parse(p), Dec::parse(s))).collect()
    }

    /// The row of `o` as pm-rebuild writes it: with a kept memo (`memo`) or without.
    fn row(nor: &mut Normalizer, o: &Owned, asset: &str, ts: u64, memo: Option<&mut [SideMemo; 2]>) -> String {
        let env = Env {
            venue: Some(Cow::Borrowed("polymarket")),
            endpoint: Some(Cow::Borrowed("ws")),
            collected_at_utc: Some(Cow::Owned(format!("2026-08-13T06:54:{:02}.000000Z", ts % 60))),
            ..Env::default()
        };
        let ts = (1786604000000 + ts * 1000).to_string();
        let one = raw("\"5\"");
        let b = Book {
            market: Some(Cow::Borrowed("0xabc")),
            asset_id: Some(Cow::Borrowed(asset)),
            timestamp: Some(Cow::Borrowed(&ts)),
            hash: Some(Cow::Borrowed("0123")),
            bids: Some(levels(&o.sides[0])),
            asks: Some(levels(&o.sides[1])),
            min_order_size: Some(&one),
            tick_size: o.tick.as_deref(),
            ..Book::default()
        };
        let p = [parsed(&o.sides[0]), parsed(&o.sides[1])];
        let pre = memo.map(|memo| Pre { parsed: [&p[0], &p[1]], memo });
        let mut out = Vec::new();
        nor.state_row(&env, &b, pre, Some(true), 0, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// A row written from a memo kept across rows (pm-rebuild) is the row written from scratch,
    /// whatever changes between rows: levels added, changed and removed on one side or both,
    /// bad, unsorted and duplicate levels, sizes beyond the fast sum, ticks that come and go.
    #[test]
    fn a_kept_memo_writes_the_rows_a_fresh_scan_writes() {
        let mut rnd = crate::util::test_rand(0x2545_f491_4f6c_dd1d);
        let ticks = [Some(raw("\"0.01\"")), Some(raw("\"0.001\"")), None, Some(raw("0.01"))];
        for depth in [0, 3, 10, usize::MAX] {
            let opts = Options { depth, ..Options::default() };
            let (mut kept, mut fresh) = (Normalizer::new(opts.clone()), Normalizer::new(opts));
            let mut books = [0, 1].map(|_| Owned { sides: [Vec::new(), Vec::new()], tick: ticks[0].clone() });
            let mut memos: [[SideMemo; 2]; 2] = Default::default();
            let mut reused = 0;
            for step in 0..1500u64 {
                let a = rnd(2);
                let (o, memo) = (&mut books[a], &mut memos[a]);
                match rnd(10) {
                    0 => o.tick = ticks[rnd(4)].clone(),
                    1 => {}
                    _ => {
                        let k = rnd(2);
                        let side = &mut o.sides[k];
                        let price = format!("0.{:03}", 1 + rnd(998));
                        let size = match rnd(20) {
                            0 => "0".to_string(),
                            1 => "x".to_string(),
                            2 => format!("1.{:07}", rnd(10_000_000)),
                            _ => format!("{}.{:02}", rnd(50_000), rnd(100)),
                        };
                        let at = side.iter().position(|(p, _)| {
                            let (x, y) = (Dec::parse(p).unwrap(), Dec::parse(&price).unwrap());
                            if k == 0 {
                                x >= y
                            } else {
                                x <= y
                            }
                        });
                        match (at, rnd(8)) {
                            (_, 0) => side.insert(rnd(side.len() + 1), (price, size)),
                            (Some(i), 1) if !side.is_empty() => _ = side.remove(i),
                            (Some(i), _) if side[i].0 == price => side[i].1 = size,
                            (Some(i), _) => side.insert(i, (price, size)),
                            (None, _) => side.push((price, size)),
                        }
                        memo[k].stale();
                    }
                }
                let o = books[a].clone();
                let asset = ["a1", "a2"][a];
                reused += memos[a].iter().filter(|m| m.fresh).count();
                let want = row(&mut fresh, &o, asset, step / 3, None);
                assert_eq!(row(&mut kept, &o, asset, step / 3, Some(&mut memos[a])), want, "step {step} depth {depth}");
            }
            assert!(reused > 500, "sides were written from their memo: {reused}");
        }
    }

    /// Each book's flags use its own tick, also when the row before had another.
    #[test]
    fn each_book_is_judged_by_its_own_tick() {
        let mut nor = Normalizer::new(Options::default());
        let side = |p: &str| vec![(p.to_string(), "10".to_string())];
        let mut o = Owned { sides: [side("0.405"), side("0.6")], tick: Some(raw("\"0.01\"")) };
        let mut off_tick = Vec::new();
        for (i, tick) in ["\"0.01\"", "\"0.001\"", "\"0.001\"", "\"0.01\"", "", "\"0.01\""].into_iter().enumerate() {
            o.tick = (!tick.is_empty()).then(|| raw(tick));
            off_tick.push(row(&mut nor, &o, "t", i as u64, None).contains("\"off_tick\""));
        }
        assert_eq!(off_tick, [true, false, false, true, false, true]);
    }
}
