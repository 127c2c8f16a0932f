const USAGE: &str = "
pm-stream — raw capture of the Polymarket websocket market channel.

Reads market records (schema pmarchive.market/1, as written by pm-markets) on stdin and tracks each
market's tokens from --lead seconds before its window starts until --grace seconds after it ends.
Tracked tokens are sharded over websocket connections (at most --max-per-conn each); tokens are
added and removed on the open connections ({\"operation\":\"subscribe\"|\"unsubscribe\",...}) as
markets roll over. Every subscription is sent in frames of at most --max-ids-per-frame ids (a frame
with thousands of ids makes the venue close the socket), and each new connection subscribes the
whole wanted set again from scratch. Every received frame becomes one raw line on stdout (schema
pmarchive.raw/1, kind \"ws\", ctx.event \"frame\", ctx.conn_id, ctx.frame_no, frame text verbatim
in body or body_text, receive time in collected_at_utc). Opens, closes, errors, subscription changes, back-off
waits and watchdog firings are lines too (ctx.event), so every gap in coverage is explicit. After
every (re)connect a REST POST /books snapshot of the connection's tokens is written as http lines
with ctx.reason \"ws_resync\" (\"ws_subscribe\" for tokens added later). Every frame is kept, whatever
its event type; each connection writes a ctx.event \"stats\" line every --stats-secs and when it ends,
counting the events received since its last one by event_type (ctx.ws_event_types; unknown types
under their own name), which `manifest build` sums.

It never gives up: connections are re-opened forever with capped exponential back-off and jitter.
A connection is terminated and re-opened when nothing at all (any frame counts, PONG included)
arrived for --idle-secs (a half-open connection), when no data frame (PONG and NO NEW ASSETS do not
count) arrived for --silence-secs, and in any case once it is --max-conn-age old (the venue is known
to keep answering PING while sending no data).

Usage:
    pm-markets --watch 30 | pm-stream [options] > ws_market.jsonl
    pm-stream --token ID [--token ID ...] [options] < /dev/null

Options:
    --lead SECS           Start tracking a market this long before its window. [default: 60]
    --grace SECS          Keep tracking this long after its window ends. [default: 120]
    --token ID            Also track this token for the whole run (repeatable).
    --ws-url URL          Websocket URL.
                          [default: wss://ws-subscriptions-clob.polymarket.com/ws/market]
    --clob-url URL        CLOB REST base URL for the /books resync snapshots.
                          [default: https://clob.polymarket.com]
    --no-rest             Take no REST snapshots.
    --max-per-conn N      Tokens per connection. [default: 200]
    --max-ids-per-frame N Asset ids per subscribe/unsubscribe frame. [default: 100]
    --ping-secs SECS      Send the text PING this often. [default: 10]
    --idle-secs SECS      Reconnect after this long without any inbound frame. [default: 30]
    --silence-secs SECS   Reconnect after this long without a data frame. [default: 60]
    --max-conn-age SECS   Reconnect every connection after this long. [default: 3600]
    --asset-silence-secs SECS
                          Record an asset_silence line (and take a REST snapshot of those tokens)
                          when a subscribed asset had no event for this long; 0 = off. [default: 300]
    --backoff-base SECS   First reconnect back-off (doubles per failed try). [default: 1]
    --backoff-max SECS    Back-off cap. [default: 60]
    --connect-timeout SECS
                          TCP connect + websocket handshake limit. [default: 10]
    --stats-secs SECS     Write each connection's stats line this often. [default: 60]
    --max-frames N        Stop after N data frames (benchmarks, tests).
    --user-agent UA       [default: pm-archive/<version> (public market-data archiver; ...)]
    --check-args          Check the arguments as for a real run, then exit 0 (or 2 with the error)
                          without reading, writing or connecting (pipelines/collect.sh runs this first).
    -h, --help            Show this help.
    -V, --version         Show the version.

Stops on SIGTERM/SIGINT (closing its connections, recording the closes), when stdin has ended and
no market is left to track (and no --token was given), after --max-frames, or when stdout closes.

Exit status: 0 normal end; 1 some stdin lines were not usable market records (each reported on
stderr with its line number and recorded as a kind \"gap\" line); 2 bad arguments or an I/O error.
";

use std::time::Duration;

use pm_archive::cli::{self, ExitCode};
use pm_archive::envelope::RunInfo;
use pm_archive::http::{Client, HttpConfig};
use pm_archive::polymarket::market;
use pm_archive::polymarket::stream::{self, Config, Counters};
use pm_archive::{clock, signal};

fn main() {
    cli::main("pm-stream", run)
}

fn secs_or_zero(p: &mut lexopt::Parser, flag: &str) -> cli::Result<f64> {
    let v: f64 = cli::value(p, flag)?;
    if !(v.is_finite() && (0.0..1e9).contains(&v)) {
        return cli::usage(format!("{flag}: must be a number of seconds ≥ 0, got {v}"));
    }
    Ok(v)
}

fn run() -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut cfg = Config::default();
    let mut hc = HttpConfig::default();
    let mut check_args = false;
    while let Some(arg) = p.next()? {
        match arg {
            Long("lead") => cfg.lead = Duration::from_secs_f64(secs_or_zero(&mut p, "--lead")?),
            Long("grace") => cfg.grace = Duration::from_secs_f64(secs_or_zero(&mut p, "--grace")?),
            Long("token") => {
                let t: String = cli::value(&mut p, "--token")?;
                if !market::is_valid_token_id(&t) {
                    return cli::usage(format!("--token: not a token id (decimal digits): '{t}'"));
                }
                cfg.fixed_tokens.push(t);
            }
            Long("ws-url") => {
                let u = cli::base_url(&mut p, "--ws-url")?;
                if !(u.starts_with("ws://") || u.starts_with("wss://")) {
                    return cli::usage(format!("--ws-url: expected ws:// or wss://, got '{u}'"));
                }
                cfg.ws_url = u;
            }
            Long("clob-url") => cfg.clob_url = Some(cli::base_url(&mut p, "--clob-url")?),
            Long("no-rest") => cfg.clob_url = None,
            Long("max-per-conn") => {
                cfg.max_per_conn = cli::value(&mut p, "--max-per-conn")?;
                if !(1..=500).contains(&cfg.max_per_conn) {
                    return cli::usage("--max-per-conn: must be 1..500");
                }
            }
            Long("max-ids-per-frame") => {
                cfg.max_ids_per_frame = cli::value(&mut p, "--max-ids-per-frame")?;
                if !(1..=500).contains(&cfg.max_ids_per_frame) {
                    return cli::usage("--max-ids-per-frame: must be 1..500");
                }
            }
            Long("ping-secs") => cfg.ping_every = cli::seconds(&mut p, "--ping-secs")?,
            Long("idle-secs") => cfg.idle = cli::seconds(&mut p, "--idle-secs")?,
            Long("stats-secs") => cfg.stats_every = cli::seconds(&mut p, "--stats-secs")?,
            Long("silence-secs") => cfg.silence = cli::seconds(&mut p, "--silence-secs")?,
            Long("max-conn-age") => cfg.max_conn_age = cli::seconds(&mut p, "--max-conn-age")?,
            Long("asset-silence-secs") => {
                let v = secs_or_zero(&mut p, "--asset-silence-secs")?;
                cfg.asset_silence = (v > 0.0).then(|| Duration::from_secs_f64(v));
            }
            Long("backoff-base") => cfg.backoff_base = cli::seconds(&mut p, "--backoff-base")?,
            Long("backoff-max") => cfg.backoff_max = cli::seconds(&mut p, "--backoff-max")?,
            Long("connect-timeout") => {
                cfg.connect_timeout = cli::seconds(&mut p, "--connect-timeout")?;
                hc.connect_timeout = cfg.connect_timeout;
            }
            Long("max-frames") => cfg.max_frames = Some(cli::value(&mut p, "--max-frames")?),
            Long("user-agent") => {
                let ua: String = cli::value(&mut p, "--user-agent")?;
                cfg.user_agent = ua.clone();
                hc.user_agent = ua;
            }
            Long("check-args") => check_args = true,
            Short('h') | Long("help") => return cli::help(USAGE),
            Short('V') | Long("version") => return cli::version("pm-stream"),
            other => return cli::unexpected(other),
        }
    }
    if cfg.idle <= cfg.ping_every {
        return cli::usage("--idle-secs must be greater than --ping-secs (the PONG replies keep a link alive)");
    }
    if cfg.backoff_max < cfg.backoff_base {
        return cli::usage("--backoff-max must be ≥ --backoff-base");
    }
    if check_args {
        return Ok(ExitCode::Success);
    }
    let _ = clock::now(); // prints the simulated-clock warning early when active
    signal::install();
    let run = RunInfo::new(stream::TOOL);
    let (sink, writer) = stream::start_writer(run, Box::new(std::io::stdout()));
    let rx = pm_archive::feed::spawn_reader(Box::new(cli::stdin()?));
    let counters = std::sync::Arc::new(Counters::default());
    let client = cfg.clob_url.as_ref().map(|_| Client::new(hc));
    let bad = stream::run(cfg, rx, sink, client, counters.clone());
    // The writer ends once every sender is gone, i.e. after REST snapshots still in flight.
    let written = writer.join().map_err(|_| cli::Error::Msg("writer thread panicked".into()));
    eprintln!("pm-stream: {}; bad_input_lines={bad}", counters.summary());
    match written? {
        Ok(_) => {}
        Err(e) => return Err(cli::Error::Io(e)),
    }
    Ok(if bad > 0 { ExitCode::Failure } else { ExitCode::Success })
}
