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
    let t = crate::clock::now();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{}-{:04x}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        std::process::id(),
        random_u64() & 0xffff
    )
}

/// A fast non-cryptographic random number (splitmix64 over time, pid and a counter). For jitter only.
pub fn random_u64() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
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
    }

    #[test]
    fn random_unit_in_range() {
        for _ in 0..1000 {
            let x = random_unit();
            assert!((0.0..1.0).contains(&x));
        }
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode("btc-updown-5m-1"), "btc-updown-5m-1");
        assert_eq!(percent_encode("a/../b c"), "a%2F..%2Fb%20c");
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
    }
}
