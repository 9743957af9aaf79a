//! The imperative half of rolling updates and Patroni configuration sync:
//! reads the pods and Patroni, asks the pure decisions in `crate::rolling`
//! for one step, carries it out, and says how soon to look again.
//!
//! One step per pass, in this order: a `PATCH /config` when the dynamic
//! configuration differs; else the rolling plan's step; else, once no pod
//! waits for replacement, one restart of a member with a pending restart.
//! Patroni being unreachable is not an error of the reconcile: it is what a
//! cluster being created or replaced looks like, so it only waits.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use pgherd_shared::crd::Postgresql;
use pgherd_shared::patroni::Cluster;
use serde_json::{json, Value};

use super::status::{Rolling, ROLLING_UPDATE};
use super::{event, namespace_of, Context, ReconcileError};
use crate::config::OperatorConfig;
use crate::kube_api::{EventType, Kind, KubeApi, ObjectKey, Propagation};
use crate::rolling::patroni_config::{
    config_patch, mark_settling, settling, DesiredDynamic, RestartOrder,
};
use crate::rolling::plan::{next_step, Inputs, PodInfo, Step, FLAG_ANNOTATION};
use crate::rolling::restart::{next_restart, RestartStep};
use crate::rolling::template::replacement_reason;
use crate::rolling::window::switchover_allowed;
use crate::rolling::MemberAddr;

/// How soon to look again while something is under way: pods are not
/// watched, so this is how a replaced pod's return is noticed.
pub const IN_PROGRESS_REQUEUE: Duration = Duration::from_secs(5);

/// Patroni's default `maximum_lag_on_failover` (1 MiB), the lag bound when
/// the manifest sets none: a replica Patroni would not fail over to is not
/// healthy enough to continue an update or take a switchover.
pub const DEFAULT_MAX_LAG_BYTES: u64 = 1 << 20;

/// How long a replaced pod may take to be back before the update is
/// reported blocked (upstream's `pod_label_wait_timeout` default).
pub const COME_BACK_SECONDS: i64 = 600;

/// What the pass found and how soon to look again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollingOutcome {
    pub status: Rolling,
    pub requeue: Option<Duration>,
}

impl RollingOutcome {
    fn up_to_date() -> Self {
        RollingOutcome {
            status: Rolling::UpToDate,
            requeue: None,
        }
    }

    fn busy(message: String, requeue: Duration) -> Self {
        RollingOutcome {
            status: Rolling::InProgress(message),
            requeue: Some(requeue),
        }
    }
}

fn parse_time(v: Option<&Value>) -> Option<Timestamp> {
    v?.as_str()?.parse().ok()
}

/// Whether the pod's member applies new values of local parameters from the
/// DCS. Unknown (no answer from Patroni, or the member not registered yet)
/// counts as yes: the decision waits until Patroni can say, rather than
/// flagging a pod for good on a missed answer.
fn live_parameters(pod: &Value, cluster: Option<&Cluster>) -> bool {
    let name = pod.pointer("/metadata/name").and_then(Value::as_str);
    cluster
        .and_then(|c| c.members.iter().find(|m| Some(m.name.as_str()) == name))
        .is_none_or(|m| m.follows_dcs())
}

fn pod_info(pod: &Value, template: &Value, lazy: bool, live: bool, now: Timestamp) -> PodInfo {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let ready = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    let created = parse_time(pod.pointer("/metadata/creationTimestamp")).unwrap_or(now);
    PodInfo {
        name,
        flagged: pod
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(FLAG_ANNOTATION))
            .and_then(Value::as_str)
            == Some("true"),
        outdated: replacement_reason(pod, template, lazy, live),
        ready,
        terminating: pod.pointer("/metadata/deletionTimestamp").is_some(),
        age_seconds: now.as_second() - created.as_second(),
    }
}

/// Members to ask, the pod labelled master first (it answers for the
/// cluster even while a replica is down).
fn addresses(pods: &[Value], role_label: &str) -> Vec<MemberAddr> {
    let mut addrs: Vec<(bool, MemberAddr)> = pods
        .iter()
        .filter_map(|p| {
            let ip = p.pointer("/status/podIP")?.as_str()?.to_string();
            let pod = p.pointer("/metadata/name")?.as_str()?.to_string();
            let master = p
                .pointer("/metadata/labels")
                .and_then(|l| l.get(role_label))
                .and_then(Value::as_str)
                == Some(crate::builders::Role::Master.as_str());
            Some((!master, MemberAddr { pod, ip }))
        })
        .collect();
    addrs.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.pod.cmp(&b.1.pod)));
    addrs.into_iter().map(|(_, a)| a).collect()
}

async fn cluster_view<A: KubeApi>(
    ctx: &Context<A>,
    addrs: &[MemberAddr],
) -> Option<(Cluster, MemberAddr)> {
    for a in addrs {
        match ctx.patroni.cluster(a).await {
            Ok(c) => return Some((c, a.clone())),
            Err(e) => tracing::debug!(error = %e, "GET /cluster"),
        }
    }
    None
}

fn stored_rolling_condition(pg: &Postgresql) -> Option<(String, String, String)> {
    pg.status
        .as_ref()?
        .condition(ROLLING_UPDATE)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// One pass of the duty. `statefulset` is the desired (stamped) object.
pub async fn run<A: KubeApi>(
    pg: &Postgresql,
    ctx: &Context<A>,
    cfg: &OperatorConfig,
    statefulset: &Value,
) -> Result<RollingOutcome, ReconcileError> {
    let namespace = namespace_of(pg);
    let name = pg.metadata.name.clone().unwrap_or_default();
    let pods = ctx
        .api
        .list(Kind::Pod, &namespace, &cfg.selector_labels(&name))
        .await?;
    if pods.is_empty() {
        return Ok(RollingOutcome::up_to_date());
    }
    let now = (ctx.clock)();
    let template = statefulset
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    let addrs = addresses(&pods, &cfg.pod_role_label);
    let view = cluster_view(ctx, &addrs).await;
    let infos: Vec<PodInfo> = pods
        .iter()
        .map(|p| {
            let live = live_parameters(p, view.as_ref().map(|(c, _)| c));
            pod_info(p, &template, cfg.enable_lazy_spilo_upgrade, live, now)
        })
        .collect();
    let addr_of = |member: &str| addrs.iter().find(|a| a.pod == member).cloned();

    // 1. Patroni's dynamic configuration.
    let mut config = None;
    if let Some((_, at)) = &view {
        match ctx.patroni.config(at).await {
            Ok(current) => {
                let desired = DesiredDynamic::of(pg, cfg);
                if let Some(mut patch) = config_patch(&desired, &current) {
                    // Patroni applies it on its next loop; pending_restart
                    // shows only then (upstream waits loop_wait + 2 s too).
                    let loop_wait = desired
                        .loop_wait
                        .map(u64::from)
                        .or_else(|| current.get("loop_wait").and_then(Value::as_u64))
                        .unwrap_or(10);
                    // A local parameter waits for the agent's copy and a
                    // second Patroni loop (the reload) as well.
                    let settle = if patch.reaches_local {
                        Duration::from_secs(2 * loop_wait + 10)
                    } else {
                        Duration::from_secs(loop_wait + 5)
                    };
                    mark_settling(&mut patch.body, now + settle);
                    if let Err(e) = ctx.patroni.patch_config(at, &patch.body).await {
                        return Ok(RollingOutcome::busy(
                            format!("PATCH /config failed: {e}"),
                            IN_PROGRESS_REQUEUE,
                        ));
                    }
                    let note = format!(
                        "Patroni configuration changed: {}",
                        patch.changed.join(", ")
                    );
                    event(ctx, pg, EventType::Normal, "PatroniConfig", note.clone()).await;
                    return Ok(RollingOutcome::busy(note, settle));
                }
                config = Some(current);
            }
            Err(e) => tracing::debug!(error = %e, "GET /config"),
        }
    }

    // 2. The rolling plan.
    let max_lag = pg
        .spec
        .patroni
        .as_ref()
        .and_then(|p| p.maximum_lag_on_failover)
        .filter(|v| *v > 0)
        .map(|v| v as u64)
        .unwrap_or(DEFAULT_MAX_LAG_BYTES);
    let instances = statefulset
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(0) as usize;
    let windows = pg.spec.maintenance_windows.clone().unwrap_or_default();
    let inputs = Inputs {
        pods: &infos,
        instances,
        cluster: view.as_ref().map(|(c, _)| c),
        max_lag_bytes: max_lag,
        switchover_allowed: switchover_allowed(&windows, now),
        come_back_seconds: COME_BACK_SECONDS,
    };
    let pod_key = |pod: &str| ObjectKey {
        kind: Kind::Pod,
        namespace: namespace.clone(),
        name: pod.to_string(),
    };
    let was = stored_rolling_condition(pg);
    match next_step(&inputs) {
        Step::Done => {}
        Step::Flag(list) => {
            for (pod, _) in &list {
                let patch = json!({"metadata": {"annotations": {FLAG_ANNOTATION: "true"}}});
                ctx.api.merge_patch(&pod_key(pod), &patch).await?;
            }
            let shown: Vec<String> = list.iter().map(|(p, r)| format!("{p} ({r})")).collect();
            let note = format!("Rolling update needed: {}", shown.join(", "));
            event(ctx, pg, EventType::Normal, "Update", note.clone()).await;
            return Ok(RollingOutcome::busy(note, Duration::from_secs(1)));
        }
        Step::Replace {
            pod,
            step,
            of,
            reason,
            downtime,
        } => {
            ctx.api
                .delete(&pod_key(&pod), Propagation::Background)
                .await?;
            let mut note =
                format!("Performing rolling update: pod {pod} (step {step} of {of}, {reason})");
            let type_ = if downtime {
                note.push_str("; it is the only member, so the database is down until it is back");
                EventType::Warning
            } else {
                EventType::Normal
            };
            event(ctx, pg, type_, "Update", note.clone()).await;
            return Ok(RollingOutcome::busy(note, IN_PROGRESS_REQUEUE));
        }
        Step::Switchover { from, to } => {
            let Some(at) = addr_of(&from).or_else(|| view.as_ref().map(|(_, a)| a.clone())) else {
                return Ok(RollingOutcome::busy(
                    format!("no address for {from}"),
                    IN_PROGRESS_REQUEUE,
                ));
            };
            let note = match ctx.patroni.switchover(&at, &from, &to).await {
                Ok(()) => {
                    let note = format!("Switched over from {from} to {to} for the rolling update");
                    event(ctx, pg, EventType::Normal, "Switchover", note.clone()).await;
                    note
                }
                Err(e) => {
                    let note = format!("Switchover from {from} to {to} failed (retrying): {e}");
                    // Retried every few seconds: one event per distinct failure.
                    if was.as_ref().map(|(_, _, m)| m) != Some(&note) {
                        event(ctx, pg, EventType::Warning, "Switchover", note.clone()).await;
                    }
                    note
                }
            };
            return Ok(RollingOutcome::busy(note, IN_PROGRESS_REQUEUE));
        }
        Step::Wait(why) => return Ok(RollingOutcome::busy(why, IN_PROGRESS_REQUEUE)),
        Step::Blocked(why) => {
            if was.as_ref().map(|(_, r, m)| (r.as_str(), m.as_str())) != Some(("Blocked", &why)) {
                event(
                    ctx,
                    pg,
                    EventType::Warning,
                    "RollingUpdateBlocked",
                    why.clone(),
                )
                .await;
            }
            return Ok(RollingOutcome {
                status: Rolling::Blocked(why),
                requeue: Some(Duration::from_secs(30)),
            });
        }
    }

    // 3. Restarts for parameters that need one.
    if let (Some((cluster, _)), Some(config)) = (&view, &config) {
        if settling(config, now) {
            return Ok(RollingOutcome::busy(
                "waiting for Patroni to apply the configuration change".into(),
                IN_PROGRESS_REQUEUE,
            ));
        }
        let order = RestartOrder::recorded(config);
        match next_restart(cluster, order, &BTreeSet::new()) {
            RestartStep::Nothing => {}
            RestartStep::Wait(why) => return Ok(RollingOutcome::busy(why, IN_PROGRESS_REQUEUE)),
            RestartStep::Restart { member, primary } => {
                let Some(at) = addr_of(&member) else {
                    return Ok(RollingOutcome::busy(
                        format!("no address for {member}"),
                        IN_PROGRESS_REQUEUE,
                    ));
                };
                let role = if primary { "primary" } else { "replica" };
                let note = match ctx.patroni.restart_pending(&at).await {
                    Ok(()) => {
                        let n = format!(
                            "Restarting {role} {member} for changed parameters ({})",
                            match order {
                                RestartOrder::PrimaryFirst =>
                                    "primary first: a setting was lowered",
                                RestartOrder::ReplicasFirst => "replicas first",
                            }
                        );
                        event(ctx, pg, EventType::Normal, "Restart", n.clone()).await;
                        n
                    }
                    Err(e) => format!("restart of {member} failed (retrying): {e}"),
                };
                return Ok(RollingOutcome::busy(note, IN_PROGRESS_REQUEUE));
            }
        }
    }
    if was.is_some_and(|(status, _, _)| status == "True") {
        event(
            ctx,
            pg,
            EventType::Normal,
            "Update",
            "Rolling update done: every pod runs the current template, no restart is pending"
                .into(),
        )
        .await;
    }
    Ok(RollingOutcome::up_to_date())
}
