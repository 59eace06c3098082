//! The last sample already in an output partition (DESIGN.md section 4): a member that takes over
//! a partition suppresses every sample at or before it, since samples are written to each
//! partition in strictly increasing `(window_end, key)` order by its single owner.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Position of a sample in its partition's total order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SampleOrder {
    /// The sample's `window_end`.
    pub window_end: i64,
    /// Its key.
    pub key: Vec<u8>,
}

/// Reads `window_end` from sample JSON without parsing the rest (the field is a plain integer).
/// It is searched from the end: the sample's fixed field order puts it after the user's raw
/// `features`, which may contain a field of the same name.
pub fn window_end_of(sample: &[u8]) -> Option<i64> {
    const FIELD: &[u8] = b"\"window_end\":";
    let at = sample.windows(FIELD.len()).rposition(|w| w == FIELD)? + FIELD.len();
    let digits = &sample[at..];
    let end = digits
        .iter()
        .position(|b| !(b.is_ascii_digit() || *b == b'-'))
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// Reads the last record of `topic`/`partition`; `None` when the partition is empty. Transient
/// errors (e.g. while the broker restarts) are retried until `timeout`.
pub fn last_sample(
    client: &ClientConfig,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> anyhow::Result<Option<SampleOrder>> {
    let deadline = Instant::now() + timeout;
    // `assign` needs a group id in librdkafka (it fails with "Unknown group" without one); the
    // reader never joins the group nor commits.
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", "recjoin-output-tail")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()?;
    loop {
        match read_last(&consumer, topic, partition, deadline) {
            Ok(last) => return Ok(last),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(topic, partition, error = %e, "reading the output tail; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                return Err(e.context(format!("reading the last sample of {topic}/{partition}")));
            }
        }
    }
}

fn read_last(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    deadline: Instant,
) -> anyhow::Result<Option<SampleOrder>> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let (low, high) =
        consumer.fetch_watermarks(topic, partition, remaining.min(Duration::from_secs(5)))?;
    if high <= low {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(high - 1))?;
    consumer.assign(&tpl)?;
    while Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message?;
        if message.offset() != high - 1 {
            continue;
        }
        let payload = message.payload().unwrap_or_default();
        let window_end = window_end_of(payload).ok_or_else(|| {
            anyhow::anyhow!("{topic}/{partition} offset {} is not a sample", high - 1)
        })?;
        return Ok(Some(SampleOrder {
            window_end,
            key: message.key().unwrap_or_default().to_vec(),
        }));
    }
    anyhow::bail!(
        "timed out reading offset {} of {topic}/{partition}",
        high - 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_end_is_read_from_sample_json() {
        let s = br#"{"impression_id":"a","actions":[],"labels":{"x":0},"close_reason":"idle","window_end":1732150181000,"sample_rate":1.0}"#;
        assert_eq!(window_end_of(s), Some(1_732_150_181_000));
        assert_eq!(window_end_of(br#"{"window_end":-5}"#), Some(-5));
        assert_eq!(window_end_of(b"{}"), None);
        let tricky = br#"{"features":{"window_end":1},"window_end":99,"sample_rate":1.0}"#;
        assert_eq!(window_end_of(tricky), Some(99));
        assert_eq!(window_end_of(br#"{"window_end":"x"}"#), None);
        let a = SampleOrder {
            window_end: 5,
            key: b"b".to_vec(),
        };
        assert!(
            a < SampleOrder {
                window_end: 5,
                key: b"c".to_vec()
            }
        );
        assert!(
            a > SampleOrder {
                window_end: 4,
                key: b"z".to_vec()
            }
        );
    }
}
