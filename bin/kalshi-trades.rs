const USAGE: &str = "
kalshi-trades — archive Kalshi's public trade prints of the KXBTC15M markets read on stdin.

Reads Kalshi market records (schema pmarchive.kalshi_market/1, as written by `kalshi-markets
--watch`; resolution records in the same stream are skipped) on stdin and, for every tracked market,
walks `GET {kalshi-url}/markets/trades?ticker=<ticker>&limit=1000[&min_ts=<secs>]`, following
`cursor` until it is \"\", null or absent (every filter sent again with each page; no keys, no auth
headers; docs/KALSHI.md, Trades). Writes one raw envelope (schema pmarchive.raw/1, venue kalshi,
tool kalshi-trades, stream trades) per line on stdout, flushed per line:
    kind \"http\"   every HTTP attempt = one page, the reply body byte-for-byte (ctx: slot, due_at_utc,
                  walk poll|final, page, ticker, min_ts when sent);
    kind \"gap\"    failed_request (no usable reply for a page, a reply that is not a trades page
                  included: the walk stops there and commits nothing), cursor_unfollowable (a cursor
                  that is not a string or repeats), backoff (a slot not polled while the client backs
                  off), missed_slots, bad_input;
    kind \"track\"  a market starts (reason window) or stops being polled (reason grace_elapsed after
                  its final sweep, with ctx.final_sweep complete|failed; signal or duration at the end).

A market is tracked from --lead seconds before its open_time until --settle seconds after its
close_time, judged on the wall clock and on the monotonic clock (src/track.rs). While tracked it is
walked every --interval, always to the end of the cursor, so the order of the prints does not
matter: its first complete walk reads its whole feed; later polls ask for min_ts = the newest
created_time of the completed walks minus --overlap. trade_id is the dedupe key (the summary counts
new prints; the raw keeps every page). A walk that failed half-way commits nothing, so the next one
asks for the same min_ts again. Once close_time + settle has passed, the final sweep walks the
whole feed once more without min_ts and the market stops; a sweep that failed on a page goes on
from that page (its cursor) at the next slot, 3 tries in all. Slot k is due at start + k·interval
(no drift). Retries (429 without Retry-After: exponential backoff; 5xx, network errors, 200 replies
with an error body) never wait past one interval; the client spaces requests at 2 per second at
most (10 % of the basic tier's ~20 reads/s, docs/KALSHI_FACTS.md §5).

Usage:
    kalshi-markets --watch 60 | kalshi-trades [options] | jsonl-rotate --venue kalshi --stream trades ...

Options:
    --kalshi-url URL    Kalshi REST base URL, /trade-api/v2 included; the documented alternative
                        is https://external-api.kalshi.com/trade-api/v2.
                        [default: https://api.elections.kalshi.com/trade-api/v2]
    --interval SECS     Time between polls; fractions allowed. [default: 5]
    --lead SECS         Start polling this long before open_time (0 allowed). [default: 60]
    --settle SECS       Final sweep this long after close_time (0 allowed). [default: 120]
    --overlap SECS      A poll's min_ts is this far before the newest print seen (0 allowed).
                        [default: 60]
    --timeout SECS      Per-request timeout. [default: 15]
    --retries N         Tries per page, the first included, 1..10. [default: 4]
    --duration SECS     Stop after this long (sample runs, tests). [default: run until stopped]
    --user-agent UA     [default: pm-archive/<version> (public market-data archiver; ...)]
    --check-args        Check the arguments as for a real run, then exit 0 (or 2 with the error)
                        without reading, writing or connecting.
    -h, --help          Show this help.
    -V, --version       Show the version.

Ends: SIGTERM/SIGINT (the request in flight is finished, no further page is asked for), --duration,
or the end of stdin once nothing is tracked or waiting to be tracked. A one-line summary goes to
stderr (slots, requests by status, pages, prints (new, without trade_id), walks, gaps by type,
markets tracked and swept, the request rate per tracked market-minute, input lines, outages). Bad
input lines are reported on stderr with their line number, counted, skipped and written as a
bad_input gap record.

Environment: PMARCHIVE_CLOCK=<RFC3339>[x<rate>][,<±secs>@<secs>]... simulates the clock (tests and
replays only; src/clock.rs).

Exit status: 0 on every end above, also when stdout is closed by its reader; 1 some stdin lines were
not usable market records (bad_input gaps); 2 bad arguments, stdin is a directory, or an I/O error.
";

use pm_archive::cli::{self, ExitCode, PollArgs};
use pm_archive::http::{Client, HttpConfig};
use pm_archive::kalshi::market::Market;
use pm_archive::kalshi::trades::{Config, Poller};
use pm_archive::{feed, jsonl, kalshi};

fn main() {
    cli::main("kalshi-trades", run)
}

fn run() -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut cfg = Config::new(kalshi::DEFAULT_URL);
    let mut args = PollArgs::default();
    while let Some(arg) = p.next()? {
        match arg {
            Long("kalshi-url") => cfg.kalshi_url = cli::base_url(&mut p, "--kalshi-url")?,
            Long("interval") => cfg.interval = cli::seconds(&mut p, "--interval")?,
            Long("lead") => cfg.lead = cli::non_negative_seconds(&mut p, "--lead")?,
            Long("settle") => cfg.settle = cli::non_negative_seconds(&mut p, "--settle")?,
            Long("overlap") => cfg.overlap = cli::non_negative_seconds(&mut p, "--overlap")?,
            Long(name) if PollArgs::OPTIONS.contains(&name) => {
                let name = name.to_owned();
                args.take(&mut p, &name)?
            }
            Short('h') | Long("help") => return cli::help(USAGE),
            Short('V') | Long("version") => return cli::version("kalshi-trades"),
            other => return cli::unexpected(other),
        }
    }
    cfg.duration = args.duration;
    let Some(hc) = args.finish(cfg.interval, HttpConfig::default().call_timeout)? else {
        return Ok(ExitCode::Success);
    };
    let (input, seq) = feed::start::<Market>("kalshi-trades")?;
    let mut poller = Poller::new(cfg, Client::new(hc), seq, jsonl::stdout_lines(), input);
    let end = poller.run()?;
    eprintln!("kalshi-trades: {}", poller.summary(end));
    Ok(if poller.stats.input_bad > 0 { ExitCode::Failure } else { ExitCode::Success })
}
