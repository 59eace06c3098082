//! `recjoin bench replay`: generates a data set into a built-in broker (features and actions,
//! as `recjoin gen --speed 0` would), then replays all of it and reports the replay's input
//! rate. Samples are counted, not written, so the figure is the read-and-join path alone.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use broker_core::broker::BrokerConfig;
use broker_core::log::Durability;
use broker_core::server::BrokerServer;

use crate::cli::generate::{GenArgs, GenStats};
use crate::config::Settings;
use crate::replay::plan::TimeRange;
use crate::replay::{Destination, default_workers};

/// Arguments of `recjoin bench replay`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Example:\n  recjoin bench replay --records 5000000 --partitions 8")]
pub struct BenchReplayArgs {
    /// Input records to generate and replay.
    #[arg(long, default_value_t = 5_000_000)]
    pub records: u64,
    /// Partitions of the input topics.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// Impressions per second of event time in the data set.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Reader threads; one per core when unset.
    #[arg(long)]
    pub workers: Option<usize>,
}

/// Event time of the first generated impression: a day ago, rounded down to the hour. Records
/// carry their event time as timestamp, so it must be recent: the broker's retention (7 days by
/// record time) would delete an older data set while it is being written.
fn start_ts() -> i64 {
    const HOUR: i64 = 3_600_000;
    (crate::now_ms() - 24 * HOUR) / HOUR * HOUR
}

/// Runs the benchmark and returns the JSON line.
pub async fn run(args: BenchReplayArgs) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let mut config = BrokerConfig::new("127.0.0.1:0".parse()?, dir.path());
    config.default_partitions = args.partitions;
    config.log.durability = Durability::Os;
    let broker = BrokerServer::start(config).await?;
    let bootstrap = broker.local_addr().to_string();
    let settings = Settings::from_env(None, &[("kafka.bootstrap", bootstrap.clone())])?;
    for topic in [&settings.topics.features, &settings.topics.actions] {
        broker
            .broker()
            .logs()
            .create_topic(topic, args.partitions, Default::default())?;
    }

    let start_ts = start_ts();
    let gen_args = GenArgs {
        bootstrap: bootstrap.clone(),
        rate: args.rate,
        duration: None,
        count: Some(args.records),
        seed: 7,
        start_ts: Some(start_ts),
        jitter: crate::cli::generate::DEFAULT_JITTER,
        speed: 0.0,
        features: settings.topics.features.clone(),
        actions: settings.topics.actions.clone(),
        compression: crate::cli::generate::DEFAULT_COMPRESSION.to_owned(),
        client: crate::cli::generate::GenClient::Rdkafka,
    };
    let generate_started = Instant::now();
    let produced = tokio::task::spawn_blocking(move || {
        crate::cli::generate::run(&gen_args, &AtomicBool::new(false), &GenStats::default())
    })
    .await??;
    let generate_s = generate_started.elapsed().as_secs_f64();

    let workers = args.workers.unwrap_or_else(default_workers);
    let range = TimeRange {
        from: start_ts,
        to: start_ts + 365 * 24 * 3600 * 1000,
    };
    let summary = tokio::task::spawn_blocking(move || {
        crate::replay::replay(&settings, range, &Destination::Discard, workers, false)
    })
    .await??;
    broker.shutdown().await?;
    anyhow::ensure!(
        summary.records_read == produced,
        "replay read {} of {produced} records",
        summary.records_read
    );
    let secs = summary.elapsed.as_secs_f64();
    let mb = summary.bytes_read as f64 / 1e6;
    Ok(format!(
        "{{\"bench\":\"replay\",\"records\":{},\"bytes\":{},\"avg_record_bytes\":{:.0},\"partitions\":{},\"workers\":{workers},\
         \"records_per_s\":{:.0},\"mb_per_s\":{:.1},\"seconds\":{secs:.2},\"samples\":{},\"generate_records_per_s\":{:.0},\
         \"generate_s\":{generate_s:.1}}}",
        summary.records_read,
        summary.bytes_read,
        summary.bytes_read as f64 / summary.records_read.max(1) as f64,
        args.partitions,
        summary.records_per_s(),
        mb / secs.max(1e-9),
        summary.samples_written(),
        produced as f64 / generate_s.max(1e-9),
    ))
}
