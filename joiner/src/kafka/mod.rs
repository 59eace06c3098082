//! librdkafka calls the `rdkafka` crate does not wrap, and the copying of record values, for the
//! hot read paths; and a minimal produce-only client of our own for the traffic generator.

pub mod batch;
pub mod payloads;
pub mod wire_producer;
