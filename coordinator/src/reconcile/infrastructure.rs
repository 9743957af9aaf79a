//! Reads the infrastructure roles' Secrets and ConfigMaps for the roles duty; the rules are in
//! `roles::infrastructure`.
//!
//! Read again on every roles sync of every cluster, where upstream reads them once at operator start
//! (postgres-operator `pkg/controller/controller.go` `initController`): a role added to the Secret or a
//! changed password reaches each cluster on its next sync, without restarting the coordinator. Nothing
//! here fails the duty: a missing or unreadable object is a warning naming it, and the roles read from
//! the other sources are still synced. Skipping is safe because the sync is additive; a role already
//! created stays as it is.

use std::collections::BTreeMap;

use super::Context;
use crate::config::OperatorConfig;
use crate::kube_api::{Kind, KubeApi, ObjectKey};
use crate::roles::infrastructure::{definitions, roles, Fetched, ObjectName, Objects};
use crate::roles::model::Role;

async fn fetch<A: KubeApi>(ctx: &Context<A>, kind: Kind, object: &ObjectName) -> Fetched {
    let key = ObjectKey {
        kind,
        namespace: object.namespace.clone(),
        name: object.name.clone(),
    };
    match ctx.api.get(&key).await {
        Ok(Some(v)) => Fetched::Found(v),
        Ok(None) => Fetched::NotFound,
        Err(e) => Fetched::Failed(e.to_string()),
    }
}

/// The infrastructure roles the configuration names (each Secret and its ConfigMap fetched once), and a
/// warning for everything left out.
pub async fn infrastructure_roles<A: KubeApi>(
    ctx: &Context<A>,
    cfg: &OperatorConfig,
) -> (Vec<Role>, Vec<String>) {
    let (defs, mut problems) = definitions(cfg.raw.kubernetes.as_ref(), &ctx.operator_namespace);
    let mut objects = BTreeMap::new();
    for d in &defs {
        if !objects.contains_key(&d.secret) {
            let fetched = Objects {
                secret: fetch(ctx, Kind::Secret, &d.secret).await,
                config_map: fetch(ctx, Kind::ConfigMap, &d.secret).await,
            };
            objects.insert(d.secret.clone(), fetched);
        }
    }
    let out = roles(&defs, &objects);
    problems.extend(out.problems);
    (
        out.roles,
        problems.iter().map(ToString::to_string).collect(),
    )
}

#[cfg(test)]
#[path = "infrastructure_tests.rs"]
mod tests;
