//! Helpers the controllers share: object fields, owner references, pod states, template hashes, time.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{Action, Kind};
use crate::kube::store::Propagation;

/// Seconds since the epoch: the controllers' clock, passed in so decisions are testable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time(pub i64);

impl Time {
    pub fn now() -> Time {
        Time(jiff::Timestamp::now().as_second())
    }

    /// An RFC 3339 timestamp, as objects carry them.
    pub fn parse(s: &str) -> Option<Time> {
        s.parse::<jiff::Timestamp>()
            .ok()
            .map(|t| Time(t.as_second()))
    }

    pub fn rfc3339(self) -> String {
        jiff::Timestamp::from_second(self.0)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default()
    }
}

pub fn name(o: &Value) -> &str {
    o.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn ns(o: &Value) -> &str {
    o.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn uid(o: &Value) -> &str {
    o.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn rv(o: &Value) -> String {
    o.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

pub fn generation(o: &Value) -> i64 {
    o.pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

pub fn deleting(o: &Value) -> bool {
    o.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

pub fn created(o: &Value) -> Option<Time> {
    o.pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(Time::parse)
}

pub fn labels(o: &Value) -> Map<String, Value> {
    o.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

pub fn annotation<'a>(o: &'a Value, k: &str) -> Option<&'a str> {
    o.pointer("/metadata/annotations")?.get(k)?.as_str()
}

pub fn int(o: &Value, ptr: &str, default: i64) -> i64 {
    o.pointer(ptr).and_then(Value::as_i64).unwrap_or(default)
}

pub fn str_at<'a>(o: &'a Value, ptr: &str) -> Option<&'a str> {
    o.pointer(ptr).and_then(Value::as_str)
}

/// The uid of the controlling owner.
pub fn controller_uid(o: &Value) -> Option<&str> {
    o.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller") == Some(&json!(true)))?
        .get("uid")?
        .as_str()
}

/// A controller reference to `owner`, as upstream's `NewControllerRef`.
pub fn controller_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner.get("apiVersion").cloned().unwrap_or(Value::Null),
        "kind": owner.get("kind").cloned().unwrap_or(Value::Null),
        "name": name(owner),
        "uid": uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

pub fn phase(p: &Value) -> &str {
    str_at(p, "/status/phase").unwrap_or("Pending")
}

pub fn condition<'a>(o: &'a Value, type_: &str) -> Option<&'a Value> {
    o.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
}

pub fn condition_true(o: &Value, type_: &str) -> bool {
    condition(o, type_).is_some_and(|c| c.get("status").and_then(Value::as_str) == Some("True"))
}

pub fn pod_ready(p: &Value) -> bool {
    condition_true(p, "Ready")
}

/// Running and Ready and not being deleted: what OrderedReady waits for.
pub fn pod_healthy(p: &Value) -> bool {
    phase(p) == "Running" && pod_ready(p) && !deleting(p)
}

pub fn pod_terminal(p: &Value) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

/// Not finished and not being deleted: what ReplicaSets and Jobs count.
pub fn pod_active(p: &Value) -> bool {
    !pod_terminal(p) && !deleting(p)
}

/// A short, stable hash of a template, in upstream's alphabet (no vowels, so no words).
pub fn hash(v: &Value, collisions: i64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(v).unwrap_or_default());
    if collisions > 0 {
        h.update(collisions.to_le_bytes());
    }
    let d = h.finalize();
    let mut n = u32::from_le_bytes([d[0], d[1], d[2], d[3]]) as u64;
    let mut s = String::new();
    while s.len() < 10 {
        s.push(ALPHABET[(n % ALPHABET.len() as u64) as usize] as char);
        n /= ALPHABET.len() as u64;
        if n == 0 && s.len() >= 8 {
            break;
        }
    }
    s
}

/// The condition `type_` with `status`, keeping the old one's transition time when the status is the
/// same (so a resync writes nothing).
pub fn set_condition(
    conds: &mut Vec<Value>,
    old: Option<&Value>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Time,
) {
    let same = old.is_some_and(|c| {
        c.get("status").and_then(Value::as_str) == Some(status)
            && c.get("reason").and_then(Value::as_str) == Some(reason)
    });
    let c = match old {
        Some(o) if same => o.clone(),
        _ => {
            let t = old
                .filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| json!(now.rfc3339()));
            json!({"type": type_, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": t, "lastUpdateTime": now.rfc3339()})
        }
    };
    conds.push(c);
}

/// A status write when `status` differs from the stored one.
pub fn status_action(kind: Kind, o: &Value, status: Value) -> Option<Action> {
    let old = o.get("status").cloned().unwrap_or(json!({}));
    (old != status).then(|| Action::Status {
        kind,
        ns: ns(o).into(),
        name: name(o).into(),
        resource_version: rv(o),
        status,
    })
}

pub fn delete(kind: Kind, o: &Value, propagation: Propagation) -> Action {
    Action::Delete {
        kind,
        ns: ns(o).into(),
        name: name(o).into(),
        uid: uid(o).into(),
        propagation,
    }
}

/// `maxSurge`/`maxUnavailable`: an int, or a percentage of `total` rounded up or down.
pub fn int_or_percent(v: Option<&Value>, total: i64, default: &str, round_up: bool) -> i64 {
    let v = v.cloned().unwrap_or(json!(default));
    if let Some(i) = v.as_i64() {
        return i;
    }
    let s = v.as_str().unwrap_or(default);
    let p: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
    if round_up {
        (p * total + 99) / 100
    } else {
        p * total / 100
    }
}

/// A pod from a template: its metadata and spec, the given name or generateName prefix, the owner.
pub fn pod_from_template(
    template: &Value,
    owner: &Value,
    name: Option<&str>,
    prefix: &str,
) -> Value {
    let mut meta = json!({
        "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
        "ownerReferences": [controller_ref(owner)],
    });
    if let Some(a) = template.pointer("/metadata/annotations") {
        meta["annotations"] = a.clone();
    }
    match name {
        Some(n) => meta["name"] = json!(n),
        None => meta["generateName"] = json!(prefix),
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    })
}
