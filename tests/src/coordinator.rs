//! The real `pgherd-coordinator run` binary as a host process against the Kubernetes API stand-in
//! (`kube::ApiServer`), for `tests/coordinator.rs` and the resync benchmark (`bin/pgherd-bench-resync.rs`).
//! Each process gets a bearer token of its own, so the stand-in's request log and counters tell the
//! replicas apart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

use crate::kube::resources::ResourceType;
use crate::kube::select::Selectors;
use crate::kube::{ApiServer, WriteOptions};
use crate::service::Service;
use crate::tools;

/// Where the coordinator, its configuration and the clusters live.
pub const NAMESPACE: &str = "default";
/// The Lease the coordinator elects its leader with (the binary's default).
pub const LEASE: &str = "pgherd-coordinator-leader";
/// The OperatorConfiguration of `deploy/operatorconfiguration.yaml`.
pub const CONFIG: &str = "pgherd-default-configuration";

fn rt(srv: &ApiServer, group: &str, plural: &str) -> Arc<ResourceType> {
    srv.store()
        .resource(group, "v1", plural)
        .unwrap_or_else(|| panic!("the stand-in serves {group}/v1 {plural}"))
}

fn writer() -> WriteOptions {
    WriteOptions {
        manager: "kubectl".into(),
        ..Default::default()
    }
}

/// Installs `deploy/operatorconfiguration.yaml` with `resync_period` replaced.
pub fn install_config(srv: &ApiServer, resync_period: &str) -> anyhow::Result<()> {
    let path = tools::repo_root().join("deploy/operatorconfiguration.yaml");
    let mut cfg: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&path)?)?;
    cfg["configuration"]["resync_period"] = json!(resync_period);
    srv.store()
        .create(
            &rt(srv, "acid.zalan.do", "operatorconfigurations"),
            NAMESPACE,
            cfg,
            &writer(),
        )
        .map_err(|e| anyhow::anyhow!("installing the operator configuration: {e:?}"))?;
    Ok(())
}

/// Zalando's minimal manifest (`coordinator/tests/fixtures/zalando/`), named `name`.
pub fn minimal_manifest(name: &str) -> anyhow::Result<Value> {
    let path = tools::repo_root()
        .join("coordinator/tests/fixtures/zalando/minimal-postgres-manifest.yaml");
    let mut pg: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&path)?)?;
    pg["metadata"]["name"] = json!(name);
    pg["metadata"]["namespace"] = json!(NAMESPACE);
    Ok(pg)
}

/// Creates a cluster from the minimal manifest, as `kubectl create` would.
pub fn create_cluster(srv: &ApiServer, name: &str) -> anyhow::Result<()> {
    srv.store()
        .create(
            &rt(srv, "acid.zalan.do", "postgresqls"),
            NAMESPACE,
            minimal_manifest(name)?,
            &writer(),
        )
        .map_err(|e| anyhow::anyhow!("creating postgresql {name}: {e:?}"))?;
    Ok(())
}

fn get(srv: &ApiServer, group: &str, plural: &str, name: &str) -> Option<Value> {
    srv.store()
        .get(&rt(srv, group, plural), NAMESPACE, name)
        .ok()
}

/// Whether the coordinator has reconciled the cluster's current generation: its StatefulSet, Services and
/// superuser Secret exist and the status (written last) reports it `Running`.
pub fn in_sync(srv: &ApiServer, name: &str) -> bool {
    let Some(pg) = get(srv, "acid.zalan.do", "postgresqls", name) else {
        return false;
    };
    let status = &pg["status"];
    status["PostgresClusterStatus"] == "Running"
        && status["observedGeneration"] == pg["metadata"]["generation"]
        && get(srv, "apps", "statefulsets", name).is_some()
        && get(srv, "", "services", name).is_some()
        && get(srv, "", "services", &format!("{name}-repl")).is_some()
        && get(
            srv,
            "",
            "secrets",
            &format!("postgres.{name}.credentials.postgresql.acid.zalan.do"),
        )
        .is_some()
}

/// The Secrets of the clusters' credentials, name → data.
pub fn credentials(srv: &ApiServer) -> Vec<(String, Value)> {
    let (items, _, _) = srv.store().list(
        &rt(srv, "", "secrets"),
        Some(NAMESPACE),
        &Selectors::default(),
        None,
        None,
    );
    items
        .into_iter()
        .map(|s| {
            (
                s["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                s["data"].clone(),
            )
        })
        .collect()
}

/// The holder of the coordinator's Lease; `None` when there is no Lease or nobody holds it.
pub fn lease_holder(srv: &ApiServer) -> Option<String> {
    get(srv, "coordination.k8s.io", "leases", LEASE)?["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(String::from)
}

/// Gives the Lease to `holder` behind the coordinators' backs (a competing writer).
pub fn steal_lease(srv: &ApiServer, holder: &str) -> anyhow::Result<()> {
    let rt = rt(srv, "coordination.k8s.io", "leases");
    let mut lease = srv
        .store()
        .get(&rt, NAMESPACE, LEASE)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    lease["spec"]["holderIdentity"] = json!(holder);
    srv.store()
        .update(&rt, NAMESPACE, LEASE, lease, false, &writer())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

/// One `pgherd-coordinator run` process with its own token (user = pod name = `name`).
pub struct Coordinator {
    pub name: String,
    pub service: Service,
}

impl Coordinator {
    /// Starts the binary with a kubeconfig for a new token of user `name`, reading the configuration
    /// [`CONFIG`]; `extra` adds flags (`--no-leader-election`).
    pub fn start(
        srv: &ApiServer,
        name: &str,
        dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Coordinator> {
        let token = crate::service::random_hex(24);
        srv.add_token(&token, name);
        let kubeconfig = std::fs::read_to_string(srv.kubeconfig())?.replace(srv.token(), &token);
        let path = dir.join(format!("kubeconfig-{name}"));
        std::fs::write(&path, kubeconfig)?;
        let mut cmd = Command::new(tools::coordinator_bin()?);
        cmd.arg("run")
            .args(extra)
            .env("KUBECONFIG", &path)
            .env("POD_NAME", name)
            .env("OPERATOR_NAMESPACE", NAMESPACE)
            .env("POSTGRES_OPERATOR_CONFIGURATION_OBJECT", CONFIG)
            .env("RUST_LOG", "info")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("WATCHED_NAMESPACE")
            .env_remove("CONFIG_MAP_NAME");
        let service = Service::spawn(name, cmd, &log_path(dir, name))?;
        Ok(Coordinator {
            name: name.into(),
            service,
        })
    }

    pub fn pid(&self) -> Option<i32> {
        self.service.pid()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.service.log_path()).unwrap_or_default()
    }
}

fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
pub fn memory_kib(pid: i32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{key} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Lines of the stand-in's request log made by `user`.
pub fn requests_by(srv: &ApiServer, user: &str) -> Vec<String> {
    let suffix = format!(" by {user}");
    srv.requests()
        .into_iter()
        .filter(|r| r.ends_with(&suffix))
        .collect()
}

/// Whether a request-log line changes state.
pub fn is_write(line: &str) -> bool {
    !line.starts_with("GET ")
}

/// Whether a request-log line is about the leader Lease.
pub fn is_lease(line: &str) -> bool {
    line.contains("/apis/coordination.k8s.io/v1/namespaces/default/leases")
}

/// Polls every 100 ms (lease hand-overs are timed in seconds, so `wait::until`'s 250 ms is too coarse).
pub async fn poll<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
