//! The joiner service: Kafka I/O around the pure engine — a consumer-group member that reads the
//! inputs, keeps the event-time watermark, produces samples exactly once, and commits low-water
//! offsets (DESIGN.md sections 3 and 4).

pub mod member;
pub mod metrics;
pub mod output;
pub mod tail;
pub mod topology;
pub mod watermark;
