//! What a client asks before anything else: ApiVersions, Metadata (with topic auto-creation) and
//! FindCoordinator. This broker is a one-node cluster, leader and coordinator of everything.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiVersionsResponse, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse,
    MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{Broker, storage_error_code};
use crate::log::{StorageError, Topic};
use crate::protocol::versions::SUPPORTED;

/// The served API versions (exactly the table decoding enforces), with `error_code`; a request
/// of an unsupported ApiVersions version is answered at v0 with UNSUPPORTED_VERSION.
pub(crate) fn api_versions(_version: i16, error_code: i16) -> ApiVersionsResponse {
    let api_keys = SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}

pub(crate) fn metadata(broker: &Broker, version: i16, req: MetadataRequest) -> MetadataResponse {
    let node = BrokerId(broker.config.node_id);
    // v0: an empty list means all topics; v1+: null means all topics.
    let requested: Option<Vec<TopicName>> = match req.topics {
        Some(t) if version == 0 && t.is_empty() => None,
        Some(t) => Some(t.into_iter().filter_map(|t| t.name).collect()),
        None => None,
    };
    let auto_create =
        broker.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
    let topics = match requested {
        None => broker
            .logs
            .topics()
            .into_iter()
            .map(|(name, topic)| describe_topic(broker, version, &name, Ok(topic)))
            .collect(),
        Some(names) => names
            .into_iter()
            .map(|name| {
                let found = match broker.logs.topic(&name) {
                    Some(topic) => Ok(topic),
                    None if auto_create => broker
                        .logs
                        .create_topic(&name, broker.config.default_partitions, BTreeMap::new())
                        .or_else(|e| match e {
                            // Another client created it meanwhile.
                            StorageError::TopicExists(_) => broker.logs.topic(&name).ok_or(e),
                            e => Err(e),
                        }),
                    None => Err(StorageError::UnknownTopic(name.to_string())),
                };
                describe_topic(broker, version, &name, found)
            })
            .collect(),
    };
    let mut response = MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(node)
                .with_host(broker.advertised_host.clone())
                .with_port(broker.advertised_port),
        ])
        .with_topics(topics);
    if version >= 2 {
        response = response.with_cluster_id(Some(StrBytes::from_string(
            broker.config.cluster_id.clone(),
        )));
    }
    if version >= 1 {
        response = response.with_controller_id(node);
    }
    response
}

fn describe_topic(
    broker: &Broker,
    version: i16,
    name: &str,
    topic: Result<std::sync::Arc<Topic>, StorageError>,
) -> MetadataResponseTopic {
    let node = BrokerId(broker.config.node_id);
    let named = MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(name.to_owned()))));
    match topic {
        Err(e) => named.with_error_code(storage_error_code(&e)),
        Ok(topic) => {
            let partitions = (0..topic.meta.partitions)
                .map(|p| {
                    let mut partition = MetadataResponsePartition::default()
                        .with_partition_index(p)
                        .with_leader_id(node)
                        .with_replica_nodes(vec![node])
                        .with_isr_nodes(vec![node]);
                    if version >= 7 {
                        partition = partition.with_leader_epoch(0);
                    }
                    partition
                })
                .collect();
            let described = named.with_partitions(partitions);
            if version >= 10 {
                described.with_topic_id(topic.meta.id)
            } else {
                described
            }
        }
    }
}

pub(crate) fn find_coordinator(
    broker: &Broker,
    version: i16,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let node = BrokerId(broker.config.node_id);
    // Only group coordinators (key type 0) exist here; transactions are not supported.
    let error = if req.key_type == 0 {
        0
    } else {
        ResponseError::CoordinatorNotAvailable.code()
    };
    let (node_id, host, port) = if error == 0 {
        (node, broker.advertised_host.clone(), broker.advertised_port)
    } else {
        (BrokerId(-1), StrBytes::default(), -1)
    };
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(node_id)
                    .with_host(host.clone())
                    .with_port(port)
                    .with_error_code(error)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    FindCoordinatorResponse::default()
        .with_error_code(error)
        .with_node_id(node_id)
        .with_host(host)
        .with_port(port)
}
