//! The `acid.zalan.do/v1` `postgresql` resource, field for field as Zalando's
//! postgres-operator defines it, so existing manifests load unchanged.
//!
//! Optional fields stay `Option` (instead of being defaulted on load) so that a
//! manifest serialises back to exactly what the user wrote; defaults belong to
//! the builders, which also know the operator configuration.

// `printcolumn(...)` repeats `type_ = ...` by design; clippy mistakes it for a duplicate.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvFromSource, EnvVar, NodeAffinity, Probe, Toleration,
    TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema::{
    preserve_unknown_object, CPU_PATTERN, CRON_PATTERN, MEMORY_PATTERN, TIMESTAMP_PATTERN,
};
use super::status::PostgresqlStatus;

/// Major versions upstream's CRD enumerates; anything else is rejected.
pub const SUPPORTED_MAJOR_VERSIONS: &[&str] = &["14", "15", "16", "17", "18"];

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "acid.zalan.do",
    version = "v1",
    kind = "postgresql",
    root = "Postgresql",
    plural = "postgresqls",
    singular = "postgresql",
    shortname = "pg",
    category = "all",
    namespaced,
    status = "PostgresqlStatus",
    derive = "PartialEq",
    derive = "Default",
    label("app.kubernetes.io/name", "postgres-operator"),
    printcolumn(
        name = "Team",
        type_ = "string",
        json_path = ".spec.teamId",
        description = "Team responsible for Postgres cluster"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".spec.postgresql.version",
        description = "PostgreSQL version"
    ),
    printcolumn(
        name = "Pods",
        type_ = "integer",
        json_path = ".spec.numberOfInstances",
        description = "Number of Pods per Postgres cluster"
    ),
    printcolumn(
        name = "Volume",
        type_ = "string",
        json_path = ".spec.volume.size",
        description = "Size of the bound volume"
    ),
    printcolumn(
        name = "CPU-Request",
        type_ = "string",
        json_path = ".spec.resources.requests.cpu",
        description = "Requested CPU for Postgres containers"
    ),
    printcolumn(
        name = "Memory-Request",
        type_ = "string",
        json_path = ".spec.resources.requests.memory",
        description = "Requested memory for Postgres containers"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Age of the PostgreSQL cluster"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.PostgresClusterStatus",
        description = "Current sync status of postgresql resource"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Ready condition reported by pgherd",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSpec {
    pub team_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_image: Option<String>,
    #[schemars(range(min = 0))]
    pub number_of_instances: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spilo_run_as_user: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spilo_run_as_group: Option<i64>,
    #[serde(
        default,
        rename = "spiloFSGroup",
        skip_serializing_if = "Option::is_none"
    )]
    pub spilo_fs_group: Option<i64>,

    pub postgresql: PostgresqlParam,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patroni: Option<Patroni>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_windows: Option<Vec<String>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_shm_volume: Option<bool>,

    pub volume: Volume,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_volumes: Option<Vec<AdditionalVolume>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<BTreeMap<String, UserFlags>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub users_with_secret_rotation: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub users_with_in_place_secret_rotation: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub users_ignoring_secret_rotation: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepared_databases: Option<BTreeMap<String, PreparedDatabase>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_master_load_balancer: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_replica_load_balancer: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_master_pooler_load_balancer: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_replica_pooler_load_balancer: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_master_node_port: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_node_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_replica_node_port: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_node_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_master_pooler_node_port: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_pooler_node_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_replica_pooler_node_port: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_pooler_node_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub allowed_source_ranges: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_service_annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_service_annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<NodeAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_containers: Option<Vec<Container>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecars: Option<Vec<Sidecar>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_from: Option<Vec<EnvFromSource>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_connection_pooler: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_replica_connection_pooler: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pooler: Option<ConnectionPooler>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_logical_backup: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CRON_PATTERN))]
    pub logical_backup_schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_backup_retention: Option<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone: Option<CloneDescription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<StandbyDescription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<Vec<Stream>>,
}

/// Role flags as written in the manifest (`superuser`, `createdb`, ...).
pub type UserFlags = Vec<String>;

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PostgresqlParam {
    #[schemars(extend("enum" = ["14", "15", "16", "17", "18"]))]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, String>>,
}

/// Patroni settings; snake_case on the wire like upstream.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Patroni {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initdb: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_hba: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loop_wait: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_lag_on_failover: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<BTreeMap<String, BTreeMap<String, String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronous_mode: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronous_mode_strict: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronous_node_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failsafe_mode: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceDescription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceDescription>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ResourceDescription {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CPU_PATTERN))]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = MEMORY_PATTERN))]
    pub memory: Option<String>,
    #[serde(
        default,
        rename = "hugepages-2Mi",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(regex(pattern = MEMORY_PATTERN))]
    pub hugepages_2mi: Option<String>,
    #[serde(
        default,
        rename = "hugepages-1Gi",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(regex(pattern = MEMORY_PATTERN))]
    pub hugepages_1gi: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    #[schemars(regex(pattern = MEMORY_PATTERN))]
    pub size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_sub_path_expr: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 80000))]
    pub iops: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2000))]
    pub throughput: Option<i64>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// An extra pod volume. `volumeSource` stays schemaless JSON, as upstream
/// declares it, so a manifest written against Go's case-insensitive decoder
/// (`PersistentVolumeClaim:`) still round-trips; the builder normalises it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdditionalVolume {
    pub name: String,
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_sub_path_expr: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("nullable" = true))]
    pub target_containers: Option<Vec<String>>,
    #[schemars(schema_with = "preserve_unknown_object")]
    pub volume_source: serde_json::Value,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreparedDatabase {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schemas: Option<BTreeMap<String, PreparedSchema>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_users: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_namespace: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreparedSchema {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_users: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_roles: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tls {
    pub secret_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_name: Option<String>,
}

/// A sidecar in upstream's reduced container shape (`image`, not a full Container).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Sidecar {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<ContainerPort>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionPooler {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub number_of_instances: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["session", "transaction"]))]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_image: Option<String>,
    #[serde(
        default,
        rename = "maxDBConnections",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_db_connections: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

/// Where to clone from and up to which point in time (snake_case like upstream).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct CloneDescription {
    pub cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "uuid"))]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TIMESTAMP_PATTERN))]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_wal_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_secret_access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_force_path_style: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[schemars(extend(
    "anyOf" = [{"required": ["s3_wal_path"]}, {"required": ["gs_wal_path"]}, {"required": ["standby_host"]}],
    "not" = {"required": ["s3_wal_path", "gs_wal_path"]}
))]
pub struct StandbyDescription {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_wal_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gs_wal_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_primary_slot_name: Option<String>,
}

/// Zalando's change-data-capture streams; carried through unchanged.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stream {
    pub application_id: String,
    pub database: String,
    pub tables: BTreeMap<String, StreamTable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CPU_PATTERN))]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = MEMORY_PATTERN))]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_recovery: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamTable {
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_recovery: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_column: Option<String>,
}

impl PostgresSpec {
    /// Upstream's rule: a standby section, or a WAL-restore prefix in `env`,
    /// makes the cluster a standby (`pkg/cluster/util.go:678-686`).
    pub fn is_standby(&self) -> bool {
        if self.standby.is_some() {
            return true;
        }
        self.env.iter().flatten().any(|e| {
            matches!(
                e.name.as_str(),
                "STANDBY_WALE_S3_PREFIX"
                    | "STANDBY_WALE_GS_PREFIX"
                    | "STANDBY_WALE_GSC_PREFIX"
                    | "STANDBY_WALE_SWIFT_PREFIX"
            ) && e.value.as_deref().is_some_and(|v| !v.is_empty())
        })
    }
}
