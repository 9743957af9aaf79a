//! Field-by-field comparison of a desired object with a live one, visiting
//! only the fields pgherd sets, so values the API server adds or
//! canonicalises never count as a difference (upstream's hand-written
//! comparison rolled pods on such values: postgres-operator#927, #1377).

use serde_json::Value;

/// Annotation holding the hash of the object pgherd last applied (`reconcile::apply`): it differs whenever
/// anything else does, so it is never a difference of its own.
pub const HASH_ANNOTATION: &str = "pgherd.io/desired-hash";

/// How a field pgherd sets but the live object lacks is counted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Absent {
    /// As a change (explaining an update: the field is new).
    Changed,
    /// Not at all (drift detection: the server may have dropped it).
    Ignored,
}

/// Paths of fields we set whose live value differs, for events and logs.
/// Only the fields present in `desired` are visited, so defaults added by the
/// API server never show up. Values are left out: env can hold credentials.
pub fn changed_paths(desired: &Value, live: &Value) -> Vec<String> {
    paths(desired, live, Absent::Changed)
}

/// Paths of fields we set that the live object holds with another value.
pub fn drifted_paths(desired: &Value, live: &Value) -> Vec<String> {
    paths(desired, live, Absent::Ignored)
}

fn paths(desired: &Value, live: &Value, absent: Absent) -> Vec<String> {
    let mut out = Vec::new();
    walk("", desired, Some(live), absent, &mut out);
    let hash = format!(".metadata.annotations.{HASH_ANNOTATION}");
    out.retain(|p| !p.starts_with(&hash));
    out
}

/// Values the API server omits when stored (Go's `omitempty`).
fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Resource quantities come back in canonical form (`0.5` as `500m`,
/// `1024Mi` as `1Gi`): equal amounts are not a change.
fn same_quantity(path: &str, a: &str, b: &str) -> bool {
    let is_quantity = [".requests.", ".limits.", ".capacity."]
        .iter()
        .any(|p| path.contains(p))
        || path.ends_with(".sizeLimit");
    if !is_quantity {
        return false;
    }
    match (crate::quantity::parse(a), crate::quantity::parse(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()) * 4.0,
        _ => false,
    }
}

fn walk(path: &str, d: &Value, l: Option<&Value>, absent: Absent, out: &mut Vec<String>) {
    match (d, l.filter(|l| !l.is_null())) {
        (dv, None) => {
            if absent == Absent::Changed && !is_empty_value(dv) {
                out.push(path.to_string());
            }
        }
        (Value::Object(dm), Some(Value::Object(lm))) => {
            for (k, dv) in dm {
                walk(&format!("{path}.{k}"), dv, lm.get(k), absent, out);
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
                walk(&format!("{path}{label}"), dv, lv, absent, out);
            }
        }
        (dv, Some(lv)) if dv == lv => {}
        (Value::String(a), Some(Value::String(b))) if same_quantity(path, a, b) => {}
        _ => out.push(path.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The hash is written on every apply, so a stale one alone must never count as a change or drift.
    #[test]
    fn the_desired_hash_annotation_is_not_a_difference() {
        let desired = json!({"metadata": {"annotations": {HASH_ANNOTATION: "new", "other": "x"}}});
        let live = json!({"metadata": {"annotations": {HASH_ANNOTATION: "old", "other": "y"}}});
        assert_eq!(
            changed_paths(&desired, &live),
            [".metadata.annotations.other"]
        );
        assert_eq!(
            drifted_paths(&desired, &live),
            [".metadata.annotations.other"]
        );
    }
}
