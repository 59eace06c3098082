//! Reading input partitions in event-time-aligned order.
//!
//! A replay reads history as fast as the broker serves it, so without care one partition could
//! run minutes of event time ahead of another, and the watermark — the minimum over partitions —
//! would then either hold back everything (memory grows) or, if taken per partition, declare the
//! slow partition's records late. Instead the reader always continues the partition whose event
//! time is furthest behind, a chunk at a time, and computes the watermark as the minimum over the
//! partitions not yet finished: no record read this way is late unless it was out of order by
//! more than `max_out_of_orderness` within its own partition (which the live joiner would have
//! declared late too).
//!
//! Each partition has its own librdkafka queue (split before assignment, so no fetched record
//! leaks into the consumer's main queue), so a chunk reads exactly the partition chosen. Records
//! are taken from it with librdkafka's batch call ([`crate::kafka::batch`]) and their values
//! copied into one shared buffer, handed to the feed as `Bytes` slices of it: no allocation per
//! record.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::plan::{PartitionPlan, ReadBounds};
use crate::engine::{InputRecord, Source, TopicKind};
use crate::kafka::batch::BatchQueue;
use crate::kafka::payloads::copy_value;

/// Records read from a partition before the reader looks again for the one furthest behind.
const CHUNK: usize = 4096;
/// Records taken per batch call; a chunk's stop conditions are checked between calls.
const BATCH: usize = 64;
/// Size of the buffers record values are copied into. The feed drops the slices it is given
/// (the engine copies what it keeps), so the buffer is normally reused in place once full.
const PAYLOAD_BUFFER: usize = 256 * 1024;
/// A chunk also ends once its partition is this far (event time) ahead of the next one behind.
const ALIGN_MS: i64 = 1000;
/// A partition that delivers nothing for this long while records are known to be there fails
/// the read.
const STALL: Duration = Duration::from_secs(60);

/// What the reader feeds: one engine (replay) or several (tune).
pub trait Feed {
    /// Takes one record.
    fn push(&mut self, rec: InputRecord) -> anyhow::Result<()>;
    /// Largest event time pushed from an input partition, `None` before any.
    fn max_event_time(&self, kind: TopicKind, partition: u32) -> Option<i64>;
    /// Moves the watermark to `watermark` (`i64::MAX` at the end: everything closes).
    fn advance(&mut self, watermark: i64) -> anyhow::Result<()>;
}

/// Progress counters one reader updates, for a progress bar on another thread.
#[derive(Debug)]
pub struct ReadProgress {
    /// Records read.
    pub records: AtomicU64,
    /// Value bytes read.
    pub bytes: AtomicU64,
    /// The reader's watermark (`i64::MIN` before any).
    pub watermark: AtomicI64,
}

impl Default for ReadProgress {
    fn default() -> Self {
        Self {
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
        }
    }
}

/// One partition being read.
struct Part<'c> {
    plan: PartitionPlan,
    queue: BatchQueue<'c>,
    done: bool,
}

/// Reads `plans` (partitions of both inputs, a co-partitioned subset) from their start offsets
/// to their bounds, feeding records in event-time-aligned order and advancing the watermark
/// after every chunk; ends with `advance(i64::MAX)`.
pub fn read_aligned(
    client: &ClientConfig,
    plans: &[PartitionPlan],
    bounds: &ReadBounds,
    feed: &mut impl Feed,
    progress: &ReadProgress,
) -> anyhow::Result<()> {
    // Prefetch per partition (librdkafka's queue thresholds apply to each partition queue):
    // about two chunks' worth, refilled by fetches of 1 MB per partition, re-checked every 5 ms
    // when full (the default back-off of 1 s would starve a small queue). librdkafka's defaults
    // (100,000 records per partition) held ~1 GB of records for 16 partitions, most of it
    // freshly faulted-in memory: ~300,000 more page faults a replay of 5M records, ~10 % of
    // its CPU.
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", "recjoin-replay")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "10")
        .set("fetch.max.bytes", "8388608")
        .set("max.partition.fetch.bytes", "1048576")
        .set("queued.min.messages", "10000")
        .set("queued.max.messages.kbytes", "8192")
        .set("fetch.queue.backoff.ms", "5")
        .create()?;
    let mut parts = Vec::with_capacity(plans.len());
    let mut assignment = TopicPartitionList::new();
    for plan in plans {
        let partition = i32::try_from(plan.partition)?;
        let queue = BatchQueue::partition(&consumer, &plan.topic, partition, BATCH)?;
        assignment.add_partition_offset(&plan.topic, partition, Offset::Offset(plan.start))?;
        parts.push(Part {
            plan: plan.clone(),
            queue,
            done: plan.start >= plan.end,
        });
    }
    consumer.assign(&assignment)?;

    let mut payloads = BytesMut::new();
    while let Some(i) = furthest_behind(&parts, feed) {
        let target = parts
            .iter()
            .enumerate()
            .filter(|(j, p)| *j != i && !p.done)
            .map(|(_, p)| feed.max_event_time(p.plan.kind, p.plan.partition))
            .min()
            .map(|t| t.map_or(i64::MIN, |t| t.saturating_add(ALIGN_MS)))
            .unwrap_or(i64::MAX);
        read_chunk(
            &consumer,
            &mut parts[i],
            bounds,
            target,
            feed,
            progress,
            &mut payloads,
        )?;
        if let Some(w) = watermark(&parts, bounds, feed) {
            progress.watermark.store(w, Ordering::Relaxed);
            feed.advance(w)?;
        }
    }
    progress.watermark.store(i64::MAX, Ordering::Relaxed);
    feed.advance(i64::MAX)
}

/// The unfinished partition with the least event time (one that has delivered none first).
fn furthest_behind(parts: &[Part<'_>], feed: &impl Feed) -> Option<usize> {
    parts
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.done)
        .min_by_key(|(_, p)| {
            feed.max_event_time(p.plan.kind, p.plan.partition)
                .unwrap_or(i64::MIN)
        })
        .map(|(i, _)| i)
}

/// The minimum over unfinished partitions of their event time minus the out-of-orderness
/// allowance; `None` while one of them has delivered no event time.
fn watermark(parts: &[Part<'_>], bounds: &ReadBounds, feed: &impl Feed) -> Option<i64> {
    let mut min = i64::MAX;
    for p in parts.iter().filter(|p| !p.done) {
        let t = feed.max_event_time(p.plan.kind, p.plan.partition)?;
        min = min.min(t.saturating_sub(bounds.slack_ms));
    }
    Some(min)
}

/// Reads up to a chunk of one partition: waits for its first record, then takes what is queued
/// until the chunk is full, the partition is `ALIGN_MS` past `target`, or it is done.
fn read_chunk(
    consumer: &BaseConsumer,
    part: &mut Part<'_>,
    bounds: &ReadBounds,
    target: i64,
    feed: &mut impl Feed,
    progress: &ReadProgress,
    payloads: &mut BytesMut,
) -> anyhow::Result<()> {
    let (kind, partition, end) = (part.plan.kind, part.plan.partition, part.plan.end);
    let until = bounds.until(kind).saturating_add(bounds.slack_ms);
    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut n = 0;
    let mut done = false;
    while n < CHUNK && !done {
        // The first call waits for one record; later ones take what is queued.
        let (timeout, max) = if n == 0 {
            (Duration::from_millis(100), 1)
        } else {
            (Duration::ZERO, BATCH.min(CHUNK - n))
        };
        let mut failed = None;
        let taken = part
            .queue
            .read(timeout, max, |m| {
                // Records after the end offset, or after a failed push, are dropped: the
                // partition is done, or the read fails.
                if done || failed.is_some() {
                    return;
                }
                let offset = m.offset();
                let Ok(source_offset) = u64::try_from(offset) else {
                    failed = Some(anyhow::anyhow!("negative offset {offset}"));
                    return;
                };
                if offset >= end {
                    done = true;
                    return;
                }
                let value = m.payload();
                records += 1;
                bytes += value.len() as u64;
                let rec = InputRecord {
                    source: Source {
                        kind,
                        partition,
                        offset: source_offset,
                    },
                    timestamp: m.timestamp(),
                    value: copy_value(payloads, value, PAYLOAD_BUFFER),
                };
                if let Err(e) = feed.push(rec) {
                    failed = Some(e);
                }
                if offset + 1 >= end {
                    done = true;
                }
            })
            .with_context(|| format!("reading {}/{partition}", part.plan.topic))?;
        if let Some(e) = failed {
            return Err(e);
        }
        if taken == 0 {
            serve_consumer_queue(consumer)?;
            if n == 0 {
                anyhow::ensure!(
                    started.elapsed() < STALL,
                    "{}/{partition}: nothing read for {STALL:?} before offset {end}",
                    part.plan.topic,
                );
                continue;
            }
            break;
        }
        n += taken;
        if !done {
            let t = feed.max_event_time(kind, partition).unwrap_or(i64::MIN);
            if t > until {
                done = true;
            } else if t > target {
                break;
            }
        }
    }
    if done
        || feed
            .max_event_time(kind, partition)
            .is_some_and(|t| t > until)
    {
        part.done = true;
    }
    progress.records.fetch_add(records, Ordering::Relaxed);
    progress.bytes.fetch_add(bytes, Ordering::Relaxed);
    Ok(())
}

/// Serves the client's callbacks (errors) while a partition queue is empty. Records never arrive
/// in the consumer's queue (every partition's queue was split off before assignment); if one
/// did, its order relative to its partition would be lost, so this fails rather than guess.
fn serve_consumer_queue(consumer: &BaseConsumer) -> anyhow::Result<()> {
    match consumer.poll(Duration::ZERO) {
        Some(Err(e)) => tracing::warn!(error = %e, "replay consumer error"),
        Some(Ok(m)) => anyhow::bail!(
            "{}/{} offset {}: record outside its partition queue",
            m.topic(),
            m.partition(),
            m.offset()
        ),
        None => {}
    }
    Ok(())
}
