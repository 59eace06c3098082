//! A minimal produce-only Kafka client for the traffic generator, speaking the wire protocol
//! itself: one connection to one broker, records gathered into one v2 record batch per
//! partition, one Produce request (`acks=all`) per flush, a few requests in flight.
//!
//! Why it exists: `bench e2e` runs the generator, the broker and the joiner on the same two
//! cores, and the generator stands in for the recommender's producers, which would run on other
//! machines. Through librdkafka each record costs an allocation, a copy and queue bookkeeping on
//! two threads — about 1.6 µs of CPU per record measured at 250k records/s, CPU the system under
//! test then lacks. This client costs a copy and the batch encoding.
//!
//! Scope: every partition must be led by the broker it connects to (the built-in broker, or any
//! single-broker cluster). No retries, no idempotence: any error is returned and ends the run.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, RequestHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use parking_lot::{Condvar, Mutex, MutexGuard};

/// Produce API version used (the last before flexible versions; every broker since Kafka 2.1
/// accepts it).
const PRODUCE_VERSION: i16 = 7;
/// Requests sent and not yet answered, at most (librdkafka's default is 5 as well).
const MAX_IN_FLIGHT: usize = 5;
/// How long the broker may wait for the fsync before answering.
const TIMEOUT_MS: i32 = 30_000;
/// A partition's batch is sent once its records reach this size: below the 1 MiB
/// `max.message.bytes` brokers accept by default.
const MAX_BATCH_BYTES: usize = 512 * 1024;
/// Initial size of the reused buffers (they grow if a flush needs more).
const BUFFER: usize = 8 << 20;

/// What went wrong; the producer is unusable afterwards.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Connecting, writing or reading failed.
    #[error("broker connection: {0}")]
    Io(#[from] std::io::Error),
    /// A request or response did not encode or decode.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The broker refused records of a partition.
    #[error("produce to {topic}/{partition} failed with Kafka error code {code}")]
    Refused {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Kafka error code.
        code: i16,
    },
    /// The connection failed earlier (the first error the response reader met, as text); the
    /// producer stays unusable.
    #[error("{0}")]
    Failed(String),
}

/// Requests in flight and the first failure, shared with the response reader.
#[derive(Debug, Default)]
struct Flight {
    in_flight: usize,
    failed: Option<String>,
    closed: bool,
}

/// One record waiting for the next flush: where its key and value are in the pending data.
#[derive(Debug, Clone, Copy)]
struct Pending {
    key: (usize, usize),
    value: (usize, usize),
    timestamp: i64,
}

/// The producer. See the module documentation.
#[derive(Debug)]
pub struct WireProducer {
    stream: TcpStream,
    topics: Vec<String>,
    partitions: usize,
    /// Records per (topic index × partitions + partition), in send order.
    pending: Vec<Vec<Pending>>,
    /// Key and value bytes of those records, per partition.
    pending_bytes: Vec<usize>,
    /// Keys and values of the pending records.
    data: BytesMut,
    flight: Arc<(Mutex<Flight>, Condvar)>,
    reader: Option<JoinHandle<()>>,
    next_id: i32,
    compression: Compression,
    /// Reused: the records of one batch, the encoded batches, the request frame. Buffers are
    /// kept rather than allocated per flush: batches of a few hundred KiB would otherwise be
    /// fresh mappings each time, and every page of them a page fault.
    records: Vec<Record>,
    batches: BytesMut,
    frame: BytesMut,
}

impl WireProducer {
    /// Connects to `addr` for producing to `topics`, each with `partitions` partitions, in
    /// batches compressed with `compression`.
    pub fn connect(
        addr: &str,
        topics: &[&str],
        partitions: usize,
        compression: Compression,
    ) -> Result<Self, WireError> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let flight = Arc::new((Mutex::new(Flight::default()), Condvar::new()));
        let reader = {
            let stream = stream.try_clone()?;
            let flight = Arc::clone(&flight);
            std::thread::Builder::new()
                .name("wire-acks".into())
                .spawn(move || read_responses(stream, &flight))?
        };
        Ok(Self {
            stream,
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            partitions,
            pending: vec![Vec::new(); topics.len() * partitions],
            pending_bytes: vec![0; topics.len() * partitions],
            data: BytesMut::with_capacity(BUFFER),
            flight,
            reader: Some(reader),
            next_id: 0,
            compression,
            records: Vec::new(),
            batches: BytesMut::with_capacity(BUFFER),
            frame: BytesMut::with_capacity(BUFFER),
        })
    }

    /// Adds a record for the next flush; flushes first if its partition's batch is full.
    pub fn send(
        &mut self,
        topic: usize,
        partition: usize,
        key: &[u8],
        value: &[u8],
        ts: i64,
    ) -> Result<(), WireError> {
        let slot = topic * self.partitions + partition;
        if self.pending_bytes[slot] + key.len() + value.len() > MAX_BATCH_BYTES {
            self.flush()?;
        }
        self.pending_bytes[slot] += key.len() + value.len();
        let at = self.data.len();
        self.data.extend_from_slice(key);
        self.data.extend_from_slice(value);
        let mid = at + key.len();
        self.pending[slot].push(Pending {
            key: (at, mid),
            value: (mid, self.data.len()),
            timestamp: ts,
        });
        Ok(())
    }

    /// Sends every pending record in one Produce request, waiting while too many requests are
    /// in flight. Fails on the first error the broker or the connection reported so far.
    pub fn flush(&mut self) -> Result<(), WireError> {
        if self.pending.iter().all(Vec::is_empty) {
            return self.check();
        }
        let data = self.data.split().freeze();
        let mut topic_data = Vec::new();
        for (t, name) in self.topics.iter().enumerate() {
            let mut partition_data = Vec::new();
            for p in 0..self.partitions {
                let pending = &mut self.pending[t * self.partitions + p];
                if pending.is_empty() {
                    continue;
                }
                self.records.clear();
                self.records
                    .extend(pending.drain(..).enumerate().map(|(i, r)| Record {
                        transactional: false,
                        control: false,
                        delete_horizon: false,
                        partition_leader_epoch: -1,
                        producer_id: -1,
                        producer_epoch: -1,
                        timestamp_type: TimestampType::Creation,
                        offset: i64::try_from(i).unwrap_or(i64::MAX),
                        sequence: -1,
                        timestamp: r.timestamp,
                        key: Some(data.slice(r.key.0..r.key.1)),
                        value: Some(data.slice(r.value.0..r.value.1)),
                        headers: Default::default(),
                    }));
                RecordBatchEncoder::encode(
                    &mut self.batches,
                    &self.records,
                    &RecordEncodeOptions {
                        version: 2,
                        compression: self.compression,
                    },
                )
                .map_err(|e| WireError::Protocol(e.to_string()))?;
                partition_data.push(
                    PartitionProduceData::default()
                        .with_index(i32::try_from(p).unwrap_or(i32::MAX))
                        .with_records(Some(self.batches.split().freeze())),
                );
            }
            if !partition_data.is_empty() {
                topic_data.push(
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(name.clone())))
                        .with_partition_data(partition_data),
                );
            }
        }
        self.records.clear();
        self.pending_bytes.fill(0);
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(TIMEOUT_MS)
            .with_topic_data(topic_data);
        self.frame_request(&request)?;
        self.wait_for_room()?;
        // A broken connection is usually the broker's answer to something: report that.
        self.stream
            .write_all(&self.frame)
            .map_err(|e| self.check().err().unwrap_or(e.into()))
    }

    /// Flushes, waits for every answer and closes the connection (on drop).
    pub fn finish(mut self) -> Result<(), WireError> {
        self.flush()?;
        drop(self.wait_below(1));
        self.check()
    }

    fn frame_request(&mut self, request: &ProduceRequest) -> Result<(), WireError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let frame = &mut self.frame;
        frame.clear();
        frame.put_i32(0);
        let protocol = |e: anyhow::Error| WireError::Protocol(e.to_string());
        RequestHeader::default()
            .with_request_api_key(ApiKey::Produce as i16)
            .with_request_api_version(PRODUCE_VERSION)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_static_str("recjoin-gen")))
            .encode(frame, ProduceRequest::header_version(PRODUCE_VERSION))
            .map_err(protocol)?;
        request.encode(frame, PRODUCE_VERSION).map_err(protocol)?;
        let len = i32::try_from(frame.len() - 4)
            .map_err(|_| WireError::Protocol("request over 2 GiB".into()))?;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Waits until fewer than `limit` requests are in flight, or the connection failed or
    /// closed.
    fn wait_below(&self, limit: usize) -> MutexGuard<'_, Flight> {
        let (lock, cv) = &*self.flight;
        let mut f = lock.lock();
        while f.in_flight >= limit && f.failed.is_none() && !f.closed {
            cv.wait(&mut f);
        }
        f
    }

    fn wait_for_room(&self) -> Result<(), WireError> {
        let mut f = self.wait_below(MAX_IN_FLIGHT);
        if let Some(e) = &f.failed {
            return Err(WireError::Failed(e.clone()));
        }
        if f.closed {
            return Err(WireError::Protocol(
                "connection closed by the broker".into(),
            ));
        }
        f.in_flight += 1;
        Ok(())
    }

    fn check(&self) -> Result<(), WireError> {
        match &self.flight.0.lock().failed {
            Some(e) => Err(WireError::Failed(e.clone())),
            None => Ok(()),
        }
    }
}

impl Drop for WireProducer {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Reads Produce responses until the connection closes, counting requests out of flight and
/// recording the first failure.
fn read_responses(mut stream: TcpStream, flight: &(Mutex<Flight>, Condvar)) {
    let result = (|| -> Result<(), WireError> {
        let mut len = [0u8; 4];
        loop {
            match stream.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            let n = usize::try_from(i32::from_be_bytes(len))
                .map_err(|_| WireError::Protocol("negative response length".into()))?;
            let mut body = vec![0u8; n];
            stream.read_exact(&mut body)?;
            let mut body = Bytes::from(body);
            if body.remaining() < 4 {
                return Err(WireError::Protocol("short response".into()));
            }
            let _correlation_id = body.get_i32();
            let response = ProduceResponse::decode(&mut body, PRODUCE_VERSION)
                .map_err(|e| WireError::Protocol(e.to_string()))?;
            for t in &response.responses {
                for p in &t.partition_responses {
                    if p.error_code != 0 {
                        return Err(WireError::Refused {
                            topic: t.name.0.to_string(),
                            partition: p.index,
                            code: p.error_code,
                        });
                    }
                }
            }
            let (lock, cv) = flight;
            lock.lock().in_flight -= 1;
            cv.notify_all();
        }
    })();
    let (lock, cv) = flight;
    let mut f = lock.lock();
    f.closed = true;
    match result {
        Err(e) => {
            f.failed.get_or_insert(e.to_string());
        }
        Ok(()) if f.in_flight > 0 => {
            let lost = format!("connection closed with {} requests unanswered", f.in_flight);
            f.failed.get_or_insert(lost);
        }
        Ok(()) => {}
    }
    cv.notify_all();
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use broker_core::broker::BrokerConfig;
    use broker_core::log::Durability;
    use broker_core::server::BrokerServer;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    use super::*;

    /// Records sent in several flushes — some forced by a full batch — come back from a
    /// librdkafka consumer with their partitions, order, keys, values and timestamps; a topic
    /// the broker does not have is refused with its error code.
    #[test]
    fn produced_records_read_back_and_refusals_are_errors() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = BrokerConfig::new("127.0.0.1:0".parse().expect("addr"), dir.path());
        config.log.durability = Durability::Fsync;
        let broker = rt.block_on(BrokerServer::start(config)).expect("broker");
        for t in ["a", "b"] {
            broker
                .broker()
                .logs()
                .create_topic(t, 2, Default::default())
                .expect("topic");
        }
        let bootstrap = broker.local_addr().to_string();

        let mut producer =
            WireProducer::connect(&bootstrap, &["a", "b"], 2, Compression::None).expect("connect");
        // 20 KiB values: a partition's batch fills (512 KiB) every 26 records.
        let value = |i: usize| {
            let mut v = format!("value {i} ").into_bytes();
            v.resize(20 * 1024, b'.');
            v
        };
        let n = 400;
        for i in 0..n {
            let key = format!("k{i}");
            producer
                .send(
                    i % 2,
                    (i / 2) % 2,
                    key.as_bytes(),
                    &value(i),
                    1_700_000_000_000 + i as i64,
                )
                .expect("send");
            if i % 97 == 0 {
                producer.flush().expect("flush");
            }
        }
        producer.finish().expect("finish");

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "wire-test")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut assignment = TopicPartitionList::new();
        for t in ["a", "b"] {
            for p in 0..2 {
                assignment
                    .add_partition_offset(t, p, Offset::Beginning)
                    .expect("assignment");
            }
        }
        consumer.assign(&assignment).expect("assign");
        let mut seen: Vec<(String, i32, i64, usize)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.len() < n && Instant::now() < deadline {
            let Some(m) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = m.expect("message");
            let key = std::str::from_utf8(m.key().expect("key")).expect("utf8");
            let i: usize = key[1..].parse().expect("number");
            assert_eq!(m.payload(), Some(&value(i)[..]), "value of {key}");
            assert_eq!(
                m.timestamp().to_millis(),
                Some(1_700_000_000_000 + i as i64)
            );
            assert_eq!(
                (m.topic(), m.partition()),
                (["a", "b"][i % 2], ((i / 2) % 2) as i32)
            );
            seen.push((m.topic().to_owned(), m.partition(), m.offset(), i));
        }
        assert_eq!(seen.len(), n, "every record read back");
        // Within a partition, offsets follow send order.
        seen.sort();
        for w in seen.windows(2) {
            if (&w[0].0, w[0].1) == (&w[1].0, w[1].1) {
                assert_eq!(w[1].2, w[0].2 + 1);
                assert!(w[1].3 > w[0].3, "send order kept");
            }
        }

        let mut producer =
            WireProducer::connect(&bootstrap, &["missing"], 1, Compression::None).expect("connect");
        producer.send(0, 0, b"k", b"v", 0).expect("send");
        match producer.finish() {
            Err(WireError::Failed(e)) => assert!(e.contains("missing/0"), "{e}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        rt.block_on(broker.shutdown()).expect("shutdown");
    }
}
