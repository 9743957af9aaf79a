//! `acid.zalan.do/v1` `OperatorConfiguration`: the operator settings live
//! under a top-level `configuration` key instead of `spec`.
//!
//! Every setting is optional here and the schema carries no `default`s:
//! upstream's kubebuilder defaults disagree with its own ConfigMap defaults
//! (for example `pkg/apis/acid.zalan.do/v1/operator_configuration_type.go`
//! against `pkg/util/config/config.go`), so defaults are applied in exactly one place, the coordinator's
//! config module, whichever format the settings came from.

// `printcolumn(...)` repeats `type_ = ...` by design; clippy mistakes it for a duplicate.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Probe};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema::preserve_unknown_object_list;

/// Declares a settings group whose fields are all optional and omitted when unset.
macro_rules! settings_group {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }
    };
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "acid.zalan.do",
    version = "v1",
    kind = "OperatorConfiguration",
    plural = "operatorconfigurations",
    singular = "operatorconfiguration",
    shortname = "opconfig",
    category = "all",
    namespaced,
    no_spec,
    derive = "PartialEq",
    derive = "Default",
    label("app.kubernetes.io/name", "postgres-operator"),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".configuration.docker_image",
        description = "Spilo image to be used for Pods"
    ),
    printcolumn(
        name = "Cluster-Label",
        type_ = "string",
        json_path = ".configuration.kubernetes.cluster_name_label",
        description = "Label for K8s resources created by operator"
    ),
    printcolumn(
        name = "Service-Account",
        type_ = "string",
        json_path = ".configuration.kubernetes.pod_service_account_name",
        description = "Name of service account to be used"
    ),
    printcolumn(
        name = "Min-Instances",
        type_ = "integer",
        json_path = ".configuration.min_instances",
        description = "Minimum number of instances per Postgres cluster"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Age of the OperatorConfiguration resource"
    )
)]
pub struct OperatorConfigurationFields {
    #[serde(default)]
    pub configuration: OperatorConfigurationData,
}

settings_group!(
    /// The `configuration` object: top-level keys plus one group per area.
    OperatorConfigurationData {
        enable_crd_registration: bool,
        crd_categories: Vec<String>,
        enable_lazy_spilo_upgrade: bool,
        enable_pgversion_env_var: bool,
        enable_spilo_wal_path_compat: bool,
        enable_team_id_clustername_prefix: bool,
        etcd_host: String,
        kubernetes_use_configmaps: bool,
        docker_image: String,
        sidecar_docker_images: BTreeMap<String, String>,
        #[schemars(schema_with = "preserve_unknown_object_list")]
        sidecars: Vec<Container>,
        enable_shm_volume: bool,
        workers: u32,
        min_instances: i32,
        max_instances: i32,
        ignore_instance_limits_annotation_key: String,
        ignore_resources_limits_annotation_key: String,
        enable_maintenance_windows: bool,
        maintenance_windows: Vec<String>,
        resync_period: String,
        repair_period: String,
        set_memory_request_to_limit: bool,
        /// pgherd extension: `Retain` (default) or `Delete`.
        deletion_policy: String,
        users: UsersConfiguration,
        major_version_upgrade: MajorVersionUpgradeConfiguration,
        kubernetes: KubernetesConfiguration,
        postgres_pod_resources: PostgresPodResourcesConfiguration,
        timeouts: TimeoutsConfiguration,
        load_balancer: LoadBalancerConfiguration,
        aws_or_gcp: AwsGcpConfiguration,
        logical_backup: LogicalBackupConfiguration,
        debug: DebugConfiguration,
        teams_api: TeamsApiConfiguration,
        logging_rest_api: LoggingRestApiConfiguration,
        scalyr: ScalyrConfiguration,
        connection_pooler: ConnectionPoolerConfiguration,
        patroni: PatroniConfiguration,
    }
);

settings_group!(UsersConfiguration {
    super_username: String,
    replication_username: String,
    additional_owner_roles: Vec<String>,
    enable_password_rotation: bool,
    password_rotation_interval: u32,
    password_rotation_user_retention: u32,
});

settings_group!(MajorVersionUpgradeConfiguration {
    major_version_upgrade_mode: String,
    major_version_upgrade_team_allow_list: Vec<String>,
    minimal_major_version: String,
    target_major_version: String,
});

settings_group!(KubernetesConfiguration {
    cluster_domain: String,
    oauth_token_secret_name: String,
    infrastructure_roles_secret_name: String,
    infrastructure_roles_secrets: Vec<InfrastructureRolesSecret>,
    pod_role_label: String,
    cluster_labels: BTreeMap<String, String>,
    inherited_labels: Vec<String>,
    inherited_annotations: Vec<String>,
    downscaler_annotations: Vec<String>,
    ignored_annotations: Vec<String>,
    cluster_name_label: String,
    delete_annotation_date_key: String,
    delete_annotation_name_key: String,
    node_readiness_label: BTreeMap<String, String>,
    node_readiness_label_merge: String,
    custom_pod_annotations: BTreeMap<String, String>,
    pod_environment_configmap: String,
    pod_environment_secret: String,
    pod_priority_class_name: String,
    master_pod_move_timeout: String,
    enable_pod_antiaffinity: bool,
    pod_antiaffinity_preferred_during_scheduling: bool,
    pod_antiaffinity_topology_key: String,
    pod_management_policy: String,
    persistent_volume_claim_retention_policy: BTreeMap<String, String>,
    enable_persistent_volume_claim_deletion: bool,
    enable_readiness_probe: bool,
    enable_cross_namespace_secret: bool,
    enable_finalizers: bool,
    enable_owner_references: bool,
    enable_secrets_deletion: bool,
    enable_init_containers: bool,
    enable_sidecars: bool,
    share_pgsocket_with_sidecars: bool,
    enable_pod_disruption_budget: bool,
    pdb_name_format: String,
    pdb_master_label_selector: bool,
    storage_resize_mode: String,
    secret_name_template: String,
    pod_service_account_name: String,
    pod_service_account_definition: String,
    pod_service_account_role_binding_definition: String,
    pod_terminate_grace_period: String,
    liveness_probe: Probe,
    spilo_privileged: bool,
    spilo_allow_privilege_escalation: bool,
    spilo_runasuser: i64,
    spilo_runasgroup: i64,
    spilo_fsgroup: i64,
    additional_pod_capabilities: Vec<String>,
    watched_namespace: String,
    toleration: BTreeMap<String, String>,
});

settings_group!(InfrastructureRolesSecret {
    secretname: String,
    userkey: String,
    passwordkey: String,
    rolekey: String,
    defaultuservalue: String,
    defaultrolevalue: String,
    details: String,
    template: bool,
});

settings_group!(PostgresPodResourcesConfiguration {
    default_cpu_request: String,
    default_memory_request: String,
    default_cpu_limit: String,
    default_memory_limit: String,
    min_cpu_limit: String,
    min_memory_limit: String,
    max_cpu_request: String,
    max_memory_request: String,
});

settings_group!(TimeoutsConfiguration {
    resource_check_interval: String,
    resource_check_timeout: String,
    pod_label_wait_timeout: String,
    pod_deletion_wait_timeout: String,
    ready_wait_interval: String,
    ready_wait_timeout: String,
    patroni_api_check_interval: String,
    patroni_api_check_timeout: String,
});

settings_group!(LoadBalancerConfiguration {
    db_hosted_zone: String,
    enable_master_load_balancer: bool,
    enable_master_pooler_load_balancer: bool,
    enable_replica_load_balancer: bool,
    enable_replica_pooler_load_balancer: bool,
    enable_master_node_port: bool,
    enable_master_pooler_node_port: bool,
    enable_replica_node_port: bool,
    enable_replica_pooler_node_port: bool,
    custom_service_annotations: BTreeMap<String, String>,
    master_dns_name_format: String,
    master_legacy_dns_name_format: String,
    replica_dns_name_format: String,
    replica_legacy_dns_name_format: String,
    external_traffic_policy: String,
});

settings_group!(AwsGcpConfiguration {
    wal_s3_bucket: String,
    aws_region: String,
    wal_gs_bucket: String,
    gcp_credentials: String,
    wal_az_storage_account: String,
    log_s3_bucket: String,
    kube_iam_role: String,
    irsa_role_arn: String,
    additional_secret_mount: String,
    additional_secret_mount_path: String,
});

settings_group!(LogicalBackupConfiguration {
    logical_backup_schedule: String,
    logical_backup_docker_image: String,
    logical_backup_provider: String,
    logical_backup_azure_storage_account_name: String,
    logical_backup_azure_storage_container: String,
    logical_backup_azure_storage_account_key: String,
    logical_backup_s3_bucket: String,
    logical_backup_s3_bucket_prefix: String,
    logical_backup_s3_region: String,
    logical_backup_s3_endpoint: String,
    logical_backup_s3_access_key_id: String,
    logical_backup_s3_secret_access_key: String,
    logical_backup_s3_sse: String,
    logical_backup_s3_retention_time: String,
    logical_backup_google_application_credentials: String,
    logical_backup_job_prefix: String,
    logical_backup_cronjob_environment_secret: String,
    logical_backup_cpu_request: String,
    logical_backup_cpu_limit: String,
    logical_backup_memory_request: String,
    logical_backup_memory_limit: String,
    logical_backup_successful_jobs_history_limit: u32,
    logical_backup_failed_jobs_history_limit: u32,
    logical_backup_ttl_seconds_after_finished: u32,
});

settings_group!(DebugConfiguration {
    debug_logging: bool,
    enable_database_access: bool,
});

settings_group!(TeamsApiConfiguration {
    enable_teams_api: bool,
    teams_api_url: String,
    team_api_role_configuration: BTreeMap<String, String>,
    enable_team_superuser: bool,
    enable_admin_role_for_users: bool,
    team_admin_role: String,
    pam_role_name: String,
    pam_configuration: String,
    protected_role_names: Vec<String>,
    postgres_superuser_teams: Vec<String>,
    enable_postgres_team_crd: bool,
    enable_postgres_team_crd_superusers: bool,
    enable_team_member_deprecation: bool,
    role_deletion_suffix: String,
});

settings_group!(LoggingRestApiConfiguration {
    api_port: u32,
    ring_log_lines: u32,
    cluster_history_entries: u32,
});

settings_group!(ScalyrConfiguration {
    scalyr_api_key: String,
    scalyr_image: String,
    scalyr_server_url: String,
    scalyr_cpu_request: String,
    scalyr_memory_request: String,
    scalyr_cpu_limit: String,
    scalyr_memory_limit: String,
});

settings_group!(ConnectionPoolerConfiguration {
    connection_pooler_number_of_instances: u32,
    connection_pooler_schema: String,
    connection_pooler_user: String,
    connection_pooler_image: String,
    connection_pooler_mode: String,
    connection_pooler_max_db_connections: u32,
    connection_pooler_default_cpu_request: String,
    connection_pooler_default_memory_request: String,
    connection_pooler_default_cpu_limit: String,
    connection_pooler_default_memory_limit: String,
});

settings_group!(PatroniConfiguration {
    enable_patroni_failsafe_mode: bool,
});
