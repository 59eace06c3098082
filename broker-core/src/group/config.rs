//! Settings of the group coordinator, named after Kafka's broker configs.

use std::time::Duration;

/// Group coordinator settings; the defaults are Kafka's.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`: shorter session timeouts get INVALID_SESSION_TIMEOUT.
    pub min_session_timeout: Duration,
    /// `group.max.session.timeout.ms`: longer session timeouts get INVALID_SESSION_TIMEOUT.
    pub max_session_timeout: Duration,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits
    /// for more members (extended by each new member, bounded by the rebalance timeout).
    pub initial_rebalance_delay: Duration,
    /// `group.max.size`: members (joined or holding an issued member id) per group.
    pub max_group_size: usize,
    /// `offset.metadata.max.bytes`: longer commit metadata gets OFFSET_METADATA_TOO_LARGE.
    pub max_offset_metadata_bytes: usize,
    /// The offsets log is compacted into a snapshot once it grows past this many bytes.
    pub compact_log_bytes: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            min_session_timeout: Duration::from_secs(6),
            max_session_timeout: Duration::from_secs(30 * 60),
            initial_rebalance_delay: Duration::from_secs(3),
            max_group_size: usize::MAX,
            max_offset_metadata_bytes: 4096,
            compact_log_bytes: 16 * 1024 * 1024,
        }
    }
}
