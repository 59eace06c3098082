//! `recjoin topics create|list|describe`: topic administration through the Kafka admin API, so it
//! works the same against the built-in broker and a Kafka cluster.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Arguments of `recjoin topics`.
#[derive(Debug, Clone, clap::Args)]
pub struct TopicsArgs {
    /// Kafka bootstrap address.
    #[arg(long, default_value = "127.0.0.1:9092", global = true)]
    pub bootstrap: String,
    /// What to do.
    #[command(subcommand)]
    pub command: TopicsCommand,
}

/// The `topics` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TopicsCommand {
    /// Create a topic.
    ///
    /// Example: `recjoin topics create features --partitions 8 --config retention.ms=86400000`
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions.
        #[arg(long, default_value_t = 8)]
        partitions: i32,
        /// Replication factor (1 on the built-in broker).
        #[arg(long, default_value_t = 1)]
        replication: i32,
        /// Topic config overrides as key=value (repeatable).
        #[arg(long = "config", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics with their partition counts.
    ///
    /// Example: `recjoin topics list`
    List,
    /// Show a topic's partitions, offsets and config.
    ///
    /// Example: `recjoin topics describe samples`
    Describe {
        /// Topic name.
        name: String,
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got {s:?}"))?;
    Ok((k.to_owned(), v.to_owned()))
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a `topics` subcommand, printing its result on stdout.
pub async fn run(args: TopicsArgs) -> anyhow::Result<()> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &args.bootstrap);
    match args.command {
        TopicsCommand::Create {
            name,
            partitions,
            replication,
            configs,
        } => {
            let admin: AdminClient<DefaultClientContext> = client.create()?;
            let mut topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(replication));
            for (k, v) in &configs {
                topic = topic.set(k, v);
            }
            let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
            for result in admin.create_topics(&[topic], &options).await? {
                match result {
                    Ok(name) => println!("created {name} with {partitions} partitions"),
                    Err((name, code)) => anyhow::bail!("cannot create {name}: {code}"),
                }
            }
        }
        TopicsCommand::List => {
            let consumer: BaseConsumer = client.create()?;
            let metadata =
                tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, TIMEOUT))
                    .await??;
            let mut topics: Vec<_> = metadata
                .topics()
                .iter()
                .map(|t| (t.name().to_owned(), t.partitions().len()))
                .collect();
            topics.sort();
            for (name, partitions) in topics {
                println!("{name}\t{partitions} partitions");
            }
        }
        TopicsCommand::Describe { name } => {
            let consumer: BaseConsumer = client.create()?;
            let topic = name.clone();
            let (metadata, watermarks) = tokio::task::spawn_blocking(move || {
                let metadata = consumer.fetch_metadata(Some(&topic), TIMEOUT)?;
                let partitions: Vec<i32> = metadata
                    .topics()
                    .first()
                    .map(|t| t.partitions().iter().map(|p| p.id()).collect())
                    .unwrap_or_default();
                let watermarks = partitions
                    .into_iter()
                    .map(|p| {
                        consumer
                            .fetch_watermarks(&topic, p, TIMEOUT)
                            .map(|w| (p, w))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok::<_, rdkafka::error::KafkaError>((metadata, watermarks))
            })
            .await??;
            let Some(t) = metadata.topics().first() else {
                anyhow::bail!("no metadata for {name}")
            };
            if let Some(e) = t.error() {
                anyhow::bail!("{name}: {e:?}");
            }
            println!("topic {name}: {} partitions", t.partitions().len());
            for (p, (low, high)) in watermarks {
                println!(
                    "  partition {p}\tstart {low}\tend {high}\trecords {}",
                    high - low
                );
            }
            let admin: AdminClient<DefaultClientContext> = client.create()?;
            let options = AdminOptions::new().request_timeout(Some(TIMEOUT));
            for resource in admin
                .describe_configs(&[ResourceSpecifier::Topic(&name)], &options)
                .await?
            {
                let resource =
                    resource.map_err(|e| anyhow::anyhow!("describe configs of {name}: {e}"))?;
                for entry in resource.entries {
                    println!(
                        "  config {}={}",
                        entry.name,
                        entry.value.unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(())
}
