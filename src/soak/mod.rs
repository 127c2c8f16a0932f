//! The soak harness's records and its report (`soak-report`, docs/SOAK.md).
//!
//! Two logs feed the report beside the archive itself:
//! - the soak venue's log (`pm-venue --log`): one [`VenueLine`] per reply served, per fault injected
//!   and per outage, so that the archive can be reconciled against what the venue really sent;
//! - the supervisor's log (`pipelines/soak.sh`): one [`SupervisorLine`] per event (chain start and
//!   exit, restart, SIGKILL of a stage, disk fill, clock step, offload run).
//!
//! [`report`] reads them, plus the archive's raw files, run manifests and upload manifest, into one
//! typed [`report::Report`]; [`render`] writes it as Markdown and SVG pictures.

pub mod kalshi;
pub mod render;
pub mod report;

use serde::{Deserialize, Serialize};

/// `schema` of every venue log line.
pub const VENUE_SCHEMA: &str = "pmarchive.soak_venue/1";
/// `schema` of every supervisor log line.
pub const SUPERVISOR_SCHEMA: &str = "pmarchive.soak_supervisor/1";

/// One line of the soak venue's log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VenueLine {
    pub schema: String,
    /// `served` (a reply, or a connection closed without one), `fault` (a fault was queued or a
    /// websocket fault applied), `outage` (start/end of a period when every HTTP request fails).
    pub kind: String,
    /// The venue's clock (simulated when the venue runs a simulated clock), RFC 3339 µs.
    pub at_utc: String,
    /// The real wall clock, RFC 3339 µs (what the supervisor's log uses).
    pub real_utc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// HTTP status; absent when the connection was closed without a reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Reply body bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The fault (its name, e.g. `TooMany { retry_after: Some("2") }`, `outage`, `ws_freeze`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// For books served (`/book`, `/books`): the `hash` of every book in the reply, in reply order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hashes: Vec<String>,
    /// For a 200 `/v2/trades` reply: the key (`trades::row_key`) of every row in it, in reply order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trades: Vec<String>,
    /// `/markets/slug/{slug}`: the slug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    /// For an outage: `start` or `end`; for a scheduled fault: what it targets (`/books`, `ws`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One line of the soak supervisor's log (pipelines/soak.sh writes these with printf, its `ev`
/// function; the field names and event words are this type's, tests/soak.rs parses what `ev` writes).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SupervisorLine {
    pub schema: String,
    /// Real wall clock, RFC 3339.
    pub at_utc: String,
    pub event: SupervisorEvent,
    /// `chain_exit`/`offload`: the exit status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rc: Option<i64>,
    /// `kill`: the stage's process name; `clock_step`: the step in seconds; `soak_start`: the mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i64>,
}

/// `event` of a supervisor line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupervisorEvent {
    /// The soak began (`detail`: the mode line).
    SoakStart,
    /// The soak's duration is over (the checks and the report follow).
    SoakEnd,
    /// The chain (pipelines/collect.sh) started (`pid`; `detail`: its simulated clock, if any).
    ChainStart,
    /// The chain exited (`rc`).
    ChainExit,
    /// Waiting before the restart (`detail`: how long), as systemd's `RestartSec`.
    RestartWait,
    /// The chain exited 2 and is not restarted (as `RestartPreventExitStatus=2`).
    NoRestart,
    /// SIGKILL of one stage (`detail`: its process name, `pid`).
    Kill,
    /// The archive's disk was filled / freed again (`detail`: the fill's start offset).
    DiskFullStart,
    DiskFullEnd,
    /// `--disk-full` asked for but no tmpfs could be mounted.
    DiskFullSkipped,
    /// The chain's clock stepped (`detail`: the step in seconds, negative when it steps back).
    ClockStep,
    /// An uploader run (`rc`).
    Offload,
    /// An event word this reader does not know (read, not used).
    #[default]
    #[serde(other)]
    Other,
}
