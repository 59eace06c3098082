//! Produce: append each partition's batches to its log and acknowledge per `acks` — `0` never,
//! `1` once in the page cache, `-1` (all) once fsynced with fsync durability. Concurrent producers
//! share fsyncs through the log's group commit.
//!
//! The two steps are apart ([`append`], then [`Appended::acknowledged`]) so that a connection can
//! take its next request while this one waits for its fsync: the appends stay in request order,
//! and the fsync runs from the moment of the append whether or not anyone waits for it yet.

use std::sync::Arc;

use tokio::task::JoinHandle;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{Broker, log_error_code};
use crate::log::{Durability, PartitionLog, now_ms};

/// A produce request whose batches are appended: its response once they are durable as `acks`
/// asks.
pub(crate) struct Appended {
    acks: i16,
    responses: Vec<TopicProduceResponse>,
    /// The fsync of each partition written, running: its position in `responses` and its error
    /// code if it failed. One blocking task per partition, so that the partitions' fsyncs run at
    /// once and the file system commits them together (one after the other they cost the sum of
    /// their latencies); tokio's bounded blocking pool queues what is beyond its threads.
    durable: Vec<(usize, usize, JoinHandle<Option<i16>>)>,
}

/// Whether a request with these `acks` is answered only after an fsync on this broker.
pub(crate) fn waits_for_fsync(broker: &Broker, acks: i16) -> bool {
    acks == -1 && broker.config.log.durability == Durability::Fsync
}

/// Appends each partition's batches (refusing what must be refused) and starts the fsync that
/// `acks=all` waits for.
pub(crate) fn append(broker: &Broker, req: ProduceRequest) -> Appended {
    let acks = req.acks;
    let refuse_all = if req.transactional_id.is_some() {
        Some(ResponseError::InvalidRequest.code()) // transactions are not supported
    } else if !(-1..=1).contains(&acks) {
        Some(ResponseError::InvalidRequiredAcks.code())
    } else {
        None
    };
    let wait_for_fsync = waits_for_fsync(broker, acks);
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
    let durable = pending
        .into_iter()
        .map(|(t, p, log, end)| {
            let sync = tokio::task::spawn_blocking(move || {
                log.sync_to(end).err().map(|e| log_error_code(&e))
            });
            (t, p, sync)
        })
        .collect();
    Appended {
        acks,
        responses,
        durable,
    }
}

impl Appended {
    /// The response once every partition is durable (`None` for `acks=0`: nothing is sent).
    pub(crate) async fn acknowledged(mut self) -> Option<ProduceResponse> {
        for (t, p, sync) in std::mem::take(&mut self.durable) {
            let failed = sync.await.unwrap_or_else(|e| {
                // Durability is unknown: acknowledge nothing of this partition.
                tracing::error!(error = %e, "fsync task failed");
                Some(ResponseError::KafkaStorageError.code())
            });
            if let Some(code) = failed {
                self.responses[t].partition_responses[p].error_code = code;
            }
        }
        (self.acks != 0).then(|| ProduceResponse::default().with_responses(self.responses))
    }
}
