//! One joiner member of the consumer group (DESIGN.md sections 3 and 4).
//!
//! A single thread owns the engine. It reads the feature and action topics (co-partitioned, `range`
//! assignor, so a member gets the same partition numbers of both) in batches, pushes records into
//! the engine, advances the watermark, produces what closed, and every `commit_interval` takes
//! the engine's low-water offsets — never the read position — together with a mark of the output
//! sent so far; it commits those offsets once everything sent before the mark is acknowledged. The loop
//! never stops to wait for the output: acknowledgements (an fsync on the broker) arrive while it
//! goes on reading, and the commit follows them.
//!
//! Rebalances are eager: on revocation the member flushes its output, commits, and drops all state
//! before the callback returns, so it writes nothing to partitions it no longer owns; on assignment
//! it starts a fresh engine, reads the last sample of each of its output partitions, and the
//! consumer resumes from the committed low-water offsets, rebuilding the state by re-reading.
//! Samples at or before an output partition's last sample are suppressed: they were written before.
//!
//! Records are read in batches from a queue of the member's own ([`BatchQueue`]): before each
//! assignment the rebalance callback splits the assigned partitions off the consumer's queue, and
//! the loop forwards them to its queue right after the callback. The consumer's queue then carries
//! only events (rebalances, commit results, errors, statistics), which `BaseConsumer::poll` serves
//! at the start of every step; the batch read never runs a rebalance itself. Records read in a
//! step belong to the assignment in force during that step (a revocation waits for the next poll,
//! after they were pushed) and librdkafka discards those fetched for an assignment that has
//! since ended.
//!
//! Known limit without transactions: a member paused past its session timeout (a zombie) may still
//! write until it notices it was fenced.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use super::metrics::MemberMetrics;
use super::output::{Outputs, SentMark};
use super::tail::{SampleOrder, last_sample};
use super::watermark::Watermarks;
use crate::config::Settings;
use crate::engine::{CloseReason, Engine, InputRecord, Output, Source, TopicKind};
use crate::kafka::batch::{BatchMessage, BatchQueue, split_partition};
use crate::kafka::payloads::copy_value;

/// Records pulled from the consumer per engine step.
const BATCH: usize = 8192;
/// Bytes of the buffers that input payloads are copied into ([`copy_value`]).
const PAYLOAD_CHUNK: usize = 64 * 1024;
/// Longest wait for the first record of a step; also how often an idle member checks its
/// watermark and pending commit.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
const TAIL_TIMEOUT: Duration = Duration::from_secs(30);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
const LAG_TIMEOUT: Duration = Duration::from_secs(5);

/// Live counts for the status line and metrics.
#[derive(Debug, Default)]
pub struct MemberStats {
    /// Records read from the inputs.
    pub records_in: AtomicU64,
    /// Samples produced.
    pub samples_out: AtomicU64,
    /// Samples produced that closed on the idle rule.
    pub samples_idle: AtomicU64,
    /// Samples produced that closed at the hard deadline.
    pub samples_hard_timeout: AtomicU64,
    /// Negatives produced.
    pub samples_no_action: AtomicU64,
    /// Samples not produced because an earlier owner had written them.
    pub samples_suppressed: AtomicU64,
    /// Keys with an open window.
    pub pending_keys: AtomicU64,
    /// Dead letters produced.
    pub dead_letters: AtomicU64,
    /// Current watermark (ms), or `i64::MIN`.
    pub watermark: std::sync::atomic::AtomicI64,
}

/// Low-water offsets taken at a moment, to commit once the output sent before it is acknowledged.
struct PendingCommit {
    mark: SentMark,
    offsets: TopicPartitionList,
}

/// Everything the poll loop and the rebalance callbacks share (same thread; the mutex is never
/// contended).
struct State {
    settings: Settings,
    client: ClientConfig,
    engine: Engine,
    out: Output,
    outputs: Outputs,
    watermarks: Watermarks,
    suppress: HashMap<u32, SampleOrder>,
    assigned: BTreeSet<u32>,
    /// Next offset to read of each input partition, from the records pushed since assignment.
    next_offset: HashMap<(TopicKind, u32), i64>,
    /// When silent partitions' lag was last checked.
    last_lag_check: Option<Instant>,
    /// Offsets waiting for their output's acknowledgement.
    pending_commit: Option<PendingCommit>,
    /// Input partitions split off the consumer's queue for an assignment, to forward to the
    /// member's batch queue.
    to_forward: Vec<(TopicKind, u32)>,
    stats: Arc<MemberStats>,
    metrics: MemberMetrics,
}

impl State {
    /// Produces what the engine closed, suppressing samples an earlier owner already wrote.
    fn emit(&mut self) -> anyhow::Result<()> {
        let now_ms = crate::now_ms();
        for s in self.out.samples.drain(..) {
            // Derived order of `SampleOrder`: window end, then key (compared without copying the
            // key).
            let written_before = self.suppress.get(&s.partition).is_some_and(|last| {
                (s.window_end, &s.key[..]) <= (last.window_end, last.key.as_slice())
            });
            if written_before {
                self.stats
                    .samples_suppressed
                    .fetch_add(1, Ordering::Relaxed);
                self.metrics.sample_suppressed();
                continue;
            }
            self.outputs.sample(&s)?;
            self.metrics.sample(&s, now_ms);
            self.stats.samples_out.fetch_add(1, Ordering::Relaxed);
            let by_reason = match s.close_reason {
                CloseReason::Idle => &self.stats.samples_idle,
                CloseReason::HardTimeout => &self.stats.samples_hard_timeout,
                CloseReason::NoAction => &self.stats.samples_no_action,
            };
            by_reason.fetch_add(1, Ordering::Relaxed);
        }
        for d in self.out.dead_letters.drain(..) {
            self.outputs.dead_letter(&d)?;
            self.metrics.dead_letter(&d);
            self.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
        }
        for l in self.out.late.drain(..) {
            self.outputs.late(&l)?;
            self.metrics.late(&l);
        }
        Ok(())
    }

    /// Waits for all output, then commits the low-water offset of every assigned partition.
    fn commit(
        &mut self,
        consumer: &BaseConsumer<MemberContext>,
        mode: CommitMode,
    ) -> anyhow::Result<()> {
        self.pending_commit = None;
        self.outputs.flush(FLUSH_TIMEOUT)?;
        let tpl = self.low_water_offsets()?;
        if tpl.count() > 0 {
            consumer.commit(&tpl, mode)?;
        }
        Ok(())
    }

    /// Takes the low-water offsets now and the output sent so far, unless a commit is already
    /// waiting for its output.
    fn start_commit(&mut self) -> anyhow::Result<()> {
        if self.pending_commit.is_none() {
            // The mark first: everything sent before the offsets were taken is in it.
            let mark = self.outputs.mark();
            let offsets = self.low_water_offsets()?;
            self.pending_commit = Some(PendingCommit { mark, offsets });
        }
        Ok(())
    }

    /// Commits the waiting offsets if their output is acknowledged; `Ok(false)` if there was
    /// nothing to commit yet. A failed delivery is an [`super::output::OutputError`].
    fn finish_commit(&mut self, consumer: &BaseConsumer<MemberContext>) -> anyhow::Result<bool> {
        let Some(pending) = &self.pending_commit else {
            return Ok(false);
        };
        if !self.outputs.delivered(&pending.mark)? {
            return Ok(false);
        }
        let pending = self.pending_commit.take();
        if let Some(p) = pending
            && p.offsets.count() > 0
        {
            consumer.commit(&p.offsets, CommitMode::Async)?;
        }
        Ok(true)
    }

    /// The engine's low-water offset of every assigned input partition it has read from.
    fn low_water_offsets(&self) -> anyhow::Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for &p in &self.assigned {
            for (kind, topic) in [
                (TopicKind::Feature, &self.settings.topics.features),
                (TopicKind::Action, &self.settings.topics.actions),
            ] {
                if let Some(low) = self.engine.low_water(kind, p) {
                    let offset = i64::try_from(low).unwrap_or(i64::MAX);
                    tpl.add_partition_offset(
                        topic,
                        i32::try_from(p).unwrap_or(i32::MAX),
                        Offset::Offset(offset),
                    )?;
                }
            }
        }
        Ok(tpl)
    }

    /// Forgets everything: a fresh engine and watermark, nothing assigned.
    fn reset(&mut self) -> anyhow::Result<()> {
        self.engine = Engine::new(self.settings.join.clone())?;
        self.metrics.engine_replaced();
        self.out.clear();
        self.watermarks.clear();
        self.suppress.clear();
        self.assigned.clear();
        self.next_offset.clear();
        self.last_lag_check = None;
        self.pending_commit = None;
        self.to_forward.clear();
        Ok(())
    }

    /// After a run of records from one input partition (`last` the offset of its last record):
    /// the next offset to read and the partition's event-time progress.
    fn end_run(&mut self, kind: TopicKind, partition: u32, last: u64, now: Instant) {
        let next = i64::try_from(last).map_or(i64::MAX, |o| o + 1);
        self.next_offset.insert((kind, partition), next);
        self.watermarks.observe(
            kind,
            partition,
            self.engine.max_event_time(kind, partition),
            now,
        );
    }

    /// Tells the watermark which silent partitions are caught up (read position at the high
    /// watermark), so that only those are left out of it. Silence alone does not mean caught
    /// up: after an assignment or during a stall a partition with a backlog is silent too, and
    /// leaving it out would let the watermark (in live mode the wall clock) overtake records not
    /// yet read, which would then be late. Rate-limited; a broker round trip per silent
    /// partition.
    fn check_silent_partitions(&mut self, consumer: &BaseConsumer<MemberContext>, now: Instant) {
        let every = (self.settings.join.idle_partition_timeout / 2).max(Duration::from_millis(200));
        if self
            .last_lag_check
            .is_some_and(|t| now.saturating_duration_since(t) < every)
        {
            return;
        }
        let silent = self.watermarks.silent_unconfirmed(now);
        if silent.is_empty() {
            return;
        }
        self.last_lag_check = Some(now);
        // Partitions not read since the assignment start at their committed offset.
        let mut unread = TopicPartitionList::new();
        for &(kind, p) in &silent {
            if !self.next_offset.contains_key(&(kind, p)) {
                let _ = unread.add_partition(
                    self.settings.topics.input_topic(kind),
                    i32::try_from(p).unwrap_or(0),
                );
            }
        }
        let committed = if unread.count() > 0 {
            match consumer.committed_offsets(unread, LAG_TIMEOUT) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read committed offsets");
                    return;
                }
            }
        } else {
            None
        };
        for (kind, p) in silent {
            let topic = self.settings.topics.input_topic(kind).to_owned();
            let partition = i32::try_from(p).unwrap_or(i32::MAX);
            let (low, high) = match consumer.fetch_watermarks(&topic, partition, LAG_TIMEOUT) {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(topic, partition, error = %e, "cannot read the high watermark");
                    continue;
                }
            };
            let position = match self.next_offset.get(&(kind, p)) {
                Some(&next) => next,
                None => match committed
                    .as_ref()
                    .and_then(|c| c.find_partition(&topic, partition))
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(n)) => n.max(low),
                    // No committed offset: `auto.offset.reset = earliest`.
                    _ => low,
                },
            };
            self.watermarks.set_caught_up(kind, p, position >= high);
        }
    }
}

/// The consumer context: runs the rebalance protocol on the poll thread.
pub struct MemberContext {
    state: Arc<Mutex<State>>,
    /// Bumped on every rebalance, so records polled before it are discarded.
    epoch: AtomicU64,
    /// Set when a callback failed: the member must stop rather than risk duplicates or loss.
    failed: AtomicBool,
}

impl std::fmt::Debug for MemberContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberContext")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl ClientContext for MemberContext {
    fn stats(&self, statistics: Statistics) {
        super::metrics::consumer_lag(&statistics);
    }
}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Rebalance::Assign(tpl) = rebalance {
            // Split the partitions off before they are assigned: their records must reach the
            // member's batch queue only, never the consumer's (see the module doc).
            let mut state = self.state.lock();
            for e in tpl.elements() {
                let Some(kind) = state.settings.topics.input_kind(e.topic()) else {
                    continue;
                };
                let Ok(p) = u32::try_from(e.partition()) else {
                    continue;
                };
                if let Err(err) = split_partition(consumer, e.topic(), e.partition()) {
                    tracing::error!(
                        topic = e.topic(),
                        partition = p,
                        error = %err,
                        "cannot split the partition's queue"
                    );
                    self.failed.store(true, Ordering::SeqCst);
                    return;
                }
                state.to_forward.push((kind, p));
            }
        }
        if let Rebalance::Revoke(_) = rebalance {
            let mut state = self.state.lock();
            // Stop writing before the rebalance completes: flush (every sample written so far
            // is durable before the next owner reads the output tail), commit, forget. Only a
            // failed flush is fatal: a failed commit (e.g. the membership was lost when the
            // broker restarted) just means the next owner re-reads from older low-water offsets,
            // and suppression by the output tail keeps that exactly once.
            if let Err(e) = state.outputs.flush(FLUSH_TIMEOUT) {
                tracing::error!(error = %e, "could not flush output before handing over partitions");
                self.failed.store(true, Ordering::SeqCst);
                return;
            }
            if let Err(e) = state.commit(consumer, CommitMode::Sync) {
                tracing::warn!(error = %e, "could not commit before handing over partitions");
            }
            if let Err(e) = state.reset() {
                tracing::error!(error = %e, "could not reset the joiner state");
                self.failed.store(true, Ordering::SeqCst);
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        let mut state = self.state.lock();
        let now = Instant::now();
        let partitions: BTreeSet<u32> = tpl
            .elements()
            .iter()
            .filter_map(|e| u32::try_from(e.partition()).ok())
            .collect();
        for &p in &partitions {
            for kind in [TopicKind::Feature, TopicKind::Action] {
                state.watermarks.assign(kind, p, now);
            }
            let topic = state.settings.topics.samples.clone();
            match last_sample(
                &state.client,
                &topic,
                i32::try_from(p).unwrap_or(i32::MAX),
                TAIL_TIMEOUT,
            ) {
                Ok(Some(last)) => {
                    state.suppress.insert(p, last);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(partition = p, error = %e, "cannot read the output tail");
                    self.failed.store(true, Ordering::SeqCst);
                }
            }
        }
        tracing::info!(?partitions, "assigned");
        super::metrics::assigned(partitions.len());
        state.assigned = partitions;
    }
}

/// The engine's input record for a record read from `topic` (`None` for another topic or an
/// impossible partition or offset), its value copied into `payloads` ([`copy_value`]).
fn input_record(
    settings: &Settings,
    topic: &str,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    value: &[u8],
    payloads: &mut BytesMut,
) -> Option<InputRecord> {
    let kind = settings.topics.input_kind(topic)?;
    let (Ok(partition), Ok(offset)) = (u32::try_from(partition), u64::try_from(offset)) else {
        return None;
    };
    Some(InputRecord {
        source: Source {
            kind,
            partition,
            offset,
        },
        timestamp,
        value: copy_value(payloads, value, PAYLOAD_CHUNK),
    })
}

/// Runs one member until `stop` is set, then emits what has closed, commits and leaves the group.
pub fn run(
    settings: Settings,
    live: bool,
    stop: Arc<AtomicBool>,
    stats: Arc<MemberStats>,
) -> anyhow::Result<()> {
    let client = settings.kafka.client_config();
    super::topology::check_and_create(&client, &settings.topics)?;
    let engine = Engine::new(settings.join.clone())?;
    let watermarks = Watermarks::new(
        settings.join.max_out_of_orderness,
        settings.join.idle_partition_timeout,
        live,
    );
    let state = Arc::new(Mutex::new(State {
        outputs: Outputs::new(&client, settings.topics.clone())?,
        client: client.clone(),
        engine,
        out: Output::default(),
        watermarks,
        suppress: HashMap::new(),
        assigned: BTreeSet::new(),
        next_offset: HashMap::new(),
        last_lag_check: None,
        pending_commit: None,
        to_forward: Vec::new(),
        stats: Arc::clone(&stats),
        metrics: MemberMetrics::new(&settings.topics),
        settings: settings.clone(),
    }));
    let context = MemberContext {
        state: Arc::clone(&state),
        epoch: AtomicU64::new(0),
        failed: AtomicBool::new(false),
    };
    let consumer: BaseConsumer<MemberContext> = client
        .clone()
        .set("group.id", &settings.kafka.group)
        .set("partition.assignment.strategy", "range")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("queued.min.messages", "200000")
        .set("fetch.min.bytes", "65536")
        .set("fetch.wait.max.ms", "10")
        .set(
            "statistics.interval.ms",
            settings
                .kafka
                .properties
                .get("statistics.interval.ms")
                .map_or(super::metrics::STATISTICS_INTERVAL_MS, String::as_str),
        )
        .create_with_context(context)?;
    consumer.subscribe(&[&settings.topics.features, &settings.topics.actions])?;

    let mut records = BatchQueue::new(&consumer, BATCH)?;
    let mut batch: Vec<InputRecord> = Vec::with_capacity(BATCH);
    // Payloads of a batch are copied into one buffer and handed out as slices of it (the engine
    // copies what it keeps), instead of an allocation per record.
    let mut payloads = BytesMut::with_capacity(PAYLOAD_CHUNK);
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        anyhow::ensure!(
            !consumer.context().failed.load(Ordering::SeqCst),
            "rebalance handling failed"
        );
        batch.clear();
        // Events first: a rebalance runs its callbacks inside `poll` (which returns after one).
        // Records never reach the consumer's queue (their partitions are split off before they
        // are assigned); should one arrive, it is taken, unless a rebalance ran after it: the
        // state it belonged to was dropped.
        let mut epoch = consumer.context().epoch.load(Ordering::SeqCst);
        loop {
            let polled = consumer.poll(Duration::ZERO);
            let now_epoch = consumer.context().epoch.load(Ordering::SeqCst);
            if now_epoch != epoch {
                batch.clear();
                epoch = now_epoch;
            }
            match polled {
                None => break,
                Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                Some(Ok(m)) => {
                    if let Some(record) = input_record(
                        &settings,
                        m.topic(),
                        m.partition(),
                        m.offset(),
                        m.timestamp().to_millis(),
                        m.payload().unwrap_or_default(),
                        &mut payloads,
                    ) {
                        batch.push(record);
                    }
                }
            }
        }
        anyhow::ensure!(
            !consumer.context().failed.load(Ordering::SeqCst),
            "rebalance handling failed"
        );
        let to_forward = std::mem::take(&mut state.lock().to_forward);
        for (kind, p) in to_forward {
            records.forward_partition(settings.topics.input_topic(kind), i32::try_from(p)?)?;
        }
        // Wait (up to the poll timeout) for the first record, then take what is queued.
        let timeout = if batch.is_empty() {
            POLL_TIMEOUT
        } else {
            Duration::ZERO
        };
        let mut push = |m: BatchMessage<'_>| {
            if let Some(record) = input_record(
                &settings,
                m.topic(),
                m.partition(),
                m.offset(),
                m.timestamp(),
                m.payload(),
                &mut payloads,
            ) {
                batch.push(record);
            }
        };
        let mut read = |timeout: Duration, max: usize| {
            if let Err(e) = records.read(timeout, max, &mut push) {
                tracing::warn!(error = %e, "consumer error");
            }
        };
        read(timeout, 1);
        read(Duration::ZERO, BATCH - 1);
        let mut guard = state.lock();
        let s = &mut *guard;
        let now = Instant::now();
        s.metrics.records_read(&batch);
        let mut run: Option<(TopicKind, u32, u64)> = None;
        for rec in batch.drain(..) {
            let source = (rec.source.kind, rec.source.partition);
            if let Some((kind, p, last)) = run
                && (kind, p) != source
            {
                s.end_run(kind, p, last, now);
            }
            run = Some((source.0, source.1, rec.source.offset));
            s.engine.push(rec, &mut s.out);
        }
        if let Some((kind, p, last)) = run {
            s.end_run(kind, p, last, now);
        }
        s.stats.records_in.store(
            s.engine.counters().features_in + s.engine.counters().actions_in,
            Ordering::Relaxed,
        );
        s.check_silent_partitions(&consumer, now);
        if let Some(w) = s.watermarks.compute(now, crate::now_ms()) {
            s.engine.advance_watermark(w, &mut s.out);
            s.stats.watermark.store(w, Ordering::Relaxed);
        }
        s.stats
            .pending_keys
            .store(s.engine.stats().pending_keys, Ordering::Relaxed);
        s.metrics.engine(&s.engine, crate::now_ms());
        s.emit()?;
        if last_commit.elapsed() >= s.settings.kafka.commit_interval {
            s.start_commit()?;
            last_commit = Instant::now();
        }
        // A failed delivery is fatal (output may be missing); a failed commit only delays the
        // low water (e.g. while the broker restarts).
        match s.finish_commit(&consumer) {
            Ok(false) => {}
            Ok(true) => s.metrics.committed(true, crate::now_ms()),
            Err(e) if e.downcast_ref::<super::output::OutputError>().is_some() => return Err(e),
            Err(e) => {
                s.metrics.committed(false, crate::now_ms());
                tracing::warn!(error = %e, "commit failed");
            }
        }
    }
    // Graceful stop: everything that has closed is already produced; wait for it and commit.
    let mut s = state.lock();
    s.commit(&consumer, CommitMode::Sync)?;
    drop(s);
    consumer.unsubscribe();
    Ok(())
}
