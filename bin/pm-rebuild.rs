const USAGE: &str = "
pm-rebuild — rebuild Polymarket order books from raw websocket frames and verify every change.

Reads raw lines (schema pmarchive.raw/1, as written by pm-stream; plain or gzip, several files in
order, or stdin): websocket frames (kind \"ws\", ctx.event \"frame\") and REST book replies (kind
\"http\", endpoint \"books\"/\"book\", status 200). Per asset it applies `book` events (full state)
and `price_change` entries (size = new absolute size at that price, \"0\" removes the level; BUY =
bid, SELL = ask) and checks each rebuilt state against the venue's SHA-1 book hash (the ten-field
routine with last_trade_price, docs/WEBSOCKET.md). Consecutive changes of an asset with the same
timestamp and hash (entries of one message, same-timestamp bursts of several messages) are one
state: checked once, one row. The input is read offline, so trade prices that arrive before the
asset's next change are still tried for a state.

`book` refreshes without tick_size/last_trade_price (the venue's books after a trade) take both
from the asset's current state; the trade prices seen are tried, and when none reproduces the hash
the tick grid is searched for the price of a trade the input does not hold (only a SHA-1 match
counts). A state that still cannot be checked is unverifiable (counted by reason), not a mismatch.
A mismatch marks the asset untrusted until the next `book` event or REST snapshot (a later matching
hash does not restore trust; it is counted as matches_while_untrusted). REST books are checked as
pm-normalize checks them (missing fields: hash_ok null); those at the same exchange timestamp as
the rebuilt book are cross-checked (agree/disagree).

WS books carry no min_order_size/neg_risk (both enter the hash): they are taken from the latest
REST book of the same token, else from --min-order-size/--neg-risk.

Writes the same rows as pm-normalize (schema pmarchive.orderbook/1, record \"book\", written by
pm-normalize's row formatter, docs/ORDERBOOK_SCHEMA.md) on stdout: one per rebuilt state (or sampled
with --every-ms), with `source` \"ws\" (state after a websocket message) or \"ws_rest\" (state set
from a REST book in the stream), `hash_ok` = the rebuilt state reproduces the venue's hash (null:
unverifiable), and the flag `untrusted` while the book is untrusted. A state's row is written when
the asset's next event (or the end of its file) shows the state complete, so rows of different
assets can interleave differently from the input. The slug/outcome join comes from `track` lines
in the input and --markets. Trades (last_trade_price events) go to --trades-out (schema
pmarchive.trade/1). A verification summary (every hash check, a verified rate per input file) goes
to stderr and, with --summary, to a JSON file.

Usage:
    pm-rebuild [options] [FILE ...]      (no FILE or '-': stdin)

Options:
    --depth N|all         Levels per side in `bids`/`asks`, as pm-normalize. [default: 10]
    --top                 Top of book only (same as --depth 0: `bids`/`asks` are null).
    --markets FILE        Join slug/outcome/family for tokens from FILE, as pm-normalize: market
                          records (pmarchive.market/1) and/or raw files with `track` lines. Repeatable.
    --max-lag SECS        Flag `recv_far` when receive and exchange time differ by more. [default: 60]
    --every-ms MS         At most one row per asset per MS of exchange time (rows of book events and
                          REST snapshots are always written). [default: a row per state]
    --trades-out FILE     Write trade rows (pmarchive.trade/1, pm-tradeset's row; one per print, not
                          deduplicated) to FILE, atomically (complete at the end, or not there).
    --summary FILE        Write the verification summary (JSON) to FILE.
    --min-order-size S    min_order_size for hashing when no REST book is known. [default: 5]
    --neg-risk BOOL       neg_risk for hashing when no REST book is known. [default: false]
    --tick-size S         tick_size for a `book` without one when the asset has no earlier state
                          (older captures' initial books). [default: none: such states are
                          unverifiable and their rows have tick_size null]
    --no-rows             Verify only; write no book rows.
    --threads N           Threads to keep busy: the one that rebuilds the books, the one that
                          formats rows (always, unless --no-rows) and, when N leaves room for it
                          (N >= 3 with rows, N >= 2 with --no-rows), one that computes the SHA-1
                          of every state from its own copy of the books (else the rebuilding
                          thread hashes). The output is the same for any N. [default: the number
                          of cores + 1: all three threads from 2 cores]
    -h, --help            Show this help.
    -V, --version         Show the version.

Exit status: 0 every check passed or was unverifiable; 1 a hash mismatch on a trusted book, a REST
cross-check disagreement, or unreadable input (bad lines, lines over 256 MiB, a truncated gzip: each
reported on stderr as FILE:LINE); 2 bad arguments, an input that cannot be opened, or an I/O error on
output. A closed stdout ends the tool with 0.
";

use std::io::{self, Write};
use std::path::PathBuf;

use pm_archive::cli::{self, ExitCode};
use pm_archive::normalize::{self, dec::Dec};
use pm_archive::polymarket::rebuild::{Options, ReadError, Rebuilder};

fn main() {
    cli::main("pm-rebuild", run)
}

fn run() -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut opts = Options::default();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut trades_out: Option<PathBuf> = None;
    let mut summary: Option<PathBuf> = None;
    let mut markets: Vec<PathBuf> = Vec::new();
    while let Some(arg) = p.next()? {
        match arg {
            Long("depth") => {
                let v: String = cli::value(&mut p, "--depth")?;
                opts.rows.depth = normalize::parse_depth(&v).map_err(cli::Error::Usage)?;
            }
            Long("top") => opts.rows.depth = 0,
            Long("markets") => markets.push(cli::value(&mut p, "--markets")?),
            Long("max-lag") => {
                opts.rows.max_lag_ms = (cli::seconds(&mut p, "--max-lag")?.as_secs_f64() * 1000.0).round() as i64
            }
            Long("every-ms") => {
                let v: i64 = cli::value(&mut p, "--every-ms")?;
                if v <= 0 {
                    return cli::usage("--every-ms: must be > 0");
                }
                opts.every_ms = Some(v);
            }
            Long("trades-out") => trades_out = Some(cli::value::<String>(&mut p, "--trades-out")?.into()),
            Long("summary") => summary = Some(cli::value::<String>(&mut p, "--summary")?.into()),
            Long("min-order-size") => {
                opts.min_order_size = serde_json::Value::String(cli::value(&mut p, "--min-order-size")?)
            }
            Long("neg-risk") => opts.neg_risk = serde_json::Value::Bool(cli::value(&mut p, "--neg-risk")?),
            Long("tick-size") => {
                let v: String = cli::value(&mut p, "--tick-size")?;
                if !Dec::parse(&v).is_some_and(|t| t.signum() > 0 && t < Dec { m: 1, s: 0 }) {
                    return cli::usage(format!("--tick-size: not a decimal tick size in (0, 1): {v}"));
                }
                opts.tick_size = Some(serde_json::Value::String(v));
            }
            Long("no-rows") => opts.write_rows = false,
            Long("threads") => opts.threads = cli::value_in(&mut p, "--threads", 1, 1024)?,
            Short('h') | Long("help") => return cli::help(USAGE),
            Short('V') | Long("version") => return cli::version("pm-rebuild"),
            Value(v) => files.push(v.into()),
            other => return cli::unexpected(other),
        }
    }
    if files.is_empty() {
        files.push("-".into());
    }
    for m in &markets {
        if !m.is_file() {
            return cli::usage(format!("--markets: no such file: {}", m.display()));
        }
    }
    let out: Box<dyn Write + Send> = if opts.write_rows { Box::new(io::stdout()) } else { Box::new(io::sink()) };
    let mut rb = Rebuilder::new(opts, out);
    if let Some(path) = &trades_out {
        rb.trades_out(path).map_err(|e| cli::Error::Usage(format!("--trades-out {}: {e}", path.display())))?;
    }
    for m in &markets {
        let (_, bad) = rb.load_markets(m).map_err(|e| cli::Error::Msg(format!("--markets {}: {e}", m.display())))?;
        for b in &bad {
            eprintln!("pm-rebuild: --markets: skipped line {b}");
        }
    }
    let mut reported = 0;
    for f in &files {
        rb.read_file(f, &mut reported).map_err(|e| match e {
            ReadError::Open(e) => cli::Error::Msg(format!("{}: {e}", f.display())),
            ReadError::Output(e) => cli::Error::from(e),
        })?;
    }
    let stats = rb.finish()?;
    eprintln!("pm-rebuild: {}", stats.line());
    if let Some(path) = &summary {
        let mut text = serde_json::to_vec_pretty(&stats)?;
        text.push(b'\n');
        pm_archive::util::write_atomic(path, &text)
            .map_err(|e| cli::Error::Msg(format!("--summary {}: {e}", path.display())))?;
    }
    let failed = rb.found_problems() || stats.bad_lines > 0;
    Ok(if failed { ExitCode::Failure } else { ExitCode::Success })
}
