//! Deployments and ReplicaSets: a ReplicaSet per pod template (`<deploy>-<pod-template-hash>`), rolled
//! out with `Recreate` or `RollingUpdate` (maxSurge/maxUnavailable), and ReplicaSets keeping their count of
//! pods (`<rs>-<5 random>`). pgherd's coordinator runs as a Deployment.

use serde_json::{json, Value};

use super::util::{self, Time};
use super::{Action, Controller, Kind, Snapshot};
use crate::kube::store::Propagation;

pub const NAME: &str = "deployment-controller";
pub const RS_NAME: &str = "replicaset-controller";
pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";

pub fn controller() -> Controller {
    Controller {
        name: NAME,
        reads: &[Kind::Deployment, Kind::ReplicaSet, Kind::Pod],
        decide: Box::new(decide),
    }
}

pub fn replicaset_controller() -> Controller {
    Controller {
        name: RS_NAME,
        reads: &[Kind::ReplicaSet, Kind::Pod],
        decide: Box::new(decide_replicasets),
    }
}

pub fn decide(snap: &Snapshot, now: Time) -> Vec<Action> {
    let mut out = Vec::new();
    for d in snap.all(Kind::Deployment) {
        let rss = snap.owned_by(Kind::ReplicaSet, d);
        let pods: Vec<Vec<&Value>> = rss.iter().map(|rs| snap.owned_by(Kind::Pod, rs)).collect();
        out.extend(reconcile(d, &rss, &pods, now));
    }
    out
}

fn revision(o: &Value) -> i64 {
    util::annotation(o, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &Value) -> i64 {
    util::int(rs, "/spec/replicas", 1)
}

fn set_replicas(rs: &Value, n: i64, d: &Value, revision: Option<i64>) -> Action {
    let mut obj = rs.clone();
    obj["spec"]["replicas"] = json!(n);
    let a = &mut obj["metadata"]["annotations"];
    if !a.is_object() {
        *a = json!({});
    }
    a["deployment.kubernetes.io/desired-replicas"] =
        json!(util::int(d, "/spec/replicas", 1).to_string());
    if let Some(r) = revision {
        a[REVISION] = json!(r.to_string());
    }
    Action::Update {
        kind: Kind::ReplicaSet,
        ns: util::ns(rs).into(),
        name: util::name(rs).into(),
        obj,
    }
}

/// One Deployment, its ReplicaSets and (per ReplicaSet, same order) their pods → actions.
pub fn reconcile(d: &Value, rss: &[&Value], pods: &[Vec<&Value>], now: Time) -> Vec<Action> {
    if util::deleting(d) {
        return vec![];
    }
    let mut out = Vec::new();
    let name = util::name(d);
    let ns = util::ns(d).to_string();
    let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let hash = util::hash(&template, util::int(d, "/status/collisionCount", 0));
    let new_name = format!("{name}-{hash}");
    let desired = util::int(d, "/spec/replicas", 1);
    let max_rev = rss.iter().map(|r| revision(r)).max().unwrap_or(0);
    let new_idx = rss.iter().position(|r| util::name(r) == new_name);
    let available = |i: usize| {
        pods[i]
            .iter()
            .filter(|p| util::pod_active(p) && util::pod_ready(p))
            .count() as i64
    };
    let active = |i: usize| pods[i].iter().filter(|p| !util::pod_terminal(p)).count() as i64;
    let olds: Vec<usize> = (0..rss.len()).filter(|i| Some(*i) != new_idx).collect();
    let recreate = util::str_at(d, "/spec/strategy/type") == Some("Recreate");
    let paused = d.pointer("/spec/paused") == Some(&json!(true));

    let new_revision = match new_idx {
        Some(i) if revision(rss[i]) == max_rev && max_rev > 0 => max_rev,
        Some(_) => max_rev + 1,
        None => max_rev + 1,
    };
    // The new ReplicaSet's target size.
    let mut new_target = new_idx.map(|i| spec_replicas(rss[i])).unwrap_or(0);
    let olds_total: i64 = olds.iter().map(|i| spec_replicas(rss[*i])).sum();
    if !paused {
        if recreate {
            let old_up = olds.iter().any(|i| spec_replicas(rss[*i]) > 0);
            for i in &olds {
                if spec_replicas(rss[*i]) > 0 {
                    out.push(set_replicas(rss[*i], 0, d, None));
                }
            }
            let old_pods = olds.iter().map(|i| active(*i)).sum::<i64>();
            if !old_up && old_pods == 0 {
                new_target = desired;
            }
        } else {
            let ru = d.pointer("/spec/strategy/rollingUpdate");
            let surge =
                util::int_or_percent(ru.and_then(|r| r.get("maxSurge")), desired, "25%", true);
            let mut unavail = util::int_or_percent(
                ru.and_then(|r| r.get("maxUnavailable")),
                desired,
                "25%",
                false,
            );
            if surge == 0 && unavail == 0 {
                unavail = 1;
            }
            let total = new_target + olds_total;
            if new_target > desired {
                new_target = desired;
            } else if new_target < desired && total < desired + surge {
                new_target = (new_target + desired + surge - total).min(desired);
            } else {
                // Scale old ReplicaSets down as far as availability allows, unhealthy pods first.
                let all_avail: i64 = (0..rss.len()).map(available).sum();
                let new_unavail = new_idx
                    .map(|i| spec_replicas(rss[i]) - available(i))
                    .unwrap_or(0);
                let min_avail = desired - unavail;
                let mut budget = (total - min_avail - new_unavail).max(0);
                let mut avail_budget = (all_avail - min_avail).max(0);
                let mut olds_sorted = olds.clone();
                olds_sorted.sort_by_key(|i| revision(rss[*i]));
                for i in olds_sorted {
                    let cur = spec_replicas(rss[i]);
                    let unhealthy = (cur - available(i)).max(0).min(budget);
                    budget -= unhealthy;
                    let healthy = (cur - unhealthy).min(avail_budget).min(budget);
                    avail_budget -= healthy;
                    budget -= healthy;
                    let target = cur - unhealthy - healthy;
                    if target != cur {
                        out.push(set_replicas(rss[i], target, d, None));
                    }
                }
            }
        }
    }
    match new_idx {
        None if !paused => {
            let mut t = template.clone();
            t["metadata"]["labels"][HASH_LABEL] = json!(hash);
            let mut sel = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
            sel["matchLabels"][HASH_LABEL] = json!(hash);
            let mut labels = util::labels(&template);
            labels.insert(HASH_LABEL.into(), json!(hash));
            out.push(Action::Create {
                kind: Kind::ReplicaSet,
                ns: ns.clone(),
                obj: json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": new_name, "labels": labels,
                        "annotations": {REVISION: new_revision.to_string(),
                            "deployment.kubernetes.io/desired-replicas": desired.to_string()},
                        "ownerReferences": [util::controller_ref(d)]},
                    "spec": {"replicas": new_target, "selector": sel, "template": t,
                        "minReadySeconds": util::int(d, "/spec/minReadySeconds", 0)}}),
            });
        }
        Some(i) if new_target != spec_replicas(rss[i]) || revision(rss[i]) != new_revision => {
            out.push(set_replicas(rss[i], new_target, d, Some(new_revision)));
        }
        _ => {}
    }
    // Old ReplicaSets scaled to zero beyond revisionHistoryLimit, oldest first.
    let limit = util::int(d, "/spec/revisionHistoryLimit", 10);
    let mut dead: Vec<usize> = olds
        .iter()
        .copied()
        .filter(|i| spec_replicas(rss[*i]) == 0 && active(*i) == 0)
        .collect();
    dead.sort_by_key(|i| revision(rss[*i]));
    let excess = dead.len().saturating_sub(limit.max(0) as usize);
    for i in &dead[..excess] {
        out.push(util::delete(
            Kind::ReplicaSet,
            rss[*i],
            Propagation::Background,
        ));
    }
    // Status before the annotation patch: the status write carries the resourceVersion the patch changes.
    out.extend(deployment_status(d, rss, pods, new_idx, now));
    if util::annotation(d, REVISION) != Some(&new_revision.to_string()) && !paused {
        out.push(Action::Patch {
            kind: Kind::Deployment,
            ns: ns.clone(),
            name: name.into(),
            patch: json!({"metadata": {"annotations": {REVISION: new_revision.to_string()}}}),
        });
    }
    out
}

fn deployment_status(
    d: &Value,
    rss: &[&Value],
    pods: &[Vec<&Value>],
    new_idx: Option<usize>,
    now: Time,
) -> Option<Action> {
    let desired = util::int(d, "/spec/replicas", 1);
    let count = |f: &dyn Fn(&Value) -> bool, only: Option<usize>| -> i64 {
        (0..rss.len())
            .filter(|i| only.is_none() || only == Some(*i))
            .flat_map(|i| pods[i].iter())
            .filter(|p| util::pod_active(p) && f(p))
            .count() as i64
    };
    let replicas = count(&|_| true, None);
    let ready = count(&util::pod_ready, None);
    let updated = new_idx.map(|i| count(&|_| true, Some(i))).unwrap_or(0);
    let ru = d.pointer("/spec/strategy/rollingUpdate");
    let unavail_ok = if util::str_at(d, "/spec/strategy/type") == Some("Recreate") {
        0
    } else {
        util::int_or_percent(
            ru.and_then(|r| r.get("maxUnavailable")),
            desired,
            "25%",
            false,
        )
    };
    let mut conds = Vec::new();
    let (st, reason, msg) = if ready >= desired - unavail_ok {
        (
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    };
    util::set_condition(
        &mut conds,
        util::condition(d, "Available"),
        "Available",
        st,
        reason,
        msg,
        now,
    );
    let complete = updated == desired && replicas == desired && ready == desired;
    let rs_name = new_idx.map(|i| util::name(rss[i])).unwrap_or("");
    let (reason, msg) = if complete {
        (
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
        )
    } else {
        (
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{rs_name}\" is progressing."),
        )
    };
    util::set_condition(
        &mut conds,
        util::condition(d, "Progressing"),
        "Progressing",
        "True",
        reason,
        &msg,
        now,
    );
    let mut s = json!({
        "observedGeneration": util::generation(d),
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "conditions": conds,
    });
    if desired > ready {
        s["unavailableReplicas"] = json!(desired - ready);
    }
    if let Some(c) = d.pointer("/status/collisionCount") {
        s["collisionCount"] = c.clone();
    }
    util::status_action(Kind::Deployment, d, s)
}

pub fn decide_replicasets(snap: &Snapshot, _now: Time) -> Vec<Action> {
    let mut out = Vec::new();
    for rs in snap.all(Kind::ReplicaSet) {
        let pods = snap.owned_by(Kind::Pod, rs);
        out.extend(reconcile_replicaset(rs, &pods));
    }
    out
}

/// One ReplicaSet and its pods → creations or deletions (unready and newest first), and status.
pub fn reconcile_replicaset(rs: &Value, pods: &[&Value]) -> Vec<Action> {
    let mut out = Vec::new();
    // Finished pods are not counted; deleting them stands in for upstream's pod garbage collector.
    for p in pods
        .iter()
        .filter(|p| util::pod_terminal(p) && !util::deleting(p))
    {
        out.push(util::delete(Kind::Pod, p, Propagation::Background));
    }
    let mut active: Vec<&Value> = pods
        .iter()
        .copied()
        .filter(|p| util::pod_active(p))
        .collect();
    let want = util::int(rs, "/spec/replicas", 1);
    let have = active.len() as i64;
    if !util::deleting(rs) {
        let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
        for _ in have..want {
            out.push(Action::Create {
                kind: Kind::Pod,
                ns: util::ns(rs).into(),
                obj: util::pod_from_template(&template, rs, None, &format!("{}-", util::name(rs))),
            });
        }
        if have > want {
            active.sort_by_key(|p| {
                (
                    util::pod_ready(p),
                    std::cmp::Reverse(
                        util::str_at(p, "/metadata/creationTimestamp")
                            .unwrap_or("")
                            .to_string(),
                    ),
                )
            });
            for p in &active[..(have - want) as usize] {
                out.push(util::delete(Kind::Pod, p, Propagation::Background));
            }
        }
    }
    let ready = pods
        .iter()
        .filter(|p| util::pod_active(p) && util::pod_ready(p))
        .count();
    let s = json!({
        "replicas": have,
        "fullyLabeledReplicas": have,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": util::generation(rs),
    });
    out.extend(util::status_action(Kind::ReplicaSet, rs, s));
    out
}
