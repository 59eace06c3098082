//! ListOffsets: the earliest (-2) or latest (-1) offset of a partition, or the first offset whose
//! record timestamp is at least a given time.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{Broker, log_error_code};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub(crate) fn list_offsets(broker: &Broker, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    let Some(log) = broker.logs.partition(&topic.name, p.partition_index) else {
                        return response
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let found = match p.timestamp {
                        // Consumers may read up to the high watermark, so "latest" is that.
                        LATEST => Ok(Some((log.high_watermark(), -1))),
                        EARLIEST => Ok(Some((log.log_start_offset(), -1))),
                        t if t >= 0 => log.offset_for_timestamp(t),
                        _ => return response.with_error_code(ResponseError::InvalidRequest.code()),
                    };
                    match found {
                        Ok(Some((offset, timestamp))) => {
                            response.with_offset(offset).with_timestamp(timestamp)
                        }
                        Ok(None) => response.with_offset(-1).with_timestamp(-1),
                        Err(e) => response.with_error_code(log_error_code(&e)),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
