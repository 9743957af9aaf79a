//! The next single step of a rolling update, from what the pods and Patroni
//! say now.
//!
//! Nothing is remembered between calls: which pods still need replacing is
//! the `zalando-postgres-operator-rolling-update-required` annotation on the
//! pods (upstream's flag, also set by hand to force a replacement), and a pod
//! created from the current template carries neither the flag nor an
//! outdated stamp. A coordinator restarted mid-update therefore continues
//! where it stopped and never deletes a replaced pod again.
//!
//! Order (upstream's `recreatePods`, postgres-operator `pkg/cluster/pod.go`,
//! health-gated, as upstream's missing gate took whole clusters down:
//! postgres-operator#903, #2966, PR #3112): flag every outdated
//! pod; replicas one at a time, each only when every pod already replaced
//! (or not needing it) is ready, streaming and within the lag bound; then a
//! switchover to the best up-to-date replica (within the maintenance
//! windows); then the old primary, which is a flagged replica by then.

use pgherd_shared::patroni::{Cluster, Member};

/// The pod annotation marking a pod for replacement (upstream's name).
pub const FLAG_ANNOTATION: &str = "zalando-postgres-operator-rolling-update-required";

/// A pod as the plan needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    /// Carries [`FLAG_ANNOTATION`] = `"true"`.
    pub flagged: bool,
    /// Why its template is outdated (`template::replacement_reason`).
    pub outdated: Option<String>,
    /// The pod's `Ready` condition.
    pub ready: bool,
    /// Has a deletion timestamp.
    pub terminating: bool,
    /// Seconds since the pod was created.
    pub age_seconds: i64,
}

#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    pub pods: &'a [PodInfo],
    /// Pods the StatefulSet should have.
    pub instances: usize,
    /// `GET /cluster`; `None` when no member answered.
    pub cluster: Option<&'a Cluster>,
    /// A replica further behind is not healthy for this purpose.
    pub max_lag_bytes: u64,
    /// Inside a maintenance window, or none set.
    pub switchover_allowed: bool,
    /// How long a replaced pod may take to come back before the update is
    /// reported blocked (it keeps being retried).
    pub come_back_seconds: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No pod needs replacing.
    Done,
    /// Set the flag on these pods (name, reason) before touching any.
    Flag(Vec<(String, String)>),
    /// Delete this pod so the StatefulSet recreates it from the current
    /// template. `downtime` for the only member of a cluster.
    Replace {
        pod: String,
        step: usize,
        of: usize,
        reason: String,
        downtime: bool,
    },
    /// `POST /switchover` from the leader to the candidate.
    Switchover { from: String, to: String },
    /// Nothing to do until the situation changes (a pod coming back, a
    /// maintenance window).
    Wait(String),
    /// A replaced pod did not come back in time: stop before anything else
    /// (above all the primary) is touched. Retried on every sync.
    Blocked(String),
}

/// Member states of a healthy replica. Patroni 3.0.4+ says `streaming`.
fn is_streaming(m: &Member) -> bool {
    m.state == "streaming"
}

/// Why a pod that is not (or no longer) to be replaced is unhealthy.
fn unhealthy(pod: &PodInfo, member: Option<&Member>, max_lag: u64) -> Option<String> {
    if !pod.ready {
        return Some(format!("pod {} is not ready", pod.name));
    }
    let Some(m) = member else {
        return Some(format!("pod {} is not a Patroni member", pod.name));
    };
    if m.is_leader() {
        return (m.state != "running").then(|| format!("leader {} is {}", m.name, m.state));
    }
    if !is_streaming(m) {
        return Some(format!("replica {} is {}, not streaming", m.name, m.state));
    }
    match m.lag_bytes() {
        Some(lag) if lag <= max_lag => None,
        // No byte count in the message: it becomes the status condition,
        // and a message changing every pass would write the status (and
        // trigger a reconcile) every pass.
        Some(_) => Some(format!("replica {} lags more than {max_lag} bytes", m.name)),
        None => Some(format!("replica {}'s lag is unknown", m.name)),
    }
}

/// The best switchover candidate: an up-to-date, ready, streaming replica
/// within the lag bound; a synchronous standby first, then the lowest lag,
/// then the name (so the choice is stable).
pub fn switchover_candidate<'a>(
    cluster: &'a Cluster,
    pods: &[PodInfo],
    max_lag: u64,
) -> Option<&'a Member> {
    let mut candidates: Vec<&Member> = cluster
        .members
        .iter()
        .filter(|m| !m.is_leader())
        .filter(|m| {
            pods.iter()
                .any(|p| p.name == m.name && !p.flagged && !p.terminating)
        })
        .filter(|m| {
            let pod = pods.iter().find(|p| p.name == m.name).expect("filtered");
            unhealthy(pod, Some(m), max_lag).is_none()
        })
        .collect();
    candidates.sort_by_key(|m| {
        let sync = m.role().is_synchronous();
        (!sync, m.lag_bytes().unwrap_or(u64::MAX), m.name.clone())
    });
    candidates.first().copied()
}

pub fn next_step(i: &Inputs) -> Step {
    let to_flag: Vec<(String, String)> = i
        .pods
        .iter()
        .filter(|p| !p.flagged && !p.terminating)
        .filter_map(|p| p.outdated.clone().map(|r| (p.name.clone(), r)))
        .collect();
    if !to_flag.is_empty() {
        return Step::Flag(to_flag);
    }
    let flagged: Vec<&PodInfo> = i
        .pods
        .iter()
        .filter(|p| p.flagged && !p.terminating)
        .collect();
    if flagged.is_empty() {
        return Step::Done;
    }
    if let Some(p) = i.pods.iter().find(|p| p.terminating) {
        return Step::Wait(format!("pod {} is terminating", p.name));
    }
    if i.pods.len() < i.instances {
        return Step::Wait(format!(
            "{} of {} pods exist; waiting for the StatefulSet to create the rest",
            i.pods.len(),
            i.instances
        ));
    }
    let Some(cluster) = i.cluster else {
        return Step::Wait("no Patroni member answered GET /cluster".into());
    };
    if cluster.pause {
        return Step::Wait("Patroni is in maintenance mode (paused)".into());
    }
    let member = |name: &str| cluster.members.iter().find(|m| m.name == name);

    // Every pod that stays must be healthy before one more goes down.
    for p in i.pods.iter().filter(|p| !p.flagged) {
        if let Some(why) = unhealthy(p, member(&p.name), i.max_lag_bytes) {
            return if p.age_seconds > i.come_back_seconds {
                Step::Blocked(format!(
                    "{why} for more than {}s; the rolling update stops here, before the primary",
                    i.come_back_seconds
                ))
            } else {
                Step::Wait(why)
            };
        }
    }
    let Some(leader) = cluster.leader() else {
        return Step::Wait("Patroni has no leader".into());
    };
    let step = i.pods.len() - flagged.len() + 1;
    let of = i.pods.len();
    let reason = |p: &PodInfo| {
        p.outdated
            .clone()
            .unwrap_or_else(|| "flagged for a rolling update".into())
    };

    // Replicas first, in name order.
    if let Some(p) = flagged.iter().find(|p| p.name != leader.name) {
        if member(&p.name).is_some_and(|m| m.state == "creating replica") {
            return Step::Wait(format!("replica {} is still being created", p.name));
        }
        return Step::Replace {
            pod: p.name.clone(),
            step,
            of,
            reason: reason(p),
            downtime: false,
        };
    }

    // Only the primary is left.
    let primary = flagged[0];
    if !i.switchover_allowed {
        return Step::Wait(format!(
            "primary {} is replaced only inside a maintenance window",
            primary.name
        ));
    }
    if i.pods.len() == 1 {
        return Step::Replace {
            pod: primary.name.clone(),
            step,
            of,
            reason: reason(primary),
            downtime: true,
        };
    }
    match switchover_candidate(cluster, i.pods, i.max_lag_bytes) {
        Some(c) => Step::Switchover {
            from: leader.name.clone(),
            to: c.name.clone(),
        },
        None => Step::Wait(format!(
            "no replica can take over from {} (none ready, streaming and within {} bytes)",
            leader.name, i.max_lag_bytes
        )),
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
