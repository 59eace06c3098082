//! Errors of the group coordinator's storage (the protocol errors are Kafka error codes, carried
//! as [`kafka_protocol::ResponseError`]).

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Why opening, writing or closing the committed-offsets store failed.
#[derive(Debug, Error)]
pub enum GroupError {
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
    /// The offsets snapshot (written via temp file, fsync and rename, so never torn) does not
    /// decode: it was damaged after it was written.
    #[error("offsets snapshot {path} is corrupt at byte {position}: {reason}")]
    CorruptSnapshot {
        /// The snapshot file.
        path: PathBuf,
        /// Byte position of the damaged entry.
        position: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A write or fsync failed earlier; the store refuses writes rather than risk silent loss.
    #[error("offsets store refuses writes after a failed write or fsync")]
    Poisoned,
    /// The store was closed.
    #[error("offsets store is closed")]
    Closed,
    /// A blocking storage task did not finish (it panicked or the runtime is shutting down).
    #[error("offsets store task failed: {0}")]
    Task(String),
}

impl GroupError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}
