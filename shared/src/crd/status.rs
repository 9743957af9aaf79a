//! Status of a `postgresql` resource.
//!
//! `PostgresClusterStatus` keeps Zalando's single-string phase, because
//! dashboards and scripts read it; pgherd adds Kubernetes-style conditions and
//! `observedGeneration` next to it so automation can tell a stale status from a
//! current one.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// Zalando's phase strings (`pkg/apis/acid.zalan.do/v1/const.go`).
pub mod phase {
    pub const CREATING: &str = "Creating";
    pub const UPDATING: &str = "Updating";
    pub const RUNNING: &str = "Running";
    pub const SYNC_FAILED: &str = "SyncFailed";
    pub const CREATE_FAILED: &str = "CreateFailed";
    pub const UPDATE_FAILED: &str = "UpdateFailed";
    pub const INVALID: &str = "Invalid";
}

#[derive(Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresqlStatus {
    #[serde(rename = "PostgresClusterStatus", default)]
    pub cluster_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When the last logical backup succeeded: the logical backup CronJob's
    /// `status.lastSuccessfulTime` (upstream surfaces no backup state on the
    /// cluster at all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_logical_backup: Option<Time>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusObject {
    #[serde(rename = "PostgresClusterStatus", default)]
    cluster_status: String,
    #[serde(default)]
    observed_generation: Option<i64>,
    #[serde(default)]
    conditions: Option<Vec<Condition>>,
    #[serde(default)]
    last_logical_backup: Option<Time>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StatusWire {
    /// Very old operator versions wrote the phase as a bare string.
    Legacy(String),
    Object(StatusObject),
}

impl<'de> Deserialize<'de> for PostgresqlStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match StatusWire::deserialize(deserializer)? {
            StatusWire::Legacy(s) => PostgresqlStatus {
                cluster_status: s,
                ..Default::default()
            },
            StatusWire::Object(o) => PostgresqlStatus {
                cluster_status: o.cluster_status,
                observed_generation: o.observed_generation,
                conditions: o.conditions.unwrap_or_default(),
                last_logical_backup: o.last_logical_backup,
            },
        })
    }
}

impl PostgresqlStatus {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_string_status_is_accepted() {
        let s: PostgresqlStatus = serde_json::from_str("\"Running\"").unwrap();
        assert_eq!(s.cluster_status, "Running");
        let s: PostgresqlStatus = serde_json::from_str(
            r#"{"PostgresClusterStatus":"SyncFailed","observedGeneration":3}"#,
        )
        .unwrap();
        assert_eq!(s.cluster_status, "SyncFailed");
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.last_logical_backup, None);
    }

    #[test]
    fn last_logical_backup_round_trips() {
        let s: PostgresqlStatus = serde_json::from_str(
            r#"{"PostgresClusterStatus":"Running","lastLogicalBackup":"2026-12-05T00:30:12Z"}"#,
        )
        .unwrap();
        let t = s.last_logical_backup.clone().expect("parsed");
        assert_eq!(t.0.to_string(), "2026-12-05T00:30:12Z");
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(back["lastLogicalBackup"], "2026-12-05T00:30:12Z");
    }
}
