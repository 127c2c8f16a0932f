//! Small shared helpers: host name, run ids, a non-cryptographic random source for jitter,
//! path-component validation, hex.

use std::sync::atomic::{AtomicU64, Ordering};

/// The machine's host name, reduced to characters safe in a file name (`[A-Za-z0-9._-]`).
/// `PMARCHIVE_HOST` overrides it (useful when several recorders share one archive).
pub fn hostname() -> String {
    let raw = std::env::var("PMARCHIVE_HOST")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default();
    let s: String = raw.trim().chars().map(|c| if is_safe_char(c) { c } else { '_' }).collect();
    let s = s.trim_start_matches('.').to_string();
    if s.is_empty() {
        "unknown-host".to_string()
    } else {
        s
    }
}

fn is_safe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-'
}

/// True when `s` may be used as one path component of the archive: 1–128 characters of
/// `[A-Za-z0-9._-]`, not starting with a dot (so never `.` or `..`). Anything that came from the
/// exchange is checked with this before it becomes part of a path.
pub fn is_safe_component(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.starts_with('.') && s.chars().all(is_safe_char)
}

/// A new run id: `20261124T160133Z-<pid>-<4 hex>`; unique per process start, safe in file names.
pub fn new_run_id() -> String {
    let stamp = crate::clock::fmt_secs(crate::clock::now()).replace(['-', ':'], "");
    format!("{stamp}-{}-{:04x}", std::process::id(), random_u64() & 0xffff)
}

/// A fast non-cryptographic random number (splitmix64 over time, pid and a counter). For jitter only.
pub fn random_u64() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
            ^ ((std::process::id() as u64) << 32);
    let mut z = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(seed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A random fraction in [0, 1).
pub fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Percent-encodes a string for use as one URL path segment or query value (RFC 3986 unreserved
/// characters are kept).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// sha256 (lowercase hex) and byte length of a file, streamed.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<(String, u64)> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex(&h.finalize()), n))
}

/// fsyncs a directory (after a rename or create inside it).
pub fn fsync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes a file atomically with [`AtomicFile`]: readers see the old content or the new, never a
/// torn file, and no temp file is left behind when a step fails (a full disk: ENOSPC).
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let (file, mut f) = AtomicFile::create(path)?;
    f.write_all(bytes)?;
    file.commit(f)
}

/// The one atomic write (`write_atomic`, `pm-normalize --output`, the rotator's recovered tails): a
/// temp file beside the final path, written by the caller, then fsync, rename over the final path,
/// fsync the directory. The temp file is removed when any step fails or the `AtomicFile` is dropped
/// before [`AtomicFile::commit`], so a failure leaves the final path as it was and no temp file.
#[derive(Debug)]
pub struct AtomicFile {
    path: std::path::PathBuf,
    /// None once committed.
    tmp: Option<std::path::PathBuf>,
}

impl AtomicFile {
    /// Creates the directory of `path` and the temp file `.<name>.tmp-<pid>` beside it.
    pub fn create(path: &std::path::Path) -> std::io::Result<(AtomicFile, std::fs::File)> {
        let dir = parent_dir(path);
        std::fs::create_dir_all(dir)?;
        let name =
            path.file_name().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
        let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
        AtomicFile::create_as(path, tmp)
    }

    /// Like [`AtomicFile::create`] with the temp file at `tmp` (in the directory of `path`, which
    /// exists), truncated if it is there.
    pub fn create_as(path: &std::path::Path, tmp: std::path::PathBuf) -> std::io::Result<(AtomicFile, std::fs::File)> {
        let f = std::fs::File::create(&tmp)?;
        Ok((AtomicFile { path: path.to_path_buf(), tmp: Some(tmp) }, f))
    }

    /// Puts `f` (the file `create` returned, written to its end) in place: fsync, rename over the
    /// final path, fsync the directory.
    pub fn commit(mut self, f: std::fs::File) -> std::io::Result<()> {
        let tmp = self.tmp.as_deref().expect("not committed yet");
        f.sync_all()?;
        drop(f);
        std::fs::rename(tmp, &self.path)?;
        self.tmp = None;
        fsync_dir(parent_dir(&self.path))
    }

    /// Removes the temp file (after a failure); the same as dropping it.
    pub fn abandon(self) {}
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// The directory a path is in (`.` for a bare file name).
fn parent_dir(path: &std::path::Path) -> &std::path::Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."))
}

/// True when an I/O error means the filesystem is out of space (ENOSPC) or over quota (EDQUOT).
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        || matches!(e.raw_os_error(), Some(28 | 122))
}

/// The unit tests' random source (xorshift64, deterministic from a non-zero `state`): a number
/// below `n` per call.
#[cfg(test)]
pub(crate) fn test_rand(mut state: u64) -> impl FnMut(usize) -> usize {
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_components() {
        assert!(is_safe_component("btc-updown-5m-1767200400"));
        assert!(is_safe_component("host-1.example_x"));
        assert!(!is_safe_component(""));
        assert!(!is_safe_component(".."));
        assert!(!is_safe_component("."));
        assert!(!is_safe_component("a/b"));
        assert!(!is_safe_component("../etc"));
        assert!(!is_safe_component("a b"));
        assert!(!is_safe_component(&"x".repeat(129)));
    }

    #[test]
    fn run_ids_are_safe_and_distinct() {
        let a = new_run_id();
        let b = new_run_id();
        assert!(is_safe_component(&a), "{a}");
        assert_ne!(a, b);
        // `20261124T160133Z-<pid>-<4 hex>`
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(parts.len(), 3, "{a}");
        let stamp = parts[0].as_bytes();
        assert_eq!((stamp.len(), stamp[8], stamp[15]), (16, b'T', b'Z'), "{a}");
        assert!(stamp.iter().enumerate().all(|(i, c)| i == 8 || i == 15 || c.is_ascii_digit()), "{a}");
        assert_eq!(parts[1], std::process::id().to_string());
        assert!(parts[2].len() == 4 && parts[2].bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
    }

    #[test]
    fn random_unit_in_range() {
        for _ in 0..1000 {
            let x = random_unit();
            assert!((0.0..1.0).contains(&x));
        }
    }

    #[test]
    fn sha256_and_atomic_write() {
        let d = std::env::temp_dir().join(format!("pmarchive-util-{}", std::process::id()));
        let p = d.join("sub/x.json");
        write_atomic(&p, b"abc").unwrap();
        write_atomic(&p, b"abc").unwrap();
        let (h, n) = sha256_file(&p).unwrap();
        assert_eq!(n, 3);
        assert_eq!(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(std::fs::read_dir(d.join("sub")).unwrap().count(), 1, "no temp file left");
        // A failed or abandoned write leaves the old content and no temp file.
        let (file, mut f) = AtomicFile::create(&p).unwrap();
        std::io::Write::write_all(&mut f, b"torn").unwrap();
        drop((file, f));
        assert_eq!(std::fs::read(&p).unwrap(), b"abc");
        assert_eq!(std::fs::read_dir(d.join("sub")).unwrap().count(), 1, "no temp file left after a drop");
        assert!(write_atomic(&d.join("sub/x.json/y"), b"abc").is_err(), "a file is not a directory");
        let (file, f) = AtomicFile::create(&p).unwrap();
        std::fs::remove_file(d.join(format!("sub/.x.json.tmp-{}", std::process::id()))).unwrap();
        assert!(file.commit(f).is_err(), "the temp file vanished: rename fails");
        assert_eq!(std::fs::read(&p).unwrap(), b"abc");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode("btc-updown-5m-1"), "btc-updown-5m-1");
        assert_eq!(percent_encode("a/../b c"), "a%2F..%2Fb%20c");
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
    }
}
