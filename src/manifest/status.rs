//! `manifest status ROOT`: the health command. Per stream: the newest line (sealed files via the
//! manifests and the newest partitions, plus the open `*.partial` files), activity in the last hour,
//! markets tracked; for the archive: bytes, disk free, write rate and days of disk left, the last
//! upload. Unhealthy (exit 1) when any stream's newest line is older than `--stale-after` or there is
//! no data at all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use time::OffsetDateTime;

use super::{
    human_bytes, load_manifests, max_time, read_data_file, read_uploads, walk, FileKind, MarketTrack, Parsed, Tally,
    STATUS_SCHEMA,
};
use crate::cli::{self, ExitCode};
use crate::clock;

/// Options of `manifest status`.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    pub stale_after: Duration,
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
    Ok(Disk { total_bytes: s.f_blocks.saturating_mul(unit), free_bytes: s.f_bavail.saturating_mul(unit) })
}

/// Other targets: not supported (the status reports the disk as unknown).
#[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
pub fn disk_usage(_path: &Path) -> std::io::Result<Disk> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "disk usage only implemented for x86_64/aarch64 Linux"))
}

#[derive(Default)]
struct StreamState {
    files: u64,
    partials: u64,
    bytes: u64,
    newest_sealed: Option<String>,
    newest_partial: Option<String>,
    /// Lines in the last hour.
    window: Tally,
    /// Track events of every file looked at (any time) plus the manifests' market histories.
    markets: BTreeMap<String, MarketTrack>,
    /// run id → newest line of that run in the files looked at.
    run_newest: BTreeMap<String, String>,
    unparseable_lines: u64,
    files_read: u64,
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

/// Computes the status document and the exit code.
pub fn status(root: &Path, o: &StatusOptions) -> cli::Result<(Value, ExitCode)> {
    if !root.is_dir() {
        return Err(cli::Error::Msg(format!("{}: not a readable directory", root.display())));
    }
    let now = o.now;
    let now_s = clock::fmt_micros(now);
    let hour_ago = clock::fmt_micros(now - time::Duration::hours(1));
    let live_after = clock::fmt_micros(now - time::Duration::seconds_f64(o.stale_after.as_secs_f64()));
    let (files, walk_errors) = walk(root).map_err(|e| cli::Error::Msg(format!("{}: {e}", root.display())))?;
    let mut warnings: Vec<String> = walk_errors.iter().map(|e| format!("unreadable: {e}")).collect();

    // Streams present on disk, their sizes, and the files to read.
    let mut streams: BTreeMap<(String, String), StreamState> = BTreeMap::new();
    // Sealed files read: the current and previous hour partitions (hourly rotation puts every line of
    // the last hour there), any older file a manifest says has lines in the last hour, and the newest
    // partition of each stream (so that a dead stream without manifests still shows its newest line).
    let recent_from = floor_hour(now) - time::Duration::hours(1);
    let mut listed_last: BTreeMap<String, String> = BTreeMap::new();
    let mut newest_partition: BTreeMap<(String, String), OffsetDateTime> = BTreeMap::new();
    let (mut archive_bytes, mut archive_files) = (0u64, 0u64);
    for f in &files {
        if f.kind == FileKind::Other {
            continue;
        }
        archive_bytes += f.bytes;
        archive_files += 1;
        let (Some(v), Some(s)) = (&f.venue, &f.stream) else { continue };
        let st = streams.entry((v.clone(), s.clone())).or_default();
        st.bytes += f.bytes;
        match f.kind {
            FileKind::Partial => st.partials += 1,
            _ => st.files += 1,
        }
        if f.kind == FileKind::Sealed {
            if let Some(h) = f.hour_start {
                let e = newest_partition.entry((v.clone(), s.clone())).or_insert(h);
                *e = (*e).max(h);
            }
        }
    }

    // Manifests: the newest sealed line per stream and the market histories.
    for m in load_manifests(root) {
        let doc = match m.doc {
            Ok(d) => d,
            Err(e) => {
                warnings.push(format!("bad manifest manifests/{}: {e}", m.name));
                continue;
            }
        };
        let Some(ss) = doc.get("streams").and_then(Value::as_object) else { continue };
        for (sname, s) in ss {
            let filesv = s.get("files").and_then(Value::as_array).cloned().unwrap_or_default();
            let venue =
                filesv.iter().find_map(|f| f.get("venue").and_then(Value::as_str)).unwrap_or("polymarket").to_string();
            let st = streams.entry((venue, sname.clone())).or_default();
            for f in &filesv {
                let last = f.get("last_collected_at_utc").and_then(Value::as_str);
                max_time(&mut st.newest_sealed, last);
                if let (Some(p), Some(l)) = (f.get("path").and_then(Value::as_str), last) {
                    listed_last.insert(p.to_string(), l.to_string());
                }
            }
            if let Some(mk) = s.get("tally").and_then(|t| t.get("markets")) {
                if let Ok(mk) = serde_json::from_value::<BTreeMap<String, MarketTrack>>(mk.clone()) {
                    for m in mk.values() {
                        merge_market(&mut st.markets, m);
                    }
                }
            }
        }
    }

    // Read the recent sealed files, the newest partition of each stream, and every partial file.
    for f in &files {
        let (Some(v), Some(s)) = (&f.venue, &f.stream) else { continue };
        let key = (v.clone(), s.clone());
        let take = match f.kind {
            FileKind::Partial => true,
            FileKind::Sealed => {
                f.hour_start.is_some_and(|h| h >= recent_from || Some(&h) == newest_partition.get(&key))
                    || listed_last.get(&f.rel).is_some_and(|l| l.as_str() > hour_ago.as_str())
            }
            _ => false,
        };
        if !take {
            continue;
        }
        let partial = f.kind == FileKind::Partial;
        let st = streams.entry(key).or_default();
        st.files_read += 1;
        let mut newest: Option<String> = None;
        let mut tracks = Tally::default();
        let res = read_data_file(&f.abs, partial, |_, p| match p {
            Parsed::Line(l) => {
                let Some(t) = l.collected_at_utc.as_deref() else { return };
                max_time(&mut newest, Some(t));
                if let Some(r) = &l.run_id {
                    let e = st.run_newest.entry(r.clone()).or_default();
                    if t > e.as_str() {
                        *e = t.to_string();
                    }
                }
                if t > hour_ago.as_str() && t <= now_s.as_str() {
                    st.window.add(&l);
                }
                if l.kind.as_deref() == Some("track") {
                    tracks.add(&l);
                }
            }
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

    // Per-stream health.
    let mut problems = Vec::new();
    let mut streams_json = Vec::new();
    for ((venue, stream), st) in &streams {
        let name = format!("{venue}/{stream}");
        let mut newest = st.newest_sealed.clone();
        max_time(&mut newest, st.newest_partial.as_deref());
        let source = match (&st.newest_partial, &newest) {
            (Some(p), Some(n)) if p == n => "partial",
            (_, Some(_)) => "sealed",
            _ => "none",
        };
        let age = newest.as_deref().and_then(clock::parse_rfc3339).map(|t| (now - t).as_seconds_f64());
        let stale = age.is_none_or(|a| a > o.stale_after.as_secs_f64());
        let required = o.streams.as_ref().is_none_or(|l| l.iter().any(|r| r == stream));
        match (&newest, age) {
            _ if !required => {}
            (None, _) | (_, None) => problems.push(format!("{name}: no line found")),
            (Some(n), Some(a)) if stale => {
                problems.push(format!("{name}: newest line {n} is {a:.0} s old (> {} s)", o.stale_after.as_secs_f64()))
            }
            _ => {}
        }
        let stream_fresh = !stale;
        let tracked_now: BTreeSet<&str> = st
            .markets
            .values()
            .filter(|m| m.last_action.as_deref() == Some("start"))
            .filter(|m| match &m.last_action_run_id {
                Some(r) => st.run_newest.get(r).is_some_and(|t| t.as_str() >= live_after.as_str()),
                None => stream_fresh,
            })
            .map(|m| m.slug.as_str())
            .collect();
        let mut last_hour: BTreeSet<&str> = tracked_now.clone();
        last_hour.extend(st.window.markets.keys().map(String::as_str));
        let w = &st.window;
        streams_json.push(json!({
            "venue": venue,
            "stream": stream,
            "newest_collected_at_utc": newest,
            "newest_source": source,
            "age_s": age.map(|a| (a * 1000.0).round() / 1000.0),
            "stale": stale,
            "required": required,
            "files": st.files,
            "partials": st.partials,
            "bytes": st.bytes,
            "files_read": st.files_read,
            "unparseable_lines_read": st.unparseable_lines,
            "last_hour": {
                "rows": w.rows,
                "rows_by_kind": w.rows_by_kind,
                "missed_slots": w.gaps.missed_slots_total,
                "gaps_by_type": w.gaps.by_type,
                "http_attempts": w.http.attempts,
                "http_errors": w.http.errors,
                "http_network_errors": w.http.network_errors,
                "http_429": w.http.rate_limited_429,
                "http_retries": w.http.retries,
            },
            "markets_tracked_now": tracked_now,
            "markets_tracked_last_hour": last_hour,
        }));
    }
    for r in o.streams.iter().flatten() {
        if !streams.keys().any(|(_, s)| s == r) {
            problems.push(format!("{r}: required (--streams) but no file of it was found"));
        }
    }
    if streams.is_empty() || streams.values().all(|s| s.newest_sealed.is_none() && s.newest_partial.is_none()) {
        problems.insert(0, "no data at all".to_string());
    }

    // Disk, write rate, days left.
    let disk = disk_usage(root);
    let day_from = floor_hour(now) - time::Duration::hours(23);
    let bytes_24h: u64 = files
        .iter()
        .filter(|f| f.kind != FileKind::Other && f.hour_start.is_some_and(|h| h >= day_from && h <= now))
        .map(|f| f.bytes)
        .sum();
    let earliest = files.iter().filter(|f| f.kind != FileKind::Other).filter_map(|f| f.hour_start).min();
    // The rate is measured over the last 24 h, or over the archive's life when it is younger
    // (at least one hour, so that a fresh archive does not extrapolate from seconds).
    let span_start = earliest.map_or(now - time::Duration::hours(24), |e| e.max(now - time::Duration::hours(24)));
    let span_s = (now - span_start).as_seconds_f64().max(3600.0);
    let per_day = bytes_24h as f64 * 86400.0 / span_s;
    let disk_json = match &disk {
        Ok(d) => {
            json!({"path": root.display().to_string(), "total_bytes": d.total_bytes, "free_bytes": d.free_bytes, "error": null})
        }
        Err(e) => {
            json!({"path": root.display().to_string(), "total_bytes": null, "free_bytes": null, "error": e.to_string()})
        }
    };
    let days_left = match (&disk, per_day > 0.0) {
        (Ok(d), true) => json!(((d.free_bytes as f64 / per_day) * 10.0).round() / 10.0),
        _ => Value::Null,
    };

    // Upload log.
    let uploads = match read_uploads(root) {
        Ok(u) => u,
        Err(e) => {
            warnings.push(format!("manifests/uploads.jsonl: {e}"));
            None
        }
    };
    let last_upload = uploads.as_ref().and_then(|u| u.uploads.last()).map(|v| {
        json!({
            "at_utc": v.get("at_utc"),
            "local_path": v.get("local_path"),
            "verified": v.get("verified"),
            "rclone_exit": v.get("rclone_exit"),
        })
    });
    if let Some(u) = &uploads {
        for (n, e) in &u.bad_lines {
            warnings.push(format!("manifests/uploads.jsonl line {n}: {e}"));
        }
        if let Some(l) = u.uploads.last() {
            if l.get("verified").and_then(Value::as_bool) != Some(true) {
                warnings.push(format!(
                    "last upload not verified: {}",
                    l.get("local_path").and_then(Value::as_str).unwrap_or("?")
                ));
            }
        }
    }

    let healthy = problems.is_empty();
    let doc = json!({
        "schema": STATUS_SCHEMA,
        "root": root.display().to_string(),
        "now_utc": now_s,
        "stale_after_s": o.stale_after.as_secs_f64(),
        "healthy": healthy,
        "problems": problems,
        "warnings": warnings,
        "streams": streams_json,
        "archive_bytes": archive_bytes,
        "archive_files": archive_files,
        "disk": disk_json,
        "bytes_last_24h": bytes_24h,
        "bytes_per_day": per_day.round() as u64,
        "days_left": days_left,
        "last_upload": last_upload,
        "uploads": uploads.as_ref().map(|u| json!({
            "uploads": u.uploads.len(),
            "unverified": u.uploads.iter().filter(|v| v.get("verified").and_then(Value::as_bool) != Some(true)).count(),
            "local_deletes": u.deletes.len(),
        })),
    });
    Ok((doc, if healthy { ExitCode::Success } else { ExitCode::Failure }))
}

/// The human report: one table row per stream, then archive, disk and upload lines.
pub fn human(doc: &Value) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "pm-archive status  root={}  now={}  stale-after={}s\n",
        doc["root"].as_str().unwrap_or(""),
        doc["now_utc"].as_str().unwrap_or(""),
        doc["stale_after_s"].as_f64().unwrap_or(0.0)
    ));
    s.push_str(&format!(
        "{:<22} {:<28} {:>8} {:>8} {:>7} {:>8} {:>6} {:>9} {:>10}\n",
        "STREAM", "NEWEST LINE", "AGE", "ROWS/1h", "MISS/1h", "HTTPERR", "429", "MKT NOW/1h", "BYTES"
    ));
    for st in doc["streams"].as_array().into_iter().flatten() {
        let lh = &st["last_hour"];
        let age = st["age_s"].as_f64().map_or("-".to_string(), |a| format!("{a:.0}s"));
        s.push_str(&format!(
            "{:<22} {:<28} {:>8} {:>8} {:>7} {:>8} {:>6} {:>9} {:>10}{}\n",
            format!("{}/{}", st["venue"].as_str().unwrap_or(""), st["stream"].as_str().unwrap_or("")),
            st["newest_collected_at_utc"].as_str().unwrap_or("-"),
            age,
            lh["rows"].to_string(),
            lh["missed_slots"].to_string(),
            lh["http_errors"].to_string(),
            lh["http_429"].to_string(),
            format!(
                "{}/{}",
                st["markets_tracked_now"].as_array().map_or(0, Vec::len),
                st["markets_tracked_last_hour"].as_array().map_or(0, Vec::len)
            ),
            human_bytes(st["bytes"].as_u64().unwrap_or(0)),
            match (st["stale"] == json!(true), st["required"] == json!(true)) {
                (true, true) => "  STALE",
                (true, false) => "  stale (not required)",
                _ => "",
            }
        ));
    }
    s.push_str(&format!(
        "archive: {} in {} files; written last 24h: {} ({}/day)\n",
        human_bytes(doc["archive_bytes"].as_u64().unwrap_or(0)),
        doc["archive_files"],
        human_bytes(doc["bytes_last_24h"].as_u64().unwrap_or(0)),
        human_bytes(doc["bytes_per_day"].as_u64().unwrap_or(0))
    ));
    let d = &doc["disk"];
    match (d["free_bytes"].as_u64(), d["total_bytes"].as_u64()) {
        (Some(f), Some(t)) => s.push_str(&format!(
            "disk: {} free of {}; days left at this rate: {}\n",
            human_bytes(f),
            human_bytes(t),
            doc["days_left"].as_f64().map_or("-".to_string(), |x| format!("{x:.1}"))
        )),
        _ => s.push_str(&format!("disk: unknown ({})\n", d["error"].as_str().unwrap_or(""))),
    }
    match doc.get("last_upload").filter(|u| !u.is_null()) {
        Some(u) => s.push_str(&format!(
            "last upload: {} {} verified={} rclone_exit={}\n",
            u["at_utc"].as_str().unwrap_or("?"),
            u["local_path"].as_str().unwrap_or("?"),
            u["verified"],
            u["rclone_exit"]
        )),
        None => s.push_str("last upload: none recorded\n"),
    }
    for w in doc["warnings"].as_array().into_iter().flatten() {
        s.push_str(&format!("warning: {}\n", w.as_str().unwrap_or("")));
    }
    for p in doc["problems"].as_array().into_iter().flatten() {
        s.push_str(&format!("PROBLEM: {}\n", p.as_str().unwrap_or("")));
    }
    s.push_str(if doc["healthy"] == json!(true) { "HEALTHY\n" } else { "UNHEALTHY\n" });
    s
}
