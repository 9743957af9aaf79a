//! The DCS section of the Patroni configuration, from `<DCS>_<PARAM>` variables or the Kubernetes API.

use pgherd_shared::naming;
use serde_json::{json, Map, Value};

use super::env::{yaml_error, Env, Legacy};
use super::Error;

/// Checked in this order; the first with any variable wins (Kubernetes only via `DCS_ENABLE_KUBERNETES_API`).
const GENERIC_DCS: [&str; 5] = ["zookeeper", "exhibitor", "consul", "etcd3", "etcd"];
pub const PATRONI_DCS: [&str; 6] = [
    "kubernetes",
    "zookeeper",
    "exhibitor",
    "consul",
    "etcd3",
    "etcd",
];

/// Spilo's defaults for the `KUBERNETES_*` placeholders; all of them end up in the `kubernetes:` section.
const KUBERNETES_DEFAULTS: [(&str, &str); 8] = [
    ("KUBERNETES_ROLE_LABEL", naming::ROLE_LABEL),
    ("KUBERNETES_LEADER_LABEL_VALUE", naming::PRIMARY_ROLE_VALUE),
    (
        "KUBERNETES_STANDBY_LEADER_LABEL_VALUE",
        naming::PRIMARY_ROLE_VALUE,
    ),
    ("KUBERNETES_SCOPE_LABEL", "version"),
    ("KUBERNETES_LABELS", r#"{"application": "spilo"}"#),
    ("KUBERNETES_USE_CONFIGMAPS", ""),
    ("KUBERNETES_BYPASS_API_SERVICE", "true"),
    ("KUBERNETES_BOOTSTRAP_LABELS", "{}"),
];

pub struct DcsInput<'a> {
    /// Kubernetes is the DCS (`KUBERNETES_SERVICE_HOST` present and `DCS_ENABLE_KUBERNETES_API` true).
    pub kubernetes_api: bool,
    /// The member IP, needed for Endpoints-based leader election.
    pub ip: Result<&'a str, &'a str>,
    /// `NAMESPACE` (empty when none).
    pub namespace: &'a str,
}

/// Top-level keys to add to the Patroni configuration (before the user's configuration is merged).
pub fn dcs_config(env: &Env, input: &DcsInput) -> Result<Map<String, Value>, Error> {
    let mut config = Map::new();
    if input.kubernetes_api {
        config.insert("kubernetes".into(), Value::Object(kubernetes(env, input)?));
    } else {
        for dcs in GENERIC_DCS {
            let section = generic(env, dcs)?;
            if !section.is_empty() {
                config.insert(dcs.into(), Value::Object(section));
                break;
            }
        }
    }
    if !input.namespace.is_empty() && input.namespace != "default" {
        config.insert("namespace".into(), json!(input.namespace));
    }
    Ok(config)
}

/// `<DCS>_<PARAM>` → `<dcs>: {<param>: value}`; the match is case-insensitive like Spilo's `name.lower()`.
fn generic(env: &Env, dcs: &str) -> Result<Map<String, Value>, Error> {
    let mut section = Map::new();
    for (name, value) in env.vars() {
        let lower = name.to_ascii_lowercase();
        let Some((prefix, param)) = lower.split_once('_') else {
            continue;
        };
        if prefix != dcs {
            continue;
        }
        let (param, value) = match param {
            "hosts" => ("hosts".to_string(), hosts(name, value)?),
            "discovery_domain" => ("discovery_srv".to_string(), json!(value)),
            other => (other.to_string(), json!(value)),
        };
        section.insert(param, value);
    }
    Ok(section)
}

/// `*_HOSTS` accepts `h1:2379,h2:2379`, `"h1:2379","h2:2379"`, a YAML flow list or a YAML block list.
fn hosts(name: &str, value: &str) -> Result<Value, Error> {
    let text = if value.trim_start().starts_with('-') || value.contains('[') {
        value.to_string()
    } else {
        format!("[{value}]")
    };
    serde_yaml_ng::from_str(&text).map_err(|e| Error::invalid(name, yaml_error(&e)))
}

fn kubernetes(env: &Env, input: &DcsInput) -> Result<Map<String, Value>, Error> {
    let mut section = Map::new();
    for (name, default) in KUBERNETES_DEFAULTS {
        let param = name["KUBERNETES_".len()..].to_ascii_lowercase();
        section.insert(param, json!(env.setdefault(name, default)));
    }
    for (name, value) in env.vars() {
        let lower = name.to_ascii_lowercase();
        if let Some(param) = lower.strip_prefix("kubernetes_") {
            section.insert(param.to_string(), json!(value));
        }
    }
    for (param, name, default) in [
        ("labels", "KUBERNETES_LABELS", r#"{"application": "spilo"}"#),
        ("bootstrap_labels", "KUBERNETES_BOOTSTRAP_LABELS", "{}"),
    ] {
        let text = env.get(name).unwrap_or(default);
        let parsed: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(name, format!("invalid JSON: {e}")))?;
        let labels = parsed
            .as_object()
            .filter(|m| m.values().all(Value::is_string))
            .ok_or_else(|| Error::invalid(name, "must be a JSON object of string label values"))?;
        section.insert(param.into(), Value::Object(labels.clone()));
    }
    section.remove("use_configmaps");
    if !env.bool("KUBERNETES_USE_CONFIGMAPS", false, Legacy::NonEmpty)? {
        let ip = input.ip.map_err(|why| Error::Machine(why.to_string()))?;
        section.insert("use_endpoints".into(), json!(true));
        section.insert("pod_ip".into(), json!(ip));
        section.insert(
            "ports".into(),
            json!([{"port": 5432, "name": "postgresql"}]),
        );
    }
    section.remove("bypass_api_service");
    if env.bool(
        "KUBERNETES_BYPASS_API_SERVICE",
        true,
        Legacy::EqTrueIgnoreCase,
    )? {
        section.insert("bypass_api_service".into(), json!(true));
    }
    Ok(section)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::map as vars;

    fn plain(ns: &str) -> DcsInput<'_> {
        DcsInput {
            kubernetes_api: false,
            ip: Ok("10.0.0.5"),
            namespace: ns,
        }
    }

    #[test]
    fn etcd_host_and_hosts_list() {
        let v = vars(&[
            ("ETCD_HOST", "127.0.0.1:2379"),
            ("ETCD3_HOSTS", "\"a:2379\",\"b:2379\""),
        ]);
        let c = dcs_config(&Env::new(&v), &plain("")).unwrap();
        // etcd3 comes before etcd in Spilo's order.
        assert_eq!(
            Value::Object(c),
            json!({"etcd3": {"hosts": ["a:2379", "b:2379"]}})
        );
        let v = vars(&[
            ("ETCD_HOSTS", "a:2379,b:2379"),
            ("ETCD_DISCOVERY_DOMAIN", "x.org"),
        ]);
        let c = dcs_config(&Env::new(&v), &plain("team-a")).unwrap();
        assert_eq!(
            Value::Object(c),
            json!({"etcd": {"hosts": ["a:2379", "b:2379"], "discovery_srv": "x.org"}, "namespace": "team-a"})
        );
    }

    #[test]
    fn nothing_configured_is_empty() {
        let v = vars(&[("KUBERNETES_SERVICE_HOST", "10.0.0.1")]);
        assert!(dcs_config(&Env::new(&v), &plain("default"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn kubernetes_endpoints_and_labels() {
        let v = vars(&[
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("KUBERNETES_LABELS", r#"{"application":"spilo","team":"a"}"#),
            ("KUBERNETES_BYPASS_API_SERVICE", "false"),
        ]);
        let input = DcsInput {
            kubernetes_api: true,
            ip: Ok("10.2.3.4"),
            namespace: "default",
        };
        let c = dcs_config(&Env::new(&v), &input).unwrap();
        assert_eq!(
            Value::Object(c),
            json!({"kubernetes": {
                "bootstrap_labels": {}, "labels": {"application": "spilo", "team": "a"},
                "leader_label_value": "master", "standby_leader_label_value": "master", "role_label": "spilo-role",
                "scope_label": "version", "service_host": "10.0.0.1", "use_endpoints": true, "pod_ip": "10.2.3.4",
                "ports": [{"port": 5432, "name": "postgresql"}]
            }})
        );
    }

    #[test]
    fn configmaps_false_means_endpoints() {
        let v = vars(&[("KUBERNETES_USE_CONFIGMAPS", "false")]);
        let input = DcsInput {
            kubernetes_api: true,
            ip: Ok("10.2.3.4"),
            namespace: "",
        };
        let env = Env::new(&v);
        let c = dcs_config(&env, &input).unwrap();
        assert_eq!(c["kubernetes"]["use_endpoints"], json!(true));
        assert_eq!(env.take_warnings().len(), 1);
    }

    #[test]
    fn endpoints_need_the_ip() {
        let input = DcsInput {
            kubernetes_api: true,
            ip: Err("no IP: set POD_IP"),
            namespace: "",
        };
        let err = dcs_config(&Env::new(&vars(&[])), &input).unwrap_err();
        assert_eq!(err.to_string(), "no IP: set POD_IP");
    }

    #[test]
    fn invalid_labels_are_errors() {
        let input = DcsInput {
            kubernetes_api: true,
            ip: Ok("1.2.3.4"),
            namespace: "",
        };
        let v = vars(&[("KUBERNETES_LABELS", "{application: spilo}")]);
        let err = dcs_config(&Env::new(&v), &input).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "KUBERNETES_LABELS: invalid JSON: key must be a string at line 1 column 2"
            ),
            "{err}"
        );
        let v = vars(&[("KUBERNETES_BOOTSTRAP_LABELS", "[1]")]);
        let err = dcs_config(&Env::new(&v), &input).unwrap_err().to_string();
        assert_eq!(
            err,
            "KUBERNETES_BOOTSTRAP_LABELS: must be a JSON object of string label values"
        );
    }
}
