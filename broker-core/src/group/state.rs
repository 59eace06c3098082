//! The classic group state machine: each state is a type, and each transition consumes the
//! current state and returns the next one with the responses it releases.
//!
//! Parked JoinGroup responses exist only in [`Preparing`], parked SyncGroup responses only in
//! [`Completing`]; the types make it impossible to leave one behind on a transition.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::member::Member;

/// Where a parked JoinGroup's answer goes.
pub(crate) type JoinTx = oneshot::Sender<JoinOutcome>;
/// Where a parked SyncGroup's answer goes.
pub(crate) type SyncTx = oneshot::Sender<SyncOutcome>;

/// A JoinGroup answer, before it is shaped for the request's version.
#[derive(Debug, Clone)]
pub(crate) struct JoinOutcome {
    pub(crate) error: Option<ResponseError>,
    pub(crate) generation: i32,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    pub(crate) leader: String,
    pub(crate) member_id: String,
    /// Only for the leader: every member with its metadata for the chosen protocol.
    pub(crate) members: Vec<JoinedMember>,
}

/// A member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone)]
pub(crate) struct JoinedMember {
    pub(crate) member_id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) metadata: Bytes,
}

impl JoinOutcome {
    pub(crate) fn error(error: ResponseError, member_id: &str) -> Self {
        Self {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_owned(),
            members: Vec::new(),
        }
    }
}

/// A SyncGroup answer, before it is shaped for the request's version.
#[derive(Debug, Clone)]
pub(crate) struct SyncOutcome {
    pub(crate) error: Option<ResponseError>,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    pub(crate) assignment: Bytes,
}

impl SyncOutcome {
    pub(crate) fn error(error: ResponseError) -> Self {
        Self {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// A response released by a transition.
#[derive(Debug)]
pub(crate) enum Reply {
    Join(JoinTx, JoinOutcome),
    Sync(SyncTx, SyncOutcome),
}

impl Reply {
    /// Delivers the response; a requester that went away (connection closed) is ignored.
    pub(crate) fn send(self) {
        match self {
            Self::Join(tx, outcome) => drop(tx.send(outcome)),
            Self::Sync(tx, outcome) => drop(tx.send(outcome)),
        }
    }
}

/// Waiting for every member to (re)join.
#[derive(Debug)]
pub(crate) struct Preparing {
    /// Identifies this rebalance to its timer.
    pub(crate) rebalance_id: u64,
    /// Members that have not rejoined by now are removed.
    pub(crate) deadline: Instant,
    /// The join phase does not complete before this (initial rebalance delay of an empty group).
    pub(crate) not_before: Instant,
    /// Whether the group was empty when the rebalance began (new members extend `not_before`).
    pub(crate) from_empty: bool,
    /// Parked JoinGroup responses by member id.
    pub(crate) joins: HashMap<String, JoinTx>,
}

/// Waiting for the leader's assignments.
#[derive(Debug, Default)]
pub(crate) struct Completing {
    /// Parked SyncGroup responses by member id.
    pub(crate) syncs: HashMap<String, SyncTx>,
}

/// The state of a group.
#[derive(Debug)]
pub(crate) enum GroupState {
    /// No members (the group may still have committed offsets).
    Empty,
    PreparingRebalance(Preparing),
    CompletingRebalance(Completing),
    Stable,
    /// The coordinator has shut down; every request is refused.
    Dead,
}

/// Transition result: the next state and the responses it releases.
pub(crate) type Transition = (GroupState, Vec<Reply>);

impl GroupState {
    /// Kafka's name of the state, as ListGroups and DescribeGroups report it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance(_) => "PreparingRebalance",
            Self::CompletingRebalance(_) => "CompletingRebalance",
            Self::Stable => "Stable",
            Self::Dead => "Dead",
        }
    }

    /// The id of the rebalance in progress.
    pub(crate) fn rebalance_id(&self) -> Option<u64> {
        match self {
            Self::PreparingRebalance(p) => Some(p.rebalance_id),
            _ => None,
        }
    }

    /// Whether the group waits for SyncGroups.
    pub(crate) fn is_completing(&self) -> bool {
        matches!(self, Self::CompletingRebalance(_))
    }

    /// Members of a CompletingRebalance group that have not sent their SyncGroup.
    pub(crate) fn not_synced(&self, m: &Membership) -> Vec<String> {
        match self {
            Self::CompletingRebalance(c) => m
                .members
                .keys()
                .filter(|id| !c.syncs.contains_key(*id))
                .cloned()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether the member waits in a JoinGroup or SyncGroup (so its session does not expire).
    pub(crate) fn is_waiting(&self, member_id: &str) -> bool {
        match self {
            Self::PreparingRebalance(p) => p.joins.contains_key(member_id),
            Self::CompletingRebalance(c) => c.syncs.contains_key(member_id),
            _ => false,
        }
    }
}

/// Everything about a group except its state.
#[derive(Debug)]
pub(crate) struct Membership {
    pub(crate) generation: i32,
    pub(crate) protocol_type: Option<String>,
    /// Protocol chosen for the current generation.
    pub(crate) protocol: Option<String>,
    pub(crate) leader: Option<String>,
    pub(crate) members: HashMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet used, with their expiry.
    pub(crate) pending: HashMap<String, Instant>,
    pub(crate) next_seq: u64,
}

/// A group: its state and its members.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) state: GroupState,
    pub(crate) m: Membership,
}

impl Group {
    pub(crate) fn new() -> Self {
        Self {
            state: GroupState::Empty,
            m: Membership {
                generation: 0,
                protocol_type: None,
                protocol: None,
                leader: None,
                members: HashMap::new(),
                pending: HashMap::new(),
                next_seq: 0,
            },
        }
    }

    /// Applies a transition to the group's state and returns the responses it released.
    pub(crate) fn apply(
        &mut self,
        f: impl FnOnce(GroupState, &mut Membership) -> Transition,
    ) -> Vec<Reply> {
        let state = std::mem::replace(&mut self.state, GroupState::Dead);
        let (next, replies) = f(state, &mut self.m);
        self.state = next;
        replies
    }
}

impl Membership {
    /// The member id registered for a static instance id.
    pub(crate) fn static_member(&self, instance_id: &str) -> Option<&str> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance_id))
            .map(|m| m.id.as_str())
    }

    /// Kafka's member validation: a static instance id must map to this member id, otherwise the
    /// member id must be known.
    pub(crate) fn validate_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        match instance_id {
            Some(instance) => match self.static_member(instance) {
                None => Err(ResponseError::UnknownMemberId),
                Some(existing) if existing != member_id => Err(ResponseError::FencedInstanceId),
                Some(_) => Ok(()),
            },
            None if self.members.contains_key(member_id) => Ok(()),
            None => Err(ResponseError::UnknownMemberId),
        }
    }

    /// Whether a member with this protocol type and protocols can be in the group alongside the
    /// other members (all but `except`): same protocol type and one protocol all support.
    pub(crate) fn supports(
        &self,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
        except: Option<&str>,
    ) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        let others: Vec<&Member> = self
            .members
            .values()
            .filter(|m| Some(m.id.as_str()) != except)
            .collect();
        if others.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|(name, _)| others.iter().all(|m| m.supports(name)))
    }

    /// Kafka's protocol selection: among the protocols every member supports, each member votes
    /// for its most preferred; the most votes win, ties going to the leader's preference.
    pub(crate) fn select_protocol(&self) -> Option<String> {
        let leader = self.leader.as_ref().and_then(|l| self.members.get(l))?;
        let candidates: Vec<&str> = leader
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| self.members.values().all(|m| m.supports(n)))
            .collect();
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for member in self.members.values() {
            if let Some(choice) = member.vote(&candidates) {
                *votes.entry(choice).or_default() += 1;
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for name in &candidates {
            let count = votes.get(name).copied().unwrap_or(0);
            if best.is_none_or(|(_, c)| count > c) {
                best = Some((name, count));
            }
        }
        best.map(|(name, _)| name.to_owned())
    }

    /// The member that joined first.
    fn first_member(&self) -> Option<String> {
        self.members
            .values()
            .min_by_key(|m| m.seq)
            .map(|m| m.id.clone())
    }

    /// The longest rebalance timeout of the members.
    pub(crate) fn rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    /// The JoinGroup answer of the current generation for `member_id`.
    pub(crate) fn join_outcome(&self, member_id: &str) -> JoinOutcome {
        let leader = self.leader.clone().unwrap_or_default();
        let members = match &self.protocol {
            Some(protocol) if leader == member_id => {
                let mut all: Vec<&Member> = self.members.values().collect();
                all.sort_by_key(|m| m.seq);
                all.into_iter()
                    .map(|m| JoinedMember {
                        member_id: m.id.clone(),
                        instance_id: m.instance_id.clone(),
                        metadata: m.metadata(protocol),
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        JoinOutcome {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader,
            member_id: member_id.to_owned(),
            members,
        }
    }

    fn sync_outcome(&self, member_id: &str) -> SyncOutcome {
        SyncOutcome {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    /// Adds a member; the first member of a group leads it.
    pub(crate) fn add_member(&mut self, mut member: Member, protocol_type: &str) {
        member.seq = self.next_seq;
        self.next_seq += 1;
        if self.members.is_empty() {
            self.protocol_type = Some(protocol_type.to_owned());
        }
        if self.leader.is_none() {
            self.leader = Some(member.id.clone());
        }
        self.members.insert(member.id.clone(), member);
    }
}

/// Parameters of a rebalance that starts now.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RebalanceStart {
    pub(crate) now: Instant,
    pub(crate) rebalance_id: u64,
    pub(crate) initial_delay: Duration,
}

impl GroupState {
    /// Starts a rebalance (a no-op if one is in progress): Empty, Stable and CompletingRebalance
    /// go to PreparingRebalance; parked SyncGroups get REBALANCE_IN_PROGRESS.
    pub(crate) fn prepare_rebalance(self, m: &mut Membership, start: RebalanceStart) -> Transition {
        let mut replies = Vec::new();
        let from_empty = match self {
            Self::PreparingRebalance(_) | Self::Dead => return (self, replies),
            Self::CompletingRebalance(c) => {
                for (id, tx) in c.syncs {
                    // The member was alive while it waited: its session restarts now.
                    if let Some(member) = m.members.get_mut(&id) {
                        member.touch(start.now);
                    }
                    let outcome = SyncOutcome::error(ResponseError::RebalanceInProgress);
                    replies.push(Reply::Sync(tx, outcome));
                }
                false
            }
            Self::Stable => false,
            Self::Empty => true,
        };
        let deadline = start.now + m.rebalance_timeout();
        let not_before = if from_empty {
            (start.now + start.initial_delay).min(deadline)
        } else {
            start.now
        };
        let next = Self::PreparingRebalance(Preparing {
            rebalance_id: start.rebalance_id,
            deadline,
            not_before,
            from_empty,
            joins: HashMap::new(),
        });
        (next, replies)
    }

    /// Completes the join phase if it may: when forced (rebalance timeout), or when every member
    /// and every holder of an issued member id has rejoined and the initial delay has passed.
    pub(crate) fn try_complete_join(
        self,
        m: &mut Membership,
        now: Instant,
        force: bool,
    ) -> Transition {
        match self {
            Self::PreparingRebalance(p) => {
                let all_joined =
                    m.pending.is_empty() && m.members.keys().all(|id| p.joins.contains_key(id));
                if force || (all_joined && now >= p.not_before) {
                    p.complete(m, now)
                } else {
                    (Self::PreparingRebalance(p), Vec::new())
                }
            }
            other => (other, Vec::new()),
        }
    }

    /// Removes a member: its parked request gets `error`; a Stable or CompletingRebalance group
    /// starts a rebalance, a PreparingRebalance group may now complete its join phase.
    pub(crate) fn remove_member(
        self,
        m: &mut Membership,
        member_id: &str,
        error: ResponseError,
        start: RebalanceStart,
    ) -> Transition {
        let mut replies = Vec::new();
        if m.members.remove(member_id).is_none() {
            return (self, replies);
        }
        if m.leader.as_deref() == Some(member_id) {
            m.leader = m.first_member();
        }
        let state = match self {
            Self::PreparingRebalance(mut p) => {
                if let Some(tx) = p.joins.remove(member_id) {
                    replies.push(Reply::Join(tx, JoinOutcome::error(error, member_id)));
                }
                Self::PreparingRebalance(p)
            }
            Self::CompletingRebalance(mut c) => {
                if let Some(tx) = c.syncs.remove(member_id) {
                    replies.push(Reply::Sync(tx, SyncOutcome::error(error)));
                }
                Self::CompletingRebalance(c)
            }
            other => other,
        };
        let state = match state {
            Self::Stable | Self::CompletingRebalance(_) => {
                let (s, r) = state.prepare_rebalance(m, start);
                replies.extend(r);
                s
            }
            other => other,
        };
        let (state, r) = state.try_complete_join(m, start.now, false);
        replies.extend(r);
        (state, replies)
    }

    /// Parks a JoinGroup of a member in PreparingRebalance (answering any older parked JoinGroup
    /// of the same member with REBALANCE_IN_PROGRESS so that it rejoins).
    pub(crate) fn park_join(
        self,
        member_id: &str,
        tx: JoinTx,
        now: Instant,
        initial_delay: Duration,
    ) -> Transition {
        match self {
            Self::PreparingRebalance(mut p) => {
                let mut replies = Vec::new();
                if let Some(old) = p.joins.insert(member_id.to_owned(), tx) {
                    replies.push(Reply::Join(
                        old,
                        JoinOutcome::error(ResponseError::RebalanceInProgress, member_id),
                    ));
                }
                if p.from_empty && !p.joins.is_empty() && now < p.deadline {
                    p.not_before = p.not_before.max((now + initial_delay).min(p.deadline));
                }
                (Self::PreparingRebalance(p), replies)
            }
            other => (
                other,
                vec![Reply::Join(
                    tx,
                    JoinOutcome::error(ResponseError::RebalanceInProgress, member_id),
                )],
            ),
        }
    }

    /// SyncGroup in CompletingRebalance. The leader's assignments move the group to Stable and
    /// release every parked SyncGroup; a follower's SyncGroup is parked until then.
    pub(crate) fn sync(
        self,
        m: &mut Membership,
        member_id: &str,
        tx: SyncTx,
        assignments: Option<HashMap<String, Bytes>>,
        now: Instant,
    ) -> Transition {
        match self {
            Self::CompletingRebalance(mut c) => {
                c.syncs.insert(member_id.to_owned(), tx);
                let Some(mut assignments) = assignments else {
                    return (Self::CompletingRebalance(c), Vec::new());
                };
                for member in m.members.values_mut() {
                    member.assignment = assignments.remove(&member.id).unwrap_or_default();
                    // Waiting members were alive: their sessions restart now.
                    if c.syncs.contains_key(&member.id) {
                        member.touch(now);
                    }
                }
                let replies = c
                    .syncs
                    .into_iter()
                    .map(|(id, tx)| Reply::Sync(tx, m.sync_outcome(&id)))
                    .collect();
                (Self::Stable, replies)
            }
            Self::Stable => {
                let outcome = m.sync_outcome(member_id);
                (Self::Stable, vec![Reply::Sync(tx, outcome)])
            }
            Self::PreparingRebalance(p) => (
                Self::PreparingRebalance(p),
                vec![Reply::Sync(
                    tx,
                    SyncOutcome::error(ResponseError::RebalanceInProgress),
                )],
            ),
            Self::Empty => (
                Self::Empty,
                vec![Reply::Sync(
                    tx,
                    SyncOutcome::error(ResponseError::UnknownMemberId),
                )],
            ),
            Self::Dead => (
                Self::Dead,
                vec![Reply::Sync(
                    tx,
                    SyncOutcome::error(ResponseError::CoordinatorNotAvailable),
                )],
            ),
        }
    }

    /// Shuts the group down: parked requests get NOT_COORDINATOR (clients look up the
    /// coordinator again), the group goes Dead.
    pub(crate) fn shut_down(self) -> Transition {
        let replies = match self {
            Self::PreparingRebalance(p) => p
                .joins
                .into_iter()
                .map(|(id, tx)| {
                    Reply::Join(tx, JoinOutcome::error(ResponseError::NotCoordinator, &id))
                })
                .collect(),
            Self::CompletingRebalance(c) => c
                .syncs
                .into_values()
                .map(|tx| Reply::Sync(tx, SyncOutcome::error(ResponseError::NotCoordinator)))
                .collect(),
            _ => Vec::new(),
        };
        (Self::Dead, replies)
    }
}

impl Preparing {
    /// Ends the join phase: members that did not rejoin are removed, the generation advances, a
    /// protocol and leader are chosen and every parked JoinGroup is answered.
    fn complete(self, m: &mut Membership, now: Instant) -> Transition {
        let Preparing { mut joins, .. } = self;
        m.members.retain(|id, _| joins.contains_key(id));
        let mut replies: Vec<Reply> = Vec::new();
        // Parked joins of members that are gone (cannot happen: removal answers them).
        let stray: Vec<String> = joins
            .keys()
            .filter(|id| !m.members.contains_key(*id))
            .cloned()
            .collect();
        for id in stray {
            if let Some(tx) = joins.remove(&id) {
                replies.push(Reply::Join(
                    tx,
                    JoinOutcome::error(ResponseError::UnknownMemberId, &id),
                ));
            }
        }
        m.generation = m.generation.checked_add(1).unwrap_or(1);
        if m.leader.as_ref().is_none_or(|l| !m.members.contains_key(l)) {
            m.leader = m.first_member();
        }
        m.protocol = if m.members.is_empty() {
            None
        } else {
            m.select_protocol()
        };
        if m.protocol.is_none() {
            // Empty group, or (impossible after the join checks) no common protocol.
            for (id, tx) in joins {
                replies.push(Reply::Join(
                    tx,
                    JoinOutcome::error(ResponseError::InconsistentGroupProtocol, &id),
                ));
            }
            m.members.clear();
            m.leader = None;
            return (GroupState::Empty, replies);
        }
        for member in m.members.values_mut() {
            member.assignment = Bytes::new();
            member.touch(now);
        }
        for (id, tx) in joins {
            let outcome = m.join_outcome(&id);
            replies.push(Reply::Join(tx, outcome));
        }
        (
            GroupState::CompletingRebalance(Completing::default()),
            replies,
        )
    }
}

/// Delivers released responses.
pub(crate) fn deliver(replies: Vec<Reply>) {
    for reply in replies {
        reply.send();
    }
}
