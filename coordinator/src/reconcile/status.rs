//! The next status, computed from what was observed, never latched.
//!
//! Conditions are derived afresh on every reconcile, so they clear by
//! themselves once the cause is gone (user-pain-points.md §7), and the
//! result is compared with the stored status so an unchanged cluster
//! causes no status write.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use pgherd_shared::crd::status::phase;
use pgherd_shared::crd::PostgresqlStatus;

pub const READY: &str = "Ready";
pub const RECONCILE_ERROR: &str = "ReconcileError";
pub const DELETION_BLOCKED: &str = "DeletionBlocked";

/// How the reconcile went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Synced,
    /// The manifest cannot be used; the message names the field(s).
    Invalid(String),
    Failed(String),
    /// Deletion waits for the delete-protection annotations.
    DeletionBlocked(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub outcome: Outcome,
    /// Whether the StatefulSet existed before this reconcile.
    pub statefulset_existed: bool,
    pub desired_instances: i32,
    pub ready_instances: i32,
}

/// What one condition should say.
struct Wanted<'a> {
    type_: &'a str,
    status: bool,
    reason: &'a str,
    message: String,
}

/// Keeps `lastTransitionTime` unless the condition's status flips.
fn set(
    conditions: &mut Vec<Condition>,
    old: Option<&PostgresqlStatus>,
    w: Wanted,
    generation: Option<i64>,
    now: Timestamp,
) {
    let Wanted {
        type_,
        status,
        reason,
        message,
    } = w;
    let status = if status { "True" } else { "False" }.to_string();
    let since = old
        .and_then(|o| o.condition(type_))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    conditions.push(Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    });
}

pub fn next_status(
    old: Option<&PostgresqlStatus>,
    generation: Option<i64>,
    obs: &Observed,
    now: Timestamp,
) -> PostgresqlStatus {
    let mut conditions = Vec::new();
    let (phase, ready, ready_reason, ready_message) = match &obs.outcome {
        Outcome::Synced => {
            let all = obs.desired_instances > 0 && obs.ready_instances >= obs.desired_instances;
            let reason = if obs.desired_instances == 0 {
                "NoInstances"
            } else if all {
                "AllInstancesReady"
            } else {
                "InstancesNotReady"
            };
            (
                phase::RUNNING.to_string(),
                all,
                reason,
                format!(
                    "{}/{} instances ready",
                    obs.ready_instances, obs.desired_instances
                ),
            )
        }
        Outcome::Invalid(m) => (phase::INVALID.to_string(), false, "InvalidSpec", m.clone()),
        Outcome::Failed(m) => (
            if obs.statefulset_existed {
                phase::SYNC_FAILED
            } else {
                phase::CREATE_FAILED
            }
            .to_string(),
            false,
            "ReconcileFailed",
            m.clone(),
        ),
        Outcome::DeletionBlocked(m) => (
            old.map(|o| o.cluster_status.clone()).unwrap_or_default(),
            false,
            "Deleting",
            m.clone(),
        ),
    };
    let w = Wanted {
        type_: READY,
        status: ready,
        reason: ready_reason,
        message: ready_message,
    };
    set(&mut conditions, old, w, generation, now);
    let (err, err_reason, err_message) = match &obs.outcome {
        Outcome::Synced => (
            false,
            "Synced",
            "all objects match the manifest".to_string(),
        ),
        Outcome::Invalid(m) => (true, "InvalidSpec", m.clone()),
        Outcome::Failed(m) => (true, "ApiError", m.clone()),
        Outcome::DeletionBlocked(_) => (false, "Deleting", String::new()),
    };
    let w = Wanted {
        type_: RECONCILE_ERROR,
        status: err,
        reason: err_reason,
        message: err_message,
    };
    set(&mut conditions, old, w, generation, now);
    if let Outcome::DeletionBlocked(m) = &obs.outcome {
        let w = Wanted {
            type_: DELETION_BLOCKED,
            status: true,
            reason: "DeleteProtection",
            message: m.clone(),
        };
        set(&mut conditions, old, w, generation, now);
    }
    PostgresqlStatus {
        cluster_status: phase,
        observed_generation: generation,
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(outcome: Outcome, ready: i32) -> Observed {
        Observed {
            outcome,
            statefulset_existed: true,
            desired_instances: 2,
            ready_instances: ready,
        }
    }

    #[test]
    fn unchanged_observation_gives_identical_status() {
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let t1 = Timestamp::from_second(1_700_000_600).unwrap();
        let s0 = next_status(None, Some(3), &obs(Outcome::Synced, 2), t0);
        let s1 = next_status(Some(&s0), Some(3), &obs(Outcome::Synced, 2), t1);
        assert_eq!(s0, s1, "a resync must not rewrite the status");
        assert_eq!(s0.cluster_status, "Running");
        assert_eq!(s0.condition(READY).unwrap().status, "True");
    }

    #[test]
    fn errors_clear_themselves() {
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let t1 = Timestamp::from_second(1_700_000_600).unwrap();
        let failed = next_status(None, Some(1), &obs(Outcome::Failed("boom".into()), 0), t0);
        assert_eq!(failed.cluster_status, "SyncFailed");
        assert_eq!(failed.condition(RECONCILE_ERROR).unwrap().status, "True");
        let ok = next_status(Some(&failed), Some(1), &obs(Outcome::Synced, 2), t1);
        assert_eq!(ok.cluster_status, "Running");
        let err = ok.condition(RECONCILE_ERROR).unwrap();
        assert_eq!(err.status, "False");
        assert_eq!(err.last_transition_time, Time(t1));
    }
}
