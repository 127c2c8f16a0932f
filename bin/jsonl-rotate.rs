const USAGE: &str = "
jsonl-rotate — write stdin JSONL into crash-safe, time-rotated gzip archive files.

Every line read is archived (lines that are not JSON too: kept as they came, counted and noted on
stderr with their input line number; empty lines are skipped and counted; a last line without a
newline gets one). Files are named

    <root>/venue=<v>/stream=<s>/date=YYYY-MM-DD/hour=HH/<host>-<run_id>-<n>.jsonl.gz

where date/hour are the UTC start of the file's period [floor(t/R)·R, +R) (R = --rotate-secs, UTC
epoch seconds; 3600 = UTC hours). A file is written as <name>.partial and opened only when a line
arrives. A file is one gzip member (a new one after every 64 MiB of input). Every --flush-secs (when
there are new lines) the member is sync-flushed (its dictionary is kept), the new bytes and an end
that makes the file complete gzip are written, and the file is fsynced: at most that much accepted
input is ever only in memory, and the .partial is always a valid gzip file. The next flush replaces
that 10-byte end. When the period ends the file is sealed, even if no line arrives: finish, fsync,
rename to the final name, fsync the directory, and print one sealed-file record (schema
pmarchive.sealed/1, docs/DATA_CONTRACT.md) on stdout. Existing files are never appended to or
replaced. Any gzip reader reads the files (zcat, Python gzip, DuckDB).

At start (and with --recover-only, which does only this) every <host>-*.partial under
<root>/venue=<v>/stream=<s>/ (left by a dead run) is sealed: its complete gzip members become the
final file, and of a member cut short (a write interrupted) the part up to its last flush, ended
anew; every byte after that readable prefix is kept beside it as <final name>.unreadable-tail; its
record has recovered=true and the dead run's run_id. Partials of other hosts are left alone. A lock file
(<stream dir>/.jsonl-rotate-<host>.lock) keeps two writers off the same stream and host.

Usage:
    jsonl-rotate --root DIR --stream NAME [options]
    jsonl-rotate --root DIR --stream NAME [--venue V] [--host H] --recover-only

Options:
    --root DIR          Archive root (created if missing).
    --stream NAME       Stream name, e.g. books, gamma, ws_market ([A-Za-z0-9._-]).
    --venue NAME        [default: polymarket]
    --flush-secs SECS   Longest time an accepted line stays only in memory; > 0 and <= 60. [default: 5]
    --rotate-secs N     Period length in whole seconds, 1..86400. [default: 3600]
    --flush-bytes N     Also flush when N bytes of accepted input are only in memory, 1..67108864
                        (scripts/bench_rotate.sh uses it to model --flush-secs at a data rate).
                        [default: 67108864]
    --level N           gzip level 0..9 [default: 7] (zlib-rs: 7 is the first level with the lazy
                        matcher; 3-6 miss most repeats of a book one poll back).
    --member-per-flush  Write the older format: every flush a complete gzip member with a fresh
                        dictionary (with --level 6: what jsonl-rotate wrote before 2026-12-01;
                        larger; kept for comparisons by the benchmarks).
    --host H            Host part of file names. [default: $PMARCHIVE_HOST or the host name]
    --run-id ID         Run part of file names. [default: $PMARCHIVE_RUN_ID or a new run id]
    --recover-only      Seal the dead runs' partials, print their records, exit (stdin not read).
    --check-args        Check the arguments as for a real run, then exit 0 (or 2 with the error)
                        without reading, writing or connecting (pipelines/collect.sh runs this first).
    -h, --help          Show this help.
    -V, --version       Show the version.

Signals: after SIGTERM/SIGINT stdin is read until EOF or for 5 s more, then the open file is sealed
and the tool exits 0. End of stdin: seal, exit 0. A closed stdout does not stop archiving: files
are still sealed (their records are then lost; a note goes to stderr) until stdin ends.

A full disk (ENOSPC) or another write error while running: one line on stderr (\"disk full under
…\"), the open .partial is left as it is (the next start seals its readable prefix; bytes of a write cut
short are kept as its unreadable tail) and the tool exits 1. Recovery on a
full disk leaves no empty or temp file: a tail file is created only with all its bytes (copied to
a dot temp file, fsynced, renamed); when that fails the partial stays as it was for the next start.

An input line longer than 256 MiB (the maximum line length, docs/DATA_CONTRACT.md) is not archived:
a pmarchive.skipped_line/1 record with its line number, length and first bytes takes its place, a note
goes to stderr, and the tool exits 1 at its end.

Exit status: 0 success; 1 a dead run's partial could not be recovered, a write failed while running
(disk full; reported on stderr), or an input line was too long (see above); 2 bad arguments, another
writer holds the stream, or an I/O error before writing started (creating the root or the lock file).
";

use std::path::PathBuf;
use std::time::Duration;

use pm_archive::cli::{self, ExitCode};
use pm_archive::envelope::{RunInfo, VENUE_POLYMARKET};
use pm_archive::rotate::{self, Config, RecordOut, Writer};
use pm_archive::{signal, util};

fn main() {
    cli::main("jsonl-rotate", run)
}

/// How long a new writer waits for a previous one (draining after SIGTERM) to release the stream.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The settings of a run: `Err` is the exit code of a run that ends here (--help, --version,
/// --check-args); bad arguments are the usual usage error.
fn parse_args() -> cli::Result<Result<(Config, bool), ExitCode>> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut root: Option<PathBuf> = None;
    let mut stream: Option<String> = None;
    let mut venue = VENUE_POLYMARKET.to_string();
    let mut flush_every = Duration::from_secs(5);
    let mut rotate_secs: u64 = 3600;
    let mut host: Option<String> = None;
    let mut run_id: Option<String> = None;
    let mut recover_only = false;
    let mut flush_bytes = rotate::FLUSH_BYTES;
    let mut member_per_flush = false;
    let mut level = rotate::DEFAULT_LEVEL;
    let mut check_args = false;
    while let Some(arg) = p.next()? {
        match arg {
            Long("root") => root = Some(PathBuf::from(p.value()?)),
            Long("stream") => stream = Some(cli::value(&mut p, "--stream")?),
            Long("venue") => venue = cli::value(&mut p, "--venue")?,
            Long("flush-secs") => flush_every = cli::seconds(&mut p, "--flush-secs")?,
            Long("rotate-secs") => rotate_secs = cli::value(&mut p, "--rotate-secs")?,
            Long("host") => host = Some(cli::value(&mut p, "--host")?),
            Long("run-id") => run_id = Some(cli::value(&mut p, "--run-id")?),
            Long("flush-bytes") => flush_bytes = cli::value(&mut p, "--flush-bytes")?,
            Long("member-per-flush") => member_per_flush = true,
            Long("level") => level = cli::value(&mut p, "--level")?,
            Long("recover-only") => recover_only = true,
            Long("check-args") => check_args = true,
            Short('h') | Long("help") => return cli::help(USAGE).map(Err),
            Short('V') | Long("version") => return cli::version("jsonl-rotate").map(Err),
            other => return cli::unexpected(other),
        }
    }
    let Some(root) = root else { return cli::usage("--root DIR is required") };
    let Some(stream) = stream else { return cli::usage("--stream NAME is required") };
    if flush_every > Duration::from_secs(60) {
        return cli::usage("--flush-secs: at most 60");
    }
    if !(1..=rotate::FLUSH_BYTES).contains(&flush_bytes) {
        return cli::usage(format!("--flush-bytes: must be 1..{}, got {flush_bytes}", rotate::FLUSH_BYTES));
    }
    if level > 9 {
        return cli::usage(format!("--level: must be 0..9, got {level}"));
    }
    if !(1..=86_400).contains(&rotate_secs) {
        return cli::usage(format!("--rotate-secs: must be 1..86400, got {rotate_secs}"));
    }
    let info = RunInfo::new("jsonl-rotate");
    let host = host.unwrap_or(info.host);
    let run_id = run_id.unwrap_or(info.run_id);
    for (flag, v) in [("--venue", &venue), ("--stream", &stream), ("--host", &host), ("--run-id", &run_id)] {
        if !util::is_safe_component(v) {
            return cli::usage(format!(
                "{flag}: '{v}' is not a safe path component (1-128 of [A-Za-z0-9._-], no leading dot)"
            ));
        }
    }
    if check_args {
        return Ok(Err(ExitCode::Success));
    }
    let cfg =
        Config { root, venue, stream, host, run_id, flush_every, rotate_secs, level, flush_bytes, member_per_flush };
    Ok(Ok((cfg, recover_only)))
}

fn run() -> cli::Result<ExitCode> {
    let (cfg, recover_only) = match parse_args()? {
        Ok(settings) => settings,
        Err(code) => return Ok(code),
    };
    signal::install();
    let _lock = match rotate::lock_stream(&cfg, LOCK_WAIT) {
        Ok(Some(f)) => f,
        Ok(None) => {
            return Err(cli::Error::Msg(format!(
                "another jsonl-rotate holds {} for host '{}' (waited {} s)",
                cfg.stream_dir().display(),
                cfg.host,
                LOCK_WAIT.as_secs()
            )))
        }
        Err(e) => return Err(cli::Error::Msg(format!("{}: {e}", cfg.stream_dir().display()))),
    };
    let mut out = RecordOut::new(std::io::stdout().lock());
    let (recovered, failed) = rotate::recover_all(&cfg, &mut out)?;
    let recovery = if failed > 0 { ExitCode::Failure } else { ExitCode::Success };
    if recover_only {
        eprintln!("jsonl-rotate: recovered {recovered} partial file(s), {failed} failed");
        return Ok(recovery);
    }

    let rx = rotate::spawn_reader(cli::stdin()?);
    let mut w = Writer::new(&cfg, &mut out);
    let result = w.run(&rx);
    let s = &w.summary;
    eprintln!(
        "jsonl-rotate: {} file(s) sealed, {} rows ({} not JSON), {} empty lines skipped{}",
        s.files,
        s.stats.rows,
        s.stats.invalid,
        s.stats.empty + w.unfiled().empty,
        if recovered > 0 { format!("; {recovered} dead-run partial(s) recovered") } else { String::new() }
    );
    match result {
        Ok(()) => Ok(if rotate::too_long_lines() > 0 { ExitCode::Failure } else { recovery }),
        // A runtime write failure is exit 1 (not 2, which means bad configuration and stops systemd's
        // restart loop): after space returns, the next start recovers the partial and goes on.
        Err(e) if util::is_disk_full(&e) => {
            eprintln!(
                "jsonl-rotate: disk full under {}: {e}; stopping. The open .partial (complete members) is \
                 kept and sealed by the next start",
                cfg.stream_dir().display()
            );
            Ok(ExitCode::Failure)
        }
        Err(e) => {
            eprintln!(
                "jsonl-rotate: I/O error under {}: {e}; stopping. The open .partial is kept and sealed by the \
                 next start",
                cfg.stream_dir().display()
            );
            Ok(ExitCode::Failure)
        }
    }
}
