//! Custom resources of the `acid.zalan.do` group, wire-compatible with
//! Zalando's postgres-operator, plus loading helpers that name the offending
//! field when a manifest cannot be used.

pub mod operator_configuration;
pub mod postgres_team;
pub mod postgresql;
pub mod schema;
pub mod status;
pub mod validate;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde::de::DeserializeOwned;

pub use operator_configuration::{OperatorConfiguration, OperatorConfigurationData};
pub use postgres_team::{PostgresTeam, PostgresTeamSpec};
pub use postgresql::{PostgresSpec, Postgresql};
pub use status::PostgresqlStatus;
pub use validate::{FieldError, ValidationErrors};

/// API group shared by all three kinds.
pub const GROUP: &str = "acid.zalan.do";

/// Why a manifest could not be turned into a usable object.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{field}: {message}")]
    Parse { field: String, message: String },
    #[error("{0}")]
    Invalid(#[from] ValidationErrors),
}

impl ManifestError {
    /// The JSON path(s) of the field(s) at fault.
    pub fn fields(&self) -> Vec<String> {
        match self {
            ManifestError::Parse { field, .. } => vec![field.clone()],
            ManifestError::Invalid(v) => v.fields().into_iter().map(String::from).collect(),
        }
    }
}

/// Deserialises `value` into `T`, reporting the path of the first bad field.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ManifestError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ManifestError::Parse {
            field: if path == "." {
                "(document)".into()
            } else {
                path
            },
            message: e.into_inner().to_string(),
        }
    })
}

/// Parses and validates one `postgresql` document.
pub fn load_postgresql(value: serde_json::Value) -> Result<Postgresql, ManifestError> {
    let pg: Postgresql = from_value(value)?;
    pg.validate()?;
    Ok(pg)
}

/// The CRDs pgherd serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        Postgresql::crd(),
        OperatorConfiguration::crd(),
        PostgresTeam::crd(),
    ]
}

/// File names under `crds/` for [`crds`], same order.
pub const CRD_FILES: [&str; 3] = [
    "postgresql.crd.yaml",
    "operatorconfiguration.crd.yaml",
    "postgresteam.crd.yaml",
];
