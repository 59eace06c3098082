//! The API versions the coordinator serves, for ApiVersions to advertise exactly.

use kafka_protocol::messages::{
    DescribeGroupsRequest, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::Request;

/// The APIs of the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OffsetCommit (key 8).
    OffsetCommit,
    /// OffsetFetch (key 9).
    OffsetFetch,
    /// JoinGroup (key 11).
    JoinGroup,
    /// Heartbeat (key 12).
    Heartbeat,
    /// LeaveGroup (key 13).
    LeaveGroup,
    /// SyncGroup (key 14).
    SyncGroup,
    /// DescribeGroups (key 15).
    DescribeGroups,
    /// ListGroups (key 16).
    ListGroups,
}

impl Api {
    /// Kafka API key.
    pub const fn key(self) -> i16 {
        match self {
            Self::OffsetCommit => OffsetCommitRequest::KEY,
            Self::OffsetFetch => OffsetFetchRequest::KEY,
            Self::JoinGroup => JoinGroupRequest::KEY,
            Self::Heartbeat => HeartbeatRequest::KEY,
            Self::LeaveGroup => LeaveGroupRequest::KEY,
            Self::SyncGroup => SyncGroupRequest::KEY,
            Self::DescribeGroups => DescribeGroupsRequest::KEY,
            Self::ListGroups => ListGroupsRequest::KEY,
        }
    }

    /// Versions served, inclusive.
    pub const fn versions(self) -> (i16, i16) {
        match self {
            // kafka-protocol 0.18 decodes OffsetCommit from v2 and OffsetFetch from v1 only
            // (Kafka 4 removed the older versions); v9 of both needs the new consumer protocol.
            Self::OffsetCommit => (2, 8),
            Self::OffsetFetch => (1, 8),
            Self::JoinGroup => (0, 9),
            Self::Heartbeat => (0, 4),
            Self::LeaveGroup => (0, 5),
            Self::SyncGroup => (0, 5),
            Self::DescribeGroups => (0, 5),
            Self::ListGroups => (0, 4),
        }
    }
}

const fn entry(api: Api) -> (i16, i16, i16) {
    let (min, max) = api.versions();
    (api.key(), min, max)
}

/// `(api key, min version, max version)` of every API the coordinator serves.
pub const SUPPORTED: &[(i16, i16, i16)] = &[
    entry(Api::OffsetCommit),
    entry(Api::OffsetFetch),
    entry(Api::JoinGroup),
    entry(Api::Heartbeat),
    entry(Api::LeaveGroup),
    entry(Api::SyncGroup),
    entry(Api::DescribeGroups),
    entry(Api::ListGroups),
];

/// Whether `version` of `api` is served.
pub fn is_supported(api: Api, version: i16) -> bool {
    let (min, max) = api.versions();
    (min..=max).contains(&version)
}
