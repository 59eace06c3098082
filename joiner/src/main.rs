//! The `recjoin` command. Thin: parses arguments and dispatches to library modules.

use clap::{Parser, Subcommand};
use joiner::bench::alloc::{CountingAlloc, live_bytes};
use joiner::bench::engine::{EngineBenchArgs, run};

// mimalloc (v2) replaces malloc for the whole process: its `override` feature exports `malloc`,
// `free` and friends, so Rust's system allocator and librdkafka's C code both use it. Why: glibc's
// malloc takes an arena lock when one thread frees what another allocated — librdkafka frees on
// its threads the messages the joiner thread produced — and once the joiner falls behind it sleeps
// on that lock and uses less CPU, not more. See `configure_allocator` for the one option we set.
extern crate mimalloc;

// Counts live heap bytes so `bench engine` can report real memory per pending key. Counting is
// switched on only by that command; elsewhere it costs one read of an unchanging flag.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// recjoin: join recommender features and user actions into labelled training samples.
#[derive(Debug, Parser)]
#[command(name = "recjoin", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The built-in Kafka-compatible broker alone.
    Broker(joiner::cli::broker::BrokerArgs),
    /// Topic administration through the Kafka admin API.
    Topics(joiner::cli::topics::TopicsArgs),
    /// The built-in broker and a joiner in one process (`--demo` adds synthetic traffic).
    Up(joiner::cli::up::UpArgs),
    /// One joiner member against any Kafka-compatible cluster.
    Join(joiner::cli::join::JoinArgs),
    /// Realistic synthetic features and actions.
    Gen(joiner::cli::generate::GenArgs),
    /// Rebuild the samples whose feature time is in [from, to) from the input topics.
    Replay(joiner::cli::replay::ReplayArgs),
    /// Compare window settings on past input: actions captured against sample latency.
    Tune(joiner::cli::replay::TuneArgs),
    /// Benchmarks; each prints one JSON line of results on stdout.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Produce then consume through rdkafka against any Kafka-compatible broker.
    Broker(joiner::cli::bench_broker::BenchBrokerArgs),
    /// Generator -> built-in broker -> joiner -> broker at increasing rates.
    E2e(joiner::cli::bench_e2e::BenchE2eArgs),
    /// Replay of a generated data set from the built-in broker.
    Replay(joiner::cli::bench_replay::BenchReplayArgs),
    /// The join engine alone on one thread, on a realistic synthetic mix (JSON extraction and
    /// sample encoding included; input generation excluded).
    ///
    /// `records_per_s` is the steady state: records pushed after the warm-up, the first hard
    /// timeout plus closed-key retention of event time, in which the state grows from nothing
    /// and its memory is touched for the first time. The warm-up is reported on its own
    /// (`warmup_*`), and the whole run as `overall_records_per_s`.
    ///
    /// Example: `recjoin bench engine --records 8000000 --rate 1000`
    Engine {
        /// Input records to push.
        #[arg(long, default_value_t = 8_000_000)]
        records: u64,
        /// Impressions per second of event time (pending keys ≈ rate × 30 min). With the
        /// defaults the warm-up is the first ~2.1M records and the rest (~3/4 of the run) is
        /// steady state: windows close as fast as they open.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Target feature record size in bytes.
        #[arg(long, default_value_t = 500)]
        feature_bytes: usize,
        /// Records per batch (one watermark advance each).
        #[arg(long, default_value_t = 16_384)]
        batch: usize,
        /// RNG seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

/// mimalloc's `purge_delay` option (its index in `mi_option_t` of mimalloc v2's `mimalloc.h`, right
/// after `eager_commit_delay` = 14, which the bindings do name).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t =
    libmimalloc_sys::mi_option_eager_commit_delay + 1;

/// Keeps freed memory in the process instead of returning it to the OS 10 ms later (mimalloc's
/// default), unless `MIMALLOC_PURGE_DELAY` says otherwise. Why: memory given back is faulted in
/// again moments later by a service whose working set is steady, and in a VM a fresh page can cost
/// a trip to the host (see `LogConfig::page_cache_bytes`). The heap stays at its peak instead, as
/// with jemalloc's `dirty_decay_ms:-1`. Measured with `recjoin bench e2e --rates
/// 275000,275000,275000 --seconds 30`: in three runs the second and third steps took 5.05–5.57 µs
/// of CPU per record and the joiner caught up 108–171 ms after the traffic; with glibc's malloc
/// (two runs) 5.70–5.82 µs and 238–448 ms; with mimalloc purging after 10 ms the first step
/// already failed (210k records/s joined, 6.5 µs per record).
fn configure_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's option values; any value is valid for this option.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

fn main() -> anyhow::Result<()> {
    configure_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Bench {
            what: BenchCommand::Broker(args),
        } => {
            println!("{}", joiner::cli::bench_broker::run(&args)?);
        }
        Command::Bench {
            what: BenchCommand::E2e(args),
        } => {
            println!(
                "{}",
                tokio_runtime()?.block_on(joiner::cli::bench_e2e::run(args))?
            );
        }
        Command::Bench {
            what: BenchCommand::Replay(args),
        } => {
            println!(
                "{}",
                tokio_runtime()?.block_on(joiner::cli::bench_replay::run(args))?
            );
        }
        Command::Replay(args) => {
            init_tracing();
            joiner::cli::replay::run_replay(&args)?;
        }
        Command::Tune(args) => {
            init_tracing();
            joiner::cli::replay::run_tune(&args)?;
        }
        Command::Up(args) => {
            init_tracing();
            tokio_runtime()?.block_on(joiner::cli::up::run(args))?;
        }
        Command::Join(args) => {
            init_tracing();
            tokio_runtime()?.block_on(joiner::cli::join::run(args))?;
        }
        Command::Gen(args) => {
            init_tracing();
            joiner::cli::generate::main(args)?;
        }
        Command::Topics(args) => tokio_runtime()?.block_on(joiner::cli::topics::run(args))?,
        Command::Broker(args) => {
            init_tracing();
            tokio_runtime()?.block_on(joiner::cli::broker::run(args))?;
        }
        Command::Bench {
            what:
                BenchCommand::Engine {
                    records,
                    rate,
                    feature_bytes,
                    batch,
                    seed,
                },
        } => {
            let mut args = EngineBenchArgs {
                records,
                batch: batch.max(1),
                ..Default::default()
            };
            args.workload.impressions_per_s = rate;
            args.workload.feature_bytes = feature_bytes;
            args.workload.seed = seed;
            let res = run(&args, Some(live_bytes));
            if res.records_per_s.is_none() {
                eprintln!(
                    "the run ended within the warm-up ({} records): no steady-state rates; push more records",
                    res.warmup_records
                );
            }
            println!("{}", res.to_json_line());
        }
    }
    Ok(())
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_delay_is_the_option_configured() {
        // SAFETY: reads one of mimalloc's option values.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        match std::env::var("MIMALLOC_PURGE_DELAY") {
            // The environment wins over our default.
            Ok(set) => {
                configure_allocator();
                assert_eq!(get().to_string(), set.trim());
            }
            Err(_) => {
                // mimalloc v2's documented default for purge_delay: the index names that option.
                assert_eq!(get(), 10);
                configure_allocator();
                assert_eq!(get(), -1);
            }
        }
    }
}
