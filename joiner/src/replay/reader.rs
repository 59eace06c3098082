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
//! leaks into the consumer's main queue), so a chunk reads exactly the partition chosen.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::plan::{PartitionPlan, ReadBounds};
use crate::engine::{InputRecord, Source, TopicKind};

/// Records read from a partition before the reader looks again for the one furthest behind.
const CHUNK: usize = 4096;
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
struct Part {
    plan: PartitionPlan,
    queue: PartitionQueue<rdkafka::consumer::DefaultConsumerContext>,
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
    let consumer: Arc<BaseConsumer> = Arc::new(
        client
            .clone()
            .set("group.id", "recjoin-replay")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "10")
            .set("fetch.max.bytes", "67108864")
            .set("max.partition.fetch.bytes", "8388608")
            .set("queued.max.messages.kbytes", "262144")
            .create()?,
    );
    let mut parts = Vec::with_capacity(plans.len());
    let mut assignment = TopicPartitionList::new();
    for plan in plans {
        let partition = i32::try_from(plan.partition)?;
        let queue = consumer
            .split_partition_queue(&plan.topic, partition)
            .with_context(|| format!("no queue for {}/{partition}", plan.topic))?;
        assignment.add_partition_offset(&plan.topic, partition, Offset::Offset(plan.start))?;
        parts.push(Part {
            plan: plan.clone(),
            queue,
            done: plan.start >= plan.end,
        });
    }
    consumer.assign(&assignment)?;

    while let Some(i) = furthest_behind(&parts, feed) {
        let target = parts
            .iter()
            .enumerate()
            .filter(|(j, p)| *j != i && !p.done)
            .map(|(_, p)| feed.max_event_time(p.plan.kind, p.plan.partition))
            .min()
            .map(|t| t.map_or(i64::MIN, |t| t.saturating_add(ALIGN_MS)))
            .unwrap_or(i64::MAX);
        read_chunk(&consumer, &mut parts[i], bounds, target, feed, progress)?;
        if let Some(w) = watermark(&parts, bounds, feed) {
            progress.watermark.store(w, Ordering::Relaxed);
            feed.advance(w)?;
        }
    }
    progress.watermark.store(i64::MAX, Ordering::Relaxed);
    feed.advance(i64::MAX)
}

/// The unfinished partition with the least event time (one that has delivered none first).
fn furthest_behind(parts: &[Part], feed: &impl Feed) -> Option<usize> {
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
fn watermark(parts: &[Part], bounds: &ReadBounds, feed: &impl Feed) -> Option<i64> {
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
    part: &mut Part,
    bounds: &ReadBounds,
    target: i64,
    feed: &mut impl Feed,
    progress: &ReadProgress,
) -> anyhow::Result<()> {
    let (kind, partition) = (part.plan.kind, part.plan.partition);
    let until = bounds.until(kind).saturating_add(bounds.slack_ms);
    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut n = 0;
    while n < CHUNK {
        let timeout = if n == 0 {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        let Some(polled) = part.queue.poll(timeout) else {
            // Serve the client's callbacks (errors) while waiting. Records never arrive there
            // (every partition's queue was split off before assignment); if one did, its order
            // relative to its partition would be lost, so fail rather than guess.
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
            if n == 0 {
                anyhow::ensure!(
                    started.elapsed() < STALL,
                    "{}/{partition}: nothing read for {STALL:?} before offset {}",
                    part.plan.topic,
                    part.plan.end
                );
                continue;
            }
            break;
        };
        n += 1;
        let m = polled.with_context(|| format!("reading {}/{partition}", part.plan.topic))?;
        let offset = m.offset();
        if offset >= part.plan.end {
            part.done = true;
            break;
        }
        let value = m.payload().unwrap_or_default();
        records += 1;
        bytes += value.len() as u64;
        feed.push(InputRecord {
            source: Source {
                kind,
                partition,
                offset: u64::try_from(offset)?,
            },
            timestamp: m.timestamp().to_millis(),
            value: Bytes::copy_from_slice(value),
        })?;
        if offset + 1 >= part.plan.end {
            part.done = true;
            break;
        }
        if n.is_multiple_of(64) {
            let t = feed.max_event_time(kind, partition).unwrap_or(i64::MIN);
            if t > until {
                part.done = true;
                break;
            }
            if t > target {
                break;
            }
        }
    }
    if feed
        .max_event_time(kind, partition)
        .is_some_and(|t| t > until)
    {
        part.done = true;
    }
    progress.records.fetch_add(records, Ordering::Relaxed);
    progress.bytes.fetch_add(bytes, Ordering::Relaxed);
    Ok(())
}
