const USAGE: &str = "
pm-markets — discover the Polymarket BTC up/down markets and resolve their outcome token ids.

For each family it computes the slugs of the current window and the next N from the clock
(5m/15m/4h: btc-updown-<f>-<window start, unix s>; 1h and daily: dated in US Eastern time),
fetches each from Gamma (GET /markets/slug/<slug>) and writes one normalized market record
(schema pmarchive.market/1) per line on stdout. A slug that is not listed yet is normal.

Outcome ids are chosen by the record's `version` (Polymarket Protocol V2): \"v2\" -> positionIds,
\"v1\" or none -> clobTokenIds. Any other version is counted, reported and kept raw, never guessed.

Watch mode follows every market after its window: it re-checks Gamma until Gamma says the market
is resolved and then writes one resolution record (schema pmarchive.resolution/1: winning token,
outcome prices, closedTime), or, when --resolve-for runs out first, one with result \"unresolved\".
When Gamma cannot be reached, one stderr line says so (\"outage: ... no market yet\") and one says
when it answers again.

Usage:
    pm-markets --once [options]
    pm-markets --watch SECS [options]

Modes:
    --once              One pass; records have change=\"snapshot\".
    --watch SECS        Re-discover every SECS seconds forever; write a record whenever a market
                        appears (change=\"new\"), changes status (\"changed\") or expires
                        (\"expired\", keep-after seconds after its window ended).

Options:
    --families LIST     Comma-separated subset of 5m,15m,1h,4h,daily. [default: all five]
    --ahead N           Windows after the current one, per family. [default: 1]
    --keep-after SECS   Watch: keep re-checking a market this long after its window ends, then
                        report it expired. [default: 600]
    --resolve-every SECS  Watch: re-check an expired, unresolved market this often. [default: 60]
    --resolve-for SECS  Watch: follow a market's resolution at most this long after its window
                        ends; 0 = do not follow resolutions. [default: 10800]
    --gamma-url URL     Gamma base URL. [default: https://gamma-api.polymarket.com]
    --raw-out PATH      Append the raw Gamma exchanges (envelopes, schema pmarchive.raw/1, one per
                        HTTP attempt) to PATH, a file or a FIFO. Without it they are not kept.
    --now RFC3339       Compute the windows as of this instant instead of the clock (--once only).
    --timeout SECS      Per-request timeout. [default: 15]
    --user-agent UA     [default: pm-archive/<version> (public market-data archiver; ...)]
    --check-args        Check the arguments as for a real run, then exit 0 (or 2 with the error)
                        without reading, writing or connecting (pipelines/collect.sh runs this first).
    -h, --help          Show this help.
    -V, --version       Show the version.

Exit status: 0 success; 1 (--once) some window could not be fetched or its record was malformed
or of an unsupported version;
2 bad arguments or an I/O error. A closed stdout ends the tool with 0.
";

use std::time::Duration;

use pm_archive::cli::{self, ExitCode, WatchArgs};
use pm_archive::envelope::{RunInfo, Sequencer};
use pm_archive::http::{self, Client};
use pm_archive::polymarket::market::{Family, ALL_FAMILIES};
use pm_archive::polymarket::markets::{Config, Discoverer};
use pm_archive::{clock, jsonl, signal};

fn main() {
    cli::main("pm-markets", run)
}

fn run() -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut args = WatchArgs::default();
    let mut families: Vec<Family> = ALL_FAMILIES.to_vec();
    let mut ahead: u32 = 1;
    let mut keep_after = Duration::from_secs(600);
    let mut resolve_for = Duration::from_secs(10_800);
    let mut gamma_url = http::DEFAULT_GAMMA_URL.to_string();
    while let Some(arg) = p.next()? {
        match arg {
            Long("families") => {
                let list: String = cli::value(&mut p, "--families")?;
                families = Vec::new();
                for f in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    match Family::parse(f) {
                        Some(fam) if !families.contains(&fam) => families.push(fam),
                        Some(_) => {}
                        None => {
                            return cli::usage(format!("--families: unknown family '{f}' (known: 5m,15m,1h,4h,daily)"))
                        }
                    }
                }
                if families.is_empty() {
                    return cli::usage("--families: empty list");
                }
            }
            Long("ahead") => ahead = cli::value(&mut p, "--ahead")?,
            Long("keep-after") => {
                keep_after = Duration::from_secs_f64(cli::value::<f64>(&mut p, "--keep-after")?.max(0.0))
            }
            Long("resolve-for") => {
                let v: f64 = cli::value(&mut p, "--resolve-for")?;
                if !(v.is_finite() && (0.0..=30.0 * 86_400.0).contains(&v)) {
                    return cli::usage(format!("--resolve-for: 0 to 2592000 seconds, got {v}"));
                }
                resolve_for = Duration::from_secs_f64(v);
            }
            Long("gamma-url") => gamma_url = cli::base_url(&mut p, "--gamma-url")?,
            Long(name) if WatchArgs::OPTIONS.contains(&name) => {
                let name = name.to_owned();
                args.take(&mut p, &name)?
            }
            Short('h') | Long("help") => return cli::help(USAGE),
            Short('V') | Long("version") => return cli::version("pm-markets"),
            other => return cli::unexpected(other),
        }
    }
    args.check()?;
    if ahead > 500 {
        return cli::usage("--ahead: at most 500");
    }
    if args.check_args {
        return Ok(ExitCode::Success);
    }
    let raw = cli::append_out(args.raw_out.as_deref(), "--raw-out")?;
    signal::install();
    let resolve_every = args.resolve_every.unwrap_or(Duration::from_secs(60));
    let cfg = Config { gamma_url, families, ahead, keep_after, resolve_every, resolve_for };
    let mut d = Discoverer::new(cfg, Client::new(args.http), Sequencer::new(RunInfo::new("pm-markets")), raw);
    let mut out = jsonl::stdout_lines();
    match args.watch {
        None => {
            let failed = d.run_once(args.now.unwrap_or_else(clock::now), &mut out)?;
            Ok(if failed { ExitCode::Failure } else { ExitCode::Success })
        }
        Some(every) => {
            d.run_watch(every, &mut out)?;
            Ok(ExitCode::Success)
        }
    }
}
