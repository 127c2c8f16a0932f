//! Market records on stdin: the reader thread that every stdin-fed tool shares (pm-books, pm-stream,
//! pm-trades; kalshi-books, kalshi-trades), so that polling or streaming never waits on stdin. Each
//! line is parsed and checked by its venue's record type ([`Record`]: Polymarket's
//! `pmarchive.market/1`, Kalshi's `pmarchive.kalshi_market/1`); an unusable line is handed on as
//! [`Input::Bad`] with its line number, never dropped silently. The channel disconnects at the end of
//! the input. [`drain_input`] is the pollers' one handling of what arrived: markets to the engine,
//! bad lines reported and kept as bad_input gaps ([`Fed`]: pm-books, kalshi-books).

use std::io::{self, Read};

use crossbeam_channel::{Receiver, TryRecvError};

use crate::jsonl;
use crate::track::{GapCtx, GapKind};

/// A venue's market record as read from stdin.
pub trait Record: Sized + Send + 'static {
    /// The venue the tool's envelopes name (`venue`).
    const VENUE: &'static str;
    /// Parses and checks one input line: None for a line that is not a market to collect (blank,
    /// or a resolution record of the same stream), Err with the reason for an unusable one.
    fn parse_line(line: &[u8]) -> Option<Result<Self, String>>;
}

/// Input lines longer than this are skipped and reported as bad (a market record is ~1.5 KB).
pub const MAX_INPUT_LINE: usize = 1024 * 1024;

/// One input line, as the reader thread saw it.
#[derive(Debug)]
pub enum Input<M> {
    Market { line: u64, market: Box<M> },
    Bad { line: u64, reason: String },
}

/// Takes whatever the reader thread has sent so far (never blocks), handing each message to `f`.
/// True once the input has ended (the channel disconnected).
pub fn drain<M>(rx: &Receiver<Input<M>>, mut f: impl FnMut(Input<M>) -> io::Result<()>) -> io::Result<bool> {
    loop {
        match rx.try_recv() {
            Ok(input) => f(input)?,
            Err(TryRecvError::Empty) => return Ok(false),
            Err(TryRecvError::Disconnected) => return Ok(true),
        }
    }
}

/// A stdin-fed polling engine's side of [`drain_input`]: its input, its counters, what it does with
/// a market record and with a bad line's gap.
pub trait Fed {
    type Market;
    /// The tool's name, as its stderr lines start.
    const TOOL: &'static str;
    /// The reader thread's channel (a clone: [`drain_input`] calls the engine while it reads).
    fn input(&self) -> Receiver<Input<Self::Market>>;
    /// Counts one input line; `bad`: it is not a usable market record.
    fn count_input(&mut self, bad: bool);
    /// Stores a market record at slot `k`.
    fn accept(&mut self, k: u64, market: Self::Market) -> io::Result<()>;
    /// Writes a gap record at slot `k` (here: a bad line's bad_input gap).
    fn write_gap(&mut self, k: u64, ctx: GapCtx, error: String) -> io::Result<()>;
}

/// Takes whatever the reader thread of `e` has sent so far (never blocks): each market record to
/// [`Fed::accept`], each bad line reported on stderr and kept as its bad_input gap ([`bad_line`]).
/// True once the input has ended.
pub fn drain_input<E: Fed>(e: &mut E, k: u64) -> io::Result<bool> {
    drain(&e.input(), |input| match input {
        Input::Market { market, .. } => {
            e.count_input(false);
            e.accept(k, *market)
        }
        Input::Bad { line, reason } => {
            e.count_input(true);
            let ctx = bad_line(E::TOOL, line, &reason);
            e.write_gap(k, ctx, reason)
        }
    })
}

/// A bad input line: reported on stderr (`<tool>: stdin line N: skipped: <reason>`) and returned
/// as the bad_input gap that keeps it in the archive too, so a market that was never polled because
/// its record was unusable leaves a trace.
pub fn bad_line(tool: &str, line: u64, reason: &str) -> GapCtx {
    eprintln!("{tool}: stdin line {line}: skipped: {reason}");
    GapCtx { line: Some(line), ..GapCtx::new(GapKind::BadInput) }
}

/// Starts the thread that reads market records from `src` (plain or gzip JSONL) and sends them on
/// the returned channel. The channel disconnects at the end of the input (or on a read error, which
/// is reported as a bad line first).
pub fn spawn_reader<M: Record>(src: Box<dyn Read + Send>) -> Receiver<Input<M>> {
    let (tx, rx) = crossbeam_channel::bounded(1024);
    std::thread::Builder::new()
        .name("stdin-reader".into())
        .spawn(move || {
            let r = match jsonl::reader(src) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Input::Bad { line: 0, reason: format!("read error: {e}") });
                    return;
                }
            };
            let mut r = jsonl::LineReader::with_max(r, MAX_INPUT_LINE);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let msg = match r.next_into(&mut buf) {
                    Ok(jsonl::Next::Eof) => return,
                    Ok(jsonl::Next::Line) => M::parse_line(&buf).map(|res| match res {
                        Ok(m) => Input::Market { line: r.line_no(), market: Box::new(m) },
                        Err(reason) => Input::Bad { line: r.line_no(), reason },
                    }),
                    Ok(jsonl::Next::TooLong(t)) => Some(Input::Bad { line: t.line_no, reason: t.to_string() }),
                    Err(e) => {
                        let _ = tx.send(Input::Bad { line: r.line_no() + 1, reason: format!("read error: {e}") });
                        return;
                    }
                };
                if let Some(msg) = msg {
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
            }
        })
        .expect("spawn the stdin reader thread");
    rx
}

/// The start of a stdin-fed polling tool's run, after its arguments were checked: installs the
/// signal handlers, starts the stdin reader thread and the envelope sequencer of `tool`.
pub fn start<M: Record>(tool: &'static str) -> crate::cli::Result<(Receiver<Input<M>>, crate::envelope::Sequencer)> {
    crate::signal::install();
    let input = spawn_reader(Box::new(crate::cli::stdin()?));
    let run = crate::envelope::RunInfo { venue: M::VENUE, ..crate::envelope::RunInfo::new(tool) };
    Ok((input, crate::envelope::Sequencer::new(run)))
}
