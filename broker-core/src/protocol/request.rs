//! Request framing and decoding, with no I/O: a size prefix checked before anything is allocated,
//! then the header and body decoded by API key and version with `kafka-protocol`'s message types.

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, DescribeGroupsRequest, FetchRequest, FindCoordinatorRequest,
    HeartbeatRequest, InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest,
    ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetFetchRequest, ProduceRequest, RequestHeader, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use thiserror::Error;

use super::versions;

/// Kafka's default `socket.request.max.bytes`: 100 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;

/// A size prefix the broker will not read a frame for; the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    /// Zero or negative size.
    #[error("request size {0} is not positive")]
    NotPositive(i32),
    /// Over `socket.request.max.bytes`.
    #[error("request size {size} exceeds the limit of {max} bytes")]
    TooLarge {
        /// Claimed size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// Reads a frame's 4-byte big-endian size prefix and checks it against `max` before any buffer
/// is sized by it.
pub fn frame_len(prefix: [u8; 4], max: usize) -> Result<usize, FrameError> {
    let size = i32::from_be_bytes(prefix);
    let len = usize::try_from(size).map_err(|_| FrameError::NotPositive(size))?;
    if len == 0 {
        return Err(FrameError::NotPositive(size));
    }
    if len > max {
        return Err(FrameError::TooLarge { size: len, max });
    }
    Ok(len)
}

macro_rules! request_bodies {
    ($($api:ident => $ty:ty),* $(,)?) => {
        /// A decoded request body, one variant per API the broker serves.
        #[derive(Debug)]
        #[allow(missing_docs)]
        pub enum RequestBody {
            $($api($ty),)*
        }

        fn decode_body(api_key: ApiKey, buf: &mut Bytes, version: i16) -> Option<Result<RequestBody, String>> {
            match api_key {
                $(ApiKey::$api => Some(
                    <$ty as Decodable>::decode(buf, version)
                        .map(RequestBody::$api)
                        .map_err(|e| e.to_string()),
                ),)*
                _ => None,
            }
        }
    };
}

request_bodies! {
    Produce => ProduceRequest,
    Fetch => FetchRequest,
    ListOffsets => ListOffsetsRequest,
    Metadata => MetadataRequest,
    OffsetCommit => OffsetCommitRequest,
    OffsetFetch => OffsetFetchRequest,
    FindCoordinator => FindCoordinatorRequest,
    JoinGroup => JoinGroupRequest,
    Heartbeat => HeartbeatRequest,
    LeaveGroup => LeaveGroupRequest,
    SyncGroup => SyncGroupRequest,
    DescribeGroups => DescribeGroupsRequest,
    ListGroups => ListGroupsRequest,
    ApiVersions => ApiVersionsRequest,
    CreateTopics => CreateTopicsRequest,
    DeleteTopics => DeleteTopicsRequest,
    InitProducerId => InitProducerIdRequest,
    DescribeConfigs => DescribeConfigsRequest,
    CreatePartitions => CreatePartitionsRequest,
}

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    /// Which API.
    pub api_key: ApiKey,
    /// Which version of it.
    pub version: i16,
    /// Echoed in the response.
    pub correlation_id: i32,
    /// The client's self-chosen name, if any.
    pub client_id: Option<StrBytes>,
    /// The body.
    pub body: RequestBody,
}

/// Why a frame is not a request the broker can answer normally.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Too short for API key, version and correlation id.
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    /// An API key the broker does not serve.
    #[error("unknown or unsupported API key {api_key}")]
    UnknownApi {
        /// The key sent.
        api_key: i16,
        /// The request's correlation id.
        correlation_id: i32,
    },
    /// A version outside the advertised range.
    #[error("unsupported version {version} of {api_key:?}")]
    UnsupportedVersion {
        /// The API.
        api_key: ApiKey,
        /// The version sent.
        version: i16,
        /// The request's correlation id.
        correlation_id: i32,
    },
    /// Header or body does not decode.
    #[error("malformed {api_key:?} v{version} request: {reason}")]
    Malformed {
        /// The API.
        api_key: ApiKey,
        /// The version sent.
        version: i16,
        /// The request's correlation id.
        correlation_id: i32,
        /// What the decoder said.
        reason: String,
    },
}

/// Decodes one request frame (without its size prefix). Record data in the body stays a slice of
/// `frame`; nothing is copied.
pub fn decode_request(mut frame: Bytes) -> Result<Request, DecodeError> {
    let Some(fixed) = frame.first_chunk::<8>() else {
        return Err(DecodeError::TooShort(frame.len()));
    };
    let key = i16::from_be_bytes([fixed[0], fixed[1]]);
    let version = i16::from_be_bytes([fixed[2], fixed[3]]);
    let correlation_id = i32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let api_key = ApiKey::try_from(key)
        .ok()
        .filter(|k| versions::supported(*k).is_some())
        .ok_or(DecodeError::UnknownApi {
            api_key: key,
            correlation_id,
        })?;
    if !versions::is_supported(api_key, version) {
        return Err(DecodeError::UnsupportedVersion {
            api_key,
            version,
            correlation_id,
        });
    }
    let malformed = |reason: String| DecodeError::Malformed {
        api_key,
        version,
        correlation_id,
        reason,
    };
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(|e| malformed(e.to_string()))?;
    let body = decode_body(api_key, &mut frame, version)
        .ok_or_else(|| malformed("no decoder".to_owned()))?
        .map_err(malformed)?;
    Ok(Request {
        api_key,
        version,
        correlation_id,
        client_id: header.client_id,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::protocol::Encodable;

    fn encode(key: ApiKey, version: i16, body: &impl Encodable) -> Bytes {
        let mut buf = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(77)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        header
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn size_prefix_is_checked_before_allocation() {
        assert_eq!(frame_len(10i32.to_be_bytes(), 100), Ok(10));
        assert_eq!(
            frame_len(0i32.to_be_bytes(), 100),
            Err(FrameError::NotPositive(0))
        );
        assert_eq!(
            frame_len((-5i32).to_be_bytes(), 100),
            Err(FrameError::NotPositive(-5))
        );
        assert_eq!(
            frame_len(101i32.to_be_bytes(), 100),
            Err(FrameError::TooLarge {
                size: 101,
                max: 100
            })
        );
    }

    #[test]
    fn decodes_supported_and_refuses_the_rest() {
        let frame = encode(ApiKey::Metadata, 9, &MetadataRequest::default());
        let req = decode_request(frame.clone()).unwrap();
        assert_eq!(
            (req.api_key, req.version, req.correlation_id),
            (ApiKey::Metadata, 9, 77)
        );
        assert!(matches!(req.body, RequestBody::Metadata(_)));
        // Truncated body, unknown key, unsupported version.
        assert!(matches!(
            decode_request(frame.slice(..frame.len() - 1)),
            Err(DecodeError::Malformed { .. })
        ));
        let mut unknown = BytesMut::from(&frame[..]);
        unknown[..2].copy_from_slice(&999i16.to_be_bytes());
        assert!(matches!(
            decode_request(unknown.freeze()),
            Err(DecodeError::UnknownApi {
                api_key: 999,
                correlation_id: 77
            })
        ));
        let mut old = BytesMut::from(&frame[..]);
        old[2..4].copy_from_slice(&99i16.to_be_bytes());
        assert!(matches!(
            decode_request(old.freeze()),
            Err(DecodeError::UnsupportedVersion { version: 99, .. })
        ));
        assert_eq!(
            decode_request(Bytes::from_static(&[0, 3])).unwrap_err(),
            DecodeError::TooShort(2)
        );
    }
}
