//! PVC binding: every Pending claim gets a PersistentVolume of its size and becomes Bound at once, as with
//! a dynamic provisioner whose storage is always there. Where the data lives on the host is the pod
//! runner's business. A volume whose claim is gone is deleted (reclaim policy `Delete`).

use serde_json::{json, Value};

use super::util::{self, Time};
use super::{Action, Controller, Kind, Snapshot};
use crate::kube::store::Propagation;

pub const NAME: &str = "persistentvolume-binder-controller";

pub fn controller() -> Controller {
    Controller {
        name: NAME,
        reads: &[Kind::Pvc, Kind::Pv],
        decide: Box::new(decide),
    }
}

pub fn volume_name(pvc: &Value) -> String {
    format!("pvc-{}", util::uid(pvc))
}

pub fn decide(snap: &Snapshot, _now: Time) -> Vec<Action> {
    let mut out = Vec::new();
    let pvs = snap.all(Kind::Pv);
    for pvc in snap.all(Kind::Pvc) {
        if util::deleting(pvc) {
            continue;
        }
        let pv_name = util::str_at(pvc, "/spec/volumeName")
            .map(String::from)
            .unwrap_or_else(|| volume_name(pvc));
        let pv = pvs.iter().find(|v| util::name(v) == pv_name);
        out.extend(bind(pvc, pv));
    }
    for pv in pvs {
        let claim = pv.pointer("/spec/claimRef/uid").and_then(Value::as_str);
        let Some(claim) = claim else { continue };
        let alive = snap.all(Kind::Pvc).iter().any(|c| util::uid(c) == claim);
        if !alive && !util::deleting(pv) {
            out.push(util::delete(Kind::Pv, pv, Propagation::Background));
        }
    }
    out
}

/// One claim and its volume (if it exists) → the writes that bind them.
pub fn bind(pvc: &Value, pv: Option<&Value>) -> Vec<Action> {
    let mut out = Vec::new();
    let pv_name = util::str_at(pvc, "/spec/volumeName")
        .map(String::from)
        .unwrap_or_else(|| volume_name(pvc));
    let modes = pvc
        .pointer("/spec/accessModes")
        .cloned()
        .unwrap_or(json!(["ReadWriteOnce"]));
    let capacity = pvc
        .pointer("/spec/resources/requests/storage")
        .cloned()
        .unwrap_or(json!("1Gi"));
    match pv {
        None => {
            let mut spec = json!({
                "capacity": {"storage": capacity},
                "accessModes": modes,
                "persistentVolumeReclaimPolicy": "Delete",
                "volumeMode": pvc.pointer("/spec/volumeMode").cloned().unwrap_or(json!("Filesystem")),
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "namespace": util::ns(pvc), "name": util::name(pvc), "uid": util::uid(pvc)},
            });
            if let Some(c) = pvc.pointer("/spec/storageClassName") {
                spec["storageClassName"] = c.clone();
            }
            out.push(Action::Create {
                kind: Kind::Pv,
                ns: String::new(),
                obj: json!({"apiVersion": "v1", "kind": "PersistentVolume",
                    "metadata": {"name": pv_name,
                        "annotations": {"pv.kubernetes.io/provisioned-by": "pgherd-standin"}},
                    "spec": spec}),
            });
        }
        Some(pv) => {
            if util::str_at(pv, "/status/phase") != Some("Bound") {
                out.push(Action::Status {
                    kind: Kind::Pv,
                    ns: String::new(),
                    name: pv_name.clone(),
                    resource_version: util::rv(pv),
                    status: json!({"phase": "Bound"}),
                });
            }
        }
    }
    // Status first: it carries the resourceVersion the patch below changes.
    let status = json!({"phase": "Bound", "accessModes": modes, "capacity": {"storage": capacity}});
    out.extend(util::status_action(Kind::Pvc, pvc, status));
    if util::str_at(pvc, "/spec/volumeName").is_none() {
        out.push(Action::Patch {
            kind: Kind::Pvc,
            ns: util::ns(pvc).into(),
            name: util::name(pvc).into(),
            patch: json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes",
                "pv.kubernetes.io/bound-by-controller": "yes"}},
                "spec": {"volumeName": pv_name}}),
        });
    }
    out
}
