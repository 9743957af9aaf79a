//! The imperative shell: kube-runtime Controller wiring, configuration
//! reloads, leader election, and the mapping from reconcile results to
//! requeues.
//!
//! Exercised against the Kubernetes API stand-in by tests/tests/coordinator.rs
//! (the real binary); never against a real API server in this repository.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use pgherd_shared::crd::postgres_team::PostgresTeam;
use pgherd_shared::crd::{OperatorConfiguration, Postgresql};

use crate::builders::logical_backup::APPLICATION;
use crate::builders::OsPasswords;
use crate::config::{ConfigError, OperatorConfig};
use crate::kube_api::client::KubeClientApi;
use crate::leader::{self, Elector};
use crate::reconcile::{reconcile, Context, Done, ReconcileError};
use crate::teams::TeamMap;

/// Where the operator configuration lives.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    ConfigMap {
        namespace: String,
        name: String,
    },
    OperatorConfiguration {
        namespace: String,
        name: String,
    },
    /// Zalando's defaults only.
    Defaults,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub config: ConfigSource,
    pub operator_namespace: String,
    /// `WATCHED_NAMESPACE` wins over the configuration, as upstream.
    pub watched_namespace: Option<String>,
    pub instance: Option<String>,
    /// Name of the Lease (in `operator_namespace`) to hold while acting;
    /// `None` acts at once, for a single replica.
    pub leader_lease: Option<String>,
}

async fn load_config(client: &Client, source: &ConfigSource) -> anyhow::Result<OperatorConfig> {
    Ok(match source {
        ConfigSource::Defaults => OperatorConfig::default(),
        ConfigSource::ConfigMap { namespace, name } => {
            let cm = Api::<ConfigMap>::namespaced(client.clone(), namespace)
                .get(name)
                .await?;
            from_configmap(&cm)?
        }
        ConfigSource::OperatorConfiguration { namespace, name } => {
            let oc = Api::<OperatorConfiguration>::namespaced(client.clone(), namespace)
                .get(name)
                .await?;
            OperatorConfig::from_operator_configuration(&oc)?
        }
    })
}

fn from_configmap(cm: &ConfigMap) -> Result<OperatorConfig, ConfigError> {
    let (cfg, unknown) = OperatorConfig::from_configmap(&cm.data.clone().unwrap_or_default())?;
    if !unknown.is_empty() {
        tracing::warn!(keys = ?unknown, "ignoring unknown operator configuration keys");
    }
    Ok(cfg)
}

/// Watches the configuration object; every valid change replaces the
/// configuration in place and triggers a reconcile of all clusters, so no
/// coordinator restart is needed (upstream reads it once, at start).
/// `PostgresTeam` resources, watched when `enable_postgres_team_crd` is on (read at start, as upstream):
/// every change rebuilds the team map and, when it differs, reconciles every cluster, so a member added
/// to a team becomes a role without a restart.
fn team_updates(
    client: Client,
    watched: &str,
    enabled: bool,
    ctx: Arc<Context<KubeClientApi>>,
) -> futures::stream::BoxStream<'static, ()> {
    if !enabled {
        return futures::stream::pending().boxed();
    }
    let api: Api<PostgresTeam> = match watched {
        "*" | "" => Api::all(client),
        ns => Api::namespaced(client, ns),
    };
    let (reader, writer) = reflector::store::<PostgresTeam>();
    reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .touched_objects()
        .filter_map(move |event| {
            let (reader, ctx) = (reader.clone(), ctx.clone());
            async move {
                if let Err(e) = event {
                    tracing::debug!(error = %e, "PostgresTeam watch");
                    return None;
                }
                let specs: Vec<_> = reader.state().iter().map(|t| t.spec.clone()).collect();
                let map = TeamMap::new(&specs);
                let mut current = ctx.team_map.write().expect("team map");
                if *current == map {
                    return None;
                }
                tracing::info!("PostgresTeam resources changed; reconciling all clusters");
                *current = map;
                Some(())
            }
        })
        .boxed()
}

fn config_updates(
    client: Client,
    source: ConfigSource,
    ctx: Arc<Context<KubeClientApi>>,
) -> futures::stream::BoxStream<'static, ()> {
    fn apply(ctx: &Context<KubeClientApi>, parsed: Result<OperatorConfig, ConfigError>) -> bool {
        match parsed {
            Ok(cfg) if *ctx.config() != cfg => {
                let stale = cfg.restart_only_changes(&ctx.config());
                if !stale.is_empty() {
                    tracing::warn!(
                        settings = ?stale,
                        "these settings only take effect when the coordinator restarts; \
                         the watches keep the values it started with"
                    );
                }
                tracing::info!("operator configuration changed; reconciling all clusters");
                ctx.set_config(cfg);
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::error!(error = %e, "invalid operator configuration; keeping the previous one");
                false
            }
        }
    }
    match source {
        ConfigSource::Defaults => futures::stream::pending().boxed(),
        ConfigSource::ConfigMap { namespace, name } => {
            let wc = watcher::Config::default().fields(&format!("metadata.name={name}"));
            watcher(Api::<ConfigMap>::namespaced(client, &namespace), wc)
                .applied_objects()
                .filter_map(move |cm| {
                    let ctx = ctx.clone();
                    async move {
                        cm.ok()
                            .filter(|cm| apply(&ctx, from_configmap(cm)))
                            .map(|_| ())
                    }
                })
                .boxed()
        }
        ConfigSource::OperatorConfiguration { namespace, name } => {
            let wc = watcher::Config::default().fields(&format!("metadata.name={name}"));
            watcher(
                Api::<OperatorConfiguration>::namespaced(client, &namespace),
                wc,
            )
            .applied_objects()
            .filter_map(move |oc| {
                let ctx = ctx.clone();
                async move {
                    oc.ok()
                        .filter(|oc| apply(&ctx, OperatorConfig::from_operator_configuration(oc)))
                        .map(|_| ())
                }
            })
            .boxed()
        }
    }
}

/// Reconciles running at once. Unbounded (kube-runtime's default), a
/// restart or failover with a thousand clusters fires a thousand reconciles
/// and their requests at the API server together; bounded, the requests
/// still queued in the scheduler also absorb the duplicate triggers from the
/// StatefulSet watch's initial list, so each cluster is reconciled once.
const CONCURRENCY: u16 = 8;

async fn reconcile_one(
    pg: Arc<Postgresql>,
    ctx: Arc<Context<KubeClientApi>>,
) -> Result<Action, ReconcileError> {
    let resync = ctx.config().resync_period;
    Ok(match reconcile(&pg, &ctx).await? {
        Done::Synced => Action::requeue(resync),
        // Pods are not watched: a replaced pod's return is seen by polling.
        Done::InProgress(after) => Action::requeue(after),
        Done::DeletionBlocked => Action::requeue(Duration::from_secs(60)),
        Done::Invalid | Done::Deleted => Action::await_change(),
    })
}

fn error_policy(
    pg: Arc<Postgresql>,
    err: &ReconcileError,
    _: Arc<Context<KubeClientApi>>,
) -> Action {
    tracing::warn!(cluster = ?pg.metadata.name, error = %err, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(30))
}

/// Runs the controller; with a leader lease, only while holding it.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let Some(lease) = settings.leader_lease.clone() else {
        return control(client, settings).await;
    };
    // A client of its own: renewals must not queue behind reconciles.
    let elector = Elector::new(
        Client::try_default().await?,
        &settings.operator_namespace,
        &lease,
        leader::identity(settings.instance.as_deref()),
    );
    tracing::info!(
        lease = %format!("{}/{lease}", settings.operator_namespace),
        identity = %elector.identity(),
        "waiting for the leader lease"
    );
    match elector.lead(control(client, settings)).await? {
        None => Ok(()),
        Some(done) => done,
    }
}

/// Everything a leader does: configuration, watches, reconciles. Dropped as
/// a whole when leadership is lost.
async fn control(client: Client, settings: Settings) -> anyhow::Result<()> {
    let cfg = load_config(&client, &settings.config).await?;
    let watched = settings
        .watched_namespace
        .clone()
        .unwrap_or_else(|| cfg.watched_namespace.clone());
    let cluster_labels: BTreeMap<String, String> = cfg.cluster_labels.clone();
    let teams_crd = cfg
        .raw
        .teams_api
        .as_ref()
        .and_then(|t| t.enable_postgres_team_crd)
        .unwrap_or(false);
    let mut context = Context::new(
        KubeClientApi::new(client.clone(), settings.instance.clone()),
        cfg,
        Box::new(OsPasswords),
    );
    context.operator_namespace = settings.operator_namespace.clone();
    let ctx = Arc::new(context);

    let namespace = match watched.as_str() {
        "*" => None,
        "" => Some(settings.operator_namespace.clone()),
        ns => Some(ns.to_string()),
    };
    let (pgs, statefulsets, cronjobs): (Api<Postgresql>, Api<StatefulSet>, Api<CronJob>) =
        match &namespace {
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
        };
    let selector_of = |labels: &BTreeMap<String, String>| {
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let selector = selector_of(&cluster_labels);
    // The logical backup CronJobs carry the cluster labels with `application` replaced.
    let mut backup_labels = cluster_labels.clone();
    backup_labels.insert("application".into(), APPLICATION.into());
    let backup_selector = selector_of(&backup_labels);
    tracing::info!(namespace = %watched, "pgherd-coordinator watching postgresql resources");

    // The name label is read from the live configuration, so changing
    // `cluster_name_label` needs no restart.
    let mapper_ctx = ctx.clone();
    let cluster_of = move |meta: &ObjectMeta| {
        let ns = meta.namespace.clone()?;
        let name_label = mapper_ctx.config().cluster_name_label.clone();
        let name = meta.labels.as_ref()?.get(&name_label)?.clone();
        Some(ObjectRef::<Postgresql>::new(&name).within(&ns))
    };
    let backup_cluster_of = cluster_of.clone();
    Controller::new(pgs, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(CONCURRENCY))
        .watches(
            statefulsets,
            watcher::Config::default().labels(&selector),
            move |sts: StatefulSet| cluster_of(&sts.metadata),
        )
        // A finished backup changes the CronJob's `lastSuccessfulTime`, which the cluster's status
        // reports; without this watch it would show only at the next resync (30 min by default).
        .watches(
            cronjobs,
            watcher::Config::default().labels(&backup_selector),
            move |cj: CronJob| backup_cluster_of(&cj.metadata),
        )
        .reconcile_all_on(futures::stream::select(
            config_updates(client.clone(), settings.config, ctx.clone()),
            team_updates(client, &watched, teams_crd, ctx.clone()),
        ))
        .shutdown_on_signal()
        .run(reconcile_one, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
    Ok(())
}
