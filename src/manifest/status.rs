//! `manifest status ROOT`: the health command. Per stream: the newest line and the newest
//! *successful data* (sealed files via the manifests and the newest partitions, plus the open
//! `*.partial` files), activity in the last hour and in the last `--stale-after`, markets tracked;
//! for the archive: bytes, disk free, write rate and days of disk left, the last upload.
//!
//! [`status`] computes a typed [`Status`] (serialized as `pmarchive.status/1`); [`human`] renders it.
//! Unhealthy (exit 1) with one [`Reason`] per finding: see [`Reason`] and docs/OPERATIONS.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::{
    human_bytes, load_manifests, max_time, read_data_file, read_uploads, walk, ArchiveFile, FileKind, MarketTrack,
    Parsed, RawLine, Tally, STATUS_SCHEMA,
};
use crate::cli::{self, ExitCode};
use crate::clock;

/// Options of `manifest status`.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    /// A required stream whose newest successful data is older is `stale`.
    pub stale_after: Duration,
    /// Markets are tracked but no book arrived for this long: `no_books`.
    pub books_after: Duration,
    /// No market tracked and none found by discovery for this long: `no_market`.
    pub market_after: Duration,
    /// A line later than now + this is in the future: `clock_ahead`.
    pub future_tolerance: Duration,
    /// Less free space than this (or no free inode): `disk_full`.
    pub min_free_bytes: u64,
    pub now: OffsetDateTime,
    /// The streams that must be fresh (`--streams`); `None`: every stream found. Other streams are
    /// reported, and flagged stale, but do not make the archive unhealthy (e.g. `ws_market` after
    /// the websocket capture was switched off).
    pub streams: Option<Vec<String>>,
}

/// Disk space of the filesystem holding a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disk {
    pub total_bytes: u64,
    /// Available to unprivileged users (`f_bavail`), which is what the collector (not root) can use.
    pub free_bytes: u64,
    /// Inodes: total (`f_files`) and available to unprivileged users (`f_favail`).
    pub total_inodes: u64,
    pub free_inodes: u64,
}

/// Disk space via `statvfs(3)`, declared here for the two targets the VPS runs (x86_64 and aarch64
/// Linux, glibc and musl share the layout of the fields read). Chosen over running `df`: no child
/// process, no dependence on `df`'s output format or on PATH inside a hardened systemd unit.
#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn disk_usage(path: &Path) -> std::io::Result<Disk> {
    use std::os::unix::ffi::OsStrExt;
    /// `struct statvfs` on 64-bit Linux: 11 unsigned longs (fsblkcnt_t/fsfilcnt_t are 64-bit) then
    /// spare ints. The trailing padding is larger than the C struct so the callee never writes past it.
    #[repr(C)]
    struct StatVfs {
        f_bsize: u64,
        f_frsize: u64,
        f_blocks: u64,
        f_bfree: u64,
        f_bavail: u64,
        f_files: u64,
        f_ffree: u64,
        f_favail: u64,
        f_fsid: u64,
        f_flag: u64,
        f_namemax: u64,
        spare: [u64; 8],
    }
    extern "C" {
        fn statvfs(path: *const std::ffi::c_char, buf: *mut StatVfs) -> i32;
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut s = StatVfs {
        f_bsize: 0,
        f_frsize: 0,
        f_blocks: 0,
        f_bfree: 0,
        f_bavail: 0,
        f_files: 0,
        f_ffree: 0,
        f_favail: 0,
        f_fsid: 0,
        f_flag: 0,
        f_namemax: 0,
        spare: [0; 8],
    };
    // SAFETY: `c` is a NUL-terminated string; `s` is a writable buffer at least as large as the
    // C `struct statvfs` on this target.
    let rc = unsafe { statvfs(c.as_ptr(), &mut s) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = if s.f_frsize > 0 { s.f_frsize } else { s.f_bsize };
    Ok(Disk {
        total_bytes: s.f_blocks.saturating_mul(unit),
        free_bytes: s.f_bavail.saturating_mul(unit),
        total_inodes: s.f_files,
        free_inodes: s.f_favail,
    })
}

/// Other targets: not supported (the status reports the disk as unknown).
#[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
pub fn disk_usage(_path: &Path) -> std::io::Result<Disk> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "disk usage only implemented for x86_64/aarch64 Linux"))
}

/// Why the archive is unhealthy (`problems[].reason` in the JSON document).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No line at all under the root.
    NoData,
    /// A stream named in `--streams` has no file.
    MissingStream,
    /// A required stream's newest successful data is older than `--stale-after` (or there is none).
    Stale,
    /// Markets are tracked now but no book arrived for `--books-after`.
    NoBooks,
    /// No market is tracked and discovery found none for `--market-after`.
    NoMarket,
    /// Every HTTP attempt of a stream in the last `--stale-after` got no answer.
    VenueUnreachable,
    /// Free space below `--min-free-mib`, or no free inode.
    DiskFull,
    /// A line is dated after now + `--future-tolerance` (the wall clock stepped).
    ClockAhead,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoData => "no_data",
            Reason::MissingStream => "missing_stream",
            Reason::Stale => "stale",
            Reason::NoBooks => "no_books",
            Reason::NoMarket => "no_market",
            Reason::VenueUnreachable => "venue_unreachable",
            Reason::DiskFull => "disk_full",
            Reason::ClockAhead => "clock_ahead",
        }
    }
}

/// One finding that makes the archive unhealthy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    pub reason: Reason,
    /// `venue/stream` when the finding is about one stream.
    pub stream: Option<String>,
    /// One line for a person.
    pub message: String,
}

/// The thresholds the status was evaluated with (seconds, bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub stale_after_s: f64,
    pub books_after_s: f64,
    pub market_after_s: f64,
    pub future_tolerance_s: f64,
    pub min_free_bytes: u64,
}

/// Counts over the lines of the last hour of one stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LastHour {
    pub rows: u64,
    pub rows_by_kind: BTreeMap<String, u64>,
    pub data_rows: u64,
    pub missed_slots: u64,
    pub gaps_by_type: BTreeMap<String, u64>,
    pub http_attempts: u64,
    pub http_errors: u64,
    pub http_unanswered: u64,
    pub http_network_errors: u64,
    pub http_429: u64,
    pub http_retries: u64,
}

/// Counts over the lines of the last `--stale-after` of one stream (what "recent" means).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recent {
    pub rows: u64,
    pub data_rows: u64,
    pub http_attempts: u64,
    pub http_unanswered: u64,
    pub http_network_errors: u64,
    pub http_429: u64,
}

/// One stream's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamStatus {
    pub venue: String,
    pub stream: String,
    /// Newest line of any kind (lines dated in the future excluded).
    pub newest_collected_at_utc: Option<String>,
    pub newest_source: String,
    pub age_s: Option<f64>,
    /// Newest line carrying successful data (a 2xx reply with books / a market, a ws book frame).
    pub newest_data_at_utc: Option<String>,
    pub data_age_s: Option<f64>,
    /// No successful data within `--stale-after`.
    pub stale: bool,
    pub required: bool,
    /// Lines dated after now + `--future-tolerance`, and the latest of them.
    pub future_lines: u64,
    pub newest_future_at_utc: Option<String>,
    pub files: u64,
    pub partials: u64,
    pub bytes: u64,
    pub files_read: u64,
    pub unparseable_lines_read: u64,
    pub last_hour: LastHour,
    pub recent: Recent,
    pub markets_tracked_now: BTreeSet<String>,
    pub markets_tracked_last_hour: BTreeSet<String>,
}

/// The filesystem holding the root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskStatus {
    pub path: String,
    pub total_bytes: Option<u64>,
    pub free_bytes: Option<u64>,
    pub total_inodes: Option<u64>,
    pub free_inodes: Option<u64>,
    pub error: Option<String>,
}

/// The last upload record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastUpload {
    pub at_utc: Value,
    pub local_path: Value,
    pub verified: Value,
    pub rclone_exit: Value,
}

/// Upload log counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadCounts {
    pub uploads: usize,
    pub unverified: usize,
    pub local_deletes: usize,
}

/// The health status document (`pmarchive.status/1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub schema: String,
    pub root: String,
    pub now_utc: String,
    pub stale_after_s: f64,
    pub thresholds: Thresholds,
    pub healthy: bool,
    /// The distinct reasons of `problems`, in a fixed order (empty when healthy).
    pub reasons: Vec<Reason>,
    pub problems: Vec<Problem>,
    /// Reported, never unhealthy.
    pub warnings: Vec<String>,
    pub streams: Vec<StreamStatus>,
    pub archive_bytes: u64,
    pub archive_files: u64,
    pub disk: DiskStatus,
    pub bytes_last_24h: u64,
    pub bytes_per_day: u64,
    pub days_left: Option<f64>,
    pub last_upload: Option<LastUpload>,
    pub uploads: Option<UploadCounts>,
}

impl Status {
    pub fn exit_code(&self) -> ExitCode {
        if self.healthy {
            ExitCode::Success
        } else {
            ExitCode::Failure
        }
    }
}

#[derive(Default)]
struct StreamState {
    files: u64,
    partials: u64,
    bytes: u64,
    newest_sealed: Option<String>,
    newest_partial: Option<String>,
    newest_data: Option<String>,
    future_lines: u64,
    newest_future: Option<String>,
    /// Lines in the last hour.
    window: Tally,
    /// Lines in the last `--stale-after`.
    recent: Tally,
    /// Track events of every file looked at (any time) plus the manifests' market histories.
    markets: BTreeMap<String, MarketTrack>,
    /// run id → newest line of that run in the files looked at.
    run_newest: BTreeMap<String, String>,
    unparseable_lines: u64,
    files_read: u64,
}

impl StreamState {
    /// Takes a time from a manifest: into `newest` unless it is in the future.
    fn note_listed(&mut self, t: Option<&str>, future_after: &str, data: bool) {
        let Some(t) = t else { return };
        if t > future_after {
            max_time(&mut self.newest_future, Some(t));
        } else if data {
            max_time(&mut self.newest_data, Some(t));
        } else {
            max_time(&mut self.newest_sealed, Some(t));
        }
    }
}

impl StreamState {
    /// Takes one line read from a data file into the stream's times and tallies.
    fn note_line(&mut self, l: &RawLine, cuts: &Cuts, newest: &mut Option<String>, tracks: &mut Tally) {
        let Some(t) = l.collected_at_utc.as_deref() else { return };
        if t > cuts.future_after.as_str() {
            // Dated after now: the wall clock stepped. Never fresh, never "the newest".
            self.future_lines += 1;
            max_time(&mut self.newest_future, Some(t));
            return;
        }
        max_time(newest, Some(t));
        if l.is_data() {
            max_time(&mut self.newest_data, Some(t));
        }
        if let Some(r) = &l.run_id {
            let e = self.run_newest.entry(r.to_string()).or_default();
            if t > e.as_str() {
                *e = t.to_string();
            }
        }
        if t > cuts.hour_ago.as_str() && t <= cuts.now_s.as_str() {
            self.window.add(l);
        }
        if t > cuts.live_after.as_str() && t <= cuts.now_s.as_str() {
            self.recent.add(l);
        }
        if l.kind.as_deref() == Some("track") {
            tracks.add(l);
        }
    }
}

impl LastHour {
    fn of(w: &Tally) -> LastHour {
        LastHour {
            rows: w.rows,
            rows_by_kind: w.rows_by_kind.clone(),
            data_rows: w.data_rows,
            missed_slots: w.gaps.missed_slots_total,
            gaps_by_type: w.gaps.by_type.clone(),
            http_attempts: w.http.attempts,
            http_errors: w.http.errors,
            http_unanswered: w.http.unanswered,
            http_network_errors: w.http.network_errors,
            http_429: w.http.rate_limited_429,
            http_retries: w.http.retries,
        }
    }
}

impl Recent {
    fn of(rc: &Tally) -> Recent {
        Recent {
            rows: rc.rows,
            data_rows: rc.data_rows,
            http_attempts: rc.http.attempts,
            http_unanswered: rc.http.unanswered,
            http_network_errors: rc.http.network_errors,
            http_429: rc.http.rate_limited_429,
        }
    }
}

fn floor_hour(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_minute(0).and_then(|t| t.replace_second(0)).and_then(|t| t.replace_nanosecond(0)).unwrap_or(t)
}

fn merge_market(map: &mut BTreeMap<String, MarketTrack>, m: &MarketTrack) {
    let mut t = Tally { markets: std::mem::take(map), ..Tally::default() };
    let mut one = Tally::default();
    one.markets.insert(m.slug.clone(), m.clone());
    t.merge(&one);
    *map = t.markets;
}

fn rfc(t: OffsetDateTime) -> String {
    clock::fmt_micros(t)
}

fn before(now: OffsetDateTime, d: Duration) -> String {
    rfc(now - time::Duration::seconds_f64(d.as_secs_f64()))
}

fn age(now: OffsetDateTime, t: Option<&str>) -> Option<f64> {
    t.and_then(clock::parse_rfc3339).map(|t| ((now - t).as_seconds_f64() * 1000.0).round() / 1000.0)
}

/// The instants a status is evaluated against, as canonical UTC strings (compared as text).
struct Cuts {
    now: OffsetDateTime,
    now_s: String,
    /// Lines after this are in the last hour.
    hour_ago: String,
    /// Lines after this are "recent" (within `--stale-after`).
    live_after: String,
    /// Lines after this are dated in the future (`clock_ahead`).
    future_after: String,
    /// Sealed partitions from this hour on are read.
    recent_from: OffsetDateTime,
}

impl Cuts {
    fn new(o: &StatusOptions) -> Cuts {
        let now = o.now;
        Cuts {
            now,
            now_s: rfc(now),
            hour_ago: rfc(now - time::Duration::hours(1)),
            live_after: before(now, o.stale_after),
            future_after: rfc(now + time::Duration::seconds_f64(o.future_tolerance.as_secs_f64())),
            recent_from: floor_hour(now) - time::Duration::hours(1),
        }
    }
}

type StreamKey = (String, String);

/// The streams found on disk, keyed by (venue, stream).
#[derive(Default)]
struct Scan {
    streams: BTreeMap<StreamKey, StreamState>,
    /// The newest sealed hour partition of each stream.
    newest_partition: BTreeMap<StreamKey, OffsetDateTime>,
    /// Path → the newest line a manifest lists for that file.
    listed_last: BTreeMap<String, String>,
    archive_bytes: u64,
    archive_files: u64,
}

/// Computes the status.
pub fn status(root: &Path, o: &StatusOptions) -> cli::Result<Status> {
    if !root.is_dir() {
        return Err(cli::Error::Msg(format!("{}: not a readable directory", root.display())));
    }
    let cuts = Cuts::new(o);
    let (files, walk_errors) = walk(root).map_err(|e| cli::Error::Msg(format!("{}: {e}", root.display())))?;
    let mut warnings: Vec<String> = walk_errors.iter().map(|e| format!("unreadable: {e}")).collect();
    let mut scan = scan_files(&files);
    read_manifests(root, &mut scan, &cuts, &mut warnings);
    // Sealed files read: the current and previous hour partitions (hourly rotation puts every line of
    // the last hour there), any older file a manifest says has lines in the last hour, and the newest
    // partition of each stream (so that a dead stream without manifests still shows its newest line).
    for f in &files {
        read_if_recent(f, &mut scan, &cuts, &mut warnings);
    }
    let mut problems = Vec::new();
    let streams_out: Vec<StreamStatus> =
        scan.streams.iter().map(|(key, st)| stream_status(key, st, o, &cuts, &mut problems)).collect();
    archive_problems(&scan.streams, &streams_out, o, &cuts, &mut problems);
    let disk = disk_usage(root);
    if let Ok(d) = &disk {
        if d.free_bytes < o.min_free_bytes || (d.total_inodes > 0 && d.free_inodes == 0) {
            problems.push(Problem {
                reason: Reason::DiskFull,
                stream: None,
                message: format!(
                    "{} free of {} (minimum {}), {} free inodes: writers fail with ENOSPC",
                    human_bytes(d.free_bytes),
                    human_bytes(d.total_bytes),
                    human_bytes(o.min_free_bytes),
                    d.free_inodes
                ),
            });
        }
    }
    let (bytes_24h, per_day) = write_rate(&files, cuts.now);
    let days_left = match (&disk, per_day > 0.0) {
        (Ok(d), true) => Some(((d.free_bytes as f64 / per_day) * 10.0).round() / 10.0),
        _ => None,
    };
    let (last_upload, uploads) = upload_summary(root, &mut warnings);
    let mut reasons: Vec<Reason> = problems.iter().map(|p| p.reason).collect();
    reasons.sort();
    reasons.dedup();
    let stale_s = o.stale_after.as_secs_f64();
    Ok(Status {
        schema: STATUS_SCHEMA.to_string(),
        root: root.display().to_string(),
        now_utc: cuts.now_s.clone(),
        stale_after_s: stale_s,
        thresholds: Thresholds {
            stale_after_s: stale_s,
            books_after_s: o.books_after.as_secs_f64(),
            market_after_s: o.market_after.as_secs_f64(),
            future_tolerance_s: o.future_tolerance.as_secs_f64(),
            min_free_bytes: o.min_free_bytes,
        },
        healthy: problems.is_empty(),
        reasons,
        problems,
        warnings,
        streams: streams_out,
        archive_bytes: scan.archive_bytes,
        archive_files: scan.archive_files,
        disk: disk_status(root, &disk),
        bytes_last_24h: bytes_24h,
        bytes_per_day: per_day.round() as u64,
        days_left,
        last_upload,
        uploads,
    })
}

/// Streams present on disk, their sizes, and each stream's newest sealed partition.
fn scan_files(files: &[ArchiveFile]) -> Scan {
    let mut scan = Scan::default();
    for f in files {
        if f.kind == FileKind::Other {
            continue;
        }
        scan.archive_bytes += f.bytes;
        scan.archive_files += 1;
        let (Some(v), Some(s)) = (&f.venue, &f.stream) else { continue };
        let st = scan.streams.entry((v.clone(), s.clone())).or_default();
        st.bytes += f.bytes;
        match f.kind {
            FileKind::Partial => st.partials += 1,
            _ => st.files += 1,
        }
        if f.kind == FileKind::Sealed {
            if let Some(h) = f.hour_start {
                let e = scan.newest_partition.entry((v.clone(), s.clone())).or_insert(h);
                *e = (*e).max(h);
            }
        }
    }
    scan
}

/// Manifests: the newest sealed line and data per stream, the newest line of each listed file, and
/// the market histories.
fn read_manifests(root: &Path, scan: &mut Scan, cuts: &Cuts, warnings: &mut Vec<String>) {
    for m in load_manifests(root) {
        let doc = match m.doc {
            Ok(d) => d,
            Err(e) => {
                warnings.push(format!("bad manifest manifests/{}: {e}", m.name));
                continue;
            }
        };
        for (sname, s) in &doc.streams {
            let venue = s.files.iter().find_map(|f| f.venue.clone()).unwrap_or_else(|| "polymarket".into());
            let stream = crate::layout::stream_of_key(sname).to_string();
            let st = scan.streams.entry((venue, stream)).or_default();
            for f in &s.files {
                let last = f.last_collected_at_utc.as_deref();
                st.note_listed(last, &cuts.future_after, false);
                if let (false, Some(l)) = (f.path.is_empty(), last) {
                    scan.listed_last.insert(f.path.clone(), l.to_string());
                }
            }
            st.note_listed(s.tally.last_data_at_utc.as_deref(), &cuts.future_after, true);
            for m in s.tally.markets.values() {
                merge_market(&mut st.markets, m);
            }
        }
    }
}

/// Reads a data file when it can hold recent lines: every partial file, the sealed partitions of
/// the current and previous hour, the newest partition of its stream, and any file a manifest says
/// has lines in the last hour.
fn read_if_recent(f: &ArchiveFile, scan: &mut Scan, cuts: &Cuts, warnings: &mut Vec<String>) {
    let (Some(v), Some(s)) = (&f.venue, &f.stream) else { return };
    let key = (v.clone(), s.clone());
    let take = match f.kind {
        FileKind::Partial => true,
        FileKind::Sealed => {
            f.hour_start.is_some_and(|h| h >= cuts.recent_from || Some(&h) == scan.newest_partition.get(&key))
                || scan.listed_last.get(&f.rel).is_some_and(|l| l.as_str() > cuts.hour_ago.as_str())
        }
        _ => false,
    };
    if !take {
        return;
    }
    let partial = f.kind == FileKind::Partial;
    let st = scan.streams.entry(key).or_default();
    st.files_read += 1;
    let mut newest: Option<String> = None;
    let mut tracks = Tally::default();
    let res = read_data_file(&f.abs, partial, |_, p| match p {
        Parsed::Line(l) => st.note_line(&l, cuts, &mut newest, &mut tracks),
        Parsed::Malformed(_) | Parsed::Unparseable(_) => st.unparseable_lines += 1,
    });
    match res {
        Ok(out) => {
            if let Some(e) = out.error {
                warnings.push(format!("{}: {e}", f.rel));
            }
        }
        Err(e) => warnings.push(format!("{}: {e}", f.rel)),
    }
    for m in tracks.markets.values() {
        merge_market(&mut st.markets, m);
    }
    if partial {
        max_time(&mut st.newest_partial, newest.as_deref());
    } else {
        max_time(&mut st.newest_sealed, newest.as_deref());
    }
}

/// One stream's health: its [`StreamStatus`], and its problems pushed onto `problems`.
fn stream_status(
    (venue, stream): &StreamKey,
    st: &StreamState,
    o: &StatusOptions,
    cuts: &Cuts,
    problems: &mut Vec<Problem>,
) -> StreamStatus {
    let name = format!("{venue}/{stream}");
    let (stale_s, books_s) = (o.stale_after.as_secs_f64(), o.books_after.as_secs_f64());
    let mut newest = st.newest_sealed.clone();
    max_time(&mut newest, st.newest_partial.as_deref());
    let source = match (&st.newest_partial, &newest) {
        (Some(p), Some(n)) if p == n => "partial",
        (_, Some(_)) => "sealed",
        _ => "none",
    };
    let line_age = age(cuts.now, newest.as_deref());
    let data_age = age(cuts.now, st.newest_data.as_deref());
    let stale = data_age.is_none_or(|a| a > stale_s);
    let required = o.streams.as_ref().is_none_or(|l| l.iter().any(|r| names_stream(r, venue, stream)));
    let tracked_now: BTreeSet<String> = st
        .markets
        .values()
        .filter(|m| m.last_action.as_deref() == Some("start"))
        .filter(|m| match &m.last_action_run_id {
            Some(r) => st.run_newest.get(r).is_some_and(|t| t.as_str() >= cuts.live_after.as_str()),
            None => line_age.is_some_and(|a| a <= stale_s),
        })
        .map(|m| m.slug.clone())
        .collect();
    let mut last_hour: BTreeSet<String> = tracked_now.clone();
    last_hour.extend(st.window.markets.keys().cloned());
    let mut problem = |reason, message: String| {
        problems.push(Problem { reason, stream: Some(name.clone()), message: format!("{name}: {message}") })
    };
    if st.future_lines > 0 || st.newest_future.is_some() {
        problem(
            Reason::ClockAhead,
            format!(
                "{} line(s) dated in the future, the latest {} (now {}): the wall clock stepped",
                st.future_lines,
                st.newest_future.as_deref().unwrap_or("?"),
                cuts.now_s
            ),
        );
    }
    if required {
        let newest_txt = newest.as_deref().unwrap_or("none");
        match (&st.newest_data, data_age) {
            (None, _) | (_, None) => {
                problem(Reason::Stale, format!("no successful data found (newest line of any kind: {newest_txt})"))
            }
            (Some(d), Some(a)) if a > stale_s => problem(
                Reason::Stale,
                format!("newest successful data {d} is {a:.0} s old (> {stale_s} s); newest line: {newest_txt}"),
            ),
            _ => {}
        }
        if !tracked_now.is_empty() && data_age.is_none_or(|a| a > books_s) {
            problem(
                Reason::NoBooks,
                format!(
                    "{} market(s) tracked but no book for {} (> {books_s} s)",
                    tracked_now.len(),
                    data_age.map_or("ever".to_string(), |a| format!("{a:.0} s"))
                ),
            );
        }
        let r = &st.recent.http;
        if r.attempts > 0 && r.unanswered == r.attempts {
            problem(
                Reason::VenueUnreachable,
                format!(
                    "all {} HTTP attempts in the last {stale_s} s got no answer ({} without a reply, {} 429)",
                    r.attempts, r.network_errors, r.rate_limited_429
                ),
            );
        }
    }
    StreamStatus {
        venue: venue.clone(),
        stream: stream.clone(),
        newest_collected_at_utc: newest.clone(),
        newest_source: source.to_string(),
        age_s: line_age,
        newest_data_at_utc: st.newest_data.clone(),
        data_age_s: data_age,
        stale,
        required,
        future_lines: st.future_lines,
        newest_future_at_utc: st.newest_future.clone(),
        files: st.files,
        partials: st.partials,
        bytes: st.bytes,
        files_read: st.files_read,
        unparseable_lines_read: st.unparseable_lines,
        last_hour: LastHour::of(&st.window),
        recent: Recent::of(&st.recent),
        markets_tracked_now: tracked_now,
        markets_tracked_last_hour: last_hour,
    }
}

/// The archive-wide problems: required streams without a file, no data at all, no market.
fn archive_problems(
    streams: &BTreeMap<StreamKey, StreamState>,
    streams_out: &[StreamStatus],
    o: &StatusOptions,
    cuts: &Cuts,
    problems: &mut Vec<Problem>,
) {
    for r in o.streams.iter().flatten() {
        if !streams.keys().any(|(v, s)| names_stream(r, v, s)) {
            problems.push(Problem {
                reason: Reason::MissingStream,
                stream: Some(r.clone()),
                message: format!("{r}: required (--streams) but no file of it was found"),
            });
        }
    }
    let no_data = streams.is_empty()
        || streams
            .values()
            .all(|s| s.newest_sealed.is_none() && s.newest_partial.is_none() && s.newest_future.is_none());
    if no_data {
        problems.insert(0, Problem { reason: Reason::NoData, stream: None, message: "no data at all".to_string() });
        return;
    }
    for (venue, discovery, market_streams) in MARKET_STREAMS {
        let market_checked = match &o.streams {
            Some(l) => l.iter().any(|r| market_streams.iter().any(|s| names_stream(r, venue, s))),
            None => streams.keys().any(|(v, s)| v == venue && market_streams.contains(&s.as_str())),
        };
        if market_checked {
            no_market(venue, discovery, streams, streams_out, o, cuts, problems);
        }
    }
}

/// Per venue: its discovery stream (whose 2xx replies are "a market found") and the streams that
/// mean "this venue's markets are collected" (one of them required or present: no_market applies).
const MARKET_STREAMS: [(&str, &str, &[&str]); 2] =
    [("polymarket", "gamma", &["gamma", "books", "ws_market"]), ("kalshi", "discovery", &["discovery", "books"])];

/// Whether a `--streams` entry names `venue`/`stream`: `VENUE/STREAM`, or a bare `STREAM` of the
/// first venue (Polymarket: the entries written before the second venue keep their meaning).
pub fn names_stream(entry: &str, venue: &str, stream: &str) -> bool {
    match entry.split_once('/') {
        Some((v, s)) => v == venue && s == stream,
        None => venue == "polymarket" && entry == stream,
    }
}

/// no_market for one venue: no market of it tracked now, and its discovery found none (2xx) within
/// --market-after.
fn no_market(
    venue: &str,
    discovery: &str,
    streams: &BTreeMap<StreamKey, StreamState>,
    streams_out: &[StreamStatus],
    o: &StatusOptions,
    cuts: &Cuts,
    problems: &mut Vec<Problem>,
) {
    let tracked = streams_out.iter().any(|s| s.venue == venue && !s.markets_tracked_now.is_empty());
    let mut found: Option<String> = None;
    for ((v, s), st) in streams {
        if v == venue && s == discovery {
            max_time(&mut found, st.newest_data.as_deref());
        }
    }
    let found_age = age(cuts.now, found.as_deref());
    let market_s = o.market_after.as_secs_f64();
    if !tracked && found_age.is_none_or(|a| a > market_s) {
        let (prefix, api) = if venue == "polymarket" { ("", "Gamma") } else { ("kalshi: ", "Kalshi") };
        problems.push(Problem {
            reason: Reason::NoMarket,
            stream: None,
            message: format!(
                "{prefix}no market tracked now and none found by discovery ({api} 2xx) in the last {market_s} s; \
                 newest found: {}",
                found.as_deref().unwrap_or("never")
            ),
        });
    }
}

/// Bytes written in the hour partitions of the last 24 h, and the rate per day: measured over the
/// last 24 h, or over the archive's life when it is younger (at least one hour, so that a fresh
/// archive does not extrapolate from seconds).
fn write_rate(files: &[ArchiveFile], now: OffsetDateTime) -> (u64, f64) {
    let day_from = floor_hour(now) - time::Duration::hours(23);
    let bytes_24h: u64 = files
        .iter()
        .filter(|f| f.kind != FileKind::Other && f.hour_start.is_some_and(|h| h >= day_from && h <= now))
        .map(|f| f.bytes)
        .sum();
    let earliest = files.iter().filter(|f| f.kind != FileKind::Other).filter_map(|f| f.hour_start).min();
    let span_start = earliest.map_or(now - time::Duration::hours(24), |e| e.max(now - time::Duration::hours(24)));
    let span_s = (now - span_start).as_seconds_f64().max(3600.0);
    (bytes_24h, bytes_24h as f64 * 86400.0 / span_s)
}

fn disk_status(root: &Path, disk: &std::io::Result<Disk>) -> DiskStatus {
    let path = root.display().to_string();
    match disk {
        Ok(d) => DiskStatus {
            path,
            total_bytes: Some(d.total_bytes),
            free_bytes: Some(d.free_bytes),
            total_inodes: Some(d.total_inodes),
            free_inodes: Some(d.free_inodes),
            error: None,
        },
        Err(e) => DiskStatus {
            path,
            total_bytes: None,
            free_bytes: None,
            total_inodes: None,
            free_inodes: None,
            error: Some(e.to_string()),
        },
    }
}

/// The last upload record and the upload log's counts (None without a log); its bad lines and an
/// unverified last upload become warnings.
fn upload_summary(root: &Path, warnings: &mut Vec<String>) -> (Option<LastUpload>, Option<UploadCounts>) {
    let uploads = match read_uploads(root) {
        Ok(u) => u,
        Err(e) => {
            warnings.push(format!("manifests/uploads.jsonl: {e}"));
            None
        }
    };
    let Some(u) = uploads else { return (None, None) };
    for (n, e) in &u.bad_lines {
        warnings.push(format!("manifests/uploads.jsonl line {n}: {e}"));
    }
    if let Some(l) = u.uploads.last().filter(|l| !l.verified) {
        warnings.push(format!("last upload not verified: {}", l.local_path));
    }
    let last = u.uploads.last().map(|u| LastUpload {
        at_utc: u.at_utc.clone().into(),
        local_path: u.local_path.clone().into(),
        verified: u.verified.into(),
        rclone_exit: u.rclone_exit.into(),
    });
    let counts = UploadCounts {
        uploads: u.uploads.len(),
        unverified: u.uploads.iter().filter(|u| !u.verified).count(),
        local_deletes: u.deletes.len(),
    };
    (last, Some(counts))
}

/// The human report: one table row per stream, then archive, disk and upload lines, one line per
/// problem, and a last line `HEALTHY` or `UNHEALTHY: <reasons>`.
pub fn human(st: &Status) -> String {
    let mut s = String::new();
    let th = &st.thresholds;
    s.push_str(&format!(
        "pm-archive status  root={}  now={}  stale-after={}s books-after={}s market-after={}s\n",
        st.root, st.now_utc, th.stale_after_s, th.books_after_s, th.market_after_s
    ));
    s.push_str(&format!(
        "{:<22} {:<28} {:>8} {:>9} {:>8} {:>7} {:>8} {:>6} {:>9} {:>10}\n",
        "STREAM", "NEWEST LINE", "AGE", "DATA AGE", "ROWS/1h", "MISS/1h", "HTTPERR", "429", "MKT NOW/1h", "BYTES"
    ));
    let secs = |a: Option<f64>| a.map_or("-".to_string(), |a| format!("{a:.0}s"));
    for x in &st.streams {
        let lh = &x.last_hour;
        s.push_str(&format!(
            "{:<22} {:<28} {:>8} {:>9} {:>8} {:>7} {:>8} {:>6} {:>9} {:>10}{}\n",
            format!("{}/{}", x.venue, x.stream),
            x.newest_collected_at_utc.as_deref().unwrap_or("-"),
            secs(x.age_s),
            secs(x.data_age_s),
            lh.rows,
            lh.missed_slots,
            lh.http_errors,
            lh.http_429,
            format!("{}/{}", x.markets_tracked_now.len(), x.markets_tracked_last_hour.len()),
            human_bytes(x.bytes),
            match (x.stale, x.required) {
                (true, true) => "  STALE",
                (true, false) => "  stale (not required)",
                _ => "",
            }
        ));
    }
    s.push_str(&format!(
        "archive: {} in {} files; written last 24h: {} ({}/day)\n",
        human_bytes(st.archive_bytes),
        st.archive_files,
        human_bytes(st.bytes_last_24h),
        human_bytes(st.bytes_per_day)
    ));
    match (st.disk.free_bytes, st.disk.total_bytes) {
        (Some(f), Some(t)) => s.push_str(&format!(
            "disk: {} free of {}; days left at this rate: {}\n",
            human_bytes(f),
            human_bytes(t),
            st.days_left.map_or("-".to_string(), |x| format!("{x:.1}"))
        )),
        _ => s.push_str(&format!("disk: unknown ({})\n", st.disk.error.as_deref().unwrap_or(""))),
    }
    match &st.last_upload {
        Some(u) => s.push_str(&format!(
            "last upload: {} {} verified={} rclone_exit={}\n",
            u.at_utc.as_str().unwrap_or("?"),
            u.local_path.as_str().unwrap_or("?"),
            u.verified,
            u.rclone_exit
        )),
        None => s.push_str("last upload: none recorded\n"),
    }
    for w in &st.warnings {
        s.push_str(&format!("warning: {w}\n"));
    }
    for p in &st.problems {
        s.push_str(&format!("PROBLEM {}: {}\n", p.reason.as_str(), p.message));
    }
    if st.healthy {
        s.push_str("HEALTHY\n");
    } else {
        let r: Vec<&str> = st.reasons.iter().map(|r| r.as_str()).collect();
        s.push_str(&format!("UNHEALTHY: {}\n", r.join(", ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::names_stream;

    #[test]
    fn streams_entries_name_one_venue() {
        assert!(names_stream("books", "polymarket", "books"));
        assert!(!names_stream("books", "kalshi", "books"), "a bare name is Polymarket's");
        assert!(names_stream("kalshi/books", "kalshi", "books"));
        assert!(!names_stream("kalshi/books", "polymarket", "books"));
        assert!(names_stream("polymarket/gamma", "polymarket", "gamma"));
        assert!(!names_stream("kalshi/discovery", "kalshi", "books"));
    }
}
