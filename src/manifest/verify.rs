//! `manifest verify ROOT`: checks the archive against every run manifest. Each file a manifest lists
//! is re-hashed; each `*.jsonl.gz` (and unreadable tail) on disk must be listed. Files deleted after
//! a verified upload (the upload log says so, with the same sha256) are "offloaded", not missing.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{
    is_safe_rel_path, load_manifests, read_uploads, walk, ArchiveFile, FileEntry, FileKind, LoadedManifest, UploadLog,
    VERIFY_SCHEMA,
};
use crate::cli;
use crate::{clock, util};

/// Which kind of listed file a check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// A sealed data file.
    File,
    /// An unreadable tail kept beside a recovered file.
    Tail,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::File => "file",
            CheckKind::Tail => "tail",
        }
    }
}

/// What was found for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// On disk with the listed size and sha256.
    Ok,
    /// Not on disk, deleted after a verified upload of the same sha256.
    Offloaded,
    Missing,
    Changed,
    /// On disk but listed by no manifest.
    Unlisted,
}

impl CheckStatus {
    pub const ALL: [CheckStatus; 5] =
        [CheckStatus::Ok, CheckStatus::Offloaded, CheckStatus::Missing, CheckStatus::Changed, CheckStatus::Unlisted];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Offloaded => "offloaded",
            CheckStatus::Missing => "missing",
            CheckStatus::Changed => "changed",
            CheckStatus::Unlisted => "unlisted",
        }
    }

    /// Missing, changed and unlisted files fail the verification.
    pub fn fails(self) -> bool {
        matches!(self, CheckStatus::Missing | CheckStatus::Changed | CheckStatus::Unlisted)
    }
}

/// What was found for one file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileCheck {
    pub path: String,
    pub kind: CheckKind,
    pub status: CheckStatus,
    /// The manifest that lists the file (null when unlisted).
    pub manifest: Option<String>,
    pub expected_sha256: Option<String>,
    pub actual_sha256: Option<String>,
    pub expected_bytes: Option<u64>,
    pub actual_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A manifest that could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BadManifest {
    pub manifest: String,
    pub error: String,
}

/// How many files (or tails) ended in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    pub ok: usize,
    pub offloaded: usize,
    pub missing: usize,
    pub changed: usize,
    pub unlisted: usize,
}

impl StatusCounts {
    fn of(checks: &[FileCheck], kind: CheckKind) -> StatusCounts {
        let n = |st| checks.iter().filter(|c| c.kind == kind && c.status == st).count();
        StatusCounts {
            ok: n(CheckStatus::Ok),
            offloaded: n(CheckStatus::Offloaded),
            missing: n(CheckStatus::Missing),
            changed: n(CheckStatus::Changed),
            unlisted: n(CheckStatus::Unlisted),
        }
    }

    pub fn get(&self, st: CheckStatus) -> usize {
        match st {
            CheckStatus::Ok => self.ok,
            CheckStatus::Offloaded => self.offloaded,
            CheckStatus::Missing => self.missing,
            CheckStatus::Changed => self.changed,
            CheckStatus::Unlisted => self.unlisted,
        }
    }
}

/// Counts per status, for data files and for tails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub files: StatusCounts,
    pub tails: StatusCounts,
}

/// A line of the upload log that is not a valid record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BadLine {
    pub line: u64,
    pub detail: String,
}

/// What the upload log held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadLogSummary {
    pub uploads: usize,
    pub local_deletes: usize,
    pub dry_run_skipped: u64,
    pub bad_lines: Vec<BadLine>,
}

/// The verification report (`pmarchive.verify/1`); [`human`] renders it as text, `--json` as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verify {
    pub schema: String,
    pub root: String,
    pub checked_at_utc: String,
    /// No missing, changed or unlisted file and no problem.
    pub ok: bool,
    /// Manifests found (readable or not).
    pub manifests: usize,
    pub bad_manifests: Vec<BadManifest>,
    pub summary: Summary,
    pub partials_ignored: u64,
    pub other_files_ignored: u64,
    /// Null when there is no upload log.
    pub upload_log: Option<UploadLogSummary>,
    pub problems: Vec<String>,
    /// Every listed or unlisted file, by path.
    pub files: Vec<FileCheck>,
}

struct Expect {
    kind: CheckKind,
    manifest: String,
    sha256: Option<String>,
    bytes: Option<u64>,
}

/// What one manifest file entry lists: the data file and its unreadable tail, each as
/// (kind, path, sha256, bytes).
type Listing = (CheckKind, Option<String>, Option<String>, Option<u64>);
fn listings(f: &FileEntry) -> [Listing; 2] {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    [
        (CheckKind::File, some(&f.path), some(&f.sha256), f.bytes),
        (CheckKind::Tail, f.tail_path.clone(), f.tail_sha256.clone(), f.tail_path.as_ref().map(|_| f.tail_bytes)),
    ]
}

/// Verifies the archive under `root`. `Err` only when the root cannot be walked; a failed check is a
/// report with `ok: false`.
pub fn verify(root: &Path) -> cli::Result<Verify> {
    if !root.is_dir() {
        return Err(cli::Error::Msg(format!("{}: not a readable directory", root.display())));
    }
    let (found, walk_errors) = walk(root).map_err(|e| cli::Error::Msg(format!("{}: {e}", root.display())))?;
    let mut problems: Vec<String> = walk_errors.iter().map(|e| format!("unreadable directory entry: {e}")).collect();
    let manifests = load_manifests(root);
    let (expected, bad_manifests) = expected_files(&manifests, &mut problems);
    let uploads = match read_uploads(root) {
        Ok(u) => u,
        Err(e) => {
            problems.push(format!("manifests/uploads.jsonl unreadable: {e}"));
            None
        }
    };
    let empty = UploadLog::default();
    let log = uploads.as_ref().unwrap_or(&empty);
    let on_disk: BTreeMap<&str, &ArchiveFile> = found.iter().map(|f| (f.rel.as_str(), f)).collect();
    let mut checks: Vec<FileCheck> =
        expected.iter().map(|(path, e)| check_listed(path, e, on_disk.get(path.as_str()).copied(), log)).collect();
    let (unlisted, partials, others) = unlisted_checks(&found, &expected);
    checks.extend(unlisted);
    checks.sort_by(|a, b| a.path.cmp(&b.path));
    let failed = checks.iter().filter(|c| c.status.fails()).count() + problems.len();
    Ok(Verify {
        schema: VERIFY_SCHEMA.to_string(),
        root: root.display().to_string(),
        checked_at_utc: clock::fmt_micros(clock::now()),
        ok: failed == 0,
        manifests: manifests.len(),
        bad_manifests,
        summary: Summary {
            files: StatusCounts::of(&checks, CheckKind::File),
            tails: StatusCounts::of(&checks, CheckKind::Tail),
        },
        partials_ignored: partials,
        other_files_ignored: others,
        upload_log: uploads.as_ref().map(|u| UploadLogSummary {
            uploads: u.uploads.len(),
            local_deletes: u.deletes.len(),
            dry_run_skipped: u.dry_run_skipped,
            bad_lines: u.bad_lines.iter().map(|(n, e)| BadLine { line: *n, detail: e.clone() }).collect(),
        }),
        problems,
        files: checks,
    })
}

/// Every file the manifests list (first listing wins; a second one with another sha256 is a
/// problem), and the manifests that cannot be read.
fn expected_files(
    manifests: &[LoadedManifest],
    problems: &mut Vec<String>,
) -> (BTreeMap<String, Expect>, Vec<BadManifest>) {
    let mut expected: BTreeMap<String, Expect> = BTreeMap::new();
    let mut bad_manifests = Vec::new();
    for m in manifests {
        let doc = match &m.doc {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("bad manifest manifests/{}: {e}", m.name));
                bad_manifests.push(BadManifest { manifest: m.name.clone(), error: e.clone() });
                continue;
            }
        };
        for f in doc.files() {
            for (kind, path, sha256, bytes) in listings(f) {
                let Some(path) = path else { continue };
                if !is_safe_rel_path(&path) {
                    problems.push(format!("manifests/{}: unsafe path {path:?} ignored", m.name));
                    continue;
                }
                if let Some(prev) = expected.get(&path) {
                    if prev.sha256 != sha256 {
                        problems.push(format!(
                            "{path}: listed by manifests/{} and manifests/{} with different sha256",
                            prev.manifest, m.name
                        ));
                    }
                    continue;
                }
                expected.insert(path, Expect { kind, manifest: m.name.clone(), sha256, bytes });
            }
        }
    }
    (expected, bad_manifests)
}

/// Checks one listed file against the disk (re-hashing it) and the upload log.
fn check_listed(path: &str, e: &Expect, on_disk: Option<&ArchiveFile>, log: &UploadLog) -> FileCheck {
    let mut c = FileCheck {
        path: path.to_string(),
        kind: e.kind,
        status: CheckStatus::Ok,
        manifest: Some(e.manifest.clone()),
        expected_sha256: e.sha256.clone(),
        actual_sha256: None,
        expected_bytes: e.bytes,
        actual_bytes: None,
        detail: None,
    };
    let Some(f) = on_disk else {
        let off = e.sha256.as_deref().is_some_and(|s| log.offloaded(path, s));
        c.status = if off { CheckStatus::Offloaded } else { CheckStatus::Missing };
        if !off {
            c.detail = Some("not on disk and no verified upload + local_delete record with this sha256".into());
        }
        return c;
    };
    match util::sha256_file(&f.abs) {
        Ok((sha, n)) => {
            c.actual_sha256 = Some(sha.clone());
            c.actual_bytes = Some(n);
            let size_differs = e.bytes.is_some_and(|b| b != n);
            let sha_differs = e.sha256.as_deref() != Some(sha.as_str());
            if size_differs || sha_differs {
                c.status = CheckStatus::Changed;
                c.detail = Some(match (size_differs, &e.sha256) {
                    (true, _) => format!("size {} → {n} bytes", e.bytes.unwrap_or(0)),
                    (false, Some(x)) => format!("sha256 {x} → {sha}"),
                    (false, None) => "the manifest has no sha256 for it".into(),
                });
            }
        }
        Err(err) => {
            c.status = CheckStatus::Changed;
            c.detail = Some(format!("cannot be read: {err}"));
        }
    }
    c
}

/// Sealed files and tails on disk that no manifest lists; and how many partial and other files were
/// ignored.
fn unlisted_checks(found: &[ArchiveFile], expected: &BTreeMap<String, Expect>) -> (Vec<FileCheck>, u64, u64) {
    let (mut checks, mut partials, mut others) = (Vec::new(), 0u64, 0u64);
    for f in found {
        let kind = match f.kind {
            FileKind::Sealed => CheckKind::File,
            FileKind::Tail => CheckKind::Tail,
            FileKind::Partial => {
                partials += 1;
                continue;
            }
            FileKind::Other => {
                others += 1;
                continue;
            }
        };
        if expected.contains_key(&f.rel) {
            continue;
        }
        checks.push(FileCheck {
            path: f.rel.clone(),
            kind,
            status: CheckStatus::Unlisted,
            manifest: None,
            expected_sha256: None,
            actual_sha256: None,
            expected_bytes: None,
            actual_bytes: Some(f.bytes),
            detail: Some("on disk but listed by no manifest".into()),
        });
    }
    (checks, partials, others)
}

/// The human report: a summary table, one line per failed file and per problem, and a last line
/// `RESULT: OK` or `RESULT: FAIL`.
pub fn human(v: &Verify) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "manifest verify {}: {} manifests, {} partial files ignored, {} other files ignored\n",
        v.root, v.manifests, v.partials_ignored, v.other_files_ignored
    ));
    if let Some(u) = &v.upload_log {
        s.push_str(&format!(
            "upload log: {} uploads, {} local deletes, {} dry-run records skipped, {} bad lines\n",
            u.uploads,
            u.local_deletes,
            u.dry_run_skipped,
            u.bad_lines.len()
        ));
    }
    s.push_str(&format!("{:<10} {:>8} {:>8}\n", "STATUS", "FILES", "TAILS"));
    for st in CheckStatus::ALL {
        s.push_str(&format!("{:<10} {:>8} {:>8}\n", st.as_str(), v.summary.files.get(st), v.summary.tails.get(st)));
    }
    for f in v.files.iter().filter(|f| f.status.fails()) {
        s.push_str(&format!(
            "{:<9} {} {}: {}\n",
            f.status.as_str().to_uppercase(),
            f.kind.as_str(),
            f.path,
            f.detail.as_deref().unwrap_or("")
        ));
    }
    for p in &v.problems {
        s.push_str(&format!("PROBLEM   {p}\n"));
    }
    for b in v.upload_log.iter().flat_map(|u| &u.bad_lines) {
        s.push_str(&format!("warning   manifests/uploads.jsonl line {}: {}\n", b.line, b.detail));
    }
    s.push_str(if v.ok { "RESULT: OK\n" } else { "RESULT: FAIL\n" });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Verify {
        let check = |path: &str, kind, status, detail: Option<&str>| FileCheck {
            path: path.into(),
            kind,
            status,
            manifest: Some("run-1.json".into()),
            expected_sha256: Some("ab".into()),
            actual_sha256: None,
            expected_bytes: Some(3),
            actual_bytes: None,
            detail: detail.map(str::to_string),
        };
        let files = vec![
            check("a.jsonl.gz", CheckKind::File, CheckStatus::Ok, None),
            check("b.jsonl.gz", CheckKind::File, CheckStatus::Missing, Some("not on disk")),
            check("b.jsonl.gz.tail", CheckKind::Tail, CheckStatus::Changed, Some("size 3 → 4 bytes")),
        ];
        Verify {
            schema: VERIFY_SCHEMA.into(),
            root: "/r".into(),
            checked_at_utc: "2026-01-01T00:00:00.000000Z".into(),
            ok: false,
            manifests: 1,
            bad_manifests: vec![],
            summary: Summary {
                files: StatusCounts::of(&files, CheckKind::File),
                tails: StatusCounts::of(&files, CheckKind::Tail),
            },
            partials_ignored: 2,
            other_files_ignored: 0,
            upload_log: Some(UploadLogSummary {
                uploads: 1,
                local_deletes: 0,
                dry_run_skipped: 0,
                bad_lines: vec![BadLine { line: 7, detail: "not JSON".into() }],
            }),
            problems: vec!["x: unsafe path ignored".into()],
            files,
        }
    }

    /// The JSON keeps the `pmarchive.verify/1` field names and reads back into the same value; the
    /// human report is rendered from the typed fields (a failing file per line, the counts, the result).
    #[test]
    fn the_report_round_trips_and_renders_from_its_fields() {
        let v = sample();
        let json = serde_json::to_value(&v).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "schema",
            "root",
            "checked_at_utc",
            "ok",
            "manifests",
            "bad_manifests",
            "summary",
            "partials_ignored",
            "other_files_ignored",
            "upload_log",
            "problems",
            "files",
        ];
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(json["summary"]["files"]["missing"], 1);
        assert_eq!(json["summary"]["tails"]["changed"], 1);
        assert_eq!(json["files"][1]["status"], "missing");
        assert_eq!(json["files"][2]["kind"], "tail");
        assert!(json["files"][0].get("detail").is_none());
        assert_eq!(serde_json::from_value::<Verify>(json).unwrap(), v);
        let h = human(&v);
        assert!(
            h.starts_with("manifest verify /r: 1 manifests, 2 partial files ignored, 0 other files ignored\n"),
            "{h}"
        );
        assert!(h.contains("upload log: 1 uploads, 0 local deletes, 0 dry-run records skipped, 1 bad lines\n"));
        assert!(h.contains(&format!("{:<10} {:>8} {:>8}\n", "missing", 1, 0)));
        assert!(h.contains(&format!("{:<10} {:>8} {:>8}\n", "changed", 0, 1)));
        assert!(h.contains("MISSING   file b.jsonl.gz: not on disk\n"));
        assert!(h.contains("CHANGED   tail b.jsonl.gz.tail: size 3 → 4 bytes\n"));
        assert!(!h.contains("a.jsonl.gz:"));
        assert!(h.contains("PROBLEM   x: unsafe path ignored\n"));
        assert!(h.contains("warning   manifests/uploads.jsonl line 7: not JSON\n"));
        assert!(h.ends_with("RESULT: FAIL\n"));
    }
}
