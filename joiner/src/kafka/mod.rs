//! librdkafka calls the `rdkafka` crate does not wrap, and the copying of record values, for the
//! hot read paths.

pub mod batch;
pub mod payloads;
