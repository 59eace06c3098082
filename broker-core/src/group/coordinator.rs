//! The group coordinator: membership APIs (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) and the
//! group listing APIs. OffsetCommit and OffsetFetch are in `offsets.rs`.
//!
//! All groups live under one short-held mutex, never held across an await: a JoinGroup or
//! SyncGroup that must wait parks a oneshot sender in the group state and awaits the receiver
//! with the lock released.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DescribeGroupsRequest, DescribeGroupsResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;
use uuid::Uuid;

use super::config::GroupConfig;
use super::error::GroupError;
use super::member::Member;
use super::state::{
    Group, GroupState, JoinOutcome, RebalanceStart, Reply, SyncOutcome, Transition, deliver,
};
use super::store::OffsetStore;
use super::timers::{
    spawn_pending_timer, spawn_rebalance_timer, spawn_session_timer, spawn_sync_timer,
};
use super::versions::{Api, is_supported};
use crate::log::LogManager;

/// State shared with the timer tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: GroupConfig,
    pub(crate) groups: Mutex<HashMap<String, Group>>,
    next_rebalance_id: AtomicU64,
    me: Weak<Shared>,
}

impl Shared {
    /// Parameters for a rebalance that may start now.
    pub(crate) fn rebalance_start(&self, now: Instant) -> RebalanceStart {
        RebalanceStart {
            now,
            rebalance_id: self.next_rebalance_id.fetch_add(1, Ordering::Relaxed),
            initial_delay: self.config.initial_rebalance_delay,
        }
    }

    /// Applies a transition to `group`, starting the rebalance timer if it began a rebalance.
    pub(crate) fn transition(
        &self,
        group_id: &str,
        group: &mut Group,
        f: impl FnOnce(GroupState, &mut super::state::Membership) -> Transition,
    ) -> Vec<Reply> {
        let before = group.state.rebalance_id();
        let was_completing = group.state.is_completing();
        let generation = group.m.generation;
        let replies = group.apply(f);
        if let Some(id) = group.state.rebalance_id()
            && before != Some(id)
        {
            spawn_rebalance_timer(self.me.clone(), group_id.to_owned(), id);
        }
        if group.state.is_completing() && (!was_completing || generation != group.m.generation) {
            let deadline = Instant::now() + group.m.rebalance_timeout();
            spawn_sync_timer(
                self.me.clone(),
                group_id.to_owned(),
                group.m.generation,
                deadline,
            );
        }
        replies
    }
}

/// An answer now, or a parked one.
enum Answer<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// What a JoinGroup asks for, validated.
struct JoinSpec<'a> {
    client_id: &'a str,
    client_host: &'a str,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    instance_id: Option<String>,
}

/// The consumer-group coordinator of this broker (which coordinates every group).
#[derive(Debug)]
pub struct GroupCoordinator {
    pub(crate) shared: Arc<Shared>,
    pub(crate) store: Arc<OffsetStore>,
    pub(crate) logs: Arc<LogManager>,
    pub(crate) closed: AtomicBool,
}

pub(crate) fn code(error: Option<ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn opt_str(s: Option<&str>) -> Option<StrBytes> {
    s.map(str_bytes)
}

impl GroupCoordinator {
    /// Opens the coordinator with Kafka's default settings, loading committed offsets from
    /// `<data_dir>/__group_offsets/`.
    pub fn open(data_dir: &Path, logs: Arc<LogManager>) -> Result<Arc<Self>, GroupError> {
        Self::open_with_config(data_dir, logs, GroupConfig::default())
    }

    /// Opens the coordinator with explicit settings.
    pub fn open_with_config(
        data_dir: &Path,
        logs: Arc<LogManager>,
        config: GroupConfig,
    ) -> Result<Arc<Self>, GroupError> {
        let store = Arc::new(OffsetStore::open(data_dir, config.compact_log_bytes)?);
        let shared = Arc::new_cyclic(|me| Shared {
            config,
            groups: Mutex::new(HashMap::new()),
            next_rebalance_id: AtomicU64::new(0),
            me: me.clone(),
        });
        Ok(Arc::new(Self {
            shared,
            store,
            logs,
            closed: AtomicBool::new(false),
        }))
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The checks every group request starts with, in Kafka's order: a served version, an open
    /// coordinator, a group id.
    pub(crate) fn precheck(
        &self,
        api: Api,
        version: i16,
        group_id: &str,
    ) -> Result<(), ResponseError> {
        if !is_supported(api, version) {
            return Err(ResponseError::UnsupportedVersion);
        }
        if self.is_closed() {
            return Err(ResponseError::NotCoordinator);
        }
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        Ok(())
    }

    /// Shuts down: parked JoinGroup/SyncGroup requests get NOT_COORDINATOR, every group goes
    /// Dead, later requests get NOT_COORDINATOR, and a final offsets snapshot is written.
    pub fn close(&self) -> Result<(), GroupError> {
        self.closed.store(true, Ordering::Release);
        {
            let mut groups = self.shared.groups.lock();
            for group in groups.values_mut() {
                deliver(group.apply(|s, _| s.shut_down()));
            }
        }
        self.store.close()
    }

    /// JoinGroup v0–9. `client_id` is from the request header, `client_host` the peer address
    /// (shown by DescribeGroups). Waits until the join phase completes.
    pub async fn join_group(
        &self,
        client_id: &str,
        client_host: &str,
        req: JoinGroupRequest,
        version: i16,
    ) -> JoinGroupResponse {
        let outcome = match self.join(client_id, client_host, &req, version) {
            Answer::Now(o) => o,
            Answer::Later(rx) => rx.await.unwrap_or_else(|_| {
                JoinOutcome::error(ResponseError::NotCoordinator, req.member_id.as_str())
            }),
        };
        join_response(outcome, version)
    }

    fn join(
        &self,
        client_id: &str,
        client_host: &str,
        req: &JoinGroupRequest,
        version: i16,
    ) -> Answer<JoinOutcome> {
        let member_id = req.member_id.as_str();
        let fail = |e| Answer::Now(JoinOutcome::error(e, member_id));
        let group_id = req.group_id.0.as_str();
        if let Err(e) = self.precheck(Api::JoinGroup, version, group_id) {
            return fail(e);
        }
        let config = &self.shared.config;
        let Some(session_timeout) = u64::try_from(req.session_timeout_ms)
            .ok()
            .map(Duration::from_millis)
            .filter(|t| *t >= config.min_session_timeout && *t <= config.max_session_timeout)
        else {
            return fail(ResponseError::InvalidSessionTimeout);
        };
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        let rebalance_timeout = u64::try_from(req.rebalance_timeout_ms)
            .ok()
            .filter(|t| version >= 1 && *t > 0)
            .map_or(session_timeout, Duration::from_millis);
        let spec = JoinSpec {
            client_id,
            client_host,
            session_timeout,
            rebalance_timeout,
            protocol_type: req.protocol_type.to_string(),
            protocols: req
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect(),
            instance_id: req
                .group_instance_id
                .as_ref()
                .filter(|_| version >= 5)
                .map(|s| s.to_string()),
        };
        if spec.protocol_type.is_empty() || spec.protocols.is_empty() {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        let now = Instant::now();
        let mut groups = self.shared.groups.lock();
        if !groups.contains_key(group_id) {
            if !member_id.is_empty() {
                return fail(ResponseError::UnknownMemberId);
            }
            groups.insert(group_id.to_owned(), Group::new());
        }
        let Some(group) = groups.get_mut(group_id) else {
            return fail(ResponseError::UnknownServerError);
        };
        if matches!(group.state, GroupState::Dead) {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if member_id.is_empty() {
            self.join_new(group_id, group, spec, version, now)
        } else {
            self.join_known(group_id, group, member_id, spec, now)
        }
    }

    /// JoinGroup without a member id.
    fn join_new(
        &self,
        group_id: &str,
        group: &mut Group,
        spec: JoinSpec<'_>,
        version: i16,
        now: Instant,
    ) -> Answer<JoinOutcome> {
        let fail = |e| Answer::Now(JoinOutcome::error(e, ""));
        if let Some(instance) = &spec.instance_id
            && let Some(old) = group.m.static_member(instance).map(str::to_owned)
        {
            // A static member restarted: its new incarnation replaces (fences) the old one.
            let start = self.shared.rebalance_start(now);
            deliver(self.shared.transition(group_id, group, |s, m| {
                s.remove_member(m, &old, ResponseError::FencedInstanceId, start)
            }));
        }
        if !group.m.supports(&spec.protocol_type, &spec.protocols, None) {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        if group.m.members.len() + group.m.pending.len() >= self.shared.config.max_group_size {
            return fail(ResponseError::GroupMaxSizeReached);
        }
        let prefix = spec.instance_id.as_deref().unwrap_or(spec.client_id);
        let new_id = format!("{prefix}-{}", Uuid::new_v4());
        if version >= 4 && spec.instance_id.is_none() {
            // KIP-394: hand out the id; the member joins with it in a second JoinGroup.
            let deadline = now + spec.session_timeout;
            group.m.pending.insert(new_id.clone(), deadline);
            spawn_pending_timer(
                self.shared.me.clone(),
                group_id.to_owned(),
                new_id.clone(),
                deadline,
            );
            return Answer::Now(JoinOutcome::error(ResponseError::MemberIdRequired, &new_id));
        }
        self.add_and_park(group_id, group, new_id, spec, now)
    }

    /// JoinGroup with a member id.
    fn join_known(
        &self,
        group_id: &str,
        group: &mut Group,
        member_id: &str,
        spec: JoinSpec<'_>,
        now: Instant,
    ) -> Answer<JoinOutcome> {
        let fail = |e| Answer::Now(JoinOutcome::error(e, member_id));
        if group.m.pending.remove(member_id).is_some() {
            if !group.m.supports(&spec.protocol_type, &spec.protocols, None) {
                return fail(ResponseError::InconsistentGroupProtocol);
            }
            return self.add_and_park(group_id, group, member_id.to_owned(), spec, now);
        }
        if let Err(e) = group
            .m
            .validate_member(member_id, spec.instance_id.as_deref())
        {
            return fail(e);
        }
        if !group
            .m
            .supports(&spec.protocol_type, &spec.protocols, Some(member_id))
        {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        let is_leader = group.m.leader.as_deref() == Some(member_id);
        let single = group.m.members.len() == 1;
        let Some(member) = group.m.members.get_mut(member_id) else {
            return fail(ResponseError::UnknownMemberId);
        };
        member.touch(now);
        let unchanged = member.matches(&spec.protocols);
        let rejoin = match &group.state {
            GroupState::PreparingRebalance(_) => true,
            // The member lost its JoinGroup response: the same answer again.
            GroupState::CompletingRebalance(_) => !unchanged,
            // The leader may rejoin to force a new assignment; others only with new metadata.
            GroupState::Stable => is_leader || !unchanged,
            GroupState::Empty => return fail(ResponseError::UnknownMemberId),
            GroupState::Dead => return fail(ResponseError::CoordinatorNotAvailable),
        };
        if !rejoin {
            return Answer::Now(group.m.join_outcome(member_id));
        }
        member.protocols = spec.protocols;
        member.session_timeout = spec.session_timeout;
        member.rebalance_timeout = spec.rebalance_timeout;
        member.client_id = spec.client_id.to_owned();
        member.client_host = spec.client_host.to_owned();
        if single {
            group.m.protocol_type = Some(spec.protocol_type);
        }
        self.rebalance_and_park(group_id, group, member_id, now)
    }

    fn add_and_park(
        &self,
        group_id: &str,
        group: &mut Group,
        member_id: String,
        spec: JoinSpec<'_>,
        now: Instant,
    ) -> Answer<JoinOutcome> {
        let member = Member {
            id: member_id.clone(),
            instance_id: spec.instance_id,
            client_id: spec.client_id.to_owned(),
            client_host: spec.client_host.to_owned(),
            session_timeout: spec.session_timeout,
            rebalance_timeout: spec.rebalance_timeout,
            protocols: spec.protocols,
            assignment: Bytes::new(),
            session_deadline: now + spec.session_timeout,
            seq: 0,
        };
        group.m.add_member(member, &spec.protocol_type);
        spawn_session_timer(
            self.shared.me.clone(),
            group_id.to_owned(),
            member_id.clone(),
        );
        self.rebalance_and_park(group_id, group, &member_id, now)
    }

    /// Starts a rebalance if none is in progress and parks the member's JoinGroup.
    fn rebalance_and_park(
        &self,
        group_id: &str,
        group: &mut Group,
        member_id: &str,
        now: Instant,
    ) -> Answer<JoinOutcome> {
        let start = self.shared.rebalance_start(now);
        let (tx, rx) = oneshot::channel();
        deliver(self.shared.transition(group_id, group, |s, m| {
            let (s, mut replies) = s.prepare_rebalance(m, start);
            let (s, more) = s.park_join(member_id, tx, now, start.initial_delay);
            replies.extend(more);
            let (s, more) = s.try_complete_join(m, now, false);
            replies.extend(more);
            (s, replies)
        }));
        Answer::Later(rx)
    }

    /// SyncGroup v0–5. The leader's request carries the assignments; followers wait for them.
    pub async fn sync_group(&self, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
        let outcome = match self.sync(req, version) {
            Answer::Now(o) => o,
            Answer::Later(rx) => rx
                .await
                .unwrap_or_else(|_| SyncOutcome::error(ResponseError::NotCoordinator)),
        };
        let mut resp = SyncGroupResponse::default()
            .with_error_code(code(outcome.error))
            .with_assignment(outcome.assignment);
        if version >= 5 {
            resp = resp
                .with_protocol_type(opt_str(outcome.protocol_type.as_deref()))
                .with_protocol_name(opt_str(outcome.protocol_name.as_deref()));
        }
        resp
    }

    fn sync(&self, req: SyncGroupRequest, version: i16) -> Answer<SyncOutcome> {
        let fail = |e| Answer::Now(SyncOutcome::error(e));
        let group_id = req.group_id.0.as_str();
        if let Err(e) = self.precheck(Api::SyncGroup, version, group_id) {
            return fail(e);
        }
        let member_id = req.member_id.as_str();
        let instance_id = req.group_instance_id.as_deref().filter(|_| version >= 3);
        let now = Instant::now();
        let mut groups = self.shared.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return fail(ResponseError::UnknownMemberId);
        };
        if matches!(group.state, GroupState::Dead) {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if let Err(e) = group.m.validate_member(member_id, instance_id) {
            return fail(e);
        }
        if req.generation_id != group.m.generation {
            return fail(ResponseError::IllegalGeneration);
        }
        if version >= 5 {
            let type_ok = req
                .protocol_type
                .as_deref()
                .is_none_or(|t| group.m.protocol_type.as_deref() == Some(t));
            let name_ok = req
                .protocol_name
                .as_deref()
                .is_none_or(|n| group.m.protocol.as_deref() == Some(n));
            if !type_ok || !name_ok {
                return fail(ResponseError::InconsistentGroupProtocol);
            }
        }
        if let Some(member) = group.m.members.get_mut(member_id) {
            member.touch(now);
        }
        let is_leader = group.m.leader.as_deref() == Some(member_id);
        let assignments = (is_leader && matches!(group.state, GroupState::CompletingRebalance(_)))
            .then(|| {
                req.assignments
                    .into_iter()
                    .map(|a| (a.member_id.to_string(), a.assignment))
                    .collect::<HashMap<_, _>>()
            });
        let (tx, rx) = oneshot::channel();
        deliver(self.shared.transition(group_id, group, |s, m| {
            s.sync(m, member_id, tx, assignments, now)
        }));
        Answer::Later(rx)
    }

    /// Heartbeat v0–4: REBALANCE_IN_PROGRESS tells a member to rejoin.
    pub async fn heartbeat(&self, req: HeartbeatRequest, version: i16) -> HeartbeatResponse {
        let error = self.heartbeat_error(&req, version);
        HeartbeatResponse::default().with_error_code(code(error))
    }

    fn heartbeat_error(&self, req: &HeartbeatRequest, version: i16) -> Option<ResponseError> {
        let group_id = req.group_id.0.as_str();
        if let Err(e) = self.precheck(Api::Heartbeat, version, group_id) {
            return Some(e);
        }
        let member_id = req.member_id.as_str();
        let instance_id = req.group_instance_id.as_deref().filter(|_| version >= 3);
        let mut groups = self.shared.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        if matches!(group.state, GroupState::Dead) {
            return Some(ResponseError::CoordinatorNotAvailable);
        }
        if let Err(e) = group.m.validate_member(member_id, instance_id) {
            return Some(e);
        }
        if req.generation_id != group.m.generation {
            return Some(ResponseError::IllegalGeneration);
        }
        let rebalancing = match group.state {
            GroupState::Empty => return Some(ResponseError::UnknownMemberId),
            GroupState::Dead => return Some(ResponseError::CoordinatorNotAvailable),
            GroupState::PreparingRebalance(_) => true,
            GroupState::CompletingRebalance(_) | GroupState::Stable => false,
        };
        if let Some(member) = group.m.members.get_mut(member_id) {
            member.touch(Instant::now());
        }
        rebalancing.then_some(ResponseError::RebalanceInProgress)
    }

    /// LeaveGroup v0–5 (v3+: a batch of members, each answered on its own).
    pub async fn leave_group(&self, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
        let leaving: Vec<(String, Option<String>)> = if version >= 3 {
            req.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_ref().map(|s| s.to_string()),
                    )
                })
                .collect()
        } else {
            vec![(req.member_id.to_string(), None)]
        };
        let (error, results) = self.leave(req.group_id.0.as_str(), &leaving, version);
        let mut resp = LeaveGroupResponse::default();
        if version >= 3 {
            resp.error_code = code(error);
            resp.members = leaving
                .into_iter()
                .zip(results)
                .map(|((member_id, instance_id), e)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(&member_id))
                        .with_group_instance_id(opt_str(instance_id.as_deref()))
                        .with_error_code(code(e))
                })
                .collect();
        } else {
            resp.error_code = code(error.or(results.into_iter().next().flatten()));
        }
        resp
    }

    /// Removes leaving members: (group-level error, per-member errors in request order).
    fn leave(
        &self,
        group_id: &str,
        leaving: &[(String, Option<String>)],
        version: i16,
    ) -> (Option<ResponseError>, Vec<Option<ResponseError>>) {
        let all = |e| (Some(e), Vec::new());
        if let Err(e) = self.precheck(Api::LeaveGroup, version, group_id) {
            return all(e);
        }
        let now = Instant::now();
        let mut groups = self.shared.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return all(ResponseError::UnknownMemberId);
        };
        if matches!(group.state, GroupState::Dead) {
            return all(ResponseError::CoordinatorNotAvailable);
        }
        let mut results = Vec::with_capacity(leaving.len());
        for (member_id, instance_id) in leaving {
            let target = match instance_id {
                Some(instance) => match group.m.static_member(instance) {
                    None => Err(ResponseError::UnknownMemberId),
                    Some(existing) if !member_id.is_empty() && existing != member_id => {
                        Err(ResponseError::FencedInstanceId)
                    }
                    Some(existing) => Ok(existing.to_owned()),
                },
                None => Ok(member_id.clone()),
            };
            let result = match target {
                Err(e) => Some(e),
                Ok(id) if group.m.members.contains_key(&id) => {
                    let start = self.shared.rebalance_start(now);
                    deliver(self.shared.transition(group_id, group, |s, m| {
                        s.remove_member(m, &id, ResponseError::UnknownMemberId, start)
                    }));
                    None
                }
                Ok(id) if group.m.pending.remove(&id).is_some() => {
                    deliver(
                        self.shared
                            .transition(group_id, group, |s, m| s.try_complete_join(m, now, false)),
                    );
                    None
                }
                Ok(_) => Some(ResponseError::UnknownMemberId),
            };
            results.push(result);
        }
        (None, results)
    }

    /// ListGroups v0–4 (v4: filter by state names, case-insensitive). Lists groups with members
    /// and groups that only have committed offsets (as Empty).
    pub async fn list_groups(&self, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
        let mut resp = ListGroupsResponse::default();
        if !is_supported(Api::ListGroups, version) {
            resp.error_code = ResponseError::UnsupportedVersion.code();
            return resp;
        }
        if self.is_closed() {
            resp.error_code = ResponseError::NotCoordinator.code();
            return resp;
        }
        let filter: Vec<String> = if version >= 4 {
            req.states_filter
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect()
        } else {
            Vec::new()
        };
        let mut listed: Vec<(String, String, &'static str)> = {
            let groups = self.shared.groups.lock();
            groups
                .iter()
                .map(|(id, g)| {
                    (
                        id.clone(),
                        g.m.protocol_type.clone().unwrap_or_default(),
                        g.state.name(),
                    )
                })
                .collect()
        };
        let known: BTreeSet<String> = listed.iter().map(|(id, _, _)| id.clone()).collect();
        for id in self.store.groups() {
            if !known.contains(&id) {
                listed.push((id, String::new(), "Empty"));
            }
        }
        listed.sort();
        resp.groups = listed
            .into_iter()
            .filter(|(_, _, state)| {
                filter.is_empty() || filter.contains(&state.to_ascii_lowercase())
            })
            .map(|(id, protocol_type, state)| {
                let mut g = ListedGroup::default()
                    .with_group_id(GroupId(str_bytes(&id)))
                    .with_protocol_type(str_bytes(&protocol_type));
                if version >= 4 {
                    g.group_state = StrBytes::from_static_str(state);
                }
                g
            })
            .collect();
        resp
    }

    /// DescribeGroups v0–5. Member metadata and assignments are shown only when Stable, as
    /// Kafka does; an unknown group is reported Dead with no error (v0–5).
    pub async fn describe_groups(
        &self,
        req: DescribeGroupsRequest,
        version: i16,
    ) -> DescribeGroupsResponse {
        let mut resp = DescribeGroupsResponse::default();
        let supported = is_supported(Api::DescribeGroups, version);
        let closed = self.is_closed();
        let groups = self.shared.groups.lock();
        resp.groups = req
            .groups
            .iter()
            .map(|gid| {
                let id = gid.0.as_str();
                let mut d = DescribedGroup::default().with_group_id(gid.clone());
                let error = if !supported {
                    Some(ResponseError::UnsupportedVersion)
                } else if closed {
                    Some(ResponseError::NotCoordinator)
                } else if id.is_empty() {
                    Some(ResponseError::InvalidGroupId)
                } else {
                    None
                };
                if let Some(e) = error {
                    d.error_code = e.code();
                    return d;
                }
                let Some(group) = groups.get(id) else {
                    let state = if self.store.has_group(id) {
                        "Empty"
                    } else {
                        "Dead"
                    };
                    d.group_state = StrBytes::from_static_str(state);
                    return d;
                };
                d.group_state = StrBytes::from_static_str(group.state.name());
                d.protocol_type = str_bytes(group.m.protocol_type.as_deref().unwrap_or(""));
                let stable = matches!(group.state, GroupState::Stable);
                let protocol = group.m.protocol.as_deref().filter(|_| stable);
                d.protocol_data = str_bytes(protocol.unwrap_or(""));
                let mut members: Vec<&Member> = group.m.members.values().collect();
                members.sort_by_key(|m| m.seq);
                d.members = members
                    .into_iter()
                    .map(|m| {
                        let mut dm = DescribedGroupMember::default()
                            .with_member_id(str_bytes(&m.id))
                            .with_client_id(str_bytes(&m.client_id))
                            .with_client_host(str_bytes(&m.client_host));
                        if version >= 4 {
                            dm.group_instance_id = opt_str(m.instance_id.as_deref());
                        }
                        if let Some(p) = protocol {
                            dm.member_metadata = m.metadata(p);
                            dm.member_assignment = m.assignment.clone();
                        }
                        dm
                    })
                    .collect();
                d
            })
            .collect();
        resp
    }

    /// Every group this coordinator knows: with members, or with committed offsets. Sorted.
    pub fn groups(&self) -> Vec<String> {
        let mut all: BTreeSet<String> = self.shared.groups.lock().keys().cloned().collect();
        all.extend(self.store.groups());
        all.into_iter().collect()
    }

    /// Committed offsets of a group as (topic, partition, offset), sorted (for lag metrics).
    pub fn committed_offsets(&self, group: &str) -> Vec<(String, i32, i64)> {
        self.store
            .group_offsets(group)
            .into_iter()
            .map(|((topic, partition), c)| (topic, partition, c.offset))
            .collect()
    }

    /// Number of fsyncs of the offsets log so far (observability; tests of the shared fsync).
    pub fn offsets_fsync_count(&self) -> u64 {
        self.store.fsync_count()
    }

    /// Compacts the offsets log into a snapshot now (it also happens by size and on close).
    pub fn compact_offsets(&self) -> Result<(), GroupError> {
        self.store.compact()
    }
}

/// Shapes a JoinGroup answer for the request's version.
fn join_response(o: JoinOutcome, version: i16) -> JoinGroupResponse {
    // protocol_type exists from v7; protocol_name is nullable only from v7.
    let protocol_name = match o.protocol_name {
        Some(name) => Some(StrBytes::from_string(name)),
        None if version >= 7 => None,
        None => Some(StrBytes::default()),
    };
    let mut resp = JoinGroupResponse::default()
        .with_error_code(code(o.error))
        .with_generation_id(o.generation)
        .with_protocol_name(protocol_name)
        .with_leader(StrBytes::from_string(o.leader))
        .with_member_id(StrBytes::from_string(o.member_id))
        .with_members(
            o.members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(StrBytes::from_string(m.member_id))
                        .with_group_instance_id(
                            m.instance_id
                                .filter(|_| version >= 5)
                                .map(StrBytes::from_string),
                        )
                        .with_metadata(m.metadata)
                })
                .collect(),
        );
    if version >= 7 {
        resp.protocol_type = o.protocol_type.map(StrBytes::from_string);
    }
    resp
}
