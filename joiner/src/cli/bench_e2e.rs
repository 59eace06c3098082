//! `recjoin bench e2e`: generator → built-in broker → joiner → broker on this machine, at
//! increasing input rates; prints one JSON line with the highest sustained `records_per_s` and the
//! p99 emit delay (the sample's record timestamp, i.e. when the joiner produced it, minus its
//! `window_end`) at that rate.
//!
//! Windows are shortened (idle 2 s, hard 10 s, idle partition 1 s, out-of-orderness 2 s) so that
//! samples close during a run of seconds; event time is the wall clock. A rate is sustained when the
//! joiner had read everything within 3 s of the generator stopping, and the generator reached at
//! least 75 % of the target: a live generator cannot send what has not arrived yet (actions come
//! minutes after their impressions, features within the arrival jitter), so a short run produces
//! about 0.9 of the nominal rate. The achieved rate is what is reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use broker_core::broker::BrokerConfig;
use broker_core::server::BrokerServer;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::cli::generate::{GenArgs, GenStats};
use crate::cli::join::spawn_member;
use crate::config::Settings;
use crate::service::member::MemberStats;
use crate::service::tail::window_end_of;

/// Arguments of `recjoin bench e2e`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Example:\n  recjoin bench e2e --rates 50000,100000,200000,300000 --seconds 20"
)]
pub struct BenchE2eArgs {
    /// Input rates to try (records/s), in increasing order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "25000,50000,100000,200000,300000"
    )]
    pub rates: Vec<f64>,
    /// Seconds of traffic per rate.
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
    /// Partitions of the input topics.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
}

/// Input records per impression of the generator (features + actions + a few duplicates).
const RECORDS_PER_IMPRESSION: f64 = 1.07;

/// Runs the benchmark and returns the JSON line.
pub async fn run(args: BenchE2eArgs) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let mut config = BrokerConfig::new("127.0.0.1:0".parse()?, dir.path());
    config.default_partitions = args.partitions;
    config.group.initial_rebalance_delay = Duration::ZERO;
    let broker = BrokerServer::start(config).await?;
    let bootstrap = broker.local_addr().to_string();

    let mut settings = Settings::from_env(None, &[("kafka.bootstrap", bootstrap.clone())])?;
    settings.join.idle_timeout = Duration::from_secs(2);
    settings.join.hard_timeout = Duration::from_secs(10);
    settings.join.negative_timeout = None;
    settings.join.idle_partition_timeout = Duration::from_secs(1);
    settings.join.max_out_of_orderness = Duration::from_secs(2);
    for topic in [&settings.topics.features, &settings.topics.actions] {
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

    let mut steps = Vec::new();
    let mut best: Option<(f64, f64)> = None;
    let mut produced_total = 0u64;
    for &rate in &args.rates {
        let gen_args = GenArgs {
            bootstrap: bootstrap.clone(),
            rate: rate / RECORDS_PER_IMPRESSION,
            duration: Some(Duration::from_secs(args.seconds)),
            count: None,
            seed: 7,
            // Start event time past the arrival jitter, so records flow from the first moment
            // instead of the rate being measured over a jitter-long silent start.
            start_ts: Some(crate::now_ms() - 2_500),
            speed: 1.0,
            features: settings.topics.features.clone(),
            actions: settings.topics.actions.clone(),
        };
        let started_ms = crate::now_ms();
        let started = Instant::now();
        let produced = tokio::task::spawn_blocking(move || {
            crate::cli::generate::run(&gen_args, &AtomicBool::new(false), &GenStats::default())
        })
        .await??;
        let elapsed = started.elapsed().as_secs_f64();
        produced_total += produced;
        let achieved = produced as f64 / elapsed;
        let caught_up_by = Instant::now() + Duration::from_secs(3);
        while stats.records_in.load(Ordering::Relaxed) < produced_total
            && Instant::now() < caught_up_by
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let lag = produced_total.saturating_sub(stats.records_in.load(Ordering::Relaxed));
        let sustained = achieved >= 0.75 * rate && lag == 0;
        // Let the step's windows close (hard timeout + idle partition + margin), then measure.
        tokio::time::sleep(Duration::from_secs(14)).await;
        let delays = emit_delays(
            &bootstrap,
            &settings.topics.samples,
            started_ms,
            crate::now_ms(),
        )?;
        let p99 = percentile(&delays, 0.99);
        steps.push(format!(
            "{{\"target_records_per_s\":{rate:.0},\"achieved_records_per_s\":{achieved:.0},\"lag_after_3s\":{lag},\"sustained\":{sustained},\"samples\":{},\"emit_delay_p50_ms\":{:.0},\"emit_delay_p99_ms\":{p99:.0}}}",
            delays.len(),
            percentile(&delays, 0.5)
        ));
        if sustained {
            best = Some((achieved, p99));
        } else {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    member
        .await
        .map_err(|_| anyhow::anyhow!("joiner thread panicked"))??;
    broker.shutdown().await?;
    let (records_per_s, p99) = best.unwrap_or((0.0, f64::NAN));
    Ok(format!(
        "{{\"bench\":\"e2e\",\"records_per_s\":{records_per_s:.0},\"emit_delay_p99_ms\":{p99:.0},\"steps\":[{}]}}",
        steps.join(",")
    ))
}

/// Emit delays (record timestamp − window_end, ms) of the samples whose window ended in
/// `[from_ms, to_ms)`.
fn emit_delays(bootstrap: &str, topic: &str, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<f64>> {
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
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0i64;
    for &p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        remaining += high - low;
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut delays = Vec::new();
    while remaining > 0 && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
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
    Ok(delays)
}

fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}
