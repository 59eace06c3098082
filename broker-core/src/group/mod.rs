//! Consumer-group coordinator (DESIGN.md section 5): the classic group protocol (JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup), durable committed offsets (OffsetCommit, OffsetFetch) and
//! group listing (ListGroups, DescribeGroups). This broker coordinates every group.
//!
//! - `state`: the group state machine, states as types, transitions returning (next state,
//!   released responses).
//! - `coordinator`: the membership and listing APIs; `offsets`: the offset APIs.
//! - `timers`: rebalance, session and pending-member timeouts on `tokio::time`.
//! - `store` and `record`: the crash-safe offsets log and snapshot.
//! - `versions`: the API versions served ([`SUPPORTED`]).

pub mod config;
mod coordinator;
pub mod error;
mod member;
mod offsets;
mod record;
mod state;
mod store;
mod timers;
pub mod versions;

pub use config::GroupConfig;
pub use coordinator::GroupCoordinator;
pub use error::GroupError;
pub use record::CommittedOffset;
pub use store::OFFSETS_DIR;
pub use versions::{Api, SUPPORTED, is_supported};

#[cfg(test)]
mod tests;
