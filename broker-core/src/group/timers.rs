//! Timer tasks: the rebalance timeout (and initial delay) of a join phase, the rebalance timeout
//! of a sync phase, members' session timeouts and the expiry of member ids handed out with MEMBER_ID_REQUIRED.
//!
//! Each timer is a tokio task holding only a weak reference to the coordinator, taking time from
//! `tokio::time` (so tests drive it with `pause`/`advance`); it re-checks the group under the lock
//! when it wakes, so a stale timer does nothing.

use std::sync::Weak;

use kafka_protocol::ResponseError;
use tokio::time::{Instant, sleep_until};

use super::coordinator::Shared;
use super::state::{Group, GroupState, deliver};

/// Runs `f` on group `group_id` under the lock, with the current time; `None` when the
/// coordinator is gone or the group no longer exists (a stale timer then does nothing).
fn with_group<R>(
    shared: &Weak<Shared>,
    group_id: &str,
    f: impl FnOnce(&Shared, &mut Group, Instant) -> Option<R>,
) -> Option<R> {
    let shared = shared.upgrade()?;
    let now = Instant::now();
    let mut groups = shared.groups.lock();
    let group = groups.get_mut(group_id)?;
    f(&shared, group, now)
}

/// Completes the join phase of rebalance `rebalance_id` once its initial delay has passed (if
/// every member has rejoined) or, at the latest, at its deadline (removing whoever has not).
pub(crate) fn spawn_rebalance_timer(shared: Weak<Shared>, group_id: String, rebalance_id: u64) {
    tokio::spawn(async move {
        loop {
            let wake = with_group(&shared, &group_id, |shared, group, now| {
                let GroupState::PreparingRebalance(p) = &group.state else {
                    return None;
                };
                if p.rebalance_id != rebalance_id {
                    return None;
                }
                let (deadline, not_before) = (p.deadline, p.not_before);
                if now < not_before {
                    return Some(not_before);
                }
                let force = now >= deadline;
                if force {
                    tracing::info!(group = %group_id, "rebalance timeout: removing members that did not rejoin");
                }
                deliver(
                    shared.transition(&group_id, group, |s, m| s.try_complete_join(m, now, force)),
                );
                Some(deadline)
            });
            let Some(wake) = wake else { return };
            sleep_until(wake).await;
        }
    });
}

/// Removes `member_id` once its session times out without a heartbeat, unless it waits in a
/// JoinGroup or SyncGroup.
pub(crate) fn spawn_session_timer(shared: Weak<Shared>, group_id: String, member_id: String) {
    tokio::spawn(async move {
        loop {
            let wake = with_group(&shared, &group_id, |shared, group, now| {
                let waiting = group.state.is_waiting(&member_id);
                let member = group.m.members.get_mut(&member_id)?;
                if now < member.session_deadline {
                    Some(member.session_deadline)
                } else if waiting {
                    member.touch(now);
                    Some(member.session_deadline)
                } else {
                    tracing::info!(group = %group_id, member = %member_id, "session timeout: removing member");
                    let start = shared.rebalance_start(now);
                    deliver(shared.transition(&group_id, group, |s, m| {
                        s.remove_member(m, &member_id, ResponseError::UnknownMemberId, start)
                    }));
                    None
                }
            });
            let Some(wake) = wake else { return };
            sleep_until(wake).await;
        }
    });
}

/// Forgets a member id handed out with MEMBER_ID_REQUIRED if it is not used by `deadline`.
pub(crate) fn spawn_pending_timer(
    shared: Weak<Shared>,
    group_id: String,
    member_id: String,
    deadline: Instant,
) {
    tokio::spawn(async move {
        sleep_until(deadline).await;
        with_group(&shared, &group_id, |shared, group, now| {
            if group.m.pending.get(&member_id).is_some_and(|d| *d <= now) {
                group.m.pending.remove(&member_id);
                deliver(
                    shared.transition(&group_id, group, |s, m| s.try_complete_join(m, now, false)),
                );
            }
            Some(())
        });
    });
}

/// Ends a sync phase that outlives the rebalance timeout: members of `generation` that have not
/// sent their SyncGroup by `deadline` are removed (as Kafka does), which starts a new rebalance.
pub(crate) fn spawn_sync_timer(
    shared: Weak<Shared>,
    group_id: String,
    generation: i32,
    deadline: Instant,
) {
    tokio::spawn(async move {
        sleep_until(deadline).await;
        with_group(&shared, &group_id, |shared, group, now| {
            if !group.state.is_completing() || group.m.generation != generation {
                return None;
            }
            for member_id in group.state.not_synced(&group.m) {
                tracing::info!(group = %group_id, member = %member_id, "no SyncGroup within the rebalance timeout: removing member");
                let start = shared.rebalance_start(now);
                deliver(shared.transition(&group_id, group, |s, m| {
                    s.remove_member(m, &member_id, ResponseError::UnknownMemberId, start)
                }));
            }
            Some(())
        });
    });
}
