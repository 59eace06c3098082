//! The broker: shared state (logs, group coordinator, producer ids) and the dispatch of decoded
//! requests to one handler per API. Handlers are plain async functions from a request to a
//! response; the server module owns sockets.

mod admin;
mod cluster;
mod fetch;
mod list_offsets;
pub mod metrics;
mod produce;
mod producer_ids;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Encodable, StrBytes};
use thiserror::Error;

use crate::group::{GroupConfig, GroupCoordinator};
use crate::log::manager::BackgroundTasks;
use crate::log::{BackgroundIntervals, LogConfig, LogError, LogManager, StorageError};
use crate::protocol::{EncodeError, Request, RequestBody, ResponseFrame, encode_response};
use producer_ids::ProducerIdAllocator;

/// Settings of a broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// `host:port` clients are told to connect to; the listen address when `None`.
    pub advertised: Option<(String, u16)>,
    /// Where logs, the topic registry and group offsets live.
    pub data_dir: PathBuf,
    /// Default settings of every partition log.
    pub log: LogConfig,
    /// Connections served at once; more wait in the accept queue.
    pub max_connections: usize,
    /// Largest request accepted (`socket.request.max.bytes`).
    pub max_request_bytes: usize,
    /// Create unknown topics when a client asks for their metadata.
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics.
    pub default_partitions: i32,
    /// This broker's node id.
    pub node_id: i32,
    /// Cluster id reported in metadata.
    pub cluster_id: String,
    /// Consumer-group settings (session-timeout bounds, initial rebalance delay, ...).
    pub group: GroupConfig,
}

impl BrokerConfig {
    /// Defaults for a broker on `listen` storing data in `data_dir`.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            advertised: None,
            data_dir: data_dir.into(),
            log: LogConfig::default(),
            max_connections: 4096,
            max_request_bytes: crate::protocol::request::DEFAULT_MAX_REQUEST_BYTES,
            auto_create_topics: true,
            default_partitions: 8,
            node_id: 1,
            cluster_id: "recjoin".to_owned(),
            group: GroupConfig::default(),
        }
    }
}

/// Why a broker could not start or stop cleanly.
#[derive(Debug, Error)]
pub enum BrokerError {
    /// Storage failed to open or close.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The group coordinator failed to open or close.
    #[error("group coordinator: {0}")]
    Group(String),
    /// Producer-id bookkeeping failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The listener could not be bound.
    #[error("listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Everything the request handlers share.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    advertised_host: StrBytes,
    advertised_port: i32,
    logs: Arc<LogManager>,
    groups: Arc<GroupCoordinator>,
    producer_ids: ProducerIdAllocator,
    background: parking_lot::Mutex<Option<BackgroundTasks>>,
}

impl Broker {
    /// Opens storage (recovering it if needed), the group coordinator and producer-id state, and
    /// starts the background flusher and retention. `bound` is the actual listen address.
    pub fn open(config: BrokerConfig, bound: SocketAddr) -> Result<Arc<Self>, BrokerError> {
        let logs = Arc::new(LogManager::open(&config.data_dir, config.log.clone())?);
        let groups = GroupCoordinator::open_with_config(
            &config.data_dir,
            Arc::clone(&logs),
            config.group.clone(),
        )
        .map_err(|e| BrokerError::Group(e.to_string()))?;
        let producer_ids = ProducerIdAllocator::open(&config.data_dir)?;
        let (host, port) = config
            .advertised
            .clone()
            .unwrap_or_else(|| (bound.ip().to_string(), bound.port()));
        let background = logs.spawn_background(BackgroundIntervals {
            flush_check: std::time::Duration::from_millis(
                u64::try_from(config.log.flush_ms.unwrap_or(5).clamp(1, 1000)).unwrap_or(5),
            ),
            ..BackgroundIntervals::default()
        });
        Ok(Arc::new(Self {
            config,
            advertised_host: StrBytes::from_string(host),
            advertised_port: i32::from(port),
            logs,
            groups,
            producer_ids,
            background: parking_lot::Mutex::new(Some(background)),
        }))
    }

    /// The partition logs.
    pub fn logs(&self) -> &Arc<LogManager> {
        &self.logs
    }

    /// The group coordinator.
    pub fn groups(&self) -> &Arc<GroupCoordinator> {
        &self.groups
    }

    /// The broker's settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// [`Self::handle`] for a connection that keeps taking requests while a produce waits for its
    /// fsync: a produce with `acks=all` on fsync durability comes back as soon as its batches
    /// are appended, as [`Handled::Durable`], to be awaited (in request order) for its response.
    /// Every other request is answered before this returns, as [`Handled::Ready`]. So requests
    /// take effect in the order they arrive, and only the fsync waits overlap.
    pub async fn handle_pipelined<'a>(
        &'a self,
        request: Request,
        client_host: &str,
    ) -> Handled<'a> {
        if !matches!(&request.body, RequestBody::Produce(r) if produce::waits_for_fsync(self, r.acks))
        {
            return Handled::Ready(self.handle(request, client_host).await);
        }
        let Request {
            api_key,
            version,
            correlation_id,
            body: RequestBody::Produce(r),
            ..
        } = request
        else {
            unreachable!("a produce request, checked just above")
        };
        let appended = produce::append(self, r);
        Handled::Durable(Box::pin(async move {
            match appended.acknowledged().await {
                Some(response) => response
                    .encode_frame(api_key, version, correlation_id, vec![])
                    .map(Some),
                None => Ok(None),
            }
        }))
    }

    /// Answers one request from `client_host` (shown by DescribeGroups, Kafka-style `/ip`).
    /// `None` means no response is sent (a Produce with `acks=0`); an error means the response
    /// could not be encoded, and the connection should be closed.
    pub async fn handle(
        &self,
        request: Request,
        client_host: &str,
    ) -> Result<Option<ResponseFrame>, EncodeError> {
        let Request {
            api_key,
            version,
            correlation_id,
            client_id,
            body,
        } = request;
        let reply = |body: &dyn ErasedResponse, files| {
            body.encode_frame(api_key, version, correlation_id, files)
        };
        let frame = match body {
            RequestBody::ApiVersions(_) => reply(&cluster::api_versions(version, 0), vec![]),
            RequestBody::Metadata(r) => {
                reply(&blocking(|| cluster::metadata(self, version, r)), vec![])
            }
            RequestBody::FindCoordinator(r) => {
                reply(&cluster::find_coordinator(self, version, r), vec![])
            }
            RequestBody::Produce(r) => match produce::append(self, r).acknowledged().await {
                Some(response) => reply(&response, vec![]),
                None => return Ok(None),
            },
            RequestBody::Fetch(r) => {
                let (response, files) = fetch::fetch(self, version, r).await;
                reply(&response, files)
            }
            RequestBody::ListOffsets(r) => reply(&list_offsets::list_offsets(self, r), vec![]),
            RequestBody::CreateTopics(r) => {
                reply(&blocking(|| admin::create_topics(self, version, r)), vec![])
            }
            RequestBody::DeleteTopics(r) => {
                reply(&blocking(|| admin::delete_topics(self, version, r)), vec![])
            }
            RequestBody::CreatePartitions(r) => {
                reply(&blocking(|| admin::create_partitions(self, r)), vec![])
            }
            RequestBody::DescribeConfigs(r) => {
                reply(&admin::describe_configs(self, version, r), vec![])
            }
            RequestBody::InitProducerId(r) => reply(&self.producer_ids.init_producer_id(r), vec![]),
            RequestBody::JoinGroup(r) => {
                let client = client_id.as_deref().unwrap_or("");
                reply(
                    &self
                        .groups
                        .join_group(client, client_host, r, version)
                        .await,
                    vec![],
                )
            }
            RequestBody::SyncGroup(r) => reply(&self.groups.sync_group(r, version).await, vec![]),
            RequestBody::Heartbeat(r) => reply(&self.groups.heartbeat(r, version).await, vec![]),
            RequestBody::LeaveGroup(r) => reply(&self.groups.leave_group(r, version).await, vec![]),
            RequestBody::OffsetCommit(r) => {
                reply(&self.groups.offset_commit(r, version).await, vec![])
            }
            RequestBody::OffsetFetch(r) => {
                reply(&self.groups.offset_fetch(r, version).await, vec![])
            }
            RequestBody::ListGroups(r) => reply(&self.groups.list_groups(r, version).await, vec![]),
            RequestBody::DescribeGroups(r) => {
                reply(&self.groups.describe_groups(r, version).await, vec![])
            }
        };
        frame.map(Some)
    }

    /// Clean shutdown: stops background work, then closes the group coordinator and every log.
    pub fn close(&self) -> Result<(), BrokerError> {
        if let Some(tasks) = self.background.lock().take() {
            tasks.stop();
        }
        let groups = self
            .groups
            .close()
            .map_err(|e| BrokerError::Group(e.to_string()));
        self.logs.close()?;
        groups
    }
}

/// The outcome of [`Broker::handle_pipelined`].
pub enum Handled<'a> {
    /// The response as [`Broker::handle`] gives it.
    Ready(Result<Option<ResponseFrame>, EncodeError>),
    /// A produce whose batches are appended; it resolves to its response once they are durable.
    Durable(Pin<Box<dyn Future<Output = Result<Option<ResponseFrame>, EncodeError>> + Send + 'a>>),
}

impl std::fmt::Debug for Handled<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handled::Ready(r) => f.debug_tuple("Ready").field(r).finish(),
            Handled::Durable(_) => f.write_str("Durable(..)"),
        }
    }
}

/// Runs request handling that may block on the file system for long — creating or deleting
/// topics makes a directory and an fsync per partition, seconds for a few hundred — with
/// `block_in_place`, so the other connections this worker thread serves are not stalled meanwhile.
/// On a current-thread runtime (unit tests) it simply runs `f`.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The ApiVersions answer to a request of an unsupported ApiVersions version, to be sent at v0.
pub fn api_versions_error(error_code: i16) -> kafka_protocol::messages::ApiVersionsResponse {
    cluster::api_versions(0, error_code)
}

/// Lets the dispatcher encode any response type through one code path.
trait ErasedResponse {
    fn encode_frame(
        &self,
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        files: Vec<crate::log::FileSlice>,
    ) -> Result<ResponseFrame, EncodeError>;
}

impl<R: Encodable> ErasedResponse for R {
    fn encode_frame(
        &self,
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        files: Vec<crate::log::FileSlice>,
    ) -> Result<ResponseFrame, EncodeError> {
        encode_response(api_key, version, correlation_id, self, files)
    }
}

/// The Kafka error code for a storage failure on one partition.
pub(crate) fn log_error_code(e: &LogError) -> i16 {
    use crate::log::batch::BatchError;
    use crate::log::producer_state::SequenceError;
    let error = match e {
        LogError::InvalidBatch(BatchError::TooLarge { .. }) => ResponseError::MessageTooLarge,
        LogError::InvalidBatch(_) => ResponseError::CorruptMessage,
        LogError::Sequence(SequenceError::OutOfOrder { .. }) => {
            ResponseError::OutOfOrderSequenceNumber
        }
        LogError::Sequence(SequenceError::StaleEpoch { .. }) => ResponseError::InvalidProducerEpoch,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::Io { .. } | LogError::Poisoned(_) | LogError::Closed(_) => {
            ResponseError::KafkaStorageError
        }
        LogError::CorruptStoredBatch { .. } => ResponseError::KafkaStorageError,
    };
    error.code()
}

/// The Kafka error code for a failed topic operation.
pub(crate) fn storage_error_code(e: &StorageError) -> i16 {
    let error = match e {
        StorageError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        StorageError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        StorageError::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
        StorageError::InvalidPartitions { .. } => ResponseError::InvalidPartitions,
        StorageError::InvalidConfig(_) => ResponseError::InvalidConfig,
        StorageError::Log(e) => return log_error_code(e),
    };
    error.code()
}
