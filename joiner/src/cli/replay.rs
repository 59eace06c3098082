//! `recjoin replay` and `recjoin tune`: deterministic rebuilds of past samples, and what other
//! windows would have given on the same history.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Settings;
use crate::replay::plan::{TimeRange, parse_time};
use crate::replay::{Destination, default_workers};

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::engine::config::parse_duration(s)
        .ok_or_else(|| format!("invalid duration {s:?} (e.g. 180s, 30m)"))
}

/// What both commands read: the cluster, the range, the settings.
#[derive(Debug, Clone, clap::Args)]
pub struct HistoryArgs {
    /// Kafka bootstrap servers (overrides `[kafka] bootstrap`).
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// First feature time included: RFC 3339 or epoch milliseconds.
    #[arg(long, value_parser = parse_time)]
    pub from: i64,
    /// First feature time excluded: RFC 3339 or epoch milliseconds.
    #[arg(long, value_parser = parse_time)]
    pub to: i64,
    /// Settings file (TOML): topics, windows and labels apply as in `recjoin join`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Reader threads (each takes whole partition pairs); one per core when unset.
    #[arg(long)]
    pub workers: Option<usize>,
}

impl HistoryArgs {
    fn settings(&self) -> anyhow::Result<Settings> {
        let mut overrides = Vec::new();
        if let Some(b) = &self.bootstrap {
            overrides.push(("kafka.bootstrap", b.clone()));
        }
        Ok(Settings::from_env(self.config.as_deref(), &overrides)?)
    }

    fn range(&self) -> TimeRange {
        TimeRange {
            from: self.from,
            to: self.to,
        }
    }

    fn workers(&self) -> usize {
        self.workers.unwrap_or_else(default_workers)
    }
}

/// Arguments of `recjoin replay`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    group(clap::ArgGroup::new("output").required(true).args(["output_topic", "output_file"])),
    after_help = "Examples:\n  recjoin replay --bootstrap 127.0.0.1:9092 --from 2026-11-20T00:00:00Z --to 2026-11-21T00:00:00Z --output-file samples.jsonl\n  \
    recjoin replay --bootstrap kafka:9092 --from 1763596800000 --to 1763683200000 --output-topic samples.v2 --config new-labels.toml"
)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub history: HistoryArgs,
    /// Produce the samples to this topic (created with the inputs' partition count if missing).
    #[arg(long)]
    pub output_topic: Option<String>,
    /// Write the samples to this file, one JSON value per line.
    #[arg(long)]
    pub output_file: Option<PathBuf>,
}

/// Runs `recjoin replay`: prints the summary at the end.
pub fn run_replay(args: &ReplayArgs) -> anyhow::Result<()> {
    let settings = args.history.settings()?;
    let dest = match (&args.output_topic, &args.output_file) {
        (Some(topic), _) => {
            let t = &settings.topics;
            // The live joiner's suppression relies on being the only writer of its topics.
            anyhow::ensure!(
                ![&t.samples, &t.features, &t.actions, &t.dlq, &t.late].contains(&topic),
                "--output-topic {topic} is one of the live joiner's topics; replay into a new topic"
            );
            Destination::Topic(topic.clone())
        }
        (None, Some(file)) => Destination::File(file.clone()),
        (None, None) => anyhow::bail!("give --output-topic or --output-file"),
    };
    let summary = crate::replay::replay(
        &settings,
        args.history.range(),
        &dest,
        args.history.workers(),
        true,
    )?;
    println!("{}", summary.report());
    Ok(())
}

/// Arguments of `recjoin tune`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Example:\n  recjoin tune --bootstrap 127.0.0.1:9092 --from 2026-11-20T00:00:00Z --to 2026-11-20T06:00:00Z \
    --idle 60s,120s,180s,300s --hard 10m,30m,60m --report tune.html"
)]
pub struct TuneArgs {
    #[command(flatten)]
    pub history: HistoryArgs,
    /// Idle (renewal) timeouts to try.
    #[arg(long, value_delimiter = ',', value_parser = parse_duration, default_value = "60s,120s,180s,300s")]
    pub idle: Vec<Duration>,
    /// Hard timeouts to try.
    #[arg(long, value_delimiter = ',', value_parser = parse_duration, default_value = "10m,30m,60m")]
    pub hard: Vec<Duration>,
    /// Actions later than this after their feature count as not joinable at all (the
    /// denominator of the shares); twice the longest hard timeout when unset.
    #[arg(long, value_parser = parse_duration)]
    pub horizon: Option<Duration>,
    /// Where to write the HTML report.
    #[arg(long, default_value = "recjoin-tune.html")]
    pub report: PathBuf,
}

/// Runs `recjoin tune`: prints the table and writes the HTML report.
pub fn run_tune(args: &TuneArgs) -> anyhow::Result<()> {
    let settings = args.history.settings()?;
    let grid = crate::replay::tune::TuneGrid {
        idle: args.idle.clone(),
        hard: args.hard.clone(),
        horizon: args.horizon,
    };
    let report = crate::replay::tune::tune(
        &settings,
        args.history.range(),
        &grid,
        args.history.workers(),
        true,
    )?;
    print!("{}", report.table());
    std::fs::write(&args.report, report.html())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", args.report.display()))?;
    println!("report: {}", args.report.display());
    Ok(())
}
