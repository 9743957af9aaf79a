//! One reconcile of one cluster: build, compare by hash, write only what
//! changed, explain each write with an event, report status.

pub mod apply;
pub mod finalizer;
pub mod infrastructure;
pub mod logical_backup;
pub mod roles;
pub mod rolling;
mod rotation;
pub mod status;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use pgherd_shared::crd::validate::is_dns1035_label;
use pgherd_shared::crd::{Postgresql, PostgresqlStatus};
use serde_json::Value;

use crate::builders::{build_all, ExternalInputs, PasswordSource};
use crate::config::OperatorConfig;
use crate::kube_api::{ApiError, Created, Event, EventType, Kind, KubeApi, ObjectKey};
use crate::rolling::http::HttpPatroni;
use crate::rolling::Patroni;
use apply::{desired_list, plan, Step};
use rolling::RollingOutcome;
use status::{next_status, Observed, Outcome};

/// Shared state of the reconciler.
pub struct Context<A: KubeApi> {
    pub api: A,
    /// Replaced in place when the configuration object changes.
    pub config: Arc<RwLock<Arc<OperatorConfig>>>,
    pub passwords: Mutex<Box<dyn PasswordSource + Send>>,
    pub clock: Box<dyn Fn() -> Timestamp + Send + Sync>,
    /// Patroni's REST API; tests put `crate::fake_patroni` here.
    pub patroni: Arc<dyn Patroni>,
    /// Sessions on the clusters' primaries for roles and databases.
    pub postgres: Arc<dyn roles::Connector>,
    /// Human users: the Teams API, its last good answers, and the `PostgresTeam` resources as last
    /// watched.
    pub teams_api: Arc<dyn crate::teams::api::TeamsApi>,
    pub teams_cache: crate::teams::api::LastGood,
    pub team_map: RwLock<crate::teams::TeamMap>,
    /// Where the Teams API token Secret is when its name has no namespace.
    pub operator_namespace: String,
}

impl<A: KubeApi> Context<A> {
    pub fn new(api: A, config: OperatorConfig, passwords: Box<dyn PasswordSource + Send>) -> Self {
        Context {
            api,
            config: Arc::new(RwLock::new(Arc::new(config))),
            passwords: Mutex::new(passwords),
            clock: Box::new(Timestamp::now),
            patroni: Arc::new(HttpPatroni),
            postgres: Arc::new(roles::ServerConnector),
            teams_api: Arc::new(crate::teams::api::HttpTeamsApi::default()),
            teams_cache: Default::default(),
            team_map: Default::default(),
            operator_namespace: "default".into(),
        }
    }

    pub fn config(&self) -> Arc<OperatorConfig> {
        self.config.read().expect("config lock").clone()
    }

    pub fn set_config(&self, cfg: OperatorConfig) {
        *self.config.write().expect("config lock") = Arc::new(cfg);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{0}")]
    Build(String),
}

/// How often a deletion looks again whether the cluster's pods have stopped.
const DELETION_WAIT: Duration = Duration::from_secs(5);

/// What the controller should do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Done {
    /// Objects match the manifest, and every pod runs the current template.
    Synced,
    /// Objects match the manifest; a rolling update, configuration change
    /// or restart is under way: look again after this long.
    InProgress(Duration),
    /// The manifest is invalid; nothing to do until it changes.
    Invalid,
    /// Deletion is waiting for delete-protection annotations.
    DeletionBlocked,
    /// Cleanup finished and the finalizer is gone.
    Deleted,
}

fn namespace_of(pg: &Postgresql) -> String {
    pg.metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}

async fn event<A: KubeApi>(
    ctx: &Context<A>,
    pg: &Postgresql,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note,
    };
    tracing::info!(cluster = ?pg.metadata.name, reason, note = %ev.note, "event");
    if let Err(e) = ctx.api.publish(pg, &ev).await {
        // Events explain; failing to record one must not fail the reconcile.
        tracing::warn!(error = %e, "could not publish event");
    }
}

/// Writes the status only when it differs from the stored one.
async fn report<A: KubeApi>(
    ctx: &Context<A>,
    pg: &Postgresql,
    obs: Observed,
) -> Result<bool, ApiError> {
    let old = pg.status.as_ref();
    let next = next_status(old, pg.metadata.generation, &obs, (ctx.clock)());
    if old == Some(&next) {
        return Ok(false);
    }
    ctx.api.patch_status(pg, &next).await?;
    Ok(true)
}

fn condition_message(s: Option<&PostgresqlStatus>, type_: &str) -> Option<String> {
    s.and_then(|s| s.condition(type_))
        .filter(|c| c.status == "True")
        .map(|c| c.message.clone())
}

/// Reads the objects the builders take as input.
async fn external_inputs<A: KubeApi>(
    ctx: &Context<A>,
    cfg: &OperatorConfig,
    namespace: &str,
) -> Result<ExternalInputs, ReconcileError> {
    let mut inputs = ExternalInputs::default();
    if !cfg.pod_environment_configmap.is_empty() {
        let (ns, name) = match cfg.pod_environment_configmap.split_once('/') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => (namespace.to_string(), cfg.pod_environment_configmap.clone()),
        };
        let key = ObjectKey {
            kind: Kind::ConfigMap,
            namespace: ns,
            name,
        };
        let cm = ctx.api.get(&key).await?.ok_or_else(|| {
            ReconcileError::Build(format!("pod_environment_configmap: {key} not found"))
        })?;
        let data: BTreeMap<String, String> = cm
            .get("data")
            .cloned()
            .and_then(|d| serde_json::from_value(d).ok())
            .unwrap_or_default();
        inputs.pod_env_configmap = Some(data);
    }
    if !cfg.pod_environment_secret.is_empty() {
        let key = ObjectKey {
            kind: Kind::Secret,
            namespace: namespace.to_string(),
            name: cfg.pod_environment_secret.clone(),
        };
        let secret = ctx.api.get(&key).await?.ok_or_else(|| {
            ReconcileError::Build(format!("pod_environment_secret: {key} not found"))
        })?;
        // Only key names are used: values stay in the Secret (secretKeyRef).
        let keys = secret
            .get("data")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        inputs.pod_env_secret_keys = Some(keys);
    }
    Ok(inputs)
}

fn invalid_reason(pg: &Postgresql, cfg: &OperatorConfig) -> Option<String> {
    if let Err(e) = pg.validate() {
        return Some(e.to_string());
    }
    if cfg.enable_team_id_clustername_prefix {
        let name = pg.metadata.name.as_deref().unwrap_or_default();
        let prefix = format!("{}-", pg.spec.team_id.to_lowercase());
        if !name.starts_with(&prefix) || !is_dns1035_label(name) {
            return Some(format!(
                "metadata.name: must start with the team id prefix {prefix:?} (enable_team_id_clustername_prefix)"
            ));
        }
    }
    None
}

pub async fn reconcile<A: KubeApi>(
    pg: &Postgresql,
    ctx: &Context<A>,
) -> Result<Done, ReconcileError> {
    let cfg = ctx.config();
    if pg.metadata.deletion_timestamp.is_some() {
        return delete(pg, ctx, &cfg).await;
    }
    if !finalizer::has_finalizer(pg) {
        ctx.api
            .set_finalizers(pg, &finalizer::with_finalizer(pg))
            .await?;
    }

    if let Some(reason) = invalid_reason(pg, &cfg) {
        let obs = Observed {
            outcome: Outcome::Invalid(reason.clone()),
            statefulset_existed: false,
            desired_instances: pg.spec.number_of_instances,
            ready_instances: 0,
            rolling: None,
            roles: None,
            last_logical_backup: None,
        };
        if condition_message(pg.status.as_ref(), status::RECONCILE_ERROR).as_deref()
            != Some(reason.as_str())
        {
            event(ctx, pg, EventType::Warning, "InvalidSpec", reason).await;
        }
        report(ctx, pg, obs).await?;
        return Ok(Done::Invalid);
    }

    let mut sts_existed = false;
    let mut ready = 0;
    let mut last_logical_backup = None;
    let result = sync(
        pg,
        ctx,
        &cfg,
        &mut sts_existed,
        &mut ready,
        &mut last_logical_backup,
    )
    .await;
    let rolling = result.as_ref().ok().map(|r| r.0.status.clone());
    let roles = result.as_ref().ok().map(|r| r.1.clone());
    let desired_instances =
        crate::builders::Cluster::new(pg, &cfg, "default", &ExternalInputs::default())
            .number_of_instances();
    let outcome = match &result {
        Ok(_) => Outcome::Synced,
        Err(e) => Outcome::Failed(e.to_string()),
    };
    if let Outcome::Failed(msg) = &outcome {
        if condition_message(pg.status.as_ref(), status::RECONCILE_ERROR).as_deref() != Some(msg) {
            event(ctx, pg, EventType::Warning, "SyncFailed", msg.clone()).await;
        }
    }
    report(
        ctx,
        pg,
        Observed {
            outcome,
            statefulset_existed: sts_existed,
            desired_instances,
            ready_instances: ready,
            rolling,
            roles,
            last_logical_backup,
        },
    )
    .await?;
    result.map(|(rolling, roles)| {
        let after = [rolling.requeue, roles.requeue()]
            .into_iter()
            .flatten()
            .min();
        match after {
            Some(after) => Done::InProgress(after),
            None => Done::Synced,
        }
    })
}

async fn sync<A: KubeApi>(
    pg: &Postgresql,
    ctx: &Context<A>,
    cfg: &OperatorConfig,
    sts_existed: &mut bool,
    ready: &mut i32,
    last_logical_backup: &mut Option<Timestamp>,
) -> Result<(RollingOutcome, status::RolesStatus), ReconcileError> {
    let namespace = namespace_of(pg);
    let inputs = external_inputs(ctx, cfg, &namespace).await?;
    let desired = {
        let mut passwords = ctx.passwords.lock().expect("password source lock");
        build_all(pg, cfg, &namespace, &inputs, passwords.as_mut())
            .map_err(|e| ReconcileError::Build(e.to_string()))?
    };
    let desired = desired_list(&desired);

    let mut live = BTreeMap::new();
    for d in &desired {
        let current = ctx.api.get(&d.key).await?;
        if d.key.kind == Kind::StatefulSet {
            *sts_existed = current.is_some();
            *ready = current
                .as_ref()
                .and_then(|s| s.pointer("/status/readyReplicas"))
                .and_then(Value::as_i64)
                .unwrap_or(0) as i32;
        }
        live.insert(d.key.clone(), current);
    }

    for step in plan(&desired, &live) {
        let key = &step.desired().key;
        let written = match &step {
            Step::Apply { desired, .. } => {
                ctx.api.apply(key, &desired.object).await?;
                true
            }
            Step::Create { desired } => {
                ctx.api.create(key, &desired.object).await? == Created::Created
            }
        };
        if written {
            event(ctx, pg, EventType::Normal, key.kind.name(), step.note()).await;
        }
    }
    *last_logical_backup = logical_backup::sync(pg, ctx, cfg).await?;
    let statefulset = desired
        .iter()
        .find(|d| d.key.kind == Kind::StatefulSet)
        .map(|d| &d.object)
        .ok_or_else(|| ReconcileError::Build("no StatefulSet built".into()))?;
    let rolling = rolling::run(pg, ctx, cfg, statefulset).await?;
    let roles = roles::run(pg, ctx, cfg).await?;
    Ok((rolling, roles))
}

async fn delete<A: KubeApi>(
    pg: &Postgresql,
    ctx: &Context<A>,
    cfg: &OperatorConfig,
) -> Result<Done, ReconcileError> {
    if !finalizer::has_finalizer(pg) {
        return Ok(Done::Deleted);
    }
    let blocked = finalizer::delete_protection(pg, cfg, (ctx.clock)())
        .err()
        .or_else(|| finalizer::deletion_policy(pg, cfg).err());
    if let Some(reason) = blocked {
        if condition_message(pg.status.as_ref(), status::DELETION_BLOCKED).as_deref()
            != Some(reason.as_str())
        {
            event(
                ctx,
                pg,
                EventType::Warning,
                "DeleteProtected",
                reason.clone(),
            )
            .await;
        }
        let existing = pg
            .status
            .as_ref()
            .and_then(|s| s.condition(status::READY))
            .is_some();
        report(
            ctx,
            pg,
            Observed {
                outcome: Outcome::DeletionBlocked(reason),
                statefulset_existed: existing,
                desired_instances: pg.spec.number_of_instances,
                ready_instances: 0,
                rolling: None,
                roles: None,
                last_logical_backup: None,
            },
        )
        .await?;
        return Ok(Done::DeletionBlocked);
    }
    let policy = finalizer::deletion_policy(pg, cfg).unwrap_or_default();
    let namespace = namespace_of(pg);
    let name = pg.metadata.name.clone().unwrap_or_default();
    let selector = cfg.selector_labels(&name);
    // The CronJob's labels are not the cluster's (`application: spilo-logical-backup`, as upstream).
    let mut deleted = logical_backup::remove(pg, ctx, cfg).await?;
    for kind in finalizer::kinds_to_delete(policy) {
        for obj in ctx.api.list(kind, &namespace, &selector).await? {
            // Already going (a pod in its grace period): asking again would change nothing.
            if obj.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            if let Some(key) = ObjectKey::of(&obj) {
                ctx.api.delete(&key, finalizer::propagation(kind)).await?;
                deleted += 1;
            }
        }
    }
    // Patroni in a pod that is still shutting down recreates its leader and config objects when they are
    // gone (its Kubernetes DCS patches or creates them), so one pass before the pods have stopped can leave
    // one behind. The finalizer stays until no pod of the cluster is left; each pass deletes what is there.
    let pods_left = ctx.api.list(Kind::Pod, &namespace, &selector).await?.len();
    if pods_left > 0 {
        if deleted > 0 {
            let note = format!(
                "deleted {deleted} objects of cluster {name}; waiting for {pods_left} pod(s) to stop"
            );
            event(ctx, pg, EventType::Normal, "Delete", note).await;
        }
        return Ok(Done::InProgress(DELETION_WAIT));
    }
    let kept = match policy {
        crate::config::DeletionPolicy::Retain => {
            "; volumes and credential secrets are kept (deletion policy Retain)"
        }
        crate::config::DeletionPolicy::Delete => " (deletion policy Delete)",
    };
    event(
        ctx,
        pg,
        EventType::Normal,
        "Delete",
        format!("deleted {deleted} objects of cluster {name}{kept}"),
    )
    .await;
    ctx.api
        .set_finalizers(pg, &finalizer::without_finalizer(pg))
        .await?;
    Ok(Done::Deleted)
}

#[cfg(test)]
mod roles_tests;
#[cfg(test)]
mod rolling_tests;
#[cfg(test)]
mod rotation_tests;
#[cfg(test)]
mod tests;
