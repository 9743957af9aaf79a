//! The roles-and-databases duty of one reconcile: read what the manifest wants and the Secrets hold, read
//! what the primary has, run the statements `roles::diff` plans, report.
//!
//! Connects as upstream does: to the primary (the pod labelled master, where the master Service routes), as
//! the superuser from its Secret, with TLS. Each statement runs on its
//! own, so one failure (a role the server refuses) does not stop the others; failures are retried on the next
//! pass.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pgherd_shared::crd::Postgresql;
use serde_json::Value;

use super::status::RolesStatus;
use super::{event, namespace_of, rotation, Context, ReconcileError};
use crate::builders::{Cluster, ExternalInputs};
use crate::config::OperatorConfig;
use crate::kube_api::{EventType, Kind, KubeApi, ObjectKey};
use crate::roles::catalog::{PgError, Postgres};
use crate::roles::desired::{desired, ExternalRoles};
use crate::roles::diff::plan;
use crate::roles::model::Role;
use crate::roles::password::Encryption;
use crate::roles::rotation::{add_rotation_roles, Policy};
use crate::roles::server::Server;
use crate::roles::sql::Effect;

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

/// Where the primary is, as the pods say.
enum Primary {
    /// The IP of the pod labelled master: what the master Service routes to.
    At(String),
    /// A pod is ready but none is labelled master yet (a moment after bootstrap or a failover; with etcd
    /// the label comes from a callback, which no watch sees): look again soon.
    Unlabelled,
    /// No pod is ready: the StatefulSet watch brings the next reconcile when one is.
    NotReady,
}

async fn primary<A: KubeApi>(
    ctx: &Context<A>,
    cfg: &OperatorConfig,
    namespace: &str,
    cluster: &str,
) -> Result<Primary, ReconcileError> {
    let pods = ctx
        .api
        .list(Kind::Pod, namespace, &cfg.selector_labels(cluster))
        .await?;
    let master = pods.iter().find_map(|p| {
        let labels = p.pointer("/metadata/labels")?;
        (labels.get(&cfg.pod_role_label)?.as_str()? == crate::builders::Role::Master.as_str())
            .then(|| p.pointer("/status/podIP")?.as_str().map(String::from))?
    });
    let ready = pods.iter().any(|p| {
        p.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    });
    Ok(match (master, ready) {
        (Some(ip), _) => Primary::At(ip),
        (None, true) => Primary::Unlabelled,
        (None, false) => Primary::NotReady,
    })
}

/// The text of `key` in a Secret, `None` when the Secret or the key is missing.
async fn secret_value<A: KubeApi>(
    ctx: &Context<A>,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<Option<String>, ReconcileError> {
    let object = ObjectKey {
        kind: Kind::Secret,
        namespace: namespace.into(),
        name: name.into(),
    };
    Ok(ctx.api.get(&object).await?.and_then(|s| {
        let b64 = s.get("data")?.get(key)?.as_str()?;
        String::from_utf8(STANDARD.decode(b64).ok()?).ok()
    }))
}

/// The Teams API token: `read-only-token-secret` of `oauth_token_secret_name` (`namespace/name`, or a
/// name in the operator's namespace), as upstream reads it.
async fn teams_token<A: KubeApi>(
    ctx: &Context<A>,
    cfg: &OperatorConfig,
) -> Result<Option<String>, ReconcileError> {
    let configured = cfg
        .raw
        .kubernetes
        .as_ref()
        .and_then(|k| k.oauth_token_secret_name.clone())
        .unwrap_or_else(|| "postgresql-operator".into());
    let (namespace, name) = match configured.split_once('/') {
        Some((ns, n)) => (ns.to_string(), n.to_string()),
        None => (ctx.operator_namespace.clone(), configured),
    };
    secret_value(ctx, &namespace, &name, "read-only-token-secret").await
}

/// Human roles from the Teams API and the `PostgresTeam` resources, and what went wrong fetching them.
async fn human_roles<A: KubeApi>(
    ctx: &Context<A>,
    cfg: &OperatorConfig,
    pg: &Postgresql,
) -> Result<(Vec<Role>, Vec<String>), ReconcileError> {
    let t = cfg.raw.teams_api.clone().unwrap_or_default();
    let api_on = t.enable_teams_api.unwrap_or(false);
    if !api_on && !t.enable_postgres_team_crd.unwrap_or(false) {
        return Ok((Vec::new(), Vec::new()));
    }
    let team_id = pg.spec.team_id.clone();
    let map = ctx.team_map.read().expect("team map").clone();
    let mut answers: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
    let mut warnings = Vec::new();
    if api_on {
        let url = t.teams_api_url.clone().unwrap_or_default();
        let token = teams_token(ctx, cfg).await?.unwrap_or_default();
        if token.is_empty() {
            warnings.push("Teams API: no token in the oauth_token_secret_name Secret".to_string());
        }
        let mut teams: BTreeSet<String> = BTreeSet::from([team_id.clone()]);
        teams.extend(map.additional_teams(&team_id));
        teams.extend(map.superuser_teams(&team_id));
        teams.extend(t.postgres_superuser_teams.iter().flatten().cloned());
        for team in teams {
            let fresh = ctx.teams_api.members(&url, &team, &token).await;
            let (members, error) = ctx.teams_cache.resolve(&team, fresh);
            if let Some(e) = error {
                let kept = if members.is_some() {
                    "keeping the last good answer"
                } else {
                    "no members known"
                };
                warnings.push(format!("{e} ({kept})"));
            }
            answers.insert(team, members);
        }
    }
    let lookup = |team: &str| answers.get(team).cloned().flatten();
    Ok((
        crate::teams::human_roles(cfg, &team_id, &map, &lookup),
        warnings,
    ))
}

/// Why the duty does not run (upstream `pkg/cluster/sync.go` `Sync`), or `None`.
fn off(cfg: &OperatorConfig, cluster: &Cluster) -> Option<&'static str> {
    let access = cfg
        .raw
        .debug
        .as_ref()
        .and_then(|d| d.enable_database_access)
        .unwrap_or(true);
    if !access {
        Some("enable_database_access is off: roles and databases are not managed")
    } else if cluster.pg.spec.is_standby() {
        Some("a standby cluster: roles and databases replicate from the source cluster")
    } else if cluster.number_of_instances() <= 0 {
        Some("no instances: roles and databases are synced once the cluster runs")
    } else {
        None
    }
}

pub async fn run<A: KubeApi>(
    pg: &Postgresql,
    ctx: &Context<A>,
    cfg: &OperatorConfig,
) -> Result<RolesStatus, ReconcileError> {
    let namespace = namespace_of(pg);
    let inputs = ExternalInputs::default();
    let cluster = Cluster::new(pg, cfg, &namespace, &inputs);
    if let Some(reason) = off(cfg, &cluster) {
        return Ok(RolesStatus::Off(reason));
    }
    let (human, mut team_warnings) = human_roles(ctx, cfg, pg).await?;
    let (infrastructure, infrastructure_warnings) =
        super::infrastructure::infrastructure_roles(ctx, cfg).await;
    let external = ExternalRoles {
        infrastructure,
        human,
    };
    let wanted = match desired(&cluster, &external) {
        Ok(w) => w,
        Err(e) => {
            return Ok(RolesStatus::Failed {
                message: e.to_string(),
                retry: false,
            })
        }
    };
    let host = match primary(ctx, cfg, &namespace, &cluster.name).await? {
        Primary::At(ip) => ip,
        Primary::Unlabelled => {
            return Ok(RolesStatus::Waiting("no pod is labelled master yet".into()))
        }
        Primary::NotReady => return Ok(RolesStatus::NoPrimary),
    };
    let super_secret = cluster.secret_name(&cfg.super_username);
    let Some(super_password) = secret_value(ctx, &namespace, &super_secret, "password").await?
    else {
        return Ok(RolesStatus::Waiting(format!(
            "no password in Secret {super_secret}"
        )));
    };
    let now = (ctx.clock)();
    let policy = Policy::new(cfg, &pg.spec);
    let mut wanted = wanted;
    let creds = rotation::credentials(ctx, &policy, &wanted.desired, now).await?;
    add_rotation_roles(&mut wanted.desired, &creds.usernames);
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
    let mut p = plan(&wanted.desired, &current, &creds.passwords, encryption);
    p.statements.extend(rotation::expired_drops(
        &creds,
        &policy,
        &wanted.desired,
        &current,
        now,
    ));
    let warnings: Vec<String> = wanted
        .warnings
        .iter()
        .map(ToString::to_string)
        .chain(p.warnings.iter().cloned())
        .chain(team_warnings.drain(..))
        .chain(infrastructure_warnings)
        .chain(creds.warnings.iter().cloned())
        .collect();
    let mut failures = Vec::new();
    let mut failed_roles = BTreeSet::new();
    let mut done = Vec::new();
    for s in &p.statements {
        match db.execute(s).await {
            Ok(()) => done.push(s.summary.clone()),
            Err(e) => {
                failures.push(format!("{}: {e}", s.summary));
                if let Effect::Role { name, .. } = &s.effect {
                    failed_roles.insert(name.clone());
                }
            }
        }
    }
    // Only once the statements for its user ran, so that a Secret never names credentials that do not log
    // in; on a failure the next pass decides again.
    let due: Vec<&rotation::SecretWrite> = creds
        .writes
        .iter()
        .filter(|w| !failed_roles.contains(&w.role) && !failed_roles.contains(&w.state.username))
        .collect();
    let (written, write_failures) = rotation::write(ctx, &due).await;
    failures.extend(write_failures);
    if !written.is_empty() {
        tracing::info!(cluster = %cluster.name, secrets = ?written, "password rotation");
        let note = format!("Password rotation: {}", written.join("; "));
        event(ctx, pg, EventType::Normal, "PasswordRotation", note).await;
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
