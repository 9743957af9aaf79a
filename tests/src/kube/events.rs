//! Events: one storage, two APIs. core/v1 Events (kubectl, Patroni, client-go recorders) and
//! events.k8s.io/v1 Events (kube-rs's `Recorder`) are the same objects, as upstream; this converts between
//! the two field sets. Storage is the core/v1 form.

use serde_json::{Map, Value};

use super::resources::ResourceType;

/// events.k8s.io/v1 name ↔ core/v1 name.
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(obj: &Value, to_core: bool, api_version: &str) -> Value {
    let Some(m) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::new();
    for (k, v) in m {
        let key = RENAMES
            .iter()
            .find_map(|(new, core)| match to_core {
                true if k == new => Some(*core),
                false if k == core => Some(*new),
                _ => None,
            })
            .unwrap_or(k);
        out.insert(key.to_string(), v.clone());
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String("Event".into()));
    Value::Object(out)
}

/// The stored form of an object written through `rt`.
pub fn to_storage(rt: &ResourceType, obj: Value) -> Value {
    if rt.group == "events.k8s.io" {
        rename(&obj, true, "v1")
    } else {
        obj
    }
}

/// The form of a stored object as served through `rt`.
pub fn to_view(rt: &ResourceType, obj: Value) -> Value {
    if rt.group == "events.k8s.io" {
        rename(&obj, false, &rt.api_version())
    } else {
        obj
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::Registry;
    use serde_json::json;

    #[test]
    fn events_round_trip_between_apis() {
        let r = Registry::builtin();
        let new = r.find("events.k8s.io", "v1", "events").unwrap();
        let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "postgresql", "name": "acid"}, "note": "created", "reason": "Create",
            "reportingController": "pgherd-coordinator", "type": "Normal", "series": {"count": 2}});
        let core = to_storage(&new, ev.clone());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["message"], "created");
        assert_eq!(core["involvedObject"]["name"], "acid");
        assert_eq!(core["reportingComponent"], "pgherd-coordinator");
        assert_eq!(to_view(&new, core.clone()), ev);
        let old = r.find("", "v1", "events").unwrap();
        assert_eq!(to_view(&old, core.clone()), core);
    }
}
