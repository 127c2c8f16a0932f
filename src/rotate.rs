//! jsonl-rotate's engine: a crash-safe writer of hourly (or any period) gzip JSONL archive files.
//!
//! Data path: a reader thread splits stdin into lines, checks each is JSON (counting, never dropping,
//! the ones that are not), notes each line's `collected_at_utc`, and sends batches of whole lines over
//! a bounded channel. The writer compresses them into one gzip member per file (a new member after
//! [`MEMBER_MAX_INPUT`] of input). Every `flush_every` (only when there are unflushed lines) the
//! deflate stream is sync-flushed (Z_SYNC_FLUSH: byte-aligned, ends with `00 00 ff ff`, the dictionary
//! is kept) and the new bytes are written, followed by a provisional end (an empty final deflate block
//! `03 00` and the CRC-32/length of the member so far), in one `write` at the end of the previous
//! flush point, then `sync_data`ed. So the `.partial` is a complete gzip file after every flush, and
//! at most `flush_every` of accepted lines live only in memory; the next flush overwrites the 10-byte
//! provisional end. When the clock leaves the file's period the file is sealed (member finished,
//! fsync, rename, fsync dir) even if no line arrives, and one `pmarchive.sealed/1` record is printed.
//! `member_per_flush` writes the older format instead (every flush a complete member with a fresh
//! dictionary; about 1.6-1.8x larger), kept for comparisons by the benchmarks.
//!
//! Recovery: a `.partial` left by a dead run holds complete gzip members followed by at most one torn
//! member (a write cut short, or garbage). [`recover_partial`] keeps the complete members as the final
//! file; of a torn member it keeps the bytes up to its last sync point (`00 00 ff ff` after which the
//! readable data ends in a whole line) and appends an end (`03 00`, CRC-32, length) so that it is a
//! valid member again; every byte after the readable prefix is kept, byte for byte, beside it as
//! `<final name>.unreadable-tail`. Nothing is deleted.
//!
//! Layout and records: docs/DATA_CONTRACT.md ("Archive layout", "Sealed-file record", "jsonl-rotate").

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use flate2::write::{DeflateEncoder, GzEncoder};
use flate2::{Compression, Crc};
use time::OffsetDateTime;

use crate::{clock, jsonl, signal, util};

pub use crate::layout::Sealed;
use crate::layout::{self, PARTIAL_SUFFIX, SEALED_RECORD, SEALED_SCHEMA, TAIL_SUFFIX, TAIL_TMP_SUFFIX};

/// A member is finished (and a new one started) when this much input went into it: bounds the work
/// of recovering a torn member, and costs one fresh dictionary per 64 MiB.
const MEMBER_MAX_INPUT: u64 = 64 << 20;
/// Default of [`Config::flush_bytes`]: with it, memory holds at most this much unflushed input.
pub const FLUSH_BYTES: u64 = 64 << 20;
/// Default gzip level. zlib-rs (flate2's backend here; zlib-ng's level table) compresses levels 3-6
/// with a faster "medium" matcher that misses most matches one 20-25 kB book reply back; level 7 is
/// the first with the lazy "slow" matcher: 1.85x smaller than level 6 on the synthetic /books lines of
/// scripts/bench_rotate.sh at about the same CPU per MB (reports/bench_rotate_local_2026-12-01.txt).
pub const DEFAULT_LEVEL: u32 = 7;
/// The reader sends a batch when it holds this much, or when no more input is ready.
const BATCH_BYTES: usize = 1 << 20;
/// Batches in flight between the reader and the writer (backpressure beyond that).
const CHANNEL_BATCHES: usize = 32;
/// The writer looks at the clock and the signal flag at least this often.
const TICK: Duration = Duration::from_millis(200);
/// After SIGTERM/SIGINT, stdin is read until EOF or for this long.
pub const DRAIN_AFTER_SIGNAL: Duration = Duration::from_secs(5);
/// Invalid-JSON notes on stderr: the first this many, then every `INVALID_NOTE_EVERY`-th.
const INVALID_NOTES: u64 = 100;
const INVALID_NOTE_EVERY: u64 = 10_000;

/// What the writer needs to know.
#[derive(Clone, Debug)]
pub struct Config {
    pub root: PathBuf,
    pub venue: String,
    pub stream: String,
    pub host: String,
    pub run_id: String,
    /// Longest time an accepted line stays only in memory.
    pub flush_every: Duration,
    /// Length of a file's period in UTC epoch seconds (3600 = UTC hours).
    pub rotate_secs: u64,
    /// gzip level (0–9).
    pub level: u32,
    /// Also flush when this much accepted input is only in memory.
    pub flush_bytes: u64,
    /// The older format: every flush finishes the member (a fresh dictionary each time).
    pub member_per_flush: bool,
}

impl Config {
    /// `<root>/venue=<v>/stream=<s>`: everything this writer (and its recovery) touches.
    pub fn stream_dir(&self) -> PathBuf {
        layout::stream_dir(&self.root, &self.venue, &self.stream)
    }

    /// The period (index) an instant belongs to.
    pub fn period_of(&self, t: OffsetDateTime) -> i64 {
        t.unix_timestamp().div_euclid(self.rotate_secs as i64)
    }

    /// `<stream dir>/date=YYYY-MM-DD/hour=HH` of a period (from its start).
    pub fn period_dir(&self, period: i64) -> PathBuf {
        let start = clock::from_unix(period * self.rotate_secs as i64).expect("period start in range");
        self.stream_dir().join(layout::partition_dir(start))
    }
}

/// Our timestamp shape `2026-11-24T16:01:33.123456Z`, kept without allocation.
type Ts = [u8; 27];

/// Counts over a set of lines.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LineStats {
    pub rows: u64,
    pub invalid: u64,
    pub empty: u64,
    first: Option<Ts>,
    last: Option<Ts>,
}

impl LineStats {
    /// Adds another set of counts.
    pub fn merge(&mut self, o: &LineStats) {
        self.rows += o.rows;
        self.invalid += o.invalid;
        self.empty += o.empty;
        if let Some(t) = o.first {
            self.note_ts(&t);
        }
        if let Some(t) = o.last {
            self.note_ts(&t);
        }
    }

    fn note_ts(&mut self, t: &Ts) {
        // Fixed-width UTC timestamps sort as byte strings.
        if self.first.is_none_or(|f| *t < f) {
            self.first = Some(*t);
        }
        if self.last.is_none_or(|l| *t > l) {
            self.last = Some(*t);
        }
    }

    /// Counts one non-empty line (with or without its `\n`); returns whether it is valid JSON.
    pub fn add_line(&mut self, line: &[u8]) -> bool {
        self.rows += 1;
        if let Some(t) = collected_at(line) {
            self.note_ts(&t);
        }
        let ok = serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok();
        if !ok {
            self.invalid += 1;
        }
        ok
    }

    /// Earliest `collected_at_utc` seen.
    pub fn first(&self) -> Option<String> {
        self.first.map(|t| String::from_utf8_lossy(&t).into_owned())
    }

    /// Latest `collected_at_utc` seen.
    pub fn last(&self) -> Option<String> {
        self.last.map(|t| String::from_utf8_lossy(&t).into_owned())
    }
}

/// The first `"collected_at_utc":"…"` of a line, when it has our timestamp shape. A cheap byte
/// search, no parsing: envelopes carry the field before the body, so the search stops early.
pub fn collected_at(line: &[u8]) -> Option<Ts> {
    const KEY: &[u8] = b"\"collected_at_utc\":\"";
    let at = find(line, KEY)? + KEY.len();
    let v = line.get(at..at + 28)?;
    if v[27] != b'"' || !clock::is_canonical(&v[..27]) {
        return None;
    }
    let mut t = [0u8; 27];
    t.copy_from_slice(&v[..27]);
    Some(t)
}

/// Byte-string search (first occurrence).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let k = hay[i..=hay.len() - needle.len()].iter().position(|&b| b == first)?;
        i += k;
        if &hay[i + 1..i + needle.len()] == rest {
            return Some(i);
        }
        i += 1;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Reading stdin

/// Whole lines (each ending in `\n`) and their counts.
#[derive(Debug, Default)]
pub struct Batch {
    pub data: Vec<u8>,
    pub stats: LineStats,
}

/// What the reader thread sends.
#[derive(Debug)]
pub enum Input {
    Batch(Batch),
    /// End of input; with the read error when it was not a clean EOF.
    End(Option<io::Error>),
}

/// Starts the reader thread over `input`; returns the receiving end of its bounded channel.
pub fn spawn_reader<R: Read + Send + 'static>(input: R) -> Receiver<Input> {
    let (tx, rx) = crossbeam_channel::bounded(CHANNEL_BATCHES);
    std::thread::Builder::new()
        .name("stdin-reader".into())
        .spawn(move || read_lines(input, &tx))
        .expect("spawn reader thread");
    rx
}

/// Splits input into lines and sends batches: a batch goes out when it is large or when no more
/// input is ready without blocking, so a quiet stream is never held back.
fn read_lines<R: Read>(input: R, tx: &Sender<Input>) {
    let mut r = jsonl::LineReader::new(BufReader::with_capacity(BATCH_BYTES, input));
    let mut batch = Batch::default();
    loop {
        let start = batch.data.len();
        let n = match r.next_into(&mut batch.data) {
            Ok(jsonl::Next::Line) => r.line_no(),
            Ok(jsonl::Next::TooLong(t)) => {
                // The line is not kept (it would not fit in memory, and no reader could read it): a
                // pmarchive.skipped_line/1 record with its length and sha256 takes its place.
                TOO_LONG.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                eprintln!("jsonl-rotate: input {t}; a {} record takes its place", jsonl::SKIPPED_LINE_SCHEMA);
                serde_json::to_writer(&mut batch.data, &t.record("jsonl-rotate")).expect("serializes");
                batch.data.push(b'\n');
                t.line_no
            }
            Err(e) => {
                batch.data.truncate(start);
                send_batch(tx, &mut batch);
                let _ = tx.send(Input::End(Some(e)));
                return;
            }
            Ok(jsonl::Next::Eof) => {
                send_batch(tx, &mut batch);
                let _ = tx.send(Input::End(None));
                return;
            }
        };
        let line_no = n;
        let line = &batch.data[start..];
        if line.iter().all(u8::is_ascii_whitespace) {
            batch.data.truncate(start);
            batch.stats.empty += 1;
        } else {
            if !line.ends_with(b"\n") {
                batch.data.push(b'\n'); // the last line lacked its newline
            }
            if !batch.stats.add_line(&batch.data[start..]) {
                note_invalid(line_no, &batch.data[start..]);
            }
        }
        if (batch.data.len() >= BATCH_BYTES || r.get_ref().buffer().is_empty()) && !send_batch(tx, &mut batch) {
            return; // the writer is gone
        }
    }
}

/// Input lines longer than [`jsonl::MAX_LINE`] seen by this process (each replaced by a
/// `pmarchive.skipped_line/1` record); jsonl-rotate exits 1 when there were any.
static TOO_LONG: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many input lines were too long to archive (see [`TOO_LONG`]).
pub fn too_long_lines() -> u64 {
    TOO_LONG.load(std::sync::atomic::Ordering::Relaxed)
}

/// A stderr note for a line that is not JSON (rate-limited; every one is counted anyway).
fn note_invalid(line_no: u64, line: &[u8]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static TOTAL: AtomicU64 = AtomicU64::new(0);
    let k = TOTAL.fetch_add(1, Ordering::Relaxed) + 1;
    if k <= INVALID_NOTES || k.is_multiple_of(INVALID_NOTE_EVERY) {
        let err =
            serde_json::from_slice::<serde::de::IgnoredAny>(line).err().map(|e| e.to_string()).unwrap_or_default();
        let more = if k == INVALID_NOTES { " (further ones: every 10000th is noted; all are counted)" } else { "" };
        eprintln!("jsonl-rotate: input line {line_no}: not valid JSON, archived as is ({err}); {k} so far{more}");
    }
}

/// Sends a non-empty batch (or one carrying only empty-line counts); false when the writer is gone.
fn send_batch(tx: &Sender<Input>, batch: &mut Batch) -> bool {
    if batch.data.is_empty() && batch.stats == LineStats::default() {
        return true;
    }
    tx.send(Input::Batch(std::mem::take(batch))).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Sealed records out

/// Where sealed records go. A closed or failing stdout never stops archiving: records are then
/// only counted and a note goes to stderr once.
pub struct RecordOut<W: Write> {
    w: W,
    pub closed: bool,
    pub written: u64,
}

impl<W: Write> RecordOut<W> {
    pub fn new(w: W) -> Self {
        RecordOut { w, closed: false, written: 0 }
    }

    /// Writes one record line and flushes it.
    pub fn emit(&mut self, rec: &Sealed) {
        if self.closed {
            return;
        }
        let mut line = serde_json::to_vec(rec).expect("record serializes");
        line.push(b'\n');
        match self.w.write_all(&line).and_then(|_| self.w.flush()) {
            Ok(()) => self.written += 1,
            Err(e) => {
                self.closed = true;
                let why = if e.kind() == io::ErrorKind::BrokenPipe {
                    "closed by its reader".to_string()
                } else {
                    e.to_string()
                };
                eprintln!(
                    "jsonl-rotate: stdout {why}: files are still sealed, their records are no longer printed (first missed: {})",
                    rec.path
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writing

struct OpenFile {
    period: i64,
    n: u64,
    dir: PathBuf,
    final_path: PathBuf,
    partial_path: PathBuf,
    file: File,
    /// The member being written; None when the file ends after complete members.
    member: Option<Member>,
    /// Where the next bytes go: the end of the last flush point (a provisional end follows it).
    end: u64,
    /// Bytes in the file (`end` plus the provisional end, if any).
    len: u64,
    /// Input accepted since the last flush.
    unflushed: u64,
    /// When the oldest unflushed line must be on disk.
    flush_due: Option<Instant>,
    stats: LineStats,
    opened_at: String,
}

/// Totals of one writer run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub files: u64,
    pub stats: LineStats,
    pub recovered: u64,
    pub recovery_failures: u64,
}

/// The writer: owns at most one open file.
pub struct Writer<'a, W: Write> {
    cfg: &'a Config,
    out: &'a mut RecordOut<W>,
    next_n: u64,
    open: Option<OpenFile>,
    /// Empty-line counts seen while no file was open (given to the next file).
    carry: LineStats,
    pub summary: Summary,
}

impl<'a, W: Write> Writer<'a, W> {
    pub fn new(cfg: &'a Config, out: &'a mut RecordOut<W>) -> Self {
        Writer { cfg, out, next_n: 0, open: None, carry: LineStats::default(), summary: Summary::default() }
    }

    /// Runs until end of input (or a signal and then EOF / [`DRAIN_AFTER_SIGNAL`]), sealing on the
    /// clock and flushing on the cadence; seals the open file before returning.
    pub fn run(&mut self, rx: &Receiver<Input>) -> io::Result<()> {
        let mut stop_deadline: Option<Instant> = None;
        let mut read_error = None;
        loop {
            self.on_clock()?;
            if stop_deadline.is_none() && signal::stop_requested() {
                stop_deadline = Some(Instant::now() + DRAIN_AFTER_SIGNAL);
                eprintln!(
                    "jsonl-rotate: signal {}: reading stdin until EOF or {} s, then sealing",
                    signal::last_signal(),
                    DRAIN_AFTER_SIGNAL.as_secs()
                );
            }
            if stop_deadline.is_some_and(|d| Instant::now() >= d) {
                eprintln!(
                    "jsonl-rotate: stdin still open {} s after the signal; sealing and stopping",
                    DRAIN_AFTER_SIGNAL.as_secs()
                );
                // Lines already read off the pipe are accepted: they are ours now.
                while let Ok(Input::Batch(b)) = rx.try_recv() {
                    self.accept(b)?;
                }
                break;
            }
            match rx.recv_timeout(self.wait_time()) {
                Ok(Input::Batch(b)) => self.accept(b)?,
                Ok(Input::End(err)) => {
                    read_error = err;
                    break;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.seal()?;
        match read_error {
            Some(e) => Err(io::Error::new(e.kind(), format!("reading stdin: {e}"))),
            None => Ok(()),
        }
    }

    /// How long to wait for input before looking at the clock again.
    fn wait_time(&self) -> Duration {
        let mut wait = TICK;
        if let Some(due) = self.open.as_ref().and_then(|f| f.flush_due) {
            wait = wait.min(due.saturating_duration_since(Instant::now()));
        }
        if let (Some(f), false) = (&self.open, clock::is_simulated()) {
            // Real clock: wake right at the period's end.
            let end_ns = (f.period + 1) as i128 * self.cfg.rotate_secs as i128 * 1_000_000_000;
            let left_ns = end_ns - clock::now().unix_timestamp_nanos();
            wait = wait.min(Duration::from_nanos(left_ns.clamp(0, u64::MAX as i128) as u64));
        }
        wait
    }

    /// Time-driven work: seal when the period ended, flush when the oldest line is due.
    pub fn on_clock(&mut self) -> io::Result<()> {
        let period = self.cfg.period_of(clock::now());
        if self.open.as_ref().is_some_and(|f| f.period != period) {
            self.seal()?;
        }
        if let Some(f) = &mut self.open {
            if f.flush_due.is_some_and(|d| Instant::now() >= d) {
                flush(f, self.cfg.member_per_flush, true)?;
            }
        }
        Ok(())
    }

    /// Takes a batch: into the file of the current period (opened now if needed).
    pub fn accept(&mut self, b: Batch) -> io::Result<()> {
        if b.data.is_empty() {
            match &mut self.open {
                Some(f) => f.stats.merge(&b.stats),
                None => self.carry.merge(&b.stats),
            }
            return Ok(());
        }
        let period = self.cfg.period_of(clock::now());
        if self.open.as_ref().is_some_and(|f| f.period != period) {
            self.seal()?;
        }
        if self.open.is_none() {
            let mut f = self.open_file(period)?;
            f.stats.merge(&std::mem::take(&mut self.carry));
            self.open = Some(f);
        }
        let (level, flush_bytes) = (self.cfg.level, self.cfg.flush_bytes);
        let f = self.open.as_mut().expect("opened above");
        f.stats.merge(&b.stats);
        let mut data = &b.data[..];
        while !data.is_empty() {
            // Up to the end of the line that fills the flush window (`flush_bytes`), then flush.
            let room = flush_bytes.saturating_sub(f.unflushed).max(1) as usize;
            let cut = match data.get(room - 1..) {
                Some(after) => after.iter().position(|&c| c == b'\n').map_or(data.len(), |i| room + i),
                None => data.len(),
            };
            let (now, rest) = data.split_at(cut);
            data = rest;
            let member = f.member.get_or_insert_with(|| Member::new(level));
            member.write(now)?;
            let member_full = member.enc.total_in() >= MEMBER_MAX_INPUT;
            f.unflushed += now.len() as u64;
            if f.flush_due.is_none() {
                f.flush_due = Some(Instant::now() + self.cfg.flush_every);
            }
            if member_full || f.unflushed >= flush_bytes {
                flush(f, member_full || self.cfg.member_per_flush, true)?;
            }
        }
        Ok(())
    }

    /// Creates `<final name>.partial` for a period, with the first free `n`.
    fn open_file(&mut self, period: i64) -> io::Result<OpenFile> {
        let dir = self.cfg.period_dir(period);
        fs::create_dir_all(&dir)?;
        // Make the (maybe new) directory chain durable; once per file, cheap.
        let mut d = dir.clone();
        for _ in 0..4 {
            util::fsync_dir(&d)?;
            if !d.pop() {
                break;
            }
        }
        loop {
            let n = self.next_n;
            self.next_n += 1;
            let name = layout::file_name(&self.cfg.host, &self.cfg.run_id, n);
            let final_path = dir.join(&name);
            let partial_path = dir.join(format!("{name}{PARTIAL_SUFFIX}"));
            if final_path.exists() {
                continue; // never append to, nor replace, an existing file
            }
            match OpenOptions::new().write(true).create_new(true).open(&partial_path) {
                Ok(file) => {
                    return Ok(OpenFile {
                        period,
                        n,
                        dir,
                        final_path,
                        partial_path,
                        file,
                        member: None,
                        end: 0,
                        len: 0,
                        unflushed: 0,
                        flush_due: None,
                        stats: LineStats::default(),
                        opened_at: clock::fmt_micros(clock::now()),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("creating {}: {e}", partial_path.display()))),
            }
        }
    }

    /// Seals the open file (if any): last member, fsync, rename, fsync dir, record.
    pub fn seal(&mut self) -> io::Result<()> {
        let Some(mut f) = self.open.take() else { return Ok(()) };
        flush(&mut f, true, false)?;
        f.file.sync_all()?;
        drop(f.file);
        fs::rename(&f.partial_path, &f.final_path)?;
        util::fsync_dir(&f.dir)?;
        let (sha256, bytes) = util::sha256_file(&f.final_path)?;
        let rec = Sealed {
            record: SEALED_RECORD.into(),
            schema: Some(SEALED_SCHEMA.into()),
            path: layout::rel_path(&self.cfg.root, &f.final_path),
            venue: Some(self.cfg.venue.clone()),
            stream: Some(self.cfg.stream.clone()),
            host: Some(self.cfg.host.clone()),
            run_id: Some(self.cfg.run_id.clone()),
            n: Some(f.n),
            rows: Some(f.stats.rows),
            bytes: Some(bytes),
            sha256,
            first_collected_at_utc: f.stats.first(),
            last_collected_at_utc: f.stats.last(),
            opened_at_utc: Some(f.opened_at),
            sealed_at_utc: Some(clock::fmt_micros(clock::now())),
            recovered: false,
            adopted: false,
            tail_path: None,
            tail_bytes: 0,
            writer_version: Some(crate::VERSION.into()),
            invalid_lines: Some(f.stats.invalid),
            empty_lines: Some(f.stats.empty),
        };
        self.summary.files += 1;
        self.summary.stats.merge(&f.stats);
        self.out.emit(&rec);
        Ok(())
    }

    /// Empty-line counts never given to a file (input ended with no file open).
    pub fn unfiled(&self) -> &LineStats {
        &self.carry
    }
}

/// An open gzip member: its header and deflate output not yet on disk, and the CRC of its input.
struct Member {
    enc: DeflateEncoder<Vec<u8>>,
    crc: Crc,
}

impl Member {
    fn new(level: u32) -> Member {
        let mut buf = Vec::with_capacity(1 << 20);
        buf.extend_from_slice(&gzip_header(level));
        Member { enc: DeflateEncoder::new(buf, Compression::new(level)), crc: Crc::new() }
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.crc.update(data);
        self.enc.write_all(data)
    }
}

/// The 10-byte gzip header flate2's `GzEncoder` writes: no name, mtime 0, OS unknown (255).
fn gzip_header(level: u32) -> [u8; 10] {
    let xfl = match level {
        9.. => 2,
        0 | 1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
}

/// An empty final deflate block (fixed Huffman: BFINAL=1, BTYPE=01, end-of-block), valid after a
/// sync point (byte-aligned, between blocks); what zlib itself writes to finish a sync-flushed stream.
const EMPTY_FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// What ends a member whose deflate data stopped at a sync point: the empty final block, then the
/// gzip trailer (CRC-32 and length mod 2^32 of the data, little-endian).
fn member_end(crc: u32, len: u32) -> [u8; 10] {
    let mut e = [0u8; 10];
    e[..2].copy_from_slice(&EMPTY_FINAL_BLOCK);
    e[2..6].copy_from_slice(&crc.to_le_bytes());
    e[6..].copy_from_slice(&len.to_le_bytes());
    e
}

/// Puts every accepted line on disk with one positioned write at the last flush point (over its
/// provisional end). The open member gets a sync point and a new provisional end, or, when `close`,
/// is finished. `sync` makes the write durable now. After it the file is complete gzip members.
fn flush(f: &mut OpenFile, close: bool, sync: bool) -> io::Result<()> {
    f.unflushed = 0;
    f.flush_due = None;
    let Some(mut m) = f.member.take() else { return Ok(()) };
    if close {
        let (crc, len) = (m.crc.sum(), m.crc.amount());
        let mut bytes = m.enc.finish()?;
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(&len.to_le_bytes());
        write_at_end(f, &bytes, bytes.len())?;
    } else {
        m.enc.flush()?; // Z_SYNC_FLUSH: everything so far is decodable, the dictionary stays
        let end = member_end(m.crc.sum(), m.crc.amount());
        let bytes = m.enc.get_mut();
        let keep = bytes.len();
        bytes.extend_from_slice(&end);
        let res = write_at_end(f, bytes, keep);
        bytes.clear(); // the buffer is reused for the next flush's compressed bytes
        res?;
        f.member = Some(m);
    }
    if sync {
        f.file.sync_data()?;
    }
    Ok(())
}

/// Writes `bytes` at the last flush point; the first `keep` of them stay (the rest is a provisional end).
fn write_at_end(f: &mut OpenFile, bytes: &[u8], keep: usize) -> io::Result<()> {
    f.file.write_all_at(bytes, f.end)?;
    let written = f.end + bytes.len() as u64;
    if written < f.len {
        f.file.set_len(written)?; // not reached (a new end is never shorter than the old), a guard
    }
    f.len = written;
    f.end += keep as u64;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Recovery

/// Every `*.partial` under the stream directory (the layout's walk), sorted (dot-files and other
/// hosts' files are returned separately: they are left alone). A directory that cannot be read is an
/// error: recovery must not skip a dead run's file silently.
pub fn find_partials(cfg: &Config) -> io::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut ours, mut others) = (Vec::new(), Vec::new());
    let dir = cfg.stream_dir();
    if !dir.exists() {
        return Ok((ours, others));
    }
    let (files, errors) = layout::walk(&dir)?;
    if let Some(e) = errors.into_iter().next() {
        return Err(io::Error::other(e));
    }
    let prefix = format!("{}-", cfg.host);
    for f in files.into_iter().filter(|f| f.kind == layout::FileKind::Partial) {
        let name = f.abs.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        if name.starts_with(&prefix) {
            ours.push(f.abs);
        } else {
            others.push(f.abs);
        }
    }
    ours.sort();
    others.sort();
    Ok((ours, others))
}

/// A BufRead that counts the bytes consumed (to know where a gzip member ended).
struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: BufRead> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.pos += amt as u64;
        self.inner.consume(amt)
    }
}

/// Counts lines written into it (for a decoded member). A line longer than [`jsonl::MAX_LINE`] (not
/// one jsonl-rotate writes; a foreign file) is counted as a row that is not JSON without being held.
#[derive(Default)]
struct LineSink {
    stats: LineStats,
    pending: Vec<u8>,
    /// Inside an over-long line (already counted): bytes are dropped until its newline.
    skipping: bool,
    run_id: Option<String>,
}

impl LineSink {
    fn line(&mut self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        self.stats.add_line(line);
        if self.run_id.is_none() {
            self.run_id = string_field(line, b"\"run_id\":\"").filter(|s| util::is_safe_component(s));
        }
    }

    fn finish(mut self) -> Self {
        if !self.pending.is_empty() && !self.skipping {
            let p = std::mem::take(&mut self.pending);
            self.line(&p);
        }
        self
    }
}

impl Write for LineSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            if self.skipping {
                self.skipping = false;
            } else if self.pending.is_empty() {
                self.line(&rest[..=i]);
            } else {
                let mut p = std::mem::take(&mut self.pending);
                p.extend_from_slice(&rest[..=i]);
                self.line(&p);
            }
            rest = &rest[i + 1..];
        }
        if !self.skipping {
            self.pending.extend_from_slice(rest);
            if self.pending.len() > jsonl::MAX_LINE {
                self.stats.rows += 1;
                self.stats.invalid += 1;
                self.pending = Vec::new();
                self.skipping = true;
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A short JSON string field of a line, by byte search (no escapes expected).
fn string_field(line: &[u8], key: &[u8]) -> Option<String> {
    let at = find(line, key)? + key.len();
    let len = line[at..].iter().take(200).position(|&b| b == b'"')?;
    std::str::from_utf8(&line[at..at + len]).ok().map(str::to_string)
}

/// Where the readable prefix of a gzip file ends, and the counts of its lines.
pub struct Scan {
    pub good_bytes: u64,
    pub members: u64,
    pub stats: LineStats,
    pub run_id: Option<String>,
}

/// Walks the gzip members of a file, one at a time; stops at the first one that does not decode
/// completely (truncated, corrupt, bad CRC, garbage).
pub fn scan_members<R: Read>(input: R) -> io::Result<Scan> {
    let mut r = Counting { inner: BufReader::with_capacity(1 << 20, input), pos: 0 };
    let mut scan = Scan { good_bytes: 0, members: 0, stats: LineStats::default(), run_id: None };
    loop {
        if r.fill_buf()?.is_empty() {
            break;
        }
        let mut sink = LineSink::default();
        let mut dec = flate2::bufread::GzDecoder::new(&mut r);
        if io::copy(&mut dec, &mut sink).is_err() {
            break;
        }
        let sink = sink.finish();
        scan.good_bytes = r.pos;
        scan.members += 1;
        scan.stats.merge(&sink.stats);
        if scan.run_id.is_none() {
            scan.run_id = sink.run_id;
        }
    }
    Ok(scan)
}

/// The readable prefix of a member cut short: its bytes up to a sync point, and what they hold.
pub struct SyncPrefix {
    /// Bytes of the member (header included) up to and with the sync point's `00 00 ff ff`.
    pub len: u64,
    /// CRC-32 and length (mod 2^32) of the data up to the sync point: the trailer it needs.
    pub crc: u32,
    pub isize: u32,
    pub stats: LineStats,
    pub run_id: Option<String>,
}

/// Reads a gzip member header; returns its length, or None when it is not one (or is cut short).
fn gzip_header_len<R: Read>(r: &mut R) -> io::Result<Option<u64>> {
    fn byte<R: Read>(r: &mut R) -> io::Result<Option<u8>> {
        let mut b = [0u8; 1];
        match r.read_exact(&mut b) {
            Ok(()) => Ok(Some(b[0])),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }
    let mut fixed = [0u8; 10];
    for b in fixed.iter_mut() {
        let Some(v) = byte(r)? else { return Ok(None) };
        *b = v;
    }
    let flg = fixed[3];
    if fixed[..3] != [0x1f, 0x8b, 8] || flg & 0xe0 != 0 {
        return Ok(None);
    }
    let mut len = 10u64;
    if flg & 0x04 != 0 {
        // FEXTRA: a 2-byte length, then that many bytes.
        let (Some(lo), Some(hi)) = (byte(r)?, byte(r)?) else { return Ok(None) };
        let n = u16::from_le_bytes([lo, hi]) as u64;
        if io::copy(&mut r.take(n), &mut io::sink())? < n {
            return Ok(None);
        }
        len += 2 + n;
    }
    for flag in [0x08, 0x10] {
        // FNAME, FCOMMENT: zero-terminated.
        if flg & flag != 0 {
            loop {
                let Some(b) = byte(r)? else { return Ok(None) };
                len += 1;
                if b == 0 {
                    break;
                }
            }
        }
    }
    if flg & 0x02 != 0 {
        // FHCRC
        if byte(r)?.is_none() || byte(r)?.is_none() {
            return Ok(None);
        }
        len += 2;
    }
    Ok(Some(len))
}

/// The readable prefix of the gzip member that starts at `start` in `file` and does not decode
/// completely (cut short, or damaged): the last sync point (`00 00 ff ff` ending an empty stored
/// block) at which the data decoded so far ends in a whole line, checked by decoding that prefix
/// with its end ([`member_end`]) as a member of its own. None when there is no such point (a
/// member of the older format, garbage, a write cut short before the member's first flush).
/// Decodes the member once (plus the check); reads at most the rest of the file.
pub fn torn_member_prefix(file: &File, start: u64) -> io::Result<Option<SyncPrefix>> {
    const SYNC: [u8; 4] = [0, 0, 0xff, 0xff];
    let mut r = BufReader::with_capacity(1 << 20, file.try_clone()?);
    r.seek(SeekFrom::Start(start))?;
    let Some(header) = gzip_header_len(&mut r)? else { return Ok(None) };
    let mut dec = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(256 << 10);
    let mut sink = LineSink::default();
    let mut crc = Crc::new();
    // Candidates, oldest first: (member bytes up to the point, data bytes, crc, stats, run_id).
    let mut points: Vec<(u64, u64, u32, LineStats, Option<String>)> = Vec::new();
    let mut last4 = [1u8; 4]; // the last 4 deflate bytes fed (across reads)
    'read: loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        let mut fed = 0;
        while fed < n {
            // Feed up to (and with) the next possible sync point, or to the end of the buffer.
            let mut stop = n;
            for (i, &b) in buf[fed..].iter().enumerate() {
                last4 = [last4[1], last4[2], last4[3], b];
                if last4 == SYNC {
                    stop = fed + i + 1;
                    break;
                }
            }
            let mut input = &buf[fed..stop];
            loop {
                let before = dec.total_in();
                out.clear();
                let status = dec.decompress_vec(input, &mut out, flate2::FlushDecompress::None);
                let used = (dec.total_in() - before) as usize;
                input = &input[used..];
                crc.update(&out);
                sink.write_all(&out)?;
                match status {
                    Ok(flate2::Status::StreamEnd) | Err(_) => break 'read, // the deflate data ends here
                    Ok(_) if input.is_empty() && out.len() < out.capacity() => break, // all decoded
                    Ok(_) if used == 0 && out.is_empty() => break 'read,   // no progress
                    Ok(_) => {}
                }
            }
            if last4 == SYNC {
                let data = dec.total_out();
                if data > 0 && sink.pending.is_empty() && !sink.skipping {
                    let at = header + dec.total_in();
                    points.push((at, data, crc.sum(), sink.stats.clone(), sink.run_id.clone()));
                }
                last4 = [1; 4];
            }
            fed = stop;
        }
        r.consume(n);
    }
    // The last point whose prefix, ended, decodes as a member on its own.
    while let Some((at, data, sum, stats, run_id)) = points.pop() {
        let isize = data as u32; // mod 2^32, as gzip's ISIZE
        let mut f = file.try_clone()?;
        f.seek(SeekFrom::Start(start))?;
        let end = member_end(sum, isize);
        let mut d = flate2::read::GzDecoder::new(BufReader::new(f.take(at)).chain(&end[..]));
        if io::copy(&mut d, &mut io::sink()).is_ok_and(|n| n == data) {
            return Ok(Some(SyncPrefix { len: at, crc: sum, isize, stats, run_id }));
        }
    }
    Ok(None)
}

/// Seals a dead run's `.partial`: complete members stay as the final file, and of a member cut short
/// its prefix up to its last sync point ([`torn_member_prefix`]), ended anew ([`member_end`]); every
/// byte after that readable prefix is kept beside it as `<final name>.unreadable-tail`. Order (each
/// step fsynced) so that a crash at any point loses nothing: tail copied out, partial truncated to its
/// readable prefix (a crash here leaves a partial that ends at a sync point: the next recovery ends
/// it), end written, renamed.
pub fn recover_partial(cfg: &Config, partial: &Path) -> io::Result<Sealed> {
    let dir = partial.parent().expect("partial has a directory").to_path_buf();
    let name = partial.file_name().expect("file name").to_string_lossy().into_owned();
    let final_name = name.strip_suffix(PARTIAL_SUFFIX).expect("a .partial").to_string();
    let parsed = layout::parse_file_name(&final_name, &cfg.host);

    let mut file = OpenOptions::new().read(true).write(true).open(partial)?;
    let meta = file.metadata()?;
    let len = meta.len();
    let opened = meta.created().or_else(|_| meta.modified()).map(OffsetDateTime::from).unwrap_or_else(|_| clock::now());
    let mut scan = scan_members(&mut file)?;
    // A member cut short: its readable prefix, and the end it needs.
    let mut readable = scan.good_bytes;
    let mut end = None;
    if readable < len {
        if let Some(p) = torn_member_prefix(&file, readable)? {
            readable += p.len;
            end = Some(member_end(p.crc, p.isize));
            scan.stats.merge(&p.stats);
            if scan.run_id.is_none() {
                scan.run_id = p.run_id;
            }
        }
    }

    let mut tail: Option<(PathBuf, u64)> = None;
    remove_empty_tails(&dir, &final_name)?;
    if readable < len {
        let tail_len = len - readable;
        let tail_path = free_name(&dir, &format!("{final_name}{TAIL_SUFFIX}"));
        file.seek(SeekFrom::Start(readable))?;
        copy_tail(&mut file, tail_len, &dir.join(format!(".{final_name}{TAIL_TMP_SUFFIX}")), &tail_path)
            .map_err(|e| io::Error::new(e.kind(), format!("keeping its {tail_len} unreadable tail bytes: {e}")))?;
        file.set_len(readable)?;
        file.sync_all()?;
        let torn = if end.is_some() { ", and a member cut short kept up to its last flush" } else { "" };
        eprintln!(
            "jsonl-rotate: {}: {} unreadable bytes after {} complete gzip members{torn} kept as {}",
            partial.display(),
            tail_len,
            scan.members,
            tail_path.display()
        );
        tail = Some((tail_path, tail_len));
    } else {
        // An earlier recovery may have stopped between copying the tail out and renaming.
        let t = dir.join(format!("{final_name}{TAIL_SUFFIX}"));
        if let Ok(m) = fs::metadata(&t) {
            tail = Some((t, m.len()));
        }
    }
    if let Some(e) = end {
        file.write_all_at(&e, readable)?;
    } else if readable == 0 {
        // No readable member: the final file is a valid empty gzip.
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&GzEncoder::new(Vec::new(), Compression::default()).finish()?)?;
    }
    file.sync_all()?;
    drop(file);

    // The final name, or the next free n of that run when it is taken.
    let (run_id, mut n) = match &parsed {
        Some((r, n)) => (r.clone(), *n),
        None => (scan.run_id.clone().unwrap_or_else(|| "unknown".into()), 0),
    };
    let mut final_path = dir.join(&final_name);
    while final_path.exists() {
        match &parsed {
            Some(_) => {
                n += 1;
                final_path = dir.join(layout::file_name(&cfg.host, &run_id, n));
            }
            None => final_path = free_name(&dir, &final_name),
        }
    }
    fs::rename(partial, &final_path)?;
    util::fsync_dir(&dir)?;
    let (sha256, bytes) = util::sha256_file(&final_path)?;
    Ok(Sealed {
        record: SEALED_RECORD.into(),
        schema: Some(SEALED_SCHEMA.into()),
        path: layout::rel_path(&cfg.root, &final_path),
        venue: Some(cfg.venue.clone()),
        stream: Some(cfg.stream.clone()),
        host: Some(cfg.host.clone()),
        run_id: Some(run_id),
        n: Some(n),
        rows: Some(scan.stats.rows),
        bytes: Some(bytes),
        sha256,
        first_collected_at_utc: scan.stats.first(),
        last_collected_at_utc: scan.stats.last(),
        opened_at_utc: Some(clock::fmt_micros(opened)),
        sealed_at_utc: Some(clock::fmt_micros(clock::now())),
        recovered: true,
        adopted: false,
        tail_path: tail.as_ref().map(|(p, _)| layout::rel_path(&cfg.root, p)),
        tail_bytes: tail.as_ref().map_or(0, |(_, n)| *n),
        writer_version: Some(crate::VERSION.into()),
        invalid_lines: Some(scan.stats.invalid),
        empty_lines: Some(0),
    })
}

/// Copies `len` bytes from `src` (at its position) into `dest` through the temp file `tmp`
/// ([`util::AtomicFile`]). A tail file therefore appears only with all its bytes; on any failure (a
/// full disk) the temp file is removed and the partial is untouched, so the next start retries.
fn copy_tail(src: &mut File, len: u64, tmp: &Path, dest: &Path) -> io::Result<()> {
    let (file, mut t) = util::AtomicFile::create_as(dest, tmp.to_path_buf())?;
    let copied = io::copy(&mut src.take(len), &mut t)?;
    if copied != len {
        return Err(io::Error::other(format!("copied {copied} of {len} tail bytes")));
    }
    file.commit(t)
}

/// Removes 0-byte `<final name>.unreadable-tail[.k]` files: earlier versions created the tail file
/// before copying into it, so a full disk left it empty, and an empty tail holds no byte of
/// data but made `manifest verify` and the uploader fail (an unlisted file) for ever.
fn remove_empty_tails(dir: &Path, final_name: &str) -> io::Result<()> {
    let base = format!("{final_name}{TAIL_SUFFIX}");
    let mut removed = false;
    for k in 0.. {
        let p = if k == 0 { dir.join(&base) } else { dir.join(format!("{base}.{k}")) };
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() && m.len() == 0 => {
                fs::remove_file(&p)?;
                eprintln!(
                    "jsonl-rotate: {}: removed an empty unreadable-tail file (left by a failed copy)",
                    p.display()
                );
                removed = true;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    if removed {
        util::fsync_dir(dir)?;
    }
    Ok(())
}

/// `name` in `dir`, or `name.1`, `name.2`, … — the first that does not exist.
fn free_name(dir: &Path, name: &str) -> PathBuf {
    let mut p = dir.join(name);
    let mut k = 1;
    while p.exists() {
        p = dir.join(format!("{name}.{k}"));
        k += 1;
    }
    p
}

/// Recovers every partial of this host under the stream directory, printing one record each.
/// Returns (recovered, failed).
pub fn recover_all<W: Write>(cfg: &Config, out: &mut RecordOut<W>) -> io::Result<(u64, u64)> {
    let (ours, others) = find_partials(cfg)?;
    for p in &others {
        eprintln!("jsonl-rotate: {}: not written by host '{}', left alone", p.display(), cfg.host);
    }
    let (mut ok, mut failed) = (0, 0);
    for p in &ours {
        match recover_partial(cfg, p) {
            Ok(rec) => {
                eprintln!("jsonl-rotate: recovered {} ({} rows) from a dead run", rec.path, rec.rows.unwrap_or(0));
                out.emit(&rec);
                ok += 1;
            }
            Err(e) => {
                eprintln!("jsonl-rotate: {}: could not recover: {e}", p.display());
                failed += 1;
            }
        }
    }
    Ok((ok, failed))
}

/// Holds `<stream dir>/.jsonl-rotate-<host>.lock` so that two writers (or a writer and a recovery)
/// never work on the same stream of the same host. Waits up to `wait` for a previous one to finish.
pub fn lock_stream(cfg: &Config, wait: Duration) -> io::Result<Option<File>> {
    let dir = cfg.stream_dir();
    fs::create_dir_all(&dir)?;
    let path = dir.join(format!(".jsonl-rotate-{}.lock", cfg.host));
    let f = OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
    let start = Instant::now();
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(Some(f)),
            Err(fs::TryLockError::WouldBlock) if start.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(fs::TryLockError::WouldBlock) => return Ok(None),
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanning_a_line_over_max_line_holds_at_most_max_line() {
        let mut sink = LineSink::default();
        sink.write_all(b"{\"a\":1}\n").unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..(jsonl::MAX_LINE >> 20) + 2 {
            sink.write_all(&chunk).unwrap();
            assert!(sink.pending.len() <= jsonl::MAX_LINE + chunk.len());
        }
        sink.write_all(b"xx\n{\"b\":2}\n").unwrap();
        let sink = sink.finish();
        assert_eq!((sink.stats.rows, sink.stats.invalid), (3, 1), "the long line is one row, not JSON");
    }

    #[test]
    fn finds_collected_at() {
        let l = br#"{"schema":"pmarchive.raw/1","collected_at_utc":"2026-11-24T16:01:33.123456Z","body":{}}"#;
        assert_eq!(&collected_at(l).unwrap(), b"2026-11-24T16:01:33.123456Z");
        assert!(collected_at(br#"{"collected_at_utc":"yesterday"}"#).is_none());
        assert!(collected_at(br#"{"x":1}"#).is_none());
        assert!(collected_at(br#"{"collected_at_utc":"2026-11-24T16:01:33.12345"#).is_none());
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"ab", b"abd"), None);
    }

    #[test]
    fn stats_take_min_and_max() {
        let mut s = LineStats::default();
        assert!(s.add_line(br#"{"collected_at_utc":"2026-11-24T16:00:02.000000Z"}"#));
        assert!(s.add_line(br#"{"collected_at_utc":"2026-11-24T16:00:01.000000Z"}"#));
        assert!(!s.add_line(b"not json\n"));
        assert_eq!(s.rows, 3);
        assert_eq!(s.invalid, 1);
        assert_eq!(s.first().unwrap(), "2026-11-24T16:00:01.000000Z");
        assert_eq!(s.last().unwrap(), "2026-11-24T16:00:02.000000Z");
    }

    #[test]
    fn a_torn_member_with_a_named_header_is_ended_at_its_last_sync_point() {
        // A member from another gzip writer (header with FNAME and FEXTRA), sync-flushed twice, cut
        // inside the data after its second sync point.
        let mut e =
            flate2::GzBuilder::new().filename("x.jsonl").extra(vec![1, 2, 3]).write(Vec::new(), Compression::new(7));
        e.write_all(b"{\"a\":1}\n").unwrap();
        e.flush().unwrap();
        e.write_all(b"{\"a\":2}\n{\"a\":3}\n").unwrap();
        e.flush().unwrap();
        let second = e.get_ref().len();
        e.write_all(&b"{\"a\":4}\n".repeat(50)).unwrap();
        let all = e.finish().unwrap();
        let path = std::env::temp_dir().join(format!("rotate-unit-torn-{}", std::process::id()));
        let mut bytes = b"garbage before".to_vec(); // the member starts at an offset
        bytes.extend_from_slice(&all[..all.len() - 12]);
        fs::write(&path, &bytes).unwrap();
        let p = torn_member_prefix(&File::open(&path).unwrap(), 14).unwrap().expect("a sync point");
        fs::remove_file(&path).unwrap();
        assert_eq!(p.len as usize, second, "up to the second sync point");
        assert_eq!((p.stats.rows, p.isize), (3, 24));
        let mut ended = all[..second].to_vec();
        ended.extend_from_slice(&member_end(p.crc, p.isize));
        let mut text = String::new();
        flate2::read::GzDecoder::new(&ended[..]).read_to_string(&mut text).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");
        let mut header = &all[..];
        assert_eq!(gzip_header_len(&mut header).unwrap(), Some(10 + 2 + 3 + 8));
        assert_eq!(gzip_header_len(&mut &all[..11]).unwrap(), None, "cut short");
    }

    #[test]
    fn scan_stops_at_torn_member() {
        let mut all = Vec::new();
        for part in ["{\"a\":1}\n{\"a\":2}\n", "{\"a\":3}\n"] {
            let mut e = GzEncoder::new(Vec::new(), Compression::default());
            e.write_all(part.as_bytes()).unwrap();
            all.extend(e.finish().unwrap());
        }
        let good = all.len() as u64;
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(b"{\"a\":4}\n").unwrap();
        let third = e.finish().unwrap();
        all.extend(&third[..third.len() / 2]);
        let s = scan_members(io::Cursor::new(&all)).unwrap();
        assert_eq!((s.good_bytes, s.members, s.stats.rows), (good, 2, 3));
        let s = scan_members(io::Cursor::new(b"garbage".to_vec())).unwrap();
        assert_eq!((s.good_bytes, s.members), (0, 0));
    }
}
