//! recjoin's joiner: the event-time feature/action join and the `recjoin` command.
//!
//! The join itself lives in [`engine`], a pure state machine with no I/O and no clock, so that the
//! live service, replay and the tests all drive the very same code. [`bench`] holds the synthetic
//! workload and the `recjoin bench engine` runner.

pub mod bench;
pub mod cli;
pub mod config;
pub mod decimal;
pub mod engine;
pub mod kafka;
pub mod metrics;
pub mod partitioner;
pub mod replay;
pub mod service;
pub mod traffic;

/// Wall-clock milliseconds since the epoch (the one clock of the service layer).
pub fn now_ms() -> i64 {
    broker_core::log::now_ms()
}
