//! A minimal produce-only Kafka client for the traffic generator, speaking the wire protocol
//! itself: one connection to one broker, records written straight into one v2 record batch per
//! partition as they are sent, one Produce request (`acks=all`) per flush, written with one
//! vectored write (framing and batches from their own buffers), a few requests in flight.
//!
//! Why it exists: `bench e2e` runs the generator, the broker and the joiner on the same two
//! cores, and the generator stands in for the recommender's producers, which would run on other
//! machines. Through librdkafka each record costs an allocation, a copy and queue bookkeeping on
//! two threads — about 1.6 µs of CPU per record measured at 250k records/s, CPU the system under
//! test then lacks. Here a record costs one copy into its batch; the batch is checksummed
//! (CRC-32C) and, if asked, compressed once per flush. (Encoding through `kafka-protocol`'s
//! `Record`s instead cost two more copies and two reference-counted slices per record; without
//! them the bench's CPU per record at 275k fell by ~15 %, from 6.51 and 6.13 to 5.50 and
//! 5.25 µs in alternating runs.)
//!
//! Scope: every partition must be led by the broker it connects to (the built-in broker, or any
//! single-broker cluster). No retries, no idempotence: any error is returned and ends the run.

use std::io::{IoSlice, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread::JoinHandle;

use broker_core::log::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::compression::{self, Compressor};
use kafka_protocol::messages::{ApiKey, ProduceResponse};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::records::Compression;
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

/// One partition's record batch being filled: room for the header, which [`OpenBatch::seal`]
/// writes, then the records in the v2 format, written as they are sent.
#[derive(Debug)]
struct OpenBatch {
    buf: Vec<u8>,
    records: i32,
    base_ts: i64,
    max_ts: i64,
}

impl OpenBatch {
    fn new() -> Self {
        Self {
            buf: vec![0; HEADER_LEN],
            records: 0,
            base_ts: 0,
            max_ts: i64::MIN,
        }
    }

    fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Appends one record: length, attributes, timestamp and offset deltas, key, value, no
    /// headers (all varints zigzag-encoded, as the v2 format has them).
    fn push(&mut self, key: &[u8], value: &[u8], ts: i64) {
        if self.records == 0 {
            self.base_ts = ts;
        }
        self.max_ts = self.max_ts.max(ts);
        let ts_delta = ts - self.base_ts;
        let offset_delta = i64::from(self.records);
        let (k, v) = (key.len() as i64, value.len() as i64);
        let body = 1
            + varint_len(ts_delta)
            + varint_len(offset_delta)
            + varint_len(k)
            + key.len()
            + varint_len(v)
            + value.len()
            + 1;
        let b = &mut self.buf;
        put_varint(b, body as i64);
        b.push(0); // attributes
        put_varint(b, ts_delta);
        put_varint(b, offset_delta);
        put_varint(b, k);
        b.extend_from_slice(key);
        put_varint(b, v);
        b.extend_from_slice(value);
        b.push(0); // header count
        self.records += 1;
    }

    /// Compresses the records if asked (into `scratch`, then back), writes the header with its
    /// CRC-32C, and returns the batch.
    fn seal(
        &mut self,
        compression: Compression,
        scratch: &mut BytesMut,
    ) -> Result<&[u8], WireError> {
        // The enum's values are the codec ids of the attributes field.
        let codec = compression as i16;
        if compression != Compression::None {
            scratch.clear();
            let records = &self.buf[HEADER_LEN..];
            let fill = |tmp: &mut BytesMut| {
                tmp.extend_from_slice(records);
                Ok(())
            };
            match compression {
                Compression::Gzip => compression::Gzip::compress(scratch, fill),
                Compression::Snappy => compression::Snappy::compress(scratch, fill),
                Compression::Lz4 => compression::Lz4::compress(scratch, fill),
                Compression::Zstd => compression::Zstd::compress(scratch, fill),
                Compression::None => Ok(()),
            }
            .map_err(|e| WireError::Protocol(format!("compress: {e}")))?;
            self.buf.truncate(HEADER_LEN);
            self.buf.extend_from_slice(scratch);
        }
        let batch_length = i32::try_from(self.buf.len() - LOG_OVERHEAD)
            .map_err(|_| WireError::Protocol("batch over 2 GiB".into()))?;
        let header = BatchHeader {
            base_offset: 0,
            batch_length,
            partition_leader_epoch: -1,
            magic: 2,
            crc: 0,            // written below, over the finished batch
            attributes: codec, // and create-time timestamps, not transactional
            last_offset_delta: self.records - 1,
            base_timestamp: self.base_ts,
            max_timestamp: self.max_ts,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            record_count: self.records,
        };
        let h = self
            .buf
            .first_chunk_mut::<HEADER_LEN>()
            .expect("an open batch starts with room for its header");
        header.write(h);
        batch::write_crc(&mut self.buf);
        Ok(&self.buf)
    }

    /// Empties the batch, keeping its buffer.
    fn reset(&mut self) {
        self.buf.truncate(HEADER_LEN);
        self.records = 0;
        self.max_ts = i64::MIN;
    }
}

/// Bytes of `v` as a zigzag varint.
fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends `v` as a zigzag varint.
fn put_varint(b: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        b.push((z as u8) | 0x80);
        z >>= 7;
    }
    b.push(z as u8);
}

/// The producer. See the module documentation.
#[derive(Debug)]
pub struct WireProducer {
    stream: TcpStream,
    topics: Vec<String>,
    partitions: usize,
    /// Batches per (topic index × partitions + partition).
    batches: Vec<OpenBatch>,
    flight: Arc<(Mutex<Flight>, Condvar)>,
    reader: Option<JoinHandle<()>>,
    next_id: i32,
    compression: Compression,
    /// Reused: the request's bytes other than the batches, and compressed records.
    frame: Vec<u8>,
    scratch: BytesMut,
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
            batches: (0..topics.len() * partitions)
                .map(|_| OpenBatch::new())
                .collect(),
            flight,
            reader: Some(reader),
            next_id: 0,
            compression,
            frame: Vec::new(),
            scratch: BytesMut::new(),
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
        if self.batches[slot].buf.len() + key.len() + value.len() > MAX_BATCH_BYTES {
            self.flush()?;
        }
        self.batches[slot].push(key, value, ts);
        Ok(())
    }

    /// Sends every pending record in one Produce request, waiting while too many requests are
    /// in flight. Fails on the first error the broker or the connection reported so far.
    ///
    /// The request is written with one vectored write: its framing from `frame`, each batch
    /// from its own buffer, so records are copied once on their way to the socket.
    pub fn flush(&mut self) -> Result<(), WireError> {
        if self.batches.iter().all(OpenBatch::is_empty) {
            return self.check();
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        // Partitions with records, per topic that has any.
        let n = self.partitions;
        let live: Vec<(usize, Vec<usize>)> = (0..self.topics.len())
            .map(|t| {
                let ps = (0..n).filter(|p| !self.batches[t * n + p].is_empty());
                (t, ps.collect::<Vec<_>>())
            })
            .filter(|(_, ps)| !ps.is_empty())
            .collect();
        // The framing, and after which byte of it each batch goes: (end of framing, slot).
        let mut f = std::mem::take(&mut self.frame);
        f.clear();
        f.extend_from_slice(&[0; 4]); // size, written last
        f.extend_from_slice(&(ApiKey::Produce as i16).to_be_bytes());
        f.extend_from_slice(&PRODUCE_VERSION.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        put_string(&mut f, CLIENT_ID);
        f.extend_from_slice(&(-1i16).to_be_bytes()); // no transactional id
        f.extend_from_slice(&(-1i16).to_be_bytes()); // acks = all
        f.extend_from_slice(&TIMEOUT_MS.to_be_bytes());
        put_len(&mut f, live.len())?;
        let mut cuts = Vec::new();
        let mut size = 0usize;
        for (t, ps) in &live {
            put_string(&mut f, &self.topics[*t]);
            put_len(&mut f, ps.len())?;
            for &p in ps {
                let slot = t * n + p;
                let batch = self.batches[slot].seal(self.compression, &mut self.scratch)?;
                f.extend_from_slice(&i32::try_from(p).unwrap_or(i32::MAX).to_be_bytes());
                put_len(&mut f, batch.len())?;
                size += batch.len();
                cuts.push((f.len(), slot));
            }
        }
        let total = i32::try_from(f.len() - 4 + size)
            .map_err(|_| WireError::Protocol("request over 2 GiB".into()))?;
        f[..4].copy_from_slice(&total.to_be_bytes());
        self.frame = f;
        let mut parts = Vec::with_capacity(2 * cuts.len());
        let mut from = 0;
        for &(cut, slot) in &cuts {
            parts.push(IoSlice::new(&self.frame[from..cut]));
            parts.push(IoSlice::new(&self.batches[slot].buf));
            from = cut;
        }
        let written = self
            .wait_for_room()
            .and_then(|()| Ok(write_all_vectored(&mut &self.stream, &mut parts)?));
        drop(parts);
        for &(_, slot) in &cuts {
            self.batches[slot].reset();
        }
        // A broken connection is usually the broker's answer to something: report that.
        written.map_err(|e| self.check().err().unwrap_or(e))
    }

    /// Flushes, waits for every answer and closes the connection (on drop).
    pub fn finish(mut self) -> Result<(), WireError> {
        self.flush()?;
        drop(self.wait_below(1));
        self.check()
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

/// Client id sent with every request.
const CLIENT_ID: &str = "recjoin-gen";

/// Appends a protocol string (i16 length, bytes).
fn put_string(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&i16::try_from(s.len()).unwrap_or(i16::MAX).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

/// Appends an i32 array or bytes length.
fn put_len(b: &mut Vec<u8>, n: usize) -> Result<(), WireError> {
    let n = i32::try_from(n).map_err(|_| WireError::Protocol("length over 2 GiB".into()))?;
    b.extend_from_slice(&n.to_be_bytes());
    Ok(())
}

/// Writes all of `parts` (the standard library's `write_all_vectored` is not stable yet).
fn write_all_vectored(w: &mut impl Write, mut parts: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    while !parts.is_empty() {
        match w.write_vectored(parts) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
    /// librdkafka consumer with their partitions, order, keys, values and timestamps (out of
    /// order within a batch too), uncompressed and with each codec; a topic the broker does not
    /// have is refused with its error code.
    #[test]
    fn produced_records_read_back_and_refusals_are_errors() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = BrokerConfig::new("127.0.0.1:0".parse().expect("addr"), dir.path());
        config.log.durability = Durability::Fsync;
        let broker = rt.block_on(BrokerServer::start(config)).expect("broker");
        let bootstrap = broker.local_addr().to_string();
        for compression in [
            Compression::None,
            Compression::Lz4,
            Compression::Zstd,
            Compression::Gzip,
            Compression::Snappy,
        ] {
            let topics = ["a", "b"].map(|t| format!("{t}-{compression:?}"));
            for t in &topics {
                broker
                    .broker()
                    .logs()
                    .create_topic(t, 2, Default::default())
                    .expect("topic");
            }
            read_back(&bootstrap, &topics, compression);
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

    #[test]
    fn varints_are_zigzag_and_their_lengths_match() {
        let cases: [(i64, &[u8]); 6] = [
            (0, &[0]),
            (-1, &[1]),
            (1, &[2]),
            (63, &[126]),
            (-65, &[129, 1]),
            (300, &[216, 4]),
        ];
        for (v, bytes) in cases {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b, bytes, "{v}");
        }
        for v in [i64::MIN, i64::MAX, -64, 64, 1 << 20, -(1 << 35), 1 << 62] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }

    /// Sends 400 records of 20 KiB to `topics` (2 partitions each) and reads them back.
    fn read_back(bootstrap: &str, topics: &[String; 2], compression: Compression) {
        // Timestamps go back and forth, as the generator's do.
        let ts = |i: usize| 1_700_000_000_000 + ((i * 7919) % 1000) as i64;
        let mut producer =
            WireProducer::connect(bootstrap, &[&topics[0], &topics[1]], 2, compression)
                .expect("connect");
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
                .send(i % 2, (i / 2) % 2, key.as_bytes(), &value(i), ts(i))
                .expect("send");
            if i % 97 == 0 {
                producer.flush().expect("flush");
            }
        }
        producer.finish().expect("finish");

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("wire-test-{compression:?}"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut assignment = TopicPartitionList::new();
        for t in topics {
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
            assert_eq!(m.timestamp().to_millis(), Some(ts(i)), "timestamp of {key}");
            assert_eq!(
                (m.topic(), m.partition()),
                (topics[i % 2].as_str(), ((i / 2) % 2) as i32)
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
    }
}
