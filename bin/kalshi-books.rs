const USAGE: &str = "
kalshi-books — poll the order books of the Kalshi KXBTC15M markets read on stdin.

Reads Kalshi market records (schema pmarchive.kalshi_market/1, as written by `kalshi-markets
--watch`) on stdin and polls the whole order book of every tracked market with
`GET {kalshi}/markets/{ticker}/orderbook` (no depth parameter: all levels; both the YES and the NO
bid ladders) once per slot, on a fixed schedule: slot k is due at start + k·interval (no drift). No
keys and no auth headers are sent. Writes one raw envelope (schema pmarchive.raw/1, venue kalshi,
tool kalshi-books) per line on stdout, flushed per line:
    kind \"http\"   every HTTP attempt, the reply body byte-for-byte (endpoint kalshi-books; ctx: slot,
                  due_at_utc, ticker, event_ticker);
    kind \"gap\"    something that should be in the archive is not: failed_request (no usable reply
                  for a market within its slot, or a 200 reply that is not an order book: the reply
                  is in the http line before it; ctx.ticker), backoff (a slot not polled because the
                  client backs off after failures in a row; one per market), missed_slots (slots
                  never started because an earlier slot overran), bad_input (an unusable stdin line);
    kind \"track\"  a market starts or stops being polled (ctx: action, reason, series_ticker,
                  event_ticker, ticker, window_start_utc, window_end_utc, slot).

A market is tracked from --lead seconds before its window start (open_time) until --grace seconds
after its window end (close_time; reason grace_elapsed), or until Kalshi no longer has its book (a
404 after the window end: reason book_gone), or until a record carries the window's result (reason
closed). The window is judged on the wall clock and on the monotonic clock, as in pm-books: a
wall-clock step stops no live market. A market arriving on stdin is picked up at the next slot;
records with change=\"expired\" start nothing; any other record of a known market replaces the stored
one; after a book_gone or closed stop a record restarts nothing. The 200 replies are checked with the
order-book parser (orderbook_fp, then orderbook.{yes_dollars,no_dollars}, then legacy cents).
Retries (429 — Kalshi sends no Retry-After, so the client backs off exponentially — 5xx, network
errors, replies that are not JSON) never wait past the next slot's due time. A slot with nothing
tracked sends nothing and writes nothing. The request rate is limited per family (kalshi-books:
8 requests/s, within the basic tier's ~20 reads/s).

Usage:
    kalshi-markets --watch 60 | kalshi-books [options] | jsonl-rotate ...

Options:
    --kalshi-url URL    Kalshi Trade API base URL; paths are appended to it. The documented
                        alternative is https://external-api.kalshi.com/trade-api/v2.
                        [default: https://api.elections.kalshi.com/trade-api/v2]
    --interval SECS     Time between slots; fractions allowed. [default: 1]
    --lead SECS         Start tracking this long before the window start (0 allowed). [default: 60]
    --grace SECS        Keep tracking this long after the window end (0 allowed). [default: 120]
    --timeout SECS      Per-request timeout (connect, send, reply). [default: 5 × interval, at
                        least 2, at most 15]
    --retries N         Tries per request, the first included, 1..10; retries also stop at the
                        next slot's due time. [default: 4]
    --duration SECS     Stop after this long (sample runs, tests). [default: run until stopped]
    --user-agent UA     [default: pm-archive/<version> (public market-data archiver; ...)]
    --check-args        Check the arguments as for a real run, then exit 0 (or 2 with the error)
                        without reading, writing or connecting.
    -h, --help          Show this help.
    -V, --version       Show the version.

Outages: one stderr line when requests stop getting a usable reply (\"kalshi-books: outage: ...\")
and one when a reply comes back (\"kalshi-books: outage over: ...\"); every failure is also a record
on stdout.

Ends: SIGTERM/SIGINT (the request in flight is finished), --duration, or the end of stdin once
nothing is tracked or waiting to be tracked. Markets still tracked at the end get a track stop
record with reason signal or duration. A one-line summary goes to stderr (slots, requests by
status, gaps by type, markets tracked, input lines, outages). Bad input lines are reported on
stderr with their line number, counted, skipped and written as a bad_input gap record.

Environment: PMARCHIVE_CLOCK=<RFC3339>[x<rate>][,<±secs>@<secs>]... simulates the clock (tests and
replays only; src/clock.rs).

Exit status: 0 on every end above, also when stdout is closed by its reader; 1 some stdin lines
were not usable market records (bad_input gaps); 2 bad arguments, stdin is a directory, or an I/O
error.
";

use pm_archive::cli::{self, ExitCode, PollArgs};
use pm_archive::http::Client;
use pm_archive::kalshi::books::{Config, Poller};
use pm_archive::kalshi::market::Market;
use pm_archive::kalshi::DEFAULT_URL;
use pm_archive::polymarket::books::default_timeout;
use pm_archive::{feed, jsonl};

fn main() {
    cli::main("kalshi-books", run)
}

fn run() -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut cfg = Config::new(DEFAULT_URL);
    let mut args = PollArgs::default();
    while let Some(arg) = p.next()? {
        match arg {
            Long("kalshi-url") => cfg.kalshi_url = cli::base_url(&mut p, "--kalshi-url")?,
            Long("interval") => cfg.interval = cli::seconds(&mut p, "--interval")?,
            Long("lead") => cfg.lead = cli::non_negative_seconds(&mut p, "--lead")?,
            Long("grace") => cfg.grace = cli::non_negative_seconds(&mut p, "--grace")?,
            Long(name) if PollArgs::OPTIONS.contains(&name) => {
                let name = name.to_owned();
                args.take(&mut p, &name)?
            }
            Short('h') | Long("help") => return cli::help(USAGE),
            Short('V') | Long("version") => return cli::version("kalshi-books"),
            other => return cli::unexpected(other),
        }
    }
    cfg.duration = args.duration;
    let Some(hc) = args.finish(cfg.interval, default_timeout(cfg.interval))? else {
        return Ok(ExitCode::Success);
    };
    let (input, seq) = feed::start::<Market>("kalshi-books")?;
    let mut poller = Poller::new(cfg, Client::new(hc), seq, jsonl::stdout_lines(), input);
    let end = poller.run()?;
    eprintln!("kalshi-books: {}", poller.summary(end));
    Ok(if poller.stats.input_bad > 0 { ExitCode::Failure } else { ExitCode::Success })
}
