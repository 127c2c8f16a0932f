const USAGE: &str = "
pm-probe — a bounded probe of the public Polymarket endpoints the archive may use (checkpoint 2).

It resolves the current 5-minute BTC up/down market on Gamma (GET /markets/slug/btc-updown-5m-<window
start>; the next window's slug if the current one is not listed; or --slug), takes its two outcome
token ids, and asks the CLOB once each for: GET /book, POST /books (both tokens), GET /price (BUY and
SELL), /midpoint, /spread, /last-trade-price, /tick-size, /time, and GET /book of a syntactically valid
but unknown token id (to record the not-found reply). The market websocket is not probed.

For every endpoint it records the URL, status, latency, content type, the fields seen (wire order)
with their JSON types, time-like fields with an interpretation (unix s/ms → UTC, RFC 3339, …),
rate-limit headers and Retry-After, body size, JSON validity and an error summary, and writes
    DIR/polymarket_public_sources_probe_v1.json   (machine-readable)
    DIR/polymarket_public_sources_probe_v1.md     (human report, checkpoint-2 questions answered)
Both are replaced atomically. When a base URL is 127.0.0.1/localhost/::1 the run is labelled
run_kind \"loopback\" (LOOPBACK REPLAY OF RECORDED RESPONSES — NOT A LIVE PROBE), else \"live\".

Bounded: at most --max-requests HTTP attempts in total (retries count; the probe stops cleanly when
the cap is reached and says so), at most 2 tries per request, and at least --min-spacing seconds
between one attempt's end and the next one's start, on top of the client's per-endpoint limiter.

Usage:
    pm-probe [options]

Options:
    --gamma-url URL     Gamma base URL. [default: https://gamma-api.polymarket.com]
    --clob-url URL      CLOB base URL. [default: https://clob.polymarket.com]
    --slug SLUG         Probe this Gamma market slug instead of the current 5m BTC window.
    --max-requests N    Hard cap on HTTP attempts, 1..=200. [default: 30]
    --min-spacing SECS  Minimum pause between requests, 0..=60. [default: 1.0]
    --out-dir DIR       Where the two report files go. [default: data/probes]
    --raw-out PATH      Append every attempt's raw envelope (pmarchive.raw/1, tool pm-probe) to PATH.
    --timeout SECS      Per-request timeout. [default: 15]
    --user-agent UA     [default: pm-archive/<version> (public market-data archiver; ...)]
    -h, --help          Show this help.
    -V, --version       Show the version.

Exit status: 0 every endpoint answered (any HTTP status, 4xx included); 1 some endpoint gave no reply,
or was not probed (request cap reached, no token id resolved, interrupted) — the report is written
either way; 2 bad arguments or an I/O error.
";

use std::path::PathBuf;
use std::time::Duration;

use pm_archive::cli::{self, ExitCode};
use pm_archive::envelope::{RunInfo, Sequencer};
use pm_archive::http::{self, Client, HttpConfig};
use pm_archive::polymarket::probe::{Config, Prober};
use pm_archive::{signal, util};

fn main() {
    cli::main("pm-probe", run)
}

fn run() -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut cfg = Config {
        gamma_url: http::DEFAULT_GAMMA_URL.to_string(),
        clob_url: http::DEFAULT_CLOB_URL.to_string(),
        slug: None,
        max_requests: 30,
        min_spacing: Duration::from_secs(1),
        max_attempts: 2,
        out_dir: PathBuf::from("data/probes"),
    };
    let mut raw_out: Option<String> = None;
    let mut hc = HttpConfig::default();
    while let Some(arg) = p.next()? {
        match arg {
            Long("gamma-url") => cfg.gamma_url = cli::base_url(&mut p, "--gamma-url")?,
            Long("clob-url") => cfg.clob_url = cli::base_url(&mut p, "--clob-url")?,
            Long("slug") => {
                let s: String = cli::value(&mut p, "--slug")?;
                // Slugs are [a-z0-9-]; anything else is a typo (and it goes into a URL path).
                if !util::is_safe_component(&s) {
                    return cli::usage(format!("--slug: not a market slug: '{s}'"));
                }
                cfg.slug = Some(s);
            }
            Long("max-requests") => {
                cfg.max_requests = cli::value(&mut p, "--max-requests")?;
                if !(1..=200).contains(&cfg.max_requests) {
                    return cli::usage(format!("--max-requests: must be 1..=200, got {}", cfg.max_requests));
                }
            }
            Long("min-spacing") => {
                let v: f64 = cli::value(&mut p, "--min-spacing")?;
                if !(v.is_finite() && (0.0..=60.0).contains(&v)) {
                    return cli::usage(format!("--min-spacing: must be 0..=60 seconds, got {v}"));
                }
                cfg.min_spacing = Duration::from_secs_f64(v);
            }
            Long("out-dir") => cfg.out_dir = PathBuf::from(cli::value::<String>(&mut p, "--out-dir")?),
            Long("raw-out") => raw_out = Some(cli::value(&mut p, "--raw-out")?),
            Long("timeout") => hc.call_timeout = cli::seconds(&mut p, "--timeout")?,
            Long("user-agent") => hc.user_agent = cli::value(&mut p, "--user-agent")?,
            Short('h') | Long("help") => return cli::help(USAGE),
            Short('V') | Long("version") => return cli::version("pm-probe"),
            other => return cli::unexpected(other),
        }
    }
    hc.connect_timeout = hc.connect_timeout.min(hc.call_timeout);
    // A long Retry-After must not hold a bounded probe for minutes.
    hc.retry_after_max = Duration::from_secs(30);
    let raw = cli::append_out(raw_out.as_deref(), "--raw-out")?;
    signal::install();
    let out_dir = cfg.out_dir.clone();
    let prober = Prober::new(cfg, Client::new(hc), Sequencer::new(RunInfo::new("pm-probe")), raw);
    let report = prober.run()?;
    let (jp, mp) = report
        .write(&out_dir)
        .map_err(|e| cli::Error::Msg(format!("writing the report to {}: {e}", out_dir.display())))?;
    eprintln!("pm-probe: {}", report.summary());
    eprintln!("pm-probe: wrote {} and {}", jp.display(), mp.display());
    Ok(if report.complete { ExitCode::Success } else { ExitCode::Failure })
}
