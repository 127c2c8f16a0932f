const USAGE: &str = "
pm-venue — the soak venue: a LOOPBACK Polymarket (Gamma, CLOB REST, Data API trade feed, websocket
market channel) on 127.0.0.1 with a fault schedule, logging every reply it serves (docs/SOAK.md).

It is the loopback venue of the tests (tests/common/venue.rs, dataapi.rs and ws.rs, included by
path: one implementation): the REAL RECORDED responses of tests/fixtures/polymarket and records
DERIVED from them — BTC up/down markets of every family (5m, 15m, 1h, 4h, daily) listed on the real
cadence on its clock, `/books` replies in reverse order — and the modelled websocket market channel
(initial dump as an array, same-timestamp bursts, book refreshes without tick size after trades).
One book per token: one book model on the venue's clock that the REST /books replies and every
websocket connection read (REST: the state with the timestamp of its last change and its hash
computed with the venue's algorithm; websocket: the dumps and the changes of that one model). The Data
API (`GET /v2/trades`, cursor paging, documented v2 shape, DERIVED rows) is served on the HTTP base
URL: every market the venue issued trades inside its window, one match (a taker row and two maker
rows) every --trade-every seconds of venue time, every 4th match at the timestamp of the one before.
With --kalshi it also serves a LOOPBACK Kalshi Trade API v2 (tests/common/kalshi.rs) under
/trade-api/v2 on the same port: rolling KXBTC15M windows every 15 minutes on its clock (GET /markets
with status filters and cursor paging, GET /markets/{ticker} with a result after close,
GET /markets/{ticker}/orderbook in the orderbook_fp shape, GET /markets/trades), all DERIVED from
Kalshi's docs examples and the captures quoted in docs/KALSHI_FACTS.md. The real base URLs are
https://api.elections.kalshi.com/trade-api/v2 and https://external-api.kalshi.com/trade-api/v2.
Nothing it serves is live data. It binds 127.0.0.1 only.

Usage:
    pm-venue [options]

Prints two lines on stdout (three with --kalshi), then serves until SIGTERM/SIGINT or --duration:
    http://127.0.0.1:<port>              (Gamma, CLOB REST and Data API base URL)
    ws://127.0.0.1:<port>/ws/market      (websocket market channel)
    http://127.0.0.1:<port>/trade-api/v2 (Kalshi base URL of the kalshi-* tools)

Options:
    --port N              HTTP port (0 = any free port). [default: 0]
    --ws-port N           Websocket port (0 = any free port). [default: 0]
    --log FILE            Append one JSONL line (schema pmarchive.soak_venue/1) per reply served,
                          fault injected and outage start/end. Required.
    --clock SPEC          Run the venue on a simulated clock, <RFC 3339 start>[x<rate>] (the meaning
                          of PMARCHIVE_CLOCK; the chain must run the same clock).
    --clock-file FILE     Write '<real unix secs> <venue unix secs> <rate>' of the clock's start, so
                          that a supervisor can start the chain on the same clock at any later time.
    --faults PROFILE      none | soak. soak: every --fault-every seconds the next fault of this
                          cycle is injected: 429 burst (3) with Retry-After: 2, 429 burst (3)
                          without Retry-After, 425, 503, 500 on Gamma, a reply slower than the
                          chain's timeout (7 s), a reset connection, an HTML page, a truncated body,
                          a /books reply that silently omits one token, a 429 burst (2) without
                          Retry-After on /v2/trades, a 503 on /v2/trades, a websocket freeze without
                          close (--ws-freeze-secs), a server close of every websocket. With --kalshi,
                          beside each of them the next Kalshi fault of a cycle of its own: 3×429
                          (Kalshi's body, no Retry-After) on books, 503 on books, 500 on the market
                          list, a slow book (7 s), a reset, an HTML page, a truncated book, 2×429 and
                          a 503 on trades, a 502 on one market. [default: none]
    --fault-every SECS    Real seconds between two scheduled faults. [default: 30]
    --outage AT:SECS      From AT real seconds after start, close every HTTP connection without a
                          reply for SECS seconds. Repeatable.
    --ws-freeze-secs S    Length of a websocket freeze. [default: 75]
    --ws-events-per-sec R Events per second of the book model, each about one asset some websocket
                          connection subscribed to (books nobody subscribes to keep their state).
                          [default: 5]
    --book-gone-after S   Seconds after its window end that a token still has a book. [default: 120]
    --trade-every S       Venue seconds between two matches of a market on /v2/trades. [default: 20]
    --resolve-after S     Markets resolve (closed, outcome prices 1/0, umaResolutionStatus resolved)
                          this many seconds (venue clock) after their window. [default: never: closed
                          one minute after the window, outcome prices unchanged]
    --kalshi              Also serve the loopback Kalshi API (see above).
    --duration SECS       Stop after this many seconds.
    -h, --help            Show this help.
    -V, --version         Show the version.

Exit status: 0 stopped by a signal or --duration; 2 bad arguments, a port or the log that cannot be
opened.
";

#[path = "../tests/common/dataapi.rs"]
mod dataapi;
#[path = "../tests/common/kalshi.rs"]
mod kalshi;
#[path = "../tests/common/venue.rs"]
mod venue;
#[path = "../tests/common/ws.rs"]
mod ws;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pm_archive::cli::{self, ExitCode};
use pm_archive::soak::{VenueLine, VENUE_SCHEMA};
use pm_archive::{clock, signal};
use time::OffsetDateTime;

use dataapi::DataApi;
use venue::{Fault, Venue};
use ws::{Behaviour, Books, Model, WsFault, WsServer};

fn main() {
    cli::main("pm-venue", run)
}

/// One scheduled fault: where it goes and what it is.
enum Injection {
    Http(&'static str, Vec<Fault>),
    Ws(WsFault),
}

/// The Kalshi faults of the `soak` profile (with --kalshi), one beside each Polymarket fault of the
/// cycle (in a cycle of their own: the Polymarket cycle's order and timing do not change).
fn kalshi_cycle() -> Vec<Injection> {
    use kalshi::{server_error, too_many, BOOKS, LIST, MARKET, TRADES};
    use Injection::Http;
    vec![
        Http(BOOKS, vec![too_many(), too_many(), too_many()]),
        Http(BOOKS, vec![server_error(503)]),
        Http(LIST, vec![server_error(500)]),
        Http(BOOKS, vec![Fault::Slow(Duration::from_secs(7))]),
        Http(BOOKS, vec![Fault::Reset]),
        Http(BOOKS, vec![Fault::Html]),
        Http(BOOKS, vec![Fault::Truncated]),
        Http(TRADES, vec![too_many(), too_many()]),
        Http(TRADES, vec![server_error(503)]),
        Http(MARKET, vec![server_error(502)]),
    ]
}

/// The `soak` profile's cycle, in order.
fn soak_cycle(freeze: Duration) -> Vec<Injection> {
    use Injection::{Http, Ws};
    let too_many = |ra: Option<&str>| Fault::TooMany { retry_after: ra.map(str::to_string) };
    vec![
        Http("/books", vec![too_many(Some("2")), too_many(Some("2")), too_many(Some("2"))]),
        Http("/books", vec![too_many(None), too_many(None), too_many(None)]),
        Http("/books", vec![Fault::NotReady]),
        Http("/books", vec![Fault::Status(503)]),
        Http("/markets/slug/", vec![Fault::Status(500)]),
        Http("/books", vec![Fault::Slow(Duration::from_secs(7))]),
        Http("/books", vec![Fault::Reset]),
        Http("/books", vec![Fault::Html]),
        Http("/books", vec![Fault::Truncated]),
        Http("/books", vec![Fault::OmitOne]),
        Http("/v2/trades", vec![too_many(None), too_many(None)]),
        Http("/v2/trades", vec![Fault::Status(503)]),
        Ws(WsFault::Freeze(freeze)),
        Ws(WsFault::Close),
    ]
}

fn line(v: &Venue, kind: &str, fault: String, detail: &str) -> VenueLine {
    VenueLine {
        schema: VENUE_SCHEMA.into(),
        kind: kind.into(),
        at_utc: clock::fmt_micros(v.now()),
        real_utc: clock::fmt_micros(OffsetDateTime::now_utc()),
        fault: Some(fault),
        detail: Some(detail.into()),
        ..VenueLine::default()
    }
}

/// The parsed command line.
struct Args {
    port: u16,
    ws_port: u16,
    log: PathBuf,
    /// (start, rate) of a simulated clock.
    clock: Option<(OffsetDateTime, f64)>,
    clock_file: Option<PathBuf>,
    profile: String,
    every: Duration,
    /// (at, length) in real seconds after the start.
    outages: Vec<(f64, f64)>,
    freeze: Duration,
    eps: f64,
    gone: Duration,
    duration: Option<Duration>,
    resolve_after: Duration,
    trade_every: Duration,
    kalshi: bool,
}

fn run() -> cli::Result<ExitCode> {
    let a = match parse()? {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    signal::install();
    let (v, w, _data) = start(&a)?;
    serve(&a, &v, &w);
    v.note(&line(&v, "stop", "stop".into(), ""));
    Ok(ExitCode::Success)
}

/// Parses and checks the arguments; `Err(code)` after --help / --version.
fn parse() -> cli::Result<Result<Args, ExitCode>> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut a = Args {
        port: 0,
        ws_port: 0,
        log: PathBuf::new(),
        clock: None,
        clock_file: None,
        profile: "none".into(),
        every: Duration::from_secs(30),
        outages: Vec::new(),
        freeze: Duration::from_secs(75),
        eps: 5.0,
        gone: Duration::from_secs(120),
        duration: None,
        resolve_after: Duration::ZERO,
        trade_every: Duration::from_secs(20),
        kalshi: false,
    };
    let mut log: Option<PathBuf> = None;
    while let Some(arg) = p.next()? {
        match arg {
            Long("port") => a.port = cli::value(&mut p, "--port")?,
            Long("ws-port") => a.ws_port = cli::value(&mut p, "--ws-port")?,
            Long("log") => log = Some(PathBuf::from(p.value()?)),
            Long("clock") => a.clock = Some(parse_clock(&cli::value::<String>(&mut p, "--clock")?)?),
            Long("clock-file") => a.clock_file = Some(PathBuf::from(p.value()?)),
            Long("faults") => a.profile = cli::value(&mut p, "--faults")?,
            Long("fault-every") => a.every = cli::seconds(&mut p, "--fault-every")?,
            Long("outage") => a.outages.push(parse_outage(&cli::value::<String>(&mut p, "--outage")?)?),
            Long("ws-freeze-secs") => a.freeze = cli::seconds(&mut p, "--ws-freeze-secs")?,
            Long("ws-events-per-sec") => a.eps = cli::value(&mut p, "--ws-events-per-sec")?,
            Long("book-gone-after") => a.gone = cli::seconds(&mut p, "--book-gone-after")?,
            Long("trade-every") => a.trade_every = cli::seconds(&mut p, "--trade-every")?,
            Long("resolve-after") => a.resolve_after = cli::seconds(&mut p, "--resolve-after")?,
            Long("kalshi") => a.kalshi = true,
            Long("duration") => a.duration = Some(cli::seconds(&mut p, "--duration")?),
            Short('h') | Long("help") => return cli::help(USAGE).map(Err),
            Short('V') | Long("version") => return cli::version("pm-venue").map(Err),
            other => return cli::unexpected(other),
        }
    }
    let Some(log) = log else { return cli::usage("--log FILE is required") };
    a.log = log;
    if a.profile != "none" && a.profile != "soak" {
        return cli::usage(format!("--faults: expected none or soak, got '{}'", a.profile));
    }
    if a.every.is_zero() || a.trade_every.is_zero() {
        return cli::usage("--fault-every, --trade-every: must be > 0");
    }
    if !(a.eps.is_finite() && a.eps > 0.0 && a.eps <= 10_000.0) {
        return cli::usage("--ws-events-per-sec: must be > 0 and <= 10000");
    }
    Ok(Ok(a))
}

/// `--clock <RFC 3339>[x<rate>]`.
fn parse_clock(s: &str) -> cli::Result<(OffsetDateTime, f64)> {
    let (start, rate) = match s.rsplit_once('x') {
        Some((a, r)) if r.parse::<f64>().is_ok() => (a, r.parse::<f64>().unwrap()),
        _ => (s, 1.0),
    };
    match clock::parse_rfc3339(start) {
        Some(t) if rate.is_finite() && rate > 0.0 => Ok((t, rate)),
        _ => cli::usage(format!("--clock: expected <RFC 3339>[x<rate>], got '{s}'")),
    }
}

/// `--outage AT:SECS`.
fn parse_outage(s: &str) -> cli::Result<(f64, f64)> {
    let parsed = s.split_once(':').and_then(|(a, b)| Some((a.parse::<f64>().ok()?, b.parse::<f64>().ok()?)));
    match parsed {
        Some((a, b)) if a >= 0.0 && b > 0.0 && a.is_finite() && b.is_finite() => Ok((a, b)),
        _ => cli::usage(format!("--outage: expected AT:SECS (seconds >= 0, > 0), got '{s}'")),
    }
}

/// Starts the venue, its Data API and the websocket server, on the clock asked for; prints the URLs.
fn start(a: &Args) -> cli::Result<(Venue, WsServer, DataApi)> {
    let port = a.port;
    let v = Venue::try_start_on(port)
        .map_err(|e| cli::Error::Usage(format!("--port: cannot bind 127.0.0.1:{port}: {e}")))?;
    v.set_book_gone_after(a.gone);
    if !a.resolve_after.is_zero() {
        v.resolve_after(a.resolve_after);
    }
    let data = DataApi::mount_on(&v);
    let kalshi = a.kalshi.then(|| kalshi::KalshiVenue::mount_on(&v));
    data.set_spacing(a.trade_every);
    data.set_burst_every(4);
    v.log_to(&a.log).map_err(|e| cli::Error::Usage(format!("--log: {}: {e}", a.log.display())))?;
    let ws_port = a.ws_port;
    // One book per token, on the venue's clock: the REST books and every websocket connection read it.
    let books = Books::new(Model::on_clock(16, v.clock(), Some(v.market_of())), a.eps);
    let b = books.clone();
    v.books_from(Arc::new(move |token| Some(b.rest_book(token))));
    let w = WsServer::start_with_port(ws_port, Behaviour::Books(books), None)
        .map_err(|e| cli::Error::Usage(format!("--ws-port: cannot bind 127.0.0.1:{ws_port}: {e}")))?;
    if let Some((start, rate)) = a.clock {
        let real = OffsetDateTime::now_utc();
        v.simulate_clock(start, rate);
        data.simulate_clock(start, rate);
        if let Some(f) = &a.clock_file {
            let text = format!(
                "{:.6} {:.6} {rate}\n",
                real.unix_timestamp_nanos() as f64 / 1e9,
                start.unix_timestamp_nanos() as f64 / 1e9
            );
            std::fs::write(f, text).map_err(|e| cli::Error::Usage(format!("--clock-file: {}: {e}", f.display())))?;
        }
    }
    let kalshi_url = kalshi.map(|k| format!("{}\n", k.url())).unwrap_or_default();
    cli::print(&format!("{}\n{}\n{kalshi_url}", v.url(), w.url()))?;
    v.note(&line(&v, "start", format!("profile={}", a.profile), &format!("{} {}", v.url(), w.url())));
    Ok((v, w, data))
}

/// Serves until a signal or --duration: outages start and end on time, the fault cycle advances
/// every --fault-every seconds.
fn serve(a: &Args, v: &Venue, w: &WsServer) {
    let cycle = if a.profile == "soak" { soak_cycle(a.freeze) } else { Vec::new() };
    let kcycle = if a.profile == "soak" && a.kalshi { kalshi_cycle() } else { Vec::new() };
    let t0 = Instant::now();
    let mut next_fault = a.every;
    let mut k = 0usize;
    // (start, end, started, ended) per outage.
    let mut outs: Vec<(Duration, Duration, bool, bool)> = a
        .outages
        .iter()
        .map(|&(at, d)| (Duration::from_secs_f64(at), Duration::from_secs_f64(at + d), false, false))
        .collect();
    loop {
        if signal::stop_requested() || a.duration.is_some_and(|d| t0.elapsed() >= d) {
            break;
        }
        let now = t0.elapsed();
        for o in outs.iter_mut() {
            if !o.2 && now >= o.0 {
                o.2 = true;
                v.outage(o.1 - o.0);
                v.note(&line(v, "outage", "outage".into(), &format!("start {:.0} s", (o.1 - o.0).as_secs_f64())));
            }
            if o.2 && !o.3 && now >= o.1 {
                o.3 = true;
                v.note(&line(v, "outage", "outage".into(), "end"));
            }
        }
        if !cycle.is_empty() && now >= next_fault {
            next_fault += a.every;
            inject(v, w, &cycle[k % cycle.len()]);
            if !kcycle.is_empty() {
                inject(v, w, &kcycle[k % kcycle.len()]);
            }
            k += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Injects one scheduled fault and logs it.
fn inject(v: &Venue, w: &WsServer, i: &Injection) {
    match i {
        Injection::Http(path, faults) => {
            for f in faults {
                v.fault(path, f.clone());
                v.note(&line(v, "fault", format!("{f:?}"), path));
            }
        }
        Injection::Ws(f) => {
            w.inject(*f);
            v.note(&line(v, "fault", format!("ws_{f:?}"), "ws"));
        }
    }
}
