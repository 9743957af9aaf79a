//! Deciding which objects to write, without talking to the API server.
//!
//! Every desired object carries a hash of itself in an annotation. An object
//! is applied only when the live object is missing or carries a different
//! hash, so an unchanged cluster costs zero writes, and API-server defaults,
//! webhooks or foreign annotations (which never enter our hash) cannot cause
//! a rollout (user-pain-points.md §1).

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::builders::DesiredObjects;
use crate::kube_api::ObjectKey;

/// Annotation holding the hash of the object pgherd last applied.
pub const HASH_ANNOTATION: &str = "pgherd.io/desired-hash";

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
    values.push((to_json(&d.statefulset), false));
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

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Server-side apply; `changes` explains why (empty for a new object).
    Apply {
        desired: Desired,
        created: bool,
        changes: Vec<String>,
    },
    /// Create if absent (credentials).
    Create { desired: Desired },
}

/// Compares desired objects with what the API server holds.
pub fn plan(desired: &[Desired], live: &BTreeMap<ObjectKey, Option<Value>>) -> Vec<Step> {
    let mut steps = Vec::new();
    for d in desired {
        let current = live.get(&d.key).cloned().flatten();
        match (d.create_only, current) {
            (true, None) => steps.push(Step::Create { desired: d.clone() }),
            (true, Some(_)) => {}
            (false, None) => steps.push(Step::Apply {
                desired: d.clone(),
                created: true,
                changes: Vec::new(),
            }),
            (false, Some(cur)) => {
                if hash_of(&cur) != hash_of(&d.object) {
                    steps.push(Step::Apply {
                        desired: d.clone(),
                        created: false,
                        changes: changed_paths(&d.object, &cur),
                    });
                }
            }
        }
    }
    steps
}

/// Paths of fields we set whose live value differs, for events and logs.
/// Only the fields present in `desired` are visited, so defaults added by the
/// API server never show up. Values are left out: env can hold credentials.
pub fn changed_paths(desired: &Value, live: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk("", desired, Some(live), &mut out);
    out.retain(|p| !p.starts_with(".metadata.annotations.pgherd.io/desired-hash"));
    out
}

fn walk(path: &str, d: &Value, l: Option<&Value>, out: &mut Vec<String>) {
    match (d, l) {
        (Value::Object(dm), Some(Value::Object(lm))) => {
            for (k, dv) in dm {
                walk(&format!("{path}.{k}"), dv, lm.get(k), out);
            }
        }
        (Value::Array(da), Some(Value::Array(la))) => {
            for (i, dv) in da.iter().enumerate() {
                // Name containers, env vars and ports by name when they have one.
                let label = dv
                    .get("name")
                    .and_then(Value::as_str)
                    .map(|n| format!("[{n}]"))
                    .unwrap_or_else(|| format!("[{i}]"));
                let lv = match dv.get("name") {
                    Some(n) => la.iter().find(|x| x.get("name") == Some(n)),
                    None => la.get(i),
                };
                walk(&format!("{path}{label}"), dv, lv, out);
            }
        }
        (dv, Some(lv)) if dv == lv => {}
        (Value::Null, None) => {}
        _ => out.push(path.to_string()),
    }
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
}
