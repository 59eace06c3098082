//! Per-log settings, with Kafka's topic-level names for overrides.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// When acknowledged data reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Acknowledgements that ask for it wait for an fsync (group commit), a background flusher
    /// syncs the rest every `flush_ms`, and consumers see only fsynced data.
    Fsync,
    /// The page cache is trusted, as Kafka does on one node; `flush.messages` / `flush.ms` force
    /// fsyncs, and consumers see everything written.
    Os,
}

/// Settings of one partition log. Defaults follow Kafka's, except durability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll the active segment before it would exceed this many bytes (`segment.bytes`).
    pub segment_bytes: u64,
    /// Roll the active segment when it is this old (`segment.ms`); `None` never.
    pub segment_ms: Option<i64>,
    /// Delete segments whose newest record is older than this (`retention.ms`); `None` keeps all.
    pub retention_ms: Option<i64>,
    /// Delete the oldest segments while the log stays at or above this size (`retention.bytes`).
    pub retention_bytes: Option<u64>,
    /// Who makes writes durable.
    pub durability: Durability,
    /// Fsync after this many records since the last fsync (`flush.messages`).
    pub flush_messages: Option<u64>,
    /// Fsync data older than this in the background (`flush.ms`).
    pub flush_ms: Option<i64>,
    /// Bytes between sparse index entries (`index.interval.bytes`).
    pub index_interval_bytes: u64,
    /// Largest record batch accepted, in bytes (`max.message.bytes`).
    pub max_message_bytes: usize,
    /// After each fsync, drop from the page cache the active segment's data more than this many
    /// bytes behind its end — and, while consumers read the partition (a fetch in the last
    /// 10 s), only data some fetch has already read. `None` leaves the cache to the kernel, as
    /// Kafka does. Not a Kafka setting.
    ///
    /// Why: consumers that keep up (the joiner) read what was written seconds ago, so bytes they
    /// have read serve only other readers far behind, who can read them from the disk. Unbounded,
    /// the page cache grows by everything written until memory is full; every new page is memory
    /// the process has not touched before, which in a VM can be memory the host has taken back
    /// (free page reporting) and must supply again on first touch. Bounded, the kernel recycles
    /// the same recently freed pages. Measured with `recjoin bench e2e`: unbounded, two 30 s steps
    /// at 250k records/s wrote ~9 GB of page cache and the second step fell to 193k records/s.
    /// With 16 MiB per partition, a consumer that fell ~1 s behind (a feature partition takes
    /// ~15 MB/s at 275k) read from the disk and fell further behind: the third step failed.
    /// Bytes not yet read now stay cached, so a consumer that falls behind catches up from
    /// memory.
    pub page_cache_bytes: Option<u64>,
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Default of [`LogConfig::page_cache_bytes`]: a few seconds of a busy partition's writes, so a
/// consumer that falls a few seconds behind still reads from memory.
pub const DEFAULT_PAGE_CACHE_BYTES: u64 = 64 << 20;

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * DAY_MS),
            retention_ms: Some(7 * DAY_MS),
            retention_bytes: None,
            durability: Durability::Fsync,
            flush_messages: None,
            flush_ms: Some(5),
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            page_cache_bytes: Some(DEFAULT_PAGE_CACHE_BYTES),
        }
    }
}

/// A topic-level setting that is unknown or out of range.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid topic config {key}={value}: {reason}")]
pub struct ConfigError {
    /// The setting's name.
    pub key: String,
    /// The value given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Largest batch a topic may allow: one fetch response carries at most 64 MiB per partition.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Largest segment: positions in the offset index are 32-bit.
const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;

impl LogConfig {
    /// Applies Kafka topic-level overrides (`retention.ms`, `segment.bytes`, …) to these settings.
    /// Unknown names and bad values are errors, naming the key.
    pub fn with_overrides(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut c = self.clone();
        for (key, value) in overrides {
            let err = |reason| ConfigError {
                key: key.clone(),
                value: value.clone(),
                reason,
            };
            let int = || {
                value
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| err("not an integer"))
            };
            // -1 means "unlimited" in Kafka's integer settings.
            let optional = |v: i64| if v < 0 { None } else { Some(v) };
            match key.as_str() {
                "segment.bytes" => {
                    let v = u64::try_from(int()?).map_err(|_| err("must be positive"))?;
                    if !(14..=MAX_SEGMENT_BYTES).contains(&v) {
                        return Err(err("must be between 14 and 2147483647"));
                    }
                    c.segment_bytes = v;
                }
                "segment.ms" => c.segment_ms = optional(int()?).filter(|v| *v > 0),
                "retention.ms" => c.retention_ms = optional(int()?),
                "retention.bytes" => c.retention_bytes = optional(int()?).map(i64::unsigned_abs),
                "flush.messages" => c.flush_messages = optional(int()?).map(i64::unsigned_abs),
                "flush.ms" => c.flush_ms = optional(int()?),
                "index.interval.bytes" => {
                    c.index_interval_bytes =
                        u64::try_from(int()?).map_err(|_| err("must not be negative"))?;
                }
                "max.message.bytes" => {
                    let v = usize::try_from(int()?).map_err(|_| err("must not be negative"))?;
                    if v > MAX_MESSAGE_BYTES {
                        return Err(err("must be at most 67108864"));
                    }
                    c.max_message_bytes = v;
                }
                "cleanup.policy" if value == "delete" => {}
                "cleanup.policy" => return Err(err("only \"delete\" is supported")),
                _ => return Err(err("unknown topic config")),
            }
        }
        Ok(c)
    }

    /// These settings under their Kafka names, for DescribeConfigs.
    pub fn kafka_entries(&self) -> Vec<(&'static str, String)> {
        let opt = |v: Option<i64>| v.unwrap_or(-1).to_string();
        let opt_u = |v: Option<u64>| v.map_or_else(|| "-1".to_owned(), |v| v.to_string());
        vec![
            ("cleanup.policy", "delete".to_owned()),
            ("segment.bytes", self.segment_bytes.to_string()),
            ("segment.ms", opt(self.segment_ms)),
            ("retention.ms", opt(self.retention_ms)),
            ("retention.bytes", opt_u(self.retention_bytes)),
            ("flush.messages", opt_u(self.flush_messages)),
            ("flush.ms", opt(self.flush_ms)),
            (
                "index.interval.bytes",
                self.index_interval_bytes.to_string(),
            ),
            ("max.message.bytes", self.max_message_bytes.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_and_reject_unknown_keys() {
        let base = LogConfig::default();
        let mut o = BTreeMap::new();
        o.insert("retention.ms".to_owned(), "-1".to_owned());
        o.insert("segment.bytes".to_owned(), "1048576".to_owned());
        let c = base.with_overrides(&o).unwrap();
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.segment_bytes, 1 << 20);
        o.insert("retention.msx".to_owned(), "1".to_owned());
        let e = base.with_overrides(&o).unwrap_err();
        assert_eq!(e.key, "retention.msx");
        let mut bad = BTreeMap::new();
        bad.insert("segment.bytes".to_owned(), "abc".to_owned());
        assert!(base.with_overrides(&bad).is_err());
    }
}
