//! Replay: rebuilding the samples of a past time range from the input topics, exactly as the
//! live joiner wrote them (DESIGN.md section 3, determinism), or under a new label definition.
//!
//! The engine is the live one; what differs is only how input is read: from offsets found by
//! timestamp, partitions aligned in event time ([`reader`]), the watermark driven by event time
//! alone, and at the end of the input every remaining window closes. Co-partitioned partition
//! pairs are independent (a key's records are all in one pair), so they are split over worker
//! threads, each with its own consumer and engine.

pub mod plan;
pub mod reader;
mod report;
mod sink;
pub mod tune;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::BaseConsumer;

use crate::config::Settings;
use crate::engine::{CloseReason, Engine, InputRecord, Output, TopicKind};
use plan::{PartitionPlan, ReadBounds, TimeRange, format_time};
use reader::{Feed, ReadProgress};
pub use sink::Destination;
use sink::{SampleWriter, Sink};

/// Totals of a replay, printed at the end and by `recjoin bench replay`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Input records read.
    pub records_read: u64,
    /// Input value bytes read.
    pub bytes_read: u64,
    /// Samples written (feature time in the range), by close reason: idle, hard timeout, no action.
    pub samples: [u64; 3],
    /// Records that did not parse (the live joiner sent them to the dead-letter topic).
    pub dead_letters: u64,
    /// Records older than the watermark.
    pub late: u64,
    /// Second features of a pending key, and repeated actions.
    pub duplicates: u64,
    /// Actions whose feature never came.
    pub expired_orphans: u64,
    /// Wall time of the read.
    pub elapsed: Duration,
}

impl Summary {
    /// Samples written, all reasons.
    pub fn samples_written(&self) -> u64 {
        self.samples.iter().sum()
    }

    /// Input records per second of wall time.
    pub fn records_per_s(&self) -> f64 {
        self.records_read as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn add(&mut self, other: &Summary) {
        self.records_read += other.records_read;
        self.bytes_read += other.bytes_read;
        for (a, b) in self.samples.iter_mut().zip(other.samples) {
            *a += b;
        }
        self.dead_letters += other.dead_letters;
        self.late += other.late;
        self.duplicates += other.duplicates;
        self.expired_orphans += other.expired_orphans;
    }

    /// A human-readable summary, one fact per line.
    pub fn report(&self) -> String {
        let mb = self.bytes_read as f64 / 1e6;
        format!(
            "records read      {} ({mb:.1} MB) in {:.1} s: {:.0} records/s, {:.1} MB/s\n\
             samples written   {} (idle {}, hard_timeout {}, no_action {})\n\
             dead letters      {}\n\
             late              {}\n\
             duplicates        {}\n\
             expired orphans   {}",
            self.records_read,
            self.elapsed.as_secs_f64(),
            self.records_per_s(),
            mb / self.elapsed.as_secs_f64().max(1e-9),
            self.samples_written(),
            self.samples[0],
            self.samples[1],
            self.samples[2],
            self.dead_letters,
            self.late,
            self.duplicates,
            self.expired_orphans,
        )
    }
}

/// Index of a close reason in [`Summary::samples`].
fn reason_index(r: CloseReason) -> usize {
    match r {
        CloseReason::Idle => 0,
        CloseReason::HardTimeout => 1,
        CloseReason::NoAction => 2,
    }
}

/// The engine of one worker, writing the samples of the range.
struct ReplayFeed<'a> {
    engine: Engine,
    out: Output,
    range: TimeRange,
    writer: SampleWriter<'a>,
    samples: [u64; 3],
}

impl Feed for ReplayFeed<'_> {
    fn push(&mut self, rec: InputRecord) -> anyhow::Result<()> {
        self.engine.push(rec, &mut self.out);
        // Dead letters and late records were the live joiner's to write; they are counted.
        self.out.dead_letters.clear();
        self.out.late.clear();
        Ok(())
    }

    fn max_event_time(&self, kind: TopicKind, partition: u32) -> Option<i64> {
        self.engine.max_event_time(kind, partition)
    }

    fn advance(&mut self, watermark: i64) -> anyhow::Result<()> {
        self.engine.advance_watermark(watermark, &mut self.out);
        for s in self.out.samples.drain(..) {
            if self.range.contains(s.feature_ts) {
                self.samples[reason_index(s.close_reason)] += 1;
                self.writer.write(&s)?;
            }
        }
        self.out.clear();
        Ok(())
    }
}

impl ReplayFeed<'_> {
    fn summary(&mut self, progress: &ReadProgress) -> anyhow::Result<Summary> {
        self.writer.finish()?;
        let c = self.engine.counters();
        Ok(Summary {
            records_read: progress.records.load(Ordering::Relaxed),
            bytes_read: progress.bytes.load(Ordering::Relaxed),
            samples: self.samples,
            dead_letters: c.dead_letters,
            late: c.late,
            duplicates: c.duplicate_features + c.duplicate_actions,
            expired_orphans: c.expired_orphans,
            elapsed: Duration::ZERO,
        })
    }
}

/// Splits partition plans over at most `workers` workers, keeping each partition pair together.
pub(crate) fn split_pairs(plans: &[PartitionPlan], workers: usize) -> Vec<Vec<PartitionPlan>> {
    let workers = workers.max(1);
    let mut groups = vec![Vec::new(); workers];
    for p in plans {
        groups[p.partition as usize % workers].push(p.clone());
    }
    groups.retain(|g| !g.is_empty());
    groups
}

/// Worker threads to use by default: one per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Finds the start and end offsets of the inputs for `bounds`.
pub(crate) fn plan_inputs(
    client: &ClientConfig,
    settings: &Settings,
    bounds: &ReadBounds,
) -> anyhow::Result<Vec<PartitionPlan>> {
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", "recjoin-replay")
        .set("enable.auto.commit", "false")
        .create()?;
    plan::partition_plans(
        &consumer,
        [
            (TopicKind::Feature, settings.topics.features.as_str()),
            (TopicKind::Action, settings.topics.actions.as_str()),
        ],
        bounds,
    )
}

/// Reads `plans` with up to `workers` threads, each feeding its own feed made by `make_feed`;
/// returns every worker's feed and read counters once all are done.
pub(crate) fn read_in_workers<F: Feed + Send>(
    client: &ClientConfig,
    plans: &[PartitionPlan],
    bounds: &ReadBounds,
    workers: usize,
    show_progress: bool,
    make_feed: impl Fn() -> anyhow::Result<F> + Sync,
) -> anyhow::Result<Vec<(F, ReadProgress)>> {
    let total: u64 = plans.iter().map(PartitionPlan::records).sum();
    let groups = split_pairs(plans, workers);
    let progress: Vec<ReadProgress> = groups.iter().map(|_| ReadProgress::default()).collect();
    let feeds = std::thread::scope(|scope| -> anyhow::Result<Vec<F>> {
        let handles: Vec<_> = groups
            .iter()
            .zip(&progress)
            .map(|(group, progress)| {
                let make_feed = &make_feed;
                scope.spawn(move || -> anyhow::Result<F> {
                    let mut feed = make_feed()?;
                    reader::read_aligned(client, group, bounds, &mut feed, progress)?;
                    Ok(feed)
                })
            })
            .collect();
        show_progress_until_done(&handles, &progress, total, show_progress);
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("replay worker panicked"))?
            })
            .collect()
    })?;
    Ok(feeds.into_iter().zip(progress).collect())
}

/// Replays `range` from the input topics of `settings` into `dest` with `workers` threads;
/// shows a progress bar on stderr when `show_progress` (and stderr is a terminal).
pub fn replay(
    settings: &Settings,
    range: TimeRange,
    dest: &Destination,
    workers: usize,
    show_progress: bool,
) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        range.from < range.to,
        "empty range: --from must be before --to"
    );
    let client = settings.kafka.client_config();
    let join = &settings.join;
    let remembered = join.closed_key_retention.unwrap_or(join.idle_timeout);
    let bounds = ReadBounds::new(
        range,
        join.hard_timeout + remembered,
        join.hard_timeout,
        join.max_out_of_orderness,
    );
    let plans = plan_inputs(&client, settings, &bounds)?;
    tracing::debug!(?bounds, ?plans, "replay plan");
    let sink = Sink::open(dest, &client, &settings.topics)?;
    let started = Instant::now();
    let feeds = read_in_workers(&client, &plans, &bounds, workers, show_progress, || {
        Ok(ReplayFeed {
            engine: Engine::new(join.clone())?,
            out: Output::default(),
            range,
            writer: sink.writer(),
            samples: [0; 3],
        })
    })?;
    let mut summary = Summary::default();
    for (mut feed, progress) in feeds {
        summary.add(&feed.summary(&progress)?);
    }
    sink.finish()?;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Draws a progress bar (records, records/s, event time reached, ETA) until every worker ends.
/// Without a bar it returns at once (the caller joins the workers); with one it notices the end
/// within [`DONE_POLL`], not one redraw period later (the replay's time includes this wait).
pub(crate) fn show_progress_until_done<T>(
    handles: &[std::thread::ScopedJoinHandle<'_, T>],
    progress: &[ReadProgress],
    total: u64,
    show: bool,
) {
    /// How often the bar is redrawn.
    const REDRAW: Duration = Duration::from_millis(200);
    /// How often the workers are checked for the end.
    const DONE_POLL: Duration = Duration::from_millis(5);
    if !show {
        return;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} records, {per_sec}, event time {msg}, ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut drawn = Instant::now();
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(DONE_POLL);
        if drawn.elapsed() < REDRAW {
            continue;
        }
        drawn = Instant::now();
        let read: u64 = progress
            .iter()
            .map(|p| p.records.load(Ordering::Relaxed))
            .sum();
        let reached = progress
            .iter()
            .map(|p| p.watermark.load(Ordering::Relaxed))
            .min()
            .unwrap_or(i64::MIN);
        bar.set_position(read.min(total));
        if reached > i64::MIN && reached < i64::MAX {
            bar.set_message(format_time(reached));
        }
    }
    bar.finish_and_clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(kind: TopicKind, partition: u32) -> PartitionPlan {
        PartitionPlan {
            kind,
            topic: format!("{kind:?}"),
            partition,
            start: 0,
            end: 10,
        }
    }

    #[test]
    fn partition_pairs_stay_together_across_workers() {
        let plans: Vec<_> = (0..5)
            .flat_map(|p| [plan(TopicKind::Feature, p), plan(TopicKind::Action, p)])
            .collect();
        let groups = split_pairs(&plans, 2);
        assert_eq!(groups.len(), 2);
        for g in &groups {
            for p in g {
                assert!(
                    g.iter()
                        .any(|q| q.partition == p.partition && q.kind != p.kind)
                );
            }
        }
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 10);
        assert_eq!(split_pairs(&plans[..2], 8).len(), 1);
    }
}
