//! Where the engine's output goes: samples, dead letters and late records, through one idempotent
//! producer (retries never duplicate, order per partition is kept).
//!
//! Every record is written to the partition number of the input partition it came from. For
//! samples that is what makes each output partition have exactly one writer — the owner of that
//! input partition — even if an upstream producer did not partition by key (DESIGN.md section 4).
//! When the producer's queue is full, the caller blocks in `poll` until there is room: consumption
//! pauses, nothing is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message};

use crate::config::TopicNames;
use crate::engine::{DeadLetter, LateRecord, Sample, TopicKind};

/// Counts failed deliveries; a failure means output may be missing, so the service must not
/// commit past it.
#[derive(Debug, Default)]
pub struct DeliveryLog {
    failed: AtomicU64,
    delivered: AtomicU64,
}

/// The producer's context: records every delivery report in the shared log.
#[derive(Debug)]
pub struct DeliveryContext(Arc<DeliveryLog>);

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err((e, m)) => {
                tracing::error!(topic = m.topic(), partition = m.partition(), error = %e, "output delivery failed");
                self.0.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// The joiner's producer and output topics.
pub struct Outputs {
    producer: BaseProducer<DeliveryContext>,
    log: Arc<DeliveryLog>,
    topics: TopicNames,
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
}

impl Outputs {
    /// An idempotent producer from the shared client settings.
    pub fn new(client: &ClientConfig, topics: TopicNames) -> Result<Self, KafkaError> {
        let log = Arc::new(DeliveryLog::default());
        let producer = client
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .create_with_context(DeliveryContext(Arc::clone(&log)))?;
        Ok(Self {
            producer,
            log,
            topics,
        })
    }

    fn send(
        &self,
        topic: &str,
        partition: u32,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<(), OutputError> {
        let partition = i32::try_from(partition).unwrap_or(i32::MAX);
        let mut record = BaseRecord::<[u8], [u8], ()>::to(topic)
            .partition(partition)
            .payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    // Backpressure: wait for deliveries to make room.
                    self.producer.poll(Duration::from_millis(10));
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
        self.send(&self.topics.samples, s.partition, Some(&s.key), &s.bytes)
    }

    /// Produces a dead letter (original bytes, source and reason).
    pub fn dead_letter(&self, d: &DeadLetter) -> Result<(), OutputError> {
        let json = d.to_json(self.source_topic(d.source.kind));
        self.send(&self.topics.dlq, d.source.partition, None, &json)
    }

    /// Produces a late record as it was read, unless the late topic is disabled.
    pub fn late(&self, l: &LateRecord) -> Result<(), OutputError> {
        if self.topics.late.is_empty() {
            return Ok(());
        }
        self.send(&self.topics.late, l.source.partition, None, &l.bytes)
    }

    fn source_topic(&self, kind: TopicKind) -> &str {
        match kind {
            TopicKind::Feature => &self.topics.features,
            TopicKind::Action => &self.topics.actions,
        }
    }

    /// Serves delivery reports without blocking.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Waits until everything produced so far is acknowledged; fails if anything was lost.
    pub fn flush(&self, timeout: Duration) -> Result<(), OutputError> {
        self.producer.flush(timeout).map_err(OutputError::Flush)?;
        match self.log.failed.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(OutputError::Undelivered(n)),
        }
    }

    /// Records acknowledged so far.
    pub fn delivered(&self) -> u64 {
        self.log.delivered.load(Ordering::Relaxed)
    }
}
