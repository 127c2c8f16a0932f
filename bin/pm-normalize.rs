const USAGE: &str = "
pm-normalize — derive normalized order-book rows from the raw pm-books and kalshi-books streams.

Reads raw envelopes (schema pmarchive.raw/1; plain or multi-member gzip JSONL) and writes one row
per token snapshot (schema pmarchive.orderbook/1, docs/ORDERBOOK_SCHEMA.md): receive and exchange
time in UTC, market, asset, slug/outcome (joined), best bid/ask with sizes, mid, spread, the top N
levels per side best-first, depth per side, the venue hash and whether it recomputes (SHA-1), and
quality flags. Kalshi replies (venue kalshi, kalshi-books) give one row for the market's YES
contract: bids = YES bids, asks = 1 - NO bid prices (docs/ORDERBOOK_SCHEMA.md, \"Kalshi rows\").
Gaps, failed requests and unreadable input become explicit rows, never dropped.
The same input and options always give byte-identical output. Every row of a kind has all its
keys, each with one JSON type (or null), so jq, DuckDB and pyarrow read them as documented.

Usage:
    pm-normalize [options] [FILE...]      normalize FILEs in order (none or '-': stdin)
    pm-normalize --check [FILE...]        check normalized files: JSON report on stdout

Options:
    --depth N|all       Levels per side in `bids`/`asks` (all: every level, the rows' `depth` is
                        null). [default: 10]
    --top               Top of book only (same as --depth 0: `bids`/`asks` are null).
    --markets FILE      Join slug/outcome/family for tokens from FILE: market records
                        (pmarchive.market/1, pm-markets output; pmarchive.kalshi_market/1,
                        kalshi-markets output) and/or raw files with `track` lines.
                        Repeatable. `track` lines inside the input are always used too.
    --max-lag SECS      Flag `recv_far` when receive and exchange time differ by more. [default: 60]
    -o, --output PATH   Write rows to PATH instead of stdout (atomically: a temp file renamed into
                        place at the end; gzip when PATH ends in .gz).
    --manifest PATH     Write a normalization manifest (pmarchive.normalize_manifest/1): inputs and
                        outputs with sha256 and bytes, options, tool version, counts. Needs -o and
                        FILE arguments.
    --threads N         Threads that parse (1..=64): chunks of about 1 MiB of whole lines are parsed
                        in parallel and their rows written in input order, byte-identical for every
                        N; 1 parses on the main thread. Reading/gunzip and writing have a thread
                        each. [default: the number of cores plus one on a machine with two or more, at
                        most 8]
    --check             Check mode (see above): every row against its documented type (all keys,
                        none unknown, one JSON type each) and in order; exit 1 when one fails.
    -h, --help          Show this help.
    -V, --version       Show the version.

A one-line JSON summary of counts goes to stderr after normalizing.

Exit status: 0 success; 1 some input was damaged (truncated gzip, non-JSON or non-envelope lines,
lines over 256 MiB: each is a bad_input row) or, with --check, an invariant failed; 2 bad arguments,
an input that cannot be opened (stdin a directory included), or an I/O error on output. A closed
stdout ends the tool with 0.
";

use std::path::{Path, PathBuf};

use pm_archive::cli::{self, ExitCode};
use pm_archive::derived::{self, Derivation, MarketsFile, NormalizeExtra, OutputFile, NORMALIZE_SCHEMA};
use pm_archive::normalize::{self, Normalizer, OutFile, Output};

fn main() {
    cli::main("pm-normalize", run)
}

/// The command line after parsing.
struct Args {
    opts: normalize::Options,
    markets: Vec<PathBuf>,
    output: Option<PathBuf>,
    manifest: Option<PathBuf>,
    threads: usize,
    files: Vec<PathBuf>,
}

fn run() -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut a = Args {
        opts: normalize::Options::default(),
        markets: Vec::new(),
        output: None,
        manifest: None,
        threads: normalize::default_threads(),
        files: Vec::new(),
    };
    let mut check = false;
    while let Some(arg) = p.next()? {
        match arg {
            Long("depth") => {
                let v: String = cli::value(&mut p, "--depth")?;
                a.opts.depth = normalize::parse_depth(&v).map_err(cli::Error::Usage)?;
            }
            Long("top") => a.opts.depth = 0,
            Long("markets") => a.markets.push(cli::value(&mut p, "--markets")?),
            Long("max-lag") => {
                a.opts.max_lag_ms = (cli::seconds(&mut p, "--max-lag")?.as_secs_f64() * 1000.0).round() as i64
            }
            Short('o') | Long("output") => a.output = Some(cli::value(&mut p, "--output")?),
            Long("manifest") => a.manifest = Some(cli::value(&mut p, "--manifest")?),
            Long("check") => check = true,
            Long("threads") => a.threads = cli::value_in(&mut p, "--threads", 1, 64)?,
            Short('h') | Long("help") => return cli::help(USAGE),
            Short('V') | Long("version") => return cli::version("pm-normalize"),
            Value(v) => a.files.push(PathBuf::from(v)),
            other => return cli::unexpected(other),
        }
    }
    derived::check_inputs(a.files.iter().chain(&a.markets))?;
    let inputs = normalize::input_names(&a.files);
    if inputs.iter().any(|i| i == "-") {
        cli::stdin()?; // only checks that stdin is not a directory; reads nothing
    }
    if check {
        if a.output.is_some() || a.manifest.is_some() || !a.markets.is_empty() {
            return cli::usage("--check takes only FILE arguments");
        }
        let (report, ok) = normalize::check::check(&inputs);
        cli::print(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
        return Ok(if ok { ExitCode::Success } else { ExitCode::Failure });
    }
    derived::check_manifest_args(a.manifest.as_deref(), a.output.as_deref(), &a.files)?;
    normalize_files(a, &inputs)
}

/// Normalizes the inputs (to `-o` or stdout) and writes the manifest when asked.
fn normalize_files(a: Args, inputs: &[String]) -> cli::Result<ExitCode> {
    let mut nor = Normalizer::new(a.opts.clone());
    let mut market_files = Vec::new();
    for m in &a.markets {
        let (tokens, bad) = normalize::load_markets(&mut nor, m)
            .map_err(|e| cli::Error::Msg(format!("--markets {}: {e}", m.display())))?;
        for b in &bad {
            eprintln!("pm-normalize: --markets: skipped line {b}");
        }
        market_files.push(MarketsFile { path: m.clone(), tokens, skipped_lines: bad.len() });
    }
    // Inputs are hashed before they are read, so the manifest describes the bytes normalized.
    let hashed = a.files.iter().chain(&a.markets);
    let derivation = a.manifest.as_ref().map(|_| Derivation::start(NORMALIZE_SCHEMA, "pm-normalize", hashed));
    let derivation = derivation.transpose()?;
    write_rows(inputs, a.output.as_deref(), &mut nor, a.threads)?;
    let stats = &nor.stats;
    eprintln!("pm-normalize: summary {}", serde_json::to_string(stats)?);
    if let (Some(d), Some(mpath), Some(opath)) = (derivation, &a.manifest, &a.output) {
        let out = OutputFile::of(opath, stats.rows.values().sum(), normalize::SCHEMA)?;
        d.finish(a.opts, out, stats, NormalizeExtra { markets: market_files }).write(mpath)?;
    }
    let damaged = stats.rows.get("bad_input").copied().unwrap_or(0) > 0;
    Ok(if damaged { ExitCode::Failure } else { ExitCode::Success })
}

/// Normalizes the inputs to stdout, or to `output` atomically (nothing replaced when it fails).
fn write_rows(inputs: &[String], output: Option<&Path>, nor: &mut Normalizer, threads: usize) -> cli::Result<()> {
    let Some(path) = output else {
        normalize::run(inputs, Output::Stdout(std::io::stdout()), nor, threads)?;
        return Ok(());
    };
    let (file, out) = OutFile::create(path).map_err(|e| cli::Error::Msg(format!("{}: {e}", path.display())))?;
    match normalize::run(inputs, out, nor, threads) {
        Ok(out) => Ok(file.commit(out)?),
        Err(e) => {
            file.abandon();
            Err(e.into())
        }
    }
}
