//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions and DescribeConfigs.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{Broker, storage_error_code};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Config sources in DescribeConfigs: set on the topic, or the default.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

fn message(text: impl ToString) -> Option<StrBytes> {
    Some(StrBytes::from_string(text.to_string()))
}

pub(crate) fn create_topics(
    broker: &Broker,
    version: i16,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let mut result = CreatableTopicResult::default().with_name(t.name.clone());
            let partitions = if t.num_partitions == -1 {
                broker.config.default_partitions
            } else {
                t.num_partitions
            };
            let overrides: BTreeMap<String, String> = t
                .configs
                .iter()
                .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                .collect();
            let refused = if !matches!(t.replication_factor, -1 | 1) {
                Some((
                    ResponseError::InvalidReplicationFactor,
                    "this broker is a single node: use replication factor 1".to_owned(),
                ))
            } else if !t.assignments.is_empty() {
                Some((
                    ResponseError::InvalidRequest,
                    "manual replica assignment is not supported".to_owned(),
                ))
            } else {
                None
            };
            let outcome = match refused {
                Some((error, text)) => Err((error.code(), text)),
                None if req.validate_only => broker
                    .logs
                    .validate_new_topic(&t.name, partitions, &overrides)
                    .map(|_| None)
                    .map_err(|e| (storage_error_code(&e), e.to_string())),
                None => broker
                    .logs
                    .create_topic(&t.name, partitions, overrides)
                    .map(Some)
                    .map_err(|e| (storage_error_code(&e), e.to_string())),
            };
            match outcome {
                Ok(created) => {
                    if version >= 5 {
                        result = result
                            .with_num_partitions(partitions)
                            .with_replication_factor(1);
                    }
                    if let (Some(topic), true) = (created, version >= 7) {
                        result = result.with_topic_id(topic.meta.id);
                    }
                }
                Err((code, text)) => {
                    result = result
                        .with_error_code(code)
                        .with_error_message(message(text));
                }
            }
            result
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

pub(crate) fn delete_topics(
    broker: &Broker,
    version: i16,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // v6 names topics in `topics` (by name or id); earlier versions in `topic_names`.
    let names: Vec<Result<TopicName, uuid::Uuid>> = if version >= 6 {
        req.topics
            .into_iter()
            .map(|t| match t.name {
                Some(name) => Ok(name),
                None => broker
                    .logs
                    .topics()
                    .into_iter()
                    .find(|(_, topic)| topic.meta.id == t.topic_id)
                    .map(|(name, _)| TopicName(StrBytes::from_string(name)))
                    .ok_or(t.topic_id),
            })
            .collect()
    } else {
        req.topic_names.into_iter().map(Ok).collect()
    };
    let responses = names
        .into_iter()
        .map(|name| match name {
            Err(id) => DeletableTopicResult::default()
                .with_topic_id(id)
                .with_error_code(ResponseError::UnknownTopicId.code()),
            Ok(name) => {
                let result = DeletableTopicResult::default().with_name(Some(name.clone()));
                match broker.logs.delete_topic(&name) {
                    Ok(()) => result,
                    Err(e) => {
                        let result = result.with_error_code(storage_error_code(&e));
                        if version >= 5 {
                            result.with_error_message(message(e))
                        } else {
                            result
                        }
                    }
                }
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

pub(crate) fn create_partitions(
    broker: &Broker,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let outcome = if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
                Err((
                    ResponseError::InvalidRequest.code(),
                    "manual replica assignment is not supported".to_owned(),
                ))
            } else if req.validate_only {
                match broker.logs.topic(&t.name) {
                    None => Err((
                        ResponseError::UnknownTopicOrPartition.code(),
                        format!("unknown topic {}", t.name.0),
                    )),
                    Some(topic) if t.count <= topic.meta.partitions => Err((
                        ResponseError::InvalidPartitions.code(),
                        format!("topic has {} partitions", topic.meta.partitions),
                    )),
                    Some(_) => Ok(()),
                }
            } else {
                broker
                    .logs
                    .create_partitions(&t.name, t.count)
                    .map(|_| ())
                    .map_err(|e| (storage_error_code(&e), e.to_string()))
            };
            match outcome {
                Ok(()) => result,
                Err((code, text)) => result
                    .with_error_code(code)
                    .with_error_message(message(text)),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

pub(crate) fn describe_configs(
    broker: &Broker,
    version: i16,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let entries: Vec<(String, String, i8)> = match r.resource_type {
                RESOURCE_TOPIC => match broker.logs.topic(&r.resource_name) {
                    None => {
                        return result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(message(format!(
                                "unknown topic {}",
                                &*r.resource_name
                            )));
                    }
                    Some(topic) => topic
                        .config
                        .kafka_entries()
                        .into_iter()
                        .map(|(k, v)| {
                            let source = if topic.meta.config.contains_key(k) {
                                SOURCE_TOPIC
                            } else {
                                SOURCE_DEFAULT
                            };
                            (k.to_owned(), v, source)
                        })
                        .collect(),
                },
                RESOURCE_BROKER => {
                    let mut entries: Vec<(String, String, i8)> = broker
                        .logs
                        .defaults()
                        .kafka_entries()
                        .into_iter()
                        .map(|(k, v)| (broker_key(k).to_owned(), v, SOURCE_DEFAULT))
                        .collect();
                    entries.push((
                        "num.partitions".to_owned(),
                        broker.config.default_partitions.to_string(),
                        SOURCE_DEFAULT,
                    ));
                    entries.push((
                        "auto.create.topics.enable".to_owned(),
                        broker.config.auto_create_topics.to_string(),
                        SOURCE_DEFAULT,
                    ));
                    entries
                }
                _ => {
                    return result
                        .with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(message("only topic and broker configs exist"));
                }
            };
            let wanted = r.configuration_keys.as_ref();
            let configs = entries
                .into_iter()
                .filter(|(k, _, _)| wanted.is_none_or(|keys| keys.iter().any(|w| **w == **k)))
                .map(|(k, v, source)| {
                    let mut entry = DescribeConfigsResourceResult::default()
                        .with_name(StrBytes::from_string(k))
                        .with_value(Some(StrBytes::from_string(v)))
                        .with_read_only(r.resource_type == RESOURCE_BROKER);
                    if version >= 1 {
                        entry = entry.with_config_source(source);
                    }
                    entry
                })
                .collect();
            result.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// The broker-level name of a topic-level setting (the default it falls back to).
fn broker_key(topic_key: &str) -> &'static str {
    match topic_key {
        "cleanup.policy" => "log.cleanup.policy",
        "segment.bytes" => "log.segment.bytes",
        "segment.ms" => "log.roll.ms",
        "retention.ms" => "log.retention.ms",
        "retention.bytes" => "log.retention.bytes",
        "flush.messages" => "log.flush.interval.messages",
        "flush.ms" => "log.flush.interval.ms",
        "index.interval.bytes" => "log.index.interval.bytes",
        "max.message.bytes" => "message.max.bytes",
        _ => "unknown",
    }
}
