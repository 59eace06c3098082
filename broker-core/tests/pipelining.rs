//! A client that sends many requests on one connection without waiting (as librdkafka does with
//! up to five produce requests in flight) gets every response, in request order, with produce
//! requests appended in the order they were sent — also while earlier ones wait for their fsync,
//! and also when it half-closes the connection after the last request.

mod common;

use broker_core::broker::BrokerConfig;
use broker_core::log::Durability;
use broker_core::server::BrokerServer;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ProduceRequest, ProduceResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::Compression;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PRODUCE_VERSION: i16 = 8;
const RECORDS_PER_BATCH: usize = 3;

fn frame<R: Encodable + HeaderVersion>(api: ApiKey, version: i16, id: i32, body: &R) -> Bytes {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(id)
        .with_client_id(Some(StrBytes::from_static_str("pipelining-test")))
        .encode(&mut buf, R::header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut framed = BytesMut::with_capacity(buf.len() + 4);
    framed.put_i32(i32::try_from(buf.len()).unwrap());
    framed.extend_from_slice(&buf);
    framed.freeze()
}

fn produce(topic: &str, acks: i16, tag: u64) -> ProduceRequest {
    let timestamps = vec![1_700_000_000_000; RECORDS_PER_BATCH];
    let batch = common::make_batch(tag, &timestamps, 100, Compression::None);
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch.freeze())),
                ]),
        ])
}

async fn read_response(stream: &mut TcpStream) -> (i32, Bytes) {
    let len = stream.read_i32().await.unwrap();
    let mut body = vec![0; usize::try_from(len).unwrap()];
    stream.read_exact(&mut body).await.unwrap();
    let mut body = Bytes::from(body);
    let id = body.get_i32();
    (id, body)
}

async fn pipelined_requests_are_answered_in_order(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path());
    config.log.durability = durability;
    let server = BrokerServer::start(config).await.unwrap();
    server
        .broker()
        .logs()
        .create_topic("t", 1, Default::default())
        .unwrap();

    // 40 produce requests with acks=all, one acks=1 and an ApiVersions in between, all written
    // at once before any response is read.
    let mut frames = BytesMut::new();
    let mut expected = Vec::new();
    for id in 0..42 {
        let f = match id {
            13 => frame(ApiKey::ApiVersions, 0, id, &ApiVersionsRequest::default()),
            29 => frame(
                ApiKey::Produce,
                PRODUCE_VERSION,
                id,
                &produce("t", 1, id as u64),
            ),
            _ => frame(
                ApiKey::Produce,
                PRODUCE_VERSION,
                id,
                &produce("t", -1, id as u64),
            ),
        };
        frames.extend_from_slice(&f);
        expected.push(id);
    }
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    stream.write_all(&frames).await.unwrap();
    // Half-close, as a client that has nothing more to send may: the responses still come.
    stream.shutdown().await.unwrap();

    let mut next_offset = 0;
    for &id in &expected {
        let (got, mut body) = read_response(&mut stream).await;
        assert_eq!(got, id, "responses out of request order");
        if id == 13 {
            continue;
        }
        let response = ProduceResponse::decode(&mut body, PRODUCE_VERSION).unwrap();
        let p = &response.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "request {id}");
        assert_eq!(
            p.base_offset, next_offset,
            "request {id} appended out of order"
        );
        next_offset += RECORDS_PER_BATCH as i64;
    }
    let log = server.broker().logs().partition("t", 0).unwrap();
    let seen = common::read_all(&log, 0, 1 << 20);
    assert_eq!(seen.len(), 41 * RECORDS_PER_BATCH);
    // Values carry their request's tag: stored in request order.
    let tags: Vec<u64> = seen
        .iter()
        .step_by(RECORDS_PER_BATCH)
        .map(|s| {
            let v = String::from_utf8_lossy(&s.value);
            v.split(':').next().unwrap().parse().unwrap()
        })
        .collect();
    let want: Vec<u64> = (0..42).filter(|&i| i != 13).collect();
    assert_eq!(tags, want);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_with_fsync() {
    pipelined_requests_are_answered_in_order(Durability::Fsync).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_without_fsync() {
    pipelined_requests_are_answered_in_order(Durability::Os).await;
}
