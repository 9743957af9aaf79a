//! Which pod to dump from, as Zalando's `dump.sh` chooses it: a replica on this Job's node first (the dump
//! reads locally and spares the network), else any running replica, else the primary (`spilo-role=master`).
//! The decision is a pure function of the cluster's pod list; [`find`] only fetches that list.

use pgherd_shared::naming;
use serde_json::Value;

use crate::incluster::{self, InCluster};

use super::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("POD_NAMESPACE is not set, so the cluster's pods cannot be listed; set PGHOST to dump from a given host")]
    NoNamespace,
    #[error("listing the pods of cluster {scope}: {source}")]
    Api {
        scope: String,
        source: incluster::Error,
    },
    #[error("no running pod of cluster {scope} with spilo-role=replica or master and a pod IP (label {label}={scope} in namespace {namespace})")]
    NoPod {
        scope: String,
        label: String,
        namespace: String,
    },
}

/// The chosen pod: name (for the log) and IP (for `PGHOST`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pod: String,
    pub ip: String,
}

/// Picks from the items of a pod list (`{"items": [...]}`) of one cluster.
pub fn choose(pods: &Value, node: Option<&str>) -> Option<Target> {
    let items = pods["items"].as_array()?;
    let usable = |role: &'static str| {
        items.iter().filter(move |p| {
            p["metadata"]["labels"][naming::ROLE_LABEL].as_str() == Some(role)
                && p["status"]["phase"].as_str() == Some("Running")
                && p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["podIP"]
                    .as_str()
                    .is_some_and(|ip| !ip.is_empty())
        })
    };
    let on_node = |p: &&Value| node.is_some() && p["spec"]["nodeName"].as_str() == node;
    let pick = usable(naming::REPLICA_ROLE_VALUE)
        .find(on_node)
        .or_else(|| usable(naming::REPLICA_ROLE_VALUE).next())
        .or_else(|| usable(naming::PRIMARY_ROLE_VALUE).next())?;
    Some(Target {
        pod: pick["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        ip: pick["status"]["podIP"].as_str()?.to_string(),
    })
}

/// `labelSelector` value, percent-encoded for the query string.
pub fn selector(label: &str, scope: &str) -> String {
    super::layout::encode_name(&format!("{label}={scope}"))
}

/// Lists the cluster's pods through the API server and chooses.
pub async fn find(config: &Config, api: &InCluster) -> Result<Target, Error> {
    let namespace = config.namespace.as_deref().ok_or(Error::NoNamespace)?;
    let api_err = |source| Error::Api {
        scope: config.scope.clone(),
        source,
    };
    if !incluster::valid_name(namespace) {
        return Err(api_err(incluster::Error::Name {
            name: namespace.into(),
        }));
    }
    let path = format!(
        "/api/v1/namespaces/{namespace}/pods?labelSelector={}",
        selector(&config.cluster_name_label, &config.scope)
    );
    let pods = api.get(&path).await.map_err(api_err)?;
    choose(&pods, config.node_name.as_deref()).ok_or_else(|| Error::NoPod {
        scope: config.scope.clone(),
        label: config.cluster_name_label.clone(),
        namespace: namespace.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, role: &str, node: &str, phase: &str, ip: &str) -> Value {
        json!({
            "metadata": {"name": name, "labels": {"cluster-name": "acid-x", "spilo-role": role}},
            "spec": {"nodeName": node},
            "status": {"phase": phase, "podIP": ip},
        })
    }

    #[test]
    fn replica_on_this_node_then_any_replica_then_the_master() {
        let list = json!({"items": [
            pod("acid-x-0", "master", "n1", "Running", "10.0.0.1"),
            pod("acid-x-1", "replica", "n2", "Running", "10.0.0.2"),
            pod("acid-x-2", "replica", "n3", "Running", "10.0.0.3"),
        ]});
        let t = |node| choose(&list, node).map(|t| t.pod);
        assert_eq!(t(Some("n3")).as_deref(), Some("acid-x-2"));
        assert_eq!(
            t(Some("n1")).as_deref(),
            Some("acid-x-1"),
            "no replica on n1: any replica"
        );
        assert_eq!(t(None).as_deref(), Some("acid-x-1"));
        let only_master = json!({"items": [
            pod("acid-x-0", "master", "n1", "Running", "10.0.0.1"),
            pod("acid-x-1", "replica", "n2", "Pending", ""),
            pod("acid-x-2", "replica", "n3", "Running", ""),
        ]});
        assert_eq!(
            choose(&only_master, Some("n3")),
            Some(Target {
                pod: "acid-x-0".into(),
                ip: "10.0.0.1".into()
            })
        );
    }

    #[test]
    fn terminating_unlabelled_and_empty_lists_are_skipped() {
        let mut leaving = pod("acid-x-1", "replica", "n1", "Running", "10.0.0.2");
        leaving["metadata"]["deletionTimestamp"] = json!("2026-12-05T03:00:00Z");
        let list = json!({"items": [
            leaving,
            pod("acid-x-2", "", "n1", "Running", "10.0.0.3"),
            pod("acid-x-0", "master", "n2", "Running", "10.0.0.1"),
        ]});
        assert_eq!(choose(&list, Some("n1")).unwrap().pod, "acid-x-0");
        assert_eq!(choose(&json!({"items": []}), None), None);
        assert_eq!(choose(&json!({}), None), None);
    }

    #[test]
    fn selector_is_escaped() {
        assert_eq!(selector("cluster-name", "acid-x"), "cluster-name%3Dacid-x");
    }
}
