//! The pods' ServiceAccount and RoleBinding (one pair per namespace, shared
//! by all clusters there), so Patroni may write its DCS objects and labels.
//!
//! Upstream creates these once and never updates them (`pkg/controller/postgresql.go`); pgherd applies
//! them like every other object, so a changed definition or IRSA role lands.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{BuildError, Cluster};

/// Marks objects pgherd manages that belong to no single cluster.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "pgherd-coordinator");

fn parse_definition<T: serde::de::DeserializeOwned>(
    field: &str,
    text: &str,
) -> Result<Option<T>, BuildError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_yaml_ng::from_str(text)
        .map(Some)
        .map_err(|e| BuildError::field(field, format!("not a valid definition: {e}")))
}

fn managed_labels(mut labels: BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    labels
}

pub fn service_account(c: &Cluster) -> Result<ServiceAccount, BuildError> {
    let cfg = c.cfg;
    let mut sa: ServiceAccount = parse_definition(
        "pod_service_account_definition",
        &cfg.pod_service_account_definition,
    )?
    .unwrap_or_default();
    sa.metadata.name = Some(cfg.pod_service_account_name.clone());
    sa.metadata.namespace = Some(c.namespace.clone());
    sa.metadata.labels = Some(managed_labels(
        sa.metadata.labels.take().unwrap_or_default(),
    ));
    if !cfg.irsa_role_arn.is_empty() {
        sa.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(
                "eks.amazonaws.com/role-arn".into(),
                cfg.irsa_role_arn.clone(),
            );
    }
    sa.metadata.resource_version = None;
    sa.metadata.uid = None;
    Ok(sa)
}

pub fn role_binding(c: &Cluster) -> Result<RoleBinding, BuildError> {
    let cfg = c.cfg;
    let parsed: Option<RoleBinding> = parse_definition(
        "pod_service_account_role_binding_definition",
        &cfg.pod_service_account_role_binding_definition,
    )?;
    let mut rb = parsed.unwrap_or_else(|| RoleBinding {
        metadata: ObjectMeta::default(),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: cfg.pod_service_account_name.clone(),
        },
        subjects: None,
    });
    rb.metadata.name = Some(cfg.pod_service_account_name.clone());
    rb.metadata.namespace = Some(c.namespace.clone());
    rb.metadata.labels = Some(managed_labels(
        rb.metadata.labels.take().unwrap_or_default(),
    ));
    // The subject must be this namespace's pod ServiceAccount.
    rb.subjects = Some(vec![Subject {
        kind: "ServiceAccount".into(),
        name: cfg.pod_service_account_name.clone(),
        namespace: Some(c.namespace.clone()),
        api_group: None,
    }]);
    Ok(rb)
}
