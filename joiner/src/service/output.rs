//! Where the engine's output goes: samples, dead letters and late records, through one idempotent
//! producer (retries never duplicate, order per partition is kept).
//!
//! Every record is written to the partition number of the input partition it came from. For
//! samples that is what makes each output partition have exactly one writer — the owner of that
//! input partition — even if an upstream producer did not partition by key (DESIGN.md section 4).
//! When the producer's queue is full, the caller waits until there is room: consumption pauses,
//! nothing is dropped.
//!
//! Delivery reports are served by the producer's own polling thread, so they never wait for the
//! caller. Each record carries its output partition and its number in that partition's send
//! order; the reports advance, per output partition, the count of records delivered without a
//! gap. [`Outputs::mark`] takes the send counts at a moment and [`Outputs::delivered`] tells,
//! without blocking, whether everything sent before that moment is acknowledged: the member
//! commits offsets taken at the mark once it is, instead of stopping to flush.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message};

use crate::config::TopicNames;
use crate::engine::{DeadLetter, LateRecord, Sample};

/// Bits of a delivery opaque that hold the record's number within its output partition; the
/// bits above hold the partition's slot.
const SEQ_BITS: u32 = 40;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
/// Output partitions (topic, partition) one producer can track.
const MAX_SLOTS: usize = 1 << 20;
// The opaque is a pointer-sized integer: slot and number must fit in it.
const _: () = assert!(usize::BITS >= 64);

/// Delivery progress of one output partition.
#[derive(Debug, Default)]
struct SlotProgress {
    /// Every record numbered below this is acknowledged.
    prefix: u64,
    /// Acknowledged records above the prefix (reports out of send order; normally empty).
    ahead: BTreeSet<u64>,
}

impl SlotProgress {
    fn delivered(&mut self, seq: u64) {
        if seq == self.prefix {
            self.prefix += 1;
            while self.ahead.remove(&self.prefix) {
                self.prefix += 1;
            }
        } else if seq > self.prefix {
            self.ahead.insert(seq);
        }
    }
}

/// Delivery reports, shared with the producer's polling thread. A failure means output may be
/// missing, so the service must not commit past it.
#[derive(Debug, Default)]
pub struct DeliveryLog {
    failed: AtomicU64,
    slots: Mutex<Vec<SlotProgress>>,
}

/// The producer's context: records every delivery report in the shared log.
#[derive(Debug)]
pub struct DeliveryContext(Arc<DeliveryLog>);

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        match result {
            Ok(_) => {
                let opaque = opaque as u64;
                let slot = usize::try_from(opaque >> SEQ_BITS).unwrap_or(usize::MAX);
                let mut slots = self.0.slots.lock();
                if slot >= slots.len() {
                    slots.resize_with(slot + 1, SlotProgress::default);
                }
                slots[slot].delivered(opaque & SEQ_MASK);
            }
            Err((e, m)) => {
                tracing::error!(topic = m.topic(), partition = m.partition(), error = %e, "output delivery failed");
                self.0.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Records handed to the producer up to a moment, per output partition (see
/// [`Outputs::mark`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentMark(Vec<u64>);

/// Send-side bookkeeping: a slot per output partition and the records sent to it.
#[derive(Debug, Default)]
struct Sent {
    slots: HashMap<(u8, u32), usize>,
    counts: Vec<u64>,
}

/// The joiner's producer and output topics.
pub struct Outputs {
    producer: ThreadedProducer<DeliveryContext>,
    log: Arc<DeliveryLog>,
    topics: TopicNames,
    sent: Mutex<Sent>,
}

impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outputs")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

/// Output could not be made durable.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The client refused a record.
    #[error("produce to {topic}: {source}")]
    Produce {
        /// The topic.
        topic: String,
        /// Why.
        #[source]
        source: KafkaError,
    },
    /// Deliveries failed; committing now could lose output.
    #[error("{0} output records were not delivered")]
    Undelivered(u64),
    /// Flushing timed out.
    #[error("flush: {0}")]
    Flush(#[source] KafkaError),
    /// More output partitions than delivery tracking supports.
    #[error("more than {MAX_SLOTS} output partitions")]
    TooManyPartitions,
}

impl Outputs {
    /// An idempotent producer from the shared client settings (lz4-compressed unless they set
    /// `compression.type`).
    pub fn new(client: &ClientConfig, topics: TopicNames) -> Result<Self, KafkaError> {
        let log = Arc::new(DeliveryLog::default());
        let mut config = client.clone();
        if config.get("compression.type").is_none() && config.get("compression.codec").is_none() {
            config.set("compression.type", "lz4");
        }
        let producer = config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "20")
            .create_with_context(DeliveryContext(Arc::clone(&log)))?;
        Ok(Self {
            producer,
            log,
            topics,
            sent: Mutex::new(Sent::default()),
        })
    }

    fn send(
        &self,
        topic: &str,
        topic_index: u8,
        partition: u32,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<(), OutputError> {
        // Held while the record is enqueued, so that records are numbered in their partition's
        // send order.
        let mut sent = self.sent.lock();
        let next_slot = sent.slots.len();
        let slot = *sent
            .slots
            .entry((topic_index, partition))
            .or_insert(next_slot);
        if slot == sent.counts.len() {
            if slot >= MAX_SLOTS {
                return Err(OutputError::TooManyPartitions);
            }
            sent.counts.push(0);
        }
        let seq = sent.counts[slot];
        let opaque =
            usize::try_from(((slot as u64) << SEQ_BITS) | (seq & SEQ_MASK)).unwrap_or(usize::MAX);
        let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, opaque)
            .partition(i32::try_from(partition).unwrap_or(i32::MAX))
            .payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    sent.counts[slot] += 1;
                    return Ok(());
                }
                Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    // Backpressure: the polling thread serves deliveries and makes room.
                    std::thread::sleep(Duration::from_millis(1));
                    record = r;
                }
                Err((source, _)) => {
                    return Err(OutputError::Produce {
                        topic: topic.to_owned(),
                        source,
                    });
                }
            }
        }
    }

    /// Produces a sample, keyed by its join key, to its input partition number.
    pub fn sample(&self, s: &Sample) -> Result<(), OutputError> {
        self.send(&self.topics.samples, 0, s.partition, Some(&s.key), &s.bytes)
    }

    /// Produces a dead letter (original bytes, source and reason).
    pub fn dead_letter(&self, d: &DeadLetter) -> Result<(), OutputError> {
        let json = d.to_json(self.topics.input_topic(d.source.kind));
        self.send(&self.topics.dlq, 1, d.source.partition, None, &json)
    }

    /// Produces a late record as it was read, unless the late topic is disabled.
    pub fn late(&self, l: &LateRecord) -> Result<(), OutputError> {
        if self.topics.late.is_empty() {
            return Ok(());
        }
        self.send(&self.topics.late, 2, l.source.partition, None, &l.bytes)
    }

    /// What has been handed to the producer so far.
    pub fn mark(&self) -> SentMark {
        SentMark(self.sent.lock().counts.clone())
    }

    /// Whether everything sent before `mark` is acknowledged, without waiting; fails if any
    /// output was lost.
    pub fn delivered(&self, mark: &SentMark) -> Result<bool, OutputError> {
        match self.log.failed.load(Ordering::Relaxed) {
            0 => {}
            n => return Err(OutputError::Undelivered(n)),
        }
        let slots = self.log.slots.lock();
        Ok(mark
            .0
            .iter()
            .enumerate()
            .all(|(slot, &sent)| sent == 0 || slots.get(slot).is_some_and(|p| p.prefix >= sent)))
    }

    /// Waits until everything produced so far is acknowledged; fails if anything was lost.
    pub fn flush(&self, timeout: Duration) -> Result<(), OutputError> {
        let mark = self.mark();
        let deadline = Instant::now() + timeout;
        loop {
            if self.delivered(&mark)? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(OutputError::Flush(KafkaError::Flush(
                    RDKafkaErrorCode::OperationTimedOut,
                )));
            }
            // A zero-timeout flush sends lingering batches now; it reports a timeout while
            // anything is in flight, which is expected here.
            let _ = self.producer.flush(Duration::ZERO);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
