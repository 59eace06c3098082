//! `recjoin join`: one joiner member against any Kafka-compatible cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::Settings;
use crate::service::member::{self, MemberStats};

/// Arguments of `recjoin join`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  recjoin join --bootstrap 127.0.0.1:9092\n  \
    recjoin join --bootstrap kafka-1:9092,kafka-2:9092 --group recjoin --config recjoin.toml --metrics-listen 0.0.0.0:9898\n  \
    RECJOIN__JOIN__IDLE_TIMEOUT=60s recjoin join --bootstrap 127.0.0.1:9092"
)]
pub struct JoinArgs {
    /// Kafka bootstrap servers (overrides `[kafka] bootstrap`).
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// Consumer group of the joiner members (overrides `[kafka] group`).
    #[arg(long)]
    pub group: Option<String>,
    /// Settings file (TOML, see deploy/recjoin.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address of /metrics, /healthz and /readyz (overrides `[metrics] listen`).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
}

impl JoinArgs {
    /// Settings from defaults, the file, the environment and these flags.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut overrides = Vec::new();
        if let Some(b) = &self.bootstrap {
            overrides.push(("kafka.bootstrap", b.clone()));
        }
        if let Some(g) = &self.group {
            overrides.push(("kafka.group", g.clone()));
        }
        if let Some(m) = self.metrics_listen {
            overrides.push(("metrics.listen", m.to_string()));
        }
        Ok(Settings::from_env(self.config.as_deref(), &overrides)?)
    }
}

/// Runs the member until SIGINT/SIGTERM, then emits what has closed, commits and leaves the group.
pub async fn run(args: JoinArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let readiness = crate::metrics::Readiness::default();
    if let Some(addr) = settings.metrics.listen {
        let bound = crate::metrics::serve(addr, readiness.clone()).await?;
        println!("metrics on {bound}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(MemberStats::default());
    let mut member = spawn_member(settings, true, Arc::clone(&stop), Arc::clone(&stats))?;
    readiness.set(true);
    println!("joining");
    let early = tokio::select! {
        r = crate::cli::broker::shutdown_signal() => { r?; None }
        r = &mut member => Some(r),
    };
    stop.store(true, Ordering::SeqCst);
    tracing::info!("stopping: emitting closed samples and committing");
    let result = match early {
        Some(r) => r,
        None => member.await,
    };
    result.map_err(|_| anyhow::anyhow!("joiner thread panicked"))?
}

/// Runs a member on its own thread (it blocks on the Kafka client); the receiver yields its
/// result when it ends.
pub fn spawn_member(
    settings: Settings,
    live: bool,
    stop: Arc<AtomicBool>,
    stats: Arc<MemberStats>,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<anyhow::Result<()>>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("joiner".into())
        .spawn(move || {
            let _ = tx.send(member::run(settings, live, stop, stats));
        })?;
    Ok(rx)
}
