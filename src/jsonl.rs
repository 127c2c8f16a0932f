//! JSONL in and out: the one reader (plain or multi-member gzip, detected by magic bytes), the one
//! bounded line splitter ([`LineReader`], at most [`MAX_LINE`] bytes held per line) and the one line
//! writer every tool uses.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use serde::Serialize;

/// The longest line (without its `\n`) any tool reads: 256 MiB. A raw envelope holds at most one
/// reply body of at most [`crate::http::MAX_BODY`] (64 MiB) bytes, and [`crate::envelope::Body`]
/// encodes a body in at most twice its bytes (hex, or JSON-escaped text), so a line the collectors
/// write is below 129 MiB; the rest is margin. A longer line is never held in memory: it is skipped
/// (1 MiB at a time) and reported as [`TooLong`] — each tool counts it as bad input (exit 1).
pub const MAX_LINE: usize = 256 << 20;

/// How many leading bytes of a too-long line are kept for the report.
const HEAD_BYTES: usize = 120;
/// The most bytes held at once while a too-long line is skipped.
const SKIP_CHUNK: u64 = 1 << 20;

/// A line longer than the reader's maximum: what is known of it (its bytes are not kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TooLong {
    /// 1-based line number in the input.
    pub line_no: u64,
    /// Length of the line without its `\n`.
    pub bytes: u64,
    /// The maximum it exceeded.
    pub max: usize,
    /// Its first bytes, lossily as text (for the report only).
    pub head: String,
    /// False when the input ended (or failed) before the line's `\n`.
    pub terminated: bool,
}

impl fmt::Display for TooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: {} bytes, longer than the maximum line length of {} bytes (skipped)",
            self.line_no, self.bytes, self.max
        )
    }
}

/// The record that stands in an archive for an input line that was too long to keep
/// (`pmarchive.skipped_line/1`, written by jsonl-rotate; docs/DATA_CONTRACT.md): the line's bytes are
/// gone, but its place, length and first bytes are not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SkippedLine {
    pub schema: String,
    /// Always `line_too_long`.
    pub record: String,
    /// The tool that skipped it.
    pub tool: String,
    /// 1-based line number in that tool's input.
    pub input_line: u64,
    pub bytes: u64,
    pub max_line: u64,
    /// The first bytes of the line, lossily as text.
    pub head: String,
    /// False when the input ended before the line's `\n`.
    pub terminated: bool,
}

pub const SKIPPED_LINE_SCHEMA: &str = "pmarchive.skipped_line/1";

impl TooLong {
    pub fn record(&self, tool: &str) -> SkippedLine {
        SkippedLine {
            schema: SKIPPED_LINE_SCHEMA.into(),
            record: "line_too_long".into(),
            tool: tool.into(),
            input_line: self.line_no,
            bytes: self.bytes,
            max_line: self.max as u64,
            head: self.head.clone(),
            terminated: self.terminated,
        }
    }
}

/// What [`LineReader::next_into`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// End of input, nothing appended.
    Eof,
    /// A line was appended (with its `\n` unless it is the last line of an input that lacks one).
    Line,
    /// A line over the maximum was skipped; nothing appended.
    TooLong(TooLong),
}

/// The bounded line splitter every tool reads lines with: like `BufRead::read_until(b'\n')`, but
/// a line longer than `max` bytes is never accumulated (memory stays bounded by `max` plus the
/// buffer, whatever the input) and comes back as [`Next::TooLong`].
pub struct LineReader<R> {
    inner: R,
    max: usize,
    line_no: u64,
}

impl<R: BufRead> LineReader<R> {
    /// A reader with the documented maximum [`MAX_LINE`].
    pub fn new(inner: R) -> Self {
        Self::with_max(inner, MAX_LINE)
    }

    /// A reader with a smaller maximum (e.g. market records on stdin).
    pub fn with_max(inner: R, max: usize) -> Self {
        LineReader { inner, max, line_no: 0 }
    }

    /// Lines returned so far (including too-long ones).
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Appends the next line to `out` (see [`Next`]). On a read error the bytes of the unfinished
    /// line read so far stay appended to `out` (as with `read_until`).
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> io::Result<Next> {
        let start = out.len();
        // At most max + 1 bytes: a line of exactly `max` bytes plus its `\n` fits.
        let limit = self.max as u64 + 1;
        let n = loop {
            match (&mut self.inner).take(limit - (out.len() - start) as u64).read_until(b'\n', out) {
                Ok(_) if out.len() - start < limit as usize || out.ends_with(b"\n") => break out.len() - start,
                Ok(_) => break usize::MAX, // limit reached without a newline: too long
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return Ok(Next::Eof);
        }
        self.line_no += 1;
        if n != usize::MAX {
            return Ok(Next::Line);
        }
        let mut head = out[start..].to_vec();
        head.truncate(HEAD_BYTES);
        let mut bytes = (out.len() - start) as u64;
        out.truncate(start);
        // Skip to the newline holding at most SKIP_CHUNK bytes (read_until: std's fast newline search).
        let mut scratch = Vec::new();
        let terminated = loop {
            scratch.clear();
            match (&mut self.inner).take(SKIP_CHUNK).read_until(b'\n', &mut scratch) {
                Ok(0) => break false,
                Ok(k) if scratch.ends_with(b"\n") => {
                    bytes += k as u64 - 1;
                    break true;
                }
                Ok(k) => bytes += k as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        Ok(Next::TooLong(TooLong {
            line_no: self.line_no,
            bytes,
            max: self.max,
            head: String::from_utf8_lossy(&head).into_owned(),
            terminated,
        }))
    }

    /// The next line without its `\n` (and without a `\r` before it), as an owned buffer, or the
    /// too-long report; None at the end of the input.
    pub fn next_line(&mut self) -> Option<io::Result<Result<Vec<u8>, TooLong>>> {
        let mut v = Vec::new();
        match self.next_into(&mut v) {
            Ok(Next::Eof) => None,
            Ok(Next::Line) => {
                if v.last() == Some(&b'\n') {
                    v.pop();
                    if v.last() == Some(&b'\r') {
                        v.pop();
                    }
                }
                Some(Ok(Ok(v)))
            }
            Ok(Next::TooLong(t)) => Some(Ok(Err(t))),
            Err(e) => Some(Err(e)),
        }
    }
}

/// Opens a file (or `-`, stdin; gzip or plain) for bounded line reading.
pub fn open_lines(path: &Path) -> io::Result<LineReader<Box<dyn BufRead + Send>>> {
    Ok(LineReader::new(open(path)?))
}

/// Opens a file for line reading; gzip (any number of members) is decompressed transparently.
/// `-` is stdin.
/// A directory (given as a path or on stdin) is an error here, not at the first read.
pub fn open(path: &Path) -> io::Result<Box<dyn BufRead + Send>> {
    let raw: Box<dyn Read + Send> = if path == Path::new("-") {
        use std::os::fd::AsFd;
        let s = io::stdin();
        let fd = s.as_fd().try_clone_to_owned()?;
        if File::from(fd).metadata()?.is_dir() {
            return Err(io::Error::new(io::ErrorKind::IsADirectory, "stdin is a directory"));
        }
        Box::new(s)
    } else {
        let f = File::open(path)?;
        if f.metadata()?.is_dir() {
            return Err(io::Error::new(io::ErrorKind::IsADirectory, "is a directory"));
        }
        Box::new(f)
    };
    reader(raw)
}

/// Wraps a byte source, decompressing it when it starts with the gzip magic.
pub fn reader(raw: Box<dyn Read + Send>) -> io::Result<Box<dyn BufRead + Send>> {
    let mut buf = BufReader::with_capacity(256 * 1024, raw);
    let head = buf.fill_buf()?;
    if head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b {
        Ok(Box::new(BufReader::with_capacity(256 * 1024, flate2::bufread::MultiGzDecoder::new(buf))))
    } else {
        Ok(Box::new(buf))
    }
}

/// Writes one value per line. `flush_each`: flush after every line (for pipes feeding a rotator,
/// so that a crash of this process never holds accepted lines in a buffer).
pub struct LineWriter<W: Write> {
    out: W,
    flush_each: bool,
    pub lines: u64,
}

impl<W: Write> LineWriter<W> {
    pub fn new(out: W, flush_each: bool) -> Self {
        LineWriter { out, flush_each, lines: 0 }
    }

    pub fn write<T: Serialize>(&mut self, v: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, v).map_err(io::Error::from)?;
        self.end_line()
    }

    /// Writes a line that is already serialized (must end with `\n`).
    pub fn write_raw(&mut self, line: &[u8]) -> io::Result<()> {
        debug_assert!(line.ends_with(b"\n"));
        self.out.write_all(line)?;
        self.lines += 1;
        if self.flush_each {
            self.out.flush()?;
        }
        Ok(())
    }

    fn end_line(&mut self) -> io::Result<()> {
        self.out.write_all(b"\n")?;
        self.lines += 1;
        if self.flush_each {
            self.out.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// A writer to stdout (line-flushed).
pub fn stdout_lines() -> LineWriter<io::StdoutLock<'static>> {
    LineWriter::new(io::stdout().lock(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_and_multi_member_gzip() {
        use flate2::write::GzEncoder;
        let mut all = Vec::new();
        for part in ["{\"a\":1}\n", "{\"a\":2}\n"] {
            let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part.as_bytes()).unwrap();
            all.extend(e.finish().unwrap());
        }
        let r = reader(Box::new(io::Cursor::new(all))).unwrap();
        let lines: Vec<String> = r.lines().map(|l| l.unwrap()).collect();
        assert_eq!(lines, vec!["{\"a\":1}", "{\"a\":2}"]);
        let r = reader(Box::new(io::Cursor::new(b"x\ny\n".to_vec()))).unwrap();
        assert_eq!(r.lines().count(), 2);
    }

    #[test]
    fn a_line_over_the_maximum_is_skipped_and_counted() {
        let long = "x".repeat(50);
        let input = format!("{{\"a\":1}}\n{long}\nshort\n{long}");
        // A tiny BufReader so that the long line spans many fills.
        let mut r = LineReader::with_max(BufReader::with_capacity(7, io::Cursor::new(input.into_bytes())), 20);
        let mut out = Vec::new();
        assert_eq!(r.next_into(&mut out).unwrap(), Next::Line);
        assert_eq!(out, b"{\"a\":1}\n");
        let Next::TooLong(t) = r.next_into(&mut out).unwrap() else { panic!("too long") };
        assert_eq!((t.line_no, t.bytes, t.max, t.terminated), (2, 50, 20, true));
        assert!(!t.head.is_empty() && long.starts_with(&t.head));
        assert_eq!(out, b"{\"a\":1}\n", "nothing of the long line is appended");
        assert_eq!(r.next_line().unwrap().unwrap().unwrap(), b"short");
        let t = r.next_line().unwrap().unwrap().unwrap_err();
        assert_eq!((t.line_no, t.bytes, t.terminated), (4, 50, false));
        assert!(r.next_line().is_none());
        // Exactly the maximum is a line.
        let mut r = LineReader::with_max(io::Cursor::new(b"12345\n123456\n".to_vec()), 5);
        assert_eq!(r.next_line().unwrap().unwrap().unwrap(), b"12345");
        assert!(r.next_line().unwrap().unwrap().is_err());
    }

    #[test]
    fn writer_counts_lines() {
        let mut w = LineWriter::new(Vec::new(), true);
        w.write(&serde_json::json!({"k": 1})).unwrap();
        w.write_raw(b"{}\n").unwrap();
        assert_eq!(w.lines, 2);
        assert_eq!(w.into_inner(), b"{\"k\":1}\n{}\n");
    }
}
