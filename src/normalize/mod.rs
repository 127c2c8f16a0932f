//! pm-normalize's engine: raw `pmarchive.raw/1` book envelopes → normalized order-book rows
//! (`pmarchive.orderbook/1`, docs/ORDERBOOK_SCHEMA.md), and `--check` over normalized files.
//!
//! Work is split over three threads joined by crossbeam channels carrying large chunks: one reads
//! and decompresses the inputs into 4 MiB chunks of whole lines (bounded: [`jsonl::LineReader`]), the calling thread parses and
//! formats (it owns the [`Normalizer`] state), one writes (and gzips, for `.gz` outputs). Buffers
//! travel back on return channels, so steady state allocates almost nothing per line.

pub mod check;
pub mod dec;
pub mod engine;
pub mod parse;
pub mod rows;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crossbeam_channel::{bounded, Receiver, Sender};

pub use engine::{JoinInfo, Normalizer, Options, Parsed, Stats, FLAGS, SCHEMA, UNTRUSTED, WS_FLAGS};

use crate::jsonl;

/// Bytes per chunk handed from the reader to the parser.
const CHUNK: usize = 4 << 20;
/// Output is handed to the writer once the buffer holds this much.
const OUT_CHUNK: usize = 1 << 20;

/// Reader → parser messages.
enum Msg {
    /// A new input file begins (its name as given).
    File(String),
    /// Complete lines (the last chunk of a file may end without `\n`).
    Data(Vec<u8>),
    /// A line longer than [`jsonl::MAX_LINE`], skipped by the reader.
    TooLong(jsonl::TooLong),
    /// The file ended; `error` when it ended in a read error, `partial` = the unfinished line.
    End { partial: Vec<u8>, error: Option<String> },
}

fn take_buf(pool: &Receiver<Vec<u8>>) -> Vec<u8> {
    let mut b = pool.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK + (64 << 10)));
    b.clear();
    b
}

/// The reader thread: each input in turn, decompressed, as chunks of whole lines read with the
/// bounded [`jsonl::LineReader`] (a line over [`jsonl::MAX_LINE`] is skipped and sent as [`Msg::TooLong`]).
fn read_inputs(inputs: Vec<String>, tx: Sender<Msg>, pool: Receiver<Vec<u8>>) {
    for name in inputs {
        if tx.send(Msg::File(name.clone())).is_err() {
            return;
        }
        let mut r = match jsonl::open_lines(Path::new(&name)) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Msg::End { partial: Vec::new(), error: Some(format!("cannot read {name}: {e}")) });
                continue;
            }
        };
        let mut buf = take_buf(&pool);
        let end = loop {
            match r.next_into(&mut buf) {
                Ok(jsonl::Next::Line) => {
                    if buf.len() >= CHUNK && tx.send(Msg::Data(std::mem::replace(&mut buf, take_buf(&pool)))).is_err() {
                        return;
                    }
                }
                Ok(jsonl::Next::TooLong(t)) => {
                    if !buf.is_empty() && tx.send(Msg::Data(std::mem::replace(&mut buf, take_buf(&pool)))).is_err() {
                        return;
                    }
                    if tx.send(Msg::TooLong(t)).is_err() {
                        return;
                    }
                }
                Ok(jsonl::Next::Eof) => {
                    if !buf.is_empty() && tx.send(Msg::Data(buf)).is_err() {
                        return;
                    }
                    break Msg::End { partial: Vec::new(), error: None };
                }
                Err(e) => {
                    // `buf` holds whole lines, then the bytes read of the unfinished one.
                    let rest = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                    let partial = buf[rest..].to_vec();
                    buf.truncate(rest);
                    if rest > 0 && tx.send(Msg::Data(buf)).is_err() {
                        return;
                    }
                    break Msg::End { partial, error: Some(format!("read error: {e}")) };
                }
            }
        };
        if tx.send(end).is_err() {
            return;
        }
    }
}

/// Where rows go.
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

/// Normalizes `inputs` (names; `-` = stdin) in order into `out`. Returns the output back (for
/// [`OutFile::commit`]). Read errors become bad_input rows; write errors are returned.
pub fn run(inputs: &[String], out: Output, nor: &mut Normalizer) -> io::Result<Output> {
    let (tx, rx) = bounded::<Msg>(3);
    let (pool_tx, pool_rx) = bounded::<Vec<u8>>(4);
    let (otx, orx) = bounded::<Vec<u8>>(4);
    let (opool_tx, opool_rx) = bounded::<Vec<u8>>(4);
    let names = inputs.to_vec();
    std::thread::scope(|s| {
        s.spawn(move || read_inputs(names, tx, pool_rx));
        let writer = s.spawn(move || -> io::Result<Output> {
            let mut out = out;
            for chunk in orx {
                out.write_all(&chunk)?;
                let _ = opool_tx.try_send(chunk);
            }
            out.flush()?;
            Ok(out)
        });
        let mut buf: Vec<u8> = Vec::with_capacity(OUT_CHUNK + (64 << 10));
        let mut file = String::new();
        let mut lineno = 0u64;
        let mut failed = false;
        let flush = |buf: &mut Vec<u8>, force: bool| -> bool {
            if buf.len() >= OUT_CHUNK || (force && !buf.is_empty()) {
                let mut next = opool_rx.try_recv().unwrap_or_else(|_| Vec::with_capacity(OUT_CHUNK + (64 << 10)));
                next.clear();
                let full = std::mem::replace(buf, next);
                return otx.send(full).is_ok();
            }
            true
        };
        for msg in rx.iter() {
            match msg {
                Msg::File(name) => {
                    nor.start_file();
                    file = name;
                    lineno = 0;
                }
                Msg::Data(data) => {
                    let mut rest: &[u8] = &data;
                    while !rest.is_empty() {
                        let (line, next) = match find_newline(rest) {
                            Some(i) => (&rest[..i], &rest[i + 1..]),
                            None => (rest, &rest[rest.len()..]),
                        };
                        lineno += 1;
                        nor.line(&file, lineno, line, &mut buf);
                        rest = next;
                    }
                    let _ = pool_tx.try_send(data);
                    if !flush(&mut buf, false) {
                        failed = true;
                        break;
                    }
                }
                Msg::TooLong(t) => {
                    lineno += 1;
                    nor.line_too_long(&file, &t, &mut buf);
                }
                Msg::End { partial, error } => {
                    if let Some(e) = error {
                        nor.read_error(&file, lineno + 1, &partial, &e, &mut buf);
                    }
                }
            }
        }
        if !failed {
            flush(&mut buf, true);
        }
        drop(otx); // ends the writer loop
        drop(rx); // stops the reader if we left early
        writer.join().expect("writer thread")
    })
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
