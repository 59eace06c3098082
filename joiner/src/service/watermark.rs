//! The joiner's event-time watermark (DESIGN.md section 3): per assigned input partition, the
//! largest event time seen minus `max_out_of_orderness`; overall, the minimum over the assigned
//! partitions of both topics. A partition silent for `idle_partition_timeout` is left out: the
//! consumer fetches every assigned partition continuously, so a silent one is caught up; when every partition is idle, the watermark follows the
//! wall clock in live mode (so samples are still emitted when traffic stops) and stays put in
//! replay mode. Pure bookkeeping: the caller passes in times, so tests control the clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::engine::TopicKind;

/// What the watermark knows of one input partition.
#[derive(Debug, Clone, Copy)]
struct PartitionClock {
    max_event_time: Option<i64>,
    last_record: Instant,
    /// The read position reached the high watermark (checked by the caller since the last
    /// record).
    caught_up: bool,
}

/// Event-time progress of the assigned input partitions.
#[derive(Debug, Clone)]
pub struct Watermarks {
    partitions: BTreeMap<(TopicKind, u32), PartitionClock>,
    out_of_orderness_ms: i64,
    idle_after: Duration,
    live: bool,
    current: Option<i64>,
}

impl Watermarks {
    /// A tracker with nothing assigned. `live` lets the wall clock drive the watermark when every
    /// partition is idle.
    pub fn new(out_of_orderness: Duration, idle_after: Duration, live: bool) -> Self {
        Self {
            partitions: BTreeMap::new(),
            out_of_orderness_ms: i64::try_from(out_of_orderness.as_millis()).unwrap_or(i64::MAX),
            idle_after,
            live,
            current: None,
        }
    }

    /// Starts tracking a newly assigned partition (its silence counts from now).
    pub fn assign(&mut self, kind: TopicKind, partition: u32, now: Instant) {
        self.partitions.insert(
            (kind, partition),
            PartitionClock {
                max_event_time: None,
                last_record: now,
                caught_up: false,
            },
        );
    }

    /// Partitions silent for the idle timeout whose lag the caller should check (then report
    /// with [`Watermarks::set_caught_up`]).
    pub fn silent_unconfirmed(&self, now: Instant) -> Vec<(TopicKind, u32)> {
        self.partitions
            .iter()
            .filter(|(_, p)| {
                !p.caught_up && now.saturating_duration_since(p.last_record) >= self.idle_after
            })
            .map(|(k, _)| *k)
            .collect()
    }

    /// Records whether a partition's read position has reached its high watermark.
    pub fn set_caught_up(&mut self, kind: TopicKind, partition: u32, caught_up: bool) {
        if let Some(p) = self.partitions.get_mut(&(kind, partition)) {
            p.caught_up = caught_up;
        }
    }

    /// Forgets every partition (on revocation) and the watermark with them.
    pub fn clear(&mut self) {
        self.partitions.clear();
        self.current = None;
    }

    /// Records that a record with event time `event_time` was read from a partition.
    pub fn observe(
        &mut self,
        kind: TopicKind,
        partition: u32,
        event_time: Option<i64>,
        now: Instant,
    ) {
        if let Some(p) = self.partitions.get_mut(&(kind, partition)) {
            p.last_record = now;
            p.caught_up = false;
            if let Some(t) = event_time {
                p.max_event_time = Some(p.max_event_time.map_or(t, |m| m.max(t)));
            }
        }
    }

    /// The watermark now: never lower than before, `None` until it is known (an active partition
    /// has not yet delivered an event time).
    pub fn compute(&mut self, now: Instant, wall_clock_ms: i64) -> Option<i64> {
        let mut min: Option<i64> = None;
        let mut any_active = false;
        for p in self.partitions.values() {
            let idle =
                p.caught_up && now.saturating_duration_since(p.last_record) >= self.idle_after;
            if idle {
                continue;
            }
            any_active = true;
            match p.max_event_time {
                // An active partition without an event time yet holds the watermark back.
                None => return self.current,
                Some(t) => {
                    let w = t.saturating_sub(self.out_of_orderness_ms);
                    min = Some(min.map_or(w, |m| m.min(w)));
                }
            }
        }
        let candidate = if any_active {
            min
        } else if self.partitions.is_empty() {
            None
        } else if self.live {
            Some(wall_clock_ms.saturating_sub(self.out_of_orderness_ms))
        } else {
            // Replay: idle means read to the end; what each partition reached is final.
            self.partitions
                .values()
                .filter_map(|p| p.max_event_time)
                .map(|t| t.saturating_sub(self.out_of_orderness_ms))
                .min()
        };
        if let Some(c) = candidate {
            self.current = Some(self.current.map_or(c, |cur| cur.max(c)));
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TopicKind::{Action, Feature};

    const OOO: Duration = Duration::from_secs(5);
    const IDLE: Duration = Duration::from_secs(30);

    #[test]
    fn minimum_over_partitions_minus_out_of_orderness() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(OOO, IDLE, true);
        w.assign(Feature, 0, t0);
        w.assign(Action, 0, t0);
        assert_eq!(w.compute(t0, 0), None, "no event time yet");
        w.observe(Feature, 0, Some(100_000), t0);
        assert_eq!(w.compute(t0, 0), None, "actions 0 still unknown");
        w.observe(Action, 0, Some(60_000), t0);
        assert_eq!(w.compute(t0, 0), Some(55_000));
        w.observe(Action, 0, Some(50_000), t0);
        assert_eq!(
            w.compute(t0, 0),
            Some(55_000),
            "max per partition, never backwards"
        );
    }

    #[test]
    fn idle_partitions_are_left_out_and_the_wall_clock_takes_over() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(OOO, IDLE, true);
        w.assign(Feature, 0, t0);
        w.assign(Action, 0, t0);
        w.observe(Action, 0, Some(60_000), t0);
        let later = t0 + Duration::from_secs(20);
        w.observe(Feature, 0, Some(100_000), later);
        assert_eq!(
            w.compute(t0 + IDLE - Duration::from_millis(1), 0),
            Some(55_000),
            "not yet idle"
        );
        assert_eq!(
            w.compute(t0 + IDLE, 0),
            Some(55_000),
            "silent but not known to be caught up: still counted"
        );
        assert_eq!(w.silent_unconfirmed(t0 + IDLE), vec![(Action, 0)]);
        w.set_caught_up(Action, 0, true);
        assert_eq!(
            w.compute(t0 + IDLE, 0),
            Some(95_000),
            "silent, caught-up actions partition left out"
        );
        w.set_caught_up(Feature, 0, true);
        assert_eq!(
            w.compute(later + IDLE, 500_000),
            Some(495_000),
            "all silent: wall clock"
        );
        let mut replay = Watermarks::new(OOO, IDLE, false);
        replay.assign(Feature, 0, t0);
        replay.observe(Feature, 0, Some(100_000), t0);
        replay.set_caught_up(Feature, 0, true);
        assert_eq!(
            replay.compute(t0 + IDLE, 500_000),
            Some(95_000),
            "replay never uses the wall clock"
        );
    }

    #[test]
    fn a_record_wakes_an_idle_partition() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(OOO, IDLE, true);
        w.assign(Feature, 1, t0);
        w.assign(Action, 1, t0);
        w.observe(Feature, 1, Some(10_000), t0);
        w.observe(Action, 1, Some(20_000), t0 + Duration::from_secs(1));
        w.set_caught_up(Feature, 1, true);
        assert_eq!(w.compute(t0 + IDLE, 0), Some(15_000));
        w.observe(Feature, 1, Some(12_000), t0 + IDLE);
        assert_eq!(
            w.compute(t0 + IDLE, 0),
            Some(15_000),
            "monotone even when a slow partition wakes"
        );
    }

    /// The bug the end-to-end test found: right after an assignment (or during a stall) every
    /// partition is silent although the backlog is not read yet; the wall clock must not take
    /// over, or every record still to be read (with event times in the past) would be late.
    #[test]
    fn silence_with_a_backlog_is_not_idleness() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(OOO, IDLE, true);
        w.assign(Feature, 0, t0);
        w.assign(Action, 0, t0);
        assert_eq!(w.compute(t0 + IDLE * 2, 9_000_000), None);
        w.observe(Feature, 0, Some(100_000), t0);
        w.observe(Action, 0, Some(100_000), t0);
        assert_eq!(w.compute(t0 + IDLE * 2, 9_000_000), Some(95_000));
        w.set_caught_up(Feature, 0, true);
        assert_eq!(w.compute(t0 + IDLE * 2, 9_000_000), Some(95_000));
        w.set_caught_up(Action, 0, true);
        assert_eq!(w.compute(t0 + IDLE * 2, 9_000_000), Some(8_995_000));
    }
}
