//! The joiner's metrics (DESIGN.md section 6): names, help text, units and bucket bounds, and the
//! handles the member loop updates.
//!
//! Handles are registered when the member starts, or once per new label value (an input
//! partition, a dead-letter reason), so the loop does not allocate for metrics; record counts are
//! added once per run of records from one partition, not per record. Labels are bounded — topic,
//! partition, close reason, reason codes — never join keys.

use std::collections::HashMap;

use memchr::memmem;
use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use rdkafka::statistics::Statistics;

use crate::config::TopicNames;
use crate::engine::{
    CloseReason, Counters, DeadLetter, Engine, InputRecord, LateReason, LateRecord, Sample,
    TopicKind,
};

/// Bucket bounds (seconds) of `recjoin_joiner_join_latency_seconds`: from a few seconds to past
/// the defaults' 180 s idle renewal (positives close after their last action plus 180 s) and
/// 30 min hard and negative deadlines, with detail around both.
pub const JOIN_LATENCY_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 180.0, 190.0, 210.0, 240.0, 300.0, 450.0, 600.0, 900.0,
    1200.0, 1500.0, 1800.0, 1810.0, 1830.0, 1860.0, 1920.0, 2100.0, 2700.0, 3600.0, 7200.0,
];

/// Bucket bounds (seconds) of `recjoin_joiner_emit_delay_seconds`: a live joiner emits about
/// `max_out_of_orderness` (5 s) after a window ends; minutes mean it is catching up.
pub const EMIT_DELAY_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];

/// Bucket bounds of `recjoin_joiner_actions_per_sample` (0: a negative).
pub const ACTIONS_PER_SAMPLE_BUCKETS: &[f64] =
    &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0, 50.0];

/// Every joiner histogram with its bucket bounds, for the exporter.
pub const HISTOGRAMS: [(&str, &[f64]); 3] = [
    ("recjoin_joiner_join_latency_seconds", JOIN_LATENCY_BUCKETS),
    ("recjoin_joiner_emit_delay_seconds", EMIT_DELAY_BUCKETS),
    (
        "recjoin_joiner_actions_per_sample",
        ACTIONS_PER_SAMPLE_BUCKETS,
    ),
];

/// How often librdkafka reports the statistics that consumer lag is read from, unless the
/// `[kafka.properties]` set `statistics.interval.ms`.
pub const STATISTICS_INTERVAL_MS: &str = "5000";

/// Registers help text and units; call once after installing a recorder.
pub fn describe() {
    describe_counter!(
        "recjoin_joiner_records_in_total",
        "Input records read, by topic and partition (records re-read after a restart or rebalance count again)."
    );
    describe_counter!(
        "recjoin_joiner_samples_out_total",
        "Samples produced, by close reason (idle, hard_timeout, no_action)."
    );
    describe_counter!(
        "recjoin_joiner_samples_suppressed_total",
        "Samples not produced because the output partition already held them (after a restart or rebalance)."
    );
    describe_histogram!(
        "recjoin_joiner_actions_per_sample",
        "Actions joined into each produced sample (0 for a negative)."
    );
    describe_histogram!(
        "recjoin_joiner_join_latency_seconds",
        Unit::Seconds,
        "Wall time of a sample's emission minus its feature's event time."
    );
    describe_histogram!(
        "recjoin_joiner_emit_delay_seconds",
        Unit::Seconds,
        "Wall time of a sample's emission minus its window end (how far behind the window rule the joiner runs)."
    );
    describe_gauge!(
        "recjoin_joiner_pending_keys",
        "Keys with a feature whose window is open."
    );
    describe_gauge!(
        "recjoin_joiner_orphan_keys",
        "Keys holding only actions, waiting for their feature."
    );
    describe_gauge!(
        "recjoin_joiner_closed_keys",
        "Keys whose window closed, remembered to recognise actions after close."
    );
    describe_gauge!(
        "recjoin_joiner_pending_bytes",
        Unit::Bytes,
        "Input bytes of the features of the keys whose window is open."
    );
    describe_gauge!(
        "recjoin_joiner_watermark_seconds",
        Unit::Seconds,
        "The event-time watermark, in seconds since the epoch."
    );
    describe_gauge!(
        "recjoin_joiner_watermark_lag_seconds",
        Unit::Seconds,
        "Wall clock minus the event-time watermark."
    );
    describe_gauge!(
        "recjoin_joiner_consumer_lag",
        "Records of an input partition not yet read by this member (high watermark minus read position), by topic and partition; 0 for partitions it does not own."
    );
    describe_counter!(
        "recjoin_joiner_late_records_total",
        "Valid records not joined because they came too late, by reason (behind_watermark, after_close)."
    );
    describe_counter!(
        "recjoin_joiner_expired_actions_total",
        "Actions whose feature never arrived within the hard timeout."
    );
    describe_counter!(
        "recjoin_joiner_duplicates_total",
        "Duplicate records ignored, by kind (feature: a second feature for a key; action: same type and time)."
    );
    describe_counter!(
        "recjoin_joiner_dead_letters_total",
        "Records written to the dead-letter topic, by reason."
    );
    describe_counter!(
        "recjoin_joiner_clock_skew_actions_total",
        "Accepted actions stamped before their feature (counted as at the feature's time)."
    );
    describe_counter!(
        "recjoin_joiner_negatives_sampled_out_total",
        "Negatives dropped by negative_sample_rate."
    );
    describe_counter!(
        "recjoin_joiner_partition_mismatch_total",
        "Records of a key read from another partition number than its first record (producers not partitioning by key)."
    );
    describe_gauge!(
        "recjoin_joiner_assigned_partitions",
        "Input partition numbers assigned to this member (each covers both input topics)."
    );
    describe_counter!(
        "recjoin_joiner_rebalances_total",
        "Partition assignments received from the group."
    );
    describe_counter!(
        "recjoin_joiner_commits_total",
        "Low-water offset commits, by result (ok, failed)."
    );
    describe_gauge!(
        "recjoin_joiner_last_commit_timestamp_seconds",
        Unit::Seconds,
        "Wall time of the last successful offset commit, in seconds since the epoch."
    );
}

/// Pre-registered handles of one member, updated from its poll loop.
#[derive(Debug)]
pub struct MemberMetrics {
    topics: TopicNames,
    records_in: HashMap<(TopicKind, u32), Counter>,
    samples_out: [Counter; 3],
    samples_suppressed: Counter,
    actions_per_sample: Histogram,
    join_latency: Histogram,
    emit_delay: Histogram,
    pending_keys: Gauge,
    orphan_keys: Gauge,
    closed_keys: Gauge,
    pending_bytes: Gauge,
    watermark: Gauge,
    watermark_lag: Gauge,
    late: [Counter; 2],
    expired: Counter,
    duplicate_features: Counter,
    duplicate_actions: Counter,
    dead_letters: Vec<(&'static str, Counter)>,
    clock_skew: Counter,
    negatives_sampled_out: Counter,
    partition_mismatch: Counter,
    commits_ok: Counter,
    commits_failed: Counter,
    last_commit: Gauge,
    /// The engine's counters when last looked at (they restart with every new engine).
    last: Counters,
}

const CLOSE_REASONS: [CloseReason; 3] = [
    CloseReason::Idle,
    CloseReason::HardTimeout,
    CloseReason::NoAction,
];

fn close_index(reason: CloseReason) -> usize {
    match reason {
        CloseReason::Idle => 0,
        CloseReason::HardTimeout => 1,
        CloseReason::NoAction => 2,
    }
}

fn late_index(reason: LateReason) -> usize {
    match reason {
        LateReason::BehindWatermark => 0,
        LateReason::AfterClose => 1,
    }
}

/// Milliseconds to seconds, for durations and timestamps.
fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

impl MemberMetrics {
    /// Registers the member's metrics (no-ops when no recorder is installed). Series with a
    /// fixed label set start at zero, so rates and alerts see them before the first event.
    pub fn new(topics: &TopicNames) -> Self {
        Self {
            topics: topics.clone(),
            records_in: HashMap::new(),
            samples_out: CLOSE_REASONS.map(
                |r| counter!("recjoin_joiner_samples_out_total", "close_reason" => r.as_str()),
            ),
            samples_suppressed: counter!("recjoin_joiner_samples_suppressed_total"),
            actions_per_sample: histogram!("recjoin_joiner_actions_per_sample"),
            join_latency: histogram!("recjoin_joiner_join_latency_seconds"),
            emit_delay: histogram!("recjoin_joiner_emit_delay_seconds"),
            pending_keys: gauge!("recjoin_joiner_pending_keys"),
            orphan_keys: gauge!("recjoin_joiner_orphan_keys"),
            closed_keys: gauge!("recjoin_joiner_closed_keys"),
            pending_bytes: gauge!("recjoin_joiner_pending_bytes"),
            watermark: gauge!("recjoin_joiner_watermark_seconds"),
            watermark_lag: gauge!("recjoin_joiner_watermark_lag_seconds"),
            late: [
                counter!("recjoin_joiner_late_records_total", "reason" => "behind_watermark"),
                counter!("recjoin_joiner_late_records_total", "reason" => "after_close"),
            ],
            expired: counter!("recjoin_joiner_expired_actions_total"),
            duplicate_features: counter!("recjoin_joiner_duplicates_total", "kind" => "feature"),
            duplicate_actions: counter!("recjoin_joiner_duplicates_total", "kind" => "action"),
            dead_letters: Vec::new(),
            clock_skew: counter!("recjoin_joiner_clock_skew_actions_total"),
            negatives_sampled_out: counter!("recjoin_joiner_negatives_sampled_out_total"),
            partition_mismatch: counter!("recjoin_joiner_partition_mismatch_total"),
            commits_ok: counter!("recjoin_joiner_commits_total", "result" => "ok"),
            commits_failed: counter!("recjoin_joiner_commits_total", "result" => "failed"),
            last_commit: gauge!("recjoin_joiner_last_commit_timestamp_seconds"),
            last: Counters::default(),
        }
    }

    /// Counts a batch of records read, by topic and partition.
    pub fn records_read(&mut self, batch: &[InputRecord]) {
        let mut i = 0;
        while i < batch.len() {
            let source = (batch[i].source.kind, batch[i].source.partition);
            let run = batch[i..]
                .iter()
                .take_while(|r| (r.source.kind, r.source.partition) == source)
                .count();
            let topics = &self.topics;
            self.records_in
                .entry(source)
                .or_insert_with(|| {
                    let topic = match source.0 {
                        TopicKind::Feature => topics.features.clone(),
                        TopicKind::Action => topics.actions.clone(),
                    };
                    counter!(
                        "recjoin_joiner_records_in_total",
                        "topic" => topic,
                        "partition" => source.1.to_string()
                    )
                })
                .increment(run as u64);
            i += run;
        }
    }

    /// Records a sample produced at wall time `now_ms`.
    pub fn sample(&self, s: &Sample, now_ms: i64) {
        self.samples_out[close_index(s.close_reason)].increment(1);
        self.join_latency
            .record(seconds(now_ms.saturating_sub(s.feature_ts)).max(0.0));
        self.emit_delay
            .record(seconds(now_ms.saturating_sub(s.window_end)).max(0.0));
        let actions = match s.close_reason {
            CloseReason::NoAction => 0,
            CloseReason::Idle | CloseReason::HardTimeout => action_count(&s.bytes),
        };
        self.actions_per_sample.record(actions as f64);
    }

    /// Records a sample not produced because an earlier owner had written it.
    pub fn sample_suppressed(&self) {
        self.samples_suppressed.increment(1);
    }

    /// Records a dead letter by its reason code.
    pub fn dead_letter(&mut self, d: &DeadLetter) {
        let code = d.reason.code();
        match self.dead_letters.iter().find(|(c, _)| *c == code) {
            Some((_, c)) => c.increment(1),
            None => {
                let c = counter!("recjoin_joiner_dead_letters_total", "reason" => code);
                c.increment(1);
                self.dead_letters.push((code, c));
            }
        }
    }

    /// Records a late record by its reason.
    pub fn late(&self, l: &LateRecord) {
        self.late[late_index(l.reason)].increment(1);
    }

    /// Takes the engine's counters (as increments since last time) and state sizes, and the
    /// watermark against wall time `now_ms`.
    pub fn engine(&mut self, engine: &Engine, now_ms: i64) {
        let c = engine.counters();
        let last = &self.last;
        let add = |counter: &Counter, now: u64, before: u64| {
            if now > before {
                counter.increment(now - before);
            }
        };
        add(&self.expired, c.expired_orphans, last.expired_orphans);
        add(
            &self.duplicate_features,
            c.duplicate_features,
            last.duplicate_features,
        );
        add(
            &self.duplicate_actions,
            c.duplicate_actions,
            last.duplicate_actions,
        );
        add(
            &self.clock_skew,
            c.clock_skew_clamps,
            last.clock_skew_clamps,
        );
        add(
            &self.negatives_sampled_out,
            c.negatives_sampled_out,
            last.negatives_sampled_out,
        );
        add(
            &self.partition_mismatch,
            c.partition_mismatch,
            last.partition_mismatch,
        );
        self.last.clone_from(c);
        let s = engine.stats();
        self.pending_keys.set(s.pending_keys as f64);
        self.orphan_keys.set(s.orphan_keys as f64);
        self.closed_keys.set(s.closed_keys as f64);
        self.pending_bytes.set(s.pending_feature_bytes as f64);
        let w = engine.watermark();
        if w > 0 {
            self.watermark.set(seconds(w));
            self.watermark_lag.set(seconds(now_ms.saturating_sub(w)));
        }
    }

    /// The engine was replaced by a fresh one (its counters start again from zero).
    pub fn engine_replaced(&mut self) {
        self.last = Counters::default();
    }

    /// Records the outcome of an offset commit at wall time `now_ms`.
    pub fn committed(&self, ok: bool, now_ms: i64) {
        if ok {
            self.commits_ok.increment(1);
            self.last_commit.set(seconds(now_ms));
        } else {
            self.commits_failed.increment(1);
        }
    }
}

/// Records a new assignment of `partitions` partition numbers.
pub fn assigned(partitions: usize) {
    counter!("recjoin_joiner_rebalances_total").increment(1);
    gauge!("recjoin_joiner_assigned_partitions").set(partitions as f64);
}

/// Sets `recjoin_joiner_consumer_lag` of every input partition from librdkafka's statistics:
/// the high watermark minus the next offset to read (the committed offset before the first
/// record), and 0 for partitions this member does not own, so that sums over members count each
/// partition once.
pub fn consumer_lag(stats: &Statistics) {
    for (name, topic) in &stats.topics {
        for partition in topic.partitions.values() {
            if partition.partition < 0 {
                continue; // librdkafka's internal "unassigned" partition
            }
            let position = if partition.app_offset >= 0 {
                partition.app_offset
            } else {
                partition.committed_offset
            };
            let lag = if !partition.desired {
                0
            } else if partition.hi_offset >= 0 && position >= 0 {
                (partition.hi_offset - position).max(0)
            } else {
                continue;
            };
            gauge!(
                "recjoin_joiner_consumer_lag",
                "topic" => name.clone(),
                "partition" => partition.partition.to_string()
            )
            .set(lag as f64);
        }
    }
}

/// Number of entries in a sample's `actions` array. Exact without parsing: the array is the last
/// `,"actions":[` of the sample (later fields hold only escaped strings and numbers, and the
/// opaque `features` come before it), and each entry starts with `{"type":"`, which cannot occur
/// inside an escaped string.
pub fn action_count(sample: &[u8]) -> usize {
    let Some(start) = memmem::rfind(sample, b",\"actions\":[") else {
        return 0;
    };
    memmem::find_iter(&sample[start..], b"{\"type\":\"").count()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::engine::{JoinConfig, Output, Source};

    fn record(kind: TopicKind, offset: u64, json: &str) -> InputRecord {
        InputRecord {
            source: Source {
                kind,
                partition: 0,
                offset,
            },
            timestamp: None,
            value: Bytes::copy_from_slice(json.as_bytes()),
        }
    }

    /// The count agrees with the engine's own samples, including features whose opaque payload
    /// mimics an actions array.
    #[test]
    fn action_count_matches_engine_samples() {
        let mut engine = Engine::new(JoinConfig::default()).expect("default config");
        let mut out = Output::default();
        let t = 1_732_150_000_000_i64;
        let tricky =
            r#"{"actions":[{"type":"click","ts":1}],"x":",\"actions\":[{\"type\":\"a\"}"}"#;
        engine.push(
            record(
                TopicKind::Feature,
                0,
                &format!(r#"{{"impression_id":"a","ts":{t},"features":{tricky}}}"#),
            ),
            &mut out,
        );
        engine.push(
            record(
                TopicKind::Feature,
                1,
                &format!(r#"{{"impression_id":"b","ts":{t},"features":{tricky}}}"#),
            ),
            &mut out,
        );
        for (i, ty) in ["click", "like", "dwell"].iter().enumerate() {
            let ts = t + 1000 * (i as i64 + 1);
            engine.push(
                record(
                    TopicKind::Action,
                    i as u64,
                    &format!(r#"{{"impression_id":"a","type":"{ty}","ts":{ts},"value":3}}"#),
                ),
                &mut out,
            );
        }
        engine.advance_watermark(i64::MAX, &mut out);
        let counts: Vec<(String, usize)> = out
            .samples
            .iter()
            .map(|s| {
                (
                    String::from_utf8_lossy(&s.key).into_owned(),
                    action_count(&s.bytes),
                )
            })
            .collect();
        assert_eq!(counts, [("a".to_owned(), 3), ("b".to_owned(), 0)]);
        assert_eq!(action_count(b"not a sample"), 0);
    }
}
