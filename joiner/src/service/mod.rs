//! The joiner service: Kafka I/O around the pure engine (issue 5, being built).

pub mod tail;
pub mod watermark;
