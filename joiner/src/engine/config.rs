//! Join configuration: the windows of the join rule (DESIGN.md section 3), labels (section 6),
//! negative down-sampling and the parser's field names.

use std::time::Duration;

use serde::Deserialize;

/// Where a record's event time comes from.
///
/// Exists because some producers cannot stamp `ts` in the JSON; they rely on the Kafka record
/// timestamp instead (`time_source = "record"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSource {
    /// The JSON field named by `time_field` (epoch milliseconds, an integer).
    #[default]
    Json,
    /// The Kafka record timestamp handed to the engine with the record.
    Record,
}

/// How a label aggregates the accepted actions of the types it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Agg {
    /// 1 if at least one such action was joined, else 0 (an integer).
    Any,
    /// Number of such actions joined (an integer).
    Count,
    /// Sum of their `value`s; an action without `value` adds nothing (a float).
    Sum,
    /// Largest `value` among them; 0.0 when none carries a value (a float).
    Max,
    /// `value` of the latest one in event time (ties by type name); 0.0 if it has none (a float).
    Last,
}

/// One configured label: `[[labels]] name, actions, agg`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelDef {
    /// Field name in the sample's `labels` object.
    pub name: String,
    /// Action types this label reads.
    pub actions: Vec<String>,
    /// Aggregate over the accepted actions of those types.
    pub agg: Agg,
}

impl LabelDef {
    /// Convenience constructor used by the defaults and tests.
    pub fn new(name: &str, actions: &[&str], agg: Agg) -> Self {
        Self {
            name: name.to_owned(),
            actions: actions.iter().map(|s| (*s).to_owned()).collect(),
            agg,
        }
    }

    /// The default labels of DESIGN.md section 6: `click`, `like`, `comment`, `share` (`any`) and
    /// `dwell_ms` (`sum` of `dwell` values).
    pub fn defaults() -> Vec<LabelDef> {
        vec![
            LabelDef::new("click", &["click"], Agg::Any),
            LabelDef::new("like", &["like"], Agg::Any),
            LabelDef::new("comment", &["comment"], Agg::Any),
            LabelDef::new("share", &["share"], Agg::Any),
            LabelDef::new("dwell_ms", &["dwell"], Agg::Sum),
        ]
    }
}

/// Everything the engine needs to know, deserialisable from the `[join]` section (plus the
/// `labels` list, which the later `config` integration fills from `[[labels]]`).
///
/// Durations accept `"180s"`, `"30m"`, `"1h"`, `"250ms"` strings or an integer of milliseconds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JoinConfig {
    /// Renewal window after each accepted action (default 180 s).
    #[serde(deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// Hard deadline after the feature time (default 30 min).
    #[serde(deserialize_with = "de_duration")]
    pub hard_timeout: Duration,
    /// Wait for a first action; `None` means `hard_timeout`. Must not exceed `hard_timeout`.
    #[serde(deserialize_with = "de_opt_duration")]
    pub negative_timeout: Option<Duration>,
    /// Out-of-orderness bound used by the watermark (computed by the caller, default 5 s).
    #[serde(deserialize_with = "de_duration")]
    pub max_out_of_orderness: Duration,
    /// Silent partitions leave the watermark minimum after this (used by the caller, default 30 s).
    #[serde(deserialize_with = "de_duration")]
    pub idle_partition_timeout: Duration,
    /// How long a closed key is remembered so that actions and features arriving for it are
    /// classified as "after close" / "duplicate" instead of starting a new key. `None` means
    /// `idle_timeout`. Not in DESIGN.md: the spec is silent on how long "closed" lasts, and
    /// remembering forever would make memory unbounded.
    #[serde(deserialize_with = "de_opt_duration")]
    pub closed_key_retention: Option<Duration>,
    /// Fraction of negatives (`no_action` samples) kept, chosen by a hash of the key, in [0, 1].
    pub negative_sample_rate: f64,
    /// JSON field holding the join key (a string).
    pub key_field: String,
    /// JSON field holding the event time (integer epoch milliseconds).
    pub time_field: String,
    /// Where event time comes from.
    pub time_source: TimeSource,
    /// Labels written into every sample, in this order.
    pub labels: Vec<LabelDef>,
}

impl Default for JoinConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(180),
            hard_timeout: Duration::from_secs(30 * 60),
            negative_timeout: None,
            max_out_of_orderness: Duration::from_secs(5),
            idle_partition_timeout: Duration::from_secs(30),
            closed_key_retention: None,
            negative_sample_rate: 1.0,
            key_field: "impression_id".to_owned(),
            time_field: "ts".to_owned(),
            time_source: TimeSource::Json,
            labels: LabelDef::defaults(),
        }
    }
}

/// A configuration the engine refuses.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// A duration is zero where the rule needs a positive one, or absurdly large.
    #[error("{name} must be between 1 ms and 100 years, got {value:?}")]
    Duration {
        /// Field name.
        name: &'static str,
        /// The value given.
        value: Duration,
    },
    /// `negative_timeout` beyond `hard_timeout` would let an action be accepted after the hard
    /// deadline.
    #[error("negative_timeout ({negative:?}) must not exceed hard_timeout ({hard:?})")]
    NegativeBeyondHard {
        /// negative_timeout
        negative: Duration,
        /// hard_timeout
        hard: Duration,
    },
    /// `negative_sample_rate` outside [0, 1].
    #[error("negative_sample_rate must be in [0, 1], got {0}")]
    SampleRate(f64),
    /// An empty or duplicated field / label name.
    #[error("invalid name: {0}")]
    Name(String),
}

/// Largest duration accepted (keeps all deadline arithmetic far from i64 overflow).
const MAX_DURATION_MS: u128 = 100 * 365 * 24 * 3600 * 1000;

/// Durations of a validated config in milliseconds, as the engine uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowsMs {
    pub(crate) idle: i64,
    pub(crate) hard: i64,
    pub(crate) negative: i64,
    pub(crate) retention: i64,
}

impl JoinConfig {
    /// `negative_timeout`, defaulted.
    pub fn negative_timeout(&self) -> Duration {
        self.negative_timeout.unwrap_or(self.hard_timeout)
    }

    /// `closed_key_retention`, defaulted.
    pub fn closed_key_retention(&self) -> Duration {
        self.closed_key_retention.unwrap_or(self.idle_timeout)
    }

    /// Checks the config and returns the durations in milliseconds.
    pub(crate) fn validate(&self) -> Result<WindowsMs, ConfigError> {
        fn ms(name: &'static str, d: Duration, allow_zero: bool) -> Result<i64, ConfigError> {
            let v = d.as_millis();
            if (v == 0 && !allow_zero) || v > MAX_DURATION_MS {
                return Err(ConfigError::Duration { name, value: d });
            }
            i64::try_from(v).map_err(|_| ConfigError::Duration { name, value: d })
        }
        let idle = ms("idle_timeout", self.idle_timeout, false)?;
        let hard = ms("hard_timeout", self.hard_timeout, false)?;
        let negative = ms("negative_timeout", self.negative_timeout(), false)?;
        let retention = ms("closed_key_retention", self.closed_key_retention(), true)?;
        if negative > hard {
            return Err(ConfigError::NegativeBeyondHard {
                negative: self.negative_timeout(),
                hard: self.hard_timeout,
            });
        }
        if !(0.0..=1.0).contains(&self.negative_sample_rate) {
            return Err(ConfigError::SampleRate(self.negative_sample_rate));
        }
        if self.key_field.is_empty() || self.time_field.is_empty() {
            return Err(ConfigError::Name(
                "key_field and time_field must be non-empty".into(),
            ));
        }
        if self.key_field.len() > 1024 {
            return Err(ConfigError::Name(
                "key_field is longer than 1024 bytes".into(),
            ));
        }
        let mut names: Vec<&str> = self.labels.iter().map(|l| l.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::Name(format!(
                "label {:?} is defined twice",
                w[0]
            )));
        }
        if names.iter().any(|n| n.is_empty()) {
            return Err(ConfigError::Name("a label name is empty".into()));
        }
        Ok(WindowsMs {
            idle,
            hard,
            negative,
            retention,
        })
    }
}

/// Parses `"180s"`, `"30m"`, `"2h"`, `"250ms"`, `"1d"` (whole numbers only).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms_per = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms_per).map(Duration::from_millis)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurRepr {
    Ms(u64),
    Text(String),
}

fn to_duration<E: serde::de::Error>(r: DurRepr) -> Result<Duration, E> {
    match r {
        DurRepr::Ms(ms) => Ok(Duration::from_millis(ms)),
        DurRepr::Text(s) => parse_duration(&s)
            .ok_or_else(|| E::custom(format!("invalid duration {s:?} (use e.g. 180s, 30m)"))),
    }
}

pub(crate) fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    to_duration(DurRepr::deserialize(d)?)
}

pub(crate) fn de_opt_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    Option::<DurRepr>::deserialize(d)?
        .map(to_duration)
        .transpose()
}
