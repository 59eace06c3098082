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
    /// The fsync of every partition written, running; it yields the partitions that failed.
    durable: Option<JoinHandle<Vec<(usize, usize, i16)>>>,
    /// Positions of the partitions in `durable`, to fail them all if the fsync task is lost.
    waiting: Vec<(usize, usize)>,
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
    let waiting = pending.iter().map(|(t, p, _, _)| (*t, *p)).collect();
    let durable = (!pending.is_empty()).then(|| {
        tokio::task::spawn_blocking(move || {
            pending
                .into_iter()
                .filter_map(|(t, p, log, end)| {
                    log.sync_to(end).err().map(|e| (t, p, log_error_code(&e)))
                })
                .collect()
        })
    });
    Appended {
        acks,
        responses,
        durable,
        waiting,
    }
}

impl Appended {
    /// The response once every partition is durable (`None` for `acks=0`: nothing is sent).
    pub(crate) async fn acknowledged(mut self) -> Option<ProduceResponse> {
        let failed = match self.durable.take() {
            None => Vec::new(),
            Some(task) => task.await.unwrap_or_else(|e| {
                // Durability is unknown: acknowledge nothing.
                tracing::error!(error = %e, "fsync task failed");
                let code = ResponseError::KafkaStorageError.code();
                self.waiting.iter().map(|&(t, p)| (t, p, code)).collect()
            }),
        };
        for (t, p, code) in failed {
            self.responses[t].partition_responses[p].error_code = code;
        }
        (self.acks != 0).then(|| ProduceResponse::default().with_responses(self.responses))
    }
}

