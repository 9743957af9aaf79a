//! `acid.zalan.do/v1` `PostgresTeam`: extra team memberships for human roles.
//! pgherd reads it (roles arrive in a later issue); the type exists now so the
//! CRD is served and manifests validate.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "acid.zalan.do",
    version = "v1",
    kind = "PostgresTeam",
    plural = "postgresteams",
    singular = "postgresteam",
    shortname = "pgteam",
    category = "all",
    namespaced,
    derive = "PartialEq",
    derive = "Default",
    label("app.kubernetes.io/name", "postgres-operator")
)]
#[serde(rename_all = "camelCase")]
pub struct PostgresTeamSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_superuser_teams: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_teams: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_members: Option<BTreeMap<String, Vec<String>>>,
}
