//! The logical backup duty: the cluster's CronJob and the Secret with its
//! storage keys, kept as the builder says with zero writes when nothing
//! changed, removed when `enableLogicalBackup` is off; and the time of the last
//! successful backup, read back from the CronJob's status.
//!
//! The CronJob is applied server-side like every other object (hash plus
//! drift, `apply.rs`). The Secret cannot be: the coordinator has no `patch` or
//! `update` verb on Secrets, so that no credential it created can ever be
//! overwritten. Its storage keys must still follow the configuration, so a
//! changed Secret is deleted and created again (both verbs the coordinator
//! already holds). Its hash annotation is a digest of keys that anyone
//! allowed to read the annotation may read in full anyway.

use jiff::Timestamp;
use pgherd_shared::crd::Postgresql;
use serde_json::Value;

use super::apply::{hash_of, plan, stamp, Desired, Step};
use super::{event, namespace_of, Context, ReconcileError};
use crate::builders::logical_backup::{logical_backup, selector};
use crate::builders::{Cluster, ExternalInputs};
use crate::config::OperatorConfig;
use crate::kube_api::{ApiError, EventType, Kind, KubeApi, ObjectKey, Propagation};

fn desired(obj: &impl serde::Serialize) -> Desired {
    let object = stamp(serde_json::to_value(obj).expect("k8s objects serialise"));
    Desired {
        key: ObjectKey::of(&object).expect("the builder sets kind, namespace and name"),
        object,
        create_only: false,
    }
}

fn key_of(kind: Kind, obj: &Value) -> Option<ObjectKey> {
    Some(ObjectKey {
        kind,
        namespace: obj.pointer("/metadata/namespace")?.as_str()?.into(),
        name: obj.pointer("/metadata/name")?.as_str()?.into(),
    })
}

/// The cluster's logical backup CronJobs (whoever created them) and the
/// Secrets pgherd created for them, as listed by their labels.
struct Live {
    cronjobs: Vec<Value>,
    secrets: Vec<Value>,
}

async fn live<A: KubeApi>(
    ctx: &Context<A>,
    cfg: &OperatorConfig,
    pg: &Postgresql,
) -> Result<Live, ApiError> {
    let namespace = namespace_of(pg);
    let labels = selector(cfg, pg.metadata.name.as_deref().unwrap_or_default());
    let ours = |o: &Value| hash_of(o).is_some();
    Ok(Live {
        cronjobs: ctx.api.list(Kind::CronJob, &namespace, &labels).await?,
        // A Secret someone else labelled like ours is left alone.
        secrets: (ctx.api.list(Kind::Secret, &namespace, &labels).await?)
            .into_iter()
            .filter(ours)
            .collect(),
    })
}

/// Deletes the listed objects not named `keep`; returns what it deleted.
/// A CronJob's Jobs and pods go with it.
async fn delete_others<A: KubeApi>(
    ctx: &Context<A>,
    kind: Kind,
    objects: &[Value],
    keep: Option<&ObjectKey>,
) -> Result<Vec<ObjectKey>, ApiError> {
    let mut deleted = Vec::new();
    for key in objects.iter().filter_map(|o| key_of(kind, o)) {
        if Some(&key) != keep {
            ctx.api.delete(&key, Propagation::Background).await?;
            deleted.push(key);
        }
    }
    Ok(deleted)
}

fn find<'a>(objects: &'a [Value], key: &ObjectKey) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| key_of(key.kind, o).as_ref() == Some(key))
}

/// Brings the CronJob and its Secret in line with the manifest and
/// configuration; returns the CronJob's `status.lastSuccessfulTime`.
pub async fn sync<A: KubeApi>(
    pg: &Postgresql,
    ctx: &Context<A>,
    cfg: &OperatorConfig,
) -> Result<Option<Timestamp>, ReconcileError> {
    let namespace = namespace_of(pg);
    let inputs = ExternalInputs::default();
    let built = logical_backup(&Cluster::new(pg, cfg, &namespace, &inputs))
        .map_err(|e| ReconcileError::Build(e.to_string()))?;
    let cronjob = built.as_ref().map(|b| desired(&b.cronjob));
    let secret = built.and_then(|b| b.secret).map(|s| desired(&s));
    let live = live(ctx, cfg, pg).await?;

    let why = if cronjob.is_some() {
        "no longer configured"
    } else {
        "logical backup disabled"
    };
    for (kind, objects, keep) in [
        (Kind::CronJob, &live.cronjobs, cronjob.as_ref()),
        (Kind::Secret, &live.secrets, secret.as_ref()),
    ] {
        for key in delete_others(ctx, kind, objects, keep.map(|d| &d.key)).await? {
            let note = format!("deleted {key} ({why})");
            event(ctx, pg, EventType::Normal, kind.name(), note).await;
        }
    }

    // The Secret first: the CronJob's env refers to it.
    if let Some(d) = secret {
        let current = find(&live.secrets, &d.key).cloned();
        let step = plan(
            std::slice::from_ref(&d),
            &[(d.key.clone(), current.clone())].into(),
        );
        if let Some(step) = step.first() {
            if current.is_some() {
                ctx.api.delete(&d.key, Propagation::Background).await?;
            }
            ctx.api.create(&d.key, &d.object).await?;
            event(ctx, pg, EventType::Normal, "Secret", step.note()).await;
        }
    }
    let Some(d) = cronjob else {
        return Ok(None);
    };
    let mut current = find(&live.cronjobs, &d.key).cloned();
    let last_success = current
        .as_ref()
        .and_then(|c| c.pointer("/status/lastSuccessfulTime"))
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok());
    // A CronJob without pgherd's hash was made by another operator (Zalando's, when taking a cluster
    // over). Applying onto it would leave the fields only that operator set, such as literal storage
    // keys next to pgherd's references to the Secret, which the API server rejects; it is replaced.
    // Its running Job, if any, is orphaned and finishes.
    if current.as_ref().is_some_and(|c| hash_of(c).is_none()) {
        ctx.api.delete(&d.key, Propagation::Orphan).await?;
        let note = format!("deleted {} (created by another operator; replaced)", d.key);
        event(ctx, pg, EventType::Normal, "CronJob", note).await;
        current = None;
    }
    for step in plan(std::slice::from_ref(&d), &[(d.key.clone(), current)].into()) {
        if let Step::Apply { desired, .. } = &step {
            ctx.api.apply(&desired.key, &desired.object).await?;
            event(ctx, pg, EventType::Normal, "CronJob", step.note()).await;
        }
    }
    Ok(last_success)
}

/// Cluster deletion: removes the CronJob (with its Jobs and pods) and the
/// Secret, whatever the deletion policy, since neither holds data; returns how
/// many objects went.
pub async fn remove<A: KubeApi>(
    pg: &Postgresql,
    ctx: &Context<A>,
    cfg: &OperatorConfig,
) -> Result<usize, ApiError> {
    let live = live(ctx, cfg, pg).await?;
    let cronjobs = delete_others(ctx, Kind::CronJob, &live.cronjobs, None).await?;
    let secrets = delete_others(ctx, Kind::Secret, &live.secrets, None).await?;
    Ok(cronjobs.len() + secrets.len())
}

#[cfg(test)]
#[path = "logical_backup_tests.rs"]
mod tests;
