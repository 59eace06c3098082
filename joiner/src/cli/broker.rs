//! `recjoin broker`: the built-in Kafka-compatible broker alone.

use std::net::SocketAddr;
use std::path::PathBuf;

use broker_core::broker::BrokerConfig;
use broker_core::log::Durability;
use broker_core::server::BrokerServer;

/// Arguments of `recjoin broker`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  recjoin broker --listen 127.0.0.1:9092 --data-dir ./data\n  \
    recjoin broker --listen 0.0.0.0:9092 --advertised-addr kafka.internal:9092 --data-dir /var/lib/recjoin"
)]
pub struct BrokerArgs {
    /// Address to listen on for Kafka clients (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub listen: SocketAddr,
    /// Address clients are told to connect to, when it differs from --listen.
    #[arg(long)]
    pub advertised_addr: Option<String>,
    /// Directory for logs, topics and group offsets.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// Address of the Prometheus metrics endpoint.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// `fsync` (acks=all waits for fsync; consumers see only fsynced data) or `os`.
    #[arg(long, default_value = "fsync", value_parser = parse_durability)]
    pub durability: Durability,
    /// Partitions of auto-created topics.
    #[arg(long, default_value_t = 8)]
    pub default_partitions: i32,
    /// Refuse metadata requests for unknown topics instead of creating them.
    #[arg(long)]
    pub no_auto_create_topics: bool,
    /// How long the first member of an empty group waits for others before the first rebalance
    /// completes (Kafka's `group.initial.rebalance.delay.ms`).
    #[arg(long, default_value_t = 3000)]
    pub group_initial_rebalance_delay_ms: u64,
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    match s {
        "fsync" => Ok(Durability::Fsync),
        "os" => Ok(Durability::Os),
        _ => Err(format!("expected fsync or os, got {s:?}")),
    }
}

impl BrokerArgs {
    /// The broker settings these arguments describe.
    pub fn config(&self) -> anyhow::Result<BrokerConfig> {
        let mut config = BrokerConfig::new(self.listen, self.data_dir.clone());
        config.log.durability = self.durability;
        if self.durability == Durability::Os {
            config.log.flush_ms = None;
        }
        config.default_partitions = self.default_partitions;
        config.auto_create_topics = !self.no_auto_create_topics;
        config.group.initial_rebalance_delay =
            std::time::Duration::from_millis(self.group_initial_rebalance_delay_ms);
        if let Some(addr) = &self.advertised_addr {
            let (host, port) = addr.rsplit_once(':').ok_or_else(|| {
                anyhow::anyhow!("--advertised-addr must be host:port, got {addr}")
            })?;
            config.advertised = Some((host.to_owned(), port.parse()?));
        }
        Ok(config)
    }
}

/// Runs the broker until SIGINT or SIGTERM, then shuts it down cleanly. Prints
/// `listening on ADDR` on stdout once clients can connect.
pub async fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let readiness = crate::metrics::Readiness::default();
    if let Some(addr) = args.metrics_listen {
        let bound = crate::metrics::serve(addr, readiness.clone()).await?;
        println!("metrics on {bound}");
    }
    let server = BrokerServer::start(args.config()?).await?;
    readiness.set(true);
    println!("listening on {}", server.local_addr());
    shutdown_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
