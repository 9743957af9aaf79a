//! Operator configuration: Zalando's settings with Zalando's defaults,
//! resolved once into plain values the builders can use without `Option`
//! juggling.
//!
//! Both input formats (an `OperatorConfiguration` object, or the legacy
//! ConfigMap of strings) become an `OperatorConfigurationData` first, so
//! defaults are applied in exactly one place. Where upstream's two formats
//! disagree on a default (retention days, the master move timeout, the Teams API and
//! load balancer switches), the default of the format in use applies.

pub mod configmap;
pub mod duration;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use pgherd_shared::crd::operator_configuration::*;
use pgherd_shared::crd::{from_value, OperatorConfiguration};
use pgherd_shared::naming::{DEFAULT_PDB_NAME_FORMAT, DEFAULT_SECRET_NAME_TEMPLATE};

pub use duration::parse_go_duration;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    #[error("operator configuration {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("operator configuration file: {0}")]
    Format(String),
}

/// Which format the settings came from; decides the few divergent defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    ConfigMap,
    OperatorConfiguration,
}

/// What happens to volumes and credentials when a cluster is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// PVCs and credential Secrets stay; everything else goes.
    #[default]
    Retain,
    /// Nothing labelled with the cluster remains.
    Delete,
}

impl DeletionPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "retain" => Some(Self::Retain),
            "delete" => Some(Self::Delete),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct OperatorConfig {
    pub docker_image: String,
    pub enable_pgversion_env_var: bool,
    pub enable_spilo_wal_path_compat: bool,
    pub enable_team_id_clustername_prefix: bool,
    pub etcd_host: String,
    pub kubernetes_use_configmaps: bool,
    pub enable_shm_volume: bool,
    pub sidecars: Vec<Container>,
    pub sidecar_docker_images: BTreeMap<String, String>,
    pub min_instances: i32,
    pub max_instances: i32,
    pub ignore_instance_limits_annotation_key: String,
    pub ignore_resources_limits_annotation_key: String,
    pub resync_period: Duration,
    pub set_memory_request_to_limit: bool,
    pub deletion_policy: DeletionPolicy,

    pub super_username: String,
    pub replication_username: String,

    pub cluster_domain: String,
    pub pod_role_label: String,
    pub cluster_labels: BTreeMap<String, String>,
    pub cluster_name_label: String,
    pub inherited_labels: Vec<String>,
    pub inherited_annotations: Vec<String>,
    pub downscaler_annotations: Vec<String>,
    pub delete_annotation_date_key: String,
    pub delete_annotation_name_key: String,
    pub node_readiness_label: BTreeMap<String, String>,
    pub node_readiness_label_merge: String,
    pub custom_pod_annotations: BTreeMap<String, String>,
    /// `namespace/name` or `name` (then the cluster's namespace).
    pub pod_environment_configmap: String,
    pub pod_environment_secret: String,
    pub pod_priority_class_name: String,
    pub enable_pod_antiaffinity: bool,
    pub pod_antiaffinity_preferred_during_scheduling: bool,
    pub pod_antiaffinity_topology_key: String,
    pub pod_management_policy: String,
    pub pvc_retention_when_deleted: String,
    pub pvc_retention_when_scaled: String,
    pub enable_readiness_probe: bool,
    pub enable_owner_references: bool,
    pub enable_init_containers: bool,
    pub enable_sidecars: bool,
    pub share_pgsocket_with_sidecars: bool,
    pub enable_pod_disruption_budget: bool,
    pub pdb_name_format: String,
    pub pdb_master_label_selector: bool,
    pub secret_name_template: String,
    pub pod_service_account_name: String,
    pub pod_service_account_definition: String,
    pub pod_service_account_role_binding_definition: String,
    pub pod_terminate_grace_period: Duration,
    pub liveness_probe: Option<Probe>,
    pub spilo_privileged: bool,
    pub spilo_allow_privilege_escalation: bool,
    pub spilo_runasuser: Option<i64>,
    pub spilo_runasgroup: Option<i64>,
    pub spilo_fsgroup: Option<i64>,
    pub additional_pod_capabilities: Vec<String>,
    pub watched_namespace: String,
    pub toleration: BTreeMap<String, String>,

    pub default_cpu_request: String,
    pub default_memory_request: String,
    pub default_cpu_limit: String,
    pub default_memory_limit: String,
    pub min_cpu_limit: String,
    pub min_memory_limit: String,
    pub max_cpu_request: String,
    pub max_memory_request: String,

    pub db_hosted_zone: String,
    pub enable_master_load_balancer: bool,
    pub enable_replica_load_balancer: bool,
    pub enable_master_node_port: bool,
    pub enable_replica_node_port: bool,
    pub custom_service_annotations: BTreeMap<String, String>,
    pub master_dns_name_format: String,
    pub master_legacy_dns_name_format: String,
    pub replica_dns_name_format: String,
    pub replica_legacy_dns_name_format: String,
    pub external_traffic_policy: String,

    pub wal_s3_bucket: String,
    pub wal_gs_bucket: String,
    pub gcp_credentials: String,
    pub wal_az_storage_account: String,
    pub log_s3_bucket: String,
    pub kube_iam_role: String,
    pub irsa_role_arn: String,
    pub additional_secret_mount: String,
    pub additional_secret_mount_path: String,

    pub pam_role_name: String,
    pub pam_configuration: String,
    pub enable_patroni_failsafe_mode: Option<bool>,
    /// Image differences alone do not replace pods (Zalando's lazy Spilo
    /// upgrade): pods take the new image when replaced for another reason.
    pub enable_lazy_spilo_upgrade: bool,

    /// Everything as read, for settings later issues consume.
    pub raw: OperatorConfigurationData,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self::from_data(
            &OperatorConfigurationData::default(),
            Source::OperatorConfiguration,
        )
        .expect("defaults are valid")
    }
}

fn s(v: &Option<String>, default: &str) -> String {
    v.clone().unwrap_or_else(|| default.to_string())
}

fn dur(field: &str, v: &Option<String>, default: &str) -> Result<Duration, ConfigError> {
    parse_go_duration(v.as_deref().unwrap_or(default)).map_err(|message| ConfigError::Invalid {
        field: field.into(),
        message,
    })
}

fn one_of(field: &str, v: String, allowed: &[&str]) -> Result<String, ConfigError> {
    if allowed.contains(&v.as_str()) {
        Ok(v)
    } else {
        Err(ConfigError::Invalid {
            field: field.into(),
            message: format!("{v:?} must be one of {}", allowed.join(", ")),
        })
    }
}

impl OperatorConfig {
    /// Resolves defaults. Values upstream rejects with a panic are errors here.
    pub fn from_data(d: &OperatorConfigurationData, source: Source) -> Result<Self, ConfigError> {
        let users = d.users.clone().unwrap_or_default();
        let k = d.kubernetes.clone().unwrap_or_default();
        let r = d.postgres_pod_resources.clone().unwrap_or_default();
        let lb = d.load_balancer.clone().unwrap_or_default();
        let aws = d.aws_or_gcp.clone().unwrap_or_default();
        let teams = d.teams_api.clone().unwrap_or_default();
        let pvc = k
            .persistent_volume_claim_retention_policy
            .clone()
            .unwrap_or_default();
        let cm = source == Source::ConfigMap;

        let super_username = s(&users.super_username, "postgres");
        let deletion_policy = match d.deletion_policy.as_deref() {
            None | Some("") => DeletionPolicy::Retain,
            Some(v) => DeletionPolicy::parse(v).ok_or_else(|| ConfigError::Invalid {
                field: "deletion_policy".into(),
                message: format!("{v:?} must be Retain or Delete"),
            })?,
        };
        let cfg = OperatorConfig {
            docker_image: s(&d.docker_image, "ghcr.io/zalando/spilo-18:4.1-p2"),
            enable_pgversion_env_var: d.enable_pgversion_env_var.unwrap_or(true),
            enable_spilo_wal_path_compat: d.enable_spilo_wal_path_compat.unwrap_or(false),
            enable_team_id_clustername_prefix: d.enable_team_id_clustername_prefix.unwrap_or(false),
            etcd_host: s(&d.etcd_host, ""),
            kubernetes_use_configmaps: d.kubernetes_use_configmaps.unwrap_or(true),
            enable_shm_volume: d.enable_shm_volume.unwrap_or(true),
            sidecars: d.sidecars.clone().unwrap_or_default(),
            sidecar_docker_images: d.sidecar_docker_images.clone().unwrap_or_default(),
            min_instances: d.min_instances.unwrap_or(-1),
            max_instances: d.max_instances.unwrap_or(-1),
            ignore_instance_limits_annotation_key: s(&d.ignore_instance_limits_annotation_key, ""),
            ignore_resources_limits_annotation_key: s(
                &d.ignore_resources_limits_annotation_key,
                "",
            ),
            resync_period: dur("resync_period", &d.resync_period, "30m")?,
            set_memory_request_to_limit: d.set_memory_request_to_limit.unwrap_or(false),
            deletion_policy,

            replication_username: s(&users.replication_username, "standby"),
            super_username,

            cluster_domain: s(&k.cluster_domain, "cluster.local"),
            pod_role_label: s(&k.pod_role_label, pgherd_shared::naming::ROLE_LABEL),
            cluster_labels: k
                .cluster_labels
                .clone()
                .unwrap_or_else(|| BTreeMap::from([("application".into(), "spilo".into())])),
            cluster_name_label: s(&k.cluster_name_label, "cluster-name"),
            inherited_labels: k.inherited_labels.clone().unwrap_or_default(),
            inherited_annotations: k.inherited_annotations.clone().unwrap_or_default(),
            downscaler_annotations: k.downscaler_annotations.clone().unwrap_or_default(),
            delete_annotation_date_key: s(&k.delete_annotation_date_key, ""),
            delete_annotation_name_key: s(&k.delete_annotation_name_key, ""),
            node_readiness_label: k.node_readiness_label.clone().unwrap_or_default(),
            node_readiness_label_merge: one_of(
                "node_readiness_label_merge",
                s(&k.node_readiness_label_merge, "OR"),
                &["AND", "OR"],
            )?,
            custom_pod_annotations: k.custom_pod_annotations.clone().unwrap_or_default(),
            pod_environment_configmap: s(&k.pod_environment_configmap, ""),
            pod_environment_secret: s(&k.pod_environment_secret, ""),
            pod_priority_class_name: s(&k.pod_priority_class_name, ""),
            enable_pod_antiaffinity: k.enable_pod_antiaffinity.unwrap_or(false),
            pod_antiaffinity_preferred_during_scheduling: k
                .pod_antiaffinity_preferred_during_scheduling
                .unwrap_or(false),
            pod_antiaffinity_topology_key: s(
                &k.pod_antiaffinity_topology_key,
                "kubernetes.io/hostname",
            ),
            pod_management_policy: one_of(
                "pod_management_policy",
                s(&k.pod_management_policy, "ordered_ready"),
                &["ordered_ready", "parallel"],
            )?,
            pvc_retention_when_deleted: pvc
                .get("when_deleted")
                .cloned()
                .unwrap_or_else(|| "retain".into()),
            pvc_retention_when_scaled: pvc
                .get("when_scaled")
                .cloned()
                .unwrap_or_else(|| "retain".into()),
            enable_readiness_probe: k.enable_readiness_probe.unwrap_or(false),
            enable_owner_references: k.enable_owner_references.unwrap_or(false),
            enable_init_containers: k.enable_init_containers.unwrap_or(true),
            enable_sidecars: k.enable_sidecars.unwrap_or(true),
            share_pgsocket_with_sidecars: k.share_pgsocket_with_sidecars.unwrap_or(false),
            enable_pod_disruption_budget: k.enable_pod_disruption_budget.unwrap_or(true),
            pdb_name_format: s(&k.pdb_name_format, DEFAULT_PDB_NAME_FORMAT),
            pdb_master_label_selector: k.pdb_master_label_selector.unwrap_or(true),
            secret_name_template: s(&k.secret_name_template, DEFAULT_SECRET_NAME_TEMPLATE),
            pod_service_account_name: s(&k.pod_service_account_name, "postgres-pod"),
            pod_service_account_definition: s(&k.pod_service_account_definition, ""),
            pod_service_account_role_binding_definition: s(
                &k.pod_service_account_role_binding_definition,
                "",
            ),
            pod_terminate_grace_period: dur(
                "pod_terminate_grace_period",
                &k.pod_terminate_grace_period,
                "5m",
            )?,
            liveness_probe: k.liveness_probe.clone(),
            spilo_privileged: k.spilo_privileged.unwrap_or(false),
            spilo_allow_privilege_escalation: k.spilo_allow_privilege_escalation.unwrap_or(true),
            spilo_runasuser: k.spilo_runasuser,
            spilo_runasgroup: k.spilo_runasgroup,
            spilo_fsgroup: k.spilo_fsgroup,
            additional_pod_capabilities: k.additional_pod_capabilities.clone().unwrap_or_default(),
            watched_namespace: s(&k.watched_namespace, ""),
            toleration: k.toleration.clone().unwrap_or_default(),

            default_cpu_request: s(&r.default_cpu_request, ""),
            default_memory_request: s(&r.default_memory_request, ""),
            default_cpu_limit: s(&r.default_cpu_limit, ""),
            default_memory_limit: s(&r.default_memory_limit, ""),
            min_cpu_limit: s(&r.min_cpu_limit, ""),
            min_memory_limit: s(&r.min_memory_limit, ""),
            max_cpu_request: s(&r.max_cpu_request, ""),
            max_memory_request: s(&r.max_memory_request, ""),

            db_hosted_zone: s(&lb.db_hosted_zone, "db.example.com"),
            // ConfigMap default `true`, CRD default `false` upstream.
            enable_master_load_balancer: lb.enable_master_load_balancer.unwrap_or(cm),
            enable_replica_load_balancer: lb.enable_replica_load_balancer.unwrap_or(false),
            enable_master_node_port: lb.enable_master_node_port.unwrap_or(false),
            enable_replica_node_port: lb.enable_replica_node_port.unwrap_or(false),
            custom_service_annotations: lb.custom_service_annotations.clone().unwrap_or_default(),
            master_dns_name_format: s(
                &lb.master_dns_name_format,
                "{cluster}.{namespace}.{hostedzone}",
            ),
            master_legacy_dns_name_format: s(
                &lb.master_legacy_dns_name_format,
                "{cluster}.{team}.{hostedzone}",
            ),
            replica_dns_name_format: s(
                &lb.replica_dns_name_format,
                "{cluster}-repl.{namespace}.{hostedzone}",
            ),
            replica_legacy_dns_name_format: s(
                &lb.replica_legacy_dns_name_format,
                "{cluster}-repl.{team}.{hostedzone}",
            ),
            external_traffic_policy: one_of(
                "external_traffic_policy",
                s(&lb.external_traffic_policy, "Cluster"),
                &["Cluster", "Local"],
            )?,

            wal_s3_bucket: s(&aws.wal_s3_bucket, ""),
            wal_gs_bucket: s(&aws.wal_gs_bucket, ""),
            gcp_credentials: s(&aws.gcp_credentials, ""),
            wal_az_storage_account: s(&aws.wal_az_storage_account, ""),
            log_s3_bucket: s(&aws.log_s3_bucket, ""),
            kube_iam_role: s(&aws.kube_iam_role, ""),
            irsa_role_arn: s(&aws.irsa_role_arn, ""),
            additional_secret_mount: s(&aws.additional_secret_mount, ""),
            additional_secret_mount_path: s(&aws.additional_secret_mount_path, ""),

            pam_role_name: s(&teams.pam_role_name, "zalandos"),
            pam_configuration: s(
                &teams.pam_configuration,
                "https://info.example.com/oauth2/tokeninfo?access_token= uid realm=/employees",
            ),
            enable_lazy_spilo_upgrade: d.enable_lazy_spilo_upgrade.unwrap_or(false),
            enable_patroni_failsafe_mode: d
                .patroni
                .as_ref()
                .and_then(|p| p.enable_patroni_failsafe_mode),
            raw: d.clone(),
        };
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| {
            Err(ConfigError::Invalid {
                field: field.into(),
                message,
            })
        };
        if self.super_username == self.replication_username {
            return invalid(
                "replication_username",
                "must differ from super_username".into(),
            );
        }
        for (field, v) in [
            (
                "persistent_volume_claim_retention_policy.when_deleted",
                &self.pvc_retention_when_deleted,
            ),
            (
                "persistent_volume_claim_retention_policy.when_scaled",
                &self.pvc_retention_when_scaled,
            ),
        ] {
            if v != "retain" && v != "delete" {
                return invalid(field, format!("{v:?} must be retain or delete"));
            }
        }
        for (field, v) in [
            ("default_cpu_request", &self.default_cpu_request),
            ("default_cpu_limit", &self.default_cpu_limit),
            ("min_cpu_limit", &self.min_cpu_limit),
            ("max_cpu_request", &self.max_cpu_request),
            ("default_memory_request", &self.default_memory_request),
            ("default_memory_limit", &self.default_memory_limit),
            ("min_memory_limit", &self.min_memory_limit),
            ("max_memory_request", &self.max_memory_request),
        ] {
            if !v.is_empty() && crate::quantity::parse(v).is_none() {
                return invalid(field, format!("{v:?} is not a resource quantity"));
            }
        }
        Ok(())
    }

    /// From an `OperatorConfiguration` object.
    pub fn from_operator_configuration(oc: &OperatorConfiguration) -> Result<Self, ConfigError> {
        Self::from_data(&oc.spec.configuration, Source::OperatorConfiguration)
    }

    /// From the `data` of the legacy ConfigMap; also returns unknown keys.
    pub fn from_configmap(
        data: &BTreeMap<String, String>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let (d, unknown) = configmap::from_configmap_data(data)?;
        Ok((Self::from_data(&d, Source::ConfigMap)?, unknown))
    }

    /// Reads a YAML file holding either kind (for `render --config`).
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let value: serde_json::Value =
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Format(e.to_string()))?;
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("OperatorConfiguration") => {
                let oc: OperatorConfiguration =
                    from_value(value).map_err(|e| ConfigError::Invalid {
                        field: e.fields().join(", "),
                        message: e.to_string(),
                    })?;
                Self::from_operator_configuration(&oc)
            }
            Some("ConfigMap") => {
                let data: BTreeMap<String, String> = value
                    .get("data")
                    .cloned()
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(|e| ConfigError::Format(format!("ConfigMap data: {e}")))?
                    .unwrap_or_default();
                Ok(Self::from_configmap(&data)?.0)
            }
            other => Err(ConfigError::Format(format!(
                "expected kind OperatorConfiguration or ConfigMap, found {other:?}"
            ))),
        }
    }

    /// Settings that differ from `old` but only take effect at start: the
    /// watches are opened once with them. Everything else applies on the
    /// next reconcile.
    pub fn restart_only_changes(&self, old: &OperatorConfig) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.watched_namespace != old.watched_namespace {
            out.push("watched_namespace");
        }
        if self.cluster_labels != old.cluster_labels {
            out.push("cluster_labels");
        }
        out
    }

    /// Cluster labels plus the cluster name label: selects a cluster's objects.
    pub fn selector_labels(&self, cluster: &str) -> BTreeMap<String, String> {
        let mut l = self.cluster_labels.clone();
        l.insert(self.cluster_name_label.clone(), cluster.to_string());
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zalando_defaults() {
        let c = OperatorConfig::default();
        assert_eq!(c.docker_image, "ghcr.io/zalando/spilo-18:4.1-p2");
        assert_eq!(c.super_username, "postgres");
        assert_eq!(c.replication_username, "standby");
        assert_eq!(c.cluster_name_label, "cluster-name");
        assert_eq!(c.pod_role_label, "spilo-role");
        assert_eq!(
            c.cluster_labels,
            BTreeMap::from([("application".into(), "spilo".into())])
        );
        assert_eq!(c.secret_name_template, DEFAULT_SECRET_NAME_TEMPLATE);
        assert_eq!(c.pdb_name_format, "postgres-{cluster}-pdb");
        assert_eq!(c.pod_terminate_grace_period, Duration::from_secs(300));
        assert_eq!(c.resync_period, Duration::from_secs(1800));
        assert!(c.kubernetes_use_configmaps);
        assert!(c.enable_pgversion_env_var);
        assert!(!c.enable_master_load_balancer);
        assert_eq!(c.deletion_policy, DeletionPolicy::Retain);
    }

    #[test]
    fn only_watch_settings_need_a_restart() {
        let old = OperatorConfig::default();
        let mut new = OperatorConfig {
            docker_image: "other".into(),
            cluster_name_label: "cluster".into(),
            resync_period: Duration::from_secs(60),
            ..Default::default()
        };
        assert_eq!(new.restart_only_changes(&old), Vec::<&str>::new());
        new.watched_namespace = "*".into();
        new.cluster_labels.insert("x".into(), "y".into());
        assert_eq!(
            new.restart_only_changes(&old),
            ["watched_namespace", "cluster_labels"]
        );
    }

    #[test]
    fn configmap_divergent_default() {
        let (c, _) = OperatorConfig::from_configmap(&BTreeMap::new()).unwrap();
        assert!(
            c.enable_master_load_balancer,
            "ConfigMap default is true upstream"
        );
    }

    #[test]
    fn invalid_settings_name_the_setting() {
        let d = OperatorConfigurationData {
            resync_period: Some("soon".into()),
            ..Default::default()
        };
        let e = OperatorConfig::from_data(&d, Source::OperatorConfiguration).unwrap_err();
        assert!(e.to_string().contains("resync_period"), "{e}");
        let d = OperatorConfigurationData {
            kubernetes: Some(KubernetesConfiguration {
                pod_management_policy: Some("random".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = OperatorConfig::from_data(&d, Source::OperatorConfiguration).unwrap_err();
        assert!(e.to_string().contains("pod_management_policy"), "{e}");
        let d = OperatorConfigurationData {
            deletion_policy: Some("Shred".into()),
            ..Default::default()
        };
        let e = OperatorConfig::from_data(&d, Source::OperatorConfiguration).unwrap_err();
        assert!(e.to_string().contains("deletion_policy"), "{e}");
    }
}
