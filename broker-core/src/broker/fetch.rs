//! Fetch: whole batches from the logs, sent from segment files by reference, with long polling —
//! a fetch that has less than `min_bytes` waits until an append raises a requested partition's high
//! watermark or `max_wait_ms` passes; it never sleeps in a loop.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::select_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Broker, log_error_code};
use crate::log::FileSlice;
use crate::protocol::response::{MAX_FILE_CHUNK, file_placeholder};

/// Longest a fetch may wait, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

pub(crate) async fn fetch(
    broker: &Broker,
    version: i16,
    req: FetchRequest,
) -> (FetchResponse, Vec<FileSlice>) {
    let wait_ms = u64::try_from(req.max_wait_ms).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_millis(wait_ms).min(MAX_WAIT);
    let min_bytes = u64::try_from(req.min_bytes).unwrap_or(0);
    loop {
        let round = read_once(broker, version, &req);
        let done = round.bytes >= min_bytes.max(1) || round.errors || Instant::now() >= deadline;
        if done || round.watchers.is_empty() {
            for topic in &round.response.responses {
                let bytes: usize = topic
                    .partitions
                    .iter()
                    .filter_map(|p| p.records.as_ref())
                    .map(Bytes::len)
                    .sum();
                if bytes > 0 {
                    super::metrics::fetched(&topic.topic, bytes as u64);
                }
            }
            return (round.response, round.files);
        }
        // Wait for any requested partition to move, or the deadline.
        let changes = round
            .watchers
            .into_iter()
            .map(|mut rx| Box::pin(async move { rx.changed().await }));
        let _ = tokio::time::timeout_at(deadline, select_all(changes)).await;
    }
}

struct Round {
    response: FetchResponse,
    files: Vec<FileSlice>,
    bytes: u64,
    errors: bool,
    watchers: Vec<watch::Receiver<i64>>,
}

/// One pass over the requested partitions. Watchers are taken before reading, so an append that
/// lands after the read is never missed.
fn read_once(broker: &Broker, version: i16, req: &FetchRequest) -> Round {
    let mut budget = u64::try_from(req.max_bytes).unwrap_or(0).max(1);
    let mut round = Round {
        response: FetchResponse::default(),
        files: Vec::new(),
        bytes: 0,
        errors: false,
        watchers: Vec::new(),
    };
    for topic in &req.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let mut data = PartitionData::default()
                .with_partition_index(p.partition)
                .with_records(Some(Bytes::new()));
            let Some(log) = broker.logs.partition(&topic.topic, p.partition) else {
                data.error_code = ResponseError::UnknownTopicOrPartition.code();
                round.errors = true;
                partitions.push(data);
                continue;
            };
            round.watchers.push(log.subscribe());
            // The first partition with data may exceed the response budget by one batch.
            let limit = u64::try_from(p.partition_max_bytes)
                .unwrap_or(0)
                .min(if round.bytes == 0 { u64::MAX } else { budget })
                .min(MAX_FILE_CHUNK as u64);
            match log.read(p.fetch_offset, limit) {
                Ok(read) => {
                    data.high_watermark = read.high_watermark;
                    data.last_stable_offset = read.high_watermark;
                    if version >= 5 {
                        data.log_start_offset = read.log_start_offset;
                    }
                    let slice = read.slice.filter(|_| limit > 0);
                    if let Some(slice) = slice
                        .and_then(|s| Some((file_placeholder(usize::try_from(s.len).ok()?)?, s)))
                    {
                        let (placeholder, slice) = slice;
                        round.bytes += slice.len;
                        budget = budget.saturating_sub(slice.len);
                        data.records = Some(placeholder);
                        round.files.push(slice);
                    }
                }
                Err(e) => {
                    data.error_code = log_error_code(&e);
                    data.high_watermark = log.high_watermark();
                    if version >= 5 {
                        data.log_start_offset = log.log_start_offset();
                    }
                    round.errors = true;
                }
            }
            partitions.push(data);
        }
        round.response.responses.push(
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_partitions(partitions),
        );
    }
    round
}
