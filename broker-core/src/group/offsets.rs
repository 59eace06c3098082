//! OffsetCommit and OffsetFetch.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use tokio::time::Instant;

use super::coordinator::{GroupCoordinator, code, str_bytes};
use super::record::{CommitBatch, CommittedOffset, OffsetEntry};
use super::state::GroupState;
use super::versions::{Api, is_supported};
use crate::log::now_ms;

/// Offsets of one group as OffsetFetch answers them: per topic, per partition, the committed
/// offset if there is one.
type Fetched = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

impl GroupCoordinator {
    /// OffsetCommit v2–8. Acknowledged once the offsets are fsynced.
    pub async fn offset_commit(
        &self,
        req: OffsetCommitRequest,
        version: i16,
    ) -> OffsetCommitResponse {
        let group_id = req.group_id.0.as_str();
        let group_error = self.validate_commit(&req, version);
        let timestamp = now_ms();
        let max_metadata = self.shared.config.max_offset_metadata_bytes;
        let mut entries = Vec::new();
        // Per topic, per partition: (partition, error).
        let mut results: Vec<Vec<(i32, Option<ResponseError>)>> = Vec::new();
        for topic in &req.topics {
            let name = topic.name.0.as_str();
            let partitions = self.logs.topic(name).map(|t| t.meta.partitions);
            let mut topic_results = Vec::with_capacity(topic.partitions.len());
            for p in &topic.partitions {
                let index = p.partition_index;
                let metadata = p.committed_metadata.as_deref().unwrap_or("");
                let error = if !partitions.is_some_and(|n| (0..n).contains(&index)) {
                    Some(ResponseError::UnknownTopicOrPartition)
                } else if group_error.is_some() {
                    group_error
                } else if metadata.len() > max_metadata {
                    Some(ResponseError::OffsetMetadataTooLarge)
                } else {
                    entries.push(OffsetEntry {
                        topic: name.to_owned(),
                        partition: index,
                        committed: CommittedOffset {
                            offset: p.committed_offset,
                            leader_epoch: if version >= 6 {
                                p.committed_leader_epoch
                            } else {
                                -1
                            },
                            metadata: metadata.to_owned(),
                            commit_timestamp_ms: timestamp,
                        },
                    });
                    None
                };
                topic_results.push((index, error));
            }
            results.push(topic_results);
        }
        if !entries.is_empty() {
            let store = Arc::clone(&self.store);
            let batch = CommitBatch {
                group: group_id.to_owned(),
                entries,
            };
            let stored = tokio::task::spawn_blocking(move || store.commit(batch)).await;
            let failure = match stored {
                Ok(Ok(())) => None,
                Ok(Err(e)) => {
                    tracing::error!(group = group_id, error = %e, "storing committed offsets failed");
                    // Kafka answers NOT_COORDINATOR when its offsets log cannot be written.
                    Some(ResponseError::NotCoordinator)
                }
                Err(e) => {
                    tracing::error!(group = group_id, error = %e, "offsets store task failed");
                    Some(ResponseError::UnknownServerError)
                }
            };
            if failure.is_some() {
                for (_, error) in results.iter_mut().flatten() {
                    if error.is_none() {
                        *error = failure;
                    }
                }
            }
        }
        let mut resp = OffsetCommitResponse::default();
        resp.topics = req
            .topics
            .iter()
            .zip(results)
            .map(|(topic, partitions)| {
                OffsetCommitResponseTopic::default()
                    .with_name(topic.name.clone())
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, error)| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_error_code(code(error))
                            })
                            .collect(),
                    )
            })
            .collect();
        resp
    }

    /// Kafka's group-level checks of an offset commit.
    fn validate_commit(&self, req: &OffsetCommitRequest, version: i16) -> Option<ResponseError> {
        let group_id = req.group_id.0.as_str();
        if let Err(e) = self.precheck(Api::OffsetCommit, version, group_id) {
            return Some(e);
        }
        let generation = req.generation_id_or_member_epoch;
        let member_id = req.member_id.as_str();
        let instance_id = req.group_instance_id.as_deref().filter(|_| version >= 7);
        let mut groups = self.shared.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            // No members: only commits outside group management (generation -1) are accepted.
            return (generation >= 0).then_some(ResponseError::IllegalGeneration);
        };
        let empty = matches!(group.state, GroupState::Empty);
        match group.state {
            GroupState::Dead => return Some(ResponseError::CoordinatorNotAvailable),
            _ if generation < 0 && empty => return None,
            _ => {}
        }
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            if let Err(e) = group.m.validate_member(member_id, instance_id) {
                return Some(e);
            }
            if generation != group.m.generation {
                return Some(ResponseError::IllegalGeneration);
            }
        } else if !empty {
            return Some(ResponseError::UnknownMemberId);
        }
        if matches!(group.state, GroupState::CompletingRebalance(_)) {
            return Some(ResponseError::RebalanceInProgress);
        }
        if let Some(member) = group.m.members.get_mut(member_id) {
            member.touch(Instant::now());
        }
        None
    }

    /// OffsetFetch v1–8 (v8: several groups per request). Null topics (v2+) ask for every
    /// committed offset of the group; partitions without one get offset -1.
    pub async fn offset_fetch(&self, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
        let mut resp = OffsetFetchResponse::default();
        if version >= 8 {
            resp.groups = req
                .groups
                .iter()
                .map(|g| {
                    let topics = g.topics.as_ref().map(|ts| {
                        ts.iter()
                            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                            .collect()
                    });
                    let (error, fetched) = self.fetch(g.group_id.0.as_str(), topics, version);
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_error_code(code(error))
                        .with_topics(
                            fetched
                                .into_iter()
                                .map(|(name, partitions)| {
                                    OffsetFetchResponseTopics::default()
                                        .with_name(TopicName(str_bytes(&name)))
                                        .with_partitions(
                                            partitions
                                                .into_iter()
                                                .map(|(index, c)| partition_v8(index, c))
                                                .collect(),
                                        )
                                })
                                .collect(),
                        )
                })
                .collect();
            return resp;
        }
        let topics = req.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                .collect::<Vec<_>>()
        });
        let (error, mut fetched) = self.fetch(req.group_id.0.as_str(), topics.clone(), version);
        if version >= 2 {
            resp.error_code = code(error);
        } else if let (Some(e), Some(topics)) = (error, topics) {
            // v1 has no group-level error: every requested partition carries it.
            resp.topics = topics
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(str_bytes(&name)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|index| partition_v1(index, None).with_error_code(e.code()))
                                .collect(),
                        )
                })
                .collect();
            return resp;
        }
        resp.topics = fetched
            .drain(..)
            .map(|(name, partitions)| {
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(str_bytes(&name)))
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, c)| partition_v1(index, c))
                            .collect(),
                    )
            })
            .collect();
        resp
    }

    /// The offsets asked for (`None`: all of the group's), or a group-level error.
    fn fetch(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
        version: i16,
    ) -> (Option<ResponseError>, Fetched) {
        if !is_supported(Api::OffsetFetch, version) {
            return (Some(ResponseError::UnsupportedVersion), Vec::new());
        }
        if self.is_closed() {
            return (Some(ResponseError::NotCoordinator), Vec::new());
        }
        if group_id.is_empty() {
            return (Some(ResponseError::InvalidGroupId), Vec::new());
        }
        let offsets = self.store.group_offsets(group_id);
        let fetched = match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(name, partitions)| {
                    let found = partitions
                        .into_iter()
                        .map(|p| (p, offsets.get(&(name.clone(), p)).cloned()))
                        .collect();
                    (name, found)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<CommittedOffset>)>> =
                    BTreeMap::new();
                for ((topic, partition), c) in offsets {
                    by_topic
                        .entry(topic)
                        .or_default()
                        .push((partition, Some(c)));
                }
                by_topic.into_iter().collect()
            }
        };
        (None, fetched)
    }

    /// One committed offset, if any.
    pub fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<CommittedOffset> {
        self.store.offset(group, topic, partition)
    }
}

fn partition_v1(index: i32, c: Option<CommittedOffset>) -> OffsetFetchResponsePartition {
    let p = OffsetFetchResponsePartition::default().with_partition_index(index);
    match c {
        Some(c) => p
            .with_committed_offset(c.offset)
            .with_committed_leader_epoch(c.leader_epoch)
            .with_metadata(Some(str_bytes(&c.metadata))),
        None => p.with_committed_offset(-1),
    }
}

fn partition_v8(index: i32, c: Option<CommittedOffset>) -> OffsetFetchResponsePartitions {
    let p = OffsetFetchResponsePartitions::default().with_partition_index(index);
    match c {
        Some(c) => p
            .with_committed_offset(c.offset)
            .with_committed_leader_epoch(c.leader_epoch)
            .with_metadata(Some(str_bytes(&c.metadata))),
        None => p.with_committed_offset(-1),
    }
}
