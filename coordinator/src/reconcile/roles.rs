//! The roles-and-databases duty of one reconcile: read what the manifest wants and the Secrets hold, read
//! what the primary has, run the statements `roles::diff` plans, report.
//!
//! Connects as upstream does: to the primary (the pod labelled master, where the master Service routes), as
//! the superuser from its Secret, with TLS. Each statement runs on its
//! own, so one failure (a role the server refuses) does not stop the others; failures are retried on the next
//! pass.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pgherd_shared::crd::Postgresql;

use super::{event, namespace_of, Context, ReconcileError};
use crate::builders::{Cluster, ExternalInputs};
use crate::config::OperatorConfig;
use crate::kube_api::{EventType, Kind, KubeApi, ObjectKey};
use crate::roles::catalog::{PgError, Postgres};
use crate::roles::desired::{desired, ExternalRoles};
use crate::roles::diff::plan;
use crate::roles::model::Password;
use crate::roles::password::Encryption;
use crate::roles::server::Server;

/// Opens a [`Postgres`] session; tests put an in-memory one here.
pub trait Connector: Send + Sync {
    fn connect(&self, host: &str, port: u16, user: &str, password: &str) -> Box<dyn Postgres>;
}

/// The real server.
pub struct ServerConnector;

impl Connector for ServerConnector {
    fn connect(&self, host: &str, port: u16, user: &str, password: &str) -> Box<dyn Postgres> {
        Box::new(Server::new(host, port, user, password))
    }
}

/// How the duty went, for the `RolesSynced` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolesStatus {
    /// Everything the manifest declares exists (`applied` statements were needed for it); `warnings` say
    /// what was left out on purpose (a shadowed or protected name, a missing Secret).
    Synced {
        applied: usize,
        warnings: Vec<String>,
    },
    /// Not reached yet (no primary, Postgres not answering): retried soon.
    Waiting(String),
    /// The manifest cannot be turned into roles (`retry` false: a new manifest version is needed), or
    /// statements failed (retried).
    Failed { message: String, retry: bool },
}

impl RolesStatus {
    /// When to look again, whatever the other duties say.
    pub fn requeue(&self) -> Option<Duration> {
        match self {
            RolesStatus::Synced { .. } | RolesStatus::Failed { retry: false, .. } => None,
            RolesStatus::Waiting(_) => Some(Duration::from_secs(15)),
            RolesStatus::Failed { retry: true, .. } => Some(Duration::from_secs(60)),
        }
    }
}

/// The IP of the pod labelled master: what the master Service routes to.
async fn primary_address<A: KubeApi>(
    ctx: &Context<A>,
    cfg: &OperatorConfig,
    namespace: &str,
    cluster: &str,
) -> Result<Option<String>, ReconcileError> {
    let pods = ctx
        .api
        .list(Kind::Pod, namespace, &cfg.selector_labels(cluster))
        .await?;
    Ok(pods.iter().find_map(|p| {
        let labels = p.pointer("/metadata/labels")?;
        (labels.get(&cfg.pod_role_label)?.as_str()? == "master")
            .then(|| p.pointer("/status/podIP")?.as_str().map(String::from))?
    }))
}

/// The `password` key of a Secret, `None` when the Secret or the key is missing.
async fn secret_password<A: KubeApi>(
    ctx: &Context<A>,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, ReconcileError> {
    let key = ObjectKey {
        kind: Kind::Secret,
        namespace: namespace.into(),
        name: name.into(),
    };
    Ok(ctx.api.get(&key).await?.and_then(|s| {
        let b64 = s.pointer("/data/password")?.as_str()?;
        String::from_utf8(STANDARD.decode(b64).ok()?).ok()
    }))
}

pub async fn run<A: KubeApi>(
    pg: &Postgresql,
    ctx: &Context<A>,
    cfg: &OperatorConfig,
) -> Result<RolesStatus, ReconcileError> {
    let namespace = namespace_of(pg);
    let inputs = ExternalInputs::default();
    let cluster = Cluster::new(pg, cfg, &namespace, &inputs);
    let wanted = match desired(&cluster, &ExternalRoles::default()) {
        Ok(w) => w,
        Err(e) => {
            return Ok(RolesStatus::Failed {
                message: e.to_string(),
                retry: false,
            })
        }
    };
    let Some(host) = primary_address(ctx, cfg, &namespace, &cluster.name).await? else {
        return Ok(RolesStatus::Waiting("no primary yet".into()));
    };
    let super_secret = cluster.secret_name(&cfg.super_username);
    let Some(super_password) = secret_password(ctx, &namespace, &super_secret).await? else {
        return Ok(RolesStatus::Waiting(format!(
            "no password in Secret {super_secret}"
        )));
    };
    let mut passwords = BTreeMap::new();
    for role in wanted.desired.roles.values() {
        if let Password::Secret { namespace, name } = &role.password {
            if let Some(pw) = secret_password(ctx, namespace, name).await? {
                passwords.insert(role.name.clone(), pw);
            }
        }
    }
    let db: Arc<dyn Postgres> =
        Arc::from(
            ctx.postgres
                .connect(&host, 5432, &cfg.super_username, &super_password),
        );
    let databases: BTreeSet<String> = wanted
        .desired
        .databases
        .iter()
        .map(|d| d.name.clone())
        .collect();
    let current = match db.read(&databases).await {
        Ok(c) => c,
        Err(e @ PgError::Connect { .. }) => return Ok(RolesStatus::Waiting(e.to_string())),
        Err(e) => {
            return Ok(RolesStatus::Failed {
                message: e.to_string(),
                retry: true,
            })
        }
    };
    let encryption = match Encryption::from_setting(Some(&current.password_encryption)) {
        Ok(e) => e,
        Err(message) => {
            return Ok(RolesStatus::Failed {
                message,
                retry: false,
            })
        }
    };
    let p = plan(&wanted.desired, &current, &passwords, encryption);
    let warnings: Vec<String> = wanted
        .warnings
        .iter()
        .map(ToString::to_string)
        .chain(p.warnings.iter().cloned())
        .collect();
    let mut failures = Vec::new();
    let mut done = Vec::new();
    for s in &p.statements {
        match db.execute(s).await {
            Ok(()) => done.push(s.summary.clone()),
            Err(e) => failures.push(format!("{}: {e}", s.summary)),
        }
    }
    if !done.is_empty() {
        tracing::info!(cluster = %cluster.name, statements = ?done, "roles and databases");
        let note = format!("Roles and databases: {}", done.join("; "));
        event(ctx, pg, EventType::Normal, "Roles", note).await;
    }
    let status = if failures.is_empty() {
        RolesStatus::Synced {
            applied: done.len(),
            warnings: warnings.clone(),
        }
    } else {
        RolesStatus::Failed {
            message: failures.join("; "),
            retry: true,
        }
    };
    // Warnings and failures as one event each time they change, not on every pass.
    let said = pg
        .status
        .as_ref()
        .and_then(|s| s.condition(super::status::ROLES_SYNCED))
        .map(|c| c.message.clone());
    let message = super::status::roles_message(&status);
    let news: Vec<String> = failures.into_iter().chain(warnings).collect();
    if !news.is_empty() && said.as_deref() != Some(message.as_str()) {
        event(ctx, pg, EventType::Warning, "RolesFailed", news.join("; ")).await;
    }
    Ok(status)
}
