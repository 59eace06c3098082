//! All partition logs of a broker: the on-disk topic registry (create, delete, add partitions,
//! per-topic config overrides), lookup of a partition's log, and the background tasks that flush,
//! apply retention and checkpoint recovery points.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use super::config::{ConfigError, LogConfig};
use super::error::LogError;
use super::partition_log::{PartitionLog, fsync_dir};

const REGISTRY_FILE: &str = "topics.json";
const DELETE_SUFFIX: &str = "-delete";
/// Kafka's limit on topic name length.
const MAX_TOPIC_NAME_LEN: usize = 249;
/// Most partitions one topic may have: each is a directory and open files, so a request for
/// millions must be refused rather than attempted (Kafka has no hard limit; this is ours).
pub const MAX_PARTITIONS: i32 = 4096;

/// Why a topic operation failed; each maps to one Kafka error code in the broker.
#[derive(Debug, Error)]
pub enum StorageError {
    /// CreateTopics for a name that exists (TOPIC_ALREADY_EXISTS).
    #[error("topic {0} already exists")]
    TopicExists(String),
    /// The topic is not known (UNKNOWN_TOPIC_OR_PARTITION).
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    /// The name breaks Kafka's rules (INVALID_TOPIC_EXCEPTION).
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName {
        /// The name given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A partition count that is not positive, or shrinks a topic (INVALID_PARTITIONS).
    #[error("invalid partition count {requested} for topic {topic} (has {current})")]
    InvalidPartitions {
        /// The topic.
        topic: String,
        /// Partitions asked for.
        requested: i32,
        /// Partitions it has (0 for a new topic).
        current: i32,
    },
    /// A topic config override is unknown or malformed (INVALID_CONFIG).
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// The log layer failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// A topic as the registry stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// Kafka topic id.
    pub id: Uuid,
    /// Number of partitions.
    pub partitions: i32,
    /// Topic-level config overrides, by Kafka name.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Registry {
    topics: BTreeMap<String, TopicMeta>,
}

/// A topic and its open partition logs.
#[derive(Debug, Clone)]
pub struct Topic {
    /// Registry entry.
    pub meta: TopicMeta,
    /// Effective settings: broker defaults with the topic's overrides.
    pub config: LogConfig,
    /// Logs by partition number.
    pub partitions: Vec<Arc<PartitionLog>>,
}

/// Intervals of the background work.
#[derive(Debug, Clone, Copy)]
pub struct BackgroundIntervals {
    /// How often logs are checked for `flush.ms`.
    pub flush_check: Duration,
    /// How often retention runs.
    pub retention_check: Duration,
    /// How often recovery points are persisted.
    pub checkpoint: Duration,
}

impl Default for BackgroundIntervals {
    fn default() -> Self {
        Self {
            flush_check: Duration::from_millis(2),
            retention_check: Duration::from_secs(30),
            checkpoint: Duration::from_secs(10),
        }
    }
}

/// Every partition log of the broker, and the topic registry that says which exist.
#[derive(Debug)]
pub struct LogManager {
    data_dir: PathBuf,
    defaults: LogConfig,
    /// Serialises registry changes (create, delete, add partitions) and their persistence.
    registry: Mutex<Registry>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
}

/// Wall-clock milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl LogManager {
    /// Opens the data directory: loads the registry, finishes interrupted topic deletions and
    /// opens (recovering where needed) every partition log.
    pub fn open(data_dir: &Path, defaults: LogConfig) -> Result<Self, StorageError> {
        fs::create_dir_all(data_dir).map_err(LogError::io("create data directory", data_dir))?;
        let registry_path = data_dir.join(REGISTRY_FILE);
        let registry: Registry = match fs::read(&registry_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LogError::Io {
                op: "parse topic registry",
                path: registry_path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Registry::default(),
            Err(e) => return Err(LogError::io("read topic registry", &registry_path)(e).into()),
        };
        for entry in
            fs::read_dir(data_dir).map_err(LogError::io("list data directory", data_dir))?
        {
            let entry = entry.map_err(LogError::io("list data directory", data_dir))?;
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(DELETE_SUFFIX))
            {
                fs::remove_dir_all(entry.path())
                    .map_err(LogError::io("delete topic", entry.path()))?;
            }
        }
        let now = now_ms();
        let mut topics = HashMap::new();
        for (name, meta) in &registry.topics {
            let config = defaults.with_overrides(&meta.config)?;
            let partitions = (0..meta.partitions)
                .map(|p| {
                    PartitionLog::open(&partition_dir(data_dir, name, p), config.clone(), now)
                        .map(Arc::new)
                })
                .collect::<Result<Vec<_>, _>>()?;
            topics.insert(
                name.clone(),
                Arc::new(Topic {
                    meta: meta.clone(),
                    config,
                    partitions,
                }),
            );
        }
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            defaults,
            registry: Mutex::new(registry),
            topics: RwLock::new(topics),
        })
    }

    /// Checks that a topic could be created as asked (CreateTopics with `validate_only`), and
    /// returns its effective settings.
    pub fn validate_new_topic(
        &self,
        name: &str,
        partitions: i32,
        overrides: &BTreeMap<String, String>,
    ) -> Result<LogConfig, StorageError> {
        validate_topic_name(name)?;
        if self.topics.read().contains_key(name) {
            return Err(StorageError::TopicExists(name.to_owned()));
        }
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(invalid_partitions(name, partitions, 0));
        }
        Ok(self.defaults.with_overrides(overrides)?)
    }

    /// Creates a topic with `partitions` partitions and Kafka-named config overrides.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        overrides: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, StorageError> {
        // Registry changes are serialised, so the check below still holds at the insert.
        let mut registry = self.registry.lock();
        let config = self.validate_new_topic(name, partitions, &overrides)?;
        let meta = TopicMeta {
            id: Uuid::new_v4(),
            partitions,
            config: overrides,
        };
        let logs = self.open_partitions(name, &config, 0..partitions)?;
        registry.topics.insert(name.to_owned(), meta.clone());
        if let Err(e) = self.persist(&registry) {
            registry.topics.remove(name);
            return Err(e);
        }
        let topic = Arc::new(Topic {
            meta,
            config,
            partitions: logs,
        });
        self.topics
            .write()
            .insert(name.to_owned(), Arc::clone(&topic));
        Ok(topic)
    }

    /// Raises a topic's partition count to `total`.
    pub fn create_partitions(&self, name: &str, total: i32) -> Result<Arc<Topic>, StorageError> {
        let mut registry = self.registry.lock();
        let current = self
            .topic(name)
            .ok_or_else(|| StorageError::UnknownTopic(name.to_owned()))?;
        let have = current.meta.partitions;
        if total <= have || total > MAX_PARTITIONS {
            return Err(invalid_partitions(name, total, have));
        }
        let mut partitions = current.partitions.clone();
        partitions.extend(self.open_partitions(name, &current.config, have..total)?);
        let mut meta = current.meta.clone();
        meta.partitions = total;
        registry.topics.insert(name.to_owned(), meta.clone());
        self.persist(&registry)?;
        let topic = Arc::new(Topic {
            meta,
            config: current.config.clone(),
            partitions,
        });
        self.topics
            .write()
            .insert(name.to_owned(), Arc::clone(&topic));
        Ok(topic)
    }

    /// Deletes a topic: removes it from the registry, closes its logs and deletes their files.
    pub fn delete_topic(&self, name: &str) -> Result<(), StorageError> {
        let mut registry = self.registry.lock();
        let meta = registry
            .topics
            .remove(name)
            .ok_or_else(|| StorageError::UnknownTopic(name.to_owned()))?;
        self.persist(&registry)?;
        let topic = self.topics.write().remove(name);
        if let Some(topic) = topic {
            for log in &topic.partitions {
                // Closing makes in-flight appenders fail instead of writing into deleted files.
                let _ = log.close();
            }
        }
        // Rename first (cheap, atomic) so the name is free at once; a crash before the removal
        // below leaves `*-delete` directories that the next open removes.
        let mut doomed = Vec::new();
        for p in 0..meta.partitions {
            let dir = partition_dir(&self.data_dir, name, p);
            let target =
                dir.with_file_name(format!("{name}-{p}.{}{DELETE_SUFFIX}", meta.id.simple()));
            if dir.exists() {
                fs::rename(&dir, &target).map_err(LogError::io("rename deleted topic", &dir))?;
                doomed.push(target);
            }
        }
        fsync_dir(&self.data_dir)?;
        for dir in doomed {
            fs::remove_dir_all(&dir).map_err(LogError::io("delete topic", &dir))?;
        }
        Ok(())
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<(String, Arc<Topic>)> {
        let mut all: Vec<_> = self
            .topics
            .read()
            .iter()
            .map(|(n, t)| (n.clone(), Arc::clone(t)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The log of one partition.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<Arc<PartitionLog>> {
        let topics = self.topics.read();
        let index = usize::try_from(partition).ok()?;
        topics.get(topic)?.partitions.get(index).cloned()
    }

    /// The broker-wide default log settings.
    pub fn defaults(&self) -> &LogConfig {
        &self.defaults
    }

    fn all_logs(&self) -> Vec<Arc<PartitionLog>> {
        self.topics
            .read()
            .values()
            .flat_map(|t| t.partitions.iter().cloned())
            .collect()
    }

    /// Fsyncs every log whose unflushed data is older than its `flush.ms`.
    pub fn flush_due(&self, now_ms: i64) {
        for log in self.all_logs() {
            if let Err(e) = log.flush_if_due(now_ms) {
                tracing::error!(log = %log.dir().display(), error = %e, "background flush failed");
            }
        }
    }

    /// Runs retention on every log; returns the number of segments deleted.
    pub fn apply_retention(&self, now_ms: i64) -> usize {
        let mut deleted = 0;
        for log in self.all_logs() {
            match log.apply_retention(now_ms) {
                Ok(outcome) => deleted += outcome.segments,
                Err(e) => {
                    tracing::error!(log = %log.dir().display(), error = %e, "retention failed")
                }
            }
        }
        deleted
    }

    /// Persists every log's recovery point.
    pub fn checkpoint(&self) {
        for log in self.all_logs() {
            if let Err(e) = log.checkpoint() {
                tracing::warn!(log = %log.dir().display(), error = %e, "recovery checkpoint failed");
            }
        }
    }

    /// Clean shutdown of every log. Returns the first error after trying them all.
    pub fn close(&self) -> Result<(), StorageError> {
        let mut first = Ok(());
        for log in self.all_logs() {
            if let Err(e) = log.close() {
                tracing::error!(log = %log.dir().display(), error = %e, "close failed");
                if first.is_ok() {
                    first = Err(e.into());
                }
            }
        }
        first
    }

    /// Starts the background thread that flushes, applies retention and checkpoints. It stops
    /// when the returned handle is stopped or dropped.
    pub fn spawn_background(self: &Arc<Self>, intervals: BackgroundIntervals) -> BackgroundTasks {
        let stop = Arc::new(AtomicBool::new(false));
        let manager = Arc::clone(self);
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("log-background".into())
            .spawn(move || {
                let mut last_retention = std::time::Instant::now();
                let mut last_checkpoint = std::time::Instant::now();
                while !flag.load(Ordering::Acquire) {
                    std::thread::park_timeout(intervals.flush_check);
                    let now = now_ms();
                    manager.flush_due(now);
                    if last_retention.elapsed() >= intervals.retention_check {
                        manager.apply_retention(now);
                        last_retention = std::time::Instant::now();
                    }
                    if last_checkpoint.elapsed() >= intervals.checkpoint {
                        manager.checkpoint();
                        last_checkpoint = std::time::Instant::now();
                    }
                }
            })
            .ok();
        BackgroundTasks { stop, handle }
    }

    fn open_partitions(
        &self,
        name: &str,
        config: &LogConfig,
        range: std::ops::Range<i32>,
    ) -> Result<Vec<Arc<PartitionLog>>, StorageError> {
        let now = now_ms();
        range
            .map(|p| {
                let dir = partition_dir(&self.data_dir, name, p);
                // A directory left by a failed earlier attempt holds nothing registered.
                if dir.exists() {
                    fs::remove_dir_all(&dir)
                        .map_err(LogError::io("clear partition directory", &dir))?;
                }
                Ok(Arc::new(PartitionLog::open(&dir, config.clone(), now)?))
            })
            .collect()
    }

    fn persist(&self, registry: &Registry) -> Result<(), StorageError> {
        let path = self.data_dir.join(REGISTRY_FILE);
        let tmp = self.data_dir.join(format!("{REGISTRY_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(registry).map_err(|e| LogError::Io {
            op: "encode topic registry",
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        fs::File::create(&tmp)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, &bytes)?;
                f.sync_all()
            })
            .map_err(LogError::io("write topic registry", &tmp))?;
        fs::rename(&tmp, &path).map_err(LogError::io("rename topic registry", &path))?;
        Ok(fsync_dir(&self.data_dir)?)
    }
}

/// Handle of the background thread; stops it on drop.
#[derive(Debug)]
pub struct BackgroundTasks {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl BackgroundTasks {
    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Directory of one partition's log: `<data dir>/<topic>-<partition>`, as Kafka names it.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

fn invalid_partitions(topic: &str, requested: i32, current: i32) -> StorageError {
    StorageError::InvalidPartitions {
        topic: topic.to_owned(),
        requested,
        current,
    }
}

/// Kafka's topic name rules: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), StorageError> {
    let invalid = |reason| {
        Err(StorageError::InvalidTopicName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return invalid("longer than 249 characters");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are not allowed");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}
