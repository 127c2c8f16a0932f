//! `manifest build`: turns the sealed-file records of a run (jsonl-rotate's stdout) into the run
//! manifest `ROOT/manifests/run-<host>-<run_id>.json` (schema `pmarchive.manifest/1`), rewritten
//! atomically after every record, every `--refresh` seconds, and at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{
    read_data_file, FileEntry, Parsed, Problem, RunManifest, RunTallies, RunTotals, StreamEntry, StreamTotals, Tally,
    Versions, MANIFEST_SCHEMA, MAX_PROBLEMS,
};
use crate::cli;
use crate::layout::{is_safe_rel_path, stream_key, Sealed, SEALED_RECORD};
use crate::{clock, jsonl, signal, util};

/// Options of `manifest build`.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub root: PathBuf,
    pub run_id: String,
    pub host: String,
    pub configs: Vec<PathBuf>,
    pub refresh: Duration,
    pub label: Option<String>,
    /// Print a one-line summary on stderr at every update.
    pub verbose: bool,
}

// ---------------------------------------------------------------------------------------------
// Configuration files

/// One `--config` file as recorded in the manifest: its `KEY=VALUE` settings minus secrets.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ConfigFile {
    pub path: String,
    /// Settings kept (sorted by key).
    pub entries: BTreeMap<String, String>,
    /// Names of the keys left out because they look like secrets (values are never recorded).
    pub dropped_keys: Vec<String>,
    /// Line numbers of non-comment lines that are not `KEY=VALUE` (not recorded either).
    pub ignored_lines: Vec<u64>,
}

/// Words in a key that mark its value as a secret, whatever the value looks like.
const SECRET_WORDS: [&str; 6] = ["SECRET", "TOKEN", "PASSWORD", "PASS", "CREDENTIAL", "PRIVATE"];

/// True when a value looks like a key or credential: at least 16 characters, no whitespace, only
/// `[A-Za-z0-9+/=_.-]`, with both letters and digits, and not a path (`/`, `.`, `~` first).
fn looks_like_secret(v: &str) -> bool {
    let v = v.trim_matches(|c| c == '"' || c == '\'');
    v.len() >= 16
        && !v.starts_with(['/', '.', '~'])
        && v.chars().all(|c| c.is_ascii_alphanumeric() || "+/=_.-".contains(c))
        && v.chars().any(|c| c.is_ascii_digit())
        && v.chars().any(|c| c.is_ascii_alphabetic())
}

/// The secret rule (documented in docs/DATA_CONTRACT.md, "Run manifest"): a setting is dropped when
/// its key (case-insensitive) contains SECRET, TOKEN, PASSWORD, PASS, CREDENTIAL or PRIVATE; or
/// contains KEY and its value looks like a secret; or its value holds credentials in a URL
/// (`scheme://user:password@host`). False positives only drop harmless settings.
pub fn is_secret(key: &str, value: &str) -> bool {
    let k = key.to_ascii_uppercase();
    if SECRET_WORDS.iter().any(|w| k.contains(w)) {
        return true;
    }
    if k.contains("KEY") && looks_like_secret(value) {
        return true;
    }
    // URL user info with a password: scheme://user:pw@host
    if let Some(i) = value.find("://") {
        let rest = &value[i + 3..];
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if userinfo.contains(':') {
                return true;
            }
        }
    }
    false
}

/// Parses a `KEY=VALUE` file (shell env-file style: `#` comments, blank lines, optional `export `).
pub fn parse_config(path: &str, text: &str) -> ConfigFile {
    let mut c = ConfigFile {
        path: path.to_string(),
        entries: BTreeMap::new(),
        dropped_keys: Vec::new(),
        ignored_lines: Vec::new(),
    };
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let t = t.strip_prefix("export ").map(str::trim_start).unwrap_or(t);
        let Some((k, v)) = t.split_once('=') else {
            c.ignored_lines.push(i as u64 + 1);
            continue;
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|ch| ch.is_ascii_alphanumeric() || "_.-".contains(ch)) {
            c.ignored_lines.push(i as u64 + 1);
            continue;
        }
        let v = v.trim();
        if is_secret(k, v) {
            c.dropped_keys.push(k.to_string());
        } else {
            c.entries.insert(k.to_string(), v.to_string());
        }
    }
    c
}

// ---------------------------------------------------------------------------------------------
// The manifest

struct FileState {
    entry: FileEntry,
    tally: Tally,
}

/// The manifest being built.
pub struct Builder {
    opts: BuildOptions,
    started_at_utc: String,
    writes: u64,
    configs: Vec<ConfigFile>,
    files: BTreeMap<String, FileState>,
    input_lines: u64,
    bad_input_lines: u64,
    duplicate_records: u64,
    hash_mismatches: u64,
    unreadable_files: u64,
    problems: Vec<Problem>,
    problems_dropped: u64,
    writer_versions: BTreeSet<String>,
}

impl Builder {
    /// Reads the config files (an unreadable one is a usage error).
    pub fn new(opts: BuildOptions) -> cli::Result<Builder> {
        if !util::is_safe_component(&opts.run_id) {
            return cli::usage(format!("--run-id: not a safe file-name component: '{}'", opts.run_id));
        }
        if !util::is_safe_component(&opts.host) {
            return cli::usage(format!("--host: not a safe file-name component: '{}'", opts.host));
        }
        if !opts.root.is_dir() {
            return cli::usage(format!("--root {}: not a directory", opts.root.display()));
        }
        let mut configs = Vec::new();
        for p in &opts.configs {
            let text =
                std::fs::read_to_string(p).map_err(|e| cli::Error::Usage(format!("--config {}: {e}", p.display())))?;
            configs.push(parse_config(&p.display().to_string(), &text));
        }
        Ok(Builder {
            opts,
            started_at_utc: clock::fmt_micros(clock::now()),
            writes: 0,
            configs,
            files: BTreeMap::new(),
            input_lines: 0,
            bad_input_lines: 0,
            duplicate_records: 0,
            hash_mismatches: 0,
            unreadable_files: 0,
            problems: Vec::new(),
            problems_dropped: 0,
            writer_versions: BTreeSet::new(),
        })
    }

    /// `ROOT/manifests/run-<host>-<run_id>.json`.
    pub fn manifest_path(&self) -> PathBuf {
        self.opts.root.join("manifests").join(format!("run-{}-{}.json", self.opts.host, self.opts.run_id))
    }

    /// True when a sealed file failed its re-hash or could not be read.
    pub fn has_failures(&self) -> bool {
        self.hash_mismatches + self.unreadable_files + self.bad_input_lines > 0
    }

    fn problem(&mut self, v: Problem) {
        eprintln!("manifest: {}", v.text());
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(v);
        } else {
            self.problems_dropped += 1;
        }
    }

    /// Handles one input line (a sealed-file record). Bad lines are counted and reported.
    pub fn add_input_line(&mut self, line: &str) {
        self.input_lines += 1;
        let n = self.input_lines;
        if line.trim().is_empty() {
            return;
        }
        let bad = match serde_json::from_str::<Sealed>(line) {
            Err(e) => Err(format!("not a sealed-file record: {e}")),
            Ok(rec) if rec.record != SEALED_RECORD => Err(format!("record is '{}', not '{SEALED_RECORD}'", rec.record)),
            Ok(rec)
                if !is_safe_rel_path(&rec.path) || rec.tail_path.as_deref().is_some_and(|t| !is_safe_rel_path(t)) =>
            {
                Err(format!("unsafe path in record: {:?}", rec.path))
            }
            Ok(rec) => Ok(rec),
        };
        let rec = match bad {
            Ok(rec) => rec,
            Err(why) => {
                self.bad_input_lines += 1;
                self.problem(Problem::input("bad_input_line", Some(n), why));
                return;
            }
        };
        self.add_sealed(rec);
    }

    /// Re-hashes and reads one sealed file, and lists it.
    pub fn add_sealed(&mut self, rec: Sealed) {
        if let Some(old) = self.files.get(&rec.path) {
            self.duplicate_records += 1;
            if old.entry.sha256 == rec.sha256 {
                return; // the same record twice (e.g. a replayed input): nothing new
            }
            let why = format!(
                "sealed again with another sha256 ({} → {}); the later record is listed",
                old.entry.sha256, rec.sha256
            );
            self.problem(Problem::file("sealed_twice", &rec.path, why));
        }
        if let Some(w) = &rec.writer_version {
            self.writer_versions.insert(w.clone());
        }
        let stream = rec
            .stream
            .clone()
            .unwrap_or_else(|| crate::layout::partition(&rec.path).stream.unwrap_or_else(|| "unknown".into()));
        let abs = self.opts.root.join(&rec.path);
        let mut entry = FileEntry {
            path: rec.path.clone(),
            venue: rec.venue.clone(),
            stream,
            host: rec.host.clone(),
            run_id: rec.run_id.clone(),
            n: rec.n,
            rows: rec.rows,
            bytes: rec.bytes,
            sha256: rec.sha256.clone(),
            sha256_check: "ok".into(),
            sha256_actual: None,
            bytes_actual: None,
            check_error: None,
            lines_read: 0,
            unparseable_lines: 0,
            first_collected_at_utc: rec.first_collected_at_utc.clone(),
            last_collected_at_utc: rec.last_collected_at_utc.clone(),
            opened_at_utc: rec.opened_at_utc.clone(),
            sealed_at_utc: rec.sealed_at_utc.clone(),
            recovered: rec.recovered,
            adopted: rec.adopted,
            tail_path: rec.tail_path.clone(),
            tail_bytes: rec.tail_bytes,
            tail_sha256: None,
            writer_version: rec.writer_version.clone(),
        };
        let mut tally = Tally::default();
        match util::sha256_file(&abs) {
            Err(e) => {
                entry.sha256_check = "unreadable".into();
                entry.check_error = Some(e.to_string());
                self.unreadable_files += 1;
                self.problem(Problem::file("unreadable", &rec.path, e.to_string()));
            }
            Ok((sha, n)) => {
                if sha != rec.sha256 || rec.bytes.is_some_and(|b| b != n) {
                    entry.sha256_check = "mismatch".into();
                    entry.sha256_actual = Some(sha.clone());
                    entry.bytes_actual = Some(n);
                    self.hash_mismatches += 1;
                    let why = format!(
                        "record says sha256 {} ({} bytes), file has {} ({} bytes)",
                        rec.sha256,
                        rec.bytes.map_or("?".into(), |b| b.to_string()),
                        sha,
                        n
                    );
                    self.problem(Problem::file("sha256_mismatch", &rec.path, why));
                }
                self.read_file(&abs, &mut entry, &mut tally);
            }
        }
        if let Some(t) = &rec.tail_path {
            match util::sha256_file(&self.opts.root.join(t)) {
                Ok((sha, _)) => entry.tail_sha256 = Some(sha),
                Err(e) => self.problem(Problem::file("tail_unreadable", t, e.to_string())),
            }
        }
        self.files.insert(rec.path, FileState { entry, tally });
    }

    fn read_file(&mut self, abs: &Path, entry: &mut FileEntry, tally: &mut Tally) {
        let mut bad: Vec<Problem> = Vec::new();
        let mut unparseable = 0u64;
        let path = entry.path.clone();
        let res = read_data_file(abs, false, |n, p| match p {
            Parsed::Line(l) => tally.add(&l),
            Parsed::Malformed(why) => {
                tally.add_malformed();
                bad.push(Problem { line: Some(n), ..Problem::file("malformed_line", &path, why) });
            }
            Parsed::Unparseable(why) => {
                unparseable += 1;
                bad.push(Problem { line: Some(n), ..Problem::file("unparseable_line", &path, why) });
            }
        });
        entry.unparseable_lines = unparseable;
        for b in bad {
            self.problem(b);
        }
        match res {
            Ok(out) => {
                entry.lines_read = out.lines;
                if let Some(e) = out.error {
                    self.problem(Problem::file("decode_error", &entry.path, e));
                }
                if entry.rows.is_some_and(|r| r != out.lines) {
                    let why = format!("record says {} rows, {} lines read", entry.rows.unwrap_or(0), out.lines);
                    self.problem(Problem::file("row_count_mismatch", &entry.path, why));
                }
            }
            Err(e) => self.problem(Problem::file("unreadable", &entry.path, e.to_string())),
        }
        // Prefer the times the lines carry when the record has none.
        if entry.first_collected_at_utc.is_none() {
            entry.first_collected_at_utc.clone_from(&tally.first_collected_at_utc);
        }
        if entry.last_collected_at_utc.is_none() {
            entry.last_collected_at_utc.clone_from(&tally.last_collected_at_utc);
        }
    }

    /// The run's [`Outcome`] (as in the document).
    pub fn outcome(&self) -> Outcome {
        let mut all = Tally::default();
        let mut streams: BTreeMap<String, Tally> = BTreeMap::new();
        for f in self.files.values() {
            all.merge(&f.tally);
            streams.entry(stream_key(f.entry.venue.as_deref(), &f.entry.stream)).or_default().merge(&f.tally);
        }
        Outcome::of(&all, &streams.into_iter().collect::<Vec<_>>())
    }

    /// The manifest document with the given status (`running`, `complete`, `stopped`).
    pub fn document(&self, status: &str, now: &str) -> RunManifest {
        let mut streams: BTreeMap<String, StreamEntry> = BTreeMap::new();
        let mut all = Tally::default();
        let mut totals = RunTotals {
            files: self.files.len() as u64,
            hash_mismatches: self.hash_mismatches,
            unreadable_files: self.unreadable_files,
            input_lines: self.input_lines,
            bad_input_lines: self.bad_input_lines,
            duplicate_records: self.duplicate_records,
            ..RunTotals::default()
        };
        for f in self.files.values() {
            let s = streams.entry(stream_key(f.entry.venue.as_deref(), &f.entry.stream)).or_default();
            s.files.push(f.entry.clone());
            s.tally.merge(&f.tally);
            s.totals.files += 1;
            s.totals.rows += f.entry.rows.unwrap_or(f.entry.lines_read);
            s.totals.bytes += f.entry.bytes.unwrap_or(0);
            all.merge(&f.tally);
            totals.rows += f.entry.rows.unwrap_or(f.entry.lines_read);
            totals.bytes += f.entry.bytes.or(f.entry.bytes_actual).unwrap_or(0);
            totals.lines_read += f.entry.lines_read;
            totals.unparseable_lines += f.entry.unparseable_lines;
        }
        for s in streams.values_mut() {
            s.totals = StreamTotals {
                first_collected_at_utc: s.tally.first_collected_at_utc.clone(),
                last_collected_at_utc: s.tally.last_collected_at_utc.clone(),
                ..s.totals.clone()
            };
        }
        totals.first_collected_at_utc.clone_from(&all.first_collected_at_utc);
        totals.last_collected_at_utc.clone_from(&all.last_collected_at_utc);
        let markets: Vec<super::MarketTrack> = all.markets.values().cloned().collect();
        RunManifest {
            schema: MANIFEST_SCHEMA.into(),
            run_id: self.opts.run_id.clone(),
            host: self.opts.host.clone(),
            label: self.opts.label.clone(),
            status: status.into(),
            outcome: self.outcome(),
            started_at_utc: self.started_at_utc.clone(),
            updated_at_utc: now.into(),
            finished_at_utc: (status != "running").then(|| now.to_string()),
            manifest_version: self.writes + 1,
            versions: Versions {
                manifest: crate::VERSION.into(),
                writers: self.writer_versions.clone(),
                collectors: all.collector_versions.clone(),
                tools: all.tools.clone(),
            },
            config: self.configs.clone(),
            totals,
            tallies: RunTallies {
                rows_by_stream_kind: streams.iter().map(|(n, s)| (n.clone(), s.tally.rows_by_kind.clone())).collect(),
                http: all.http.clone(),
                gaps: all.gaps.clone(),
                markets_tracked: markets.len() as u64,
                markets,
                collector_versions: all.collector_versions.clone(),
                tools: all.tools.clone(),
                ws_event_types: all.ws_event_types.clone(),
            },
            streams,
            problems: self.problems.clone(),
            problems_dropped: self.problems_dropped,
        }
    }

    /// Writes the manifest atomically.
    pub fn write(&mut self, status: &str) -> io::Result<()> {
        let now = clock::fmt_micros(clock::now());
        let doc = self.document(status, &now);
        let mut bytes = serde_json::to_vec_pretty(&doc).map_err(io::Error::from)?;
        bytes.push(b'\n');
        util::write_atomic(&self.manifest_path(), &bytes)?;
        self.writes += 1;
        if self.opts.verbose {
            eprintln!(
                "manifest: {status}: {} files, {} rows, {} bytes, {} problems (v{})",
                self.files.len(),
                doc.totals.rows,
                doc.totals.bytes,
                self.problems.len() as u64 + self.problems_dropped,
                self.writes
            );
        }
        Ok(())
    }
}

/// What a run collected, judged from its tally: `ok` (successful data, and every stream that
/// recorded lines has some), `degraded` (successful data, but a stream recorded none, or more than
/// half the HTTP attempts got no answer), `failed` (lines were recorded but not one carries
/// successful data: the venue was unreachable or refused every request), `empty` (no line).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Outcome {
    pub status: String,
    /// Lines with successful data ([`super::RawLine::is_data`]), all rows, HTTP attempts and those
    /// without an answer (no reply or an error status other than 404).
    pub data_rows: u64,
    pub rows: u64,
    pub http_attempts: u64,
    pub http_unanswered: u64,
    /// Streams that recorded lines but no successful data.
    pub streams_without_data: Vec<String>,
}

impl Outcome {
    pub fn of(all: &Tally, streams: &[(String, Tally)]) -> Outcome {
        let streams_without_data: Vec<String> =
            streams.iter().filter(|(_, t)| t.rows > 0 && t.data_rows == 0).map(|(n, _)| n.clone()).collect();
        let h = &all.http;
        let status = if all.rows == 0 {
            "empty"
        } else if all.data_rows == 0 {
            "failed"
        } else if !streams_without_data.is_empty() || h.unanswered * 2 > h.attempts {
            "degraded"
        } else {
            "ok"
        };
        Outcome {
            status: status.to_string(),
            data_rows: all.data_rows,
            rows: all.rows,
            http_attempts: h.attempts,
            http_unanswered: h.unanswered,
            streams_without_data,
        }
    }

    /// One line of counts for stderr.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} rows with data of {}, {} of {} HTTP attempts unanswered",
            self.data_rows, self.rows, self.http_unanswered, self.http_attempts
        );
        if !self.streams_without_data.is_empty() {
            s.push_str(&format!("; no data in {}", self.streams_without_data.join(",")));
        }
        s
    }
}

enum Msg {
    Line(String),
    TooLong(jsonl::TooLong),
    Eof,
    Err(io::Error),
}

/// How `manifest build` ended (the binary turns it into the exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildEnd {
    /// Every record was handled; `failures`: a listed file failed its re-hash or could not be read,
    /// or an input line was not a sealed-file record.
    Done { failures: bool },
    /// The disk filled (ENOSPC) while writing the manifest: a runtime failure (reported on stderr,
    /// the run is restarted once space returns), not a configuration error.
    DiskFull,
}

/// Runs `manifest build` over `input` until EOF (status `complete`), also after SIGTERM/SIGINT, which
/// only bound the wait for EOF to 10 s (then status `stopped`).
pub fn run(opts: BuildOptions, input: Box<dyn BufRead + Send>) -> cli::Result<BuildEnd> {
    let dir = opts.root.join("manifests");
    match run_inner(opts, input) {
        Err(cli::Error::Io(e)) if util::is_disk_full(&e) => {
            eprintln!("manifest: disk full: cannot write the manifest in {}: {e}", dir.display());
            Ok(BuildEnd::DiskFull)
        }
        r => r,
    }
}

fn run_inner(opts: BuildOptions, input: Box<dyn BufRead + Send>) -> cli::Result<BuildEnd> {
    let refresh = opts.refresh;
    let mut b = Builder::new(opts)?;
    signal::install();
    b.write("running")?;
    // stdin is read on its own thread: signal(2) restarts interrupted reads, so the main loop waits
    // on a channel with a timeout to notice SIGTERM and the refresh deadline.
    let (tx, rx) = crossbeam_channel::bounded::<Msg>(1024);
    std::thread::spawn(move || {
        // A sealed record is < 2 KiB; a longer line is a bad input line, never accumulated.
        let mut input = jsonl::LineReader::with_max(input, 1 << 20);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let m = match input.next_into(&mut buf) {
                Ok(jsonl::Next::Eof) => Msg::Eof,
                Ok(jsonl::Next::Line) => {
                    Msg::Line(String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string())
                }
                Ok(jsonl::Next::TooLong(t)) => Msg::TooLong(t),
                Err(e) => Msg::Err(e),
            };
            let end = !matches!(m, Msg::Line(_) | Msg::TooLong(_));
            if tx.send(m).is_err() || end {
                return;
            }
        }
    });
    let mut next_refresh = Instant::now() + refresh;
    // After SIGTERM/SIGINT keep reading until end of input (the rotators seal and report their last
    // files after their own signal) or until DRAIN has passed; only then is the run `stopped`.
    const DRAIN: Duration = Duration::from_secs(10);
    let mut drain_until: Option<Instant> = None;
    let status = loop {
        if signal::stop_requested() && drain_until.is_none() {
            drain_until = Some(Instant::now() + DRAIN);
        }
        if drain_until.is_some_and(|d| Instant::now() >= d) {
            break "stopped";
        }
        let wait = next_refresh.saturating_duration_since(Instant::now()).min(Duration::from_millis(200));
        match rx.recv_timeout(wait) {
            Ok(Msg::Line(l)) => {
                b.add_input_line(&l);
                b.write("running")?;
                next_refresh = Instant::now() + refresh;
            }
            Ok(Msg::Eof) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break "complete",
            Ok(Msg::TooLong(t)) => {
                b.input_lines += 1;
                b.bad_input_lines += 1;
                b.problem(Problem::input("bad_input_line", Some(t.line_no), t.to_string()));
            }
            Ok(Msg::Err(e)) => {
                b.problem(Problem { problem: "input_error".into(), detail: Some(e.to_string()), ..Problem::default() });
                break "stopped";
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if Instant::now() >= next_refresh {
                    b.write("running")?;
                    next_refresh = Instant::now() + refresh;
                }
            }
        }
    };
    b.write(status)?;
    let outcome = b.outcome();
    eprintln!(
        "manifest: {status} ({}: {}): {} files, {} problems; wrote {}",
        outcome.status,
        outcome.summary(),
        b.files.len(),
        b.problems.len() as u64 + b.problems_dropped,
        b.manifest_path().display()
    );
    Ok(BuildEnd::Done { failures: b.has_failures() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_dropped() {
        let c = parse_config(
            "x.env",
            "# comment\nPMARCHIVE_ROOT=/srv/pm\nexport POLL_SECS=1\nRCLONE_TOKEN=abc\nDB_PASSWORD=hunter2\n\
             api_key=AKIAIOSFODNN7EXAMPLE123\nKEY_FILE=/etc/pm/key.pem\nSORT_KEY=collected_at_utc\n\
             REMOTE=https://bob:pw@example.org/x\nnot a setting\nGAMMA_URL=https://gamma-api.polymarket.com\n",
        );
        assert_eq!(c.dropped_keys, vec!["RCLONE_TOKEN", "DB_PASSWORD", "api_key", "REMOTE"]);
        assert_eq!(c.entries["PMARCHIVE_ROOT"], "/srv/pm");
        assert_eq!(c.entries["POLL_SECS"], "1");
        assert_eq!(c.entries["KEY_FILE"], "/etc/pm/key.pem");
        assert_eq!(c.entries["SORT_KEY"], "collected_at_utc");
        assert_eq!(c.entries["GAMMA_URL"], "https://gamma-api.polymarket.com");
        assert_eq!(c.ignored_lines, vec![10]);
    }
}
