//! Start-up checks of the topics: the feature and action topics must be co-partitioned (same
//! partition count), and the output topics must have that count too — they are created if missing.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::TopicNames;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Partition count of a topic, `None` if it does not exist.
fn partitions(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<Option<usize>> {
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let Some(t) = metadata.topics().first() else {
        return Ok(None);
    };
    match t.error() {
        None if !t.partitions().is_empty() => Ok(Some(t.partitions().len())),
        _ => Ok(None),
    }
}

/// Checks co-partitioning of the inputs and creates missing output topics; returns the partition
/// count.
pub fn check_and_create(client: &ClientConfig, topics: &TopicNames) -> anyhow::Result<usize> {
    let consumer: BaseConsumer = client
        .clone()
        .set("allow.auto.create.topics", "false")
        .create()?;
    let features = partitions(&consumer, &topics.features)?;
    let actions = partitions(&consumer, &topics.actions)?;
    let (Some(f), Some(a)) = (features, actions) else {
        let missing = if features.is_none() {
            &topics.features
        } else {
            &topics.actions
        };
        anyhow::bail!(
            "input topic {missing} does not exist: create both inputs with the same partition count, \
             e.g. `recjoin topics create {missing} --partitions 8`"
        );
    };
    anyhow::ensure!(
        f == a,
        "{} has {f} partitions but {} has {a}: the joiner needs co-partitioned inputs (same partition \
         count, records keyed by impression id with Kafka's murmur2 partitioner). Add partitions to the \
         smaller one (`kafka-topics --alter --partitions {}` or CreatePartitions) before producing to it",
        topics.features,
        topics.actions,
        f.max(a)
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    for output in [&topics.samples, &topics.dlq, &topics.late] {
        if output.is_empty() {
            continue;
        }
        match partitions(&consumer, output)? {
            Some(n) if n == f => {}
            Some(n) => anyhow::bail!(
                "output topic {output} has {n} partitions, the inputs {f}: each output partition is written \
                 by the owner of the input partition with the same number, so the counts must match"
            ),
            None => {
                let count = i32::try_from(f)?;
                let new = NewTopic::new(output, count, TopicReplication::Fixed(1));
                let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
                for result in runtime.block_on(admin.create_topics(&[new], &options))? {
                    if let Err((name, code)) = result
                        && code != RDKafkaErrorCode::TopicAlreadyExists
                    {
                        anyhow::bail!("cannot create output topic {name}: {code}");
                    }
                }
                tracing::info!(topic = %output, partitions = f, "created output topic");
            }
        }
    }
    Ok(f)
}
