//! Benchmarks of the `recjoin bench` command: a synthetic workload generator and the engine
//! benchmark runner, shared with the Criterion bench so both measure the same path.

pub mod alloc;
pub mod engine;
pub mod workload;
