//! The next status, computed from what was observed, never latched.
//!
//! Conditions are derived afresh on every reconcile, so they clear by
//! themselves once the cause is gone (upstream latches `UpdateFailed`:
//! zalando/postgres-operator#2102, #2864), and the
//! result is compared with the stored status so an unchanged cluster
//! causes no status write.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use pgherd_shared::crd::status::phase;
use pgherd_shared::crd::PostgresqlStatus;

pub const READY: &str = "Ready";
pub const RECONCILE_ERROR: &str = "ReconcileError";
pub const DELETION_BLOCKED: &str = "DeletionBlocked";
pub const ROLLING_UPDATE: &str = "RollingUpdate";
/// Whether the manifest's roles, databases, schemas and extensions exist in Postgres.
pub const ROLES_SYNCED: &str = "RolesSynced";

/// Where the rolling update and Patroni configuration sync stand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rolling {
    /// Every pod runs the current template, nothing waits for a restart.
    UpToDate,
    /// A step was taken or is awaited; the message says which.
    InProgress(String),
    /// A replaced pod did not come back; the update stops until it does.
    Blocked(String),
}

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
    /// `None` when the pods were not looked at (invalid spec, deletion,
    /// an earlier error): no `RollingUpdate` condition then.
    pub rolling: Option<Rolling>,
    /// `None` when Postgres was not looked at: no `RolesSynced` condition then.
    pub roles: Option<RolesStatus>,
    /// The logical backup CronJob's `status.lastSuccessfulTime`; `None` when
    /// there is none or it was not looked at. The status keeps the latest
    /// time it ever saw, so a CronJob recreated (or logical backups switched
    /// off) does not erase when the last backup was made.
    pub last_logical_backup: Option<Timestamp>,
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

/// How the duty went, for the `RolesSynced` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolesStatus {
    /// Everything the manifest declares exists (`applied` statements were needed for it); `warnings` say
    /// what was left out on purpose (a shadowed or protected name, a missing Secret).
    Synced {
        applied: usize,
        warnings: Vec<String>,
    },
    /// The duty does not run for this cluster, as upstream's sync skips it: a standby cluster (its roles
    /// replicate from the source), no instances, or `enable_database_access` off.
    Off(&'static str),
    /// No pod is ready yet; the StatefulSet watch brings the next pass.
    NoPrimary,
    /// Not reached yet (a primary not labelled yet, Postgres not answering): retried soon.
    Waiting(String),
    /// The manifest cannot be turned into roles (`retry` false: a new manifest version is needed), or
    /// statements failed (retried).
    Failed { message: String, retry: bool },
}

impl RolesStatus {
    /// When to look again, whatever the other duties say.
    pub fn requeue(&self) -> Option<Duration> {
        match self {
            RolesStatus::Synced { .. }
            | RolesStatus::Off(_)
            | RolesStatus::NoPrimary
            | RolesStatus::Failed { retry: false, .. } => None,
            RolesStatus::Waiting(_) => Some(Duration::from_secs(15)),
            RolesStatus::Failed { retry: true, .. } => Some(Duration::from_secs(60)),
        }
    }
}

/// The `RolesSynced` condition's message.
pub fn roles_message(r: &RolesStatus) -> String {
    match r {
        RolesStatus::Synced { warnings, .. } if warnings.is_empty() => {
            "every role, database, schema and extension of the manifest exists".into()
        }
        RolesStatus::Synced { warnings, .. } => format!("in sync, except: {}", warnings.join("; ")),
        RolesStatus::Off(reason) => (*reason).into(),
        RolesStatus::NoPrimary => "no pod is ready yet".into(),
        RolesStatus::Waiting(m) => m.clone(),
        RolesStatus::Failed { message, .. } => message.clone(),
    }
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
    if let Some(r) = &obs.rolling {
        let (status, reason, message) = match r {
            Rolling::UpToDate => (
                false,
                "UpToDate",
                "all pods run the current template".to_string(),
            ),
            Rolling::InProgress(m) => (true, "InProgress", m.clone()),
            Rolling::Blocked(m) => (true, "Blocked", m.clone()),
        };
        let w = Wanted {
            type_: ROLLING_UPDATE,
            status,
            reason,
            message,
        };
        set(&mut conditions, old, w, generation, now);
    }
    if let Some(r) = &obs.roles {
        use RolesStatus;
        let (status, reason) = match r {
            RolesStatus::Synced { .. } => (true, "Synced"),
            RolesStatus::Off(_) => (true, "NotManaged"),
            RolesStatus::Waiting(_) | RolesStatus::NoPrimary => (false, "Waiting"),
            RolesStatus::Failed { .. } => (false, "Failed"),
        };
        let message = roles_message(r);
        let w = Wanted {
            type_: ROLES_SYNCED,
            status,
            reason,
            message,
        };
        set(&mut conditions, old, w, generation, now);
    }
    if let Outcome::DeletionBlocked(m) = &obs.outcome {
        let w = Wanted {
            type_: DELETION_BLOCKED,
            status: true,
            reason: "DeleteProtection",
            message: m.clone(),
        };
        set(&mut conditions, old, w, generation, now);
    }
    let seen = old
        .and_then(|o| o.last_logical_backup.as_ref())
        .map(|t| t.0);
    PostgresqlStatus {
        cluster_status: phase,
        observed_generation: generation,
        conditions,
        last_logical_backup: seen.max(obs.last_logical_backup).map(Time),
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
            rolling: Some(Rolling::UpToDate),
            roles: None,
            last_logical_backup: None,
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
    fn last_logical_backup_only_moves_forward() {
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let backup = |s: i64| Observed {
            last_logical_backup: Some(Timestamp::from_second(s).unwrap()),
            ..obs(Outcome::Synced, 2)
        };
        let none = next_status(None, Some(1), &obs(Outcome::Synced, 2), t0);
        assert_eq!(none.last_logical_backup, None);
        let first = next_status(Some(&none), Some(1), &backup(1_700_000_100), t0);
        assert_eq!(
            first.last_logical_backup,
            Some(Time(Timestamp::from_second(1_700_000_100).unwrap()))
        );
        let later = next_status(Some(&first), Some(1), &backup(1_700_086_500), t0);
        assert_eq!(
            later.last_logical_backup,
            Some(Time(Timestamp::from_second(1_700_086_500).unwrap()))
        );
        // A recreated CronJob, or none at all, does not erase it.
        assert_eq!(
            next_status(Some(&later), Some(1), &obs(Outcome::Synced, 2), t0).last_logical_backup,
            later.last_logical_backup
        );
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

    #[test]
    fn rolling_update_condition_follows_the_update() {
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let t1 = Timestamp::from_second(1_700_000_600).unwrap();
        let with = |r: Rolling| Observed {
            rolling: Some(r),
            ..obs(Outcome::Synced, 2)
        };
        let idle = next_status(None, Some(1), &with(Rolling::UpToDate), t0);
        let c = idle.condition(ROLLING_UPDATE).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "UpToDate")
        );
        let blocked = next_status(
            Some(&idle),
            Some(1),
            &with(Rolling::Blocked("pod x".into())),
            t1,
        );
        let c = blocked.condition(ROLLING_UPDATE).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
            ("True", "Blocked", "pod x")
        );
        assert_eq!(c.last_transition_time, Time(t1));
        let unseen = Observed {
            rolling: None,
            ..obs(Outcome::Synced, 2)
        };
        let none = next_status(Some(&blocked), Some(1), &unseen, t1);
        assert!(none.condition(ROLLING_UPDATE).is_none());
    }
}
