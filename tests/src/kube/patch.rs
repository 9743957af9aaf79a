//! Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902), and strategic merge patch for the lists
//! kubectl, Patroni and pgherd touch. The list keys below are also what server-side apply (apply.rs) uses.
//!
//! Simplifications (docs/kube-standin.md): the list schema is a table keyed by field name, not the full
//! OpenAPI of every kind; lists not in it are atomic (replaced whole). `$setElementOrder` is ignored.

use serde_json::{Map, Value};

/// How a list field merges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListType {
    /// Replaced whole.
    Atomic,
    /// A set of scalars: union on merge (`metadata.finalizers`).
    Set,
    /// Elements identified by these keys, merged one by one.
    Map(&'static [&'static str]),
}

/// The merge semantics of the list at `path` (field names from the root, list elements skipped).
pub fn list_type(builtin: bool, path: &[&str]) -> ListType {
    let last = path.last().copied().unwrap_or_default();
    let parent = path
        .len()
        .checked_sub(2)
        .map(|i| path[i])
        .unwrap_or_default();
    if path.len() == 2 && path[0] == "metadata" {
        return match last {
            "finalizers" => ListType::Set,
            "ownerReferences" => ListType::Map(&["uid"]),
            _ => ListType::Atomic,
        };
    }
    if !builtin {
        return ListType::Atomic;
    }
    match (parent, last) {
        (_, "containers" | "initContainers" | "ephemeralContainers") => ListType::Map(&["name"]),
        ("containers" | "initContainers" | "ephemeralContainers", "ports") => {
            ListType::Map(&["containerPort", "protocol"])
        }
        ("spec", "ports") if path.len() == 2 => ListType::Map(&["port", "protocol"]),
        (_, "env" | "volumes" | "imagePullSecrets") => ListType::Map(&["name"]),
        (_, "volumeMounts") => ListType::Map(&["mountPath"]),
        (_, "volumeDevices") => ListType::Map(&["devicePath"]),
        (_, "conditions") => ListType::Map(&["type"]),
        (_, "readinessGates") => ListType::Map(&["conditionType"]),
        (_, "hostAliases") => ListType::Map(&["ip"]),
        (_, "topologySpreadConstraints") => ListType::Map(&["topologyKey", "whenUnsatisfiable"]),
        _ => ListType::Atomic,
    }
}

/// A key field's value, with upstream's default for `protocol`.
fn normalized_key(item: &Value, key: &str) -> Value {
    match item.get(key) {
        Some(v) => v.clone(),
        None if key == "protocol" => Value::String("TCP".into()),
        None => Value::Null,
    }
}

/// Whether two elements of a keyed list are the same element.
pub fn same_element(a: &Value, b: &Value, keys: &[&str]) -> bool {
    keys.iter()
        .all(|k| normalized_key(a, k) == normalized_key(b, k))
}

/// The key object of an element (`{"name":"postgres"}`), as in `k:` managed-field paths.
pub fn element_key(item: &Value, keys: &[&str]) -> Value {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = item.get(*k) {
            m.insert((*k).to_string(), v.clone());
        }
    }
    Value::Object(m)
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(doc: &mut Value, patch: &Value) {
    json_patch::merge(doc, patch);
}

/// RFC 6902 JSON patch.
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), String> {
    let ops: Vec<json_patch::PatchOperation> =
        serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    json_patch::patch(doc, &ops).map_err(|e| e.to_string())
}

/// Strategic merge patch of a built-in object.
pub fn strategic_merge(doc: &mut Value, patch: &Value) -> Result<(), String> {
    let mut path = Vec::new();
    smp_value(doc, patch, &mut path)
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        v => v.clone(),
    }
}

fn smp_value<'a>(doc: &mut Value, patch: &'a Value, path: &mut Vec<&'a str>) -> Result<(), String> {
    let Some(pm) = patch.as_object() else {
        *doc = strip_directives(patch);
        return Ok(());
    };
    match pm.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *doc = strip_directives(patch);
            return Ok(());
        }
        Some("delete") => {
            *doc = Value::Null;
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch directive {other:?}")),
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let dm = doc.as_object_mut().expect("object");
    if let Some(keep) = pm.get("$retainKeys").and_then(Value::as_array) {
        dm.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k)));
    }
    for (k, pv) in pm {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(del)) = (dm.get_mut(field), pv.as_array()) {
                items.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        path.push(k);
        match pv {
            Value::Null => {
                dm.remove(k);
            }
            Value::Array(items) => {
                let cur = dm.entry(k.clone()).or_insert(Value::Array(vec![]));
                smp_list(cur, items, path)?;
            }
            Value::Object(_) => {
                let cur = dm.entry(k.clone()).or_insert(Value::Null);
                smp_value(cur, pv, path)?;
                if cur.is_null() {
                    dm.remove(k);
                }
            }
            v => {
                dm.insert(k.clone(), v.clone());
            }
        }
        path.pop();
    }
    Ok(())
}

fn smp_list<'a>(
    doc: &mut Value,
    items: &'a [Value],
    path: &mut Vec<&'a str>,
) -> Result<(), String> {
    let replace = items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
    let kind = list_type(true, path);
    if replace || kind == ListType::Atomic || !doc.is_array() {
        *doc = Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        );
        return Ok(());
    }
    let cur = doc.as_array_mut().expect("array");
    match kind {
        ListType::Set => {
            for i in items {
                if !cur.contains(i) {
                    cur.push(i.clone());
                }
            }
        }
        ListType::Map(keys) => {
            for item in items {
                let pos = cur.iter().position(|c| same_element(c, item, keys));
                if item.get("$patch").and_then(Value::as_str) == Some("delete") {
                    if let Some(p) = pos {
                        cur.remove(p);
                    }
                    continue;
                }
                match pos {
                    Some(p) => smp_value(&mut cur[p], item, path)?,
                    None => cur.push(strip_directives(item)),
                }
            }
        }
        ListType::Atomic => unreachable!(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_sets_and_removes() {
        let mut d = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "data": {"x": "1"}});
        merge_patch(
            &mut d,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}, "data": null}),
        );
        assert_eq!(d, json!({"metadata": {"labels": {"b": "2", "c": "3"}}}));
    }

    #[test]
    fn json_patch_ops_and_test_failure() {
        let mut d = json!({"spec": {"replicas": 1}});
        json_patch(
            &mut d,
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
        )
        .unwrap();
        assert_eq!(d["spec"]["replicas"], 3);
        assert!(json_patch(
            &mut d,
            &json!([{"op": "test", "path": "/spec/replicas", "value": 1}])
        )
        .is_err());
    }

    #[test]
    fn strategic_merge_keys_containers_env_and_ports() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "postgres", "image": "a", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
             "ports": [{"containerPort": 5432}, {"containerPort": 8008}]},
            {"name": "sidecar", "image": "s"}]}}}});
        let p = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "postgres", "image": "b", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
             "ports": [{"containerPort": 8008, "protocol": "TCP", "name": "patroni"}]},
            {"name": "sidecar", "$patch": "delete"}]}}}});
        strategic_merge(&mut d, &p).unwrap();
        let c = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(c.as_array().unwrap().len(), 1);
        assert_eq!(c[0]["image"], "b");
        assert_eq!(
            c[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
        );
        assert_eq!(
            c[0]["ports"][1],
            json!({"containerPort": 8008, "protocol": "TCP", "name": "patroni"})
        );
    }

    #[test]
    fn strategic_merge_as_patroni_sends_it() {
        // Patroni patches Endpoints with annotations (null deletes), a resourceVersion and whole subsets.
        let mut d = json!({"metadata": {"name": "c", "annotations": {"leader": "m0", "optime": "1"},
                           "labels": {"application": "spilo"}},
                           "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 5432}]}]});
        let p = json!({"metadata": {"annotations": {"leader": null, "optime": "2"}, "resourceVersion": "7"},
                       "subsets": []});
        strategic_merge(&mut d, &p).unwrap();
        assert_eq!(d["metadata"]["annotations"], json!({"optime": "2"}));
        assert_eq!(d["metadata"]["resourceVersion"], "7");
        assert_eq!(d["subsets"], json!([]));
        assert_eq!(d["metadata"]["labels"], json!({"application": "spilo"}));
    }

    #[test]
    fn strategic_merge_directives() {
        let mut d = json!({"metadata": {"finalizers": ["a", "b"]},
                           "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                                    "tolerations": [{"key": "x"}]}});
        let p = json!({"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]},
                       "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"},
                                "tolerations": [{"key": "y"}]}});
        strategic_merge(&mut d, &p).unwrap();
        assert_eq!(d["metadata"]["finalizers"], json!(["b", "c"]));
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(d["spec"]["tolerations"], json!([{"key": "y"}]));
        let mut d2 = json!({"data": {"a": "1"}});
        strategic_merge(&mut d2, &json!({"data": {"$patch": "replace", "b": "2"}})).unwrap();
        assert_eq!(d2, json!({"data": {"b": "2"}}));
    }

    #[test]
    fn list_types() {
        assert_eq!(list_type(true, &["metadata", "finalizers"]), ListType::Set);
        assert_eq!(list_type(false, &["metadata", "finalizers"]), ListType::Set);
        assert_eq!(list_type(false, &["spec", "containers"]), ListType::Atomic);
        assert_eq!(
            list_type(true, &["spec", "ports"]),
            ListType::Map(&["port", "protocol"])
        );
        assert_eq!(
            list_type(true, &["spec", "template", "spec", "containers", "ports"]),
            ListType::Map(&["containerPort", "protocol"])
        );
        assert_eq!(list_type(true, &["subsets"]), ListType::Atomic);
        assert!(same_element(
            &json!({"port": 5432}),
            &json!({"port": 5432, "protocol": "TCP"}),
            &["port", "protocol"]
        ));
    }
}
