//! Commands of the `recjoin` binary that run services (as opposed to the library's pure parts).

pub mod bench_broker;
pub mod bench_e2e;
pub mod bench_replay;
pub mod broker;
pub mod generate;
pub mod join;
pub mod replay;
pub mod topics;
pub mod up;
