//! librdkafka's batch consume call, `rd_kafka_consume_batch_queue`, which the `rdkafka` crate does
//! not wrap.
//!
//! `BaseConsumer::poll` hands out one message per call: every message costs a queue lock, an
//! event object, an `Arc` and two clock reads in the calling thread, so at a few million records
//! a second the benchmark would measure that wrapper rather than the broker. The batch call takes
//! up to `slots` messages under one lock — what librdkafka's own `rdkafka_performance -B` does.

use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Reads messages from a consumer's queue in batches.
///
/// Borrows the consumer, so the queue handle (a reference librdkafka counts) never outlives the
/// client that owns the queue.
pub(super) struct BatchReader<'c> {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    slots: Vec<*mut rdsys::rd_kafka_message_t>,
    _consumer: &'c BaseConsumer,
}

impl std::fmt::Debug for BatchReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchReader")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl<'c> BatchReader<'c> {
    /// A reader taking up to `slots` messages per call from the consumer queue (the consumer
    /// must have a `group.id`, which gives it one).
    pub(super) fn new(consumer: &'c BaseConsumer, slots: usize) -> anyhow::Result<Self> {
        // SAFETY: the client pointer is valid while `consumer` is borrowed; the call returns a new
        // reference to the consumer queue (or null without a group), released in `Drop`.
        let queue = unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        let queue = NonNull::new(queue)
            .ok_or_else(|| anyhow::anyhow!("the consumer has no queue (no group.id?)"))?;
        Ok(Self {
            queue,
            slots: vec![std::ptr::null_mut(); slots.max(1)],
            _consumer: consumer,
        })
    }

    /// Waits up to `timeout` for at most `max` messages and passes each payload length to
    /// `on_message`; returns how many messages were read. A message carrying an error ends the
    /// call with it.
    pub(super) fn read(
        &mut self,
        timeout: Duration,
        max: usize,
        mut on_message: impl FnMut(usize),
    ) -> Result<usize, KafkaError> {
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let max = max.min(self.slots.len());
        // SAFETY: `queue` is a live queue reference and `slots` has room for `max` message
        // pointers, which the call fills from the front.
        let n = unsafe {
            rdsys::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                timeout_ms,
                self.slots.as_mut_ptr(),
                max,
            )
        };
        let n = usize::try_from(n).map_err(|_| {
            // SAFETY: reads librdkafka's thread-local last error; no pointers involved.
            let code = unsafe { rdsys::rd_kafka_last_error() };
            KafkaError::MessageConsumption(RDKafkaErrorCode::from(code))
        })?;
        let mut error = None;
        for &message in &self.slots[..n] {
            // SAFETY: the first `n` slots hold messages the call handed over to us; each is read
            // once and then destroyed exactly once.
            unsafe {
                let m = &*message;
                if m.err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    on_message(m.len);
                } else if error.is_none() {
                    error = Some(KafkaError::MessageConsumption(m.err.into()));
                }
                rdsys::rd_kafka_message_destroy(message);
            }
        }
        error.map_or(Ok(n), Err)
    }
}

impl Drop for BatchReader<'_> {
    fn drop(&mut self) {
        // SAFETY: releases the reference taken in `new`, once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}
