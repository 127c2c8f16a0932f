//! `manifest verify ROOT`: checks the archive against every run manifest. Each file a manifest lists
//! is re-hashed; each `*.jsonl.gz` (and unreadable tail) on disk must be listed. Files deleted after
//! a verified upload (the upload log says so, with the same sha256) are "offloaded", not missing.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value};

use super::{is_safe_rel_path, load_manifests, read_uploads, walk, FileEntry, FileKind, UploadLog, VERIFY_SCHEMA};
use crate::cli::{self, ExitCode};
use crate::{clock, util};

/// What was found for one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileCheck {
    pub path: String,
    /// `file` (a sealed data file) or `tail` (an unreadable tail kept beside a recovered file).
    pub kind: &'static str,
    /// `ok`, `offloaded`, `missing`, `changed`, `unlisted`.
    pub status: &'static str,
    /// The manifest that lists the file (null when unlisted).
    pub manifest: Option<String>,
    pub expected_sha256: Option<String>,
    pub actual_sha256: Option<String>,
    pub expected_bytes: Option<u64>,
    pub actual_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

struct Expect {
    kind: &'static str,
    manifest: String,
    sha256: Option<String>,
    bytes: Option<u64>,
}

const STATUSES: [&str; 5] = ["ok", "offloaded", "missing", "changed", "unlisted"];

/// What one manifest file entry lists: the data file and its unreadable tail, each as
/// (kind, path, sha256, bytes).
type Listing = (&'static str, Option<String>, Option<String>, Option<u64>);
fn listings(f: &FileEntry) -> [Listing; 2] {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    [
        ("file", some(&f.path), some(&f.sha256), f.bytes),
        ("tail", f.tail_path.clone(), f.tail_sha256.clone(), f.tail_path.as_ref().map(|_| f.tail_bytes)),
    ]
}

/// Verifies the archive under `root`; returns the report document and the exit code.
pub fn verify(root: &Path) -> cli::Result<(Value, ExitCode)> {
    if !root.is_dir() {
        return Err(cli::Error::Msg(format!("{}: not a readable directory", root.display())));
    }
    let (found, walk_errors) = walk(root).map_err(|e| cli::Error::Msg(format!("{}: {e}", root.display())))?;
    let mut problems: Vec<String> = walk_errors.iter().map(|e| format!("unreadable directory entry: {e}")).collect();

    let manifests = load_manifests(root);
    let mut expected: BTreeMap<String, Expect> = BTreeMap::new();
    let mut bad_manifests = Vec::new();
    for m in &manifests {
        let doc = match &m.doc {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("bad manifest manifests/{}: {e}", m.name));
                bad_manifests.push(json!({"manifest": m.name, "error": e}));
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

    let uploads = match read_uploads(root) {
        Ok(u) => u,
        Err(e) => {
            problems.push(format!("manifests/uploads.jsonl unreadable: {e}"));
            None
        }
    };
    let empty = UploadLog::default();
    let log = uploads.as_ref().unwrap_or(&empty);

    let on_disk: BTreeMap<&str, &super::ArchiveFile> = found.iter().map(|f| (f.rel.as_str(), f)).collect();
    let mut checks = Vec::new();
    for (path, e) in &expected {
        let mut c = FileCheck {
            path: path.clone(),
            kind: e.kind,
            status: "ok",
            manifest: Some(e.manifest.clone()),
            expected_sha256: e.sha256.clone(),
            actual_sha256: None,
            expected_bytes: e.bytes,
            actual_bytes: None,
            detail: None,
        };
        match on_disk.get(path.as_str()) {
            None => {
                let off = e.sha256.as_deref().is_some_and(|s| log.offloaded(path, s));
                c.status = if off { "offloaded" } else { "missing" };
                if !off {
                    c.detail = Some("not on disk and no verified upload + local_delete record with this sha256".into());
                }
            }
            Some(f) => match util::sha256_file(&f.abs) {
                Ok((sha, n)) => {
                    c.actual_sha256 = Some(sha.clone());
                    c.actual_bytes = Some(n);
                    let size_differs = e.bytes.is_some_and(|b| b != n);
                    let sha_differs = e.sha256.as_deref() != Some(sha.as_str());
                    if size_differs || sha_differs {
                        c.status = "changed";
                        c.detail = Some(match (size_differs, &e.sha256) {
                            (true, _) => format!("size {} → {n} bytes", e.bytes.unwrap_or(0)),
                            (false, Some(x)) => format!("sha256 {x} → {sha}"),
                            (false, None) => "the manifest has no sha256 for it".into(),
                        });
                    }
                }
                Err(err) => {
                    c.status = "changed";
                    c.detail = Some(format!("cannot be read: {err}"));
                }
            },
        }
        checks.push(c);
    }
    let (mut partials, mut others) = (0u64, 0u64);
    for f in &found {
        let kind = match f.kind {
            FileKind::Sealed => "file",
            FileKind::Tail => "tail",
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
            status: "unlisted",
            manifest: None,
            expected_sha256: None,
            actual_sha256: None,
            expected_bytes: None,
            actual_bytes: Some(f.bytes),
            detail: Some("on disk but listed by no manifest".into()),
        });
    }
    checks.sort_by(|a, b| a.path.cmp(&b.path));

    let mut summary = serde_json::Map::new();
    for kind in ["file", "tail"] {
        let mut m = serde_json::Map::new();
        for s in STATUSES {
            m.insert(s.into(), json!(checks.iter().filter(|c| c.kind == kind && c.status == s).count()));
        }
        summary.insert(format!("{kind}s"), Value::Object(m));
    }
    let failed =
        checks.iter().filter(|c| matches!(c.status, "missing" | "changed" | "unlisted")).count() + problems.len();
    let doc = json!({
        "schema": VERIFY_SCHEMA,
        "root": root.display().to_string(),
        "checked_at_utc": clock::fmt_micros(clock::now()),
        "ok": failed == 0,
        "manifests": manifests.len(),
        "bad_manifests": bad_manifests,
        "summary": summary,
        "partials_ignored": partials,
        "other_files_ignored": others,
        "upload_log": uploads.as_ref().map(|u| json!({
            "uploads": u.uploads.len(),
            "local_deletes": u.deletes.len(),
            "dry_run_skipped": u.dry_run_skipped,
            "bad_lines": u.bad_lines.iter().map(|(n, e)| json!({"line": n, "detail": e})).collect::<Vec<_>>(),
        })),
        "problems": problems,
        "files": checks,
    });
    Ok((doc, if failed == 0 { ExitCode::Success } else { ExitCode::Failure }))
}

/// The human report: a summary table and one line per problem.
pub fn human(doc: &Value) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "manifest verify {}: {} manifests, {} partial files ignored, {} other files ignored\n",
        doc["root"].as_str().unwrap_or(""),
        doc["manifests"],
        doc["partials_ignored"],
        doc["other_files_ignored"]
    ));
    if let Some(u) = doc.get("upload_log").filter(|u| !u.is_null()) {
        s.push_str(&format!(
            "upload log: {} uploads, {} local deletes, {} dry-run records skipped, {} bad lines\n",
            u["uploads"],
            u["local_deletes"],
            u["dry_run_skipped"],
            u["bad_lines"].as_array().map_or(0, Vec::len)
        ));
    }
    s.push_str(&format!("{:<10} {:>8} {:>8}\n", "STATUS", "FILES", "TAILS"));
    for st in STATUSES {
        s.push_str(&format!(
            "{:<10} {:>8} {:>8}\n",
            st,
            doc["summary"]["files"][st].to_string(),
            doc["summary"]["tails"][st].to_string()
        ));
    }
    if let Some(files) = doc["files"].as_array() {
        for f in files.iter().filter(|f| !matches!(f["status"].as_str(), Some("ok" | "offloaded"))) {
            s.push_str(&format!(
                "{:<9} {} {}: {}\n",
                f["status"].as_str().unwrap_or("").to_uppercase(),
                f["kind"].as_str().unwrap_or(""),
                f["path"].as_str().unwrap_or(""),
                f["detail"].as_str().unwrap_or("")
            ));
        }
    }
    for p in doc["problems"].as_array().into_iter().flatten() {
        s.push_str(&format!("PROBLEM   {}\n", p.as_str().unwrap_or("")));
    }
    if let Some(bad) = doc.get("upload_log").and_then(|u| u.get("bad_lines")).and_then(Value::as_array) {
        for b in bad {
            s.push_str(&format!(
                "warning   manifests/uploads.jsonl line {}: {}\n",
                b["line"],
                b["detail"].as_str().unwrap_or("")
            ));
        }
    }
    s.push_str(if doc["ok"] == json!(true) { "RESULT: OK\n" } else { "RESULT: FAIL\n" });
    s
}
