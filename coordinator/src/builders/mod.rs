//! Pure builders: one `postgresql` plus the operator configuration in, the
//! Kubernetes objects Zalando's operator would create out. No I/O happens
//! here, so `render`, the reconciler and the golden tests all see the same
//! objects.

pub mod env;
pub mod logical_backup;
pub mod pdb;
pub mod rbac;
pub mod resources;
pub mod secrets;
pub mod services;
pub mod spilo_configuration;
pub mod statefulset;
pub mod volumes;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Endpoints, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use pgherd_shared::crd::Postgresql;
use pgherd_shared::naming;

use crate::config::OperatorConfig;

pub use secrets::{OsPasswords, PasswordSource, PlaceholderPasswords};

/// Label value of the pod role Patroni maintains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Master,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => pgherd_shared::naming::PRIMARY_ROLE_VALUE,
            Role::Replica => pgherd_shared::naming::REPLICA_ROLE_VALUE,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("{field}: {message}")]
    Field { field: String, message: String },
}

impl BuildError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        BuildError::Field {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Things the builders need that live in other API objects; the reconciler
/// reads them, `render` leaves them empty.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExternalInputs {
    /// `data` of `pod_environment_configmap`, if configured and found.
    pub pod_env_configmap: Option<BTreeMap<String, String>>,
    /// Keys of `pod_environment_secret`, if configured and found.
    pub pod_env_secret_keys: Option<Vec<String>>,
}

/// One cluster as the builders see it.
pub struct Cluster<'a> {
    pub pg: &'a Postgresql,
    pub cfg: &'a OperatorConfig,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub inputs: &'a ExternalInputs,
}

impl<'a> Cluster<'a> {
    pub fn new(
        pg: &'a Postgresql,
        cfg: &'a OperatorConfig,
        default_namespace: &str,
        inputs: &'a ExternalInputs,
    ) -> Self {
        Cluster {
            pg,
            cfg,
            name: pg.metadata.name.clone().unwrap_or_default(),
            namespace: pg
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| default_namespace.to_string()),
            uid: pg.metadata.uid.clone().unwrap_or_default(),
            inputs,
        }
    }

    /// `labelsSet(false)`: what selects the cluster's pods and objects.
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        self.cfg.selector_labels(&self.name)
    }

    /// `labelsSet(true)`: object labels (+ team, + inherited labels).
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut l = self.selector_labels();
        l.insert("team".into(), self.pg.spec.team_id.clone());
        if let Some(own) = &self.pg.metadata.labels {
            for key in &self.cfg.inherited_labels {
                if let Some(v) = own.get(key) {
                    l.insert(key.clone(), v.clone());
                }
            }
        }
        l
    }

    pub fn role_labels(&self, with_extra: bool, role: Role) -> BTreeMap<String, String> {
        let mut l = if with_extra {
            self.labels()
        } else {
            self.selector_labels()
        };
        l.insert(self.cfg.pod_role_label.clone(), role.as_str().into());
        l
    }

    /// `annotationsSet`: `extra` plus inherited annotations, `None` if empty.
    pub fn annotations(&self, extra: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
        let mut a = extra;
        if let Some(own) = &self.pg.metadata.annotations {
            for key in &self.cfg.inherited_annotations {
                if let Some(v) = own.get(key) {
                    a.insert(key.clone(), v.clone());
                }
            }
        }
        (!a.is_empty()).then_some(a)
    }

    /// Upstream: the CR's own ownerRefs, plus the CR itself when
    /// `enable_owner_references` is on.
    pub fn owner_references(&self) -> Option<Vec<OwnerReference>> {
        let mut refs = self
            .pg
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default();
        if self.cfg.enable_owner_references && !self.uid.is_empty() {
            refs.push(OwnerReference {
                api_version: "acid.zalan.do/v1".into(),
                kind: "postgresql".into(),
                name: self.name.clone(),
                uid: self.uid.clone(),
                controller: Some(true),
                block_owner_deletion: None,
            });
        }
        (!refs.is_empty()).then_some(refs)
    }

    pub fn secret_name(&self, username: &str) -> String {
        naming::credentials_secret(
            &self.cfg.secret_name_template,
            username,
            &self.name,
            &self.namespace,
        )
    }

    /// The credentials Secret name of a role the manifest, the roles duty or a prepared database names:
    /// [`Cluster::secret_name`], and additionally lower-cased, since Kubernetes names are lower case where
    /// upstream rejects a role name with capitals outright. Not checked here: the roles duty refuses names
    /// that are not valid or that two roles would share (`roles::desired::unique_secret_names`).
    pub fn role_secret_name(&self, role: &str) -> String {
        self.secret_name(&role.to_ascii_lowercase())
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        if key.is_empty() {
            return None;
        }
        self.pg
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }

    /// The database image: `spec.dockerImage`, else `docker_image`.
    pub fn docker_image(&self) -> String {
        self.pg
            .spec
            .docker_image
            .clone()
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| self.cfg.docker_image.clone())
    }

    /// Patroni uses Kubernetes as DCS unless an etcd host is configured.
    pub fn patroni_uses_kubernetes(&self) -> bool {
        self.cfg.etcd_host.is_empty()
    }

    pub fn patroni_uses_configmaps(&self) -> bool {
        self.patroni_uses_kubernetes() && self.cfg.kubernetes_use_configmaps
    }

    /// min/max clamping with the ignore annotation and the standby rule.
    pub fn number_of_instances(&self) -> i32 {
        let cur = self.pg.spec.number_of_instances;
        if self.annotation(&self.cfg.ignore_instance_limits_annotation_key) == Some("true") {
            return cur;
        }
        let (mut min, mut max) = (self.cfg.min_instances, self.cfg.max_instances);
        if self.pg.spec.is_standby() && cur == 1 {
            (min, max) = (1, 1);
        }
        let mut n = cur;
        if max >= 0 && n > max {
            n = max;
        }
        if min >= 0 && n < min {
            n = min;
        }
        n
    }
}

/// Everything one cluster needs, in creation order.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredObjects {
    pub service_account: ServiceAccount,
    pub role_binding: RoleBinding,
    pub endpoints: Vec<Endpoints>,
    pub services: Vec<Service>,
    /// Created when missing, never updated: an existing secret always wins.
    pub secrets: Vec<Secret>,
    pub pdbs: Vec<PodDisruptionBudget>,
    pub statefulset: StatefulSet,
}

/// Builds every object for `pg`. Passwords come from `passwords`, so tests and
/// `render` can be deterministic while the reconciler uses the OS CSPRNG.
pub fn build_all(
    pg: &Postgresql,
    cfg: &OperatorConfig,
    default_namespace: &str,
    inputs: &ExternalInputs,
    passwords: &mut dyn PasswordSource,
) -> Result<DesiredObjects, BuildError> {
    let c = Cluster::new(pg, cfg, default_namespace, inputs);
    if c.name.is_empty() {
        return Err(BuildError::field("metadata.name", "is required"));
    }
    Ok(DesiredObjects {
        service_account: rbac::service_account(&c)?,
        role_binding: rbac::role_binding(&c)?,
        endpoints: services::endpoints(&c),
        services: services::services(&c),
        secrets: secrets::secrets(&c, passwords),
        pdbs: pdb::pod_disruption_budgets(&c),
        statefulset: statefulset::statefulset(&c)?,
    })
}
