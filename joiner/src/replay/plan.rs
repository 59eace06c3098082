//! What a replay reads: the event-time range asked for, the bounds of the input that can affect
//! the samples of that range, and the offsets that hold it in each input partition.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::engine::TopicKind;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Parses a time given on the command line: RFC 3339 (`2026-11-21T10:00:00Z`,
/// `2026-11-21T11:00:00+01:00`) or epoch milliseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{s:?} is neither RFC 3339 nor epoch milliseconds: {e}"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|e| e.to_string())
}

/// Formats epoch milliseconds as RFC 3339 (UTC), for progress and reports.
pub fn format_time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// The samples wanted, `[from, to)` in feature event time, and the windows that bound which
/// input records can change them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// First feature time included (epoch ms).
    pub from: i64,
    /// First feature time excluded (epoch ms).
    pub to: i64,
}

impl TimeRange {
    /// Whether a sample with this feature time belongs to the range.
    pub fn contains(&self, feature_ts: i64) -> bool {
        (self.from..self.to).contains(&feature_ts)
    }
}

/// The event-time bounds of the input read for a range.
///
/// Features are read from `from - lookback` (not just `from`), where the lookback is the hard
/// timeout plus how long a closed key is remembered: a key's earlier feature decides whether a
/// later one is a duplicate, so a replay must see the features the live joiner saw before the
/// range. Actions are read from there too (an action may precede its feature's time by clock skew
/// and waits as an orphan) up to `to + action_horizon` (every action that can join a feature of
/// the range has `ts <= feature_ts + hard < to + hard`).
///
/// Reading starts at the offset `ListOffsets` gives for the lower bound minus the
/// out-of-orderness allowance, by record timestamp (CreateTime, which a producer sets at or after
/// the event time; a record stamped before its event time by more than `max_out_of_orderness`
/// could be missed). It stops at the end offset seen at the start, or once the partition's event
/// time passes the upper bound plus the out-of-orderness allowance (nothing later can be below
/// the bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBounds {
    /// Record timestamp to start every partition at.
    pub start_ts: i64,
    /// Event time after which a feature partition is done.
    pub features_until: i64,
    /// Event time after which an action partition is done.
    pub actions_until: i64,
    /// Out-of-orderness allowance (ms).
    pub slack_ms: i64,
}

impl ReadBounds {
    /// Bounds for a replay of `range`: input read from `lookback` before it, actions for
    /// `action_horizon` past it.
    pub fn new(
        range: TimeRange,
        lookback: Duration,
        action_horizon: Duration,
        out_of_orderness: Duration,
    ) -> Self {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
        let slack_ms = ms(out_of_orderness);
        Self {
            start_ts: range
                .from
                .saturating_sub(ms(lookback))
                .saturating_sub(slack_ms),
            features_until: range.to,
            actions_until: range.to.saturating_add(ms(action_horizon)),
            slack_ms,
        }
    }

    /// The event time after which a partition of this topic is done.
    pub fn until(&self, kind: TopicKind) -> i64 {
        match kind {
            TopicKind::Feature => self.features_until,
            TopicKind::Action => self.actions_until,
        }
    }
}

/// The offsets one input partition is read between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    /// Feature or action topic.
    pub kind: TopicKind,
    /// Its topic name.
    pub topic: String,
    /// Partition number (the same for both topics of a co-partitioned pair).
    pub partition: u32,
    /// First offset to read.
    pub start: i64,
    /// End offset when the replay began (exclusive).
    pub end: i64,
}

impl PartitionPlan {
    /// Records between the start and end offsets.
    pub fn records(&self) -> u64 {
        u64::try_from(self.end - self.start).unwrap_or(0)
    }
}

/// Start and end offsets of every partition of both input topics, found through ListOffsets
/// (by timestamp for the start, the high watermark for the end). Partitions with nothing to
/// read are left out.
pub fn partition_plans(
    consumer: &BaseConsumer,
    topics: [(TopicKind, &str); 2],
    bounds: &ReadBounds,
) -> anyhow::Result<Vec<PartitionPlan>> {
    let mut counts = Vec::new();
    for (_, topic) in topics {
        let md = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
        let n = md
            .topics()
            .first()
            .filter(|t| t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        anyhow::ensure!(n > 0, "input topic {topic} does not exist");
        counts.push(n);
    }
    anyhow::ensure!(
        counts[0] == counts[1],
        "{} has {} partitions but {} has {}: replay needs co-partitioned inputs",
        topics[0].1,
        counts[0],
        topics[1].1,
        counts[1]
    );
    let mut query = TopicPartitionList::new();
    for (_, topic) in topics {
        for p in 0..counts[0] {
            query.add_partition_offset(
                topic,
                i32::try_from(p)?,
                Offset::Offset(bounds.start_ts),
            )?;
        }
    }
    let starts = consumer.offsets_for_times(query, TIMEOUT)?;
    let mut plans = Vec::new();
    for (kind, topic) in topics {
        for p in 0..counts[0] {
            let partition = i32::try_from(p)?;
            let (low, high) = consumer.fetch_watermarks(topic, partition, TIMEOUT)?;
            let start = match starts.find_partition(topic, partition).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o.max(low),
                // No record at or after the start time.
                Some(Offset::End) => high,
                other => anyhow::bail!("ListOffsets for {topic}/{partition} gave {other:?}"),
            };
            if start < high {
                plans.push(PartitionPlan {
                    kind,
                    topic: topic.to_owned(),
                    partition: u32::try_from(partition)?,
                    start,
                    end: high,
                });
            }
        }
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_or_epoch_ms() {
        assert_eq!(parse_time("1732150000123"), Ok(1_732_150_000_123));
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(parse_time("1970-01-01T01:00:01.5+01:00"), Ok(1500));
        assert!(parse_time("yesterday").is_err());
        assert_eq!(format_time(1500), "1970-01-01T00:00:01.5Z");
    }

    #[test]
    fn bounds_cover_every_input_that_can_change_the_range() {
        let range = TimeRange {
            from: 10_000_000,
            to: 20_000_000,
        };
        let b = ReadBounds::new(
            range,
            Duration::from_secs(1800),
            Duration::from_secs(1800),
            Duration::from_secs(5),
        );
        assert_eq!(b.start_ts, 10_000_000 - 1_800_000 - 5000);
        assert_eq!(b.until(TopicKind::Feature), 20_000_000);
        assert_eq!(b.until(TopicKind::Action), 21_800_000);
        assert!(range.contains(10_000_000) && !range.contains(20_000_000));
    }
}
