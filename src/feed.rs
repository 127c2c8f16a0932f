//! Market records on stdin: the reader thread that pm-books and pm-stream share, so that polling or
//! streaming never waits on stdin. Each line is parsed and checked (`pmarchive.market/1`, decimal token
//! ids, RFC 3339 window with end after start); an unusable line is handed on as [`Input::Bad`] with
//! its line number, never dropped silently. The channel disconnects at the end of the input.

use std::io::{self, Read};

use crossbeam_channel::{Receiver, TryRecvError};

use crate::jsonl;
use crate::market::{self, Market, MARKET_SCHEMA};
use crate::track::{GapCtx, GapKind};

/// Input lines longer than this are skipped and reported as bad (a market record is ~1.5 KB).
pub const MAX_INPUT_LINE: usize = 1024 * 1024;

/// One input line, as the reader thread saw it.
#[derive(Debug)]
pub enum Input {
    Market { line: u64, market: Box<Market> },
    Bad { line: u64, reason: String },
}

/// Takes whatever the reader thread has sent so far (never blocks), handing each message to `f`.
/// True once the input has ended (the channel disconnected).
pub fn drain(rx: &Receiver<Input>, mut f: impl FnMut(Input) -> io::Result<()>) -> io::Result<bool> {
    loop {
        match rx.try_recv() {
            Ok(input) => f(input)?,
            Err(TryRecvError::Empty) => return Ok(false),
            Err(TryRecvError::Disconnected) => return Ok(true),
        }
    }
}

/// A bad input line: reported on stderr (`<tool>: stdin line N: skipped: <reason>`) and returned
/// as the bad_input gap that keeps it in the archive too, so a market that was never polled because
/// its record was unusable leaves a trace.
pub fn bad_line(tool: &str, line: u64, reason: &str) -> GapCtx {
    eprintln!("{tool}: stdin line {line}: skipped: {reason}");
    GapCtx { line: Some(line), ..GapCtx::new(GapKind::BadInput) }
}

/// Checks a parsed market record enough to poll it.
fn validate(m: &Market) -> Result<(), String> {
    if m.schema != MARKET_SCHEMA || m.record != "market" {
        return Err(format!("not a {MARKET_SCHEMA} market record (record {:?}, schema {:?})", m.record, m.schema));
    }
    if m.tokens.is_empty() {
        return Err("no tokens".into());
    }
    if let Some(t) = m.tokens.iter().find(|t| !market::is_valid_token_id(&t.token_id)) {
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

/// Parses one input line (blank lines give None).
pub fn parse_line(line: &[u8]) -> Option<Result<Market, String>> {
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

/// A `pmarchive.resolution/1` line (pm-markets writes them into the same stream): not a market to
/// poll, skipped like a blank line.
fn is_resolution(text: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(borrow)]
        schema: Option<&'a str>,
    }
    text.contains(market::RESOLUTION_SCHEMA)
        && serde_json::from_str::<Kind>(text).is_ok_and(|k| k.schema == Some(market::RESOLUTION_SCHEMA))
}

/// Starts the thread that reads market records from `src` (plain or gzip JSONL) and sends them on
/// the returned channel. The channel disconnects at the end of the input (or on a read error, which
/// is reported as a bad line first).
pub fn spawn_reader(src: Box<dyn Read + Send>) -> Receiver<Input> {
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
                    Ok(jsonl::Next::Line) => parse_line(&buf).map(|res| match res {
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
pub fn start(tool: &'static str) -> crate::cli::Result<(Receiver<Input>, crate::envelope::Sequencer)> {
    crate::signal::install();
    let input = spawn_reader(Box::new(crate::cli::stdin()?));
    Ok((input, crate::envelope::Sequencer::new(crate::envelope::RunInfo::new(tool))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::Token;
    use serde_json::Value;

    fn record() -> Market {
        Market {
            record: "market".into(),
            schema: MARKET_SCHEMA.into(),
            venue: "polymarket".into(),
            family: Some(market::Family::M5),
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
            token_id_field: market::CLOB_TOKEN_IDS.into(),
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
        assert!(parse_line(&good).unwrap().is_ok());
        assert!(parse_line(b"   \n").is_none());
        assert!(parse_line(b"not json").unwrap().unwrap_err().starts_with("not a market record"));
        assert!(parse_line(&[0xff, 0xfe]).unwrap().unwrap_err().starts_with("not UTF-8"));
        let mut m = record();
        m.tokens[0].token_id = "12a".into();
        assert!(parse_line(&serde_json::to_vec(&m).unwrap()).unwrap().unwrap_err().contains("decimal"));
        let mut m = record();
        m.window_end_utc = m.window_start_utc.clone();
        assert!(parse_line(&serde_json::to_vec(&m).unwrap()).unwrap().is_err());
        let mut m = record();
        m.schema = "other/1".into();
        assert!(parse_line(&serde_json::to_vec(&m).unwrap()).unwrap().is_err());
        // pm-markets' resolution records share the stream: skipped, not counted as bad lines.
        let r = market::Resolution::of_market(&record(), "resolved", 1);
        assert!(parse_line(&serde_json::to_vec(&r).unwrap()).is_none());
    }

    #[test]
    fn reader_thread_numbers_lines_and_disconnects_at_eof() {
        let good = serde_json::to_string(&record()).unwrap();
        let input = format!("{good}\nnot json\n\n{good}\n");
        let rx = spawn_reader(Box::new(std::io::Cursor::new(input.into_bytes())));
        let got: Vec<Input> = rx.iter().collect();
        assert_eq!(got.len(), 3);
        assert!(matches!(got[0], Input::Market { line: 1, .. }));
        assert!(matches!(got[1], Input::Bad { line: 2, .. }));
        assert!(matches!(got[2], Input::Market { line: 4, .. }));
    }
}
