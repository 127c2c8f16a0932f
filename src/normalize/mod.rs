//! pm-normalize's engine: raw `pmarchive.raw/1` book envelopes → normalized order-book rows
//! (`pmarchive.orderbook/1`, docs/ORDERBOOK_SCHEMA.md), and `--check` over normalized files.
//!
//! Work is split over threads joined by bounded crossbeam channels carrying chunks of whole lines:
//! one thread reads and decompresses the inputs into chunks of about [`CHUNK`] bytes (bounded:
//! [`jsonl::LineReader`]); `threads` workers each parse and format whole chunks with their own
//! [`Rows`] into a [`Part`] (rows with holes for what depends on earlier lines); the calling thread
//! takes the parts back in input order and fills the holes ([`Normalizer::apply`], it owns the
//! state that spans lines); one thread writes (and gzips, for `.gz` outputs). With `threads` = 1
//! the calling thread parses too (no worker threads). The output is the same bytes either way.
//!
//! Memory is bounded: at most [`in_flight`]`(threads)` chunks are between the reader and the
//! ordered apply (a ticket per chunk, returned once its part is applied), each about [`CHUNK`]
//! bytes of input plus its formatted rows (a single line longer than [`CHUNK`] makes a chunk of
//! its own, up to [`jsonl::MAX_LINE`]), and at most 4 output buffers of about [`OUT_CHUNK`].
//! Buffers travel back on return channels, so steady state allocates almost nothing per line.

pub mod check;
pub mod dec;
pub mod engine;
pub mod fast;
pub mod parse;
pub mod rows;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};

pub use engine::{
    JoinInfo, Normalizer, Options, Parsed, Part, Pre, Rows, SideMemo, Stats, FLAGS, SCHEMA, UNTRUSTED, WS_FLAGS,
};

use crate::jsonl;

/// Bytes of whole lines per chunk handed from the reader to a parser (1 MiB: small enough for
/// the workers to share a file evenly, large enough that per-chunk costs do not show).
pub const CHUNK: usize = 1 << 20;
/// Output is handed to the writer once the buffer holds this much.
pub const OUT_CHUNK: usize = 1 << 20;

/// Chunks allowed between the reader and the ordered apply with `threads` workers: enough to keep
/// every worker busy while the reader fills the next ones.
pub fn in_flight(threads: usize) -> usize {
    2 * threads.max(1) + 2
}

/// The default number of parse threads: the machine's cores plus one when there are two or more (at
/// most 8). Reading/gunzip and writing have their own threads, so with exactly as many parse threads as
/// cores a core idles whenever a parse thread waits for its next chunk; one more keeps both cores of the
/// 2-core bench machine busy (0.31-0.32 s vs 0.33-0.35 s wall on the 200 MB bench, 7 interleaved runs).
/// On one core the extra thread would only add switches.
pub fn default_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (if cores > 1 { cores + 1 } else { 1 }).min(8)
}

/// A chunk of one input: whole lines, then possibly what ended it.
struct Job {
    seq: u64,
    /// The first chunk of an input file.
    new_file: bool,
    file: Arc<str>,
    /// Lines of the file before this chunk.
    line0: u64,
    /// Complete lines (the last chunk of a file may end without `\n`).
    data: Vec<u8>,
    tail: Option<Tail>,
}

enum Tail {
    /// A line longer than [`jsonl::MAX_LINE`], skipped by the reader.
    TooLong(jsonl::TooLong),
    /// The file ended in a read error; `partial` = the unfinished line.
    Error { partial: Vec<u8>, error: String },
}

fn take_buf(pool: &Receiver<Vec<u8>>) -> Vec<u8> {
    let mut b = pool.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK + (64 << 10)));
    b.clear();
    b
}

/// The reader thread: each input in turn, decompressed, as chunks of whole lines read with the
/// bounded [`jsonl::LineReader`] (a line over [`jsonl::MAX_LINE`] is skipped and ends its chunk as
/// [`Tail::TooLong`]). Each chunk waits for a ticket before it is sent.
fn read_inputs(inputs: Vec<String>, tx: Sender<Job>, pool: Receiver<Vec<u8>>, tickets: Receiver<()>) {
    let send = |job: Job| -> bool { tickets.recv().is_ok() && tx.send(job).is_ok() };
    let mut seq = 0u64;
    let mut job = |new_file: bool, file: &Arc<str>, line0: u64, pool: &Receiver<Vec<u8>>| {
        seq += 1;
        Job { seq: seq - 1, new_file, file: file.clone(), line0, data: take_buf(pool), tail: None }
    };
    for name in inputs {
        let file: Arc<str> = name.as_str().into();
        let mut cur = job(true, &file, 0, &pool);
        let mut r = match jsonl::open_lines(Path::new(&name)) {
            Ok(r) => r,
            Err(e) => {
                cur.tail = Some(Tail::Error { partial: Vec::new(), error: format!("cannot read {name}: {e}") });
                if !send(cur) {
                    return;
                }
                continue;
            }
        };
        loop {
            match r.next_into(&mut cur.data) {
                Ok(jsonl::Next::Line) => {
                    if cur.data.len() >= CHUNK
                        && !send(std::mem::replace(&mut cur, job(false, &file, r.line_no(), &pool)))
                    {
                        return;
                    }
                }
                Ok(jsonl::Next::TooLong(t)) => {
                    cur.tail = Some(Tail::TooLong(t));
                    if !send(std::mem::replace(&mut cur, job(false, &file, r.line_no(), &pool))) {
                        return;
                    }
                }
                Ok(jsonl::Next::Eof) => {
                    if (cur.new_file || !cur.data.is_empty()) && !send(cur) {
                        return;
                    }
                    break;
                }
                Err(e) => {
                    // `data` holds whole lines, then the bytes read of the unfinished one.
                    let rest = cur.data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                    let partial = cur.data[rest..].to_vec();
                    cur.data.truncate(rest);
                    cur.tail = Some(Tail::Error { partial, error: format!("read error: {e}") });
                    if !send(cur) {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

/// Returns a chunk's buffer to the reader (a chunk grown by a huge line is not kept).
fn recycle(pool: &Sender<Vec<u8>>, data: Vec<u8>) {
    if data.capacity() <= 2 * CHUNK {
        let _ = pool.try_send(data);
    }
}

/// Formats one chunk into `part` (workers, or the calling thread with one thread).
fn work(rows: &mut Rows, job: &Job, part: &mut Part) {
    let mut lineno = job.line0;
    let mut rest: &[u8] = &job.data;
    while !rest.is_empty() {
        let (line, next) = match find_newline(rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        lineno += 1;
        rows.line(&job.file, lineno, line, part);
        rest = next;
    }
    match &job.tail {
        Some(Tail::TooLong(t)) => rows.line_too_long(&job.file, t, part),
        Some(Tail::Error { partial, error }) => rows.read_error(&job.file, lineno + 1, partial, error, part),
        None => {}
    }
}

/// Where rows go. (One per run: the size difference of the variants costs nothing.)
#[allow(clippy::large_enum_variant)]
pub enum Output {
    Stdout(io::Stdout),
    File(BufWriter<File>),
    Gzip(flate2::write::GzEncoder<BufWriter<File>>),
}

impl Write for Output {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Output::Stdout(w) => w.write(b),
            Output::File(w) => w.write(b),
            Output::Gzip(w) => w.write(b),
        }
    }
    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Output::Stdout(w) => w.lock().write_all(b),
            Output::File(w) => w.write_all(b),
            Output::Gzip(w) => w.write_all(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Stdout(w) => w.flush(),
            Output::File(w) => w.flush(),
            Output::Gzip(w) => w.flush(),
        }
    }
}

/// An output file written beside its final path and renamed into place when complete
/// ([`crate::util::AtomicFile`]).
pub struct OutFile {
    pub path: PathBuf,
    file: crate::util::AtomicFile,
}

impl OutFile {
    /// Creates the temporary file; gzip (deterministic header: no name, mtime 0) when `path` ends in `.gz`.
    pub fn create(path: &Path) -> io::Result<(OutFile, Output)> {
        let (file, f) = crate::util::AtomicFile::create(path)?;
        let f = BufWriter::with_capacity(1 << 20, f);
        let out = if path.extension().is_some_and(|e| e == "gz") {
            Output::Gzip(flate2::GzBuilder::new().mtime(0).write(f, flate2::Compression::new(6)))
        } else {
            Output::File(f)
        };
        Ok((OutFile { path: path.to_path_buf(), file }, out))
    }

    /// Finishes the stream, fsyncs, renames into place, fsyncs the directory.
    pub fn commit(self, out: Output) -> io::Result<()> {
        let f = match out {
            Output::File(w) => w.into_inner().map_err(|e| e.into_error())?,
            Output::Gzip(g) => g.finish()?.into_inner().map_err(|e| e.into_error())?,
            Output::Stdout(_) => return Err(io::Error::other("stdout is not a file")),
        };
        self.file.commit(f)
    }

    /// Removes the temporary file (after a failure).
    pub fn abandon(self) {
        self.file.abandon()
    }
}

/// Normalizes `inputs` (names; `-` = stdin) in order into `out`, parsing on `threads` threads (see
/// the module docs). Returns the output back (for [`OutFile::commit`]). Read errors become
/// bad_input rows; write errors are returned.
pub fn run(inputs: &[String], out: Output, nor: &mut Normalizer, threads: usize) -> io::Result<Output> {
    let threads = threads.max(1);
    let k = in_flight(threads);
    let (tx, rx) = bounded::<Job>(k);
    let (pool_tx, pool_rx) = bounded::<Vec<u8>>(k);
    let (ticket_tx, ticket_rx) = bounded::<()>(k);
    for _ in 0..k {
        ticket_tx.send(()).expect("room for every ticket");
    }
    let (otx, orx) = bounded::<Vec<u8>>(4);
    let (opool_tx, opool_rx) = bounded::<Vec<u8>>(4);
    let names = inputs.to_vec();
    std::thread::scope(|s| {
        s.spawn(move || read_inputs(names, tx, pool_rx, ticket_rx));
        let writer = s.spawn(move || -> io::Result<Output> {
            let mut out = out;
            for chunk in orx {
                out.write_all(&chunk)?;
                let _ = opool_tx.try_send(chunk);
            }
            out.flush()?;
            Ok(out)
        });
        let mut sink = Sink { buf: Vec::with_capacity(OUT_CHUNK + (64 << 10)), tx: otx, pool: opool_rx };
        let chunks = Chunks { rx, pool: pool_tx, tickets: ticket_tx };
        let ok = if threads == 1 {
            serial(&chunks, nor, &mut sink)
        } else {
            parallel(s, &chunks, nor, &mut sink, threads, k)
        };
        if ok {
            sink.flush(true);
        }
        drop(sink); // ends the writer loop
        drop(chunks); // stops the reader if we left early
        writer.join().expect("writer thread")
    })
}

/// The reader's chunks, the way their buffers go back, and the tickets that let it read on.
struct Chunks {
    rx: Receiver<Job>,
    pool: Sender<Vec<u8>>,
    tickets: Sender<()>,
}

/// The output buffer and the writer thread it goes to.
struct Sink {
    buf: Vec<u8>,
    tx: Sender<Vec<u8>>,
    pool: Receiver<Vec<u8>>,
}

impl Sink {
    /// Hands the buffer to the writer once it is full (or at the end); false when the writer stopped.
    fn flush(&mut self, force: bool) -> bool {
        if self.buf.len() >= OUT_CHUNK || (force && !self.buf.is_empty()) {
            let mut next = self.pool.try_recv().unwrap_or_else(|_| Vec::with_capacity(OUT_CHUNK + (64 << 10)));
            next.clear();
            let full = std::mem::replace(&mut self.buf, next);
            return self.tx.send(full).is_ok();
        }
        true
    }
}

/// One thread: the calling thread parses each chunk and applies it. False when the writer stopped.
fn serial(chunks: &Chunks, nor: &mut Normalizer, sink: &mut Sink) -> bool {
    let mut rows = nor.rows();
    let mut part = Part::default();
    for job in chunks.rx.iter() {
        work(&mut rows, &job, &mut part);
        recycle(&chunks.pool, job.data);
        if job.new_file {
            nor.start_file();
        }
        nor.apply(&mut part, &mut sink.buf);
        let _ = chunks.tickets.try_send(());
        if !sink.flush(false) {
            return false;
        }
    }
    true
}

/// `threads` workers parse chunks into parts; the calling thread applies the parts in input order
/// (at most `k` are out). False when the writer stopped.
fn parallel<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    chunks: &Chunks,
    nor: &mut Normalizer,
    sink: &mut Sink,
    threads: usize,
    k: usize,
) -> bool {
    let (done_tx, done_rx) = bounded::<(u64, bool, Part)>(k);
    let (part_tx, part_rx) = bounded::<Part>(k);
    for _ in 0..threads {
        let (rx, done_tx, part_rx, pool_tx) =
            (chunks.rx.clone(), done_tx.clone(), part_rx.clone(), chunks.pool.clone());
        let mut rows = nor.rows();
        s.spawn(move || {
            for job in rx.iter() {
                let mut part = part_rx.try_recv().unwrap_or_default();
                work(&mut rows, &job, &mut part);
                recycle(&pool_tx, job.data);
                if done_tx.send((job.seq, job.new_file, part)).is_err() {
                    return;
                }
            }
        });
    }
    drop(done_tx);
    // Parts come back in any order; they are applied in input order.
    let mut ring: Vec<Option<(bool, Part)>> = (0..k).map(|_| None).collect();
    let mut next = 0u64;
    for (seq, new_file, part) in done_rx.iter() {
        ring[(seq % k as u64) as usize] = Some((new_file, part));
        while let Some((new_file, mut part)) = ring[(next % k as u64) as usize].take() {
            if new_file {
                nor.start_file();
            }
            nor.apply(&mut part, &mut sink.buf);
            if part.capacity() <= 4 * CHUNK {
                let _ = part_tx.try_send(part);
            }
            let _ = chunks.tickets.try_send(());
            next += 1;
            if !sink.flush(false) {
                return false; // dropping done_rx stops the workers
            }
        }
    }
    true
}

/// Position of the first `\n`, eight bytes at a time (no memchr dependency).
fn find_newline(h: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = LO * b'\n' as u64;
    let mut i = 0;
    while i + 8 <= h.len() {
        let w = u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes")) ^ NL;
        // Classic "has zero byte": the lowest flagged byte is always a real zero.
        let t = w.wrapping_sub(LO) & !w & HI;
        if t != 0 {
            return Some(i + (t.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    h[i..].iter().position(|&b| b == b'\n').map(|p| i + p)
}

/// The value of `--depth`: a number of levels or `all` (pm-normalize, pm-rebuild).
pub fn parse_depth(v: &str) -> Result<usize, String> {
    if v == "all" {
        Ok(usize::MAX)
    } else {
        v.parse().map_err(|_| format!("--depth: expected a number or 'all', got '{v}'"))
    }
}

/// Expands `[]` to stdin.
pub fn input_names(files: &[PathBuf]) -> Vec<String> {
    if files.is_empty() {
        vec!["-".to_string()]
    } else {
        files.iter().map(|p| p.to_string_lossy().into_owned()).collect()
    }
}

/// Loads `--markets` files into the join. Returns (tokens learnt, unusable lines with reasons).
pub fn load_markets(nor: &mut Normalizer, path: &Path) -> io::Result<(usize, Vec<String>)> {
    let mut r = jsonl::open_lines(path)?;
    let (mut n, mut bad) = (0, Vec::new());
    while let Some(line) = r.next_line() {
        let line = match line? {
            Ok(l) => l,
            Err(t) => {
                bad.push(format!("{}: {t}", path.display()));
                continue;
            }
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match nor.load_join_line(&line) {
            Ok(k) => n += k,
            Err(e) => bad.push(format!("{}:{}: {e}", path.display(), r.line_no())),
        }
    }
    Ok((n, bad))
}

#[cfg(test)]
mod tests {
    #[test]
    fn find_newline_agrees_with_position() {
        let s = b"abcdefghij\nklmnopqrstuvwxyz0123456789\n\nx\xff\x8a\n";
        for start in 0..s.len() {
            let h = &s[start..];
            assert_eq!(super::find_newline(h), h.iter().position(|&b| b == b'\n'), "{start}");
        }
        assert_eq!(super::find_newline(b""), None);
    }
}
