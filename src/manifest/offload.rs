//! Files on disk against the manifests, for adoption (`manifest unlisted`) and for the uploader
//! (`manifest offload …`, called by scripts/upload_archive_rclone.sh, which keeps rclone, locking and
//! retention and parses no JSON): the archive files it may upload, the expected `path → sha256` list
//! of the run manifests, the local check, the upload log's state per file, and appending upload
//! records. Each returns a domain result; bin/manifest.rs prints it and decides the exit code.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Seek, Write};
use std::path::Path;

use serde::Deserialize;

use super::{load_manifests, read_uploads, uploads_path, LocalDelete, Upload, UploadRecord, UPLOAD_SCHEMA};
use crate::layout::{self, FileKind, Sealed, TAIL_SUFFIX};
use crate::{clock, util};

/// Why `unlisted` adopted nothing, or an offload subcommand could not do its job.
#[derive(Debug)]
pub enum Error {
    /// The root is not a readable directory.
    Root(String),
    /// A manifest that cannot be read: adopting the files it may list would list them twice.
    BadManifest(String),
    /// Bad input (a line of `append`'s or `check`'s stdin).
    Input(String),
    Io(io::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Error::Root(s) | Error::BadManifest(s) | Error::Input(s) => f.write_str(s),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

fn walk_root(root: &Path) -> Result<(Vec<layout::ArchiveFile>, Vec<String>), Error> {
    if !root.is_dir() {
        return Err(Error::Root(format!("{}: not a readable directory", root.display())));
    }
    layout::walk(root).map_err(|e| Error::Root(format!("{}: {e}", root.display())))
}

/// `manifest unlisted ROOT`: one sealed-file record (with `adopted: true`) for every sealed data file
/// on disk that no manifest lists — a file sealed after its run's manifest stage died — with its
/// unreadable tail when that is unlisted too, so that `manifest build` can list it. Hashes only
/// those files. Returns the records and the problems met (unreadable files or directories).
pub fn unlisted(root: &Path) -> Result<(Vec<Sealed>, Vec<String>), Error> {
    let (found, mut problems) = walk_root(root)?;
    let mut listed = BTreeSet::new();
    for m in load_manifests(root) {
        let doc = m
            .doc
            .map_err(|e| Error::BadManifest(format!("bad manifest manifests/{}: {e}; nothing adopted", m.name)))?;
        for f in doc.files() {
            listed.insert(f.path.clone());
            listed.extend(f.tail_path.clone());
        }
    }
    let mut records = Vec::new();
    for f in found.iter().filter(|f| f.kind == FileKind::Sealed && !listed.contains(&f.rel)) {
        let (sha256, bytes) = match util::sha256_file(&f.abs) {
            Ok(x) => x,
            Err(e) => {
                problems.push(format!("{}: {e}", f.rel));
                continue;
            }
        };
        let mut rec = Sealed::new(f.rel.clone(), sha256);
        rec.venue.clone_from(&f.venue);
        rec.stream.clone_from(&f.stream);
        rec.bytes = Some(bytes);
        rec.adopted = true;
        let tail = format!("{}{TAIL_SUFFIX}", f.rel);
        if let Some(t) = found.iter().find(|t| t.rel == tail && !listed.contains(&t.rel)) {
            rec.tail_path = Some(t.rel.clone());
            rec.tail_bytes = t.bytes;
        }
        records.push(rec);
    }
    Ok((records, problems))
}

/// What the run manifests expect of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// The sha256 recorded at sealing.
    Sha256(String),
    /// Two manifest entries disagree.
    Conflict,
}

/// The expected `path → sha256` list: every file (and unreadable tail) the run manifests list, with
/// the sha256 recorded at sealing. Manifests from which nothing can be read are returned by name
/// with the reason (the files only they list then count as unlisted: the safe side).
pub fn expected(root: &Path) -> (BTreeMap<String, Expected>, Vec<String>) {
    let mut out: BTreeMap<String, Expected> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for m in load_manifests(root) {
        let doc = match m.doc {
            Ok(d) => d,
            Err(e) => {
                unreadable.push(format!("manifests/{}: {e}", m.name));
                continue;
            }
        };
        for f in doc.files() {
            for (p, sha) in f.listed() {
                match out.get(p) {
                    None => {
                        out.insert(p.to_string(), Expected::Sha256(sha.to_string()));
                    }
                    Some(Expected::Sha256(s)) if s != sha => {
                        out.insert(p.to_string(), Expected::Conflict);
                    }
                    Some(_) => {}
                }
            }
        }
    }
    (out, unreadable)
}

/// The local check of one file against its run manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalCheck {
    /// The local sha256 is the one recorded at sealing.
    Ok,
    /// No manifest lists the path.
    Unlisted,
    /// Manifests list the path with different sha256.
    ManifestConflict,
    /// The local bytes differ from what was sealed (the recorded sha256).
    ManifestMismatch(String),
}

impl LocalCheck {
    /// The word the uploader prints and records (`skipped`).
    pub fn word(&self) -> &'static str {
        match self {
            LocalCheck::Ok => "ok",
            LocalCheck::Unlisted => "unlisted",
            LocalCheck::ManifestConflict => "manifest_conflict",
            LocalCheck::ManifestMismatch(_) => "manifest_mismatch",
        }
    }
}

/// Checks `(sha256, path)` pairs (as `sha256sum` prints them) against the expected list.
pub fn check(expected: &BTreeMap<String, Expected>, sha256: &str, path: &str) -> LocalCheck {
    match expected.get(path) {
        None => LocalCheck::Unlisted,
        Some(Expected::Conflict) => LocalCheck::ManifestConflict,
        Some(Expected::Sha256(s)) if s == sha256 => LocalCheck::Ok,
        Some(Expected::Sha256(s)) => LocalCheck::ManifestMismatch(s.clone()),
    }
}

/// The class of a file under the root, for the uploader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadClass {
    /// A sealed file or its unreadable tail, exactly in the layout: may be uploaded.
    Archive,
    /// Being written.
    Partial,
    /// A dot file (lock, temp file): never uploaded, not worth a warning.
    Dot,
    /// Anything else: not an archive file name.
    Other,
}

impl UploadClass {
    pub fn word(self) -> &'static str {
        match self {
            UploadClass::Archive => "archive",
            UploadClass::Partial => "partial",
            UploadClass::Dot => "dot",
            UploadClass::Other => "other",
        }
    }
}

/// Files with their class for the uploader, and the walk's problems.
pub type ClassifiedFiles = (Vec<(UploadClass, layout::ArchiveFile)>, Vec<String>);

/// Every file under the root (outside `manifests/`) with its class for the uploader.
pub fn files(root: &Path) -> Result<ClassifiedFiles, Error> {
    let (found, errors) = walk_root(root)?;
    let out = found
        .into_iter()
        .map(|f| {
            let name = f.rel.rsplit('/').next().unwrap_or("");
            let class = if f.kind == FileKind::Partial {
                UploadClass::Partial
            } else if layout::is_upload_name(&f.rel) {
                UploadClass::Archive
            } else if name.starts_with('.') {
                UploadClass::Dot
            } else {
                UploadClass::Other
            };
            (class, f)
        })
        .collect();
    Ok((out, errors))
}

/// The latest upload record of one (path, sha256).
#[derive(Debug, Clone, PartialEq)]
pub struct FileState {
    pub verified: bool,
    pub verified_by: Option<String>,
    pub skipped: Option<String>,
    /// md5 of the latest verified record (the local md5 of that very content).
    pub md5: Option<String>,
}

/// The upload log's state per (path, sha256).
pub type UploadStates = BTreeMap<(String, String), FileState>;

/// The upload log's state per (path, sha256), and the number of lines that are not valid records.
pub fn state(root: &Path) -> io::Result<(UploadStates, usize)> {
    let Some(log) = read_uploads(root)? else { return Ok((BTreeMap::new(), 0)) };
    let mut out = BTreeMap::new();
    for u in log.uploads {
        let md5 = if u.verified { u.md5 } else { None };
        out.insert(
            (u.local_path, u.sha256),
            FileState { verified: u.verified, verified_by: u.verified_by, skipped: u.skipped, md5 },
        );
    }
    Ok((out, log.bad_lines.len()))
}

/// The remote's hash for verification from `rclone backend features REMOTE` (JSON): `md5` if it has
/// it, else `sha256`, else `size`.
pub fn hash_type(features: &[u8]) -> Result<&'static str, Error> {
    #[derive(Deserialize)]
    struct Features {
        #[serde(rename = "Hashes", default)]
        hashes: Option<Vec<String>>,
    }
    let f: Features = serde_json::from_slice(features)
        .map_err(|e| Error::Input(format!("not rclone's backend features JSON: {e}")))?;
    let hashes = f.hashes.unwrap_or_default();
    Ok(if hashes.iter().any(|h| h == "md5") {
        "md5"
    } else if hashes.iter().any(|h| h == "sha256") {
        "sha256"
    } else {
        "size"
    })
}

/// Parses one tab-separated record line of `manifest offload append` (the columns are in the
/// usage text; an empty column is null) into a record stamped `at_utc`.
pub fn parse_record_line(line: &str, at_utc: &str) -> Result<UploadRecord, String> {
    let cols: Vec<&str> = line.split('\t').collect();
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let num = |s: &str, what: &str| s.parse::<u64>().map_err(|_| format!("{what}: not a number: '{s}'"));
    let path = |s: &str| {
        if layout::is_safe_rel_path(s) {
            Ok(s.to_string())
        } else {
            Err(format!("not a safe relative path: {s:?}"))
        }
    };
    match cols.as_slice() {
        ["upload", local_path, bytes, sha256, md5, remote, remote_md5, verified, verified_by, rclone_exit, skipped, manifest_sha256, check, quarantined_as] =>
        {
            let verified = match *verified {
                "true" => true,
                "false" => false,
                v => return Err(format!("verified: not true/false: '{v}'")),
            };
            let rclone_exit = match *rclone_exit {
                "" => None,
                s => Some(s.parse::<i64>().map_err(|_| format!("rclone_exit: not a number: '{s}'"))?),
            };
            let local_path = path(local_path)?;
            Ok(UploadRecord::Upload(Upload {
                schema: UPLOAD_SCHEMA.into(),
                at_utc: Some(at_utc.into()),
                remote_path: local_path.clone(),
                local_path,
                bytes: num(bytes, "bytes")?,
                sha256: sha256.to_string(),
                md5: opt(md5),
                remote: remote.to_string(),
                remote_md5: opt(remote_md5),
                verified,
                verified_by: opt(verified_by),
                rclone_exit,
                dry_run: false,
                manifest_sha256: opt(manifest_sha256),
                skipped: opt(skipped),
                check: opt(check),
                quarantined_as: opt(quarantined_as),
            }))
        }
        ["local_delete", local_path, bytes, sha256, remote, reason] => {
            let local_path = path(local_path)?;
            Ok(UploadRecord::LocalDelete(LocalDelete {
                schema: UPLOAD_SCHEMA.into(),
                at_utc: Some(at_utc.into()),
                remote_path: local_path.clone(),
                local_path,
                bytes: num(bytes, "bytes")?,
                sha256: sha256.to_string(),
                remote: remote.to_string(),
                reason: reason.to_string(),
            }))
        }
        [kind, ..] => Err(format!(
            "not an upload (14 columns) or local_delete (6 columns) line: '{kind}' with {} columns",
            cols.len()
        )),
        [] => Err("empty line".into()),
    }
}

/// Appends records to `ROOT/manifests/uploads.jsonl` in one write and one fsync (closing a torn last
/// line left by a crash first; a new file's directory is fsynced too). Returns how many were written.
pub fn append(root: &Path, records: &[UploadRecord]) -> io::Result<usize> {
    if records.is_empty() {
        return Ok(0);
    }
    let path = uploads_path(root);
    let created = !path.exists();
    let mut f = std::fs::OpenOptions::new().read(true).append(true).create(true).open(&path)?;
    let mut buf = Vec::new();
    let len = f.metadata()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        f.seek(io::SeekFrom::Start(len - 1))?;
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            buf.push(b'\n');
        }
    }
    for r in records {
        serde_json::to_writer(&mut buf, r)?;
        buf.push(b'\n');
    }
    // All or nothing: a write that fails part-way (ENOSPC on a full disk) is cut back to the length
    // before it, so that the log never keeps a torn record (best effort: the truncation itself frees
    // space; if it fails, readers count the torn line as one bad line).
    if let Err(e) = f.write_all(&buf).and_then(|()| f.sync_all()) {
        let _ = f.set_len(len).and_then(|()| f.sync_all());
        return Err(e);
    }
    if created {
        util::fsync_dir(path.parent().expect("uploads.jsonl has a directory"))?;
    }
    Ok(records.len())
}

/// The time stamp of records appended now.
pub fn now_utc() -> String {
    clock::fmt_micros(clock::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lines_become_the_typed_records() {
        let sha = "a".repeat(64);
        let up = format!("upload\tv/a.jsonl.gz\t12\t{sha}\t\tgd:x\t\tfalse\t\t\tunlisted\t\t\t");
        let UploadRecord::Upload(u) = parse_record_line(&up, "T").unwrap() else { panic!() };
        assert_eq!(
            (u.skipped.as_deref(), u.md5.as_deref(), u.rclone_exit, u.bytes),
            (Some("unlisted"), None, None, 12)
        );
        let line = serde_json::to_string(&UploadRecord::Upload(u)).unwrap();
        assert!(line.starts_with(r#"{"record":"upload","schema":"pmarchive.upload/1","at_utc":"T","#), "{line}");
        assert!(!line.contains("manifest_sha256"), "{line}");
        let del = format!("local_delete\tv/a.jsonl.gz\t12\t{sha}\tgd:x\tretention: old");
        let d = parse_record_line(&del, "T").unwrap();
        let v: serde_json::Value = serde_json::to_value(&d).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 9);
        assert_eq!(serde_json::from_value::<UploadRecord>(v).unwrap(), d);
        assert!(parse_record_line("upload\t../x\t1", "T").is_err());
        assert!(parse_record_line(&format!("local_delete\t/etc/x\t1\t{sha}\tr\twhy"), "T").is_err());
    }

    #[test]
    fn hash_types() {
        assert_eq!(hash_type(br#"{"Name":"x","Hashes":["md5","sha1"]}"#).unwrap(), "md5");
        assert_eq!(hash_type(br#"{"Hashes":["sha256"]}"#).unwrap(), "sha256");
        assert_eq!(hash_type(br#"{"Hashes":null}"#).unwrap(), "size");
        assert_eq!(hash_type(br#"{"Features":{}}"#).unwrap(), "size");
        assert!(hash_type(b"garbage").is_err());
    }
}
