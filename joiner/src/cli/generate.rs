//! `recjoin gen`: synthetic features and actions produced to Kafka, keyed by impression id with
//! Kafka's murmur2 partitioner (as a Java producer would).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use kafka_protocol::records::Compression;

use crate::kafka::wire_producer::WireProducer;
use crate::partitioner::partition_for_key;
use crate::traffic::{DEFAULT_JITTER_MS, GenConfig, GenRecord, GenTopic, Generator};

/// Arguments of `recjoin gen`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  recjoin gen --bootstrap 127.0.0.1:9092 --rate 1000 --duration 10m\n  \
    recjoin gen --bootstrap 127.0.0.1:9092 --rate 1000 --speed 0 --count 1000000 --seed 7 --start-ts 1732150000000"
)]
pub struct GenArgs {
    /// Kafka bootstrap servers.
    #[arg(long)]
    pub bootstrap: String,
    /// Impressions per second of event time.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long to run (wall time, e.g. 30s, 10m); forever when unset.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after producing this many records.
    #[arg(long)]
    pub count: Option<u64>,
    /// RNG seed: the same seed and start time give the same records.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Event time of the first impression (epoch ms); now when unset.
    #[arg(long)]
    pub start_ts: Option<i64>,
    /// Records arrive up to this long after their event time (uniformly); keep it below the
    /// joiner's `max_out_of_orderness`, or some records are late.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub jitter: Duration,
    /// Event time runs this many times faster than the wall clock; 0 = as fast as possible.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Features topic.
    #[arg(long, default_value = "features")]
    pub features: String,
    /// Actions topic.
    #[arg(long, default_value = "actions")]
    pub actions: String,
    /// Producer compression (`compression.type`: none, gzip, snappy, lz4, zstd).
    #[arg(long, default_value = DEFAULT_COMPRESSION)]
    pub compression: String,
    /// Kafka client: `rdkafka` (librdkafka, any cluster) or `wire` (a minimal built-in producer
    /// for a single broker such as `recjoin up`'s, for load tests: much less CPU per record; its
    /// compression codecs are slower than librdkafka's, so use it with `--compression none`).
    #[arg(long, value_enum, default_value = "rdkafka")]
    pub client: GenClient,
}

/// The Kafka client the generator produces with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenClient {
    /// librdkafka through the `rdkafka` crate.
    Rdkafka,
    /// [`crate::kafka::wire_producer`]: one connection to the bootstrap broker.
    Wire,
}

/// The generator's default producer compression, as a recommender's producers would use.
pub const DEFAULT_COMPRESSION: &str = "lz4";

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::engine::config::parse_duration(s)
        .ok_or_else(|| format!("invalid duration {s:?} (e.g. 30s, 10m)"))
}

/// The generator's default arrival jitter, for callers that build [`GenArgs`] themselves.
pub const DEFAULT_JITTER: Duration = Duration::from_millis(DEFAULT_JITTER_MS.unsigned_abs());

/// Records produced so far, for status lines.
#[derive(Debug, Default)]
pub struct GenStats {
    /// Records handed to the producer.
    pub produced: AtomicU64,
}

/// Produces until the duration, the count or `stop` ends it; returns the number of records.
pub fn run(args: &GenArgs, stop: &AtomicBool, stats: &GenStats) -> anyhow::Result<u64> {
    let start_ts = args.start_ts.unwrap_or_else(crate::now_ms);
    let mut generator = Generator::new(GenConfig {
        impressions_per_s: args.rate,
        start_ts,
        seed: args.seed,
        jitter_ms: i64::try_from(args.jitter.as_millis())?,
        ..GenConfig::default()
    })?;
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &args.bootstrap);
    let partitions = {
        let consumer: BaseConsumer = client.create()?;
        let count = |topic: &str| -> anyhow::Result<u32> {
            let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
            let n = md.topics().first().map_or(0, |t| t.partitions().len());
            anyhow::ensure!(n > 0, "topic {topic} does not exist");
            Ok(u32::try_from(n)?)
        };
        (count(&args.features)?, count(&args.actions)?)
    };
    let mut sink = Sink::new(args, &client, partitions)?;
    let started = Instant::now();
    let mut batch: Vec<GenRecord> = Vec::with_capacity(4096);
    let mut produced = 0u64;
    let limit = args.count.unwrap_or(u64::MAX);
    let mut event_time = start_ts;
    'outer: while !stop.load(Ordering::Relaxed)
        && args.duration.is_none_or(|d| started.elapsed() < d)
    {
        event_time = if args.speed <= 0.0 {
            event_time + 1000
        } else {
            start_ts + (started.elapsed().as_secs_f64() * 1000.0 * args.speed) as i64
        };
        generator.recycle(&mut batch);
        generator.next_until(event_time, &mut batch);
        for r in &batch {
            if produced >= limit {
                break 'outer;
            }
            sink.send(r)?;
            produced += 1;
        }
        sink.linger_done()?;
        stats.produced.store(produced, Ordering::Relaxed);
        if batch.is_empty() && args.speed > 0.0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    sink.finish()?;
    Ok(produced)
}

/// Where generated records go: librdkafka or the built-in wire producer.
enum Sink<'a> {
    Rdkafka {
        producer: ThreadedProducer<DefaultProducerContext>,
        args: &'a GenArgs,
        partitions: (u32, u32),
    },
    Wire {
        producer: Box<WireProducer>,
        partitions: u32,
        last_flush: Instant,
    },
}

/// The wire producer sends what has gathered this often (librdkafka's `linger.ms` below).
const WIRE_LINGER: Duration = Duration::from_millis(10);

impl<'a> Sink<'a> {
    fn new(
        args: &'a GenArgs,
        client: &ClientConfig,
        partitions: (u32, u32),
    ) -> anyhow::Result<Self> {
        Ok(match args.client {
            GenClient::Rdkafka => Sink::Rdkafka {
                // Delivery reports are served by the producer's own thread, as they come in.
                producer: client
                    .clone()
                    .set("enable.idempotence", "true")
                    .set("linger.ms", "10")
                    // Only failures are reported: the generator has no use for the rest.
                    .set("delivery.report.only.error", "true")
                    .set("compression.type", &args.compression)
                    .set("queue.buffering.max.messages", "1000000")
                    .create()?,
                args,
                partitions,
            },
            GenClient::Wire => {
                anyhow::ensure!(
                    partitions.0 == partitions.1,
                    "the wire client needs topics with equal partition counts"
                );
                let compression = match args.compression.as_str() {
                    "none" => Compression::None,
                    "gzip" => Compression::Gzip,
                    "snappy" => Compression::Snappy,
                    "lz4" => Compression::Lz4,
                    "zstd" => Compression::Zstd,
                    other => anyhow::bail!("unknown compression {other:?}"),
                };
                Sink::Wire {
                    producer: Box::new(WireProducer::connect(
                        &args.bootstrap,
                        &[&args.features, &args.actions],
                        usize::try_from(partitions.0)?,
                        compression,
                    )?),
                    partitions: partitions.0,
                    last_flush: Instant::now(),
                }
            }
        })
    }

    /// Sends one record, keyed by impression id and partitioned by murmur2 of the key; the
    /// record timestamp (CreateTime) is its arrival, when it was logged, as a real producer
    /// sets it: replay finds its start offsets by it.
    fn send(&mut self, r: &GenRecord) -> anyhow::Result<()> {
        match self {
            Sink::Rdkafka {
                producer,
                args,
                partitions,
            } => {
                let (topic, n) = match r.topic {
                    GenTopic::Feature => (&args.features, partitions.0),
                    GenTopic::Action => (&args.actions, partitions.1),
                };
                let mut record = BaseRecord::<[u8], [u8]>::to(topic)
                    .key(&r.key[..])
                    .payload(&r.value[..])
                    .partition(i32::try_from(partition_for_key(&r.key, n))?)
                    .timestamp(r.arrival);
                loop {
                    match producer.send(record) {
                        Ok(()) => return Ok(()),
                        Err((e, back))
                            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                        {
                            std::thread::sleep(Duration::from_millis(1));
                            record = back;
                        }
                        Err((e, _)) => anyhow::bail!("produce: {e}"),
                    }
                }
            }
            Sink::Wire {
                producer,
                partitions,
                ..
            } => {
                let topic = usize::from(r.topic == GenTopic::Action);
                let partition = usize::try_from(partition_for_key(&r.key, *partitions))?;
                Ok(producer.send(topic, partition, &r.key, &r.value, r.arrival)?)
            }
        }
    }

    /// Called after each round of records: the wire producer sends once its linger passed.
    fn linger_done(&mut self) -> anyhow::Result<()> {
        if let Sink::Wire {
            producer,
            last_flush,
            ..
        } = self
            && last_flush.elapsed() >= WIRE_LINGER
        {
            producer.flush()?;
            *last_flush = Instant::now();
        }
        Ok(())
    }

    /// Sends what is left and waits until the broker has it.
    fn finish(self) -> anyhow::Result<()> {
        match self {
            Sink::Rdkafka { producer, .. } => producer.flush(Duration::from_secs(60))?,
            Sink::Wire { producer, .. } => (*producer).finish()?,
        }
        Ok(())
    }
}

/// `recjoin gen` on the command line: prints the number of records at the end.
pub fn main(args: GenArgs) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc_flag(flag)?;
    let n = run(&args, &stop, &GenStats::default())?;
    println!("produced {n} records");
    Ok(())
}

/// Sets `flag` on SIGINT or SIGTERM (in a small background runtime).
fn ctrlc_flag(flag: Arc<AtomicBool>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            let _ = crate::cli::broker::shutdown_signal().await;
            flag.store(true, Ordering::SeqCst);
        });
    });
    Ok(())
}
