//! JSONL in and out: the one reader (plain or multi-member gzip, detected by magic bytes) and the one
//! line writer every tool uses.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use serde::Serialize;

/// Opens a file for line reading; gzip (any number of members) is decompressed transparently.
/// `-` is stdin.
pub fn open(path: &Path) -> io::Result<Box<dyn BufRead + Send>> {
    let raw: Box<dyn Read + Send> =
        if path == Path::new("-") { Box::new(io::stdin()) } else { Box::new(File::open(path)?) };
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
    fn writer_counts_lines() {
        let mut w = LineWriter::new(Vec::new(), true);
        w.write(&serde_json::json!({"k": 1})).unwrap();
        w.write_raw(b"{}\n").unwrap();
        assert_eq!(w.lines, 2);
        assert_eq!(w.into_inner(), b"{\"k\":1}\n{}\n");
    }
}
