//! rdkafka helpers shared by the tests.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// A client config pointing at `bootstrap`, with quick reconnects for restart tests.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "500")
        .set("topic.metadata.refresh.interval.ms", "2000");
    c
}

/// An idempotent acks=all producer config with `compression`.
pub fn producer_config(bootstrap: &str, compression: &str) -> ClientConfig {
    let mut c = client_config(bootstrap);
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", compression)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000");
    c
}

/// Creates a topic with `partitions` partitions through the admin API.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create()?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for r in results {
        r.map_err(|(t, e)| anyhow::anyhow!("create topic {t}: {e}"))?;
    }
    Ok(())
}

/// One consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key (UTF-8).
    pub key: Option<String>,
    /// Value (UTF-8).
    pub value: String,
    /// Timestamp in ms, if any.
    pub timestamp: Option<i64>,
}

/// Reads every partition of `topic` from the beginning up to its high watermark (asked once,
/// before reading) with a manually assigned consumer. Fails on a consumer error or timeout.
pub fn read_all(bootstrap: &str, topic: &str, timeout: Duration) -> Result<Vec<Record>> {
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", format!("reader-{topic}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .context("topic missing from metadata")?;
    if let Some(e) = t.error() {
        bail!("metadata error for {topic}: {e:?}");
    }
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
        if high > low {
            ends.insert(p.id(), high);
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    let mut done: BTreeMap<i32, bool> = ends.keys().map(|p| (*p, false)).collect();
    while done.values().any(|d| !d) {
        if Instant::now() > deadline {
            bail!(
                "read_all({topic}) timed out with {} records read; ends {ends:?}",
                out.len()
            );
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => bail!("consumer error: {e}"),
            Some(Ok(m)) => {
                let end = ends[&m.partition()];
                if m.offset() < end {
                    out.push(to_record(&m));
                }
                if m.offset() + 1 >= end {
                    done.insert(m.partition(), true);
                }
            }
        }
    }
    Ok(out)
}

/// Converts a message to an owned [`Record`].
pub fn to_record<M: Message>(m: &M) -> Record {
    Record {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        value: m
            .payload()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default(),
        timestamp: m.timestamp().to_millis(),
    }
}

/// A client context that keeps librdkafka's last log lines (set `debug` to get more of them),
/// to explain a failure.
#[derive(Debug, Clone, Default)]
pub struct CapturedLog(std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>);

impl CapturedLog {
    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> String {
        self.0
            .lock()
            .map(|q| {
                let skip = q.len().saturating_sub(n);
                q.iter().skip(skip).cloned().collect::<Vec<_>>().join("\n")
            })
            .unwrap_or_default()
    }
}

impl rdkafka::ClientContext for CapturedLog {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        if let Ok(mut q) = self.0.lock() {
            if q.len() >= 5000 {
                q.pop_front();
            }
            q.push_back(format!("{level:?} {fac}: {log_message}"));
        }
    }
}
