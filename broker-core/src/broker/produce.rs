//! Produce: append each partition's batches to its log and acknowledge per `acks` — `0` never,
//! `1` once in the page cache, `-1` (all) once fsynced with fsync durability. Concurrent producers
//! share fsyncs through the log's group commit.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{Broker, log_error_code};
use crate::log::{Durability, PartitionLog, now_ms};

pub(crate) async fn produce(broker: &Broker, req: ProduceRequest) -> Option<ProduceResponse> {
    let acks = req.acks;
    let refuse_all = if req.transactional_id.is_some() {
        Some(ResponseError::InvalidRequest.code()) // transactions are not supported
    } else if !(-1..=1).contains(&acks) {
        Some(ResponseError::InvalidRequiredAcks.code())
    } else {
        None
    };
    let wait_for_fsync = acks == -1 && broker.config.log.durability == Durability::Fsync;
    let now = now_ms();
    let mut pending: Vec<(usize, usize, Arc<PartitionLog>, i64)> = Vec::new();
    let mut responses = Vec::with_capacity(req.topic_data.len());
    for (t, topic) in req.topic_data.into_iter().enumerate() {
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for (p, data) in topic.partition_data.into_iter().enumerate() {
            let mut response = PartitionProduceResponse::default().with_index(data.index);
            let log = broker.logs.partition(&topic.name, data.index);
            match (refuse_all, log, data.records) {
                (Some(code), _, _) => response.error_code = code,
                (None, None, _) => {
                    response.error_code = ResponseError::UnknownTopicOrPartition.code()
                }
                (None, Some(_), None) => response.error_code = ResponseError::CorruptMessage.code(),
                (None, Some(log), Some(records)) => match log.append(&records, now) {
                    Ok(info) => {
                        if !info.duplicate {
                            let count =
                                u64::try_from(info.last_offset - info.base_offset + 1).unwrap_or(0);
                            super::metrics::produced(&topic.name, count, records.len());
                        }
                        response.base_offset = info.base_offset;
                        response.log_start_offset = info.log_start_offset;
                        if wait_for_fsync {
                            // A retried duplicate may be acknowledged only once it is durable too.
                            pending.push((t, p, log, info.last_offset + 1));
                        }
                    }
                    Err(e) => {
                        tracing::debug!(topic = %topic.name.0, partition = data.index, error = %e, "produce refused");
                        response.error_code = log_error_code(&e);
                    }
                },
            }
            partitions.push(response);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions),
        );
    }
    for (t, p, code) in wait_durable(pending).await {
        responses[t].partition_responses[p].error_code = code;
    }
    (acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}

/// Waits until each log is fsynced up to its offset, off the async threads; returns the error
/// code of every partition whose fsync failed.
async fn wait_durable(
    pending: Vec<(usize, usize, Arc<PartitionLog>, i64)>,
) -> Vec<(usize, usize, i16)> {
    if pending.is_empty() {
        return Vec::new();
    }
    let positions: Vec<(usize, usize)> = pending.iter().map(|(t, p, _, _)| (*t, *p)).collect();
    let result = tokio::task::spawn_blocking(move || {
        pending
            .into_iter()
            .filter_map(|(t, p, log, end)| {
                log.sync_to(end).err().map(|e| (t, p, log_error_code(&e)))
            })
            .collect::<Vec<_>>()
    })
    .await;
    result.unwrap_or_else(|e| {
        // Durability is unknown: acknowledge nothing.
        tracing::error!(error = %e, "fsync task failed");
        let code = ResponseError::KafkaStorageError.code();
        positions.into_iter().map(|(t, p)| (t, p, code)).collect()
    })
}
