//! Errors of the storage layer.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use super::batch::BatchError;
use super::producer_state::SequenceError;

/// Why a partition-log operation failed.
#[derive(Debug, Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A produced payload is not a valid v2 record batch (Kafka's CORRUPT_MESSAGE).
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// An idempotent producer's batch is out of sequence or from an old epoch.
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    /// A stored batch failed to decode where its records were needed.
    #[error("stored batch at offset {offset} does not decode: {reason}")]
    CorruptStoredBatch {
        /// Base offset of the batch.
        offset: i64,
        /// What the decoder said.
        reason: String,
    },
    /// The requested offset is outside the log.
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// Offset asked for.
        offset: i64,
        /// Log start offset.
        start: i64,
        /// Log end offset.
        end: i64,
    },
    /// A write or fsync failed earlier; the log refuses writes rather than risk silent loss.
    #[error("log {0} refuses writes after a failed write or fsync")]
    Poisoned(PathBuf),
    /// The log was closed.
    #[error("log {0} is closed")]
    Closed(PathBuf),
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}
