//! Field paths in the `FieldsV1` vocabulary of `managedFields`: `f:name` for a field, `k:{"name":"x"}` for
//! an element of a keyed list, `v:"x"` for an item of a set, and `.` for a keyed element itself. A field
//! set is the set of leaf paths an object (or an applied configuration) sets.

use std::collections::BTreeSet;

use serde_json::Value;

use super::patch::{element_key, list_type, same_element, ListType};

pub type FieldPath = Vec<String>;
pub type FieldSet = BTreeSet<FieldPath>;

/// Which part of an object a write covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The main resource; `status` is excluded when the kind has a status subresource.
    Main { has_status: bool },
    /// The `status` subresource.
    Status,
}

pub(super) const IGNORED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

pub(super) fn in_scope(key: &str, scope: Scope) -> bool {
    match scope {
        _ if key == "apiVersion" || key == "kind" => false,
        Scope::Status => key == "status",
        Scope::Main { has_status } => !(has_status && key == "status"),
    }
}

/// The fields set in `obj` (leaves, plus `.` for every keyed list element).
pub fn fields_of(obj: &Value, builtin: bool, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(m) = obj.as_object() else {
        return out;
    };
    let mut names = Vec::new();
    let mut path = Vec::new();
    for (k, v) in m.iter().filter(|(k, _)| in_scope(k, scope)) {
        if k == "metadata" {
            for (mk, mv) in v.as_object().into_iter().flatten() {
                if IGNORED_METADATA.contains(&mk.as_str()) {
                    continue;
                }
                let mut names = vec!["metadata", mk.as_str()];
                let mut path = vec!["f:metadata".to_string(), format!("f:{mk}")];
                walk_field(mv, builtin, &mut names, &mut path, &mut out);
            }
            continue;
        }
        names.push(k.as_str());
        path.push(format!("f:{k}"));
        walk_field(v, builtin, &mut names, &mut path, &mut out);
        names.pop();
        path.pop();
    }
    out
}

fn walk_field<'a>(
    v: &'a Value,
    builtin: bool,
    names: &mut Vec<&'a str>,
    path: &mut FieldPath,
    out: &mut FieldSet,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                names.push(k);
                path.push(format!("f:{k}"));
                walk_field(c, builtin, names, path, out);
                names.pop();
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match list_type(builtin, names) {
            ListType::Atomic => {
                out.insert(path.clone());
            }
            ListType::Set => {
                for i in items {
                    let mut p = path.clone();
                    p.push(format!("v:{i}"));
                    out.insert(p);
                }
            }
            ListType::Map(keys) => {
                for i in items {
                    path.push(format!("k:{}", element_key(i, keys)));
                    let mut own = path.clone();
                    own.push(".".into());
                    out.insert(own);
                    walk_field(i, builtin, names, path, out);
                    path.pop();
                }
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at a field path (for `.`, the element itself).
pub fn get_at<'a>(obj: &'a Value, path: &[String], builtin: bool) -> Option<&'a Value> {
    let mut cur = obj;
    let mut names: Vec<&str> = Vec::new();
    for el in path {
        if el == "." {
            return Some(cur);
        } else if let Some(f) = el.strip_prefix("f:") {
            cur = cur.get(f)?;
            names.push(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Value = serde_json::from_str(k).ok()?;
            let ListType::Map(keys) = list_type(builtin, &names) else {
                return None;
            };
            cur = cur
                .as_array()?
                .iter()
                .find(|i| same_element(i, &key, keys))?;
        } else if let Some(v) = el.strip_prefix("v:") {
            let item: Value = serde_json::from_str(v).ok()?;
            cur = cur.as_array()?.iter().find(|i| **i == item)?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Removes the field (or keyed element, or set item) at a path; returns whether something was removed.
pub fn remove_at(obj: &mut Value, path: &[String], builtin: bool) -> bool {
    let (parent_path, last) = match path.split_last() {
        Some((l, rest)) if l == "." => match rest.split_last() {
            Some((k, p)) => (p, k),
            None => return false,
        },
        Some((l, rest)) => (rest, l),
        None => return false,
    };
    let names: Vec<&str> = parent_path
        .iter()
        .filter_map(|e| e.strip_prefix("f:"))
        .collect();
    let Some(parent) = get_at_mut(obj, parent_path, builtin) else {
        return false;
    };
    if let Some(f) = last.strip_prefix("f:") {
        return parent.as_object_mut().and_then(|m| m.remove(f)).is_some();
    }
    let Some(items) = parent.as_array_mut() else {
        return false;
    };
    let before = items.len();
    if let Some(k) = last.strip_prefix("k:") {
        if let (Ok(key), ListType::Map(keys)) =
            (serde_json::from_str::<Value>(k), list_type(builtin, &names))
        {
            items.retain(|i| !same_element(i, &key, keys));
        }
    } else if let Some(v) = last.strip_prefix("v:") {
        if let Ok(item) = serde_json::from_str::<Value>(v) {
            items.retain(|i| *i != item);
        }
    }
    items.len() != before
}

fn get_at_mut<'a>(obj: &'a mut Value, path: &[String], builtin: bool) -> Option<&'a mut Value> {
    let mut cur = obj;
    let mut names: Vec<&str> = Vec::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            cur = cur.get_mut(f)?;
            names.push(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Value = serde_json::from_str(k).ok()?;
            let ListType::Map(keys) = list_type(builtin, &names) else {
                return None;
            };
            cur = cur
                .as_array_mut()?
                .iter_mut()
                .find(|i| same_element(i, &key, keys))?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// `.spec.containers[name="postgres"].image`, as upstream prints conflicting fields.
pub fn path_string(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Value = serde_json::from_str(k).unwrap_or(Value::Null);
            let parts: Vec<String> = key
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}
