//! Tracking windows, shared by `pm-books` and `pm-stream`: when a market starts and stops being
//! collected, in one vocabulary, and the typed `ctx` of the `track` and `gap` lines they write
//! (docs/DATA_CONTRACT.md).
//!
//! A market is tracked from `lead` before its window start until `grace` after its window end. The
//! clock can step by hours (NTP, VM resume), so "now" is read twice ([`Now`]: the wall clock and
//! [`clock::steady`], which follows the monotonic clock) and each decision errs on the side of
//! collecting:
//! - tracking **starts** when either reading has reached window start − lead;
//! - tracking **stops** by the clock only when both readings have passed window end + grace
//!   ([`Reason::GraceElapsed`]). A wall clock stepped forward stops nothing; a wall clock stepped
//!   back does not keep a market whose window truly passed for long either, because the venue's own
//!   evidence stops it ([`Reason::BookGone`], [`Reason::Closed`], judged "after the window end" when
//!   either reading is past it).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::clock;
use crate::polymarket::market::{Family, Market, Token};

/// Both readings of "now" (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// The wall clock ([`clock::now`]).
    pub wall: OffsetDateTime,
    /// The wall clock as the monotonic clock sees it ([`clock::steady`]).
    pub steady: OffsetDateTime,
}

impl Now {
    pub fn read() -> Now {
        Now { wall: clock::now(), steady: clock::steady() }
    }

    /// True when either reading is at or after `t` (used to start, and for "after the window end").
    pub fn reached(&self, t: OffsetDateTime) -> bool {
        self.wall >= t || self.steady >= t
    }

    /// True when both readings are at or after `t` (used to stop by the clock).
    pub fn passed(&self, t: OffsetDateTime) -> bool {
        self.wall >= t && self.steady >= t
    }
}

/// Where a market's tracking window stands at a given [`Now`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Before window start − lead.
    Before,
    /// Inside window start − lead .. window end + grace.
    Open,
    /// Window end + grace has passed on both readings.
    Over,
}

/// One market's tracking window: `[start − lead, end + grace)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The market's window (Gamma `eventStartTime`..`endDate`).
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
    /// Tracking starts here (start − lead).
    pub from: OffsetDateTime,
    /// Tracking ends here (end + grace).
    pub until: OffsetDateTime,
}

impl Window {
    /// The tracking window of a market record; None when its window times do not parse.
    pub fn of(m: &Market, lead: std::time::Duration, grace: std::time::Duration) -> Option<Window> {
        Some(Window::new(m.window_start()?, m.window_end()?, lead, grace))
    }

    /// The tracking window of a market window `start..end` (any venue).
    pub fn new(
        start: OffsetDateTime,
        end: OffsetDateTime,
        lead: std::time::Duration,
        grace: std::time::Duration,
    ) -> Window {
        Window {
            start,
            end,
            from: start - time::Duration::seconds_f64(lead.as_secs_f64()),
            until: end + time::Duration::seconds_f64(grace.as_secs_f64()),
        }
    }

    pub fn phase(&self, now: &Now) -> Phase {
        if now.passed(self.until) {
            Phase::Over
        } else if now.reached(self.from) {
            Phase::Open
        } else {
            Phase::Before
        }
    }

    /// True once the market's window end is reached on either reading (venue evidence such as a
    /// missing book counts from then on).
    pub fn ended(&self, now: &Now) -> bool {
        now.reached(self.end)
    }
}

/// `ctx.action` of a track line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Start,
    Stop,
}

/// `ctx.reason` of a track line: the one vocabulary of `pm-books` and `pm-stream`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// start: the tracking window is open (window start − lead reached on either reading), also when
    /// a record of a market that is still live arrives after it had stopped. (Read also as
    /// `window_lead`, pm-stream's word before the vocabularies were one.)
    #[serde(alias = "window_lead")]
    Window,
    /// stop: window end + grace passed on both the wall clock and the monotonic clock. (Read also
    /// as `window_grace_over`, pm-stream's former word.)
    #[serde(alias = "window_grace_over")]
    GraceElapsed,
    /// stop: after the window end, the token(s) were missing from consecutive successful replies
    /// (pm-books).
    BookGone,
    /// stop: a market record says the venue closed the market (Gamma `closed: true`).
    Closed,
    /// stop: a new record of the market lists other token ids (the new ones start).
    TokensChanged,
    /// stop at the end of the run: SIGTERM/SIGINT.
    Signal,
    /// stop at the end of the run: `--duration` reached.
    Duration,
    /// The run ended with the input (only when nothing is left to track, so no track line carries
    /// it; the summary uses the same word).
    InputDone,
}

/// The `ctx` of a `track` line (`kind: "track"`), written by pm-books and pm-stream.
/// `tokens` is always `[{token_id, outcome}]` (the tokens that start or stop); the lists of ids in
/// other lines are `token_ids`, so that every `ctx` key keeps one JSON type across lines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackCtx {
    pub action: Action,
    pub reason: Reason,
    pub slug: String,
    pub condition_id: String,
    pub family: Option<Family>,
    pub tokens: Vec<Token>,
    pub window_start_utc: String,
    pub window_end_utc: String,
    /// pm-books: the slot it happened in.
    #[serde(flatten)]
    pub poll: PollSlot,
    /// pm-stream: the stream name (`ws_market`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// pm-trades, on the stop after the final sweep: whether the sweep completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_sweep: Option<Sweep>,
}

/// `ctx.final_sweep` of pm-trades' stop line after a market's final sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sweep {
    /// Both passes (`taker_only=false`, then `true`) reached the end of the market's feed.
    Complete,
    /// The sweep failed [`crate::polymarket::trades::FINAL_TRIES`] times; what was fetched is in the raw.
    Failed,
}

/// `ctx.walk` of pm-trades' lines: which walk of the Data API trade feed a page or gap belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Walk {
    /// A cadence poll (the stop rule applies).
    Poll,
    /// The final sweep, `taker_only=false`, to the end of the feed.
    Final,
    /// The final sweep's taker pass, `taker_only=true`, to the end of the feed.
    FinalTaker,
}

impl Walk {
    /// The `taker_only` query parameter of its requests.
    pub fn taker_only(self) -> bool {
        self == Walk::FinalTaker
    }
}

impl TrackCtx {
    pub fn new(action: Action, reason: Reason, m: &Market, tokens: Vec<Token>) -> TrackCtx {
        TrackCtx {
            action,
            reason,
            slug: m.slug.clone(),
            condition_id: m.condition_id.clone(),
            family: m.family,
            tokens,
            window_start_utc: m.window_start_utc.clone(),
            window_end_utc: m.window_end_utc.clone(),
            poll: PollSlot::default(),
            stream: None,
            final_sweep: None,
        }
    }
}

/// `ctx.gap` of a gap line (`kind: "gap"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapKind {
    /// A token asked for is absent from a 200 reply (`token_id`, `slug`, `outcome`).
    MissingToken,
    /// No usable reply for a batch within its slot (`token_ids`, `batch`/`batches` when batched).
    FailedRequest,
    /// Slots never started because an earlier one overran (`from_slot`, `to_slot`, `count`,
    /// `first_due_at_utc`).
    MissedSlots,
    /// A slot not polled because the venue asked us to back off (`token_ids`, `backoff_s`).
    Backoff,
    /// A stdin line that is not a usable market record (`line`).
    BadInput,
    /// pm-trades: a page said `has_more` but gave no usable `next_cursor`, so the rest of the walk
    /// could not be fetched.
    CursorUnfollowable,
}

impl GapKind {
    pub fn name(self) -> &'static str {
        match self {
            GapKind::MissingToken => "missing_token",
            GapKind::FailedRequest => "failed_request",
            GapKind::MissedSlots => "missed_slots",
            GapKind::Backoff => "backoff",
            GapKind::BadInput => "bad_input",
            GapKind::CursorUnfollowable => "cursor_unfollowable",
        }
    }
}

/// The `ctx` of a gap line: `gap` plus the fields of that kind (see [`GapKind`]); pm-books adds the
/// slot, its due time and the endpoint to every one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GapCtx {
    pub gap: GapKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<String>>,
    /// kalshi-books, kalshi-trades: the Kalshi market ticker concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batches: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_slot: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_slot: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_due_at_utc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// pm-trades: the markets of the walk or slot concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_ids: Option<Vec<String>>,
    /// pm-trades, kalshi-trades: the walk and its page (1-based) where a walk broke off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walk: Option<Walk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// pm-books and pm-trades: the slot where the gap was noticed.
    #[serde(flatten)]
    pub poll: PollSlot,
}

/// pm-books' part of its track and gap lines: the slot, that slot's due time and the endpoint
/// polled (every raw line names the endpoint it is about). Empty (no keys) for pm-stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PollSlot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at_utc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
}

impl GapCtx {
    /// A gap of this kind with no other field set.
    pub fn new(gap: GapKind) -> GapCtx {
        GapCtx {
            gap,
            token_id: None,
            slug: None,
            outcome: None,
            token_ids: None,
            ticker: None,
            batch: None,
            batches: None,
            backoff_s: None,
            from_slot: None,
            to_slot: None,
            count: None,
            first_due_at_utc: None,
            line: None,
            condition_ids: None,
            walk: None,
            page: None,
            poll: PollSlot::default(),
        }
    }

    /// The missed_slots gap of slots `from..=to` (never started: an earlier slot overran), the
    /// first of them due at `first_due_at_utc`.
    pub fn missed_slots(from: u64, to: u64, first_due_at_utc: String) -> GapCtx {
        GapCtx {
            from_slot: Some(from),
            to_slot: Some(to),
            count: Some(to - from + 1),
            first_due_at_utc: Some(first_due_at_utc),
            ..GapCtx::new(GapKind::MissedSlots)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn w() -> Window {
        Window {
            start: datetime!(2026-08-22 16:00 UTC),
            end: datetime!(2026-08-22 20:00 UTC),
            from: datetime!(2026-08-22 15:59 UTC),
            until: datetime!(2026-08-22 20:02 UTC),
        }
    }

    fn at(wall: OffsetDateTime, steady: OffsetDateTime) -> Now {
        Now { wall, steady }
    }

    #[test]
    fn a_clock_step_either_way_never_ends_an_open_window() {
        let inside = datetime!(2026-08-22 17:00 UTC);
        assert_eq!(w().phase(&at(inside, inside)), Phase::Open);
        // Wall clock stepped +3 h (past end + grace); the monotonic reading is still inside.
        assert_eq!(w().phase(&at(inside + time::Duration::hours(3), inside)), Phase::Open);
        // Stepped −3 h: before the lead on the wall clock, inside on the monotonic one.
        assert_eq!(w().phase(&at(inside - time::Duration::hours(3), inside)), Phase::Open);
        // Truly over: both past end + grace.
        let over = datetime!(2026-08-22 20:02 UTC);
        assert_eq!(w().phase(&at(over, over)), Phase::Over);
        // A wall clock stepped back keeps it open by the clock, but the window end counts as reached
        // (venue evidence such as book_gone may stop it).
        let back = at(over - time::Duration::hours(3), over);
        assert_eq!(w().phase(&back), Phase::Open);
        assert!(w().ended(&back));
        // Not yet started on either reading.
        let early = datetime!(2026-08-22 15:58 UTC);
        assert_eq!(w().phase(&at(early, early)), Phase::Before);
        assert_eq!(w().phase(&at(early + time::Duration::hours(3), early)), Phase::Open, "starts early, not late");
    }

    #[test]
    fn reasons_and_gap_kinds_have_one_spelling() {
        let all = [
            (Reason::Window, "window"),
            (Reason::GraceElapsed, "grace_elapsed"),
            (Reason::BookGone, "book_gone"),
            (Reason::Closed, "closed"),
            (Reason::TokensChanged, "tokens_changed"),
            (Reason::Signal, "signal"),
            (Reason::Duration, "duration"),
            (Reason::InputDone, "input_done"),
        ];
        for (r, s) in all {
            assert_eq!(serde_json::to_value(r).unwrap(), s);
            assert_eq!(serde_json::from_value::<Reason>(s.into()).unwrap(), r);
        }
        for g in [
            GapKind::MissingToken,
            GapKind::FailedRequest,
            GapKind::MissedSlots,
            GapKind::Backoff,
            GapKind::BadInput,
            GapKind::CursorUnfollowable,
        ] {
            assert_eq!(serde_json::to_value(g).unwrap(), g.name());
        }
        for (w, s) in [(Walk::Poll, "poll"), (Walk::Final, "final"), (Walk::FinalTaker, "final_taker")] {
            assert_eq!(serde_json::to_value(w).unwrap(), s);
        }
        for (x, s) in [(Sweep::Complete, "complete"), (Sweep::Failed, "failed")] {
            assert_eq!(serde_json::to_value(x).unwrap(), s);
        }
        let mut c = GapCtx::new(GapKind::BadInput);
        c.line = Some(3);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v.to_string(), r#"{"gap":"bad_input","line":3}"#);
        assert_eq!(serde_json::from_value::<GapCtx>(v).unwrap(), c);
    }
}
