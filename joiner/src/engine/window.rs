//! The join rule of DESIGN.md section 3 for one key: given the feature time and the key's actions
//! in event-time order, which actions are accepted and when the window closes.

use std::ops::Range;

use super::config::WindowsMs;

/// Why a sample closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The 180 s renewal after the last accepted action ran out.
    Idle,
    /// The hard deadline `tF + hard_timeout` was reached with actions.
    HardTimeout,
    /// No action was accepted (a negative).
    NoAction,
}

impl CloseReason {
    /// The value written into the sample's `close_reason`.
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::HardTimeout => "hard_timeout",
            CloseReason::NoAction => "no_action",
        }
    }
}

/// Outcome of the rule over the actions known so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Current deadline `D`; final once the watermark passes it.
    pub(crate) deadline: i64,
    /// Actions (indices into the sorted list) that expired before the feature's time
    /// (`ts + hard_timeout < tF`: they would have expired as orphans before the feature came).
    pub(crate) expired: Range<usize>,
    /// Accepted actions; everything after them has `ts > deadline`.
    pub(crate) accepted: Range<usize>,
    pub(crate) reason: CloseReason,
}

/// Applies the rule. `ts_of(i)` is the event time of the i-th action, sorted ascending.
pub(crate) fn decide(t_f: i64, n: usize, ts_of: impl Fn(usize) -> i64, w: &WindowsMs) -> Decision {
    let hard = t_f + w.hard;
    let mut d = t_f + w.negative;
    // Orphans whose wait (ts + hard_timeout) ended before the feature's time never meet it.
    let mut start = 0;
    while start < n && ts_of(start) + w.hard < t_f {
        start += 1;
    }
    let mut end = start;
    while end < n {
        // Clock skew: an action stamped before the feature counts as at the feature time.
        let e = ts_of(end).max(t_f);
        if e > d {
            break;
        }
        d = hard.min(e + w.idle);
        end += 1;
    }
    let reason = if end == start {
        CloseReason::NoAction
    } else if d == hard {
        CloseReason::HardTimeout
    } else {
        CloseReason::Idle
    };
    Decision {
        deadline: d,
        expired: 0..start,
        accepted: start..end,
        reason,
    }
}
