//! Coordinator tests. Timers run on tokio's paused clock; every response goes through the wire
//! codec of its version (encode, then decode) before it is inspected.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    DescribeGroupsRequest, DescribeGroupsResponse, GroupId, HeartbeatRequest, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::store::OFFSETS_DIR;
use super::{Api, GroupConfig, GroupCoordinator, SUPPORTED, is_supported};
use crate::log::{LogConfig, LogManager};

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 20_000;
const NONE: i16 = 0;

fn err(e: ResponseError) -> i16 {
    e.code()
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn gid(s: &str) -> GroupId {
    GroupId(sb(s))
}

/// Encodes at `version` and decodes back: what a client would see.
fn wire<T: Encodable + Decodable>(msg: T, version: i16) -> T {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf, version)
        .expect("encodes at this version");
    let mut bytes = buf.freeze();
    let back = T::decode(&mut bytes, version).expect("decodes");
    assert!(bytes.is_empty(), "trailing bytes");
    back
}

fn config() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay: Duration::ZERO,
        ..GroupConfig::default()
    }
}

struct Fixture {
    dir: TempDir,
    logs: Arc<LogManager>,
    c: Arc<GroupCoordinator>,
}

fn logs(dir: &Path) -> Arc<LogManager> {
    let logs = LogManager::open(dir, LogConfig::default()).expect("log manager");
    if logs.topic("t").is_none() {
        logs.create_topic("t", 4, BTreeMap::new()).expect("topic t");
        logs.create_topic("u", 1, BTreeMap::new()).expect("topic u");
    }
    Arc::new(logs)
}

fn fixture_with(config: GroupConfig) -> Fixture {
    let dir = TempDir::new().expect("tempdir");
    let logs = logs(dir.path());
    let c = GroupCoordinator::open_with_config(dir.path(), Arc::clone(&logs), config)
        .expect("coordinator");
    Fixture { dir, logs, c }
}

fn fixture() -> Fixture {
    fixture_with(config())
}

impl Fixture {
    fn reopen(&mut self) {
        self.c =
            GroupCoordinator::open_with_config(self.dir.path(), Arc::clone(&self.logs), config())
                .expect("reopen");
    }
}

fn join_req(group: &str, member: &str, protocols: &[(&str, &str)]) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_session_timeout_ms(SESSION_MS)
        .with_rebalance_timeout_ms(REBALANCE_MS)
        .with_member_id(sb(member))
        .with_protocol_type(sb("consumer"))
        .with_protocols(
            protocols
                .iter()
                .map(|(name, meta)| {
                    JoinGroupRequestProtocol::default()
                        .with_name(sb(name))
                        .with_metadata(Bytes::from(meta.to_string()))
                })
                .collect(),
        )
}

const RANGE: &[(&str, &str)] = &[("range", "m")];

fn spawn_join(
    c: &Arc<GroupCoordinator>,
    req: JoinGroupRequest,
    v: i16,
) -> JoinHandle<JoinGroupResponse> {
    let c = Arc::clone(c);
    tokio::spawn(async move { wire(c.join_group("client", "/127.0.0.1", req, v).await, v) })
}

async fn join(c: &Arc<GroupCoordinator>, req: JoinGroupRequest, v: i16) -> JoinGroupResponse {
    wire(c.join_group("client", "/127.0.0.1", req, v).await, v)
}

/// The MEMBER_ID_REQUIRED step of a v5 join: returns the member id handed out.
async fn member_id_for(c: &Arc<GroupCoordinator>, group: &str) -> String {
    let r = join(c, join_req(group, "", RANGE), 5).await;
    assert_eq!(r.error_code, err(ResponseError::MemberIdRequired));
    assert!(r.member_id.starts_with("client-"), "{:?}", r.member_id);
    r.member_id.to_string()
}

/// Lets spawned tasks run up to their next wait.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

fn sync_req(
    group: &str,
    member: &str,
    generation: i32,
    assignments: &[(&str, &str)],
) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(gid(group))
        .with_member_id(sb(member))
        .with_generation_id(generation)
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(sb(m))
                        .with_assignment(Bytes::from(a.to_string()))
                })
                .collect(),
        )
}

fn spawn_sync(
    c: &Arc<GroupCoordinator>,
    req: SyncGroupRequest,
    v: i16,
) -> JoinHandle<SyncGroupResponse> {
    let c = Arc::clone(c);
    tokio::spawn(async move { wire(c.sync_group(req, v).await, v) })
}

async fn heartbeat(c: &GroupCoordinator, group: &str, member: &str, generation: i32) -> i16 {
    let req = HeartbeatRequest::default()
        .with_group_id(gid(group))
        .with_member_id(sb(member))
        .with_generation_id(generation);
    wire(c.heartbeat(req, 4).await, 4).error_code
}

async fn describe(c: &GroupCoordinator, group: &str, v: i16) -> DescribeGroupsResponse {
    let req = DescribeGroupsRequest::default().with_groups(vec![gid(group)]);
    wire(c.describe_groups(req, v).await, v)
}

async fn state_of(c: &GroupCoordinator, group: &str) -> String {
    describe(c, group, 5).await.groups[0]
        .group_state
        .to_string()
}

/// A single member joins (v5, with the MEMBER_ID_REQUIRED round trip) and syncs: Stable, gen 1.
async fn stable_single(c: &Arc<GroupCoordinator>, group: &str) -> String {
    let id = member_id_for(c, group).await;
    let r = join(c, join_req(group, &id, RANGE), 5).await;
    assert_eq!(r.error_code, NONE);
    assert_eq!(r.generation_id, 1);
    assert_eq!(r.leader.as_str(), id);
    let s = wire(
        c.sync_group(sync_req(group, &id, 1, &[(&id, "a0")]), 5)
            .await,
        5,
    );
    assert_eq!(s.error_code, NONE);
    assert_eq!(s.assignment.as_ref(), b"a0");
    id
}

/// Two members in generation 2, both synced. Returns (leader, follower).
async fn stable_pair(c: &Arc<GroupCoordinator>, group: &str) -> (String, String) {
    let a = stable_single(c, group).await;
    let b = member_id_for(c, group).await;
    let jb = spawn_join(c, join_req(group, &b, RANGE), 5);
    settle().await;
    assert_eq!(
        heartbeat(c, group, &a, 1).await,
        err(ResponseError::RebalanceInProgress)
    );
    let ja = join(c, join_req(group, &a, RANGE), 5).await;
    let jb = jb.await.expect("join b");
    assert_eq!((ja.generation_id, jb.generation_id), (2, 2));
    let sb_ = spawn_sync(c, sync_req(group, &b, 2, &[]), 5);
    let sa = wire(
        c.sync_group(sync_req(group, &a, 2, &[(&a, "A"), (&b, "B")]), 5)
            .await,
        5,
    );
    assert_eq!(sa.error_code, NONE);
    assert_eq!(sb_.await.expect("sync b").assignment.as_ref(), b"B");
    (a, b)
}

#[tokio::test(start_paused = true)]
async fn two_members_rejoin_promptly_without_waiting_for_timeouts() {
    let f = fixture();
    let t0 = Instant::now();
    let a = stable_single(&f.c, "g").await;
    // B joins a Stable group: a rebalance starts, B's JoinGroup is parked.
    let b = member_id_for(&f.c, "g").await;
    let jb = spawn_join(&f.c, join_req("g", &b, RANGE), 5);
    settle().await;
    assert!(!jb.is_finished(), "B must wait for A to rejoin");
    assert_eq!(state_of(&f.c, "g").await, "PreparingRebalance");
    assert_eq!(
        heartbeat(&f.c, "g", &a, 1).await,
        err(ResponseError::RebalanceInProgress)
    );
    // A rejoins (with v7): the join phase completes at once for both.
    let ja = join(&f.c, join_req("g", &a, RANGE), 7).await;
    let jb = jb.await.expect("join b");
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "joined after {:?}, session timeout is {SESSION_MS} ms",
        t0.elapsed()
    );
    assert_eq!((ja.error_code, jb.error_code), (NONE, NONE));
    assert_eq!((ja.generation_id, jb.generation_id), (2, 2));
    assert_eq!(ja.leader.as_str(), a, "the first member stays leader");
    assert_eq!(jb.leader.as_str(), a);
    assert_eq!(ja.members.len(), 2, "the leader gets every member");
    assert!(jb.members.is_empty(), "followers get no member list");
    assert_eq!(ja.protocol_name.as_deref(), Some("range"));
    assert_eq!(
        ja.protocol_type.as_deref(),
        Some("consumer"),
        "v7+ carries the protocol type"
    );
    assert_eq!(jb.protocol_type, None, "v5 has no protocol type");
    assert_eq!(state_of(&f.c, "g").await, "CompletingRebalance");
}

#[tokio::test(start_paused = true)]
async fn three_members_join_together_and_followers_wait_for_the_leader_sync() {
    let f = fixture();
    let t0 = Instant::now();
    let ids = [
        member_id_for(&f.c, "g").await,
        member_id_for(&f.c, "g").await,
        member_id_for(&f.c, "g").await,
    ];
    let joins: Vec<_> = ids
        .iter()
        .map(|id| spawn_join(&f.c, join_req("g", id, RANGE), 5))
        .collect();
    let mut responses = Vec::new();
    for j in joins {
        responses.push(j.await.expect("join"));
    }
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    let leader = responses[0].leader.to_string();
    assert!(
        responses
            .iter()
            .all(|r| r.error_code == NONE && r.generation_id == 1)
    );
    assert!(responses.iter().all(|r| r.leader.as_str() == leader));
    assert_eq!(
        responses.iter().filter(|r| !r.members.is_empty()).count(),
        1
    );
    let followers: Vec<&String> = ids.iter().filter(|id| **id != leader).collect();
    assert_eq!(followers.len(), 2);

    let waiting: Vec<_> = followers
        .iter()
        .map(|id| spawn_sync(&f.c, sync_req("g", id, 1, &[]), 3))
        .collect();
    settle().await;
    assert!(
        waiting.iter().all(|h| !h.is_finished()),
        "followers wait for the leader"
    );
    let plan: Vec<(&str, String)> = ids
        .iter()
        .map(|id| (id.as_str(), format!("for-{id}")))
        .collect();
    let plan_ref: Vec<(&str, &str)> = plan.iter().map(|(m, a)| (*m, a.as_str())).collect();
    let s = wire(
        f.c.sync_group(sync_req("g", &leader, 1, &plan_ref), 3)
            .await,
        3,
    );
    assert_eq!(s.assignment.as_ref(), format!("for-{leader}").as_bytes());
    for (h, id) in waiting.into_iter().zip(followers) {
        let r = h.await.expect("sync");
        assert_eq!(r.error_code, NONE);
        assert_eq!(r.assignment.as_ref(), format!("for-{id}").as_bytes());
    }
    assert_eq!(state_of(&f.c, "g").await, "Stable");
    // A SyncGroup in Stable returns the member's assignment again.
    let again = wire(f.c.sync_group(sync_req("g", &ids[1], 1, &[]), 0).await, 0);
    assert_eq!(
        again.assignment.as_ref(),
        format!("for-{}", ids[1]).as_bytes()
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_member_rebalances_a_stable_group_and_unchanged_followers_get_the_current_generation()
{
    let f = fixture();
    let (a, b) = stable_pair(&f.c, "g").await;
    assert_eq!(state_of(&f.c, "g").await, "Stable");
    // A follower rejoining unchanged in Stable gets the current generation back, no rebalance.
    let again = join(&f.c, join_req("g", &b, RANGE), 5).await;
    assert_eq!((again.error_code, again.generation_id), (NONE, 2));
    assert_eq!(state_of(&f.c, "g").await, "Stable");
    // A third member: both others must rejoin; the phase ends when they do.
    let t0 = Instant::now();
    let c3 = member_id_for(&f.c, "g").await;
    let j3 = spawn_join(&f.c, join_req("g", &c3, RANGE), 5);
    settle().await;
    assert_eq!(
        heartbeat(&f.c, "g", &b, 2).await,
        err(ResponseError::RebalanceInProgress)
    );
    let jb = spawn_join(&f.c, join_req("g", &b, RANGE), 5);
    settle().await;
    assert!(
        !jb.is_finished() && !j3.is_finished(),
        "A has not rejoined yet"
    );
    let ja = join(&f.c, join_req("g", &a, RANGE), 5).await;
    let (jb, j3) = (jb.await.expect("b"), j3.await.expect("c"));
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(
        [ja.generation_id, jb.generation_id, j3.generation_id],
        [3, 3, 3]
    );
    assert_eq!(ja.members.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_silent_member_expires_after_its_session_timeout() {
    let f = fixture();
    let (a, b) = stable_pair(&f.c, "g").await;
    let t0 = Instant::now();
    // A heartbeats every 3 s, B is silent.
    let mut removed_after = None;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let code = heartbeat(&f.c, "g", &a, 2).await;
        if code == err(ResponseError::RebalanceInProgress) {
            removed_after = Some(t0.elapsed());
            break;
        }
        assert_eq!(code, NONE);
    }
    let after = removed_after.expect("B expired");
    assert!(
        after >= Duration::from_millis(10_000) && after <= Duration::from_millis(12_000),
        "{after:?}"
    );
    assert_eq!(
        heartbeat(&f.c, "g", &b, 2).await,
        err(ResponseError::UnknownMemberId)
    );
    let ja = join(&f.c, join_req("g", &a, RANGE), 5).await;
    assert_eq!((ja.generation_id, ja.members.len()), (3, 1));
}

#[tokio::test(start_paused = true)]
async fn the_rebalance_timeout_removes_a_member_that_does_not_rejoin() {
    let f = fixture();
    let (a, b) = stable_pair(&f.c, "g").await;
    let t0 = Instant::now();
    let c3 = member_id_for(&f.c, "g").await;
    let j3 = spawn_join(&f.c, join_req("g", &c3, RANGE), 5);
    let ja = spawn_join(&f.c, join_req("g", &a, RANGE), 5);
    // B keeps heartbeating (so its session does not expire) but never rejoins.
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        if ja.is_finished() {
            break;
        }
        assert_eq!(
            heartbeat(&f.c, "g", &b, 2).await,
            err(ResponseError::RebalanceInProgress)
        );
    }
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_millis(20_000) && elapsed < Duration::from_millis(24_000),
        "{elapsed:?}"
    );
    let (ja, j3) = (ja.await.expect("a"), j3.await.expect("c"));
    assert_eq!((ja.generation_id, j3.generation_id), (3, 3));
    assert_eq!(ja.members.len(), 2, "B was removed");
    assert!(ja.members.iter().all(|m| m.member_id.as_str() != b));
    assert_eq!(
        heartbeat(&f.c, "g", &b, 3).await,
        err(ResponseError::UnknownMemberId)
    );
}

#[tokio::test(start_paused = true)]
async fn leave_group_single_and_batched() {
    let f = fixture();
    let (a, b) = stable_pair(&f.c, "g").await;
    // v0: B leaves; A must rejoin, alone.
    let leave = LeaveGroupRequest::default()
        .with_group_id(gid("g"))
        .with_member_id(sb(&b));
    let r: LeaveGroupResponse = wire(f.c.leave_group(leave, 0).await, 0);
    assert_eq!(r.error_code, NONE);
    assert_eq!(
        heartbeat(&f.c, "g", &a, 2).await,
        err(ResponseError::RebalanceInProgress)
    );
    let ja = join(&f.c, join_req("g", &a, RANGE), 5).await;
    assert_eq!((ja.generation_id, ja.members.len()), (3, 1));
    let leave = LeaveGroupRequest::default()
        .with_group_id(gid("g"))
        .with_member_id(sb(&b));
    let r: LeaveGroupResponse = wire(f.c.leave_group(leave, 1).await, 1);
    assert_eq!(r.error_code, err(ResponseError::UnknownMemberId));

    // v3: a batch of two members and an unknown one, each answered separately.
    let (c, d) = stable_pair(&f.c, "h").await;
    let leave = LeaveGroupRequest::default()
        .with_group_id(gid("h"))
        .with_members(
            [c.as_str(), "nobody", d.as_str()]
                .iter()
                .map(|m| MemberIdentity::default().with_member_id(sb(m)))
                .collect(),
        );
    let r: LeaveGroupResponse = wire(f.c.leave_group(leave, 3).await, 3);
    assert_eq!(r.error_code, NONE);
    let codes: Vec<i16> = r.members.iter().map(|m| m.error_code).collect();
    assert_eq!(codes, [NONE, err(ResponseError::UnknownMemberId), NONE]);
    assert_eq!(r.members[1].member_id.as_str(), "nobody");
    assert_eq!(state_of(&f.c, "h").await, "Empty");
    // A group that does not exist.
    let leave = LeaveGroupRequest::default()
        .with_group_id(gid("none"))
        .with_member_id(sb("x"));
    let r: LeaveGroupResponse = wire(f.c.leave_group(leave, 2).await, 2);
    assert_eq!(r.error_code, err(ResponseError::UnknownMemberId));
}

#[tokio::test(start_paused = true)]
async fn member_id_required_round_trip_and_old_versions_without_it() {
    let f = fixture();
    // v4+: an empty member id gets MEMBER_ID_REQUIRED with an id to use.
    let r = join(&f.c, join_req("g", "", RANGE), 4).await;
    assert_eq!(r.error_code, err(ResponseError::MemberIdRequired));
    let id = r.member_id.to_string();
    assert!(
        id.starts_with("client-") && id.len() > "client-".len() + 30,
        "{id}"
    );
    assert_eq!(r.generation_id, -1);
    let r = join(&f.c, join_req("g", &id, RANGE), 4).await;
    assert_eq!((r.error_code, r.generation_id), (NONE, 1));
    assert_eq!(r.member_id.as_str(), id);
    // A made-up member id is refused.
    let r = join(&f.c, join_req("g", "client-made-up", RANGE), 4).await;
    assert_eq!(r.error_code, err(ResponseError::UnknownMemberId));
    let r = join(&f.c, join_req("other", "client-made-up", RANGE), 4).await;
    assert_eq!(r.error_code, err(ResponseError::UnknownMemberId));
    // v0–3: joined directly. v0 responses have no protocol type; protocol name is never null.
    let r = join(&f.c, join_req("old", "", RANGE), 0).await;
    assert_eq!((r.error_code, r.generation_id), (NONE, 1));
    assert!(r.member_id.starts_with("client-"));
    assert_eq!(r.protocol_type, None);
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    // An unused issued id expires after the session timeout and stops blocking the join phase.
    let t0 = Instant::now();
    let lost = member_id_for(&f.c, "p").await;
    let id = member_id_for(&f.c, "p").await;
    let r = join(&f.c, join_req("p", &id, RANGE), 5).await;
    assert_eq!((r.error_code, r.generation_id), (NONE, 1));
    assert!(
        t0.elapsed() >= Duration::from_millis(10_000),
        "{:?}",
        t0.elapsed()
    );
    let r = join(&f.c, join_req("p", &lost, RANGE), 5).await;
    assert_eq!(r.error_code, err(ResponseError::UnknownMemberId));
}

#[tokio::test(start_paused = true)]
async fn illegal_generation_and_unknown_member() {
    let f = fixture();
    let (a, _b) = stable_pair(&f.c, "g").await;
    assert_eq!(heartbeat(&f.c, "g", &a, 2).await, NONE);
    assert_eq!(
        heartbeat(&f.c, "g", &a, 1).await,
        err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        heartbeat(&f.c, "g", "ghost", 2).await,
        err(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        heartbeat(&f.c, "nogroup", &a, 2).await,
        err(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        heartbeat(&f.c, "", &a, 2).await,
        err(ResponseError::InvalidGroupId)
    );
    let s = wire(f.c.sync_group(sync_req("g", &a, 7, &[]), 5).await, 5);
    assert_eq!(s.error_code, err(ResponseError::IllegalGeneration));
    let s = wire(f.c.sync_group(sync_req("g", "ghost", 2, &[]), 5).await, 5);
    assert_eq!(s.error_code, err(ResponseError::UnknownMemberId));
    // v5 SyncGroup with a protocol name that is not the group's.
    let req = sync_req("g", &a, 2, &[]).with_protocol_name(Some(sb("roundrobin")));
    let s = wire(f.c.sync_group(req, 5).await, 5);
    assert_eq!(s.error_code, err(ResponseError::InconsistentGroupProtocol));

    // Offset commits: stale generation, unknown member, generation -1 with live members.
    let commit =
        |member: &str, generation: i32| commit_req("g", member, generation, "t", &[(0, 5)]);
    assert_eq!(
        commit_codes(&f.c, commit(&a, 1), 8).await,
        [err(ResponseError::IllegalGeneration)]
    );
    assert_eq!(
        commit_codes(&f.c, commit("ghost", 2), 8).await,
        [err(ResponseError::UnknownMemberId)]
    );
    assert_eq!(
        commit_codes(&f.c, commit("", -1), 8).await,
        [err(ResponseError::UnknownMemberId)]
    );
    assert_eq!(commit_codes(&f.c, commit(&a, 2), 8).await, [NONE]);
    // No members: a simple consumer (generation -1) may commit, a group member may not.
    assert_eq!(
        commit_codes(&f.c, commit_req("free", "", -1, "t", &[(0, 1)]), 2).await,
        [NONE]
    );
    assert_eq!(
        commit_codes(&f.c, commit_req("free", "m", 3, "t", &[(0, 1)]), 2).await,
        [err(ResponseError::IllegalGeneration)]
    );
}

#[tokio::test(start_paused = true)]
async fn protocol_selection_and_malformed_joins() {
    let f = fixture();
    // Votes: A and B prefer roundrobin, C prefers range -> roundrobin.
    let c = &f.c;
    let a_protocols: &[(&str, &str)] = &[("roundrobin", "ra"), ("range", "ga")];
    let a = join(c, join_req("g", "", a_protocols), 3).await;
    let a = a.member_id.to_string();
    let s = wire(c.sync_group(sync_req("g", &a, 1, &[]), 3).await, 3);
    assert_eq!(s.error_code, NONE);
    let jb = spawn_join(
        c,
        join_req(
            "g",
            "",
            &[("sticky", "s"), ("roundrobin", "rb"), ("range", "gb")],
        ),
        3,
    );
    let jc = spawn_join(
        c,
        join_req("g", "", &[("range", "gc"), ("roundrobin", "rc")]),
        3,
    );
    settle().await;
    // The leader rejoins (as it would after a heartbeat said REBALANCE_IN_PROGRESS).
    let ja = join(c, join_req("g", &a, a_protocols), 3).await;
    let (jb, jc) = (jb.await.expect("b"), jc.await.expect("c"));
    assert_eq!(ja.protocol_name.as_deref(), Some("roundrobin"));
    assert_eq!(jc.protocol_name.as_deref(), Some("roundrobin"));
    assert_eq!(
        (ja.generation_id, jb.generation_id, jc.generation_id),
        (2, 2, 2)
    );
    let mut metas: Vec<&[u8]> = ja.members.iter().map(|m| m.metadata.as_ref()).collect();
    metas.sort();
    assert_eq!(
        metas,
        [b"ra".as_ref(), b"rb", b"rc"],
        "the leader sees the chosen protocol's metadata"
    );

    // A tie goes to the leader's order.
    let x = join(c, join_req("tie", "", &[("p1", ""), ("p2", "")]), 3).await;
    let x = x.member_id.to_string();
    wire(c.sync_group(sync_req("tie", &x, 1, &[]), 3).await, 3);
    let jy = spawn_join(c, join_req("tie", "", &[("p2", ""), ("p1", "")]), 3);
    settle().await;
    let jx = join(c, join_req("tie", &x, &[("p1", ""), ("p2", "")]), 3).await;
    assert_eq!(jx.protocol_name.as_deref(), Some("p1"));
    assert_eq!(jy.await.expect("y").protocol_name.as_deref(), Some("p1"));

    // No protocol in common, another protocol type, no protocols, empty group id, bad timeouts.
    let r = join(&f.c, join_req("g", "", &[("other", "")]), 3).await;
    assert_eq!(r.error_code, err(ResponseError::InconsistentGroupProtocol));
    let r = join(
        &f.c,
        join_req("g", "", RANGE).with_protocol_type(sb("connect")),
        3,
    )
    .await;
    assert_eq!(r.error_code, err(ResponseError::InconsistentGroupProtocol));
    let r = join(&f.c, join_req("n", "", &[]), 3).await;
    assert_eq!(r.error_code, err(ResponseError::InconsistentGroupProtocol));
    let r = join(&f.c, join_req("", "", RANGE), 9).await;
    assert_eq!(r.error_code, err(ResponseError::InvalidGroupId));
    assert_eq!(
        r.protocol_name, None,
        "v7+ error responses have a null protocol name"
    );
    let r = join(
        &f.c,
        join_req("n", "", RANGE).with_session_timeout_ms(10),
        3,
    )
    .await;
    assert_eq!(r.error_code, err(ResponseError::InvalidSessionTimeout));
    let r = join(
        &f.c,
        join_req("n", "", RANGE).with_session_timeout_ms(-5),
        3,
    )
    .await;
    assert_eq!(r.error_code, err(ResponseError::InvalidSessionTimeout));
}

fn commit_req(
    group: &str,
    member: &str,
    generation: i32,
    topic: &str,
    offsets: &[(i32, i64)],
) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_member_id(sb(member))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(sb(topic)))
                .with_partitions(
                    offsets
                        .iter()
                        .map(|(p, o)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(*o)
                                .with_committed_metadata(Some(sb(&format!("meta{o}"))))
                        })
                        .collect(),
                ),
        ])
}

async fn commit_codes(c: &GroupCoordinator, req: OffsetCommitRequest, v: i16) -> Vec<i16> {
    let r: OffsetCommitResponse = wire(c.offset_commit(req, v).await, v);
    r.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

fn fetch_req_v7(group: &str, topics: Option<&[(&str, &[i32])]>) -> OffsetFetchRequest {
    OffsetFetchRequest::default()
        .with_group_id(gid(group))
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(sb(t)))
                        .with_partition_indexes(ps.to_vec())
                })
                .collect()
        }))
}

/// (topic, partition, offset, metadata, error) of a v1–7 OffsetFetch response.
fn fetched(r: &OffsetFetchResponse) -> Vec<(String, i32, i64, String, i16)> {
    r.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    p.metadata.as_deref().unwrap_or("<null>").to_owned(),
                    p.error_code,
                )
            })
        })
        .collect()
}

#[tokio::test]
async fn offsets_committed_then_fetched() {
    let f = fixture();
    assert_eq!(
        commit_codes(&f.c, commit_req("g", "", -1, "t", &[(0, 5), (1, 7)]), 8).await,
        [NONE, NONE]
    );
    assert_eq!(
        commit_codes(&f.c, commit_req("g", "", -1, "u", &[(0, 3)]), 8).await,
        [NONE]
    );
    // Unknown topic, partition out of range, metadata too large, in one request.
    let mut req = commit_req("g", "", -1, "t", &[(9, 1), (-1, 1), (2, 11)]);
    req.topics[0].partitions[2].committed_metadata = Some(sb(&"x".repeat(5000)));
    req.topics
        .push(commit_req("g", "", -1, "nope", &[(0, 1)]).topics.remove(0));
    let codes = commit_codes(&f.c, req, 8).await;
    let unknown = err(ResponseError::UnknownTopicOrPartition);
    assert_eq!(
        codes,
        [
            unknown,
            unknown,
            err(ResponseError::OffsetMetadataTooLarge),
            unknown
        ]
    );
    let req = commit_req("", "", -1, "t", &[(0, 1)]);
    assert_eq!(
        commit_codes(&f.c, req, 3).await,
        [err(ResponseError::InvalidGroupId)]
    );

    // Specific partitions, one without a commit, and a topic that does not exist: offset -1.
    let r = wire(
        f.c.offset_fetch(
            fetch_req_v7("g", Some(&[("t", &[0, 1, 3]), ("nope", &[0])])),
            7,
        )
        .await,
        7,
    );
    assert_eq!(r.error_code, NONE);
    assert_eq!(
        fetched(&r),
        [
            ("t".to_owned(), 0, 5, "meta5".to_owned(), NONE),
            ("t".to_owned(), 1, 7, "meta7".to_owned(), NONE),
            ("t".to_owned(), 3, -1, String::new(), NONE),
            ("nope".to_owned(), 0, -1, String::new(), NONE),
        ]
    );
    // Null topics: everything of the group.
    let r = wire(f.c.offset_fetch(fetch_req_v7("g", None), 2).await, 2);
    let all: Vec<(String, i32, i64)> = fetched(&r)
        .into_iter()
        .map(|(t, p, o, _, _)| (t, p, o))
        .collect();
    assert_eq!(
        all,
        [
            ("t".to_owned(), 0, 5),
            ("t".to_owned(), 1, 7),
            ("u".to_owned(), 0, 3)
        ]
    );
    assert_eq!(f.c.committed_offsets("g"), all);
    assert_eq!(f.c.committed_offsets("unknown"), []);
    // A newer commit wins.
    assert_eq!(
        commit_codes(&f.c, commit_req("g", "", -1, "t", &[(0, 50)]), 2).await,
        [NONE]
    );
    assert_eq!(f.c.committed("g", "t", 0).map(|c| c.offset), Some(50));
    assert_eq!(f.c.groups(), ["g"]);
}

#[tokio::test]
async fn offset_fetch_v8_several_groups_and_v1_errors_per_partition() {
    let f = fixture();
    commit_codes(&f.c, commit_req("g1", "", -1, "t", &[(0, 10)]), 8).await;
    commit_codes(&f.c, commit_req("g2", "", -1, "t", &[(1, 20)]), 8).await;
    let req = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default()
            .with_group_id(gid("g1"))
            .with_topics(Some(vec![
                OffsetFetchRequestTopics::default()
                    .with_name(TopicName(sb("t")))
                    .with_partition_indexes(vec![0, 1]),
            ])),
        OffsetFetchRequestGroup::default()
            .with_group_id(gid("g2"))
            .with_topics(None),
        OffsetFetchRequestGroup::default()
            .with_group_id(gid(""))
            .with_topics(None),
    ]);
    let r = wire(f.c.offset_fetch(req, 8).await, 8);
    assert_eq!(r.groups.len(), 3);
    let g1: Vec<(i32, i64)> = r.groups[0].topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset))
        .collect();
    assert_eq!(g1, [(0, 10), (1, -1)]);
    assert_eq!(r.groups[1].topics.len(), 1);
    assert_eq!(r.groups[1].topics[0].partitions[0].committed_offset, 20);
    assert_eq!(r.groups[2].error_code, err(ResponseError::InvalidGroupId));
    assert!(r.topics.is_empty());

    // v1: same data, the v1 layout; a group-level error appears on each partition.
    let r = wire(
        f.c.offset_fetch(fetch_req_v7("g1", Some(&[("t", &[0])])), 1)
            .await,
        1,
    );
    assert_eq!(
        fetched(&r),
        [("t".to_owned(), 0, 10, "meta10".to_owned(), NONE)]
    );
    let r = wire(
        f.c.offset_fetch(fetch_req_v7("", Some(&[("t", &[0, 1])])), 1)
            .await,
        1,
    );
    let codes: Vec<i16> = fetched(&r).iter().map(|x| x.4).collect();
    assert_eq!(codes, [err(ResponseError::InvalidGroupId); 2]);
    let r = wire(
        f.c.offset_fetch(fetch_req_v7("", Some(&[("t", &[0])])), 3)
            .await,
        3,
    );
    assert_eq!(r.error_code, err(ResponseError::InvalidGroupId));
}

#[tokio::test]
async fn offsets_survive_close_and_reopen() {
    let mut f = fixture();
    commit_codes(&f.c, commit_req("g", "", -1, "t", &[(0, 5), (3, 9)]), 8).await;
    f.c.close().expect("close");
    // Closed: requests are refused.
    assert_eq!(
        commit_codes(&f.c, commit_req("g", "", -1, "t", &[(0, 6)]), 8).await,
        [err(ResponseError::NotCoordinator)]
    );
    f.reopen();
    assert_eq!(
        f.c.committed_offsets("g"),
        [("t".to_owned(), 0, 5), ("t".to_owned(), 3, 9)]
    );
    assert_eq!(f.c.groups(), ["g"]);
    let r: ListGroupsResponse = wire(f.c.list_groups(ListGroupsRequest::default(), 4).await, 4);
    let listed: Vec<(String, String)> = r
        .groups
        .iter()
        .map(|g| (g.group_id.0.to_string(), g.group_state.to_string()))
        .collect();
    assert_eq!(listed, [("g".to_owned(), "Empty".to_owned())]);
    assert_eq!(state_of(&f.c, "g").await, "Empty");
    // Without close (a crash): everything acknowledged is there too.
    commit_codes(&f.c, commit_req("g", "", -1, "t", &[(0, 6)]), 8).await;
    f.reopen();
    assert_eq!(
        f.c.committed("g", "t", 0).map(|c| (c.offset, c.metadata)),
        Some((6, "meta6".to_owned()))
    );
}

#[tokio::test]
async fn a_torn_tail_of_the_offsets_log_is_ignored() {
    let mut f = fixture();
    commit_codes(&f.c, commit_req("g", "", -1, "t", &[(0, 5)]), 8).await;
    commit_codes(&f.c, commit_req("g", "", -1, "t", &[(1, 6)]), 8).await;
    let log = f.dir.path().join(OFFSETS_DIR).join("offsets.log");
    let good_len = std::fs::metadata(&log).expect("log").len();
    assert!(good_len > 0);
    // A crash in the middle of a third append: a header promising more than was written.
    let mut file = OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open log");
    file.write_all(&[0, 0, 0, 60, 1, 2, 3, 4, 1, 0, 0])
        .expect("write");
    drop(file);
    f.reopen();
    assert_eq!(
        f.c.committed_offsets("g"),
        [("t".to_owned(), 0, 5), ("t".to_owned(), 1, 6)]
    );
    assert_eq!(
        std::fs::metadata(&log).expect("log").len(),
        good_len,
        "torn tail cut off"
    );
    // The store carries on after the cut, and the next commit survives a reopen.
    commit_codes(&f.c, commit_req("g", "", -1, "t", &[(2, 7)]), 8).await;
    f.reopen();
    assert_eq!(f.c.committed("g", "t", 2).map(|c| c.offset), Some(7));

    // A damaged (bit-flipped) last entry is dropped, earlier ones kept.
    let bytes = std::fs::read(&log).expect("read");
    let mut damaged = bytes.clone();
    let last = damaged.len() - 3;
    damaged[last] ^= 0xff;
    std::fs::write(&log, &damaged).expect("write");
    f.reopen();
    assert_eq!(f.c.committed("g", "t", 1).map(|c| c.offset), Some(6));
    assert_eq!(f.c.committed("g", "t", 2), None);
}

#[tokio::test]
async fn compaction_keeps_the_latest_offsets() {
    let dir = TempDir::new().expect("tempdir");
    let logs = logs(dir.path());
    let small = GroupConfig {
        compact_log_bytes: 300,
        ..config()
    };
    let c = GroupCoordinator::open_with_config(dir.path(), Arc::clone(&logs), small.clone())
        .expect("open");
    for round in 0..40 {
        let group = if round % 2 == 0 { "a" } else { "b" };
        let req = commit_req(group, "", -1, "t", &[(round % 4, i64::from(round))]);
        assert_eq!(commit_codes(&c, req, 8).await, [NONE]);
    }
    let store_dir = dir.path().join(OFFSETS_DIR);
    let log_len = std::fs::metadata(store_dir.join("offsets.log"))
        .expect("log")
        .len();
    assert!(log_len < 300, "log compacted, {log_len} bytes left");
    assert!(store_dir.join("offsets.snapshot").exists());
    let expected_a = vec![("t".to_owned(), 0, 36), ("t".to_owned(), 2, 38)];
    let expected_b = vec![("t".to_owned(), 1, 37), ("t".to_owned(), 3, 39)];
    assert_eq!(c.committed_offsets("a"), expected_a);
    drop(c);
    let c =
        GroupCoordinator::open_with_config(dir.path(), Arc::clone(&logs), small).expect("reopen");
    assert_eq!(c.committed_offsets("a"), expected_a);
    assert_eq!(c.committed_offsets("b"), expected_b);
    // An explicit compaction leaves an empty log and the same offsets.
    c.compact_offsets().expect("compact");
    assert_eq!(
        std::fs::metadata(store_dir.join("offsets.log"))
            .expect("log")
            .len(),
        0
    );
    drop(c);
    let c = GroupCoordinator::open(dir.path(), logs).expect("reopen");
    assert_eq!(c.committed_offsets("b"), expected_b);
}

#[tokio::test]
async fn concurrent_commits_are_all_acknowledged_and_durable() {
    let f = fixture();
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let c = Arc::clone(&f.c);
            tokio::spawn(async move {
                let req = commit_req(&format!("g{i}"), "", -1, "t", &[(0, i64::from(i))]);
                commit_codes(&c, req, 8).await
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.await.expect("commit"), [NONE]);
    }
    let fsyncs = f.c.offsets_fsync_count();
    assert!((1..=16).contains(&fsyncs), "{fsyncs}");
    let c = GroupCoordinator::open_with_config(f.dir.path(), Arc::clone(&f.logs), config())
        .expect("reopen");
    for i in 0..16 {
        assert_eq!(
            c.committed(&format!("g{i}"), "t", 0).map(|c| c.offset),
            Some(i64::from(i))
        );
    }
}

#[tokio::test(start_paused = true)]
async fn list_and_describe_groups_across_versions() {
    let f = fixture();
    let (a, b) = stable_pair(&f.c, "stable").await;
    let _ = stable_single(&f.c, "other").await;
    let x = member_id_for(&f.c, "other").await;
    let _parked = spawn_join(&f.c, join_req("other", &x, RANGE), 5);
    settle().await;
    commit_codes(&f.c, commit_req("offsets-only", "", -1, "t", &[(0, 1)]), 8).await;

    let all: ListGroupsResponse = wire(f.c.list_groups(ListGroupsRequest::default(), 0).await, 0);
    let ids: Vec<String> = all
        .groups
        .iter()
        .map(|g| g.group_id.0.to_string())
        .collect();
    assert_eq!(ids, ["offsets-only", "other", "stable"]);
    assert!(
        all.groups.iter().all(|g| g.group_state.is_empty()),
        "no state before v4"
    );
    let filtered = ListGroupsRequest::default().with_states_filter(vec![sb("stable"), sb("Empty")]);
    let r: ListGroupsResponse = wire(f.c.list_groups(filtered, 4).await, 4);
    let got: Vec<(String, String, String)> = r
        .groups
        .iter()
        .map(|g| {
            (
                g.group_id.0.to_string(),
                g.group_state.to_string(),
                g.protocol_type.to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("offsets-only".to_owned(), "Empty".to_owned(), String::new()),
            (
                "stable".to_owned(),
                "Stable".to_owned(),
                "consumer".to_owned()
            ),
        ]
    );

    let d = describe(&f.c, "stable", 5).await;
    let g = &d.groups[0];
    assert_eq!(
        (
            g.error_code,
            g.group_state.as_str(),
            g.protocol_data.as_str()
        ),
        (NONE, "Stable", "range")
    );
    let members: Vec<(String, Bytes, String)> = g
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.to_string(),
                m.member_assignment.clone(),
                m.client_host.to_string(),
            )
        })
        .collect();
    assert_eq!(
        members,
        [
            (a, Bytes::from_static(b"A"), "/127.0.0.1".to_owned()),
            (b, Bytes::from_static(b"B"), "/127.0.0.1".to_owned()),
        ]
    );
    // Rebalancing: members listed without metadata; unknown groups are Dead without error.
    let d = describe(&f.c, "other", 0).await;
    assert_eq!(d.groups[0].group_state.as_str(), "PreparingRebalance");
    assert!(
        d.groups[0]
            .members
            .iter()
            .all(|m| m.member_metadata.is_empty())
    );
    let d = describe(&f.c, "missing", 3).await;
    assert_eq!(
        (d.groups[0].error_code, d.groups[0].group_state.as_str()),
        (NONE, "Dead")
    );
    let d = describe(&f.c, "", 5).await;
    assert_eq!(d.groups[0].error_code, err(ResponseError::InvalidGroupId));
}

#[tokio::test(start_paused = true)]
async fn a_parked_join_does_not_block_other_groups() {
    let f = fixture();
    let (_a, _b) = stable_pair(&f.c, "busy").await;
    let x = member_id_for(&f.c, "busy").await;
    let parked = spawn_join(&f.c, join_req("busy", &x, RANGE), 5);
    settle().await;
    assert!(!parked.is_finished());
    let t0 = Instant::now();
    let id = stable_single(&f.c, "free").await;
    assert_eq!(heartbeat(&f.c, "free", &id, 1).await, NONE);
    assert_eq!(
        commit_codes(&f.c, commit_req("free", &id, 1, "t", &[(0, 3)]), 8).await,
        [NONE]
    );
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(!parked.is_finished());
}

#[tokio::test(start_paused = true)]
async fn initial_rebalance_delay_collects_members_of_an_empty_group() {
    let f = fixture_with(GroupConfig {
        initial_rebalance_delay: Duration::from_secs(3),
        ..GroupConfig::default()
    });
    let t0 = Instant::now();
    let ja = spawn_join(&f.c, join_req("g", "", RANGE), 3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let jb = spawn_join(&f.c, join_req("g", "", RANGE), 3);
    let (ja, jb) = (ja.await.expect("a"), jb.await.expect("b"));
    assert_eq!(
        (ja.generation_id, jb.generation_id),
        (1, 1),
        "one generation for both"
    );
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_secs(5) && elapsed < Duration::from_secs(6),
        "{elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn static_members_are_accepted_and_fenced() {
    let f = fixture();
    let req = join_req("g", "", RANGE).with_group_instance_id(Some(sb("host-1")));
    let r = join(&f.c, req.clone(), 5).await;
    assert_eq!(
        (r.error_code, r.generation_id),
        (NONE, 1),
        "static members skip MEMBER_ID_REQUIRED"
    );
    let old = r.member_id.to_string();
    assert!(old.starts_with("host-1-"));
    assert_eq!(r.members[0].group_instance_id.as_deref(), Some("host-1"));
    // The same instance restarts: it replaces the old member id, which is then fenced.
    let r = join(&f.c, req, 5).await;
    assert_eq!(r.error_code, NONE);
    let hb = HeartbeatRequest::default()
        .with_group_id(gid("g"))
        .with_member_id(sb(&old))
        .with_generation_id(r.generation_id)
        .with_group_instance_id(Some(sb("host-1")));
    assert_eq!(
        wire(f.c.heartbeat(hb, 3).await, 3).error_code,
        err(ResponseError::FencedInstanceId)
    );
}

#[tokio::test(start_paused = true)]
async fn close_answers_parked_requests() {
    let f = fixture();
    let (_a, _b) = stable_pair(&f.c, "g").await;
    let x = member_id_for(&f.c, "g").await;
    let parked = spawn_join(&f.c, join_req("g", &x, RANGE), 5);
    settle().await;
    f.c.close().expect("close");
    assert_eq!(
        parked.await.expect("join").error_code,
        err(ResponseError::NotCoordinator)
    );
}

#[test]
fn supported_versions_table() {
    let keys: Vec<(i16, i16, i16)> = SUPPORTED.to_vec();
    assert_eq!(
        keys,
        [
            (8, 2, 8),
            (9, 1, 8),
            (11, 0, 9),
            (12, 0, 4),
            (13, 0, 5),
            (14, 0, 5),
            (15, 0, 5),
            (16, 0, 4)
        ]
    );
    assert!(is_supported(Api::JoinGroup, 9) && !is_supported(Api::JoinGroup, 10));
    assert!(!is_supported(Api::OffsetCommit, 1) && !is_supported(Api::OffsetFetch, 9));
}

#[tokio::test(start_paused = true)]
async fn members_that_never_sync_are_removed_after_the_rebalance_timeout() {
    let f = fixture();
    let a = member_id_for(&f.c, "g").await;
    let b = member_id_for(&f.c, "g").await;
    let ja = spawn_join(&f.c, join_req("g", &a, RANGE), 5);
    let jb = spawn_join(&f.c, join_req("g", &b, RANGE), 5);
    let (ja, jb) = (ja.await.expect("a"), jb.await.expect("b"));
    let leader = ja.leader.to_string();
    let follower = if leader == a { b } else { a };
    assert_eq!(jb.generation_id, 1);
    let t0 = Instant::now();
    let parked = spawn_sync(&f.c, sync_req("g", &follower, 1, &[]), 5);
    // The leader heartbeats (so its session lives on) but never sends its SyncGroup.
    while !parked.is_finished() {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let code = heartbeat(&f.c, "g", &leader, 1).await;
        assert!(
            code == NONE || code == err(ResponseError::UnknownMemberId),
            "{code}"
        );
    }
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_millis(20_000) && elapsed < Duration::from_millis(24_000),
        "{elapsed:?}"
    );
    let s = parked.await.expect("sync");
    assert_eq!(s.error_code, err(ResponseError::RebalanceInProgress));
    assert_eq!(
        heartbeat(&f.c, "g", &leader, 1).await,
        err(ResponseError::UnknownMemberId)
    );
    let r = join(&f.c, join_req("g", &follower, RANGE), 5).await;
    assert_eq!((r.generation_id, r.leader.as_str()), (2, follower.as_str()));
}
