//! Server-side printing: `meta.k8s.io/v1` Tables, which `kubectl get` asks for. Built-in kinds get
//! upstream's main columns (a subset for some kinds), custom resources their `additionalPrinterColumns`.

use serde_json::{json, Value};

use super::resources::{PrinterColumn, ResourceType};

fn col(name: &str, type_: &str, path: &str, priority: i64) -> PrinterColumn {
    PrinterColumn {
        name: name.into(),
        type_: type_.into(),
        json_path: path.into(),
        priority,
        description: String::new(),
    }
}

/// Columns whose cell is computed rather than read by a JSONPath start with `=`.
fn columns(rt: &ResourceType) -> Vec<PrinterColumn> {
    let age = col("Age", "date", ".metadata.creationTimestamp", 0);
    let name = col("Name", "string", ".metadata.name", 0);
    if !rt.builtin {
        let mut c = vec![name];
        if rt.printer_columns.is_empty() {
            c.push(age);
        } else {
            c.extend(rt.printer_columns.iter().cloned());
        }
        return c;
    }
    let mut c = match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => vec![
            name,
            col("Ready", "string", "=ready", 0),
            col("Status", "string", "=podstatus", 0),
            col("Restarts", "string", "=restarts", 0),
            age,
            col("IP", "string", ".status.podIP", 1),
            col("Node", "string", ".spec.nodeName", 1),
        ],
        ("", "Service") => vec![
            name,
            col("Type", "string", ".spec.type", 0),
            col("Cluster-IP", "string", ".spec.clusterIP", 0),
            col("External-IP", "string", "=externalip", 0),
            col("Port(s)", "string", "=ports", 0),
            age,
        ],
        ("", "Endpoints") => vec![name, col("Endpoints", "string", "=endpoints", 0), age],
        ("", "ConfigMap") => vec![name, col("Data", "integer", "=data", 0), age],
        ("", "Secret") => vec![
            name,
            col("Type", "string", ".type", 0),
            col("Data", "integer", "=data", 0),
            age,
        ],
        ("", "Namespace") => vec![name, col("Status", "string", ".status.phase", 0), age],
        ("", "PersistentVolumeClaim") => vec![
            name,
            col("Status", "string", ".status.phase", 0),
            col("Volume", "string", ".spec.volumeName", 0),
            col("Capacity", "string", ".status.capacity.storage", 0),
            age,
        ],
        ("", "Event") | ("events.k8s.io", "Event") => vec![
            col("Last Seen", "string", "=lastseen", 0),
            col("Type", "string", ".type", 0),
            col("Reason", "string", ".reason", 0),
            col("Object", "string", "=involved", 0),
            col("Message", "string", "=message", 0),
        ],
        ("apps", "StatefulSet") => vec![name, col("Ready", "string", "=replicas", 0), age],
        ("apps", "Deployment") => vec![
            name,
            col("Ready", "string", "=replicas", 0),
            col("Up-to-date", "integer", ".status.updatedReplicas", 0),
            col("Available", "integer", ".status.availableReplicas", 0),
            age,
        ],
        ("batch", "Job") => vec![name, col("Completions", "string", "=completions", 0), age],
        ("batch", "CronJob") => vec![
            name,
            col("Schedule", "string", ".spec.schedule", 0),
            col("Suspend", "boolean", ".spec.suspend", 0),
            col("Active", "integer", "=active", 0),
            col("Last Schedule", "date", ".status.lastScheduleTime", 0),
            age,
        ],
        ("policy", "PodDisruptionBudget") => vec![
            name,
            col("Min Available", "string", ".spec.minAvailable", 0),
            col("Max Unavailable", "string", ".spec.maxUnavailable", 0),
            col(
                "Allowed Disruptions",
                "integer",
                ".status.disruptionsAllowed",
                0,
            ),
            age,
        ],
        ("coordination.k8s.io", "Lease") => {
            vec![
                name,
                col("Holder", "string", ".spec.holderIdentity", 0),
                age,
            ]
        }
        ("apiextensions.k8s.io", _) => vec![
            name,
            col("Created At", "string", ".metadata.creationTimestamp", 0),
        ],
        _ => vec![name, age],
    };
    c.iter_mut().for_each(|c| c.description = c.name.clone());
    c
}

/// A small JSONPath: `.a.b`, `[0]`, and `[?(@.k=="v")]`.
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    let mut rest = path.trim_start_matches('{').trim_end_matches('}');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            cur = cur.get(&r[..end])?;
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            if let Some(f) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (k, v) = f.split_once("==")?;
                let v = v.trim().trim_matches('"').trim_matches('\'');
                cur = cur
                    .as_array()?
                    .iter()
                    .find(|i| i.get(k.trim()).and_then(Value::as_str) == Some(v))?;
            } else {
                cur = cur.get(inner.parse::<usize>().ok()?)?;
            }
        } else {
            return None;
        }
    }
    Some(cur)
}

/// kubectl's human durations: 45s, 5m12s, 45m, 3h15m, 20h, 3d5h, 100d, 2y.
pub fn human_age(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => format!("{m}m{}s", s % 60),
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24),
        _ if d < 730 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

fn age_of(ts: &str) -> String {
    match ts.parse::<jiff::Timestamp>() {
        Ok(t) => human_age(jiff::Timestamp::now().as_second() - t.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

fn computed(o: &Value, what: &str) -> Value {
    let arr = |p: &str| {
        o.pointer(p)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let int = |p: &str| o.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    match what {
        "ready" => {
            let statuses = arr("/status/containerStatuses");
            let ready = statuses
                .iter()
                .filter(|c| c["ready"] == json!(true))
                .count();
            json!(format!("{ready}/{}", arr("/spec/containers").len()))
        }
        "podstatus" if o.pointer("/metadata/deletionTimestamp").is_some() => json!("Terminating"),
        "podstatus" => {
            let waiting = arr("/status/containerStatuses").iter().find_map(|c| {
                c.pointer("/state/waiting/reason")
                    .and_then(Value::as_str)
                    .map(String::from)
            });
            let reason = o
                .pointer("/status/reason")
                .and_then(Value::as_str)
                .map(String::from);
            json!(reason.or(waiting).unwrap_or_else(|| o
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("Pending")
                .into()))
        }
        "restarts" => {
            let n: i64 = arr("/status/containerStatuses")
                .iter()
                .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                .sum();
            json!(n.to_string())
        }
        "externalip" => {
            let ips: Vec<String> = arr("/status/loadBalancer/ingress")
                .iter()
                .filter_map(|i| {
                    i["ip"]
                        .as_str()
                        .or(i["hostname"].as_str())
                        .map(String::from)
                })
                .collect();
            json!(if ips.is_empty() {
                "<none>".into()
            } else {
                ips.join(",")
            })
        }
        "ports" => {
            let ports: Vec<String> = arr("/spec/ports")
                .iter()
                .map(|p| match p.get("nodePort") {
                    Some(n) => format!(
                        "{}:{}/{}",
                        p["port"],
                        n,
                        p["protocol"].as_str().unwrap_or("TCP")
                    ),
                    None => format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP")),
                })
                .collect();
            json!(if ports.is_empty() {
                "<none>".into()
            } else {
                ports.join(",")
            })
        }
        "endpoints" => {
            let mut eps = Vec::new();
            for s in arr("/subsets") {
                for a in s["addresses"].as_array().into_iter().flatten() {
                    for p in s["ports"].as_array().into_iter().flatten() {
                        eps.push(format!(
                            "{}:{}",
                            a["ip"].as_str().unwrap_or_default(),
                            p["port"]
                        ));
                    }
                }
            }
            json!(if eps.is_empty() {
                "<none>".into()
            } else {
                eps.join(",")
            })
        }
        "data" => {
            let n = ["data", "binaryData"]
                .iter()
                .filter_map(|k| o.get(*k).and_then(Value::as_object))
                .map(|m| m.len())
                .sum::<usize>();
            json!(n)
        }
        "lastseen" => {
            let ts = ["lastTimestamp", "eventTime", "firstTimestamp"]
                .iter()
                .find_map(|k| o.get(*k).and_then(Value::as_str))
                .or(o
                    .pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str));
            json!(ts.map(age_of).unwrap_or_else(|| "<unknown>".into()))
        }
        "involved" => {
            let r = o
                .get("involvedObject")
                .or(o.get("regarding"))
                .cloned()
                .unwrap_or_default();
            json!(format!(
                "{}/{}",
                r["kind"].as_str().unwrap_or_default().to_lowercase(),
                r["name"].as_str().unwrap_or_default()
            ))
        }
        "message" => o
            .get("message")
            .or(o.get("note"))
            .cloned()
            .unwrap_or(json!("")),
        "replicas" => json!(format!(
            "{}/{}",
            int("/status/readyReplicas"),
            int("/spec/replicas")
        )),
        "completions" => json!(format!(
            "{}/{}",
            int("/status/succeeded"),
            o.pointer("/spec/completions")
                .and_then(Value::as_i64)
                .unwrap_or(1)
        )),
        "active" => json!(arr("/status/active").len()),
        _ => Value::Null,
    }
}

fn cell(o: &Value, c: &PrinterColumn) -> Value {
    let v = match c.json_path.strip_prefix('=') {
        Some(what) => computed(o, what),
        None => json_path(o, &c.json_path).cloned().unwrap_or(Value::Null),
    };
    match (c.type_.as_str(), v) {
        ("date", Value::String(ts)) => json!(age_of(&ts)),
        (_, Value::Null) if c.type_ == "string" && !c.json_path.starts_with('=') => json!("<none>"),
        (_, Value::Object(_) | Value::Array(_)) => json!("<object>"),
        (_, v) => v,
    }
}

fn row_object(o: &Value, include: &str) -> Value {
    match include {
        "None" => Value::Null,
        "Object" => o.clone(),
        _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata").cloned().unwrap_or(json!({}))}),
    }
}

/// A Table of `objects`; `include` is `includeObject` (`None`, `Metadata` (default), `Object`).
pub fn table(
    rt: &ResourceType,
    objects: &[Value],
    rv: &str,
    headers: bool,
    include: &str,
) -> Value {
    let cols = columns(rt);
    let defs: Vec<Value> = cols
        .iter()
        .map(|c| {
            let format = if c.name == "Name" { "name" } else { "" };
            json!({"name": c.name, "type": if c.type_ == "date" { "string" } else { c.type_.as_str() },
                   "format": format, "description": c.description, "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut r = json!({"cells": cols.iter().map(|c| cell(o, c)).collect::<Vec<_>>()});
            let obj = row_object(o, include);
            if !obj.is_null() {
                r["object"] = obj;
            }
            r
        })
        .collect();
    let mut t = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                       "metadata": {"resourceVersion": rv}, "rows": rows});
    if headers {
        t["columnDefinitions"] = Value::Array(defs);
    } else {
        t["columnDefinitions"] = Value::Null;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::Registry;

    #[test]
    fn json_paths_and_ages() {
        let o = json!({"status": {"conditions": [{"type": "X", "status": "False"}, {"type": "Ready", "status": "True"}]},
                       "spec": {"list": [1, 2]}});
        assert_eq!(
            json_path(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(&json!("True"))
        );
        assert_eq!(json_path(&o, ".spec.list[1]"), Some(&json!(2)));
        assert_eq!(json_path(&o, ".spec.missing"), None);
        assert_eq!(human_age(45), "45s");
        assert_eq!(human_age(312), "5m12s");
        assert_eq!(human_age(3 * 3600 + 15 * 60), "3h15m");
        assert_eq!(human_age(3 * 86400 + 5 * 3600), "3d5h");
    }

    #[test]
    fn pod_rows() {
        let r = Registry::builtin();
        let pods = r.find("", "v1", "pods").unwrap();
        let p = json!({"metadata": {"name": "acid-0", "creationTimestamp": "2020-01-01T00:00:00Z", "labels": {"a": "b"}},
                       "spec": {"containers": [{"name": "postgres"}]},
                       "status": {"phase": "Running", "containerStatuses": [{"ready": true, "restartCount": 2}]}});
        let t = table(&pods, &[p], "5", true, "Metadata");
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "acid-0");
        assert_eq!(cells[1], "1/1");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], "2");
        assert_eq!(t["rows"][0]["object"]["metadata"]["labels"]["a"], "b");
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
    }
}
