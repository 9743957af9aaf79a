//! `pgherd-agent callback-role ACTION ROLE CLUSTER`: Spilo's `postgres-appliance/scripts/callback_role.py`,
//! the Patroni callback that labels the pod with its role when the DCS is not the Kubernetes API (etcd):
//! the replica Service selects `spilo-role=replica`, and the selector-less master Service reads the
//! `<cluster>` Endpoints, which this callback points at the new primary.
//!
//! As Spilo:
//! - label key `KUBERNETES_ROLE_LABEL` (default `spilo-role`) on the pod named `HOSTNAME`, in
//!   `POD_NAMESPACE`, else the service account's namespace file, else `default`;
//! - `on_stop` removes the label; `on_start`, `on_restart`, `on_role_change` set it;
//! - for the leader, first the `<cluster>` Endpoints get `POD_IP` (else the hostname's address) on port
//!   5432 `postgresql`; a failure there is logged and the label is still set;
//! - 11 attempts on transport errors, a missing token, 500/503/504 or `Retry-After`; other statuses are
//!   final (`incluster::next`).
//!
//! Deliberately different (docs/spilo-compatibility.md, "Role labels without the Kubernetes DCS"):
//! - Patroni 4 calls callbacks with `primary` (Patroni 3: `master`); Spilo writes the role verbatim, so its
//!   pods are labelled `spilo-role=primary`, which no Service of the operator selects, and its Endpoints
//!   update (`role == KUBERNETES_LEADER_LABEL_VALUE`, default `master`) never happens. pgherd maps the
//!   leader to `KUBERNETES_LEADER_LABEL_VALUE` and `standby_leader` to
//!   `KUBERNETES_STANDBY_LEADER_LABEL_VALUE` (both `master` by default), as Patroni's Kubernetes DCS does
//!   with Spilo's settings, and points the Endpoints at a standby leader too;
//! - the API server is `KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT`, not the fixed
//!   `kubernetes.default.svc.cluster.local`; a request times out after 10 s, pauses are capped at 16 s;
//! - a failed API call is one error line and exit status 0 (Spilo raised after the last retry). Patroni
//!   ignores the status, but the `on-role-change` wrapper would report a failure of its own.

use std::process::ExitCode;

use pgherd_shared::naming;
use serde_json::{json, Value};

use crate::incluster::{self, InCluster};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Patroni's callback action: on_start, on_stop, on_role_change (or on_restart).
    pub action: String,
    /// The member's role as Patroni passes it: primary (Patroni 3: master), standby_leader, replica, …
    pub role: String,
    /// Patroni's scope: the cluster name, which is also the name of the master Endpoints.
    pub cluster: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
    RoleChange,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "unknown callback action {0:?}: expected on_start, on_stop, on_restart or on_role_change"
    )]
    Action(String),
    #[error("no pod name: HOSTNAME is not set and the host name cannot be read")]
    PodName,
    #[error("no address for the master Endpoints: POD_IP is not set and {0}")]
    PodIp(String),
    #[error(transparent)]
    Api(#[from] incluster::Error),
}

impl std::str::FromStr for Action {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "on_start" => Action::Start,
            "on_stop" => Action::Stop,
            "on_restart" => Action::Restart,
            "on_role_change" => Action::RoleChange,
            other => return Err(Error::Action(other.into())),
        })
    }
}

/// What the environment decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub label: String,
    pub leader_value: String,
    pub standby_leader_value: String,
    pub namespace: String,
    pub pod: String,
    pub pod_ip: Option<String>,
}

impl Settings {
    /// `env` reads a variable; `namespace_file` is the service account's namespace; `hostname` the kernel's
    /// host name (a pod's is its name), used when `HOSTNAME` is not set.
    pub fn new(
        env: impl Fn(&str) -> Option<String>,
        namespace_file: Option<String>,
        hostname: impl FnOnce() -> Option<String>,
    ) -> Result<Settings, Error> {
        let or = |name: &str, default: &str| {
            env(name)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        let pod = env("HOSTNAME")
            .filter(|h| !h.is_empty())
            .or_else(hostname)
            .filter(|h| !h.is_empty())
            .ok_or(Error::PodName)?;
        Ok(Settings {
            label: or("KUBERNETES_ROLE_LABEL", naming::ROLE_LABEL),
            leader_value: or("KUBERNETES_LEADER_LABEL_VALUE", naming::PRIMARY_ROLE_VALUE),
            standby_leader_value: or(
                "KUBERNETES_STANDBY_LEADER_LABEL_VALUE",
                naming::PRIMARY_ROLE_VALUE,
            ),
            namespace: env("POD_NAMESPACE")
                .filter(|n| !n.is_empty())
                .or(namespace_file)
                .unwrap_or_else(|| "default".into()),
            pod,
            pod_ip: env("POD_IP").filter(|ip| !ip.is_empty()),
        })
    }
}

/// Whether Patroni says this member leads: `primary` (Patroni 4), `master` (3), `standby_leader`.
fn leads(role: &str) -> Option<bool> {
    use pgherd_shared::patroni::Role;
    match Role::of(role) {
        Role::Primary => Some(false),
        Role::StandbyLeader => Some(true),
        _ => None,
    }
}

/// The label value to set, `None` to remove the label (`on_stop`).
pub fn label_value(action: Action, role: &str, s: &Settings) -> Option<String> {
    if action == Action::Stop {
        return None;
    }
    Some(match leads(role) {
        Some(false) => s.leader_value.clone(),
        Some(true) => s.standby_leader_value.clone(),
        None => role.to_string(),
    })
}

/// Whether the master Endpoints must point at this pod.
pub fn updates_endpoints(action: Action, role: &str) -> bool {
    action != Action::Stop && leads(role).is_some()
}

/// Merge patch that sets (or with `None` removes) the role label.
pub fn pod_patch(label: &str, value: Option<&str>) -> Value {
    json!({"metadata": {"labels": {label: value}}})
}

/// Merge patch that points the master Endpoints at `ip`, port 5432 as Spilo (merge patches replace lists
/// whole, so earlier addresses are gone).
pub fn endpoints_patch(ip: &str) -> Value {
    json!({"subsets": [{
        "addresses": [{"ip": ip}],
        "ports": [{"name": "postgresql", "port": 5432, "protocol": "TCP"}],
    }]})
}

fn describe(label: &str, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("{label}={v}"),
        None => format!("{label} removed"),
    }
}

/// The address of this pod when POD_IP is not set: the first address of the host name, as Spilo.
fn resolve_own_address(pod: &str) -> Result<String, Error> {
    use std::net::ToSocketAddrs;
    (pod, 0u16)
        .to_socket_addrs()
        .map_err(|e| Error::PodIp(format!("{pod} does not resolve: {e}")))?
        .next()
        .map(|a| a.ip().to_string())
        .ok_or_else(|| Error::PodIp(format!("{pod} has no address")))
}

/// The master Endpoints, then the label. An Endpoints failure is logged, as Spilo; the label's is returned.
pub async fn run(
    api: &InCluster,
    action: Action,
    role: &str,
    cluster: &str,
    s: &Settings,
) -> Result<Option<String>, Error> {
    if updates_endpoints(action, role) {
        let result = async {
            let ip = match &s.pod_ip {
                Some(ip) => ip.clone(),
                None => resolve_own_address(&s.pod)?,
            };
            let path = incluster::core_path(&s.namespace, "endpoints", cluster)?;
            api.merge_patch(&path, &endpoints_patch(&ip)).await?;
            Ok::<_, Error>(ip)
        }
        .await;
        match result {
            Ok(ip) => tracing::info!("endpoints {}/{cluster} now point at {ip}", s.namespace),
            Err(e) => tracing::warn!(
                "callback-role: could not point the master endpoints {}/{cluster} at this pod: {e}",
                s.namespace
            ),
        }
    }
    let value = label_value(action, role, s);
    let path = incluster::core_path(&s.namespace, "pods", &s.pod)?;
    api.merge_patch(&path, &pod_patch(&s.label, value.as_deref()))
        .await?;
    Ok(value)
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let action: Action = args.action.parse()?;
    let api = InCluster::from_env(|k| std::env::var(k).ok());
    let settings = Settings::new(
        |k| std::env::var(k).ok(),
        api.namespace_file(),
        || {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
        },
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let wanted = label_value(action, &args.role, &settings);
    match rt.block_on(run(&api, action, &args.role, &args.cluster, &settings)) {
        Ok(value) => tracing::info!(
            "pod {}/{}: {} ({} {})",
            settings.namespace,
            settings.pod,
            describe(&settings.label, value.as_deref()),
            args.action,
            args.role
        ),
        // Patroni does not wait for callbacks and ignores their status: say what failed, exit 0.
        Err(e) => tracing::error!(
            "callback-role: pod {}/{} not labelled {} ({} {}): {e}",
            settings.namespace,
            settings.pod,
            describe(&settings.label, wanted.as_deref()),
            args.action,
            args.role
        ),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;

    fn settings(vars: &[(&str, &str)], ns_file: Option<&str>) -> Result<Settings, Error> {
        let m: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::new(
            |k| m.get(k).cloned(),
            ns_file.map(str::to_string),
            || Some("kernel-name".into()),
        )
    }

    #[test]
    fn defaults_are_spilos() {
        let s = settings(&[("HOSTNAME", "demo-0")], None).unwrap();
        assert_eq!(
            s,
            Settings {
                label: "spilo-role".into(),
                leader_value: "master".into(),
                standby_leader_value: "master".into(),
                namespace: "default".into(),
                pod: "demo-0".into(),
                pod_ip: None,
            }
        );
        let s = settings(&[], Some("team-a")).unwrap();
        assert_eq!(s.namespace, "team-a");
        assert_eq!(s.pod, "kernel-name", "without HOSTNAME: the host name");
        let s = settings(
            &[
                ("POD_NAMESPACE", "team-b"),
                ("POD_IP", "10.1.2.3"),
                ("KUBERNETES_ROLE_LABEL", "role"),
                ("KUBERNETES_LEADER_LABEL_VALUE", "primary"),
                ("KUBERNETES_STANDBY_LEADER_LABEL_VALUE", "standby"),
                ("HOSTNAME", "demo-1"),
            ],
            Some("team-a"),
        )
        .unwrap();
        assert_eq!(s.namespace, "team-b");
        assert_eq!(s.pod_ip.as_deref(), Some("10.1.2.3"));
        assert_eq!(
            (
                s.label.as_str(),
                s.leader_value.as_str(),
                s.standby_leader_value.as_str()
            ),
            ("role", "primary", "standby")
        );
        let none = Settings::new(|_| None, None, || None);
        assert!(matches!(none, Err(Error::PodName)));
    }

    #[test]
    fn roles_map_to_the_values_services_select() {
        let s = settings(&[("HOSTNAME", "demo-0")], None).unwrap();
        let v = |a: &str, r: &str| label_value(a.parse().unwrap(), r, &s);
        assert_eq!(v("on_role_change", "primary").as_deref(), Some("master"));
        assert_eq!(
            v("on_start", "master").as_deref(),
            Some("master"),
            "Patroni 3"
        );
        assert_eq!(v("on_start", "standby_leader").as_deref(), Some("master"));
        assert_eq!(v("on_start", "replica").as_deref(), Some("replica"));
        assert_eq!(v("on_restart", "replica").as_deref(), Some("replica"));
        assert_eq!(v("on_role_change", "demoted").as_deref(), Some("demoted"));
        assert_eq!(v("on_stop", "primary"), None);
        assert_eq!(v("on_stop", "replica"), None);
        assert!("on_reload".parse::<Action>().is_err());
        assert!("".parse::<Action>().is_err());
    }

    #[test]
    fn only_leaders_move_the_endpoints() {
        use Action::*;
        assert!(updates_endpoints(RoleChange, "primary"));
        assert!(updates_endpoints(Start, "master"));
        assert!(updates_endpoints(Start, "standby_leader"));
        assert!(!updates_endpoints(Start, "replica"));
        assert!(!updates_endpoints(RoleChange, "demoted"));
        assert!(!updates_endpoints(Stop, "primary"));
    }

    #[test]
    fn patch_bodies() {
        assert_eq!(
            pod_patch("spilo-role", Some("master")).to_string(),
            r#"{"metadata":{"labels":{"spilo-role":"master"}}}"#
        );
        assert_eq!(
            pod_patch("spilo-role", None).to_string(),
            r#"{"metadata":{"labels":{"spilo-role":null}}}"#
        );
        assert_eq!(
            endpoints_patch("10.1.2.3"),
            json!({"subsets": [{"addresses": [{"ip": "10.1.2.3"}],
                "ports": [{"name": "postgresql", "port": 5432, "protocol": "TCP"}]}]})
        );
    }

    #[test]
    fn the_wrapper_passes_patronis_arguments_through() {
        // render.rs wraps `pgherd-agent callback-role` in on-role-change; Patroni appends its three.
        use std::ffi::OsString;
        let rest: Vec<OsString> = [
            "pgherd-agent",
            "callback-role",
            "on_role_change",
            "primary",
            "demo",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let inv = super::super::on_role_change::split(&rest).unwrap();
        assert_eq!(inv.callback, &rest[..2]);
        assert_eq!(
            (inv.action.as_str(), inv.role.as_str(), inv.scope.as_str()),
            ("on_role_change", "primary", "demo")
        );
    }
}
