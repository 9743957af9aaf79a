//! The Endpoints controller: for every Service with a selector, Endpoints of the same name listing the
//! selected pods' IPs, Ready ones in `addresses` and the others in `notReadyAddresses`. Zalando's master
//! Service selects `spilo-role=master`, so a label change on a pod must move it in or out.
//!
//! Services without a selector are never touched: Patroni's Kubernetes DCS writes their Endpoints itself.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::util::{self, Time};
use super::{Action, Controller, Kind, Snapshot};
use crate::kube::store::Propagation;

pub const NAME: &str = "endpoint-controller";

pub fn controller() -> Controller {
    Controller {
        name: NAME,
        reads: &[Kind::Service, Kind::Pod, Kind::Endpoints],
        decide: Box::new(decide),
    }
}

fn selector(svc: &Value) -> Option<&Map<String, Value>> {
    svc.pointer("/spec/selector")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
}

pub fn decide(snap: &Snapshot, _now: Time) -> Vec<Action> {
    let mut out = Vec::new();
    for svc in snap.all(Kind::Service) {
        if selector(svc).is_none() {
            continue;
        }
        let ns = util::ns(svc);
        let pods: Vec<&Value> = snap.in_ns(Kind::Pod, ns).collect();
        let ep = snap
            .in_ns(Kind::Endpoints, ns)
            .find(|e| util::name(e) == util::name(svc));
        out.extend(reconcile(svc, &pods, ep));
    }
    // Endpoints only this controller ever wrote, whose Service is gone (upstream deletes them on the
    // Service's deletion; Endpoints written by others, such as Patroni's, stay).
    for ep in snap.all(Kind::Endpoints) {
        let has_svc = snap
            .in_ns(Kind::Service, util::ns(ep))
            .any(|s| util::name(s) == util::name(ep) && selector(s).is_some());
        if !has_svc && only_ours(ep) && !util::deleting(ep) {
            out.push(util::delete(Kind::Endpoints, ep, Propagation::Background));
        }
    }
    out
}

fn only_ours(ep: &Value) -> bool {
    let mf = ep
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array);
    mf.is_some_and(|m| {
        !m.is_empty()
            && m.iter()
                .all(|e| e.get("manager").and_then(Value::as_str) == Some(NAME))
    })
}

/// One Service with a selector, the pods of its namespace and its Endpoints → the write, if any.
pub fn reconcile(svc: &Value, pods: &[&Value], ep: Option<&Value>) -> Option<Action> {
    let sel = selector(svc)?;
    let headless = util::str_at(svc, "/spec/clusterIP") == Some("None");
    let publish_not_ready = svc.pointer("/spec/publishNotReadyAddresses") == Some(&json!(true));
    // ports → (ready addresses, not-ready addresses), keyed so equal port sets share a subset.
    let mut subsets: BTreeMap<String, (Value, Vec<Value>, Vec<Value>)> = BTreeMap::new();
    for p in pods {
        let labels = util::labels(p);
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            continue;
        }
        let Some(ip) = util::str_at(p, "/status/podIP").filter(|s| !s.is_empty()) else {
            continue;
        };
        if util::deleting(p) || util::pod_terminal(p) {
            continue;
        }
        let mut addr = json!({"ip": ip, "targetRef": {"kind": "Pod", "namespace": util::ns(p),
            "name": util::name(p), "uid": util::uid(p)}});
        if let Some(n) = util::str_at(p, "/spec/nodeName") {
            addr["nodeName"] = json!(n);
        }
        if let Some(h) = util::str_at(p, "/spec/hostname").filter(|h| !h.is_empty()) {
            if util::str_at(p, "/spec/subdomain") == Some(util::name(svc)) {
                addr["hostname"] = json!(h);
            }
        }
        let ports = pod_ports(svc, p);
        let e = subsets
            .entry(ports.to_string())
            .or_insert_with(|| (ports, vec![], vec![]));
        if publish_not_ready || util::pod_ready(p) {
            e.1.push(addr);
        } else {
            e.2.push(addr);
        }
    }
    let by_ip = |a: &Value, b: &Value| a["ip"].as_str().cmp(&b["ip"].as_str());
    let subsets: Vec<Value> = subsets
        .into_values()
        .map(|(ports, mut ready, mut unready)| {
            ready.sort_by(by_ip);
            unready.sort_by(by_ip);
            let mut s = json!({});
            if !ready.is_empty() {
                s["addresses"] = json!(ready);
            }
            if !unready.is_empty() {
                s["notReadyAddresses"] = json!(unready);
            }
            if ports.as_array().is_some_and(|p| !p.is_empty()) {
                s["ports"] = ports;
            }
            s
        })
        .collect();
    let mut labels = util::labels(svc);
    if headless {
        labels.insert("service.kubernetes.io/headless".into(), json!(""));
    }
    let ns = util::ns(svc).to_string();
    let name = util::name(svc).to_string();
    match ep {
        None => {
            let mut obj = json!({"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": name, "labels": labels}});
            if !subsets.is_empty() {
                obj["subsets"] = json!(subsets);
            }
            Some(Action::Create {
                kind: Kind::Endpoints,
                ns,
                obj,
            })
        }
        Some(ep) => {
            let old_subsets = ep.get("subsets").cloned().unwrap_or(json!([]));
            if old_subsets == json!(subsets) && util::labels(ep) == labels {
                return None;
            }
            let mut obj = ep.clone();
            obj["metadata"]["labels"] = json!(labels);
            match obj.as_object_mut() {
                Some(m) if subsets.is_empty() => {
                    m.remove("subsets");
                }
                Some(m) => {
                    m.insert("subsets".into(), json!(subsets));
                }
                None => {}
            }
            Some(Action::Update {
                kind: Kind::Endpoints,
                ns,
                name,
                obj,
            })
        }
    }
}

/// The Service's ports with `targetPort` resolved for one pod (a named one through its container ports;
/// a port the pod does not have is left out, as upstream).
fn pod_ports(svc: &Value, pod: &Value) -> Value {
    let mut out = Vec::new();
    for sp in svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let protocol = sp.get("protocol").cloned().unwrap_or(json!("TCP"));
        let target = sp
            .get("targetPort")
            .or_else(|| sp.get("port"))
            .cloned()
            .unwrap_or(Value::Null);
        let port = match &target {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse::<i64>().ok().or_else(|| named_port(pod, s)),
            _ => None,
        };
        let Some(port) = port else { continue };
        let mut p = json!({"port": port, "protocol": protocol});
        if let Some(n) = sp
            .get("name")
            .filter(|n| n.as_str().is_some_and(|s| !s.is_empty()))
        {
            p["name"] = n.clone();
        }
        if let Some(a) = sp.get("appProtocol") {
            p["appProtocol"] = a.clone();
        }
        out.push(p);
    }
    json!(out)
}

fn named_port(pod: &Value, name: &str) -> Option<i64> {
    pod.pointer("/spec/containers")?
        .as_array()?
        .iter()
        .flat_map(|c| {
            c.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))?
        .get("containerPort")?
        .as_i64()
}
