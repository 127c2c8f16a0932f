const USAGE: &str = "
manifest — run manifests, archive verification, health status and the archive layout and upload
records for the scripts (pm-archive).

Usage:
    manifest build --root DIR [options]     < sealed-file records
    manifest verify ROOT [--json]
    manifest status ROOT [--json] [--stale-after SECS] [--books-after SECS] [--market-after SECS]
                         [--future-tolerance SECS] [--min-free-mib N] [--streams LIST] [--now RFC3339]
    manifest unlisted ROOT                  > sealed-file records
    manifest streams ROOT [--venue V]
    manifest run-id
    manifest offload (files|expected|state) ROOT
    manifest offload check ROOT             < sha256sum lines
    manifest offload append ROOT            < record lines
    manifest offload hash-type              < rclone backend features JSON

manifest build
    Reads sealed-file records (pmarchive.sealed/1, jsonl-rotate's stdout; several writers may share
    the pipe) on stdin. For each record it re-hashes the file (a sha256/size mismatch is reported in
    the manifest and on stderr), reads it once (multi-member gzip) and tallies rows by stream and
    kind, HTTP attempts by endpoint x status (\"none\" = no reply), retries, network errors, 429s,
    gaps by type and missed slots, markets tracked (start/stop), collector versions and tools.
    Unparseable lines are counted with file and line number, never fatal.
    It writes ROOT/manifests/run-<host>-<run_id>.json (pmarchive.manifest/1) atomically at start,
    after every record, every --refresh seconds (status \"running\"), and at stdin EOF (\"complete\")
    or SIGTERM/SIGINT (\"stopped\"). Nothing is written to stdout.

    --root DIR          Archive root (must exist).
    --run-id ID         Run id. [default: $PMARCHIVE_RUN_ID or a new one]
    --host H            Host name. [default: $PMARCHIVE_HOST or the machine's]
    --config FILE       A KEY=VALUE file to record (repeatable). Comments are dropped, and so is
                        every setting that looks like a secret: key contains SECRET, TOKEN,
                        PASSWORD, PASS, CREDENTIAL or PRIVATE; key contains KEY and the value looks
                        like a key (>= 16 chars of [A-Za-z0-9+/=_.-] with letters and digits, not a
                        path); or the value is a URL with user:password@. Only their names are kept.
    --refresh SECS      Rewrite the manifest at least this often while running. [default: 60]
    --label TEXT        Free text recorded in the manifest (e.g. \"soak test 1\").
    --check-args        Check the arguments as for a real run, then exit 0 (or 2 with the error)
                        without reading or writing (pipelines/collect.sh runs this first).
    -v, --verbose       One summary line on stderr per manifest update.
    The manifest's \"outcome\" says what the run collected: ok, degraded (a stream recorded no
    successful data, or more than half the HTTP attempts got no answer), failed (lines but not one
    with successful data: e.g. the venue was unreachable all along) or empty, with the counts; the
    last stderr line repeats it.
    Exit: 0; 1 when a listed file failed its re-hash or could not be read, an input line was not a
    sealed-file record (longer than 1 MiB included), or the disk is full (ENOSPC: \"manifest: disk
    full: ...\"; no temp file is left); 2 bad arguments, stdin is a directory, or another failure to
    write the manifest.

manifest verify ROOT
    Loads every ROOT/manifests/run-*.json, re-hashes every file (and unreadable tail) they list, and
    walks ROOT for *.jsonl.gz and *.unreadable-tail files outside manifests/ (*.partial files are
    ignored). Each file is: ok, offloaded (absent, but ROOT/manifests/uploads.jsonl has a
    local_delete record and a verified upload record with the same path and sha256), missing,
    changed (sha256 or size differs) or unlisted (on disk, in no manifest).
    --json              One JSON document (pmarchive.verify/1) instead of the table.
    Exit: 0 all ok; 1 any missing/changed/unlisted file or a bad manifest; 2 bad arguments or an
    unreadable root.

manifest status ROOT
    Health: per stream, the newest line and the newest successful data (newest sealed file and open
    *.partial files, whose complete gzip members are decoded), rows, missed slots, HTTP errors and
    429s in the last hour, markets tracked now and in the last hour; archive bytes, disk free
    (statvfs), bytes written in the last 24 h and days of disk left at that rate; the last upload.
    Successful data is an HTTP 2xx reply with at least one book (books) or record (gamma), or a
    websocket frame with book data: gap lines and failed attempts never make a stream fresh.
    UNHEALTHY (exit 1), one PROBLEM line per finding, named by its reason:
        no_data            no line at all under ROOT
        missing_stream     a --streams stream has no file
        stale              a required stream has no successful data within --stale-after
        no_books           markets are tracked now but no book arrived within --books-after
        no_market          no market tracked now and Gamma found none within --market-after
        venue_unreachable  every HTTP attempt of a required stream in the last --stale-after got no
                           answer (no reply, or an error status other than 404)
        disk_full          free space below --min-free-mib, or no free inode
        clock_ahead        a line is dated after now + --future-tolerance (the wall clock stepped);
                           such lines never count as fresh
    The last line is HEALTHY or UNHEALTHY: <reasons>.
    --json              One JSON document (pmarchive.status/1) instead of the table; `reasons` and
                        `problems[].reason` carry the names above.
    --stale-after SECS  A stream without successful data for longer is stale. [default: 300]
    --books-after SECS  Markets tracked and no book for longer: no_books. [default: 120]
    --market-after SECS No market tracked or found for longer: no_market. [default: 900]
    --future-tolerance SECS
                        Lines dated later than now + this: clock_ahead. [default: 60]
    --min-free-mib N    Less free disk (MiB) than this: disk_full. [default: 100]
    --streams LIST      Comma-separated streams that must be fresh (e.g. books,gamma,kalshi/books):
                        VENUE/STREAM, or a bare STREAM of venue polymarket. Other streams are shown
                        (stale or not) but never fail the check (clock_ahead, disk_full and
                        no_market still apply; no_market is judged per venue). A listed stream with
                        no file at all is a failure. An empty LIST means the default.
                        [default: every stream found]
    --now RFC3339       Evaluate as of this instant. [default: the clock; PMARCHIVE_CLOCK applies]
    Exit: 0 healthy; 1 unhealthy (any reason above); 2 bad arguments or an unreadable root.

manifest unlisted ROOT
    Prints one pmarchive.sealed/1 record (with \"adopted\": true) for every sealed *.jsonl.gz file
    under ROOT that no manifest lists, with its *.unreadable-tail when that is unlisted too: files
    sealed after their run's manifest stage died (e.g. kill -9). Only those files are hashed. Pipe
    the records into `manifest build` to list them (the collector's cycle script does, at start).
    Run it only while no collector writes to ROOT: a live run's newest files are not listed yet.
    Exit: 0 (also when nothing is unlisted); 1 a file could not be read (reported on stderr, the
    others are printed); 2 bad arguments, an unreadable root or an unreadable manifest (then
    nothing is printed: adopting files it may list would list them twice).

manifest streams ROOT
    Prints the streams of a venue: the stream=<name> directories under ROOT/venue=V/ (default
    --venue polymarket), one per line, sorted; nothing when the venue has no directory (the
    collector's cycle script asks this instead of keeping a list).
    Exit: 0; 2 bad arguments or an unreadable root.

manifest run-id
    Prints a new run id, 20261124T160133Z-<pid>-<4 hex> (UTC start, process id, random): the one
    generator of run ids (a tool without PMARCHIVE_RUN_ID makes one the same way); the scripts call
    this. Exit: 0.

manifest offload SUBCOMMAND
    What the uploader (scripts/upload_archive_rclone.sh) needs from the archive's JSON, as
    tab-separated lines (- = none), so that the script parses no JSON:
    files ROOT          CLASS<TAB>MTIME<TAB>BYTES<TAB>PATH for every file under ROOT outside
                        manifests/ (MTIME in epoch seconds). CLASS: archive (a sealed *.jsonl.gz or
                        its *.jsonl.gz.unreadable-tail exactly in the layout
                        venue=V/stream=S/date=YYYY-MM-DD/hour=HH/NAME), partial, dot (a dot file:
                        locks, temp files) or other.
    expected ROOT       SHA256<TAB>PATH for every file and unreadable tail the run manifests list,
                        with the sha256 recorded at sealing (conflict when two entries disagree).
                        A manifest nothing can be read from is named on stderr: the files only it
                        lists are unlisted (the safe side).
    check ROOT          The local check. Reads sha256sum's lines (SHA256, two spaces, PATH) on
                        stdin; prints RESULT<TAB>PATH<TAB>MANIFEST_SHA256 for each: ok, unlisted,
                        manifest_mismatch (the local bytes differ from the sha256 recorded at
                        sealing, printed) or manifest_conflict. Unreadable manifests as for expected.
    state ROOT          PATH<TAB>SHA256<TAB>VERIFIED<TAB>VERIFIED_BY<TAB>SKIPPED<TAB>MD5: the latest
                        upload record of each path and sha256 in ROOT/manifests/uploads.jsonl (MD5 of
                        a verified record only). Lines that are not records are counted on stderr.
    append ROOT         Appends pmarchive.upload/1 records to ROOT/manifests/uploads.jsonl, stamped
                        now, in one write and one fsync (a torn last line is closed first, a new
                        file's directory is fsynced). One tab-separated line per record on stdin
                        (an empty column is null; remote_path = local_path):
                          upload LOCAL_PATH BYTES SHA256 MD5 REMOTE REMOTE_MD5 VERIFIED VERIFIED_BY
                                 RCLONE_EXIT SKIPPED MANIFEST_SHA256 CHECK QUARANTINED_AS
                          local_delete LOCAL_PATH BYTES SHA256 REMOTE REASON
                        A bad line: nothing is written (exit 2).
    hash-type           Reads `rclone backend features REMOTE` (JSON) on stdin; prints md5 or
                        sha256 (the remote has that hash) or size (neither).
    Exit: 0; 1 (files) a directory could not be read; 2 bad arguments or input, an unreadable root
    or upload log, a failed write.

Common:
    -h, --help          Show this help.
    -V, --version       Show the version.
";

use std::path::PathBuf;
use std::time::Duration;

use pm_archive::cli::{self, ExitCode};
use pm_archive::clock;
use pm_archive::envelope::RunInfo;
use pm_archive::manifest::{build, offload, status, verify};

fn main() {
    cli::main("manifest", run)
}

fn run() -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let sub = match p.next()? {
        Some(Value(v)) => v.into_string().map_err(|_| cli::Error::Usage("subcommand is not UTF-8".into()))?,
        Some(Short('h') | Long("help")) => return cli::help(USAGE),
        Some(Short('V') | Long("version")) => return cli::version("manifest"),
        Some(other) => return cli::unexpected(other),
        None => return cli::usage("missing subcommand: build, verify, status, unlisted, streams, run-id or offload"),
    };
    match sub.as_str() {
        "build" => run_build(p),
        "verify" => run_verify(p),
        "status" => run_status(p),
        "unlisted" => run_unlisted(p),
        "streams" => run_streams(p),
        "run-id" => run_run_id(p),
        "offload" => run_offload(p),
        other => cli::usage(format!(
            "unknown subcommand '{other}' (build, verify, status, unlisted, streams, run-id, offload)"
        )),
    }
}

fn run_build(mut p: lexopt::Parser) -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    let (mut root, mut run_id, mut host, mut label) = (None::<PathBuf>, None::<String>, None::<String>, None::<String>);
    let mut configs = Vec::new();
    let mut refresh = Duration::from_secs(60);
    let mut verbose = false;
    let mut check_args = false;
    while let Some(arg) = p.next()? {
        match arg {
            Long("root") => root = Some(cli::value(&mut p, "--root")?),
            Long("run-id") => run_id = Some(cli::value(&mut p, "--run-id")?),
            Long("host") => host = Some(cli::value(&mut p, "--host")?),
            Long("config") => configs.push(cli::value::<PathBuf>(&mut p, "--config")?),
            Long("refresh") => refresh = cli::seconds(&mut p, "--refresh")?,
            Long("label") => label = Some(cli::value(&mut p, "--label")?),
            Short('v') | Long("verbose") => verbose = true,
            Long("check-args") => check_args = true,
            Short('h') | Long("help") => return cli::help(USAGE),
            other => return cli::unexpected(other),
        }
    }
    let Some(root) = root else { return cli::usage("build: --root DIR is required") };
    let info = RunInfo::new("manifest");
    let opts = build::BuildOptions {
        root,
        run_id: run_id.unwrap_or(info.run_id),
        host: host.unwrap_or(info.host),
        configs,
        refresh,
        label,
        verbose,
    };
    if check_args {
        return Ok(ExitCode::Success);
    }
    // Plain line reading: sealed records are never compressed, and a reader that sniffs for gzip
    // would block on stdin before the first manifest is written.
    Ok(match build::run(opts, Box::new(std::io::BufReader::new(cli::stdin()?)))? {
        build::BuildEnd::Done { failures: false } => ExitCode::Success,
        build::BuildEnd::Done { failures: true } | build::BuildEnd::DiskFull => ExitCode::Failure,
    })
}

fn print_doc<T: serde::Serialize>(doc: &T, json: bool, human: fn(&T) -> String) -> cli::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, doc)?;
        out.write_all(b"\n")?;
    } else {
        out.write_all(human(doc).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

fn root_arg(root: &mut Option<PathBuf>, v: std::ffi::OsString) -> cli::Result<()> {
    if root.is_some() {
        return cli::usage(format!("unexpected argument {:?}: only one ROOT", v));
    }
    *root = Some(PathBuf::from(v));
    Ok(())
}

fn run_verify(mut p: lexopt::Parser) -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    let (mut root, mut json) = (None::<PathBuf>, false);
    while let Some(arg) = p.next()? {
        match arg {
            Long("json") => json = true,
            Short('h') | Long("help") => return cli::help(USAGE),
            Value(v) => root_arg(&mut root, v)?,
            other => return cli::unexpected(other),
        }
    }
    let Some(root) = root else { return cli::usage("verify: ROOT is required") };
    let report = verify::verify(&root)?;
    print_doc(&report, json, verify::human)?;
    Ok(if report.ok { ExitCode::Success } else { ExitCode::Failure })
}

fn run_unlisted(mut p: lexopt::Parser) -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    use std::io::Write;
    let mut root = None::<PathBuf>;
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return cli::help(USAGE),
            Value(v) => root_arg(&mut root, v)?,
            other => return cli::unexpected(other),
        }
    }
    let Some(root) = root else { return cli::usage("unlisted: ROOT is required") };
    let (records, problems) = offload::unlisted(&root).map_err(offload_error)?;
    for p in &problems {
        eprintln!("manifest: unlisted: {p}");
    }
    let mut out = std::io::stdout().lock();
    for r in &records {
        serde_json::to_writer(&mut out, r)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(if problems.is_empty() { ExitCode::Success } else { ExitCode::Failure })
}

fn run_status(mut p: lexopt::Parser) -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    let (mut root, mut json) = (None::<PathBuf>, false);
    let mut stale_after = Duration::from_secs(300);
    let mut books_after = Duration::from_secs(120);
    let mut market_after = Duration::from_secs(900);
    let mut future_tolerance = Duration::from_secs(60);
    let mut min_free_mib: u64 = 100;
    let mut now = None;
    let mut streams = None;
    while let Some(arg) = p.next()? {
        match arg {
            Long("json") => json = true,
            Long("stale-after") => stale_after = cli::seconds(&mut p, "--stale-after")?,
            Long("books-after") => books_after = cli::seconds(&mut p, "--books-after")?,
            Long("market-after") => market_after = cli::seconds(&mut p, "--market-after")?,
            Long("future-tolerance") => future_tolerance = cli::seconds(&mut p, "--future-tolerance")?,
            Long("min-free-mib") => min_free_mib = cli::value(&mut p, "--min-free-mib")?,
            Long("streams") => {
                let list: String = cli::value(&mut p, "--streams")?;
                let names: Vec<String> =
                    list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
                let safe = |n: &str| n.split('/').count() <= 2 && n.split('/').all(pm_archive::util::is_safe_component);
                if let Some(bad) = names.iter().find(|n| !safe(n)) {
                    return cli::usage(format!("--streams: '{bad}' is not a stream name (STREAM or VENUE/STREAM)"));
                }
                // An empty list (e.g. an unset setting in a unit file) means every stream found.
                streams = (!names.is_empty()).then_some(names);
            }
            Long("now") => {
                let s: String = cli::value(&mut p, "--now")?;
                now = Some(
                    clock::parse_rfc3339(&s)
                        .ok_or_else(|| cli::Error::Usage(format!("--now: not an RFC 3339 time: '{s}'")))?,
                );
            }
            Short('h') | Long("help") => return cli::help(USAGE),
            Value(v) => root_arg(&mut root, v)?,
            other => return cli::unexpected(other),
        }
    }
    let Some(root) = root else { return cli::usage("status: ROOT is required") };
    let opts = status::StatusOptions {
        stale_after,
        books_after,
        market_after,
        future_tolerance,
        min_free_bytes: min_free_mib.saturating_mul(1 << 20),
        now: now.unwrap_or_else(clock::now),
        streams,
    };
    let st = status::status(&root, &opts)?;
    print_doc(&st, json, status::human)?;
    Ok(st.exit_code())
}

fn offload_error(e: offload::Error) -> cli::Error {
    match e {
        offload::Error::Io(e) => cli::Error::Io(e),
        e => cli::Error::Msg(e.to_string()),
    }
}

/// Only ROOT (and --help) as arguments; None when the help was printed.
fn only_root(mut p: lexopt::Parser, what: &str) -> cli::Result<Option<PathBuf>> {
    use lexopt::prelude::*;
    let mut root = None::<PathBuf>;
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => {
                cli::help(USAGE)?;
                return Ok(None);
            }
            Value(v) => root_arg(&mut root, v)?,
            other => return cli::unexpected(other),
        }
    }
    root.map(Some).ok_or_else(|| cli::Error::Usage(format!("{what}: ROOT is required")))
}

fn run_streams(mut p: lexopt::Parser) -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    let (mut root, mut venue) = (None::<PathBuf>, "polymarket".to_string());
    while let Some(arg) = p.next()? {
        match arg {
            Long("venue") => venue = cli::value(&mut p, "--venue")?,
            Short('h') | Long("help") => return cli::help(USAGE),
            Value(v) => root_arg(&mut root, v)?,
            other => return cli::unexpected(other),
        }
    }
    let Some(root) = root else { return cli::usage("streams: ROOT is required") };
    if !pm_archive::util::is_safe_component(&venue) {
        return cli::usage(format!("--venue: '{venue}' is not a venue name"));
    }
    if !root.is_dir() {
        return Err(cli::Error::Msg(format!("{}: not a readable directory", root.display())));
    }
    let streams = pm_archive::layout::streams(&root, &venue)
        .map_err(|e| cli::Error::Msg(format!("{}: {e}", root.display())))?
        .unwrap_or_default();
    cli::print(&streams.iter().map(|s| format!("{s}\n")).collect::<String>())?;
    Ok(ExitCode::Success)
}

fn run_run_id(mut p: lexopt::Parser) -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    if let Some(arg) = p.next()? {
        return match arg {
            Short('h') | Long("help") => cli::help(USAGE),
            other => cli::unexpected(other),
        };
    }
    cli::print(&format!("{}\n", pm_archive::util::new_run_id()))?;
    Ok(ExitCode::Success)
}

fn read_stdin() -> cli::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    cli::stdin()?.read_to_end(&mut buf)?;
    Ok(buf)
}

fn dash(s: Option<&str>) -> &str {
    s.filter(|s| !s.is_empty()).unwrap_or("-")
}

fn run_offload(mut p: lexopt::Parser) -> cli::Result<ExitCode> {
    use lexopt::prelude::*;
    use offload::Expected;
    let sub = match p.next()? {
        Some(Value(v)) => v.into_string().map_err(|_| cli::Error::Usage("offload: subcommand is not UTF-8".into()))?,
        Some(Short('h') | Long("help")) => return cli::help(USAGE),
        Some(other) => return cli::unexpected(other),
        None => return cli::usage("offload: missing subcommand: files, expected, check, state, append or hash-type"),
    };
    let mut out = String::new();
    let mut code = ExitCode::Success;
    match sub.as_str() {
        "files" => {
            let Some(root) = only_root(p, "offload files")? else { return Ok(ExitCode::Success) };
            let (files, errors) = offload::files(&root).map_err(offload_error)?;
            for e in &errors {
                eprintln!("manifest: offload files: unreadable: {e}");
                code = ExitCode::Failure;
            }
            for (class, f) in files {
                // A name with a tab or line break (never an archive file) must not break the lines.
                let rel: String = f.rel.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
                out.push_str(&format!("{}\t{}\t{}\t{rel}\n", class.word(), f.mtime, f.bytes));
            }
        }
        "expected" | "check" => {
            let Some(root) = only_root(p, &format!("offload {sub}"))? else { return Ok(ExitCode::Success) };
            if !root.is_dir() {
                return Err(cli::Error::Msg(format!("{}: not a readable directory", root.display())));
            }
            let (expected, unreadable) = offload::expected(&root);
            for u in &unreadable {
                eprintln!(
                    "manifest: offload: no file entry could be read from {u}; the files it lists count as unlisted"
                );
            }
            if sub == "expected" {
                for (path, e) in &expected {
                    let sha = match e {
                        Expected::Sha256(s) => s.as_str(),
                        Expected::Conflict => "conflict",
                    };
                    out.push_str(&format!("{sha}\t{path}\n"));
                }
            } else {
                let input = read_stdin()?;
                for (i, line) in String::from_utf8_lossy(&input).lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let Some((sha, path)) = line.split_once("  ") else {
                        return cli::usage(format!("offload check: input line {}: not 'SHA256  PATH'", i + 1));
                    };
                    let c = offload::check(&expected, sha, path);
                    let recorded = match &c {
                        offload::LocalCheck::ManifestMismatch(s) => Some(s.as_str()),
                        _ => None,
                    };
                    out.push_str(&format!("{}\t{path}\t{}\n", c.word(), dash(recorded)));
                }
            }
        }
        "state" => {
            let Some(root) = only_root(p, "offload state")? else { return Ok(ExitCode::Success) };
            let (state, bad) = offload::state(&root).map_err(|e| {
                cli::Error::Msg(format!("{}: {e}", pm_archive::manifest::uploads_path(&root).display()))
            })?;
            if bad > 0 {
                eprintln!("manifest: offload state: {bad} line(s) of the upload log are not records; ignored");
            }
            for ((path, sha), st) in &state {
                out.push_str(&format!(
                    "{path}\t{sha}\t{}\t{}\t{}\t{}\n",
                    st.verified,
                    dash(st.verified_by.as_deref()),
                    dash(st.skipped.as_deref()),
                    dash(st.md5.as_deref())
                ));
            }
        }
        "append" => {
            let Some(root) = only_root(p, "offload append")? else { return Ok(ExitCode::Success) };
            if !root.join("manifests").is_dir() {
                return Err(cli::Error::Msg(format!("{}/manifests: not a directory", root.display())));
            }
            let input = read_stdin()?;
            let at = offload::now_utc();
            let mut records = Vec::new();
            for (i, line) in String::from_utf8_lossy(&input).lines().enumerate() {
                if line.is_empty() {
                    continue;
                }
                let rec = offload::parse_record_line(line, &at)
                    .map_err(|e| cli::Error::Usage(format!("offload append: input line {}: {e}", i + 1)))?;
                records.push(rec);
            }
            offload::append(&root, &records)?;
        }
        "hash-type" => {
            if let Some(arg) = p.next()? {
                return cli::unexpected(arg);
            }
            let t = offload::hash_type(&read_stdin()?).map_err(offload_error)?;
            out = format!("{t}\n");
        }
        other => {
            return cli::usage(format!(
                "offload: unknown subcommand '{other}' (files, expected, check, state, append, hash-type)"
            ))
        }
    }
    cli::print(&out)?;
    Ok(code)
}
