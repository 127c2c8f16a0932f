//! Exit codes, the one error type of the tools, and the `main` wrapper every binary uses.
//!
//! Exit codes — one rule for every tool (AGENTS.md §7; the table in tests/help.rs checks it):
//! - 0: success. Also when the downstream pipe closed (EPIPE on stdout, including for `--help`,
//!   `--version` and reports): a closed stdout is a normal end for a filter.
//! - 1: the tool ran to its end but reports a failure or a finding: damaged input (a line that is not
//!   JSON / not a usable record, a line longer than [`crate::jsonl::MAX_LINE`], a truncated or corrupt
//!   gzip, a read error in the middle of an input), a failed check (`manifest verify` mismatch,
//!   stale archive, hash mismatch), a venue that did not answer. What was readable was processed.
//! - 2: the tool could not do its job at all: bad arguments or configuration, an input that cannot be
//!   opened or read from its first byte (missing, permission denied, a directory — stdin included), an
//!   output that cannot be written (other than a closed pipe).
//! - Never 101 (panic) or 134 (abort): bad input is counted, not fatal.

use std::fmt;
use std::io;
use std::str::FromStr;

/// What a tool exits with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    Success,
    Failure,
    Error,
}

impl From<ExitCode> for i32 {
    fn from(c: ExitCode) -> i32 {
        match c {
            ExitCode::Success => 0,
            ExitCode::Failure => 1,
            ExitCode::Error => 2,
        }
    }
}

impl ExitCode {
    /// The worse of two outcomes (Error > Failure > Success).
    pub fn merge(self, other: ExitCode) -> ExitCode {
        std::cmp::max_by_key(self, other, |c| i32::from(*c))
    }
}

/// The error type of every tool.
#[derive(Debug)]
pub enum Error {
    /// Bad arguments or configuration: message, exit 2.
    Usage(String),
    /// I/O failure; a broken pipe is turned into a clean exit by [`main`].
    Io(io::Error),
    /// Anything else that stops the tool: message, exit 2.
    Msg(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) | Error::Msg(m) => f.write_str(m),
            Error::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<lexopt::Error> for Error {
    fn from(e: lexopt::Error) -> Self {
        Error::Usage(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        if e.is_io() {
            Error::Io(e.into())
        } else {
            Error::Msg(format!("JSON error: {e}"))
        }
    }
}

/// Shorthand for a usage error.
pub fn usage<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Usage(msg.into()))
}

/// True for the errors that mean "the reader of our stdout went away".
pub fn is_broken_pipe(e: &Error) -> bool {
    matches!(e, Error::Io(io) if io.kind() == io::ErrorKind::BrokenPipe)
}

/// Runs a tool's body and exits the process with its exit code. Prints errors as `<tool>: <message>`.
pub fn main(tool: &str, body: impl FnOnce() -> Result<ExitCode>) -> ! {
    let code = match body() {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::Success,
        Err(Error::Usage(m)) => {
            eprintln!("{tool}: {m}");
            eprintln!("Try '{tool} --help' for more information.");
            ExitCode::Error
        }
        Err(e) => {
            eprintln!("{tool}: {e}");
            ExitCode::Error
        }
    };
    std::process::exit(code.into())
}

/// Parses the value of an option (`--flag value`) into `T`, with a usage error naming the flag.
pub fn value<T: FromStr>(parser: &mut lexopt::Parser, flag: &str) -> Result<T>
where
    T::Err: fmt::Display,
{
    let raw = parser.value()?;
    let s = raw.to_str().ok_or_else(|| Error::Usage(format!("{flag}: value is not valid UTF-8")))?;
    s.parse::<T>().map_err(|e| Error::Usage(format!("{flag}: invalid value '{s}': {e}")))
}

/// Parses the value of an option into an integer in `lo..=hi` (`{flag}: must be lo..hi, got v`).
pub fn value_in<T>(parser: &mut lexopt::Parser, flag: &str, lo: T, hi: T) -> Result<T>
where
    T: FromStr + PartialOrd + fmt::Display + Copy,
    T::Err: fmt::Display,
{
    let v: T = value(parser, flag)?;
    if !(lo..=hi).contains(&v) {
        return usage(format!("{flag}: must be {lo}..{hi}, got {v}"));
    }
    Ok(v)
}

/// Parses a positive number of seconds (fractions allowed) into a Duration.
pub fn seconds(parser: &mut lexopt::Parser, flag: &str) -> Result<std::time::Duration> {
    let v: f64 = value(parser, flag)?;
    if !(v.is_finite() && v > 0.0 && v < 1e9) {
        return usage(format!("{flag}: must be a positive number of seconds, got {v}"));
    }
    Ok(std::time::Duration::from_secs_f64(v))
}

/// Parses a number of seconds ≥ 0 (fractions allowed) into a Duration.
pub fn non_negative_seconds(parser: &mut lexopt::Parser, flag: &str) -> Result<std::time::Duration> {
    let v: f64 = value(parser, flag)?;
    if !(v.is_finite() && (0.0..1e9).contains(&v)) {
        return usage(format!("{flag}: must be a number of seconds ≥ 0, got {v}"));
    }
    Ok(std::time::Duration::from_secs_f64(v))
}

/// Writes `text` to stdout and flushes it. Unlike `print!` it never panics: a closed stdout is
/// an [`Error::Io`] broken pipe, which [`main`] turns into exit 0.
pub fn print(text: &str) -> Result<()> {
    use io::Write;
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Prints the usage text and exits 0 (`--help`).
pub fn help(usage_text: &str) -> Result<ExitCode> {
    print(usage_text.trim_start())?;
    Ok(ExitCode::Success)
}

/// stdin, for a tool that reads it. A directory on stdin (`tool < dir`) cannot be read at all: that is
/// exit 2 with one line, before anything starts (reading it would fail at once with EISDIR).
pub fn stdin() -> Result<io::Stdin> {
    use std::os::fd::AsFd;
    let s = io::stdin();
    if let Ok(fd) = s.as_fd().try_clone_to_owned() {
        if std::fs::File::from(fd).metadata().is_ok_and(|m| m.is_dir()) {
            return Err(Error::Msg("stdin is a directory, not a stream of lines".into()));
        }
    }
    Ok(s)
}

/// Prints `<tool> <version>` and exits 0 (`--version`).
pub fn version(tool: &str) -> Result<ExitCode> {
    print(&format!("{tool} {}\n", crate::VERSION))?;
    Ok(ExitCode::Success)
}

/// An argument the tool does not know.
pub fn unexpected<T>(arg: lexopt::Arg<'_>) -> Result<T> {
    Err(Error::Usage(arg.unexpected().to_string()))
}

/// Validates a base URL given on the command line: http(s) scheme, no trailing slash kept.
pub fn base_url(parser: &mut lexopt::Parser, flag: &str) -> Result<String> {
    let s: String = value(parser, flag)?;
    check_base_url(&s, flag)
}

/// Opens `--raw-out`-style output: an optional file, created if missing and appended to (never
/// truncated: raw replies already written stay). An unopenable path is a usage error (exit 2).
pub fn append_out(path: Option<&str>, flag: &str) -> Result<Option<Box<dyn io::Write + Send>>> {
    let Some(path) = path else { return Ok(None) };
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::Usage(format!("{flag} {path}: {e}")))?;
    Ok(Some(Box::new(f)))
}

pub fn check_base_url(s: &str, flag: &str) -> Result<String> {
    let ok =
        (s.starts_with("http://") || s.starts_with("https://") || s.starts_with("ws://") || s.starts_with("wss://"))
            && !s.contains(char::is_whitespace)
            && !s.contains('?')
            && !s.contains('#');
    if !ok {
        return usage(format!("{flag}: not a base URL: '{s}' (expected e.g. https://host[:port][/prefix])"));
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// The options the stdin-fed polling tools (pm-books, pm-trades) share, as their usage texts say:
/// `--timeout`, `--retries` (1..10), `--duration`, `--user-agent`, `--check-args`.
#[derive(Debug, Default)]
pub struct PollArgs {
    pub http: crate::http::HttpConfig,
    pub timeout: Option<std::time::Duration>,
    pub duration: Option<std::time::Duration>,
    pub check_args: bool,
}

impl PollArgs {
    /// The long options [`PollArgs::take`] handles.
    pub const OPTIONS: [&'static str; 5] = ["timeout", "retries", "duration", "user-agent", "check-args"];

    /// Takes one of [`PollArgs::OPTIONS`] (`name` without the dashes) and its value.
    pub fn take(&mut self, parser: &mut lexopt::Parser, name: &str) -> Result<()> {
        match name {
            "timeout" => self.timeout = Some(seconds(parser, "--timeout")?),
            "retries" => self.http.max_attempts = value_in(parser, "--retries", 1, 10)?,
            "duration" => self.duration = Some(seconds(parser, "--duration")?),
            "user-agent" => self.http.user_agent = value(parser, "--user-agent")?,
            "check-args" => self.check_args = true,
            _ => unreachable!("not one of PollArgs::OPTIONS: {name}"),
        }
        Ok(())
    }

    /// Checks `--interval` (at least 10 ms) and returns the HTTP configuration (the per-request
    /// timeout `--timeout`, else `default_timeout`; the connect timeout never longer), or None
    /// after `--check-args`.
    pub fn finish(
        self,
        interval: std::time::Duration,
        default_timeout: std::time::Duration,
    ) -> Result<Option<crate::http::HttpConfig>> {
        if interval < std::time::Duration::from_millis(10) {
            return usage("--interval: at least 0.01 s");
        }
        let mut hc = self.http;
        hc.call_timeout = self.timeout.unwrap_or(default_timeout);
        hc.connect_timeout = hc.connect_timeout.min(hc.call_timeout);
        Ok((!self.check_args).then_some(hc))
    }
}

/// The options the market tools share (pm-markets, kalshi-markets): `--once` | `--watch SECS`,
/// `--now`, `--resolve-every`, `--raw-out`, `--timeout`, `--user-agent`, `--check-args`.
#[derive(Default)]
pub struct WatchArgs {
    pub once: bool,
    pub watch: Option<std::time::Duration>,
    pub now: Option<time::OffsetDateTime>,
    /// None: the tool's default.
    pub resolve_every: Option<std::time::Duration>,
    pub raw_out: Option<String>,
    pub http: crate::http::HttpConfig,
    pub check_args: bool,
}

impl WatchArgs {
    /// The long options [`WatchArgs::take`] handles.
    pub const OPTIONS: [&'static str; 8] =
        ["once", "watch", "now", "resolve-every", "raw-out", "timeout", "user-agent", "check-args"];

    /// Takes one of [`WatchArgs::OPTIONS`] (`name` without the dashes) and its value.
    pub fn take(&mut self, parser: &mut lexopt::Parser, name: &str) -> Result<()> {
        match name {
            "once" => self.once = true,
            "watch" => self.watch = Some(seconds(parser, "--watch")?),
            "now" => {
                let s: String = value(parser, "--now")?;
                self.now = Some(
                    crate::clock::parse_rfc3339(&s)
                        .ok_or_else(|| Error::Usage(format!("--now: not an RFC 3339 time: '{s}'")))?,
                );
            }
            "resolve-every" => self.resolve_every = Some(seconds(parser, "--resolve-every")?),
            "raw-out" => self.raw_out = Some(value(parser, "--raw-out")?),
            "timeout" => self.http.call_timeout = seconds(parser, "--timeout")?,
            "user-agent" => self.http.user_agent = value(parser, "--user-agent")?,
            "check-args" => self.check_args = true,
            _ => unreachable!("not one of WatchArgs::OPTIONS: {name}"),
        }
        Ok(())
    }

    /// Exactly one of `--once` and `--watch`; `--now` with `--once` only.
    pub fn check(&self) -> Result<()> {
        if self.once == self.watch.is_some() {
            return usage("give exactly one of --once or --watch SECS");
        }
        if self.now.is_some() && self.watch.is_some() {
            return usage("--now only works with --once");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_numbers_and_merge() {
        assert_eq!(i32::from(ExitCode::Success), 0);
        assert_eq!(i32::from(ExitCode::Failure), 1);
        assert_eq!(i32::from(ExitCode::Error), 2);
        assert_eq!(ExitCode::Success.merge(ExitCode::Failure), ExitCode::Failure);
        assert_eq!(ExitCode::Error.merge(ExitCode::Failure), ExitCode::Error);
        assert_eq!(ExitCode::Success.merge(ExitCode::Success), ExitCode::Success);
    }

    #[test]
    fn broken_pipe_is_recognised() {
        let e = Error::Io(io::Error::new(io::ErrorKind::BrokenPipe, "x"));
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&Error::Msg("x".into())));
    }

    #[test]
    fn base_urls() {
        assert_eq!(check_base_url("https://clob.polymarket.com/", "--x").unwrap(), "https://clob.polymarket.com");
        assert_eq!(check_base_url("http://127.0.0.1:8080/p", "--x").unwrap(), "http://127.0.0.1:8080/p");
        assert!(check_base_url("clob.polymarket.com", "--x").is_err());
        assert!(check_base_url("https://h/x?y=1", "--x").is_err());
    }
}
