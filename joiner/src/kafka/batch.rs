//! librdkafka's batch consume call, `rd_kafka_consume_batch_queue`, which the `rdkafka` crate does
//! not wrap.
//!
//! `BaseConsumer::poll` (and `PartitionQueue::poll`) hand out one message per call: every message
//! costs an event object, an `Arc` clone and release, and two clock reads in the calling thread,
//! so at a few million records a second a reader measures that wrapper rather than the broker.
//! The batch call takes up to `max` messages in one call — what librdkafka's own
//! `rdkafka_performance -B` does. Messages are lent to a callback one at a time, as borrowed
//! slices of librdkafka's buffers, and destroyed when the callback returns: nothing is allocated
//! per message on this side.
//!
//! A consumer-group member cannot batch-read the consumer's own queue: rust-rdkafka forwards the
//! main queue there and serves rebalances as events in `BaseConsumer::poll`, while the batch call
//! would handle a rebalance itself (without a rebalance callback, as an unassign). A member
//! [splits](split_partition) each partition off before it is assigned and
//! [forwards](BatchQueue::forward_partition) it to a [queue of its own](BatchQueue::new), which
//! carries records only, and keeps polling the consumer for the events.

use std::ffi::CString;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// A librdkafka queue read in batches: the consumer's queue, or one partition's queue split off
/// from it.
///
/// Borrows the consumer, so the queue handle (a reference librdkafka counts) never outlives the
/// client that owns the queue:
///
/// ```compile_fail
/// # use rdkafka::consumer::BaseConsumer;
/// # use joiner::kafka::batch::BatchQueue;
/// # fn f(consumer: BaseConsumer) -> anyhow::Result<()> {
/// let queue = BatchQueue::consumer(&consumer, 10)?;
/// drop(consumer);
/// drop(queue);
/// # Ok(())
/// # }
/// ```
pub struct BatchQueue<'c> {
    client: NonNull<rdsys::rd_kafka_t>,
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    slots: Vec<*mut rdsys::rd_kafka_message_t>,
    _consumer: PhantomData<&'c ()>,
}

impl std::fmt::Debug for BatchQueue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchQueue")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

/// One message of a batch, lent for the duration of a callback: its slices point into
/// librdkafka's buffers, which are released once the callback returns (the lifetime `'b` cannot
/// be named outside the callback, so they cannot be kept).
///
/// ```compile_fail
/// # fn f(queue: &mut joiner::kafka::batch::BatchQueue<'_>) {
/// let mut kept: &[u8] = &[];
/// queue.read(std::time::Duration::ZERO, 1, |m| kept = m.payload()).ok();
/// # let _ = kept;
/// # }
/// ```
#[derive(Clone, Copy)]
pub struct BatchMessage<'b> {
    raw: &'b rdsys::rd_kafka_message_t,
}

impl std::fmt::Debug for BatchMessage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchMessage")
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .field("len", &self.raw.len)
            .finish_non_exhaustive()
    }
}

impl<'b> BatchMessage<'b> {
    /// The record key, `None` for a null key.
    pub fn key(&self) -> Option<&'b [u8]> {
        if self.raw.key.is_null() {
            return None;
        }
        // SAFETY: librdkafka's key pointer is valid for `key_len` bytes until the message is
        // destroyed, which happens only after the callback borrowing `'b` returns.
        Some(unsafe { std::slice::from_raw_parts(self.raw.key.cast::<u8>(), self.raw.key_len) })
    }

    /// The record value (empty for a null value).
    pub fn payload(&self) -> &'b [u8] {
        if self.raw.payload.is_null() {
            return &[];
        }
        // SAFETY: as for the key: valid for `len` bytes until the message is destroyed, after
        // the callback.
        unsafe { std::slice::from_raw_parts(self.raw.payload.cast::<u8>(), self.raw.len) }
    }

    /// The record timestamp in epoch milliseconds (create or log-append time), `None` when the
    /// record has none.
    pub fn timestamp(&self) -> Option<i64> {
        let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the message is live (borrowed); the call only reads it and writes `kind`.
        let t = unsafe { rdsys::rd_kafka_message_timestamp(self.raw, &mut kind) };
        (t != -1 && kind != rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE)
            .then_some(t)
    }

    /// The topic it was read from (empty if its name is not UTF-8).
    pub fn topic(&self) -> &'b str {
        // SAFETY: the message holds a reference to its topic handle until it is destroyed, after
        // the callback; the name is a NUL-terminated string owned by that handle.
        let name = unsafe { std::ffi::CStr::from_ptr(rdsys::rd_kafka_topic_name(self.raw.rkt)) };
        name.to_str().unwrap_or_default()
    }

    /// The partition it was read from.
    pub fn partition(&self) -> i32 {
        self.raw.partition
    }

    /// Its offset in the partition.
    pub fn offset(&self) -> i64 {
        self.raw.offset
    }
}

/// Detaches one partition's fetch queue from the consumer's queue: its records wait in the
/// partition's own queue, in order, until [`BatchQueue::forward_partition`] moves them on. Call it
/// before the partition is assigned (e.g. in `ConsumerContext::pre_rebalance`), every time it is:
/// librdkafka forwards a newly assigned partition to the consumer's queue unless the application
/// has set its forwarding, and it drops the forwarding when the partition is unassigned.
pub fn split_partition<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> anyhow::Result<()> {
    // Forwarding to null only stops the partition queue from forwarding (the partition keeps its
    // queue and this setting).
    forward_partition_to(
        client_ptr(consumer)?,
        topic,
        partition,
        std::ptr::null_mut(),
    )
}

/// Sets where the fetch queue of `topic`/`partition` forwards its records: to `to`, or nowhere
/// (null) so that they wait in the partition's queue.
fn forward_partition_to(
    client: NonNull<rdsys::rd_kafka_t>,
    topic: &str,
    partition: i32,
    to: *mut rdsys::rd_kafka_queue_t,
) -> anyhow::Result<()> {
    let source = partition_queue(client, topic, partition)?;
    // SAFETY: `source` is the live reference just taken and `to` is null or a live queue of the
    // same client (the forwarding keeps a reference of its own to it); destroying `source`
    // releases only the reference taken here.
    unsafe {
        rdsys::rd_kafka_queue_forward(source.as_ptr(), to);
        rdsys::rd_kafka_queue_destroy(source.as_ptr());
    }
    Ok(())
}

fn client_ptr<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
) -> anyhow::Result<NonNull<rdsys::rd_kafka_t>> {
    NonNull::new(consumer.client().native_ptr())
        .ok_or_else(|| anyhow::anyhow!("the consumer has no client handle"))
}

/// A new reference to the fetch queue of `topic`/`partition` (created if librdkafka has none yet).
fn partition_queue(
    client: NonNull<rdsys::rd_kafka_t>,
    topic: &str,
    partition: i32,
) -> anyhow::Result<NonNull<rdsys::rd_kafka_queue_t>> {
    let name = CString::new(topic)?;
    // SAFETY: `client` is a live client (the callers borrow its consumer) and `name` is a
    // NUL-terminated string that outlives the call; it returns a new reference to the
    // partition's fetch queue (null for a producer), which the caller releases.
    let queue =
        unsafe { rdsys::rd_kafka_queue_get_partition(client.as_ptr(), name.as_ptr(), partition) };
    NonNull::new(queue).ok_or_else(|| anyhow::anyhow!("no queue for {topic}/{partition}"))
}

impl<'c> BatchQueue<'c> {
    /// The consumer's own queue (the consumer must have a `group.id`, which gives it one),
    /// taking up to `slots` messages per call.
    pub fn consumer<C: ConsumerContext>(
        consumer: &'c BaseConsumer<C>,
        slots: usize,
    ) -> anyhow::Result<Self> {
        let client = client_ptr(consumer)?;
        // SAFETY: the client pointer is valid while `consumer` is borrowed; the call returns a new
        // reference to the consumer queue (or null without a group), released in `Drop`.
        let queue = unsafe { rdsys::rd_kafka_queue_get_consumer(client.as_ptr()) };
        let queue = NonNull::new(queue)
            .ok_or_else(|| anyhow::anyhow!("the consumer has no queue (no group.id?)"))?;
        Ok(Self::with_queue(client, queue, slots))
    }

    /// A new, empty queue of the consumer's, which partitions are then forwarded to
    /// ([`BatchQueue::forward_partition`]).
    pub fn new<C: ConsumerContext>(
        consumer: &'c BaseConsumer<C>,
        slots: usize,
    ) -> anyhow::Result<Self> {
        let client = client_ptr(consumer)?;
        // SAFETY: the client pointer is valid while `consumer` is borrowed; the call returns a new
        // queue owned by this handle, destroyed in `Drop`.
        let queue = unsafe { rdsys::rd_kafka_queue_new(client.as_ptr()) };
        let queue = NonNull::new(queue).ok_or_else(|| anyhow::anyhow!("cannot create a queue"))?;
        Ok(Self::with_queue(client, queue, slots))
    }

    /// Forwards the records of `topic`/`partition` to this queue: those waiting in the
    /// partition's queue now (after them, in order) and every one fetched later, until the
    /// partition is unassigned. See [`split_partition`].
    pub fn forward_partition(&self, topic: &str, partition: i32) -> anyhow::Result<()> {
        forward_partition_to(self.client, topic, partition, self.queue.as_ptr())
    }

    /// The queue of one partition, split off from the consumer's queue: its messages arrive
    /// here only, in offset order. Split before assigning the partition, or records fetched in
    /// between land in the consumer's queue.
    pub fn partition<C: ConsumerContext>(
        consumer: &'c BaseConsumer<C>,
        topic: &str,
        partition: i32,
        slots: usize,
    ) -> anyhow::Result<Self> {
        let client = client_ptr(consumer)?;
        // The reference is released in `Drop`.
        let queue = partition_queue(client, topic, partition)?;
        // SAFETY: `queue` is the live reference just taken; forwarding to null stops the
        // partition queue from forwarding into the consumer's queue.
        unsafe { rdsys::rd_kafka_queue_forward(queue.as_ptr(), std::ptr::null_mut()) };
        Ok(Self::with_queue(client, queue, slots))
    }

    fn with_queue(
        client: NonNull<rdsys::rd_kafka_t>,
        queue: NonNull<rdsys::rd_kafka_queue_t>,
        slots: usize,
    ) -> Self {
        Self {
            client,
            queue,
            slots: vec![std::ptr::null_mut(); slots.max(1)],
            _consumer: PhantomData,
        }
    }

    /// Waits up to `timeout` for at most `max` messages (fewer if the timeout passes first; with
    /// a zero timeout, what is queued) and lends each good one to `on_message`, in queue order;
    /// returns how many messages were taken. A message carrying an error is not lent: the call
    /// returns the first such error once the batch has been handed out.
    pub fn read(
        &mut self,
        timeout: Duration,
        max: usize,
        mut on_message: impl FnMut(BatchMessage<'_>),
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
        // Destroys every message taken even if the callback panics.
        struct Taken<'a>(&'a [*mut rdsys::rd_kafka_message_t]);
        impl Drop for Taken<'_> {
            fn drop(&mut self) {
                for &message in self.0 {
                    // SAFETY: each of these was handed over by the batch call and is destroyed
                    // exactly once, here, after the last borrow of it ended.
                    unsafe { rdsys::rd_kafka_message_destroy(message) };
                }
            }
        }
        let taken = Taken(&self.slots[..n]);
        let mut error = None;
        for &message in taken.0 {
            // SAFETY: the first `n` slots hold live messages the call handed over; the borrow
            // given to the callback ends before `taken` destroys them.
            let raw = unsafe { &*message };
            if raw.err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                on_message(BatchMessage { raw });
            } else if error.is_none() {
                error = Some(KafkaError::MessageConsumption(raw.err.into()));
            }
        }
        drop(taken);
        error.map_or(Ok(n), Err)
    }
}

impl Drop for BatchQueue<'_> {
    fn drop(&mut self) {
        // SAFETY: releases the reference taken in the constructor, once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_core::broker::BrokerConfig;
    use broker_core::log::Durability;
    use broker_core::server::BrokerServer;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    /// What a test keeps of a lent message (copied out inside the callback).
    type Seen = (i32, i64, Option<Vec<u8>>, Vec<u8>, Option<i64>);

    /// Reads `queue` until `want` messages were taken or a few seconds pass.
    fn drain(queue: &mut BatchQueue<'_>, max: usize, want: usize) -> Vec<Seen> {
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while seen.len() < want && std::time::Instant::now() < deadline {
            let n = queue
                .read(Duration::from_millis(100), max, |m| {
                    seen.push((
                        m.partition(),
                        m.offset(),
                        m.key().map(<[u8]>::to_vec),
                        m.payload().to_vec(),
                        m.timestamp(),
                    ));
                })
                .expect("read");
            assert!(n <= max);
        }
        seen
    }

    #[test]
    fn reads_partition_and_consumer_queues_in_batches() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = BrokerConfig::new("127.0.0.1:0".parse().expect("addr"), dir.path());
        config.log.durability = Durability::Os;
        let broker = rt.block_on(BrokerServer::start(config)).expect("broker");
        broker
            .broker()
            .logs()
            .create_topic("t", 2, Default::default())
            .expect("topic");
        let bootstrap = broker.local_addr().to_string();

        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("producer");
        for i in 0..300i64 {
            let partition = i32::from(i % 3 == 0);
            let key = format!("k{i}");
            let value = format!("value {i}");
            let mut record = BaseRecord::to("t")
                .partition(partition)
                .payload(&value)
                .timestamp(1_700_000_000_000 + i);
            if i % 2 == 0 {
                record = record.key(&key);
            }
            producer.send(record).expect("send");
        }
        producer.flush(Duration::from_secs(10)).expect("flush");

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "batch-test")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut one = BatchQueue::partition(&consumer, "t", 1, 64).expect("partition queue");
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset("t", 0, Offset::Beginning)
            .expect("assignment");
        assignment
            .add_partition_offset("t", 1, Offset::Offset(10))
            .expect("assignment");
        consumer.assign(&assignment).expect("assign");

        // Partition 1 (i = 0, 3, 6, ...: 100 records) from offset 10, through its own queue,
        // in batches of at most 7.
        let seen = drain(&mut one, 7, 90);
        assert_eq!(seen.len(), 90);
        for (j, (partition, offset, key, value, ts)) in seen.into_iter().enumerate() {
            let i = 3 * (j as i64 + 10);
            assert_eq!((partition, offset), (1, j as i64 + 10));
            assert_eq!(key, (i % 2 == 0).then(|| format!("k{i}").into_bytes()));
            assert_eq!(value, format!("value {i}").into_bytes());
            assert_eq!(ts, Some(1_700_000_000_000 + i));
        }

        // Partition 0 (200 records) went to the consumer's queue, none of partition 1.
        let mut main = BatchQueue::consumer(&consumer, 1000).expect("consumer queue");
        let seen = drain(&mut main, 1000, 200);
        assert_eq!(seen.len(), 200);
        assert!(seen.iter().all(|s| s.0 == 0));
        assert!(seen.windows(2).all(|w| w[1].1 == w[0].1 + 1));
        assert_eq!(main.read(Duration::ZERO, 10, |_| {}).expect("read"), 0);
        drop((one, main));
        drop(consumer);
        rt.block_on(broker.shutdown()).expect("shutdown");
    }

    #[test]
    fn split_partitions_forwarded_to_a_queue_of_their_own() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = BrokerConfig::new("127.0.0.1:0".parse().expect("addr"), dir.path());
        config.log.durability = Durability::Os;
        let broker = rt.block_on(BrokerServer::start(config)).expect("broker");
        for topic in ["a", "b"] {
            broker
                .broker()
                .logs()
                .create_topic(topic, 2, Default::default())
                .expect("topic");
        }
        let bootstrap = broker.local_addr().to_string();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("producer");
        for i in 0..400i32 {
            let topic = if i % 2 == 0 { "a" } else { "b" };
            let value = format!("{topic} {i}");
            producer
                .send(
                    BaseRecord::<(), _>::to(topic)
                        .partition(i % 4 / 2)
                        .payload(&value),
                )
                .expect("send");
        }
        producer.flush(Duration::from_secs(10)).expect("flush");

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "split-test")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut assignment = TopicPartitionList::new();
        for topic in ["a", "b"] {
            for p in 0..2 {
                split_partition(&consumer, topic, p).expect("split");
                assignment
                    .add_partition_offset(topic, p, Offset::Beginning)
                    .expect("assignment");
            }
        }
        consumer.assign(&assignment).expect("assign");
        // Records fetched before the forwarding wait in their partition's queue and come first.
        std::thread::sleep(Duration::from_millis(500));
        let mut queue = BatchQueue::new(&consumer, 64).expect("queue");
        for topic in ["a", "b"] {
            for p in 0..2 {
                queue.forward_partition(topic, p).expect("forward");
            }
        }
        let mut seen: Vec<(String, i32, i64, String)> = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while seen.len() < 400 && std::time::Instant::now() < deadline {
            queue
                .read(Duration::from_millis(100), 64, |m| {
                    seen.push((
                        m.topic().to_owned(),
                        m.partition(),
                        m.offset(),
                        String::from_utf8_lossy(m.payload()).into_owned(),
                    ));
                })
                .expect("read");
        }
        assert_eq!(seen.len(), 400);
        for topic in ["a", "b"] {
            for p in 0..2 {
                let offsets: Vec<i64> = seen
                    .iter()
                    .filter(|s| s.0 == topic && s.1 == p)
                    .map(|s| s.2)
                    .collect();
                assert_eq!(
                    offsets,
                    (0..100).collect::<Vec<i64>>(),
                    "{topic}/{p} in order"
                );
            }
        }
        assert!(seen.iter().all(|s| s.3.starts_with(&s.0)));
        // Nothing reached the consumer's own queue.
        assert!(consumer.poll(Duration::from_millis(200)).is_none());
        drop(queue);
        drop(consumer);
        rt.block_on(broker.shutdown()).expect("shutdown");
    }
}
