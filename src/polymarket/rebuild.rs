//! pm-rebuild's engine: order books rebuilt from raw websocket frames (and REST `/books` replies),
//! every state verified with the venue's hash (facts §6.3, [`crate::polymarket::bookhash`]).
//!
//! Per asset: a `book` event (or a REST book) sets the state; each `price_change` entry sets the
//! absolute size at one level (`"0"` removes it; BUY = bid, SELL = ask). Consecutive changes of an
//! asset that carry the same `timestamp` and the same venue hash describe **one state** (entries of
//! one message, and same-timestamp bursts of several messages, which all carry the hash of the state
//! after the last of them): that state is checked once, when the next event of the asset (or the end
//! of the file) shows the burst is over, and gets one row; the intermediate states get none.
//! pm-rebuild is offline, so it looks ahead: `last_trade_price` events that arrive before the next
//! state change are still tried for the pending state's `last_trade_price`.
//!
//! Book refreshes the venue sends after a trade lack `tick_size` and `last_trade_price`: both are
//! carried over from the current state (a REST book included), trade prices seen are tried, and when
//! none reproduces the hash the state's hash is *unverifiable* (`trade_price_unknown`), not a
//! mismatch; so is a change state whose rebuilt levels the next `book` (same timestamp and hash)
//! confirms. A mismatch otherwise marks the asset **untrusted until the next `book` event or REST
//! snapshot** (issue 7's rule): a later hash that happens to match again does not restore trust; it
//! is counted (`matches_while_untrusted`). `tick_size_change` updates the tick size.
//!
//! Output: the REST path's rows, `pmarchive.orderbook/1` `book` rows written by pm-normalize's one
//! row formatter ([`Normalizer::state_row`]) with `source` `ws` / `ws_rest` and the flag
//! `untrusted`; `pmarchive.trade/1` rows; and a [`Stats`] summary with a verification rate per
//! input file. Fields: docs/ORDERBOOK_SCHEMA.md ("Derived websocket streams") and docs/WEBSOCKET.md.
//!
//! Speed (issue 14 §2; docs/WEBSOCKET.md "Throughput"): each line is parsed once into typed
//! structs borrowing from it ([`scan`]'s fast reader, serde_json for the lines it leaves); prices
//! are exact integers (`price_key`). Up to three threads, each with its own copy of the books kept
//! from the level changes the rebuilding thread encodes ([`put_set`]): the rebuilding thread
//! (levels only), the hashing stage ([`hashing`]: every level's hash text and each side's) and the
//! row thread (the levels' parsed decimals for pm-normalize's row writer). Only those changes and
//! a few fields per state cross between cores; rows are written in order.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use std::fmt;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::{to_raw_value, RawValue};
use serde_json::Value;

use crate::clock;
use crate::envelope::RawLine;
use crate::normalize::dec::{self, Dec};
use crate::normalize::{self, parse, Normalizer, Parsed, Pre, SideMemo};
use crate::polymarket::bookhash;
use crate::polymarket::tradeset::{self, TradeRow};
use crate::util::AtomicFile;

mod hashing;
mod scan;
mod sha1x2;
use hashing::{HashJob, HashStage};

/// `source` of a row holding the rebuilt state after a websocket message (`book` or `price_change`).
pub const SOURCE_WS: &str = "ws";
/// `source` of a row holding the rebuilt state as set from a REST book reply in the stream.
pub const SOURCE_WS_REST: &str = "ws_rest";

/// Why a venue hash could not be checked (keys of [`Stats::unverifiable`]).
/// The levels are known but a field outside them is not: a `book` refresh without
/// `last_trade_price` that no trade price in the input reproduces, or a rebuilt state whose levels
/// the next `book` (same timestamp and hash) confirms. In practice: a trade the input does not hold.
pub const UNV_TRADE_PRICE: &str = "trade_price_unknown";
/// No tick size known for the asset (a `book` without `tick_size` and no earlier state).
pub const UNV_TICK_SIZE: &str = "tick_size_unknown";
/// A REST book without a field the hash needs (pm-normalize's `hash_unverifiable`).
pub const UNV_REST_FIELDS: &str = "rest_fields_missing";

/// Rows are handed to the writer once this much is buffered.
const OUT_CHUNK: usize = 1 << 16;
/// Trade prices kept per asset for the hash (each trade adds one or two spellings).
const MAX_CANDIDATES: usize = 8;
/// Settled states whose verdict may wait for the hashing stage (then the oldest is reached); a
/// verdict whose SHA-1 is there is reached at once, so the hash texts stay in the caches.
const MAX_DEFERRED: usize = 512;
/// Bytes of level changes an asset queues for the hashing stage's copy while its states are not
/// hashed (no tick size known), before the whole book replaces them.
const MAX_HOPS: usize = 1 << 16;

/// Why [`Rebuilder::read_file`] stopped: the input could not be opened (exit 2), or writing rows or
/// trades failed (exit 2 as an I/O error on output). Damage inside an input is not an error: it is
/// counted as bad lines (exit 1 at the end).
#[derive(Debug)]
pub enum ReadError {
    Open(io::Error),
    Output(io::Error),
}

/// Rebuild options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Row shape, exactly as pm-normalize's (`depth`: levels per side, `max_lag_ms` for `recv_far`).
    pub rows: normalize::Options,
    /// At most one row per asset per this many ms of exchange time (None: a row per state).
    pub every_ms: Option<i64>,
    /// Used for the hash when no REST book of the asset has been seen (WS books lack the field).
    pub min_order_size: Value,
    pub neg_risk: Value,
    /// Used when a `book` carries no `tick_size` and the asset has no earlier state (`--tick-size`;
    /// captures whose initial books lack the field). None: such a state's hash is unverifiable.
    pub tick_size: Option<Value>,
    /// False: verify only, format no rows (`--no-rows`).
    pub write_rows: bool,
    /// `--threads`: the threads kept busy. When that leaves room for a hashing thread beside the
    /// rebuilding and the row thread (with rows from 3, without from 2), it computes every SHA-1
    /// ([`hashing`]); else the rebuilding thread does. Same output for any value.
    pub threads: usize,
    /// With a hashing thread: the rebuilding thread hashes a state itself when more than this many
    /// batches of states wait at the hashing thread ([`HashStage::behind`]). Not a flag: tests
    /// set 0 to take that path for sure.
    pub steal_after: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rows: normalize::Options::default(),
            every_ms: None,
            min_order_size: Value::from("5"),
            neg_risk: Value::Bool(false),
            tick_size: None,
            write_rows: true,
            // Cores + 1: on 2 cores the three threads together were measured faster than two
            // (reports/bench_stream_loopback_2026-12-01-3-s5.txt and later, quiet machine).
            threads: std::thread::available_parallelism().map_or(1, usize::from) + 1,
            steal_after: 3,
        }
    }
}

/// Verification summary (also `--summary FILE`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Stats {
    pub lines: u64,
    pub bad_lines: u64,
    /// Lines that are neither ws frames nor REST book replies (tracking records, other endpoints, …).
    pub other_lines: u64,
    /// `track` lines (their tokens feed the slug/outcome join; also counted in `other_lines`).
    pub track_lines: u64,
    pub ws_frames: u64,
    /// Non-JSON frames (`PONG`, `NO NEW ASSETS`).
    pub text_frames: u64,
    pub ws_events: BTreeMap<String, u64>,
    /// Events that could not be used (missing or malformed fields).
    pub bad_events: u64,
    /// Events whose `timestamp` was a JSON number instead of a string (accepted as its digits).
    pub numeric_timestamps: u64,
    pub ws_books: u64,
    /// `book` events without `tick_size` / `last_trade_price` (the venue's refreshes after a
    /// trade): the values are carried over from the asset's current state.
    pub books_without_tick_size: u64,
    pub books_without_last_trade_price: u64,
    pub ws_book_hash_matched: u64,
    pub ws_book_hash_mismatched: u64,
    pub ws_book_hash_unverifiable: u64,
    pub rest_books: u64,
    pub rest_hash_matched: u64,
    pub rest_hash_mismatched: u64,
    pub rest_hash_unverifiable: u64,
    /// REST books older than the rebuilt state (not applied).
    pub rest_stale: u64,
    pub changes_applied: u64,
    /// Changes folded into a later state (same asset, timestamp and hash: entries of one message,
    /// same-timestamp bursts): not checked and not written on their own.
    pub changes_merged: u64,
    /// price_change entries for an asset without a known book yet (not applied).
    pub changes_without_book: u64,
    /// Every hash check — `book` events, rebuilt states, REST books:
    /// `hash_checks = hash_checks_matched + hash_checks_mismatched + hash_checks_unverifiable`.
    pub hash_checks: u64,
    pub hash_checks_matched: u64,
    pub hash_checks_mismatched: u64,
    pub hash_checks_unverifiable: u64,
    /// `hash_checks_matched / hash_checks` (null without checks): the measured verification rate.
    pub verified_rate: Option<f64>,
    /// Unverifiable checks by reason ([`UNV_TRADE_PRICE`], [`UNV_TICK_SIZE`], [`UNV_REST_FIELDS`]).
    pub unverifiable: BTreeMap<Cow<'static, str>, u64>,
    /// Rebuilt states that came without a venue hash (not checks).
    pub states_without_hash: u64,
    /// Rebuilt states (after price_change messages) whose hash matched.
    pub hashes_matched: u64,
    /// Mismatches of rebuilt states on a trusted book: each one is a detected gap.
    pub hashes_mismatched: u64,
    /// Further mismatches while the asset was already untrusted.
    pub mismatches_while_untrusted: u64,
    /// Matches on an untrusted book (also in `hashes_matched`): they do not restore trust.
    pub matches_while_untrusted: u64,
    /// Matches (of any kind) reached only with a price from a `last_trade_price` event.
    pub matched_with_trade_price: u64,
    /// Matches reached only with a `last_trade_price` found by searching the tick grid: the state
    /// includes a trade the input does not hold (its price is then known from the hash).
    pub matched_with_inferred_trade_price: u64,
    /// Untrusted → trusted transitions, by cause (the only two).
    pub resyncs_ws_book: u64,
    pub resyncs_rest: u64,
    /// Receive-time seconds summed over assets while untrusted, counted inside each file's span.
    pub untrusted_s: f64,
    /// REST snapshots at the same exchange timestamp as the rebuilt book.
    pub cross_checks_agree: u64,
    pub cross_checks_disagree: u64,
    /// `book` rows written (pmarchive.orderbook/1).
    pub rows: u64,
    /// Quality flags over the rows written (pm-normalize's counts, plus `untrusted` when raised).
    pub row_flags: BTreeMap<Cow<'static, str>, u64>,
    /// Rows without a joined slug (no `track` line or `--markets` record for the token).
    pub unjoined_rows: u64,
    pub trades: u64,
    pub assets: BTreeMap<String, AssetStats>,
    /// Per input file, in order.
    pub files: Vec<FileStats>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AssetStats {
    /// Rebuilt states (price_change) of the asset: changes applied, hashes matched / mismatched /
    /// unverifiable.
    pub changes: u64,
    pub matched: u64,
    pub mismatched: u64,
    pub unverifiable: u64,
    pub trusted_at_end: bool,
}

/// The verification of one input file: every hash check settled while reading it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FileStats {
    pub file: String,
    pub lines: u64,
    pub hash_checks: u64,
    pub matched: u64,
    pub mismatched: u64,
    pub unverifiable: u64,
    /// `matched / hash_checks` (null without checks).
    pub verified_rate: Option<f64>,
    /// Receive-time seconds assets were untrusted between the file's first and last receive time.
    pub untrusted_s: f64,
    #[serde(skip)]
    first_us: Option<i64>,
    #[serde(skip)]
    last_us: Option<i64>,
}

/// Per-asset state, keyed by asset id. Looked up several times per change: hashed a word at a time
/// ([`AssetHasher`]) instead of with SipHash, which cost ~5 % of the rebuild thread.
type Assets<V> = HashMap<String, V, BuildHasherDefault<AssetHasher>>;

/// FxHash's word-at-a-time multiply-rotate over the key bytes. The keys are the asset ids of our own
/// archive (a few hundred per run), so SipHash's resistance to crafted collisions buys nothing here.
#[derive(Clone, Copy, Default)]
struct AssetHasher(u64);

impl Hasher for AssetHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = self.0;
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w.try_into().expect("8 bytes"))).wrapping_mul(K);
        }
        for &b in words.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// An asset's counters (no allocation once it has some).
fn asset_stats<'m>(m: &'m mut BTreeMap<String, AssetStats>, asset: &str) -> &'m mut AssetStats {
    if !m.contains_key(asset) {
        m.insert(asset.to_string(), AssetStats::default());
    }
    m.get_mut(asset).expect("inserted")
}

fn rate(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| (num as f64 / den as f64 * 1e6).round() / 1e6)
}

/// A price as an exact integer: the decimal text scaled to 10^-18 ([`Dec::parse`] accepts at most 18
/// fractional digits and 20 digits, so the product fits an i128). `"0.1"`, `"0.10"` and `"0.100"` are
/// one key; `"0.1"` and `"0.100000000000000001"` (one f64) are two. Never an f64 (issue 13 §5).
fn price_key(p: Dec) -> i128 {
    p.m * 10i128.pow(18 - p.s)
}

/// True when a size (parsed) is an exact decimal zero (`"0"`, `"0.00"`): the level is removed. A
/// size that is not a decimal is kept as sent (the row writer flags it).
fn is_zero(size: Option<Dec>) -> bool {
    size.is_some_and(|d| d.m == 0)
}

/// One level of a rebuilt side: the wire strings, and its exact price, computed once when the
/// level is set (48 bytes: levels shift on every insert and removal, in three copies).
#[derive(Clone, Debug)]
struct Level {
    /// The exact price ([`price_key`]).
    key: i128,
    /// Price then size, as sent (one allocation); the size starts at `split`.
    ps: String,
    split: u32,
}

impl Level {
    /// None when the price is not an exact decimal ([`Dec::parse`]); else the level and its price.
    fn new(price: &str, size: &str) -> Option<(Level, Dec)> {
        let px = Dec::parse(price)?;
        Some((Level::with_key(price, size, price_key(px)), px))
    }

    /// A level whose price is known to be `key` ([`price_key`]).
    fn with_key(price: &str, size: &str, key: i128) -> Level {
        let mut ps = String::with_capacity(price.len() + size.len());
        ps.push_str(price);
        ps.push_str(size);
        Level { key, ps, split: price.len() as u32 }
    }

    /// [`Level::new`] in this level's buffer (`px`: the price, parsed).
    fn reset(&mut self, price: &str, size: &str, px: Dec) {
        self.key = price_key(px);
        self.ps.clear();
        self.ps.push_str(price);
        self.ps.push_str(size);
        self.split = price.len() as u32;
    }

    fn price(&self) -> &str {
        &self.ps[..self.split as usize]
    }

    fn size(&self) -> &str {
        &self.ps[self.split as usize..]
    }
}

/// A level's text in the hash text, `{"price":…,"size":…}` ([`bookhash::put_level`]), into `t`
/// (cleared first).
fn level_text(t: &mut Vec<u8>, price: &str, size: &str) {
    t.clear();
    bookhash::put_level(t, price, size);
}

/// The hashing stage's side text: `[` the levels' texts joined by `,` `]`, edited in place at the
/// level that changes (one move of what follows, not a copy per level), with each level's length.
#[derive(Clone, Debug, Default)]
struct SideText {
    text: Vec<u8>,
    lens: Vec<u32>,
    /// The changed level's text, before it goes in.
    scratch: Vec<u8>,
}

impl SideText {
    /// Where level `i`'s text starts.
    fn offset(&self, i: usize) -> usize {
        1 + self.lens[..i].iter().map(|&l| l as usize + 1).sum::<usize>()
    }

    /// Level `i` has a new size.
    fn set(&mut self, i: usize, price: &str, size: &str) {
        level_text(&mut self.scratch, price, size);
        let (at, old) = (self.offset(i), self.lens[i] as usize);
        self.text.splice(at..at + old, self.scratch.iter().copied());
        self.lens[i] = self.scratch.len() as u32;
    }

    /// A new level at `i`.
    fn insert(&mut self, i: usize, price: &str, size: &str) {
        level_text(&mut self.scratch, price, size);
        let n = self.scratch.len() as u32;
        if self.lens.is_empty() {
            self.text.splice(1..1, self.scratch.iter().copied());
        } else if i < self.lens.len() {
            self.scratch.push(b',');
            let at = self.offset(i);
            self.text.splice(at..at, self.scratch.iter().copied());
        } else {
            let at = self.text.len() - 1;
            self.text.splice(at..at, std::iter::once(b',').chain(self.scratch.iter().copied()));
        }
        self.lens.insert(i, n);
    }

    /// Level `i` removed (with the comma after it, or before it for the last).
    fn remove(&mut self, i: usize) {
        let (at, len) = (self.offset(i), self.lens[i] as usize);
        if self.lens.len() == 1 {
            self.text.drain(at..at + len);
        } else if i + 1 < self.lens.len() {
            self.text.drain(at..at + len + 1);
        } else {
            self.text.drain(at - 1..at + len);
        }
        self.lens.remove(i);
    }

    /// Starts over: `[`, then [`SideText::push`] each level, then [`SideText::close`].
    fn open(&mut self) {
        self.text.clear();
        self.text.push(b'[');
        self.lens.clear();
    }

    fn push(&mut self, price: &str, size: &str) {
        if !self.lens.is_empty() {
            self.text.push(b',');
        }
        let at = self.text.len();
        bookhash::put_level(&mut self.text, price, size);
        self.lens.push((self.text.len() - at) as u32);
    }

    fn close(&mut self) {
        self.text.push(b']');
    }
}

/// Which copy of a book a side belongs to: each thread keeps its own, with what it needs (the
/// level changes travel between them encoded, [`put_set`]), so no thread reads another's memory.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum Role {
    /// The rebuilding thread's: the levels only.
    #[default]
    Plain,
    /// The hashing stage's ([`hashing`]): every level's hash text, and the side's.
    Hash,
    /// The row thread's: every level's (price, size) as [`Dec::parse`] gives them.
    Rows,
}

/// A rebuilt side in wire order, in one of the copies ([`Role`]).
#[derive(Clone, Debug, Default)]
struct Side {
    levels: Vec<Level>,
    /// [`Role::Rows`] only (same order as `levels`).
    parsed: Vec<Parsed>,
    /// [`Role::Hash`] only: the side as the hash text's array, kept with every change.
    text: SideText,
    role: Role,
    /// The order of the prices: a side in its own (bids ascending, asks descending, strictly) is
    /// searched by bisection; one that is not (a full book sent out of order, kept as sent) level
    /// by level.
    order: Order,
}

/// The order of a side's prices ([`Side::find`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum Order {
    /// At most one level.
    #[default]
    Any,
    Up,
    Down,
    Neither,
}

impl Side {
    fn new(role: Role) -> Side {
        let mut s = Side { role, ..Side::default() };
        if role == Role::Hash {
            s.text.open();
            s.text.close();
        }
        s
    }

    /// Sets the absolute size at a level; keeps `ascending` (bids) or descending (asks) order.
    /// None (the side unchanged) when the price is not an exact decimal.
    fn set(&mut self, ascending: bool, price: &str, size: &str) -> Option<()> {
        let px = Dec::parse(price)?;
        let key = price_key(px);
        let z = Dec::parse(size);
        let (hashed, rows) = (self.role == Role::Hash, self.role == Role::Rows);
        let (pos, at) = self.find(ascending, key);
        match (pos, is_zero(z)) {
            (Some(i), true) => {
                self.levels.remove(i);
                if rows {
                    self.parsed.remove(i);
                } else if hashed {
                    self.text.remove(i);
                }
            }
            (Some(i), false) => {
                let l = &mut self.levels[i];
                if l.size() != size {
                    l.ps.truncate(l.split as usize);
                    l.ps.push_str(size);
                    if hashed {
                        self.text.set(i, &l.ps[..l.split as usize], size);
                    } else if rows {
                        self.parsed[i].1 = z;
                    }
                }
            }
            (None, true) => {}
            (None, false) => {
                self.levels.insert(at, Level::with_key(price, size, key));
                if self.order == Order::Any && self.levels.len() > 1 {
                    self.order = if ascending { Order::Up } else { Order::Down };
                }
                if rows {
                    self.parsed.insert(at, (Some(px), z));
                } else if hashed {
                    self.text.insert(at, price, size);
                }
            }
        }
        Some(())
    }

    /// The level with price `key` (if any), and where a new one goes: the first level past it in
    /// the side's order (ascending bids, descending asks).
    fn find(&self, ascending: bool, key: i128) -> (Option<usize>, usize) {
        let past = |l: &Level| if ascending { l.key > key } else { l.key < key };
        let own = if ascending { Order::Up } else { Order::Down };
        if self.order != own && self.order != Order::Any {
            let at = self.levels.iter().position(past).unwrap_or(self.levels.len());
            return (self.levels.iter().position(|l| l.key == key), at);
        }
        let at = self.levels.partition_point(|l| !past(l));
        let found = at.checked_sub(1).filter(|&i| self.levels[i].key == key);
        (found, at)
    }

    /// Replaces the levels (in wire order), reusing the buffers of the levels there; None when a
    /// level is None or its price not an exact decimal (the side is then unusable).
    fn replace<'l>(&mut self, levels: impl Iterator<Item = Option<(&'l str, &'l str)>>) -> Option<()> {
        let (hashed, rows) = (self.role == Role::Hash, self.role == Role::Rows);
        self.parsed.clear();
        if hashed {
            self.text.open();
        }
        let mut n = 0;
        for l in levels {
            let (p, z) = l?;
            let px = Dec::parse(p)?;
            match self.levels.get_mut(n) {
                Some(l) => l.reset(p, z, px),
                None => self.levels.push(Level::new(p, z)?.0),
            }
            if rows {
                self.parsed.push((Some(px), Dec::parse(z)));
            } else if hashed {
                self.text.push(p, z);
            }
            n += 1;
        }
        self.levels.truncate(n);
        if hashed {
            self.text.close();
        }
        let (up, down) =
            (self.levels.windows(2).all(|w| w[0].key < w[1].key), self.levels.windows(2).all(|w| w[0].key > w[1].key));
        self.order = match (up, down) {
            (true, true) => Order::Any,
            (true, false) => Order::Up,
            (false, true) => Order::Down,
            _ => Order::Neither,
        };
        Some(())
    }

    /// A wire side for the rebuild (all levels pairs of strings with an exact decimal price), else
    /// None; built in `spare`'s buffers (a side no longer used).
    fn from_wire(levels: &[parse::Level], mut spare: Side, role: Role) -> Option<Side> {
        spare.role = role;
        spare.replace(levels.iter().map(|l| Some((l.price.as_deref()?, l.size.as_deref()?))))?;
        Some(spare)
    }

    /// The side as the hash text's array ([`Role::Hash`]).
    fn text(&self) -> &[u8] {
        &self.text.text
    }

    /// The side as the hash text's array, written from the levels (any copy; a REST cross-check).
    fn put_text(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        for (i, l) in self.levels.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            bookhash::put_level(out, l.price(), l.size());
        }
        out.push(b']');
    }

    /// The side as the row writer's levels (borrowed, wire order), into `v` (cleared first).
    fn view<'s>(&'s self, v: &mut Vec<parse::Level<'s>>) {
        v.clear();
        v.extend(
            self.levels
                .iter()
                .map(|l| parse::Level { price: Some(Cow::Borrowed(l.price())), size: Some(Cow::Borrowed(l.size())) }),
        );
    }

    fn same_levels(&self, o: &Side) -> bool {
        self.levels.len() == o.levels.len()
            && self.levels.iter().zip(&o.levels).all(|(x, y)| x.ps == y.ps && x.split == y.split)
    }
}

/// A hash-relevant scalar as JSON text (what the row writer copies verbatim).
type Raw = Box<RawValue>;

fn raw(v: &Value) -> Raw {
    to_raw_value(v).expect("a JSON value serializes")
}

fn raw_str(s: &str) -> Raw {
    to_raw_value(s).expect("a string serializes")
}

/// What a rebuilt state waits for before it is checked (the next event of its asset).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Pend {
    /// After price_change entries.
    Change,
    /// A `book` event; `complete` = it carried both `tick_size` and `last_trade_price`.
    Book { complete: bool, had_ltp: bool },
}

/// Owned receive context of the line that completed a pending state (buffers reused).
#[derive(Clone, Debug, Default)]
struct RecvBuf {
    at: Option<String>,
    /// `at` in µs since the epoch (parsed once per line).
    us: Option<i64>,
    conn_id: Option<u64>,
    venue: Option<String>,
    run_id: Option<String>,
    seq: Option<u64>,
}

fn put_opt_string(dst: &mut Option<String>, src: Option<&str>) {
    match (dst.as_mut(), src) {
        (Some(d), Some(s)) => {
            d.clear();
            d.push_str(s);
        }
        (_, s) => *dst = s.map(String::from),
    }
}

impl RecvBuf {
    fn set(&mut self, r: &Recv) {
        put_opt_string(&mut self.at, r.at);
        self.us = r.us;
        put_opt_string(&mut self.venue, r.venue);
        put_opt_string(&mut self.run_id, r.run_id);
        self.conn_id = r.conn_id;
        self.seq = r.seq;
    }
    fn view(&self) -> Recv<'_> {
        Recv {
            at: self.at.as_deref(),
            us: self.us,
            conn_id: self.conn_id,
            venue: self.venue.as_deref(),
            run_id: self.run_id.as_deref(),
            seq: self.seq,
        }
    }
}

#[derive(Clone, Debug)]
struct Book {
    market: String,
    timestamp: String,
    ts_ms: i64,
    /// Ascending (wire order).
    bids: Side,
    /// Descending (wire order).
    asks: Side,
    /// None: never known for this asset.
    tick_size: Option<Raw>,
    ltp: Raw,
    /// False while no known `last_trade_price` reproduces the venue's hash (after a refresh
    /// without one): mismatches are then unverifiable, not gaps.
    ltp_known: bool,
    /// Trade prices seen (newest last), tried when the hash does not match with `ltp`; a match
    /// adopts one and drops it and older ones. Kept otherwise (the venue's hash may take a trade
    /// into account before or after its `last_trade_price` event arrives).
    cands: Vec<Raw>,
    /// The venue's hash of this state; None after a change that came without one.
    hash: Option<String>,
    verified: Option<bool>,
    trusted: bool,
    /// Receive time the asset became untrusted (None while untrusted: since the file's start).
    untrusted_since_us: Option<i64>,
    last_row_ms: Option<i64>,
    /// A state waiting for its check and row.
    pending: Option<Pend>,
    recv: RecvBuf,
    /// Order in which states became pending (settled in this order at the end of a file).
    order: u64,
    /// Level changes since the asset's last row, encoded for the row thread ([`put_set`]).
    ops: Vec<u8>,
    /// Level changes since the asset's last hash job, for the hashing stage's copy of the book.
    hops: Vec<u8>,
    /// Settled states of the asset whose verdict is not reached yet ([`Deferred`]).
    deferred: u32,
}

/// A `book` event that is about to replace an asset's state: a pending state at the same
/// timestamp and hash with the same levels is confirmed by it (levels right, fields outside not).
struct Next<'a> {
    ts_ms: i64,
    hash: &'a str,
    bids: &'a Side,
    asks: &'a Side,
}

/// A full book (a `book` event or a REST book) about to set an asset's state ([`Rebuilder::set_book`]).
struct Full<'a> {
    market: &'a str,
    ts: &'a str,
    ts_ms: i64,
    bids: Side,
    asks: Side,
    tick: Option<Raw>,
    ltp: Option<Raw>,
}

impl Book {
    /// A book before its first state: trusted, no levels, no trade price known.
    fn new(role: Role) -> Book {
        Book {
            market: String::new(),
            timestamp: String::new(),
            ts_ms: 0,
            bids: Side::new(role),
            asks: Side::new(role),
            tick_size: None,
            ltp: raw_str(""),
            ltp_known: false,
            cands: Vec::new(),
            hash: None,
            verified: None,
            trusted: true,
            untrusted_since_us: None,
            last_row_ms: None,
            pending: None,
            recv: RecvBuf::default(),
            order: 0,
            ops: Vec::new(),
            hops: Vec::new(),
            deferred: 0,
        }
    }
}

// ---- Websocket messages, parsed once, borrowing from the line (no generic JSON value) ----

/// An event's `timestamp`: a string as sent, or a JSON number (other recorders' captures).
#[derive(Debug)]
enum Ts<'a> {
    Str(Cow<'a, str>),
    Num(i64),
    Other,
}

struct TsV;

impl<'de> Visitor<'de> for TsV {
    type Value = Ts<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a timestamp")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Ts::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Ts::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Ts::Num(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).map_or(Ts::Other, Ts::Num))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Ts::Other)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Ts::Other)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Ts::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        parse::skip_seq(a)?;
        Ok(Ts::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        parse::skip_map(a)?;
        Ok(Ts::Other)
    }
}

impl<'de> Deserialize<'de> for Ts<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TsV)
    }
}

/// One `price_change` entry (or a legacy `changes[]` element); a non-object gives all None.
#[derive(Debug, Default)]
struct Entry<'a> {
    asset_id: Option<Cow<'a, str>>,
    price: Option<Cow<'a, str>>,
    size: Option<Cow<'a, str>>,
    side: Option<Cow<'a, str>>,
    hash: Option<Cow<'a, str>>,
}

/// One websocket message of any event type: the fields pm-rebuild reads (wrong types read as
/// absent, others skipped). `object` is false for an array element that is not an object.
#[derive(Debug, Default)]
struct Msg<'a> {
    object: bool,
    event_type: Option<Cow<'a, str>>,
    market: Option<Cow<'a, str>>,
    asset_id: Option<Cow<'a, str>>,
    timestamp: Option<Ts<'a>>,
    hash: Option<Cow<'a, str>>,
    bids: Option<Vec<parse::Level<'a>>>,
    asks: Option<Vec<parse::Level<'a>>>,
    tick_size: Option<&'a RawValue>,
    last_trade_price: Option<&'a RawValue>,
    new_tick_size: Option<&'a RawValue>,
    /// `price_changes` (current schema) or `changes` (legacy): Some(entries) for an array.
    price_changes: Option<Vec<Entry<'a>>>,
    changes: Option<Vec<Entry<'a>>>,
    price: Option<Cow<'a, str>>,
    size: Option<Cow<'a, str>>,
    side: Option<Cow<'a, str>>,
    fee_rate_bps: Option<Cow<'a, str>>,
    transaction_hash: Option<Cow<'a, str>>,
}

/// Entries of an array; None for anything else.
struct Entries<'a>(Option<Vec<Entry<'a>>>);

struct EntryV;

impl<'de> Visitor<'de> for EntryV {
    type Value = Entry<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a price change")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut e = Entry::default();
        while let Some(k) = a.next_key::<parse::Str<'de>>()? {
            let slot = match k.0.as_deref() {
                Some("asset_id") => &mut e.asset_id,
                Some("price") => &mut e.price,
                Some("size") => &mut e.size,
                Some("side") => &mut e.side,
                Some("hash") => &mut e.hash,
                _ => {
                    a.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = a.next_value::<parse::Str<'de>>()?.0;
        }
        Ok(e)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        parse::skip_seq(a)?;
        Ok(Entry::default())
    }
    parse::ignore_scalars!(Entry::default(), strings);
}

impl<'de> Deserialize<'de> for Entry<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EntryV)
    }
}

struct EntriesV;

impl<'de> Visitor<'de> for EntriesV {
    type Value = Entries<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("price changes")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut v = Vec::with_capacity(a.size_hint().unwrap_or(4));
        while let Some(e) = a.next_element::<Entry<'de>>()? {
            v.push(e);
        }
        Ok(Entries(Some(v)))
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        parse::skip_map(a)?;
        Ok(Entries(None))
    }
    parse::ignore_scalars!(Entries(None), strings);
}

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EntriesV)
    }
}

struct MsgV;

impl<'de> Visitor<'de> for MsgV {
    type Value = Msg<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a websocket message")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut m = Msg { object: true, ..Msg::default() };
        while let Some(k) = a.next_key::<parse::Str<'de>>()? {
            let slot = match k.0.as_deref() {
                Some("event_type") => &mut m.event_type,
                Some("market") => &mut m.market,
                Some("asset_id") => &mut m.asset_id,
                Some("hash") => &mut m.hash,
                Some("price") => &mut m.price,
                Some("size") => &mut m.size,
                Some("side") => &mut m.side,
                Some("fee_rate_bps") => &mut m.fee_rate_bps,
                Some("transaction_hash") => &mut m.transaction_hash,
                Some("timestamp") => {
                    m.timestamp = Some(a.next_value()?);
                    continue;
                }
                Some("bids") => {
                    m.bids = a.next_value::<parse::Side<'de>>()?.0;
                    continue;
                }
                Some("asks") => {
                    m.asks = a.next_value::<parse::Side<'de>>()?.0;
                    continue;
                }
                Some("tick_size") => {
                    m.tick_size = Some(a.next_value()?);
                    continue;
                }
                Some("last_trade_price") => {
                    m.last_trade_price = Some(a.next_value()?);
                    continue;
                }
                Some("new_tick_size") => {
                    m.new_tick_size = Some(a.next_value()?);
                    continue;
                }
                Some("price_changes") => {
                    m.price_changes = a.next_value::<Entries<'de>>()?.0;
                    continue;
                }
                Some("changes") => {
                    m.changes = a.next_value::<Entries<'de>>()?.0;
                    continue;
                }
                _ => {
                    a.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = a.next_value::<parse::Str<'de>>()?.0;
        }
        Ok(m)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        parse::skip_seq(a)?;
        Ok(Msg::default())
    }
    parse::ignore_scalars!(Msg::default(), strings);
}

impl<'de> Deserialize<'de> for Msg<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MsgV)
    }
}

/// A frame body: one message, an array of them (initial dumps), or any other JSON value.
// One frame at a time lives on the stack while it is handled; boxing `Msg` would cost an allocation
// per frame on the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Frame<'a> {
    One(Msg<'a>),
    Many(Vec<Msg<'a>>),
    Other,
}

struct FrameV<'a>(std::marker::PhantomData<&'a ()>);

// Generic over 'de: 'a (like parse::Body) so that `#[serde(borrow)]` works on it.
impl<'de: 'a, 'a> Visitor<'de> for FrameV<'a> {
    type Value = Frame<'a>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a frame body")
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        Ok(Frame::One(MsgV.visit_map(a)?))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut v = Vec::with_capacity(a.size_hint().unwrap_or(2));
        while let Some(m) = a.next_element::<Msg<'de>>()? {
            v.push(m);
        }
        Ok(Frame::Many(v))
    }
    parse::ignore_scalars!(Frame::Other, strings);
}

/// Only for [`RawLine`]'s `Default` (a missing body is `None`, never this).
impl Default for Frame<'_> {
    fn default() -> Self {
        Frame::Other
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Frame<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FrameV(std::marker::PhantomData))
    }
}

#[derive(Debug, Default, Deserialize)]
struct Ctx<'a> {
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    conn_id: Option<u64>,
}

/// A raw line (the envelope reader every tool shares, [`RawLine`]) with, for websocket frames, the
/// body's messages parsed in the same pass.
type Line<'a> = RawLine<'a, Frame<'a>, Ctx<'a>>;

/// The body of a REST book reply line, re-read with pm-normalize's parser once [`Line`] has shown
/// what the line is (those lines are rare). Not a [`RawLine`]: that reader needs `Default` bodies.
#[derive(Deserialize)]
struct RestLine<'a> {
    #[serde(borrow)]
    body: Option<parse::Body<'a>>,
    #[serde(borrow)]
    body_text: Option<Cow<'a, str>>,
}

/// The context of a `track` line as JSON text, re-read the same way (rare lines).
#[derive(Deserialize)]
struct TrackLine<'a> {
    #[serde(borrow)]
    ctx: Option<&'a RawValue>,
}

fn ts_event(ms: i64) -> String {
    clock::from_unix_ms(ms).map(clock::fmt_micros).unwrap_or_default()
}

/// A `last_trade_price` event as the trade row pm-tradeset writes for a websocket print (one type
/// for `pmarchive.trade/1`: [`TradeRow`], with its key); pm-rebuild does not deduplicate (`copies` 1)
/// nor join a slug.
fn trade_row(ev: &Msg, asset: &str, price: &str, ms: i64, recv: &Recv) -> TradeRow {
    let text = |v: &Option<Cow<str>>| v.as_deref().unwrap_or_default().to_string();
    let opt = |v: &Option<Cow<str>>| v.as_deref().filter(|t| !t.is_empty()).map(String::from);
    let (size, side, tx) = (text(&ev.size), text(&ev.side), text(&ev.transaction_hash));
    TradeRow {
        schema: tradeset::SCHEMA.into(),
        source: tradeset::SOURCE_WS.into(),
        ts_recv: recv.at.unwrap_or_default().into(),
        ts_event: ts_event(ms),
        ts_event_ms: ms,
        ts_event_resolution: "ms".into(),
        asset_id: asset.into(),
        market: text(&ev.market),
        price: price.into(),
        key: format!("{}|{asset}|{price}|{size}|{side}|{ms}|{tx}", tradeset::SOURCE_WS),
        size,
        side,
        role: None,
        outcome: None,
        outcome_index: None,
        proxy_wallet: None,
        fee_rate_bps: opt(&ev.fee_rate_bps),
        transaction_hash: opt(&ev.transaction_hash),
        conn_id: recv.conn_id,
        slug: None,
        copies: 1,
    }
}

/// `--trades-out`: written through the one atomic write (a temp file beside FILE, renamed over it
/// by [`Rebuilder::finish`]; removed when the run stops on an error).
struct TradesOut {
    file: AtomicFile,
    w: io::BufWriter<std::fs::File>,
}

/// The receive context and provenance of the line being processed.
struct Recv<'a> {
    at: Option<&'a str>,
    /// `at` in µs since the epoch.
    us: Option<i64>,
    conn_id: Option<u64>,
    venue: Option<&'a str>,
    run_id: Option<&'a str>,
    seq: Option<u64>,
}

impl Recv<'_> {
    fn us(&self) -> Option<i64> {
        self.us
    }
}

/// (min_order_size, neg_risk) for an asset's hash and row: the latest REST book's, else the defaults.
fn meta_of<'m>(meta: &'m Assets<(Raw, Raw)>, default: &'m (Raw, Raw), asset: &str) -> (&'m RawValue, &'m RawValue) {
    let (m, n) = meta.get(asset).unwrap_or(default);
    (m, n)
}

/// The fields of a state's hash text around its levels, and its `last_trade_price` as the text
/// tried first, into `j` (what the hashing stage needs of a state besides its level changes).
fn hash_fields(j: &mut HashJob, asset: &str, b: &Book, tick: &RawValue, meta: (&RawValue, &RawValue)) {
    for (dst, src) in [&mut j.asset, &mut j.market, &mut j.timestamp].into_iter().zip([asset, &b.market, &b.timestamp])
    {
        dst.clear();
        dst.push_str(src);
    }
    for (dst, src) in j.tail.iter_mut().zip([meta.0, tick, meta.1]) {
        dst.clear();
        dst.push_str(&parse::hash_scalar_text(src));
    }
    j.ltp.extend_from_slice(parse::hash_scalar_text(&b.ltp).as_bytes());
}

/// The SHA-1 of a hashed state with `ltp` (a raw value) as `last_trade_price`.
fn with_raw_ltp(j: &HashJob, ltp: &RawValue) -> [u8; 20] {
    j.with_ltp(parse::hash_scalar_text(ltp).as_bytes())
}

/// The venue's hash (40 lowercase hex digits, as [`bookhash`] writes them) as bytes; None for any
/// other text, which no state reproduces. Decoded through a table, without a branch per digit
/// (this runs for every settled state).
fn venue_digest(h: &str) -> Option<[u8; 20]> {
    const fn table() -> [u8; 256] {
        let mut t = [0xff_u8; 256];
        let mut i = 0;
        while i < 16 {
            t[b"0123456789abcdef"[i] as usize] = i as u8;
            i += 1;
        }
        t
    }
    static HEX: [u8; 256] = table();
    let b: &[u8; 40] = h.as_bytes().try_into().ok()?;
    let (mut d, mut bad) = ([0u8; 20], 0u8);
    for (x, pair) in d.iter_mut().zip(b.chunks_exact(2)) {
        let (hi, lo) = (HEX[pair[0] as usize], HEX[pair[1] as usize]);
        bad |= hi | lo;
        *x = hi << 4 | lo;
    }
    (bad & 0xf0 == 0).then_some(d)
}

/// Checks a hashed state against the venue's digest, trying trade prices (newest first) for
/// `last_trade_price` when the book's current one does not match: (matched, index of the trade
/// price that matched).
fn check(j: &HashJob, b: &Book, want: [u8; 20]) -> (bool, Option<usize>) {
    if with_raw_ltp(j, &b.ltp) == want {
        return (true, None);
    }
    for (i, c) in b.cands.iter().enumerate().rev() {
        if with_raw_ltp(j, c) == want {
            return (true, Some(i));
        }
    }
    (false, None)
}

/// The spellings of the price `k` ticks of `step` as the venue writes prices: padded to the tick's
/// decimals and at least three (`"0.490"`), without trailing zeros (`"0.49"`), and with two decimals
/// when exact (`"0.50"`); in that order, repeats dropped. Exact integer arithmetic.
fn grid_spellings(step: Dec, k: i128, out: &mut Vec<String>) {
    out.clear();
    let places = step.s.max(3);
    let p = k * step.m * 10i128.pow(places - step.s);
    let padded = format!("{}.{:0w$}", p / 10i128.pow(places), p % 10i128.pow(places), w = places as usize);
    let minimal = padded.trim_end_matches('0').trim_end_matches('.').to_string();
    let cents = 10i128.pow(places - 2);
    let two = (p % cents == 0).then(|| format!("{}.{:02}", p / 10i128.pow(places), p / cents % 100));
    out.push(padded);
    out.push(minimal);
    out.extend(two);
    out.dedup();
}

/// Searches the tick grid for the `last_trade_price` that reproduces the venue's hash (the price
/// of a trade the input does not hold): `""`, then every multiple of the tick size in (0, 1) as
/// [`grid_spellings`] spells it. None when nothing matches, or the tick size is not a decimal in
/// [0.001, 1) (at most 1000 prices).
fn search_ltp(j: &HashJob, tick: &RawValue, want: [u8; 20]) -> Option<Raw> {
    let t: &str = serde_json::from_str(tick.get()).ok()?;
    let step = Dec::parse(t.trim())?;
    let one = 10i128.pow(step.s);
    if step.m <= 0 || step.m >= one || step.m * 1000 < one {
        return None;
    }
    if j.with_ltp(b"\"\"") == want {
        return Some(raw_str(""));
    }
    let mut tried: Vec<String> = Vec::with_capacity(4);
    let mut quoted = String::with_capacity(16);
    for k in (1..).take_while(|k| k * step.m < one) {
        grid_spellings(step, k, &mut tried);
        for s in &tried {
            // Digits and a dot: the JSON text is the string in quotes.
            quoted.clear();
            quoted.push('"');
            quoted.push_str(s);
            quoted.push('"');
            if j.with_ltp(quoted.as_bytes()) == want {
                return Some(raw_str(s));
            }
        }
    }
    None
}

/// A settled state whose verdict waits for its SHA-1 from the hashing stage: what the verdict needs
/// of the state as it was when settled (the book goes on changing meanwhile). Verdicts are reached
/// in settle order ([`Rebuilder::resolve_front`]), before anything reads or changes what they
/// decide (the asset's trust, trade prices, the order of rows).
#[derive(Default)]
struct Deferred {
    asset: String,
    kind: Option<Pend>,
    /// The state's venue hash: None when it came without one; Some(None) when it is not 40 hex
    /// digits (no state reproduces it).
    want: Option<Option<[u8; 20]>>,
    /// A tick size was known (else the check is unverifiable).
    tick: bool,
    /// The `book` event that replaced the state has the same timestamp, hash and levels.
    confirmed: bool,
    /// Receive time of the line that completed the state (the untrusted span starts there).
    now_us: Option<i64>,
    /// The state's row, but for what the verdict decides (`last_trade_price`, `hash_ok`, flags).
    row: Option<Box<RowJob>>,
}

impl Deferred {
    /// The state was sent to the hashing stage (a tick size and a digest to compare with).
    fn hashed(&self) -> bool {
        self.tick && matches!(self.want, Some(Some(_)))
    }
}

/// What waits, in input order, for the verdicts settled before it: a settled state's verdict, or
/// a change of what verdicts read that must not reach the states settled before it.
enum Later {
    Verdict(Deferred),
    /// A `last_trade_price` event's price (asset, price): a candidate for the states after it.
    Trade(String, String),
    /// A `book` event's `last_trade_price` (when it has one) and the trust it restores.
    Book {
        asset: String,
        ltp: Option<Raw>,
        now_us: Option<i64>,
    },
}

impl Later {
    fn asset(&self) -> &str {
        match self {
            Later::Verdict(d) => &d.asset,
            Later::Trade(a, _) | Later::Book { asset: a, .. } => a,
        }
    }
}

/// What the verdict on a settled state needs besides its book: the deferred state, its SHA-1
/// (when hashed), the counters.
struct Verify<'v> {
    d: &'v Deferred,
    job: Option<&'v HashJob>,
    stats: &'v mut Stats,
}

impl Verify<'_> {
    /// The verdict on the state: its hash checked with the current and the seen trade prices, else
    /// (when allowed) the tick grid searched; sets `b.verified` and, on a match through another
    /// trade price, adopts it. None: the state came without a hash (no check).
    fn verdict(&mut self, b: &mut Book) -> Option<Tally> {
        let Some(want) = self.d.want else {
            self.stats.states_without_hash += 1;
            b.verified = None;
            return None;
        };
        let m = match (want, self.job) {
            _ if !self.d.tick => None,
            (Some(w), Some(j)) => Some(check(j, b, w)),
            _ => Some((false, None)),
        };
        let t = match m {
            None => Tally::Unverifiable(UNV_TICK_SIZE),
            Some((true, via)) => {
                b.ltp_known = true;
                if let Some(i) = via {
                    b.ltp = b.cands[i].clone();
                    b.cands.drain(..=i);
                    self.stats.matched_with_trade_price += 1;
                }
                Tally::Matched
            }
            Some((false, _)) => self.no_match(b),
        };
        b.verified = match t {
            Tally::Matched => Some(true),
            Tally::Mismatched => Some(false),
            Tally::Unverifiable(_) => None,
        };
        Some(t)
    }

    /// A state no known trade price reproduces: the price of a trade the input does not hold is
    /// searched on the tick grid — at most once per refresh or per trusted stretch, and only a
    /// SHA-1 match counts, so nothing is guessed — else the state is unverifiable when a field
    /// outside its levels is unknown (or the next `book` confirms its levels), and a mismatch
    /// otherwise.
    fn no_match(&mut self, b: &mut Book) -> Tally {
        let kind = self.d.kind.expect("a settled state");
        let search = match kind {
            Pend::Book { had_ltp, .. } => !had_ltp,
            Pend::Change => b.trusted && b.ltp_known,
        };
        if let (true, Some(j), Some(Some(want)), Some(tick)) = (search, self.job, self.d.want, b.tick_size.as_deref()) {
            if let Some(l) = search_ltp(j, tick, want) {
                b.ltp = l;
                b.ltp_known = true;
                self.stats.matched_with_inferred_trade_price += 1;
                return Tally::Matched;
            }
        }
        let unknown_field = match kind {
            Pend::Book { complete, had_ltp } => {
                if !had_ltp {
                    b.ltp_known = false;
                }
                (!complete).then_some(if had_ltp { UNV_TICK_SIZE } else { UNV_TRADE_PRICE })
            }
            Pend::Change => (!b.ltp_known || self.d.confirmed).then_some(UNV_TRADE_PRICE),
        };
        unknown_field.map_or(Tally::Mismatched, Tally::Unverifiable)
    }
}

/// The outcome of one hash check, for the counters.
#[derive(Clone, Copy, PartialEq)]
enum Tally {
    Matched,
    Mismatched,
    Unverifiable(&'static str),
}

// ---- The row thread: pm-normalize's row writer on the second core ----
//
// The rebuild (parse, apply, hash) runs on the calling thread; each row is a job for the row
// thread, which keeps its own copy of every book's levels (the level changes travel with the job,
// encoded in a byte buffer) and writes the rows in job order, so the output is the same bytes as
// when written inline.

/// A level change for the other threads' copies: `B`/`A` (bid/ask), price, size (length-prefixed).
fn put_set(ops: &mut Vec<u8>, side: u8, price: &str, size: &str) {
    ops.push(side);
    put_field(ops, price);
    put_field(ops, size);
}

/// A whole side for the row thread: `b`/`a`, the level count (u32), then price, size per level.
fn put_replace(ops: &mut Vec<u8>, side: u8, s: &Side) {
    ops.push(side);
    ops.extend_from_slice(&(s.levels.len() as u32).to_le_bytes());
    for l in &s.levels {
        put_field(ops, l.price());
        put_field(ops, l.size());
    }
}

/// A string, whole (u32 length: a line is at most 256 MiB, [`crate::jsonl::MAX_LINE`]).
fn put_field(ops: &mut Vec<u8>, f: &str) {
    ops.extend_from_slice(&(f.len() as u32).to_le_bytes());
    ops.extend_from_slice(f.as_bytes());
}

/// The next field of an encoding written by [`put_set`]/[`put_replace`] (only they write one).
fn take_field<'o>(ops: &'o [u8], at: &mut usize) -> &'o str {
    let n = u32::from_le_bytes(ops[*at..*at + 4].try_into().expect("4 bytes")) as usize;
    let f = &ops[*at + 4..*at + 4 + n];
    *at += 4 + n;
    debug_assert!(std::str::from_utf8(f).is_ok());
    // SAFETY: the bytes are a whole `&str` that `put_field` copied, at the offsets it wrote them
    // (a field is never cut: u32 lengths, lines are at most 256 MiB). Validating them again cost
    // the row and hashing threads ~5 % each.
    unsafe { std::str::from_utf8_unchecked(f) }
}

/// Applies encoded level changes to another thread's copy of a book (the row thread's, the hashing
/// stage's). Marks the [`SideMemo`] of each side an op touches stale (row thread).
fn apply_ops(ops: &[u8], bids: &mut Side, asks: &mut Side, mut memo: Option<&mut [SideMemo; 2]>) {
    let mut at = 0;
    while at < ops.len() {
        let tag = ops[at];
        at += 1;
        match tag {
            b'B' | b'A' => {
                let p = take_field(ops, &mut at);
                let z = take_field(ops, &mut at);
                let side = if tag == b'B' { &mut *bids } else { &mut *asks };
                if let Some(m) = memo.as_deref_mut() {
                    m[usize::from(tag != b'B')].stale();
                }
                // Applied on the rebuilding thread first, where a bad price was refused.
                side.set(tag == b'B', p, z);
            }
            _ => {
                let n = u32::from_le_bytes([ops[at], ops[at + 1], ops[at + 2], ops[at + 3]]) as usize;
                at += 4;
                let side = if tag == b'b' { &mut *bids } else { &mut *asks };
                if let Some(m) = memo.as_deref_mut() {
                    m[usize::from(tag != b'b')].stale();
                }
                let mut level = || (take_field(ops, &mut at), take_field(ops, &mut at));
                // Written from a side whose prices all parsed.
                side.replace((0..n).map(|_| Some(level())));
            }
        }
    }
}

/// One row of a rebuilt state.
#[derive(Default)]
struct RowJob {
    asset: String,
    ops: Vec<u8>,
    market: String,
    timestamp: String,
    hash: Option<String>,
    /// min_order_size, tick_size, neg_risk, last_trade_price as JSON text ("" = absent): buffers
    /// reused, no allocation per row.
    scalars: [String; 4],
    verified: Option<bool>,
    flags: u32,
    source: &'static str,
    recv: RecvBuf,
}

/// The row thread's copy of a book: its levels, and the hash-relevant scalars as raw values, read
/// back from their JSON text only when that text changes (not for every row).
struct RowBook {
    bids: Side,
    asks: Side,
    scalars: [(String, Option<Box<RawValue>>); 4],
    /// The row writer's findings on each side, kept while the side does not change.
    memo: [SideMemo; 2],
}

impl RowBook {
    fn new() -> RowBook {
        RowBook {
            bids: Side::new(Role::Rows),
            asks: Side::new(Role::Rows),
            scalars: Default::default(),
            memo: Default::default(),
        }
    }

    /// Takes a row job's scalars (JSON text, "" = absent: written from raw values, so they parse).
    fn set_scalars(&mut self, texts: &[String; 4]) {
        for ((have, raw), text) in self.scalars.iter_mut().zip(texts) {
            if have != text {
                have.clone_from(text);
                *raw = (!text.is_empty()).then(|| serde_json::from_str(text).ok()).flatten();
            }
        }
    }
}

/// An emptied vector of borrowed levels, as one of another lifetime: the row thread reuses the
/// allocation of its level views from row to row (collecting an emptied vector into one of the
/// same layout keeps the buffer).
fn recycle<'x>(mut v: Vec<parse::Level<'_>>) -> Vec<parse::Level<'x>> {
    // Forgotten, not dropped one by one: a view's levels only borrow (a Cow::Owned among them
    // would be leaked, never freed twice).
    // SAFETY: a length of 0 is within the capacity and leaves no element exposed.
    unsafe { v.set_len(0) };
    v.into_iter().map(|_| -> parse::Level<'x> { unreachable!("emptied") }).collect()
}

/// One row job: the level changes applied to the row thread's copy of the book, the row written
/// by pm-normalize's row writer.
fn book_row(
    nor: &mut Normalizer,
    books: &mut Assets<RowBook>,
    views: &mut [Vec<parse::Level<'static>>; 2],
    j: &mut RowJob,
    buf: &mut Vec<u8>,
) {
    let b = match books.get_mut(j.asset.as_str()) {
        Some(b) => b,
        None => books.entry(j.asset.clone()).or_insert_with(RowBook::new),
    };
    apply_ops(&j.ops, &mut b.bids, &mut b.asks, Some(&mut b.memo));
    j.ops.clear();
    b.set_scalars(&j.scalars);
    let [mut bv, mut av] = [0, 1].map(|i| recycle(std::mem::take(&mut views[i])));
    b.bids.view(&mut bv);
    b.asks.view(&mut av);
    let [mos, tick, neg, ltp] = &b.scalars;
    let view = parse::Book {
        market: Some(Cow::Borrowed(&j.market)),
        asset_id: Some(Cow::Borrowed(&j.asset)),
        timestamp: Some(Cow::Borrowed(&j.timestamp)),
        hash: j.hash.as_deref().map(Cow::Borrowed),
        bids: Some(bv),
        asks: Some(av),
        min_order_size: mos.1.as_deref(),
        tick_size: tick.1.as_deref(),
        neg_risk: neg.1.as_deref(),
        last_trade_price: ltp.1.as_deref(),
        error: None,
        unknown_fields: 0,
    };
    let pre = Pre { parsed: [b.bids.parsed.as_slice(), b.asks.parsed.as_slice()], memo: &mut b.memo };
    nor.state_row(&env_of(&j.recv, j.source), &view, Some(pre), j.verified, j.flags, buf);
    let parse::Book { bids, asks, .. } = view;
    *views = [bids, asks].map(|v| recycle(v.unwrap_or_default()));
}

/// The row of a REST reply in the stream: the reply's own book (owned), written as is.
struct RestJob {
    market: Option<String>,
    asset_id: Option<String>,
    timestamp: Option<String>,
    hash: Option<String>,
    bids: Option<Vec<(Option<String>, Option<String>)>>,
    asks: Option<Vec<(Option<String>, Option<String>)>>,
    scalars: [Option<Raw>; 4],
    error: Option<Raw>,
    unknown_fields: u32,
    recv: RecvBuf,
    hash_ok: Option<bool>,
}

impl RestJob {
    fn of(b: &parse::Book, recv: RecvBuf, hash_ok: Option<bool>) -> RestJob {
        let s = |c: &Option<Cow<str>>| c.as_deref().map(String::from);
        let side =
            |v: &Option<Vec<parse::Level>>| v.as_ref().map(|v| v.iter().map(|l| (s(&l.price), s(&l.size))).collect());
        RestJob {
            market: s(&b.market),
            asset_id: s(&b.asset_id),
            timestamp: s(&b.timestamp),
            hash: s(&b.hash),
            bids: side(&b.bids),
            asks: side(&b.asks),
            scalars: [b.min_order_size, b.tick_size, b.neg_risk, b.last_trade_price].map(|r| r.map(RawValue::to_owned)),
            error: b.error.map(RawValue::to_owned),
            unknown_fields: b.unknown_fields,
            recv,
            hash_ok,
        }
    }
}

enum Job {
    Row(Box<RowJob>),
    Rest(Box<RestJob>),
    /// A `track` line's context (the join).
    Track(String),
}

/// What the row thread reports at the end (pm-normalize's counts over the rows).
struct WriterStats {
    flags: BTreeMap<&'static str, u64>,
    unjoined_book_rows: u64,
}

/// Jobs travel in batches of this many (fewer thread wake-ups).
const BATCH: usize = 512;

struct Writer {
    tx: Sender<Vec<Job>>,
    /// Jobs not sent yet.
    batch: Vec<Job>,
    /// Row jobs written, back for reuse (a batch at a time).
    #[allow(clippy::vec_box)]
    back: Receiver<Vec<Box<RowJob>>>,
    handle: JoinHandle<io::Result<WriterStats>>,
}

impl Writer {
    fn start(opts: normalize::Options, markets: Vec<PathBuf>, out: Box<dyn Write + Send>) -> Writer {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<Job>>(64);
        let (back_tx, back) = crossbeam_channel::bounded::<Vec<Box<RowJob>>>(8);
        let handle = std::thread::Builder::new()
            .name("rebuild-rows".into())
            .spawn(move || write_rows(opts, &markets, rx, back_tx, out))
            .expect("a thread for the rows");
        Writer { tx, batch: Vec::with_capacity(BATCH), back, handle }
    }
}

fn env_of<'r>(recv: &'r RecvBuf, source: &'static str) -> parse::Env<'r> {
    parse::Env {
        venue: recv.venue.as_deref().map(Cow::Borrowed),
        run_id: recv.run_id.as_deref().map(Cow::Borrowed),
        seq: recv.seq,
        endpoint: Some(Cow::Borrowed(source)),
        collected_at_utc: recv.at.as_deref().map(Cow::Borrowed),
        ..Default::default()
    }
}

/// The row thread: pm-normalize's row writer over the jobs, in order; the jobs written go `back`
/// for reuse (boxed: a job moves through the channels as a pointer).
#[allow(clippy::vec_box)]
fn write_rows(
    opts: normalize::Options,
    markets: &[PathBuf],
    rx: Receiver<Vec<Job>>,
    back: Sender<Vec<Box<RowJob>>>,
    mut out: Box<dyn Write + Send>,
) -> io::Result<WriterStats> {
    let mut nor = Normalizer::new(opts);
    for m in markets {
        normalize::load_markets(&mut nor, m)?;
    }
    let mut books: Assets<RowBook> = Assets::default();
    let mut views = [Vec::new(), Vec::new()];
    let mut buf: Vec<u8> = Vec::with_capacity(OUT_CHUNK + (16 << 10));
    let mut used = Vec::with_capacity(BATCH);
    for batch in rx.iter() {
        for job in batch {
            if used.len() >= BATCH {
                let _ = back.try_send(std::mem::replace(&mut used, Vec::with_capacity(BATCH)));
            }
            match job {
                Job::Track(ctx) => {
                    nor.learn_track_ctx(&ctx);
                }
                Job::Row(mut j) => {
                    book_row(&mut nor, &mut books, &mut views, &mut j, &mut buf);
                    used.push(j);
                }
                Job::Rest(j) => {
                    fn c(s: &Option<String>) -> Option<Cow<'_, str>> {
                        s.as_deref().map(Cow::Borrowed)
                    }
                    #[allow(clippy::type_complexity)]
                    fn side(v: &Option<Vec<(Option<String>, Option<String>)>>) -> Option<Vec<parse::Level<'_>>> {
                        v.as_ref().map(|v| v.iter().map(|(p, z)| parse::Level { price: c(p), size: c(z) }).collect())
                    }
                    let [mos, tick, neg, ltp] = &j.scalars;
                    let view = parse::Book {
                        market: c(&j.market),
                        asset_id: c(&j.asset_id),
                        timestamp: c(&j.timestamp),
                        hash: c(&j.hash),
                        bids: side(&j.bids),
                        asks: side(&j.asks),
                        min_order_size: mos.as_deref(),
                        tick_size: tick.as_deref(),
                        neg_risk: neg.as_deref(),
                        last_trade_price: ltp.as_deref(),
                        error: j.error.as_deref(),
                        unknown_fields: j.unknown_fields,
                    };
                    nor.state_row(&env_of(&j.recv, SOURCE_WS_REST), &view, None, j.hash_ok, 0, &mut buf);
                }
            }
            if buf.len() >= OUT_CHUNK {
                out.write_all(&buf)?;
                buf.clear();
            }
        }
    }
    out.write_all(&buf)?;
    out.flush()?;
    Ok(WriterStats { flags: nor.stats.flags.clone(), unjoined_book_rows: nor.stats.unjoined_book_rows })
}

/// The rebuild state machine over a stream of raw lines.
pub struct Rebuilder {
    opts: Options,
    books: Assets<Book>,
    /// (min_order_size, neg_risk) from REST books, per asset.
    meta: Assets<(Raw, Raw)>,
    default_meta: (Raw, Raw),
    /// REST books are verified with pm-normalize's check; `--markets` are loaded into it first to
    /// report their bad lines (the row thread loads them again for its join).
    verifier: Normalizer,
    /// SHA-1 of the settled states (shared out when there is a hashing thread).
    hasher: HashStage,
    /// The role of the rebuilding thread's own copy: with a hashing thread it keeps the hash texts
    /// too, to hash states itself when that thread falls behind ([`HashStage::behind`]).
    role: Role,
    /// How many states were hashed here.
    hashed_here: u64,
    /// Settled states waiting for their verdict and what must follow them, in input order; emptied
    /// states for reuse.
    deferred: VecDeque<Later>,
    spare_deferred: Vec<Deferred>,
    /// The row thread (pm-normalize's row writer on the second core), started with the first line.
    writer: Option<Writer>,
    /// The row output until the row thread takes it.
    rows: Option<Box<dyn Write + Send>>,
    markets: Vec<PathBuf>,
    /// Row jobs back from the row thread, for reuse (boxed: a job moves through the channels as a
    /// pointer, not as its whole buffers' headers).
    #[allow(clippy::vec_box)]
    spare: Vec<Box<RowJob>>,
    trades: Option<TradesOut>,
    /// Sides replaced by full books, reused for the next ones (no allocation per level).
    spare_sides: Vec<Side>,
    pub stats: Stats,
    /// The file being read (its counters), if any.
    file: Option<FileStats>,
    /// Pending-state order counter.
    order: u64,
}

impl Rebuilder {
    pub fn new(opts: Options, rows: Box<dyn Write + Send>) -> Rebuilder {
        let default_meta = (raw(&opts.min_order_size), raw(&opts.neg_risk));
        let shared = opts.threads > 1 + usize::from(opts.write_rows);
        Rebuilder {
            verifier: Normalizer::new(opts.rows.clone()),
            opts,
            books: Assets::default(),
            meta: Assets::default(),
            default_meta,
            hasher: HashStage::new(shared),
            role: if shared { Role::Hash } else { Role::Plain },
            hashed_here: 0,
            deferred: VecDeque::new(),
            spare_deferred: Vec::new(),
            writer: None,
            rows: Some(rows),
            markets: Vec::new(),
            spare: Vec::new(),
            trades: None,
            spare_sides: Vec::new(),
            stats: Stats::default(),
            file: None,
            order: 0,
        }
    }

    /// Loads the slug/outcome join from a `--markets` file (before the first line): the number of
    /// records and the lines skipped ([`normalize::load_markets`]).
    pub fn load_markets(&mut self, path: &Path) -> io::Result<(usize, Vec<String>)> {
        let r = normalize::load_markets(&mut self.verifier, path)?;
        self.markets.push(path.to_path_buf());
        Ok(r)
    }

    /// A side no longer used (its buffers), for the next full book.
    fn spare_side(&mut self) -> Side {
        self.spare_sides.pop().unwrap_or_default()
    }

    /// Writes trade rows (`pmarchive.trade/1`) to `path` (before the first line), atomically:
    /// `path` appears complete when [`Rebuilder::finish`] returns, or not at all.
    pub fn trades_out(&mut self, path: &Path) -> io::Result<()> {
        let (file, f) = AtomicFile::create(path)?;
        self.trades = Some(TradesOut { file, w: io::BufWriter::new(f) });
        Ok(())
    }

    /// The row thread, started on first use (after `--markets` are loaded).
    fn writer(&mut self) -> &mut Writer {
        if self.writer.is_none() {
            let out = self.rows.take().expect("rows not taken yet");
            self.writer = Some(Writer::start(self.opts.rows.clone(), self.markets.clone(), out));
        }
        self.writer.as_mut().expect("started")
    }

    /// Hands a job to the row thread (in batches; `flush`: now); when that thread stopped (a
    /// write error), its error.
    fn send(&mut self, job: Option<Job>, flush: bool) -> io::Result<()> {
        let w = self.writer();
        w.batch.extend(job);
        if w.batch.len() < BATCH && !flush {
            return Ok(());
        }
        let batch = std::mem::replace(&mut w.batch, Vec::with_capacity(BATCH));
        if w.tx.send(batch).is_ok() {
            return Ok(());
        }
        let w = self.writer.take().expect("started");
        drop(w.tx);
        match w.handle.join() {
            Ok(Err(e)) => Err(e),
            _ => Err(io::Error::other("the row thread stopped")),
        }
    }

    /// Starts an input file: its checks and untrusted time are counted apart ([`Stats::files`]).
    pub fn start_file(&mut self, name: &str) -> io::Result<()> {
        self.end_file()?;
        self.file = Some(FileStats { file: name.to_string(), ..Default::default() });
        Ok(())
    }

    /// Ends the current file: settles its pending states, closes untrusted spans at its last
    /// receive time (they reopen at the next file's first), records its counters.
    pub fn end_file(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            return Ok(());
        }
        let mut pending: Vec<(u64, String)> =
            self.books.iter().filter(|(_, b)| b.pending.is_some()).map(|(a, b)| (b.order, a.clone())).collect();
        pending.sort_unstable();
        for (_, asset) in &pending {
            self.settle(asset, None)?;
        }
        self.resolve_all()?;
        let last = self.file.as_ref().and_then(|f| f.last_us);
        let spans: Vec<Option<i64>> =
            self.books.values_mut().filter(|b| !b.trusted).map(|b| b.untrusted_since_us.take()).collect();
        for since in spans {
            self.close_span(since, last);
        }
        let mut f = self.file.take().expect("checked");
        f.verified_rate = rate(f.matched, f.hash_checks);
        f.untrusted_s = (f.untrusted_s * 1e6).round() / 1e6;
        self.stats.files.push(f);
        Ok(())
    }

    /// Reads one input file (`-` = stdin; gzip or plain) line by line: a blank line is skipped, a line
    /// that is not UTF-8, over [`crate::jsonl::MAX_LINE`] or cut by a read error (a truncated gzip) counts
    /// as a bad line and is reported on stderr as FILE:LINE (at most 20 reports per run, `reported`);
    /// what was readable is kept.
    pub fn read_file(&mut self, f: &Path, reported: &mut u32) -> Result<(), ReadError> {
        let mut r = crate::jsonl::open_lines(f).map_err(ReadError::Open)?;
        self.start_file(&f.display().to_string()).map_err(ReadError::Output)?;
        while let Some(line) = r.next_line() {
            let n = r.line_no();
            let line = match line {
                Ok(Ok(l)) => l,
                Ok(Err(too_long)) => {
                    self.unreadable_line();
                    eprintln!("pm-rebuild: {}: {too_long}", f.display());
                    continue;
                }
                Err(e) => {
                    self.unreadable_line();
                    eprintln!("pm-rebuild: {}:{}: read error: {e}", f.display(), n + 1);
                    break;
                }
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let why = match std::str::from_utf8(&line) {
                Ok(text) => match self.line(text).map_err(ReadError::Output)? {
                    Ok(()) => continue,
                    Err(why) => why,
                },
                Err(e) => {
                    self.unreadable_line();
                    format!("not UTF-8: {e}")
                }
            };
            if *reported < 20 {
                eprintln!("pm-rebuild: {}:{n}: {why}", f.display());
                *reported += 1;
            }
        }
        self.end_file().map_err(ReadError::Output)
    }

    /// A line that could not be read at all (not UTF-8): counted like a bad line.
    pub fn unreadable_line(&mut self) {
        self.stats.lines += 1;
        self.stats.bad_lines += 1;
        if let Some(f) = self.file.as_mut() {
            f.lines += 1;
        }
    }

    /// Processes one raw line. Err: the line is unusable (reason); the caller reports it.
    pub fn line(&mut self, text: &str) -> io::Result<Result<(), String>> {
        self.stats.lines += 1;
        if self.file.is_none() {
            self.file = Some(FileStats { file: "-".into(), ..Default::default() });
        }
        if let Some(f) = self.file.as_mut() {
            f.lines += 1;
        }
        // The fast reader, else serde_json (the reference: same Line, and the error's text).
        let l: Line = match scan::line(text).map_or_else(|| serde_json::from_str(text), Ok) {
            Ok(l) => l,
            Err(e) => {
                self.stats.bad_lines += 1;
                return Ok(Err(format!("not a raw envelope: {e}")));
            }
        };
        let at = l.collected_at_utc.as_deref();
        let us = at.and_then(dec::parse_utc_micros);
        if let (Some(us), Some(f)) = (us, self.file.as_mut()) {
            f.first_us.get_or_insert(us);
            f.last_us = Some(us);
        }
        let recv = Recv {
            at,
            us,
            conn_id: l.ctx.as_ref().and_then(|c| c.conn_id),
            venue: l.venue.as_deref(),
            run_id: l.run_id.as_deref(),
            seq: l.seq,
        };
        match (l.kind.as_deref(), l.endpoint.as_deref()) {
            (Some("ws"), _) if l.ctx.as_ref().and_then(|c| c.event.as_deref()) == Some("frame") => {
                self.stats.ws_frames += 1;
                // By reference: a parsed line is some hundred bytes, not moved again.
                match (&l.body, l.body_text.as_deref()) {
                    (Some(f), _) => self.frame(f, &recv)?,
                    // Frames kept as text (multi-line JSON, or not JSON: PONG, NO NEW ASSETS).
                    (None, Some(t)) => match serde_json::from_str::<Frame>(t) {
                        Ok(f) => self.frame(&f, &recv)?,
                        Err(_) => self.stats.text_frames += 1,
                    },
                    (None, None) => self.stats.text_frames += 1,
                }
            }
            (Some("http"), Some("books" | "book")) if l.status == Some(200) => {
                let Ok(r) = serde_json::from_str::<RestLine>(text) else { return Ok(Ok(())) };
                let body = match (r.body, r.body_text.as_deref()) {
                    (Some(b), _) => Some(b),
                    (None, Some(t)) => serde_json::from_str::<parse::Body>(t).ok(),
                    (None, None) => None,
                };
                match body {
                    Some(parse::Body::Array(items)) => {
                        for it in &items {
                            match it {
                                parse::Item::Book(b) => self.rest_book(b, &recv)?,
                                // A book spoiled by a bad string (a lone surrogate): counted, the others go on.
                                parse::Item::NotObject | parse::Item::Unreadable(_) => self.stats.bad_events += 1,
                            }
                        }
                    }
                    Some(parse::Body::Object(b)) => self.rest_book(&b, &recv)?,
                    Some(parse::Body::Other) => self.stats.other_lines += 1,
                    Some(parse::Body::Unreadable(_)) => self.stats.bad_events += 1,
                    None => {}
                }
            }
            (Some("track"), _) => {
                self.stats.track_lines += 1;
                self.stats.other_lines += 1;
                if let (Ok(TrackLine { ctx: Some(ctx) }), true) =
                    (serde_json::from_str::<TrackLine>(text), self.opts.write_rows)
                {
                    self.resolve_all()?;
                    self.send(Some(Job::Track(ctx.get().to_string())), false)?;
                }
            }
            _ => self.stats.other_lines += 1,
        }
        Ok(Ok(()))
    }

    fn frame(&mut self, f: &Frame, recv: &Recv) -> io::Result<()> {
        match f {
            Frame::One(m) => self.event(m, recv),
            Frame::Many(ms) => {
                for m in ms {
                    self.event(m, recv)?;
                }
                Ok(())
            }
            Frame::Other => {
                self.stats.bad_events += 1;
                Ok(())
            }
        }
    }

    /// An event's `timestamp`: a string of Unix ms as sent, or a JSON number (counted, accepted).
    fn timestamp<'v>(&mut self, t: Option<&'v Ts>) -> Option<(Cow<'v, str>, i64)> {
        match t? {
            Ts::Str(s) => Some((Cow::Borrowed(s.as_ref()), s.parse().ok()?)),
            Ts::Num(n) => {
                self.stats.numeric_timestamps += 1;
                Some((Cow::Owned(n.to_string()), *n))
            }
            Ts::Other => None,
        }
    }

    fn event(&mut self, ev: &Msg, recv: &Recv) -> io::Result<()> {
        if !ev.object {
            self.stats.bad_events += 1;
            return Ok(());
        }
        let et = ev.event_type.as_deref().unwrap_or("(none)");
        match self.stats.ws_events.get_mut(et) {
            Some(n) => *n += 1,
            None => {
                self.stats.ws_events.insert(et.to_string(), 1);
            }
        }
        let ok = match et {
            "book" => self.ws_book(ev, recv)?,
            "price_change" if ev.price_changes.is_some() => self.price_change(ev, recv)?,
            "price_change" => self.legacy_price_change(ev, recv)?,
            "last_trade_price" => self.trade(ev, recv)?,
            "tick_size_change" => match (ev.asset_id.as_deref(), ev.new_tick_size) {
                (Some(a), Some(n)) => {
                    // The pending state was hashed with the tick size before the change.
                    self.settle(a, None)?;
                    self.resolve(a)?;
                    if let Some(b) = self.books.get_mut(a) {
                        b.tick_size = Some(n.to_owned());
                    }
                    true
                }
                _ => false,
            },
            _ => true,
        };
        if !ok {
            self.stats.bad_events += 1;
        }
        Ok(())
    }

    fn tally(&mut self, t: Tally) {
        self.stats.hash_checks += 1;
        let f = self.file.as_mut();
        let (g, fc) = match t {
            Tally::Matched => (&mut self.stats.hash_checks_matched, f.map(|f| &mut f.matched)),
            Tally::Mismatched => (&mut self.stats.hash_checks_mismatched, f.map(|f| &mut f.mismatched)),
            Tally::Unverifiable(why) => {
                *self.stats.unverifiable.entry(Cow::Borrowed(why)).or_default() += 1;
                (&mut self.stats.hash_checks_unverifiable, f.map(|f| &mut f.unverifiable))
            }
        };
        *g += 1;
        if let Some(c) = fc {
            *c += 1;
        }
        if let Some(f) = self.file.as_mut() {
            f.hash_checks += 1;
        }
    }

    /// Adds an untrusted span (from `since`, or the file's start, to `now`) to the totals.
    fn close_span(&mut self, since: Option<i64>, now: Option<i64>) {
        let first = self.file.as_ref().and_then(|f| f.first_us);
        let start = match (since, first) {
            (Some(s), Some(f)) => Some(s.max(f)),
            (s, f) => s.or(f),
        };
        if let (Some(s), Some(n)) = (start, now) {
            let d = (n - s).max(0) as f64 / 1e6;
            self.stats.untrusted_s += d;
            if let Some(f) = self.file.as_mut() {
                f.untrusted_s += d;
            }
        }
    }

    /// Marks an asset trusted again (only a full book does this); adds its untrusted time.
    fn retrust(&mut self, asset: &str, now_us: Option<i64>) -> bool {
        let Some(b) = self.books.get_mut(asset) else { return false };
        let was = !b.trusted;
        let since = b.untrusted_since_us.take();
        b.trusted = true;
        if was {
            self.close_span(since, now_us);
        }
        was
    }

    /// Makes the asset's current state pending: checked and written when its next event shows
    /// that no further message of the same state follows.
    fn pend(&mut self, asset: &str, kind: Pend, recv: &Recv) {
        self.order += 1;
        let b = self.books.get_mut(asset).expect("present");
        b.pending = Some(kind);
        b.recv.set(recv);
        b.order = self.order;
    }

    /// Settles a pending state: what its verdict needs is taken now ([`Deferred`]), its hash text
    /// goes to the hashing stage, and the verdict (trust, counters, row) follows in settle order
    /// ([`Rebuilder::resolve_front`]). `next`: the `book` event about to replace the state, if that
    /// is what ends it.
    fn settle(&mut self, asset: &str, next: Option<&Next>) -> io::Result<()> {
        let Some(b) = self.books.get_mut(asset) else { return Ok(()) };
        let Some(kind) = b.pending.take() else { return Ok(()) };
        let mut d = self.spare_deferred.pop().unwrap_or_default();
        d.asset.clear();
        d.asset.push_str(asset);
        d.kind = Some(kind);
        d.want = b.hash.as_deref().map(venue_digest);
        d.tick = b.tick_size.is_some();
        d.confirmed = next.is_some_and(|n| {
            n.ts_ms == b.ts_ms
                && b.hash.as_deref() == Some(n.hash)
                && b.bids.same_levels(n.bids)
                && b.asks.same_levels(n.asks)
        });
        d.now_us = b.recv.view().us();
        b.deferred += 1;
        if let (true, Some(tick)) = (d.hashed(), b.tick_size.as_deref()) {
            let mut j = self.hasher.job();
            hash_fields(&mut j, asset, b, tick, meta_of(&self.meta, &self.default_meta, asset));
            let here = self.hasher.behind(self.opts.steal_after);
            if here {
                self.hashed_here += 1;
                let text = self.hasher.here_text();
                j.write_text(text, |o| o.extend_from_slice(b.bids.text()), |o| o.extend_from_slice(b.asks.text()));
            }
            // The level changes since the asset's previous job go with it.
            std::mem::swap(&mut j.ops, &mut b.hops);
            b.hops.clear();
            if here {
                self.hasher.push_here(j);
            } else {
                self.hasher.push(j);
            }
        } else if b.hops.len() > MAX_HOPS {
            // States that are not hashed leave their changes queued for the next that is: past
            // this size they are replaced by the whole book (no growth without bound).
            b.hops.clear();
            put_replace(&mut b.hops, b'b', &b.bids);
            put_replace(&mut b.hops, b'a', &b.asks);
        }
        let recv = std::mem::take(&mut b.recv);
        d.row = self.row_job(asset, &recv.view(), SOURCE_WS, kind != Pend::Change);
        self.books.get_mut(asset).expect("present").recv = recv;
        self.deferred.push_back(Later::Verdict(d));
        // Without a hashing thread the verdict is reached at once (as before that thread existed).
        if self.deferred.len() > MAX_DEFERRED || !self.hasher.threaded() {
            self.resolve_front()?;
        }
        self.resolve_ready()
    }

    /// Reaches the verdicts whose SHA-1 is there, oldest first, up to the first that waits.
    fn resolve_ready(&mut self) -> io::Result<()> {
        while let Some(l) = self.deferred.front() {
            if matches!(l, Later::Verdict(d) if d.hashed()) && !self.hasher.ready() {
                break;
            }
            self.resolve_front()?;
        }
        Ok(())
    }

    /// Queues what must wait for the asset's verdicts settled before it.
    fn later(&mut self, l: Later) {
        if let Some(b) = self.books.get_mut(l.asset()) {
            b.deferred += 1;
        }
        self.deferred.push_back(l);
    }

    /// Takes the oldest entry of [`Rebuilder::later`]'s queue: a verdict (its SHA-1 from the
    /// hashing stage: checks, trust, counters, its row to the row thread), a trade price, a book's.
    fn resolve_front(&mut self) -> io::Result<()> {
        let Some(l) = self.deferred.pop_front() else { return Ok(()) };
        if let Some(b) = self.books.get_mut(l.asset()) {
            b.deferred -= 1;
        }
        match l {
            Later::Verdict(d) => self.verdict(d),
            Later::Trade(asset, price) => {
                self.add_trade_price(&asset, &price);
                Ok(())
            }
            Later::Book { asset, ltp, now_us } => {
                self.ws_book_trust(&asset, ltp, now_us);
                Ok(())
            }
        }
    }

    /// The verdict on a settled state: checks, trust, counters, and its row to the row thread.
    fn verdict(&mut self, mut d: Deferred) -> io::Result<()> {
        let job = d.hashed().then(|| self.hasher.next());
        let b = self.books.get_mut(d.asset.as_str()).expect("a settled asset");
        let tally = Verify { d: &d, job: job.as_deref(), stats: &mut self.stats }.verdict(b);
        if let Some(t) = tally {
            let trusted = b.trusted;
            self.count_settled(&d.asset, t, d.kind != Some(Pend::Change), trusted, d.now_us);
        }
        let r = match d.row.take() {
            Some(mut row) => {
                let b = self.books.get(d.asset.as_str()).expect("present");
                row.scalars[3].clear();
                row.scalars[3].push_str(b.ltp.get());
                row.verified = b.verified;
                row.flags = if b.trusted { 0 } else { normalize::UNTRUSTED };
                self.send(Some(Job::Row(row)), false)
            }
            None => Ok(()),
        };
        if let Some(j) = job {
            self.hasher.recycle(j);
        }
        self.spare_deferred.push(d);
        r
    }

    /// Reaches every verdict of the asset still waiting (and those settled before them): before its
    /// trust, trade prices or tick size change, or are read.
    fn resolve(&mut self, asset: &str) -> io::Result<()> {
        while self.books.get(asset).is_some_and(|b| b.deferred > 0) {
            self.resolve_front()?;
        }
        Ok(())
    }

    /// Reaches every verdict still waiting: before a row that is not a settled state's, at the end
    /// of a file.
    fn resolve_all(&mut self) -> io::Result<()> {
        while !self.deferred.is_empty() {
            self.resolve_front()?;
        }
        Ok(())
    }

    /// Counts a settled state's check; a mismatch on a trusted book makes it untrusted (from `now_us`).
    fn count_settled(&mut self, asset: &str, t: Tally, is_book: bool, trusted: bool, now_us: Option<i64>) {
        self.tally(t);
        if is_book {
            match t {
                Tally::Matched => self.stats.ws_book_hash_matched += 1,
                Tally::Mismatched => self.stats.ws_book_hash_mismatched += 1,
                Tally::Unverifiable(_) => self.stats.ws_book_hash_unverifiable += 1,
            }
            return;
        }
        let a = asset_stats(&mut self.stats.assets, asset);
        match t {
            Tally::Matched => {
                a.matched += 1;
                self.stats.hashes_matched += 1;
                if !trusted {
                    self.stats.matches_while_untrusted += 1;
                }
            }
            Tally::Unverifiable(_) => a.unverifiable += 1,
            Tally::Mismatched => {
                a.mismatched += 1;
                if trusted {
                    self.stats.hashes_mismatched += 1;
                    let b = self.books.get_mut(asset).expect("present");
                    b.trusted = false;
                    b.untrusted_since_us = now_us;
                } else {
                    self.stats.mismatches_while_untrusted += 1;
                }
            }
        }
    }

    fn ws_book(&mut self, ev: &Msg, recv: &Recv) -> io::Result<bool> {
        let (Some(asset), Some(market), Some(hash)) =
            (ev.asset_id.as_deref(), ev.market.as_deref(), ev.hash.as_deref())
        else {
            return Ok(false);
        };
        let (Some(bids), Some(asks)) = (
            ev.bids.as_deref().and_then(|l| Side::from_wire(l, self.spare_side(), self.role)),
            ev.asks.as_deref().and_then(|l| Side::from_wire(l, self.spare_side(), self.role)),
        ) else {
            return Ok(false);
        };
        let Some((ts, ts_ms)) = self.timestamp(ev.timestamp.as_ref()) else { return Ok(false) };
        let (tick, ltp) = (ev.tick_size.map(RawValue::to_owned), ev.last_trade_price.map(RawValue::to_owned));
        self.ws_book_state(asset, Full { market, ts: &ts, ts_ms, bids, asks, tick, ltp }, hash, recv)?;
        Ok(true)
    }

    /// A `book` event: the asset's full state. `tick_size`/`last_trade_price` missing (refreshes
    /// after a trade) are carried over from the current state; trade prices seen stay candidates.
    fn ws_book_state(&mut self, asset: &str, f: Full, hash: &str, recv: &Recv) -> io::Result<()> {
        self.stats.ws_books += 1;
        if f.tick.is_none() {
            self.stats.books_without_tick_size += 1;
        }
        if f.ltp.is_none() {
            self.stats.books_without_last_trade_price += 1;
        }
        self.settle(asset, Some(&Next { ts_ms: f.ts_ms, hash, bids: &f.bids, asks: &f.asks }))?;
        // A tick size search of a state waiting for its verdict reads the tick size (rarely changed).
        let (old, new) = (self.books.get(asset).and_then(|b| b.tick_size.as_deref()), f.tick.as_deref());
        if new.is_some_and(|n| old.is_some_and(|o| o.get() != n.get())) {
            self.resolve(asset)?;
        }
        let pend = Pend::Book { complete: f.tick.is_some() && f.ltp.is_some(), had_ltp: f.ltp.is_some() };
        let default_tick = self.opts.tick_size.as_ref().map(raw);
        let mut f = f;
        let ltp = f.ltp.take();
        self.set_book(asset, f, Some(hash), default_tick);
        let now_us = recv.us();
        if self.books.get(asset).is_some_and(|b| b.deferred > 0) {
            self.later(Later::Book { asset: asset.to_string(), ltp, now_us });
        } else {
            self.ws_book_trust(asset, ltp, now_us);
        }
        asset_stats(&mut self.stats.assets, asset);
        self.pend(asset, pend, recv);
        Ok(())
    }

    /// A `book` event's `last_trade_price` (when it has one) becomes the asset's, and the asset is
    /// trusted again: a full book is a known set of levels, verified or not.
    fn ws_book_trust(&mut self, asset: &str, ltp: Option<Raw>, now_us: Option<i64>) {
        self.set_ltp(asset, ltp);
        if self.retrust(asset, now_us) {
            self.stats.resyncs_ws_book += 1;
        }
    }

    fn set_ltp(&mut self, asset: &str, ltp: Option<Raw>) {
        if let (Some(l), Some(b)) = (ltp, self.books.get_mut(asset)) {
            b.ltp = l;
            b.ltp_known = true;
        }
    }

    /// Sets an asset's state from a full book (a `book` event or a REST book; a new asset starts
    /// trusted). A missing `tick_size` keeps the current one (else `default_tick`), a missing
    /// `last_trade_price` the current one; the level changes go to the row thread as whole sides.
    fn set_book(&mut self, asset: &str, f: Full, hash: Option<&str>, default_tick: Option<Raw>) {
        if !self.books.contains_key(asset) {
            self.books.insert(asset.to_string(), Book::new(self.role));
        }
        let b = self.books.get_mut(asset).expect("present");
        b.market.clear();
        b.market.push_str(f.market);
        b.timestamp.clear();
        b.timestamp.push_str(f.ts);
        b.ts_ms = f.ts_ms;
        let old = [std::mem::replace(&mut b.bids, f.bids), std::mem::replace(&mut b.asks, f.asks)];
        self.spare_sides.extend(old);
        if f.tick.is_some() {
            b.tick_size = f.tick;
        } else if b.tick_size.is_none() {
            b.tick_size = default_tick;
        }
        put_opt_string(&mut b.hash, hash);
        b.hops.clear();
        put_replace(&mut b.hops, b'b', &b.bids);
        put_replace(&mut b.hops, b'a', &b.asks);
        if self.opts.write_rows {
            b.ops.extend_from_slice(&b.hops);
        }
    }

    /// A REST book in the stream: verified as pm-normalize verifies it (same `hash_ok`, missing
    /// fields → unverifiable), its row written from the reply itself; newer than the rebuilt state
    /// (or at the same exchange time and disagreeing, or the book untrusted) it replaces it.
    fn rest_book(&mut self, rb: &parse::Book, recv: &Recv) -> io::Result<()> {
        let (Some(asset), Some(market), Some(ts)) =
            (rb.asset_id.as_deref(), rb.market.as_deref(), rb.timestamp.as_deref())
        else {
            self.stats.bad_events += 1;
            return Ok(());
        };
        let (Some(bids), Some(asks), Ok(ts_ms)) = (
            rb.bids.as_deref().and_then(|l| Side::from_wire(l, self.spare_side(), self.role)),
            rb.asks.as_deref().and_then(|l| Side::from_wire(l, self.spare_side(), self.role)),
            ts.parse::<i64>(),
        ) else {
            self.stats.bad_events += 1;
            return Ok(());
        };
        self.stats.rest_books += 1;
        let rest_ok = self.verifier.verify_hash(rb);
        let (t, n) = match rest_ok {
            Some(true) => (Tally::Matched, &mut self.stats.rest_hash_matched),
            Some(false) => (Tally::Mismatched, &mut self.stats.rest_hash_mismatched),
            None => (Tally::Unverifiable(UNV_REST_FIELDS), &mut self.stats.rest_hash_unverifiable),
        };
        *n += 1;
        self.tally(t);
        if let (Some(m), Some(n)) = (rb.min_order_size, rb.neg_risk) {
            self.meta.insert(asset.to_string(), (m.to_owned(), n.to_owned()));
        }
        self.settle(asset, None)?;
        // The verdicts before it first: the cross-check reads the asset's trade price and trust,
        // and this row follows theirs.
        self.resolve_all()?;
        if !self.rest_applies(asset, ts_ms, rb.hash.as_deref()) {
            return Ok(());
        }
        let (tick, ltp) = (rb.tick_size.map(RawValue::to_owned), rb.last_trade_price.map(RawValue::to_owned));
        self.set_book(asset, Full { market, ts, ts_ms, bids, asks, tick, ltp: None }, rb.hash.as_deref(), None);
        self.set_ltp(asset, ltp);
        self.books.get_mut(asset).expect("present").verified = rest_ok;
        if self.retrust(asset, recv.us()) {
            self.stats.resyncs_rest += 1;
        }
        asset_stats(&mut self.stats.assets, asset);
        // The row is the reply's own book (as pm-normalize writes it; only `source` differs).
        if self.opts.write_rows {
            self.books.get_mut(asset).expect("present").last_row_ms = Some(ts_ms);
            let mut r = RecvBuf::default();
            r.set(recv);
            self.stats.rows += 1;
            self.send(Some(Job::Rest(Box::new(RestJob::of(rb, r, rest_ok)))), false)?;
        }
        Ok(())
    }

    /// Whether a REST book at `ts_ms` replaces the rebuilt state: it does for a new asset and when
    /// newer; at the same exchange instant the rebuilt book must equal the snapshot (cross-check),
    /// and it replaces it when they disagree or the book is untrusted; an older one is stale.
    fn rest_applies(&mut self, asset: &str, ts_ms: i64, hash: Option<&str>) -> bool {
        let Some(b) = self.books.get(asset) else { return true };
        if ts_ms > b.ts_ms {
            return true;
        }
        if ts_ms < b.ts_ms {
            self.stats.rest_stale += 1;
            return false;
        }
        let meta = meta_of(&self.meta, &self.default_meta, asset);
        let agree = match (hash.and_then(venue_digest), b.tick_size.as_deref()) {
            (Some(want), Some(tick)) => {
                let mut j = self.hasher.job();
                hash_fields(&mut j, asset, b, tick, meta);
                let mut text = Vec::new();
                j.write_text(&mut text, |o| b.bids.put_text(o), |o| b.asks.put_text(o));
                let j = j.hashed_now(&text);
                let (ok, _) = check(&j, b, want);
                self.hasher.recycle(j);
                ok
            }
            _ => false,
        };
        if agree {
            self.stats.cross_checks_agree += 1;
        } else {
            self.stats.cross_checks_disagree += 1;
        }
        // An untrusted book is resynced by the snapshot even when they agree.
        !agree || !b.trusted
    }

    fn price_change(&mut self, ev: &Msg, recv: &Recv) -> io::Result<bool> {
        let Some(entries) = ev.price_changes.as_deref() else { return Ok(false) };
        let Some((ts, ts_ms)) = self.timestamp(ev.timestamp.as_ref()) else { return Ok(false) };
        let mut all_ok = true;
        for e in entries {
            let (Some(asset), Some(price), Some(size), Some(side)) =
                (e.asset_id.as_deref(), e.price.as_deref(), e.size.as_deref(), e.side.as_deref())
            else {
                all_ok = false;
                continue;
            };
            all_ok &= self.change(asset, side, price, size, e.hash.as_deref(), &ts, ts_ms, recv)?;
        }
        Ok(all_ok)
    }

    fn legacy_price_change(&mut self, ev: &Msg, recv: &Recv) -> io::Result<bool> {
        let (Some(asset), Some(changes)) = (ev.asset_id.as_deref(), ev.changes.as_deref()) else {
            return Ok(false);
        };
        let Some((ts, ts_ms)) = self.timestamp(ev.timestamp.as_ref()) else { return Ok(false) };
        let mut all_ok = true;
        for c in changes {
            let (Some(p), Some(sz), Some(side)) = (c.price.as_deref(), c.size.as_deref(), c.side.as_deref()) else {
                all_ok = false;
                continue;
            };
            all_ok &= self.change(asset, side, p, sz, ev.hash.as_deref(), &ts, ts_ms, recv)?;
        }
        Ok(all_ok)
    }

    /// One price_change entry. A change with the same timestamp and hash as the asset's pending
    /// state continues it (one state); any other settles the pending state first. False: unusable.
    #[allow(clippy::too_many_arguments)]
    fn change(
        &mut self,
        asset: &str,
        side: &str,
        price: &str,
        size: &str,
        hash: Option<&str>,
        ts: &str,
        ts_ms: i64,
        recv: &Recv,
    ) -> io::Result<bool> {
        let Some(b) = self.books.get(asset) else {
            self.stats.changes_without_book += 1;
            return Ok(true);
        };
        let same = b.pending == Some(Pend::Change) && b.ts_ms == ts_ms && b.hash.as_deref() == hash;
        if !same {
            self.settle(asset, None)?;
        }
        let b = self.books.get_mut(asset).expect("present");
        let r = match side {
            "BUY" => b.bids.set(true, price, size),
            "SELL" => b.asks.set(false, price, size),
            _ => None,
        };
        if r.is_none() {
            return Ok(false);
        }
        // Encoded once, for the hashing stage's copy and the row thread's.
        let at = b.hops.len();
        put_set(&mut b.hops, if side == "BUY" { b'B' } else { b'A' }, price, size);
        if self.opts.write_rows {
            b.ops.extend_from_slice(&b.hops[at..]);
        }
        if b.timestamp != ts {
            b.timestamp.clear();
            b.timestamp.push_str(ts);
        }
        b.ts_ms = ts_ms;
        put_opt_string(&mut b.hash, hash);
        if same {
            self.stats.changes_merged += 1;
        }
        self.stats.changes_applied += 1;
        asset_stats(&mut self.stats.assets, asset).changes += 1;
        self.pend(asset, Pend::Change, recv);
        Ok(true)
    }

    fn trade(&mut self, ev: &Msg, recv: &Recv) -> io::Result<bool> {
        let (Some(asset), Some(price)) = (ev.asset_id.as_deref(), ev.price.as_deref()) else { return Ok(false) };
        let ms = self.timestamp(ev.timestamp.as_ref()).map(|(_, ms)| ms).unwrap_or(0);
        match self.books.get(asset) {
            Some(b) if b.deferred > 0 => self.later(Later::Trade(asset.to_string(), price.to_string())),
            _ => self.add_trade_price(asset, price),
        }
        self.stats.trades += 1;
        if let Some(t) = self.trades.as_mut() {
            serde_json::to_writer(&mut t.w, &trade_row(ev, asset, price, ms, recv))?;
            t.w.write_all(b"\n")?;
        }
        Ok(true)
    }

    /// A trade price becomes a candidate `last_trade_price` of the asset's next states.
    fn add_trade_price(&mut self, asset: &str, price: &str) {
        let Some(b) = self.books.get_mut(asset) else { return };
        b.cands.push(raw_str(price));
        // The REST/WS books sometimes carry a trailing zero ("0.430", facts §4.1).
        if let Some((_, frac)) = price.split_once('.') {
            if frac.len() < 3 {
                b.cands.push(raw_str(&format!("{price}{}", "0".repeat(3 - frac.len()))));
            }
        }
        if b.cands.len() > MAX_CANDIDATES {
            let cut = b.cands.len() - MAX_CANDIDATES;
            b.cands.drain(..cut);
        }
    }

    /// The row of the asset's rebuilt state (`pmarchive.orderbook/1` `book`, written by
    /// pm-normalize's row writer on the row thread), but for what the verdict decides; None when
    /// sampled out by `--every-ms` (`force` for full books) or without rows.
    fn row_job(&mut self, asset: &str, recv: &Recv, source: &'static str, force: bool) -> Option<Box<RowJob>> {
        if !self.opts.write_rows {
            return None;
        }
        let every = self.opts.every_ms;
        let b = self.books.get_mut(asset)?;
        if let (Some(every), Some(last), false) = (every, b.last_row_ms, force) {
            if b.ts_ms - last < every {
                return None;
            }
        }
        b.last_row_ms = Some(b.ts_ms);
        if let (true, Some(w)) = (self.spare.is_empty(), &self.writer) {
            while let Ok(v) = w.back.try_recv() {
                self.spare.extend(v);
            }
        }
        let mut job = self.spare.pop().unwrap_or_default();
        std::mem::swap(&mut job.ops, &mut b.ops);
        b.ops.clear();
        job.asset.clear();
        job.asset.push_str(asset);
        job.market.clear();
        job.market.push_str(&b.market);
        job.timestamp.clear();
        job.timestamp.push_str(&b.timestamp);
        put_opt_string(&mut job.hash, b.hash.as_deref());
        let (mos, neg) = meta_of(&self.meta, &self.default_meta, asset);
        for (dst, src) in job.scalars[..3].iter_mut().zip([Some(mos), b.tick_size.as_deref(), Some(neg)]) {
            dst.clear();
            dst.push_str(src.map_or("", RawValue::get));
        }
        job.source = source;
        job.recv.set(recv);
        self.stats.rows += 1;
        Some(job)
    }

    /// Ends the input: settles what is pending, closes untrusted spans, flags per asset; flushes.
    pub fn finish(&mut self) -> io::Result<Stats> {
        self.end_file()?;
        for (asset, b) in &self.books {
            self.stats.assets.entry(asset.clone()).or_default().trusted_at_end = b.trusted;
        }
        self.stats.untrusted_s = (self.stats.untrusted_s * 1e6).round() / 1e6;
        self.stats.verified_rate = rate(self.stats.hash_checks_matched, self.stats.hash_checks);
        if self.opts.write_rows {
            self.send(None, true)?;
        }
        if let Some(w) = self.writer.take() {
            drop(w.tx);
            let st = w.handle.join().map_err(|_| io::Error::other("the row thread panicked"))??;
            self.stats.row_flags = st.flags.into_iter().map(|(k, n)| (Cow::Borrowed(k), n)).collect();
            self.stats.unjoined_rows = st.unjoined_book_rows;
        }
        if let Some(t) = self.trades.take() {
            let f = t.w.into_inner().map_err(io::IntoInnerError::into_error)?;
            t.file.commit(f)?;
        }
        Ok(self.stats.clone())
    }

    /// True when the verification found a problem (a mismatch on a trusted book or a REST
    /// cross-check disagreement).
    pub fn found_problems(&self) -> bool {
        self.stats.hashes_mismatched > 0 || self.stats.cross_checks_disagree > 0
    }
}

impl Stats {
    /// One line for stderr.
    pub fn line(&self) -> String {
        let unv: Vec<String> = self.unverifiable.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "lines={} frames={} books(ws/rest)={}/{} changes={} (merged {}) hash_checks={} matched={} mismatched={} unverifiable={}{} verified_rate={} state hashes matched={} mismatched={} (+{} while untrusted; {} matches while untrusted) resyncs(book/rest)={}/{} untrusted_s={:.3} cross_checks agree={} disagree={} rows={} trades={} bad_lines={} bad_events={} numeric_timestamps={} changes_without_book={}",
            self.lines,
            self.ws_frames,
            self.ws_books,
            self.rest_books,
            self.changes_applied,
            self.changes_merged,
            self.hash_checks,
            self.hash_checks_matched,
            self.hash_checks_mismatched,
            self.hash_checks_unverifiable,
            if unv.is_empty() { String::new() } else { format!(" ({})", unv.join(" ")) },
            self.verified_rate.map_or("-".to_string(), |r| format!("{r:.4}")),
            self.hashes_matched,
            self.hashes_mismatched,
            self.mismatches_while_untrusted,
            self.matches_while_untrusted,
            self.resyncs_ws_book,
            self.resyncs_rest,
            self.untrusted_s,
            self.cross_checks_agree,
            self.cross_checks_disagree,
            self.rows,
            self.trades,
            self.bad_lines,
            self.bad_events,
            self.numeric_timestamps,
            self.changes_without_book
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_keep_wire_order() {
        // The hashing stage's copy (hash text) and the row thread's (parsed values) alike.
        for hashed in [true, false] {
            let role = if hashed { Role::Hash } else { Role::Rows };
            let prices = |s: &Side| s.levels.iter().map(|l| l.price().to_string()).collect::<Vec<_>>();
            let mut bids = Side::new(role);
            bids.set(true, "0.3", "10").unwrap();
            bids.set(true, "0.1", "5").unwrap();
            bids.set(true, "0.2", "7").unwrap();
            assert_eq!(prices(&bids), ["0.1", "0.2", "0.3"]);
            bids.set(true, "0.2", "0").unwrap();
            bids.set(true, "0.30", "11").unwrap();
            assert_eq!(
                bids.levels.iter().map(|l| (l.price(), l.size())).collect::<Vec<_>>(),
                [("0.1", "5"), ("0.3", "11")]
            );
            // The kept hash text or parsed values follow every change.
            if hashed {
                assert_eq!(bids.text(), br#"[{"price":"0.1","size":"5"},{"price":"0.3","size":"11"}]"#);
                assert!(bids.parsed.is_empty());
            } else {
                let want = [(Dec::parse("0.1"), Dec::parse("5")), (Dec::parse("0.3"), Dec::parse("11"))];
                assert_eq!(bids.parsed, want);
                assert!(bids.text().is_empty());
            }
            let mut asks = Side::new(role);
            asks.set(false, "0.5", "1").unwrap();
            asks.set(false, "0.9", "1").unwrap();
            asks.set(false, "0.7", "1").unwrap();
            assert_eq!(prices(&asks), ["0.9", "0.7", "0.5"]);
            // Removing an absent level is a no-op.
            asks.set(false, "0.6", "0").unwrap();
            assert_eq!(asks.levels.len(), 3);
            assert_eq!(asks.parsed.len(), if hashed { 0 } else { 3 });
        }
    }

    #[test]
    fn the_hash_copy_edits_its_side_text_in_place_as_a_full_render_writes_it() {
        // Inserts at the front, middle and end, size changes, removals down to empty, full books.
        let mut next = crate::util::test_rand(7);
        let mut side = Side::new(Role::Hash);
        let full = |s: &Side| {
            let mut t = Vec::new();
            s.put_text(&mut t);
            t
        };
        assert_eq!(side.text(), b"[]");
        for step in 0..3000 {
            if step % 500 == 499 {
                let levels = [("0.1", "5"), ("0.25", "7")];
                side.replace(levels.iter().map(|&(p, z)| Some((p, z)))).unwrap();
            } else {
                let price = format!("0.{:02}", 1 + next(12));
                let size = if next(3) == 0 { "0".to_string() } else { (1 + next(1000)).to_string() };
                side.set(true, &price, &size).unwrap();
            }
            assert_eq!(side.text(), full(&side), "step {step}");
        }
    }

    #[test]
    fn a_side_out_of_order_is_searched_level_by_level() {
        // A full book sent out of order is kept as sent; its levels are still found (not doubled).
        for role in [Role::Plain, Role::Hash, Role::Rows] {
            let mut bids = Side::new(role);
            let book = [("0.3", "1"), ("0.1", "2"), ("0.2", "3")];
            bids.replace(book.iter().map(|&(p, z)| Some((p, z)))).unwrap();
            bids.set(true, "0.1", "9").unwrap();
            bids.set(true, "0.2", "0").unwrap();
            bids.set(true, "0.25", "4").unwrap();
            let got: Vec<(&str, &str)> = bids.levels.iter().map(|l| (l.price(), l.size())).collect();
            assert_eq!(got, [("0.25", "4"), ("0.3", "1"), ("0.1", "9")], "{role:?}");
            // In order, the bisection finds the same levels.
            let mut asks = Side::new(role);
            for p in ["0.5", "0.9", "0.7", "0.6", "0.8"] {
                asks.set(false, p, "1").unwrap();
            }
            asks.set(false, "0.7", "0").unwrap();
            asks.set(false, "0.9", "2").unwrap();
            let got: Vec<(&str, &str)> = asks.levels.iter().map(|l| (l.price(), l.size())).collect();
            assert_eq!(got, [("0.9", "2"), ("0.8", "1"), ("0.6", "1"), ("0.5", "1")], "{role:?}");
        }
    }

    /// Rows written into memory (the row thread's output).
    #[derive(Clone, Default)]
    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// DERIVED frames of one asset: a `book`, then `n` changes, each with the venue's hash of the
    /// state after it (computed with the one hash routine over a model of the book).
    fn derived_frames(n: usize) -> Vec<String> {
        let (m, a) = ("0xabc", "123");
        let mut levels: BTreeMap<i128, (String, String, bool)> = BTreeMap::new();
        let mut next = crate::util::test_rand(11);
        let hash_of = |levels: &BTreeMap<i128, (String, String, bool)>, ts: &str| {
            let side = |buy: bool| levels.values().filter(move |l| l.2 == buy).map(|l| (l.0.as_str(), l.1.as_str()));
            bookhash::hash(&bookhash::HashInput {
                market: m,
                asset_id: a,
                timestamp: ts,
                bids: side(true).collect(),
                asks: side(false).collect::<Vec<_>>().into_iter().rev().collect(),
                min_order_size: &Value::from("5"),
                tick_size: &Value::from("0.01"),
                neg_risk: &Value::Bool(false),
                last_trade_price: &Value::from("0.5"),
            })
        };
        for c in 1..=40 {
            let p = format!("0.{c:02}");
            levels.insert(price_key(Dec::parse(&p).unwrap()), (p, "10".into(), c <= 20));
        }
        let env = |i: usize, body: String| {
            format!(
                r#"{{"kind":"ws","seq":{i},"collected_at_utc":"2026-11-24T00:00:00.000000Z","ctx":{{"event":"frame"}},"body":{body}}}"#
            )
        };
        let side_json = |levels: &BTreeMap<i128, (String, String, bool)>, buy: bool| {
            let mut v: Vec<Value> = levels
                .values()
                .filter(|l| l.2 == buy)
                .map(|l| serde_json::json!({"price": l.0, "size": l.1}))
                .collect();
            if !buy {
                v.reverse();
            }
            Value::Array(v)
        };
        let t0 = 1795708800000i64;
        let book = serde_json::json!({"event_type": "book", "market": m, "asset_id": a, "timestamp": t0.to_string(),
            "hash": hash_of(&levels, &t0.to_string()), "bids": side_json(&levels, true), "asks": side_json(&levels, false),
            "tick_size": "0.01", "last_trade_price": "0.5"});
        let mut out = vec![env(0, book.to_string())];
        for i in 1..=n {
            let c = 1 + next(40);
            let p = format!("0.{c:02}");
            let size = if next(4) == 0 { "0".to_string() } else { (1 + next(500)).to_string() };
            let key = price_key(Dec::parse(&p).unwrap());
            if size == "0" {
                levels.remove(&key);
            } else {
                levels.insert(key, (p.clone(), size.clone(), c <= 20));
            }
            let ts = (t0 + i as i64).to_string();
            let side = if c <= 20 { "BUY" } else { "SELL" };
            let body = serde_json::json!({"event_type": "price_change", "market": m, "timestamp": ts, "price_changes": [
                {"asset_id": a, "price": p, "size": size, "side": side, "hash": hash_of(&levels, &ts)}]});
            out.push(env(i, body.to_string()));
        }
        out
    }

    #[test]
    fn states_hashed_on_the_rebuilding_thread_give_the_same_rows_and_verdicts() {
        // `steal_after` 0: the rebuilding thread hashes states itself from its own copy whenever a
        // batch waits at the hashing thread (timing decides which ones; the output may not).
        let lines = derived_frames(3000);
        let run = |threads: usize| {
            let sink = Sink::default();
            let opts = Options { threads, steal_after: 0, ..Options::default() };
            let mut r = Rebuilder::new(opts, Box::new(sink.clone()));
            for l in &lines {
                r.line(l).unwrap().unwrap();
            }
            let stats = r.finish().unwrap();
            let rows = sink.0.lock().unwrap().clone();
            (stats, rows, r.hashed_here)
        };
        let (one, rows_one, _) = run(1);
        let (three, rows_three, here) = run(3);
        assert_eq!((one.hash_checks, one.hash_checks_matched), (3001, 3001));
        assert!(here > 0, "no state was hashed on the rebuilding thread");
        assert!(here < 3001, "every state was hashed on the rebuilding thread");
        assert_eq!(serde_json::to_value(&one).unwrap(), serde_json::to_value(&three).unwrap());
        assert!(rows_one == rows_three, "rows differ");
    }

    #[test]
    fn price_levels_are_exact_decimals_never_f64() {
        let mut bids = Side::new(Role::Plain);
        let levels =
            |s: &Side| s.levels.iter().map(|l| (l.price().to_string(), l.size().to_string())).collect::<Vec<_>>();
        let pair = |p: &str, z: &str| (p.to_string(), z.to_string());
        bids.set(true, "0.1", "5").unwrap();
        // One f64, two prices: two levels, in order.
        bids.set(true, "0.100000000000000001", "7").unwrap();
        // "0.10" is the price 0.1: it sets that level (which keeps its first spelling).
        bids.set(true, "0.10", "6").unwrap();
        assert_eq!(levels(&bids), [pair("0.1", "6"), pair("0.100000000000000001", "7")]);
        // 0.1 + 0.2 in f64 is its own price, above 0.3.
        bids.set(true, "0.30000000000000004", "2").unwrap();
        bids.set(true, "0.3", "1").unwrap();
        assert_eq!(bids.levels[2..].iter().map(|l| l.price()).collect::<Vec<_>>(), ["0.3", "0.30000000000000004"]);
        // An exact zero in any spelling removes a level; "0" of another price removes nothing.
        bids.set(true, "0.100000000000000001", "0.000").unwrap();
        bids.set(true, "0.2", "0").unwrap();
        assert_eq!(levels(&bids), [pair("0.1", "6"), pair("0.3", "1"), pair("0.30000000000000004", "2")]);
        // A price that is not a decimal is refused (the event is counted as bad), the side unchanged.
        assert!(bids.set(true, "1e-1", "3").is_none());
        assert!(bids.set(true, " 0.5", "3").is_none());
        assert_eq!(bids.levels.len(), 3);
    }

    #[test]
    fn tick_grid_prices_are_spelled_in_exact_arithmetic() {
        let mut v = Vec::new();
        let cent = Dec::parse("0.01").unwrap();
        grid_spellings(cent, 49, &mut v);
        assert_eq!(v, ["0.490", "0.49"]);
        grid_spellings(cent, 50, &mut v);
        assert_eq!(v, ["0.500", "0.5", "0.50"]);
        let milli = Dec::parse("0.001").unwrap();
        grid_spellings(milli, 5, &mut v);
        assert_eq!(v, ["0.005"]);
        grid_spellings(milli, 300, &mut v);
        assert_eq!(v, ["0.300", "0.3", "0.30"]);
        grid_spellings(Dec::parse("0.0001").unwrap(), 4900, &mut v);
        assert_eq!(v, ["0.4900", "0.49"]);
        // Hex of a venue hash: only 40 lowercase digits can match.
        assert_eq!(venue_digest(&"ab".repeat(20)), Some([0xab; 20]));
        assert_eq!(venue_digest(&"AB".repeat(20)), None);
        assert_eq!(venue_digest("ab"), None);
        let d = venue_digest("0123456789abcdef0123456789abcdeffedcba98").unwrap();
        assert_eq!(crate::util::hex(&d), "0123456789abcdef0123456789abcdeffedcba98");
        assert_eq!(venue_digest(&format!("{}g", "a".repeat(39))), None);
        assert_eq!(venue_digest(&format!("{} ", "a".repeat(39))), None);
    }

    #[test]
    fn a_frame_is_parsed_once_tolerating_wrong_types() {
        let line = r#"{"kind":"ws","body":[{"event_type":"price_change","market":"m","timestamp":17,"price_changes":[{"asset_id":"a","price":"0.5","size":"1","side":"BUY","hash":3},"junk"]},7],"ctx":{"event":"frame"}}"#;
        let l: Line = serde_json::from_str(line).unwrap();
        let Some(Frame::Many(ms)) = l.body else { panic!("array") };
        assert_eq!(ms.len(), 2);
        assert!(ms[0].object && !ms[1].object);
        assert!(matches!(ms[0].timestamp, Some(Ts::Num(17))));
        let e = ms[0].price_changes.as_ref().unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].price.as_deref(), Some("0.5"));
        assert!(e[0].hash.is_none() && e[1].asset_id.is_none());
        assert!(matches!(e[0].asset_id, Some(Cow::Borrowed("a"))), "borrowed from the line");
    }
}
