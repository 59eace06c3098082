//! `recjoin bench broker`: produce then consume N records of B bytes through rdkafka against any
//! Kafka-compatible broker, on one partition of a fresh topic, and print one JSON line.
//!
//! Produce throughput is first enqueue to last delivery report; latency is enqueue to delivery
//! report per record. Consume throughput is first poll to the N-th record.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// Arguments of `recjoin bench broker`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Example:\n  recjoin bench broker --bootstrap 127.0.0.1:9092 --records 5000000 --size 100 --acks 1"
)]
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
    /// Topic to use (default: a fresh one per run).
    #[arg(long)]
    pub topic: Option<String>,
}

/// Collects each record's latency, from enqueue (nanoseconds since `base`, carried in the
/// delivery opaque) to its delivery report.
struct BenchContext {
    base: Instant,
    micros: parking_lot::Mutex<Vec<u32>>,
    failed: std::sync::atomic::AtomicUsize,
}

impl ClientContext for BenchContext {}

impl ProducerContext for BenchContext {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, enqueued_ns: usize) {
        if result.is_err() {
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let sent = Duration::from_nanos(enqueued_ns as u64);
        let latency = self.base.elapsed().saturating_sub(sent);
        self.micros
            .lock()
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
    }
}

/// Runs the benchmark and returns the JSON line.
pub fn run(args: &BenchBrokerArgs) -> anyhow::Result<String> {
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("recjoin-bench-{}", std::process::id()));
    create_topic(&args.bootstrap, &topic)?;
    let value = vec![b'x'; args.size];

    // Produce.
    let context = BenchContext {
        base: Instant::now(),
        micros: parking_lot::Mutex::new(Vec::with_capacity(args.records)),
        failed: Default::default(),
    };
    let producer: BaseProducer<BenchContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("acks", &args.acks)
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("compression.type", "none")
        .create_with_context(context)?;
    let base = producer.context().base;
    let started = Instant::now();
    for i in 0..args.records {
        let enqueued_ns = usize::try_from(base.elapsed().as_nanos()).unwrap_or(usize::MAX);
        let mut record = BaseRecord::<(), [u8], usize>::with_opaque_to(&topic, enqueued_ns)
            .payload(&value[..])
            .partition(0);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) if is_queue_full(&e) => {
                    producer.poll(Duration::from_millis(1));
                    record = r;
                }
                Err((e, _)) => anyhow::bail!("produce failed: {e}"),
            }
        }
        if i % 4096 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(300))?;
    let produce_secs = started.elapsed().as_secs_f64();
    let failed = producer
        .context()
        .failed
        .load(std::sync::atomic::Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{failed} records failed to produce");

    // Consume.
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
    assignment.add_partition_offset(&topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let mut consumed = 0usize;
    let mut consumed_bytes = 0usize;
    while consumed < args.records {
        anyhow::ensure!(
            Instant::now() < deadline,
            "consumed only {consumed} of {} records",
            args.records
        );
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message?;
            consumed_bytes += message.payload_len();
            consumed += 1;
        }
    }
    let consume_secs = started.elapsed().as_secs_f64();

    let mut micros = std::mem::take(&mut *producer.context().micros.lock());
    micros.sort_unstable();
    let pct = |q: f64| {
        let i = ((micros.len() as f64 - 1.0) * q).round() as usize;
        micros.get(i).map_or(0.0, |m| f64::from(*m) / 1000.0)
    };
    let mb = (args.records * args.size) as f64 / 1e6;
    Ok(format!(
        "{{\"records\":{},\"size\":{},\"acks\":\"{}\",\"produce_records_per_s\":{:.0},\"consume_records_per_s\":{:.0},\
\"produce_mb_per_s\":{:.1},\"consume_mb_per_s\":{:.1},\"produce_p50_ms\":{:.2},\"produce_p99_ms\":{:.2},\"consumed_bytes\":{}}}",
        args.records,
        args.size,
        args.acks,
        args.records as f64 / produce_secs,
        args.records as f64 / consume_secs,
        mb / produce_secs,
        mb / consume_secs,
        pct(0.50),
        pct(0.99),
        consumed_bytes,
    ))
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
