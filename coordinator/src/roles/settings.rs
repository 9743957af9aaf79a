//! The operator settings the role rules read, with upstream's defaults applied once.

use std::collections::BTreeMap;

use crate::config::OperatorConfig;

/// Both the ConfigMap and the `OperatorConfiguration` format land in `cfg.raw`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleSettings {
    pub super_username: String,
    pub replication_username: String,
    /// `team_admin_role`: ADMIN of manifest users, group of human users. Empty: none.
    pub team_admin_role: String,
    pub enable_admin_role_for_users: bool,
    /// Never taken from the manifest, infrastructure roles or teams.
    pub protected_role_names: Vec<String>,
    pub additional_owner_roles: Vec<String>,
    pub pam_role_name: String,
    pub team_api_role_configuration: BTreeMap<String, String>,
    pub enable_cross_namespace_secret: bool,
}

impl RoleSettings {
    pub fn from_config(cfg: &OperatorConfig) -> Self {
        let teams = cfg.raw.teams_api.clone().unwrap_or_default();
        let users = cfg.raw.users.clone().unwrap_or_default();
        let kubernetes = cfg.raw.kubernetes.clone().unwrap_or_default();
        RoleSettings {
            super_username: cfg.super_username.clone(),
            replication_username: cfg.replication_username.clone(),
            team_admin_role: teams.team_admin_role.unwrap_or_else(|| "admin".into()),
            enable_admin_role_for_users: teams.enable_admin_role_for_users.unwrap_or(true),
            // Upstream coalesces an empty list to the default (`pkg/controller/operator_config.go`).
            protected_role_names: teams
                .protected_role_names
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| vec!["admin".into(), "cron_admin".into()]),
            additional_owner_roles: users.additional_owner_roles.unwrap_or_default(),
            pam_role_name: cfg.pam_role_name.clone(),
            team_api_role_configuration: teams
                .team_api_role_configuration
                .unwrap_or_else(|| BTreeMap::from([("log_statement".into(), "all".into())])),
            enable_cross_namespace_secret: kubernetes
                .enable_cross_namespace_secret
                .unwrap_or(false),
        }
    }
}
