const USAGE: &str = "
kalshi-markets — discover the Kalshi KXBTC15M markets (BTC up or down in the next 15 minutes).

Each pass lists the series' markets from Kalshi's public REST API, without keys:
GET <url>/markets?series_ticker=<S>&status=open (the window trading now), then status=unopened
(the next windows stay \"initialized\" until their open_time), following the cursor page by page
until it is \"\", null or absent, with the filters sent again on every page. It keeps the current
window and the next N and writes one market record (schema pmarchive.kalshi_market/1) per line on
stdout, in window order. The window is the market's open_time..close_time as sent; the ticker is
never parsed for times. A market object that cannot be used (no ticker, a ticker that is not a
safe token, bad times, another series) is counted and reported on stderr, never used; its page
is in the raw exchanges either way.

Watch mode follows every market after its window: it re-checks it (GET <url>/markets/<ticker>)
until Kalshi sets its result and then writes one resolution record (schema
pmarchive.kalshi_resolution/1: result yes/no, status, expiration_value), or, when --resolve-for
runs out first, one with result \"unresolved\". When Kalshi cannot be reached, one stderr line says
so (\"outage: ... no market yet\") and one says when it answers again. HTTP 429 carries no
Retry-After on Kalshi: the client's exponential backoff applies.

Usage:
    kalshi-markets --once [options]
    kalshi-markets --watch SECS [options]

Modes:
    --once              One pass; records have change=\"snapshot\".
    --watch SECS        Re-discover every SECS seconds until stopped; write a record whenever a
                        market appears (change=\"new\"), changes status or strike (\"changed\") or
                        expires (\"expired\", keep-after seconds after its window ended).

Options:
    --series TICKER     The Kalshi series. [default: KXBTC15M]
    --ahead N           Windows after the current one to keep (0..500). [default: 1]
    --keep-after SECS   Watch: keep re-checking a market this long after its window ends, then
                        report it expired. [default: 600]
    --resolve-every SECS  Watch: re-check an expired market without a result this often.
                        [default: 60]
    --resolve-for SECS  Watch: follow a market's resolution at most this long after its window
                        ends (0..2592000); 0 = do not follow resolutions. [default: 10800]
    --kalshi-url URL    Kalshi REST base URL, paths appended.
                        [default: https://api.elections.kalshi.com/trade-api/v2]
                        Kalshi also documents https://external-api.kalshi.com/trade-api/v2.
    --raw-out PATH      Append the raw Kalshi exchanges (envelopes, schema pmarchive.raw/1, venue
                        kalshi, one per HTTP attempt) to PATH, a file or a FIFO. Without it they
                        are not kept.
    --now RFC3339       Choose the windows as of this instant instead of the clock (--once only).
    --duration SECS     Watch: stop after this long (sample runs, tests). [default: until stopped]
    --timeout SECS      Per-request timeout. [default: 15]
    --user-agent UA     [default: pm-archive/<version> (public market-data archiver; ...)]
    --check-args        Check the arguments as for a real run, then exit 0 (or 2 with the error)
                        without reading, writing or connecting.
    -h, --help          Show this help.
    -V, --version       Show the version.

Exit status: 0 success; 1 (--once) a listing could not be fetched or something in it was
malformed; 2 bad arguments or an I/O error. A closed stdout ends the tool with 0.
";

use std::time::Duration;

use pm_archive::cli::{self, ExitCode, WatchArgs};
use pm_archive::http::Client;
use pm_archive::kalshi::market::{self, SERIES};
use pm_archive::kalshi::markets::{Config, Discoverer};
use pm_archive::kalshi::DEFAULT_URL;
use pm_archive::{clock, jsonl, signal};

fn main() {
    cli::main("kalshi-markets", run)
}

fn run() -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut args = WatchArgs::default();
    let mut cfg = Config {
        kalshi_url: DEFAULT_URL.to_string(),
        series: SERIES.to_string(),
        ahead: 1,
        keep_after: Duration::from_secs(600),
        resolve_every: Duration::from_secs(60),
        resolve_for: Duration::from_secs(10_800),
    };
    let mut duration = None;
    while let Some(arg) = p.next()? {
        match arg {
            Long("series") => {
                cfg.series = cli::value(&mut p, "--series")?;
                if !market::is_valid_ticker(&cfg.series) {
                    return cli::usage(format!("--series: not a Kalshi series ticker: '{}'", cfg.series));
                }
            }
            Long("ahead") => cfg.ahead = cli::value_in(&mut p, "--ahead", 0, 500)?,
            Long("keep-after") => cfg.keep_after = cli::non_negative_seconds(&mut p, "--keep-after")?,
            Long("resolve-for") => {
                cfg.resolve_for = Duration::from_secs_f64(cli::value_in(&mut p, "--resolve-for", 0.0, 2_592_000.0)?)
            }
            Long("kalshi-url") => cfg.kalshi_url = cli::base_url(&mut p, "--kalshi-url")?,
            Long("duration") => duration = Some(cli::seconds(&mut p, "--duration")?),
            Long(name) if WatchArgs::OPTIONS.contains(&name) => {
                let name = name.to_owned();
                args.take(&mut p, &name)?
            }
            Short('h') | Long("help") => return cli::help(USAGE),
            Short('V') | Long("version") => return cli::version("kalshi-markets"),
            other => return cli::unexpected(other),
        }
    }
    args.check()?;
    if duration.is_some() && args.once {
        return cli::usage("--duration only works with --watch");
    }
    if args.check_args {
        return Ok(ExitCode::Success);
    }
    cfg.resolve_every = args.resolve_every.unwrap_or(cfg.resolve_every);
    let mut hc = args.http;
    hc.connect_timeout = hc.connect_timeout.min(hc.call_timeout);
    let raw = cli::append_out(args.raw_out.as_deref(), "--raw-out")?;
    signal::install();
    let mut d = Discoverer::new(cfg, Client::new(hc), raw);
    let mut out = jsonl::stdout_lines();
    match args.watch {
        None => {
            let failed = d.run_once(args.now.unwrap_or_else(clock::now), &mut out)?;
            Ok(if failed { ExitCode::Failure } else { ExitCode::Success })
        }
        Some(every) => {
            d.run_watch(every, duration, &mut out)?;
            Ok(ExitCode::Success)
        }
    }
}
