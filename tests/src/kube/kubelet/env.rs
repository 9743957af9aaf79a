//! A container's environment as the kubelet computes it: the `KUBERNETES_*` service variables, then
//! `envFrom`, then `env` (later names win), with `$(VAR)` references expanded against what is defined so
//! far; the downward API (`fieldRef`, `resourceFieldRef`); and `$(VAR)` expansion of command and args.
//! Pure: Secrets and ConfigMaps come through [`Lookup`], so the rules are unit-tested without a store.

use base64::Engine;
use serde_json::Value;

/// Secrets and ConfigMaps of the pod's namespace; `None` when the object does not exist.
pub trait Lookup {
    fn secret(&self, name: &str) -> Option<Value>;
    fn config_map(&self, name: &str) -> Option<Value>;
    /// A PersistentVolumeClaim (volumes only).
    fn pvc(&self, _name: &str) -> Option<Value> {
        None
    }
}

/// What the downward API reads besides the Pod object.
#[derive(Clone, Debug, Default)]
pub struct PodFacts {
    pub pod_ip: String,
    pub host_ip: String,
    /// Node capacity, used for `resourceFieldRef` of a limit the container does not set.
    pub node_cpu: f64,
    pub node_memory: f64,
}

/// Why a container cannot be configured yet (`CreateContainerConfigError`); retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

/// Expands `$(NAME)` with `lookup`; `$$` is a literal `$`; an undefined or unclosed reference stays as
/// written (the kubelet's `expansion.Expand`).
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let b = input.as_bytes();
    let mut out = String::new();
    let (mut checkpoint, mut cursor) = (0, 0);
    while cursor < b.len() {
        if b[cursor] == b'$' && cursor + 1 < b.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(i) => {
                        let name = &rest[1..i];
                        match lookup(name) {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&format!("$({name})")),
                        }
                        i + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // `$` before any other character stays, and so does that character (it may be
                    // multi-byte, so it is copied from the checkpoint below).
                    out.push('$');
                    0
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.push_str(&input[checkpoint.min(b.len())..]);
    out
}

/// An ordered environment in which a later definition replaces an earlier one in place.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Env(pub Vec<(String, String)>);

impl Env {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, k: &str, v: String) {
        match self.0.iter_mut().find(|(n, _)| n == k) {
            Some(e) => e.1 = v,
            None => self.0.push((k.to_string(), v)),
        }
    }
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// A Secret's or ConfigMap's value of `key` (Secret `data` is base64).
pub fn data_value(obj: &Value, key: &str, secret: bool) -> Option<String> {
    if secret {
        let b = obj.get("data")?.get(key)?.as_str()?;
        let raw = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
        return Some(String::from_utf8_lossy(&raw).into_owned());
    }
    if let Some(v) = obj
        .get("data")
        .and_then(|d| d.get(key))
        .and_then(Value::as_str)
    {
        return Some(v.to_string());
    }
    let b = obj.get("binaryData")?.get(key)?.as_str()?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
    Some(String::from_utf8_lossy(&raw).into_owned())
}

/// Every key of a Secret or ConfigMap with its value, sorted by key.
pub fn data_entries(obj: &Value, secret: bool) -> Vec<(String, String)> {
    let mut keys: Vec<String> = ["data", "binaryData"]
        .iter()
        .filter_map(|f| obj.get(*f).and_then(Value::as_object))
        .flat_map(|m| m.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| data_value(obj, &k, secret).map(|v| (k, v)))
        .collect()
}

/// `metadata.labels['k']` and friends: the value a `fieldRef` names.
pub fn field_ref(pod: &Value, facts: &PodFacts, path: &str) -> Result<String, ConfigError> {
    let indexed = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(String::from)
    };
    if let Some(k) = indexed("metadata.labels['") {
        return Ok(
            str_at(pod, &format!("/metadata/labels/{}", k.replace('/', "~1")))
                .unwrap_or_default()
                .into(),
        );
    }
    if let Some(k) = indexed("metadata.annotations['") {
        return Ok(str_at(
            pod,
            &format!("/metadata/annotations/{}", k.replace('/', "~1")),
        )
        .unwrap_or_default()
        .into());
    }
    let map_text = |field: &str| {
        let mut lines: Vec<String> = pod
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={:?}", v.as_str().unwrap_or_default()))
            .collect();
        lines.sort();
        lines.join("\n")
    };
    Ok(match path {
        "metadata.name" => str_at(pod, "/metadata/name").unwrap_or_default().into(),
        "metadata.namespace" => str_at(pod, "/metadata/namespace")
            .unwrap_or_default()
            .into(),
        "metadata.uid" => str_at(pod, "/metadata/uid").unwrap_or_default().into(),
        "metadata.labels" => map_text("labels"),
        "metadata.annotations" => map_text("annotations"),
        "spec.nodeName" => str_at(pod, "/spec/nodeName").unwrap_or_default().into(),
        "spec.serviceAccountName" => str_at(pod, "/spec/serviceAccountName")
            .unwrap_or("default")
            .into(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        other => {
            return Err(ConfigError(format!(
                "unsupported fieldPath {other:?} (the pgherd stand-in's kubelet)"
            )))
        }
    })
}

/// A Kubernetes quantity (`500m`, `1Gi`, `2`, `1e3`) as a number.
pub fn quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let suffixes: [(&str, f64); 14] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    for (s, f) in suffixes {
        if let Some(n) = q.strip_suffix(s) {
            return n.parse::<f64>().ok().map(|n| n * f);
        }
    }
    if let Some(n) = q.strip_suffix('E') {
        return n.parse::<f64>().ok().map(|n| n * 1e18);
    }
    q.parse().ok()
}

/// `resourceFieldRef`: a container's limit or request divided by `divisor`, rounded up; an unset limit is
/// the node's capacity, an unset request is 0 (as the kubelet's defaults for the downward API).
pub fn resource_field(
    container: &Value,
    facts: &PodFacts,
    resource: &str,
    divisor: Option<&str>,
) -> Result<String, ConfigError> {
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| ConfigError(format!("unsupported resource {resource:?}")))?;
    let set = container
        .pointer(&format!("/resources/{kind}/{name}"))
        .and_then(|v| v.as_str().map(String::from).or_else(|| Some(v.to_string())))
        .and_then(|s| quantity(&s));
    let value = match (set, kind, name) {
        (Some(v), _, _) => v,
        (None, "limits", "cpu") => facts.node_cpu,
        (None, "limits", "memory") => facts.node_memory,
        (None, _, _) => 0.0,
    };
    let div = divisor
        .and_then(quantity)
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    Ok(format!("{}", (value / div - 1e-9).ceil().max(0.0) as i64))
}

/// The kubelet's service variables for the `kubernetes` Service, pointing straight at the API server.
pub fn service_env(api_host: &str, api_port: u16) -> Env {
    let url = format!("tcp://{api_host}:{api_port}");
    Env(vec![
        ("KUBERNETES_SERVICE_HOST".into(), api_host.into()),
        ("KUBERNETES_SERVICE_PORT".into(), api_port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), api_port.to_string()),
        ("KUBERNETES_PORT".into(), url.clone()),
        (format!("KUBERNETES_PORT_{api_port}_TCP"), url),
        (
            format!("KUBERNETES_PORT_{api_port}_TCP_PROTO"),
            "tcp".into(),
        ),
        (
            format!("KUBERNETES_PORT_{api_port}_TCP_PORT"),
            api_port.to_string(),
        ),
        (
            format!("KUBERNETES_PORT_{api_port}_TCP_ADDR"),
            api_host.into(),
        ),
    ])
}

fn key_ref(
    lookup: &dyn Lookup,
    ns: &str,
    r: &Value,
    secret: bool,
) -> Result<Option<String>, ConfigError> {
    let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
    let key = r.get("key").and_then(Value::as_str).unwrap_or_default();
    let optional = r.get("optional").and_then(Value::as_bool).unwrap_or(false);
    let (kind, obj) = if secret {
        ("Secret", lookup.secret(name))
    } else {
        ("ConfigMap", lookup.config_map(name))
    };
    let Some(obj) = obj else {
        if optional {
            return Ok(None);
        }
        return Err(ConfigError(format!(
            "{} {name:?} not found",
            kind.to_lowercase()
        )));
    };
    match data_value(&obj, key, secret) {
        Some(v) => Ok(Some(v)),
        None if optional => Ok(None),
        None => Err(ConfigError(format!(
            "couldn't find key {key} in {kind} {ns}/{name}"
        ))),
    }
}

/// A container's whole environment, as the kubelet's `makeEnvironmentVariables`.
pub fn container_env(
    pod: &Value,
    container: &Value,
    facts: &PodFacts,
    service: &Env,
    lookup: &dyn Lookup,
) -> Result<Env, ConfigError> {
    let ns = str_at(pod, "/metadata/namespace").unwrap_or("default");
    let mut env = service.clone();
    for from in container
        .get("envFrom")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let prefix = from.get("prefix").and_then(Value::as_str).unwrap_or("");
        for (field, secret) in [("configMapRef", false), ("secretRef", true)] {
            let Some(r) = from.get(field) else { continue };
            let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
            let optional = r.get("optional").and_then(Value::as_bool).unwrap_or(false);
            let obj = if secret {
                lookup.secret(name)
            } else {
                lookup.config_map(name)
            };
            match obj {
                Some(o) => {
                    for (k, v) in data_entries(&o, secret) {
                        let k = format!("{prefix}{k}");
                        if is_env_name(&k) {
                            env.set(&k, v);
                        }
                    }
                }
                None if optional => {}
                None => {
                    let kind = if secret { "secret" } else { "configmap" };
                    return Err(ConfigError(format!("{kind} {name:?} not found")));
                }
            }
        }
    }
    for e in container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = e.get("name").and_then(Value::as_str).unwrap_or_default();
        let value = if let Some(v) = e.get("value").and_then(Value::as_str) {
            let defined = env.clone();
            Some(expand(v, &|k| defined.get(k).map(String::from)))
        } else if let Some(from) = e.get("valueFrom") {
            if let Some(r) = from.get("secretKeyRef") {
                key_ref(lookup, ns, r, true)?
            } else if let Some(r) = from.get("configMapKeyRef") {
                key_ref(lookup, ns, r, false)?
            } else if let Some(f) = from.pointer("/fieldRef/fieldPath").and_then(Value::as_str) {
                Some(field_ref(pod, facts, f)?)
            } else if let Some(r) = from.get("resourceFieldRef") {
                let c = match r.get("containerName").and_then(Value::as_str) {
                    Some(n) => find_container(pod, n).unwrap_or(container),
                    None => container,
                };
                Some(resource_field(
                    c,
                    facts,
                    r.get("resource")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                    r.get("divisor").and_then(Value::as_str),
                )?)
            } else {
                Some(String::new())
            }
        } else {
            Some(String::new())
        };
        if let Some(v) = value {
            env.set(name, v);
        }
    }
    Ok(env)
}

fn find_container<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    ["/spec/containers", "/spec/initContainers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
}

/// `command` and `args` with `$(VAR)` expanded against the container's environment.
pub fn expand_list(container: &Value, field: &str, env: &Env) -> Option<Vec<String>> {
    let list = container.get(field)?.as_array()?;
    Some(
        list.iter()
            .map(|a| {
                expand(a.as_str().unwrap_or_default(), &|k| {
                    env.get(k).map(String::from)
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Objs;
    impl Lookup for Objs {
        fn secret(&self, name: &str) -> Option<Value> {
            (name == "creds").then(|| json!({"data": {"password": "czNjcjN0", "user": "YWRtaW4="}}))
        }
        fn config_map(&self, name: &str) -> Option<Value> {
            (name == "cfg").then(|| json!({"data": {"mode": "fast", "bad key": "x"}}))
        }
    }

    fn pod() -> Value {
        json!({"metadata": {"name": "db-0", "namespace": "prod", "uid": "u-1",
                            "labels": {"app": "pg", "example.com/tier": "db"}},
               "spec": {"nodeName": "node-a", "serviceAccountName": "postgres-pod"}})
    }

    fn facts() -> PodFacts {
        PodFacts {
            pod_ip: "10.89.0.7".into(),
            host_ip: "10.89.0.1".into(),
            node_cpu: 2.0,
            node_memory: 4e9,
        }
    }

    #[test]
    fn expansion_follows_the_kubelet() {
        let m = |k: &str| (k == "A").then(|| "x".to_string());
        assert_eq!(expand("$(A)-$(B)", &m), "x-$(B)");
        assert_eq!(expand("$$(A) $$ $x $", &m), "$(A) $ $x $");
        assert_eq!(expand("$(A", &m), "$(A");
        assert_eq!(expand("é$(A)é", &m), "éxé");
        assert_eq!(expand("$é", &m), "$é");
        assert_eq!(expand("", &m), "");
    }

    #[test]
    fn env_resolves_values_refs_and_order() {
        let c = json!({"name": "pg", "resources": {"limits": {"memory": "256Mi", "cpu": "500m"}},
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
            "env": [
            {"name": "SCOPE", "value": "demo"},
            {"name": "URL", "value": "http://$(POD_IP):8008/$(SCOPE)/$$(SCOPE)"},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "LATE", "value": "$(POD_IP)"},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['example.com/tier']"}}},
            {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": true}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
            {"name": "REQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}}]});
        let env =
            container_env(&pod(), &c, &facts(), &service_env("10.89.0.1", 6443), &Objs).unwrap();
        let g = |k: &str| env.get(k).map(String::from);
        assert_eq!(g("KUBERNETES_SERVICE_HOST").as_deref(), Some("10.89.0.1"));
        assert_eq!(g("KUBERNETES_SERVICE_PORT").as_deref(), Some("6443"));
        assert_eq!(
            g("KUBERNETES_PORT_6443_TCP").as_deref(),
            Some("tcp://10.89.0.1:6443")
        );
        assert_eq!(g("CFG_mode").as_deref(), Some("fast"));
        assert_eq!(g("CFG_bad key"), None);
        // Only what is defined before a reference expands.
        assert_eq!(
            g("URL").as_deref(),
            Some("http://$(POD_IP):8008/demo/$(SCOPE)")
        );
        assert_eq!(g("LATE").as_deref(), Some("10.89.0.7"));
        assert_eq!(g("NAME").as_deref(), Some("db-0"));
        assert_eq!(g("NS").as_deref(), Some("prod"));
        assert_eq!(g("TIER").as_deref(), Some("db"));
        assert_eq!(g("SA").as_deref(), Some("postgres-pod"));
        assert_eq!(g("PW").as_deref(), Some("s3cr3t"));
        assert_eq!(g("MODE").as_deref(), Some("fast"));
        assert_eq!(g("OPT"), None);
        assert_eq!(g("MEM").as_deref(), Some("256"));
        assert_eq!(g("CPU").as_deref(), Some("500"));
        assert_eq!(g("REQ").as_deref(), Some("0"));
        let args = expand_list(
            &json!({"args": ["--ip=$(POD_IP)", "$(NOPE)", "$$(PW)"]}),
            "args",
            &env,
        );
        assert_eq!(args.unwrap(), vec!["--ip=10.89.0.7", "$(NOPE)", "$(PW)"]);
    }

    #[test]
    fn missing_references_are_config_errors() {
        let run = |e: Value| {
            container_env(
                &pod(),
                &json!({"env": [e]}),
                &facts(),
                &Env::default(),
                &Objs,
            )
        };
        assert_eq!(
            run(json!({"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}})),
            Err(ConfigError("secret \"gone\" not found".into()))
        );
        assert_eq!(
            run(json!({"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}})),
            Err(ConfigError(
                "couldn't find key k in Secret prod/creds".into()
            ))
        );
        assert_eq!(
            run(
                json!({"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}})
            ),
            Err(ConfigError(
                "couldn't find key k in ConfigMap prod/cfg".into()
            ))
        );
        assert!(run(
            json!({"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k", "optional": true}}})
        )
        .unwrap()
        .get("X")
        .is_none());
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity("500m"), Some(0.5));
        assert_eq!(quantity("1Gi"), Some(1073741824.0));
        assert_eq!(quantity("2"), Some(2.0));
        assert_eq!(quantity("1e3"), Some(1000.0));
        assert_eq!(quantity("128M"), Some(128e6));
    }
}
