//! Deciding which objects to write, without talking to the API server.
//!
//! Every desired object carries a hash of itself in an annotation. An object
//! is applied only when the live object is missing, carries a different
//! hash, or holds another value in a field pgherd sets (drift), so an
//! unchanged cluster costs zero writes, and API-server defaults, webhooks or
//! foreign annotations (fields pgherd never sets) cannot cause a rollout
//! (upstream rolls pods on every sync after such differences:
//! zalando/postgres-operator#1377, #1955, #2436).

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::builders::DesiredObjects;
use crate::diff::HASH_ANNOTATION;
pub use crate::diff::{changed_paths, drifted_paths};
use crate::kube_api::ObjectKey;

/// An object to write, in creation order.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub key: ObjectKey,
    pub object: Value,
    /// Secrets are created once and never updated.
    pub create_only: bool,
}

fn hash(obj: &Value) -> String {
    // serde_json's map is ordered, so the serialisation is canonical.
    let digest = Sha256::digest(serde_json::to_vec(obj).expect("serialisable"));
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Adds the hash annotation (computed over the object without it).
pub fn stamp(mut obj: Value) -> Value {
    let h = hash(&obj);
    let meta = obj
        .as_object_mut()
        .expect("object")
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let annotations = meta
        .as_object_mut()
        .expect("metadata object")
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    annotations
        .as_object_mut()
        .expect("annotations object")
        .insert(HASH_ANNOTATION.into(), Value::String(h));
    obj
}

pub fn hash_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/annotations")?
        .get(HASH_ANNOTATION)?
        .as_str()
}

fn to_json<T: serde::Serialize>(o: &T) -> Value {
    serde_json::to_value(o).expect("k8s objects serialise")
}

/// Flattens the builders' output into stamped objects in creation order.
pub fn desired_list(d: &DesiredObjects) -> Vec<Desired> {
    let mut values: Vec<(Value, bool)> = vec![
        (to_json(&d.service_account), false),
        (to_json(&d.role_binding), false),
    ];
    values.extend(d.endpoints.iter().map(|o| (to_json(o), false)));
    values.extend(d.services.iter().map(|o| (to_json(o), false)));
    values.extend(d.secrets.iter().map(|o| (to_json(o), true)));
    values.extend(d.pdbs.iter().map(|o| (to_json(o), false)));
    let mut statefulset = to_json(&d.statefulset);
    crate::rolling::template::stamp_template(&mut statefulset);
    values.push((statefulset, false));
    values
        .into_iter()
        .map(|(v, create_only)| {
            let object = if create_only { v } else { stamp(v) };
            Desired {
                key: ObjectKey::of(&object).expect("builders set kind, namespace and name"),
                object,
                create_only,
            }
        })
        .collect()
}

/// Why an object is applied.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The object does not exist yet.
    Created,
    /// pgherd's desired state changed (the stored hash differs); the paths
    /// say which fields pgherd sets now differ.
    Updated(Vec<String>),
    /// pgherd's desired state is unchanged, but someone else changed fields
    /// pgherd sets (`kubectl edit`, another controller); applying reverts them.
    Drifted(Vec<String>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Server-side apply.
    Apply { desired: Desired, change: Change },
    /// Create if absent (credentials).
    Create { desired: Desired },
}

impl Step {
    pub fn desired(&self) -> &Desired {
        match self {
            Step::Apply { desired, .. } | Step::Create { desired } => desired,
        }
    }

    /// The event text explaining this write. Paths only, never values:
    /// env can hold credentials.
    pub fn note(&self) -> String {
        let key = &self.desired().key;
        let list = |paths: &[String]| {
            let shown: Vec<&str> = paths.iter().take(8).map(String::as_str).collect();
            let more = paths.len().saturating_sub(shown.len());
            let suffix = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!("{}{suffix}", shown.join(", "))
        };
        match self {
            Step::Create { .. }
            | Step::Apply {
                change: Change::Created,
                ..
            } => format!("created {key}"),
            Step::Apply {
                change: Change::Updated(paths),
                ..
            } if paths.is_empty() => format!("updated {key} (pgherd's desired state changed)"),
            Step::Apply {
                change: Change::Updated(paths),
                ..
            } => format!("updated {key}: {}", list(paths)),
            Step::Apply {
                change: Change::Drifted(paths),
                ..
            } => format!(
                "reverted {key}: {} had been changed outside pgherd",
                list(paths)
            ),
        }
    }
}

/// Compares desired objects with what the API server holds.
///
/// An object is applied when it is missing, when its stored hash differs
/// from the desired one, or when a field pgherd sets holds a different value
/// on the live object (drift). Fields pgherd does not set, and fields that
/// are absent on the live object, are never compared: the API server drops
/// empty values and fields of disabled features, and a comparison that
/// counted those would write on every resync.
pub fn plan(desired: &[Desired], live: &BTreeMap<ObjectKey, Option<Value>>) -> Vec<Step> {
    let mut steps = Vec::new();
    for d in desired {
        let current = live.get(&d.key).cloned().flatten();
        let change = match (d.create_only, current) {
            (true, None) => {
                steps.push(Step::Create { desired: d.clone() });
                continue;
            }
            (true, Some(_)) => continue,
            (false, None) => Change::Created,
            (false, Some(cur)) if hash_of(&cur) != hash_of(&d.object) => {
                Change::Updated(changed_paths(&d.object, &cur))
            }
            (false, Some(cur)) => {
                let drift = drifted_paths(&d.object, &cur);
                if drift.is_empty() {
                    continue;
                }
                Change::Drifted(drift)
            }
        };
        steps.push(Step::Apply {
            desired: d.clone(),
            change,
        });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stamp_is_stable_and_sensitive() {
        let a = stamp(json!({"kind": "Service", "metadata": {"name": "x"}, "spec": {"a": 1}}));
        let b = stamp(json!({"kind": "Service", "metadata": {"name": "x"}, "spec": {"a": 1}}));
        let c = stamp(json!({"kind": "Service", "metadata": {"name": "x"}, "spec": {"a": 2}}));
        assert_eq!(hash_of(&a), hash_of(&b));
        assert_ne!(hash_of(&a), hash_of(&c));
    }

    #[test]
    fn changed_paths_ignore_server_defaults() {
        let desired = json!({"spec": {"containers": [{"name": "postgres", "image": "a", "resources": {"requests": {"cpu": "1"}}}]}});
        let live = json!({"spec": {"containers": [{"name": "postgres", "image": "a", "terminationMessagePath": "/dev/x", "resources": {"requests": {"cpu": "2"}}}]}});
        assert_eq!(
            changed_paths(&desired, &live),
            [".spec.containers[postgres].resources.requests.cpu"]
        );
    }

    #[test]
    fn drift_counts_changed_values_only() {
        let desired = json!({"spec": {
            "replicas": 2,
            "tolerations": [],
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain"},
            "containers": [{"name": "postgres", "image": "a",
                "env": [{"name": "WAL_BUCKET_SCOPE_PREFIX", "value": ""}],
                "resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}}}]}});
        // What the API server stores for it: empty values and a disabled
        // feature's field dropped, quantities canonical, defaults added.
        let stored = json!({"spec": {
            "replicas": 2,
            "revisionHistoryLimit": 10,
            "containers": [{"name": "postgres", "image": "a",
                "env": [{"name": "WAL_BUCKET_SCOPE_PREFIX"}],
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]}});
        assert_eq!(drifted_paths(&desired, &stored), Vec::<String>::new());
        assert_eq!(
            changed_paths(&desired, &stored),
            [".spec.persistentVolumeClaimRetentionPolicy"]
        );

        let mut edited = stored.clone();
        edited["spec"]["replicas"] = json!(0);
        edited["spec"]["containers"][0]["image"] = json!("b");
        edited["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("2");
        assert_eq!(
            drifted_paths(&desired, &edited),
            [
                ".spec.containers[postgres].image",
                ".spec.containers[postgres].resources.requests.cpu",
                ".spec.replicas",
            ]
        );
        // A number-like string outside resources is compared as text.
        assert_eq!(
            drifted_paths(&json!({"data": {"x": "1"}}), &json!({"data": {"x": "1.0"}})),
            [".data.x"]
        );
    }

    #[test]
    fn plan_reapplies_drift_and_explains_it() {
        let d = desired_list_of(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "x", "namespace": "ns"}, "spec": {"type": "ClusterIP"}}));
        let mut live = d.object.clone();
        let unchanged = BTreeMap::from([(d.key.clone(), Some(live.clone()))]);
        assert_eq!(plan(std::slice::from_ref(&d), &unchanged), vec![]);

        live["spec"]["type"] = json!("NodePort");
        let drifted = BTreeMap::from([(d.key.clone(), Some(live))]);
        let steps = plan(std::slice::from_ref(&d), &drifted);
        assert_eq!(
            steps,
            vec![Step::Apply {
                desired: d.clone(),
                change: Change::Drifted(vec![".spec.type".into()]),
            }]
        );
        assert_eq!(
            steps[0].note(),
            "reverted Service ns/x: .spec.type had been changed outside pgherd"
        );
        let missing = BTreeMap::from([(d.key.clone(), None)]);
        assert_eq!(
            plan(std::slice::from_ref(&d), &missing)[0].note(),
            "created Service ns/x"
        );
    }

    fn desired_list_of(obj: Value) -> Desired {
        let object = stamp(obj);
        Desired {
            key: ObjectKey::of(&object).unwrap(),
            object,
            create_only: false,
        }
    }
}
