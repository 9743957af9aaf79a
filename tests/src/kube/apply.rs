//! Server-side apply and `metadata.managedFields`.
//!
//! Field sets are sets of paths in the `FieldsV1` vocabulary (`f:name`, `k:{"name":"x"}`, `v:"x"`, and `.`
//! for a keyed element itself), so they read and write the same `managedFields` the real server does.
//! Every write records which manager set which fields; an apply fails with a 409 listing the fields another
//! manager owns with a different value, unless forced, and removes the fields its manager applied before
//! and no longer applies (when no other manager owns them).
//!
//! Simplifications (docs/kube-standin.md): list semantics come from patch.rs's table (custom resources'
//! lists are atomic), there is no schema validation or defaulting of the applied configuration, and no
//! version conversion of field sets.

use serde_json::{json, Map, Value};

use super::fields::{fields_of, get_at, in_scope, path_string, remove_at, IGNORED_METADATA};
use super::patch::{list_type, same_element, ListType};

pub use super::fields::{FieldPath, FieldSet, Scope};

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub fields: FieldSet,
}

fn to_tree(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for p in set {
        let mut cur = &mut root;
        for el in p {
            cur = cur
                .entry(el.clone())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("tree node");
        }
    }
    Value::Object(root)
}

fn from_tree(tree: &Value, path: &mut FieldPath, out: &mut FieldSet) {
    match tree.as_object() {
        Some(m) if !m.is_empty() => {
            for (k, v) in m {
                path.push(k.clone());
                from_tree(v, path, out);
                path.pop();
            }
        }
        _ if !path.is_empty() => {
            out.insert(path.clone());
        }
        _ => {}
    }
}

pub fn read_entries(obj: &Value) -> Vec<Entry> {
    let s = |e: &Value, k: &str| e[k].as_str().unwrap_or_default().to_string();
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            let mut fields = FieldSet::new();
            from_tree(&e["fieldsV1"], &mut Vec::new(), &mut fields);
            Entry {
                manager: s(e, "manager"),
                operation: s(e, "operation"),
                api_version: s(e, "apiVersion"),
                time: s(e, "time"),
                subresource: s(e, "subresource"),
                fields,
            }
        })
        .collect()
}

pub fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                               "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": to_tree(&e.fields)});
            if !e.subresource.is_empty() {
                v["subresource"] = Value::String(e.subresource.clone());
            }
            v
        })
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Who is writing, and through which version and subresource.
#[derive(Clone, Debug)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub builtin: bool,
    pub scope: Scope,
    pub now: &'a str,
}

impl Writer<'_> {
    fn subresource(&self) -> &'static str {
        if self.scope == Scope::Status {
            "status"
        } else {
            ""
        }
    }

    fn entry<'e>(&self, entries: &'e mut Vec<Entry>, operation: &str) -> &'e mut Entry {
        let sub = self.subresource();
        let pos = entries.iter().position(|e| {
            e.manager == self.manager && e.operation == operation && e.subresource == sub
        });
        let pos = pos.unwrap_or_else(|| {
            entries.push(Entry {
                manager: self.manager.into(),
                operation: operation.into(),
                api_version: self.api_version.into(),
                time: self.now.into(),
                subresource: sub.into(),
                fields: FieldSet::new(),
            });
            entries.len() - 1
        });
        &mut entries[pos]
    }
}

fn differs(old: &Value, new: &Value, p: &[String], builtin: bool) -> bool {
    let (a, b) = (get_at(old, p, builtin), get_at(new, p, builtin));
    if p.last().map(String::as_str) == Some(".") {
        a.is_some() != b.is_some()
    } else {
        a != b
    }
}

/// Records a non-apply write (create, update, patch): the writer takes the fields it changed from everyone.
pub fn record_update(entries: &mut Vec<Entry>, old: &Value, new: &Value, w: &Writer) {
    let new_fields = fields_of(new, w.builtin, w.scope);
    let old_fields = fields_of(old, w.builtin, w.scope);
    let changed: FieldSet = new_fields
        .iter()
        .chain(old_fields.difference(&new_fields))
        .filter(|p| differs(old, new, p, w.builtin))
        .cloned()
        .collect();
    if changed.is_empty() {
        return;
    }
    for e in entries
        .iter_mut()
        .filter(|e| e.subresource == w.subresource())
    {
        e.fields.retain(|p| !changed.contains(p));
    }
    let e = w.entry(entries, "Update");
    e.fields.extend(changed.intersection(&new_fields).cloned());
    e.time = w.now.into();
    e.api_version = w.api_version.into();
    entries.retain(|e| !e.fields.is_empty());
}

/// A field another manager owns with a different value.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub field: String,
}

/// Server-side apply of `applied` onto `live` (an empty object when creating).
pub fn apply(
    live: &Value,
    applied: &Value,
    entries: &mut Vec<Entry>,
    force: bool,
    w: &Writer,
) -> Result<Value, Vec<Conflict>> {
    let new_set = fields_of(applied, w.builtin, w.scope);
    let sub = w.subresource();
    let mine = |e: &Entry| e.manager == w.manager && e.operation == "Apply" && e.subresource == sub;
    let mut conflicts = Vec::new();
    for e in entries.iter().filter(|e| !mine(e) && e.subresource == sub) {
        for p in e.fields.intersection(&new_set) {
            if p.last().map(String::as_str) != Some(".") && differs(live, applied, p, w.builtin) {
                conflicts.push((e.manager.clone(), e.api_version.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts
            .into_iter()
            .map(|(manager, api_version, p)| Conflict {
                manager,
                api_version,
                field: path_string(&p),
            })
            .collect());
    }
    for e in entries.iter_mut() {
        e.fields.retain(|p| {
            !conflicts
                .iter()
                .any(|(m, _, cp)| *m == e.manager && cp == p)
        });
    }
    let previous = entries
        .iter()
        .find(|e| mine(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: FieldSet = entries
        .iter()
        .filter(|e| !mine(e) && e.subresource == sub)
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut out = live.clone();
    // Deepest paths first, so an element goes after its fields.
    let mut dropped: Vec<&FieldPath> = previous
        .iter()
        .filter(|p| !new_set.contains(*p) && !others.contains(*p))
        .collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        remove_at(&mut out, p, w.builtin);
    }
    let mut names = Vec::new();
    for (k, v) in applied.as_object().into_iter().flatten() {
        if in_scope(k, w.scope) {
            names.push(k.as_str());
            merge_field(&mut out[k.as_str()], v, w.builtin, &mut names);
            names.pop();
        }
    }
    let e = w.entry(entries, "Apply");
    if e.fields != new_set {
        e.time = w.now.into();
    }
    e.fields = new_set;
    e.api_version = w.api_version.into();
    entries.retain(|e| !e.fields.is_empty());
    Ok(out)
}

/// Merges an applied value into the live one: maps by key, keyed lists by element, sets by union.
fn merge_field<'a>(live: &mut Value, applied: &'a Value, builtin: bool, names: &mut Vec<&'a str>) {
    match applied {
        Value::Object(am) => {
            if !live.is_object() {
                *live = Value::Object(Map::new());
            }
            let lm = live.as_object_mut().expect("object");
            for (k, v) in am {
                if names.len() == 1
                    && names[0] == "metadata"
                    && IGNORED_METADATA.contains(&k.as_str())
                {
                    continue;
                }
                if v.is_null() {
                    lm.remove(k);
                    continue;
                }
                names.push(k);
                merge_field(
                    lm.entry(k.clone()).or_insert(Value::Null),
                    v,
                    builtin,
                    names,
                );
                names.pop();
            }
        }
        Value::Array(items) => match (list_type(builtin, names), live.as_array_mut()) {
            (ListType::Set, Some(cur)) => {
                for i in items {
                    if !cur.contains(i) {
                        cur.push(i.clone());
                    }
                }
            }
            (ListType::Map(keys), Some(cur)) => {
                for i in items {
                    match cur.iter_mut().find(|c| same_element(c, i, keys)) {
                        Some(c) => merge_field(c, i, builtin, names),
                        None => cur.push(i.clone()),
                    }
                }
            }
            _ => *live = applied.clone(),
        },
        v => *live = v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w<'a>(manager: &'a str) -> Writer<'a> {
        Writer {
            manager,
            api_version: "apps/v1",
            builtin: true,
            scope: Scope::Main { has_status: true },
            now: "2026-01-01T00:00:00Z",
        }
    }

    fn sts(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
               "metadata": {"name": "acid", "labels": {"team": "acid"}},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                   {"name": "postgres", "image": image}]}}}})
    }

    #[test]
    fn fields_and_tree_round_trip() {
        let f = fields_of(&sts(2, "img"), true, Scope::Main { has_status: true });
        let paths: Vec<String> = f.iter().map(|p| p.join("/")).collect();
        assert!(paths.contains(&"f:metadata/f:labels/f:team".to_string()));
        assert!(paths.contains(
            &"f:spec/f:template/f:spec/f:containers/k:{\"name\":\"postgres\"}/.".to_string()
        ));
        assert!(!paths
            .iter()
            .any(|p| p.contains("f:name/") || p == "f:metadata/f:name"));
        let mut obj = json!({"metadata": {}});
        let e = Entry {
            manager: "m".into(),
            operation: "Apply".into(),
            api_version: "v1".into(),
            time: "t".into(),
            subresource: String::new(),
            fields: f.clone(),
        };
        write_entries(&mut obj, std::slice::from_ref(&e));
        assert_eq!(read_entries(&obj), vec![e]);
    }

    #[test]
    fn conflicts_force_and_removal() {
        let mut entries = Vec::new();
        let live = apply(&json!({}), &sts(2, "a"), &mut entries, false, &w("pgherd")).unwrap();
        assert_eq!(live["spec"]["replicas"], 2);
        // kubectl scale (an update) takes .spec.replicas.
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(&mut entries, &live, &scaled, &w("kubectl"));
        // Re-applying the same replicas conflicts with kubectl; the same value would not.
        let err = apply(&scaled, &sts(2, "a"), &mut entries, false, &w("pgherd")).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(
            (err[0].manager.as_str(), err[0].field.as_str()),
            ("kubectl", ".spec.replicas")
        );
        assert!(apply(
            &scaled,
            &sts(5, "a"),
            &mut entries.clone(),
            false,
            &w("pgherd")
        )
        .is_ok());
        let forced = apply(&scaled, &sts(2, "a"), &mut entries, true, &w("pgherd")).unwrap();
        assert_eq!(forced["spec"]["replicas"], 2);
        assert!(entries.iter().all(|e| e.manager == "pgherd"));
        // Applying without the label removes it: no one else owns it.
        let mut cfg = sts(2, "a");
        cfg["metadata"].as_object_mut().unwrap().remove("labels");
        let after = apply(&forced, &cfg, &mut entries, false, &w("pgherd")).unwrap();
        assert_eq!(after["metadata"].get("labels"), Some(&json!({})));
    }

    #[test]
    fn shared_fields_survive_and_elements_are_removed() {
        let mut entries = Vec::new();
        let mut two = sts(1, "a");
        two["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "exporter", "image": "e"}));
        let live = apply(&json!({}), &two, &mut entries, false, &w("a")).unwrap();
        // Manager b applies the same label: co-owned, so a dropping it keeps it.
        let b_cfg = json!({"metadata": {"name": "acid", "labels": {"team": "acid"}}});
        let live = apply(&live, &b_cfg, &mut entries, false, &w("b")).unwrap();
        let mut a_cfg = sts(1, "a");
        a_cfg["metadata"].as_object_mut().unwrap().remove("labels");
        let live = apply(&live, &a_cfg, &mut entries, false, &w("a")).unwrap();
        assert_eq!(live["metadata"]["labels"], json!({"team": "acid"}));
        let c = live["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(
            c.len(),
            1,
            "the exporter container a no longer applies is removed"
        );
    }

    #[test]
    fn status_scope_is_separate() {
        let obj = json!({"spec": {"a": 1}, "status": {"phase": "Running"}});
        let main = fields_of(&obj, true, Scope::Main { has_status: true });
        let status = fields_of(&obj, true, Scope::Status);
        assert_eq!(main.len(), 1);
        assert_eq!(
            status.iter().next().unwrap(),
            &vec!["f:status".to_string(), "f:phase".into()]
        );
        assert_eq!(
            fields_of(&obj, true, Scope::Main { has_status: false }).len(),
            2
        );
    }

    #[test]
    fn path_strings() {
        let p: FieldPath = ["f:spec", "f:containers", "k:{\"name\":\"pg\"}", "f:image"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(path_string(&p), ".spec.containers[name=\"pg\"].image");
    }
}
