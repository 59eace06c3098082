//! `recjoin bench e2e`: generator → built-in broker → joiner → broker in one process on this
//! machine, at increasing input rates; prints one JSON line with the highest sustained
//! `records_per_s` and the p99 emit delay at that rate.
//!
//! # Set-up
//!
//! - The broker has its defaults, as `recjoin up` runs it: fsync durability, so the producers'
//!   `acks=all` wait for an fsync and consumers read only fsynced records.
//! - The generator stands in for the recommenders' producers, which would run on other machines,
//!   so it should take little of this machine's CPU: it produces through the built-in `wire`
//!   client (`--gen-client`, [`crate::kafka::wire_producer`]), uncompressed
//!   (`--gen-compression`). Through librdkafka the generator and its producer thread took ~0.7
//!   of the two cores at 250k records/s. The joiner's output producer compresses with lz4 (its
//!   default).
//! - Event time is the wall clock: a record's `ts` is when it was generated, and it reaches the
//!   broker up to [`JITTER`] later (uniformly), as from services that log within half a second.
//! - Join windows are shortened so that samples close while a step runs: idle 2 s, hard (and
//!   negative) 10 s, idle partition 1 s. The out-of-orderness bound is [`OUT_OF_ORDERNESS`]
//!   (1 s), twice the arrival jitter. A live joiner cannot emit a window before its watermark
//!   passes the window's end, and the watermark trails the newest event time by this bound, so
//!   the emit delay is at least the bound plus the pipeline's latency; with the default 5 s
//!   bound it would be over 5 s by construction. Every other setting is the default (all
//!   negatives are emitted, `negative_sample_rate = 1`).
//!
//! # What is measured
//!
//! Each rate runs for `--seconds` of traffic. The generator (one thread, `gen`) produces the
//! offered rate live; about 0.96 of the nominal rate arrives in a short run, because actions come
//! seconds to minutes after their impressions (the nominal rate counts them all).
//!
//! - A rate is **sustained** when the generator produced at least 90 % of the target and the
//!   joiner had read every record within [`CATCH_UP`] of the end of the traffic.
//! - `records_per_s` is what the joiner read during the step divided by the time from the
//!   step's start until it had read the last record.
//! - `cpu_cores` and `cpu_us_per_record` count this process's CPU time; `machine_cores` counts
//!   every CPU's busy time (from `/proc/stat`, kernel threads included) and `steal_cores` the time
//!   the hypervisor gave to other guests. When `cpu_cores` is well below the two cores and
//!   `machine_cores` too, the pipeline waits, not computes.
//! - The **emit delay** of a sample is its record timestamp (set when the joiner produced it)
//!   minus its `window_end`. Measured over the samples whose window ends in the step while its
//!   traffic still closes it: from the step's start to its end minus the out-of-orderness bound
//!   and the jitter. Windows ending later are closed by the idle-partition rule after the
//!   traffic stops, which measures the stop, not the rate.
//!
//! Between steps the bench waits for every window of the step to close, so that a step's load
//! does not spill into the next.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use broker_core::broker::BrokerConfig;
use broker_core::server::BrokerServer;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::bench::json_number;
use crate::cli::bench_broker::{cpu_time, machine_cpu_time};
use crate::cli::generate::{GenArgs, GenStats};
use crate::cli::join::spawn_member;
use crate::config::Settings;
use crate::service::member::MemberStats;
use crate::service::tail::window_end_of;

/// Arguments of `recjoin bench e2e`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Example:\n  recjoin bench e2e --rates 50000,100000,200000,300000 --seconds 30"
)]
pub struct BenchE2eArgs {
    /// Input rates to try (records/s), in increasing order; stops at the first not sustained.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "50000,100000,150000,200000,250000,275000,300000"
    )]
    pub rates: Vec<f64>,
    /// Seconds of traffic per rate (the first 10 s fill the windows; samples close after that).
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Partitions of the input topics.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// The generator's producer compression (`recjoin gen --compression`); it stands in for the
    /// recommenders' producers, which would run on other machines. `none` by default: the
    /// `wire` client compresses with `kafka-protocol`'s codecs, whose lz4 is several times
    /// slower than librdkafka's (measured: the generator then fell to 98k records/s).
    #[arg(long, default_value = "none")]
    pub gen_compression: String,
    /// The generator's Kafka client (`recjoin gen --client`). `wire`, the default, keeps the
    /// stand-in for other machines' producers from taking much of this machine's CPU.
    #[arg(long, value_enum, default_value = "wire")]
    pub gen_client: crate::cli::generate::GenClient,
}

/// Input records per impression of the generator (features + actions + a few duplicates).
const RECORDS_PER_IMPRESSION: f64 = 1.07;
/// Records reach the broker up to this long after their event time.
pub const JITTER: Duration = Duration::from_millis(500);
/// The joiner's `max_out_of_orderness` in the bench.
pub const OUT_OF_ORDERNESS: Duration = Duration::from_secs(1);
/// A sustained rate leaves the joiner at most this far behind when the traffic ends.
pub const CATCH_UP: Duration = Duration::from_secs(2);
/// Share of the target rate the generator must produce for the step to count.
const PRODUCED_SHARE: f64 = 0.9;
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
const HARD_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_PARTITION_TIMEOUT: Duration = Duration::from_secs(1);
/// How long to wait for the joiner to read a step's records before giving up on it.
const READ_LIMIT: Duration = Duration::from_secs(30);

/// One rate's outcome.
#[derive(Debug, Clone)]
struct Step {
    target: f64,
    produced_per_s: f64,
    records_per_s: f64,
    caught_up_after_ms: Option<u128>,
    /// CPU seconds of the whole process (generator, broker, joiner) per second of the step,
    /// from its start until the joiner had read the last record: cores in use.
    cpu_cores: f64,
    /// The same CPU time per record read, in microseconds.
    cpu_us_per_record: f64,
    /// Busy cores of the whole machine over the same time, where `/proc/stat` exists; above
    /// `cpu_cores` by what kernel threads (writeback, the journal) and other processes took.
    machine_cores: Option<f64>,
    /// Cores the hypervisor gave to other guests over the same time (`/proc/stat` steal).
    steal_cores: Option<f64>,
    sustained: bool,
    delays: Vec<f64>,
}

impl Step {
    fn json(&self) -> String {
        let caught_up = self
            .caught_up_after_ms
            .map_or_else(|| "null".to_owned(), |ms| ms.to_string());
        format!(
            "{{\"target_records_per_s\":{:.0},\"produced_per_s\":{:.0},\"records_per_s\":{:.0},\"caught_up_after_ms\":{caught_up},\"cpu_cores\":{:.2},\"cpu_us_per_record\":{:.2},\"machine_cores\":{},\"steal_cores\":{},\"sustained\":{},\"samples\":{},\"emit_delay_p50_ms\":{},\"emit_delay_p99_ms\":{},\"emit_delay_max_ms\":{}}}",
            self.target,
            self.produced_per_s,
            self.records_per_s,
            self.cpu_cores,
            self.cpu_us_per_record,
            json_number(self.machine_cores, 2),
            json_number(self.steal_cores, 2),
            self.sustained,
            self.delays.len(),
            json_ms(percentile(&self.delays, 0.5)),
            json_ms(percentile(&self.delays, 0.99)),
            json_ms(percentile(&self.delays, 1.0)),
        )
    }
}

/// Runs the benchmark and returns the JSON line.
pub async fn run(args: BenchE2eArgs) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let mut config = BrokerConfig::new("127.0.0.1:0".parse()?, dir.path());
    config.default_partitions = args.partitions;
    config.group.initial_rebalance_delay = Duration::ZERO;
    let broker = BrokerServer::start(config).await?;
    let bootstrap = broker.local_addr().to_string();

    let mut settings = Settings::from_env(None, &[("kafka.bootstrap", bootstrap.clone())])?;
    settings.join.idle_timeout = IDLE_TIMEOUT;
    settings.join.hard_timeout = HARD_TIMEOUT;
    settings.join.negative_timeout = None;
    settings.join.idle_partition_timeout = IDLE_PARTITION_TIMEOUT;
    settings.join.max_out_of_orderness = OUT_OF_ORDERNESS;
    for topic in [
        &settings.topics.features,
        &settings.topics.actions,
        &settings.topics.samples,
    ] {
        let broker_logs = broker.broker().logs();
        if broker_logs.topic(topic).is_none() {
            broker_logs.create_topic(topic, args.partitions, Default::default())?;
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(MemberStats::default());
    let member = spawn_member(
        settings.clone(),
        true,
        Arc::clone(&stop),
        Arc::clone(&stats),
    )?;
    let reader = SampleReader::new(&bootstrap, &settings.topics.samples)?;

    let mut steps = Vec::new();
    let mut produced_total = 0u64;
    for &rate in &args.rates {
        let step = run_step(
            &args,
            rate,
            &bootstrap,
            &settings,
            &stats,
            &reader,
            &mut produced_total,
        )
        .await?;
        let sustained = step.sustained;
        steps.push(step);
        if !sustained {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    member
        .await
        .map_err(|_| anyhow::anyhow!("joiner thread panicked"))??;
    broker.shutdown().await?;
    let best = steps.iter().rev().find(|s| s.sustained);
    let (records_per_s, p99) = best.map_or((0.0, f64::NAN), |s| {
        (s.records_per_s, percentile(&s.delays, 0.99))
    });
    Ok(format!(
        "{{\"bench\":\"e2e\",\"records_per_s\":{records_per_s:.0},\"emit_delay_p99_ms\":{},\"steps\":[{}]}}",
        json_ms(p99),
        steps.iter().map(Step::json).collect::<Vec<_>>().join(",")
    ))
}

/// Runs one rate: traffic for `args.seconds`, then waits for the joiner and measures.
async fn run_step(
    args: &BenchE2eArgs,
    rate: f64,
    bootstrap: &str,
    settings: &Settings,
    stats: &MemberStats,
    reader: &SampleReader,
    produced_total: &mut u64,
) -> anyhow::Result<Step> {
    let samples_from = reader.end_offsets()?;
    let read_before = stats.records_in.load(Ordering::Relaxed);
    let seconds = Duration::from_secs(args.seconds);
    let gen_args = GenArgs {
        bootstrap: bootstrap.to_owned(),
        rate: rate / RECORDS_PER_IMPRESSION,
        duration: Some(seconds),
        count: None,
        seed: 7,
        start_ts: None,
        jitter: JITTER,
        speed: 1.0,
        features: settings.topics.features.clone(),
        actions: settings.topics.actions.clone(),
        compression: args.gen_compression.clone(),
        client: args.gen_client,
    };
    let started_ms = crate::now_ms();
    let started = Instant::now();
    let cpu_before = cpu_time();
    let machine_before = machine_cpu_time();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("gen".into())
        .spawn(move || {
            let _ = tx.send(crate::cli::generate::run(
                &gen_args,
                &AtomicBool::new(false),
                &GenStats::default(),
            ));
        })?;
    let produced = rx
        .await
        .map_err(|_| anyhow::anyhow!("generator thread panicked"))??;
    *produced_total += produced;
    let produced_per_s = produced as f64 / seconds.as_secs_f64();

    let traffic_end = started + seconds;
    let read_by = Instant::now().max(traffic_end) + READ_LIMIT;
    while stats.records_in.load(Ordering::Relaxed) < *produced_total && Instant::now() < read_by {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let read_at = Instant::now();
    let cpu_secs = cpu_time() - cpu_before;
    let machine = machine_before.zip(machine_cpu_time());
    let read = stats
        .records_in
        .load(Ordering::Relaxed)
        .saturating_sub(read_before);
    let all_read = stats.records_in.load(Ordering::Relaxed) >= *produced_total;
    let caught_up_after_ms =
        all_read.then(|| read_at.saturating_duration_since(traffic_end).as_millis());
    let sustained = produced_per_s >= PRODUCED_SHARE * rate
        && caught_up_after_ms.is_some_and(|ms| ms <= CATCH_UP.as_millis());
    let step_secs = read_at.duration_since(started).as_secs_f64();
    let records_per_s = read as f64 / step_secs;

    // Let every window of the step close (hard timeout + idle partition + margin), then read
    // the samples the step produced.
    tokio::time::sleep(HARD_TIMEOUT + IDLE_PARTITION_TIMEOUT + Duration::from_secs(2)).await;
    let closed_by_traffic_before = started_ms + i64::try_from(seconds.as_millis())?
        - i64::try_from((OUT_OF_ORDERNESS + JITTER).as_millis())?;
    let delays = reader.emit_delays(&samples_from, started_ms, closed_by_traffic_before)?;
    Ok(Step {
        target: rate,
        produced_per_s,
        records_per_s,
        caught_up_after_ms,
        cpu_cores: cpu_secs / step_secs,
        cpu_us_per_record: cpu_secs * 1e6 / read.max(1) as f64,
        machine_cores: machine.map(|((busy0, _), (busy1, _))| (busy1 - busy0) / step_secs),
        steal_cores: machine.map(|((_, steal0), (_, steal1))| (steal1 - steal0) / step_secs),
        sustained,
        delays,
    })
}

/// Reads the samples topic.
struct SampleReader {
    consumer: BaseConsumer,
    topic: String,
    partitions: Vec<i32>,
}

impl SampleReader {
    fn new(bootstrap: &str, topic: &str) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "recjoin-bench-reader")
            .set("enable.auto.commit", "false")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .first()
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        anyhow::ensure!(!partitions.is_empty(), "topic {topic} does not exist");
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
            partitions,
        })
    }

    /// The offset after the last sample of every partition.
    fn end_offsets(&self) -> anyhow::Result<Vec<(i32, i64)>> {
        self.partitions
            .iter()
            .map(|&p| {
                let (_, high) =
                    self.consumer
                        .fetch_watermarks(&self.topic, p, Duration::from_secs(10))?;
                Ok((p, high))
            })
            .collect()
    }

    /// Emit delays (record timestamp − window_end, ms) of the samples after `from` whose window
    /// ended in `[from_ms, to_ms)`.
    fn emit_delays(
        &self,
        from: &[(i32, i64)],
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<Vec<f64>> {
        let to = self.end_offsets()?;
        let mut tpl = TopicPartitionList::new();
        let mut remaining = 0i64;
        for (&(p, start), &(_, end)) in from.iter().zip(&to) {
            remaining += end - start;
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(start))?;
        }
        self.consumer.assign(&tpl)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut delays = Vec::new();
        while remaining > 0 && Instant::now() < deadline {
            let Some(message) = self.consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message?;
            remaining -= 1;
            let (Some(ts), Some(end)) = (
                message.timestamp().to_millis(),
                window_end_of(message.payload().unwrap_or_default()),
            ) else {
                continue;
            };
            if (from_ms..to_ms).contains(&end) {
                delays.push((ts - end) as f64);
            }
        }
        self.consumer.unassign()?;
        Ok(delays)
    }
}

fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Milliseconds for JSON, whole (`null` when undefined, e.g. a percentile of no delays).
fn json_ms(x: f64) -> String {
    json_number(x.is_finite().then_some(x), 0)
}
