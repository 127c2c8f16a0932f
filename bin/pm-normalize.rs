const USAGE: &str = "
pm-normalize — derive normalized order-book rows from the raw pm-books stream.

Reads raw envelopes (schema pmarchive.raw/1; plain or multi-member gzip JSONL) and writes one row
per token snapshot (schema pmarchive.orderbook/1, docs/ORDERBOOK_SCHEMA.md): receive and exchange
time in UTC, market, asset, slug/outcome (joined), best bid/ask with sizes, mid, spread, the top N
levels per side best-first, depth per side, the venue hash and whether it recomputes (SHA-1), and
quality flags. Gaps, failed requests and unreadable input become explicit rows, never dropped.
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
                        (pmarchive.market/1, pm-markets output) and/or raw files with `track` lines.
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
                        each. [default: the number of cores, at most 8]
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

use std::path::PathBuf;

use pm_archive::cli::{self, ExitCode};
use pm_archive::normalize::{self, Normalizer, OutFile, Output};
use pm_archive::{clock, util};

fn main() {
    cli::main("pm-normalize", run)
}

fn run() -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut opts = normalize::Options::default();
    let mut markets: Vec<PathBuf> = Vec::new();
    let mut output: Option<PathBuf> = None;
    let mut manifest: Option<PathBuf> = None;
    let mut check = false;
    let mut threads = normalize::default_threads();
    let mut files: Vec<PathBuf> = Vec::new();
    while let Some(arg) = p.next()? {
        match arg {
            Long("depth") => {
                let v: String = cli::value(&mut p, "--depth")?;
                opts.depth = normalize::parse_depth(&v).map_err(cli::Error::Usage)?;
            }
            Long("top") => opts.depth = 0,
            Long("markets") => markets.push(cli::value(&mut p, "--markets")?),
            Long("max-lag") => {
                opts.max_lag_ms = (cli::seconds(&mut p, "--max-lag")?.as_secs_f64() * 1000.0).round() as i64
            }
            Short('o') | Long("output") => output = Some(cli::value(&mut p, "--output")?),
            Long("manifest") => manifest = Some(cli::value(&mut p, "--manifest")?),
            Long("check") => check = true,
            Long("threads") => {
                threads = cli::value(&mut p, "--threads")?;
                if !(1..=64).contains(&threads) {
                    return cli::usage(format!("--threads: expected 1 to 64, got {threads}"));
                }
            }
            Short('h') | Long("help") => return cli::help(USAGE),
            Short('V') | Long("version") => return cli::version("pm-normalize"),
            Value(v) => files.push(PathBuf::from(v)),
            other => return cli::unexpected(other),
        }
    }
    for f in files.iter().chain(&markets) {
        if f.as_os_str() != "-" && !f.is_file() {
            return cli::usage(format!("no such file: {}", f.display()));
        }
        if f.as_os_str() != "-" {
            if let Err(e) = pm_archive::jsonl::open(f) {
                return Err(cli::Error::Msg(format!("cannot read {}: {e}", f.display())));
            }
        }
    }
    let inputs = normalize::input_names(&files);
    if inputs.iter().any(|i| i == "-") {
        cli::stdin()?; // only checks that stdin is not a directory; reads nothing
    }
    if check {
        if output.is_some() || manifest.is_some() || !markets.is_empty() {
            return cli::usage("--check takes only FILE arguments");
        }
        let (report, ok) = normalize::check::check(&inputs);
        cli::print(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
        return Ok(if ok { ExitCode::Success } else { ExitCode::Failure });
    }
    if manifest.is_some() && (output.is_none() || files.is_empty() || files.iter().any(|f| f.as_os_str() == "-")) {
        return cli::usage("--manifest needs -o PATH and FILE arguments (stdin cannot be hashed)");
    }

    let mut nor = Normalizer::new(opts.clone());
    let mut market_files = Vec::new();
    for m in &markets {
        let (n, bad) = normalize::load_markets(&mut nor, m)
            .map_err(|e| cli::Error::Msg(format!("--markets {}: {e}", m.display())))?;
        for b in &bad {
            eprintln!("pm-normalize: --markets: skipped line {b}");
        }
        market_files.push(serde_json::json!({"path": m, "tokens": n, "skipped_lines": bad.len()}));
    }
    // Inputs are hashed before they are read, so the manifest describes the bytes normalized.
    let mut input_records = Vec::new();
    if manifest.is_some() {
        for f in files.iter().chain(&markets) {
            let (sha, bytes) = util::sha256_file(f)?;
            input_records.push(serde_json::json!({"path": f, "bytes": bytes, "sha256": sha}));
        }
    }
    let started = clock::fmt_micros(clock::now());
    let (out_file, out) = match &output {
        Some(p) => {
            let (f, o) = OutFile::create(p).map_err(|e| cli::Error::Msg(format!("{}: {e}", p.display())))?;
            (Some(f), o)
        }
        None => (None, Output::Stdout(std::io::stdout())),
    };
    let out = match normalize::run(&inputs, out, &mut nor, threads) {
        Ok(o) => o,
        Err(e) => {
            if let Some(f) = out_file {
                f.abandon();
            }
            return Err(e.into());
        }
    };
    if let Some(f) = out_file {
        f.commit(out)?;
    }
    let stats = &nor.stats;
    eprintln!("pm-normalize: summary {}", serde_json::to_string(stats)?);
    if let (Some(mpath), Some(opath)) = (&manifest, &output) {
        let (sha, bytes) = util::sha256_file(opath)?;
        let rows: u64 = stats.rows.values().sum();
        let doc = serde_json::json!({
            "schema": "pmarchive.normalize_manifest/1",
            "tool": "pm-normalize",
            "tool_version": pm_archive::VERSION,
            "started_at_utc": started,
            "finished_at_utc": clock::fmt_micros(clock::now()),
            "host": util::hostname(),
            "options": opts,
            "markets": market_files,
            "inputs": input_records,
            "outputs": [{"path": opath, "bytes": bytes, "sha256": sha, "rows": rows, "schema": normalize::SCHEMA}],
            "summary": stats,
        });
        let mut text = serde_json::to_vec_pretty(&doc)?;
        text.push(b'\n');
        util::write_atomic(mpath, &text)?;
    }
    let damaged = stats.rows.get("bad_input").copied().unwrap_or(0) > 0;
    Ok(if damaged { ExitCode::Failure } else { ExitCode::Success })
}
