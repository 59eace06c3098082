//! `recjoin bench broker`: produce then consume N records of B bytes through rdkafka against any
//! Kafka-compatible broker, on one partition of a fresh topic, and print one JSON line.
//!
//! Produce throughput is first enqueue to last delivery report; latency is enqueue to delivery
//! report, sampled on every 16th record (two clock reads per record, ~60 ns on a VM, would be a
//! tenth of the client's per-record work). Consume throughput is first record to the N-th record,
//! as `rdkafka_performance` counts it. The client's own CPU time (user + system) is reported per
//! phase, so a run shows whether the client or the broker was the limit.
//!
//! The client settings are the same whatever the broker: batches of up to 10,000 records / 1 MB
//! lingering 5 ms, librdkafka's default local queue of 100,000 records (deeper only adds latency
//! and fresh memory to fault in), fetches of up to 8 MB per partition, a prefetch queue that never
//! pauses fetching, and librdkafka's batch consume call ([`crate::kafka::batch`]) unless
//! `--consumer poll`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::bench::json_number;

/// Every how many records the produce latency is sampled.
const LATENCY_SAMPLE_EVERY: usize = 16;

/// How long the produce loop sleeps when librdkafka's queue is full, or while it waits for the
/// last delivery reports.
///
/// `BaseProducer::poll(t)` and `flush` keep polling until `t` has passed even when the reports
/// are in, and spin for the last millisecond of it (the timeout is passed down in whole
/// milliseconds): a 1 ms poll on a full queue burnt a third of the client's CPU, and `flush`
/// waited in 100 ms steps. Zero-timeout polls with short sleeps in between avoid both.
const BACKOFF: Duration = Duration::from_micros(100);

/// Messages taken per batch consume call.
const CONSUME_BATCH: usize = 10_000;

/// Arguments of `recjoin bench broker`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  recjoin bench broker --bootstrap 127.0.0.1:9092 --records 5000000 --size 100 --acks 1
  # the phases apart (e.g. to read the broker's CPU time in between):
  recjoin bench broker --bootstrap 127.0.0.1:9092 --topic t --phase produce
  recjoin bench broker --bootstrap 127.0.0.1:9092 --topic t --phase consume
  # side by side with tansu and rdkafka_performance: bench/broker-vs-tansu.sh")]
pub struct BenchBrokerArgs {
    /// Kafka bootstrap address.
    #[arg(long)]
    pub bootstrap: String,
    /// Records to produce and then consume.
    #[arg(long, default_value_t = 2_000_000)]
    pub records: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// `1` or `all`.
    #[arg(long, default_value = "1")]
    pub acks: String,
    /// Topic to use (default: a fresh one per run). `--phase consume` needs one that holds at
    /// least `--records` records from offset 0.
    #[arg(long)]
    pub topic: Option<String>,
    /// Which phases to run.
    #[arg(long, value_enum, default_value_t = Phase::Both)]
    pub phase: Phase,
    /// How the consumer takes messages from librdkafka: `batch` (librdkafka's batch call, as
    /// `rdkafka_performance -B` does) or `poll` (one `BaseConsumer::poll` per message, as the
    /// joiner reads).
    #[arg(long, value_enum, default_value_t = ConsumeMode::Batch)]
    pub consumer: ConsumeMode,
}

/// The phases `recjoin bench broker` runs; the JSON fields of a skipped phase are `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// Produce, then consume what was produced.
    Both,
    /// Produce only (to a fresh topic, or to `--topic`, created if missing).
    Produce,
    /// Consume `--records` records of `--topic` from the beginning.
    Consume,
}

/// How the benchmark's consumer takes messages from librdkafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConsumeMode {
    /// Up to 10,000 messages per `rd_kafka_consume_batch_queue` call.
    Batch,
    /// One message per `BaseConsumer::poll` call.
    Poll,
}

/// Collects the sampled records' latencies, from enqueue (nanoseconds since `base`, carried in
/// the delivery opaque; 0 for records not sampled) to their delivery report.
struct BenchContext {
    base: Instant,
    micros: parking_lot::Mutex<Vec<u32>>,
    failed: AtomicUsize,
}

impl ClientContext for BenchContext {}

impl ProducerContext for BenchContext {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, enqueued_ns: usize) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if enqueued_ns == 0 {
            return;
        }
        let sent = Duration::from_nanos(enqueued_ns as u64);
        let latency = self.base.elapsed().saturating_sub(sent);
        self.micros
            .lock()
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
    }
}

/// Results of the produce phase.
struct Produced {
    secs: f64,
    cpu_secs: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Results of the consume phase.
struct Consumed {
    secs: f64,
    cpu_secs: f64,
    bytes: usize,
}

/// Runs the benchmark and returns the JSON line.
pub fn run(args: &BenchBrokerArgs) -> anyhow::Result<String> {
    let topic = match (&args.topic, args.phase) {
        (Some(topic), _) => topic.clone(),
        (None, Phase::Consume) => anyhow::bail!("--phase consume needs --topic"),
        (None, _) => format!("recjoin-bench-{}", std::process::id()),
    };
    let produced = if args.phase == Phase::Consume {
        None
    } else {
        create_topic(&args.bootstrap, &topic)?;
        Some(produce(args, &topic)?)
    };
    let consumed = if args.phase == Phase::Produce {
        None
    } else {
        Some(consume(args, &topic)?)
    };

    let records = args.records as f64;
    let mb = (args.records * args.size) as f64 / 1e6;
    let p = produced.as_ref();
    let c = consumed.as_ref();
    Ok(format!(
        "{{\"records\":{},\"size\":{},\"acks\":\"{}\",\"consumer\":\"{}\",\"produce_records_per_s\":{},\"consume_records_per_s\":{},\
\"produce_mb_per_s\":{},\"consume_mb_per_s\":{},\"produce_p50_ms\":{},\"produce_p99_ms\":{},\
\"produce_client_cpu_s\":{},\"consume_client_cpu_s\":{},\"consumed_bytes\":{}}}",
        args.records,
        args.size,
        args.acks,
        match args.consumer {
            ConsumeMode::Batch => "batch",
            ConsumeMode::Poll => "poll",
        },
        json_number(p.map(|p| records / p.secs), 0),
        json_number(c.map(|c| records / c.secs), 0),
        json_number(p.map(|p| mb / p.secs), 1),
        json_number(c.map(|c| mb / c.secs), 1),
        json_number(p.map(|p| p.p50_ms), 2),
        json_number(p.map(|p| p.p99_ms), 2),
        json_number(p.map(|p| p.cpu_secs), 2),
        json_number(c.map(|c| c.cpu_secs), 2),
        json_number(c.map(|c| c.bytes as f64), 0),
    ))
}

fn produce(args: &BenchBrokerArgs, topic: &str) -> anyhow::Result<Produced> {
    let value = vec![b'x'; args.size];
    let context = BenchContext {
        base: Instant::now(),
        micros: parking_lot::Mutex::new(Vec::with_capacity(
            args.records / LATENCY_SAMPLE_EVERY + 1,
        )),
        failed: AtomicUsize::new(0),
    };
    let producer: BaseProducer<BenchContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("acks", &args.acks)
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "100000")
        .set("compression.type", "none")
        .create_with_context(context)?;
    // Connect and learn the partition's leader before the clock starts.
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let base = producer.context().base;
    let cpu_before = cpu_time();
    let started = Instant::now();
    for i in 0..args.records {
        let enqueued_ns = if i % LATENCY_SAMPLE_EVERY == 0 {
            usize::try_from(base.elapsed().as_nanos())
                .unwrap_or(usize::MAX)
                .max(1)
        } else {
            0
        };
        let mut record = BaseRecord::<(), [u8], usize>::with_opaque_to(topic, enqueued_ns)
            .payload(&value[..])
            .partition(0);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) if is_queue_full(&e) => {
                    producer.poll(Duration::ZERO);
                    std::thread::sleep(BACKOFF);
                    record = r;
                }
                Err((e, _)) => anyhow::bail!("produce failed: {e}"),
            }
        }
        if i % 4096 == 4095 {
            producer.poll(Duration::ZERO);
        }
    }
    wait_delivered(&producer, Duration::from_secs(300))?;
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = cpu_time() - cpu_before;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{failed} records failed to produce");

    let mut micros = std::mem::take(&mut *producer.context().micros.lock());
    micros.sort_unstable();
    let pct = |q: f64| {
        let i = ((micros.len() as f64 - 1.0) * q).round() as usize;
        micros.get(i).map_or(0.0, |m| f64::from(*m) / 1000.0)
    };
    Ok(Produced {
        secs,
        cpu_secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

fn consume(args: &BenchBrokerArgs, topic: &str) -> anyhow::Result<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        // Big fetches, and a prefetch queue that one fetch cannot overfill: librdkafka backs off
        // for `fetch.queue.backoff.ms` whenever a response pushes the queue past
        // `queued.min.messages`, which would measure that back-off instead of the broker.
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "8388608")
        .set("queued.min.messages", "10000000")
        .set("queued.max.messages.kbytes", "2097151")
        .set("fetch.queue.backoff.ms", "0")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let mut reader = crate::kafka::batch::BatchQueue::consumer(&consumer, CONSUME_BATCH)?;
    let cpu_before = cpu_time();
    let mut started = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut consumed = 0usize;
    let mut bytes = 0usize;
    while consumed < args.records {
        anyhow::ensure!(
            Instant::now() < deadline,
            "consumed only {consumed} of {} records",
            args.records
        );
        let n = match args.consumer {
            ConsumeMode::Batch => {
                reader.read(Duration::from_millis(100), args.records - consumed, |m| {
                    bytes += m.payload().len()
                })?
            }
            ConsumeMode::Poll => match consumer.poll(Duration::from_millis(100)) {
                Some(message) => {
                    bytes += message?.payload_len();
                    1
                }
                None => 0,
            },
        };
        if n > 0 && started.is_none() {
            started = Some(Instant::now());
        }
        consumed += n;
    }
    let secs = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    Ok(Consumed {
        secs,
        cpu_secs: cpu_time() - cpu_before,
        bytes,
    })
}

/// CPU time (user + system) this process has used so far, in seconds.
pub(crate) fn cpu_time() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable `rusage`; getrusage only writes into it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return 0.0;
    }
    // SAFETY: getrusage succeeded, so it initialised the struct (zeroed before anyway).
    let usage = unsafe { usage.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Machine-wide CPU time from `/proc/stat`, in seconds: `(busy, steal)`. Busy is every CPU's
/// user, system, interrupt and softirq time — ours and the kernel threads' (writeback, the
/// journal) that work for us; steal is time the hypervisor gave to other guests. `None` where
/// `/proc/stat` is missing.
pub(crate) fn machine_cpu_time() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let jiffies: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_ascii_whitespace()
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let field = |i: usize| jiffies.get(i).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    let busy = field(0) + field(1) + field(2) + field(5) + field(6);
    Some((busy as f64 / hz, field(7) as f64 / hz))
}

/// Serves delivery reports until every record is acknowledged (or failed), or `timeout` passes.
fn wait_delivered(producer: &BaseProducer<BenchContext>, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        producer.poll(Duration::ZERO);
        // Messages queued or in flight, plus delivery reports not yet served.
        if producer.in_flight_count() == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} records still unacknowledged after {timeout:?}",
            producer.in_flight_count()
        );
        std::thread::sleep(BACKOFF);
    }
}

fn is_queue_full(e: &rdkafka::error::KafkaError) -> bool {
    e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
}

fn create_topic(bootstrap: &str, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let results = runtime.block_on(admin.create_topics(
        &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))?;
    for result in results {
        if let Err((name, code)) = result
            && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
        {
            anyhow::bail!("create topic {name}: {code}");
        }
    }
    Ok(())
}
