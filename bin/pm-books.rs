const USAGE: &str = "
pm-books — poll the order books of the Polymarket BTC up/down markets read on stdin.

Reads market records (schema pmarchive.market/1, as written by `pm-markets --watch`) on stdin and
polls both outcome tokens of every tracked market with batched `POST {clob}/books` on a fixed
schedule: slot k is due at start + k·interval (no drift). Writes one raw envelope (schema
pmarchive.raw/1, tool pm-books) per line on stdout, flushed per line:
    kind \"http\"   every HTTP attempt, the reply body byte-for-byte (ctx: slot, due_at_utc, token_ids,
                  batch, batches);
    kind \"gap\"    something that should be in the archive is not: missing_token (a token asked for
                  is absent from a 200 reply), failed_request (no usable reply for a batch within its
                  slot), missed_slots (slots never started because an earlier slot overran);
    kind \"track\"  a market starts or stops being polled (reasons below).

A market is tracked from --lead seconds before its window start until --grace seconds after its
window end (reason grace_elapsed), or until the venue no longer has its books: after the window end,
a token absent from 3 consecutive successful replies stops being polled (reason book_gone), or until
a record says the market is closed (reason closed). The window is judged on the wall clock and on the
monotonic clock: tracking starts when either reached window start - lead and stops by the clock only
when both passed window end + grace, so a wall-clock step (NTP, VM resume) stops no live market. A
market arriving on stdin is picked up at the next slot; a record of a market that is still live
starts it (also one ignored earlier as over); after a book_gone or closed stop it restarts nothing.
Records with change=\"expired\" start nothing; any other record of
a known market replaces the stored one. Replies are matched to tokens by asset_id.
Retries (429 with Retry-After, 5xx, network errors, unusable 200 replies) never wait past the next
slot's due time. A slot with nothing tracked sends nothing and writes nothing.

Usage:
    pm-markets --watch 30 | pm-books [options] | jsonl-rotate ...

Options:
    --clob-url URL      CLOB base URL. [default: https://clob.polymarket.com]
    --interval SECS     Time between slots; fractions allowed. [default: 1]
    --lead SECS         Start tracking this long before the window start (0 allowed). [default: 60]
    --grace SECS        Keep tracking this long after the window end (0 allowed). [default: 120]
    --batch N           Tokens per request, 1..500. [default: 500]
    --timeout SECS      Per-request timeout (connect, send, reply). A slower reply is kept and the
                        slots it overran are recorded as missed. [default: 5 × interval, at least
                        2, at most 15]
    --retries N         Tries per request, the first included, 1..10; retries also stop at the
                        next slot's due time. [default: 4]
    --duration SECS     Stop after this long (sample runs, tests). [default: run until stopped]
    --user-agent UA     [default: pm-archive/<version> (public market-data archiver; ...)]
    --check-args        Check the arguments as for a real run, then exit 0 (or 2 with the error)
                        without reading, writing or connecting (pipelines/collect.sh runs this first).
    -h, --help          Show this help.
    -V, --version       Show the version.

Outages: one stderr line when requests stop getting a usable reply (\"pm-books: outage: ...\", the
first failure after a success or since the start) and one when a reply comes back (\"pm-books: outage
over: ... after S s and N failed attempt(s)\"); every failure is also a record on stdout.

Ends: SIGTERM/SIGINT (the request in flight is finished), --duration, or the end of stdin once
nothing is tracked or waiting to be tracked. Markets still tracked at the end get a track stop
record with reason signal or duration. A one-line summary goes to stderr (slots,
requests by status, gaps by type, markets tracked, input lines, outages). Bad input lines are
reported on stderr with their line number, counted, skipped and written as a bad_input gap record.
Slots that fall inside a backoff the venue asked for (429 Retry-After, failures in a row) are not
polled: each is a backoff gap record.

Environment: PMARCHIVE_CLOCK=<RFC3339>[x<rate>][,<±secs>@<secs>]... simulates the clock (tests and
replays only; src/clock.rs).

Exit status: 0 on every end above, also when stdout is closed by its reader; 1 some stdin lines
were not usable market records (bad_input gaps); 2 bad arguments, stdin is a directory, or an I/O
error.
";

use pm_archive::cli::{self, ExitCode, PollArgs};
use pm_archive::http::{self, Client};
use pm_archive::polymarket::books::{self, Config, Poller};
use pm_archive::{feed, jsonl};

fn main() {
    cli::main("pm-books", run)
}

fn run() -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut cfg = Config::new(http::DEFAULT_CLOB_URL);
    let mut args = PollArgs::default();
    while let Some(arg) = p.next()? {
        match arg {
            Long("clob-url") => cfg.clob_url = cli::base_url(&mut p, "--clob-url")?,
            Long("interval") => cfg.interval = cli::seconds(&mut p, "--interval")?,
            Long("lead") => cfg.lead = cli::non_negative_seconds(&mut p, "--lead")?,
            Long("grace") => cfg.grace = cli::non_negative_seconds(&mut p, "--grace")?,
            Long("batch") => cfg.batch = cli::value_in(&mut p, "--batch", 1, books::MAX_BATCH)?,
            Long(name) if PollArgs::OPTIONS.contains(&name) => {
                let name = name.to_owned();
                args.take(&mut p, &name)?
            }
            Short('h') | Long("help") => return cli::help(USAGE),
            Short('V') | Long("version") => return cli::version("pm-books"),
            other => return cli::unexpected(other),
        }
    }
    cfg.duration = args.duration;
    let Some(hc) = args.finish(cfg.interval, books::default_timeout(cfg.interval))? else {
        return Ok(ExitCode::Success);
    };
    let (input, seq) = feed::start("pm-books")?;
    let mut poller = Poller::new(cfg, Client::new(hc), seq, jsonl::stdout_lines(), input);
    let end = poller.run()?;
    eprintln!("pm-books: {}", poller.summary(end));
    Ok(if poller.stats.input_bad > 0 { ExitCode::Failure } else { ExitCode::Success })
}
