//! The TCP server: one task per connection, a cap on concurrent connections, and graceful
//! shutdown — stop accepting, let each connection finish the request it is answering, then close
//! the broker's storage cleanly.

mod connection;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::broker::{Broker, BrokerConfig, BrokerError};

/// A running broker, started inside the current tokio runtime.
#[derive(Debug)]
pub struct BrokerServer {
    local_addr: SocketAddr,
    broker: Arc<Broker>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), BrokerError>>,
}

impl BrokerServer {
    /// Opens storage, binds the listener and starts serving.
    pub async fn start(config: BrokerConfig) -> Result<Self, BrokerError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| BrokerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| BrokerError::Bind {
            addr: config.listen,
            source,
        })?;
        let broker = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || Broker::open(config, local_addr))
                .await
                .map_err(|e| BrokerError::Group(format!("startup task failed: {e}")))??
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&broker),
            config.max_connections,
            stop_rx,
        ));
        tracing::info!(%local_addr, data_dir = %config.data_dir.display(), "broker listening");
        Ok(Self {
            local_addr,
            broker,
            stop: Some(stop_tx),
            task,
        })
    }

    /// The address the broker listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The broker's shared state.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stops accepting, lets connections finish their current request, and closes storage.
    pub async fn shutdown(mut self) -> Result<(), BrokerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(BrokerError::Group(format!("server task failed: {e}"))),
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    max_connections: usize,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), BrokerError> {
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let (shutdown_tx, _) = broadcast::channel::<()>(1);
    let mut connections = JoinSet::new();
    let refresher = {
        let broker = Arc::clone(&broker);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
            loop {
                tick.tick().await;
                crate::broker::metrics::refresh(&broker);
            }
        })
    };
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit,
            _ = &mut stop => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let broker = Arc::clone(&broker);
                let shutdown = shutdown_tx.subscribe();
                connections.spawn(async move {
                    connection::serve(stream, broker, shutdown).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    refresher.abort();
    let _ = shutdown_tx.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
    tokio::task::spawn_blocking(move || broker.close())
        .await
        .map_err(|e| BrokerError::Group(format!("close task failed: {e}")))?
}
