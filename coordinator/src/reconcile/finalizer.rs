//! Deletion decisions: delete protection and what each policy removes.
//!
//! pgherd always puts a finalizer on a cluster, so a deletion that happens
//! while the coordinator is down is still cleaned up when it comes back
//! (upstream, without its optional finalizer, never sees that deletion and
//! leaks every object).

use jiff::Timestamp;
use pgherd_shared::crd::Postgresql;

use crate::config::{DeletionPolicy, OperatorConfig};
use crate::kube_api::{Kind, Propagation};

/// Zalando's finalizer name, so clusters it finalised are handled too.
pub const FINALIZER: &str = "postgres-operator.acid.zalan.do";

/// Per-cluster override of the configured deletion policy.
pub const DELETION_POLICY_ANNOTATION: &str = "pgherd.io/deletion-policy";

pub fn has_finalizer(pg: &Postgresql) -> bool {
    pg.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == FINALIZER)
}

pub fn with_finalizer(pg: &Postgresql) -> Vec<String> {
    let mut f = pg.metadata.finalizers.clone().unwrap_or_default();
    if !f.iter().any(|x| x == FINALIZER) {
        f.push(FINALIZER.into());
    }
    f
}

pub fn without_finalizer(pg: &Postgresql) -> Vec<String> {
    pg.metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect()
}

fn annotation<'a>(pg: &'a Postgresql, key: &str) -> Option<&'a str> {
    pg.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Zalando's delete protection: when configured, the cluster must carry
/// today's date (UTC, `YYYY-MM-DD`) and/or its own name in the named
/// annotations. Returns what is missing, to tell the user.
pub fn delete_protection(
    pg: &Postgresql,
    cfg: &OperatorConfig,
    now: Timestamp,
) -> Result<(), String> {
    let name = pg.metadata.name.as_deref().unwrap_or_default();
    let today = now.strftime("%Y-%m-%d").to_string();
    let mut missing = Vec::new();
    let date_key = &cfg.delete_annotation_date_key;
    if !date_key.is_empty() && annotation(pg, date_key) != Some(today.as_str()) {
        missing.push(format!("{date_key}: \"{today}\""));
    }
    let name_key = &cfg.delete_annotation_name_key;
    if !name_key.is_empty() && annotation(pg, name_key) != Some(name) {
        missing.push(format!("{name_key}: \"{name}\""));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "deletion is protected; annotate the postgresql with {} to proceed",
            missing.join(" and ")
        ))
    }
}

pub fn deletion_policy(pg: &Postgresql, cfg: &OperatorConfig) -> Result<DeletionPolicy, String> {
    match annotation(pg, DELETION_POLICY_ANNOTATION) {
        None => Ok(cfg.deletion_policy),
        Some(v) => DeletionPolicy::parse(v).ok_or_else(|| {
            format!("annotation {DELETION_POLICY_ANNOTATION}: {v:?} must be Retain or Delete")
        }),
    }
}

/// Kinds of labelled objects removed on deletion, in deletion order.
/// The pods' ServiceAccount and RoleBinding are shared by the namespace and
/// carry no cluster labels, so they are never touched.
pub fn kinds_to_delete(policy: DeletionPolicy) -> Vec<Kind> {
    let mut kinds = vec![
        Kind::StatefulSet,
        Kind::Pod,
        Kind::PodDisruptionBudget,
        Kind::Endpoints,
        Kind::Service,
        Kind::ConfigMap,
    ];
    if policy == DeletionPolicy::Delete {
        kinds.extend([Kind::Secret, Kind::PersistentVolumeClaim]);
    }
    kinds
}

/// The StatefulSet is deleted orphaning its dependents, as upstream does.
/// With `persistent_volume_claim_retention_policy.when_deleted: delete` the
/// StatefulSet controller makes the PVCs its dependents, and a background
/// deletion would let the garbage collector remove the volumes even under
/// `Retain`. Pods are deleted explicitly right after, PVCs only under
/// `Delete`, so the deletion policy alone decides what stays.
pub fn propagation(kind: Kind) -> Propagation {
    match kind {
        Kind::StatefulSet => Propagation::Orphan,
        _ => Propagation::Background,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pg(annotations: &[(&str, &str)]) -> Postgresql {
        let mut p = Postgresql::default();
        p.metadata.name = Some("acid-test".into());
        p.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        );
        p
    }

    #[test]
    fn protection_requires_todays_date_and_name() {
        let cfg = OperatorConfig {
            delete_annotation_date_key: "delete-date".into(),
            delete_annotation_name_key: "delete-clustername".into(),
            ..Default::default()
        };
        let now: Timestamp = "2026-08-01T10:00:00Z".parse().unwrap();
        let err = delete_protection(&pg(&[]), &cfg, now).unwrap_err();
        assert!(err.contains("delete-date: \"2026-08-01\""), "{err}");
        assert!(err.contains("delete-clustername: \"acid-test\""), "{err}");
        assert!(delete_protection(
            &pg(&[
                ("delete-date", "2026-07-31"),
                ("delete-clustername", "acid-test")
            ]),
            &cfg,
            now
        )
        .is_err());
        assert!(delete_protection(
            &pg(&[
                ("delete-date", "2026-08-01"),
                ("delete-clustername", "acid-test")
            ]),
            &cfg,
            now
        )
        .is_ok());
        assert!(delete_protection(&pg(&[]), &OperatorConfig::default(), now).is_ok());
    }

    #[test]
    fn policy_from_annotation_or_config() {
        let cfg = OperatorConfig::default();
        assert_eq!(deletion_policy(&pg(&[]), &cfg), Ok(DeletionPolicy::Retain));
        assert_eq!(
            deletion_policy(&pg(&[(DELETION_POLICY_ANNOTATION, "Delete")]), &cfg),
            Ok(DeletionPolicy::Delete)
        );
        assert!(deletion_policy(&pg(&[(DELETION_POLICY_ANNOTATION, "Shred")]), &cfg).is_err());
        assert!(!kinds_to_delete(DeletionPolicy::Retain).contains(&Kind::PersistentVolumeClaim));
        assert!(kinds_to_delete(DeletionPolicy::Delete).contains(&Kind::Secret));
    }
}
