//! A member of a classic consumer group.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// A joined member, as the coordinator tracks it.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) id: String,
    /// `group.instance.id` of a static member.
    pub(crate) instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) session_timeout: Duration,
    pub(crate) rebalance_timeout: Duration,
    /// Protocols in the member's order of preference, with their metadata.
    pub(crate) protocols: Vec<(String, Bytes)>,
    /// Assignment from the leader's SyncGroup of the current generation.
    pub(crate) assignment: Bytes,
    /// The member is removed if it neither heartbeats nor waits in a JoinGroup or SyncGroup by
    /// this time.
    pub(crate) session_deadline: Instant,
    /// Join order; the earliest member becomes leader when the leader goes.
    pub(crate) seq: u64,
}

impl Member {
    /// Whether the member supports the protocol `name`.
    pub(crate) fn supports(&self, name: &str) -> bool {
        self.protocols.iter().any(|(n, _)| n == name)
    }

    /// Metadata the member sent for protocol `name`.
    pub(crate) fn metadata(&self, name: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// Whether a rejoin with `protocols` changes nothing.
    pub(crate) fn matches(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    /// The member's first choice among `candidates`.
    pub(crate) fn vote<'a>(&'a self, candidates: &[&str]) -> Option<&'a str> {
        self.protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .find(|n| candidates.contains(n))
    }

    /// Pushes the session deadline out by one session timeout from `now`.
    pub(crate) fn touch(&mut self, now: Instant) {
        self.session_deadline = now + self.session_timeout;
    }
}
