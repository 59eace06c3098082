//! recjoin's built-in broker: a durable, segmented partition log that later layers serve over the
//! Apache Kafka wire protocol.
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod alloc;
pub mod broker;
pub mod group;
pub mod log;
pub mod protocol;
pub mod server;
