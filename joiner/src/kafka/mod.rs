//! librdkafka calls the `rdkafka` crate does not wrap, for the hot read paths.

pub mod batch;
