//! [`KubeApi`] over a real API server with kube-rs.
//!
//! No real API server runs where pgherd's tests run: this is exercised against
//! the Kubernetes stand-in (tests/src/kube/kube_rs_tests.rs, and the real binary
//! in tests/tests/coordinator.rs and standin_system.rs); docs/coordinator.md says
//! what is verified where.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    PropagationPolicy,
};
use kube::runtime::events::{Event as KubeEvent, EventType as KubeEventType, Recorder, Reporter};
use kube::{Client, Resource};
use pgherd_shared::crd::{Postgresql, PostgresqlStatus};
use serde_json::{json, Value};

use super::{ApiError, Created, Event, EventType, Kind, KubeApi, ObjectKey, Propagation};

/// Field manager name; SSA ownership is recorded under it.
pub const FIELD_MANAGER: &str = "pgherd-coordinator";

pub struct KubeClientApi {
    client: Client,
    recorder: Recorder,
}

impl KubeClientApi {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance,
            },
        );
        KubeClientApi { client, recorder }
    }

    /// Group, version and plural of `kind`; `deploy/rbac.yaml` is checked against it.
    pub fn resource(kind: Kind) -> ApiResource {
        match kind {
            Kind::ServiceAccount => ApiResource::erase::<ServiceAccount>(&()),
            Kind::RoleBinding => ApiResource::erase::<RoleBinding>(&()),
            Kind::Endpoints => ApiResource::erase::<Endpoints>(&()),
            Kind::Service => ApiResource::erase::<Service>(&()),
            Kind::Secret => ApiResource::erase::<Secret>(&()),
            Kind::PodDisruptionBudget => ApiResource::erase::<PodDisruptionBudget>(&()),
            Kind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
            Kind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
            Kind::PersistentVolumeClaim => ApiResource::erase::<PersistentVolumeClaim>(&()),
            Kind::Pod => ApiResource::erase::<Pod>(&()),
            Kind::CronJob => ApiResource::erase::<CronJob>(&()),
        }
    }

    fn api(&self, kind: Kind, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &Self::resource(kind))
    }

    fn pg_api(&self, pg: &Postgresql) -> Api<Postgresql> {
        Api::namespaced(
            self.client.clone(),
            pg.metadata.namespace.as_deref().unwrap_or("default"),
        )
    }
}

fn to_value(obj: DynamicObject) -> Result<Value, ApiError> {
    serde_json::to_value(obj).map_err(|e| ApiError::request("decode", "object", e))
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[async_trait]
impl KubeApi for KubeClientApi {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Value>, ApiError> {
        match self.api(key.kind, &key.namespace).get_opt(&key.name).await {
            Ok(Some(o)) => to_value(o).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(ApiError::request("get", key, e)),
        }
    }

    async fn apply(&self, key: &ObjectKey, obj: &Value) -> Result<(), ApiError> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api(key.kind, &key.namespace)
            .patch(&key.name, &params, &Patch::Apply(obj))
            .await
            .map(|_| ())
            .map_err(|e| ApiError::request("apply", key, e))
    }

    async fn create(&self, key: &ObjectKey, obj: &Value) -> Result<Created, ApiError> {
        let dynamic: DynamicObject =
            serde_json::from_value(obj.clone()).map_err(|e| ApiError::request("encode", key, e))?;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match self
            .api(key.kind, &key.namespace)
            .create(&params, &dynamic)
            .await
        {
            Ok(_) => Ok(Created::Created),
            Err(e) if is_status(&e, 409) => Ok(Created::AlreadyExisted),
            Err(e) => Err(ApiError::request("create", key, e)),
        }
    }

    async fn merge_patch(&self, key: &ObjectKey, patch: &Value) -> Result<(), ApiError> {
        self.api(key.kind, &key.namespace)
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| ())
            .map_err(|e| ApiError::request("patch", key, e))
    }

    async fn delete(&self, key: &ObjectKey, propagation: Propagation) -> Result<(), ApiError> {
        let params = DeleteParams {
            propagation_policy: Some(match propagation {
                Propagation::Background => PropagationPolicy::Background,
                Propagation::Orphan => PropagationPolicy::Orphan,
            }),
            ..Default::default()
        };
        match self
            .api(key.kind, &key.namespace)
            .delete(&key.name, &params)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(ApiError::request("delete", key, e)),
        }
    }

    async fn list(
        &self,
        kind: Kind,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Value>, ApiError> {
        let lp = ListParams::default().labels(&selector(labels));
        let list = self
            .api(kind, namespace)
            .list(&lp)
            .await
            .map_err(|e| ApiError::request("list", kind.name(), e))?;
        list.items
            .into_iter()
            .map(|o| {
                let mut v = to_value(o)?;
                // List items come without kind; restore it for ObjectKey::of.
                v["kind"] = Value::String(kind.name().into());
                Ok(v)
            })
            .collect()
    }

    async fn patch_status(
        &self,
        pg: &Postgresql,
        status: &PostgresqlStatus,
    ) -> Result<(), ApiError> {
        let name = pg.metadata.name.clone().unwrap_or_default();
        self.pg_api(pg)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .map(|_| ())
            .map_err(|e| ApiError::request("patch status of", format!("postgresql {name}"), e))
    }

    async fn set_finalizers(&self, pg: &Postgresql, finalizers: &[String]) -> Result<(), ApiError> {
        let name = pg.metadata.name.clone().unwrap_or_default();
        // The resourceVersion makes this a compare-and-swap on the list.
        let patch = json!({
            "metadata": {
                "finalizers": finalizers,
                "resourceVersion": pg.metadata.resource_version,
            }
        });
        self.pg_api(pg)
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| ())
            .map_err(|e| ApiError::request("set finalizers of", format!("postgresql {name}"), e))
    }

    async fn publish(&self, pg: &Postgresql, event: &Event) -> Result<(), ApiError> {
        let ev = KubeEvent {
            type_: match event.type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: event.reason.clone(),
            note: Some(event.note.chars().take(1000).collect()),
            action: event.action(),
            secondary: None,
        };
        self.recorder
            .publish(&ev, &pg.object_ref(&()))
            .await
            .map_err(|e| ApiError::request("publish event on", "postgresql", e))
    }
}
