//! The only door to the API server. The reconciler sees objects as JSON and
//! this small trait; `client` implements it with kube-rs, `crate::fake` in
//! memory (counting every write) for tests.

pub mod client;

use std::collections::BTreeMap;

use async_trait::async_trait;
use pgherd_shared::crd::Postgresql;
use serde_json::Value;

/// Kinds the coordinator reads or writes besides `postgresql`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    ServiceAccount,
    RoleBinding,
    Endpoints,
    Service,
    Secret,
    PodDisruptionBudget,
    StatefulSet,
    ConfigMap,
    PersistentVolumeClaim,
    Pod,
    /// The logical backup CronJob (`batch/v1`).
    CronJob,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::ServiceAccount => "ServiceAccount",
            Kind::RoleBinding => "RoleBinding",
            Kind::Endpoints => "Endpoints",
            Kind::Service => "Service",
            Kind::Secret => "Secret",
            Kind::PodDisruptionBudget => "PodDisruptionBudget",
            Kind::StatefulSet => "StatefulSet",
            Kind::ConfigMap => "ConfigMap",
            Kind::PersistentVolumeClaim => "PersistentVolumeClaim",
            Kind::Pod => "Pod",
            Kind::CronJob => "CronJob",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub const ALL: [Kind; 11] = [
        Kind::ServiceAccount,
        Kind::RoleBinding,
        Kind::Endpoints,
        Kind::Service,
        Kind::Secret,
        Kind::PodDisruptionBudget,
        Kind::StatefulSet,
        Kind::ConfigMap,
        Kind::PersistentVolumeClaim,
        Kind::Pod,
        Kind::CronJob,
    ];
}

/// Namespace and name of an object of some kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    /// Reads kind, namespace and name from a serialised object.
    pub fn of(obj: &Value) -> Option<ObjectKey> {
        Some(ObjectKey {
            kind: Kind::from_name(obj.get("kind")?.as_str()?)?,
            namespace: obj.pointer("/metadata/namespace")?.as_str()?.to_string(),
            name: obj.pointer("/metadata/name")?.as_str()?.to_string(),
        })
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.name(), self.namespace, self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{action} {target}: {message}")]
    Request {
        action: &'static str,
        target: String,
        message: String,
    },
}

impl ApiError {
    pub fn request(action: &'static str, target: impl ToString, message: impl ToString) -> Self {
        ApiError::Request {
            action,
            target: target.to_string(),
            message: message.to_string(),
        }
    }
}

/// Outcome of a create that must never overwrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    Created,
    AlreadyExisted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// What the garbage collector does with an object's dependents on deletion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents are deleted in the background.
    Background,
    /// Dependents lose their owner reference and stay.
    Orphan,
}

/// A Kubernetes event on the `postgresql` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub type_: EventType,
    pub reason: String,
    pub note: String,
}

impl Event {
    /// The event's `action`: its reason plus a digest of its note. kube-rs's
    /// recorder folds events with the same type, reason and action into one
    /// series and keeps the first note, so with the reason alone a second
    /// `Update` ("pod 2 of 3") would only raise the count of the first. The
    /// same note repeated still becomes a series.
    pub fn action(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.note.as_bytes());
        let short: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        format!("{}-{short}", self.reason)
    }
}

#[async_trait]
pub trait KubeApi: Send + Sync + 'static {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Value>, ApiError>;
    /// Server-side apply with the coordinator's field manager, forcing
    /// ownership of exactly the fields in `obj`.
    async fn apply(&self, key: &ObjectKey, obj: &Value) -> Result<(), ApiError>;
    /// Creates `obj` unless an object of that name exists; never updates.
    async fn create(&self, key: &ObjectKey, obj: &Value) -> Result<Created, ApiError>;
    /// JSON merge patch (`null` removes a key), for the few fields the
    /// coordinator changes on objects it does not own, like pod annotations.
    async fn merge_patch(&self, key: &ObjectKey, patch: &Value) -> Result<(), ApiError>;
    /// Deletes; a missing object is not an error.
    async fn delete(&self, key: &ObjectKey, propagation: Propagation) -> Result<(), ApiError>;
    async fn list(
        &self,
        kind: Kind,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Value>, ApiError>;
    async fn patch_status(
        &self,
        pg: &Postgresql,
        status: &pgherd_shared::crd::PostgresqlStatus,
    ) -> Result<(), ApiError>;
    async fn set_finalizers(&self, pg: &Postgresql, finalizers: &[String]) -> Result<(), ApiError>;
    async fn publish(&self, pg: &Postgresql, event: &Event) -> Result<(), ApiError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_notes_are_distinct_actions_and_repeats_are_not() {
        let ev = |note: &str| Event {
            type_: EventType::Normal,
            reason: "Update".into(),
            note: note.into(),
        };
        assert_eq!(ev("pod 1 of 3").action(), ev("pod 1 of 3").action());
        assert_ne!(ev("pod 1 of 3").action(), ev("pod 2 of 3").action());
        assert!(ev("x").action().starts_with("Update-"));
        assert!(ev("x").action().len() <= 128);
    }
}
