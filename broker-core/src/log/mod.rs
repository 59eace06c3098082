//! The durable partition log (DESIGN.md section 5): segments of v2 record batches stored as
//! produced, sparse offset and time indexes, roll and retention, fsync policies with group commit,
//! crash recovery, and the on-disk topic registry.

pub mod batch;
pub mod config;
pub mod error;
pub mod index;
pub mod manager;
pub mod partition_log;
pub mod producer_state;
pub mod retention;
pub mod segment;

pub use config::{DEFAULT_PAGE_CACHE_BYTES, Durability, LogConfig};
pub use error::LogError;
pub use manager::{BackgroundIntervals, LogManager, StorageError, Topic, TopicMeta, now_ms};
pub use partition_log::{AppendInfo, FileSlice, LogRead, PartitionLog, RetentionOutcome};
