//! Which member to restart next for a pending parameter change, one at a
//! time, never while another member is not running.

use std::collections::BTreeSet;

use pgherd_shared::patroni::Cluster;

use super::patroni_config::RestartOrder;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestartStep {
    /// No member waits for a restart.
    Nothing,
    /// A member is not running yet (likely the one restarted last).
    Wait(String),
    Restart {
        member: String,
        primary: bool,
    },
}

/// States of a member whose Postgres is up.
fn is_up(state: &str) -> bool {
    matches!(state, "running" | "streaming")
}

/// The next member to restart with `restart_pending`. Members in `skip`
/// (pods about to be replaced anyway) are left out.
pub fn next_restart(
    cluster: &Cluster,
    order: RestartOrder,
    skip: &BTreeSet<String>,
) -> RestartStep {
    let mut pending: Vec<_> = cluster
        .members
        .iter()
        .filter(|m| m.pending_restart == Some(true) && !skip.contains(&m.name))
        .collect();
    if pending.is_empty() {
        return RestartStep::Nothing;
    }
    if let Some(m) = cluster.members.iter().find(|m| !is_up(&m.state)) {
        return RestartStep::Wait(format!(
            "member {} is {}; restarts wait for it",
            m.name, m.state
        ));
    }
    let leader_rank = |is_leader: bool| match order {
        RestartOrder::PrimaryFirst => !is_leader,
        RestartOrder::ReplicasFirst => is_leader,
    };
    pending.sort_by_key(|m| (leader_rank(m.is_leader()), m.name.clone()));
    let m = pending[0];
    RestartStep::Restart {
        member: m.name.clone(),
        primary: m.is_leader(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgherd_shared::patroni::Member;

    fn member(name: &str, role: &str, state: &str, pending: bool) -> Member {
        Member {
            name: name.into(),
            role: role.into(),
            state: state.into(),
            api_url: None,
            host: None,
            port: None,
            timeline: Some(1),
            lag: Some(0.into()),
            pending_restart: pending.then_some(true),
            tags: Default::default(),
        }
    }

    fn cluster(members: Vec<Member>) -> Cluster {
        Cluster {
            members,
            pause: false,
            scope: None,
        }
    }

    #[test]
    fn order_table() {
        use RestartOrder::*;
        let all = || {
            vec![
                member("pg-0", "leader", "running", true),
                member("pg-1", "replica", "streaming", true),
                member("pg-2", "replica", "streaming", true),
            ]
        };
        let none = BTreeSet::new();
        let restart = |m: &str, p: bool| RestartStep::Restart {
            member: m.into(),
            primary: p,
        };
        assert_eq!(
            next_restart(&cluster(all()), ReplicasFirst, &none),
            restart("pg-1", false)
        );
        assert_eq!(
            next_restart(&cluster(all()), PrimaryFirst, &none),
            restart("pg-0", true)
        );
        // Primary done (no longer pending): replicas follow.
        let mut m = all();
        m[0].pending_restart = None;
        assert_eq!(
            next_restart(&cluster(m), PrimaryFirst, &none),
            restart("pg-1", false)
        );
        // Replicas done: the primary last.
        let mut m = all();
        m[1].pending_restart = None;
        m[2].pending_restart = None;
        assert_eq!(
            next_restart(&cluster(m), ReplicasFirst, &none),
            restart("pg-0", true)
        );
        // Skipped pods (flagged for replacement) are not restarted.
        let skip = BTreeSet::from(["pg-1".to_string()]);
        assert_eq!(
            next_restart(&cluster(all()), ReplicasFirst, &skip),
            restart("pg-2", false)
        );
    }

    #[test]
    fn one_at_a_time_and_nothing_when_nothing_is_pending() {
        let mut m = vec![
            member("pg-0", "leader", "running", true),
            member("pg-1", "replica", "restarting", false),
        ];
        assert_eq!(
            next_restart(
                &cluster(m.clone()),
                RestartOrder::ReplicasFirst,
                &BTreeSet::new()
            ),
            RestartStep::Wait("member pg-1 is restarting; restarts wait for it".into())
        );
        m[0].pending_restart = Some(false);
        assert_eq!(
            next_restart(&cluster(m), RestartOrder::ReplicasFirst, &BTreeSet::new()),
            RestartStep::Nothing
        );
    }
}
