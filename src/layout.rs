//! The archive layout, once: where a file lives (`venue=…/stream=…/date=…/hour=…/<host>-<run_id>-<n>.jsonl.gz`),
//! its suffixes and classes, the walk over an archive root, and the sealed-file record that names a
//! file in it (`pmarchive.sealed/1`). jsonl-rotate writes by these rules; `manifest` (build, verify,
//! status, unlisted, the uploader's subcommands) reads by them; the scripts ask `manifest` instead of
//! re-encoding them (docs/DATA_CONTRACT.md, "Archive layout").

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::util;

/// Suffix of every sealed archive file.
pub const SEALED_SUFFIX: &str = ".jsonl.gz";
/// Suffix of a file being written (never uploaded, never listed).
pub const PARTIAL_SUFFIX: &str = ".partial";
/// Suffix of the unreadable bytes kept beside a recovered file.
pub const TAIL_SUFFIX: &str = ".unreadable-tail";
/// Suffix of the temp file a tail is copied into before it is renamed to its final name (a dot
/// file: never listed, never uploaded).
pub const TAIL_TMP_SUFFIX: &str = ".tail-tmp";
/// The directory under the root holding manifests and logs (never walked as data).
pub const MANIFESTS_DIR: &str = "manifests";

/// The name of a venue's stream in a run manifest's `streams` and in reports: the bare stream name
/// for Polymarket (the first venue; manifests written before the second venue read the same) and
/// `<venue>/<stream>` for any other venue, so that `kalshi/books` never merges with `books`.
pub fn stream_key(venue: Option<&str>, stream: &str) -> String {
    match venue {
        None | Some(crate::envelope::VENUE_POLYMARKET) => stream.to_string(),
        Some(v) => format!("{v}/{stream}"),
    }
}

/// The stream name in a [`stream_key`] (`books` of `books` and of `kalshi/books`).
pub fn stream_of_key(key: &str) -> &str {
    key.rsplit_once('/').map_or(key, |(_, s)| s)
}

/// `<root>/venue=<v>/stream=<s>`.
pub fn stream_dir(root: &Path, venue: &str, stream: &str) -> PathBuf {
    root.join(format!("venue={venue}")).join(format!("stream={stream}"))
}

/// `date=YYYY-MM-DD/hour=HH` of the partition starting at `start` (relative to the stream directory).
pub fn partition_dir(start: OffsetDateTime) -> PathBuf {
    PathBuf::from(format!("date={:04}-{:02}-{:02}", start.year(), u8::from(start.month()), start.day()))
        .join(format!("hour={:02}", start.hour()))
}

/// `<host>-<run_id>-<n>.jsonl.gz`.
pub fn file_name(host: &str, run_id: &str, n: u64) -> String {
    format!("{host}-{run_id}-{n}{SEALED_SUFFIX}")
}

/// `<host>-<run_id>-<n>.jsonl.gz` → (run_id, n).
pub fn parse_file_name(name: &str, host: &str) -> Option<(String, u64)> {
    let stem = name.strip_suffix(SEALED_SUFFIX)?;
    let rest = stem.strip_prefix(host)?.strip_prefix('-')?;
    let (run_id, n) = rest.rsplit_once('-')?;
    if run_id.is_empty() {
        return None;
    }
    Some((run_id.to_string(), n.parse().ok()?))
}

/// `path` relative to `root`, `/`-separated (the form records carry).
pub fn rel_path(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// True when `s` is a safe path relative to the archive root: not empty, not absolute, no empty,
/// `.` or `..` component, no backslash or control character. Paths read from records and logs are
/// checked with this before they are joined to the root.
pub fn is_safe_rel_path(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('/')
        && !s.chars().any(|c| c == '\\' || c.is_control())
        && s.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// What a file under the root is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `*.jsonl.gz`: a sealed data file.
    Sealed,
    /// `*.partial`: being written; never listed, never uploaded.
    Partial,
    /// `*.unreadable-tail` (or a numbered `*.unreadable-tail.N`): bytes that could not be decoded,
    /// kept beside a recovered file.
    Tail,
    /// Anything else (not ours).
    Other,
}

/// The class of a file name.
pub fn classify(name: &str) -> FileKind {
    if name.ends_with(PARTIAL_SUFFIX) {
        FileKind::Partial
    } else if name.contains(TAIL_SUFFIX) {
        FileKind::Tail
    } else if name.ends_with(SEALED_SUFFIX) {
        FileKind::Sealed
    } else {
        FileKind::Other
    }
}

/// The parts of a path in the hive layout.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Partition {
    pub venue: Option<String>,
    pub stream: Option<String>,
    /// Start of the `date=`/`hour=` partition (the UTC hour the file was opened for).
    pub hour_start: Option<OffsetDateTime>,
}

/// Start of the partition hour from `date=YYYY-MM-DD` and `hour=HH` components.
fn partition_hour(date: &str, hour: &str) -> Option<OffsetDateTime> {
    let mut it = date.split('-');
    let y: i32 = it.next()?.parse().ok()?;
    let m: u8 = it.next()?.parse().ok()?;
    let d: u8 = it.next()?.parse().ok()?;
    let h: u8 = hour.parse().ok()?;
    let date = time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, d).ok()?;
    Some(time::PrimitiveDateTime::new(date, time::Time::from_hms(h, 0, 0).ok()?).assume_utc())
}

/// The hive partitions (`venue=`, `stream=`, `date=`+`hour=`) found in a relative path, leniently.
pub fn partition(rel: &str) -> Partition {
    let mut p = Partition::default();
    let (mut date, mut hour) = (None, None);
    for c in rel.split('/') {
        if let Some((k, v)) = c.split_once('=') {
            match k {
                "venue" => p.venue = Some(v.to_string()),
                "stream" => p.stream = Some(v.to_string()),
                "date" => date = Some(v),
                "hour" => hour = Some(v),
                _ => {}
            }
        }
    }
    if let (Some(d), Some(h)) = (date, hour) {
        p.hour_start = partition_hour(d, h);
    }
    p
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// True when `rel` is exactly a sealed file or its unreadable tail in the layout:
/// `venue=V/stream=S/date=YYYY-MM-DD/hour=HH/NAME.jsonl.gz[.unreadable-tail]`, with V, S and NAME of
/// `[A-Za-z0-9._-]`. Only such files are uploaded (anything else is not ours, or not finished).
pub fn is_upload_name(rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    let [venue, stream, date, hour, name] = parts.as_slice() else { return false };
    let value = |c: &str, key: &str| c.strip_prefix(key).is_some_and(|v| !v.is_empty() && v.chars().all(is_name_char));
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let date_ok = date.strip_prefix("date=").is_some_and(|d| {
        let b: Vec<&str> = d.split('-').collect();
        b.len() == 3 && digits(b[0], 4) && digits(b[1], 2) && digits(b[2], 2)
    });
    let stem = name.strip_suffix(TAIL_SUFFIX).unwrap_or(name);
    value(venue, "venue=")
        && value(stream, "stream=")
        && date_ok
        && hour.strip_prefix("hour=").is_some_and(|h| digits(h, 2))
        && stem.strip_suffix(SEALED_SUFFIX).is_some_and(|s| !s.is_empty() && s.chars().all(is_name_char))
}

/// The streams of a venue: the `stream=<name>` directories under `<root>/venue=<venue>/` whose name
/// is a safe component, sorted. None when the venue directory does not exist.
pub fn streams(root: &Path, venue: &str) -> io::Result<Option<Vec<String>>> {
    let dir = root.join(format!("venue={venue}"));
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if let Some(s) = name.strip_prefix("stream=") {
            if util::is_safe_component(s) && ent.file_type()?.is_dir() {
                out.push(s.to_string());
            }
        }
    }
    out.sort();
    Ok(Some(out))
}

/// One file found under the root (outside `manifests/`).
#[derive(Debug, Clone)]
pub struct ArchiveFile {
    /// Relative to the root, `/`-separated.
    pub rel: String,
    pub abs: PathBuf,
    pub kind: FileKind,
    pub bytes: u64,
    /// Modification time (seconds since the epoch; 0 when unknown).
    pub mtime: i64,
    /// From the hive partitions `venue=…/stream=…/date=…/hour=…` when present.
    pub venue: Option<String>,
    pub stream: Option<String>,
    /// Start of the `date=`/`hour=` partition (the UTC hour the file was opened for).
    pub hour_start: Option<OffsetDateTime>,
}

/// Lists every file under `root` except the `manifests/` directory, without following symlinks,
/// sorted by relative path. Directories that cannot be read are returned as errors (path: message),
/// not fatal; the root itself must be readable.
pub fn walk(root: &Path) -> io::Result<(Vec<ArchiveFile>, Vec<String>)> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    std::fs::read_dir(root)?;
    while let Some((dir, rel)) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => {
                errors.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        for ent in rd {
            let ent = match ent {
                Ok(e) => e,
                Err(e) => {
                    errors.push(format!("{}: {e}", dir.display()));
                    continue;
                }
            };
            let name = ent.file_name().to_string_lossy().into_owned();
            let rel_child = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            let md = match std::fs::symlink_metadata(ent.path()) {
                Ok(m) => m,
                Err(e) => {
                    errors.push(format!("{rel_child}: {e}"));
                    continue;
                }
            };
            if md.is_dir() {
                if rel.is_empty() && name == MANIFESTS_DIR {
                    continue;
                }
                stack.push((ent.path(), rel_child));
            } else if md.is_file() {
                let p = partition(&rel_child);
                let mtime = md
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs() as i64);
                files.push(ArchiveFile {
                    rel: rel_child,
                    abs: ent.path(),
                    kind: classify(&name),
                    bytes: md.len(),
                    mtime,
                    venue: p.venue,
                    stream: p.stream,
                    hour_start: p.hour_start,
                });
            }
        }
    }
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((files, errors))
}

// ---------------------------------------------------------------------------------------------
// The sealed-file record

/// Schema id of the sealed-file record.
pub const SEALED_SCHEMA: &str = "pmarchive.sealed/1";
/// The `record` field of a sealed-file record.
pub const SEALED_RECORD: &str = "sealed_file";

/// One line per sealed file: `pmarchive.sealed/1` (docs/DATA_CONTRACT.md, "Sealed-file record").
/// Written by jsonl-rotate (every field) and `manifest unlisted` (an adopted file: path, venue,
/// stream, bytes, sha256, tail), read by `manifest build`. Only `record`, `path` and `sha256` are
/// required when reading; fields jsonl-rotate always writes are left out when absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sealed {
    pub record: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Relative to the root, `/`-separated.
    pub path: String,
    #[serde(default)]
    pub venue: Option<String>,
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The run that wrote the file (the dead run's, for a recovered file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    /// Lines in the file (invalid ones included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default)]
    pub bytes: Option<u64>,
    pub sha256: String,
    /// Earliest / latest `collected_at_utc` of the lines (null when no line has one).
    #[serde(default)]
    pub first_collected_at_utc: Option<String>,
    #[serde(default)]
    pub last_collected_at_utc: Option<String>,
    /// When the file was opened (recovered: the file's birth time, else its mtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at_utc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_at_utc: Option<String>,
    #[serde(default)]
    pub recovered: bool,
    /// Listed by `manifest unlisted`: sealed by a run whose manifest stage died before listing it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
    /// The unreadable tail kept beside a recovered file (relative to the root), else null.
    #[serde(default)]
    pub tail_path: Option<String>,
    #[serde(default)]
    pub tail_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer_version: Option<String>,
    /// Lines in the file that are not valid JSON (archived as they came).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_lines: Option<u64>,
    /// Empty input lines skipped while this file was open (not in the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_lines: Option<u64>,
}

impl Sealed {
    /// A record with `record`/`schema` set and the given path and hash; the rest default.
    pub fn new(path: String, sha256: String) -> Sealed {
        Sealed { record: SEALED_RECORD.into(), schema: Some(SEALED_SCHEMA.into()), path, sha256, ..Sealed::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name("my-host", "20261124T160133Z-12-ab01", 7), "my-host-20261124T160133Z-12-ab01-7.jsonl.gz");
        assert_eq!(
            parse_file_name("my-host-20261124T160133Z-12-ab01-7.jsonl.gz", "my-host"),
            Some(("20261124T160133Z-12-ab01".into(), 7))
        );
        assert_eq!(parse_file_name("other-x-1.jsonl.gz", "my-host"), None);
        let t = crate::clock::from_unix(1_764_547_200 + 3 * 3600).unwrap();
        assert_eq!(partition_dir(t), PathBuf::from("date=2025-12-01/hour=03"));
        let rel = "venue=polymarket/stream=books/date=2025-12-01/hour=03/h-r-0.jsonl.gz";
        assert_eq!(partition(rel).hour_start, Some(t));
        assert_eq!(partition(rel).stream.as_deref(), Some("books"));
    }

    #[test]
    fn upload_names_are_exactly_the_layout() {
        let ok = "venue=polymarket/stream=books/date=2026-01-01/hour=00/h-r-0.jsonl.gz";
        assert!(is_upload_name(ok));
        assert!(is_upload_name(&format!("{ok}.unreadable-tail")));
        for bad in [
            format!("{ok}.partial"),
            format!("{ok}.unreadable-tail.1"),
            "venue=polymarket/stream=books/date=2026-1-01/hour=00/h-r-0.jsonl.gz".into(),
            "venue=polymarket/stream=books/date=2026-01-01/hour=0/h-r-0.jsonl.gz".into(),
            "venue=polymarket/stream=bo oks/date=2026-01-01/hour=00/h-r-0.jsonl.gz".into(),
            "venue=polymarket/stream=books/date=2026-01-01/hour=00/x/h-r-0.jsonl.gz".into(),
            "stream=books/date=2026-01-01/hour=00/h-r-0.jsonl.gz".into(),
            "venue=polymarket/stream=books/date=2026-01-01/hour=00/.jsonl.gz".into(),
        ] {
            assert!(!is_upload_name(&bad), "{bad}");
        }
    }

    #[test]
    fn safe_paths() {
        assert!(is_safe_rel_path("venue=polymarket/stream=books/date=2026-01-01/hour=00/h-r-0.jsonl.gz"));
        assert!(!is_safe_rel_path("/etc/passwd"));
        assert!(!is_safe_rel_path("a/../b"));
        assert!(!is_safe_rel_path("a//b"));
        assert!(!is_safe_rel_path(""));
        assert!(!is_safe_rel_path("a\\b"));
    }

    #[test]
    fn sealed_record_reads_what_it_writes() {
        let mut s = Sealed::new("a/b.jsonl.gz".into(), "ab".into());
        s.host = Some("h".into());
        let line = serde_json::to_string(&s).unwrap();
        assert!(line.starts_with(r#"{"record":"sealed_file","schema":"pmarchive.sealed/1","path":"a/b.jsonl.gz""#));
        assert_eq!(serde_json::from_str::<Sealed>(&line).unwrap(), s);
        let min: Sealed = serde_json::from_str(r#"{"record":"sealed_file","path":"p","sha256":"x"}"#).unwrap();
        assert_eq!((min.path.as_str(), min.bytes, min.adopted), ("p", None, false));
    }
}
