//! Property tests of the wire codec: requests encoded by `kafka-protocol` at every served version
//! decode through the broker's framing to the same request, and Fetch responses whose records are
//! file ranges encode to exactly the bytes of the same response with the records in memory.

use std::io::Write;
use std::sync::Arc;

use broker_core::log::FileSlice;
use broker_core::protocol::versions::supported;
use broker_core::protocol::{RequestBody, decode_request, encode_response, file_placeholder};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, MetadataRequest, ProduceRequest, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use proptest::prelude::*;

#[global_allocator]
static ALLOC: broker_core::alloc::ReserveLargeAlloc = broker_core::alloc::ReserveLargeAlloc;

fn frame(key: ApiKey, version: i16, correlation_id: i32, body: &impl Encodable) -> Bytes {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("proptest")))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    buf.freeze()
}

fn topic_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,40}"
}

fn version_of(key: ApiKey) -> impl Strategy<Value = i16> {
    let (min, max) = supported(key).unwrap();
    min..=max
}

fn produce() -> impl Strategy<Value = ProduceRequest> {
    let partition = (
        0i32..64,
        prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
    );
    let topic = (topic_name(), prop::collection::vec(partition, 1..4));
    (
        prop::sample::select(vec![-1i16, 0, 1]),
        0i32..60_000,
        prop::collection::vec(topic, 1..4),
    )
        .prop_map(|(acks, timeout_ms, topics)| {
            let topic_data = topics
                .into_iter()
                .map(|(name, parts)| {
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(name)))
                        .with_partition_data(
                            parts
                                .into_iter()
                                .map(|(index, records)| {
                                    PartitionProduceData::default()
                                        .with_index(index)
                                        .with_records(records.map(Bytes::from))
                                })
                                .collect(),
                        )
                })
                .collect();
            ProduceRequest::default()
                .with_acks(acks)
                .with_timeout_ms(timeout_ms)
                .with_topic_data(topic_data)
        })
}

fn fetch() -> impl Strategy<Value = FetchRequest> {
    let partition = (0i32..64, 0i64..i64::MAX / 2, 1i32..i32::MAX);
    let topic = (topic_name(), prop::collection::vec(partition, 1..4));
    (
        0i32..30_000,
        0i32..1 << 20,
        1i32..i32::MAX,
        prop::collection::vec(topic, 0..4),
    )
        .prop_map(|(max_wait_ms, min_bytes, max_bytes, topics)| {
            FetchRequest::default()
                .with_max_wait_ms(max_wait_ms)
                .with_min_bytes(min_bytes)
                .with_max_bytes(max_bytes)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(name, parts)| {
                            FetchTopic::default()
                                .with_topic(TopicName(StrBytes::from_string(name)))
                                .with_partitions(
                                    parts
                                        .into_iter()
                                        .map(|(p, offset, max)| {
                                            FetchPartition::default()
                                                .with_partition(p)
                                                .with_fetch_offset(offset)
                                                .with_partition_max_bytes(max)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn produce_requests_round_trip(req in produce(), version in version_of(ApiKey::Produce), id in any::<i32>()) {
        let decoded = decode_request(frame(ApiKey::Produce, version, id, &req)).unwrap();
        prop_assert_eq!((decoded.api_key, decoded.version, decoded.correlation_id), (ApiKey::Produce, version, id));
        let RequestBody::Produce(got) = decoded.body else { panic!("not a produce request") };
        prop_assert_eq!(got, req);
    }

    #[test]
    fn fetch_requests_round_trip(req in fetch(), version in version_of(ApiKey::Fetch)) {
        let decoded = decode_request(frame(ApiKey::Fetch, version, 1, &req)).unwrap();
        let RequestBody::Fetch(got) = decoded.body else { panic!("not a fetch request") };
        prop_assert_eq!(got, req);
    }

    #[test]
    fn metadata_requests_round_trip(names in prop::option::of(prop::collection::vec(topic_name(), 1..5)), version in version_of(ApiKey::Metadata), auto_create in any::<bool>()) {
        let topics = names.map(|n| n.into_iter().map(|n| MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(n))))).collect());
        // v0 has no null topic list.
        let topics = if version == 0 { Some(topics.unwrap_or_default()) } else { topics };
        // Before v4 auto-creation is implied (the field only exists, default true, from v4).
        let req = MetadataRequest::default().with_topics(topics).with_allow_auto_topic_creation(auto_create || version < 4);
        let decoded = decode_request(frame(ApiKey::Metadata, version, 1, &req)).unwrap();
        let RequestBody::Metadata(got) = decoded.body else { panic!("not a metadata request") };
        prop_assert_eq!(got, req);
    }

    #[test]
    fn truncated_requests_never_decode_to_something_else(req in produce(), version in version_of(ApiKey::Produce), cut in 0usize..10_000) {
        let full = frame(ApiKey::Produce, version, 9, &req);
        let cut = cut % full.len();
        if let Ok(decoded) = decode_request(full.slice(..cut)) {
            // A prefix may only decode if the tail held nothing (e.g. empty tagged fields).
            let RequestBody::Produce(got) = decoded.body else { panic!("changed API") };
            prop_assert_eq!(got.topic_data.len(), req.topic_data.len());
        }
    }

    #[test]
    fn fetch_responses_with_file_ranges_match_in_memory_ones(
        payloads in prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 1..2_000)), 1..6),
        version in version_of(ApiKey::Fetch),
    ) {
        let mut file = tempfile::tempfile().unwrap();
        let mut slices = Vec::new();
        let mut position = 0u64;
        for p in payloads.iter().flatten() {
            file.write_all(b"gap").unwrap();
            position += 3;
            file.write_all(p).unwrap();
            slices.push((position, p.len() as u64));
            position += p.len() as u64;
        }
        let file = Arc::new(file);
        let response = |records: Vec<Bytes>| {
            let partitions = records
                .into_iter()
                .enumerate()
                .map(|(i, r)| PartitionData::default().with_partition_index(i32::try_from(i).unwrap()).with_high_watermark(7).with_records(Some(r)))
                .collect();
            FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(partitions)])
        };
        let in_memory: Vec<Bytes> = payloads.iter().map(|p| p.clone().map(Bytes::from).unwrap_or_default()).collect();
        let placeholders: Vec<Bytes> = payloads.iter().map(|p| p.as_ref().map(|p| file_placeholder(p.len()).unwrap()).unwrap_or_default()).collect();
        let files = slices.into_iter().map(|(position, len)| FileSlice { file: Arc::clone(&file), position, len }).collect();
        let zero_copy = encode_response(ApiKey::Fetch, version, 3, &response(placeholders), files).unwrap();
        let direct = encode_response(ApiKey::Fetch, version, 3, &response(in_memory), vec![]).unwrap();
        prop_assert_eq!(zero_copy.to_vec().unwrap(), direct.to_vec().unwrap());
    }
}
