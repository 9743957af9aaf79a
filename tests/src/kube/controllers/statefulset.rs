//! The StatefulSet controller: ordinal pods with stable names and claims, ControllerRevisions, the
//! OrderedReady and Parallel policies, OnDelete and RollingUpdate (with `partition`), following upstream's
//! `StatefulSetControl` closely enough that Patroni's and the operator's expectations hold (pods come back
//! with the same name and claim; a rolling update goes highest ordinal first).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::util::{self, Time};
use super::{Action, Controller, Kind, Snapshot};
use crate::kube::store::Propagation;

pub const NAME: &str = "statefulset-controller";
pub const REVISION_LABEL: &str = "controller-revision-hash";

pub fn controller() -> Controller {
    Controller {
        name: NAME,
        reads: &[
            Kind::StatefulSet,
            Kind::Pod,
            Kind::Pvc,
            Kind::ControllerRevision,
        ],
        decide: Box::new(decide),
    }
}

pub fn decide(snap: &Snapshot, _now: Time) -> Vec<Action> {
    let mut out = Vec::new();
    for sts in snap.all(Kind::StatefulSet) {
        let pods = snap.owned_by(Kind::Pod, sts);
        let revisions = snap.owned_by(Kind::ControllerRevision, sts);
        let pvcs: Vec<&Value> = snap.in_ns(Kind::Pvc, util::ns(sts)).collect();
        out.extend(reconcile(sts, &pods, &pvcs, &revisions));
    }
    out
}

/// The ordinal of `pod` in `sts`, from its name `<sts>-<i>`.
fn ordinal(sts: &str, pod: &Value) -> Option<i64> {
    util::name(pod)
        .strip_prefix(sts)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

fn pod_revision(p: &Value) -> &str {
    p.pointer("/metadata/labels/controller-revision-hash")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// What upstream stores in a ControllerRevision: a patch replacing the template.
fn revision_data(template: &Value) -> Value {
    let mut t = template.clone();
    t["$patch"] = json!("replace");
    json!({"spec": {"template": t}})
}

fn revision_template(rev: &Value) -> Option<Value> {
    let mut t = rev.pointer("/data/spec/template")?.clone();
    t.as_object_mut()?.remove("$patch");
    Some(t)
}

/// One StatefulSet, its pods, the claims of its namespace and its revisions → actions.
pub fn reconcile(
    sts: &Value,
    pods: &[&Value],
    pvcs: &[&Value],
    revisions: &[&Value],
) -> Vec<Action> {
    if util::deleting(sts) {
        return vec![];
    }
    let mut out = Vec::new();
    let name = util::name(sts);
    let ns = util::ns(sts);
    let template = sts.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let collisions = util::int(sts, "/status/collisionCount", 0);
    let hash = util::hash(&template, collisions);
    let update_rev = format!("{name}-{hash}");
    let max_rev = revisions
        .iter()
        .map(|r| util::int(r, "/revision", 0))
        .max()
        .unwrap_or(0);
    match revisions.iter().find(|r| util::name(r) == update_rev) {
        None => {
            let mut labels = sts
                .pointer("/spec/template/metadata/labels")
                .cloned()
                .unwrap_or(json!({}));
            labels[REVISION_LABEL] = json!(hash);
            out.push(Action::Create {
                kind: Kind::ControllerRevision,
                ns: ns.into(),
                obj: json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
                    "metadata": {"name": update_rev, "labels": labels,
                        "ownerReferences": [util::controller_ref(sts)]},
                    "data": revision_data(&template), "revision": max_rev + 1}),
            });
        }
        // A rollback to an older template makes its revision the newest again, as upstream.
        Some(r) if util::int(r, "/revision", 0) < max_rev => {
            let mut r = (*r).clone();
            r["revision"] = json!(max_rev + 1);
            out.push(Action::Update {
                kind: Kind::ControllerRevision,
                ns: ns.into(),
                name: update_rev.clone(),
                obj: r,
            });
        }
        Some(_) => {}
    }
    let current_rev = util::str_at(sts, "/status/currentRevision")
        .filter(|c| revisions.iter().any(|r| util::name(r) == *c))
        .unwrap_or(&update_rev)
        .to_string();
    let current_template = revisions
        .iter()
        .find(|r| util::name(r) == current_rev)
        .and_then(|r| revision_template(r))
        .unwrap_or_else(|| template.clone());

    let replicas = util::int(sts, "/spec/replicas", 1);
    let parallel = util::str_at(sts, "/spec/podManagementPolicy") == Some("Parallel");
    let on_delete = util::str_at(sts, "/spec/updateStrategy/type") == Some("OnDelete");
    let partition = if on_delete {
        0
    } else {
        util::int(sts, "/spec/updateStrategy/rollingUpdate/partition", 0)
    };
    let by_ord: BTreeMap<i64, &Value> = pods
        .iter()
        .filter_map(|p| ordinal(name, p).map(|i| (i, *p)))
        .collect();

    // Pods 0..replicas: create the missing (claims first), replace the failed, wait for the unready.
    let mut blocked = false;
    for i in 0..replicas {
        if blocked {
            break;
        }
        let pod_name = format!("{name}-{i}");
        let claims = claim_actions(sts, i, pvcs);
        match by_ord.get(&i) {
            None => {
                out.extend(claims);
                let (t, rev) = if !on_delete && i < partition {
                    (&current_template, &current_rev)
                } else {
                    (&template, &update_rev)
                };
                out.push(new_pod(sts, t, rev, i, &pod_name));
                blocked = !parallel;
            }
            Some(p) if util::deleting(p) => blocked = !parallel,
            // Upstream replaces Succeeded pods too: a StatefulSet's pods are meant to run.
            Some(p) if util::pod_terminal(p) => {
                out.push(util::delete(Kind::Pod, p, Propagation::Background));
                blocked = !parallel;
            }
            Some(p) => {
                out.extend(claims);
                blocked = !parallel && !util::pod_healthy(p);
            }
        }
    }
    let all_healthy = (0..replicas).all(|i| by_ord.get(&i).is_some_and(|p| util::pod_healthy(p)));

    // Condemned pods (ordinal ≥ replicas), highest first; OrderedReady one at a time, after the rest is up.
    let condemned: Vec<&Value> = by_ord.range(replicas..).rev().map(|(_, p)| *p).collect();
    let condemn = |p: &Value, out: &mut Vec<Action>| {
        out.extend(scaled_claims(sts, p, pvcs));
        out.push(util::delete(Kind::Pod, p, Propagation::Background));
    };
    if parallel {
        for p in condemned.iter().filter(|p| !util::deleting(p)) {
            condemn(p, &mut out);
        }
    } else if let Some(p) = condemned.first() {
        if !util::deleting(p) && all_healthy && !blocked {
            condemn(p, &mut out);
        }
    }

    // RollingUpdate: the highest ordinal not at the update revision, one at a time, all others Ready.
    if !on_delete && all_healthy && condemned.is_empty() {
        if let Some(p) = (partition..replicas)
            .rev()
            .filter_map(|i| by_ord.get(&i))
            .find(|p| pod_revision(p) != hash)
        {
            out.push(util::delete(Kind::Pod, p, Propagation::Background));
        }
    }

    out.extend(status(sts, pods, &current_rev, &update_rev, replicas));
    out
}

/// The claims of ordinal `i` that do not exist yet.
fn claim_actions(sts: &Value, i: i64, pvcs: &[&Value]) -> Vec<Action> {
    let name = util::name(sts);
    let retain_deleted = util::str_at(
        sts,
        "/spec/persistentVolumeClaimRetentionPolicy/whenDeleted",
    ) != Some("Delete");
    let mut out = Vec::new();
    for t in claim_templates(sts) {
        let claim = format!("{}-{name}-{i}", util::name(t));
        if pvcs.iter().any(|p| util::name(p) == claim) {
            continue;
        }
        let mut labels = util::labels(t);
        if let Some(m) = sts
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
        {
            labels.extend(m.clone());
        }
        let mut meta = json!({"name": claim, "labels": labels});
        if let Some(a) = t.pointer("/metadata/annotations") {
            meta["annotations"] = a.clone();
        }
        if !retain_deleted {
            let mut r = util::controller_ref(sts);
            r["controller"] = json!(false);
            meta["ownerReferences"] = json!([r]);
        }
        out.push(Action::Create {
            kind: Kind::Pvc,
            ns: util::ns(sts).into(),
            obj: json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
                "spec": t.get("spec").cloned().unwrap_or(json!({}))}),
        });
    }
    out
}

/// `whenScaled: Delete`: the claims of a pod about to be scaled away get it as an owner, so the garbage
/// collector takes them with the pod (as upstream; the reference must exist before the pod goes).
fn scaled_claims(sts: &Value, pod: &Value, pvcs: &[&Value]) -> Vec<Action> {
    let policy = "/spec/persistentVolumeClaimRetentionPolicy/whenScaled";
    if util::str_at(sts, policy) != Some("Delete") {
        return vec![];
    }
    let Some(i) = ordinal(util::name(sts), pod) else {
        return vec![];
    };
    let mut out = Vec::new();
    for t in claim_templates(sts) {
        let claim = format!("{}-{}-{i}", util::name(t), util::name(sts));
        let Some(pvc) = pvcs.iter().find(|p| util::name(p) == claim) else {
            continue;
        };
        let mut refs: Vec<Value> = pvc
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if refs
            .iter()
            .any(|r| r.get("uid").and_then(Value::as_str) == Some(util::uid(pod)))
        {
            continue;
        }
        let mut r = util::controller_ref(pod);
        r["controller"] = json!(false);
        refs.push(r);
        out.push(Action::Patch {
            kind: Kind::Pvc,
            ns: util::ns(sts).into(),
            name: claim,
            patch: json!({"metadata": {"ownerReferences": refs}}),
        });
    }
    out
}

fn new_pod(sts: &Value, template: &Value, rev: &str, i: i64, pod_name: &str) -> Action {
    let name = util::name(sts);
    let mut pod = util::pod_from_template(template, sts, Some(pod_name), "");
    let hash = rev.strip_prefix(&format!("{name}-")).unwrap_or(rev);
    let labels = &mut pod["metadata"]["labels"];
    labels[REVISION_LABEL] = json!(hash);
    labels["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
    labels["apps.kubernetes.io/pod-index"] = json!(i.to_string());
    pod["spec"]["hostname"] = json!(pod_name);
    if let Some(s) = util::str_at(sts, "/spec/serviceName").filter(|s| !s.is_empty()) {
        pod["spec"]["subdomain"] = json!(s);
    }
    let mut volumes: Vec<Value> = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for t in claim_templates(sts) {
        let v = util::name(t);
        volumes.retain(|x| x.get("name").and_then(Value::as_str) != Some(v));
        volumes.push(
            json!({"name": v, "persistentVolumeClaim": {"claimName": format!("{v}-{name}-{i}")}}),
        );
    }
    if !volumes.is_empty() {
        pod["spec"]["volumes"] = json!(volumes);
    }
    Action::Create {
        kind: Kind::Pod,
        ns: util::ns(sts).into(),
        obj: pod,
    }
}

fn status(
    sts: &Value,
    pods: &[&Value],
    current_rev: &str,
    update_rev: &str,
    replicas: i64,
) -> Option<Action> {
    let name = util::name(sts);
    let hash_of = |r: &str| r.strip_prefix(&format!("{name}-")).unwrap_or(r).to_string();
    let (cur, upd) = (hash_of(current_rev), hash_of(update_rev));
    let live: Vec<&&Value> = pods.iter().filter(|p| ordinal(name, p).is_some()).collect();
    let count = |f: &dyn Fn(&Value) -> bool| live.iter().filter(|p| f(p)).count() as i64;
    let ready = count(&|p| util::pod_healthy(p));
    let updated = count(&|p| pod_revision(p) == upd);
    let mut current = count(&|p| pod_revision(p) == cur);
    let mut current_rev = current_rev.to_string();
    let rolling = util::str_at(sts, "/spec/updateStrategy/type") != Some("OnDelete");
    if rolling && updated == replicas && ready == replicas && live.len() as i64 == replicas {
        current_rev = update_rev.to_string();
        current = updated;
    }
    let mut s = json!({
        "observedGeneration": util::generation(sts),
        "replicas": live.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "currentRevision": current_rev,
        "updateRevision": update_rev,
        "collisionCount": util::int(sts, "/status/collisionCount", 0),
    });
    if let Some(c) = sts.pointer("/status/conditions") {
        s["conditions"] = c.clone();
    }
    util::status_action(Kind::StatefulSet, sts, s)
}

/// The StatefulSet's `volumeClaimTemplates`.
fn claim_templates(sts: &Value) -> impl Iterator<Item = &Value> {
    sts.pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}
