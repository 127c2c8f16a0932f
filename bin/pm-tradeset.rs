const USAGE: &str = "
pm-tradeset — normalized trade rows from the raw trade lanes, reconciled per market window.

Reads raw envelopes (schema pmarchive.raw/1; plain or gzip JSONL; several files in order; none or '-'
= stdin): pm-trades pages (stream trades) and pm-stream frames (stream ws_market); other lines are
skipped. Writes one row per distinct trade (schema pmarchive.trade/1, docs/TRADES.md):
    source \"data_api\"  a fill row of GET /v2/trades (seconds resolution), role taker|maker from
                       the market's final sweep (null when the sweep did not complete);
    source \"ws\"        a websocket last_trade_price print (ms resolution).
Rows are deduplicated by a documented key (`key`; `copies` says how many raw copies it stands for;
the raw keeps them all), sorted by exchange time, source, asset and key: the same input gives the
same bytes, in any input order. Wallet profile fields (name, pseudonym, bio, profile images) are
never copied into a row.

Reconciliation, per market window: how many websocket prints match a Data API fill by transaction
hash, else by asset, price, size and |time offset| ≤ --match-secs, how many do not, how many fills
no print matched, and the offset distribution (ws ms − Data API s × 1000). It is the --check
report and part of the --manifest.

Usage:
    pm-tradeset [options] [FILE...]       rows on stdout (or -o PATH)
    pm-tradeset --check [FILE...]         reconciliation report (JSON) on stdout, no rows

Options:
    -o, --output PATH   Write rows to PATH (atomically: a temp file renamed into place).
    --manifest PATH     Write a manifest (pmarchive.tradeset_manifest/1): inputs and output with
                        sha256 and bytes, counts, options and the reconciliation. Needs -o and FILE
                        arguments.
    --match-secs SECS   Largest |offset| of a price/size/time match. [default: 5]
    --check             Reconciliation report only (see above).
    -h, --help          Show this help.
    -V, --version       Show the version.

A one-line JSON summary of counts goes to stderr.

Exit status: 0 success; 1 some input lines were not raw lines (reported on stderr, counted); 2 bad
arguments, an input that cannot be opened (stdin a directory included), or an I/O error on output.
A closed stdout ends the tool with 0.
";

use std::path::PathBuf;

use pm_archive::cli::{self, ExitCode};
use pm_archive::derived::{self, Derivation, OutputFile};
use pm_archive::polymarket::tradeset::{self, ManifestExtra, TradeSet};
use pm_archive::util;

fn main() {
    cli::main("pm-tradeset", run)
}

fn run() -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut output: Option<PathBuf> = None;
    let mut manifest: Option<PathBuf> = None;
    let mut check = false;
    let mut match_ms: i64 = 5000;
    let mut files: Vec<PathBuf> = Vec::new();
    while let Some(arg) = p.next()? {
        match arg {
            Short('o') | Long("output") => output = Some(cli::value(&mut p, "--output")?),
            Long("manifest") => manifest = Some(cli::value(&mut p, "--manifest")?),
            Long("match-secs") => {
                match_ms = (cli::seconds(&mut p, "--match-secs")?.as_secs_f64() * 1000.0).round() as i64
            }
            Long("check") => check = true,
            Short('h') | Long("help") => return cli::help(USAGE),
            Short('V') | Long("version") => return cli::version("pm-tradeset"),
            Value(v) => files.push(PathBuf::from(v)),
            other => return cli::unexpected(other),
        }
    }
    derived::check_inputs(&files)?;
    if check && (output.is_some() || manifest.is_some()) {
        return cli::usage("--check takes only FILE arguments and --match-secs");
    }
    derived::check_manifest_args(manifest.as_deref(), output.as_deref(), &files)?;
    let inputs = pm_archive::normalize::input_names(&files);
    if inputs.iter().any(|i| i == "-") {
        cli::stdin()?; // only checks that stdin is not a directory
    }
    // Inputs are hashed before they are read, so the manifest describes the bytes the rows come from.
    let derivation = manifest.as_ref().map(|_| Derivation::start(derived::TRADESET_SCHEMA, "pm-tradeset", &files));
    let derivation = derivation.transpose()?;
    let mut set = TradeSet::new();
    for i in &inputs {
        set.read(i).map_err(|e| cli::Error::Msg(format!("{i}: {e}")))?;
    }
    let rows = set.finish();
    let rec = set.reconcile(&rows, match_ms);
    eprintln!("pm-tradeset: summary {}", serde_json::to_string(&set.counts)?);
    let code = if set.counts.bad_lines > 0 { ExitCode::Failure } else { ExitCode::Success };
    if check {
        cli::print(&format!("{}\n", serde_json::to_string_pretty(&rec)?))?;
        return Ok(code);
    }
    let text = tradeset::to_jsonl(&rows);
    match &output {
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(&text).and_then(|_| out.flush()) {
                return Err(e.into());
            }
        }
        Some(o) => util::write_atomic(o, &text)?,
    }
    if let (Some(d), Some(mpath), Some(opath)) = (derivation, &manifest, &output) {
        let out = OutputFile::of(opath, rows.len() as u64, tradeset::SCHEMA)?;
        let options = tradeset::Options { match_secs: match_ms as f64 / 1000.0 };
        let m: tradeset::Manifest = d.finish(options, out, set.counts, ManifestExtra { reconciliation: rec });
        m.write(mpath)?;
    }
    Ok(code)
}
