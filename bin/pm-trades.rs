const USAGE: &str = "
pm-trades — archive the Data API trade feed of the Polymarket BTC up/down markets read on stdin.

Reads market records (schema pmarchive.market/1, as written by `pm-markets --watch`; resolution
records in the same stream are skipped) on stdin and, for every tracked market, walks
`GET {data-api}/v2/trades?condition=<ids>&taker_only=false` (at most 20 condition ids per request,
cursor-only pagination via pagination.next_cursor; docs/TRADES.md has the venue facts). Writes one raw
envelope (schema pmarchive.raw/1, tool pm-trades, stream trades) per line on stdout, flushed per line:
    kind \"http\"   every HTTP attempt = one page, the reply body byte-for-byte (ctx: slot, due_at_utc,
                  walk poll|final|final_taker, page, condition_ids, slugs, taker_only);
    kind \"gap\"    failed_request (no usable reply for a page: the walk stops there and commits
                  nothing), cursor_unfollowable (has_more without a usable next_cursor), backoff (a slot
                  not polled because the venue asked us to back off), missed_slots, bad_input;
    kind \"track\"  a market starts (reason window) or stops being polled (reason grace_elapsed after
                  its final sweep, with ctx.final_sweep complete|failed; signal or duration at the end).

A market is tracked from --lead seconds before its window start until --settle seconds after its
window end, judged on the wall clock and on the monotonic clock (src/track.rs). While tracked it is
polled every --interval: pages are followed until a page holds a row already seen in a completed
walk, or has_more is false (a market not yet walked completely is walked to the end). A walk that
failed half-way commits nothing, so the next one goes as deep again. Once window end + settle has
passed, the final sweep walks the market's whole feed with taker_only=false, then with
taker_only=true (the venue's taker rows, which give the derived rows their role), and the market
stops; a failed sweep is retried at the next slots, 3 tries in all. Slot k is due at start +
k·interval (no drift). Retries (429 with Retry-After, 425, 5xx, network errors, 200 replies with an
error body) never wait past one interval; the client spaces requests at 4 per second at most (20 %
of the documented 200 per 10 s).

Usage:
    pm-markets --watch 30 | pm-trades [options] | jsonl-rotate --stream trades ...

Options:
    --data-url URL      Data API base URL. [default: https://data-api.polymarket.com]
    --interval SECS     Time between polls; fractions allowed. [default: 5]
    --lead SECS         Start polling this long before the window start (0 allowed). [default: 0]
    --settle SECS       Final sweep this long after the window end (0 allowed). [default: 120]
    --batch N           Condition ids per request, 1..20. [default: 20]
    --page-size N       limit of a poll's first page, 1..1000 (later pages: the cursor's size;
                        the final sweep asks for 1000, the documented maximum). [default: 100]
    --timeout SECS      Per-request timeout. [default: 15]
    --retries N         Tries per page, the first included, 1..10. [default: 4]
    --duration SECS     Stop after this long (sample runs, tests). [default: run until stopped]
    --user-agent UA     [default: pm-archive/<version> (public market-data archiver; ...)]
    --check-args        Check the arguments as for a real run, then exit 0 (or 2 with the error)
                        without reading, writing or connecting (pipelines/collect.sh runs this first).
    -h, --help          Show this help.
    -V, --version       Show the version.

Ends: SIGTERM/SIGINT (the request in flight is finished, no further page is asked for), --duration,
or the end of stdin once nothing is tracked or waiting to be tracked. A one-line summary goes to
stderr (slots, requests by status, pages, rows, walks, gaps by type, markets tracked and swept, the
request rate per tracked market-minute, input lines, outages). Bad input lines are reported on
stderr with their line number, counted, skipped and written as a bad_input gap record.

Environment: PMARCHIVE_CLOCK=<RFC3339>[x<rate>][,<±secs>@<secs>]... simulates the clock (tests and
replays only; src/clock.rs).

Exit status: 0 on every end above, also when stdout is closed by its reader; 1 some stdin lines were
not usable market records (bad_input gaps); 2 bad arguments, stdin is a directory, or an I/O error.
";

use pm_archive::cli::{self, ExitCode, PollArgs};
use pm_archive::http::{Client, HttpConfig};
use pm_archive::polymarket::trades::{self, Config, Poller};
use pm_archive::{feed, jsonl};

fn main() {
    cli::main("pm-trades", run)
}

fn run() -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut cfg = Config::new(trades::DEFAULT_DATA_URL);
    let mut args = PollArgs::default();
    while let Some(arg) = p.next()? {
        match arg {
            Long("data-url") => cfg.data_url = cli::base_url(&mut p, "--data-url")?,
            Long("interval") => cfg.interval = cli::seconds(&mut p, "--interval")?,
            Long("lead") => cfg.lead = cli::non_negative_seconds(&mut p, "--lead")?,
            Long("settle") => cfg.settle = cli::non_negative_seconds(&mut p, "--settle")?,
            Long("batch") => cfg.batch = cli::value_in(&mut p, "--batch", 1, trades::MAX_CONDITIONS)?,
            Long("page-size") => cfg.page_size = cli::value_in(&mut p, "--page-size", 1, trades::MAX_PAGE)?,
            Long(name) if PollArgs::OPTIONS.contains(&name) => {
                let name = name.to_owned();
                args.take(&mut p, &name)?
            }
            Short('h') | Long("help") => return cli::help(USAGE),
            Short('V') | Long("version") => return cli::version("pm-trades"),
            other => return cli::unexpected(other),
        }
    }
    cfg.duration = args.duration;
    let Some(hc) = args.finish(cfg.interval, HttpConfig::default().call_timeout)? else {
        return Ok(ExitCode::Success);
    };
    let (input, seq) = feed::start("pm-trades")?;
    let mut poller = Poller::new(cfg, Client::new(hc), seq, jsonl::stdout_lines(), input);
    let end = poller.run()?;
    eprintln!("pm-trades: {}", poller.summary(end));
    Ok(if poller.stats.input_bad > 0 { ExitCode::Failure } else { ExitCode::Success })
}
