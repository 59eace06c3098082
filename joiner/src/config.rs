//! The service's settings (DESIGN.md section 6), layered: built-in defaults < file
//! (`recjoin.toml`) < environment (`RECJOIN__SECTION__KEY`) < command-line flags. Unknown keys in
//! any layer are errors that name the key; durations are written like `180s` or `30m`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::engine::TopicKind;
use crate::engine::config::{JoinConfig, LabelDef, de_duration};

/// Every setting of `recjoin join` / `up` / `replay`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// How to reach Kafka.
    pub kafka: KafkaSettings,
    /// Topic names.
    pub topics: TopicNames,
    /// The join rule's windows and record fields.
    pub join: JoinConfig,
    /// Labels, as `[[labels]]` tables; replaces the defaults when given.
    pub labels: Option<Vec<LabelDef>>,
    /// The built-in broker of `recjoin up`.
    pub broker: BrokerSettings,
    /// The metrics port.
    pub metrics: MetricsSettings,
}

/// `[kafka]`: the cluster and the client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Consumer group of the joiner members.
    pub group: String,
    /// How often low-water offsets are committed.
    #[serde(deserialize_with = "de_duration")]
    pub commit_interval: Duration,
    /// Extra librdkafka properties for every client (e.g. `security.protocol`).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap: "127.0.0.1:9092".to_owned(),
            group: "recjoin".to_owned(),
            commit_interval: Duration::from_secs(1),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaSettings {
    /// librdkafka settings every client of the service starts from: the bootstrap servers and
    /// the extra properties.
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut client = rdkafka::ClientConfig::new();
        client.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.properties {
            client.set(k, v);
        }
        client
    }
}

/// `[topics]`: where records come from and go to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicNames {
    /// Feature records.
    pub features: String,
    /// Action records.
    pub actions: String,
    /// Labelled samples.
    pub samples: String,
    /// Dead letters.
    pub dlq: String,
    /// Late records and actions after close; empty to only count them.
    pub late: String,
}

impl TopicNames {
    /// Which input a topic is: the features or the actions topic (`None` for any other).
    pub fn input_kind(&self, topic: &str) -> Option<TopicKind> {
        if topic == self.features {
            Some(TopicKind::Feature)
        } else if topic == self.actions {
            Some(TopicKind::Action)
        } else {
            None
        }
    }

    /// The input topic of a kind.
    pub fn input_topic(&self, kind: TopicKind) -> &str {
        match kind {
            TopicKind::Feature => &self.features,
            TopicKind::Action => &self.actions,
        }
    }
}

impl Default for TopicNames {
    fn default() -> Self {
        Self {
            features: "features".to_owned(),
            actions: "actions".to_owned(),
            samples: "samples".to_owned(),
            dlq: "recjoin.dlq".to_owned(),
            late: "recjoin.late".to_owned(),
        }
    }
}

/// `[broker]`: the built-in broker run by `recjoin up`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// `fsync` or `os`.
    pub durability: String,
    /// Delete segments older than this.
    #[serde(deserialize_with = "de_duration")]
    pub retention: Duration,
    /// Roll segments at this size.
    pub segment_bytes: u64,
    /// Background fsync interval.
    #[serde(deserialize_with = "de_duration")]
    pub flush_interval: Duration,
    /// Partitions of auto-created topics.
    pub partitions: i32,
    /// Newest bytes of each partition kept in the page cache once on disk; 0 leaves the page
    /// cache to the kernel (see `broker_core::log::LogConfig::page_cache_bytes`).
    pub page_cache_bytes: u64,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            data_dir: PathBuf::from("./data"),
            durability: "fsync".to_owned(),
            retention: Duration::from_secs(7 * 24 * 3600),
            segment_bytes: 1 << 30,
            flush_interval: Duration::from_millis(5),
            partitions: 8,
            page_cache_bytes: broker_core::log::DEFAULT_PAGE_CACHE_BYTES,
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Address of `/metrics`, `/healthz` and `/readyz`; none when unset.
    pub listen: Option<SocketAddr>,
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A layer did not parse, or named an unknown key (the message names it).
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    /// The join settings are inconsistent.
    #[error("invalid [join] settings: {0}")]
    Join(#[from] crate::engine::config::ConfigError),
}

impl Settings {
    /// Loads defaults, then `file` (if given), then `RECJOIN__…` variables from `env`, then the
    /// `overrides` (flags, as `section.key` → value).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(&str, String)],
    ) -> Result<Self, SettingsError> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
        }
        let env: config::Map<String, String> = env.into_iter().collect();
        builder = builder.add_source(
            config::Environment::with_prefix("RECJOIN")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        for (key, value) in overrides {
            builder = builder.set_override(*key, value.clone())?;
        }
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        if let Some(labels) = settings.labels.take() {
            settings.join.labels = labels;
        }
        crate::engine::Engine::new(settings.join.clone())?;
        Ok(settings)
    }

    /// Loads from the process environment.
    pub fn from_env(
        file: Option<&Path>,
        overrides: &[(&str, String)],
    ) -> Result<Self, SettingsError> {
        Self::load(file, std::env::vars(), overrides)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::Agg;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[kafka]\nbootstrap = \"file:1\"\ngroup = \"g-file\"\n[join]\nidle_timeout = \"60s\"\nhard_timeout = \"10m\"\n\
             [[labels]]\nname = \"clicked\"\nactions = [\"click\"]\nagg = \"count\""
        )
        .unwrap();
        let s = Settings::load(
            Some(file.path()),
            env(&[
                ("RECJOIN__KAFKA__GROUP", "g-env"),
                ("RECJOIN__JOIN__IDLE_TIMEOUT", "90s"),
                ("OTHER", "x"),
            ]),
            &[("kafka.bootstrap", "flag:2".to_owned())],
        )
        .unwrap();
        assert_eq!(s.kafka.bootstrap, "flag:2");
        assert_eq!(s.kafka.group, "g-env");
        assert_eq!(s.join.idle_timeout, Duration::from_secs(90));
        assert_eq!(s.join.hard_timeout, Duration::from_secs(600));
        assert_eq!(s.join.labels.len(), 1);
        assert_eq!(s.join.labels[0].agg, Agg::Count);
        assert_eq!(s.topics.dlq, "recjoin.dlq");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err =
            Settings::load(None, env(&[("RECJOIN__JOIN__IDEL_TIMEOUT", "1s")]), &[]).unwrap_err();
        assert!(err.to_string().contains("idel_timeout"), "{err}");
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[kafkaa]\nbootstrap = \"x\"").unwrap();
        let err = Settings::load(Some(file.path()), env(&[]), &[]).unwrap_err();
        assert!(err.to_string().contains("kafkaa"), "{err}");
        let err =
            Settings::load(None, env(&[("RECJOIN__JOIN__HARD_TIMEOUT", "soon")]), &[]).unwrap_err();
        assert!(
            err.to_string().contains("soon") || err.to_string().contains("hard_timeout"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod deploy_example {
    use super::*;

    /// The annotated example in deploy/ must load, and state exactly the built-in defaults.
    #[test]
    fn deploy_recjoin_toml_is_valid_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/recjoin.toml");
        let s = Settings::load(Some(&path), Vec::new(), &[]).unwrap();
        let d = Settings::load(None, Vec::new(), &[]).unwrap();
        assert_eq!(s.join, d.join);
        assert_eq!(format!("{:?}", s.kafka), format!("{:?}", d.kafka));
        assert_eq!(format!("{:?}", s.topics), format!("{:?}", d.topics));
        assert_eq!(format!("{:?}", s.broker), format!("{:?}", d.broker));
    }
}
