//! Benchmarks of the `recjoin bench` command: a synthetic workload generator and the engine
//! benchmark runner, shared with the Criterion bench so both measure the same path.

pub mod alloc;
pub mod engine;
pub mod workload;

/// A measured number for a bench's JSON line: `decimals` places, or `null` when it was not
/// measured.
pub(crate) fn json_number(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "null".to_owned(), |v| format!("{v:.decimals$}"))
}
