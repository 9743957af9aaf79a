//! The API server's own changes to written objects: a subset of upstream's defaulting (the fields pgherd's
//! drift detection must tolerate and the controllers read), status reset on create, Secret `stringData`,
//! Service cluster IPs, Job selectors, namespace labels and CRD conditions.

use base64::Engine;
use serde_json::{json, Map, Value};

use super::resources::ResourceType;

fn obj(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut().expect("object")
}

fn default(m: &mut Map<String, Value>, k: &str, v: Value) {
    m.entry(k.to_string()).or_insert(v);
}

/// Cluster IPs from 10.96.0.0/12, handed out in order.
#[derive(Debug, Default)]
pub struct IpAllocator {
    next: u32,
}

impl IpAllocator {
    pub fn allocate(&mut self) -> String {
        self.next += 1;
        let n = (10u32 << 24 | 96 << 16) + self.next;
        std::net::Ipv4Addr::from(n).to_string()
    }
}

/// What a create resets: status (custom resources lose it; a few built-ins get their initial one).
pub fn reset_status(rt: &ResourceType, o: &mut Value) {
    if !rt.status {
        return;
    }
    let m = obj(o);
    m.remove("status");
    let initial = match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => json!({"phase": "Pending"}),
        ("", "Namespace") => json!({"phase": "Active"}),
        ("", "PersistentVolumeClaim") => json!({"phase": "Pending"}),
        ("", "Service") => json!({"loadBalancer": {}}),
        _ => return,
    };
    m.insert("status".into(), initial);
}

fn pod_spec(spec: &mut Value) {
    let s = obj(spec);
    default(s, "restartPolicy", json!("Always"));
    default(s, "dnsPolicy", json!("ClusterFirst"));
    default(s, "schedulerName", json!("default-scheduler"));
    default(s, "terminationGracePeriodSeconds", json!(30));
    default(s, "securityContext", json!({}));
    if !s.contains_key("serviceAccountName") {
        let sa = s.get("serviceAccount").cloned().unwrap_or(json!("default"));
        s.insert("serviceAccountName".into(), sa);
    }
    for key in ["containers", "initContainers"] {
        for c in s
            .get_mut(key)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let c = obj(c);
            let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
            let tag = image.rsplit('/').next().unwrap_or_default();
            let latest = !tag.contains(':') || tag.ends_with(":latest");
            let pull = if latest && !image.contains('@') {
                "Always"
            } else {
                "IfNotPresent"
            };
            default(c, "imagePullPolicy", json!(pull));
            default(c, "terminationMessagePath", json!("/dev/termination-log"));
            default(c, "terminationMessagePolicy", json!("File"));
            default(c, "resources", json!({}));
            for p in c
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                default(obj(p), "protocol", json!("TCP"));
            }
        }
    }
}

fn template(spec: &mut Map<String, Value>) {
    if let Some(t) = spec.get_mut("template") {
        pod_spec(obj(t).entry("spec").or_insert(json!({})));
    }
}

fn service(spec: &mut Value, old: Option<&Value>, ips: &mut IpAllocator) {
    let s = obj(spec);
    default(s, "type", json!("ClusterIP"));
    default(s, "sessionAffinity", json!("None"));
    let external_name = s["type"] == "ExternalName";
    if !external_name {
        let old_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).cloned();
        let ip = match (s.get("clusterIP").cloned(), old_ip) {
            (Some(ip), _) if ip.as_str().is_some_and(|i| !i.is_empty()) => ip,
            (_, Some(ip)) => ip,
            _ => json!(ips.allocate()),
        };
        s.insert("clusterIP".into(), ip.clone());
        default(s, "clusterIPs", json!([ip]));
        default(s, "ipFamilies", json!(["IPv4"]));
        default(s, "ipFamilyPolicy", json!("SingleStack"));
        default(s, "internalTrafficPolicy", json!("Cluster"));
    }
    for p in s
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let p = obj(p);
        default(p, "protocol", json!("TCP"));
        if let Some(port) = p.get("port").cloned() {
            default(p, "targetPort", port);
        }
    }
}

/// Defaults and server-side rewrites of an object about to be stored (`old` on updates).
pub fn apply(rt: &ResourceType, o: &mut Value, old: Option<&Value>, ips: &mut IpAllocator) {
    let name = o.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
    let uid = o.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
    if !rt.builtin {
        return;
    }
    let m = obj(o);
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => pod_spec(m.entry("spec").or_insert(json!({}))),
        ("", "Service") => service(m.entry("spec").or_insert(json!({})), old, ips),
        ("", "Secret") => {
            default(m, "type", json!("Opaque"));
            if let Some(Value::Object(sd)) = m.remove("stringData") {
                let data = obj(m.entry("data").or_insert(json!({})));
                for (k, v) in sd {
                    let s = v.as_str().unwrap_or_default();
                    let enc = base64::engine::general_purpose::STANDARD.encode(s);
                    data.insert(k, json!(enc));
                }
            }
        }
        ("", "Namespace") => {
            let labels = obj(obj(m.entry("metadata").or_insert(json!({})))
                .entry("labels")
                .or_insert(json!({})));
            labels.insert("kubernetes.io/metadata.name".into(), name);
        }
        ("", "PersistentVolumeClaim") => {
            default(
                obj(m.entry("spec").or_insert(json!({}))),
                "volumeMode",
                json!("Filesystem"),
            );
        }
        ("apps", "StatefulSet") => {
            let s = obj(m.entry("spec").or_insert(json!({})));
            default(s, "replicas", json!(1));
            default(s, "podManagementPolicy", json!("OrderedReady"));
            default(
                s,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            default(s, "revisionHistoryLimit", json!(10));
            default(
                s,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            template(s);
        }
        ("apps", "Deployment") => {
            let s = obj(m.entry("spec").or_insert(json!({})));
            default(s, "replicas", json!(1));
            default(
                s,
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
            );
            default(s, "revisionHistoryLimit", json!(10));
            default(s, "progressDeadlineSeconds", json!(600));
            template(s);
        }
        ("batch", "Job") => {
            let s = obj(m.entry("spec").or_insert(json!({})));
            default(s, "parallelism", json!(1));
            default(s, "completions", json!(1));
            default(s, "backoffLimit", json!(6));
            default(s, "completionMode", json!("NonIndexed"));
            default(s, "suspend", json!(false));
            if s.get("manualSelector") != Some(&json!(true))
                && !s.contains_key("selector")
                && !uid.is_null()
            {
                s.insert(
                    "selector".into(),
                    json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
                );
                let t = obj(s.entry("template").or_insert(json!({})));
                let labels = obj(obj(t.entry("metadata").or_insert(json!({})))
                    .entry("labels")
                    .or_insert(json!({})));
                labels.insert("batch.kubernetes.io/controller-uid".into(), uid);
                labels.insert("batch.kubernetes.io/job-name".into(), name.clone());
                labels.insert(
                    "controller-uid".into(),
                    labels["batch.kubernetes.io/controller-uid"].clone(),
                );
                labels.insert("job-name".into(), name);
            }
            template(s);
        }
        ("batch", "CronJob") => {
            let s = obj(m.entry("spec").or_insert(json!({})));
            default(s, "concurrencyPolicy", json!("Allow"));
            default(s, "suspend", json!(false));
            default(s, "successfulJobsHistoryLimit", json!(3));
            default(s, "failedJobsHistoryLimit", json!(1));
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            let names = m
                .get("spec")
                .and_then(|s| s.get("names"))
                .cloned()
                .unwrap_or(json!({}));
            let stored: Vec<Value> = m
                .get("spec")
                .and_then(|s| s.get("versions"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|v| v["storage"] == json!(true))
                .map(|v| v["name"].clone())
                .collect();
            let cond = |t: &str, reason: &str| json!({"type": t, "status": "True", "reason": reason, "message": "", "lastTransitionTime": "1970-01-01T00:00:00Z"});
            m.insert(
                "status".into(),
                json!({"acceptedNames": names, "storedVersions": stored,
                       "conditions": [cond("NamesAccepted", "NoConflicts"), cond("Established", "InitialNamesAccepted")]}),
            );
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::Registry;

    #[test]
    fn services_get_cluster_ips_that_stay() {
        let r = Registry::builtin();
        let svc = r.find("", "v1", "services").unwrap();
        let mut ips = IpAllocator::default();
        let mut s = json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 5432}]}});
        apply(&svc, &mut s, None, &mut ips);
        assert_eq!(s["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(
            s["spec"]["ports"][0],
            json!({"port": 5432, "protocol": "TCP", "targetPort": 5432})
        );
        let mut upd = json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 5432}]}});
        apply(&svc, &mut upd, Some(&s), &mut ips);
        assert_eq!(upd["spec"]["clusterIP"], "10.96.0.1");
        let mut headless = json!({"spec": {"clusterIP": "None"}});
        apply(&svc, &mut headless, None, &mut ips);
        assert_eq!(headless["spec"]["clusterIP"], "None");
    }

    #[test]
    fn secrets_encode_string_data_and_pods_get_defaults() {
        let r = Registry::builtin();
        let mut s = json!({"stringData": {"password": "pw"}, "data": {"user": "cG9zdGdyZXM="}});
        apply(
            &r.find("", "v1", "secrets").unwrap(),
            &mut s,
            None,
            &mut IpAllocator::default(),
        );
        assert_eq!(
            s,
            json!({"type": "Opaque", "data": {"user": "cG9zdGdyZXM=", "password": "cHc="}})
        );
        let mut sts = json!({"spec": {"template": {"spec": {"containers": [{"name": "pg", "image": "x:1"}]}}}});
        apply(
            &r.find("apps", "v1", "statefulsets").unwrap(),
            &mut sts,
            None,
            &mut IpAllocator::default(),
        );
        assert_eq!(sts["spec"]["replicas"], 1);
        let c = &sts["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(
            sts["spec"]["template"]["spec"]["serviceAccountName"],
            "default"
        );
    }
}
